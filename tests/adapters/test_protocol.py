"""The Twisted adapter, on in-memory transports and a fake clock."""

from __future__ import annotations

import gc
import weakref
from typing import Any, Optional

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.test.iosim import IOPump, connectedServerAndClient

from blueprint_net._adapters.factory import PeerFactory
from blueprint_net._adapters.keepalive import Keepalive
from blueprint_net._adapters.protocol import PeerProtocol
from blueprint_net._core import framing, wire
from blueprint_net._core.connection import Connection
from blueprint_net._core.errors import (
    ErrorCode,
    HandshakeError,
    HandshakeFailed,
    PeerLost,
    ProtocolError,
    RequestTimeout,
    SendQueueFull,
)
from blueprint_net._core.handshake_states import HandshakeState
from blueprint_net._core.identity import Identity, PeerId
from blueprint_net._policy.settings import Settings
from tests.helpers import PLAINTEXT, RecordingHost, decode_frames

ADDRESS = IPv4Address("TCP", "127.0.0.1", 4000)


def started(
    identity: Identity, host: RecordingHost, clock: Clock, *, initiator: bool = False
) -> tuple[PeerProtocol, StringTransport]:
    settings = Settings(
        handshake_timeout=30, first_frame_timeout=30, allow_plaintext=True
    )
    factory = PeerFactory(host, identity, clock, settings, initiator=initiator)
    protocol = factory.buildProtocol(ADDRESS)
    transport = StringTransport(peerAddress=ADDRESS)
    protocol.makeConnection(transport)
    return protocol, transport


def _errors(protocol: PeerProtocol) -> list[HandshakeError]:
    errors: list[HandshakeError] = []

    def record(failure: Failure) -> None:
        assert isinstance(failure.value, HandshakeError)
        errors.append(failure.value)

    protocol.verified.addErrback(record)
    return errors


def test_hello_is_sent_at_once(alice: Identity) -> None:
    _protocol, transport = started(alice, RecordingHost(), Clock())
    [hello] = decode_frames(transport.value())
    assert isinstance(hello, wire.Hello) and hello.peer_id == alice.peer_id


@pytest.mark.parametrize("initiator", [True, False])
def test_handshake_timeout_on_a_fake_clock(alice: Identity, initiator: bool) -> None:
    clock, host = Clock(), RecordingHost()
    protocol, transport = started(alice, host, clock, initiator=initiator)
    errors = _errors(protocol)
    transport.clear()
    clock.advance(29.9)
    assert not transport.disconnecting
    clock.advance(0.1)
    [error] = decode_frames(transport.value())
    assert error == wire.Error(ErrorCode.HANDSHAKE_TIMEOUT, "handshake timed out")
    assert transport.disconnecting
    assert protocol.connection.state is HandshakeState.FAILED
    assert [e.error.code for e in host.failed] == [ErrorCode.HANDSHAKE_TIMEOUT]
    assert not host.failed[0].misbehaviour
    protocol.connectionLost()
    assert protocol.verified.called
    if initiator:  # only a dialer's verified Deferred carries the error
        assert isinstance(errors[0], HandshakeError)
    assert clock.getDelayedCalls() == []


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (framing.frame(wire.Request(1, "echo", b"hi")), ErrorCode.UNEXPECTED_MESSAGE),
        (framing.frame(wire.Ping(1)), ErrorCode.UNEXPECTED_MESSAGE),
        (b"\x00\x00\x00\x01\xee", ErrorCode.UNKNOWN_MESSAGE_TYPE),
        (b"\x00\x00\x10\x01", ErrorCode.FRAME_TOO_LARGE),  # 4097 before Verified
        (b"\xff\xff\xff\xff", ErrorCode.FRAME_TOO_LARGE),
    ],
)
def test_garbage_before_verified_is_refused_and_closed(
    alice: Identity, data: bytes, code: ErrorCode
) -> None:
    clock, host = Clock(), RecordingHost()
    protocol, transport = started(alice, host, clock)
    transport.clear()
    protocol.dataReceived(data)
    [error] = decode_frames(transport.value())
    assert isinstance(error, wire.Error) and error.code == code
    assert transport.disconnecting
    assert host.failed[0].misbehaviour
    assert host.requests == []
    assert clock.getDelayedCalls() == []
    protocol.dataReceived(framing.frame(wire.Ping(2)))  # nothing more is read
    assert decode_frames(transport.value()) == [error]


def _pair(
    alice: Identity,
    bob: Identity,
    host_a: RecordingHost,
    host_b: RecordingHost,
    clock: Clock,
    expected: Optional[PeerId] = None,
) -> tuple[PeerProtocol, PeerProtocol, IOPump]:
    """Alice dials Bob (expecting ``expected``, by default Bob) in memory."""
    server = PeerFactory(host_b, bob, clock, PLAINTEXT, initiator=False).buildProtocol(
        ADDRESS
    )
    client = PeerFactory(
        host_a,
        alice,
        clock,
        PLAINTEXT,
        initiator=True,
        expected_peer=expected or bob.peer_id,
    ).buildProtocol(ADDRESS)
    return connectedServerAndClient(lambda: server, lambda: client)


def test_handshake_in_memory_then_messages(alice: Identity, bob: Identity) -> None:
    clock, host_a, host_b = Clock(), RecordingHost(), RecordingHost()
    client, server, pump = _pair(alice, bob, host_a, host_b, clock)
    pump.flush()
    assert client.peer_id == bob.peer_id and server.peer_id == alice.peer_id
    assert client.verified.result == bob.peer_id
    assert host_a.verified == [client] and host_b.verified == [server]
    assert clock.getDelayedCalls() == []  # the handshake timeouts were cancelled
    client.sender.notify("echo", b"hi")
    pump.flush()
    assert host_b.requests == [wire.Request(0, "echo", b"hi")]


def test_authorize_refusal_reaches_the_peer(alice: Identity, bob: Identity) -> None:
    clock = Clock()
    host_a = RecordingHost()
    host_b = RecordingHost(refuse=HandshakeFailed(ErrorCode.BANNED, "banned"))
    client, _server, pump = _pair(alice, bob, host_a, host_b, clock)
    errors = _errors(client)
    pump.flush()
    assert host_b.verified == [] and host_a.verified == []
    assert [e.error.code for e in host_a.failed] == [ErrorCode.BANNED]
    assert host_a.failed[0].error.remote
    assert isinstance(errors[0], HandshakeError)


def test_a_refused_peer_gets_the_refusals_code(alice: Identity, bob: Identity) -> None:
    clock, host_a = Clock(), RecordingHost()
    refusal = HandshakeFailed(ErrorCode.CONNECTION_LIMIT, "too many")
    client, server, pump = _pair(alice, bob, host_a, RecordingHost(refusal), clock)
    errors = _errors(client)
    pump.flush()
    [failed] = host_a.failed
    assert failed.error.code is ErrorCode.CONNECTION_LIMIT and failed.error.remote
    assert failed.error.message == "peer said: too many"
    assert server.connection.state is HandshakeState.FAILED
    assert isinstance(errors[0], HandshakeError)
    assert clock.getDelayedCalls() == []


class _OrderHost(RecordingHost):
    """Writes down, in one list, when it decides and what it is told."""

    def __init__(self, refuse: Optional[HandshakeFailed] = None) -> None:
        super().__init__(refuse)
        self.log: list[str] = []

    def authorize(self, peer_id: PeerId) -> None:
        self.log.append("authorize")
        super().authorize(peer_id)

    def peer_verified(self, protocol: PeerProtocol) -> None:
        self.log.append("verified")
        super().peer_verified(protocol)

    def request_received(self, protocol: PeerProtocol, request: wire.Request) -> None:
        self.log.append(request.protocol)
        super().request_received(protocol, request)


def _proof_with_frames_after(
    alice: Identity, bob: Identity, host: _OrderHost
) -> StringTransport:
    """Alice dials a sans-IO Bob whose response arrives in one read with a
    Ping and a request; returns Alice's transport, holding what she sent
    after the read."""
    protocol, transport = started(alice, host, Clock(), initiator=True)
    server = Connection(bob, initiator=False)
    server.initiate()
    assert server.receive_data(transport.value()) == []  # Alice's Hello
    transport.clear()
    protocol.dataReceived(server.data_to_send())  # Bob's Hello: she proves
    assert len(server.receive_data(transport.value())) == 1  # PeerProven
    transport.clear()
    server.accept()
    server.send(wire.Ping(5))
    server.request("first", b"")
    protocol.dataReceived(server.data_to_send())
    return transport


def test_frames_after_the_proof_are_handled_after_the_decision(
    alice: Identity, bob: Identity
) -> None:
    host = _OrderHost()
    transport = _proof_with_frames_after(alice, bob, host)
    assert host.log == ["authorize", "verified", "first"]
    assert decode_frames(transport.value()) == [wire.Pong(5)]


def test_frames_after_a_refused_proof_are_dropped(
    alice: Identity, bob: Identity
) -> None:
    host = _OrderHost(refuse=HandshakeFailed(ErrorCode.BANNED, "banned"))
    transport = _proof_with_frames_after(alice, bob, host)
    assert host.log == ["authorize"]
    assert decode_frames(transport.value()) == [wire.Error(ErrorCode.BANNED, "banned")]
    assert transport.disconnecting


def test_unexpected_peer_over_iosim(
    alice: Identity, bob: Identity, carol: Identity
) -> None:
    clock, host_a = Clock(), RecordingHost()
    # Alice dials expecting Bob, but Carol answers.
    client, _, pump = _pair(
        alice, carol, host_a, RecordingHost(), clock, expected=bob.peer_id
    )
    errors = _errors(client)
    pump.flush()
    assert [e.error.code for e in host_a.failed] == [ErrorCode.UNEXPECTED_PEER]
    assert isinstance(errors[0], HandshakeError)
    assert clock.getDelayedCalls() == []


# -- requests, keepalive and backpressure on the adapter ------------------


def _verified_pair(
    alice: Identity, bob: Identity, clock: Clock, **settings: Any
) -> tuple[PeerProtocol, PeerProtocol, IOPump, RecordingHost]:
    """Alice dialed Bob and both are verified; Bob's host records requests."""
    host_b = RecordingHost()
    server = PeerFactory(
        host_b, bob, clock, Settings(**settings, allow_plaintext=True), initiator=False
    ).buildProtocol(ADDRESS)
    client = PeerFactory(
        RecordingHost(),
        alice,
        clock,
        Settings(**settings, allow_plaintext=True),
        initiator=True,
        expected_peer=bob.peer_id,
    ).buildProtocol(ADDRESS)
    _, _, pump = connectedServerAndClient(lambda: server, lambda: client)
    pump.flush()
    assert client.connection.verified and server.connection.verified
    return client, server, pump, host_b


def _outcome(deferred: Deferred[Any]) -> object:
    results: list[object] = []
    deferred.addBoth(results.append)
    assert len(results) == 1, "the Deferred has not fired"
    result = results[0]
    return result.value if isinstance(result, Failure) else result


def test_responses_reach_their_requests_in_any_order(
    alice: Identity, bob: Identity
) -> None:
    clock = Clock()
    client, server, pump, host_b = _verified_pair(alice, bob, clock)
    first = client.sender.request("slow", b"1")
    second = client.sender.request("fast", b"2", b"meta")
    pump.flush()
    one, two = host_b.requests
    assert (two.protocol, two.payload, two.metadata) == ("fast", b"2", b"meta")
    server.respond(wire.ProtocolResponse(two.request_id, b"fast done"))
    pump.flush()
    assert _outcome(second) == wire.ProtocolResponse(two.request_id, b"fast done")
    assert not first.called  # the slow one does not hold up the fast one
    server.respond(wire.SuccessResponse(one.request_id))
    pump.flush()
    assert _outcome(first) == wire.SuccessResponse(one.request_id)
    # Answered once only: a second response for the same id is not sent.
    server.respond(wire.SuccessResponse(one.request_id))
    assert not server.transport.getOutBuffer()  # type: ignore[union-attr]


def test_request_timeout_on_a_fake_clock_and_late_response(
    alice: Identity, bob: Identity
) -> None:
    clock = Clock()
    client, server, pump, host_b = _verified_pair(
        alice, bob, clock, request_timeout=5.0
    )
    waiting = client.sender.request("echo", b"x")
    pump.flush()
    clock.advance(4.9)
    assert not waiting.called
    clock.advance(0.1)
    assert isinstance(_outcome(waiting), RequestTimeout)
    # The response that arrives after the timeout is dropped quietly.
    server.respond(wire.SuccessResponse(host_b.requests[0].request_id))
    pump.flush()
    assert client.connection.requests.pending == {}
    assert client.connection.verified and not client.connection.closed


def test_connection_lost_fails_pending_requests_and_leaves_nothing(
    alice: Identity, bob: Identity
) -> None:
    clock = Clock()
    client, _server, pump, _ = _verified_pair(alice, bob, clock)
    pending = [client.sender.request("echo", b"x") for _ in range(3)]
    pump.flush()
    client.transport.loseConnection()  # type: ignore[union-attr]
    pump.flush()
    assert all(isinstance(_outcome(d), PeerLost) for d in pending)
    assert client.connection.requests.pending == {}
    assert len(client.connection.deadlines) == 0
    assert clock.getDelayedCalls() == []  # timeouts and keepalives gone


def test_a_closed_connection_refuses_to_send_with_peer_lost(
    alice: Identity, bob: Identity
) -> None:
    clock = Clock()
    client, _server, pump, _ = _verified_pair(alice, bob, clock)
    client.close(ProtocolError(ErrorCode.GOING_AWAY, "bye"))  # closed, not lost
    outcome = _outcome(client.sender.request("echo", b"x"))
    assert isinstance(outcome, PeerLost)
    assert client.connection.requests.pending == {}  # nothing left to errback
    with pytest.raises(PeerLost):
        client.sender.notify("echo", b"x")
    with pytest.raises(PeerLost):
        client.sender.send_frame(framing.frame(wire.Request(0, "echo", b"x")))
    pump.flush()
    assert client.connection.requests.pending == {}


def test_closing_twice_counts_one_failure(alice: Identity, bob: Identity) -> None:
    clock = Clock()
    host = RecordingHost()
    client, _server, pump = _pair(alice, bob, host, RecordingHost(), clock)
    pump.flush()
    first = ProtocolError(ErrorCode.GOING_AWAY, "bye")
    assert client.close(first) is True
    assert client.close(HandshakeFailed(ErrorCode.BANNED, "banned")) is False
    assert [event.error for event in host.failed] == [first]
    assert client._failure is first


def test_oversized_request_fails_without_sending(
    alice: Identity, bob: Identity
) -> None:
    clock = Clock()
    client, _server, _pump, _ = _verified_pair(alice, bob, clock, max_frame=1000)
    outcome = _outcome(client.sender.request("echo", bytes(2000)))
    assert isinstance(outcome, ValueError)
    assert client.connection.requests.pending == {}
    assert len(client.connection.deadlines) == 0


def test_keepalive_pings_a_quiet_peer_and_keeps_a_live_one(
    alice: Identity, bob: Identity
) -> None:
    clock = Clock()
    client, server, pump, _ = _verified_pair(alice, bob, clock)
    assert client.liveness.check(5.0, 10.0) == 10.0  # heard at 0: look at 10
    for round_ in range(5):
        now = 10.0 * (round_ + 1)
        clock.advance(now - clock.seconds())
        assert client.liveness.check(now, 10.0) == now + 10.0  # quiet: ping
        assert client.liveness.pinged_at == now
        pump.flush()  # the Pong comes back, at the same instant
        assert client.liveness.check(now, 10.0) == now + 10.0  # answered
        assert client.liveness.pinged_at is None
    assert client.connection.verified and not client.connection.closed
    assert server.connection.verified and not server.connection.closed


def test_keepalive_drops_a_silent_peer(alice: Identity, bob: Identity) -> None:
    clock, host = Clock(), RecordingHost()
    client, server, pump, _ = _verified_pair(alice, bob, clock)
    pending = client.sender.request("echo", b"x")
    pump.flush()
    # The server goes silent: nothing it writes reaches the client any more.
    server.transport.write = lambda data: None  # type: ignore[method-assign,union-attr]
    client.host = host
    assert client.liveness.check(9.5, 10.0) == 10.0  # heard recently
    assert client.liveness.check(10.0, 10.0) == 20.0  # quiet: ping
    pump.flush()
    assert client.liveness.check(19.5, 10.0) == 20.0
    assert not client.connection.closed
    assert client.liveness.check(20.0, 10.0) is None  # an interval unanswered
    assert client.connection.closed
    for _ in range(3):  # closed, not yet lost: the sweep may still reach it
        assert client.liveness.check(30.0, 10.0) is None  # no second report
    [failed] = host.failed
    assert failed.error.code is ErrorCode.IDLE_TIMEOUT and not failed.misbehaviour
    pump.flush()
    assert isinstance(_outcome(pending), PeerLost)


def test_keepalive_times_are_one_interval_of_silence_each(
    alice: Identity, bob: Identity
) -> None:
    """docs/protocol.md section 7: a peer silent for one whole interval is
    pinged then, not at the next sweep; silent one more interval after the
    ping, it is closed then."""
    clock = Clock()
    clock.advance(100.0)
    protocol, transport = _verified_on_string_transport(alice, bob, clock)
    keepalive = Keepalive(clock, 10.0)
    keepalive.watch(protocol.liveness)  # heard from at 100 (the handshake)
    clock.advance(5.0)
    protocol.dataReceived(framing.frame(wire.Pong(1)))  # any frame: heard at 105
    clock.advance(9.75)
    assert transport.value() == b""
    clock.advance(0.25)  # 115: one interval after the peer was last heard
    assert decode_frames(transport.value()) == [wire.Ping(115_000)]
    transport.clear()
    clock.advance(3.0)
    protocol.dataReceived(framing.frame(wire.Pong(115_000)))  # answered at 118
    clock.advance(9.75)
    assert transport.value() == b""
    clock.advance(0.25)  # 128: silent for an interval again
    assert decode_frames(transport.value()) == [wire.Ping(128_000)]
    transport.clear()
    clock.advance(9.75)
    assert not protocol.connection.closed and transport.value() == b""
    clock.advance(0.25)  # 138: one interval after the unanswered ping
    assert protocol.connection.closed
    assert decode_frames(transport.value()) == [
        wire.Error(int(ErrorCode.IDLE_TIMEOUT), "no keepalive answer")
    ]
    assert len(keepalive) == 0
    assert clock.getDelayedCalls() == []


def _verified_on_string_transport(
    alice: Identity, bob: Identity, clock: Clock, **settings: Any
) -> tuple[PeerProtocol, StringTransport]:
    """Bob's side, verified with Alice, on a StringTransport."""
    _client, protocol, _pump, _ = _verified_pair(alice, bob, clock, **settings)
    transport = StringTransport(peerAddress=ADDRESS)
    protocol.transport = transport
    transport.registerProducer(protocol.outbound, True)
    protocol.outbound.transport = transport
    return protocol, transport


def test_backpressure_queues_then_refuses_then_drains(
    alice: Identity, bob: Identity
) -> None:
    clock = Clock()
    protocol, transport = _verified_on_string_transport(
        alice, bob, clock, max_send_queue=10_000
    )
    protocol.outbound.pauseProducing()  # the transport's buffer is full
    sent = [protocol.sender.request("echo", bytes(3000)) for _ in range(3)]
    assert transport.value() == b""  # nothing more goes to the transport
    assert 9000 < protocol.queued <= 10_000  # never past the bound
    protocol.outbound.check_invariants()
    refused = protocol.sender.request("echo", bytes(3000))
    assert isinstance(_outcome(refused), SendQueueFull)
    with pytest.raises(SendQueueFull):
        protocol.sender.notify("echo", bytes(3000))
    assert not any(d.called for d in sent)
    protocol.outbound.resumeProducing()  # the peer read again
    assert protocol.queued == 0
    protocol.outbound.check_invariants()
    assert len(decode_frames(transport.value())) == 3
    protocol.sender.request("echo", b"ok")  # accepted again
    for deferred in sent:
        deferred.addErrback(lambda failure: None)


def test_requests_sent_during_a_read_go_out_in_its_one_write(
    alice: Identity, bob: Identity
) -> None:
    """Requests sent from the callbacks of a read's responses are held for
    the read's one write, as its answers are; outside a read, each goes to
    the transport at once."""
    protocol, transport = _verified_on_string_transport(alice, bob, Clock())
    writes: list[bytes] = []

    def write(data: bytes) -> None:
        writes.append(data)
        StringTransport.write(transport, data)

    transport.write = write  # type: ignore[method-assign]
    transport.writeSequence = lambda data: write(b"".join(data))  # type: ignore[method-assign]
    first = protocol.sender.request("echo", b"1")
    second = protocol.sender.request("echo", b"2")
    assert len(writes) == 2  # not in a read: at once
    later: list[Deferred[wire.Reply]] = []

    def send(_: object, payload: bytes) -> None:
        later.append(protocol.sender.request("echo", payload))

    first.addCallback(send, b"3")
    second.addCallback(send, b"4")
    one, two = sorted(protocol.connection.requests.pending)
    protocol.dataReceived(
        framing.frame(wire.SuccessResponse(one))
        + framing.frame(wire.SuccessResponse(two))
    )
    assert len(later) == 2 and len(writes) == 3
    assert [r.payload for r in decode_frames(writes[2])] == [b"3", b"4"]  # type: ignore[union-attr]
    for deferred in later:
        deferred.addErrback(lambda failure: None)


def test_what_a_read_holds_for_a_reading_peer_is_not_refused(
    alice: Identity, bob: Identity
) -> None:
    """Requests and answers held for a read's one write, the peer reading
    (the transport not paused), do not count as waiting for it: none is
    refused for a send queue they are not in, as none was when each was
    written at once.  (Paused, they count: the tests above and below.)"""
    protocol, transport = _verified_on_string_transport(
        alice, bob, Clock(), max_send_queue=1000
    )
    first = protocol.sender.request("echo", b"1")
    later: list[Deferred[wire.Reply]] = []

    def send(_: object) -> None:
        later.extend(protocol.sender.request("echo", bytes(400)) for _ in range(3))

    first.addCallback(send)
    (one,) = protocol.connection.requests.pending
    answers = [wire.ProtocolResponse(i, bytes(600)) for i in (1, 2)]

    class Answering(RecordingHost):
        def request_received(
            self, protocol: PeerProtocol, request: wire.Request
        ) -> None:
            protocol.respond(answers[request.request_id - 1])

    protocol.host = Answering()
    transport.clear()
    protocol.dataReceived(
        framing.frame(wire.SuccessResponse(one))
        + b"".join(framing.frame(wire.Request(i, "echo", b"")) for i in (1, 2))
    )
    assert len(later) == 3 and not any(d.called for d in later)  # none refused
    sent = decode_frames(transport.value())
    assert [type(m) for m in sent] == [wire.Request] * 3 + [wire.ProtocolResponse] * 2
    assert sent[3:] == answers  # not RATE_LIMITED
    assert protocol.memory.counters["memory.refused.response"] == 0
    for deferred in later:
        deferred.addErrback(lambda failure: None)


def test_what_a_read_held_goes_out_even_if_an_error_escapes_it(
    alice: Identity, bob: Identity
) -> None:
    """An error escaping a read's handling (a host's bug) still sends the
    answers given before it, and what was held is not left behind."""
    protocol, transport = _verified_on_string_transport(alice, bob, Clock())

    class Failing(RecordingHost):
        def request_received(
            self, protocol: PeerProtocol, request: wire.Request
        ) -> None:
            protocol.respond(wire.SuccessResponse(request.request_id))
            raise RuntimeError("a bug")

    protocol.host = Failing()
    transport.clear()
    with pytest.raises(RuntimeError, match="a bug"):
        protocol.dataReceived(framing.frame(wire.Request(1, "echo", b"")))
    assert decode_frames(transport.value()) == [wire.SuccessResponse(1)]
    assert protocol.connection.unsent == 0 and not protocol._receiving


def test_reading_stops_while_unread_responses_fill_the_queue(
    alice: Identity, bob: Identity
) -> None:
    clock = Clock()
    protocol, transport = _verified_on_string_transport(
        alice, bob, clock, max_send_queue=1000
    )
    protocol.outbound.pauseProducing()
    for request_id in (1, 2):
        protocol.dataReceived(framing.frame(wire.Request(request_id, "echo", b"")))
        protocol.respond(wire.ProtocolResponse(request_id, bytes(600)))
    assert transport.producerState == "paused"  # we stopped reading the peer
    protocol.outbound.resumeProducing()
    assert transport.producerState == "producing"


def test_a_small_answer_that_would_overfill_the_queue_is_refused(
    alice: Identity, bob: Identity
) -> None:
    """However small an answer is, while the queue holds unread ones it must
    fit under ``max_send_queue`` (its frame, counted once): else the peer
    gets a short RATE_LIMITED Error in its place."""
    clock = Clock()
    protocol, transport = _verified_on_string_transport(
        alice, bob, clock, max_send_queue=1000
    )
    protocol.outbound.pauseProducing()
    protocol.dataReceived(
        b"".join(framing.frame(wire.Request(i, "echo", b"")) for i in (1, 2))
    )
    protocol.respond(wire.ProtocolResponse(1, bytes(600)))
    overhead = len(framing.frame(wire.ProtocolResponse(2, b"")))
    past = 1000 - protocol.queued - overhead + 1  # one byte past the bound
    protocol.respond(wire.ProtocolResponse(2, bytes(past)))
    protocol.outbound.resumeProducing()
    first, second = decode_frames(transport.value())
    assert first == wire.ProtocolResponse(1, bytes(600))
    assert isinstance(second, wire.ErrorResponse)
    assert (second.request_id, second.code) == (2, ErrorCode.RATE_LIMITED)
    assert protocol.memory.counters["memory.refused.response"] == 1


def test_error_answers_given_during_a_read_count_against_the_queue(
    alice: Identity, bob: Identity
) -> None:
    """Answers given while a read is handled wait in the connection until
    its end; the RATE_LIMITED Error that replaces one that did not fit
    waits there too, and counts: the queue never passes its bound."""
    clock = Clock()
    protocol, _transport = _verified_on_string_transport(
        alice, bob, clock, max_send_queue=1000
    )
    first = wire.ProtocolResponse(1, bytes(600))
    overhead = len(framing.frame(wire.ProtocolResponse(3, b"")))
    # The third answer fills the queue to its bound if the Error before it
    # is not counted.
    fill = wire.ProtocolResponse(3, bytes(1000 - len(framing.frame(first)) - overhead))
    answers = {1: first, 2: wire.ProtocolResponse(2, bytes(600)), 3: fill}

    class Answering(RecordingHost):
        def request_received(
            self, protocol: PeerProtocol, request: wire.Request
        ) -> None:
            protocol.respond(answers[request.request_id])

    protocol.host = Answering()
    protocol.outbound.pauseProducing()
    protocol.dataReceived(
        b"".join(framing.frame(wire.Request(i, "echo", b"")) for i in (1, 2, 3))
    )
    assert protocol.queued <= 1000
    assert protocol.memory.counters["memory.refused.response"] == 2
    protocol.outbound.check_invariants()


def test_reading_stops_at_the_concurrent_request_limit(
    alice: Identity, bob: Identity
) -> None:
    clock = Clock()
    protocol, transport = _verified_on_string_transport(
        alice, bob, clock, max_concurrent_requests=3
    )
    protocol.dataReceived(
        b"".join(framing.frame(wire.Request(i, "slow", b"")) for i in (1, 2, 3))
    )
    assert transport.producerState == "paused"
    protocol.respond(wire.SuccessResponse(2))
    assert transport.producerState == "producing"


def test_one_timer_serves_every_timeout(alice: Identity, bob: Identity) -> None:
    clock = Clock()
    client, _server, pump, _ = _verified_pair(alice, bob, clock)
    long = client.sender.request("hang", b"", timeout=20.0)
    short = client.sender.request("hang", b"", timeout=5.0)  # moves the timer earlier
    pump.flush()
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(5.0)
    assert isinstance(_outcome(short), RequestTimeout)
    assert not long.called
    clock.advance(15.0)
    assert isinstance(_outcome(long), RequestTimeout)
    assert clock.getDelayedCalls() == []


def test_the_timer_wakes_again_for_the_next_deadline(
    alice: Identity, bob: Identity
) -> None:
    clock = Clock()
    client, _server, pump, _ = _verified_pair(alice, bob, clock)
    first = client.sender.request("hang", b"", timeout=5.0)
    second = client.sender.request("hang", b"", timeout=5.5)  # half a second later
    pump.flush()
    clock.advance(5.0)
    error = _outcome(first)
    assert isinstance(error, RequestTimeout)
    assert "request 1" in str(error)  # names the request
    assert not second.called
    clock.advance(0.5)
    error = _outcome(second)
    assert isinstance(error, RequestTimeout)
    assert "request 2" in str(error)
    assert clock.getDelayedCalls() == []


def test_the_timer_keeps_to_the_earliest_deadline_it_knows(
    alice: Identity, bob: Identity
) -> None:
    """A longer timeout after a shorter one leaves the timer where it is;
    once re-armed for the next deadline, a shorter one moves it again."""
    clock = Clock()
    client, _server, pump, _ = _verified_pair(alice, bob, clock)
    first = client.sender.request("hang", b"", timeout=20.0)
    second = client.sender.request("hang", b"", timeout=5.0)  # moves it earlier
    third = client.sender.request("hang", b"", timeout=10.0)  # leaves it
    pump.flush()
    [call] = clock.getDelayedCalls()
    assert call.getTime() == 5.0
    clock.advance(5.0)
    assert isinstance(_outcome(second), RequestTimeout)
    [call] = clock.getDelayedCalls()
    assert call.getTime() == 10.0  # re-armed for the third
    fourth = client.sender.request("hang", b"", timeout=1.0)  # moves it again
    [call] = clock.getDelayedCalls()
    assert call.getTime() == 6.0
    clock.advance(1.0)
    assert isinstance(_outcome(fourth), RequestTimeout)
    assert not first.called and not third.called
    clock.advance(14.0)
    assert isinstance(_outcome(third), RequestTimeout)
    assert isinstance(_outcome(first), RequestTimeout)


def test_closing_while_paused_unregisters_the_producer_first(
    alice: Identity, bob: Identity
) -> None:
    """Else the transport would wait on the paused producer and never close."""
    clock = Clock()
    protocol, transport = _verified_on_string_transport(alice, bob, clock)
    protocol.outbound.pauseProducing()
    protocol.sender.notify("echo", b"queued while paused")
    assert transport.value() == b""
    protocol.close(ProtocolError(ErrorCode.GOING_AWAY, "bye"))
    assert transport.producer is None and transport.disconnecting
    request, goodbye = decode_frames(transport.value())  # nothing was lost
    assert isinstance(request, wire.Request) and isinstance(goodbye, wire.Error)


def test_a_closed_connection_is_freed_by_reference_counting(alice: Identity) -> None:
    """Once closed, no part of a connection refers back to its protocol
    (the handshake timer, the send queue and the keepalive's liveness each
    let go of their callbacks), so it is freed at once, with the garbage
    collector off: left in cycles, a connection's ~60 objects were the
    cyclic collector's work, which cost the handshake rate ~5%."""
    host = RecordingHost()
    protocol, transport = started(alice, host, Clock())
    gone = weakref.ref(protocol)
    collecting = gc.isenabled()
    gc.disable()
    try:
        protocol.connectionLost(Failure(ConnectionDone()))
        host.opened.clear()
        del protocol, transport
        assert gone() is None
    finally:
        if collecting:
            gc.enable()
