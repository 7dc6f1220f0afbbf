"""The stream messages' codec: round trips, one encoding each, strict errors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blueprint_net._core import gossip_wire, wire
from blueprint_net._core import stream_wire as s
from blueprint_net._core.errors import ErrorCode, WireError
from tests.helpers import mutated

_id = st.binary(min_size=1, max_size=255)
_seq = st.integers(1, 2**64 - 1)

MESSAGES = st.one_of(
    st.builds(
        s.HelloFrame,
        st.integers(0, 2**64 - 1),
        st.integers(1, 2**32 - 1),
        st.integers(0, 2**16 - 1),
        st.integers(0, 2**64 - 1),
    ),
    st.builds(s.DataFrame, _id, _seq, st.binary(max_size=200)),
    st.builds(s.AckFrame, _id, _seq),
    st.builds(s.ResetFrame, _id, st.integers(0, 2**16 - 1), _seq, st.booleans()),
)


@given(MESSAGES)
def test_every_stream_message_round_trips(message: s.StreamMessage) -> None:
    body = s.encode(message)
    assert s.decode(body) == message
    frame = s.frame(message)
    assert frame[4:] == body and int.from_bytes(frame[:4], "big") == len(body)


@given(_id, _seq, st.binary(max_size=300))
def test_the_data_frame_fast_path_is_the_message_as_it_travels(
    stream: bytes, seq: int, payload: bytes
) -> None:
    prefix = s.stream_prefix(s.T_STREAM_DATA, stream)
    message = s.DataFrame(stream, seq, payload)
    assert s.data_frame(prefix, seq, payload) == s.frame(message)
    assert s.fast_data(s.encode(message)) == message


@given(MESSAGES, st.data())
@settings(max_examples=800)
def test_mutated_stream_messages_raise_only_wire_errors(
    message: s.StreamMessage, data: st.DataObject
) -> None:
    body = mutated(s.encode(message), data)
    try:
        decoded = s.decode(body)
    except WireError as error:
        assert 100 <= error.code < 200
        return
    assert s.encode(decoded) == body  # one encoding per message


@given(st.integers(0x50, 0x57), st.binary(max_size=80))
@settings(max_examples=1000)
def test_random_stream_bodies_raise_only_wire_errors(kind: int, rest: bytes) -> None:
    try:
        decoded = s.decode(bytes((kind,)) + rest)
    except WireError as error:
        assert 100 <= error.code < 200
        return
    assert s.encode(decoded) == bytes((kind,)) + rest


SEQ1 = (1).to_bytes(8, "big")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"", ErrorCode.TRUNCATED),
        (b"\x50" + bytes(13), ErrorCode.TRUNCATED),
        (b"\x50" + bytes(11) + b"\x01" + bytes(11), ErrorCode.TRAILING_BYTES),
        (b"\x50" + bytes(22), ErrorCode.OUT_OF_RANGE),  # window 0
        (b"\x51\x00" + SEQ1 + bytes(4), ErrorCode.OUT_OF_RANGE),  # empty id
        (b"\x51\x01x" + bytes(8) + bytes(4), ErrorCode.OUT_OF_RANGE),  # seq 0
        (b"\x51\x01x" + SEQ1 + b"\x00\x00\x00\x02h", ErrorCode.TRUNCATED),
        (b"\x51\x01x" + SEQ1 + b"\x00\x00\x00\x01hi", ErrorCode.TRAILING_BYTES),
        (b"\x51\x05x", ErrorCode.TRUNCATED),  # the id runs out
        (b"\x52\x01x" + bytes(8), ErrorCode.OUT_OF_RANGE),  # ack 0
        (b"\x52\x01x" + SEQ1[:7], ErrorCode.TRUNCATED),
        (b"\x52\x01x" + SEQ1 + b"\x00", ErrorCode.TRAILING_BYTES),
        (b"\x53\x00\x00\x01", ErrorCode.OUT_OF_RANGE),  # empty id
        (b"\x53\x01x\x00", ErrorCode.TRUNCATED),
        (b"\x53\x01x\x00\x01" + SEQ1 + b"\x00\x00", ErrorCode.TRAILING_BYTES),
        (b"\x53\x01x\x00\x01" + bytes(8) + b"\x00", ErrorCode.OUT_OF_RANGE),
        (b"\x53\x01x\x00\x01" + SEQ1 + b"\x02", ErrorCode.OUT_OF_RANGE),
        (b"\x54", ErrorCode.UNKNOWN_MESSAGE_TYPE),
        (b"\x05" + bytes(8), ErrorCode.UNKNOWN_MESSAGE_TYPE),  # a Ping
    ],
    ids=[
        "empty",
        "hello-short",
        "hello-trailing",
        "hello-window-0",
        "data-empty-id",
        "data-seq-0",
        "data-short-payload",
        "data-trailing",
        "data-short-id",
        "ack-0",
        "ack-short",
        "ack-trailing",
        "reset-empty-id",
        "reset-short",
        "reset-trailing",
        "reset-number-0",
        "reset-answer-flag-2",
        "reserved-type",
        "not-a-stream-type",
    ],
)
def test_strict_stream_decoder(body: bytes, code: ErrorCode) -> None:
    with pytest.raises(WireError) as caught:
        s.decode(body)
    assert caught.value.code is code


def test_the_errors_say_what_was_wrong() -> None:
    with pytest.raises(WireError) as caught:
        s.decode(b"\x51\x00" + SEQ1 + bytes(4))
    assert caught.value.message == "empty stream id"
    with pytest.raises(WireError) as caught:
        s.decode(b"\x51\x01x" + bytes(12))
    assert caught.value.message == "sequence number 0 (they start at 1)"
    with pytest.raises(WireError) as caught:
        s.decode(b"\x52\x01x" + bytes(8))
    assert caught.value.message == "acknowledgement 0 (they start at 1)"


def test_the_stream_types_collide_with_no_other_family() -> None:
    """0x50-0x57: not wire's (0x01-0x07, 0x10-0x13), not gossip's
    (0x40-0x4F); each message has its byte, and the other codecs refuse
    them as unknown."""
    ours = {s.T_STREAM_HELLO, s.T_STREAM_DATA, s.T_STREAM_ACK, s.T_STREAM_RESET}
    assert ours == {0x50, 0x51, 0x52, 0x53} and ours <= set(s.TYPES)
    assert set(s.TYPES) == set(range(0x50, 0x58))
    wire_types = {v for k, v in vars(wire).items() if k.startswith("T_")}
    gossip_types = set(range(gossip_wire.T_PUBLISH, gossip_wire.T_LAST + 1))
    assert not set(s.TYPES) & (wire_types | gossip_types)
    samples: list[s.StreamMessage] = [
        s.HelloFrame(1, 2, 3, 4),
        s.DataFrame(b"x", 1, b""),
        s.AckFrame(b"x", 1),
        s.ResetFrame(b"x", 2, 1),
    ]
    for kind, message in zip(sorted(ours), samples):
        body = s.encode(message)
        assert body[0] == kind
        for other in (wire.decode, gossip_wire.decode):
            with pytest.raises(WireError) as caught:
                other(body)
            assert caught.value.code is ErrorCode.UNKNOWN_MESSAGE_TYPE


def test_the_limits_of_each_field_travel_and_one_past_them_does_not() -> None:
    edge: list[s.StreamMessage] = [
        s.HelloFrame(2**64 - 1, 2**32 - 1, 2**16 - 1, 2**64 - 1),
        s.HelloFrame(0, 1, 0, 0),
        s.DataFrame(b"x" * 255, 2**64 - 1, b""),
        s.DataFrame(b"\x00", 1, b"p"),
        s.AckFrame(b"x" * 255, 2**64 - 1),
        s.ResetFrame(b"x", 2**16 - 1, 2**64 - 1, answer=True),
        s.ResetFrame(b"x", 0, 1),
    ]
    for message in edge:
        assert s.decode(s.encode(message)) == message
    unencodable: list[s.StreamMessage] = [
        s.DataFrame(b"", 1, b""),
        s.DataFrame(b"x" * 256, 1, b""),
        s.DataFrame(b"x", 0, b""),
        s.DataFrame(b"x", 2**64, b""),
        s.AckFrame(b"x", 0),
        s.ResetFrame(b"x", 2**16, 1),
        s.ResetFrame(b"x", 2, 0),
        s.ResetFrame(b"x", 2, 2**64),
        s.HelloFrame(2**64, 1, 0, 0),
        s.HelloFrame(0, 0, 0, 0),
        s.HelloFrame(0, 2**32, 0, 0),
        s.HelloFrame(0, 1, 2**16, 0),
        s.HelloFrame(0, 1, 0, 2**64),
    ]
    for message in unencodable:
        with pytest.raises(ValueError):
            s.encode(message)
    with pytest.raises(TypeError):
        s.encode(wire.Ping(1))  # type: ignore[arg-type]
