"""Nodes over real loopback TCP; requests between nodes in memory
(``blueprint_net.testing``), where no socket is needed to show them."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.application.service import MultiService
from twisted.internet import defer, protocol, reactor
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import Clock, deferLater
from zope.interface import implementer

from blueprint_net import Node
from blueprint_net._adapters.interfaces import IRequestHandler
from blueprint_net._core import framing, wire
from blueprint_net._core.errors import (
    ErrorCode,
    HandshakeError,
    NotConnected,
    PeerLost,
    RemoteError,
    RequestTimeout,
    SendQueueFull,
)
from blueprint_net._core.identity import Identity
from blueprint_net._core.messaging import IncomingRequest, ProtocolData, Success
from blueprint_net._policy.settings import Settings
from blueprint_net.node import Peer
from blueprint_net.testing import MemoryNetwork
from tests.helpers import MakeNode, decode_frames, until

pytestmark = pytest.mark.usefixtures("clean_reactor")


async def _listening(node: Node) -> int:
    port = await node.listen("tcp:0:interface=127.0.0.1")
    address = port.getHost()
    assert isinstance(address, IPv4Address)
    return address.port


@pytest_twisted.ensureDeferred
async def test_connect_verifies_both_sides(
    alice: Identity, bob: Identity, make_node: MakeNode
) -> None:
    a, b = make_node(alice), make_node(bob)
    seen: defer.Deferred[Peer] = defer.Deferred()
    b.on_peer_verified(seen.callback)
    port = await _listening(b)
    peer = await a.connect(f"tcp:127.0.0.1:{port}", peer_id=bob.peer_id)
    assert peer.peer_id == bob.peer_id and peer.direction == "outbound"
    inbound = await seen
    assert inbound.peer_id == alice.peer_id and inbound.direction == "inbound"
    assert [p.peer_id for p in b.peers] == [alice.peer_id]
    again = await a.connect(f"tcp:127.0.0.1:{port}", peer_id=bob.peer_id)
    assert again == peer  # reused, not dialed twice
    await a.stop()
    await b.stop()
    assert a.peers == [] and b.peers == []


@pytest_twisted.ensureDeferred
async def test_endpoint_objects_are_accepted(
    alice: Identity, bob: Identity, make_node: MakeNode
) -> None:
    a, b = make_node(alice), make_node(bob)
    port = await _listening(b)
    peer = await a.connect(TCP4ClientEndpoint(reactor, "127.0.0.1", port))
    assert peer.peer_id == bob.peer_id


@pytest_twisted.ensureDeferred
async def test_wrong_peer_fails_the_connect(
    alice: Identity, bob: Identity, carol: Identity, make_node: MakeNode
) -> None:
    a, b = make_node(alice), make_node(bob)
    port = await _listening(b)
    with pytest.raises(HandshakeError) as caught:
        await a.connect(f"tcp:127.0.0.1:{port}", peer_id=carol.peer_id)
    assert caught.value.reason.code is ErrorCode.UNEXPECTED_PEER  # type: ignore[union-attr]
    assert a.peers == []


@pytest_twisted.ensureDeferred
async def test_simultaneous_dials_keep_exactly_one_connection(
    alice: Identity, bob: Identity, make_node: MakeNode
) -> None:
    a, b = make_node(alice), make_node(bob)
    lost: list[Peer] = []
    a.on_peer_lost(lost.append)
    codes: list[ErrorCode] = []
    for node in (a, b):
        node._host.connection_failed = (  # type: ignore[method-assign]
            lambda protocol, event: codes.append(event.error.code)
        )
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
    await until(lambda: len(a._peers.open) == len(b._peers.open) == 1)
    [kept_a] = a._peers.protocols()
    [kept_b] = b._peers.protocols()
    assert kept_a.connection.handshake.session_key == (
        kept_b.connection.handshake.session_key
    )
    assert lost == []  # the peer stayed connected throughout
    assert ErrorCode.DUPLICATE_CONNECTION in codes  # there really were two


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
async def test_request_before_handshake_gets_error_and_close(
    bob: Identity, make_node: MakeNode
) -> None:
    b = make_node(bob)
    port = await _listening(b)
    raw = Raw()
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), raw)
    raw.transport.write(framing.frame(wire.Request(1, "echo", b"hi")))  # type: ignore[union-attr]
    await raw.closed
    hello, error = decode_frames(raw.received)
    assert isinstance(hello, wire.Hello)
    assert isinstance(error, wire.Error)
    assert error.code == ErrorCode.UNEXPECTED_MESSAGE


@pytest_twisted.ensureDeferred
async def test_node_is_a_service(alice: Identity, bob: Identity) -> None:
    plain = Settings(allow_plaintext=True)
    a, b = Node(alice, settings=plain), Node(bob, settings=plain)
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


# -- requests between nodes (in memory where no socket is needed) -----------


async def _connected(client: Node, *servers: Node) -> None:
    for server in servers:
        port = await _listening(server)
        await client.connect(f"tcp:127.0.0.1:{port}", peer_id=server.peer_id)


def _echo(request: IncomingRequest) -> bytes:
    return request.payload


def test_handlers_of_every_kind_answer(
    alice: Identity, bob: Identity, net: MemoryNetwork
) -> None:
    seen: list[IncomingRequest] = []

    def who(request: IncomingRequest) -> Success:
        seen.append(request)
        return Success(str(request.peer_id).encode())

    async def later(request: IncomingRequest) -> ProtocolData:
        await deferLater(net.clock, 0)
        return ProtocolData(request.metadata or b"")

    @implementer(IRequestHandler)
    class Nothing:
        max_payload = None

        def handle(self, request: IncomingRequest) -> defer.Deferred[None]:
            return defer.succeed(None)

    a = net.add_node(alice)
    b = net.add_node(bob, handlers={"echo": _echo, "who": who, "later": later})
    b.register("nothing", Nothing())
    net.connect(a, b)
    echo = net.result(a.request(bob.peer_id, "echo", b"hi", metadata=b"route"))
    assert echo == wire.ProtocolResponse(echo.request_id, b"hi")
    answer = net.result(
        a.request(bob.peer_id, "who", b"", metadata=b"claims to be carol")
    )
    # The handler learns the asker from the verified connection.
    assert answer.data == str(alice.peer_id).encode()
    assert seen[0].peer_id == alice.peer_id and seen[0].metadata is not None
    assert net.result(a.request(bob.peer_id, "later", b"", b"m")).data == b"m"
    nothing = net.result(a.request(bob.peer_id, "nothing", b""))
    assert isinstance(nothing, wire.SuccessResponse) and nothing.data is None


def test_concurrent_requests_complete_out_of_order(
    alice: Identity, bob: Identity, net: MemoryNetwork
) -> None:
    slow: defer.Deferred[bytes] = defer.Deferred()
    a = net.add_node(alice)
    b = net.add_node(bob, handlers={"slow": lambda request: slow, "fast": _echo})
    net.connect(a, b)
    first = a.request(bob.peer_id, "slow", b"1")
    fast = [net.result(a.request(bob.peer_id, "fast", bytes([i]))) for i in range(5)]
    assert [r.data for r in fast] == [bytes([i]) for i in range(5)]
    assert not first.called  # the slow handler held up nothing
    slow.callback(b"slow done")
    assert net.result(first).data == b"slow done"


def test_error_paths_answer_with_codes_and_keep_the_connection(
    alice: Identity, bob: Identity, logged: list[dict[str, object]], net: MemoryNetwork
) -> None:
    def broken(request: IncomingRequest) -> bytes:
        raise KeyError("secret internal detail")

    def refuses(request: IncomingRequest) -> bytes:
        raise RemoteError(4001, "not today")

    def impersonates(request: IncomingRequest) -> bytes:
        raise RemoteError(ErrorCode.BANNED, "a connection-level code")

    a = net.add_node(alice)
    b = net.add_node(
        bob,
        handlers={
            "broken": broken,
            "refuses": refuses,
            "impersonates": impersonates,
            "garbage": lambda r: 42,
        },
    )
    b.register("small", _echo, max_payload=4)
    cases = [
        ("nope", b"", ErrorCode.UNKNOWN_PROTOCOL),
        ("broken", b"", ErrorCode.HANDLER_ERROR),
        ("garbage", b"", ErrorCode.HANDLER_ERROR),
        ("small", b"12345", ErrorCode.PAYLOAD_TOO_LARGE),
        ("refuses", b"", 4001),
        ("impersonates", b"", ErrorCode.HANDLER_ERROR),
    ]
    net.connect(a, b)
    for protocol_name, payload, code in cases:
        with pytest.raises(RemoteError) as caught:
            net.result(a.request(bob.peer_id, protocol_name, payload))
        assert caught.value.code == code, protocol_name
        assert "secret" not in caught.value.message  # no traceback leaks
    # The handler's faults did not cost the connection.
    assert net.result(a.request(bob.peer_id, "small", b"1234")).data == b"1234"
    assert [p.peer_id for p in a.peers] == [bob.peer_id]
    net.stop()
    failures = [e["log_failure"] for e in logged if "log_failure" in e]
    assert [f.type for f in failures] == [KeyError, RemoteError]  # type: ignore[attr-defined]  # logged here, traceback and all
    garbage = [e for e in logged if e.get("kind") == "int"]
    assert len(garbage) == 1 and garbage[0]["protocol"] == "garbage"


def test_not_connected_and_connection_lost(
    alice: Identity, bob: Identity, net: MemoryNetwork
) -> None:
    never: defer.Deferred[bytes] = defer.Deferred()
    a = net.add_node(alice)
    b = net.add_node(bob, handlers={"hang": lambda request: never})
    with pytest.raises(NotConnected):
        net.result(a.request(bob.peer_id, "hang", b""))
    net.connect(a, b)
    pending = [a.request(bob.peer_id, "hang", b"") for _ in range(3)]
    net.pump()  # the requests reach Bob
    net.result(b.stop())
    for deferred in pending:
        with pytest.raises(PeerLost):
            net.result(deferred)
    assert len(a._peers) == 0


@pytest_twisted.ensureDeferred
async def test_request_timeout_over_tcp_on_a_fake_clock(
    alice: Identity, bob: Identity, make_node: MakeNode
) -> None:
    clock = Clock()
    never: defer.Deferred[bytes] = defer.Deferred()
    a = make_node(alice, clock=clock, settings=Settings(request_timeout=10.0))
    b = make_node(bob, handlers={"hang": lambda request: never})
    await _connected(a, b)
    pending = a.request(bob.peer_id, "hang", b"")
    clock.advance(9.9)
    assert not pending.called
    clock.advance(0.1)
    with pytest.raises(RequestTimeout):
        await pending


def test_broadcast_collects_every_outcome(
    alice: Identity, bob: Identity, carol: Identity, net: MemoryNetwork
) -> None:
    dave = Identity(bytes(range(96, 128)))
    never: defer.Deferred[bytes] = defer.Deferred()
    a = net.add_node(alice)
    b = net.add_node(bob, handlers={"x": _echo})
    c = net.add_node(carol, handlers={"x": lambda request: 1 / 0})
    d = net.add_node(dave, handlers={"x": lambda request: never})
    for server in (b, c, d):
        net.connect(a, server)
    gathered = a.broadcast("x", b"hello", timeout=5.0)
    net.pump()  # Bob and Carol answer at once; Dave never does
    assert not any(
        a._peers[p].connection.requests.pending for p in (bob.peer_id, carol.peer_id)
    )
    assert not gathered.called
    net.advance(5.0)
    outcomes = net.result(gathered)
    assert set(outcomes) == {bob.peer_id, carol.peer_id, dave.peer_id}
    assert outcomes[bob.peer_id].ok
    assert outcomes[bob.peer_id].response.data == b"hello"  # type: ignore[union-attr]
    carol_error = outcomes[carol.peer_id].error
    assert isinstance(carol_error, RemoteError)
    assert carol_error.code == ErrorCode.HANDLER_ERROR
    assert isinstance(outcomes[dave.peer_id].error, RequestTimeout)
    # Fire and forget, to everyone: handlers run, nothing is answered.
    assert sorted(a.notify_all("x", b"bye")) == sorted(
        [bob.peer_id, carol.peer_id, dave.peer_id]
    )


@pytest_twisted.ensureDeferred
async def test_a_peer_that_stops_reading_costs_bounded_memory(
    alice: Identity, bob: Identity, make_node: MakeNode
) -> None:
    limit = 256 * 1024
    a = make_node(alice, settings=Settings(max_send_queue=limit))
    b = make_node(bob, handlers={"sink": lambda request: None})
    await _connected(a, b)
    b._peers[alice.peer_id].transport.pauseProducing()  # type: ignore[union-attr]
    protocol = a._peers[bob.peer_id]
    payload = bytes(64 * 1024)
    sent = refused = 0
    for _ in range(200):  # 12.5 MiB offered
        try:
            a.notify(bob.peer_id, "sink", payload)
            sent += 1
        except SendQueueFull:
            refused += 1
        await _sleep(0)  # let the reactor write what the kernel takes
    assert refused > 0
    transport = protocol.transport
    # What Twisted's TCP transport holds unsent (it has no public API).
    in_transport = (
        len(transport.dataBuffer) - transport.offset + transport._tempDataLen  # type: ignore[union-attr]
    )
    held = protocol.queued + in_transport
    # Bounded by the queue limit, one frame past it, and the transport's buffer.
    assert held <= limit + 2 * len(payload) + 64 * 1024 + 1024


@pytest_twisted.ensureDeferred
async def test_one_keepalive_sweep_drops_a_silent_peer(
    alice: Identity, bob: Identity, carol: Identity, make_node: MakeNode
) -> None:
    clock = Clock()
    lost: list[Peer] = []
    a = make_node(alice, clock=clock, settings=Settings(keepalive_interval=10.0))
    a.on_peer_lost(lost.append)
    b, c = make_node(bob), make_node(carol)
    await _connected(a, b, c)
    assert len(clock.getDelayedCalls()) == 1  # one timer for every peer
    # Carol stops reading and writing: her socket stays open but silent.
    silent = c._peers[alice.peer_id].transport
    silent.stopReading()  # type: ignore[union-attr]
    silent.write = lambda data: None  # type: ignore[method-assign,union-attr]
    to_bob = a._peers[bob.peer_id]
    clock.advance(10.0)  # one interval of silence since the handshake: pinged
    await until(lambda: to_bob.liveness.heard_at == 10.0)  # Bob's pong; never Carol's
    assert lost == []
    clock.advance(10.0)  # Carol silent for an interval after her ping: dropped
    await until(lambda: lost)
    assert [peer.peer_id for peer in lost] == [carol.peer_id]
    assert [peer.peer_id for peer in a.peers] == [bob.peer_id]
    for node in (a, b, c):
        await node.stop()
    assert clock.getDelayedCalls() == []


@pytest_twisted.ensureDeferred
async def test_nagle_is_off_on_both_ends(
    alice: Identity, bob: Identity, make_node: MakeNode
) -> None:
    """A response then a request on one connection, with Nagle's algorithm
    on, waited ~40 ms each time for the peer's delayed ACK (measured: 88 ms a
    round of requests and a broadcast, 0.1-0.5 ms with TCP_NODELAY)."""
    a, b = make_node(alice), make_node(bob)
    await _connected(a, b)
    await until(lambda: b._peers.get(alice.peer_id))  # Bob's side has verified too
    for node, other in ((a, bob), (b, alice)):
        assert node._peers[other.peer_id].transport.getTcpNoDelay()  # type: ignore[union-attr]


class _Stuck:
    """A connection that closes only when aborted."""

    def __init__(self) -> None:
        self.closed: defer.Deferred[None] = defer.Deferred()
        self.transport = self

    def close(self, error: object) -> bool:
        return True

    def abortConnection(self) -> None:
        self.closed.callback(None)


def test_stop_aborts_a_stuck_connection_on_the_nodes_clock() -> None:
    from blueprint_net._adapters.node import CLOSE_GRACE

    clock = Clock()
    node = Node(Identity.generate(), clock=clock)
    stuck = _Stuck()
    node._peers.open.add(stuck)  # type: ignore[arg-type]
    stopped = node.stop()
    clock.advance(CLOSE_GRACE - 0.1)
    assert not stopped.called and not stuck.closed.called
    clock.advance(0.1)
    assert stuck.closed.called and stopped.called


def test_connections_per_peer_are_counted_up_and_down() -> None:
    with MemoryNetwork() as net:
        a, b = net.add_node(), net.add_node()
        net.connect(a, b)
        assert a._peers.connections_of(b.peer_id) == 1
        net.result(a.disconnect(b.peer_id))
        net.pump()
        assert a._peers.connections_of(b.peer_id) == 0
        assert not a._peers._proven  # nothing kept for a peer that left
        net.connect(a, b)
        assert a._peers.connections_of(b.peer_id) == 1
