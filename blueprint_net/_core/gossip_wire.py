"""The topic-gossip messages (types ``0x40``-``0x48``) and their codec.

Layer: core (sans-IO; imports nothing from Twisted).

``docs/protocol.md`` section 9 is the byte-level specification, with golden
vectors.  The codec is ``wire``'s: the same field reader, the same framing,
the same strictness (only ``WireError`` with a ``1xx`` code; one encoding
per message).  The messages are kept out of :data:`wire.Message` because
they are not part of a connection's own protocol (the handshake, requests,
keepalive): :func:`decode` takes any body, decoding gossip types here and
handing the rest to :func:`wire.decode`, so a connection that routes gossip
calls it once its peer is verified, and one that does not still refuses
gossip frames as unknown types.

Also here: the bytes a published message's signature covers
(:func:`signed_bytes`) and its id (:func:`message_id`), since both are
defined by the encoding.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any, Callable, Union

import attrs

from blueprint_net._core import framing, wire
from blueprint_net._core.errors import ErrorCode, WireError
from blueprint_net._core.fields import FieldReader, read_whole
from blueprint_net._core.identity import PeerId
from blueprint_net._core.records import MAX_ADDRESSES, PeerRecord

#: A publication's signature covers this, then the message's fields.
SIGNATURE_DOMAIN = b"blueprint-net/gossip/v1\x00"
#: A message id is SHA-256 over this, the origin's binary id and the seqno.
MESSAGE_ID_DOMAIN = b"blueprint-net/gossip-id/v1\x00"
MESSAGE_ID_SIZE = 32
SIGNATURE_SIZE = 64

T_PUBLISH = 0x40
T_SUBSCRIPTIONS = 0x41
T_IHAVE = 0x42
T_IWANT = 0x43
T_GRAFT = 0x44
T_PRUNE = 0x45
T_RECORDS_REQUEST = 0x46
T_RECORDS = 0x47
T_IDONTWANT = 0x48
#: Types up to this one are gossip's (``0x49``-``0x4F`` are reserved).
T_LAST = 0x4F
#: Most changes one ``Subscriptions`` carries (a longer one is
#: ``OUT_OF_RANGE``), so decoding one costs a bounded amount; a node with
#: more topics sends several.
MAX_SUBSCRIPTION_CHANGES = 1024

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")


@attrs.frozen
class Publish:
    """A message published to ``topic`` by ``origin``, signed by it."""

    topic: str
    origin: PeerId
    seqno: int
    data: bytes
    signature: bytes

    @property
    def message_id(self) -> bytes:
        return message_id(self.origin, self.seqno)


@attrs.frozen
class Subscriptions:
    """The sender joined (True) or left (False) each topic, in order."""

    changes: tuple[tuple[bool, str], ...]


@attrs.frozen
class IHave:
    """The sender holds these messages of ``topic`` (gossip)."""

    topic: str
    message_ids: tuple[bytes, ...]


@attrs.frozen
class IWant:
    """Send me these messages (an answer to an ``IHave``)."""

    message_ids: tuple[bytes, ...]


@attrs.frozen
class IDontWant:
    """Do not send me these messages: I have them (gossipsub v1.2)."""

    message_ids: tuple[bytes, ...]


@attrs.frozen
class Graft:
    """Add me to your mesh of ``topic``."""

    topic: str


@attrs.frozen
class Prune:
    """You are out of my mesh of ``topic``: do not graft again for
    ``backoff`` seconds; here are other peers of the topic."""

    topic: str
    backoff: int
    records: tuple[PeerRecord, ...] = ()


@attrs.frozen
class RecordsRequest:
    """Send me up to ``limit`` peer records (yours first)."""

    limit: int


@attrs.frozen
class Records:
    """The answer to a :class:`RecordsRequest`."""

    records: tuple[PeerRecord, ...]


#: A decoded gossip message of any type (not to be confused with the public
#: ``GossipMessage``, a publication as delivered to an application).
GossipWireMessage = Union[
    Publish,
    Subscriptions,
    IHave,
    IWant,
    Graft,
    Prune,
    RecordsRequest,
    Records,
    IDontWant,
]
#: The same, for ``isinstance``.
GOSSIP_TYPES = (
    Publish,
    Subscriptions,
    IHave,
    IWant,
    Graft,
    Prune,
    RecordsRequest,
    Records,
    IDontWant,
)


def signed_bytes(topic: str, origin: PeerId, seqno: int, data: bytes) -> bytes:
    """What a publication's signature covers: the domain, then the
    ``Publish`` fields before the signature, exactly as they travel."""
    return b"".join((SIGNATURE_DOMAIN, *_publish_fields(topic, origin, seqno, data)))


def message_id(origin: PeerId, seqno: int) -> bytes:
    """SHA-256(``MESSAGE_ID_DOMAIN`` || origin binary id || seqno u64)."""
    return hashlib.sha256(MESSAGE_ID_DOMAIN + origin.binary + _U64.pack(seqno)).digest()


# -- encoding ---------------------------------------------------------------


def _str8(text: str) -> bytes:
    data = text.encode("utf-8")
    if not 1 <= len(data) <= 255:
        raise ValueError("a topic is 1 to 255 bytes of UTF-8")
    return bytes((len(data),)) + data


def _publish_fields(topic: str, origin: PeerId, seqno: int, data: bytes) -> list[bytes]:
    binary = origin.binary
    return [
        _str8(topic),
        bytes((len(binary),)),
        binary,
        _U64.pack(seqno),
        _U32.pack(len(data)),
        data,
    ]


def _publish_parts(message: Publish) -> list[bytes]:
    if len(message.signature) != SIGNATURE_SIZE:
        raise ValueError("a signature is 64 bytes")
    fields = _publish_fields(message.topic, message.origin, message.seqno, message.data)
    return [b"\x40", *fields, message.signature]


def _subscriptions_parts(message: Subscriptions) -> list[bytes]:
    if len(message.changes) > MAX_SUBSCRIPTION_CHANGES:
        raise ValueError(f"at most {MAX_SUBSCRIPTION_CHANGES} changes in one message")
    parts = [b"\x41", _U16.pack(len(message.changes))]
    for subscribe, topic in message.changes:
        parts += [b"\x01" if subscribe else b"\x00", _str8(topic)]
    return parts


def _ids(message_ids: tuple[bytes, ...]) -> list[bytes]:
    if any(len(mid) != MESSAGE_ID_SIZE for mid in message_ids):
        raise ValueError("a message id is 32 bytes")
    return [_U16.pack(len(message_ids)), *message_ids]


def _records(records: tuple[PeerRecord, ...]) -> list[bytes]:
    if len(records) > 255:
        raise ValueError("at most 255 records travel in one message")
    return [bytes((len(records),)), *(record.encode() for record in records)]


def _prune_parts(message: Prune) -> list[bytes]:
    return [
        b"\x45",
        _str8(message.topic),
        _U32.pack(message.backoff),
        *_records(message.records),
    ]


ENCODERS: dict[type, Callable[[Any], list[bytes]]] = {
    Publish: _publish_parts,
    Subscriptions: _subscriptions_parts,
    IHave: lambda m: [b"\x42", _str8(m.topic), *_ids(m.message_ids)],
    IWant: lambda m: [b"\x43", *_ids(m.message_ids)],
    Graft: lambda m: [b"\x44", _str8(m.topic)],
    Prune: _prune_parts,
    RecordsRequest: lambda m: [b"\x46", bytes((m.limit,))],
    Records: lambda m: [b"\x47", *_records(m.records)],
    IDontWant: lambda m: [b"\x48", *_ids(m.message_ids)],
}


# -- decoding ---------------------------------------------------------------


def _read_str8(r: FieldReader, what: str = "topic") -> str:
    size = r.u8()
    if size == 0:
        raise WireError(ErrorCode.OUT_OF_RANGE, f"empty {what}")
    return r.text(size)


_topic = _read_str8


def _peer_id(r: FieldReader) -> PeerId:
    try:
        return PeerId(r.take(r.u8()))
    except ValueError:
        raise WireError(ErrorCode.OUT_OF_RANGE, "not an Ed25519 peer id") from None


def _publish(r: FieldReader) -> Publish:
    topic = _topic(r)
    origin = _peer_id(r)
    seqno = r.u64()
    return Publish(topic, origin, seqno, r.bytes32(), r.take(SIGNATURE_SIZE))


def _flag(r: FieldReader) -> bool:
    flag = r.u8()
    if flag > 1:
        raise WireError(ErrorCode.OUT_OF_RANGE, f"subscribe flag {flag} is not 0 or 1")
    return flag == 1


def _subscriptions(r: FieldReader) -> Subscriptions:
    count = r.u16()
    if count > MAX_SUBSCRIPTION_CHANGES:
        raise WireError(
            ErrorCode.OUT_OF_RANGE,
            f"{count} subscription changes; one message carries"
            f" {MAX_SUBSCRIPTION_CHANGES} at most",
        )
    return Subscriptions(tuple((_flag(r), _topic(r)) for _ in range(count)))


def _read_ids(r: FieldReader) -> tuple[bytes, ...]:
    return tuple(r.take(MESSAGE_ID_SIZE) for _ in range(r.u16()))


def read_record(r: FieldReader) -> PeerRecord:
    """One record (``docs/protocol.md`` 9.3); addresses are checked for form
    (count, ``str8``, UTF-8), not parsed: the dialer parses what it dials."""
    peer_id = _peer_id(r)
    seqno = r.u64()
    count = r.u8()
    if count > MAX_ADDRESSES:
        raise WireError(
            ErrorCode.OUT_OF_RANGE, f"{count} addresses; a record holds 8 at most"
        )
    addresses = tuple(_read_str8(r, "address") for _ in range(count))
    return PeerRecord(peer_id, seqno, addresses, r.take(SIGNATURE_SIZE))


def _read_records(r: FieldReader) -> tuple[PeerRecord, ...]:
    return tuple(read_record(r) for _ in range(r.u8()))


def _prune(r: FieldReader) -> Prune:
    topic = _topic(r)
    backoff = r.u32()
    return Prune(topic, backoff, _read_records(r))


DECODERS: dict[int, Callable[[FieldReader], GossipWireMessage]] = {
    T_PUBLISH: _publish,
    T_SUBSCRIPTIONS: _subscriptions,
    T_IHAVE: lambda r: IHave(_topic(r), _read_ids(r)),
    T_IWANT: lambda r: IWant(_read_ids(r)),
    T_GRAFT: lambda r: Graft(_topic(r)),
    T_PRUNE: _prune,
    T_RECORDS_REQUEST: lambda r: RecordsRequest(r.u8()),
    T_RECORDS: lambda r: Records(_read_records(r)),
    T_IDONTWANT: lambda r: IDontWant(_read_ids(r)),
}


def encode(message: GossipWireMessage) -> bytes:
    """The body of a frame; ``ValueError`` if unencodable."""
    return b"".join(ENCODERS[type(message)](message))


def frame(message: GossipWireMessage) -> bytes:
    """The message as it travels (encode once, send to many peers)."""
    return framing.frame_body(encode(message))


def decode(body: bytes) -> Union[GossipWireMessage, wire.Message]:
    """Decode one frame body of any type; :class:`WireError` if malformed."""
    decoder = DECODERS.get(body[0]) if body else None
    if decoder is None:
        return wire.decode(body)
    return read_whole(body, decoder)
