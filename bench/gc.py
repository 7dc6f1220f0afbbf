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


class Pauses:
    """Times every collection through ``gc.callbacks`` while in a ``with``
    block: each one's generation and length, in :attr:`runs`."""

    def __init__(self) -> None:
        self.runs: list[tuple[int, float]] = []
        self._started = 0.0

    def __enter__(self) -> Pauses:
        gc.callbacks.append(self._record)
        return self

    def __exit__(self, *exc_info: object) -> None:
        gc.callbacks.remove(self._record)

    def _record(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.runs.append((info["generation"], time.perf_counter() - self._started))

    @property
    def total(self) -> float:
        return sum(pause for _, pause in self.runs)

    @property
    def worst(self) -> float:
        return max((pause for _, pause in self.runs), default=0.0)

    def since(self, start: int) -> str:
        """The collections after the first ``start``, by generation, in
        words: how many and the longest."""
        runs = self.runs[start:]
        parts = []
        for generation in (0, 1, 2):
            times = [pause for g, pause in runs if g == generation]
            longest = f" (longest {1e3 * max(times):.2f} ms)" if times else ""
            parts.append(f"gen{generation} {len(times)}{longest}")
        return "collections " + ", ".join(parts)


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
                started = time.perf_counter()
                try:
                    with Pauses() as pauses:
                        rate = await messaging._timed(
                            call, COUNT, messaging.window(SIZE, COUNT)
                        )
                finally:
                    _reset()
                elapsed = time.perf_counter() - started
                share = pauses.total / elapsed
                sample = (rate, share, len(pauses.runs), pauses.worst)
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
