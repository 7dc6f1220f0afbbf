"""Broadcast to 10, 100 and 500 peers: time per broadcast and per recipient.

One node (the hub) is connected to N peer nodes, all in this process on one
reactor.  ``Node.broadcast`` sends one 64-byte echo request to every peer
and fires with every outcome once all have answered.  The reference,
in the same run, sends the same N requests with one ``Node.request`` each
and waits for them all.  The target is a per-recipient cost that stays flat
from 10 to 500 peers (within 1.5x): nothing in a broadcast may cost more
per peer as peers are added.
"""

from __future__ import annotations

import gc
import statistics
import time
from typing import Any

from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint

from bench import PLAINTEXT
from blueprint_net._adapters.node import Node
from blueprint_net._core.identity import Identity
from blueprint_net._core.messaging import IncomingRequest
from blueprint_net._policy.limits import ConnectionLimits

from . import report
from .report import Point, Row

PEERS = (10, 100, 500)
PAYLOAD = bytes(64)
RECIPIENTS = 20_000  # per measurement: broadcasts = RECIPIENTS // peers


def _echo(request: IncomingRequest) -> bytes:
    return request.payload


async def _star(reactor: Any, count: int) -> tuple[Node, list[Node]]:
    # Room for every peer (the default request settings: no rate).
    capacity = ConnectionLimits(max_connections=count + 10, max_handshaking=count + 10)
    hub = Node(
        Identity.generate(), reactor=reactor, limits=capacity, settings=PLAINTEXT
    )
    port = await hub.listen(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"))
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)  # type: ignore[attr-defined]
    peers = [
        Node(
            Identity.generate(),
            reactor=reactor,
            handlers={"echo": _echo},
            settings=PLAINTEXT,
        )
        for _ in range(count)
    ]
    for start in range(0, count, 50):  # 50 handshakes at a time
        await defer.gatherResults(
            [
                p.connect(endpoint, peer_id=hub.peer_id)
                for p in peers[start : start + 50]
            ]
        )
    return hub, peers


async def _broadcasts(hub: Node, rounds: int) -> float:
    gc.collect()
    start = time.perf_counter()
    for _ in range(rounds):
        outcomes = await hub.broadcast("echo", PAYLOAD)
        assert all(not isinstance(o, Exception) for o in outcomes.values()), outcomes
    return time.perf_counter() - start


async def _requests(hub: Node, rounds: int) -> float:
    targets = [peer.peer_id for peer in hub.peers]
    gc.collect()
    start = time.perf_counter()
    for _ in range(rounds):
        await defer.gatherResults([hub.request(p, "echo", PAYLOAD) for p in targets])
    return time.perf_counter() - start


async def run(reactor: Any, quick: bool = False) -> list[Row]:
    stars = (2, 3, 5) if report.SMOKE else PEERS  # the rows are named for them
    repeats = 1 if quick else 5
    recipients = RECIPIENTS // 10 if quick else RECIPIENTS
    ours: dict[int, list[float]] = {n: [] for n in stars}
    reference: dict[int, list[float]] = {n: [] for n in stars}
    for count in stars:
        hub, peers = await _star(reactor, count)
        rounds = max(2, recipients // count)
        for _ in range(repeats):  # interleaved, so drift hits both alike
            ours[count].append(await _broadcasts(hub, rounds) / rounds)
            reference[count].append(await _requests(hub, rounds) / rounds)
        await hub.stop()
        for peer in peers:
            await peer.stop()
    per = {n: statistics.median(ours[n]) / n * 1e6 for n in stars}
    per_ref = {n: statistics.median(reference[n]) / n * 1e6 for n in stars}
    rows = []
    for count in stars:
        rows.append(
            Row(
                f"broadcast to {count} peers (ms per broadcast)",
                statistics.median(ours[count]) * 1e3,
                statistics.median(reference[count]) * 1e3,
                f"ref: {count} x Node.request, gathered",
            )
        )
        rows.append(
            Row(
                f"broadcast to {count} peers (us per recipient)",
                per[count],
                per[stars[0]],
                f"ref: per recipient at {stars[0]} peers; target <= 1.5",
                Point("broadcast", count, per[count], per_ref[count]),
            )
        )
    return rows
