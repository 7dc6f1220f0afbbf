"""Bans, limits and misbehaviour, enforced by nodes over real loopback TCP.

Hostile clients connect from 127.0.0.2 (all of 127.0.0.0/8 is loopback), so
the node can tell them from honest peers on 127.0.0.1.
"""

from __future__ import annotations

from typing import cast

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor, tcp
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import Clock, deferLater
from twisted.python.failure import Failure

from blueprint_net import Node
from blueprint_net._core import framing, wire
from blueprint_net._core.errors import ErrorCode, HandshakeError, Refused, RemoteError
from blueprint_net._core.identity import Identity
from blueprint_net._core.messaging import IncomingRequest
from blueprint_net._policy.bans import BanRegistry
from blueprint_net._policy.limits import ConnectionLimits
from blueprint_net._policy.scores import Policy, PolicySettings
from blueprint_net._policy.settings import Settings
from blueprint_net.node import Peer
from tests.helpers import MakeNode, decode_frames, until

pytestmark = pytest.mark.usefixtures("clean_reactor")

HOSTILE = "127.0.0.2"


async def _port(node: Node) -> int:
    port = await node.listen("tcp:0:interface=127.0.0.1")
    number: int = port.getHost().port  # type: ignore[attr-defined]
    return number


def _sleep(seconds: float) -> defer.Deferred[None]:
    return deferLater(reactor, seconds)


def _clients() -> list[object]:
    selectables = reactor.getReaders() + reactor.getWriters()
    return [s for s in selectables if isinstance(s, tcp.Client)]


class Raw(protocol.Protocol):
    """A client that speaks bytes, not the protocol."""

    def __init__(self, send: bytes = b"") -> None:
        self.send = send
        self.received = b""
        self.closed: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        if self.send:
            self.transport.write(self.send)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: object = None) -> None:
        self.closed.callback(None)


async def _raw(port: int, send: bytes = b"", source: str = HOSTILE) -> Raw:
    raw = Raw(send)
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, bindAddress=(source, 0))
    await connectProtocol(endpoint, raw)
    return raw


@pytest_twisted.ensureDeferred
async def test_a_banned_address_is_refused_before_a_byte_is_read(
    bob: Identity, make_node: MakeNode
) -> None:
    b = make_node(bob)
    port = await _port(b)
    b.ban(HOSTILE, "known attacker")
    raw = await _raw(port, send=framing.frame(wire.Ping(1)))
    await raw.closed
    assert raw.received == b""  # not even a Hello
    assert b.counters["refused.banned"] == 1
    honest = await _raw(port, source="127.0.0.1")
    await until(lambda: honest.received)  # the Hello: served as usual
    honest.transport.loseConnection()  # type: ignore[union-attr]
    await honest.closed


@pytest_twisted.ensureDeferred
async def test_a_banned_id_is_refused_once_proven(
    alice: Identity, bob: Identity, make_node: MakeNode
) -> None:
    a, b = make_node(alice), make_node(bob)
    b.ban(alice.peer_id, "spam")
    port = await _port(b)
    with pytest.raises(HandshakeError) as refused:
        await a.connect(f"tcp:127.0.0.1:{port}", peer_id=bob.peer_id)
    assert refused.value.reason.code is ErrorCode.BANNED  # type: ignore[union-attr]
    assert b.peers == []


@pytest_twisted.ensureDeferred
async def test_banning_a_connected_peer_disconnects_it(
    alice: Identity, bob: Identity, carol: Identity, make_node: MakeNode
) -> None:
    a, b, c = make_node(alice), make_node(bob), make_node(carol)
    lost: list[Peer] = []
    b.on_peer_lost(lost.append)
    port = await _port(b)
    await a.connect(f"tcp:127.0.0.1:{port}")
    await c.connect(f"tcp:127.0.0.1:{port}")
    await until(lambda: len(b.peers) == 2)
    b.ban(alice.peer_id, "enough")
    await until(lambda: [p.peer_id for p in lost] == [alice.peer_id])
    assert [p.peer_id for p in b.peers] == [carol.peer_id]
    b.ban("127.0.0.0/8", "the whole neighbourhood", duration=60)
    await until(lambda: b.peers == [])
    assert b.counters["bans.manual"] == 2


@pytest_twisted.ensureDeferred
async def test_never_dials_a_banned_peer_or_address(
    alice: Identity, bob: Identity, make_node: MakeNode
) -> None:
    a, b = make_node(alice), make_node(bob)
    port = await _port(b)
    a.ban(bob.peer_id, "no")
    with pytest.raises(Refused, match="banned"):
        await a.connect(f"tcp:127.0.0.1:{port}", peer_id=bob.peer_id)
    a.bans.unban(bob.peer_id)
    a.ban("127.0.0.1", "no")
    with pytest.raises(Refused, match="banned"):
        await a.connect(f"tcp:127.0.0.1:{port}")
    # The address is known only once connected: Twisted closes that
    # socket (before a byte is read or written) once this turn is over.
    await _sleep(0)
    await until(lambda: not _clients())
    assert b.counters["handshakes.ok"] == 0  # nothing reached Bob


@pytest_twisted.ensureDeferred
async def test_repeated_garbage_earns_an_automatic_ban(
    bob: Identity, make_node: MakeNode
) -> None:
    clock = Clock()
    # Loopback (HOSTILE here) is banned automatically only when asked for.
    policy = Policy(BanRegistry(clock), PolicySettings(ban_loopback=True))
    b = make_node(bob, clock=clock, policy=policy)
    port = await _port(b)
    garbage = [
        b"\x00\x00\x00\x01\xee",  # unknown type: 20 points each
        framing.frame(wire.Request(1, "echo", b"")),  # before Verified
        b"\xff\xff\xff\xff",  # absurd length
        b"\x00\x00\x00\x01\xee",
        b"\x00\x00\x00\x01\xee",
    ]
    for data in garbage:
        raw = await _raw(port, send=data)
        await raw.closed
        *_, error = decode_frames(raw.received)
        assert isinstance(error, wire.Error) and error.code < 300
    assert b.counters["bans.automatic"] == 1
    assert b.bans.address_ban(HOSTILE) is not None
    refused = await _raw(port)
    await refused.closed
    assert refused.received == b""
    clock.advance(3600)  # the ban expires by itself
    served = await _raw(port)
    await until(lambda: served.received)
    served.transport.loseConnection()  # type: ignore[union-attr]
    await served.closed


@pytest_twisted.ensureDeferred
async def test_a_timeout_is_not_misbehaviour(
    bob: Identity, make_node: MakeNode
) -> None:
    clock = Clock()
    b = make_node(bob, clock=clock, settings=Settings(handshake_timeout=5.0))
    port = await _port(b)
    for _ in range(10):
        raw = await _raw(port)  # connects, never speaks
        await until(lambda: raw.received)  # noqa: B023 (awaited at once)
        clock.advance(5.0)
        await raw.closed
    assert b.counters["handshakes.failed.HANDSHAKE_TIMEOUT"] == 10
    assert b.bans.bans() == [] and b.counters["misbehaviour"] == 0


@pytest_twisted.ensureDeferred
async def test_permissioned_mode(
    alice: Identity, bob: Identity, carol: Identity, make_node: MakeNode
) -> None:
    policy = Policy(BanRegistry(reactor), permitted_peers=[carol.peer_id])
    a, b = make_node(alice), make_node(bob, policy=policy)
    port = await _port(b)
    with pytest.raises(HandshakeError) as refused:
        await a.connect(f"tcp:127.0.0.1:{port}")
    assert refused.value.reason.code is ErrorCode.NOT_ALLOWED  # type: ignore[union-attr]
    policy.set_permitted([alice.peer_id, carol.peer_id])  # while running
    peer = await a.connect(f"tcp:127.0.0.1:{port}")
    assert peer.peer_id == bob.peer_id


@pytest_twisted.ensureDeferred
async def test_permissioned_mode_with_an_empty_list_admits_nobody(
    alice: Identity, bob: Identity, make_node: MakeNode
) -> None:
    """An empty list is permissioned mode with nobody on it, not mode off:
    a verified peer (its key proven) is still refused, at both ends."""
    policy = Policy(BanRegistry(reactor), permitted_peers=[])
    assert policy.permitted == frozenset()
    a, b = make_node(alice), make_node(bob, policy=policy)
    port = await _port(b)
    with pytest.raises(HandshakeError) as refused:
        await a.connect(f"tcp:127.0.0.1:{port}", peer_id=bob.peer_id)
    assert refused.value.reason.code is ErrorCode.NOT_ALLOWED  # type: ignore[union-attr]
    await until(lambda: b.counters["handshakes.failed.NOT_ALLOWED"] == 1)
    assert a.peers == [] and b.peers == [] and b.counters["handshakes.ok"] == 0


@pytest_twisted.ensureDeferred
async def test_requests_past_the_rate_limit_are_refused_not_disconnected(
    alice: Identity, bob: Identity, make_node: MakeNode
) -> None:
    def echo(request: IncomingRequest) -> bytes:
        return request.payload

    a = make_node(alice)
    b = make_node(
        bob,
        handlers={"echo": echo},
        limits=ConnectionLimits(request_rate=1.0, request_burst=5),
    )
    port = await _port(b)
    await a.connect(f"tcp:127.0.0.1:{port}", peer_id=bob.peer_id)
    results = await defer.DeferredList(
        [a.request(bob.peer_id, "echo", b"x") for _ in range(8)],
        consumeErrors=True,
    )
    ok = [r for success, r in results if success]
    refused = [cast(Failure, r).value for success, r in results if not success]
    assert len(ok) == 5
    assert all(
        isinstance(e, RemoteError) and e.code == ErrorCode.RATE_LIMITED for e in refused
    )
    assert len(refused) == 3
    assert [p.peer_id for p in a.peers] == [bob.peer_id]  # still connected
    assert b.counters["requests.refused.echo.RATE_LIMITED"] == 3


@pytest_twisted.ensureDeferred
async def test_outbound_connections_count_against_the_limits(
    alice: Identity, bob: Identity, carol: Identity, make_node: MakeNode
) -> None:
    a = make_node(alice, limits=ConnectionLimits(max_connections=1))
    b, c = make_node(bob), make_node(carol)
    port_b, port_c = await _port(b), await _port(c)
    await a.connect(f"tcp:127.0.0.1:{port_b}")
    with pytest.raises(Refused, match="connections"):
        await a.connect(f"tcp:127.0.0.1:{port_c}")
    assert a.counters["refused.connections"] == 1


@pytest_twisted.ensureDeferred
async def test_idle_sockets_cannot_starve_verified_peers(
    alice: Identity, bob: Identity
) -> None:
    plain = Settings(allow_plaintext=True)
    limits = ConnectionLimits(max_handshaking=5, exempt_loopback=True)
    b = Node(bob, limits=limits, settings=plain)
    a = Node(alice, settings=plain)
    idle = []
    try:
        port = await _port(b)
        a_peer = await a.connect(f"tcp:127.0.0.1:{port}")  # verified first
        for _ in range(8):
            idle.append(await _raw(port))  # never speak
        # Full: each newcomer evicts the oldest idle socket (one subnet here).
        await until(lambda: b.counters["evicted.handshaking"] == 3)
        assert b.limiter.handshaking == 5
        assert [p.peer_id for p in b.peers] == [alice.peer_id]
        assert a_peer.peer_id == bob.peer_id
    finally:
        for raw in idle:
            if raw.transport is not None and raw.transport.connected:  # type: ignore[attr-defined]
                raw.transport.loseConnection()
        await a.stop()
        await b.stop()
        for raw in idle:
            await raw.closed


@pytest_twisted.ensureDeferred
async def test_automatic_ban_settings_reach_the_node(
    bob: Identity, make_node: MakeNode
) -> None:
    """A single violation bans when the threshold is that low."""
    policy = Policy(
        BanRegistry(reactor), PolicySettings(ban_threshold=10, ban_loopback=True)
    )
    b = make_node(bob, policy=policy)
    port = await _port(b)
    raw = await _raw(port, send=b"\x00\x00\x00\x01\xee")
    await raw.closed
    assert b.bans.address_ban(HOSTILE) is not None
