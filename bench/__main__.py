"""``python -m bench [--quick|--smoke] [--only NAME ...] [--plots DIR]``: every
benchmark, one table, each figure beside its reference from the same run.

``--quick`` runs every row with fewer repetitions and smaller counts; the
rows are the same.  ``--smoke`` runs every benchmark at its smallest size
(the test suite's check that each runs and prints its rows; the figures mean
nothing, and rows named for a size name the smaller one).  ``--only`` runs
the named benchmarks alone, in a fresh process.  ``--plots DIR`` also writes
the PNG plots of ``docs/performance.md`` (needs the ``plots`` extra).  The
first line is the load average (a warning follows when it is above 1).
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any, Callable, Optional

from twisted.internet import defer, task

from . import (
    bans,
    broadcast,
    framing,
    handshake,
    memory,
    messaging,
    mpyc_demos,
    report,
    sessions,
    streams,
    throughput,
    tls,
)
from .report import Row, load_header, plot, table


async def _framing(reactor: Any, quick: bool) -> list[Row]:
    return framing.run(quick)


#: In the order they run.  Memory first: its RSS figures need a process whose
#: heap the others have not grown (tracemalloc stops when it is done).
BENCHMARKS: dict[str, Callable[[Any, bool], Awaitable[list[Row]]]] = {
    "memory": memory.run,
    "framing": _framing,
    "handshake": handshake.run,
    "tls": tls.run,
    "messaging": messaging.run,
    "throughput": throughput.run,
    "broadcast": broadcast.run,
    "bans": bans.run,
    "streams": streams.run,
    "sessions": sessions.run,
    "mpyc": mpyc_demos.run,
}


async def main(
    reactor: Any, quick: bool, only: Sequence[str], plots: Optional[Path]
) -> None:
    print(load_header(), flush=True)
    rows: list[Row] = []
    for name, run in BENCHMARKS.items():
        if not only or name in only:
            rows += await run(reactor, quick)
    print(table(rows), flush=True)
    if plots is not None:
        for path in plot(rows, plots):
            print(f"wrote {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="every row at the smallest sizes (checks the suite runs; no figures)",
    )
    parser.add_argument(
        "--only", nargs="+", default=[], choices=BENCHMARKS, metavar="NAME"
    )
    parser.add_argument("--plots", type=Path, metavar="DIR", help="write PNG plots")
    options = parser.parse_args()
    quick, only, plots = options.quick or options.smoke, options.only, options.plots
    report.SMOKE = options.smoke
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, quick, only, plots)))
