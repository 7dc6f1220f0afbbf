"""Who is in which topic, and the meshes gossipsub keeps of them.

Layer: core (sans-IO; imports nothing from Twisted).

:class:`Meshes` is the router's membership half, and its base class: the
connected peers (:class:`PeerState`), the topics each announced, the mesh
of each topic we subscribe to, the fanout of each we only publish to, and
the backoffs that keep a pruned peer out for a while (kept for a departed
peer too, in a bounded table, in case it comes back).

In: a peer connected, left or had its connection replaced, we subscribe
or unsubscribe, and the heartbeat's upkeep (each with the time now as a
number).  Out:
:data:`~blueprint_net._core.gossip_outputs.RouterOutput` lists (the
``Subscriptions``, ``Graft``, ``Prune`` and ``IHave`` to send).  States: a
peer is connected (in ``peers``) or departed (its running backoffs in
``departed``); a topic is in our mesh (subscribed), in our fanout
(published to lately) or neither.  Each mesh is kept between D_lo and D_hi
with D_out outbound peers; randomness comes from the ``rng`` given, so a
seeded one makes a run repeatable.  What a peer's *message* does is
:mod:`~blueprint_net._core.pubsub`'s.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Callable

import attrs

from blueprint_net._core.gossip_caches import MessageCache
from blueprint_net._core.gossip_outputs import RouterOutput, Send
from blueprint_net._core.gossip_settings import GossipSettings
from blueprint_net._core.gossip_wire import (
    MAX_SUBSCRIPTION_CHANGES,
    Graft,
    IHave,
    Prune,
    Subscriptions,
)
from blueprint_net._core.identity import PeerId
from blueprint_net._core.records import PeerRecord
from blueprint_net._core.telemetry import BACKOFF_DEPARTED_EVICTED

#: Backoffs of departed peers kept for their return (the ones still
#: running), at most: past it the peer that left first loses its entries.
#: A connected peer's backoffs are its own (at most one per topic we keep a
#: mesh of, or recently left), so no peer's entries push out another's.
MAX_DEPARTED_BACKOFFS = 4096


@attrs.define
class Backoff:
    until: float
    #: Set by our Prune (a graft before ``until`` breaks it) or by theirs.
    by_us: bool
    since: float
    #: A graft in our backoff is charged only on the connection our Prune
    #: went out on: a peer that left and came back may have restarted and
    #: lost its state, or had it pushed out of its own bounded table.
    chargeable: bool = True


@attrs.define
class PeerState:
    """A connected peer, and what it has spent this heartbeat."""

    outbound: bool
    topics: set[str] = attrs.Factory(set)
    ihaves: int = 0
    asked: int = 0
    served: int = 0
    record_requests: int = 0
    #: We asked it for records and its answer has not come.
    awaiting_records: bool = False
    #: We ask it for records again no sooner (see ``PeerExchange.request``).
    records_due: float = float("-inf")
    #: It gave us a Prune's records this heartbeat (one batch a heartbeat).
    pruned_records: bool = False
    #: Its backoffs, by topic (its own: no other peer's can push them out).
    backoffs: dict[str, Backoff] = attrs.Factory(dict)
    #: ``Meshes.our_changes`` when it connected (see ``Meshes.left``).
    joined: int = 0
    #: The control budget's interval began then; subscription changes
    #: looked at and grafts and prunes taken since; charged for it yet.
    control_since: float = float("-inf")
    changes: int = 0
    grafts: int = 0
    flooded: bool = False
    #: Ids it told us it has (IDontWant), each with the heartbeat it came
    #: in (a plain dict: the forwarding path asks it once per mesh peer),
    #: the heartbeats counted, and how many of its ids we looked at in
    #: this one.
    unwanted: dict[bytes, int] = attrs.Factory(dict)
    beat: int = 0
    dontwants: int = 0
    #: A replacement offered it our cached ids this heartbeat (one offer a
    #: heartbeat, however often a peer gets its connections replaced).
    offered: bool = False

    def new_heartbeat(self, idontwant_heartbeats: int) -> None:
        """A new heartbeat: budgets renewed, IDontWant ids that came
        ``idontwant_heartbeats`` heartbeats ago or more gone."""
        self.ihaves = self.asked = self.served = self.record_requests = 0
        self.dontwants = 0
        self.pruned_records = self.offered = False
        self.beat += 1
        if self.unwanted:
            oldest = self.beat - idontwant_heartbeats + 1
            self.unwanted = {m: b for m, b in self.unwanted.items() if b >= oldest}


class Meshes:
    """The topics, meshes, fanout and backoffs of one node's peers."""

    def __init__(
        self,
        peer_id: PeerId,
        settings: GossipSettings,
        rng: random.Random,
        prune_records: Callable[[str, set[PeerId]], tuple[PeerRecord, ...]],
        cache: MessageCache,
    ) -> None:
        self.peer_id = peer_id
        self.settings = settings
        self.rng = rng
        self.peers: dict[PeerId, PeerState] = {}
        self.topic_peers: dict[str, set[PeerId]] = {}
        self.subscribed: set[str] = set()
        self.mesh: dict[str, set[PeerId]] = {}
        self.fanout: dict[str, set[PeerId]] = {}
        self.last_published: dict[str, float] = {}
        #: Running backoffs of departed peers, the first to leave first;
        #: given back if they return (:data:`MAX_DEPARTED_BACKOFFS`).
        self.departed: dict[PeerId, dict[str, Backoff]] = {}
        self.departed_count = 0
        #: (peer, topic) subscriptions held, at most ``max_subscriptions``.
        self.subscriptions = 0
        #: Our subscription changes so far, and the topics we left, each
        #: with that count when we left it (the ``max_topics_per_peer``
        #: latest): a replaced connection repeats the leaves since its peer
        #: connected (:meth:`link_replaced`).
        self.our_changes = 0
        self.left: dict[str, int] = {}
        #: Records of a topic's other peers for a Prune, those excepted (the
        #: router's ``PeerExchange.for_prune``).
        self.prune_records = prune_records
        #: Recent messages (the heartbeat gossips their ids).
        self.cache = cache
        #: Drops and other events, by name, for status and the benchmarks.
        self.counters: Counter[str] = Counter()

    def peer_connected(self, peer: PeerId, *, outbound: bool) -> list[RouterOutput]:
        """A verified connection to ``peer`` opened (``outbound`` if we
        dialed it): tell it our topics."""
        if peer in self.peers or peer == self.peer_id:
            return []
        backoffs = self.departed.pop(peer, {})  # back: its backoffs hold
        self.departed_count -= len(backoffs)
        for backoff in backoffs.values():
            backoff.chargeable = False  # ...but it may not remember ours
        self.peers[peer] = PeerState(
            outbound, backoffs=backoffs, joined=self.our_changes
        )
        return self._our_topics(peer)

    def link_replaced(self, peer: PeerId, now: float) -> list[RouterOutput]:
        """``peer``'s connection was replaced by the one verified later
        (the duplicate rule kept it): what we sent on the old one may have
        gone with it unread, so it is said again on the new one, each
        message idempotent at the peer: our topics, the topics we left
        since it connected, a graft for each mesh it is in, a prune for
        each backoff we set it that still runs, and an IHave of the ids we
        would gossip (:meth:`_offer`; publications are not repeated: it asks
        for those it lacks) (``docs/protocol.md`` 9.5).

        Its prunes may have gone the same way, so a graft from it in our
        backoff is no longer charged (as for a peer that comes back)."""
        state = self.peers.get(peer)
        if state is None:
            return []
        gone = [topic for topic, when in self.left.items() if when > state.joined]
        out = self._our_topics(peer) + self._tell(peer, False, gone)
        for topic in sorted(self.mesh):
            if peer in self.mesh[topic]:
                out.append(Send((peer,), Graft(topic)))
        for topic, backoff in sorted(state.backoffs.items()):
            backoff.chargeable = False
            if backoff.by_us and backoff.until > now:
                left = max(1, round(backoff.until - now))
                out.append(Send((peer,), Prune(topic, left)))
        if not state.offered:
            state.offered = True
            out += self._offer(peer, state)
        return out

    def _offer(self, peer: PeerId, state: PeerState) -> list[RouterOutput]:
        """An IHave of the ids we would gossip, for at most
        ``max_ihave_messages`` of the peer's topics (a receiver reads no more
        from one peer a heartbeat): first those we push publications to it
        in (its meshes and fanouts), newest ids first."""
        s = self.settings
        # Only the topics heartbeat gossip covers (the ones we keep a mesh
        # or fanout of), so an offer costs no more than a heartbeat's.
        groups = {**self.fanout, **self.mesh}
        ours = [t for t in state.topics if t in groups]
        pushed = sorted(ours, key=lambda t: (peer not in groups[t], t))
        out: list[RouterOutput] = []
        for topic in pushed:
            if len(out) == s.max_ihave_messages:
                break
            ids = self.cache.gossip_ids(topic)[: s.max_ihave_length]
            if ids:
                out.append(Send((peer,), IHave(topic, tuple(ids))))
        return out

    def _our_topics(self, peer: PeerId) -> list[RouterOutput]:
        """Every topic we subscribe to, announced to ``peer``."""
        return self._tell(peer, True, sorted(self.subscribed))

    @staticmethod
    def _tell(peer: PeerId, subscribe: bool, topics: list[str]) -> list[RouterOutput]:
        step = MAX_SUBSCRIPTION_CHANGES
        return [
            Send(
                (peer,),
                Subscriptions(tuple((subscribe, t) for t in topics[i : i + step])),
            )
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
        check_topic(topic)
        if topic in self.subscribed:
            return []
        if len(self.subscribed) >= self.settings.max_topics_per_peer:
            raise ValueError(
                f"subscribed to {len(self.subscribed)} topics already; peers"
                " take at most max_topics_per_peer of one peer's topics"
            )
        self.subscribed.add(topic)
        self.our_changes += 1
        self.left.pop(topic, None)
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
        self.our_changes += 1
        self.left[topic] = self.our_changes
        if len(self.left) > self.settings.max_topics_per_peer:
            del self.left[next(iter(self.left))]
        out = self._announce(False, topic)
        members = self.mesh.pop(topic, set())
        backoff = self.settings.unsubscribe_backoff
        for peer in members:
            self._back_off(topic, peer, now, backoff, by_us=True)
        if members:
            prune = Prune(topic, backoff, self.prune_records(topic, members))
            out.append(Send(tuple(sorted(members)), prune))
        return out

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
        state.backoffs[topic] = Backoff(until, by_us, now)

    def _expire_backoffs(self, now: float) -> None:
        """Drop every backoff over the grace past its end, connected or
        departed (the heartbeat's part of the backoff tables)."""
        slack = self.settings.graft_grace
        for state in self.peers.values():
            drop_expired(state.backoffs, slack, now)
        for peer in list(self.departed):
            backoffs = self.departed[peer]
            self.departed_count -= drop_expired(backoffs, slack, now)
            if not backoffs:
                del self.departed[peer]

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
            prune = Prune(
                topic, s.prune_backoff, self.prune_records(topic, set(pruned))
            )
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


def drop_expired(backoffs: dict[str, Backoff], slack: float, now: float) -> int:
    """Drop the backoffs over ``slack`` seconds ago; how many went."""
    gone = [topic for topic, b in backoffs.items() if b.until + slack <= now]
    for topic in gone:
        del backoffs[topic]
    return len(gone)


def check_topic(topic: str) -> None:
    if not 1 <= len(topic.encode("utf-8")) <= 255:
        raise ValueError(f"topic {topic[:40]!r} is not 1 to 255 bytes of UTF-8")
