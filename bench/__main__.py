"""``python -m bench [--quick]``: every benchmark, one table, ratios to references."""

from __future__ import annotations

import sys
from typing import Any

from twisted.internet import defer, task

from . import bans, framing, handshake, memory, messaging, tls


async def main(reactor: Any, quick: bool) -> None:
    rows = (
        framing.run(quick)
        + await handshake.run(reactor, quick)
        + await tls.run(reactor, quick)
        + await messaging.run(reactor, quick)
        + await bans.run(reactor, quick)
        + await memory.run(reactor, quick)  # last: tracemalloc slows all
    )
    width = max(len(name) for name, *_ in rows)
    print(
        f"{'benchmark':<{width}}  {'blueprint-net':>14}  {'reference':>12}"
        f"  {'ratio':>7}  note"
    )
    for name, ours, reference, note in rows:
        ratio = ours / reference if reference else float("nan")
        print(
            f"{name:<{width}}  {ours:>14.2f}  {reference:>12.2f}  {ratio:>7.2f}  {note}"
        )


if __name__ == "__main__":
    quick = "--quick" in sys.argv[1:]
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, quick)))
