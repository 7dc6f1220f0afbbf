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
from collections.abc import Iterable
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


class RecordBook:
    """The newest verified record of each peer, at most ``limit`` of them.

    :meth:`offer` checks freshness before the signature, so a stale record
    costs a dict lookup, not a verification.  Past the limit the record
    heard of least recently goes.
    """

    def __init__(
        self,
        limit: int = 1024,
        verify: Callable[[PeerRecord], bool] = PeerRecord.verifies,
    ) -> None:
        self.limit = limit
        self._verify = verify
        self._records: dict[PeerId, PeerRecord] = {}

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, peer_id: object) -> bool:
        return peer_id in self._records

    def get(self, peer_id: PeerId) -> Optional[PeerRecord]:
        return self._records.get(peer_id)

    def records(self) -> list[PeerRecord]:
        """Every record held, least recently heard of first."""
        return list(self._records.values())

    def is_news(self, record: PeerRecord) -> bool:
        """Whether ``record`` is newer than the one held (no signature work)."""
        known = self._records.get(record.peer_id)
        return known is None or record.seqno > known.seqno

    def offer(self, record: PeerRecord) -> Optional[bool]:
        """Keep ``record`` if it is news and verifies: True if kept, False if
        stale, None if its signature is bad (the sender forged or altered it)."""
        if not self.is_news(record):
            return False
        if not self._verify(record):
            return None
        self._records.pop(record.peer_id, None)
        self._records[record.peer_id] = record
        while len(self._records) > self.limit:
            del self._records[next(iter(self._records))]
        return True

    def forget(self, peer_id: PeerId) -> None:
        self._records.pop(peer_id, None)
