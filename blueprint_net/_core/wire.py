"""The wire format: length-prefixed frames, one message each, and their codec.

Layer: core (sans-IO; imports nothing from Twisted).

Sans-IO: nothing here touches a socket or a reactor.  ``docs/protocol.md`` is
the byte-level specification of every layout below, with golden vectors that
``tests/test_wire.py`` decodes and re-encodes.

The decoder is strict.  Anything that is not exactly one well-formed message
raises :class:`~blueprint_net.errors.WireError` with a ``1xx`` code, and
nothing else: no ``struct.error``, ``IndexError`` or ``UnicodeDecodeError``
escapes to the caller.
"""

from __future__ import annotations

import struct
from typing import Any, Callable, Optional, TypeVar, Union

import attrs

from blueprint_net._core.errors import ErrorCode, WireError
from blueprint_net._core.identity import PeerId

#: Largest frame body accepted before the handshake completes.  The largest
#: handshake message is a ``Proof``, 138 bytes (``docs/protocol.md``, section
#: 1); a small cap keeps an unauthenticated peer from making the node buffer
#: anything worth having.
HANDSHAKE_MAX_FRAME = 4 * 1024
#: The longest ``Error`` text sent, in bytes: an ``Error`` may be the answer
#: to a peer still in the handshake, so its body (type, code, length, text)
#: fits the handshake limit.  Longer texts are cut at a character boundary.
MAX_ERROR_TEXT = HANDSHAKE_MAX_FRAME - 5
#: Default largest frame body after the handshake (the original system's cap).
DEFAULT_MAX_FRAME = 16 * 1024 * 1024

PROTOCOL_VERSION = 1
NONCE_SIZE = 32
#: Request id 0 asks for no response ("fire and forget").
NO_RESPONSE = 0

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")
_HEADER = _U32
# Fixed leading fields of the hot messages, packed and unpacked in one call.
_TYPE_ID = struct.Struct("!BI")
_TYPE_ID_U8 = struct.Struct("!BIB")
_TYPE_ID_U16 = struct.Struct("!BIH")
_TYPE_ID_U32 = struct.Struct("!BII")
_FLAG_LENGTH = struct.Struct("!BI")
# A frame's length prefix with the fixed fields of a small request or
# Protocol response, in one call (see frame_chunks).
_HEAD_REQUEST = struct.Struct("!IBIB")
_HEAD_PROTOCOL = struct.Struct("!IBII")
#: See :meth:`FrameDecoder.feed`: reads under this size are merged into the
#: previous piece of a pending frame while that piece is under _MERGE_BELOW.
_SMALL_READ = 1024
_MERGE_BELOW = 16 * 1024
#: See :func:`frame_chunks`.
LARGE_PART = 16 * 1024


@attrs.define
class Hello:
    """Opens the handshake: each side's version, fresh nonce and claimed id."""

    version: int
    nonce: bytes
    peer_id: PeerId


@attrs.define
class HandshakeRequest:
    """The initiator's proof: its key and its signature over the transcript."""

    public_key: bytes
    signature: bytes


@attrs.define
class HandshakeResponse:
    """The responder's proof, over the same transcript with its own role."""

    public_key: bytes
    signature: bytes


@attrs.define
class Proof:
    """The handshake over TLS (``docs/protocol.md``, "Over TLS"): one message
    from each side, its version, id, key and a signature bound to the session."""

    version: int
    peer_id: PeerId
    public_key: bytes
    signature: bytes


@attrs.define
class Error:
    """A connection-level error; codes below 300 close the connection."""

    code: int
    message: str


@attrs.define
class Ping:
    opaque: int


@attrs.define
class Pong:
    opaque: int


@attrs.define
class Request:
    """``InstanceMessageRequest::Protocol``, tagged so many can be in flight."""

    request_id: int
    protocol: str
    payload: bytes
    metadata: Optional[bytes] = None


@attrs.define
class SuccessResponse:
    """``InstanceMessageResponse::Success {data: Option<Vec<u8>>}``.

    As received: what ``Node.request`` fires with.  A handler returns a
    ``messaging.Success`` instead, without the id (``docs/embedding.md``,
    "Two answer families").
    """

    request_id: int
    data: Optional[bytes] = None


@attrs.define
class ProtocolResponse:
    """``InstanceMessageResponse::Protocol {data: Vec<u8>}``; as received
    (a handler returns ``messaging.ProtocolData``)."""

    request_id: int
    data: bytes


@attrs.define
class ErrorResponse:
    """``InstanceMessageResponse::Error {code: u16, message: String}``."""

    request_id: int
    code: int
    message: str


Message = Union[
    Hello,
    HandshakeRequest,
    HandshakeResponse,
    Proof,
    Error,
    Ping,
    Pong,
    Request,
    SuccessResponse,
    ProtocolResponse,
    ErrorResponse,
]
Response = Union[SuccessResponse, ProtocolResponse, ErrorResponse]
#: What a successful request yields (an ErrorResponse is raised instead).
Reply = Union[SuccessResponse, ProtocolResponse]

# Message type bytes.  Handshake and connection control below 0x10, requests
# and responses from 0x10.
T_HELLO = 0x01
T_HANDSHAKE_REQUEST = 0x02
T_HANDSHAKE_RESPONSE = 0x03
T_ERROR = 0x04
T_PING = 0x05
T_PONG = 0x06
T_PROOF = 0x07
T_REQUEST = 0x10
T_SUCCESS = 0x11
T_PROTOCOL = 0x12
T_ERROR_RESPONSE = 0x13


# -- encoding ---------------------------------------------------------------


def _name(text: str) -> bytes:
    data = text.encode("utf-8")
    if not 1 <= len(data) <= 255:
        raise ValueError("a protocol name is 1 to 255 bytes of UTF-8")
    return data


def _str16(text: str, limit: int = 65535) -> bytes:
    data = text.encode("utf-8")
    if len(data) > limit:
        # Cut at a character boundary: a UTF-8 continuation byte is 10xxxxxx.
        end = limit
        while data[end] & 0xC0 == 0x80:
            end -= 1
        data = data[:end]
    return _U16.pack(len(data)) + data


def _optional(data: Optional[bytes]) -> list[bytes]:
    return [b"\x00"] if data is None else [_FLAG_LENGTH.pack(1, len(data)), data]


def _request_parts(message: Request) -> list[bytes]:
    name = _name(message.protocol)
    payload = message.payload
    return [
        _TYPE_ID_U8.pack(T_REQUEST, message.request_id, len(name)),
        name,
        _U32.pack(len(payload)),
        payload,
        *_optional(message.metadata),
    ]


def _success_parts(message: SuccessResponse) -> list[bytes]:
    return [_TYPE_ID.pack(T_SUCCESS, message.request_id), *_optional(message.data)]


def _protocol_parts(message: ProtocolResponse) -> list[bytes]:
    data = message.data
    return [_TYPE_ID_U32.pack(T_PROTOCOL, message.request_id, len(data)), data]


def _error_response_parts(message: ErrorResponse) -> list[bytes]:
    return [
        _TYPE_ID_U16.pack(T_ERROR_RESPONSE, message.request_id, message.code),
        _str16(message.message),
    ]


def _hello_parts(message: Hello) -> list[bytes]:
    if len(message.nonce) != NONCE_SIZE:
        raise ValueError("a nonce is 32 bytes")
    binary = message.peer_id.binary
    return [
        b"\x01",
        _U16.pack(message.version),
        message.nonce,
        bytes((len(binary),)),
        binary,
    ]


def _proof_parts(
    tag: bytes,
) -> Callable[[Union[HandshakeRequest, HandshakeResponse]], list[bytes]]:
    def parts(message: Union[HandshakeRequest, HandshakeResponse]) -> list[bytes]:
        if len(message.public_key) != 32 or len(message.signature) != 64:
            raise ValueError("a public key is 32 bytes and a signature 64")
        return [tag, message.public_key, message.signature]

    return parts


def _bound_proof_parts(message: Proof) -> list[bytes]:
    if len(message.public_key) != 32 or len(message.signature) != 64:
        raise ValueError("a public key is 32 bytes and a signature 64")
    binary = message.peer_id.binary
    return [
        b"\x07",
        _U16.pack(message.version),
        bytes((len(binary),)),
        binary,
        message.public_key,
        message.signature,
    ]


def _error_parts(message: Error) -> list[bytes]:
    return [
        b"\x04",
        _U16.pack(message.code),
        _str16(message.message, MAX_ERROR_TEXT),
    ]


def _opaque_parts(tag: bytes) -> Callable[[Union[Ping, Pong]], list[bytes]]:
    return lambda message: [tag, _U64.pack(message.opaque)]


_ENCODERS: dict[type, Callable[[Any], list[bytes]]] = {
    Request: _request_parts,
    SuccessResponse: _success_parts,
    ProtocolResponse: _protocol_parts,
    ErrorResponse: _error_response_parts,
    Hello: _hello_parts,
    HandshakeRequest: _proof_parts(b"\x02"),
    HandshakeResponse: _proof_parts(b"\x03"),
    Proof: _bound_proof_parts,
    Error: _error_parts,
    Ping: _opaque_parts(b"\x05"),
    Pong: _opaque_parts(b"\x06"),
}


def _parts(message: Message) -> list[bytes]:
    """The body of a frame as a list of byte strings: a payload is never
    copied before the one join that makes the frame."""
    encoder = _ENCODERS.get(type(message))
    if encoder is None:
        raise TypeError(f"not a message: {message!r}")
    return encoder(message)


def encode(message: Message) -> bytes:
    """The body of a frame (no length prefix); ``ValueError`` if unencodable."""
    return b"".join(_parts(message))


def frame_body(body: bytes) -> bytes:
    """A frame of ``body``: a u32 big-endian length, then the body."""
    return _HEADER.pack(len(body)) + body


def frame(message: Message) -> bytes:
    """The message as it travels: a u32 big-endian length, then the body."""
    parts = _parts(message)
    parts.insert(0, _HEADER.pack(sum(map(len, parts))))
    return b"".join(parts)


def oversized(response: Response, max_frame: int) -> ErrorResponse:
    """What answers in place of a response past the frame limit: the handler
    worked, but its answer cannot travel in one frame (section 6)."""
    return ErrorResponse(
        response.request_id,
        ErrorCode.PAYLOAD_TOO_LARGE,
        f"the response exceeds the frame limit of {max_frame} bytes",
    )


def frame_chunks(message: Message, max_body: Optional[int] = None) -> list[bytes]:
    """The same bytes as :func:`frame`, as a list for ``writeSequence``;
    ``ValueError`` for a body over ``max_body``.

    A payload of :data:`LARGE_PART` bytes or more stays a chunk of its own:
    the transport copies it once, into its send buffer, instead of once more
    into the frame first.  Smaller frames are one chunk.
    """
    # The two messages of every request, when small, packed in one call and
    # joined once (the general path below gives the same bytes; tested).
    if type(message) is ProtocolResponse:
        data = message.data
        size = 9 + len(data)
        if size < LARGE_PART and (max_body is None or size <= max_body):
            request_id = message.request_id
            return [_HEAD_PROTOCOL.pack(size, T_PROTOCOL, request_id, len(data)) + data]
    elif type(message) is Request and len(message.payload) < LARGE_PART:
        name = _name(message.protocol)
        payload, metadata = message.payload, message.metadata
        size = 10 + len(name) + len(payload)
        size += 1 if metadata is None else 5 + len(metadata)
        if size < LARGE_PART and (max_body is None or size <= max_body):
            head = _HEAD_REQUEST.pack(size, T_REQUEST, message.request_id, len(name))
            fields = [head, name, _U32.pack(len(payload)), payload]
            fields += _optional(metadata)
            return [b"".join(fields)]
    parts = _parts(message)
    size = sum(map(len, parts))
    if max_body is not None and size > max_body:
        kind = type(message).__name__.lower()
        raise ValueError(
            f"a {kind} of {size} bytes exceeds the frame limit of {max_body}"
        )
    header = _HEADER.pack(size)
    if size < LARGE_PART:
        parts.insert(0, header)
        return [b"".join(parts)]
    chunks: list[bytes] = []
    small = [header]
    for part in parts:
        if len(part) >= LARGE_PART:
            chunks.append(b"".join(small))
            chunks.append(part)
            small = []
        else:
            small.append(part)
    if small:
        chunks.append(b"".join(small))
    return chunks


# -- decoding ---------------------------------------------------------------


class FieldReader:
    """Reads fields off a frame body, turning every shortfall into a WireError."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 1  # past the type byte

    def take(self, size: int) -> bytes:
        end = self.pos + size
        if end > len(self.data):
            raise WireError(ErrorCode.TRUNCATED, "message ends inside a field")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        value: int = _U16.unpack(self.take(2))[0]
        return value

    def u32(self) -> int:
        value: int = _U32.unpack(self.take(4))[0]
        return value

    def u64(self) -> int:
        value: int = _U64.unpack(self.take(8))[0]
        return value

    def text(self, size: int) -> str:
        try:
            return self.take(size).decode("utf-8")
        except UnicodeDecodeError:
            raise WireError(ErrorCode.INVALID_UTF8, "text is not UTF-8") from None

    def bytes32(self) -> bytes:
        return self.take(self.u32())

    def optional(self) -> Optional[bytes]:
        flag = self.u8()
        if flag == 0:
            return None
        if flag == 1:
            return self.bytes32()
        raise WireError(ErrorCode.OUT_OF_RANGE, f"option flag {flag} is not 0 or 1")

    def protocol_name(self) -> str:
        size = self.u8()
        if size == 0:
            raise WireError(ErrorCode.OUT_OF_RANGE, "empty protocol name")
        return self.text(size)

    def end(self) -> None:
        if self.pos != len(self.data):
            raise WireError(
                ErrorCode.TRAILING_BYTES,
                f"{len(self.data) - self.pos} bytes after the message",
            )


def _peer_id(r: FieldReader) -> PeerId:
    binary = r.take(r.u8())
    try:
        return PeerId(binary)
    except ValueError:
        raise WireError(ErrorCode.OUT_OF_RANGE, "not an Ed25519 peer id") from None


def _hello(r: FieldReader) -> Hello:
    version = r.u16()
    nonce = r.take(NONCE_SIZE)
    return Hello(version, nonce, _peer_id(r))


def _proof(r: FieldReader) -> Proof:
    version = r.u16()
    return Proof(version, _peer_id(r), r.take(32), r.take(64))


def _handshake_request(r: FieldReader) -> HandshakeRequest:
    return HandshakeRequest(r.take(32), r.take(64))


def _handshake_response(r: FieldReader) -> HandshakeResponse:
    return HandshakeResponse(r.take(32), r.take(64))


def _error(r: FieldReader) -> Error:
    code = r.u16()
    return Error(code, r.text(r.u16()))


def _ping(r: FieldReader) -> Ping:
    return Ping(r.u64())


def _pong(r: FieldReader) -> Pong:
    return Pong(r.u64())


def _request(r: FieldReader) -> Request:
    request_id = r.u32()
    protocol = r.protocol_name()
    payload = r.bytes32()
    return Request(request_id, protocol, payload, r.optional())


def _success(r: FieldReader) -> SuccessResponse:
    return SuccessResponse(r.u32(), r.optional())


def _protocol(r: FieldReader) -> ProtocolResponse:
    return ProtocolResponse(r.u32(), r.bytes32())


def _error_response(r: FieldReader) -> ErrorResponse:
    request_id = r.u32()
    code = r.u16()
    return ErrorResponse(request_id, code, r.text(r.u16()))


_DECODERS: dict[int, Callable[[FieldReader], Message]] = {
    T_HELLO: _hello,
    T_HANDSHAKE_REQUEST: _handshake_request,
    T_HANDSHAKE_RESPONSE: _handshake_response,
    T_PROOF: _proof,
    T_ERROR: _error,
    T_PING: _ping,
    T_PONG: _pong,
    T_REQUEST: _request,
    T_SUCCESS: _success,
    T_PROTOCOL: _protocol,
    T_ERROR_RESPONSE: _error_response,
}


# The fast paths below parse only well-formed bodies, in few calls; on any
# irregularity they return None and the strict reader decides the error.


def _fast_request(body: bytes) -> Optional[Request]:
    try:
        _, request_id, size = _TYPE_ID_U8.unpack_from(body)
        end = 6 + size
        (length,) = _U32.unpack_from(body, end)
        start = end + 4
        stop = start + length
        if size == 0:
            return None
        metadata = _fast_optional(body, stop)
        return Request(request_id, body[6:end].decode(), body[start:stop], metadata)
    except (struct.error, IndexError, ValueError):  # incl. UnicodeDecodeError
        return None


def _fast_optional(body: bytes, at: int) -> Optional[bytes]:
    """The opt_bytes32 that must end ``body`` at ``at``; ValueError if not."""
    flag = body[at]
    if flag == 0 and at + 1 == len(body):
        return None
    if flag == 1:
        (length,) = _U32.unpack_from(body, at + 1)
        if at + 5 + length == len(body):
            return body[at + 5 :]
    raise ValueError("not a well-formed trailing opt_bytes32")


def _fast_success(body: bytes) -> Optional[SuccessResponse]:
    try:
        _, request_id = _TYPE_ID.unpack_from(body)
        return SuccessResponse(request_id, _fast_optional(body, 5))
    except (struct.error, IndexError, ValueError):
        return None


def _fast_protocol(body: bytes) -> Optional[ProtocolResponse]:
    try:
        _, request_id, length = _TYPE_ID_U32.unpack_from(body)
    except struct.error:
        return None
    if 9 + length != len(body):
        return None
    return ProtocolResponse(request_id, body[9:])


_FAST: dict[int, Callable[[bytes], Optional[Message]]] = {
    T_REQUEST: _fast_request,
    T_SUCCESS: _fast_success,
    T_PROTOCOL: _fast_protocol,
}


def decode(body: bytes) -> Message:
    """Decode one frame body; :class:`WireError` for anything malformed.

    The messages that carry traffic have a fast path for well-formed input;
    anything it does not accept goes through the field-by-field reader,
    which alone decides what error a malformed body gets.
    """
    if not body:
        raise WireError(ErrorCode.TRUNCATED, "empty frame")
    fast = _FAST.get(body[0])
    if fast is not None:
        message = fast(body)
        if message is not None:
            return message
    decoder = _DECODERS.get(body[0])
    if decoder is None:
        raise WireError(
            ErrorCode.UNKNOWN_MESSAGE_TYPE, f"unknown message type 0x{body[0]:02x}"
        )
    return read_whole(body, decoder)


_T = TypeVar("_T")


def read_whole(body: bytes, decoder: Callable[[FieldReader], _T]) -> _T:
    """``decoder``'s message from ``body``, which it must read to the end
    (``TRAILING_BYTES`` if not): the strict path of every message family."""
    reader = FieldReader(body)
    message = decoder(reader)
    reader.end()
    return message


# -- framing ----------------------------------------------------------------


class FrameDecoder:
    """Splits a byte stream into frame bodies in time linear in its length.

    Unlike ``IntNStringReceiver`` (twisted#6358), which re-copies its whole
    buffer on every read, a frame that arrives in many reads is kept as a list
    of those reads -- O(1) per read -- and joined once, when complete, into
    the body: each byte is copied once.  Each length prefix is checked against
    ``max_length`` as soon as its four bytes are in, before the body is kept;
    a frame longer than ``capped_length`` whose type byte (the body's first)
    is in ``capped_types`` is refused as soon as that byte is in, so a type
    with a smaller limit than requests (gossip's) is never buffered whole.
    """

    __slots__ = (
        "_have",
        "_needed",
        "_partial",
        "capped_length",
        "capped_types",
        "max_length",
    )

    def __init__(self, max_length: int = HANDSHAKE_MAX_FRAME) -> None:
        #: Reads held back: a partial length prefix, or the start of a body
        #: (the prefix already parsed and dropped).
        self._partial: list[Union[bytes, memoryview]] = []
        self._have = 0
        #: Body bytes the current frame needs; 0 while the prefix is partial.
        self._needed = 0
        self.max_length = max_length
        #: Types whose frames may be at most ``capped_length`` bytes (none
        #: by default): see :meth:`cap`.
        self.capped_types = range(0)
        self.capped_length = max_length

    def cap(self, types: range, length: int) -> None:
        """Frames whose type byte is in ``types`` may be at most ``length``
        bytes (less than ``max_length``)."""
        self.capped_types, self.capped_length = types, length

    def _check_type(self, first: int, length: int) -> None:
        """The first body byte of a frame of ``length`` bytes is ``first``."""
        if first in self.capped_types:
            raise WireError(
                ErrorCode.FRAME_TOO_LARGE,
                f"frame of type 0x{first:02x} and {length} bytes exceeds"
                f" its type's limit of {self.capped_length}",
            )

    @property
    def buffered(self) -> int:
        """Bytes held waiting for the rest of a frame."""
        return self._have

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return every frame body now complete.

        Raises :class:`WireError` (``FRAME_TOO_LARGE``) for a length over the
        limit; the stream is then unusable, since its framing is lost.
        """
        frames: list[bytes] = []
        if self._needed:
            if not self._have and data and self._needed > self.capped_length:
                self._check_type(data[0], self._needed)  # the type byte, now in
            partial = self._partial
            if len(data) < _SMALL_READ and len(partial[-1]) < _MERGE_BELOW:
                # Bound the per-piece overhead a peer dribbling tiny reads
                # could cost: every piece kept is >= 1 KiB or precedes one.
                partial[-1] = b"".join((partial[-1], data))
            else:
                partial.append(data)
            self._have += len(data)
            over = self._have - self._needed
            if over < 0:
                return frames  # a large frame still arriving: O(1) per read
            data = b""
            if over:  # the last piece runs into the next frame: split it
                last = memoryview(partial[-1])
                partial[-1], data = last[: len(last) - over], bytes(last[-over:])
            frames.append(b"".join(partial))
            self._partial, self._have, self._needed = [], 0, 0
        elif self._partial:
            data = b"".join(self._partial) + data
            self._partial, self._have = [], 0
        pos = 0
        size = len(data)
        unpack = _HEADER.unpack_from
        limit, capped = self.max_length, self.capped_length
        while size - pos >= 4:
            (length,) = unpack(data, pos)
            if length > limit:
                raise WireError(
                    ErrorCode.FRAME_TOO_LARGE,
                    f"frame of {length} bytes exceeds the limit of {limit}",
                )
            start = pos + 4
            end = start + length
            if length > capped and start < size:
                self._check_type(data[start], length)
            if end > size:
                # A view, not a copy: the body is copied once, by the join.
                # It keeps this whole read alive: at most one read (64 KiB
                # from Twisted's TCP transport) beyond ``buffered``.
                self._partial = [memoryview(data)[start:]]
                self._have = size - start
                self._needed = length
                return frames
            frames.append(data[start:end])
            pos = end
        if pos < size:
            self._partial = [data[pos:] if pos else data]
            self._have = size - pos
        return frames
