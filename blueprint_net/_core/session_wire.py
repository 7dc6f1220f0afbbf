"""The party-session messages carried as durable-stream payloads, and the
bytes a session hashes and signs.

Layer: core (sans-IO; imports nothing from Twisted).

**In:** a session message (:data:`SessionMessage`) to encode, or one stream
payload to decode.  **Out:** the payload bytes; the message, or
:class:`~blueprint_net.errors.WireError` (a ``1xx`` code) for anything that
is not exactly one well-formed session message -- never another exception,
and every message has one encoding.  Also the session digest, the bytes an
origin signs for a broadcast, the echo digest, and the encoding of
equivocation evidence.

``docs/protocol.md`` section 11 is the byte-level specification, with golden
vectors.  The field types are section 2's (``fields.FieldReader``); a session
message is a whole stream payload (section 10), so it has no length prefix
of its own.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from typing import Any, Callable, Union

import attrs

from blueprint_net._core import fields
from blueprint_net._core.errors import ErrorCode, WireError
from blueprint_net._core.fields import FieldReader
from blueprint_net._core.signatures import PUBLIC_KEY_SIZE, SIGNATURE_SIZE

K_DIRECT = 0x01
K_BROADCAST = 0x02
K_RELIABLE = 0x03
K_ECHO = 0x04
K_RELAY = 0x05

#: A session id is 1 to this many bytes.
MAX_SESSION_ID = 255
#: Party indexes are u16.
MAX_PARTIES = 2**16
DIGEST_SIZE = 32

SESSION_DOMAIN = b"blueprint-net/session/v1\x00"
BROADCAST_DOMAIN = b"blueprint-net/session-broadcast/v1\x00"
ECHO_DOMAIN = b"blueprint-net/session-echo/v1\x00"
EVIDENCE_DOMAIN = b"blueprint-net/session-evidence/v1\x00"
#: The prefix of a session's stream name (the first 16 bytes of its digest
#: follow).
STREAM_PREFIX = b"bn/session/"

_HEAD = struct.Struct("!BHI")  # kind, sender, round
_ROUND_ORIGIN = struct.Struct("!IH")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")


@attrs.frozen
class Direct:
    """``sender``'s message of ``round`` for the receiver alone."""

    sender: int
    round: int
    payload: bytes


@attrs.frozen
class Broadcast:
    """``sender``'s one message of ``round`` for every party, signed by it
    (:func:`signed_bytes`).  ``reliable``: the round is checked by echo."""

    sender: int
    round: int
    payload: bytes
    signature: bytes
    reliable: bool = False


@attrs.frozen
class Echo:
    """``sender``'s digest of the round's broadcasts as it received them
    (:func:`echo_digest`)."""

    sender: int
    round: int
    digest: bytes


@attrs.frozen
class Relay:
    """After echoes disagreed: ``origin``'s signed broadcast of ``round`` as
    ``sender`` received it (one per origin, in index order)."""

    sender: int
    round: int
    origin: int
    payload: bytes
    signature: bytes


SessionMessage = Union[Direct, Broadcast, Echo, Relay]
#: The same, for ``isinstance``.
SESSION_TYPES = (Direct, Broadcast, Echo, Relay)


@attrs.frozen
class SignedBroadcast:
    """One payload and its origin's signature."""

    payload: bytes
    signature: bytes


@attrs.frozen
class EquivocationEvidence:
    """Two different broadcasts that ``origin`` signed for the same round of
    one session: anyone with the party list and the session id can check it
    (``blueprint_net.sessions.verify_equivocation``).  ``first`` holds the
    bytewise smaller payload, so evidence has one form."""

    round: int
    origin: int
    first: SignedBroadcast
    second: SignedBroadcast


# -- what is hashed and signed -----------------------------------------------


def sorted_keys(keys: Sequence[bytes]) -> list[bytes]:
    """The party keys in index order; ``ValueError`` for a list that cannot
    be a session's (fewer than 2, a repeat, a key not 32 bytes)."""
    ordered = sorted(bytes(key) for key in keys)
    if not 2 <= len(ordered) <= MAX_PARTIES:
        raise ValueError(f"a session has 2 to {MAX_PARTIES} parties")
    if any(len(key) != PUBLIC_KEY_SIZE for key in ordered):
        raise ValueError("a party key is 32 bytes")
    if any(a == b for a, b in zip(ordered, ordered[1:])):
        raise ValueError("a party is listed twice")
    return ordered


def session_digest(session_id: bytes, keys: Sequence[bytes]) -> bytes:
    """SHA-256 of the domain, the length-prefixed session id and the sorted
    keys: parties that disagree on the id or the list never share it."""
    if not 1 <= len(session_id) <= MAX_SESSION_ID:
        raise ValueError(f"a session id is 1 to {MAX_SESSION_ID} bytes")
    parts = [SESSION_DOMAIN, bytes((len(session_id),)), session_id]
    parts += sorted_keys(keys)
    return hashlib.sha256(b"".join(parts)).digest()


def stream_name(digest: bytes) -> bytes:
    """The durable stream (section 10) a session's messages travel on."""
    return STREAM_PREFIX + digest[:16]


def signed_bytes(digest: bytes, round: int, origin: int, payload: bytes) -> bytes:
    """What an origin signs for its broadcast of ``round``."""
    return b"".join(
        (
            BROADCAST_DOMAIN,
            digest,
            _ROUND_ORIGIN.pack(round, origin),
            _U32.pack(len(payload)),
            payload,
        )
    )


def echo_digest(digest: bytes, round: int, payloads: Sequence[bytes]) -> bytes:
    """The digest of a round's broadcasts, one per party in index order."""
    hasher = hashlib.sha256(ECHO_DOMAIN + digest + _U32.pack(round))
    for payload in payloads:
        hasher.update(_U32.pack(len(payload)))
        hasher.update(payload)
    return hasher.digest()


# -- encoding ---------------------------------------------------------------


def _check(sender: int, round: int) -> None:
    if not 0 <= sender < MAX_PARTIES:
        raise ValueError("a party index is a u16")
    if not 0 <= round < 2**32:
        raise ValueError("a round is a u32")


def _fixed(value: bytes, size: int, what: str) -> bytes:
    if len(value) != size:
        raise ValueError(f"{what} is {size} bytes")
    return value


def _direct_parts(message: Direct) -> list[bytes]:
    return [_U32.pack(len(message.payload)), message.payload]


def _broadcast_parts(message: Broadcast) -> list[bytes]:
    signature = _fixed(message.signature, SIGNATURE_SIZE, "a signature")
    return [_U32.pack(len(message.payload)), message.payload, signature]


def _echo_parts(message: Echo) -> list[bytes]:
    return [_fixed(message.digest, DIGEST_SIZE, "an echo digest")]


def _relay_parts(message: Relay) -> list[bytes]:
    if not 0 <= message.origin < MAX_PARTIES:
        raise ValueError("a party index is a u16")
    signature = _fixed(message.signature, SIGNATURE_SIZE, "a signature")
    return [
        _U16.pack(message.origin),
        _U32.pack(len(message.payload)),
        message.payload,
        signature,
    ]


ENCODERS: dict[type, Callable[[Any], list[bytes]]] = {
    Direct: _direct_parts,
    Broadcast: _broadcast_parts,
    Echo: _echo_parts,
    Relay: _relay_parts,
}


def kind(message: SessionMessage) -> int:
    """The message's first byte."""
    if type(message) is Broadcast:
        return K_RELIABLE if message.reliable else K_BROADCAST
    return {Direct: K_DIRECT, Echo: K_ECHO, Relay: K_RELAY}[type(message)]


def encode(message: SessionMessage) -> bytes:
    """The stream payload; ``ValueError`` if unencodable."""
    encoder = ENCODERS.get(type(message))
    if encoder is None:
        raise TypeError(f"not a session message: {message!r}")
    _check(message.sender, message.round)
    head = _HEAD.pack(kind(message), message.sender, message.round)
    return b"".join([head, *encoder(message)])


# -- decoding ---------------------------------------------------------------


def _direct(r: FieldReader) -> Direct:
    return Direct(r.u16(), r.u32(), r.bytes32())


def _broadcast(r: FieldReader) -> Broadcast:
    sender, round, payload = r.u16(), r.u32(), r.bytes32()
    return Broadcast(
        sender, round, payload, r.take(SIGNATURE_SIZE), r.data[0] == K_RELIABLE
    )


def _echo(r: FieldReader) -> Echo:
    return Echo(r.u16(), r.u32(), r.take(DIGEST_SIZE))


def _relay(r: FieldReader) -> Relay:
    sender, round, origin = r.u16(), r.u32(), r.u16()
    return Relay(sender, round, origin, r.bytes32(), r.take(SIGNATURE_SIZE))


DECODERS: dict[int, Callable[[FieldReader], SessionMessage]] = {
    K_DIRECT: _direct,
    K_BROADCAST: _broadcast,
    K_RELIABLE: _broadcast,
    K_ECHO: _echo,
    K_RELAY: _relay,
}


def decode(data: bytes) -> SessionMessage:
    """One session message from a whole stream payload; :class:`WireError`
    if it is not exactly one."""
    if not data:
        raise WireError(ErrorCode.TRUNCATED, "empty session message")
    decoder = DECODERS.get(data[0])
    if decoder is None:
        raise WireError(
            ErrorCode.UNKNOWN_MESSAGE_TYPE,
            f"0x{data[0]:02x} is not a session message kind",
        )
    return fields.read_whole(data, decoder)


# -- evidence ---------------------------------------------------------------


def evidence(
    round: int, origin: int, one: SignedBroadcast, other: SignedBroadcast
) -> EquivocationEvidence:
    """Evidence in its one form (the smaller payload first); ``ValueError``
    for two equal payloads, which prove nothing."""
    if one.payload == other.payload:
        raise ValueError("equal payloads are no equivocation")
    first, second = sorted((one, other), key=lambda signed: signed.payload)
    return EquivocationEvidence(round, origin, first, second)


def encode_evidence(proof: EquivocationEvidence) -> bytes:
    """Evidence as bytes, to store or hand to a third party."""
    _check(proof.origin, proof.round)
    parts = [EVIDENCE_DOMAIN, _ROUND_ORIGIN.pack(proof.round, proof.origin)]
    for signed in (proof.first, proof.second):
        parts += [
            _U32.pack(len(signed.payload)),
            signed.payload,
            _fixed(signed.signature, SIGNATURE_SIZE, "a signature"),
        ]
    return b"".join(parts)


def _evidence(r: FieldReader) -> EquivocationEvidence:
    if r.take(len(EVIDENCE_DOMAIN) - 1) != EVIDENCE_DOMAIN[1:]:
        raise WireError(ErrorCode.OUT_OF_RANGE, "not equivocation evidence")
    round, origin = r.u32(), r.u16()
    first = SignedBroadcast(r.bytes32(), r.take(SIGNATURE_SIZE))
    second = SignedBroadcast(r.bytes32(), r.take(SIGNATURE_SIZE))
    if not first.payload < second.payload:
        raise WireError(
            ErrorCode.OUT_OF_RANGE, "the payloads are not in bytewise order"
        )
    return EquivocationEvidence(round, origin, first, second)


def decode_evidence(data: bytes) -> EquivocationEvidence:
    """The inverse of :func:`encode_evidence`; :class:`WireError` for bytes
    that are not exactly one piece of evidence in its one form."""
    if not data or data[0] != EVIDENCE_DOMAIN[0]:
        raise WireError(ErrorCode.OUT_OF_RANGE, "not equivocation evidence")
    return fields.read_whole(data, _evidence)
