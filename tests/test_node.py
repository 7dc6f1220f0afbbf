"""Nodes over real loopback TCP."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.application.service import MultiService
from twisted.internet import defer, protocol, reactor
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import deferLater

from blueprint_net import wire
from blueprint_net.errors import ErrorCode
from blueprint_net.identity import Identity
from blueprint_net.node import Node, Peer
from blueprint_net.protocol import HandshakeError

from .helpers import decode_frames

pytestmark = pytest.mark.usefixtures("clean_reactor")


async def _listening(node: Node) -> int:
    port = await node.listen("tcp:0:interface=127.0.0.1")
    address = port.getHost()
    assert isinstance(address, IPv4Address)
    return address.port


@pytest_twisted.ensureDeferred
async def test_connect_verifies_both_sides(alice: Identity, bob: Identity) -> None:
    a, b = Node(alice), Node(bob)
    seen: defer.Deferred[Peer] = defer.Deferred()
    b.on_peer_verified(seen.callback)
    try:
        port = await _listening(b)
        peer = await a.connect(f"tcp:127.0.0.1:{port}", peer_id=bob.peer_id)
        assert peer.peer_id == bob.peer_id and peer.direction == "outbound"
        inbound = await seen
        assert inbound.peer_id == alice.peer_id and inbound.direction == "inbound"
        assert [p.peer_id for p in b.peers] == [alice.peer_id]
        again = await a.connect(f"tcp:127.0.0.1:{port}", peer_id=bob.peer_id)
        assert again == peer  # reused, not dialed twice
    finally:
        await a.stop()
        await b.stop()
    assert a.peers == [] and b.peers == []


@pytest_twisted.ensureDeferred
async def test_endpoint_objects_are_accepted(alice: Identity, bob: Identity) -> None:
    a, b = Node(alice), Node(bob)
    try:
        port = await _listening(b)
        peer = await a.connect(TCP4ClientEndpoint(reactor, "127.0.0.1", port))
        assert peer.peer_id == bob.peer_id
    finally:
        await a.stop()
        await b.stop()


@pytest_twisted.ensureDeferred
async def test_wrong_peer_fails_the_connect(
    alice: Identity, bob: Identity, carol: Identity
) -> None:
    a, b = Node(alice), Node(bob)
    try:
        port = await _listening(b)
        with pytest.raises(HandshakeError) as caught:
            await a.connect(f"tcp:127.0.0.1:{port}", peer_id=carol.peer_id)
        assert caught.value.reason.code is ErrorCode.UNEXPECTED_PEER  # type: ignore[union-attr]
        assert a.peers == []
    finally:
        await a.stop()
        await b.stop()


@pytest_twisted.ensureDeferred
async def test_simultaneous_dials_keep_exactly_one_connection(
    alice: Identity, bob: Identity
) -> None:
    a, b = Node(alice), Node(bob)
    lost: list[Peer] = []
    a.on_peer_lost(lost.append)
    codes: list[ErrorCode] = []
    for node in (a, b):
        node.connection_failed = (  # type: ignore[method-assign]
            lambda protocol, event: codes.append(event.error.code)
        )
    try:
        port_a, port_b = await _listening(a), await _listening(b)
        results = await defer.DeferredList(
            [
                a.connect(f"tcp:127.0.0.1:{port_b}"),
                b.connect(f"tcp:127.0.0.1:{port_a}"),
            ],
            consumeErrors=True,
        )
        assert all(ok for ok, _ in results), results
        # Let the losing connection's Error and close travel.
        for _ in range(50):
            if len(a._open) == len(b._open) == 1:
                break
            await _sleep(0.01)
        assert len(a._open) == len(b._open) == 1
        [kept_a] = a._verified.values()
        [kept_b] = b._verified.values()
        assert kept_a.connection.handshake.session_key == (
            kept_b.connection.handshake.session_key
        )
        assert lost == []  # the peer stayed connected throughout
        assert ErrorCode.DUPLICATE_CONNECTION in codes  # there really were two
    finally:
        await a.stop()
        await b.stop()


def _sleep(seconds: float) -> defer.Deferred[None]:
    return deferLater(reactor, seconds)


class Raw(protocol.Protocol):
    """A client that speaks bytes, not the protocol."""

    def __init__(self) -> None:
        self.received = b""
        self.closed: defer.Deferred[None] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: object = None) -> None:
        self.closed.callback(None)


@pytest_twisted.ensureDeferred
async def test_request_before_handshake_gets_error_and_close(bob: Identity) -> None:
    b = Node(bob)
    try:
        port = await _listening(b)
        raw = Raw()
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), raw)
        raw.transport.write(wire.frame(wire.Request(1, "echo", b"hi")))  # type: ignore[union-attr]
        await raw.closed
        hello, error = decode_frames(raw.received)
        assert isinstance(hello, wire.Hello)
        assert isinstance(error, wire.Error)
        assert error.code == ErrorCode.UNEXPECTED_MESSAGE
    finally:
        await b.stop()


@pytest_twisted.ensureDeferred
async def test_node_is_a_service(alice: Identity, bob: Identity) -> None:
    a, b = Node(alice), Node(bob)
    parent = MultiService()
    a.setServiceParent(parent)
    parent.startService()
    try:
        port = await _listening(b)
        await a.connect(f"tcp:127.0.0.1:{port}")
        assert len(b.peers) == 1
    finally:
        await parent.stopService()
        await b.stop()
    assert a.peers == []
