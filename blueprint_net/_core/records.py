"""Signed peer records: where a peer says it can be reached, in its own hand.

Layer: core (sans-IO; imports nothing from Twisted).

Modelled on libp2p's signed peer records: a record names a peer, a sequence
number and the peer's addresses, and is signed by that peer's key under a
domain of its own, so a record can be relayed by anyone (in a ``Prune``'s
peer exchange, in a ``Records`` answer) but forged by no one.  A higher
sequence number replaces a lower one; nothing else does, so a relay cannot
roll a peer back to addresses it has given up.

An address is ``host:port`` (``[v6]:port`` for IPv6) and nothing else: a
receiver dials only what it can parse as that, after its own ban and
allow-list checks.  No endpoint-description surface (``unix:``, plugins)
crosses the network.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from collections import Counter
from collections.abc import Hashable, Iterable
from typing import Callable, Optional

import attrs

from blueprint_net._core import signatures
from blueprint_net._core.identity import Identity, PeerId

#: Signatures over records, and only over records, start with this.
DOMAIN = b"blueprint-net/peer-record/v1\x00"
#: Addresses one record may hold, and the longest one (its ``str8`` field).
MAX_ADDRESSES = 8
MAX_ADDRESS_LENGTH = 255

_U64 = struct.Struct("!Q")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
# Labels separated by single dots: a name splits into labels one way only,
# so a peer's text cannot make the match backtrack exponentially.
_HOSTNAME = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(?:\.{_LABEL})*\.?")
_ADDRESS = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]{2,45})\]|(?P<host>[^:\[\]]+)):(?P<port>\d{1,5})"
)


def parse_address(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` as (host, port); ``ValueError`` for
    anything else (a port outside 1..65535, a host that is not a name)."""
    match = _ADDRESS.fullmatch(text)
    if match is None:
        raise ValueError(f"address {text!r} is not host:port or [v6]:port")
    port = int(match["port"])
    if not 1 <= port <= 65535 or match["port"] != str(port):
        raise ValueError(f"address {text!r}: port must be 1 to 65535, unpadded")
    if match["v6"] is not None:
        try:
            return str(ipaddress.IPv6Address(match["v6"])), port
        except ValueError:
            raise ValueError(f"address {text!r}: not an IPv6 address") from None
    host = match["host"]
    if _HOSTNAME.fullmatch(host) is None:
        raise ValueError(f"address {text!r}: {host!r} is not a host name or IPv4")
    return host, port


def check_addresses(addresses: Iterable[str]) -> tuple[str, ...]:
    """The addresses as a tuple, if a record may carry them; else ``ValueError``."""
    addresses = tuple(addresses)
    if len(addresses) > MAX_ADDRESSES:
        raise ValueError(f"a record holds at most {MAX_ADDRESSES} addresses")
    for address in addresses:
        if len(address.encode("utf-8")) > MAX_ADDRESS_LENGTH:
            raise ValueError(f"address {address[:40]!r}... is over 255 bytes")
        parse_address(address)
    return addresses


@attrs.frozen
class PeerRecord:
    """One peer's addresses, as of ``seqno``, signed by that peer."""

    peer_id: PeerId
    seqno: int
    addresses: tuple[str, ...]
    signature: bytes

    def unsigned(self) -> bytes:
        """The record's fields as they travel, without the signature:
        ``peer_id``, ``seqno: u64``, ``count: u8``, ``count`` x ``str8``."""
        parts = [bytes((len(self.peer_id.binary),)), self.peer_id.binary]
        parts += [_U64.pack(self.seqno), bytes((len(self.addresses),))]
        for address in self.addresses:
            data = address.encode("utf-8")
            parts += [bytes((len(data),)), data]
        return b"".join(parts)

    def encode(self) -> bytes:
        """The record as it travels: :meth:`unsigned`, then the signature."""
        return self.unsigned() + self.signature

    def verifies(self, backend: Optional[signatures.ISignatureBackend] = None) -> bool:
        """Whether the peer it names signed it (the strict rule)."""
        return signatures.verify(
            self.peer_id.public_key, DOMAIN + self.unsigned(), self.signature, backend
        )


def sign_record(identity: Identity, seqno: int, addresses: Iterable[str]) -> PeerRecord:
    """This node's record; ``ValueError`` for addresses a record cannot hold."""
    if not 0 <= seqno < 2**64:
        raise ValueError("a record's seqno is a u64")
    unsigned = PeerRecord(identity.peer_id, seqno, check_addresses(addresses), b"")
    return attrs.evolve(unsigned, signature=identity.sign(DOMAIN + unsigned.unsigned()))


@attrs.define
class Entry:
    """A held record and its provenance."""

    record: PeerRecord
    #: The peer that first gave it to us; None: ourselves (the application).
    source: Optional[PeerId]
    #: Its netgroup's key (``RecordBook.netgroup`` of the source's peer).
    group: Hashable
    #: Learned from a peer we dialed (chose ourselves), at least once.
    outbound: bool
    #: We completed a handshake with its peer (Bitcoin's "tried" table):
    #: verified by us, not by whoever relayed it.
    tried: bool = False


class RecordBook:
    """The newest verified record of each peer, at most ``limit`` of them.

    :meth:`offer` checks freshness before the signature, so a stale record
    costs a dict lookup, not a verification.  What goes when the book is
    full (Bitcoin Core's tried and new tables, in one book):

    * records of peers we connected to (*tried*) stay while any unverified
      record is left to go; among tried ones, the least recently heard of
      goes;
    * one source -- the sending peer, and its netgroup -- holds at most
      ``share`` unverified records (``limit // 8``: eight sources are needed
      to fill the unverified part, and one netgroup of Sybils counts as one
      source); past it, the source's own oldest goes;
    * otherwise the oldest unverified record of the source holding the most.

    ``netgroup`` maps a source peer to its subnet's key; the connection
    manager sets it (the sans-IO router knows no addresses), and until then
    each peer is its own netgroup.
    """

    def __init__(
        self,
        limit: int = 1024,
        verify: Callable[[PeerRecord], bool] = PeerRecord.verifies,
    ) -> None:
        self.limit = limit
        self.share = max(1, limit // 8)
        self._verify = verify
        self._entries: dict[PeerId, Entry] = {}
        self.netgroup: Callable[[PeerId], Hashable] = lambda peer: peer

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, peer_id: object) -> bool:
        return peer_id in self._entries

    def get(self, peer_id: PeerId) -> Optional[PeerRecord]:
        entry = self._entries.get(peer_id)
        return None if entry is None else entry.record

    def entry(self, peer_id: PeerId) -> Optional[Entry]:
        """The record of ``peer_id`` with its provenance."""
        return self._entries.get(peer_id)

    def records(self) -> list[PeerRecord]:
        """Every record held, least recently heard of first."""
        return [entry.record for entry in self._entries.values()]

    def entries(self) -> list[Entry]:
        """Every entry held, least recently heard of first."""
        return list(self._entries.values())

    def is_news(self, record: PeerRecord) -> bool:
        """Whether ``record`` is newer than the one held (no signature work)."""
        known = self._entries.get(record.peer_id)
        return known is None or record.seqno > known.record.seqno

    def offer(
        self,
        record: PeerRecord,
        source: Optional[PeerId] = None,
        *,
        outbound: bool = False,
    ) -> Optional[bool]:
        """Keep ``record`` (sent by peer ``source``, ``outbound`` if we
        dialed it; None: by ourselves) if it is news and verifies: True if
        kept, False if stale, None if its signature is bad (the sender
        forged or altered it)."""
        if not self.is_news(record):
            return False
        if not self._verify(record):
            return None
        entry = self._entries.pop(record.peer_id, None)
        if entry is not None:
            # The peer's own newer word: it keeps its provenance (the first
            # source still answers for it), and gains an outbound one.
            entry.record = record
            entry.outbound = entry.outbound or (source is not None and outbound)
        else:
            group = None if source is None else self.netgroup(source)
            entry = Entry(record, source, group, source is not None and outbound)
            if source is not None:
                self._cap_source(entry)
        self._entries[record.peer_id] = entry
        while len(self._entries) > self.limit:
            self._evict()
        return True

    def mark_tried(self, peer_id: PeerId) -> None:
        """We completed a handshake with ``peer_id``: its record is ours now."""
        entry = self._entries.get(peer_id)
        if entry is not None:
            entry.tried = True

    def forget(self, peer_id: PeerId) -> None:
        self._entries.pop(peer_id, None)

    def _cap_source(self, new: Entry) -> None:
        """Make room within ``new``'s source's share of unverified records
        (its peer's and its netgroup's), from that source's oldest."""
        mine = [
            e
            for e in self._entries.values()
            if not e.tried
            and e.source is not None
            and (e.source == new.source or e.group == new.group)
        ]
        for old in mine[: max(0, len(mine) - self.share + 1)]:
            del self._entries[old.record.peer_id]

    def _evict(self) -> None:
        """The oldest unverified record of the source holding the most, or
        the oldest tried one if none is unverified."""
        untried = [e for e in self._entries.values() if not e.tried]
        if not untried:
            del self._entries[next(iter(self._entries))]
            return
        held = Counter(e.group if e.source is not None else None for e in untried)
        largest = max(held.values())
        for e in untried:  # oldest first
            if held[e.group if e.source is not None else None] == largest:
                del self._entries[e.record.peer_id]
                return
