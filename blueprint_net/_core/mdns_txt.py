"""A signed peer record in an mDNS TXT record, and back.

Layer: core (sans-IO; imports nothing from Twisted).

In: a :class:`~blueprint_net._core.records.PeerRecord` (:func:`pack`), or
the TXT record's RDATA as it arrived from the local network
(:func:`unpack`).  Out: the RDATA to announce, or the record it carries --
not yet verified: whoever reads it verifies it like any record from a peer.

The TXT record carries the whole signed record, so nothing learned on the
LAN is taken on an unsigned word (a compact form and a fetch of the full
record would dial an address nobody signed).  A TXT string holds at most
255 bytes (RFC 6763 6.1), and a record up to some 2 KB, so the record's
bytes (as they travel in ``Records``, ``docs/protocol.md`` 9.3) are cut in
order into strings ``r0=``, ``r1=``, ... after a ``v=1`` string (binary
values are allowed, 6.5).  The whole RDATA is at most :data:`MAX_TXT`
bytes, RFC 6763 6.2's bound for a TXT record that fits one Ethernet
packet: a node whose record is longer (many long addresses) does not
announce it, and a longer TXT heard is dropped unread.
"""

from __future__ import annotations

from blueprint_net._core.errors import WireError
from blueprint_net._core.fields import read_whole
from blueprint_net._core.gossip_wire import read_record
from blueprint_net._core.records import PeerRecord

#: The largest TXT RDATA announced or read (RFC 6763 6.2).
MAX_TXT = 1300
#: The version string, first in the TXT record.
VERSION = b"v=1"
#: Record bytes per string: 255 less the longest key and its ``=``
#: (``r9=``; the 1300-byte bound leaves room for six strings).
CHUNK = 252
_KEYS = tuple(f"r{n}".encode() for n in range(10))


class MalformedTxt(ValueError):
    """A TXT record that does not carry a peer record."""


class OversizeTxt(MalformedTxt):
    """A TXT record over :data:`MAX_TXT` bytes (not read)."""


def pack(record: PeerRecord) -> bytes:
    """The TXT RDATA carrying ``record``; :class:`OversizeTxt` if it would
    be over :data:`MAX_TXT` bytes."""
    data = record.encode()
    chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
    strings = [VERSION, *(_KEYS[n] + b"=" + c for n, c in enumerate(chunks))]
    rdata = b"".join(bytes((len(s),)) + s for s in strings)
    if len(rdata) > MAX_TXT:
        raise OversizeTxt(f"the record needs {len(rdata)} bytes of TXT; {MAX_TXT} fit")
    return rdata


def unpack(rdata: bytes) -> PeerRecord:
    """The record a TXT RDATA carries, unverified; :class:`OversizeTxt`
    over :data:`MAX_TXT` bytes, :class:`MalformedTxt` for anything else
    that is not :func:`pack`'s form (unknown keys are ignored, so a later
    version may add some)."""
    if len(rdata) > MAX_TXT:
        raise OversizeTxt(f"TXT of {len(rdata)} bytes; at most {MAX_TXT} are read")
    values: dict[bytes, bytes] = {}
    position = 0
    while position < len(rdata):
        size = rdata[position]
        string = rdata[position + 1 : position + 1 + size]
        if len(string) != size:
            raise MalformedTxt("the TXT record ends inside a string")
        position += 1 + size
        key, equals, value = string.partition(b"=")
        if equals and key not in values:  # RFC 6763 6.4: the first one counts
            values[key] = value
    if values.get(b"v") != VERSION[2:]:
        raise MalformedTxt("no v=1 string: not a blueprint-net record")
    chunks = []
    for key in _KEYS:
        if key not in values:
            break
        chunks.append(values[key])
    if not chunks:
        raise MalformedTxt("no record strings (r0=...)")
    try:
        # read_whole reads a message body, whose first byte is its type.
        return read_whole(b"\x00" + b"".join(chunks), read_record)
    except WireError as error:
        raise MalformedTxt(f"not a peer record: {error}") from None
