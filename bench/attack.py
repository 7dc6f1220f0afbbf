"""An honest peer's requests before and during a hostile flood.

``python -m bench.attack [SECONDS] [CONCURRENCY]`` starts a node (loopback
is *not* exempt from its per-address limits here, since the attackers come from
127.0.x.y), connects an honest peer from 127.0.0.1 that sends a request every
10 ms, measures for SECONDS without a flood, then for SECONDS while
``bench.flood`` runs in its own process with CONCURRENCY connections of each
kind.  It prints the honest peer's success rate and latencies for both
phases, what the flood attempted and what the node refused and banned, and
the node's memory (RSS) and open connections over time.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import attrs
from twisted.internet import defer, task
from twisted.internet.utils import getProcessOutputAndValue

from bench import PLAINTEXT
from blueprint_net._adapters.node import Node
from blueprint_net._core.identity import Identity
from blueprint_net._core.messaging import IncomingRequest
from blueprint_net._policy.bans import BanRegistry
from blueprint_net._policy.limits import ConnectionLimits
from blueprint_net._policy.scores import Policy, PolicySettings

#: The honest peer's pace, and the node's rate limit (raised from the default
#: 10/s so that what is measured is the flood, not the honest peer's excess).
INTERVAL = 0.01
LIMITS = ConnectionLimits(exempt_loopback=False, request_rate=200, request_burst=400)


@attrs.define
class Phase:
    name: str
    latencies: list[float] = attrs.Factory(list)
    failures: int = 0

    def row(self) -> str:
        done = len(self.latencies) + self.failures
        lat = sorted(self.latencies) or [float("nan")]
        median, p99 = statistics.median(lat), lat[int(0.99 * (len(lat) - 1))]
        return (
            f"{self.name:<12} {done:>8} {self.failures:>7}"
            f" {100 * len(self.latencies) / max(done, 1):>8.2f}%"
            f" {median * 1e3:>9.2f} {p99 * 1e3:>9.2f} {lat[-1] * 1e3:>9.2f}"
        )


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def _honest(
    reactor: Any, client: Node, server: Node, phase: Phase, seconds: float
) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        start = time.perf_counter()
        try:
            await client.request(server.peer_id, "echo", b"honest", timeout=5.0)
        except Exception:
            phase.failures += 1
        else:
            phase.latencies.append(time.perf_counter() - start)
        await task.deferLater(reactor, INTERVAL)


async def run(reactor: Any, seconds: float, concurrency: int) -> dict[str, Any]:
    def echo(request: IncomingRequest) -> bytes:
        return request.payload

    # The flood comes from loopback, which is never banned automatically
    # unless asked for: ask, so the flood is banned as a remote one would be.
    policy = Policy(BanRegistry(reactor), PolicySettings(ban_loopback=True))
    server = Node(
        Identity.generate(),
        handlers={"echo": echo},
        limits=LIMITS,
        policy=policy,
        settings=PLAINTEXT,
    )
    client = Node(Identity.generate(), settings=PLAINTEXT)
    port = (await server.listen("tcp:0:interface=127.0.0.1")).getHost().port  # type: ignore[attr-defined]
    await client.connect(f"tcp:127.0.0.1:{port}", peer_id=server.peer_id)

    samples: list[tuple[float, int, int]] = []
    started = time.monotonic()
    sampler = task.LoopingCall(
        lambda: samples.append(
            (time.monotonic() - started, _rss(), server.limiter.open)
        )
    )
    sampler.start(0.5)

    quiet, flooded = Phase("no flood"), Phase("flood")
    await _honest(reactor, client, server, quiet, seconds)
    flooding = getProcessOutputAndValue(
        sys.executable,
        ["-m", "bench.flood", str(port), str(seconds), str(concurrency)],
        env=dict(os.environ),
        path=str(Path(__file__).parent.parent),
    )
    await _honest(reactor, client, server, flooded, seconds)
    out, err, code = await flooding
    sampler.stop()
    if code != 0:
        raise RuntimeError(f"the flood failed: {err.decode()}")
    await client.stop()
    await server.stop()
    return {
        "phases": [quiet, flooded],
        "flood": json.loads(out.decode().strip().splitlines()[-1]),
        "counters": dict(sorted(server.counters.items())),
        "samples": samples,
    }


def report(result: dict[str, Any]) -> None:
    print(
        f"{'phase':<12} {'requests':>8} {'failed':>7} {'success':>9}"
        f" {'median ms':>9} {'p99 ms':>9} {'worst ms':>9}"
    )
    for phase in result["phases"]:
        print(phase.row())
    flood = result["flood"]
    print("\nflood (attacker's view): kind, connections attempted, closed unread")
    for kind in ("idle", "garbage", "oversized", "badsig", "replay"):
        print(
            f"  {kind:<10} {flood.get(f'{kind}.attempts', 0):>7}"
            f" {flood.get(f'{kind}.refused_unread', 0):>7}"
        )
    counters = result["counters"]
    refused = sum(v for k, v in counters.items() if k.startswith("refused."))
    print(f"\nnode: refused {refused} connections before reading; counters:")
    for key, value in counters.items():
        print(f"  {key:<40} {value:>7}")
    rss = [rss for _, rss, _ in result["samples"]]
    opened = [n for _, _, n in result["samples"]]
    print(
        f"\nnode RSS: start {rss[0] / 2**20:.1f} MiB, peak {max(rss) / 2**20:.1f} MiB,"
        f" end {rss[-1] / 2**20:.1f} MiB; open connections: peak {max(opened)}"
        f" (limit {LIMITS.max_connections})"
    )


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 20.0
    concurrency = int(sys.argv[2]) if len(sys.argv) > 2 else 40

    async def go(reactor: Any) -> None:
        report(await run(reactor, seconds, concurrency))

    task.react(lambda reactor: defer.ensureDeferred(go(reactor)))


if __name__ == "__main__":
    main()
