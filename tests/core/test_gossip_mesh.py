"""The mesh half of the gossip router (``gossip_mesh.Meshes``): membership,
subscribing, backoffs and the heartbeat's upkeep of meshes and fanout,
driven through a ``Router`` directly and in a simulated network.
"""

from __future__ import annotations

import random

import pytest

from blueprint_net._core.gossip_outputs import (
    Deliver,
    Send,
)
from blueprint_net._core.gossip_settings import DEFAULTS, GossipSettings
from blueprint_net._core.gossip_wire import (
    Graft,
    IHave,
    Prune,
    Publish,
    Subscriptions,
    message_id,
)
from blueprint_net._core.identity import PeerId
from blueprint_net._core.pubsub import Router
from blueprint_net._core.records import sign_record
from tests.core.test_pubsub import (
    TOPIC,
    Net,
    gossip_hub,
    identity,
    one_router,
    sends,
    small_mesh_router,
)


def test_meshes_stay_within_d_lo_and_d_hi_over_heartbeats() -> None:
    net = Net(40, seed=3)
    net.random_graph(outbound=6)
    net.subscribe_all()
    s = DEFAULTS
    sizes = []
    for _ in range(8):
        net.now += s.heartbeat_interval
        for router in net.routers:
            net.handle(router, router.heartbeat(net.now))
            # Between heartbeats an outbound peer's graft may pass D_hi (as
            # in gossipsub); each heartbeat brings the mesh back in bounds.
            mesh = router.mesh[TOPIC]
            assert mesh <= router.topic_peers[TOPIC]
            sizes.append(len(mesh))
        net.run()
    assert s.mesh_low <= min(sizes) and max(sizes) <= s.mesh_high
    # Mesh links are symmetric once settled (GRAFT adds both ends).
    asymmetric = [
        (r.peer_id, p)
        for r in net.routers
        for p in r.mesh[TOPIC]
        if r.peer_id not in net.by_id[p].mesh[TOPIC]
    ]
    assert not asymmetric


def test_a_crowded_mesh_is_pruned_to_d_keeping_outbound_peers() -> None:
    hub = Router(identity(1), DEFAULTS, now=0.0, rng=random.Random(1))
    hub.subscribe(TOPIC, 0.0)
    peers = [identity(n).peer_id for n in range(2, 22)]
    for i, peer in enumerate(peers):
        hub.peer_connected(peer, outbound=i < 3)
        hub.receive(peer, Subscriptions(((True, TOPIC),)), 0.0)
        assert hub.exchange.book.offer(
            sign_record(identity(i + 2), 1, [f"10.0.2.{i}:1"])
        )
    for peer in peers[3:]:  # inbound grafts fill it to D_hi, no further
        hub.receive(peer, Graft(TOPIC), 0.0)
    assert len(hub.mesh[TOPIC]) == DEFAULTS.mesh_high
    for peer in peers[:3]:  # outbound grafts are taken even so
        hub.receive(peer, Graft(TOPIC), 0.0)
    before = set(hub.mesh[TOPIC])
    assert len(before) == DEFAULTS.mesh_high + 3
    outputs = hub.heartbeat(1.0)
    mesh = hub.mesh[TOPIC]
    assert len(mesh) == DEFAULTS.mesh_degree
    assert sum(hub.peers[p].outbound for p in mesh) >= DEFAULTS.mesh_outbound
    [prune] = sends(outputs, Prune)
    assert isinstance(prune.message, Prune)
    assert prune.message.backoff == DEFAULTS.prune_backoff
    assert set(prune.peers) == before - mesh
    # With peer exchange: records of the topic's peers, none of the pruned.
    exchanged = {record.peer_id for record in prune.message.records}
    assert exchanged == set(peers) - set(prune.peers)


def test_fanout_publishes_without_subscribing_and_expires() -> None:
    settings = GossipSettings(flood_publish=False)
    net = Net(10, settings=settings)
    hub = net.routers[0]
    for other in net.routers[1:]:
        net.connect(hub, other)
    for router in net.routers[1:]:
        net.handle(router, router.subscribe(TOPIC, net.now))
    net.run()
    outputs = hub.publish(TOPIC, b"x", net.now)
    [send] = sends(outputs, Publish)
    assert len(send.peers) == settings.mesh_degree
    assert set(send.peers) == hub.fanout[TOPIC]
    net.now += settings.fanout_ttl + 1
    hub.heartbeat(net.now)
    assert TOPIC not in hub.fanout


def test_unsubscribe_prunes_the_mesh_and_announces() -> None:
    router, peers = one_router()
    outputs = router.unsubscribe(TOPIC, 1.0)
    [announce] = sends(outputs, Subscriptions)
    assert announce.message == Subscriptions(((False, TOPIC),))
    [prune] = sends(outputs, Prune)
    assert set(prune.peers) == set(peers)
    assert isinstance(prune.message, Prune)
    assert prune.message.backoff == DEFAULTS.unsubscribe_backoff


def test_departed_peers_backoffs_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from blueprint_net._core import gossip_mesh

    monkeypatch.setattr(gossip_mesh, "MAX_DEPARTED_BACKOFFS", 2)
    router, (a, b, c) = one_router()
    for peer in (a, b, c):
        router.receive(peer, Prune(TOPIC, 60), 1.0)
        router.peer_disconnected(peer)
    # The first to leave lost its entry; the others are kept for their return.
    assert list(router.departed) == [b, c] and router.departed_count == 2
    assert router.counters["backoff.departed_evicted"] == 1
    router.heartbeat(1.0 + 60 + DEFAULTS.graft_grace)
    assert not router.departed and router.departed_count == 0


def test_unsubscribing_prunes_with_records_of_the_topics_other_peers() -> None:
    router, (a, b, c, d, e) = small_mesh_router()
    for peer in (a, b):
        router.receive(peer, Graft(TOPIC), 0.0)
    records = {
        p: sign_record(identity(n), 1, [f"10.0.0.{n}:1"])
        for n, p in zip(range(2, 7), (a, b, c, d, e))
    }
    for record in records.values():
        assert router.exchange.book.offer(record)
    outputs = router.unsubscribe(TOPIC, 1.0)
    [prune] = sends(outputs, Prune)
    assert prune.peers == tuple(sorted((a, b)))
    assert isinstance(prune.message, Prune)
    assert prune.message.topic == TOPIC
    assert prune.message.backoff == DEFAULTS.unsubscribe_backoff
    # Records of the topic's peers outside the pruned mesh, never theirs.
    exchanged = {r.peer_id for r in prune.message.records}
    assert exchanged == {c, d, e}


def hub_with(inbound: int, outbound: int) -> tuple[Router, list[PeerId], list[PeerId]]:
    """A router subscribed to TOPIC with peers of the topic, none grafted."""
    hub = Router(identity(1), DEFAULTS, now=0.0, rng=random.Random(5))
    hub.subscribe(TOPIC, 0.0)
    ins = [identity(100 + n).peer_id for n in range(inbound)]
    outs = [identity(200 + n).peer_id for n in range(outbound)]
    for peers, dialed in ((ins, False), (outs, True)):
        for peer in peers:
            hub.peer_connected(peer, outbound=dialed)
            hub.receive(peer, Subscriptions(((True, TOPIC),)), 0.0)
    return hub, ins, outs


def test_a_heartbeat_grafts_below_d_lo_up_to_d() -> None:
    hub, ins, _ = hub_with(10, 0)
    for peer in ins[:5]:  # D_lo: enough, however few outbound
        hub.receive(peer, Graft(TOPIC), 0.0)
    assert hub.heartbeat(1.0) == []
    hub.receive(ins[0], Prune(TOPIC, 60), 1.0)  # 4: below D_lo
    outputs = hub.heartbeat(2.0)
    [graft] = sends(outputs)
    assert outputs == [graft]
    assert graft.message == Graft(TOPIC) and len(graft.peers) == 2
    assert graft.peers == tuple(sorted(graft.peers))
    assert set(graft.peers) <= set(ins[5:])
    assert len(hub.mesh[TOPIC]) == DEFAULTS.mesh_degree


def test_a_heartbeat_grafts_outbound_peers_up_to_d_out() -> None:
    hub, ins, outs = hub_with(6, 3)
    for peer in ins[:5]:  # D_lo, none outbound
        hub.receive(peer, Graft(TOPIC), 0.0)
    outputs = hub.heartbeat(1.0)
    [graft] = sends(outputs)
    assert outputs == [graft]
    assert graft.message == Graft(TOPIC)
    assert len(graft.peers) == DEFAULTS.mesh_outbound
    assert set(graft.peers) <= set(outs)
    assert len(hub.mesh[TOPIC]) == 5 + DEFAULTS.mesh_outbound
    assert hub.heartbeat(2.0) == []  # D_out reached


def test_a_heartbeat_prunes_above_d_hi_to_d_keeping_d_out_outbound() -> None:
    hub, ins, outs = hub_with(12, 3)
    for peer in ins:  # inbound grafts fill it to D_hi exactly
        hub.receive(peer, Graft(TOPIC), 0.0)
    assert len(hub.mesh[TOPIC]) == 12
    # At D_hi: nothing pruned (outbound peers are grafted, D_out of them).
    outputs = hub.heartbeat(1.0)
    [graft] = sends(outputs)
    assert outputs == [graft]
    assert graft.message == Graft(TOPIC) and len(graft.peers) == 2
    # The third outbound peer's graft is taken even so.
    (third,) = set(outs) - set(graft.peers)
    assert hub.receive(third, Graft(TOPIC), 1.0) == []
    mesh = set(hub.mesh[TOPIC])
    assert len(mesh) == 15
    # Above D_hi: pruned to D, the outbound peers kept.
    outputs = hub.heartbeat(2.0)
    [prune] = sends(outputs, Prune)
    assert len(hub.mesh[TOPIC]) == DEFAULTS.mesh_degree
    kept_out = [p for p in hub.mesh[TOPIC] if p in outs]
    assert len(kept_out) == DEFAULTS.mesh_outbound
    assert set(prune.peers) == mesh - hub.mesh[TOPIC]
    assert len(prune.peers) == 15 - DEFAULTS.mesh_degree
    assert prune.peers == tuple(sorted(prune.peers))
    assert isinstance(prune.message, Prune)
    assert prune.message.topic == TOPIC
    assert prune.message.backoff == DEFAULTS.prune_backoff
    # The pruned are backing off: their grafts are refused at once.
    late = prune.peers[0]
    assert hub.receive(late, Graft(TOPIC), 2.5) == [Send((late,), Prune(TOPIC, 60))]


def test_our_graft_waits_the_grace_past_a_peers_backoff() -> None:
    router, (a, _, _) = one_router()
    router.receive(a, Prune(TOPIC, 10), 0.0)  # backing off until 10 s
    router.unsubscribe(TOPIC, 1.0)
    router.subscribe(TOPIC, 11.9)
    assert a not in router.mesh[TOPIC]
    router.unsubscribe(TOPIC, 11.95)
    router.subscribe(TOPIC, 12.0)
    assert a in router.mesh[TOPIC]


@pytest.mark.parametrize("topic", ["x", "x" * 255, "é" * 127])
def test_a_topic_is_1_to_255_bytes(topic: str) -> None:
    router, _ = one_router()
    router.subscribe(topic, 1.0)
    assert topic in router.subscribed
    assert any(isinstance(o, Deliver) for o in router.publish(topic, b"x", 1.0))


@pytest.mark.parametrize("topic", ["", "x" * 256, "é" * 128])
def test_a_topic_of_0_or_256_bytes_is_refused(topic: str) -> None:
    router, _ = one_router()
    with pytest.raises(ValueError, match="1 to 255 bytes"):
        router.subscribe(topic, 1.0)
    with pytest.raises(ValueError, match="1 to 255 bytes"):
        router.publish(topic, b"x", 1.0)


@pytest.mark.parametrize(("peers", "targets"), [(9, 3), (20, 6), (40, 8)])
def test_ihave_goes_to_max_d_lazy_or_a_factor_of_the_eligible(
    peers: int, targets: int
) -> None:
    """9.5 Gossip: max(D_lazy, gossip_factor x eligible) random peers outside
    the mesh (all of them if fewer); a topic with nothing cached is skipped,
    not the end of the round."""
    hub, ids = gossip_hub(peers)
    for topic in ("a", "b"):
        hub.subscribe(topic, 0.0)  # grafts D of the peers
    [deliver] = [o for o in hub.publish("b", b"news", 0.5) if isinstance(o, Deliver)]
    outputs = hub.heartbeat(1.0)
    [ihave] = sends(outputs, IHave)
    assert ihave.message == IHave("b", (deliver.message.message_id,))
    assert len(ihave.peers) == targets  # eligible: peers - D
    assert ihave.peers == tuple(sorted(ihave.peers))
    assert set(ihave.peers) <= set(ids) - hub.mesh["b"]


def test_fanout_topics_are_gossiped_outside_the_fanout_and_ihave_is_capped() -> None:
    settings = GossipSettings(flood_publish=False, max_ihave_length=2)
    hub, ids = gossip_hub(10, settings, topics=("b",))
    mids = [
        message_id(hub.peer_id, hub.seqno)
        for n in range(3)
        if sends(hub.publish("b", bytes([n]), 0.5), Publish)
    ]
    assert len(mids) == 3
    fanout = set(hub.fanout["b"])
    assert len(fanout) == settings.mesh_degree
    [ihave] = sends(hub.heartbeat(1.0), IHave)
    assert ihave.peers == tuple(sorted(set(ids) - fanout))  # 4 < D_lazy: all
    assert isinstance(ihave.message, IHave) and ihave.message.topic == "b"
    assert len(ihave.message.message_ids) == 2
    assert set(ihave.message.message_ids) < set(mids)


def test_a_topic_nobody_else_has_is_not_gossiped_and_the_round_goes_on() -> None:
    hub, _ = gossip_hub(9, topics=("b",))
    for topic in ("alone", "b"):  # "alone" comes first
        hub.subscribe(topic, 0.0)
    assert [type(o) for o in hub.publish("alone", b"x", 0.5)] == [Deliver]
    assert hub.counters["publish.no_peers"] == 1
    hub.publish("alone", b"y", 0.5)
    assert hub.counters["publish.no_peers"] == 2  # each one counted
    hub.publish("b", b"x", 0.5)
    [ihave] = sends(hub.heartbeat(1.0), IHave)
    assert isinstance(ihave.message, IHave) and ihave.message.topic == "b"
    assert len(ihave.peers) == 9 - DEFAULTS.mesh_degree


def test_fanout_is_topped_up_to_d_and_lives_a_ttl_after_the_last_publish() -> None:
    settings = GossipSettings(flood_publish=False)
    hub, ids = gossip_hub(10, settings, topics=("b",))
    [first] = sends(hub.publish("b", b"1", 0.0), Publish)
    fanout = set(hub.fanout["b"])
    assert set(first.peers) == fanout and len(fanout) == settings.mesh_degree
    leaver = sorted(fanout)[0]
    hub.receive(leaver, Subscriptions(((False, "b"),)), 0.5)
    assert hub.fanout["b"] == fanout - {leaver}
    hub.heartbeat(1.0)  # topped up from the topic's other peers
    assert len(hub.fanout["b"]) == settings.mesh_degree
    assert fanout - {leaver} < hub.fanout["b"] <= set(ids) - {leaver}
    kept = set(hub.fanout["b"])
    [again] = sends(hub.publish("b", b"2", 30.0), Publish)
    assert set(again.peers) == kept  # the same fanout, its TTL renewed
    hub.heartbeat(30.0 + settings.fanout_ttl)  # exactly the TTL: kept
    assert hub.fanout["b"] == kept
    hub.heartbeat(30.0 + settings.fanout_ttl + 0.5)
    assert "b" not in hub.fanout and "b" not in hub.last_published


def test_without_flood_publishing_a_subscriber_publishes_to_its_mesh_only() -> None:
    settings = GossipSettings(flood_publish=False)
    hub, _ = gossip_hub(10, settings, topics=("b",))
    hub.subscribe("b", 0.0)
    assert len(hub.mesh["b"]) == settings.mesh_degree
    [send] = sends(hub.publish("b", b"x", 0.5), Publish)
    assert send.peers == tuple(sorted(hub.mesh["b"]))
    assert "b" not in hub.fanout and "b" not in hub.last_published


def test_backoffs_expire_the_grace_after_their_end_connected_or_departed() -> None:
    router, (a, b, _) = one_router()
    router.receive(a, Prune(TOPIC, 10), 0.0)  # until 10 s, then 2 s of grace
    router.receive(b, Prune(TOPIC, 10), 0.0)
    router.peer_disconnected(b)
    assert router.departed_count == 1 and list(router.departed) == [b]
    router.heartbeat(11.99)
    assert TOPIC in router.peers[a].backoffs and router.departed_count == 1
    assert TOPIC in router.departed[b]
    router.heartbeat(12.0)
    assert router.peers[a].backoffs == {}
    assert router.departed == {} and router.departed_count == 0


def test_a_peer_connects_once_and_is_told_our_topics() -> None:
    router = Router(identity(1), DEFAULTS, now=0.0, rng=random.Random(1))
    a, b = identity(2).peer_id, identity(3).peer_id
    assert router.peer_connected(router.peer_id, outbound=True) == []
    assert router.peer_id not in router.peers
    assert router.peer_connected(a, outbound=True) == []  # no topics: nothing
    router.subscribe("y", 0.0)
    router.subscribe("x", 0.0)
    assert router.peer_connected(a, outbound=False) == []  # already connected
    assert router.peers[a].outbound
    assert router.peer_connected(b, outbound=False) == [
        Send((b,), Subscriptions(((True, "x"), (True, "y"))))
    ]
    assert not router.peers[b].outbound


def test_a_returning_peers_backoffs_leave_the_departed_table() -> None:
    router, (a, b, c, d) = one_router(peers=4)
    for peer in (a, b, c):
        router.receive(peer, Prune(TOPIC, 60), 1.0)
        router.peer_disconnected(peer)
    assert router.departed_count == 3
    router.peer_connected(a, outbound=True)
    assert list(router.departed) == [b, c] and router.departed_count == 2
    backoff = router.peers[a].backoffs[TOPIC]
    assert backoff.until == 61.0 and not backoff.by_us and not backoff.chargeable
    router.peer_disconnected(d)  # no backoffs: nothing kept
    assert d not in router.departed and router.departed_count == 2


def test_each_departed_backoff_pushed_out_is_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from blueprint_net._core import gossip_mesh

    monkeypatch.setattr(gossip_mesh, "MAX_DEPARTED_BACKOFFS", 1)
    router, (a, b, c) = one_router()
    for peer in (a, b, c):
        router.receive(peer, Prune(TOPIC, 60), 1.0)
        router.peer_disconnected(peer)
    assert list(router.departed) == [c] and router.departed_count == 1
    assert router.counters["backoff.departed_evicted"] == 2


def test_a_departing_peer_leaves_every_table_and_its_subscriptions() -> None:
    settings = GossipSettings(flood_publish=False)
    hub, ids = gossip_hub(8, settings, topics=("a", "f"))
    hub.subscribe("a", 0.0)
    hub.publish("f", b"x", 0.0)
    assert hub.subscriptions == 16
    gone = sorted(hub.mesh["a"] & hub.fanout["f"])[0]
    assert hub.peer_disconnected(gone) == []
    assert hub.peer_disconnected(gone) == []  # once
    assert hub.subscriptions == 14
    for table in (hub.topic_peers, hub.mesh, hub.fanout):
        assert all(gone not in members for members in table.values())
    for peer in ids:
        if peer != gone:
            hub.peer_disconnected(peer)
    assert hub.subscriptions == 0 and hub.topic_peers == {}


def test_subscribing_announces_to_every_peer_and_grafts_fanout_peers_first() -> None:
    settings = GossipSettings(flood_publish=False)
    hub, ids = gossip_hub(10, settings, topics=("b",))
    hub.publish("b", b"x", 0.0)
    fanout = set(hub.fanout["b"])
    outputs = hub.subscribe("b", 1.0)
    [announce, graft] = outputs
    assert announce == Send(tuple(sorted(ids)), Subscriptions(((True, "b"),)))
    assert graft == Send(tuple(sorted(fanout)), Graft("b"))
    assert hub.mesh["b"] == fanout
    assert "b" not in hub.fanout and "b" not in hub.last_published
    assert hub.subscribe("b", 1.0) == []


def test_subscribing_with_no_peers_sends_nothing() -> None:
    router = Router(identity(1), DEFAULTS, now=0.0)
    assert router.subscribe(TOPIC, 0.0) == []
    assert router.mesh == {TOPIC: set()}


def test_a_node_subscribes_to_exactly_max_topics_per_peer() -> None:
    router = Router(identity(1), GossipSettings(max_topics_per_peer=2), now=0.0)
    router.subscribe("one", 0.0)
    router.subscribe("two", 0.0)
    with pytest.raises(ValueError, match="subscribed to 2 topics already"):
        router.subscribe("three", 0.0)
    assert router.subscribed == {"one", "two"}


def test_fanout_upkeep_goes_on_past_an_expired_topic_and_a_peerless_one() -> None:
    settings = GossipSettings(flood_publish=False)
    hub, ids = gossip_hub(10, settings, topics=("b", "c"))
    hub.publish("a", b"x", 0.0)  # nobody has "a": an empty fanout, counted
    assert hub.fanout["a"] == set() and hub.last_published["a"] == 0.0
    assert hub.counters["publish.no_peers"] == 1
    hub.publish("b", b"x", 0.0)
    hub.publish("c", b"x", 50.0)
    fanout = set(hub.fanout["c"])
    leaver = sorted(fanout)[0]
    hub.receive(leaver, Subscriptions(((False, "c"),)), 50.0)
    for peer in ids:  # every peer leaves "b": its fanout empties
        hub.receive(peer, Subscriptions(((False, "b"),)), 50.0)
    assert hub.fanout["b"] == set() and "b" not in hub.topic_peers
    hub.heartbeat(50.5)  # "a" and "b" are still within their TTL
    assert hub.fanout["a"] == hub.fanout["b"] == set()
    assert len(hub.fanout["c"]) == settings.mesh_degree
    assert hub.fanout["c"] > fanout - {leaver}
    hub.receive(sorted(hub.fanout["c"])[0], Subscriptions(((False, "c"),)), 61.0)
    hub.heartbeat(61.0)  # "a" and "b" expire; "c" is topped up all the same
    assert sorted(hub.fanout) == ["c"] and sorted(hub.last_published) == ["c"]
    assert len(hub.fanout["c"]) == settings.mesh_degree


def test_a_heartbeat_keeps_the_mesh_of_every_topic() -> None:
    hub, _ = gossip_hub(8)
    for topic in ("a", "b"):
        hub.subscribe(topic, 0.0)
        for peer in sorted(hub.mesh[topic])[:2]:  # below D_lo in both
            hub.receive(peer, Prune(topic, 1), 0.0)
    outputs = hub.heartbeat(5.0)
    grafts = [s.message for s in sends(outputs, Graft)]
    assert sorted(g.topic for g in grafts if isinstance(g, Graft)) == ["a", "b"]
    assert len(hub.mesh["a"]) == len(hub.mesh["b"]) == DEFAULTS.mesh_degree
