"""The durable-stream messages (types ``0x50``-``0x53``) and their codec.

Layer: core (sans-IO; imports nothing from Twisted).

``docs/protocol.md`` section 10 is the byte-level specification, with golden
vectors.  The codec is ``wire``'s: the same framing (u32 length, then a body
whose first byte is the type), the same field reader and the same
strictness: anything that is not exactly one well-formed stream message
raises :class:`~blueprint_net.errors.WireError` with a ``1xx`` code, never
another exception, and every message has one encoding.

Wire's types are ``0x01``-``0x07`` and ``0x10``-``0x13``, gossip's
``0x40``-``0x4F``; streams take ``0x50``-``0x57`` (``0x54``-``0x57``
reserved).  Like gossip, these are kept out of :data:`wire.Message`: a
connection that speaks streams hands every body whose type is in
:data:`TYPES` to :func:`decode` (the machine in ``streams`` does it itself,
with a fast path for :class:`DataFrame`).

The classes are named for the frames (``HelloFrame`` is section 10's
``StreamHello``, ``DataFrame`` its ``StreamData``, ``AckFrame`` its
``StreamAck``, ``ResetFrame`` its ``StreamReset``): ``StreamReset`` is the
application's exception (``blueprint_net.errors``), one name per idea.
"""

from __future__ import annotations

import enum
import struct
from typing import Any, Callable, Union

import attrs

from blueprint_net._core import wire
from blueprint_net._core.errors import ErrorCode, WireError
from blueprint_net._core.wire import FieldReader

T_STREAM_HELLO = 0x50
T_STREAM_DATA = 0x51
T_STREAM_ACK = 0x52
T_STREAM_RESET = 0x53
#: Every type byte that is the streams' (``0x54``-``0x57`` are reserved).
TYPES = range(0x50, 0x58)
#: A stream id is 1 to this many bytes.
MAX_STREAM_ID = 255

_U64 = struct.Struct("!Q")
_HELLO = struct.Struct("!BQIHQ")
_RESET = struct.Struct("!HQB")
_SEQ_LENGTH = struct.Struct("!QI")
_U32 = struct.Struct("!I")


class ResetCode(enum.IntEnum):
    """Why a stream was reset: the ``code`` of a :class:`ResetFrame`.

    Its own number space (not section 8's): a reset ends one stream, never
    the connection.  ``1000``-``65535`` are the applications'.
    """

    #: One end restarted (a new incarnation): the stream's state is lost.
    RESTARTED = 1
    #: The application reset the stream (the default of ``reset()``).
    CANCELLED = 2
    #: Never sent: the peer's first hello allows fewer streams than were
    #: queued for it, so the newest were dropped before any byte was sent.
    STREAM_LIMIT = 3
    #: The receiving node's application did not open the stream in time, or
    #: the peer's unclaimed messages passed their bound (what the node holds
    #: for streams nobody opened yet is bounded, so the sender is told).
    UNCLAIMED = 4


@attrs.frozen
class HelloFrame:
    """The first stream message on each connection, from each side."""

    #: Random, chosen once per process start: a new value means a restart.
    incarnation: int
    #: The most unacknowledged payload bytes the sender keeps for this peer
    #: (the receiver acknowledges at half of it): 1 to 2**32 - 1, since at 0
    #: every message would be acknowledged alone.
    window: int
    #: The most streams opened by this peer that the sender accepts; 0:
    #: none (the peer may still open its own).
    max_streams: int
    #: The highest ``number`` of the peer's resets the sender has taken (0:
    #: none), so the peer never sends one again whose answer was lost.
    resets: int


@attrs.define
class DataFrame:
    """Message ``seq`` (from 1) of ``stream``."""

    stream: bytes
    seq: int
    payload: bytes


@attrs.frozen
class AckFrame:
    """Every message of ``stream`` up to ``seq`` was delivered."""

    stream: bytes
    seq: int


@attrs.frozen
class ResetFrame:
    """The sender ended ``stream`` (both directions) for ``code``: its reset
    ``number`` (from 1, one count per peer).  With ``answer``, it answers
    the peer's reset ``number`` instead: the stream is ended here too."""

    stream: bytes
    code: int
    number: int
    answer: bool = False


StreamMessage = Union[HelloFrame, DataFrame, AckFrame, ResetFrame]
#: The same, for ``isinstance``.
STREAM_TYPES = (HelloFrame, DataFrame, AckFrame, ResetFrame)


# -- encoding ---------------------------------------------------------------


def stream_prefix(kind: int, stream: bytes) -> bytes:
    """The type byte and the stream id as they travel; ``ValueError`` for an
    id that cannot (the machine keeps one per stream for its data frames)."""
    if not 1 <= len(stream) <= MAX_STREAM_ID:
        raise ValueError(f"a stream id is 1 to {MAX_STREAM_ID} bytes")
    return bytes((kind, len(stream))) + stream


def data_frame(prefix: bytes, seq: int, payload: bytes) -> bytes:
    """A whole :class:`DataFrame` frame from its stream's ``prefix`` (see
    :func:`stream_prefix`): one join, the payload copied once."""
    length = len(payload)
    return b"".join(
        (
            _U32.pack(len(prefix) + 12 + length),
            prefix,
            _SEQ_LENGTH.pack(seq, length),
            payload,
        )
    )


def _check_u64(value: int, what: str, low: int = 0) -> None:
    if not low <= value < 2**64:
        raise ValueError(f"{what} is {low} to 2**64 - 1")


def _hello_parts(message: HelloFrame) -> list[bytes]:
    _check_u64(message.incarnation, "an incarnation")
    _check_u64(message.resets, "a reset count")
    if not (1 <= message.window < 2**32 and 0 <= message.max_streams < 2**16):
        raise ValueError("a window is 1 to 2**32 - 1 and a stream limit a u16")
    return [
        _HELLO.pack(
            T_STREAM_HELLO,
            message.incarnation,
            message.window,
            message.max_streams,
            message.resets,
        )
    ]


def _data_parts(message: DataFrame) -> list[bytes]:
    _check_u64(message.seq, "a sequence number", 1)
    return [
        stream_prefix(T_STREAM_DATA, message.stream),
        _SEQ_LENGTH.pack(message.seq, len(message.payload)),
        message.payload,
    ]


def _ack_parts(message: AckFrame) -> list[bytes]:
    _check_u64(message.seq, "an acknowledgement", 1)
    return [stream_prefix(T_STREAM_ACK, message.stream), _U64.pack(message.seq)]


def _reset_parts(message: ResetFrame) -> list[bytes]:
    if not 0 <= message.code < 2**16:
        raise ValueError("a reset code is a u16")
    _check_u64(message.number, "a reset number", 1)
    return [
        stream_prefix(T_STREAM_RESET, message.stream),
        _RESET.pack(message.code, message.number, bool(message.answer)),
    ]


ENCODERS: dict[type, Callable[[Any], list[bytes]]] = {
    HelloFrame: _hello_parts,
    DataFrame: _data_parts,
    AckFrame: _ack_parts,
    ResetFrame: _reset_parts,
}


def encode(message: StreamMessage) -> bytes:
    """The body of a frame; ``ValueError`` if unencodable."""
    encoder = ENCODERS.get(type(message))
    if encoder is None:
        raise TypeError(f"not a stream message: {message!r}")
    return b"".join(encoder(message))


def frame(message: StreamMessage) -> bytes:
    """The message as it travels."""
    return wire.frame_body(encode(message))


# -- decoding ---------------------------------------------------------------


def _stream_id(r: FieldReader) -> bytes:
    size = r.u8()
    if size == 0:
        raise WireError(ErrorCode.OUT_OF_RANGE, "empty stream id")
    return r.take(size)


def _positive(value: int, what: str) -> int:
    if value == 0:
        raise WireError(ErrorCode.OUT_OF_RANGE, f"{what} 0 (they start at 1)")
    return value


def _hello(r: FieldReader) -> HelloFrame:
    hello = HelloFrame(r.u64(), r.u32(), r.u16(), r.u64())
    if hello.window == 0:
        raise WireError(ErrorCode.OUT_OF_RANGE, "window 0 (at least 1 byte)")
    return hello


def _data(r: FieldReader) -> DataFrame:
    stream = _stream_id(r)
    seq = _positive(r.u64(), "sequence number")
    return DataFrame(stream, seq, r.bytes32())


def _ack(r: FieldReader) -> AckFrame:
    stream = _stream_id(r)
    return AckFrame(stream, _positive(r.u64(), "acknowledgement"))


def _reset(r: FieldReader) -> ResetFrame:
    stream, code = _stream_id(r), r.u16()
    number = _positive(r.u64(), "reset number")
    flag = r.u8()
    if flag > 1:
        raise WireError(ErrorCode.OUT_OF_RANGE, f"answer flag {flag} (0 or 1)")
    return ResetFrame(stream, code, number, flag == 1)


DECODERS: dict[int, Callable[[FieldReader], StreamMessage]] = {
    T_STREAM_HELLO: _hello,
    T_STREAM_DATA: _data,
    T_STREAM_ACK: _ack,
    T_STREAM_RESET: _reset,
}


def fast_data(body: bytes) -> Union[DataFrame, None]:
    """A well-formed :class:`DataFrame` body in few calls, or None for the
    strict reader to judge (it alone decides the error)."""
    try:
        size = body[1]
        end = 2 + size
        seq, length = _SEQ_LENGTH.unpack_from(body, end)
    except (IndexError, struct.error):
        return None
    start = end + 12
    if size == 0 or seq == 0 or start + length != len(body):
        return None
    return DataFrame(body[2:end], seq, body[start:])


def decode(body: bytes) -> StreamMessage:
    """Decode one stream frame body; :class:`WireError` if malformed, and
    ``UNKNOWN_MESSAGE_TYPE`` for a body of any other type."""
    if not body:
        raise WireError(ErrorCode.TRUNCATED, "empty frame")
    if body[0] == T_STREAM_DATA:
        data = fast_data(body)
        if data is not None:
            return data
    decoder = DECODERS.get(body[0])
    if decoder is None:
        raise WireError(
            ErrorCode.UNKNOWN_MESSAGE_TYPE,
            f"0x{body[0]:02x} is not a stream message type",
        )
    return wire.read_whole(body, decoder)
