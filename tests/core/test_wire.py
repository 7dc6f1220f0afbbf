"""The codec and the framer: strict, total, and linear."""

from __future__ import annotations

from typing import Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blueprint_net._core import fields, framing, wire
from blueprint_net._core.errors import ErrorCode, WireError
from blueprint_net._core.identity import Identity, PeerId
from tests.helpers import mutated

PEER = Identity(bytes(range(32))).peer_id
_u16 = st.integers(0, 2**16 - 1)
_u32 = st.integers(0, 2**32 - 1)
_u64 = st.integers(0, 2**64 - 1)
_blob = st.binary(max_size=300)
_name = st.text(min_size=1, max_size=60).filter(lambda s: len(s.encode()) <= 255)
_peer = st.binary(min_size=32, max_size=32).map(PeerId.from_public_key)

MESSAGES = st.one_of(
    st.builds(wire.Hello, _u16, st.binary(min_size=32, max_size=32), _peer),
    st.builds(
        wire.HandshakeRequest,
        st.binary(min_size=32, max_size=32),
        st.binary(min_size=64, max_size=64),
    ),
    st.builds(
        wire.HandshakeResponse,
        st.binary(min_size=32, max_size=32),
        st.binary(min_size=64, max_size=64),
    ),
    st.builds(wire.Error, _u16, st.text(max_size=80)),
    st.builds(wire.Ping, _u64),
    st.builds(wire.Pong, _u64),
    st.builds(wire.Request, _u32, _name, _blob, st.none() | _blob),
    st.builds(wire.SuccessResponse, _u32, st.none() | _blob),
    st.builds(wire.ProtocolResponse, _u32, _blob),
    st.builds(wire.ErrorResponse, _u32, _u16, st.text(max_size=80)),
)


@given(MESSAGES)
def test_every_message_round_trips(message: wire.Message) -> None:
    assert wire.decode(wire.encode(message)) == message


@given(st.binary(max_size=200))
@settings(max_examples=2000)
def test_random_bytes_raise_only_wire_errors(body: bytes) -> None:
    try:
        wire.decode(body)
    except WireError as error:
        assert isinstance(error.code, ErrorCode)


@given(MESSAGES, st.data())
@settings(max_examples=1000)
def test_mutated_messages_raise_only_wire_errors(
    message: wire.Message, data: st.DataObject
) -> None:
    body = mutated(wire.encode(message), data)
    try:
        decoded = wire.decode(body)
    except WireError:
        return
    # Whatever decodes must re-encode to exactly the same bytes: no two
    # encodings of one message exist.
    assert wire.encode(decoded) == bytes(body)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"", ErrorCode.TRUNCATED),
        (b"\xff", ErrorCode.UNKNOWN_MESSAGE_TYPE),
        (b"\x08\x00", ErrorCode.UNKNOWN_MESSAGE_TYPE),
        (b"\x07\x00", ErrorCode.TRUNCATED),
        (b"\x07\x00\x01\x02ab" + bytes(96), ErrorCode.OUT_OF_RANGE),
        (b"\x05\x00\x00", ErrorCode.TRUNCATED),
        (b"\x05" + bytes(9), ErrorCode.TRAILING_BYTES),
        (b"\x04\x00\x01\x00\x02\xff\xfe", ErrorCode.INVALID_UTF8),
        (b"\x10\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00", ErrorCode.OUT_OF_RANGE),
        (b"\x10\x00\x00\x00\x01\x01\xc3\x00\x00\x00\x00\x00", ErrorCode.INVALID_UTF8),
        (b"\x11\x00\x00\x00\x01\x02", ErrorCode.OUT_OF_RANGE),
        (b"\x11\x00\x00\x00\x01\x01\xff\xff\xff\xff", ErrorCode.TRUNCATED),
        (b"\x01\x00\x01" + bytes(32) + b"\x02ab", ErrorCode.OUT_OF_RANGE),
        (b"\x02" + bytes(95), ErrorCode.TRUNCATED),
    ],
)
def test_strict_decoder(body: bytes, code: ErrorCode) -> None:
    with pytest.raises(WireError) as caught:
        wire.decode(body)
    assert caught.value.code is code


def test_errors_say_what_is_wrong() -> None:
    with pytest.raises(WireError, match=r"\(102\): 1 bytes after the message$"):
        wire.decode(b"\x05" + bytes(9))
    with pytest.raises(TypeError, match=r"^not a message: 'text'$"):
        wire.encode("text")  # type: ignore[arg-type]


def test_encoder_refuses_what_cannot_travel() -> None:
    with pytest.raises(ValueError, match="protocol name"):
        wire.encode(wire.Request(1, "", b""))
    with pytest.raises(ValueError, match="protocol name"):
        wire.encode(wire.Request(1, "x" * 256, b""))
    with pytest.raises(ValueError, match="nonce"):
        wire.encode(wire.Hello(1, b"short", PEER))


def test_long_error_text_is_cut_on_a_character_boundary() -> None:
    message = wire.Error(1, "é" * 40000)
    decoded = wire.decode(wire.encode(message))
    assert isinstance(decoded, wire.Error)
    assert set(decoded.message) == {"é"}
    assert len(decoded.message.encode()) <= 65535


# -- framing ----------------------------------------------------------------

STREAM_MESSAGES: list[wire.Message] = [
    wire.Ping(1),
    wire.Request(1, "echo", b"x" * 1000, b"m"),
    wire.SuccessResponse(1, None),
    wire.Pong(2),
]
STREAM = b"".join(framing.frame(m) for m in STREAM_MESSAGES)


def _bodies() -> list[bytes]:
    return framing.FrameDecoder(wire.DEFAULT_MAX_FRAME).feed(STREAM)


def test_stream_split_at_every_offset() -> None:
    expected = _bodies()
    assert len(expected) == 4
    for cut in range(len(STREAM) + 1):
        framer = framing.FrameDecoder(wire.DEFAULT_MAX_FRAME)
        got = framer.feed(STREAM[:cut]) + framer.feed(STREAM[cut:])
        assert got == expected, cut
        assert framer.buffered == 0


def test_stream_fed_one_byte_at_a_time() -> None:
    framer = framing.FrameDecoder(wire.DEFAULT_MAX_FRAME)
    got = [body for i in range(len(STREAM)) for body in framer.feed(STREAM[i : i + 1])]
    assert got == _bodies()


@given(st.lists(st.integers(0, len(STREAM)), max_size=10))
def test_stream_split_anywhere(cuts: list[int]) -> None:
    framer = framing.FrameDecoder(wire.DEFAULT_MAX_FRAME)
    points = [0, *sorted(cuts), len(STREAM)]
    got = [b for a, z in zip(points, points[1:]) for b in framer.feed(STREAM[a:z])]
    assert got == _bodies()


def test_oversized_length_is_refused_before_the_body_arrives() -> None:
    framer = framing.FrameDecoder(max_length=100)
    with pytest.raises(WireError) as caught:
        framer.feed(b"\x00\x00\x00\x65")  # 101: nothing of the body sent yet
    assert caught.value.code is ErrorCode.FRAME_TOO_LARGE
    assert framer.buffered == 0


def test_oversized_length_split_across_reads() -> None:
    framer = framing.FrameDecoder(max_length=100)
    assert framer.feed(b"\xff\xff") == []
    with pytest.raises(WireError):
        framer.feed(b"\xff\xff")
    assert framer.buffered == 0


def test_frame_at_the_limit_is_accepted() -> None:
    framer = framing.FrameDecoder(max_length=100)
    assert framer.feed(b"\x00\x00\x00\x64" + bytes(100)) == [bytes(100)]


def test_large_frame_in_small_pieces() -> None:
    body = bytes(range(256)) * 4096  # 1 MiB
    data = len(body).to_bytes(4, "big") + body
    framer = framing.FrameDecoder(wire.DEFAULT_MAX_FRAME)
    got = []
    for offset in range(0, len(data), 1460):
        got += framer.feed(data[offset : offset + 1460])
    assert got == [body]


BIG_STREAM_MESSAGES: list[wire.Message] = [
    wire.Request(1, "echo", bytes(range(256)) * 160, None),  # 40 KiB
    wire.Ping(3),
    wire.ProtocolResponse(1, b"y" * 5000),
]
BIG_STREAM = b"".join(framing.frame(m) for m in BIG_STREAM_MESSAGES)


@given(st.lists(st.integers(0, len(BIG_STREAM)), max_size=60))
def test_large_frames_split_anywhere(cuts: list[int]) -> None:
    """Pieces of every size: tiny reads merged, a read ending past a frame."""
    framer = framing.FrameDecoder(wire.DEFAULT_MAX_FRAME)
    points = [0, *sorted(cuts), len(BIG_STREAM)]
    got = [b for a, z in zip(points, points[1:]) for b in framer.feed(BIG_STREAM[a:z])]
    assert [wire.decode(body) for body in got] == BIG_STREAM_MESSAGES
    assert all(type(body) is bytes for body in got)  # never a view of a read
    assert framer.buffered == 0


@given(MESSAGES)
def test_frame_chunks_are_the_frame(message: wire.Message) -> None:
    assert b"".join(framing.frame_chunks(message)) == framing.frame(message)


@given(
    st.integers(0, 2**32 - 1),
    st.text(min_size=1, max_size=20),
    st.sampled_from([b"", b"x" * 100, bytes(16 * 1024 - 40), bytes(70_000)]),
    st.one_of(st.none(), st.binary(max_size=40)),
)
def test_a_request_framed_from_its_fields_is_its_frame(
    request_id: int, protocol: str, payload: bytes, metadata: Optional[bytes]
) -> None:
    """``request_chunks`` (a request sent, framed without a ``Request``)
    gives ``frame_chunks``' chunks, small and large (on both sides of the
    one-join size) alike."""
    request = wire.Request(request_id, protocol, payload, metadata)
    chunks = framing.request_chunks(request_id, protocol, payload, metadata)
    assert chunks == framing.frame_chunks(request)
    assert b"".join(chunks) == framing.frame(request)


@pytest.mark.parametrize("size", [10, 16 * 1024 - 30, 70_000])
def test_a_request_past_the_limit_from_its_fields_is_refused(size: int) -> None:
    frame = framing.frame(wire.Request(1, "p", bytes(size)))
    limit = len(frame) - 5  # the body is one byte too long
    with pytest.raises(ValueError, match=f"exceeds the frame limit of {limit}"):
        framing.request_chunks(1, "p", bytes(size), None, limit)
    assert framing.request_chunks(1, "p", bytes(size), None, limit + 1)


def test_a_large_payload_is_its_own_chunk_not_a_copy() -> None:
    payload = bytes(range(256)) * 256  # 64 KiB
    request = wire.Request(7, "put", payload, b"meta")
    chunks = framing.frame_chunks(request)
    assert len(chunks) == 3 and chunks[1] is payload
    assert b"".join(chunks) == framing.frame(request)
    assert framing.frame_chunks(wire.Ping(1)) == [framing.frame(wire.Ping(1))]


def test_tiny_reads_keep_few_pieces() -> None:
    """A peer dribbling one byte per read must not cost an object per byte."""
    body = bytes(200_000)
    data = len(body).to_bytes(4, "big") + body
    framer = framing.FrameDecoder(wire.DEFAULT_MAX_FRAME)
    for offset in range(len(data) - 1):
        assert framer.feed(data[offset : offset + 1]) == []
    assert framer.buffered == len(body) - 1
    # One piece per 16 KiB, not one per byte.
    assert len(framer._partial) <= len(body) // (16 * 1024) + 2
    assert framer.feed(data[-1:]) == [body]


def _strict(body: bytes) -> object:
    """What the field-by-field reader alone makes of a body."""
    try:
        reader = fields.FieldReader(body)
        message = wire._DECODERS[body[0]](reader)
        reader.end()
    except WireError as error:
        return error.code
    return message


HOT = st.one_of(
    st.builds(wire.Request, _u32, _name, _blob, st.none() | _blob),
    st.builds(wire.SuccessResponse, _u32, st.none() | _blob),
    st.builds(wire.ProtocolResponse, _u32, _blob),
)


@given(HOT, st.data())
@settings(max_examples=2000)
def test_fast_paths_agree_with_the_strict_reader(
    message: wire.Message, data: st.DataObject
) -> None:
    """On valid and mutated bodies a fast path either declines or returns
    exactly what the reader returns; errors always come from the reader."""
    body = bytearray(wire.encode(message))
    for _ in range(data.draw(st.integers(0, 3))):
        kind = data.draw(st.sampled_from(["flip", "cut", "extend"]))
        if kind == "flip" and len(body) > 1:
            body[data.draw(st.integers(1, len(body) - 1))] ^= data.draw(
                st.integers(1, 255)
            )
        elif kind == "cut":
            del body[data.draw(st.integers(1, len(body))) :]
        else:
            body += data.draw(st.binary(min_size=1, max_size=8))
    raw = bytes(body)
    fast = wire._FAST[raw[0]](raw)
    assert fast is None or fast == _strict(raw)
    try:
        decoded: object = wire.decode(raw)
    except WireError as error:
        decoded = error.code
    assert decoded == _strict(raw)


def _capped() -> framing.FrameDecoder:
    framer = framing.FrameDecoder(wire.DEFAULT_MAX_FRAME)
    framer.cap(range(0x40, 0x50), 100)
    return framer


def test_a_capped_type_over_its_limit_is_refused_at_its_type_byte() -> None:
    """In the read with the prefix, or in the next one: either way no more
    than that read is held."""
    over = (101).to_bytes(4, "big")
    for reads in ([over + b"\x40"], [over, b"\x4f" + b"\x00" * 50]):
        framer = _capped()
        with pytest.raises(WireError) as caught:
            for data in reads:
                framer.feed(data)
        assert caught.value.code is ErrorCode.FRAME_TOO_LARGE
        assert "type 0x4" in str(caught.value) and "101 bytes" in str(caught.value)


def test_a_capped_type_is_refused_at_its_type_byte_however_its_prefix_is_split() -> (
    None
):
    """A prefix in two halves, or at the end of a read behind whole frames:
    refused in the read that brings the type byte, the frames before it
    handed out first."""
    over = (101).to_bytes(4, "big")
    whole = (3).to_bytes(4, "big") + b"\x01ab"
    for reads, handed in (
        ([over[:2], over[2:], b"\x40"], []),
        ([whole + over, b"\x41" + bytes(20)], [b"\x01ab"]),
        ([whole + over[:3], over[3:], b"\x42"], [b"\x01ab"]),
    ):
        framer = _capped()
        got: list[bytes] = []
        with pytest.raises(WireError) as caught:
            for data in reads[:-1]:
                got += framer.feed(data)
            assert framer.buffered == 4  # the prefix alone, held
            framer.feed(reads[-1])
        assert caught.value.code is ErrorCode.FRAME_TOO_LARGE
        assert got == handed


def test_a_capped_type_at_its_limit_and_other_types_over_it_pass() -> None:
    at_limit = (100).to_bytes(4, "big") + b"\x40" + b"\x00" * 99
    other = (5000).to_bytes(4, "big") + b"\x3f" + b"\x00" * 4999
    for reads in ([at_limit + other], [at_limit + other[:4], other[4:]]):
        framer = _capped()
        bodies = [body for data in reads for body in framer.feed(data)]
        assert [len(body) for body in bodies] == [100, 5000]
    framer = _capped()  # a late type byte outside the capped range
    assert framer.feed((5000).to_bytes(4, "big")) == []
    assert framer.buffered == 4  # the prefix, held until its type byte is in
    assert framer.feed(b"\x50" + b"\x00" * 4999) == [b"\x50" + b"\x00" * 4999]
    assert framer.feed(b"") == []


def test_a_trailing_length_field_that_disagrees_is_refused_whatever_precedes_it() -> (
    None
):
    """A Success whose metadata length field says 16 MiB over 65,792 bytes of
    metadata: malformed.  (The four bytes that end one byte earlier -- the
    request id's last, the flag, and two of the length -- would read 65,792,
    the true length: a reader that looked there would take it.)"""
    metadata = bytes(65792)
    body = bytes([wire.T_SUCCESS]) + (7 << 8).to_bytes(4, "big") + b"\x01"
    body += (0x01000000).to_bytes(4, "big") + metadata
    assert int.from_bytes(body[4:8], "big") == len(metadata)
    with pytest.raises(WireError):
        wire.decode(body)
    good = body[:6] + len(metadata).to_bytes(4, "big") + metadata
    assert wire.decode(good) == wire.SuccessResponse(7 << 8, metadata)


def test_a_request_whose_fields_could_be_misread_decodes_as_sent() -> None:
    """A one-byte payload of 0 and 65,534 bytes of metadata: read from the
    wrong offset, the fields of this valid request line up into another
    well-formed request (an empty payload), so only reading each field where
    it is can give the request back."""
    request = wire.Request(1, "p", b"\x00", bytes(65534))
    assert wire.decode(wire.encode(request)) == request
