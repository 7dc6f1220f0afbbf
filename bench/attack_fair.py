"""A verified peer that floods: the honest peer's latency, and fair shares.

``python -m bench.attack --fair [--smoke]`` (or ``python -m bench.attack_fair
[SECONDS]``) starts a node with the default settings and limits (TLS, no
request rate) and prints two kinds of rows, each beside its reference from
the same run:

* *honest p99 under a verified flood*: an honest peer in its own process
  asks ``echo`` every 10 ms for SECONDS with no other traffic (the reference), then
  for SECONDS while another verified peer, in its own process, keeps 1,024
  requests outstanding (far past the node's in-flight bound of 256: as fast
  as the node lets it): ``echo`` (the most requests a second), then ``work``
  of 100 µs of handler time each (the most handler time per byte).  Target:
  p99 at most twice the quiet p99.
* *flooder's share of handler time, k peers*: k verified peers in another
  process each keep 1,024 ``work`` requests outstanding; the flooder's ask
  for ten times the handler time (500 µs against 50 µs).  The node measures
  each peer's handler time over the middle third of SECONDS; the reference
  is the fair share, 1/k, and the note gives the share first come, first
  served would give (the same number of requests from each).

*Separate machines, emulated.* On one machine the flooding peer's process
competes for the CPUs with the node and with the honest peer, so the honest
tail measures the kernel's scheduler: with all three sharing two CPUs, the
node's turns of fair shares were seen lasting 3-4 ms of wall time while the
node's thread ran for 0.2-0.4 ms of them (descheduled), which a remote
flooder, spending its own CPU, cannot do. So, where the machine has two
CPUs or more (Linux), the node runs alone on the first, the peers on the
second, and the latency rows' flooding peer in the idle scheduling class
(``SCHED_IDLE``: it uses what the honest peer leaves, as another machine's
CPU would); the node is frozen for the collector (``gc.freeze()``) as
``twistd``'s ``NodeService`` freezes it at start-up.  ``--shared-cpus`` (of
``python -m bench.attack --fair``) runs every process where the kernel puts
it, as before; the notes say which.  Read the ratio with its reference:
placed so, every round trip pays a cross-CPU wake-up (the quiet median
0.36-0.44 ms against 0.20-0.25 shared, ``bench.attack_quiet``), and the
quiet p99 moves from machine to machine (1.6-2.1 ms on one, 0.8-1.0 on
another of the same kind); the notes give both medians, and
docs/security.md the absolute figures.  The flooder in the idle class gets
what every other process on its CPU leaves, not only the honest peer, so
on a shared machine it may flood less (the notes say how much was served).

Loopback only; every peer's traffic is bounded by SECONDS (and the node
closes what is left).  The child processes are this module with ``flood
PORT PEER_ID SECONDS K KIND`` and ``honest PORT PEER_ID SECONDS``.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import statistics
import sys
import time
from collections import Counter, defaultdict
from typing import Any, Callable

from twisted.internet import defer, task
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.failure import Failure

from bench import child_env
from bench.gc import Pauses
from bench.report import Row, load_header, load_now, table
from blueprint_net._adapters.node import Node
from blueprint_net._core.errors import SendQueueFull
from blueprint_net._core.identity import Identity, PeerId
from blueprint_net._core.messaging import IncomingRequest

#: The honest peer's pace (as in ``bench.attack``).
INTERVAL = 0.01
#: Requests each flooding or busy peer keeps outstanding.
WINDOW = 1024
#: Handler time per ``work`` request, by its payload: the share rows'
#: flooder's, the other busy peers', the latency row's flooder's.
WORK = {b"flood": 0.0005, b"busy": 0.00005, b"latency": 0.0001}
#: The k of the share rows.
PEERS = (2, 4)


#: The environment variable that tells a child process where to run:
#: ``CPU`` or ``CPU,idle`` (see the module: separate machines, emulated).
PLACE = "BENCH_ATTACK_PLACE"


def _cpus(separate: bool) -> list[int]:
    """The CPUs to place the node and the peers on, or [] to let them share."""
    if not separate or not hasattr(os, "sched_setaffinity"):
        return []
    cpus = sorted(os.sched_getaffinity(0))
    return cpus[:2] if len(cpus) >= 2 else []


def _placed(idle: bool) -> dict[str, str]:
    """A child's environment: on the peers' CPU; the flooder beside the
    honest peer in the idle class.  (The share rows' busy peers are not:
    nobody's latency is measured there, and on a loaded machine the idle
    class would starve them, so that no peer's requests but the flooder's
    wait.)"""
    env = child_env()
    if _CPUS:
        env[PLACE] = f"{_CPUS[1]},idle" if idle else str(_CPUS[1])
    return env


def _take_place() -> None:
    """In a child: run where the parent said."""
    place = os.environ.get(PLACE)
    if not place:
        return
    cpu, _, idle = place.partition(",")
    os.sched_setaffinity(0, {int(cpu)})
    policy = getattr(os, "SCHED_IDLE", None)
    if idle and policy is not None:
        with contextlib.suppress(OSError):  # a restricted container: as is
            os.sched_setscheduler(0, policy, os.sched_param(0))


#: The CPUs of the run under way (set by :func:`run`).
_CPUS: list[int] = []


def _key(index: int) -> Identity:
    """The child's peers: fixed keys, so this process knows their ids."""
    return Identity(bytes([0xA0 + index]) * 32)


def _spin(seconds: float) -> None:
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        pass


class Server:
    """The node under test (default settings and limits), with each peer's
    handler time counted."""

    def __init__(self, reactor: Any) -> None:
        #: Seconds of handler time per peer id, since the start.
        self.used: defaultdict[PeerId, float] = defaultdict(float)
        self.node = Node(
            Identity.generate(),
            reactor=reactor,
            handlers={"echo": self._timed(bytes), "work": self._timed(self._work)},
        )

    def _timed(self, answer: Callable[[bytes], bytes]) -> Callable[..., bytes]:
        used = self.used

        def handler(request: IncomingRequest) -> bytes:
            started = time.perf_counter()
            try:
                return answer(request.payload)
            finally:
                used[request.peer_id] += time.perf_counter() - started

        return handler

    @staticmethod
    def _work(payload: bytes) -> bytes:
        _spin(WORK[payload])
        return b"done"


async def _honest(
    reactor: Any, client: Node, server: PeerId, seconds: float
) -> list[float]:
    """One ``echo`` every :data:`INTERVAL` for ``seconds``: the latencies."""
    latencies = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        await client.request(server, "echo", b"honest", timeout=10.0)
        latencies.append(time.perf_counter() - started)
        await task.deferLater(reactor, INTERVAL)
    return latencies


def _p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[int(0.99 * (len(ordered) - 1))]


def _child(
    port: int, server: PeerId, seconds: float, k: int, kind: str
) -> defer.Deferred[Any]:
    arguments = ["flood", str(port), str(server), str(seconds), str(k), kind]
    running: defer.Deferred[Any] = getProcessOutputAndValue(
        sys.executable, ["-m", "bench.attack_fair", *arguments], env=_placed(k == 1)
    )
    return running


async def _asker(port: int, server: PeerId, seconds: float) -> list[float]:
    """The honest peer's latencies, from its own process (it does not share
    the node's reactor, as a remote peer would not)."""
    arguments = ["honest", str(port), str(server), str(seconds)]
    result = await _finish(
        getProcessOutputAndValue(
            sys.executable,
            ["-m", "bench.attack_fair", *arguments],
            env=_placed(False),
        )
    )
    latencies: list[float] = result["latencies"]
    return latencies


async def _finish(child: defer.Deferred[Any]) -> dict[str, Any]:
    out, err, code = await child
    if code != 0:
        raise RuntimeError(f"the flooding peers failed: {err.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def _until(reactor: Any, condition: Callable[[], bool], limit: float) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError("the flooding peers did not start in time")
        await task.deferLater(reactor, 0.01)


async def run(reactor: Any, seconds: float, separate: bool = True) -> list[Row]:
    _CPUS[:] = _cpus(separate)
    before = os.sched_getaffinity(0) if _CPUS else set()
    if _CPUS:
        os.sched_setaffinity(0, {_CPUS[0]})
    try:
        return await _rows(reactor, seconds)
    finally:
        if _CPUS:
            os.sched_setaffinity(0, before)


async def _rows(reactor: Any, seconds: float) -> list[Row]:
    server = Server(reactor)
    node = server.node
    try:
        port = (await node.listen("p2ptls:0:interface=127.0.0.1")).getHost().port  # type: ignore[attr-defined]
        gc.collect()
        gc.freeze()  # as NodeService does once the node is up
        rows = []
        with Pauses() as pauses:
            quiet = await _asker(port, node.peer_id, seconds)
            quiet_gc = pauses.since(0)
            for kind in ("echo", "work"):
                rows.append(
                    await _flooded(reactor, server, port, seconds, kind, quiet, pauses)
                )
        rows[0] = rows[0]._replace(note=f"{rows[0].note}; quiet: {quiet_gc}")
        for k in PEERS:
            rows.append(await _share(reactor, server, port, seconds, k))
        refused = sum(
            count
            for key, count in node.counters.items()
            if key.startswith("requests.refused.") and key.endswith(".RATE_LIMITED")
        )
        rows.append(
            Row(
                "requests refused RATE_LIMITED, all rows",
                float(refused),
                None,
                "target 0: the default node has no request rate",
            )
        )
        return rows
    finally:
        gc.unfreeze()
        await node.stop()


async def _flooded(
    reactor: Any,
    server: Server,
    port: int,
    seconds: float,
    kind: str,
    quiet: list[float],
    pauses: Pauses,
) -> Row:
    """The honest peer's p99 while one verified peer floods with ``kind``
    (and the node's collections meanwhile, from ``pauses``)."""
    node = server.node
    flooder = _key(0).peer_id
    before, served = server.used[flooder], node.counters[f"requests.in.{kind}"]
    flooding = _child(port, node.peer_id, seconds + 5.0, 1, kind)
    await _until(reactor, lambda: server.used[flooder] > before, 30.0)
    start = len(pauses.runs)
    flooded = await _asker(port, node.peer_id, seconds)
    collections = pauses.since(start)
    served = node.counters[f"requests.in.{kind}"] - served
    await _finish(flooding)
    return Row(
        f"honest p99 ms, a verified peer floods {kind}",
        1e3 * _p99(flooded),
        1e3 * _p99(quiet),
        f"ref: honest p99, quiet; target <= 2.00; medians"
        f" {1e3 * statistics.median(flooded):.2f} /"
        f" {1e3 * statistics.median(quiet):.2f} ms; {len(flooded)} asked;"
        f" the flood's served: {served}; {_where()}; {collections};"
        f" load {load_now()}",
    )


def _where() -> str:
    if _CPUS:
        return f"node on CPU {_CPUS[0]}, peers on CPU {_CPUS[1]}, flooder idle-class"
    return "all processes share the CPUs"


async def _share(
    reactor: Any, server: Server, port: int, seconds: float, k: int
) -> Row:
    """k busy peers; the flooder's share of handler time once all are busy."""
    peers = [_key(index).peer_id for index in range(k)]
    running = _child(port, server.node.peer_id, seconds, k, "work")
    used = server.used
    base = {peer: used[peer] for peer in peers}
    await _until(reactor, lambda: all(used[p] > base[p] for p in peers), 30.0)
    await task.deferLater(reactor, seconds / 3)
    start = {peer: used[peer] for peer in peers}
    await task.deferLater(reactor, seconds / 3)
    spent = {peer: used[peer] - start[peer] for peer in peers}
    result = await _finish(running)
    share = spent[peers[0]] / (sum(spent.values()) or 1.0)
    # First come, first served: as many requests from each, so shares
    # follow the costs.
    flood, busy = WORK[b"flood"], WORK[b"busy"]
    fifo = flood / (flood + (k - 1) * busy)
    return Row(
        f"flooder's share of handler time, k = {k}",
        share,
        1 / k,
        f"ref: the fair share 1/k; first come, first served ~{fifo:.2f};"
        f" {result['answered']} answered, {result['failed']} failed;"
        f" load {load_now()}",
    )


# -- the child process ------------------------------------------------------


async def _pipeline(
    reactor: Any,
    node: Node,
    server: PeerId,
    protocol: str,
    payload: bytes,
    deadline: float,
    tally: Counter[str],
) -> None:
    """Keep :data:`WINDOW` requests outstanding until ``deadline``."""
    done: defer.Deferred[None] = defer.Deferred()
    state = {"outstanding": 0, "filling": False, "full": False}

    def answered(result: Any) -> None:
        state["outstanding"] -= 1
        if isinstance(result, Failure):
            if result.check(SendQueueFull):
                state["full"] = True  # ours, not the node's: wait a little
                tally["send queue full"] += 1
            else:
                tally["failed"] += 1
        else:
            tally["answered"] += 1
        if not state["filling"]:
            fill()

    def fill() -> None:
        state["filling"] = True
        try:
            while (
                state["outstanding"] < WINDOW
                and not state["full"]
                and time.monotonic() < deadline
            ):
                state["outstanding"] += 1
                asked = node.request(server, protocol, payload, timeout=30.0)
                asked.addBoth(answered)
        finally:
            state["filling"] = False
        if state["full"]:
            state["full"] = False
            reactor.callLater(0.001, fill)
        elif state["outstanding"] == 0 and not done.called:
            done.callback(None)

    fill()
    await done


async def _flood(
    reactor: Any, port: int, server: PeerId, seconds: float, k: int, kind: str
) -> None:
    """``k`` verified peers keep requests outstanding for ``seconds``: one
    flooding with ``kind`` (k = 1), or a flooder and k - 1 busy peers."""
    tally: Counter[str] = Counter()
    nodes = [Node(_key(index), reactor=reactor) for index in range(k)]
    for node in nodes:
        await node.connect(f"p2ptls:127.0.0.1:{port}", peer_id=server)
    deadline = time.monotonic() + seconds
    if k == 1:
        asks = [(kind, b"f" if kind == "echo" else b"latency")]
    else:
        asks = [("work", b"flood")] + [("work", b"busy")] * (k - 1)
    await defer.gatherResults(
        [
            defer.ensureDeferred(
                _pipeline(reactor, node, server, protocol, payload, deadline, tally)
            )
            for node, (protocol, payload) in zip(nodes, asks)
        ]
    )
    for node in nodes:
        await node.stop()
    print(json.dumps({"answered": tally["answered"], "failed": tally["failed"]}))


async def _ask(reactor: Any, port: int, server: PeerId, seconds: float) -> None:
    """The honest peer: asks for ``seconds``, prints its latencies."""
    client = Node(Identity.generate(), reactor=reactor)
    await client.connect(f"p2ptls:127.0.0.1:{port}", peer_id=server)
    latencies = await _honest(reactor, client, server, seconds)
    await client.stop()
    print(json.dumps({"latencies": latencies}))


def main() -> None:
    _take_place()
    if sys.argv[1:2] == ["honest"]:
        port, server, limit = sys.argv[2:5]
        peer = PeerId.from_string(server)
        task.react(
            lambda reactor: defer.ensureDeferred(
                _ask(reactor, int(port), peer, float(limit))
            )
        )
        return
    if sys.argv[1:2] == ["flood"]:
        port, server, limit, k, kind = sys.argv[2:7]
        peer = PeerId.from_string(server)
        task.react(
            lambda reactor: defer.ensureDeferred(
                _flood(reactor, int(port), peer, float(limit), int(k), kind)
            )
        )
        return
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    print(load_header(), flush=True)

    async def go(reactor: Any) -> None:
        print(table(await run(reactor, seconds)), flush=True)

    task.react(lambda reactor: defer.ensureDeferred(go(reactor)))


if __name__ == "__main__":
    main()
