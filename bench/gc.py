"""What the garbage collector costs in the pipelined request path, and what
``gc.freeze()`` after start-up changes.

``python -m bench.gc [ROUNDS]`` runs the pipelined 64 B echo (10,000
requests, all in flight) of ``bench.messaging`` for blueprint-net and the bare
``Int32StringReceiver`` echo, interleaved, under each collector setting:

* ``default`` -- CPython's thresholds (700, 10, 10);
* ``freeze`` -- ``gc.collect(); gc.freeze()`` once the nodes are up, as
  ``NodeService`` does at start-up: objects that live as long as the process
  (modules, classes, the node) leave the collector's generations;
* ``threshold 10000`` -- a larger first generation (fewer, longer passes);
* both together.

For each it prints requests per second against the bare echo under the same
setting, the share of the run spent in collections, their count, and the
longest single pause (medians over the rounds).  Collections are timed with
``gc.callbacks``.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from typing import Any, Callable

from twisted.internet import defer, task

from . import messaging
from .report import Row, table

SIZE, COUNT = 64, 10_000
DEFAULT_THRESHOLD = gc.get_threshold()


def _freeze() -> None:
    gc.collect()
    gc.freeze()


def _raise_threshold() -> None:
    gc.set_threshold(10_000, 10, 10)


def _both() -> None:
    _freeze()
    _raise_threshold()


VARIANTS: dict[str, Callable[[], None]] = {
    "default": lambda: None,
    "freeze": _freeze,
    "threshold 10000": _raise_threshold,
    "freeze + threshold 10000": _both,
}


class _Pauses:
    """Times every collection through ``gc.callbacks``."""

    def __init__(self) -> None:
        self.total = self.worst = 0.0
        self.count = 0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            pause = time.perf_counter() - self._started
            self.total += pause
            self.worst = max(self.worst, pause)
            self.count += 1


def _reset() -> None:
    gc.unfreeze()
    gc.set_threshold(*DEFAULT_THRESHOLD)


async def measure(reactor: Any, rounds: int) -> list[Row]:
    payload = bytes(SIZE)
    samples: dict[tuple[str, str], list[tuple[float, float, int, float]]] = {}
    systems = (("bare", messaging._bare), ("blueprint", messaging._blueprint))
    for _ in range(rounds):  # interleaved, so drift hits every variant alike
        for name, setup in VARIANTS.items():
            for system, make in systems:
                call, close = await make(reactor, payload)
                setup()
                pauses = _Pauses()
                gc.callbacks.append(pauses)
                started = time.perf_counter()
                try:
                    rate = await messaging._timed(
                        call, COUNT, messaging.window(SIZE, COUNT)
                    )
                finally:
                    gc.callbacks.remove(pauses)
                    _reset()
                elapsed = time.perf_counter() - started
                share = pauses.total / elapsed
                sample = (rate, share, pauses.count, pauses.worst)
                samples.setdefault((name, system), []).append(sample)
                await close()
    rows = []
    for name in VARIANTS:
        ours, bare = samples[name, "blueprint"], samples[name, "bare"]

        def median(index: int, of: list[tuple[float, float, int, float]]) -> float:
            return statistics.median(sample[index] for sample in of)

        rows.append(
            Row(
                f"pipelined 64 B req/s, gc {name}",
                median(0, ours),
                median(0, bare),
                f"ref: bare echo, same setting; gc {median(1, ours):.1%} of the run,"
                f" {median(2, ours):.0f} passes, worst pause"
                f" {median(3, ours) * 1e3:.2f} ms",
            )
        )
    return rows


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 7

    async def go(reactor: Any) -> None:
        print(table(await measure(reactor, rounds)))

    task.react(lambda reactor: defer.ensureDeferred(go(reactor)))


if __name__ == "__main__":
    main()
