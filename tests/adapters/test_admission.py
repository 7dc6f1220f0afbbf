"""Issue 12: admission and resource bounds, attacked over real loopback TCP
with raw clients written from the wire spec (the sans-IO core, driven by
hand), and the pure decisions unit-tested without sockets.

Hostile clients connect from 127.0.x.y; the honest side is 127.0.0.1.
"""

from __future__ import annotations

from typing import Any, Optional

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import Clock, deferLater

from blueprint_net import Node
from blueprint_net._core import framing, wire
from blueprint_net._core.connection import Connection
from blueprint_net._core.connection_events import ConnectionFailed, PeerVerified
from blueprint_net._core.errors import ErrorCode
from blueprint_net._core.handshake_states import PeerProven
from blueprint_net._core.identity import Identity
from blueprint_net._core.messaging import IncomingRequest
from blueprint_net._policy.limits import ConnectionLimits
from blueprint_net._policy.settings import Settings
from tests.helpers import Idle, MakeNode, until

pytestmark = pytest.mark.usefixtures("clean_reactor")


async def _port(node: Node) -> int:
    port = await node.listen("tcp:0:interface=127.0.0.1")
    number: int = port.getHost().port  # type: ignore[attr-defined]
    return number


class SansIOClient(protocol.Protocol):
    """A peer built from the spec: the sans-IO core, with a nonce of its
    choosing (so it decides which of two connections the duplicate rule
    keeps), answering every request's response into ``replies``."""

    def __init__(self, identity: Identity, nonce: Optional[bytes] = None) -> None:
        self.connection = Connection(identity, initiator=True, nonce=nonce)
        self.replies: list[wire.Response] = []
        self.failed: Optional[ConnectionFailed] = None
        self.ready: defer.Deferred[None] = defer.Deferred()
        self.closed: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        self.connection.initiate()
        self._send()

    def dataReceived(self, data: bytes) -> None:
        events: list[Any] = list(self.connection.receive_data(data))
        while events:
            event = events.pop(0)
            if isinstance(event, PeerProven):
                events += self.connection.accept()
            elif isinstance(event, PeerVerified):
                self.ready.callback(None)
            elif isinstance(event, ConnectionFailed):
                self.failed = event
            else:
                self.replies.append(event.response)
        self._send()

    def request(self, name: str, payload: bytes, count: int = 1) -> None:
        for _ in range(count):
            self.connection.request(name, payload, token=object())
        self._send()

    def _send(self) -> None:
        data = self.connection.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    def connectionLost(self, reason: object = None) -> None:
        self.closed.callback(None)

    def codes(self) -> list[int]:
        """The code of each reply: 0 for a served one."""
        return [getattr(reply, "code", 0) for reply in self.replies]


async def _client(
    port: int,
    identity: Identity,
    nonce: Optional[bytes] = None,
    source: str = "127.0.0.1",
) -> SansIOClient:
    client = SansIOClient(identity, nonce)
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, bindAddress=(source, 0))
    await connectProtocol(endpoint, client)
    await client.ready
    return client


def _echo(request: IncomingRequest) -> bytes:
    return request.payload


# -- item 1: one admission path; a budget belongs to the peer id ------------


@pytest_twisted.ensureDeferred
async def test_a_replacement_connection_shares_the_budget_and_is_admitted(
    alice: Identity, bob: Identity, make_node: MakeNode
) -> None:
    clock = Clock()  # no refill: every token spent stays spent
    b = make_node(
        bob,
        clock=clock,
        handlers={"echo": _echo},
        # An operator's rate (the default is none): 100 per 10 s.
        limits=ConnectionLimits(request_rate=10, request_burst=100),
    )
    verified: list[object] = []
    lost: list[object] = []
    b.on_peer_verified(verified.append)
    b.on_peer_lost(lost.append)
    port = await _port(b)
    # The first connection's nonce loses the duplicate rule, the second's wins.
    first = await _client(port, alice, nonce=b"\xff" * 32)
    first.request("echo", b"x", 100)
    await until(lambda: len(first.replies) == 100)
    assert first.codes() == [0] * 100  # the burst, served
    second = await _client(port, alice, nonce=b"\x00" * 32)
    await first.closed  # the duplicate rule kept the attacker's choice
    assert b._peers.get(alice.peer_id) is not None
    second.request("echo", b"x", 50)
    await until(lambda: len(second.replies) == 50)
    assert second.codes() == [ErrorCode.RATE_LIMITED] * 50
    # Both went through admission; the peer was never lost, so one announce.
    assert b.counters["handshakes.ok"] == 2
    assert b.counters["peers.replaced"] == 1
    assert len(verified) == 1 and lost == []
    # Reconnecting does not refill the budget either.
    second.transport.loseConnection()  # type: ignore[union-attr]
    await second.closed
    await until(lambda: b.peers == [])
    third = await _client(port, alice)
    third.request("echo", b"x", 20)
    await until(lambda: len(third.replies) == 20)
    assert third.codes() == [ErrorCode.RATE_LIMITED] * 20
    assert b.counters["requests.refused.echo.RATE_LIMITED"] == 70
    third.transport.loseConnection()  # type: ignore[union-attr]
    await third.closed
    clock.advance(10.0)  # the budget refills with time, as for anyone
    fourth = await _client(port, alice)
    fourth.request("echo", b"x", 100)
    await until(lambda: len(fourth.replies) == 100)
    assert fourth.codes() == [0] * 100
    fourth.transport.loseConnection()  # type: ignore[union-attr]
    await fourth.closed


# -- item 4: both kinds of request count against the in-flight bound --------


def _connected_pair(
    alice: Identity, bob: Identity, max_in_flight: int
) -> tuple[Connection, Connection]:
    """Alice's and Bob's sans-IO connections, verified, bytes moved by hand."""
    a = Connection(alice, initiator=True)
    b = Connection(bob, initiator=False, max_in_flight=max_in_flight)
    a.initiate()
    b.initiate()
    for _ in range(4):
        for sender, receiver in ((a, b), (b, a)):
            for event in receiver.receive_data(sender.data_to_send()):
                if isinstance(event, PeerProven):
                    receiver.accept()
    assert a.verified and b.verified
    return a, b


def test_requests_past_the_in_flight_bound_wait_within_one_read(
    alice: Identity, bob: Identity
) -> None:
    a, b = _connected_pair(alice, bob, max_in_flight=3)
    for index in range(6):  # fire-and-forget and numbered, interleaved
        a.request("work", bytes([index]), token=object() if index % 2 else None)
    a.send(wire.Ping(7))
    events = b.receive_data(a.data_to_send())  # one read
    assert [e.payload for e in events if isinstance(e, wire.Request)] == [
        b"\x00",
        b"\x01",
        b"\x02",
    ]
    assert b.requests.in_flight == 3 and len(b.backlog) == 3
    assert isinstance(decode_all(b.data_to_send())[0], wire.Pong)  # not held
    assert b.saturated  # nothing ends, nothing more is handed out
    # The fire-and-forget handler ended: its place goes to the next.
    b.respond(wire.SuccessResponse(0))
    [next_one] = b.release()
    assert isinstance(next_one, wire.Request) and next_one.payload == b"\x03"
    b.respond(wire.SuccessResponse(2))
    b.respond(wire.SuccessResponse(0))
    rest = b.release()
    assert [e.payload for e in rest if isinstance(e, wire.Request)] == [
        b"\x04",
        b"\x05",
    ]
    assert b.backlog == [] and b.requests.in_flight == 3


def decode_all(data: bytes) -> list[wire.Message]:
    return [wire.decode(body) for body in framing.FrameDecoder(1 << 20).feed(data)]


@pytest_twisted.ensureDeferred
async def test_async_handlers_never_run_past_the_in_flight_bound(
    alice: Identity, bob: Identity, make_node: MakeNode
) -> None:
    running: list[defer.Deferred[bytes]] = []

    def hold(request: IncomingRequest) -> defer.Deferred[bytes]:
        running.append(defer.Deferred())
        return running[-1]

    b = make_node(
        bob,
        handlers={"hold": hold},
        settings=Settings(max_concurrent_requests=16),
        limits=ConnectionLimits(request_rate=0),  # the bound, not the rate
    )
    port = await _port(b)
    client = await _client(port, alice)
    for _ in range(300):  # fire and forget
        client.connection.request("hold", b"n")
    client.request("hold", b"r", 300)  # numbered
    await until(lambda: len(running) >= 16)
    for _ in range(5):  # let the reactor read what it would
        await deferLater(reactor, 0.01)
    assert len(running) == 16  # no read overshoots the bound
    served = 0
    while served < 600:  # every request is served in the end, none lost
        batch, running[:] = list(running), []
        assert 0 < len(batch) <= 16
        for deferred in batch:
            deferred.callback(b"done")
        served += len(batch)
        if served < 600:
            await until(lambda: running)
    await until(lambda: len(client.replies) == 300)
    assert client.codes() == [0] * 300
    client.transport.loseConnection()  # type: ignore[union-attr]
    await client.closed


# -- item 2: idle sockets cannot lock new peers out --------------------------


async def _idle(port: int, source: str, opening: bytes = b"") -> Idle:
    idle = Idle(opening)
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, bindAddress=(source, 0))
    await connectProtocol(endpoint, idle)
    return idle


async def _close_all(idles: list[Idle]) -> None:
    for idle in idles:
        if not idle.closed.called:
            idle.transport.loseConnection()  # type: ignore[union-attr]
        await idle.closed


@pytest_twisted.ensureDeferred
async def test_an_idle_flood_from_many_addresses_cannot_refuse_a_newcomer(
    alice: Identity, bob: Identity, make_node: MakeNode
) -> None:
    limits = ConnectionLimits(exempt_loopback=False, max_handshaking=8)
    b = make_node(bob, limits=limits)
    a = make_node(alice)
    port = await _port(b)
    idles = [
        await _idle(port, f"127.0.9.{address}")
        for address in range(1, 5)
        for _ in range(4)  # 16 silent sockets for 8 places
    ]
    await until(lambda: all(idle.received or idle.closed.called for idle in idles))
    assert b.limiter.handshaking == 8
    for _ in range(3):  # an honest newcomer from an unused address
        peer = await a.connect(f"tcp:127.0.0.1:{port}", peer_id=bob.peer_id)
        assert peer.peer_id == bob.peer_id
        await a.disconnect(bob.peer_id)
    assert b.counters["handshakes.ok"] == 3
    assert b.counters["refused.handshaking"] == 0
    # 8 to seat the last two addresses, 1 for the first newcomer (each one
    # that verifies frees its place for the next)
    assert b.counters["evicted.handshaking"] == 9
    await _close_all(idles)


def test_handshake_places_per_subnet_and_the_eviction_order() -> None:
    from blueprint_net._policy.limits import ConnectionLimiter

    limiter = ConnectionLimiter(
        ConnectionLimits(
            exempt_loopback=False, max_handshaking=5, max_handshaking_per_subnet=3
        ),
        Clock(),
    )
    big, small, fresh = (
        limiter.subnet(h) for h in ("10.0.0.1", "10.0.0.2", "10.9.9.9")
    )
    slots = [limiter.opened(big, handshaking=True) for _ in range(3)]
    assert limiter.admit("10.0.0.1", True, big).refused == "handshaking_subnet"
    other = [limiter.opened(small, handshaking=True) for _ in range(2)]
    # Full: a newcomer evicts the oldest of the subnet holding the most.
    admission = limiter.admit("10.9.9.9", True, fresh)
    assert admission.refused is None and admission.evict is slots[0]
    assert limiter.handshaking == 5  # until the adapter evicts it
    limiter.evict(admission.evict)
    assert limiter.handshaking == 4
    limiter.opened(fresh, handshaking=True)
    admission = limiter.admit("10.9.9.8", True, limiter.subnet("10.9.9.8"))
    assert admission.evict is other[0] or admission.evict is slots[1]
    limiter.evict(admission.evict)
    assert limiter.counters["evicted.handshaking"] == 2


def test_our_own_dials_use_no_inbound_handshake_places() -> None:
    from blueprint_net._policy.limits import ConnectionLimiter

    limiter = ConnectionLimiter(
        ConnectionLimits(
            exempt_loopback=False, max_handshaking=7, max_handshaking_per_subnet=2
        ),
        Clock(),
    )
    dialed, other = limiter.subnet("10.0.0.1"), limiter.subnet("10.0.0.2")
    for _ in range(4):  # the ConnectionManager's max_dialing, into one subnet
        limiter.opened(dialed, handshaking=True, inbound=False)
    assert limiter.admit("10.0.0.1", True, dialed).refused is None
    mine = limiter.opened(dialed, handshaking=True)
    theirs = [limiter.opened(other, handshaking=True) for _ in range(2)]
    # Full: the victim is of the subnet holding the most *inbound* places.
    admission = limiter.admit("10.9.9.9", True, limiter.subnet("10.9.9.9"))
    assert admission.evict is theirs[0] and admission.evict is not mine


@pytest_twisted.ensureDeferred
async def test_a_silent_socket_has_the_short_first_frame_deadline(
    alice: Identity, bob: Identity, make_node: MakeNode
) -> None:
    clock = Clock()
    b = make_node(bob, clock=clock)
    port = await _port(b)
    silent = await _idle(port, "127.0.0.1")
    hello = framing.frame(wire.Hello(1, bytes(32), alice.peer_id))
    spoke = await _idle(port, "127.0.0.1", opening=hello)
    await until(lambda: silent.received and spoke.received)
    await until(lambda: b.limiter.handshaking == 2)
    for _ in range(5):  # let the Hello be read
        await deferLater(reactor, 0.01)
    clock.advance(5.0)  # the default first-frame deadline
    await until(lambda: silent.closed.called)
    assert b.counters["handshakes.failed.HANDSHAKE_TIMEOUT"] == 1
    assert not spoke.closed.called  # it spoke: the 30 s handshake timeout
    clock.advance(25.0)  # 30 s from the connection: the handshake timeout
    await until(lambda: spoke.closed.called)
    assert b.counters["handshakes.failed.HANDSHAKE_TIMEOUT"] == 2
    assert b.counters["misbehaviour"] == 0


# -- item 3: every byte held for a peer is counted and bounded ---------------

MiB = 1 << 20


def _held(node: Node, identity: Identity) -> int:
    """What the node really holds for a peer: its queue and what Twisted's
    TCP transport has not sent (it has no public API for that)."""
    peer = node._peers[identity.peer_id]
    transport: Any = peer.transport
    unsent = len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    return int(peer.queued + unsent)


def _blob(request: IncomingRequest) -> bytes:
    return bytes(request.payload[:1]) * MiB  # a fresh MiB each time


@pytest_twisted.ensureDeferred
async def test_a_peer_that_never_reads_holds_one_send_queue(
    alice: Identity, bob: Identity, make_node: MakeNode
) -> None:
    b = make_node(bob, handlers={"blob": _blob})
    port = await _port(b)
    client = await _client(port, alice)
    client.transport.stopReading()  # type: ignore[union-attr]
    client.request("blob", b"x", 40)  # 40 MiB of answers, never read
    await until(lambda: b.counters["requests.in.blob"] == 40)
    for _ in range(5):
        await deferLater(reactor, 0.01)
    held = _held(b, alice)
    limit = Settings().max_send_queue
    assert held <= limit + 2 * 64 * 1024  # the queue, and the transport's pieces
    assert b.counters["memory.refused.response"] > 0
    assert b.memory.used <= b.memory.limit
    client.transport.loseConnection()  # type: ignore[union-attr]
    await client.closed
    await until(lambda: b.memory.used == 0)  # released with the connection


@pytest_twisted.ensureDeferred
async def test_the_node_wide_budget_bounds_many_peers_that_never_read(
    bob: Identity, make_node: MakeNode
) -> None:
    budget = 6 * MiB
    b = make_node(
        bob,
        handlers={"blob": _blob},
        settings=Settings(memory_budget=budget),
    )
    port = await _port(b)
    ids = [Identity.generate() for _ in range(4)]
    clients = [await _client(port, identity) for identity in ids]
    for client in clients:
        client.transport.stopReading()  # type: ignore[union-attr]
        client.request("blob", b"x", 10)
    await until(lambda: b.counters["requests.in.blob"] == 40)
    for _ in range(5):
        await deferLater(reactor, 0.01)
    held = sum(_held(b, identity) for identity in ids)
    assert held <= budget + len(ids) * 2 * 64 * 1024
    assert b.memory.peak <= budget + len(ids) * 2 * 64 * 1024
    assert b.counters["memory.refused.response"] > 0
    for client in clients:
        client.transport.loseConnection()  # type: ignore[union-attr]
        await client.closed
    await until(lambda: b.memory.used == 0)


@pytest_twisted.ensureDeferred
async def test_a_half_sent_frame_past_the_budget_drops_its_connection(
    alice: Identity, bob: Identity, make_node: MakeNode
) -> None:
    b = make_node(bob, settings=Settings(memory_budget=2 * MiB))
    port = await _port(b)
    client = await _client(port, alice)
    header = (16 * MiB - 1).to_bytes(4, "big")  # a legal frame, half sent
    client.transport.write(header + bytes(3 * MiB))  # type: ignore[union-attr]
    await client.closed
    assert client.failed is not None
    assert client.failed.error.code is ErrorCode.CONNECTION_LIMIT
    assert b.counters["memory.refused.inbound"] == 1
    assert b.counters["closed.CONNECTION_LIMIT"] == 1
    assert b.memory.used == 0 and b.memory.peak <= 2 * MiB + 64 * 1024


class _FakeConnection:
    def __init__(self, peer_id: Any, key: bytes) -> None:
        self.peer_id, self.session_key = peer_id, key


def test_budgets_of_gone_peers_are_remembered_least_recently_used_first() -> None:
    from blueprint_net._adapters.peers import PeerTable
    from blueprint_net._policy.limits import TokenBucket

    table = PeerTable(remembered=2)
    ids = [Identity.generate().peer_id for _ in range(3)]
    budgets = {}
    for peer_id in ids:
        connection: Any = _FakeConnection(peer_id, b"k")
        table.opened(connection)
        budget = budgets[peer_id] = TokenBucket(1.0, 1.0, 0.0)
        assert table.verified(connection, lambda: budget).new  # noqa: B023
        assert table.closed(connection)
    assert table.remembered_budgets == 2  # the first id was forgotten
    for peer_id, kept in zip(ids, (False, True, True)):
        connection = _FakeConnection(peer_id, b"k")
        fresh = TokenBucket(1.0, 1.0, 0.0)
        table.verified(connection, lambda: fresh)  # noqa: B023
        assert (table.budget(peer_id) is budgets[peer_id]) is kept


def test_connections_of_counts_open_proven_connections_kept_or_not() -> None:
    """The per-peer limit's count (kept for each id, not scanned for): every
    open connection whose peer proved the id, the duplicate rule's loser
    too, until it closes; one not yet proven counts for nobody."""
    from blueprint_net._adapters.peers import PeerTable

    table = PeerTable()
    alice, bob = Identity.generate().peer_id, Identity.generate().peer_id
    first: Any = _FakeConnection(alice, b"a")
    second: Any = _FakeConnection(alice, b"b")
    other: Any = _FakeConnection(bob, b"c")
    pending: Any = _FakeConnection(None, b"d")  # still in its handshake
    for connection in (first, second, other, pending):
        table.opened(connection)
    assert table.connections_of(alice) == 0
    table.verified(first, lambda: None)
    dropped = table.verified(second, lambda: None).dropped
    assert id(dropped) == id(second)  # the duplicate rule keeps the first
    table.verified(other, lambda: None)
    assert (table.connections_of(alice), table.connections_of(bob)) == (2, 1)
    table.closed(pending)
    table.closed(second)  # the duplicate, closed
    assert (table.connections_of(alice), table.connections_of(bob)) == (1, 1)
    table.closed(first)
    table.closed(other)
    assert (table.connections_of(alice), table.connections_of(bob)) == (0, 0)
    assert table.open == set()
