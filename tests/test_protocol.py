"""The Twisted adapter, on in-memory transports and a fake clock."""

from __future__ import annotations

from typing import Optional

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.test.iosim import IOPump, connectedServerAndClient

from blueprint_net import wire
from blueprint_net.errors import ErrorCode, HandshakeFailed
from blueprint_net.handshake import HandshakeState
from blueprint_net.identity import Identity, PeerId
from blueprint_net.protocol import HandshakeError, PeerFactory, PeerProtocol, Settings

from .helpers import RecordingHost, decode_frames

ADDRESS = IPv4Address("TCP", "127.0.0.1", 4000)


def started(
    identity: Identity, host: RecordingHost, clock: Clock, *, initiator: bool = False
) -> tuple[PeerProtocol, StringTransport]:
    settings = Settings(identity=identity, clock=clock, handshake_timeout=30)
    protocol = PeerFactory(host, settings, initiator=initiator).buildProtocol(ADDRESS)
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
        (wire.frame(wire.Request(1, "echo", b"hi")), ErrorCode.UNEXPECTED_MESSAGE),
        (wire.frame(wire.Ping(1)), ErrorCode.UNEXPECTED_MESSAGE),
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
    protocol.dataReceived(wire.frame(wire.Ping(2)))  # nothing more is read
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
    server = PeerFactory(
        host_b, Settings(identity=bob, clock=clock), initiator=False
    ).buildProtocol(ADDRESS)
    client = PeerFactory(
        host_a,
        Settings(identity=alice, clock=clock),
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
    # The handshake timeouts were cancelled; only the keepalives remain.
    keepalives = {client._keepalive, server._keepalive}
    assert {call.func for call in clock.getDelayedCalls()} == keepalives
    client.notify("echo", b"hi")
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
