"""The base message family: its types, limits and codec.

Layer: core (sans-IO; imports nothing from Twisted).

In: a message (one of :data:`Message`), or one frame body.  Out: the body's
bytes (:func:`encode`, or :func:`body_parts` for the framer in
``framing``), or the message decoded.  No states: every call stands alone.
The fields are ``fields``' and a frame's length prefix is ``framing``'s;
gossip and stream messages are their own families (``gossip_wire``,
``stream_wire``).  ``docs/protocol.md`` is the byte-level specification of
every layout below, with golden vectors that ``tests/test_protocol_doc.py``
decodes and re-encodes.

The decoder is strict.  Anything that is not exactly one well-formed message
raises :class:`~blueprint_net.errors.WireError` with a ``1xx`` code, and
nothing else: no ``struct.error``, ``IndexError`` or ``UnicodeDecodeError``
escapes to the caller.
"""

from __future__ import annotations

import struct
from typing import Any, Callable, Optional, Union

import attrs

from blueprint_net._core.errors import ErrorCode, WireError
from blueprint_net._core.fields import (
    U16,
    U32,
    U64,
    FieldReader,
    optional,
    protocol_name,
    read_whole,
    str16,
)
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

# Fixed leading fields of the hot messages, packed and unpacked in one call.
_TYPE_ID = struct.Struct("!BI")
_TYPE_ID_U8 = struct.Struct("!BIB")
_TYPE_ID_U16 = struct.Struct("!BIH")
_TYPE_ID_U32 = struct.Struct("!BII")


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


def _request_parts(message: Request) -> list[bytes]:
    name = protocol_name(message.protocol)
    payload = message.payload
    return [
        _TYPE_ID_U8.pack(T_REQUEST, message.request_id, len(name)),
        name,
        U32.pack(len(payload)),
        payload,
        *optional(message.metadata),
    ]


def _success_parts(message: SuccessResponse) -> list[bytes]:
    return [_TYPE_ID.pack(T_SUCCESS, message.request_id), *optional(message.data)]


def _protocol_parts(message: ProtocolResponse) -> list[bytes]:
    data = message.data
    return [_TYPE_ID_U32.pack(T_PROTOCOL, message.request_id, len(data)), data]


def _error_response_parts(message: ErrorResponse) -> list[bytes]:
    return [
        _TYPE_ID_U16.pack(T_ERROR_RESPONSE, message.request_id, message.code),
        str16(message.message),
    ]


def _hello_parts(message: Hello) -> list[bytes]:
    if len(message.nonce) != NONCE_SIZE:
        raise ValueError("a nonce is 32 bytes")
    binary = message.peer_id.binary
    return [
        b"\x01",
        U16.pack(message.version),
        message.nonce,
        bytes((len(binary),)),
        binary,
    ]


# Plain functions, not made by a factory: a mutation tool can reach them
# (the table is built at import, before it picks a mutant).


def _check_proof(message: Union[HandshakeRequest, HandshakeResponse, Proof]) -> None:
    if len(message.public_key) != 32 or len(message.signature) != 64:
        raise ValueError("a public key is 32 bytes and a signature 64")


def _handshake_request_parts(message: HandshakeRequest) -> list[bytes]:
    _check_proof(message)
    return [b"\x02", message.public_key, message.signature]


def _handshake_response_parts(message: HandshakeResponse) -> list[bytes]:
    _check_proof(message)
    return [b"\x03", message.public_key, message.signature]


def _bound_proof_parts(message: Proof) -> list[bytes]:
    _check_proof(message)
    binary = message.peer_id.binary
    return [
        b"\x07",
        U16.pack(message.version),
        bytes((len(binary),)),
        binary,
        message.public_key,
        message.signature,
    ]


def _error_parts(message: Error) -> list[bytes]:
    return [
        b"\x04",
        U16.pack(message.code),
        str16(message.message, MAX_ERROR_TEXT),
    ]


def _ping_parts(message: Ping) -> list[bytes]:
    return [b"\x05", U64.pack(message.opaque)]


def _pong_parts(message: Pong) -> list[bytes]:
    return [b"\x06", U64.pack(message.opaque)]


_ENCODERS: dict[type, Callable[[Any], list[bytes]]] = {
    Request: _request_parts,
    SuccessResponse: _success_parts,
    ProtocolResponse: _protocol_parts,
    ErrorResponse: _error_response_parts,
    Hello: _hello_parts,
    HandshakeRequest: _handshake_request_parts,
    HandshakeResponse: _handshake_response_parts,
    Proof: _bound_proof_parts,
    Error: _error_parts,
    Ping: _ping_parts,
    Pong: _pong_parts,
}


def body_parts(message: Message) -> list[bytes]:
    """The body of a frame as a list of byte strings: a payload is never
    copied before the one join that makes the frame."""
    encoder = _ENCODERS.get(type(message))
    if encoder is None:
        raise TypeError(f"not a message: {message!r}")
    return encoder(message)


def encode(message: Message) -> bytes:
    """The body of a frame (no length prefix); ``ValueError`` if unencodable."""
    return b"".join(body_parts(message))


# -- decoding ---------------------------------------------------------------


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
        (length,) = U32.unpack_from(body, end)
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
        (length,) = U32.unpack_from(body, at + 1)
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
