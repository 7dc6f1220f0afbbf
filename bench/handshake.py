"""Handshakes per second over loopback TCP: connect, handshake, close.

The reference, measured in the same run on the same reactor, is the limit the
design allows: the same TCP connect and close, plus the signature work the
handshake needs (one Ed25519 signature and one verification on each side,
over a transcript of the same size).
"""

from __future__ import annotations

import gc
import os
import statistics
import time
from collections.abc import Awaitable
from typing import Any, Callable

from twisted.internet import defer, protocol
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.interfaces import IProtocolFactory

from bench import PLAINTEXT
from blueprint_net._adapters.node import Node
from blueprint_net._core.identity import Identity

from . import report
from .report import Row

TRANSCRIPT = bytes(200)
#: Frame sizes on the wire, length prefix included: Hello, then a proof.
HELLO, PROOF = 78, 101
#: Handshakes in flight at once: a throughput figure, not one latency.
IN_FLIGHT = 16


async def _in_flight(one: Callable[[], Awaitable[None]], count: int) -> float:
    """Run ``count`` calls of ``one``, ``IN_FLIGHT`` at a time; seconds taken."""
    remaining = iter(range(count))

    async def worker() -> None:
        for _ in remaining:
            await one()

    gc.collect()  # start each measurement from the same heap
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


async def connections_per_second(
    reactor: Any,
    count: int,
    server: IProtocolFactory,
    client: Callable[[], Any],
    wrap: Callable[[Any], Any] = lambda endpoint: endpoint,
) -> float:
    """Dial ``server`` ``count`` times over loopback, ``IN_FLIGHT`` at once,
    each with a new ``client()`` (which has a ``closed`` Deferred); the rate.
    ``wrap`` wraps the client endpoint (in TLS, say)."""
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(server)
    endpoint = wrap(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port))

    async def one() -> None:
        made = client()
        await endpoint.connect(protocol.Factory.forProtocol(lambda: made))
        await made.closed

    elapsed = await _in_flight(one, count)
    await port.stopListening()
    return count / elapsed


async def _reference(reactor: Any, count: int, a: Identity, b: Identity) -> float:
    server = protocol.Factory.forProtocol(lambda: _CryptoServer(b, a))
    return await connections_per_second(
        reactor, count, server, lambda: _CryptoClient(a, b)
    )


class _FramesServer(protocol.Protocol):
    """The responder's side of the same four frames, as raw bytes: Hello at
    once, then verify the peer's proof and send its own (one sign, one verify,
    as in the real handshake; ``peer_signature`` is the peer's, made ahead)."""

    def __init__(
        self, identity: Identity, peer: Identity, peer_signature: bytes
    ) -> None:
        self.identity, self.peer, self.peer_signature = identity, peer, peer_signature
        self.received = 0
        #: Fired when the connection closes (the dialer's side waits on it).
        self.closed: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        os.urandom(32)
        self.transport.write(bytes(HELLO))  # type: ignore[union-attr]

    def _verify_peer(self) -> None:
        assert self.identity.verify(
            self.peer.public_key, TRANSCRIPT, self.peer_signature
        )

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        if self.received == HELLO + PROOF:
            self._verify_peer()
            self.identity.sign(TRANSCRIPT)
            self.transport.write(bytes(PROOF))  # type: ignore[union-attr]


class _FramesClient(_FramesServer):
    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        if self.received == HELLO:
            self.identity.sign(TRANSCRIPT)
            self.transport.write(bytes(PROOF))  # type: ignore[union-attr]
        elif self.received == HELLO + PROOF:
            self._verify_peer()
            self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Any = None) -> None:
        self.closed.callback(None)


async def _frames_reference(
    reactor: Any, count: int, a: Identity, b: Identity
) -> float:
    a_signature, b_signature = a.sign(TRANSCRIPT), b.sign(TRANSCRIPT)
    server = protocol.Factory.forProtocol(lambda: _FramesServer(b, a, a_signature))
    return await connections_per_second(
        reactor, count, server, lambda: _FramesClient(a, b, b_signature)
    )


async def _blueprint(reactor: Any, count: int, a: Identity, b: Identity) -> float:
    """``Node.connect`` from a distinct client identity per dial, as real
    peers would be: one identity dialing the same node over and over would
    measure the duplicate-connection rule instead of the handshake."""
    server = Node(b, reactor=reactor, settings=PLAINTEXT)
    port = await server.listen(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"))
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)  # type: ignore[attr-defined]
    dials = [
        (Node(Identity.generate(), reactor=reactor, settings=PLAINTEXT), endpoint)
        for _ in range(count)
    ]
    return await dials_per_second(server, dials)


async def dials_per_second(server: Node, dials: list[tuple[Node, Any]]) -> float:
    """Each client node connects to ``server`` through its endpoint, then
    closes; leaves nothing behind for the benchmarks after this one."""
    remaining = iter(dials)

    async def one() -> None:
        client, endpoint = next(remaining)
        await client.connect(endpoint, peer_id=server.peer_id)
        connection = client._peers[server.peer_id]
        connection.disconnect()  # a plain close, without the node's goodbye
        await connection.closed

    elapsed = await _in_flight(one, len(dials))
    await server.stop()
    for client, _ in dials:
        await client.stop()
    return len(dials) / elapsed


async def run(reactor: Any, quick: bool = False) -> list[Row]:
    a, b = Identity.generate(), Identity.generate()
    count, rounds = (100, 3) if quick else (1000, 5)
    if report.SMOKE:
        count, rounds = 10, 1
    ours, reference, frames = [], [], []
    for _ in range(rounds):  # interleaved, so drift hits both alike
        reference.append(await _reference(reactor, count, a, b))
        frames.append(await _frames_reference(reactor, count, a, b))
        ours.append(await _blueprint(reactor, count, a, b))
    name = "handshakes/s over TCP (connect+handshake+close)"
    return [
        Row(
            name,
            statistics.median(ours),
            statistics.median(reference),
            "ref: TCP connect/close + sign/verify; target >= 0.80",
        ),
        Row(
            name,
            statistics.median(ours),
            statistics.median(frames),
            "ref: the same + the same 4 frames as raw bytes",
        ),
    ]
