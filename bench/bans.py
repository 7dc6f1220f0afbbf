"""Does persisting bans stall the reactor?

A 1 ms ``LoopingCall`` records how late each tick runs while bans are written
to a real SQLite file (WAL, ``synchronous=FULL``): through ``BanRegistry`` and
its ``SqliteBanStore`` (commits on adbapi's writer thread), and, as the
reference, the same commits made synchronously on the reactor thread.  The
figure is the reactor's worst and 99th-percentile lateness.
"""

from __future__ import annotations

import gc
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from twisted.internet import task

from blueprint_net._adapters.banstore import _SCHEMA, SqliteBanStore, _configure
from blueprint_net._policy.bans import BanRegistry

from . import report
from .report import Row

TICK = 0.001


async def _lateness(reactor: Any, work: Callable[[], Any]) -> list[float]:
    # Collect first: a collection of an earlier benchmark's garbage (500
    # broadcast peers) landing here measured as a 30-46 ms stall.
    gc.collect()
    late: list[float] = []
    expected = [time.perf_counter() + TICK]

    def tick() -> None:
        now = time.perf_counter()
        late.append(max(0.0, now - expected[0]))
        expected[0] = now + TICK

    ticker = task.LoopingCall(tick)
    ticker.start(TICK, now=False)
    await work()
    await task.deferLater(reactor, 0.05)
    ticker.stop()
    return late


async def _through_registry(reactor: Any, path: Path, count: int) -> list[float]:
    store = SqliteBanStore(path)
    registry = BanRegistry(reactor, store)

    async def work() -> None:
        for i in range(count):
            registry.ban(f"10.1.{i // 256}.{i % 256}", "bench")
            if i % 10 == 0:
                await task.deferLater(reactor, 0)  # let the reactor run between
        await store.flush()

    late = await _lateness(reactor, work)
    await store.close()
    return late


async def _synchronous(reactor: Any, path: Path, count: int) -> list[float]:
    connection = sqlite3.connect(str(path))
    _configure(connection)
    connection.execute(_SCHEMA)

    async def work() -> None:
        for i in range(count):
            with connection:  # one commit, one fsync, on the reactor thread
                connection.execute(
                    "INSERT OR REPLACE INTO bans VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        "network",
                        f"10.2.{i // 256}.{i % 256}/32",
                        "bench",
                        0.0,
                        "manual",
                        None,
                    ),
                )
            if i % 10 == 0:
                await task.deferLater(reactor, 0)

    late = await _lateness(reactor, work)
    connection.close()
    return late


def _summary(late: list[float]) -> tuple[float, float]:
    ordered = sorted(late)
    return ordered[int(0.99 * (len(ordered) - 1))] * 1e3, ordered[-1] * 1e3


async def run(reactor: Any, quick: bool = False) -> list[Row]:
    count = 10 if report.SMOKE else 100 if quick else 1000
    with tempfile.TemporaryDirectory() as directory:
        ours = await _through_registry(reactor, Path(directory) / "a.sqlite", count)
        reference = await _synchronous(reactor, Path(directory) / "b.sqlite", count)
    (our_p99, our_worst), (ref_p99, ref_worst) = _summary(ours), _summary(reference)
    note = f"{count} bans; ref: the same commits on the reactor thread"
    return [
        Row("reactor lateness p99 while banning (ms)", our_p99, ref_p99, note),
        Row("reactor lateness worst while banning (ms)", our_worst, ref_worst, note),
        Row(
            "reactor lateness median while banning (ms)",
            statistics.median(ours) * 1e3,
            statistics.median(reference) * 1e3,
            note,
        ),
    ]
