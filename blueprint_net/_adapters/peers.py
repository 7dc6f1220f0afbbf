"""The peer table: every open connection, one kept per verified peer id, and
what belongs to a peer rather than to any one of its connections.

Layer: adapters (holds the Twisted protocols; decides nothing about I/O).

Two connections to the same peer (both dialed at once, or a reconnect before
the old socket noticed it was dead) are resolved here by one rule that both
ends apply to the same bytes, so both keep the same one.  A peer's request
budget lives in its entry, not on a connection: the connection kept by the
duplicate rule spends the same budget as the one it replaced, and a peer that
disconnects leaves its budget behind (the most recent ``remembered`` of them,
least recently used dropped first) for its next connection to spend: a
reconnect does not refill it.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Iterator
from typing import Callable, Optional

import attrs
from twisted.internet.interfaces import IAddress

from blueprint_net._adapters.protocol import PeerProtocol
from blueprint_net._core.identity import PeerId
from blueprint_net._policy.limits import TokenBucket


@attrs.frozen
class Peer:
    """A verified peer as the application sees it."""

    peer_id: PeerId
    address: IAddress
    since: float
    direction: str  # "inbound" or "outbound"
    #: Requests received from and sent to the peer on this connection.
    requests_in: int = 0
    requests_out: int = 0


@attrs.define
class _Entry:
    protocol: PeerProtocol
    #: The peer's request rate limit; None when requests are not limited.
    budget: Optional[TokenBucket]


@attrs.frozen
class Verified:
    """What :meth:`PeerTable.verified` decided for a newly verified
    connection: ``new`` when the peer id was not connected before (announce
    it), ``dropped``, the connection the duplicate rule closes, if any, and
    ``replaced`` when that is the one kept before (the new one took over)."""

    new: bool
    dropped: Optional[PeerProtocol] = None
    replaced: bool = False


def prefer(a: PeerProtocol, b: PeerProtocol) -> bool:
    """Whether to keep ``a`` over ``b``, two verified connections to one peer.

    Both ends see the same two nonces on each connection, so comparing them
    picks the same survivor on both sides, whichever end dialed and in
    whatever order the handshakes completed.
    """
    return a.session_key < b.session_key


class PeerTable:
    """Open connections, the verified one kept for each peer id, and the
    request budgets of peers connected now or recently."""

    def __init__(self, remembered: int = 4096) -> None:
        #: Every connection past ``connectionMade`` and not yet lost.
        self.open: set[PeerProtocol] = set()
        self._verified: dict[PeerId, _Entry] = {}
        #: Open verified connections (kept or not), and how many per peer
        #: id: asked on every handshake, so counted rather than scanned.
        self._counted: set[PeerProtocol] = set()
        self._proven: Counter[PeerId] = Counter()
        #: Budgets of peers no longer connected, least recently used first.
        self._recent: OrderedDict[PeerId, Optional[TokenBucket]] = OrderedDict()
        self.remembered = remembered

    def __len__(self) -> int:
        return len(self._verified)

    def __iter__(self) -> Iterator[PeerId]:
        return iter(self._verified)

    def __getitem__(self, peer_id: PeerId) -> PeerProtocol:
        return self._verified[peer_id].protocol

    def get(self, peer_id: PeerId) -> Optional[PeerProtocol]:
        """The connection kept for ``peer_id``, if it is connected."""
        entry = self._verified.get(peer_id)
        return None if entry is None else entry.protocol

    def protocols(self) -> list[PeerProtocol]:
        """The kept connection of every verified peer."""
        return [entry.protocol for entry in self._verified.values()]

    def budget(self, peer_id: PeerId) -> Optional[TokenBucket]:
        entry = self._verified.get(peer_id)
        return None if entry is None else entry.budget

    @property
    def remembered_budgets(self) -> int:
        """Budgets kept for peers that are not connected now."""
        return len(self._recent)

    def connections_of(self, peer_id: PeerId) -> int:
        """Open verified connections to ``peer_id`` (kept or not)."""
        return self._proven[peer_id]

    def opened(self, protocol: PeerProtocol) -> None:
        self.open.add(protocol)

    def verified(
        self,
        protocol: PeerProtocol,
        new_budget: Callable[[], Optional[TokenBucket]],
    ) -> Verified:
        """Record a connection that completed its handshake.  A peer not
        connected now gets back the budget it left with, if it is still
        remembered, else ``new_budget()``."""
        peer_id = protocol.peer_id
        assert peer_id is not None
        if protocol in self.open and protocol not in self._counted:
            self._counted.add(protocol)
            self._proven[peer_id] += 1
        entry = self._verified.get(peer_id)
        if entry is None:
            if peer_id in self._recent:
                budget = self._recent.pop(peer_id)
            else:
                budget = new_budget()
            self._verified[peer_id] = _Entry(protocol, budget)
            return Verified(new=True)
        if prefer(entry.protocol, protocol):
            return Verified(new=False, dropped=protocol)
        dropped, entry.protocol = entry.protocol, protocol
        return Verified(new=False, dropped=dropped, replaced=True)

    def closed(self, protocol: PeerProtocol) -> bool:
        """Forget a lost connection; whether its peer is now gone (it was the
        connection kept for a verified peer).  A gone peer's budget is
        remembered, the least recently used forgotten past ``remembered``."""
        self.open.discard(protocol)
        peer_id = protocol.peer_id
        if protocol in self._counted:
            self._counted.discard(protocol)
            assert peer_id is not None
            self._proven[peer_id] -= 1
            if not self._proven[peer_id]:
                del self._proven[peer_id]
        entry = None if peer_id is None else self._verified.get(peer_id)
        if entry is None or entry.protocol is not protocol:
            return False
        assert peer_id is not None
        del self._verified[peer_id]
        if self.remembered > 0:
            self._recent[peer_id] = entry.budget
            while len(self._recent) > self.remembered:
                self._recent.popitem(last=False)
        return True


def describe(protocol: PeerProtocol) -> Peer:
    """The application's view of a verified connection."""
    assert protocol.peer_id is not None and protocol.verified_at is not None
    return Peer(
        peer_id=protocol.peer_id,
        address=protocol.address,
        since=protocol.verified_at,
        direction="outbound" if protocol.initiator else "inbound",
        requests_in=protocol.requests_in,
        requests_out=protocol.sender.requests_out,
    )
