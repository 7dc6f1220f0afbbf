"""An honest peer's requests before and during a hostile flood.

``python -m bench.attack [SECONDS] [CONCURRENCY]`` starts a node (loopback
is *not* exempt from its per-address limits here, since the attackers come from
127.0.x.y), connects an honest peer from 127.0.0.1 that sends a request every
10 ms, measures for SECONDS without a flood, then for SECONDS while
``bench.flood`` runs in its own process with CONCURRENCY connections of each
kind.  It prints the honest peer's success rate and latencies for both
phases, what the flood attempted and what the node refused and banned, and
the node's memory (RSS) and open connections over time.

With ``--hogs`` (``python -m bench.attack [SECONDS] [CONCURRENCY] --hogs``)
three phases follow, each SECONDS long (``bench.hogs`` runs the attackers in
their own process): honest newcomers (a fresh key and a fresh address each
time) dialing, verifying and asking once, first without a flood, then during
a flood of silent sockets (16 from each of 100 addresses); then the honest
peer's requests while 500 verified peers each ask for 16 MiB and never read.
Each row gives the success rate, median and p99 latency and the node's peak
RSS during that phase.

With ``--gossip`` (``python -m bench.attack --gossip [--smoke]``) it runs the
attacks on topic gossip and discovery instead: ``bench.attack_gossip``'s
table (fresh-origin flood, backoff exhaustion, subscription flood, control
frames), then ``bench.attack_discovery``'s rows (eclipse at start-up,
record-aimed dials); each module also runs alone.

With ``--fair`` (``python -m bench.attack --fair [--smoke]``) it runs
``bench.attack_fair``'s rows instead, on a node with the default settings:
the honest peer's p99 latency while another verified peer floods (beside
the quiet p99, target at most twice it), the flooding peer's share of
handler time with k = 2 and 4 peers busy (beside the fair share, 1/k), and
the requests refused ``RATE_LIMITED`` (none).  SECONDS (default 10 here)
is each phase's length.

Every mode prints the load average first (and warns when it is above 1).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import attrs
from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.utils import getProcessOutputAndValue

from bench import PLAINTEXT
from bench.report import load_header
from blueprint_net._adapters.node import Node
from blueprint_net._core.identity import Identity
from blueprint_net._core.messaging import IncomingRequest
from blueprint_net._policy.bans import BanRegistry
from blueprint_net._policy.limits import ConnectionLimits
from blueprint_net._policy.scores import Policy, PolicySettings

#: The honest peer's pace; the node's limits (the defaults, no request rate,
#: but loopback is not exempt from the per-address ones).
INTERVAL = 0.01
LIMITS = ConnectionLimits(exempt_loopback=False)


#: The hogs' sizes: silent sockets come 16 from each address.
IDLE_ADDRESSES = 100
UNREAD_PEERS = 500
#: At most this many honest newcomers per phase (and SECONDS bound it too).
MAX_NEWCOMERS = 2000


@attrs.define
class Phase:
    name: str
    latencies: list[float] = attrs.Factory(list)
    failures: int = 0
    #: The node's peak RSS while this phase ran, in bytes.
    rss: int = 0
    #: When it ran (``time.monotonic()``).
    started: float = 0.0
    ended: float = 0.0

    @property
    def success(self) -> float:
        done = len(self.latencies) + self.failures
        return len(self.latencies) / max(done, 1)

    def row(self) -> str:
        done = len(self.latencies) + self.failures
        lat = sorted(self.latencies) or [float("nan")]
        median, p99 = statistics.median(lat), lat[int(0.99 * (len(lat) - 1))]
        return (
            f"{self.name:<16} {done:>8} {self.failures:>7}"
            f" {100 * self.success:>8.2f}%"
            f" {median * 1e3:>9.2f} {p99 * 1e3:>9.2f} {lat[-1] * 1e3:>9.2f}"
            f" {self.rss / 2**20:>9.1f}"
        )


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def _honest(
    reactor: Any, client: Node, server: Node, phase: Phase, seconds: float
) -> None:
    phase.started = time.monotonic()
    deadline = phase.started + seconds
    while time.monotonic() < deadline:
        start = time.perf_counter()
        try:
            await client.request(server.peer_id, "echo", b"honest", timeout=5.0)
        except Exception:
            phase.failures += 1
        else:
            phase.latencies.append(time.perf_counter() - start)
        await task.deferLater(reactor, INTERVAL)
    phase.ended = time.monotonic()


async def _newcomers(
    reactor: Any, port: int, server: Node, phase: Phase, seconds: float
) -> None:
    """Honest peers never seen before, from addresses never used before: a
    fresh key dials, verifies and asks once, then leaves."""
    phase.started = time.monotonic()
    deadline = phase.started + seconds
    for index in range(MAX_NEWCOMERS):
        if time.monotonic() >= deadline:
            break
        source = f"127.0.{200 + index // 250 % 50}.{index % 250 + 1}"
        client = Node(Identity.generate(), settings=PLAINTEXT)
        endpoint = TCP4ClientEndpoint(
            reactor, "127.0.0.1", port, timeout=5, bindAddress=(source, 0)
        )
        start = time.perf_counter()
        try:
            await client.connect(endpoint, peer_id=server.peer_id)
            await client.request(server.peer_id, "echo", b"new", timeout=5.0)
        except Exception:
            phase.failures += 1
        else:
            phase.latencies.append(time.perf_counter() - start)
        await client.stop()
        await task.deferLater(reactor, INTERVAL)
    phase.ended = time.monotonic()


def _blob(request: IncomingRequest) -> bytes:
    return bytes(request.payload[:1]) * (1 << 20)  # a fresh MiB each time


def _hogs(
    mode: str, port: int, seconds: float, count: int
) -> defer.Deferred[tuple[bytes, bytes, int]]:
    running: defer.Deferred[tuple[bytes, bytes, int]] = getProcessOutputAndValue(
        sys.executable,
        ["-m", "bench.hogs", mode, str(port), str(seconds), str(count)],
        env=dict(os.environ),
        path=str(Path(__file__).parent.parent),
    )
    return running


async def run(
    reactor: Any,
    seconds: float,
    concurrency: int,
    *,
    hogs: bool = False,
    idle_addresses: int = IDLE_ADDRESSES,
    unread_peers: int = UNREAD_PEERS,
) -> dict[str, Any]:
    def echo(request: IncomingRequest) -> bytes:
        return request.payload

    # The flood comes from loopback, which is never banned automatically
    # unless asked for: ask, so the flood is banned as a remote one would be.
    policy = Policy(BanRegistry(reactor), PolicySettings(ban_loopback=True))
    server = Node(
        Identity.generate(),
        handlers={"echo": echo, "blob": _blob},
        limits=LIMITS,
        policy=policy,
        settings=PLAINTEXT,
    )
    client = Node(Identity.generate(), settings=PLAINTEXT)
    port = (await server.listen("tcp:0:interface=127.0.0.1")).getHost().port  # type: ignore[attr-defined]
    await client.connect(f"tcp:127.0.0.1:{port}", peer_id=server.peer_id)

    samples: list[tuple[float, int, int, int]] = []
    sampler = task.LoopingCall(
        lambda: samples.append(
            (time.monotonic(), _rss(), server.limiter.open, server.memory.used)
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
    if code != 0:
        sampler.stop()
        raise RuntimeError(f"the flood failed: {err.decode()}")
    phases = [quiet, flooded]
    hogged: dict[str, Any] = {}
    if hogs:
        dial = Phase("dial, quiet")
        await _newcomers(reactor, port, server, dial, seconds)
        idle = Phase("dial, idle flood")
        idling = _hogs("idle", port, seconds, idle_addresses)
        await task.deferLater(reactor, min(2.0, seconds / 4))  # the flood is up
        await _newcomers(reactor, port, server, idle, seconds)
        hogged["idle"] = await idling
        unread = Phase("unread peers")
        unreading = _hogs("unread", port, 2 * seconds, unread_peers)
        await task.deferLater(reactor, seconds)  # the peers are connected
        await _honest(reactor, client, server, unread, seconds)
        hogged["unread"] = await unreading
        phases += [dial, idle, unread]
        for name, (hog_out, hog_err, hog_code) in hogged.items():
            if hog_code != 0:
                sampler.stop()
                raise RuntimeError(f"bench.hogs {name} failed: {hog_err.decode()}")
            hogged[name] = json.loads(hog_out.decode().strip().splitlines()[-1])
    sampler.stop()
    bounds = {"memory_peak": server.memory.peak, "memory_budget": server.memory.limit}
    await client.stop()
    await server.stop()
    _phase_rss(phases, samples)
    return {
        "phases": phases,
        "flood": json.loads(out.decode().strip().splitlines()[-1]),
        "hogs": hogged,
        "bounds": bounds,
        "counters": dict(sorted(server.counters.items())),
        "samples": samples,
    }


def _phase_rss(phases: list[Phase], samples: list[tuple[float, int, int, int]]) -> None:
    """Each phase's peak RSS, from the samples taken while it ran."""
    for phase in phases:
        inside = [s[1] for s in samples if phase.started <= s[0] <= phase.ended]
        phase.rss = max(inside, default=0)


def report(result: dict[str, Any]) -> None:
    print(
        f"{'phase':<16} {'tries':>8} {'failed':>7} {'success':>9}"
        f" {'median ms':>9} {'p99 ms':>9} {'worst ms':>9} {'RSS MiB':>9}"
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
    for name, stats in result["hogs"].items():
        print(f"\nbench.hogs {name} (attacker's view): {json.dumps(stats)}")
    bounds = result["bounds"]
    print(
        f"\nnode memory budget: {bounds['memory_budget'] / 2**20:.0f} MiB,"
        f" peak counted {bounds['memory_peak'] / 2**20:.1f} MiB"
    )
    counters = result["counters"]
    refused = sum(v for k, v in counters.items() if k.startswith("refused."))
    print(f"\nnode: refused {refused} connections before reading; counters:")
    for key, value in counters.items():
        print(f"  {key:<40} {value:>7}")
    rss = [sample[1] for sample in result["samples"]]
    opened = [sample[2] for sample in result["samples"]]
    print(
        f"\nnode RSS: start {rss[0] / 2**20:.1f} MiB, peak {max(rss) / 2**20:.1f} MiB,"
        f" end {rss[-1] / 2**20:.1f} MiB; open connections: peak {max(opened)}"
        f" (limit {LIMITS.max_connections})"
    )


async def _gossip_attacks(reactor: Any, smoke: bool) -> None:
    """``--gossip``: the gossip attacks' table, then discovery's rows."""
    from bench import attack_discovery, attack_gossip

    seconds = 1.0 if smoke else 8.0
    rows = await attack_gossip.run_gossip_attacks(reactor, seconds, smoke)
    print(attack_gossip.table(rows), flush=True)
    print()
    await attack_discovery.run(reactor, smoke)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.attack",
        description="An honest peer's requests before and during a hostile"
        " flood (see this module's docstring).",
    )
    parser.add_argument("seconds", nargs="?", type=float)
    parser.add_argument("concurrency", nargs="?", type=int, default=40)
    parser.add_argument("--hogs", action="store_true", help="the hog phases too")
    parser.add_argument(
        "--gossip", action="store_true", help="the gossip and discovery attacks"
    )
    parser.add_argument(
        "--fair",
        action="store_true",
        help="a verified peer's flood: honest latency and fair shares",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="with --gossip or --fair: smallest sizes"
    )
    parser.add_argument(
        "--shared-cpus",
        action="store_true",
        help="with --fair: the node and its peers share the CPUs"
        " (see bench.attack_fair)",
    )
    options = parser.parse_args()
    print(load_header(), flush=True)
    if options.fair:
        from bench import attack_fair
        from bench.report import table

        phase = 1.0 if options.smoke else options.seconds or 10.0

        async def fair(reactor: Any) -> None:
            rows = await attack_fair.run(reactor, phase, not options.shared_cpus)
            print(table(rows), flush=True)

        task.react(lambda reactor: defer.ensureDeferred(fair(reactor)))
        return
    if options.gossip:
        smoke = options.smoke
        task.react(
            lambda reactor: defer.ensureDeferred(_gossip_attacks(reactor, smoke))
        )
        return
    seconds, concurrency, hogs = (
        options.seconds or 20.0,
        options.concurrency,
        options.hogs,
    )

    async def go(reactor: Any) -> None:
        report(await run(reactor, seconds, concurrency, hogs=hogs))

    task.react(lambda reactor: defer.ensureDeferred(go(reactor)))


if __name__ == "__main__":
    main()
