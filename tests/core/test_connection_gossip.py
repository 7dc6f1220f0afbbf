"""The sans-IO Connection routes gossip frames (0x40-0x4F) once verified:
decoded as ``GossipReceived`` when the node has a router (a gossip frame
limit), refused as unknown types otherwise, and never mixed up with the
request path."""

from __future__ import annotations

import pytest

from blueprint_net._core import framing, gossip_wire, stream_wire, wire
from blueprint_net._core.connection import Connection
from blueprint_net._core.connection_events import (
    ConnectionFailed,
    GossipReceived,
    PeerVerified,
)
from blueprint_net._core.errors import ErrorCode
from blueprint_net._core.handshake_states import PeerProven
from blueprint_net._core.identity import Identity
from tests.core.test_handshake import _connections


def _verified(alice: Identity, bob: Identity) -> tuple[Connection, Connection]:
    a, b, response = _connections(alice, bob)
    assert a.receive_data(response) == [PeerProven(bob.peer_id)]
    assert a.accept() == [PeerVerified(bob.peer_id)]
    b.receive_data(a.data_to_send())
    return a, b


def test_gossip_frames_become_events_between_requests(
    alice: Identity, bob: Identity
) -> None:
    a, b = _verified(alice, bob)
    a.max_gossip_frame = 4096
    graft = gossip_wire.Graft("news")
    assert b.unsent == 0
    b.send_frame(gossip_wire.frame(graft))
    assert b.unsent == len(gossip_wire.frame(graft))  # counted as queued
    b.request("echo", b"hi")
    b.send_frame(gossip_wire.frame(gossip_wire.RecordsRequest(3)))
    sent = b.data_to_send()
    assert b.unsent == 0
    events = a.receive_data(sent)
    assert events == [
        GossipReceived(graft),
        wire.Request(0, "echo", b"hi"),
        GossipReceived(gossip_wire.RecordsRequest(3)),
    ]
    assert not a.closed


def test_gossip_frames_are_told_by_their_type_byte_not_by_an_exception(
    alice: Identity, bob: Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request decoder never sees a gossip frame: it used to refuse each
    one with ``UNKNOWN_MESSAGE_TYPE`` first, an exception per gossip hop."""
    a, b = _verified(alice, bob)
    a.max_gossip_frame = 4096
    seen: list[int] = []
    decode = wire.decode

    def spy(body: bytes) -> wire.Message:
        seen.append(body[0])
        return decode(body)

    monkeypatch.setattr(wire, "decode", spy)
    b.send_frame(gossip_wire.frame(gossip_wire.Graft("news")))
    b.request("echo", b"hi")
    events = a.receive_data(b.data_to_send())
    assert events == [
        GossipReceived(gossip_wire.Graft("news")),
        wire.Request(0, "echo", b"hi"),
    ]
    assert seen == [wire.T_REQUEST]


def test_without_a_router_gossip_is_an_unknown_type(
    alice: Identity, bob: Identity
) -> None:
    a, b = _verified(alice, bob)
    assert a.max_gossip_frame is None
    b.send_frame(gossip_wire.frame(gossip_wire.Graft("news")))
    [failed] = a.receive_data(b.data_to_send())
    assert isinstance(failed, ConnectionFailed)
    assert failed.error.code is ErrorCode.UNKNOWN_MESSAGE_TYPE
    assert failed.misbehaviour


def test_a_gossip_frame_over_its_limit_closes(alice: Identity, bob: Identity) -> None:
    a, b = _verified(alice, bob)
    a.max_gossip_frame = 100
    b.send_frame(gossip_wire.frame(gossip_wire.Graft("x" * 120)))
    [failed] = a.receive_data(b.data_to_send())
    assert isinstance(failed, ConnectionFailed)
    assert failed.error.code is ErrorCode.FRAME_TOO_LARGE and failed.misbehaviour
    assert a.closed


def test_malformed_and_reserved_gossip_frames_close(
    alice: Identity, bob: Identity
) -> None:
    for body, code in [
        (b"\x44\x00", ErrorCode.OUT_OF_RANGE),  # Graft with an empty topic
        (b"\x44\x05ab", ErrorCode.TRUNCATED),
        (b"\x4f", ErrorCode.UNKNOWN_MESSAGE_TYPE),  # reserved for gossip
        (b"\x50", ErrorCode.UNKNOWN_MESSAGE_TYPE),  # not gossip's
    ]:
        a, b = _verified(alice, bob)
        a.max_gossip_frame = 4096
        b.send_frame(len(body).to_bytes(4, "big") + body)
        [failed] = a.receive_data(b.data_to_send())
        assert isinstance(failed, ConnectionFailed), body
        assert failed.error.code is code, (body, failed.error)


def test_a_gossip_frame_declaring_16_mib_is_refused_at_its_type_byte(
    alice: Identity, bob: Identity
) -> None:
    """Only the length prefix and the type byte are read: nothing of the
    declared 16 MiB is waited for or buffered (requests may be that long)."""
    a, _ = _verified(alice, bob)
    a.max_gossip_frame = 4096
    header = (16 * 1024 * 1024).to_bytes(4, "big")
    assert a.receive_data(header) == []  # the type is not known yet
    [failed] = a.receive_data(bytes([gossip_wire.T_PUBLISH]) + b"\x00" * 100)
    assert isinstance(failed, ConnectionFailed)
    assert failed.error.code is ErrorCode.FRAME_TOO_LARGE and failed.misbehaviour
    assert "limit of 4096" in failed.error.message


def test_a_large_request_frame_is_not_held_to_the_gossip_limit(
    alice: Identity, bob: Identity
) -> None:
    a, b = _verified(alice, bob)
    a.max_gossip_frame = 4096
    b.request("echo", b"x" * 10_000)
    data = b.data_to_send()
    events = a.receive_data(data[:4]) + a.receive_data(data[4:])
    assert events == [wire.Request(0, "echo", b"x" * 10_000)]


def test_before_verified_gossip_and_stream_types_are_unknown_not_unexpected(
    alice: Identity, bob: Identity
) -> None:
    """Sections 5 and 9.1: before Verified only section 4's types are
    decoded, so a gossip or stream frame is UNKNOWN_MESSAGE_TYPE (100),
    even on a node with a router; a known message out of place is 200."""
    for frame, code in [
        (gossip_wire.frame(gossip_wire.Graft("news")), 100),
        (stream_wire.frame(stream_wire.AckFrame(b"s", 1)), 100),
        (framing.frame(wire.Ping(1)), 200),
    ]:
        a, _b, _response = _connections(alice, bob)
        a.max_gossip_frame = 4096
        a.streams = True
        [failed] = a.receive_data(frame)
        assert isinstance(failed, ConnectionFailed)
        assert failed.error.code == code and failed.misbehaviour
