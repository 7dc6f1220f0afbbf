"""Over TLS: handshakes per second, and messaging, against bare TLS 1.3.

Handshakes: the reference is TLS 1.3 with mutual Ed25519 certificates (the
same ``PeerTLS`` contexts a node uses), one byte each way so that both ends
have finished the TLS handshake, then close.  blueprint-net is
``Node.connect`` over ``p2ptls``: the same TLS, then the blueprint handshake
bound to the session (its TLS variant: one Proof each way), then close.  Each
blueprint dial comes from a distinct identity, its TLS context made before
the clock starts; both run on one reactor, interleaved.

Messaging: ``Node.request`` over ``p2ptls`` against a bare
``Int32StringReceiver`` over the same TLS (the same two identities'
certificates, the same ALPN), pipelined and ping-pong echo as in
``bench/messaging.py``, and one way (1 MiB requests answered empty, against
1 MiB strings answered by an empty string, the same window).
"""

from __future__ import annotations

import statistics
from collections.abc import Awaitable
from typing import Any, Callable, Optional

from twisted.internet import defer, protocol
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import IHandshakeListener
from twisted.protocols.basic import Int32StringReceiver
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from blueprint_net._adapters.node import Node
from blueprint_net._adapters.tls import PeerTLS
from blueprint_net._adapters.tls_binding import channel_binding
from blueprint_net._core.identity import Identity
from blueprint_net._core.messaging import IncomingRequest

from . import report
from .handshake import (
    PROOF,
    TRANSCRIPT,
    _FramesServer,
    connections_per_second,
    dials_per_second,
)
from .messaging import (
    COUNTS,
    KiB,
    MiB,
    Run,
    _EchoClient,
    _EchoServer,
    _FloorClient,
    _FloorServer,
    _timed,
    _windowed,
    floor_run,
    label,
    window,
)
from .report import Row

SIZES = (64, 4 * KiB, 64 * KiB)
#: One way: 1 MiB requests, this many in a full run.
ONE_WAY = 100


class _Echo(protocol.Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]


class _Once(protocol.Protocol):
    def __init__(self) -> None:
        self.closed: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(b"x")  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Any = None) -> None:
        self.closed.callback(None)


async def _bare(reactor: Any, count: int, a: Identity, b: Identity) -> float:
    server = TLSMemoryBIOFactory(PeerTLS(b), False, protocol.Factory.forProtocol(_Echo))
    creator = PeerTLS(a, expected=b.peer_id)
    return await connections_per_second(
        reactor, count, server, _Once, lambda tcp: wrapClientTLS(creator, tcp)
    )


@implementer(IHandshakeListener)
class _ProofServer(_FramesServer):
    """The floor of the TLS variant's handshake on top of bare TLS: no Hello;
    once TLS completes, the exporter (RFC 9266), one signature and one
    ``PROOF``-sized frame each way, and the peer's proof verified (strictly,
    as a node does; ``peer_signature`` is the peer's, made ahead)."""

    def connectionMade(self) -> None:
        pass  # the TLS variant sends nothing before TLS completes

    def handshakeCompleted(self) -> None:
        channel_binding(self.transport)
        self.identity.sign(TRANSCRIPT)
        self.transport.write(bytes(PROOF))  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        if self.received == PROOF:
            self._verify_peer()
            self.proven()

    def proven(self) -> None:
        pass


class _ProofClient(_ProofServer):
    def proven(self) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Any = None) -> None:
        self.closed.callback(None)


async def _proof_reference(reactor: Any, count: int, a: Identity, b: Identity) -> float:
    a_signature, b_signature = a.sign(TRANSCRIPT), b.sign(TRANSCRIPT)
    server = TLSMemoryBIOFactory(
        PeerTLS(b),
        False,
        protocol.Factory.forProtocol(lambda: _ProofServer(b, a, a_signature)),
    )
    creator = PeerTLS(a, expected=b.peer_id)
    return await connections_per_second(
        reactor,
        count,
        server,
        lambda: _ProofClient(a, b, b_signature),
        lambda tcp: wrapClientTLS(creator, tcp),
    )


async def _blueprint(reactor: Any, count: int, a: Identity, b: Identity) -> float:
    server = Node(b, reactor=reactor)
    port = await server.listen("p2ptls:0:interface=127.0.0.1")
    number = port.getHost().port  # type: ignore[attr-defined]
    dials = []
    for _ in range(count):
        identity = Identity.generate()
        tcp = TCP4ClientEndpoint(reactor, "127.0.0.1", number)
        endpoint = wrapClientTLS(PeerTLS(identity, expected=b.peer_id), tcp)
        dials.append((Node(identity, reactor=reactor), endpoint))
    return await dials_per_second(server, dials)


class _AckServer(Int32StringReceiver):
    """One way: each string is answered by an empty one."""

    MAX_LENGTH = 16 * MiB

    def stringReceived(self, string: bytes) -> None:
        self.sendString(b"")


Close = Callable[[], Awaitable[None]]


async def _bare_link(
    reactor: Any, payload: bytes, a: Identity, b: Identity, *, echo: bool
) -> tuple[Run, Close]:
    """A bare ``Int32StringReceiver`` client and server over ``PeerTLS``."""
    server = protocol.Factory.forProtocol(_EchoServer if echo else _AckServer)
    wrapped = TLSMemoryBIOFactory(PeerTLS(b), False, server)
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(wrapped)
    client = _EchoClient(payload)
    tcp = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
    endpoint = wrapClientTLS(PeerTLS(a, expected=b.peer_id), tcp)
    await endpoint.connect(protocol.Factory.forProtocol(lambda: client))

    async def close() -> None:
        client.transport.loseConnection()  # type: ignore[union-attr]
        await port.stopListening()

    return client.run, close


async def _floor_link(
    reactor: Any, payload: bytes, a: Identity, b: Identity, *, echo: bool
) -> tuple[Run, Close]:
    """The floor of ``bench/messaging.py`` over the same TLS."""
    server = protocol.Factory.forProtocol(lambda: _FloorServer(echo))
    wrapped = TLSMemoryBIOFactory(PeerTLS(b), False, server)
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(wrapped)
    client = _FloorClient()
    tcp = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
    endpoint = wrapClientTLS(PeerTLS(a, expected=b.peer_id), tcp)
    await endpoint.connect(protocol.Factory.forProtocol(lambda: client))
    return floor_run(client, port, payload)


async def _blueprint_link(
    reactor: Any, payload: bytes, a: Identity, b: Identity, *, echo: bool
) -> tuple[Run, Close]:
    """``Node.request`` between two nodes over ``p2ptls``."""

    def answer(request: IncomingRequest) -> Optional[bytes]:
        return request.payload if echo else None

    server = Node(
        b,
        reactor=reactor,
        handlers={"echo": answer},
    )
    client = Node(a, reactor=reactor)
    port = await server.listen("p2ptls:0:interface=127.0.0.1")
    number = port.getHost().port  # type: ignore[attr-defined]
    await client.connect(f"p2ptls:127.0.0.1:{number}", peer_id=b.peer_id)

    def call() -> defer.Deferred[Any]:
        return client.request(b.peer_id, "echo", payload)

    async def close() -> None:
        await client.stop()
        await server.stop()

    return _windowed(call), close


async def _messaging(
    reactor: Any, quick: bool, rounds: int, a: Identity, b: Identity
) -> list[Row]:
    links = {"blueprint": _blueprint_link, "bare": _bare_link, "floor": _floor_link}
    results: dict[tuple[str, str, int], list[float]] = {}
    for _ in range(rounds):  # interleaved, so drift hits both alike
        for size in (*SIZES, MiB):
            payload = bytes(size)
            echo = size in SIZES
            for name, make in links.items():
                call, close = await make(reactor, payload, a, b, echo=echo)
                if echo:
                    pipelined, ping_pong = COUNTS[size]
                    if quick:
                        pipelined, ping_pong = (
                            max(4, pipelined // 20),
                            max(4, ping_pong // 20),
                        )
                    rate = await _timed(call, pipelined, window(size, pipelined))
                    results.setdefault((name, "pipelined", size), []).append(rate)
                    rate = await _timed(call, ping_pong, 1)
                    results.setdefault((name, "ping-pong", size), []).append(rate)
                else:
                    count = max(4, ONE_WAY // 20) if quick else ONE_WAY
                    rate = await _timed(call, count, window(size, count))
                    results.setdefault((name, "one-way", size), []).append(
                        rate * size / 1e6
                    )
                await close()
    median = {key: statistics.median(values) for key, values in results.items()}
    rows = []
    kinds = (
        ("pipelined", "pipelined requests/s over TLS, {} echo", ">= 0.60"),
        ("ping-pong", "ping-pong round trips/s over TLS, {} echo", ">= 0.80"),
    )
    for size in SIZES:
        for kind, name, target in kinds:
            ours, bare, floor = (
                median[system, kind, size] for system in ("blueprint", "bare", "floor")
            )
            rows += [
                Row(
                    name.format(label(size)),
                    ours,
                    bare,
                    f"ref: Int32StringReceiver echo over the same TLS; target {target}",
                ),
                Row(name.format(label(size)), ours, floor, "ref: the floor over TLS"),
                Row(
                    f"{name.format(label(size))}: the floor",
                    floor,
                    bare,
                    "ref: Int32StringReceiver echo over the same TLS",
                ),
            ]
    rows.append(
        Row(
            "one-way MB/s over TLS, 1 MiB requests",
            median["blueprint", "one-way", MiB],
            median["bare", "one-way", MiB],
            "ref: Int32StringReceiver over the same TLS, the same window;"
            " target >= 0.80",
        )
    )
    return rows


async def run(reactor: Any, quick: bool = False) -> list[Row]:
    a, b = Identity.generate(), Identity.generate()
    count, rounds = (50, 2) if quick else (500, 5)
    if report.SMOKE:
        count, rounds = 5, 1
    ours, reference, proofs = [], [], []
    for _ in range(rounds):
        reference.append(await _bare(reactor, count, a, b))
        proofs.append(await _proof_reference(reactor, count, a, b))
        ours.append(await _blueprint(reactor, count, a, b))
    name = "handshakes/s over TLS (TLS + blueprint, close)"
    return [
        Row(
            name,
            statistics.median(ours),
            statistics.median(reference),
            "ref: bare TLS 1.3, mutual Ed25519; target >= 0.80",
        ),
        Row(
            name,
            statistics.median(ours),
            statistics.median(proofs),
            "ref: the same + exporter, sign, verify, one proof frame each way",
        ),
        Row(
            f"{name}: the floor",
            statistics.median(proofs),
            statistics.median(reference),
            "ref: bare TLS 1.3 (the best ratio the TLS variant allows)",
        ),
        *await _messaging(reactor, quick, rounds, a, b),
    ]
