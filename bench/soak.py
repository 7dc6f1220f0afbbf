"""Soak: one node under 100 peers' mixed direct and broadcast traffic.

``python -m bench.soak [MINUTES] [PEERS]`` (default 3 minutes, 100 peers; it
has been run for 10 minutes, and hours work the same way).  The node under
test (the hub) runs in this process; the peers run in a second process, each
sending the hub an ``echo`` request 5 times a second (under the default rate
limit of 10/s), while the hub broadcasts a request to every peer once a second.
It reports requests sent, answered, failed and lost (never answered nor failed:
must be 0) in both directions, and the hub's memory over time.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

from twisted.internet import defer, task
from twisted.internet.utils import getProcessOutputAndValue

from bench import PLAINTEXT
from blueprint_net._adapters.node import Node
from blueprint_net._core.identity import Identity, PeerId
from blueprint_net._ops.handlers import BUILTINS

PACE = 0.2  # seconds between one peer's requests


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def _peers(
    reactor: Any, port: int, hub: PeerId, count: int, seconds: float
) -> None:
    """The second process: ``count`` peers asking the hub until time is up."""
    nodes = [
        Node(
            Identity.generate(), reactor=reactor, handlers=BUILTINS, settings=PLAINTEXT
        )
        for _ in range(count)
    ]
    for node in nodes:
        await node.connect(f"tcp:127.0.0.1:{port}", peer_id=hub)
    stats: Counter[str] = Counter()
    deadline = time.monotonic() + seconds

    async def ask(node: Node) -> None:
        await task.deferLater(reactor, random.random() * PACE)  # spread them out
        while time.monotonic() < deadline:
            stats["sent"] += 1
            try:
                await node.request(
                    hub, "echo", os.urandom(random.choice((16, 256, 4096)))
                )
                stats["answered"] += 1
            except Exception as error:
                stats[f"failed.{type(error).__name__}"] += 1
            await task.deferLater(reactor, PACE)

    await defer.gatherResults([defer.ensureDeferred(ask(node)) for node in nodes])
    for node in nodes:
        await node.stop()
    print(json.dumps(stats), flush=True)


async def run(reactor: Any, minutes: float, peers: int) -> dict[str, Any]:
    seconds = minutes * 60
    hub = Node(
        Identity.generate(), reactor=reactor, handlers=BUILTINS, settings=PLAINTEXT
    )
    port = (await hub.listen("tcp:0:interface=127.0.0.1")).getHost().port  # type: ignore[attr-defined]
    tracemalloc.start(12 if os.environ.get("SOAK_TRACE") else 1)
    first: list[Any] = []
    if os.environ.get("SOAK_TRACE"):  # where the heap grew, from 30 s on
        reactor.callLater(30, lambda: first.append(tracemalloc.take_snapshot()))
    samples: list[tuple[float, float, float, int]] = []
    started = time.monotonic()

    def sample() -> None:
        heap = tracemalloc.get_traced_memory()[0]
        samples.append(
            (time.monotonic() - started, _rss() / 2**20, heap / 2**20, len(hub.peers))
        )

    sampler = task.LoopingCall(sample)
    sampler.start(10.0)
    flood = getProcessOutputAndValue(
        sys.executable,
        [
            "-m",
            "bench.soak",
            "--peers-process",
            str(port),
            str(hub.peer_id),
            str(peers),
            str(seconds),
        ],
        env=dict(os.environ),
        path=str(Path(__file__).parent.parent),
    )
    broadcast: Counter[str] = Counter()
    while len(hub.peers) < peers:
        await task.deferLater(reactor, 0.1)
    deadline = time.monotonic() + seconds - 5
    pending: set[defer.Deferred[Any]] = set()  # only those still running
    while time.monotonic() < deadline:
        asked = hub.broadcast("echo", b"from the hub", timeout=10.0)
        broadcast["broadcasts"] += 1

        def count(outcomes: Any) -> None:
            for outcome in outcomes.values():
                broadcast["sent"] += 1
                broadcast[
                    "answered"
                    if outcome.ok
                    else f"failed.{type(outcome.error).__name__}"
                ] += 1

        asked.addCallback(count)
        pending.add(asked)
        asked.addBoth(_forget, pending, asked)
        await task.deferLater(reactor, 1.0)
    await defer.gatherResults(list(pending))
    out, err, code = await flood
    sampler.stop()
    sample()
    if first:
        for stat in tracemalloc.take_snapshot().compare_to(first[0], "traceback")[:5]:
            print(f"{stat.size_diff / 1024:+.1f} KiB in {stat.count_diff:+} blocks")
            print("    " + "\n    ".join(stat.traceback.format()[-10:]))
    if code != 0:
        raise RuntimeError(err.decode())
    await hub.stop()
    tracemalloc.stop()
    direct = json.loads(out.decode().strip().splitlines()[-1])
    return {
        "direct": direct,
        "broadcast": dict(broadcast),
        "samples": samples,
        "counters": dict(hub.counters),
    }


def _forget(result: object, pending: set[Any], done: Any) -> object:
    pending.discard(done)
    return result


def report(result: dict[str, Any]) -> None:
    for name in ("direct", "broadcast"):
        stats = result[name]
        failed = sum(v for k, v in stats.items() if k.startswith("failed"))
        lost = stats["sent"] - stats["answered"] - failed
        print(
            f"{name:<10} sent {stats['sent']:>8}  answered {stats['answered']:>8}"
            f"  failed {failed:>5}  lost {lost}  {dict(stats)}"
        )
    print("\n  time s    RSS MiB   heap MiB   peers")
    for at, rss, heap, peers in result["samples"]:
        print(f"  {at:>6.0f}   {rss:>8.1f}   {heap:>8.2f}   {peers:>5}")
    steady = [s for s in result["samples"] if s[0] >= 60] or result["samples"]
    heaps = [s[2] for s in steady]
    median = statistics.median(heaps)
    print(
        f"\nheap from 60 s on: min {min(heaps):.2f}, median {median:.2f},"
        f" max {max(heaps):.2f} MiB"
    )


def main() -> None:
    if sys.argv[1:2] == ["--peers-process"]:
        port, hub, count, seconds = sys.argv[2:6]
        task.react(
            lambda r: defer.ensureDeferred(
                _peers(
                    r, int(port), PeerId.from_string(hub), int(count), float(seconds)
                )
            )
        )
        return
    minutes = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    peers = int(sys.argv[2]) if len(sys.argv) > 2 else 100

    async def go(reactor: Any) -> None:
        report(await run(reactor, minutes, peers))

    task.react(lambda reactor: defer.ensureDeferred(go(reactor)))


if __name__ == "__main__":
    main()
