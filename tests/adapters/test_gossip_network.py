"""Topic gossip and discovery between real nodes: TLS (the default) on
loopback, heartbeats and the connection manager on a ``task.Clock``, and
bounded waits for what crosses the sockets."""

from __future__ import annotations

import functools
import gc
import random
from collections.abc import Awaitable
from typing import Any, Callable, Optional

import attrs
import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.internet.address import IPv4Address
from twisted.logger import formatEvent

from bench.attack_discovery import Swarm
from blueprint_net import Identity, Node, Settings
from blueprint_net._adapters.connection_manager import ConnectionManager
from blueprint_net._core import gossip_wire
from blueprint_net._core.errors import ErrorCode, NotConnected, SendQueueFull
from blueprint_net._core.gossip_outputs import Send
from blueprint_net._core.records import sign_record
from blueprint_net._ops.service import NodeService
from blueprint_net._policy.discovery import DiscoverySettings
from blueprint_net.gossip import GossipMessage, GossipSettings, Verdict
from blueprint_net.testing import MemoryNetwork
from tests.helpers import MakeNode

pytestmark = pytest.mark.timeout(60)

TOPIC = "news"
#: The longest any one wait may take (real sockets, two shared cores).
WAIT = 15.0


async def until(condition: Callable[[], bool], seconds: float = WAIT) -> None:
    """Return once ``condition()`` holds; fail after ``seconds``."""
    deadline = reactor.seconds() + seconds
    while not condition():
        if reactor.seconds() > deadline:
            raise AssertionError(f"not true within {seconds} s: {condition}")
        await task.deferLater(reactor, 0.01, lambda: None)


@attrs.define
class Net:
    """Real nodes on one fake clock, each recording what it got."""

    make_node: MakeNode
    clock: task.Clock = attrs.Factory(task.Clock)
    nodes: list[Node] = attrs.Factory(list)
    ports: list[int] = attrs.Factory(list)
    got: list[list[GossipMessage]] = attrs.Factory(list)

    async def add(self, **options: Any) -> Node:
        node = self.make_node(
            Identity.generate(), allow_plaintext=False, clock=self.clock, **options
        )
        port = await node.listen("p2ptls:0:interface=127.0.0.1")
        address = port.getHost()
        assert isinstance(address, IPv4Address)
        self.nodes.append(node)
        self.ports.append(address.port)
        self.got.append([])
        return node

    async def link(self, a: int, b: int) -> None:
        where = f"p2ptls:127.0.0.1:{self.ports[b]}"
        await self.nodes[a].connect(where, self.nodes[b].peer_id)

    async def subscribe_all(self, validator: Any = None) -> None:
        for index, node in enumerate(self.nodes):
            node.subscribe(TOPIC, self.got[index].append, validator=validator)
        # Everyone knows its neighbours' topics, then a heartbeat grafts.
        await until(
            lambda: all(
                len(n.gossip.router.topic_peers.get(TOPIC, ())) == len(n.peers)
                for n in self.nodes
            )
        )
        self.clock.advance(1.0)
        await until(lambda: all(self._mesh_agrees(n) for n in self.nodes))

    def _mesh_agrees(self, node: Node) -> bool:
        """Each mesh link is known at both ends (the grafts arrived)."""
        mesh = node.gossip.router.mesh.get(TOPIC, set())
        by_id = {n.peer_id: n for n in self.nodes}
        return bool(mesh) and all(
            node.peer_id in by_id[p].gossip.router.mesh.get(TOPIC, set()) for p in mesh
        )

    async def everyone_gets(self, count: int) -> None:
        await until(lambda: all(len(got) >= count for got in self.got))


async def build(
    make_node: MakeNode, n: int, edges: list[tuple[int, int]], **options: Any
) -> Net:
    net = Net(make_node)
    for _ in range(n):
        await net.add(**options)
    for a, b in edges:
        await net.link(a, b)
    await until(lambda: all(len(node.peers) > 0 for node in net.nodes))
    return net


def _publishes_reach_all(net: Net) -> Callable[[], Awaitable[None]]:
    async def check() -> None:
        origins = [0, len(net.nodes) - 1, len(net.nodes) // 2]
        for count, origin in enumerate(origins, 1):
            mid = net.nodes[origin].publish(TOPIC, b"from %d" % origin)
            await net.everyone_gets(count)
            for index, got in enumerate(net.got):
                assert len(got) == count, (index, got)  # each exactly once
                last = got[-1]
                assert last.message_id == mid
                assert last.origin == net.nodes[origin].peer_id
                assert last.data == b"from %d" % origin

    return check


@pytest_twisted.ensureDeferred
async def test_a_line_carries_a_message_end_to_end(make_node: MakeNode) -> None:
    net = await build(make_node, 5, [(0, 1), (1, 2), (2, 3), (3, 4)])
    await net.subscribe_all()
    await _publishes_reach_all(net)()
    far = net.nodes[4].gossip.stats[TOPIC]
    assert far["delivered"] == 3 and far["duplicate"] == 0


@pytest_twisted.ensureDeferred
async def test_a_ring_delivers_once_and_drops_the_other_copy(
    make_node: MakeNode,
) -> None:
    n = 6
    net = await build(make_node, n, [(i, (i + 1) % n) for i in range(n)])
    await net.subscribe_all()
    await _publishes_reach_all(net)()
    # Each message went both ways round: somebody saw a second copy.
    await until(
        lambda: sum(node.gossip.stats[TOPIC]["duplicate"] for node in net.nodes) > 0
    )


@pytest_twisted.ensureDeferred
async def test_a_random_graph_delivers_to_every_subscriber(
    make_node: MakeNode,
) -> None:
    rng = random.Random(14)
    n = 8
    edges = {(i, rng.randrange(i)) for i in range(1, n)}  # a spanning tree
    while len(edges) < 12:
        a, b = rng.sample(range(n), 2)
        if (b, a) not in edges:
            edges.add((a, b))
    net = await build(make_node, n, sorted(edges))
    await net.subscribe_all()
    await _publishes_reach_all(net)()


def _forged(net: Net, liar: Node, origin: Node, data: bytes) -> gossip_wire.Publish:
    seqno = 7
    signed = gossip_wire.signed_bytes(TOPIC, origin.peer_id, seqno, data)
    return gossip_wire.Publish(
        TOPIC, origin.peer_id, seqno, data, liar.identity.sign(signed)
    )


def _send(sender: Node, to: Node, message: gossip_wire.GossipWireMessage) -> None:
    connection = sender._peers.get(to.peer_id)
    assert connection is not None
    connection.sender.send_frame(gossip_wire.frame(message))


@pytest_twisted.ensureDeferred
async def test_forged_and_replayed_messages_are_dropped_and_charged_rightly(
    make_node: MakeNode,
) -> None:
    net = await build(make_node, 3, [(0, 1), (1, 2)])
    await net.subscribe_all()
    victim, liar, origin = net.nodes[1], net.nodes[0], net.nodes[2]
    # Forged: origin's name, liar's signature.
    _send(liar, victim, _forged(net, liar, origin, b"forged"))
    await until(lambda: victim.gossip.router.counters["publish.invalid_signature"] == 1)
    assert victim.policy.score(liar.peer_id) > 0  # the forwarder pays
    assert victim.policy.score(origin.peer_id) == 0  # never the named origin
    assert victim.counters["gossip.fault.invalid-signature"] == 1
    assert victim.gossip.stats[TOPIC]["invalid"] == 1  # the topic's figure
    # Replayed: a genuine message sent again is a duplicate, delivered once.
    origin.publish(TOPIC, b"genuine")
    await net.everyone_gets(1)
    genuine = net.got[1][0]
    copy = gossip_wire.Publish(
        TOPIC,
        genuine.origin,
        genuine.seqno,
        genuine.data,
        origin.gossip.router.cache.get_for_peer(genuine.message_id, liar.peer_id)[
            0
        ].signature,  # type: ignore[union-attr]
    )
    before = victim.gossip.stats[TOPIC]["duplicate"]
    _send(liar, victim, copy)
    await until(lambda: victim.gossip.stats[TOPIC]["duplicate"] > before)
    assert [m.data for m in net.got[1]] == [b"genuine"]
    assert all(b"forged" not in [m.data for m in got] for got in net.got)


@pytest_twisted.ensureDeferred
async def test_oversized_messages_and_frames_are_refused(make_node: MakeNode) -> None:
    small = GossipSettings(max_message_size=1024)
    net = Net(make_node)
    for _ in range(2):
        await net.add(gossip=small)
    await net.link(0, 1)
    await until(lambda: all(node.peers for node in net.nodes))
    await net.subscribe_all()
    sender, receiver = net.nodes
    with pytest.raises(Exception, match="size cap"):
        sender.publish(TOPIC, b"x" * 1025)
    # Signed, but over the cap: dropped unverified, counted.
    _send(sender, receiver, _forged(net, sender, sender, b"x" * 2000))
    await until(lambda: receiver.gossip.stats[TOPIC]["dropped"] == 1)
    assert receiver.gossip.router.counters["publish.too_large"] == 1
    assert net.got[1] == []
    # A gossip frame over the connection's gossip limit closes it.
    over = gossip_wire.Publish(
        TOPIC, sender.peer_id, 9, b"x" * (small.max_frame() + 1), b"\0" * 64
    )
    _send(sender, receiver, over)
    await until(lambda: not receiver.peers)
    assert receiver.counters[f"closed.{ErrorCode.FRAME_TOO_LARGE.name}"] == 1


@pytest_twisted.ensureDeferred
async def test_rejected_messages_are_neither_delivered_nor_forwarded(
    make_node: MakeNode,
) -> None:
    net = await build(make_node, 3, [(0, 1), (1, 2)])

    async def validator(message: GossipMessage) -> Verdict:
        await task.deferLater(reactor, 0, lambda: None)  # asynchronous
        return Verdict.REJECT if message.data == b"bad" else Verdict.ACCEPT

    await net.subscribe_all(validator=validator)
    net.nodes[0].publish(TOPIC, b"bad")
    net.nodes[0].publish(TOPIC, b"good")
    await net.everyone_gets(1)
    await until(lambda: net.nodes[1].gossip.stats[TOPIC]["invalid"] == 1)
    # The origin delivers its own message; nobody else takes the bad one.
    assert [m.data for m in net.got[1]] == [b"good"]
    assert [m.data for m in net.got[2]] == [b"good"]
    assert net.nodes[1].policy.score(net.nodes[0].peer_id) > 0


@pytest_twisted.ensureDeferred
async def test_a_large_message_is_not_pushed_to_peers_that_said_they_have_it(
    make_node: MakeNode,
) -> None:
    """IDontWant over real links: in a triangle the origin's two neighbours
    each tell the other they have its 2 KiB message while their verdicts
    wait, so neither pushes it on; a small message goes on as before."""
    sends = GossipSettings(idontwant_threshold=1024)  # off by default
    net = await build(make_node, 3, [(0, 1), (0, 2), (1, 2)], gossip=sends)
    verdicts: list[defer.Deferred[Verdict]] = []

    def validator(message: GossipMessage) -> defer.Deferred[Verdict]:
        verdicts.append(defer.Deferred())
        return verdicts[-1]

    await net.subscribe_all(validator=validator)
    origin, b, c = net.nodes
    large = bytes(2048)
    mid = origin.publish(TOPIC, large)
    told = [(b, c), (c, b)]  # each holds its copy while its verdict waits

    def holds(x: Node, y: Node, mid: bytes) -> bool:
        waiting = x.gossip.router.pending.get(mid)
        return waiting is not None and y.peer_id in waiting.holders

    await until(lambda: all(holds(x, y, mid) for x, y in told))
    for verdict in verdicts:
        verdict.callback(Verdict.ACCEPT)
    await net.everyone_gets(1)
    for node in (b, c):
        assert node.gossip.router.counters["forward.unwanted"] == 1
        assert node.gossip.stats[TOPIC]["forwarded"] == 0
    verdicts.clear()
    small = origin.publish(TOPIC, b"small")
    await until(lambda: len(verdicts) == 2)
    for verdict in verdicts:
        verdict.callback(Verdict.ACCEPT)
    await until(lambda: all(n.gossip.stats[TOPIC]["duplicate"] == 1 for n in (b, c)))
    assert not any(small in x.gossip.router.peers[y.peer_id].unwanted for x, y in told)
    assert [m.data for m in net.got[1]] == [large, b"small"]


@pytest_twisted.ensureDeferred
async def test_a_broken_validator_fails_closed_and_charges_nobody(
    make_node: MakeNode,
) -> None:
    """A validator that raises, whose Deferred fails, or that answers
    something other than a Verdict: the message is IGNOREd -- neither
    delivered nor forwarded -- and nobody is charged for our own bug."""
    net = await build(make_node, 3, [(0, 1), (1, 2)])

    def validator(message: GossipMessage) -> Any:
        if message.data == b"raises":
            raise RuntimeError("validator bug")
        if message.data == b"fails":
            return defer.fail(RuntimeError("validator bug"))
        if message.data == b"odd":
            return object()
        if message.data == b"wrong":
            return "maybe"
        return Verdict.ACCEPT

    await net.subscribe_all(validator=validator)
    origin, middle = net.nodes[0], net.nodes[1]
    broken = [b"raises", b"fails", b"odd", b"wrong"]
    for data in broken:
        origin.publish(TOPIC, data)
    await until(lambda: middle.gossip.stats[TOPIC]["ignored"] == len(broken))
    # A good message after them: frames keep their order on the 1-2
    # connection, so had a broken one been forwarded it would be there first.
    origin.publish(TOPIC, b"good")
    await net.everyone_gets(1)
    assert [m.data for m in net.got[1]] == [b"good"]
    assert [m.data for m in net.got[2]] == [b"good"]
    assert middle.gossip.stats[TOPIC]["forwarded"] == 1
    assert middle.policy.score(origin.peer_id) == 0
    assert net.nodes[2].policy.score(middle.peer_id) == 0
    assert middle.gossip.router.counters["validation.ignore"] == len(broken)


@pytest_twisted.ensureDeferred
async def test_a_peer_that_stops_reading_does_not_hold_up_the_others(
    make_node: MakeNode,
) -> None:
    net = Net(make_node)
    for index in range(4):  # the forwarder holds little for a slow peer
        small = Settings(max_send_queue=64 * 1024) if index == 1 else Settings()
        await net.add(settings=small)
    # 0 publishes to 1, which forwards to 2 (slow) and 3.
    for a, b in [(0, 1), (1, 2), (1, 3)]:
        await net.link(a, b)
    await until(lambda: len(net.nodes[1].peers) == 3)
    await net.subscribe_all()
    slow = net.nodes[2]._peers.get(net.nodes[1].peer_id)
    assert slow is not None
    slow.transport.pauseProducing()  # type: ignore[union-attr]  # stops reading
    for batch in range(1, 16):  # a batch at a time: 0's own queue is small
        for index in range(10):
            net.nodes[0].publish(TOPIC, b"%d" % index + b"x" * 30000)
        await until(lambda: len(net.got[3]) == 10 * batch)  # noqa: B023
    forwarder = net.nodes[1].gossip
    assert forwarder.router.counters["forward.queue_full"] > 0
    assert forwarder.stats[TOPIC]["dropped"] > 0
    assert len(net.got[2]) < 150
    slow.transport.resumeProducing()  # type: ignore[union-attr]


@pytest_twisted.ensureDeferred
async def test_discovery_from_one_bootstrap_reaches_the_target_degree(
    make_node: MakeNode,
) -> None:
    net = Net(make_node)
    # The fake clock runs ahead of the real sockets here (a second a poll):
    # the handshake and keepalive deadlines, which fake time could pass while
    # a busy machine's sockets are still working, are out of the way; what is
    # tested is discovery.
    patient = Settings(
        first_frame_timeout=3600.0, handshake_timeout=3600.0, keepalive_interval=0
    )
    for _ in range(7):
        await net.add(settings=patient)
    seed = f"p2ptls:127.0.0.1:{net.ports[0]}"
    target = 3
    managers = [
        ConnectionManager(
            node,
            DiscoverySettings(target_peers=target),
            bootstrap=[] if index == 0 else [seed],
            rng=random.Random(index),
        )
        for index, node in enumerate(net.nodes)
    ]
    try:
        for manager in managers:
            manager.startService()

        def reached() -> bool:
            net.clock.advance(1.0)  # the managers' rounds and heartbeats
            return all(len(node.peers) >= target for node in net.nodes[1:])

        # The target degree, in either direction: in a network this small a
        # node may find every peer already connected to it (inbound) before
        # it dials a third, and has then no one left to dial.
        await until(reached)
        # Learned from records, not only the bootstrap node: each knows the
        # network from signed records, and the dials went to peers no one was
        # told about on the command line.
        seed_id = net.nodes[0].peer_id
        for node in net.nodes[1:]:
            assert len(node.gossip.records.records()) >= target
        learned = [
            peer
            for manager in managers[1:]
            for peer in manager.outbound()
            if peer.peer_id != seed_id
        ]
        assert len(learned) >= len(managers) - 1
    finally:
        for manager in managers:
            await manager.stopService()


@pytest_twisted.ensureDeferred
async def test_records_of_a_banned_id_are_ignored(make_node: MakeNode) -> None:
    net = await build(make_node, 2, [(0, 1)])
    node, peer = net.nodes
    banned, fine = Identity.generate(), Identity.generate()
    node.ban(banned.peer_id, "test")
    manager = ConnectionManager(node, DiscoverySettings(target_peers=1))
    manager.startService()
    try:
        records = (
            sign_record(banned, 1, ["127.0.0.1:9"]),
            sign_record(fine, 1, ["127.0.0.1:9"]),
        )
        node.gossip.router.peers[peer.peer_id].awaiting_records = True
        _send(peer, node, gossip_wire.Records(records))
        await until(lambda: fine.peer_id in node.gossip.records)
        net.clock.advance(0)
        assert banned.peer_id not in node.gossip.records
        assert node.counters["discovery.records_refused"] == 1
        assert banned.peer_id not in manager.dialing
    finally:
        await manager.stopService()


@pytest_twisted.ensureDeferred
async def test_a_request_to_a_peer_known_by_its_record_dials_it_first(
    make_node: MakeNode,
) -> None:
    net = Net(make_node)
    asker = await net.add()
    answerer = await net.add(handlers={"echo": lambda request: request.payload})
    stranger = Identity.generate()
    with pytest.raises(NotConnected):  # no record: nothing to dial
        await asker.request(answerer.peer_id, "echo", b"hi")
    # A record with only a wildcard address cannot be dialed either.
    asker.gossip.records.offer(sign_record(stranger, 1, ["0.0.0.0:7"]))
    with pytest.raises(NotConnected, match="no address"):
        await asker.request(stranger.peer_id, "echo", b"hi")
    record = answerer.gossip.set_addresses([f"127.0.0.1:{net.ports[1]}"])
    assert asker.gossip.records.offer(record)
    asker.gossip.set_addresses([f"127.0.0.1:{net.ports[0]}"])  # on loopback too
    reply = await asker.request(answerer.peer_id, "echo", b"hi")
    assert reply.data == b"hi"
    peer = asker.peer(answerer.peer_id)
    assert peer is not None and peer.direction == "outbound"


@pytest_twisted.ensureDeferred
async def test_concurrent_requests_to_a_peer_known_by_its_record_dial_once(
    make_node: MakeNode,
) -> None:
    net = Net(make_node)
    asker = await net.add()
    answerer = await net.add(handlers={"echo": lambda request: request.payload})
    record = answerer.gossip.set_addresses([f"127.0.0.1:{net.ports[1]}"])
    assert asker.gossip.records.offer(record)
    asker.gossip.set_addresses([f"127.0.0.1:{net.ports[0]}"])
    dials: list[str] = []
    connect = asker.connect

    def counted(endpoint: Any, peer_id: Any = None) -> Any:
        dials.append(endpoint)
        return connect(endpoint, peer_id)

    asker.connect = counted  # type: ignore[method-assign]
    replies = await defer.gatherResults(
        [asker.request(answerer.peer_id, "echo", b"%d" % n) for n in range(3)]
    )
    assert [r.data for r in replies] == [b"0", b"1", b"2"]
    assert len(dials) == 1
    assert asker._dialer._record_dials == {}


@pytest_twisted.ensureDeferred
async def test_a_node_service_bootstraps_and_advertises_where_it_listens() -> None:
    seed = Node(Identity.generate())
    joiner = Node(Identity.generate())
    seed_service = NodeService(
        seed, None, listen=["p2ptls:0:interface=127.0.0.1"], peers=[], status=None
    )
    seed_service.startService()
    joining: Optional[NodeService] = None
    try:
        [(host, port)] = seed_service.bound()
        joining = NodeService(
            joiner,
            None,
            listen=["p2ptls:0:interface=127.0.0.1"],
            peers=[],
            status=None,
            discovery=DiscoverySettings(target_peers=1),
            bootstrap=[f"p2ptls:{host}:{port}"],
        )
        joining.startService()
        await until(lambda: joiner.peer(seed.peer_id) is not None)
        # Each learned the other's record, signed with where it listens.
        await until(lambda: seed.peer_id in joiner.gossip.records)
        record = joiner.gossip.records.get(seed.peer_id)
        assert record is not None and record.addresses == (f"{host}:{port}",)
        await until(lambda: joiner.peer_id in seed.gossip.records)
    finally:
        if joining is not None:
            await joining.stopService()
        await seed_service.stopService()
        gc.unfreeze()  # NodeService froze the heap; other tests' objects must go


@pytest_twisted.ensureDeferred
async def test_a_node_started_into_a_sybil_race_keeps_honest_outbound_peers(
    make_node: MakeNode,
) -> None:
    """20 Sybils from one /27 connect to a node as its port opens and answer
    its record requests with Sybil records only: it still dials its
    bootstrap, takes its outbound peers from honest records, trims the
    Sybils (not its honest peers) and receives every honest publication."""
    clock = task.Clock()
    patient = Settings(
        first_frame_timeout=3600.0, handshake_timeout=3600.0, keepalive_interval=0
    )

    def make(identity: Identity, **options: Any) -> Node:
        return make_node(identity, allow_plaintext=False, settings=patient, **options)

    swarm = Swarm(make, clock, target=4)
    try:
        await swarm.start_honest(6)

        def formed() -> bool:
            clock.advance(1.0)
            return all(len(node.peers) >= 3 for node in swarm.honest)

        await until(formed)
        await swarm.start_sybils(20)
        await swarm.start_victim()
        victim, manager = swarm.victim, swarm.victim_manager
        assert victim is not None and manager is not None
        assert len(victim.peers) == 20  # the race: every Sybil got in first

        def kept() -> bool:
            clock.advance(1.0)  # rounds, heartbeats, inbound grace
            # Inbound as the manager counts it: a peer whose simultaneous
            # dial the duplicate rule kept in place of ours is outbound.
            ours = {p.peer_id for p in manager.outbound()}
            inbound = [p for p in victim.peers if p.peer_id not in ours]
            return swarm.honest_outbound() >= 4 and len(inbound) <= 12

        await until(kept)
        assert swarm.sybil_outbound() == 0
        clock.advance(1.0)  # a heartbeat grafts the honest peers
        ids = swarm.publish(10)
        await until(lambda: swarm.delivered(ids) == len(ids))
    finally:
        await swarm.stop()


# -- the adapter on the in-memory network (one fake clock, no sockets) --------


def _pair(net: MemoryNetwork, **subscribe: Any) -> tuple[Node, Node]:
    """Two connected nodes subscribed to TOPIC, meshed (a heartbeat)."""
    a, b = net.add_node(), net.add_node()
    net.connect(a, b)
    a.subscribe(TOPIC, lambda message: None)
    b.subscribe(TOPIC, lambda message: None, **subscribe)
    net.advance(1.0)
    assert a.gossip.router.mesh[TOPIC] == {b.peer_id}
    return a, b


def test_leaving_a_topic_prunes_the_mesh_now(net: MemoryNetwork) -> None:
    a, b = _pair(net)
    a.unsubscribe("never joined")  # harmless
    net.advance(5.0)
    a.unsubscribe(TOPIC)
    net.pump()
    assert TOPIC not in a.gossip.topics
    assert b.gossip.router.mesh[TOPIC] == set()  # the Prune arrived
    # a backs b off from the time it left (the unsubscribe backoff, 10 s):
    # rejoining at once or 9 s later grafts nobody; past it, b again.
    a.subscribe(TOPIC, lambda message: None)
    net.advance(9.0)
    assert a.gossip.router.mesh[TOPIC] == set()
    net.advance(5.0)
    assert a.gossip.router.mesh[TOPIC] == {b.peer_id}


def test_a_failing_validator_is_logged_with_its_topic_and_ignores(
    net: MemoryNetwork, logged: list[dict[str, Any]]
) -> None:
    a, b = _pair(net, validator=lambda message: defer.fail(RuntimeError("bug")))
    a.publish(TOPIC, b"x")
    net.pump()
    failures = [e for e in logged if "log_failure" in e]
    assert len(failures) == 1
    [event] = failures
    assert event["topic"] == TOPIC and event["log_failure"].check(RuntimeError)
    assert repr(TOPIC) in formatEvent(event)
    # It is ignored as such, not as a strange answer (no second report).
    assert not [e for e in logged if "verdict" in e]
    assert b.gossip.stats[TOPIC]["ignored"] == 1
    assert b.gossip.router.counters["validation.ignore"] == 1


def test_status_lists_topics_published_to_and_the_subscription_count(
    net: MemoryNetwork,
) -> None:
    a, _ = _pair(net)
    a.publish("elsewhere", b"unheard")  # published to, never subscribed
    net.pump()
    status = a.gossip.status()
    assert status["topics"]["elsewhere"] == {
        "subscribed": False,
        "mesh": 0,
        "fanout": 0,
        "peers": 0,
        "published": 1,
        "delivered": 0,
        "forwarded": 0,
        "duplicate": 0,
        "invalid": 0,
        "ignored": 0,
        "dropped": 0,
    }
    assert list(status["topics"]) == ["elsewhere", TOPIC]
    assert status["topics"][TOPIC]["subscribed"] is True
    assert status["topics"][TOPIC]["mesh"] == status["topics"][TOPIC]["peers"] == 1
    assert status["subscriptions"] == 1  # b's one topic
    assert status["connected_peers"] == 1
    assert status["known_peers"] == len(a.gossip.records)
    assert list(status["counters"]) == sorted(status["counters"])


def test_a_raising_validator_and_a_strange_answer_are_logged_and_ignored(
    net: MemoryNetwork, logged: list[dict[str, Any]]
) -> None:
    def validator(message: GossipMessage) -> Any:
        if message.data == b"raises":
            raise RuntimeError("bug")
        return "x" * 100  # not a Verdict's value

    a, b = _pair(net, validator=validator)
    a.publish(TOPIC, b"raises")
    net.pump()
    [failure] = [e for e in logged if "log_failure" in e]
    assert failure["topic"] == TOPIC and failure["log_failure"].check(RuntimeError)
    assert repr(TOPIC) in formatEvent(failure)
    assert not [e for e in logged if "verdict" in e]
    assert b.gossip.stats[TOPIC]["ignored"] == 1
    a.publish(TOPIC, b"strange")
    net.pump()
    [strange] = [e for e in logged if "verdict" in e]
    assert strange["topic"] == TOPIC
    assert repr(TOPIC) in formatEvent(strange)
    assert strange["verdict"] == repr("x" * 100)[:80]
    assert strange["log_level"].name == "error"
    stats = b.gossip.stats[TOPIC]
    assert (stats["ignored"], stats["invalid"], stats["delivered"]) == (2, 0, 0)


def test_a_raising_handler_is_logged_and_the_next_message_delivered(
    net: MemoryNetwork, logged: list[dict[str, Any]]
) -> None:
    a, b = net.add_node(), net.add_node()
    net.connect(a, b)
    got: list[bytes] = []

    def handler(message: GossipMessage) -> None:
        if message.data == b"boom":
            raise RuntimeError("handler bug")
        got.append(message.data)

    a.gossip.subscribe(TOPIC, None)  # no handler: still counted as delivered
    b.subscribe(TOPIC, handler, validator=lambda message: Verdict.ACCEPT)
    net.advance(1.0)
    a.publish(TOPIC, b"boom")
    a.publish(TOPIC, b"fine")
    net.pump()
    assert got == [b"fine"]
    [failure] = [e for e in logged if "log_failure" in e]
    assert failure["topic"] == TOPIC and failure["log_failure"].check(RuntimeError)
    stats = b.gossip.stats[TOPIC]
    assert (stats["delivered"], stats["ignored"], stats["invalid"]) == (2, 0, 0)
    assert a.gossip.stats[TOPIC]["delivered"] == 2  # its own, to no handler
    assert a.gossip.stats[TOPIC]["published"] == 2


def test_a_rejected_message_counts_as_invalid(net: MemoryNetwork) -> None:
    a, b = _pair(net, validator=lambda message: "reject")
    a.publish(TOPIC, b"no")
    net.pump()
    stats = b.gossip.stats[TOPIC]
    assert (stats["invalid"], stats["ignored"], stats["delivered"]) == (1, 0, 0)


def test_a_handler_sees_the_whole_message_and_each_duplicate_is_counted(
    net: MemoryNetwork,
) -> None:
    got: list[GossipMessage] = []
    a, b = _pair(net)
    b.subscribe(TOPIC, got.append)
    mid = a.publish(TOPIC, b"whole")
    net.pump()
    [message] = got
    assert (message.origin, message.topic, message.data) == (a.peer_id, TOPIC, b"whole")
    assert message.message_id == mid
    assert message.seqno == a.gossip.router.seqno
    # The same publication again, twice: two duplicates, nothing delivered.
    [publish] = [
        m for m in a.gossip.router.cache._messages.values() if m.message_id == mid
    ]
    for _ in range(2):
        _send(a, b, publish)
    net.pump()
    assert len(got) == 1
    assert b.gossip.stats[TOPIC]["duplicate"] == 2


@attrs.define
class _Queue:
    """A stand-in connection with ``queued`` bytes waiting, or full."""

    queued: int
    full: bool = False
    frames: list[bytes] = attrs.Factory(list)
    closed: bool = False

    @property
    def connection(self) -> _Queue:
        return self

    @property
    def sender(self) -> _Queue:
        return self

    def send_frame(self, frame: bytes) -> None:
        if self.full:
            raise SendQueueFull("full (stand-in)")
        self.frames.append(frame)


def test_a_forward_is_dropped_only_past_the_queue_limit_and_each_drop_counted(
    net: MemoryNetwork,
) -> None:
    """A forwarded message skips a closed connection, a peer with more than
    ``forward_queue_limit`` bytes queued (at the limit it is still sent) and
    a peer whose queue is full; each drop is counted, for the node and for
    the topic."""
    gossip = net.add_node().gossip
    gossip.subscribe(TOPIC, lambda message: None)
    limit = gossip.forward_queue_limit
    gone, at, over, over_too, full = (Identity.generate().peer_id for _ in range(5))
    queues = {
        gone: _Queue(0, closed=True),  # skipped, and the others still served
        at: _Queue(limit),
        over: _Queue(limit + 1),
        over_too: _Queue(2 * limit),
        full: _Queue(0, full=True),
    }
    gossip._peers = queues  # type: ignore[assignment]
    origin = Identity.generate().peer_id  # not ours: a forward
    message = gossip_wire.Publish(TOPIC, origin, 1, b"data", b"\0" * 64)
    gossip._send(Send((gone, at, over, over_too, full), message))
    assert [len(queue.frames) for queue in queues.values()] == [0, 1, 0, 0, 0]
    counters, stats = gossip.router.counters, gossip.stats[TOPIC]
    assert counters["forward.queue_full"] == 2 and counters["send.queue_full"] == 1
    assert stats["dropped"] == 3 and stats["forwarded"] == 1
    gossip._send(Send((at,), message))  # each forward counted, not the last
    assert stats["forwarded"] == 2 and gossip.sent["frames"] == 2


def test_a_first_publication_is_kept_for_iwant_a_full_history(
    make_node: MakeNode,
) -> None:
    """The heartbeat starts with the first publish, its first beat one
    interval later (not at once, which would age the new message's cache
    window before any peer could ask for it): the message is served for
    ``history_length`` heartbeats."""
    clock = task.Clock()
    settings = GossipSettings()
    node = make_node(Identity.generate(), clock=clock, gossip=settings)
    mid = node.gossip.publish(TOPIC, b"first")
    cache = node.gossip.router.cache
    for _ in range(settings.history_length - 1):
        clock.advance(settings.heartbeat_interval)
        assert mid in cache
    clock.advance(settings.heartbeat_interval)
    assert mid not in cache


def test_a_relay_forwards_the_bytes_it_received_without_encoding(
    net: MemoryNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A line a - b - c: the origin encodes its publication once, and b
    passes on the frame body it received (the strict decoder admits one
    encoding of each message) instead of encoding it again."""
    a, b, c = net.add_node(), net.add_node(), net.add_node()
    net.connect(a, b)
    net.connect(b, c)
    got: list[GossipMessage] = []
    for node in (a, b):
        node.subscribe(TOPIC, lambda message: None)
    c.subscribe(TOPIC, got.append)
    net.advance(1.0)
    encoded: list[gossip_wire.Publish] = []
    frame = gossip_wire.frame

    def spy(message: gossip_wire.GossipWireMessage) -> bytes:
        if isinstance(message, gossip_wire.Publish):
            encoded.append(message)
        return frame(message)

    monkeypatch.setattr(gossip_wire, "frame", spy)
    a.publish(TOPIC, b"relayed")
    net.advance(0.1)
    assert [m.data for m in got] == [b"relayed"]
    assert [m.data for m in encoded] == [b"relayed"]  # by a, and only a


def test_what_a_node_sends_is_counted_in_frames_and_bytes(net: MemoryNetwork) -> None:
    """``gossip.sent`` (what ``bench.network`` reads as a node's upload)."""
    a, _ = _pair(net)
    before = dict(a.gossip.sent)
    a.publish(TOPIC, bytes(100))
    sent = {key: a.gossip.sent[key] - before.get(key, 0) for key in ("frames", "bytes")}
    # One frame to b: the 100 bytes, a 64-byte signature, the origin, the
    # topic, the numbers and the frame's header.
    assert sent["frames"] == 1
    assert 100 + 64 + 32 < sent["bytes"] < 100 + 64 + 32 + 64


# -- two nodes dialing each other at once ---------------------------------------


def _deliver_one_piece(net: MemoryNetwork, rng: random.Random) -> bool:
    """Move one random piece of what one end of one link has written (a
    whole write or a cut of it), or finish one closing link; False once
    nothing is left to move.  ``MemoryNetwork.pump`` delivers everything
    in order; this lets the bytes of two crossing connections interleave
    any way TCP could (it reads the network's links, as ``pump`` does)."""
    links = net._links
    ends = [
        (src, dst)
        for link in links
        for src, dst in ((link.dialer, link.listener), (link.listener, link.dialer))
        if src.stream
    ]
    if ends:
        src, dst = rng.choice(ends)
        data = b"".join(src.stream)
        cut = len(data) if rng.random() < 0.5 else rng.randint(1, len(data))
        src.stream = [data[cut:]] if cut < len(data) else []
        dst.bufferReceived(data[:cut])
        return True
    # Nothing written is left: each link's own pump reports a close, if any.
    return any(link.pump.pump(advanceClock=False) for link in links)


def _keep_data(into: list[bytes], message: GossipMessage) -> None:
    into.append(message.data)


def _asks_for_records(node: Node) -> Callable[[Any], None]:
    """The connection manager's first ask of a new peer (nodes on the
    in-memory network run no manager)."""

    def ask(peer: Any) -> None:
        node.gossip.request_records(peer.peer_id)

    return ask


@pytest.mark.parametrize("seed", range(200))
def test_crossing_dials_agree_on_records_topics_and_meshes(seed: int) -> None:
    """Each node dials the other at once; the duplicate rule keeps one
    connection, and what went out on the other may be lost unread.  However
    the bytes interleave, whichever node leaves a topic or publishes
    meanwhile, both end with the other's record, subscriptions, a mesh and
    publication, and no honest node is charged (docs/protocol.md 9.5, *A
    replaced connection*).  The code before it lost a record or a
    subscription in about half the seeds."""
    rng = random.Random(seed)
    with MemoryNetwork() as net:
        a, b = net.add_node(), net.add_node()
        got: dict[Node, list[bytes]] = {a: [], b: []}
        for node in (a, b):
            node.gossip.set_addresses([f"{net.host(node)}:7010"])
            node.gossip.subscribe("t", functools.partial(_keep_data, got[node]))
            node.gossip.subscribe("u", None)
            node.on_peer_verified(_asks_for_records(node))
        dials = [
            a.connect(net.endpoint(b, source=a)),
            b.connect(net.endpoint(a, source=b)),
        ]
        for dial in dials:
            dial.addErrback(lambda failure: None)  # the one the rule closes
        leaver, leave_at = rng.choice((a, b)), rng.randint(1, 40)
        # Published once the publisher knows the other is in the topic
        # (before, gossipsub has no one to send it to, nor tells a mesh
        # peer of it later).
        publisher, publish_at, published = rng.choice((a, b)), rng.randint(1, 40), False
        for step in range(1, 2001):
            if step == leave_at:
                leaver.gossip.unsubscribe("u")
            if (
                step >= publish_at
                and not published
                and publisher.gossip.subscribers("t")
            ):
                publisher.gossip.publish("t", b"in the window")
                published = True
            if rng.random() < 0.05:
                net.clock.advance(0.5)
            net.clock.advance(0)
            moved = _deliver_one_piece(net, rng)
            net._links[:] = [link for link in net._links if not link.closed]
            if not moved:
                break
        if step < leave_at:
            leaver.gossip.unsubscribe("u")
        if not published:
            publisher.gossip.publish("t", b"in the window")
        net.advance(6.0)
        assert got[b if publisher is a else a] == [b"in the window"]
        other = b if leaver is a else a
        assert [len(a.peers), len(b.peers)] == [1, 1]
        assert a.gossip.record(b.peer_id) == b.gossip.own_record
        assert b.gossip.record(a.peer_id) == a.gossip.own_record
        assert a.gossip.mesh("t") == {b.peer_id} and b.gossip.mesh("t") == {a.peer_id}
        assert leaver.peer_id not in other.gossip.subscribers("u")
        assert leaver.peer_id not in other.gossip.mesh("u")
        for node in (a, b):
            charged = {
                key: count
                for key, count in node.gossip.router.counters.items()
                if key in ("control.over_budget", "graft.in_backoff")
            }
            assert charged == {} and node.counters["misbehaviour"] == 0
