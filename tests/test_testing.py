"""blueprint_net.testing: real nodes over in-memory connections, on one clock.

No test here awaits anything: every result is read with ``net.result`` after
pumping, so these run without a reactor (``clean_reactor`` checks that none
was given work).
"""

from __future__ import annotations

import inspect
import re

import pytest
from twisted.application.internet import ClientService
from twisted.internet import defer, protocol
from twisted.internet.endpoints import connectProtocol
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import deferLater
from zope.interface.verify import verifyObject

from blueprint_net import ConnectFailed, Node, Settings, testing
from blueprint_net._core import framing, wire
from blueprint_net._core.errors import (
    ErrorCode,
    HandshakeError,
    NotConnected,
    PeerLost,
    Refused,
    RemoteError,
    RequestTimeout,
)
from blueprint_net._core.identity import Identity, PeerId
from blueprint_net._core.messaging import IncomingRequest, ProtocolData, Success
from blueprint_net.gossip import GossipSettings
from blueprint_net.node import INode, Peer
from blueprint_net.policy import BanRegistry, ConnectionLimits, Policy
from blueprint_net.testing import (
    LINK_PORT,
    MemoryNetwork,
    NoResult,
    RecordingHandler,
    StubNode,
)
from tests.helpers import decode_frames

pytestmark = pytest.mark.usefixtures("clean_reactor")


def _echo(request: IncomingRequest) -> bytes:
    return request.payload


def test_connect_verifies_both_ends(net: MemoryNetwork) -> None:
    a, b = net.add_node(), net.add_node()
    seen: list[Peer] = []
    b.on_peer_verified(seen.append)
    peer = net.connect(a, b)
    assert peer.peer_id == b.peer_id and peer.direction == "outbound"
    assert peer.address.host == net.host(b) == "10.0.0.2"  # type: ignore[attr-defined]
    assert peer.address.port == LINK_PORT  # type: ignore[attr-defined]
    [inbound] = seen
    assert inbound.peer_id == a.peer_id and inbound.direction == "inbound"
    assert inbound.address.host == net.host(a)  # type: ignore[attr-defined]
    assert net.connect(a, b) == peer  # reused, not dialed twice


def test_identities_are_the_same_on_every_run() -> None:
    with MemoryNetwork() as one, MemoryNetwork() as two:
        assert [one.add_node().peer_id for _ in range(3)] == [
            two.add_node().peer_id for _ in range(3)
        ]
    alice = Identity(bytes(range(32)))
    with MemoryNetwork() as net:
        assert net.add_node(alice).peer_id == alice.peer_id


def test_request_and_response(net: MemoryNetwork) -> None:
    a = net.add_node()
    b = net.add_node(handlers={"echo": _echo})
    net.connect(a, b)
    reply = net.result(a.request(b.peer_id, "echo", b"hi", metadata=b"m"))
    assert reply == wire.ProtocolResponse(reply.request_id, b"hi")


def test_the_requester_is_the_verified_peer(net: MemoryNetwork) -> None:
    a = net.add_node()
    b = net.add_node(handlers={"who": lambda r: Success(str(r.peer_id).encode())})
    net.connect(a, b)
    reply = net.result(a.request(b.peer_id, "who", b""))
    assert reply == wire.SuccessResponse(reply.request_id, str(a.peer_id).encode())


def test_fire_and_forget(net: MemoryNetwork) -> None:
    received: list[IncomingRequest] = []
    a = net.add_node()
    b, c = (net.add_node(handlers={"log": received.append}) for _ in range(2))
    net.connect(a, b)
    net.connect(a, c)
    a.notify(b.peer_id, "log", b"one")
    assert received == []  # nothing moves until the network is pumped
    net.pump()
    assert [(r.payload, r.wants_response) for r in received] == [(b"one", False)]
    assert sorted(a.notify_all("log", b"all")) == sorted([b.peer_id, c.peer_id])
    net.pump()
    assert [r.payload for r in received[1:]] == [b"all", b"all"]


def test_a_closing_peer_is_skipped_not_fatal(net: MemoryNetwork) -> None:
    from blueprint_net._core.errors import PeerLost

    received: list[IncomingRequest] = []
    a = net.add_node()
    b, c = (net.add_node(handlers={"log": received.append}) for _ in range(2))
    net.connect(a, b)
    net.connect(a, c)
    closing = a.disconnect(b.peer_id)  # closed at once, lost once pumped
    assert a.notify_all("log", b"all") == [c.peer_id]
    with pytest.raises(PeerLost):
        a.notify(b.peer_id, "log", b"one")
    with pytest.raises(PeerLost):
        net.result(a.request(b.peer_id, "log", b"one"))
    net.pump()
    net.result(closing)
    assert [r.payload for r in received] == [b"all"]


@pytest.mark.parametrize(
    ("raised", "answered"),
    [(303, 303), (305, 305), (1000, 1000), (306, 301), (999, 301), (299, 301)],
)
def test_a_handler_may_answer_only_with_a_code_it_may_use(
    net: MemoryNetwork, raised: int, answered: int
) -> None:
    def refuses(request: IncomingRequest) -> bytes:
        raise RemoteError(raised, "no")

    a = net.add_node()
    b = net.add_node(handlers={"refuses": refuses})
    net.connect(a, b)
    with pytest.raises(RemoteError) as caught:
        net.result(a.request(b.peer_id, "refuses", b""))
    assert caught.value.code == answered  # 301: HANDLER_ERROR


def test_a_handler_raising_remote_error(net: MemoryNetwork) -> None:
    def refuses(request: IncomingRequest) -> bytes:
        raise RemoteError(4001, "not today")

    a = net.add_node()
    b = net.add_node(handlers={"refuses": refuses, "echo": _echo})
    net.connect(a, b)
    with pytest.raises(RemoteError) as caught:
        net.result(a.request(b.peer_id, "refuses", b""))
    assert (caught.value.code, caught.value.message) == (4001, "not today")
    with pytest.raises(RemoteError) as unknown:
        net.result(a.request(b.peer_id, "nope", b""))
    assert unknown.value.code == ErrorCode.UNKNOWN_PROTOCOL
    # A request's failure does not cost the connection.
    assert net.result(a.request(b.peer_id, "echo", b"x")).data == b"x"


def test_broadcast_to_several_nodes(net: MemoryNetwork) -> None:
    a = net.add_node()
    b, c = net.add_node(handlers={"x": _echo}), net.add_node(handlers={"x": _echo})
    d = net.add_node(handlers={"x": lambda request: 1 / 0})
    for node in (b, c, d):
        net.connect(a, node)
    outcomes = net.result(a.broadcast("x", b"hello"))
    assert set(outcomes) == {b.peer_id, c.peer_id, d.peer_id}
    assert [outcomes[n.peer_id].response.data for n in (b, c)] == [b"hello"] * 2  # type: ignore[union-attr]
    error = outcomes[d.peer_id].error
    assert isinstance(error, RemoteError) and error.code == ErrorCode.HANDLER_ERROR


def test_timeouts_follow_the_fake_clock(net: MemoryNetwork) -> None:
    never: defer.Deferred[bytes] = defer.Deferred()
    a = net.add_node(settings=Settings(request_timeout=10.0))
    b = net.add_node(handlers={"hang": lambda request: never})
    net.connect(a, b)
    pending = a.request(b.peer_id, "hang", b"")
    net.advance(9.9)
    with pytest.raises(NoResult):
        net.result(pending)
    net.advance(0.1)
    with pytest.raises(RequestTimeout):
        net.result(pending)
    never.callback(b"late")  # a late answer is dropped, not an error
    net.pump()


def test_a_handler_answering_later(net: MemoryNetwork) -> None:
    answers: list[defer.Deferred[bytes]] = []

    def later(request: IncomingRequest) -> defer.Deferred[bytes]:
        answers.append(defer.Deferred())
        return answers[-1]

    async def sleepy(request: IncomingRequest) -> bytes:
        await deferLater(net.clock, 5.0)  # the network's clock, not a reactor
        return b"rested"

    a = net.add_node()
    b = net.add_node(handlers={"later": later, "sleepy": sleepy, "echo": _echo})
    net.connect(a, b)
    first = a.request(b.peer_id, "later", b"")
    # The pending handler holds up nothing else.
    assert net.result(a.request(b.peer_id, "echo", b"fast")).data == b"fast"
    assert not first.called
    answers[0].callback(b"done")
    assert net.result(first).data == b"done"
    rested = a.request(b.peer_id, "sleepy", b"")
    net.advance(4.0)
    assert not rested.called
    net.advance(1.0)
    assert net.result(rested).data == b"rested"


def test_disconnect_fails_pending_requests_with_peer_lost(
    net: MemoryNetwork,
) -> None:
    never: defer.Deferred[bytes] = defer.Deferred()
    a = net.add_node()
    b = net.add_node(handlers={"hang": lambda request: never})
    lost: list[Peer] = []
    a.on_peer_lost(lost.append)
    net.connect(a, b)
    pending = [a.request(b.peer_id, "hang", b"") for _ in range(3)]
    net.pump()
    net.result(b.disconnect(a.peer_id))
    for deferred in pending:
        with pytest.raises(PeerLost):
            net.result(deferred)
    assert [peer.peer_id for peer in lost] == [b.peer_id]
    assert a.peers == [] and b.peers == []
    with pytest.raises(NotConnected):
        net.result(a.request(b.peer_id, "hang", b""))
    net.connect(a, b)  # and they can meet again
    assert [peer.peer_id for peer in a.peers] == [b.peer_id]


def test_a_cut_loses_the_peer_without_goodbye(net: MemoryNetwork) -> None:
    never: defer.Deferred[bytes] = defer.Deferred()
    a = net.add_node()
    b = net.add_node(handlers={"hang": lambda request: never})
    c = net.add_node()
    net.connect(a, b)
    net.connect(a, c)
    pending = a.request(b.peer_id, "hang", b"")
    net.cut(a, b)
    with pytest.raises(PeerLost, match="network cut"):
        net.result(pending)
    assert [peer.peer_id for peer in a.peers] == [c.peer_id]
    assert b.peers == []
    # No Error frame crossed: neither end said why, nor heard why.
    for node in (a, b):
        assert not any(key.startswith("closed.") for key in node.counters)


def test_keepalive_drops_a_peer_that_went_silent(net: MemoryNetwork) -> None:
    a = net.add_node(settings=Settings(keepalive_interval=10.0))
    b = net.add_node(settings=Settings(keepalive_interval=0))
    net.connect(a, b)
    net.advance(60.0)  # pings are answered at each tick on the way
    assert [peer.peer_id for peer in a.peers] == [b.peer_id]


def test_advance_stops_at_each_timer_and_pumps(net: MemoryNetwork) -> None:
    a = net.add_node()
    b = net.add_node(handlers={"when": lambda r: str(net.clock.seconds()).encode()})
    net.connect(a, b)
    asked: list[defer.Deferred[wire.Reply]] = []
    for at in (1.0, 3.0):
        net.clock.callLater(at, lambda: asked.append(a.request(b.peer_id, "when", b"")))
    net.advance(10.0)
    # Each request left, and was answered, at its own time, not at the end.
    assert [net.result(d).data for d in asked] == [b"1.0", b"3.0"]
    assert net.clock.seconds() == 10.0


def test_connect_failures_are_raised(net: MemoryNetwork) -> None:
    a, b = net.add_node(), net.add_node()
    quiet = net.add_node(listen=False)
    with pytest.raises(
        ConnectFailed, match=r"nobody listens at 10\.0\.0\.3:"
    ) as refused:
        net.connect(a, quiet)
    assert isinstance(refused.value.__cause__, ConnectionRefusedError)
    with pytest.raises(HandshakeError) as caught:
        net.result(a.connect(net.endpoint(b, source=a), peer_id=quiet.peer_id))
    assert caught.value.reason.code is ErrorCode.UNEXPECTED_PEER  # type: ignore[union-attr]
    a.ban(net.host(b), "testing address bans")
    with pytest.raises(Refused):
        net.connect(a, b)


def test_a_listener_refuses_a_banned_address(net: MemoryNetwork) -> None:
    a, b = net.add_node(), net.add_node()
    b.ban(net.host(a), "testing inbound refusals")
    with pytest.raises(HandshakeError):
        net.connect(a, b)
    assert b.counters["refused.banned"] == 1 and b.peers == []


class Raw(protocol.Protocol):
    """A client that speaks bytes, not the protocol."""

    received = b""
    lost = False

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: object = None) -> None:
        self.lost = True


def test_an_endpoint_takes_any_protocol(net: MemoryNetwork) -> None:
    b = net.add_node(settings=Settings(handshake_timeout=5.0))
    rude, silent = Raw(), Raw()
    for raw in (rude, silent):
        net.result(connectProtocol(net.endpoint(b), raw))
    assert rude.transport.getHost().host.startswith("10.255.")  # type: ignore[union-attr]
    rude.transport.write(framing.frame(wire.Request(1, "echo", b"hi")))  # type: ignore[union-attr]
    net.pump()
    hello, error = decode_frames(rude.received)
    assert isinstance(hello, wire.Hello) and hello.peer_id == b.peer_id
    assert isinstance(error, wire.Error)
    assert error.code == ErrorCode.UNEXPECTED_MESSAGE
    assert rude.lost and not silent.lost
    net.advance(5.0)
    [_, timed_out] = decode_frames(silent.received)
    assert timed_out == wire.Error(ErrorCode.HANDSHAKE_TIMEOUT, "handshake timed out")
    assert silent.lost


def test_a_client_service_redials_after_a_cut(net: MemoryNetwork) -> None:
    a = net.add_node()
    b = net.add_node(host=net.host(a))  # one host, two ports
    assert net.host(b) == net.host(a)
    keeper = ClientService(
        net.endpoint(b, source=a),
        a.dial_factory(b.peer_id),
        retryPolicy=lambda attempt: 2.0,  # the default one is random
        clock=net.clock,
    )
    keeper.startService()
    net.pump()
    assert [peer.peer_id for peer in a.peers] == [b.peer_id]
    net.cut(a, b)
    assert a.peers == []
    net.advance(2.0)
    [peer] = a.peers
    assert (peer.peer_id, peer.since) == (b.peer_id, 2.0)
    net.result(keeper.stopService())


def test_no_result_yet_is_an_assertion(net: MemoryNetwork) -> None:
    with pytest.raises(NoResult):
        net.result(defer.Deferred())


def test_stop_closes_everything_and_leaves_no_timer() -> None:
    net = MemoryNetwork()
    a = net.add_node()
    nodes: list[Node] = [net.add_node(handlers={"echo": _echo}) for _ in range(3)]
    for node in nodes:
        net.connect(a, node)
    a.request(nodes[0].peer_id, "echo", b"in flight")
    net.stop()
    assert all(node.peers == [] for node in [a, *nodes])
    assert net.clock.getDelayedCalls() == []


def test_stop_reports_a_timer_left_behind() -> None:
    net = MemoryNetwork()
    net.add_node()
    call = net.clock.callLater(1.0, lambda: None)
    with pytest.raises(AssertionError, match="timers left pending"):
        net.stop()
    assert not call.active()


def test_the_network_owns_the_clock(net: MemoryNetwork) -> None:
    with pytest.raises(TypeError, match="clock"):
        net.add_node(clock=net.clock)


# -- INode ------------------------------------------------------------------------


def test_the_nodes_of_a_network_provide_inode(net: MemoryNetwork) -> None:
    assert testing.INode is INode  # one interface, re-exported
    node = net.add_node()
    assert verifyObject(INode, node)
    net.connect(net.add_node(), node)  # and still once it has peers
    assert verifyObject(INode, node)


# -- add_node's options ------------------------------------------------------------


def test_add_node_names_the_options_a_node_takes(net: MemoryNetwork) -> None:
    """Every option its docstring names is a ``Node`` keyword argument the
    network does not own, and every such argument is named."""
    doc = MemoryNetwork.add_node.__doc__ or ""
    sentence = doc.split("``options`` are", 1)[1].split(".", 1)[0]
    named = set(re.findall(r"``(\w+)``", sentence))
    accepted = {
        name
        for name, parameter in inspect.signature(Node).parameters.items()
        if parameter.kind is parameter.KEYWORD_ONLY
    }
    owned = {"reactor", "clock"}
    assert named - {"allow_plaintext"} == accepted - {"handlers"}
    assert owned <= named  # as what the network provides
    node = net.add_node(
        settings=Settings(request_timeout=5.0),
        limits=ConnectionLimits(),
        policy=Policy(BanRegistry(net.clock)),
        gossip=GossipSettings(),
    )
    assert node.settings.request_timeout == 5.0 and node.settings.allow_plaintext
    with pytest.raises(TypeError, match="the network provides clock"):
        net.add_node(clock=net.clock)


# -- StubNode ---------------------------------------------------------------------

ALICE = Identity(bytes(range(32))).peer_id


def _answers(request: IncomingRequest) -> object:
    """Each payload names what to return."""
    return {
        b"none": None,
        b"bytes": b"raw",
        b"success": Success(b"ok"),
        b"empty": Success(),
        b"protocol": ProtocolData(b"data"),
    }[request.payload]


@pytest.mark.parametrize(
    "payload", [b"none", b"bytes", b"success", b"empty", b"protocol"]
)
def test_a_stub_node_answers_as_a_node_does(net: MemoryNetwork, payload: bytes) -> None:
    """The same handler, asked through a stub and over a network: the same
    answer, but for the request id."""
    stub = StubNode({"answer": _answers})
    stubbed = stub.result(stub.request_from(ALICE, "answer", payload))
    server = net.add_node(handlers={"answer": _answers})
    client = net.add_node()
    net.connect(client, server)
    networked = net.result(client.request(server.peer_id, "answer", payload))
    assert type(stubbed) is type(networked)
    assert stubbed.data == networked.data
    assert stubbed.request_id == 1


def test_a_stub_node_gives_the_handler_the_request_as_sent() -> None:
    seen: list[IncomingRequest] = []
    stub = StubNode()
    stub.register("see", seen.append)
    assert stub.protocols == ["see"]
    stub.result(stub.request_from(ALICE, "see", b"hi", metadata=b"route"))
    stub.result(stub.request_from(ALICE, "see", b"", metadata=b""))
    assert seen == [
        IncomingRequest(ALICE, "see", b"hi", b"route", 1),
        IncomingRequest(ALICE, "see", b"", b"", 2),
    ]
    assert stub.counters["requests.in.see"] == 2


def test_a_stub_node_refuses_as_a_node_does(
    logged: list[dict[str, object]],
) -> None:
    def broken(request: IncomingRequest) -> bytes:
        raise KeyError("a bug")

    def sold_out(request: IncomingRequest) -> bytes:
        raise RemoteError(1001, "sold out")

    stub = StubNode({"broken": broken, "sold": sold_out})
    stub.register("small", _answers, max_payload=4)
    stub.register("gone", _answers)
    stub.unregister("gone")
    for name, payload, code in [
        ("gone", b"none", ErrorCode.UNKNOWN_PROTOCOL),
        ("small", b"bytes", ErrorCode.PAYLOAD_TOO_LARGE),
        ("broken", b"", ErrorCode.HANDLER_ERROR),
        ("sold", b"", 1001),
    ]:
        with pytest.raises(RemoteError) as refused:
            stub.result(stub.request_from(ALICE, name, payload))
        assert refused.value.code == code, name
    assert stub.result(stub.request_from(ALICE, "small", b"none")).data is None
    assert any(event.get("log_failure") for event in logged)  # the traceback


def test_a_request_that_cannot_travel_is_a_value_error() -> None:
    stub = StubNode({"echo": _echo}, settings=Settings(max_frame=1024))
    with pytest.raises(ValueError):
        stub.request_from(ALICE, "x" * 256, b"")
    with pytest.raises(ValueError):
        stub.request_from(ALICE, "echo", bytes(1024))
    assert stub.counters["requests.in.echo"] == 0


def test_a_stub_nodes_answer_past_the_frame_limit_is_refused_as_on_a_node(
    net: MemoryNetwork,
) -> None:
    """The handler's answer cannot travel in one frame: PAYLOAD_TOO_LARGE,
    from the stub as from a node with the same frame limit."""
    settings = Settings(max_frame=4196)
    big = {"big": lambda request: bytes(5000)}
    stub = StubNode(big, settings=settings)
    with pytest.raises(RemoteError) as stubbed:
        stub.result(stub.request_from(ALICE, "big", b""))
    server = net.add_node(handlers=big, settings=settings)
    client = net.add_node()
    net.connect(client, server)
    with pytest.raises(RemoteError) as networked:
        net.result(client.request(server.peer_id, "big", b""))
    assert stubbed.value.code == networked.value.code == ErrorCode.PAYLOAD_TOO_LARGE
    assert str(stubbed.value) == str(networked.value)


def test_a_stub_nodes_handler_waits_on_its_clock() -> None:
    stub = StubNode()
    stub.register("slow", lambda request: deferLater(stub.clock, 5.0, lambda: b"done"))
    asked = stub.request_from(ALICE, "slow", b"")
    with pytest.raises(NoResult):
        stub.result(asked)
    stub.clock.advance(5.0)
    assert stub.result(asked).data == b"done"


# -- RecordingHandler ---------------------------------------------------------------


async def price_of(node: Node, shop: PeerId, item: bytes) -> int:
    """The code under test: asks a peer for a price."""
    reply = await node.request(shop, "price", item, metadata=b"eur")
    return int(reply.data or b"0")


def test_a_recording_handler_records_a_request_and_the_test_answers(
    net: MemoryNetwork,
) -> None:
    recorder = RecordingHandler()
    shop = net.add_node(handlers={"price": recorder})
    client = net.add_node()
    net.connect(client, shop)
    asking = defer.ensureDeferred(price_of(client, shop.peer_id, b"apple"))
    net.pump()
    asked = recorder.next()
    assert (asked.request.peer_id, asked.request.protocol) == (client.peer_id, "price")
    assert (asked.request.payload, asked.request.metadata) == (b"apple", b"eur")
    with pytest.raises(NoResult):  # nothing is answered until the test says
        net.result(asking)
    asked.answer(b"42")
    assert net.result(asking) == 42
    assert asked.answered and recorder.unanswered == [] and recorder.requests == [asked]
    with pytest.raises(AssertionError, match="already answered"):
        asked.answer(b"43")
    with pytest.raises(AssertionError, match="no request is waiting"):
        recorder.next()


def test_a_recorded_request_can_be_refused(net: MemoryNetwork) -> None:
    recorder = RecordingHandler()
    shop = net.add_node(handlers={"price": recorder})
    client = net.add_node()
    net.connect(client, shop)
    first = defer.ensureDeferred(price_of(client, shop.peer_id, b"apple"))
    second = defer.ensureDeferred(price_of(client, shop.peer_id, b"pear"))
    net.pump()
    assert [r.request.payload for r in recorder.unanswered] == [b"apple", b"pear"]
    recorder.next().fail(RemoteError(1001, "sold out"))
    recorder.next().answer(Success(b"7"))
    with pytest.raises(RemoteError) as refused:
        net.result(first)
    assert refused.value.code == 1001
    assert net.result(second) == 7


def test_a_recording_handler_works_on_a_stub_node_too() -> None:
    recorder = RecordingHandler(max_payload=8)
    stub = StubNode({"price": recorder, "stock": recorder})
    priced = stub.request_from(ALICE, "price", b"apple")
    stocked = stub.request_from(ALICE, "stock", b"apple")
    with pytest.raises(RemoteError) as large:  # its max_payload applies
        stub.result(stub.request_from(ALICE, "price", bytes(9)))
    assert large.value.code == ErrorCode.PAYLOAD_TOO_LARGE
    assert [r.request.protocol for r in recorder.requests] == ["price", "stock"]
    recorder.next().answer(ProtocolData(b"3"))
    recorder.next().answer()
    assert stub.result(priced) == wire.ProtocolResponse(1, b"3")
    assert stub.result(stocked) == wire.SuccessResponse(2, None)
