"""The suite's one table, and its plots.

A :class:`Row` is one line of the table: a blueprint-net figure beside its
reference from the same run.  A row may also carry a :class:`Point` for a
plot; :func:`plot` draws one PNG per figure name (matplotlib is the optional
``plots`` extra, so the table never needs it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple, Optional, Union

#: ``python -m bench --smoke``: every benchmark at the smallest size that
#: still runs each code path and prints each row (the test suite's check that
#: the suite works).  Its figures mean nothing.  Set before any benchmark runs.
SMOKE = False


#: Where Linux keeps the load average (1, 5 and 15 minutes, then more).
LOADAVG = Path("/proc/loadavg")
#: Above this 1-minute load average the header warns: other work shares the
#: CPUs, which slows a reference as much as us and pulls ratios toward 1.
BUSY_LOAD = 1.0


def load_average(path: Union[str, Path] = LOADAVG) -> Optional[tuple[float, ...]]:
    """The 1, 5 and 15 minute load averages; None where they cannot be read."""
    try:
        fields = Path(path).read_text().split()
        return tuple(float(field) for field in fields[:3])
    except (OSError, ValueError):
        return None


def load_header(path: Union[str, Path] = LOADAVG) -> str:
    """The line every benchmark prints first: the load average, so each
    figure says how quiet the machine was; and a one-line warning when the
    last minute's is above :data:`BUSY_LOAD`."""
    load = load_average(path)
    if load is None or len(load) < 3:
        return "load average: unknown (no /proc/loadavg)"
    line = f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1, 5, 15 min)"
    if load[0] > BUSY_LOAD:
        line += (
            f"\nwarning: the 1-minute load average {load[0]:.2f} is above"
            f" {BUSY_LOAD:g}: other work shares the CPUs (ratios drift toward 1)"
        )
    return line


def load_now(path: Union[str, Path] = LOADAVG) -> str:
    """The 1-minute load average, for a row's note (a figure measured over
    minutes on a shared machine says what the machine was doing then)."""
    load = load_average(path)
    return "?" if not load else f"{load[0]:.1f}"


def without_load_header(output: str) -> str:
    """``output`` without the lines :func:`load_header` made (for parsers)."""
    return "\n".join(
        line
        for line in output.splitlines()
        if not line.startswith(("load average: ", "warning: the 1-minute load"))
    )


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
