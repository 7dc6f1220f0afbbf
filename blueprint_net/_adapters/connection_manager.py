"""The connection manager: keeps a node at its target number of outbound
peers, dialing candidates from signed peer records, and its inbound peers
under a cap.

Layer: adapters (a Twisted ``Service`` on the node's clock; its decisions
are ``_policy/discovery.py``'s, its record book ``_core/records.py``).

Each round (once a second): sign our record anew if our addresses changed;
if short of outbound peers, dial records' peers -- never a banned or (in
permissioned mode) unlisted id, never a banned address, each pinned to the
record's id over ``p2ptls``, preferring records we verified or learned from
peers we dialed ourselves, and subnets we have fewest peers in, at most
``dials_per_host`` a window to one host, backing off a peer that failed
(exponential, jittered); dial the bootstrap addresses while we have too few
outbound peers (``bootstrap_due``), however many inbound ones; ask a peer
(one we dialed, if any) for more records when short; and close inbound
peers past the cap once they have had time to learn records, from the most
crowded netgroup first.  Outbound peers are never trimmed.  Every new peer
is asked for records once; a peer we dialed marks its record *tried*.

Records learned only from inbound peers (peers that chose us, perhaps
Sybils racing to connect) are dialed only by a node with no bootstrap it
may dial now: a node started into a crowd of attackers takes its outbound
peers from its bootstrap's answers and onwards, never from theirs.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Sequence
from typing import Any, Callable, Optional

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.logger import Logger

from blueprint_net._adapters.facade import INode
from blueprint_net._adapters.peers import Peer
from blueprint_net._core.errors import BlueprintError, ErrorCode, ProtocolError
from blueprint_net._core.identity import PeerId
from blueprint_net._core.records import PeerRecord
from blueprint_net._core.telemetry import (
    DISCOVERY_DIAL_FAILURES,
    DISCOVERY_DIALS,
    DISCOVERY_GIVEN_UP,
    DISCOVERY_INBOUND_TRIMMED,
    DISCOVERY_RECORDS_REFUSED,
)
from blueprint_net._policy import discovery
from blueprint_net._policy.backoff import Backoff
from blueprint_net._policy.discovery import DEFAULTS as DISCOVERY_DEFAULTS
from blueprint_net._policy.discovery import DialRate, DiscoverySettings

Listening = Callable[[], list[tuple[str, int]]]

#: Records arriving start a round at once, but at most one per this many
#: seconds: a node asking hundreds of new peers for records (a bootstrap
#: node, at a network's start) makes one round of a burst of answers, not
#: one per answer -- each round looks at every peer and every record.
ROUND_GAP = 0.1


class ConnectionManager(Service):
    """Discovery and the outbound target for one node (see the module)."""

    _log = Logger()

    def __init__(
        self,
        node: INode,
        settings: DiscoverySettings = DISCOVERY_DEFAULTS,
        *,
        bootstrap: Sequence[str] = (),
        advertise: Optional[Sequence[str]] = None,
        listening: Optional[Listening] = None,
        rng: Optional[random.Random] = None,
    ) -> None:
        self.node = node
        #: The node's topic gossip, which holds the peer records.
        self.gossip = node.gossip
        self.settings = settings
        self.bootstrap = list(bootstrap)
        #: Our record's addresses as configured (``--advertise``); None:
        #: from where we listen (``discovery.advertised``).
        self.advertise = None if advertise is None else list(advertise)
        self._listening = listening or (lambda: node.listening_addresses)
        self.rng = rng or random.Random()
        self.backoff = Backoff(settings.backoff_initial, settings.backoff_max, self.rng)
        #: Dials by record to one host across ids (``dials_per_host``).
        self.dial_rate = DialRate(settings.dials_per_host, settings.dial_window)
        #: The peer that answered at each bootstrap address (not redialed
        #: while it is connected).
        self._bootstrap_ids: dict[str, PeerId] = {}
        self.dialing: dict[Any, defer.Deferred[Peer]] = {}
        #: Peers our dials reached: outbound even when the duplicate rule
        #: kept their simultaneous dial to us instead.
        self._reached: set[PeerId] = set()
        self._loop = task.LoopingCall(self.tick)
        self._loop.clock = node.clock
        self._soon: Optional[Any] = None
        #: When the next round that records start may run (``ROUND_GAP``).
        self._soon_after = float("-inf")
        self._hooked = False
        self.counters = node.counters

    # -- IService --------------------------------------------------------------

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        if not self._hooked:
            self._hooked = True
            self.node.on_peer_verified(self._verified)
            self.gossip.on_discovered(self._discovered)
            self.gossip.group_sources(self._netgroup)
        self.gossip.start()  # its heartbeat paces record requests
        self._loop.start(self.settings.interval, now=True)

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        if self._loop.running:
            self._loop.stop()
        if self._soon is not None and self._soon.active():
            self._soon.cancel()
        self._soon = None
        dialing = list(self.dialing.values())
        for waiting in dialing:
            waiting.cancel()
        return defer.succeed(None)

    # -- events ------------------------------------------------------------------

    def _verified(self, peer: Peer) -> None:
        """Every new peer is asked once for records (its own first); one we
        dialed has proved its record's id by the handshake (*tried*)."""
        if peer.direction == "outbound":
            self.gossip.mark_tried(peer.peer_id)
        self.gossip.request_records(peer.peer_id)

    def _discovered(
        self, source: Optional[PeerId], records: tuple[PeerRecord, ...]
    ) -> None:
        """Records a banned or (permissioned) unlisted id signed are dropped,
        so they are neither dialed nor passed on to other peers."""
        for record in records:
            if not self._admissible(record.peer_id):
                self.gossip.forget_record(record.peer_id)
                self.counters[DISCOVERY_RECORDS_REFUSED.key] += 1
        if self.running and self._soon is None:
            clock = self.node.clock
            # Never longer than the gap: the clock is the wall's, and if it
            # steps back the last round seems to lie in the future.
            wait = min(ROUND_GAP, max(0.0, self._soon_after - clock.seconds()))
            self._soon = clock.callLater(wait, self._tick_soon)

    def _tick_soon(self) -> None:
        self._soon = None
        self._soon_after = self.node.clock.seconds() + ROUND_GAP
        self.tick()

    # -- the round -------------------------------------------------------------

    def addresses(self) -> list[str]:
        if self.advertise is not None:
            return self.advertise
        return discovery.advertised(self._listening())

    def tick(self) -> None:
        node, settings = self.node, self.settings
        if node.stopping:
            return
        self._sign_record()
        peers = node.peers
        outbound = self.outbound(peers)
        need = settings.target_peers - len(outbound) - len(self.dialing)
        need = min(need, settings.max_dialing - len(self.dialing))
        if need > 0:
            chosen = self._candidates(peers, need)
            for peer_id, host, port in chosen:
                self._dial(peer_id, discovery.description(host, port), peer_id, host)
            if len(chosen) < need:
                self._ask_for_records(peers, outbound)
        if discovery.bootstrap_due(len(outbound), settings):
            connected = {p.peer_id for p in peers}
            for endpoint in self.bootstrap:
                if self._bootstrap_ids.get(endpoint) not in connected:
                    self._dial(endpoint, endpoint, None)
        self._trim_inbound(peers)

    def outbound(self, peers: Optional[list[Peer]] = None) -> list[Peer]:
        """Connected peers we dialed (ours, or theirs kept by the duplicate
        rule in place of ours)."""
        peers = self.node.peers if peers is None else peers
        self._reached &= {p.peer_id for p in peers}
        reached = self._reached
        return [p for p in peers if p.direction == "outbound" or p.peer_id in reached]

    def _sign_record(self) -> None:
        addresses = self.addresses()
        own = self.gossip.own_record
        if own is None or list(own.addresses) != addresses:
            try:
                self.gossip.set_addresses(addresses)
            except ValueError as error:
                self._log.error(
                    "cannot advertise {addresses}: {error}",
                    addresses=addresses,
                    error=str(error),
                )
                self.advertise = []

    def _admissible(self, peer_id: PeerId) -> bool:
        if self.node.bans.peer_ban(peer_id) is not None:
            return False
        permitted = self.node.policy.permitted
        return permitted is None or peer_id in permitted

    def _netgroup(self, peer_id: PeerId) -> Hashable:
        """The netgroup a connected peer's address is in (the record book's
        key for a source's share); the id itself when not connected."""
        peer = self.node.peer(peer_id)
        host = getattr(peer.address, "host", None) if peer is not None else None
        return peer_id if host is None else self.settings.netgroup(str(host))

    def _may_dial_unchosen(self, now: float) -> bool:
        """Whether records learned only from inbound peers may be dialed: only
        with no bootstrap to dial now (none given, or all backing off)."""
        return not any(
            self.backoff.ready(endpoint, now) or endpoint in self.dialing
            for endpoint in self.bootstrap
        )

    def _candidates(
        self, peers: list[Peer], count: int
    ) -> list[tuple[PeerId, str, int]]:
        node, settings = self.node, self.settings
        book = self.gossip.records
        connected = {p.peer_id for p in peers}
        scopes = node.dial_scopes()
        now = node.clock.seconds()
        unchosen = self._may_dial_unchosen(now)
        preferred: list[tuple[tuple[PeerId, str, int], str]] = []
        others: list[tuple[tuple[PeerId, str, int], str]] = []
        hosts_seen: set[str] = set()  # one dial a round to a host
        for entry in book.entries():
            peer_id = entry.record.peer_id
            if (
                peer_id in connected
                or peer_id in self.dialing
                or peer_id == node.peer_id
                or not self.backoff.ready(peer_id, now)
                or not self._admissible(peer_id)
            ):
                continue
            ours = entry.tried or entry.outbound or entry.source is None
            if not (ours or unchosen):
                continue
            for host, port in discovery.dial_targets(entry.record, scopes):
                if (
                    host not in hosts_seen
                    and node.bans.address_ban(host) is None
                    and self.dial_rate.allows(host, now)
                ):
                    hosts_seen.add(host)
                    pool = preferred if ours else others
                    pool.append(((peer_id, host, port), host))
                    break
        held = [str(getattr(p.address, "host", "")) for p in peers]
        chosen: list[tuple[PeerId, str, int]] = []
        for pool in (preferred, others):
            chosen += discovery.prefer_diverse(
                pool,
                held + [host for _, host, _ in chosen],
                count - len(chosen),
                self.rng,
                netgroup=settings.netgroup,
            )
        return chosen

    def _ask_for_records(self, peers: list[Peer], outbound: list[Peer]) -> None:
        """Short of candidates: one random peer, one we dialed while we have
        one, is asked for more, if it is due (its last answer brought news,
        or is ``records_refresh`` old: ``GossipSettings``)."""
        due = self.gossip.records_due
        ask = [p for p in outbound or peers if due(p.peer_id)]
        if ask:
            self.gossip.request_records(self.rng.choice(ask).peer_id)

    def _dial(
        self, key: Any, endpoint: str, peer_id: Optional[PeerId], host: str = ""
    ) -> None:
        now = self.node.clock.seconds()
        if key in self.dialing or not self.backoff.ready(key, now):
            return
        if peer_id is not None:
            self.dial_rate.dialed(host, now)
        self.counters[DISCOVERY_DIALS.key] += 1
        dialing = self.node.connect(endpoint, peer_id)
        self.dialing[key] = dialing
        dialing.addCallbacks(
            lambda peer: self._dialed(key, peer),
            lambda failure: self._dial_failed(key, endpoint, failure),
        )

    def _dialed(self, key: Any, peer: Peer) -> None:
        self.dialing.pop(key, None)
        self._reached.add(peer.peer_id)
        self.backoff.succeeded(key)
        if isinstance(key, str):  # a bootstrap address: who answers there
            self._bootstrap_ids[key] = peer.peer_id
        self.gossip.mark_tried(peer.peer_id)

    def _dial_failed(self, key: Any, endpoint: str, failure: Any) -> None:
        self.dialing.pop(key, None)
        if failure.check(defer.CancelledError):
            return
        delay = self.backoff.failed(key, self.node.clock.seconds())
        self.counters[DISCOVERY_DIAL_FAILURES.key] += 1
        error = failure.value
        if (
            isinstance(key, PeerId)
            and self.backoff.failures(key) >= self.settings.give_up_after
        ):  # it left: see DiscoverySettings.give_up_after
            self.gossip.forget_record(key)
            self.counters[DISCOVERY_GIVEN_UP.key] += 1
        self._log.debug(
            "dial {endpoint} failed ({error}); next try in {delay:.1f} s",
            endpoint=endpoint,
            error=str(error) if isinstance(error, BlueprintError) else repr(error),
            delay=delay,
        )

    def _trim_inbound(self, peers: list[Peer]) -> None:
        """Inbound peers past the cap, once past their grace, from the
        netgroup holding the most inbound peers first; outbound peers (ours,
        or kept in place of ours) are never trimmed."""
        settings = self.settings
        now = self.node.clock.seconds()
        inbound = [p for p in peers if p.direction == "inbound"]
        inbound = [p for p in inbound if p.peer_id not in self._reached]
        excess = len(inbound) - settings.inbound_cap
        if excess <= 0:
            return
        old = [
            (p.peer_id, settings.netgroup(str(getattr(p.address, "host", ""))))
            for p in inbound
            if now - p.since >= settings.inbound_grace
        ]
        for peer_id in discovery.evict_inbound(old, excess, self.rng):
            self.counters[DISCOVERY_INBOUND_TRIMMED.key] += 1
            self.node.disconnect(
                peer_id,
                ProtocolError(ErrorCode.CONNECTION_LIMIT, "too many inbound peers"),
            )
