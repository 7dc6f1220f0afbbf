"""The topic-gossip router (gossipsub v1.1's design), sans-IO.

Layer: core (sans-IO; imports nothing from Twisted).

Inputs are method calls -- a peer connected or disconnected, a message from
a peer, a heartbeat, a local publish, subscribe or unsubscribe, a validator's
verdict -- each with the time now as a number.  Each returns a list of
outputs for the caller to carry out, in order (see :data:`RouterOutput`): messages
to send, messages to validate and deliver, penalties for the policy layer,
and peer records discovered.  The router holds no clock, no socket and no
timer; randomness comes from the ``random.Random`` it is given, so a seeded
one makes a run repeatable.

What a peer's message does is chosen by one table, :data:`HANDLERS`.  A
publication is checked in the order ``docs/protocol.md`` section 9.4 gives:
the cheap checks (topic, size, seen, age, budget) before the signature, the
signature before anything is remembered, the application's verdict before
it is delivered or forwarded.  Every peer has budgets of its own -- the
signatures it makes us check, the new origins it brings, the messages of it
we push on, its control entries per heartbeat -- so what one peer sends
costs the node a bounded amount and cannot spend another's.  Only what a
peer provably did is charged to it: a bad signature or a rejected message to
the peer that forwarded it, never to the origin it names.
"""

from __future__ import annotations

import enum
import random
from collections import Counter
from collections.abc import Iterable
from typing import Any, Callable, Optional, Union

import attrs

from blueprint_net._core.errors import PublishFailed
from blueprint_net._core.gossip_caches import (
    MessageCache,
    RateLimiter,
    RecentSet,
    SeenCache,
)
from blueprint_net._core.gossip_settings import GossipSettings
from blueprint_net._core.gossip_wire import (
    MAX_SUBSCRIPTION_CHANGES,
    GossipWireMessage,
    Graft,
    IHave,
    IWant,
    Prune,
    Publish,
    Records,
    RecordsRequest,
    Subscriptions,
    message_id,
    signed_bytes,
)
from blueprint_net._core.identity import Identity, PeerId
from blueprint_net._core.records import DOMAIN as RECORD_DOMAIN
from blueprint_net._core.records import PeerRecord, RecordBook, sign_record
from blueprint_net._core.telemetry import (
    BACKOFF_DEPARTED_EVICTED,
    CONTROL_OVER_BUDGET,
    FORWARD_SOURCE_RATE,
    GRAFT_IGNORED,
    GRAFT_IN_BACKOFF,
    IHAVE_OVER_LIMIT,
    IWANT_OVER_LIMIT,
    PRUNE_IGNORED,
    PUBLISH_DUPLICATE,
    PUBLISH_INVALID_SIGNATURE,
    PUBLISH_NEW_ORIGIN_RATE,
    PUBLISH_NO_PEERS,
    PUBLISH_NOT_SUBSCRIBED,
    PUBLISH_ORIGIN_RATE,
    PUBLISH_PEER_RATE,
    PUBLISH_POSSIBLY_SEEN,
    PUBLISH_STALE,
    PUBLISH_TOO_LARGE,
    PUBLISH_VALIDATION_FULL,
    RECORDS_INVALID,
    RECORDS_REQUEST_OVER_LIMIT,
    RECORDS_UNSOLICITED,
    SUBSCRIPTIONS_NODE_FULL,
    SUBSCRIPTIONS_OVER_LIMIT,
    VALIDATION_TIMEOUT,
    VALIDATIONS,
)

#: Backoffs of departed peers kept for their return (the ones still
#: running), at most: past it the peer that left first loses its entries.
#: A connected peer's backoffs are its own (at most one per topic we keep a
#: mesh of, or recently left), so no peer's entries push out another's.
MAX_DEPARTED_BACKOFFS = 4096


class Verdict(enum.Enum):
    """An application validator's answer (gossipsub's three results)."""

    #: Deliver and forward.
    ACCEPT = "accept"
    #: Drop quietly: not forwarded, nobody charged (e.g. stale, not wrong).
    IGNORE = "ignore"
    #: Drop and charge the peer that forwarded it: the message is invalid.
    REJECT = "reject"


class Fault(enum.Enum):
    """What a peer provably did wrong; the policy layer prices each."""

    #: Forwarded a publication whose signature does not verify.
    INVALID_SIGNATURE = "invalid-signature"
    #: Forwarded a publication the application's validator rejected.
    REJECTED = "rejected"
    #: Sent a peer record whose signature does not verify.
    INVALID_RECORD = "invalid-record"
    #: Grafted while the backoff our own ``Prune`` set was running.
    GRAFT_IN_BACKOFF = "graft-in-backoff"
    #: Sent more subscription changes, grafts or prunes in one heartbeat
    #: interval than ``max_control_per_peer`` (charged once an interval).
    CONTROL_FLOOD = "control-flood"


@attrs.frozen
class Send:
    """Send ``message`` to each of ``peers`` (encode once).  A peer whose
    send queue is full is skipped and counted, never waited for."""

    peers: tuple[PeerId, ...]
    message: GossipWireMessage


@attrs.frozen
class Validate:
    """Run the topic's validator on ``message``, then call
    :meth:`Router.validated` with ``message_id`` and the verdict."""

    message_id: bytes
    message: Publish
    source: PeerId


@attrs.frozen
class Deliver:
    """Give ``message`` to the local handlers of its topic."""

    message: Publish


@attrs.frozen
class Penalty:
    """``peer`` did ``fault``: score it (``_policy/gossip_faults.py`` says how)."""

    peer: PeerId
    fault: Fault


@attrs.frozen
class Discovered:
    """Verified records, each newer than any held, received from ``source``:
    candidates for the connection manager, which applies bans first."""

    source: PeerId
    records: tuple[PeerRecord, ...]


RouterOutput = Union[Send, Validate, Deliver, Penalty, Discovered]


@attrs.define
class _Backoff:
    until: float
    #: Set by our Prune (a graft before ``until`` breaks it) or by theirs.
    by_us: bool
    since: float
    #: A graft in our backoff is charged only on the connection our Prune
    #: went out on: a peer that left and came back may have restarted and
    #: lost its state, or had it pushed out of its own bounded table.
    chargeable: bool = True


@attrs.define
class _Peer:
    """A connected peer, and what it has spent this heartbeat."""

    outbound: bool
    topics: set[str] = attrs.Factory(set)
    ihaves: int = 0
    asked: int = 0
    served: int = 0
    record_requests: int = 0
    #: We asked it for records and its answer has not come.
    awaiting_records: bool = False
    #: It gave us a Prune's records this heartbeat (one batch a heartbeat).
    pruned_records: bool = False
    #: Its backoffs, by topic (its own: no other peer's can push them out).
    backoffs: dict[str, _Backoff] = attrs.Factory(dict)
    #: The control budget's interval began then; subscription changes
    #: looked at and grafts and prunes taken since; charged for it yet.
    control_since: float = float("-inf")
    changes: int = 0
    grafts: int = 0
    flooded: bool = False

    def new_heartbeat(self) -> None:
        self.ihaves = self.asked = self.served = self.record_requests = 0
        self.pruned_records = False


@attrs.define
class _Pending:
    message: Publish
    source: PeerId
    since: float


#: A peer message's handler (each takes its own message type).
OnMessage = Callable[["Router", PeerId, Any, float], list[RouterOutput]]


class Router:
    """One node's gossip state: its topics, meshes, caches and peers."""

    def __init__(
        self,
        identity: Identity,
        settings: GossipSettings,
        *,
        now: float,
        rng: Optional[random.Random] = None,
        first_seqno: Optional[int] = None,
    ) -> None:
        self.identity = identity
        self.peer_id = identity.peer_id
        self.settings = s = settings
        self.rng = rng or random.Random()
        #: The last seqno published: each is max(this + 1, the time in ns),
        #: so it is the signed publication time receivers check (9.2).
        self.seqno = 0 if first_seqno is None else first_seqno
        self.peers: dict[PeerId, _Peer] = {}
        self.topic_peers: dict[str, set[PeerId]] = {}
        self.subscribed: set[str] = set()
        self.mesh: dict[str, set[PeerId]] = {}
        self.fanout: dict[str, set[PeerId]] = {}
        self.last_published: dict[str, float] = {}
        #: Running backoffs of departed peers, the first to leave first;
        #: given back if they return (:data:`MAX_DEPARTED_BACKOFFS`).
        self.departed: dict[PeerId, dict[str, _Backoff]] = {}
        self.departed_count = 0
        #: (peer, topic) subscriptions held, at most ``max_subscriptions``.
        self.subscriptions = 0
        self.seen = SeenCache(s.seen_ttl, s.max_seen)
        self.cache = MessageCache(s.history_length, s.history_gossip, s.max_cache_bytes)
        self.pending: dict[bytes, _Pending] = {}
        self.origin_limit: RateLimiter[PeerId] = RateLimiter(
            s.origin_rate, s.origin_burst, s.max_origins
        )
        self.peer_limit: RateLimiter[PeerId] = RateLimiter(
            s.peer_rate, s.peer_burst, s.max_origins
        )
        #: Origins a message of which this node accepted (the most recent
        #: ``max_origins``); a peer's publications of other origins spend
        #: its ``new_origin_rate``, so fresh keys cannot multiply its rate.
        self.known_origins: RecentSet[PeerId] = RecentSet(s.max_origins)
        #: A publication's acceptable age and lead, in its seqno's unit (ns).
        self._max_age_ns = int(s.max_message_age * 1e9)
        self._skew_ns = int(s.max_clock_skew * 1e9)
        self.new_origin_limit: RateLimiter[PeerId] = RateLimiter(
            s.new_origin_rate, s.new_origin_burst, s.max_origins
        )
        #: Messages first received from each peer that we forward.
        self.forward_limit: RateLimiter[PeerId] = RateLimiter(
            s.forward_rate, s.forward_burst, s.max_origins
        )
        self.records = RecordBook(s.max_records, self._record_verifies)
        self.own_record: Optional[PeerRecord] = None
        #: Drops and other events, by name, for status and the benchmarks.
        self.counters: Counter[str] = Counter()

    # -- local inputs -------------------------------------------------------

    def peer_connected(self, peer: PeerId, *, outbound: bool) -> list[RouterOutput]:
        """A verified connection to ``peer`` opened (``outbound`` if we
        dialed it): tell it our topics."""
        if peer in self.peers or peer == self.peer_id:
            return []
        backoffs = self.departed.pop(peer, {})  # back: its backoffs hold
        self.departed_count -= len(backoffs)
        for backoff in backoffs.values():
            backoff.chargeable = False  # ...but it may not remember ours
        self.peers[peer] = _Peer(outbound, backoffs=backoffs)
        topics = sorted(self.subscribed)
        step = MAX_SUBSCRIPTION_CHANGES
        return [
            Send((peer,), Subscriptions(tuple((True, t) for t in topics[i : i + step])))
            for i in range(0, len(topics), step)
        ]

    def peer_disconnected(self, peer: PeerId) -> list[RouterOutput]:
        """The last connection to ``peer`` closed: forget its place, keep its
        backoffs in the bounded departed table (the heartbeat expires them)."""
        state = self.peers.pop(peer, None)
        if state is None:
            return []
        for topic in state.topics:
            self._leave(topic, peer)
        self.subscriptions -= len(state.topics)
        if state.backoffs:
            self.departed[peer] = state.backoffs
            self.departed_count += len(state.backoffs)
        while self.departed_count > MAX_DEPARTED_BACKOFFS:
            gone = self.departed.pop(next(iter(self.departed)))
            self.departed_count -= len(gone)
            self.counters[BACKOFF_DEPARTED_EVICTED.key] += len(gone)
        return []

    def subscribe(self, topic: str, now: float) -> list[RouterOutput]:
        """Join ``topic``: announce it and graft a mesh (fanout peers first)."""
        _check_topic(topic)
        if topic in self.subscribed:
            return []
        if len(self.subscribed) >= self.settings.max_topics_per_peer:
            raise ValueError(
                f"subscribed to {len(self.subscribed)} topics already; peers"
                " take at most max_topics_per_peer of one peer's topics"
            )
        self.subscribed.add(topic)
        out = self._announce(True, topic)
        members = self.fanout.pop(topic, set())
        self.last_published.pop(topic, None)
        self.mesh[topic] = members
        self._fill(topic, members, self.settings.mesh_degree, now)
        if members:
            out.append(Send(tuple(sorted(members)), Graft(topic)))
        return out

    def unsubscribe(self, topic: str, now: float) -> list[RouterOutput]:
        """Leave ``topic``: announce it and prune the mesh."""
        if topic not in self.subscribed:
            return []
        self.subscribed.discard(topic)
        out = self._announce(False, topic)
        members = self.mesh.pop(topic, set())
        backoff = self.settings.unsubscribe_backoff
        for peer in members:
            self._back_off(topic, peer, now, backoff, by_us=True)
        if members:
            prune = Prune(topic, backoff, self._exchange(topic, members))
            out.append(Send(tuple(sorted(members)), prune))
        return out

    def publish(self, topic: str, data: bytes, now: float) -> list[RouterOutput]:
        """Sign and send ``data`` to ``topic``; :class:`PublishFailed` if it
        is over the topic's size cap or this node's own origin rate."""
        _check_topic(topic)
        cap = self.settings.max_size(topic)
        if len(data) > cap:
            raise PublishFailed(
                f"{len(data)} bytes exceed the size cap of {cap} for {topic!r}"
            )
        if not self.origin_limit.allow(self.peer_id, now):
            raise PublishFailed(
                f"over the publish rate of {self.settings.origin_rate}/s"
                " (peers would drop the excess)"
            )
        self.seqno = max(self.seqno + 1, int(now * 1e9))
        seqno, origin = self.seqno, self.peer_id
        signature = self.identity.sign(signed_bytes(topic, origin, seqno, data))
        message = Publish(topic, origin, seqno, data, signature)
        mid = message.message_id
        self.seen.add(mid, seqno)
        self.cache.put(mid, message)
        out: list[RouterOutput] = []
        if topic in self.subscribed:
            out.append(Deliver(message))
        targets = self._publish_targets(topic, now)
        if targets:
            out.append(Send(tuple(sorted(targets)), message))
        else:
            self.counters[PUBLISH_NO_PEERS.key] += 1
        return out

    def validated(
        self, message_id: bytes, verdict: Verdict, now: float
    ) -> list[RouterOutput]:
        """The validator's verdict on a :class:`Validate`; an id that is no
        longer pending (timed out) is ignored."""
        pending = self.pending.pop(message_id, None)
        if pending is None:
            return []
        self.counters[VALIDATIONS.key_for(verdict.value)] += 1
        if verdict is Verdict.REJECT:
            return [Penalty(pending.source, Fault.REJECTED)]
        if verdict is Verdict.IGNORE:
            return []
        message = pending.message
        self.known_origins.add(message.origin)
        self.cache.put(message_id, message)
        out: list[RouterOutput] = []
        if message.topic in self.subscribed:
            out.append(Deliver(message))
        exclude = (pending.source, message.origin)
        targets = [p for p in self.mesh.get(message.topic, ()) if p not in exclude]
        if not targets:
            return out
        if not self.forward_limit.allow(pending.source, now):
            # Cached and announced (IHave), not pushed: see forward_rate.
            self.counters[FORWARD_SOURCE_RATE.key] += 1
            return out
        out.append(Send(tuple(sorted(targets)), message))
        return out

    def set_addresses(self, addresses: Iterable[str], now: float) -> PeerRecord:
        """Sign this node's record anew (``ValueError`` for addresses a
        record cannot hold); it leads every ``Records`` answer."""
        previous = self.own_record.seqno if self.own_record is not None else 0
        seqno = max(previous + 1, int(now * 1e9))
        self.own_record = sign_record(self.identity, seqno, addresses)
        return self.own_record

    def request_records(self, peer: PeerId) -> list[RouterOutput]:
        """Ask ``peer`` for records (its own first); one answer is taken."""
        state = self.peers.get(peer)
        if state is None:
            return []
        state.awaiting_records = True
        return [Send((peer,), RecordsRequest(self.settings.prune_peers))]

    def heartbeat(self, now: float) -> list[RouterOutput]:
        """Once per heartbeat interval: keep each mesh within D_lo..D_hi,
        refresh fanout, gossip IHave, age the caches."""
        for state in self.peers.values():
            state.new_heartbeat()
        self._expire(now)
        out: list[RouterOutput] = []
        for topic in sorted(self.subscribed):
            out += self._maintain(topic, now)
        self._maintain_fanout(now)
        out += self._gossip()
        self.cache.shift()
        return out

    # -- the peer's messages ------------------------------------------------

    def receive(
        self, peer: PeerId, message: GossipWireMessage, now: float
    ) -> list[RouterOutput]:
        """A gossip message from a connected peer (others are ignored)."""
        if peer not in self.peers:
            return []
        return HANDLERS[type(message)](self, peer, message, now)

    def _on_publish(
        self, peer: PeerId, message: Publish, now: float
    ) -> list[RouterOutput]:
        count = self.counters
        topic = message.topic
        if topic not in self.subscribed:
            count[PUBLISH_NOT_SUBSCRIBED.key] += 1
            return []
        if len(message.data) > self.settings.max_size(topic):
            count[PUBLISH_TOO_LARGE.key] += 1
            return []
        mid = message_id(message.origin, message.seqno)
        if mid in self.seen or message.origin == self.peer_id:
            count[PUBLISH_DUPLICATE.key] += 1
            return []
        now_ns = int(now * 1e9)
        if not now_ns - self._max_age_ns <= message.seqno <= now_ns + self._skew_ns:
            count[PUBLISH_STALE.key] += 1  # too old, or dated in the future
            return []
        if self.seen.below_floor(message.seqno):
            count[PUBLISH_POSSIBLY_SEEN.key] += 1  # its id may have been evicted
            return []
        # P's own publications (origin P, whose key the handshake proved) are
        # held to P's origin rate, checked before the signature since only P
        # can spend it; never to the budget P spends forwarding others'
        # messages, so junk P was made to forward cannot crowd them out.
        own = message.origin == peer
        if own:
            if not self.origin_limit.allow(peer, now):
                count[PUBLISH_ORIGIN_RATE.key] += 1
                return []
        elif not self.peer_limit.allow(peer, now):
            count[PUBLISH_PEER_RATE.key] += 1
            return []
        signed = signed_bytes(topic, message.origin, message.seqno, message.data)
        if not self.identity.verify(
            message.origin.public_key, signed, message.signature
        ):
            count[PUBLISH_INVALID_SIGNATURE.key] += 1
            return [Penalty(peer, Fault.INVALID_SIGNATURE)]
        if not own:
            if message.origin not in self.known_origins and not (
                self.new_origin_limit.allow(peer, now)
            ):
                count[PUBLISH_NEW_ORIGIN_RATE.key] += 1
                return []
            if not self.origin_limit.allow(message.origin, now):
                count[PUBLISH_ORIGIN_RATE.key] += 1
                return []
        if len(self.pending) >= self.settings.max_pending:
            count[PUBLISH_VALIDATION_FULL.key] += 1
            return []
        self.seen.add(mid, message.seqno)
        self.pending[mid] = _Pending(message, peer, now)
        return [Validate(mid, message, peer)]

    def _on_subscriptions(
        self, peer: PeerId, message: Subscriptions, now: float
    ) -> list[RouterOutput]:
        state = self.peers[peer]
        self._control_window(state, now)
        budget = self.settings.max_control_per_peer - state.changes
        changes = message.changes[: max(budget, 0)]
        state.changes += len(changes)
        out = self._control_flood(peer, state, len(message.changes) - len(changes))
        topics, limit = state.topics, self.settings.max_topics_per_peer
        for subscribe, topic in changes:
            if not subscribe:
                if topic in topics:
                    topics.discard(topic)
                    self.subscriptions -= 1
                    self._leave(topic, peer)
            elif topic not in topics:
                if len(topics) >= limit:
                    self.counters[SUBSCRIPTIONS_OVER_LIMIT.key] += 1
                    continue
                if self.subscriptions >= self.settings.max_subscriptions:
                    self.counters[SUBSCRIPTIONS_NODE_FULL.key] += 1
                    continue
                topics.add(topic)
                self.subscriptions += 1
                self.topic_peers.setdefault(topic, set()).add(peer)
        return out

    def _control_window(self, state: _Peer, now: float) -> None:
        """Open a new control budget interval if the last one is over (by
        time, so a node that runs no heartbeat still renews budgets)."""
        if now - state.control_since >= self.settings.heartbeat_interval:
            state.control_since = now
            state.changes = state.grafts = 0
            state.flooded = False

    def _control_flood(
        self, peer: PeerId, state: _Peer, excess: int
    ) -> list[RouterOutput]:
        """Count ``excess`` control entries dropped; charge once an interval."""
        if excess <= 0:
            return []
        self.counters[CONTROL_OVER_BUDGET.key] += excess
        if state.flooded:
            return []
        state.flooded = True
        return [Penalty(peer, Fault.CONTROL_FLOOD)]

    def _take_graft_or_prune(
        self, peer: PeerId, now: float
    ) -> Optional[list[RouterOutput]]:
        """Spend one of ``peer``'s grafts and prunes this interval; ``None``
        if it has some left, else what to do instead (drop, maybe charge)."""
        state = self.peers[peer]
        self._control_window(state, now)
        if state.grafts < self.settings.max_control_per_peer:
            state.grafts += 1
            return None
        return self._control_flood(peer, state, 1)

    def _on_graft(self, peer: PeerId, message: Graft, now: float) -> list[RouterOutput]:
        over = self._take_graft_or_prune(peer, now)
        if over is not None:
            return over
        topic = message.topic
        members = self.mesh.get(topic)
        state = self.peers[peer]
        if members is None or topic not in state.topics:
            self.counters[GRAFT_IGNORED.key] += 1  # spam hardening: no answer
            return []
        if peer in members:
            return []
        s = self.settings
        backoff = state.backoffs.get(topic)
        if backoff is not None and backoff.by_us and backoff.until > now:
            self.counters[GRAFT_IN_BACKOFF.key] += 1
            left = max(1, round(backoff.until - now))
            out: list[RouterOutput] = [Send((peer,), Prune(topic, left))]
            if backoff.chargeable and now - backoff.since > s.graft_grace:
                out.append(Penalty(peer, Fault.GRAFT_IN_BACKOFF))
            return out
        if len(members) >= s.mesh_high and not self.peers[peer].outbound:
            self._back_off(topic, peer, now, s.prune_backoff, by_us=True)
            prune = Prune(topic, s.prune_backoff, self._exchange(topic, {peer}))
            return [Send((peer,), prune)]
        state.backoffs.pop(topic, None)
        members.add(peer)
        return []

    def _on_prune(self, peer: PeerId, message: Prune, now: float) -> list[RouterOutput]:
        over = self._take_graft_or_prune(peer, now)
        if over is not None:
            return over
        # Only a prune of a mesh we keep costs state (as go-libp2p's
        # handlePrune): any other would grow the backoff table for nothing.
        members = self.mesh.get(message.topic)
        if members is None:
            self.counters[PRUNE_IGNORED.key] += 1
            return []
        backoff = min(message.backoff, self.settings.max_backoff)
        self._back_off(message.topic, peer, now, backoff, by_us=False)
        if peer not in members:
            return []  # not a real prune: its records are not an answer
        members.discard(peer)
        state = self.peers[peer]
        if state.pruned_records or not message.records:
            return []
        state.pruned_records = True
        return self._take_records(peer, message.records)

    def _on_ihave(self, peer: PeerId, message: IHave, now: float) -> list[RouterOutput]:
        s = self.settings
        state = self.peers[peer]
        state.ihaves += 1
        if state.ihaves > s.max_ihave_messages:
            self.counters[IHAVE_OVER_LIMIT.key] += 1
            return []
        budget = s.max_ihave_length - state.asked
        if message.topic not in self.mesh or budget <= 0:
            return []
        seen, pending = self.seen, self.pending
        wanted = [
            mid
            for mid in dict.fromkeys(message.message_ids[: s.max_ihave_length])
            if mid not in seen and mid not in pending
        ]
        if not wanted:
            return []
        self.rng.shuffle(wanted)
        wanted = wanted[:budget]
        state.asked += len(wanted)
        return [Send((peer,), IWant(tuple(wanted)))]

    def _on_iwant(self, peer: PeerId, message: IWant, now: float) -> list[RouterOutput]:
        s = self.settings
        state = self.peers[peer]
        out: list[RouterOutput] = []
        for mid in dict.fromkeys(message.message_ids[: s.max_ihave_length]):
            if state.served >= s.max_ihave_length:
                self.counters[IWANT_OVER_LIMIT.key] += 1
                break
            found, times = self.cache.get_for_peer(mid, peer)
            if found is None or times > s.gossip_retransmission:
                continue
            state.served += 1
            out.append(Send((peer,), found))
        return out

    def _on_records_request(
        self, peer: PeerId, message: RecordsRequest, now: float
    ) -> list[RouterOutput]:
        state = self.peers[peer]
        state.record_requests += 1
        if state.record_requests > 1:
            self.counters[RECORDS_REQUEST_OVER_LIMIT.key] += 1
            return []
        limit = min(message.limit, self.settings.prune_peers)
        records = [self.own_record] if self.own_record is not None else []
        others = [
            r for p in sorted(self.peers) if p != peer and (r := self.records.get(p))
        ]
        # A limit of 0 leaves no room even for our own record (never < 0).
        room = max(0, limit - len(records))
        records += self.rng.sample(others, min(len(others), room))
        return [Send((peer,), Records(tuple(records[:limit])))]

    def _on_records(
        self, peer: PeerId, message: Records, now: float
    ) -> list[RouterOutput]:
        state = self.peers[peer]
        if not state.awaiting_records:
            self.counters[RECORDS_UNSOLICITED.key] += 1
            return []
        state.awaiting_records = False
        return self._take_records(peer, message.records)

    # -- helpers ------------------------------------------------------------

    def _record_verifies(self, record: PeerRecord) -> bool:
        return self.identity.verify(
            record.peer_id.public_key,
            RECORD_DOMAIN + record.unsigned(),
            record.signature,
        )

    def _take_records(
        self, peer: PeerId, records: tuple[PeerRecord, ...]
    ) -> list[RouterOutput]:
        """Keep the news among at most ``prune_peers`` records, each marked
        with its source (``peer``, and whether we dialed it: the book caps
        each source's share, the manager prefers outbound sources); one
        forged record condemns the message (the sender is charged once)."""
        state = self.peers.get(peer)
        outbound = state is not None and state.outbound
        fresh = []
        for record in records[: self.settings.prune_peers]:
            if record.peer_id == self.peer_id:
                continue
            kept = self.records.offer(record, peer, outbound=outbound)
            if kept is None:
                self.counters[RECORDS_INVALID.key] += 1
                return [Penalty(peer, Fault.INVALID_RECORD)]
            if kept:
                fresh.append(record)
        return [Discovered(peer, tuple(fresh))] if fresh else []

    def _exchange(self, topic: str, exclude: set[PeerId]) -> tuple[PeerRecord, ...]:
        """Records of other peers of ``topic`` for a Prune (peer exchange)."""
        known = [
            record
            for p in sorted(self.topic_peers.get(topic, ()))
            if p not in exclude and (record := self.records.get(p)) is not None
        ]
        count = min(len(known), self.settings.prune_peers)
        return tuple(self.rng.sample(known, count))

    def _announce(self, subscribe: bool, topic: str) -> list[RouterOutput]:
        if not self.peers:
            return []
        change = Subscriptions(((subscribe, topic),))
        return [Send(tuple(sorted(self.peers)), change)]

    def _leave(self, topic: str, peer: PeerId) -> None:
        """``peer`` is no longer in ``topic``."""
        for table in (self.topic_peers, self.mesh, self.fanout):
            members = table.get(topic)
            if members is not None:
                members.discard(peer)
        if not self.topic_peers.get(topic, True):
            del self.topic_peers[topic]

    def _back_off(
        self, topic: str, peer: PeerId, now: float, seconds: float, *, by_us: bool
    ) -> None:
        state = self.peers.get(peer)
        if state is None:
            return
        previous = state.backoffs.get(topic)
        until = now + seconds
        if previous is not None and previous.until >= until:
            return
        state.backoffs[topic] = _Backoff(until, by_us, now)

    def _candidates(self, topic: str, exclude: set[PeerId], now: float) -> list[PeerId]:
        """Peers of ``topic`` not in ``exclude`` and not backing off, sorted
        (so a seeded ``rng`` picks the same ones every run)."""
        # Our own re-graft waits a heartbeat past the backoff (gossipsub's
        # slack), so clock skew never makes it early.
        slack = self.settings.graft_grace
        peers = self.peers
        return sorted(
            p
            for p in self.topic_peers.get(topic, ())
            if p not in exclude
            and ((b := peers[p].backoffs.get(topic)) is None or b.until + slack <= now)
        )

    def _fill(
        self, topic: str, members: set[PeerId], target: int, now: float
    ) -> list[PeerId]:
        """Add random candidates to ``members`` up to ``target``; the added."""
        candidates = self._candidates(topic, members, now)
        added = self.rng.sample(candidates, min(len(candidates), target - len(members)))
        members.update(added)
        return added

    def _publish_targets(self, topic: str, now: float) -> set[PeerId]:
        if self.settings.flood_publish:
            return set(self.topic_peers.get(topic, ()))
        if topic in self.subscribed:
            return set(self.mesh[topic])
        self.last_published[topic] = now
        members = self.fanout.setdefault(topic, set())
        if not members:
            peers = sorted(self.topic_peers.get(topic, ()))
            members.update(
                self.rng.sample(peers, min(len(peers), self.settings.mesh_degree))
            )
        return set(members)

    def _expire(self, now: float) -> None:
        self.seen.expire(now)
        timeout = now - self.settings.validation_timeout
        for mid in [m for m, p in self.pending.items() if p.since <= timeout]:
            del self.pending[mid]
            self.counters[VALIDATION_TIMEOUT.key] += 1
        slack = self.settings.graft_grace
        for state in self.peers.values():
            _drop_expired(state.backoffs, slack, now)
        for peer in list(self.departed):
            backoffs = self.departed[peer]
            self.departed_count -= _drop_expired(backoffs, slack, now)
            if not backoffs:
                del self.departed[peer]

    def _maintain(self, topic: str, now: float) -> list[RouterOutput]:
        """gossipsub's mesh rules: below D_lo graft up to D; above D_hi prune
        to D keeping D_out outbound peers; short of D_out outbound, graft
        outbound peers."""
        s = self.settings
        members = self.mesh[topic]
        grafted: list[PeerId] = []
        if len(members) < s.mesh_low:
            grafted += self._fill(topic, members, s.mesh_degree, now)
        pruned: list[PeerId] = []
        if len(members) > s.mesh_high:
            shuffled = sorted(members)
            self.rng.shuffle(shuffled)
            keep = [p for p in shuffled if self.peers[p].outbound][: s.mesh_outbound]
            keep += [p for p in shuffled if p not in keep][: s.mesh_degree - len(keep)]
            pruned = [p for p in shuffled if p not in keep]
            members.intersection_update(keep)
        outbound = sum(self.peers[p].outbound for p in members)
        if len(members) >= s.mesh_low and outbound < s.mesh_outbound:
            candidates = [
                p
                for p in self._candidates(topic, members, now)
                if self.peers[p].outbound
            ]
            more = self.rng.sample(
                candidates, min(len(candidates), s.mesh_outbound - outbound)
            )
            members.update(more)
            grafted += more
        out: list[RouterOutput] = []
        if grafted:
            out.append(Send(tuple(sorted(grafted)), Graft(topic)))
        if pruned:
            for peer in pruned:
                self._back_off(topic, peer, now, s.prune_backoff, by_us=True)
            prune = Prune(topic, s.prune_backoff, self._exchange(topic, set(pruned)))
            out.append(Send(tuple(sorted(pruned)), prune))
        return out

    def _maintain_fanout(self, now: float) -> None:
        s = self.settings
        for topic in sorted(self.fanout):
            if self.last_published.get(topic, now) + s.fanout_ttl < now:
                del self.fanout[topic]
                self.last_published.pop(topic, None)
                continue
            members = self.fanout[topic]
            if len(members) < s.mesh_degree:
                peers = sorted(self.topic_peers.get(topic, set()) - members)
                members.update(
                    self.rng.sample(
                        peers, min(len(peers), s.mesh_degree - len(members))
                    )
                )

    def _gossip(self) -> list[RouterOutput]:
        """IHave the newest windows' ids to D_lazy (or ``gossip_factor`` of
        the eligible, if more) peers of each topic outside its mesh/fanout."""
        s = self.settings
        out: list[RouterOutput] = []
        groups = {**self.fanout, **self.mesh}
        for topic in sorted(groups):
            ids = self.cache.gossip_ids(topic)
            if not ids:
                continue
            members = groups[topic]
            eligible = sorted(self.topic_peers.get(topic, set()) - members)
            count = max(s.gossip_degree, int(s.gossip_factor * len(eligible)))
            targets = self.rng.sample(eligible, min(count, len(eligible)))
            if not targets:
                continue
            self.rng.shuffle(ids)
            ihave = IHave(topic, tuple(ids[: s.max_ihave_length]))
            out.append(Send(tuple(sorted(targets)), ihave))
        return out


def _drop_expired(backoffs: dict[str, _Backoff], slack: float, now: float) -> int:
    """Drop the backoffs over ``slack`` seconds ago; how many went."""
    gone = [topic for topic, b in backoffs.items() if b.until + slack <= now]
    for topic in gone:
        del backoffs[topic]
    return len(gone)


def _check_topic(topic: str) -> None:
    if not 1 <= len(topic.encode("utf-8")) <= 255:
        raise ValueError(f"topic {topic[:40]!r} is not 1 to 255 bytes of UTF-8")


#: What each peer message does: the router's one dispatch table.
HANDLERS: dict[type, OnMessage] = {
    Publish: Router._on_publish,
    Subscriptions: Router._on_subscriptions,
    Graft: Router._on_graft,
    Prune: Router._on_prune,
    IHave: Router._on_ihave,
    IWant: Router._on_iwant,
    RecordsRequest: Router._on_records_request,
    Records: Router._on_records,
}
