"""The gossip router, driven directly and in a simulated network.

Every frame between simulated routers goes through ``gossip_wire.encode``
and ``gossip_wire.decode``, so the codec is exercised too.  Randomness is seeded, time
is a number: every run is the same.
"""

from __future__ import annotations

import random
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from typing import Any, Callable

import attrs
import pytest

from blueprint_net._core import gossip_wire
from blueprint_net._core.errors import ConfigurationError, ErrorCode, PublishFailed
from blueprint_net._core.gossip_caches import RateLimiter, SeenCache
from blueprint_net._core.gossip_outputs import (
    Deliver,
    Discovered,
    Dropped,
    Fault,
    Penalty,
    RouterOutput,
    Send,
    Validate,
    Verdict,
)
from blueprint_net._core.gossip_settings import DEFAULTS, GossipSettings
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
from blueprint_net._core.pubsub import FORWARD_AS_RECEIVED, Router
from blueprint_net._core.records import sign_record
from blueprint_net._policy.gossip_faults import fault_code

TOPIC = "blocks"


def dropped(why: str, topic: str = TOPIC) -> list[RouterOutput]:
    """What the router says of a publication on ``topic`` it did not take."""
    return [Dropped(topic, why)]


#: Nanoseconds a second: a seqno is its publication time in ns.
NS = 10**9


def identity(n: int) -> Identity:
    return Identity(n.to_bytes(32, "big"))


def signed(origin: Identity, seqno: int, data: bytes, topic: str = TOPIC) -> Publish:
    signature = origin.sign(signed_bytes(topic, origin.peer_id, seqno, data))
    return Publish(topic, origin.peer_id, seqno, data, signature)


def sends(outputs: Iterable[RouterOutput], kind: type = object) -> list[Send]:
    return [o for o in outputs if isinstance(o, Send) and isinstance(o.message, kind)]


class Net:
    """Routers joined by in-memory links; frames go through the codec."""

    def __init__(
        self,
        size: int,
        settings: GossipSettings = DEFAULTS,
        seed: int = 1,
        verdict: Callable[[Router, Publish], Verdict] = lambda r, m: Verdict.ACCEPT,
    ) -> None:
        self.now = 1000.0
        self.rng = random.Random(seed)
        self.routers = [
            Router(
                identity(n + 1),
                settings,
                now=self.now,
                rng=random.Random(seed * 1000 + n),
            )
            for n in range(size)
        ]
        self.by_id = {r.peer_id: r for r in self.routers}
        self.links: set[frozenset[PeerId]] = set()
        self.queue: deque[tuple[PeerId, PeerId, bytes]] = deque()
        self.verdict = verdict
        #: Frames dropped on the way when this says so.
        self.lose: Callable[[PeerId, PeerId, GossipWireMessage], bool] = (
            lambda src, dst, m: False
        )
        self.delivered: dict[PeerId, list[Publish]] = {
            r.peer_id: [] for r in self.routers
        }
        self.received: Counter[tuple[PeerId, type]] = Counter()
        self.penalties: list[tuple[PeerId, Penalty]] = []
        self.discovered: list[tuple[PeerId, Discovered]] = []

    def connect(self, a: Router, b: Router) -> None:
        self.links.add(frozenset((a.peer_id, b.peer_id)))
        self.handle(a, a.peer_connected(b.peer_id, outbound=True))
        self.handle(b, b.peer_connected(a.peer_id, outbound=False))

    def random_graph(self, outbound: int) -> None:
        """A ring (so it is connected) plus ``outbound`` random dials each."""
        routers = self.routers
        for i, router in enumerate(routers):
            self.connect(router, routers[(i + 1) % len(routers)])
        for router in routers:
            others = [r for r in routers if r is not router]
            for other in self.rng.sample(others, outbound):
                if frozenset((router.peer_id, other.peer_id)) not in self.links:
                    self.connect(router, other)

    def handle(self, router: Router, outputs: list[RouterOutput]) -> None:
        for output in outputs:
            if isinstance(output, Send):
                body = gossip_wire.encode(output.message)
                for peer in output.peers:
                    assert frozenset((router.peer_id, peer)) in self.links
                    self.queue.append((router.peer_id, peer, body))
            elif isinstance(output, Validate):
                verdict = self.verdict(router, output.message)
                self.handle(
                    router, router.validated(output.message_id, verdict, self.now)
                )
            elif isinstance(output, Deliver):
                self.delivered[router.peer_id].append(output.message)
            elif isinstance(output, Penalty):
                self.penalties.append((router.peer_id, output))
            elif isinstance(output, Discovered):
                self.discovered.append((router.peer_id, output))

    def run(self, limit: int = 200_000) -> None:
        """Carry frames until none is left (bounded, like every loop here)."""
        for _ in range(limit):
            if not self.queue:
                return
            src, dst, body = self.queue.popleft()
            message = gossip_wire.decode(body)
            assert isinstance(message, gossip_wire.GOSSIP_TYPES)
            if self.lose(src, dst, message):
                continue
            self.received[dst, type(message)] += 1
            router = self.by_id[dst]
            self.handle(router, router.receive(src, message, self.now))
        raise AssertionError("the network did not settle")

    def tick(self, count: int = 1) -> None:
        for _ in range(count):
            self.now += DEFAULTS.heartbeat_interval
            for router in self.routers:
                self.handle(router, router.heartbeat(self.now))
            self.run()

    def subscribe_all(self, topic: str = TOPIC) -> None:
        for router in self.routers:
            self.handle(router, router.subscribe(topic, self.now))
        self.run()

    def publish(self, router: Router, data: bytes, topic: str = TOPIC) -> Publish:
        outputs = router.publish(topic, data, self.now)
        self.handle(router, outputs)
        self.run()
        found = [o.message for o in outputs if isinstance(o, Deliver)]
        found += [s.message for s in sends(outputs) if isinstance(s.message, Publish)]
        return found[0]


def distances(net: Net, start: PeerId) -> dict[PeerId, int]:
    seen = {start: 0}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for link in net.links:
                if node in link:
                    (other,) = link - {node}
                    if other not in seen:
                        seen[other] = seen[node] + 1
                        following.append(other)
        frontier = following
    return seen


# -- the network as a whole -----------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_publish_reaches_every_subscriber_over_several_hops(seed: int) -> None:
    net = Net(60, seed=seed)
    net.random_graph(outbound=4)
    net.subscribe_all()
    net.tick(5)  # meshes settle
    origin = net.routers[0]
    hops = distances(net, origin.peer_id)
    assert max(hops.values()) >= 3  # most nodes are not the origin's peers
    net.received.clear()
    message = net.publish(origin, b"block 1")
    for router in net.routers:
        assert net.delivered[router.peer_id] == [message]
    others = net.routers[1:]
    duplicates = sorted(net.received[r.peer_id, Publish] - 1 for r in others)
    # Each mesh peer sends a node the message at most once (none sends it
    # back to the peer it came from), and the origin's flood adds one.
    for router in others:
        flood = router.peer_id in origin.peers
        copies = net.received[router.peer_id, Publish]
        assert copies <= len(router.mesh[TOPIC]) + flood
    # So at most D_hi; meshes settle between D and D_hi (grafts are taken up
    # to D_hi), and duplicates with them: 6.2 to 6.5 on average here.
    assert duplicates[-1] <= DEFAULTS.mesh_high
    assert not net.penalties


def test_ihave_iwant_recovers_a_message_a_mesh_link_lost() -> None:
    net = Net(12, seed=5)
    for i, a in enumerate(net.routers):  # everyone knows everyone
        for b in net.routers[i + 1 :]:
            net.connect(a, b)
    net.subscribe_all()
    net.tick(3)
    victim = net.routers[5]
    net.lose = lambda src, dst, m: dst == victim.peer_id and isinstance(m, Publish)
    message = net.publish(net.routers[0], b"lost on the way")
    assert net.delivered[victim.peer_id] == []
    net.lose = lambda src, dst, m: False
    net.received.clear()
    net.tick()  # IHave from peers outside its mesh, its IWant, their answers
    assert net.received[victim.peer_id, IHave] >= 1
    assert net.delivered[victim.peer_id] == [message]
    assert sum(n for (peer, kind), n in net.received.items() if kind is IWant) >= 1


# -- authenticity -----------------------------------------------------------


def one_router(
    settings: GossipSettings = DEFAULTS, peers: int = 3
) -> tuple[Router, list[PeerId]]:
    router = Router(identity(1), settings, now=0.0, rng=random.Random(7))
    router.subscribe(TOPIC, 0.0)
    ids = [identity(n).peer_id for n in range(2, 2 + peers)]
    for peer in ids:
        router.peer_connected(peer, outbound=True)
        router.receive(peer, Subscriptions(((True, TOPIC),)), 0.0)
        router.receive(peer, Graft(TOPIC), 0.0)
    return router, ids


ORIGIN = identity(99)


@pytest.mark.parametrize(
    "forge",
    [
        lambda m: attrs.evolve(m, data=b"altered"),
        lambda m: attrs.evolve(m, seqno=m.seqno + 1),
        lambda m: attrs.evolve(m, origin=identity(98).peer_id),
        lambda m: attrs.evolve(m, signature=bytes(64)),
        lambda m: attrs.evolve(m, signature=identity(98).sign(b"anything")),
    ],
    ids=["data", "seqno", "origin", "zero-signature", "other-key"],
)
def test_a_forged_or_altered_message_is_dropped_and_its_forwarder_charged(
    forge: Callable[[Publish], Publish],
) -> None:
    router, (forwarder, honest, _) = one_router()
    genuine = signed(ORIGIN, 1, b"real")
    outputs = router.receive(forwarder, forge(genuine), 1.0)
    assert outputs == [*dropped("invalid"), Penalty(forwarder, Fault.INVALID_SIGNATURE)]
    assert fault_code(Fault.INVALID_SIGNATURE) is ErrorCode.BAD_SIGNATURE
    # The forgery did not poison the id: the genuine message still gets in,
    # and the origin it named was never charged.
    outputs = router.receive(honest, genuine, 1.0)
    [validate] = [o for o in outputs if isinstance(o, Validate)]
    assert validate.source == honest


def test_duplicates_and_replays_are_dropped_by_the_seen_cache() -> None:
    router, (a, b, _) = one_router()
    message = signed(ORIGIN, 1, b"once")
    [validate] = router.receive(a, message, 1.0)
    assert isinstance(validate, Validate)
    assert router.receive(b, message, 1.0) == dropped("duplicate")  # while validating
    outputs = router.validated(validate.message_id, Verdict.ACCEPT, 1.0)
    assert [o for o in outputs if isinstance(o, Deliver)] == [Deliver(message)]
    assert router.receive(b, message, 2.0) == dropped("duplicate")  # after
    # A replay within the TTL.
    assert router.receive(a, message, 100.0) == dropped("duplicate")
    assert router.counters["publish.duplicate"] == 3
    # Our own messages coming back are never taken for new.
    own = signed(router.identity, 5, b"mine")
    assert router.receive(a, own, 2.0) == dropped("duplicate")


def test_the_seen_cache_is_bounded_and_expires() -> None:
    settings = GossipSettings(max_seen=10)
    router, (a, _, _) = one_router(settings)
    for seqno in range(15):
        [v] = router.receive(a, signed(ORIGIN, seqno, b"x"), 1.0)
        assert isinstance(v, Validate)
        router.validated(v.message_id, Verdict.ACCEPT, 1.0)
    assert len(router.seen) == 10 and router.seen.evicted == 5
    router.heartbeat(1.0 + settings.seen_ttl)
    assert len(router.seen) == 0


def test_forwarded_to_the_mesh_but_not_back_to_the_source_or_origin() -> None:
    router, (a, b, c) = one_router()
    origin = Identity((3).to_bytes(32, "big"))  # c is the origin itself
    assert origin.peer_id == b
    message = signed(origin, 1, b"x")
    [v] = router.receive(a, message, 1.0)
    assert isinstance(v, Validate)
    outputs = router.validated(v.message_id, Verdict.ACCEPT, 1.0)
    [send] = sends(outputs, Publish)
    assert send.peers == (c,)


# -- validation -------------------------------------------------------------


def test_a_rejected_message_is_not_forwarded_and_charges_its_sender() -> None:
    net = Net(
        8,
        verdict=lambda router, m: (
            Verdict.REJECT if m.data == b"bad" else Verdict.ACCEPT
        ),
    )
    net.random_graph(outbound=3)
    net.subscribe_all()
    net.tick(2)
    origin = net.routers[0]
    net.received.clear()
    net.publish(origin, b"bad")
    # The origin's flood reached its peers; each rejected it and went no further.
    first_hop = {
        p for r in net.routers if r.peer_id in origin.peers for p in [r.peer_id]
    }
    assert {peer for (peer, kind) in net.received if kind is Publish} <= first_hop
    assert all(not d for p, d in net.delivered.items() if p != origin.peer_id)
    assert {p.peer for _, p in net.penalties} == {origin.peer_id}
    assert {p.fault for _, p in net.penalties} == {Fault.REJECTED}


def test_an_ignored_message_is_dropped_without_a_charge() -> None:
    router, (a, _, _) = one_router()
    [v] = router.receive(a, signed(ORIGIN, 1, b"x"), 1.0)
    assert isinstance(v, Validate)
    assert router.validated(v.message_id, Verdict.IGNORE, 1.0) == []
    assert router.validated(v.message_id, Verdict.ACCEPT, 1.0) == []  # gone


def test_pending_validations_are_bounded_and_time_out() -> None:
    settings = GossipSettings(max_pending=2)
    router, (a, _, _) = one_router(settings)
    outputs = [router.receive(a, signed(ORIGIN, n, b"x"), 1.0) for n in range(3)]
    assert [validates(o) for o in outputs] == [1, 1, 0]
    assert outputs[2] == dropped("dropped")
    assert router.counters["publish.validation_full"] == 1
    router.heartbeat(1.0 + settings.validation_timeout)
    assert not router.pending and router.counters["validation.timeout"] == 2


# -- caps -------------------------------------------------------------------


def test_size_caps_per_topic() -> None:
    settings = GossipSettings(max_message_size=10, topic_max_sizes={"big": 100})
    router, (a, _, _) = one_router(settings)
    router.subscribe("big", 0.0)
    router.receive(a, Subscriptions(((True, "big"),)), 0.0)
    assert router.receive(a, signed(ORIGIN, 1, bytes(11)), 1.0) == dropped("dropped")
    assert router.counters["publish.too_large"] == 1
    assert validates(router.receive(a, signed(ORIGIN, 2, bytes(11), "big"), 1.0)) == 1
    with pytest.raises(PublishFailed, match="exceed the size cap of 10"):
        router.publish(TOPIC, bytes(11), 1.0)
    router.publish("big", bytes(100), 1.0)
    assert DEFAULTS.max_size("any") == 64 * 1024


def test_an_origin_over_its_rate_is_dropped_after_its_signature() -> None:
    settings = GossipSettings(origin_rate=1.0, origin_burst=3)
    router, (a, b, _) = one_router(settings)
    outputs = [router.receive(a, signed(ORIGIN, n, b"x"), 1.0) for n in range(5)]
    assert [validates(o) for o in outputs] == [1, 1, 1, 0, 0]
    assert outputs[3:] == [dropped("dropped")] * 2
    assert router.counters["publish.origin_rate"] == 2
    # A forger claiming that origin is charged, and cannot use up its rate.
    forged = attrs.evolve(signed(ORIGIN, 9, b"x"), data=b"y")
    assert router.receive(b, forged, 5.0) == [
        *dropped("invalid"),
        Penalty(b, Fault.INVALID_SIGNATURE),
    ]
    assert validates(router.receive(a, signed(ORIGIN, 10, b"x"), 5.0)) == 1
    # The node's own publishes meet the same limit.
    for _ in range(3):
        router.publish(TOPIC, b"x", 10.0)
    with pytest.raises(PublishFailed, match="rate"):
        router.publish(TOPIC, b"x", 10.0)


def test_a_peer_gets_a_bounded_number_of_signature_checks() -> None:
    settings = GossipSettings(peer_rate=1.0, peer_burst=2)
    router, (a, b, _) = one_router(settings)
    junk = [attrs.evolve(signed(ORIGIN, n, b"x"), data=b"y") for n in range(4)]
    outputs = [router.receive(a, m, 1.0) for m in junk]
    charged = [*dropped("invalid"), Penalty(a, Fault.INVALID_SIGNATURE)]
    assert outputs == [charged, charged, dropped("dropped"), dropped("dropped")]
    assert router.counters["publish.peer_rate"] == 2
    # Others are unaffected.
    assert validates(router.receive(b, signed(ORIGIN, 1, b"x"), 1.0)) == 1


def test_ihave_is_capped_per_message_and_per_heartbeat() -> None:
    router, (a, _, _) = one_router()
    s = DEFAULTS
    many = tuple(message_id(ORIGIN.peer_id, n) for n in range(s.max_ihave_length + 500))
    [want] = router.receive(a, IHave(TOPIC, many), 1.0)
    assert isinstance(want, Send) and isinstance(want.message, IWant)
    assert len(want.message.message_ids) == s.max_ihave_length
    assert router.receive(a, IHave(TOPIC, many[-10:]), 1.0) == []  # asked enough
    router.heartbeat(2.0)
    answered = [
        router.receive(a, IHave(TOPIC, (message_id(ORIGIN.peer_id, 10**6 + n),)), 2.0)
        for n in range(s.max_ihave_messages + 2)
    ]
    assert [len(o) for o in answered] == [1] * s.max_ihave_messages + [0, 0]
    assert router.counters["ihave.over_limit"] == 2
    # Gossip about a topic we are not in is not followed.
    assert router.receive(a, IHave("other", many[:1]), 3.0) == []


def test_iwant_serves_cached_messages_a_bounded_number_of_times() -> None:
    router, (a, b, _) = one_router()
    outputs = router.publish(TOPIC, b"cached", 1.0)
    [published] = [o.message for o in outputs if isinstance(o, Deliver)]
    want = IWant((published.message_id, b"\x00" * 32))
    served = [router.receive(b, want, 1.0) for _ in range(5)]
    assert [len(o) for o in served] == [1, 1, 1, 0, 0]  # gossip_retransmission
    assert served[0] == [Send((b,), published)]
    for n in range(DEFAULTS.history_length):
        router.heartbeat(2.0 + n)
    assert router.receive(a, want, 9.0) == []  # out of the cache


def test_a_peer_announces_a_bounded_number_of_topics() -> None:
    settings = GossipSettings(max_topics_per_peer=3)
    router, (a, _, _) = one_router(settings)
    changes = tuple((True, f"t{n}") for n in range(10))
    router.receive(a, Subscriptions(changes), 1.0)
    assert len(router.peers[a].topics) == 3  # TOPIC and two more
    assert router.counters["subscriptions.over_limit"] == 8


def test_the_message_cache_is_bounded_in_bytes() -> None:
    settings = GossipSettings(max_cache_bytes=10 * (1000 + 256), origin_burst=100)
    router, _ = one_router(settings)
    for _ in range(15):
        router.publish(TOPIC, bytes(1000), 1.0)
    assert len(router.cache) == 10 and router.cache.size <= settings.max_cache_bytes


# -- mesh control -----------------------------------------------------------


def test_graft_during_our_backoff_is_refused_and_charged_after_the_grace() -> None:
    router, (a, _, _) = one_router()
    router.unsubscribe(TOPIC, 1.0)
    router.subscribe(TOPIC, 1.0)
    assert a not in router.mesh[TOPIC]  # it is backing off
    [refusal] = router.receive(a, Graft(TOPIC), 1.5)  # within the grace: crossed
    assert isinstance(refusal, Send) and isinstance(refusal.message, Prune)
    outputs = router.receive(a, Graft(TOPIC), 5.0)
    assert Penalty(a, Fault.GRAFT_IN_BACKOFF) in outputs
    assert a not in router.mesh[TOPIC]
    assert router.receive(a, Graft(TOPIC), 1.0 + DEFAULTS.unsubscribe_backoff + 1) == []
    assert a in router.mesh[TOPIC]


def test_a_graft_after_their_prune_is_welcome() -> None:
    router, (a, _, _) = one_router()
    router.receive(a, Prune(TOPIC, 60), 1.0)
    assert a not in router.mesh[TOPIC]
    router.heartbeat(2.0)
    assert a not in router.mesh[TOPIC]  # we respect their backoff
    assert router.receive(a, Graft(TOPIC), 3.0) == []
    assert a in router.mesh[TOPIC]


def test_a_graft_we_take_ends_the_backoff_their_prune_asked_for() -> None:
    """Their graft says they want us after all: once they leave the topic
    and come back, our heartbeat grafts them again at once, not after the
    60 s their earlier prune asked for."""
    router, (a, _, _) = one_router()
    router.receive(a, Prune(TOPIC, 60), 1.0)
    assert router.receive(a, Graft(TOPIC), 3.0) == []
    router.receive(a, Subscriptions(((False, TOPIC),)), 4.0)
    assert a not in router.mesh[TOPIC]
    router.receive(a, Subscriptions(((True, TOPIC),)), 5.0)
    [graft] = sends(router.heartbeat(6.0), Graft)
    assert graft.peers == (a,)
    assert a in router.mesh[TOPIC]


def test_a_graft_before_the_peers_subscriptions_is_ignored_uncharged() -> None:
    """9.5: a Graft for a topic its sender has not announced gets no answer
    and no place in the mesh, and is not charged; once announced, the same
    Graft is taken."""
    router = Router(identity(1), DEFAULTS, now=0.0, rng=random.Random(7))
    router.subscribe(TOPIC, 0.0)
    a = identity(2).peer_id
    router.peer_connected(a, outbound=False)
    assert router.receive(a, Graft(TOPIC), 0.5) == []
    assert a not in router.mesh[TOPIC]
    assert router.counters["graft.ignored"] == 1
    assert router.receive(a, Subscriptions(((True, TOPIC),)), 0.6) == []
    assert router.receive(a, Graft(TOPIC), 0.7) == []
    assert a in router.mesh[TOPIC]


def test_a_node_sends_its_subscriptions_before_any_graft() -> None:
    """On connecting, and on joining a topic: the announcement first."""
    router = Router(identity(1), DEFAULTS, now=0.0, rng=random.Random(7))
    router.subscribe(TOPIC, 0.0)
    a = identity(2).peer_id
    [told] = router.peer_connected(a, outbound=True)
    assert told == Send((a,), Subscriptions(((True, TOPIC),)))
    router.receive(a, Subscriptions(((True, TOPIC), (True, "other"))), 0.0)
    outputs = router.subscribe("other", 1.0)
    sent = [type(o.message) for o in outputs if isinstance(o, Send)]
    assert len(sent) == len(outputs) and sent == [Subscriptions, Graft]


def test_grafts_for_unknown_topics_get_no_answer() -> None:
    router, (a, _, _) = one_router()
    assert router.receive(a, Graft("unknown"), 1.0) == []
    assert router.counters["graft.ignored"] == 1


# -- peer records -----------------------------------------------------------


def test_prune_carries_verified_records_for_peer_exchange() -> None:
    router = Router(identity(1), DEFAULTS, now=0.0, rng=random.Random(2))
    router.subscribe(TOPIC, 0.0)
    ids = [identity(n).peer_id for n in range(10, 24)]
    for peer in ids:
        router.peer_connected(peer, outbound=False)
        router.receive(peer, Subscriptions(((True, TOPIC),)), 0.0)
    for n, peer in enumerate(ids[:12]):
        record = sign_record(identity(10 + n), 1, [f"10.0.1.{n}:1"])
        assert router.exchange.book.offer(record)
        router.receive(peer, Graft(TOPIC), 0.0)
    # The mesh is full: an inbound graft is pruned, with other peers' records.
    [full] = sends(router.receive(ids[12], Graft(TOPIC), 0.0), Prune)
    assert isinstance(full.message, Prune) and full.peers == (ids[12],)
    exchanged = full.message.records
    assert len(exchanged) == 12 and {r.peer_id for r in exchanged} == set(ids[:12])
    assert all(r.verifies() for r in exchanged)
    # A receiver keeps them: each is news, each verifies.
    other, (a, _, _) = one_router()
    assert other.receive(a, full.message, 1.0) == [Discovered(a, exchanged)]


def test_prune_and_records_answers_report_discoveries() -> None:
    router, (a, _, _) = one_router()
    news = sign_record(identity(50), 2, ["10.0.0.50:1"])
    outputs = router.receive(a, Prune(TOPIC, 60, (news,)), 1.0)
    assert outputs == [Discovered(a, (news,))]
    assert router.receive(a, Prune(TOPIC, 60, (news,)), 1.0) == []  # not news


def test_a_prune_of_a_mesh_we_do_not_keep_costs_nothing() -> None:
    router, (a, _, _) = one_router()
    for n in range(50):
        assert router.receive(a, Prune(f"t{n}", 3600), 1.0) == []
    assert router.peers[a].backoffs.keys() <= {TOPIC}
    assert router.counters["prune.ignored"] == 50


def test_prune_records_come_only_from_a_real_prune_once_a_heartbeat() -> None:
    router, (a, _, _) = one_router()
    news = tuple(sign_record(identity(60 + n), 1, [f"10.0.0.{n}:1"]) for n in range(3))
    router.peer_connected(identity(40).peer_id, outbound=True)
    # Not in our mesh: its records are not an answer to anything.
    assert router.receive(identity(40).peer_id, Prune(TOPIC, 1, news[:1]), 1.0) == []
    assert news[0].peer_id not in router.exchange.book
    # A real prune: taken.
    assert router.receive(a, Prune(TOPIC, 1, news[:1]), 1.0) == [
        Discovered(a, news[:1])
    ]
    # Graft again at once (its own backoff does not stop it) and prune again:
    # the second batch waits for the next heartbeat.
    router.receive(a, Graft(TOPIC), 1.0)
    assert a in router.mesh[TOPIC]
    assert router.receive(a, Prune(TOPIC, 1, news[1:2]), 1.0) == []
    assert news[1].peer_id not in router.exchange.book
    router.heartbeat(2.0)
    router.receive(a, Graft(TOPIC), 2.0)
    assert router.receive(a, Prune(TOPIC, 1, news[2:]), 2.0) == [
        Discovered(a, news[2:])
    ]


def test_a_forged_record_charges_its_sender() -> None:
    router, (a, _, _) = one_router()
    forged = attrs.evolve(sign_record(identity(50), 2, ["h:1"]), addresses=("e:1",))
    outputs = router.receive(a, Prune(TOPIC, 60, (forged,)), 1.0)
    assert outputs == [Penalty(a, Fault.INVALID_RECORD)]
    assert identity(50).peer_id not in router.exchange.book


def test_records_are_exchanged_on_request_only() -> None:
    router, (a, b, _) = one_router()
    own = router.exchange.set_addresses(["127.0.0.1:4001"], 1.0)
    [answer] = router.receive(a, RecordsRequest(16), 1.0)
    assert answer == Send((a,), Records((own,)))
    assert router.receive(a, RecordsRequest(16), 1.0) == []  # once a heartbeat
    record = sign_record(identity(2), 1, ["10.0.0.2:1"])
    assert router.receive(b, Records((record,)), 1.0) == []  # unsolicited
    assert router.counters["records.unsolicited"] == 1
    [ask] = router.exchange.request(b, 1.0)
    assert ask == Send((b,), RecordsRequest(DEFAULTS.prune_peers))
    assert router.receive(b, Records((record,)), 1.0) == [Discovered(b, (record,))]
    assert router.exchange.set_addresses(["127.0.0.1:4002"], 1.0).seqno > own.seqno


def test_a_peer_is_asked_for_records_only_while_it_may_have_news() -> None:
    """9.5: once per connection; again a heartbeat after an answer that
    brought news, ``records_refresh`` after one that brought nothing (we
    hold its current record and all it gave), or after no answer at all."""
    router, (_, b, _) = one_router()
    refresh, beat = DEFAULTS.records_refresh, DEFAULTS.heartbeat_interval
    ask = [Send((b,), RecordsRequest(DEFAULTS.prune_peers))]
    own = sign_record(identity(3), 1, ["10.0.0.3:1"])  # b's
    other = sign_record(identity(60), 1, ["10.0.0.60:1"])
    assert router.exchange.request(b, 1.0) == ask
    assert router.exchange.request(b, 1.5) == []  # one request outstanding
    assert router.receive(b, Records((own,)), 2.0) == [Discovered(b, (own,))]
    assert not router.exchange.due(b, 2.0 + beat / 2)
    assert router.exchange.request(b, 2.0 + beat / 2) == []
    assert router.exchange.request(b, 2.0 + beat) == ask  # news: it may have more
    assert router.receive(b, Records((own,)), 3.0) == []  # nothing new
    for now in (4.0, 3.0 + refresh / 2, 3.0 + refresh - 0.001):
        assert router.exchange.request(b, now) == []
    assert router.exchange.due(b, 3.0 + refresh)
    assert router.exchange.request(b, 3.0 + refresh) == ask
    # Unanswered: asked again only a refresh later; then news again.
    later = 3.0 + 2 * refresh
    assert router.exchange.request(b, later - 0.001) == []
    assert router.exchange.request(b, later) == ask
    assert router.receive(b, Records((own, other)), later) == [Discovered(b, (other,))]
    assert router.exchange.request(b, later + beat) == ask


def _deliver(
    outputs: Sequence[RouterOutput], to: Router, sender: PeerId, now: float
) -> list[RouterOutput]:
    """Hand ``to`` the messages among ``outputs`` (each a ``Send``)."""
    out: list[RouterOutput] = []
    for output in outputs:
        assert isinstance(output, Send)
        out += to.receive(sender, output.message, now)
    return out


def _replaced_pair(
    *, first_read: bool, both: bool = False
) -> tuple[Router, Router, list[RouterOutput]]:
    """Two nodes that dialed each other at once (a flaky end-to-end test
    found this).  A verified first the connection the duplicate rule then
    closes, announced its topic and asked B for records on it.  B verified
    the kept one first and drops the other (``first_read``: after reading
    what A sent, and answering on the kept one); or (``both``) B too
    verified the closed one first, announced its topic there (read by A),
    and answered there (lost: A closed it first), then had its connection
    replaced too.  Returns A, B and what A sent on the kept connection once
    its first was replaced, not yet delivered."""
    a = Router(identity(1), DEFAULTS, now=0.0, rng=random.Random(1))
    b = Router(identity(2), DEFAULTS, now=0.0, rng=random.Random(2))
    for router in (a, b):
        router.subscribe(TOPIC, 0.0)
    b.exchange.set_addresses(["10.0.0.2:1"], 0.0)
    a_id, b_id = a.peer_id, b.peer_id
    sent = a.peer_connected(b_id, outbound=False)
    sent += a.exchange.request(b_id, 0.1)
    _deliver(b.peer_connected(a_id, outbound=True), a, b_id, 0.1)
    answer = _deliver(sent, b, a_id, 0.1) if first_read else []
    again = a.link_replaced(b_id, 0.2)
    if both:
        _deliver(b.link_replaced(a_id, 0.2), a, b_id, 0.2)
    else:
        _deliver(answer, a, b_id, 0.2)
    return a, b, again


def test_a_replaced_connection_repeats_our_topics_and_an_unanswered_ask() -> None:
    """Unread with the closed connection: A's announcement and its records
    request are sent again on the kept one, so B takes A into its mesh and
    A gets B's record at once, not ``records_refresh`` later."""
    a, b, again = _replaced_pair(first_read=False)
    assert a.peer_id not in b.topic_peers.get(TOPIC, set())  # the loss
    assert again == [
        Send((b.peer_id,), Subscriptions(((True, TOPIC),))),
        Send((b.peer_id,), RecordsRequest(DEFAULTS.prune_peers)),
    ]
    answer = _deliver(again, b, a.peer_id, 0.2)
    assert b.topic_peers[TOPIC] == {a.peer_id}
    record = b.exchange.own_record
    assert record is not None
    assert _deliver(answer, a, b.peer_id, 0.3) == [Discovered(b.peer_id, (record,))]
    # A heartbeat later A grafts B, and B, knowing A's topic, takes it.
    grafts = [o for o in a.heartbeat(1.0) if isinstance(o, Send)]
    assert grafts == [Send((b.peer_id,), Graft(TOPIC))]
    assert _deliver(grafts, b, a.peer_id, 1.0) == []
    assert b.mesh[TOPIC] == {a.peer_id} and a.mesh[TOPIC] == {b.peer_id}


def test_a_replaced_connections_answer_is_still_awaited() -> None:
    """Read before B closed the connection: B's answer comes on the kept one
    and answers A's ask (it used to be refused as unsolicited, and B then
    refused the repeat as its second request this heartbeat: A had no
    record of B for ``records_refresh``)."""
    a, b, again = _replaced_pair(first_read=True)
    assert a.exchange.book.get(b.peer_id) == b.exchange.own_record
    assert a.counters["records.unsolicited"] == 0
    assert not a.exchange.due(b.peer_id, 1.0)  # answered: nothing is owed
    # The repeat (sent before the answer came) is one too many for B.
    assert _deliver(again, b, a.peer_id, 0.2) == []
    assert b.counters["records.request_over_limit"] == 1


def test_a_connection_replaced_at_both_ends_answers_the_repeat() -> None:
    """B read A's request and answered on the connection A then closed:
    that answer is lost, so B, its own connection replaced too, answers
    A's repeat although it is A's second request this heartbeat."""
    a, b, again = _replaced_pair(first_read=True, both=True)
    assert a.peer_id in b.topic_peers[TOPIC] and b.peer_id in a.topic_peers[TOPIC]
    assert b.peer_id not in a.exchange.book  # the loss
    record = b.exchange.own_record
    assert record is not None
    answer = _deliver(again, b, a.peer_id, 0.2)
    assert _deliver(answer, a, b.peer_id, 0.3) == [Discovered(b.peer_id, (record,))]
    assert b.counters["records.request_over_limit"] == 0
    # Past the repeat, B answers one request a heartbeat again.
    assert b.receive(a.peer_id, RecordsRequest(16), 0.4) == []
    assert b.counters["records.request_over_limit"] == 1


def test_a_replaced_connection_repeats_our_leaves_grafts_and_running_prunes() -> None:
    """docs/protocol.md 9.5, *A replaced connection*: besides our topics,
    the topics we left since the peer connected (not before), a graft for
    each mesh it is in and a prune, with the backoff left, for each backoff
    we set it that still runs; nothing for a peer not connected."""
    router, (_, b, _) = one_router()
    for topic in ("early", "late", "kept", "again", "rejoined"):
        router.subscribe(topic, 0.0)
    router.unsubscribe("early", 0.0)  # before c connected: c was never told
    c = identity(40).peer_id
    router.peer_connected(c, outbound=True)
    router.receive(c, Subscriptions(((True, TOPIC),)), 0.0)
    router.receive(c, Graft(TOPIC), 0.0)
    router.receive(b, Subscriptions(((True, "rejoined"), (True, "kept"))), 0.1)
    router.receive(b, Graft("rejoined"), 0.1)
    router.receive(b, Graft("kept"), 0.1)
    router.unsubscribe("late", 0.5)
    router.unsubscribe("again", 0.5)
    router.subscribe("again", 0.6)  # back in: not a leave any more
    # Our prune of b: its backoff runs to 0.7 + unsubscribe_backoff.
    router.unsubscribe("rejoined", 0.7)
    router.subscribe("rejoined", 0.7)
    # b's prune of us: its backoff, not ours, so nothing to repeat.
    router.receive(b, Prune("kept", 60), 0.9)
    assert c in router.mesh[TOPIC] and b in router.mesh[TOPIC]
    assert b not in router.mesh["kept"] | router.mesh["rejoined"]
    ours = Subscriptions(tuple((True, t) for t in ("again", TOPIC, "kept", "rejoined")))
    assert router.link_replaced(c, 1.0) == [
        Send((c,), ours),
        Send((c,), Subscriptions(((False, "late"),))),
        Send((c,), Graft(TOPIC)),
    ]
    until = 0.7 + DEFAULTS.unsubscribe_backoff
    assert router.link_replaced(b, 2.0) == [
        Send((b,), ours),
        Send((b,), Subscriptions(((False, "early"), (False, "late")))),
        Send((b,), Graft(TOPIC)),
        Send((b,), Prune("rejoined", round(until - 2.0))),
    ]
    # b's grafts in that backoff are answered, but no longer charged: our
    # prune may have gone unread with the old connection.
    later = 0.7 + DEFAULTS.graft_grace + 1
    assert router.receive(b, Graft("rejoined"), later) == [
        Send((b,), Prune("rejoined", round(until - later)))
    ]
    # Under a second left: a prune of 1 s (0 would be no backoff at all);
    # none once the backoff has ended.
    assert router.link_replaced(b, until - 0.4)[-1] == Send((b,), Prune("rejoined", 1))
    assert not any(
        isinstance(output, Send) and isinstance(output.message, Prune)
        for output in router.link_replaced(b, until)
    )
    assert router.link_replaced(identity(41).peer_id, 2.0) == []


@pytest.mark.parametrize("longest", [DEFAULTS.max_ihave_length, 1])
def test_a_replaced_connection_offers_the_ids_we_would_gossip(longest: int) -> None:
    """Publications that went out on the closed connection are not sent
    again: an IHave of each of the peer's topics offers the cached ids, the
    newest window first, and the peer asks for those it lacks."""
    router, (a, b, _) = one_router(GossipSettings(max_ihave_length=longest))
    stranger = identity(40).peer_id
    router.peer_connected(stranger, outbound=True)  # in none of our topics
    for seqno, now in ((1, 1.0), (2, 1.5)):
        [validate] = router.receive(a, signed(ORIGIN, seqno, b"m"), now)
        assert isinstance(validate, Validate)
        router.validated(validate.message_id, Verdict.ACCEPT, now)
        if seqno == 1:
            router.heartbeat(1.2)  # a new cache window for the second
    newest_first = tuple(message_id(ORIGIN.peer_id, n) for n in (2, 1))
    offer = router.link_replaced(b, 2.0)[-1]
    assert offer == Send((b,), IHave(TOPIC, newest_first[:longest]))
    for peer in (stranger, a):  # in none of our topics; in one we left
        if peer == a:
            router.unsubscribe(TOPIC, 2.0)  # its ids stay cached a while
        assert not any(
            isinstance(output, Send) and isinstance(output.message, IHave)
            for output in router.link_replaced(peer, 2.0)
        )


def test_the_offer_is_once_a_heartbeat_for_at_most_max_ihave_messages_topics() -> None:
    """A receiver reads at most ``max_ihave_messages`` IHaves from a peer a
    heartbeat, so no more are offered, the topics the peer is in our mesh
    of first; and a peer that gets its connections replaced again and
    again is offered our ids once a heartbeat, as gossip would."""
    router, (a, b, _) = one_router(GossipSettings(max_ihave_messages=1))
    router.subscribe("a-first", 1.0)  # sorts first; b is in no mesh of it
    router.receive(b, Subscriptions(((True, "a-first"),)), 1.0)
    router.mesh["a-first"].discard(b)
    assert b in router.mesh[TOPIC]
    for topic, seqno in (("a-first", 1), (TOPIC, 2)):
        [validate] = router.receive(a, signed(ORIGIN, seqno, b"m", topic), 1.0)
        assert isinstance(validate, Validate)
        router.validated(validate.message_id, Verdict.ACCEPT, 1.0)

    def offered(now: float) -> list[str]:
        return [
            output.message.topic
            for output in router.link_replaced(b, now)
            if isinstance(output, Send) and isinstance(output.message, IHave)
        ]

    assert offered(1.1) == [TOPIC]
    assert offered(1.2) == []  # the same heartbeat
    router.heartbeat(2.0)  # which may graft b into "a-first" as well
    router.mesh["a-first"].discard(b)
    assert offered(2.1) == [TOPIC]
    router.heartbeat(3.0)
    router.mesh["a-first"].discard(b)
    router.mesh[TOPIC].discard(b)
    assert offered(3.1) == ["a-first"]  # in no mesh of ours: by name


def test_a_graft_in_our_backoff_is_charged_without_a_replacement() -> None:
    """The control for the test above: the same graft, no replacement."""
    router, (_, b, _) = one_router()
    router.subscribe("rejoined", 0.0)
    router.receive(b, Subscriptions(((True, "rejoined"),)), 0.1)
    router.receive(b, Graft("rejoined"), 0.1)
    router.unsubscribe("rejoined", 0.7)
    router.subscribe("rejoined", 0.7)
    later = 0.7 + DEFAULTS.graft_grace + 1
    assert Penalty(b, Fault.GRAFT_IN_BACKOFF) in router.receive(
        b, Graft("rejoined"), later
    )


def test_the_topics_we_left_are_remembered_up_to_max_topics_per_peer() -> None:
    settings = GossipSettings(max_topics_per_peer=2, max_control_per_peer=4)
    router = Router(identity(1), settings, now=0.0, rng=random.Random(7))
    b = identity(2).peer_id
    router.peer_connected(b, outbound=True)
    router.subscribe("x", 0.0)  # our change 1
    router.subscribe("y", 0.0)  # 2
    router.unsubscribe("x", 0.0)  # 3
    router.subscribe("z", 0.0)  # 4
    router.unsubscribe("y", 0.0)  # 5
    router.unsubscribe("z", 0.0)  # 6
    assert router.left == {"y": 5, "z": 6}  # "x", the oldest, forgotten
    assert router.link_replaced(b, 0.0) == [
        Send((b,), Subscriptions(((False, "y"), (False, "z"))))
    ]


def test_records_refresh_is_at_least_a_heartbeat() -> None:
    with pytest.raises(ConfigurationError, match="records_refresh"):
        GossipSettings(records_refresh=0.5)


# -- settings ---------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"mesh_low": 7},
        {"mesh_outbound": 5},
        {"history_gossip": 6},
        {"seen_ttl": 5.0},
        {"max_message_size": -1},
        {"origin_rate": 0.0},
    ],
)
def test_unusable_settings_are_refused_in_one_line(change: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError, match=r"^gossip settings: [^\n]+$"):
        GossipSettings(**change)  # type: ignore[arg-type]


def test_every_fault_has_a_price() -> None:
    assert {fault_code(f) for f in Fault} <= set(ErrorCode)


def test_a_seeded_network_runs_the_same_every_time() -> None:
    def run() -> list[int]:
        net = Net(15, seed=9)
        net.random_graph(outbound=3)
        net.subscribe_all()
        net.tick(3)
        return [len(r.mesh[TOPIC]) for r in net.routers]

    assert run() == run()


# -- the bounded memories -----------------------------------------------------


def test_seen_ids_expire_by_publication_time_not_arrival() -> None:
    seen = SeenCache(ttl=10.0, limit=100)
    seen.add(b"a", 5 * NS)  # published at 5 s (arrived first)
    seen.add(b"b", 1 * NS)  # published at 1 s (arrived later)
    seen.add(b"a", 9 * NS)  # seen again: still its first publication time
    seen.expire(11.5)
    assert b"b" not in seen and b"a" in seen
    seen.expire(15.0)
    assert len(seen) == 0 and seen.floor == -1  # expired, not evicted


def test_the_seen_cache_evicts_the_oldest_publication_and_raises_a_floor() -> None:
    seen = SeenCache(ttl=100.0, limit=2)
    for name, published in [(b"b", 2), (b"a", 1), (b"c", 3)]:
        seen.add(name, published * NS)
    assert b"a" not in seen and {b"b", b"c"} <= {m for m in (b"b", b"c") if m in seen}
    assert seen.floor == 1 * NS and seen.evicted == 1
    assert seen.below_floor(1 * NS) and not seen.below_floor(1 * NS + 1)


def test_rate_limiter_allows_bursts_then_the_rate_and_stays_bounded() -> None:
    limiter: RateLimiter[int] = RateLimiter(rate=2.0, burst=3, limit=4)
    assert [limiter.allow(1, 0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow(1, 0.5) and not limiter.allow(1, 0.5)  # 2 per second
    for key in range(2, 10):
        limiter.allow(key, 0.5)
    assert len(limiter._due) <= 4 and limiter.evicted == 5


# -- exact rules (docs/protocol.md 9.5), each at its boundary -----------------


def small_mesh_router() -> tuple[Router, list[PeerId]]:
    """A router whose mesh holds 2 (D = D_hi = 2, D_lo = 1, no D_out), with
    five inbound peers of the topic, none grafted yet."""
    settings = GossipSettings(mesh_degree=2, mesh_low=1, mesh_high=2, mesh_outbound=0)
    router = Router(identity(1), settings, now=0.0, rng=random.Random(3))
    router.subscribe(TOPIC, 0.0)
    ids = [identity(n).peer_id for n in range(2, 7)]
    for peer in ids:
        router.peer_connected(peer, outbound=False)
        router.receive(peer, Subscriptions(((True, TOPIC),)), 0.0)
    return router, ids


def test_a_shorter_or_equal_prune_from_a_peer_does_not_cut_our_backoff() -> None:
    router, (a, b, c, _, _) = small_mesh_router()
    router.receive(a, Graft(TOPIC), 0.0)
    router.receive(b, Graft(TOPIC), 0.0)
    # The mesh is full: c's graft is pruned with our 60 s backoff.
    [prune] = sends(router.receive(c, Graft(TOPIC), 1.0), Prune)
    assert prune.message == Prune(TOPIC, 60, prune.message.records)  # type: ignore[union-attr]
    # c's own prunes, as long or shorter, leave our backoff as it is.
    assert router.receive(c, Prune(TOPIC, 60), 1.0) == []
    assert router.receive(c, Prune(TOPIC, 1), 1.0) == []
    outputs = router.receive(c, Graft(TOPIC), 6.0)
    assert outputs == [Send((c,), Prune(TOPIC, 55)), Penalty(c, Fault.GRAFT_IN_BACKOFF)]


def test_a_longer_prune_from_a_peer_extends_the_backoff() -> None:
    router = Router(identity(1), DEFAULTS, now=0.0, rng=random.Random(3))
    router.subscribe(TOPIC, 0.0)
    a = identity(2).peer_id
    router.peer_connected(a, outbound=True)
    router.receive(a, Subscriptions(((True, TOPIC),)), 0.0)
    router.receive(a, Graft(TOPIC), 0.0)
    for backoff in (10, 100, 20):
        router.receive(a, Prune(TOPIC, backoff), 0.0)
    # We graft it again only once 100 s and the graft grace have passed.
    for now in (50.0, 101.9):
        assert router.heartbeat(now) == []
        assert a not in router.mesh[TOPIC]
    assert router.heartbeat(102.0) == [Send((a,), Graft(TOPIC))]
    assert a in router.mesh[TOPIC]


def test_prunes_spend_the_control_budget_too() -> None:
    settings = GossipSettings(max_topics_per_peer=1, max_control_per_peer=2)
    router, (a, _, _) = one_router(settings)
    # one_router's graft spent one; one prune more is within the budget.
    assert router.receive(a, Prune(TOPIC, 1), 0.5) == []
    assert router.peers[a].grafts == 2
    assert router.receive(a, Prune(TOPIC, 1), 0.5) == [Penalty(a, Fault.CONTROL_FLOOD)]
    assert router.counters["control.over_budget"] == 1
    # A new interval begins a heartbeat interval after the last one began.
    assert router.receive(a, Prune(TOPIC, 1), 0.999) == []
    assert router.counters["control.over_budget"] == 2
    assert router.receive(a, Prune(TOPIC, 1), 1.0) == []
    assert router.peers[a].grafts == 1
    assert router.counters["control.over_budget"] == 2


def test_ihave_asks_only_for_unseen_and_unpending_ids_up_to_the_budget() -> None:
    settings = GossipSettings(max_ihave_length=3)
    router, (a, b, _) = one_router(settings)
    seen = router.publish(TOPIC, b"mine", 1.0)
    [mine] = [o.message for o in seen if isinstance(o, Deliver)]
    pending = signed(ORIGIN, 5, b"pending")
    [validate] = router.receive(b, pending, 1.0)
    assert isinstance(validate, Validate)
    fresh = [message_id(ORIGIN.peer_id, 100 + n) for n in range(6)]
    # Seen and pending ids are not asked for.
    ihave = IHave(TOPIC, (mine.message_id, pending.message_id, fresh[0]))
    assert router.receive(a, ihave, 1.0) == [Send((a,), IWant((fresh[0],)))]
    assert router.receive(a, IHave(TOPIC, (fresh[1],)), 1.0) == [
        Send((a,), IWant((fresh[1],)))
    ]
    # One id left in this heartbeat's budget of 3, then none.
    outputs = router.receive(a, IHave(TOPIC, (fresh[2], fresh[3])), 1.0)
    [ask] = sends(outputs, IWant)
    assert outputs == [ask]
    assert ask.peers == (a,) and isinstance(ask.message, IWant)
    assert len(ask.message.message_ids) == 1
    assert ask.message.message_ids[0] in fresh[2:4]
    assert router.receive(a, IHave(TOPIC, (fresh[4],)), 1.0) == []
    router.heartbeat(2.0)
    [again] = sends(router.receive(a, IHave(TOPIC, tuple(fresh[4:])), 2.0), IWant)
    assert isinstance(again.message, IWant)
    assert sorted(again.message.message_ids) == sorted(fresh[4:])


def test_iwant_serves_at_most_max_ihave_length_a_heartbeat_in_order() -> None:
    settings = GossipSettings(max_ihave_length=3, origin_burst=10)
    router, (a, b, _) = one_router(settings)
    mine = []
    for n in range(5):
        outputs = router.publish(TOPIC, b"%d" % n, 1.0)
        mine += [o.message for o in outputs if isinstance(o, Deliver)]
    unknown = message_id(ORIGIN.peer_id, 1)
    # An unknown id is skipped, not an end.
    want = IWant((unknown, mine[0].message_id, mine[1].message_id))
    assert router.receive(a, want, 1.0) == [Send((a,), m) for m in mine[:2]]
    # The third answer of the heartbeat is the last.
    want = IWant(tuple(m.message_id for m in mine[2:]))
    assert router.receive(a, want, 1.0) == [Send((a,), mine[2])]
    assert router.counters["iwant.over_limit"] == 1
    assert router.receive(a, want, 1.0) == []
    assert router.counters["iwant.over_limit"] == 2
    # Another peer has its own count.
    assert router.receive(b, IWant((mine[4].message_id,)), 1.0) == [Send((b,), mine[4])]
    router.heartbeat(2.0)
    assert router.receive(a, IWant((mine[3].message_id,)), 2.0) == [Send((a,), mine[3])]


def test_iwant_retransmissions_are_counted_per_peer() -> None:
    router, (a, b, _) = one_router()
    [deliver] = [o for o in router.publish(TOPIC, b"x", 1.0) if isinstance(o, Deliver)]
    want = IWant((deliver.message.message_id,))
    for _ in range(DEFAULTS.gossip_retransmission):
        assert router.receive(a, want, 1.0) == [Send((a,), deliver.message)]
    assert router.receive(a, want, 1.0) == []
    assert router.receive(b, want, 1.0) == [Send((b,), deliver.message)]


#: A time well past the Unix epoch, as a real clock gives (exact in ns).
NOW = 1_700_000_000.0


def router_now(settings: GossipSettings = DEFAULTS) -> tuple[Router, list[PeerId]]:
    router = Router(identity(1), settings, now=NOW, rng=random.Random(7))
    router.subscribe(TOPIC, NOW)
    ids = [identity(n).peer_id for n in range(2, 5)]
    for peer in ids:
        router.peer_connected(peer, outbound=True)
        router.receive(peer, Subscriptions(((True, TOPIC),)), NOW)
        router.receive(peer, Graft(TOPIC), NOW)
    return router, ids


def validates(outputs: list[RouterOutput]) -> int:
    return sum(isinstance(o, Validate) for o in outputs)


def test_a_publication_time_is_accepted_from_max_age_ago_to_max_skew_ahead() -> None:
    router, (a, _, _) = router_now()
    now_ns = int(NOW * NS)
    oldest, newest = now_ns - 60 * NS, now_ns + 10 * NS
    for seqno in (oldest, newest):
        assert validates(router.receive(a, signed(ORIGIN, seqno, b"x"), NOW)) == 1
    for seqno in (oldest - 1, newest + 1):
        assert router.receive(a, signed(ORIGIN, seqno, b"x"), NOW) == dropped("dropped")
    assert router.counters["publish.stale"] == 2


def test_each_early_drop_is_counted_once_per_message() -> None:
    settings = GossipSettings(max_message_size=10, max_pending=1)
    router, (a, b, _) = router_now(settings)
    seqno = int(NOW * NS)
    for _ in range(2):
        assert router.receive(a, signed(ORIGIN, seqno, b"x", topic="other"), NOW) == []
    assert router.counters["publish.not_subscribed"] == 2
    # Exactly the size cap is taken; a byte more is not.
    assert validates(router.receive(a, signed(ORIGIN, seqno, bytes(10)), NOW)) == 1
    for n in range(2):
        big = signed(ORIGIN, seqno + 1 + n, bytes(11))
        assert router.receive(a, big, NOW) == dropped("dropped")
    assert router.counters["publish.too_large"] == 2
    # A forgery: charged to its forwarder, counted each time.
    for n in range(2):
        forged = attrs.evolve(signed(ORIGIN, seqno + 10 + n, b"x"), data=b"y")
        charged = [*dropped("invalid"), Penalty(b, Fault.INVALID_SIGNATURE)]
        assert router.receive(b, forged, NOW) == charged
    assert router.counters["publish.invalid_signature"] == 2
    # One validation pending fills max_pending = 1.
    for n in range(2):
        late = signed(ORIGIN, seqno + 20 + n, b"x")
        assert router.receive(a, late, NOW) == dropped("dropped")
    assert router.counters["publish.validation_full"] == 2


def test_messages_at_or_below_the_seen_floor_are_counted_as_possibly_seen() -> None:
    router, (a, _, _) = router_now(GossipSettings(max_seen=1))
    seqno = int(NOW * NS)
    for n in range(2):
        [check] = router.receive(a, signed(ORIGIN, seqno + n, b"x"), NOW)
        assert isinstance(check, Validate)
        router.validated(check.message_id, Verdict.ACCEPT, NOW)
    assert router.seen.floor == seqno
    for _ in range(2):
        assert router.receive(a, signed(identity(98), seqno, b"x"), NOW) == dropped(
            "duplicate"
        )
    assert router.counters["publish.possibly_seen"] == 2
    assert validates(router.receive(a, signed(identity(98), seqno + 2, b"x"), NOW)) == 1


def test_each_peers_own_publications_have_their_own_origin_rate() -> None:
    router, (a, b, _) = router_now(GossipSettings(origin_burst=2))
    seqno = int(NOW * NS)
    for peer, n in ((a, 2), (b, 3)):
        own = [signed(identity(n), seqno + k, b"own") for k in range(3)]
        results = [validates(router.receive(peer, m, NOW)) for m in own]
        assert results == [1, 1, 0]
    assert router.counters["publish.origin_rate"] == 2


def test_a_graft_from_a_peer_that_never_announced_the_topic_is_ignored() -> None:
    router, _ = one_router()
    stranger = identity(50).peer_id
    router.peer_connected(stranger, outbound=True)
    assert router.receive(stranger, Graft(TOPIC), 1.0) == []
    assert stranger not in router.mesh[TOPIC]
    assert router.counters["graft.ignored"] == 1
    assert router.receive(stranger, Graft(TOPIC), 1.0) == []
    assert router.counters["graft.ignored"] == 2


def test_our_backoff_ends_at_its_time_for_a_peers_graft() -> None:
    router, (a, _, _) = one_router()
    router.unsubscribe(TOPIC, 1.0)  # a backs off until 11 s
    router.subscribe(TOPIC, 1.0)
    for _ in range(2):
        assert router.receive(a, Graft(TOPIC), 10.5) == [
            Send((a,), Prune(TOPIC, 1)),
            Penalty(a, Fault.GRAFT_IN_BACKOFF),
        ]
    assert router.counters["graft.in_backoff"] == 2
    assert router.receive(a, Graft(TOPIC), 11.0) == []
    assert a in router.mesh[TOPIC]


# -- the heartbeat's gossip and fanout, records exchange: exact rules --------


def records_hub(
    settings: GossipSettings = DEFAULTS,
) -> tuple[Router, list[PeerId], list[Any]]:
    """A router with five peers (two dialed), each of whose records it holds."""
    hub = Router(identity(1), settings, now=0.0, rng=random.Random(4))
    ids = [identity(10 + n).peer_id for n in range(5)]
    records = []
    for n, peer in enumerate(ids):
        hub.peer_connected(peer, outbound=n < 2)
        record = sign_record(identity(10 + n), 1, [f"10.0.0.{n}:1"])
        assert hub.exchange.book.offer(record)
        records.append(record)
    return hub, ids, records


def test_a_records_answer_is_our_record_then_others_up_to_the_smaller_limit() -> None:
    settings = GossipSettings(prune_peers=3)
    hub, (a, b, c, d, _), records = records_hub(settings)
    own = hub.exchange.set_addresses(["127.0.0.1:1"], 1.0)

    def answer(peer: PeerId, limit: int) -> tuple[Any, ...]:
        [send] = hub.receive(peer, RecordsRequest(limit), 1.0)
        assert isinstance(send, Send) and send.peers == (peer,)
        assert isinstance(send.message, Records)
        return send.message.records

    many = answer(a, 255)  # at most prune_peers, never the asker's own
    assert len(many) == 3 and many[0] == own
    assert set(many[1:]) < set(records[1:])
    two = answer(b, 2)
    assert (
        len(two) == 2 and two[0] == own and two[1] in records and two[1] != records[1]
    )
    assert answer(c, 1) == (own,)
    assert answer(d, 0) == ()
    assert hub.receive(a, RecordsRequest(255), 1.0) == []  # one a heartbeat
    assert hub.receive(a, RecordsRequest(255), 1.0) == []
    assert hub.counters["records.request_over_limit"] == 2
    hub.heartbeat(2.0)
    assert len(answer(a, 255)) == 3


def test_records_for_a_prune_are_those_of_the_topics_other_peers() -> None:
    """Peer exchange offers records of the topic's peers only (none for a
    topic no peer has), never the excluded ones."""
    hub, (a, _, c, _, e), records = records_hub(GossipSettings(prune_peers=16))
    exchange = hub.exchange
    assert exchange.for_prune("nobody's", set()) == ()
    exchange.topic_peers["t"] = {e, c, a}
    offered = exchange.for_prune("t", {a})
    assert sorted(offered, key=records.index) == [records[2], records[4]]


def test_a_records_answer_without_our_own_record_is_others_only() -> None:
    hub, (a, *_), records = records_hub()
    [send] = hub.receive(a, RecordsRequest(2), 1.0)
    assert isinstance(send, Send) and isinstance(send.message, Records)
    assert len(send.message.records) == 2
    assert set(send.message.records) < set(records[1:])
    assert hub.receive(a, RecordsRequest(0), 1.0) == []  # over the limit
    hub.heartbeat(2.0)
    assert hub.receive(a, RecordsRequest(0), 2.0) == [Send((a,), Records(()))]


def test_a_node_with_no_address_answers_with_its_addressless_record_first() -> None:
    """9.5: a node that listens nowhere it could be dialed still signs a
    record (no address) and leads its answers with it."""
    hub, (a, *_), records = records_hub()
    own = hub.exchange.set_addresses([], 1.0)
    assert own.addresses == ()
    [send] = hub.receive(a, RecordsRequest(3), 1.0)
    assert isinstance(send, Send) and isinstance(send.message, Records)
    first, *others = send.message.records
    assert first == own and len(others) == 2 and set(others) < set(records[1:])


def test_records_taken_are_the_first_prune_peers_news_marked_with_their_source() -> (
    None
):
    settings = GossipSettings(prune_peers=3)
    hub, (dialed, _, _, _, inbound), _ = records_hub(settings)
    ours = sign_record(identity(1), 5, ["10.0.1.1:1"])  # our own: skipped
    stale = sign_record(identity(12), 1, ["10.0.0.2:1"])  # held already
    news = [sign_record(identity(50 + n), 1, [f"10.0.2.{n}:1"]) for n in range(3)]
    assert hub.exchange.request(identity(77).peer_id, 1.0) == []  # not connected
    for peer in (dialed, inbound):
        assert hub.exchange.request(peer, 1.0) == [
            Send((peer,), RecordsRequest(settings.prune_peers))
        ]
    outputs = hub.receive(dialed, Records((ours, stale, news[0], news[1])), 1.0)
    assert outputs == [Discovered(dialed, (news[0],))]  # the first 3 looked at
    assert (
        news[1].peer_id not in hub.exchange.book
        and identity(1).peer_id not in hub.exchange.book
    )
    entry = hub.exchange.book.entry(news[0].peer_id)
    assert entry is not None and entry.source == dialed and entry.outbound
    assert hub.receive(dialed, Records((news[1],)), 1.0) == []  # one answer
    assert hub.receive(dialed, Records((news[1],)), 1.0) == []
    assert hub.counters["records.unsolicited"] == 2
    assert hub.receive(inbound, Records((news[1], news[2])), 1.0) == [
        Discovered(inbound, (news[1], news[2]))
    ]
    entry = hub.exchange.book.entry(news[1].peer_id)
    assert entry is not None and entry.source == inbound and not entry.outbound
    hub.exchange.request(inbound, 2.0)  # an answer with no news reports nothing
    assert hub.receive(inbound, Records((stale, ours)), 2.0) == []


def test_a_forged_record_condemns_the_rest_of_its_message() -> None:
    hub, (a, *_), _ = records_hub()
    forged = attrs.evolve(sign_record(identity(50), 2, ["h:1"]), addresses=("e:1",))
    news = sign_record(identity(51), 1, ["10.0.0.51:1"])
    hub.exchange.request(a, 1.0)
    assert hub.receive(a, Records((forged, news)), 1.0) == [
        Penalty(a, Fault.INVALID_RECORD)
    ]
    assert news.peer_id not in hub.exchange.book
    assert hub.counters["records.invalid"] == 1
    later = 1.0 + DEFAULTS.records_refresh  # a forgery is no news
    hub.exchange.request(a, later)
    hub.receive(a, Records((forged,)), later)
    assert hub.counters["records.invalid"] == 2


def test_a_pending_validation_times_out_exactly_at_the_timeout() -> None:
    router, (a, _, _) = one_router()
    [check] = router.receive(a, signed(ORIGIN, 1, b"x"), 1.0)
    assert isinstance(check, Validate)
    timeout = DEFAULTS.validation_timeout
    router.heartbeat(1.0 + timeout - 0.01)
    assert check.message_id in router.pending
    assert router.counters["validation.timeout"] == 0
    router.heartbeat(1.0 + timeout)
    assert not router.pending and router.counters["validation.timeout"] == 1
    assert router.validated(check.message_id, Verdict.ACCEPT, 12.0) == []
    assert router.counters["validation.accept"] == 0


def test_our_record_seqno_is_its_signing_time_and_always_grows() -> None:
    router, _ = one_router()
    first = router.exchange.set_addresses(["127.0.0.1:1"], 1.5)
    assert first.seqno == 1_500_000_000 and first.addresses == ("127.0.0.1:1",)
    assert first.peer_id == router.peer_id and first.verifies()
    assert router.exchange.set_addresses(["127.0.0.1:2"], 1.5).seqno == 1_500_000_001
    assert router.exchange.set_addresses(["127.0.0.1:2"], 0.5).seqno == 1_500_000_002
    assert router.exchange.set_addresses([], 2.0).seqno == 2_000_000_000
    assert (
        router.exchange.own_record is not None
        and router.exchange.own_record.addresses == ()
    )
    other, _ = one_router()
    assert (
        other.exchange.set_addresses(["127.0.0.1:1"], 0.0).seqno == 1
    )  # max(0 + 1, 0)


@pytest.mark.parametrize("verdict", list(Verdict))
def test_each_verdict_is_counted_once(verdict: Verdict) -> None:
    router, (a, _, _) = one_router()
    [check] = router.receive(a, signed(ORIGIN, 1, b"x"), 1.0)
    assert isinstance(check, Validate)
    router.validated(check.message_id, verdict, 1.0)
    assert router.counters == Counter({f"validation.{verdict.value}": 1})
    assert router.validated(check.message_id, verdict, 1.0) == []
    assert router.counters[f"validation.{verdict.value}"] == 1
    [again] = router.receive(a, signed(ORIGIN, 2, b"y"), 1.0)
    assert isinstance(again, Validate)
    router.validated(again.message_id, verdict, 1.0)
    assert router.counters[f"validation.{verdict.value}"] == 2


def test_a_message_accepted_after_we_left_its_topic_is_not_delivered() -> None:
    router, (a, _, _) = one_router()
    message = signed(ORIGIN, 1, b"x")
    [check] = router.receive(a, message, 1.0)
    assert isinstance(check, Validate)
    router.unsubscribe(TOPIC, 1.0)
    assert router.validated(check.message_id, Verdict.ACCEPT, 1.0) == []
    assert ORIGIN.peer_id in router.known_origins  # accepted all the same
    assert router.cache.get_for_peer(message.message_id, a)[0] == message


def test_a_publication_is_delivered_only_to_a_subscriber_and_seen() -> None:
    router, (a, b, c) = one_router()
    outputs = router.publish(TOPIC, b"x", 1.0)
    [deliver, send] = outputs
    assert isinstance(deliver, Deliver) and send == Send((a, b, c), deliver.message)
    assert router.receive(a, deliver.message, 1.0) == dropped(
        "duplicate"
    )  # our own: seen
    assert router.counters["publish.duplicate"] == 1
    router.receive(a, Subscriptions(((True, "other"),)), 1.0)
    [only] = router.publish("other", b"y", 1.0)
    assert isinstance(only, Send) and only.peers == (a,)
    assert router.counters == Counter({"publish.duplicate": 1})


def test_a_publication_of_exactly_the_size_cap_is_sent() -> None:
    settings = GossipSettings(max_message_size=10)
    router, _ = one_router(settings)
    assert len(router.publish(TOPIC, bytes(10), 1.0)) == 2
    with pytest.raises(PublishFailed, match="11 bytes exceed the size cap of 10"):
        router.publish(TOPIC, bytes(11), 1.0)


def test_the_control_budget_renews_exactly_a_heartbeat_interval_later() -> None:
    settings = GossipSettings(max_control_per_peer=2, max_topics_per_peer=1)
    router, (a, _, _) = one_router(settings)
    # one_router's graft at 0.0 spent one: one left this interval.
    assert router.receive(a, Prune(TOPIC, 1), 0.5) == []
    assert router.receive(a, Graft(TOPIC), 0.99) == [Penalty(a, Fault.CONTROL_FLOOD)]
    assert router.receive(a, Graft(TOPIC), 0.99) == []  # charged once
    assert router.counters["control.over_budget"] == 2
    assert a not in router.mesh[TOPIC]
    router.receive(a, Graft(TOPIC), 1.0)  # a new interval, though no heartbeat
    assert router.peers[a].grafts == 1 and not router.peers[a].flooded


def test_subscription_changes_spend_the_budget_to_its_last_entry() -> None:
    settings = GossipSettings(max_control_per_peer=6, max_topics_per_peer=3)
    router, (a, _, _) = one_router(settings)
    toggles = ((True, "x"), (False, "x"), (True, "x"), (False, "x"), (True, "y"))
    assert router.receive(a, Subscriptions(toggles), 5.0) == []
    assert router.peers[a].changes == 5
    assert router.receive(a, Subscriptions(((True, "z"), (True, "w"))), 5.0) == [
        Penalty(a, Fault.CONTROL_FLOOD)
    ]
    assert router.peers[a].topics == {TOPIC, "y", "z"}
    assert router.counters["control.over_budget"] == 1
    assert router.receive(a, Subscriptions(((False, "y"),)), 5.5) == []
    assert router.counters["control.over_budget"] == 2
    assert "y" in router.peers[a].topics
    assert router.receive(a, Subscriptions(((False, "y"), (False, "q"))), 6.0) == []
    assert router.peers[a].topics == {TOPIC, "z"}
    assert router.subscriptions == 2 + 2
    assert router.topic_peers["z"] == {a} and "y" not in router.topic_peers


def gossip_hub(
    peers: int,
    settings: GossipSettings = DEFAULTS,
    topics: tuple[str, ...] = ("a", "b"),
) -> tuple[Router, list[PeerId]]:
    """A router with ``peers`` inbound peers, each announcing ``topics``."""
    hub = Router(identity(1), settings, now=0.0, rng=random.Random(5))
    ids = [identity(100 + n).peer_id for n in range(peers)]
    for peer in ids:
        hub.peer_connected(peer, outbound=False)
        hub.receive(peer, Subscriptions(tuple((True, t) for t in topics)), 0.0)
    return hub, ids


def test_ihave_offers_the_newest_history_gossip_heartbeats_iwant_serves_more() -> None:
    """9.5: IHave announces what arrived in the last ``history_gossip`` (3)
    heartbeats; IWant is still served from the whole ``history_length`` (5)."""
    hub, ids = gossip_hub(9)
    hub.subscribe("b", 0.0)
    [deliver] = [o for o in hub.publish("b", b"news", 0.5) if isinstance(o, Deliver)]
    mid = deliver.message.message_id
    offered = []
    for beat in range(1, 5):
        ihaves = sends(hub.heartbeat(float(beat)), IHave)
        offered.append(any(mid in s.message.message_ids for s in ihaves))  # type: ignore[union-attr]
    assert offered == [True, True, True, False]
    outside = next(p for p in ids if p not in hub.mesh["b"])
    [served] = sends(hub.receive(outside, IWant((mid,)), 4.5), Publish)
    assert served.message == deliver.message


def test_a_publication_is_forwarded_in_the_bytes_it_came_in() -> None:
    """Each hop used to decode a message, then encode it again to forward it
    unchanged; the strict decoder admits one encoding of each message, so
    the received frame body is what encoding would give, and it goes on
    as it came (``Send.body``)."""
    router, (a, _, _) = one_router()
    message = signed(ORIGIN, 1, b"as it came")
    body = gossip_wire.encode(message)
    assert gossip_wire.decode(body) == message  # one encoding
    [validate] = router.receive(a, message, 1.0, body)
    assert isinstance(validate, Validate)
    outputs = router.validated(validate.message_id, Verdict.ACCEPT, 1.0)
    [send] = [o for o in outputs if isinstance(o, Send)]
    assert send.body is body and a not in send.peers
    # Without the bytes (a message made here), or past FORWARD_AS_RECEIVED
    # (held twice while validated otherwise), the caller encodes it.
    large = signed(ORIGIN, 2, bytes(FORWARD_AS_RECEIVED))
    assert len(gossip_wire.encode(large)) > FORWARD_AS_RECEIVED
    *_, validate = router.receive(a, large, 1.0, gossip_wire.encode(large))
    assert isinstance(validate, Validate)
    outputs = router.validated(validate.message_id, Verdict.ACCEPT, 1.0)
    [send] = [o for o in outputs if isinstance(o, Send)]
    assert send.body == b""
    # At exactly FORWARD_AS_RECEIVED, still as received.
    overhead = len(gossip_wire.encode(signed(ORIGIN, 3, b"")))
    edge = signed(ORIGIN, 3, bytes(FORWARD_AS_RECEIVED - overhead))
    edge_body = gossip_wire.encode(edge)
    assert len(edge_body) == FORWARD_AS_RECEIVED
    *_, validate = router.receive(a, edge, 1.0, edge_body)
    assert isinstance(validate, Validate)
    outputs = router.validated(validate.message_id, Verdict.ACCEPT, 1.0)
    [send] = [o for o in outputs if isinstance(o, Send)]
    assert send.body is edge_body
    router, (a, _, _) = one_router()
    [validate] = router.receive(a, message, 1.0)
    assert isinstance(validate, Validate)
    outputs = router.validated(validate.message_id, Verdict.ACCEPT, 1.0)
    [send] = [o for o in outputs if isinstance(o, Send)]
    assert send.body == b""


# -- IDontWant (gossipsub v1.2) ------------------------------------------------

#: Sending IDontWant is off by default (older nodes close the link on it).
SENDS = attrs.evolve(DEFAULTS, idontwant_threshold=1024)
LARGE = bytes(1024)


def test_idontwant_is_not_sent_by_default_but_always_taken() -> None:
    assert DEFAULTS.idontwant_threshold is None
    router, (a, b, c) = one_router()
    message = signed(ORIGIN, 1, bytes(65536))
    assert router.receive(c, IDontWant((message.message_id,)), 1.0) == []
    [validate] = router.receive(a, message, 1.0)
    assert isinstance(validate, Validate)
    [forward] = [
        o
        for o in router.validated(message.message_id, Verdict.ACCEPT, 1.0)
        if isinstance(o, Send)
    ]
    assert forward.peers == (b,)


def idontwants(outputs: list[RouterOutput]) -> list[Send]:
    return [o for o in outputs if isinstance(o, Send) and type(o.message) is IDontWant]


def test_a_large_publication_is_announced_to_the_mesh_before_its_verdict() -> None:
    router, (a, b, c) = one_router(SENDS)
    origin = identity(3)  # b is in the mesh and is the origin: no notice to it
    assert origin.peer_id == b
    message = signed(origin, 1, LARGE)
    outputs = router.receive(a, message, 1.0)
    assert outputs == [
        Send((c,), IDontWant((message.message_id,))),
        Validate(message.message_id, message, a),
    ]


@pytest.mark.parametrize(
    ("threshold", "size", "sent"),
    [(1024, 1023, False), (1024, 1024, True), (0, 0, True), (None, 65536, False)],
)
def test_idontwant_is_sent_from_the_threshold_up(
    threshold: int | None, size: int, sent: bool
) -> None:
    settings = attrs.evolve(DEFAULTS, idontwant_threshold=threshold)
    router, (a, b, c) = one_router(settings)
    message = signed(ORIGIN, 1, bytes(size))
    [*notices, validate] = router.receive(a, message, 1.0)
    assert isinstance(validate, Validate)
    expected = [Send((b, c), IDontWant((message.message_id,)))] if sent else []
    assert notices == expected


def test_no_idontwant_for_a_forged_copy_nor_without_other_mesh_peers() -> None:
    router, (a, b, c) = one_router(SENDS)
    message = signed(ORIGIN, 1, LARGE)
    forged = attrs.evolve(message, signature=bytes(64))
    assert idontwants(router.receive(a, forged, 1.0)) == []
    # The real one still comes, and is announced.
    assert idontwants(router.receive(b, message, 1.0)) == [
        Send((a, c), IDontWant((message.message_id,)))
    ]
    alone, (only,) = one_router(SENDS, peers=1)
    [validate] = alone.receive(only, signed(ORIGIN, 2, LARGE), 1.0)
    assert isinstance(validate, Validate)


def accept(router: Router, peer: PeerId, message: Publish, now: float) -> list[Send]:
    *_, validate = router.receive(peer, message, now)
    assert isinstance(validate, Validate)
    outputs = router.validated(validate.message_id, Verdict.ACCEPT, now)
    return [o for o in outputs if isinstance(o, Send)]


def test_a_peer_that_said_it_has_a_message_is_not_sent_it() -> None:
    router, (a, b, c) = one_router()
    message = signed(ORIGIN, 1, b"small")
    assert router.receive(c, IDontWant((message.message_id,)), 1.0) == []
    [forward] = accept(router, a, message, 1.0)
    assert forward.peers == (b,)
    assert router.counters["forward.unwanted"] == 1
    # Only for that message, and only to that peer.
    [forward] = accept(router, a, signed(ORIGIN, 2, b"small"), 1.0)
    assert forward.peers == (b, c)
    assert router.counters["forward.unwanted"] == 1


def test_idontwant_for_a_message_awaiting_its_verdict_holds_until_the_verdict() -> None:
    """A notice for a message whose verdict is awaited is kept with the
    message, however many heartbeats the validator takes (the heartbeat
    ring would forget it after ``idontwant_heartbeats``)."""
    router, (a, b, c) = one_router()
    message = signed(ORIGIN, 1, b"small")
    [validate] = router.receive(a, message, 1.0)
    assert isinstance(validate, Validate)
    router.receive(b, IDontWant((message.message_id,)), 1.0)
    assert router.peers[b].unwanted == {}  # kept with the message
    for beat in range(DEFAULTS.idontwant_heartbeats + 2):
        router.heartbeat(1.0 + beat)
    outputs = router.validated(message.message_id, Verdict.ACCEPT, 6.0)
    [forward] = [o for o in outputs if isinstance(o, Send)]
    assert forward.peers == (c,)
    assert router.counters["forward.unwanted"] == 1


def test_a_notice_from_outside_the_mesh_is_not_held_with_a_waiting_message() -> None:
    router, (a, _, c) = one_router()
    outsider = identity(50).peer_id
    router.peer_connected(outsider, outbound=False)
    message = signed(ORIGIN, 1, b"small")
    [validate] = router.receive(a, message, 1.0)
    assert isinstance(validate, Validate)
    router.receive(outsider, IDontWant((message.message_id,)), 1.0)
    assert router.pending[message.message_id].holders == set()
    assert router.peers[outsider].unwanted == {}  # seen: not kept either
    router.receive(c, IDontWant((message.message_id,)), 1.0)
    assert router.pending[message.message_id].holders == {c}


@pytest.mark.parametrize(
    "drop",
    [
        # Over the node's pending bound: dropped after the signature.
        {"max_pending": 0},
        # Over the origin's rate, checked after the signature too.
        {"origin_burst": 0, "origin_rate": 0.001},
        # A new origin over the peer's budget for them.
        {"new_origin_burst": 0, "new_origin_rate": 0.001},
    ],
    ids=["pending-full", "origin-rate", "new-origin-rate"],
)
def test_no_idontwant_for_a_message_dropped_after_its_signature(
    drop: dict[str, Any],
) -> None:
    """A notice goes out only for a message the node took: one dropped after
    its signature verified is not recorded as seen, so a notice would keep
    it from us though we lack it."""
    router, (a, _, _) = one_router(attrs.evolve(SENDS, **drop))
    outputs = router.receive(a, signed(ORIGIN, 1, LARGE), 1.0)
    assert [type(o) for o in outputs] == [Dropped]
    assert idontwants(outputs) == []


def test_no_forward_budget_is_spent_when_every_target_has_the_message() -> None:
    settings = attrs.evolve(DEFAULTS, forward_burst=1, forward_rate=0.001)
    router, (a, b, c) = one_router(settings)
    first, second = signed(ORIGIN, 1, b"one"), signed(ORIGIN, 2, b"two")
    for peer in (b, c):
        router.receive(peer, IDontWant((first.message_id,)), 1.0)
    assert accept(router, a, first, 1.0) == []  # nobody to push it to
    [forward] = accept(router, a, second, 1.0)  # the burst of one is left
    assert forward.peers == (b, c)
    assert router.counters["forward.source_rate"] == 0


def test_ids_of_messages_already_forwarded_are_not_kept() -> None:
    router, (a, b, _) = one_router()
    message = signed(ORIGIN, 1, b"small")
    accept(router, a, message, 1.0)
    router.receive(b, IDontWant((message.message_id,)), 1.0)
    assert router.peers[b].unwanted == {}
    assert router.peers[b].dontwants == 1  # looked at, all the same


def test_idontwant_ids_are_kept_for_idontwant_heartbeats() -> None:
    settings = attrs.evolve(DEFAULTS, idontwant_heartbeats=2)
    router, (a, b, c) = one_router(settings)
    messages = [signed(ORIGIN, n, b"small") for n in (1, 2)]
    router.receive(c, IDontWant(tuple(m.message_id for m in messages)), 1.0)
    router.heartbeat(1.0)
    [forward] = accept(router, a, messages[0], 1.5)
    assert forward.peers == (b,)  # still kept one heartbeat on
    router.heartbeat(2.0)
    [forward] = accept(router, a, messages[1], 2.5)
    assert forward.peers == (b, c)  # forgotten after two


def test_idontwant_ids_are_looked_at_up_to_the_limit_per_heartbeat() -> None:
    settings = attrs.evolve(DEFAULTS, max_idontwant=3)
    router, (_, _, c) = one_router(settings)
    messages = [signed(ORIGIN, n, b"small") for n in range(1, 7)]
    ids = [m.message_id for m in messages]
    router.receive(c, IDontWant(tuple(ids[:2])), 1.0)
    assert router.counters["idontwant.over_limit"] == 0
    router.receive(c, IDontWant(tuple(ids[2:4])), 1.0)  # one over
    assert router.counters["idontwant.over_limit"] == 1
    router.receive(c, IDontWant((ids[4],)), 1.0)  # none left
    assert router.counters["idontwant.over_limit"] == 2
    assert router.peers[c].unwanted == dict.fromkeys(ids[:3], 0)
    router.heartbeat(1.0)  # a new budget
    router.receive(c, IDontWant((ids[5],)), 1.0)
    assert router.counters["idontwant.over_limit"] == 2
    assert router.peers[c].unwanted == {**dict.fromkeys(ids[:3], 0), ids[5]: 1}
    assert router.peers[c].dontwants == 1


def test_a_notice_for_a_waiting_message_of_a_topic_just_left_is_ignored() -> None:
    """Left while a verdict waits, the topic has no mesh: a notice for its
    message holds nothing (and raises nothing)."""
    router, (a, b, _) = one_router()
    message = signed(ORIGIN, 1, b"small")
    [validate] = router.receive(a, message, 1.0)
    assert isinstance(validate, Validate)
    router.unsubscribe(TOPIC, 1.0)
    assert TOPIC not in router.mesh
    assert router.receive(b, IDontWant((message.message_id,)), 1.0) == []
    assert router.pending[message.message_id].holders == set()
