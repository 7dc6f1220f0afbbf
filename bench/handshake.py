"""Handshakes per second over loopback TCP: connect, handshake, close.

The reference, measured in the same run on the same reactor, is the limit the
design allows: the same TCP connect and close, plus the signature work the
handshake needs (one Ed25519 signature and one verification on each side,
over a transcript of the same size).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Awaitable
from typing import Any, Callable

from twisted.internet import defer, protocol
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint

from blueprint_net.identity import Identity
from blueprint_net.node import Node
from blueprint_net.protocol import PeerFactory, PeerProtocol

TRANSCRIPT = bytes(200)
#: Handshakes in flight at once: a throughput figure, not one latency.
IN_FLIGHT = 16


async def _in_flight(one: Callable[[], Awaitable[None]], count: int) -> float:
    """Run ``count`` calls of ``one``, ``IN_FLIGHT`` at a time; seconds taken."""
    remaining = iter(range(count))

    async def worker() -> None:
        for _ in remaining:
            await one()

    start = time.perf_counter()
    await defer.gatherResults(
        [defer.ensureDeferred(worker()) for _ in range(IN_FLIGHT)]
    )
    return time.perf_counter() - start


class _CryptoServer(protocol.Protocol):
    def __init__(self, identity: Identity, peer: Identity) -> None:
        self.identity, self.peer = identity, peer

    def connectionMade(self) -> None:
        os.urandom(32)
        signature = self.identity.sign(TRANSCRIPT)
        assert self.peer.verify(self.identity.public_key, TRANSCRIPT, signature)


class _CryptoClient(_CryptoServer):
    def __init__(self, identity: Identity, peer: Identity) -> None:
        super().__init__(identity, peer)
        self.closed: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        super().connectionMade()
        self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Any = None) -> None:
        self.closed.callback(None)


async def _reference(reactor: Any, count: int, a: Identity, b: Identity) -> float:
    server = protocol.Factory.forProtocol(lambda: _CryptoServer(b, a))
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(server)
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)

    async def one() -> None:
        client = _CryptoClient(a, b)
        await endpoint.connect(protocol.Factory.forProtocol(lambda: client))
        await client.closed

    elapsed = await _in_flight(one, count)
    await port.stopListening()
    return count / elapsed


async def _blueprint(reactor: Any, count: int, a: Identity, b: Identity) -> float:
    server, client = Node(b, reactor=reactor), Node(a, reactor=reactor)
    port = await server.listen(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"))
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)  # type: ignore[attr-defined]

    async def one() -> None:
        # A fresh factory per dial, as Node.connect makes, without the
        # one-connection-per-peer rule (every dial here reaches the same peer).
        factory = PeerFactory(client, client.settings, initiator=True)
        connection = await endpoint.connect(factory)
        assert isinstance(connection, PeerProtocol)
        await connection.verified
        connection.transport.loseConnection()  # type: ignore[union-attr]
        await connection.closed

    elapsed = await _in_flight(one, count)
    await client.stop()
    await server.stop()
    return count / elapsed


async def run(reactor: Any, quick: bool = False) -> list[tuple[str, float, float, str]]:
    a, b = Identity.generate(), Identity.generate()
    count, rounds = (100, 3) if quick else (1000, 5)
    ours, reference = [], []
    for _ in range(rounds):  # interleaved, so drift hits both alike
        reference.append(await _reference(reactor, count, a, b))
        ours.append(await _blueprint(reactor, count, a, b))
    return [
        (
            "handshakes/s over TCP (connect+handshake+close)",
            statistics.median(ours),
            statistics.median(reference),
            "ref: TCP connect/close + sign/verify; target >= 0.80",
        ),
    ]
