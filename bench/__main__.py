"""``python -m bench [--quick] [--plots DIR]``: every benchmark, one table,
each figure beside its reference from the same run.

``--quick`` runs every row with fewer repetitions and smaller counts (CI's
smoke test); the rows are the same.  ``--plots DIR`` also writes the PNG plots of
``docs/performance.md`` (needs the ``plots`` extra: matplotlib).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Optional

from twisted.internet import defer, task

from . import bans, broadcast, framing, handshake, memory, messaging, throughput, tls
from .report import plot, table


async def main(reactor: Any, quick: bool, plots: Optional[Path]) -> None:
    # Memory first: its RSS figures need a process whose heap the other
    # benchmarks have not already grown (tracemalloc stops when it is done).
    rows = (
        await memory.run(reactor, quick)
        + framing.run(quick)
        + await handshake.run(reactor, quick)
        + await tls.run(reactor, quick)
        + await messaging.run(reactor, quick)
        + await throughput.run(reactor, quick)
        + await broadcast.run(reactor, quick)
        + await bans.run(reactor, quick)
    )
    print(table(rows), flush=True)
    if plots is not None:
        for path in plot(rows, plots):
            print(f"wrote {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--plots", type=Path, metavar="DIR", help="write PNG plots")
    options = parser.parse_args()
    task.react(
        lambda reactor: defer.ensureDeferred(
            main(reactor, options.quick, options.plots)
        )
    )
