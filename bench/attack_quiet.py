"""The quiet reference of ``bench.attack --fair``, apart: is its p99 the
first second of a fresh honest process, or steady?

``python -m bench.attack_quiet placed|shared [SECONDS] [PHASES]`` starts the
node of ``bench.attack_fair`` (``placed``: alone on the first CPU, the
honest peer on the second, as ``--fair`` runs; ``shared``: where the kernel
puts them) and runs PHASES quiet phases of SECONDS one after another, each
a fresh honest process asking ``echo`` every 10 ms.  It prints one JSON
line: per phase the p99, the p99 without the first second, the median, and
the ten slowest answers (ms).  Loopback only; bounded by PHASES x SECONDS.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import sys
from typing import Any

from twisted.internet import defer, task

from bench import attack_fair


def _ms(seconds: float) -> float:
    return round(seconds * 1e3, 2)


async def run(reactor: Any, placed: bool, seconds: float, phases: int) -> None:
    attack_fair._CPUS[:] = attack_fair._cpus(placed)
    before = os.sched_getaffinity(0) if attack_fair._CPUS else set()
    if attack_fair._CPUS:
        os.sched_setaffinity(0, {attack_fair._CPUS[0]})
    server = attack_fair.Server(reactor)
    node = server.node
    try:
        port = (await node.listen("p2ptls:0:interface=127.0.0.1")).getHost().port  # type: ignore[attr-defined]
        gc.collect()
        gc.freeze()  # as NodeService does, and as --fair does
        out = []
        warm = int(1.0 / attack_fair.INTERVAL)
        for phase in range(phases):
            answers = await attack_fair._asker(port, node.peer_id, seconds)
            out.append(
                {
                    "phase": phase,
                    "asked": len(answers),
                    "p99": _ms(attack_fair._p99(answers)),
                    "p99_after_first_second": _ms(attack_fair._p99(answers[warm:]))
                    if len(answers) > warm
                    else None,
                    "median": _ms(statistics.median(answers)),
                    "slowest": [_ms(a) for a in sorted(answers)[-10:]],
                }
            )
    finally:
        gc.unfreeze()
        await node.stop()
        if attack_fair._CPUS:
            os.sched_setaffinity(0, before)
    print(json.dumps({"placed": placed, "load": os.getloadavg()[0], "phases": out}))


def main() -> None:
    if sys.argv[1:2] not in (["placed"], ["shared"]):
        raise SystemExit(
            "usage: python -m bench.attack_quiet placed|shared [SECONDS] [PHASES]"
        )
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
    phases = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    placed = sys.argv[1] == "placed"
    task.react(
        lambda reactor: defer.ensureDeferred(run(reactor, placed, seconds, phases))
    )


if __name__ == "__main__":
    main()
