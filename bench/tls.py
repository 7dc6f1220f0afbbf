"""TLS handshakes per second: bare TLS 1.3 against TLS + the blueprint handshake.

The reference is TLS 1.3 with mutual Ed25519 certificates (the same
``PeerTLS`` contexts a node uses), one byte each way so that both ends have
finished the TLS handshake, then close.  blueprint-net is ``Node.connect`` over
``p2ptls``: the same TLS, then the blueprint handshake bound to the session,
then close.  Each blueprint dial comes from a distinct identity, its TLS
context made before the clock starts; both run on one reactor, interleaved.
"""

from __future__ import annotations

import statistics
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.protocols.tls import TLSMemoryBIOFactory

from blueprint_net._adapters.node import Node
from blueprint_net._adapters.tls import PeerTLS
from blueprint_net._core.identity import Identity

from . import report
from .handshake import connections_per_second, dials_per_second
from .report import Row


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


async def run(reactor: Any, quick: bool = False) -> list[Row]:
    a, b = Identity.generate(), Identity.generate()
    count, rounds = (50, 2) if quick else (500, 5)
    if report.SMOKE:
        count, rounds = 5, 1
    ours, reference = [], []
    for _ in range(rounds):
        reference.append(await _bare(reactor, count, a, b))
        ours.append(await _blueprint(reactor, count, a, b))
    return [
        Row(
            "handshakes/s over TLS (TLS + blueprint, close)",
            statistics.median(ours),
            statistics.median(reference),
            "ref: bare TLS 1.3, mutual Ed25519; target >= 0.80",
        )
    ]
