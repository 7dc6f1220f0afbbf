"""``python -m bench.compare BEFORE AFTER [--runs N] [-- BENCH ARGUMENTS]``:
``python -m bench`` on two source trees, alternately, and each row's change.

In: two trees (checkouts or ``git worktree``\\ s), each with its own
``bench`` and ``blueprint_net``; the arguments after ``--`` go to every
``python -m bench`` (``--only messaging``, say).  Each run is a fresh
process with the tree as its working directory, so the tree's own code is
measured (checked before the first run), and the order alternates from
round to round so that a machine's drift falls on both trees alike.

Out: the load average at the start of each run, then for every row both
trees' tables have, the medians over the runs of its ratio to its same-run
reference and of our own figure, before and after, and the change (positive
is better; rows in ms, us, KiB and costs are better lower), marked when
worse by more than :data:`REGRESSION` (issue 21's "no row regresses by
more than 5%").  Both columns matter: the ratio cancels a drift that
slows the reference as much as us, our figure shows a change of the
reference's own.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple, Optional

#: A row worse than this, in either column, is marked.
REGRESSION = 0.05

#: One row of ``report.table``: name, our figure, reference or "-", ratio
#: or "-", note; columns two spaces apart at least.
_ROW = re.compile(
    r"^(?P<name>\S.*?)\s{2,}(?P<ours>-?\d+\.\d+)\s{2,}(?P<reference>-?\d+\.\d+|-)"
    r"\s{2,}(?P<ratio>-?\d+\.\d+|-)\s{2}(?P<note>.*)$"
)
#: Rows whose figure is better lower (times, sizes, costs).
_LOWER = ("(ms", "(us", "(s)", "(KiB)", "cost", "x4")


class Figure(NamedTuple):
    ours: float
    ratio: Optional[float]


#: A row's identity: its name and its note up to the first ";" (the
#: reference it is measured against), since one name may have several.
Key = tuple[str, str]


def parse(output: str) -> dict[Key, Figure]:
    """The rows of a ``python -m bench`` table, by :data:`Key`."""
    rows = {}
    for line in output.splitlines():
        match = _ROW.match(line)
        if match is None:
            continue
        ratio = match["ratio"]
        key = (match["name"].strip(), match["note"].split(";")[0].strip())
        rows[key] = Figure(float(match["ours"]), None if ratio == "-" else float(ratio))
    return rows


def lower_is_better(name: str) -> bool:
    return any(unit in name for unit in _LOWER)


def change(name: str, before: float, after: float) -> Optional[float]:
    """The relative change from ``before`` to ``after``, positive when
    better; None when ``before`` is 0."""
    if before == 0:
        return None
    relative = after / before - 1
    return -relative if lower_is_better(name) else relative


def _median(values: list[Optional[float]]) -> Optional[float]:
    known = [value for value in values if value is not None]
    return statistics.median(known) if known else None


def _percent(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * value:+.0f}%"


def _figures(values: list[Optional[float]]) -> str:
    return ", ".join("-" if value is None else f"{value:.2f}" for value in values)


def compare(
    before: list[dict[Key, Figure]], after: list[dict[Key, Figure]]
) -> list[str]:
    """One line per row that every run of both trees has, in the first
    run's order: the runs' ratios and the medians' changes."""
    runs = before + after
    lines = [
        "row | reference | ratio before | ratio after | change | ours before"
        " (median) | ours after (median) | change"
    ]
    for key in before[0]:
        if not all(key in run for run in runs):
            continue
        name = key[0]
        ratios = [[run[key].ratio for run in side] for side in (before, after)]
        ours = [[run[key].ours for run in side] for side in (before, after)]
        ratio_b, ratio_a = map(_median, ratios)
        ours_b, ours_a = (statistics.median(side) for side in ours)
        by_ratio = (
            None
            if ratio_b is None or ratio_a is None
            else change(name, ratio_b, ratio_a)
        )
        by_ours = change(name, ours_b, ours_a)
        worse = any(c is not None and c < -REGRESSION for c in (by_ratio, by_ours))
        lines.append(
            f"{name} | {key[1]} | {_figures(ratios[0])} | {_figures(ratios[1])}"
            f" | {_percent(by_ratio)} | {ours_b:.2f} | {ours_a:.2f}"
            f" | {_percent(by_ours)}{' | WORSE' if worse else ''}"
        )
    return lines


def run_bench(tree: Path, arguments: list[str]) -> str:
    """``python -m bench ARGUMENTS`` in ``tree``; what it printed."""
    return subprocess.run(
        [sys.executable, "-m", "bench", *arguments],
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
        timeout=3600,
    ).stdout


def _own_code(tree: Path) -> None:
    """Refuse a tree whose ``blueprint_net`` would be imported from
    elsewhere (the installed package would answer for a missing one)."""
    where = subprocess.run(
        [sys.executable, "-c", "import blueprint_net; print(blueprint_net.__file__)"],
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(where).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"python -m bench.compare: {tree} has no blueprint_net")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.compare",
        usage="python -m bench.compare BEFORE AFTER [--runs N] [-- BENCH ARGUMENTS]",
    )
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--runs", type=int, default=3, help="runs of each tree")
    split = argv.index("--") if "--" in argv else len(argv)
    options = parser.parse_args(argv[:split])
    passed = argv[split + 1 :]
    if options.runs < 1:
        parser.error("--runs is at least 1")
    for tree in (options.before, options.after):
        if not tree.is_dir():
            parser.error(f"{tree}: not a directory")
        _own_code(tree)
    #: Each tree's tables, before then after (the trees may be one).
    tables: tuple[list[dict[Key, Figure]], ...] = ([], [])
    for index in range(options.runs):
        order = [0, 1] if index % 2 == 0 else [1, 0]
        for side in order:
            tree = (options.before, options.after)[side]
            output = run_bench(tree, passed)
            load = output.splitlines()[0] if output else "?"
            print(f"run {index + 1}, {tree}: {load}", flush=True)
            tables[side].append(parse(output))
    print("\n".join(compare(*tables)))


if __name__ == "__main__":
    main(sys.argv[1:])
