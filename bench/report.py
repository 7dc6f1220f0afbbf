"""The suite's one table, and its plots.

A :class:`Row` is one line of the table: a blueprint-net figure beside its
reference from the same run.  A row may also carry a :class:`Point` for a
plot; :func:`plot` draws one PNG per figure name (matplotlib is the optional
``plots`` extra, so the table never needs it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple, Optional

#: ``python -m bench --smoke``: every benchmark at the smallest size that
#: still runs each code path and prints each row (the test suite's check that
#: the suite works).  Its figures mean nothing.  Set before any benchmark runs.
SMOKE = False


class Point(NamedTuple):
    figure: str  # which plot: one of FIGURES
    x: float
    ours: float
    reference: Optional[float] = None


class Row(NamedTuple):
    name: str
    ours: float
    reference: Optional[float]  # None: nothing to compare with (shown "-")
    note: str
    point: Optional[Point] = None

    @property
    def ratio(self) -> Optional[float]:
        return self.ours / self.reference if self.reference else None


#: figure -> (title, x label, y label, our series, reference series, log x)
FIGURES = {
    "throughput": (
        "Pipelined echo throughput by payload size",
        "payload (bytes)",
        "payload MB/s (both directions)",
        "blueprint-net",
        "bare Int32StringReceiver echo",
        True,
    ),
    "broadcast": (
        "Broadcast cost per recipient",
        "peers",
        "microseconds per recipient",
        "Node.broadcast",
        "the same requests, one Node.request each",
        True,
    ),
    "memory": (
        "Memory per idle verified connection",
        "connections",
        "KiB per connection",
        "Python heap (tracemalloc)",
        "RSS",
        True,
    ),
}


def table(rows: Sequence[Row]) -> str:
    width = max(len(row.name) for row in rows)
    lines = [
        f"{'benchmark':<{width}}  {'blueprint-net':>14}  {'reference':>12}"
        f"  {'ratio':>7}  note"
    ]
    for row in rows:
        reference = "-" if row.reference is None else f"{row.reference:.2f}"
        ratio = "-" if row.ratio is None else f"{row.ratio:.2f}"
        lines.append(
            f"{row.name:<{width}}  {row.ours:>14.2f}  {reference:>12}"
            f"  {ratio:>7}  {row.note}"
        )
    return "\n".join(lines)


def plot(rows: Sequence[Row], directory: Path) -> list[Path]:
    """One PNG per figure the rows have points for; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display here or in CI
    from matplotlib import pyplot

    written = []
    directory.mkdir(parents=True, exist_ok=True)
    for figure, (title, xlabel, ylabel, ours, reference, logx) in FIGURES.items():
        points = sorted(
            {row.point for row in rows if row.point and row.point.figure == figure}
        )
        if not points:
            continue
        fig, axes = pyplot.subplots(figsize=(6.4, 4.0), dpi=100)
        xs = [p.x for p in points]
        axes.plot(xs, [p.ours for p in points], "o-", label=ours)
        with_reference = [(p.x, p.reference) for p in points if p.reference is not None]
        if with_reference:
            axes.plot(*zip(*with_reference), "s--", label=reference)
        if logx:
            axes.set_xscale("log")
        axes.set(title=title, xlabel=xlabel, ylabel=ylabel)
        axes.set_ylim(bottom=0)
        axes.grid(True, alpha=0.3)
        axes.legend()
        fig.tight_layout()
        path = directory / f"{figure}.png"
        fig.savefig(path)
        pyplot.close(fig)
        written.append(path)
    return written
