"""Peer exchange: this node's signed record, and the records its gossip
peers trade (gossipsub v1.1's PX, and our ``RecordsRequest``).

Layer: core (sans-IO; imports nothing from Twisted).

:class:`PeerExchange` is a part the :class:`~blueprint_net._core.pubsub.Router`
holds (``router.exchange``), beside its meshes.  In: our addresses (each
with the time now as a number), our ask of a peer, a peer's
``RecordsRequest`` or ``Records`` (the router's dispatch table hands them
here), the records of a Prune the router takes.  Out:
:data:`~blueprint_net._core.gossip_outputs.RouterOutput` lists (the
``RecordsRequest`` and ``Records`` to send, ``Discovered`` news, a
``Penalty`` for a forged record), and the records a Prune carries.

What it keeps: our own record (``own_record``, re-signed with a rising
seqno), the :class:`~blueprint_net._core.records.RecordBook` of others'
(``book``, each verified before it is kept).  A peer's states here live on
its :class:`~blueprint_net._core.gossip_mesh.PeerState`: asked by us
(``awaiting_records``, until its one answer), when we may ask it again
(``records_due``), and what it has spent this heartbeat
(``record_requests``; ``pruned_records``, set by the router).

We ask a peer only when we may learn something (``docs/protocol.md``,
9.5): once per connection, then, when the caller is short of peers to
dial, a heartbeat after an answer that brought news, or ``records_refresh``
after one that brought nothing (we hold its current record and all it
gave).  A request unanswered for ``records_refresh`` may be sent again;
one whose connection was replaced is sent again at once.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable
from typing import Optional

from blueprint_net._core.gossip_mesh import PeerState
from blueprint_net._core.gossip_outputs import (
    Discovered,
    Fault,
    Penalty,
    RouterOutput,
    Send,
)
from blueprint_net._core.gossip_settings import GossipSettings
from blueprint_net._core.gossip_wire import Records, RecordsRequest
from blueprint_net._core.identity import Identity, PeerId
from blueprint_net._core.records import DOMAIN as RECORD_DOMAIN
from blueprint_net._core.records import PeerRecord, RecordBook, sign_record
from blueprint_net._core.telemetry import (
    RECORDS_INVALID,
    RECORDS_REQUEST_OVER_LIMIT,
    RECORDS_UNSOLICITED,
)


class PeerExchange:
    """Our record and the book of others'; see the module."""

    def __init__(
        self,
        identity: Identity,
        settings: GossipSettings,
        rng: random.Random,
        peers: dict[PeerId, PeerState],
        topic_peers: dict[str, set[PeerId]],
        counters: Counter[str],
    ) -> None:
        self.identity = identity
        self.settings = settings
        self.rng = rng
        #: The router's connected peers and each topic's (read, never changed).
        self.peers = peers
        self.topic_peers = topic_peers
        #: The router's counters.
        self.counters = counters
        #: Peer records (a Prune carries some of a topic's other peers').
        self.book = RecordBook(settings.max_records, self._verifies)
        self.own_record: Optional[PeerRecord] = None

    def set_addresses(self, addresses: Iterable[str], now: float) -> PeerRecord:
        """Sign this node's record anew (``ValueError`` for addresses a
        record cannot hold); it leads every ``Records`` answer."""
        previous = self.own_record.seqno if self.own_record is not None else 0
        seqno = max(previous + 1, int(now * 1e9))
        self.own_record = sign_record(self.identity, seqno, addresses)
        return self.own_record

    def request(self, peer: PeerId, now: float) -> list[RouterOutput]:
        """Ask ``peer`` for records (its own first), unless it is not due
        (see the module); one answer is taken."""
        state = self.peers.get(peer)
        if state is None or now < state.records_due:
            return []
        state.awaiting_records = True
        state.records_due = now + self.settings.records_refresh
        return [Send((peer,), RecordsRequest(self.settings.prune_peers))]

    def link_replaced(self, peer: PeerId) -> list[RouterOutput]:
        """``peer``'s connection was replaced by the one verified later (the
        duplicate rule kept it): our unanswered request is sent again, and the
        peer's next one is answered, whatever this heartbeat's count.

        Our request may have gone unread with the old connection, or been
        read and answered: the answer comes on the connection the peer
        keeps for us, the new one unless the peer had not yet replaced it
        too.  So the answer stays awaited, whichever request it answers (a
        second is counted as unsolicited), and the repeat is sent at once.
        Our answers on the old connection may be lost the same way, so the
        peer's repeat must not be refused as its second request this
        heartbeat; that is no more than a reconnect gives it.  Without
        both, the last answer could be refused or lost, and we would not
        ask again for ``records_refresh`` (a flaky end-to-end test found
        it).
        """
        state = self.peers.get(peer)
        if state is None:
            return []
        state.record_requests = 0
        if not state.awaiting_records:
            return []
        return [Send((peer,), RecordsRequest(self.settings.prune_peers))]

    def due(self, peer: PeerId, now: float) -> bool:
        """Whether :meth:`request` would ask ``peer`` now."""
        state = self.peers.get(peer)
        return state is not None and now >= state.records_due

    def for_prune(self, topic: str, exclude: set[PeerId]) -> tuple[PeerRecord, ...]:
        """Records of other peers of ``topic`` for a Prune (peer exchange)."""
        # In the order peers connected (a dict's), not sorted: a node with a
        # thousand peers would sort them at every Prune and every request.
        members = self.topic_peers.get(topic, set())
        known = [
            record
            for p in self.peers
            if p in members
            and p not in exclude
            and (record := self.book.get(p)) is not None
        ]
        count = min(len(known), self.settings.prune_peers)
        return tuple(self.rng.sample(known, count))

    def on_request(self, peer: PeerId, message: RecordsRequest) -> list[RouterOutput]:
        """A connected peer's ``RecordsRequest``: one a heartbeat is answered."""
        state = self.peers[peer]
        state.record_requests += 1
        if state.record_requests > 1:
            self.counters[RECORDS_REQUEST_OVER_LIMIT.key] += 1
            return []
        limit = min(message.limit, self.settings.prune_peers)
        records = [self.own_record] if self.own_record is not None else []
        others = [r for p in self.peers if p != peer and (r := self.book.get(p))]
        # A limit of 0 leaves no room even for our own record (never < 0).
        room = max(0, limit - len(records))
        records += self.rng.sample(others, min(len(others), room))
        return [Send((peer,), Records(tuple(records[:limit])))]

    def on_records(
        self, peer: PeerId, message: Records, now: float
    ) -> list[RouterOutput]:
        """A connected peer's ``Records``: taken only as the answer we asked
        for.  After news it may be asked again a heartbeat on, else only
        ``records_refresh`` on."""
        state = self.peers[peer]
        if not state.awaiting_records:
            self.counters[RECORDS_UNSOLICITED.key] += 1
            return []
        state.awaiting_records = False
        outputs = self.take(peer, message.records)
        settings = self.settings
        news = any(isinstance(output, Discovered) for output in outputs)
        wait = settings.heartbeat_interval if news else settings.records_refresh
        state.records_due = now + wait
        return outputs

    def take(self, peer: PeerId, records: tuple[PeerRecord, ...]) -> list[RouterOutput]:
        """Keep the news among at most ``prune_peers`` records, each marked
        with its source (``peer``, and whether we dialed it: the book caps
        each source's share, the manager prefers outbound sources); one
        forged record condemns the message (the sender is charged once)."""
        state = self.peers.get(peer)
        outbound = state is not None and state.outbound
        fresh = []
        for record in records[: self.settings.prune_peers]:
            if record.peer_id == self.identity.peer_id:
                continue
            kept = self.book.offer(record, peer, outbound=outbound)
            if kept is None:
                self.counters[RECORDS_INVALID.key] += 1
                return [Penalty(peer, Fault.INVALID_RECORD)]
            if kept:
                fresh.append(record)
        return [Discovered(peer, tuple(fresh))] if fresh else []

    def _verifies(self, record: PeerRecord) -> bool:
        return self.identity.verify(
            record.peer_id.public_key,
            RECORD_DOMAIN + record.unsigned(),
            record.signature,
        )
