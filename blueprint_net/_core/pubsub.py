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
we push on, its control entries and IDontWant ids per heartbeat -- so what
one peer sends costs the node a bounded amount and cannot spend another's.
Only what a peer provably did is charged to it: a bad signature or a
rejected message to the peer that forwarded it, never to the origin it
names.

:class:`Router` is this module's: what our publications and a peer's
messages do, and the heartbeat.  Its base,
:class:`~blueprint_net._core.gossip_mesh.Meshes`, keeps the topics, meshes,
fanout and backoffs (its states: a peer connected or departed, a topic
meshed, fanned out or neither); the
:class:`~blueprint_net._core.peer_exchange.PeerExchange` it holds
(``exchange``) keeps our record and the records peers trade;
:mod:`~blueprint_net._core.gossip_outputs` holds what it returns.
A publication's states here are: unseen, pending the validator
(``pending``), then seen and cached, or dropped.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Optional

import attrs

from blueprint_net._core.errors import PublishFailed
from blueprint_net._core.gossip_caches import (
    MessageCache,
    RateLimiter,
    RecentSet,
    SeenCache,
)
from blueprint_net._core.gossip_mesh import Meshes, PeerState, check_topic
from blueprint_net._core.gossip_outputs import (
    DROPPED,
    DUPLICATE,
    INVALID,
    Deliver,
    Dropped,
    Fault,
    Penalty,
    RouterOutput,
    Send,
    Validate,
    Verdict,
)
from blueprint_net._core.gossip_settings import GossipSettings
from blueprint_net._core.gossip_wire import (
    GossipWireMessage,
    Graft,
    IDontWant,
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
from blueprint_net._core.peer_exchange import PeerExchange
from blueprint_net._core.records import PeerRecord
from blueprint_net._core.telemetry import (
    CONTROL_OVER_BUDGET,
    FORWARD_SOURCE_RATE,
    FORWARD_UNWANTED,
    GRAFT_IGNORED,
    GRAFT_IN_BACKOFF,
    IDONTWANT_OVER_LIMIT,
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
    SUBSCRIPTIONS_NODE_FULL,
    SUBSCRIPTIONS_OVER_LIMIT,
    VALIDATION_TIMEOUT,
    VALIDATIONS,
)


@attrs.define
class _Pending:
    message: Publish
    source: PeerId
    since: float
    #: The frame body it came in (b"": encode it to forward).
    body: bytes = b""
    #: Peers that told us they have it (IDontWant) while it waits: kept
    #: here until the verdict, however long the validator takes.
    holders: set[PeerId] = attrs.Factory(set)


#: Publications up to this many bytes are forwarded in the frame body they
#: came in; larger ones are encoded again.  For those the copy is most of the
#: cost either way, and holding both forms while they wait for validation
#: would double what ``max_pending`` publications may hold.
FORWARD_AS_RECEIVED = 4096

#: A peer message's handler (each takes its own message type).

OnMessage = Callable[["Router", PeerId, Any, float], list[RouterOutput]]


class Router(Meshes):
    """One node's gossip state: its topics, meshes, caches and peers.

    The membership and mesh upkeep are its base, :class:`Meshes`; this
    class adds what our publications and the peers' messages do."""

    def __init__(
        self,
        identity: Identity,
        settings: GossipSettings,
        *,
        now: float,
        rng: Optional[random.Random] = None,
        first_seqno: Optional[int] = None,
    ) -> None:
        s = settings
        super().__init__(
            identity.peer_id,
            settings,
            rng or random.Random(),
            self._prune_records,
            MessageCache(s.history_length, s.history_gossip, s.max_cache_bytes),
        )
        #: Our record and the records peers trade (peer exchange).
        self.exchange = PeerExchange(
            identity, settings, self.rng, self.peers, self.topic_peers, self.counters
        )
        self.identity = identity
        #: The last seqno published: each is max(this + 1, the time in ns),
        #: so it is the signed publication time receivers check (9.2).
        self.seqno = 0 if first_seqno is None else first_seqno
        self.seen = SeenCache(s.seen_ttl, s.max_seen)
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

    # -- local inputs -------------------------------------------------------

    def publish(self, topic: str, data: bytes, now: float) -> list[RouterOutput]:
        """Sign and send ``data`` to ``topic``; :class:`PublishFailed` if it
        is over the topic's size cap or this node's own origin rate."""
        check_topic(topic)
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
        members = [p for p in self.mesh.get(message.topic, ()) if p not in exclude]
        holders, peers = pending.holders, self.peers
        targets = [
            p
            for p in members
            if p not in holders and message_id not in peers[p].unwanted
        ]
        self.counters[FORWARD_UNWANTED.key] += len(members) - len(targets)
        if not targets:
            return out
        if not self.forward_limit.allow(pending.source, now):
            # Cached and announced (IHave), not pushed: see forward_rate.
            self.counters[FORWARD_SOURCE_RATE.key] += 1
            return out
        out.append(Send(tuple(sorted(targets)), message, pending.body))
        return out

    def link_replaced(self, peer: PeerId, now: float) -> list[RouterOutput]:
        """``peer``'s connection was replaced by the one verified later (the
        duplicate rule kept it): what went out on the old one is sent again
        (:meth:`Meshes.link_replaced`, :meth:`PeerExchange.link_replaced`)."""
        return super().link_replaced(peer, now) + self.exchange.link_replaced(peer)

    def heartbeat(self, now: float) -> list[RouterOutput]:
        """Once per heartbeat interval: keep each mesh within D_lo..D_hi,
        refresh fanout, gossip IHave, age the caches."""
        for state in self.peers.values():
            state.new_heartbeat(self.settings.idontwant_heartbeats)
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
        self, peer: PeerId, message: GossipWireMessage, now: float, body: bytes = b""
    ) -> list[RouterOutput]:
        """A gossip message from a connected peer (others are ignored), and
        the frame body it came in, if known: a publication is forwarded in
        those very bytes, not encoded again at each hop."""
        if peer not in self.peers:
            return []
        if body and type(message) is Publish:
            return self._on_publish(peer, message, now, body)
        return HANDLERS[type(message)](self, peer, message, now)

    def _on_publish(
        self, peer: PeerId, message: Publish, now: float, body: bytes = b""
    ) -> list[RouterOutput]:
        count = self.counters
        topic = message.topic
        if topic not in self.subscribed:
            count[PUBLISH_NOT_SUBSCRIBED.key] += 1
            return []
        if len(message.data) > self.settings.max_size(topic):
            count[PUBLISH_TOO_LARGE.key] += 1
            return [Dropped(topic, DROPPED)]
        mid = message_id(message.origin, message.seqno)
        if mid in self.seen or message.origin == self.peer_id:
            count[PUBLISH_DUPLICATE.key] += 1
            return [Dropped(topic, DUPLICATE)]
        now_ns = int(now * 1e9)
        if not now_ns - self._max_age_ns <= message.seqno <= now_ns + self._skew_ns:
            count[PUBLISH_STALE.key] += 1  # too old, or in the future
            return [Dropped(topic, DROPPED)]
        if self.seen.below_floor(message.seqno):
            count[PUBLISH_POSSIBLY_SEEN.key] += 1  # its id may be evicted
            return [Dropped(topic, DUPLICATE)]
        # P's own publications (origin P, whose key the handshake proved) are
        # held to P's origin rate, checked before the signature since only P
        # can spend it; never to the budget P spends forwarding others'
        # messages, so junk P was made to forward cannot crowd them out.
        own = message.origin == peer
        if own:
            if not self.origin_limit.allow(peer, now):
                count[PUBLISH_ORIGIN_RATE.key] += 1
                return [Dropped(topic, DROPPED)]
        elif not self.peer_limit.allow(peer, now):
            count[PUBLISH_PEER_RATE.key] += 1
            return [Dropped(topic, DROPPED)]
        signed = signed_bytes(topic, message.origin, message.seqno, message.data)
        if not self.identity.verify(
            message.origin.public_key, signed, message.signature
        ):
            count[PUBLISH_INVALID_SIGNATURE.key] += 1
            return [Dropped(topic, INVALID), Penalty(peer, Fault.INVALID_SIGNATURE)]
        if not own:
            if message.origin not in self.known_origins and not (
                self.new_origin_limit.allow(peer, now)
            ):
                count[PUBLISH_NEW_ORIGIN_RATE.key] += 1
                return [Dropped(topic, DROPPED)]
            if not self.origin_limit.allow(message.origin, now):
                count[PUBLISH_ORIGIN_RATE.key] += 1
                return [Dropped(topic, DROPPED)]
        if len(self.pending) >= self.settings.max_pending:
            count[PUBLISH_VALIDATION_FULL.key] += 1
            return [Dropped(topic, DROPPED)]
        self.seen.add(mid, message.seqno)
        if len(body) > FORWARD_AS_RECEIVED:
            body = b""  # see FORWARD_AS_RECEIVED
        self.pending[mid] = _Pending(message, peer, now, body)
        out = self._dont_want(mid, message, peer)
        out.append(Validate(mid, message, peer))
        return out

    def _dont_want(
        self, mid: bytes, message: Publish, source: PeerId
    ) -> list[RouterOutput]:
        """Tell the rest of the mesh we have a large message (IDontWant):
        only now, its signature verified, since a forged copy has the id of
        the real message and must not keep it from us."""
        threshold = self.settings.idontwant_threshold
        if threshold is None or len(message.data) < threshold:
            return []
        exclude = (source, message.origin)
        # Its topic is subscribed (9.4, step 1), so it has a mesh.
        others = [p for p in self.mesh[message.topic] if p not in exclude]
        if not others:
            return []
        return [Send(tuple(sorted(others)), IDontWant((mid,)))]

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

    def _control_window(self, state: PeerState, now: float) -> None:
        """Open a new control budget interval if the last one is over (by
        time, so a node that runs no heartbeat still renews budgets)."""
        if now - state.control_since >= self.settings.heartbeat_interval:
            state.control_since = now
            state.changes = state.grafts = 0
            state.flooded = False

    def _control_flood(
        self, peer: PeerId, state: PeerState, excess: int
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
            prune = Prune(topic, s.prune_backoff, self.prune_records(topic, {peer}))
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
        return self.exchange.take(peer, message.records)

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

    def _on_idontwant(
        self, peer: PeerId, message: IDontWant, now: float
    ) -> list[RouterOutput]:
        state = self.peers[peer]
        budget = max(self.settings.max_idontwant - state.dontwants, 0)
        ids = message.message_ids[:budget]
        state.dontwants += len(ids)
        if len(ids) < len(message.message_ids):
            self.counters[IDONTWANT_OVER_LIMIT.key] += 1
        # Only an id whose copy may still go out to the peer is worth
        # keeping: one awaiting its verdict, kept with it until then if the
        # peer is in the mesh we would push it to (so at most a mesh's worth
        # of peers per pending message); or one not seen yet, kept for
        # ``idontwant_heartbeats``.
        seen, pending, unseen, beat = (
            self.seen,
            self.pending,
            state.unwanted,
            state.beat,
        )
        for mid in ids:
            waiting = pending.get(mid)
            if waiting is None:
                if mid not in seen:
                    unseen[mid] = beat
            elif peer in self.mesh.get(waiting.message.topic, ()):
                waiting.holders.add(peer)
        return []

    def _on_records_request(
        self, peer: PeerId, message: RecordsRequest, now: float
    ) -> list[RouterOutput]:
        return self.exchange.on_request(peer, message)

    def _on_records(
        self, peer: PeerId, message: Records, now: float
    ) -> list[RouterOutput]:
        return self.exchange.on_records(peer, message, now)

    # -- helpers ------------------------------------------------------------

    def _prune_records(
        self, topic: str, exclude: set[PeerId]
    ) -> tuple[PeerRecord, ...]:
        # ``exchange`` is made after the meshes, from their peers and topics.
        return self.exchange.for_prune(topic, exclude)

    def _expire(self, now: float) -> None:
        self.seen.expire(now)
        timeout = now - self.settings.validation_timeout
        for mid in [m for m, p in self.pending.items() if p.since <= timeout]:
            del self.pending[mid]
            self.counters[VALIDATION_TIMEOUT.key] += 1
        self._expire_backoffs(now)


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
    IDontWant: Router._on_idontwant,
}
