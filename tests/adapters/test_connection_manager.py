"""The connection manager (``_adapters/connection_manager.py``) on a fake clock:
its dials stubbed (what it dials, and when, is what is pinned), its peers
real ones on the in-memory network where their addresses matter."""

from __future__ import annotations

import ipaddress
import random
from typing import Any, Optional

import attrs
import pytest
from twisted.internet import defer, task
from twisted.logger import formatEvent

from blueprint_net import Identity, Node, Settings
from blueprint_net._adapters.connection_manager import ROUND_GAP, ConnectionManager
from blueprint_net._core import wire
from blueprint_net._core.errors import ConnectFailed
from blueprint_net._core.framing import FrameDecoder
from blueprint_net._core.gossip_wire import T_RECORDS, T_RECORDS_REQUEST
from blueprint_net._core.identity import PeerId
from blueprint_net._core.records import sign_record
from blueprint_net._policy.discovery import DiscoverySettings
from blueprint_net.testing import MemoryNetwork
from tests.helpers import MakeNode


class _NoJitter(random.Random):
    """``random()`` is 0: a backoff is exactly its base (the jitter only
    ever cuts it, by up to half)."""

    def random(self) -> float:
        return 0.0


class _FirstChoice(_NoJitter):
    """``choice`` and ``randrange`` take the first, ``shuffle`` keeps the
    order: which list a choice is made from, and what decides, shows."""

    def choice(self, seq: Any) -> Any:
        return seq[0]

    def shuffle(self, x: Any, random: Any = None) -> None:
        return None

    def randrange(self, *args: Any, **kwargs: Any) -> int:
        return 0


@attrs.define
class Dials:
    """A node's ``connect`` stubbed: each dial is noted and left pending."""

    made: list[tuple[str, Optional[PeerId]]] = attrs.Factory(list)
    pending: list[defer.Deferred[Any]] = attrs.Factory(list)

    def connect(self, endpoint: Any, peer_id: Any = None) -> defer.Deferred[Any]:
        self.made.append((str(endpoint), peer_id))
        self.pending.append(defer.Deferred())
        return self.pending[-1]


def _stubbed(node: Node) -> Dials:
    dials = Dials()
    node.connect = dials.connect  # type: ignore[method-assign]
    return dials


PUBLIC = "198.51.100.7:7010"  # where the node under test says it is


def _manager(node: Node, **options: Any) -> ConnectionManager:
    settings = options.pop("settings", DiscoverySettings())
    options.setdefault("advertise", [PUBLIC])
    options.setdefault("rng", _NoJitter(1))
    return ConnectionManager(node, settings, **options)


def test_records_of_banned_ids_are_each_counted_and_a_round_follows_at_once(
    make_node: MakeNode,
) -> None:
    clock = task.Clock()
    node = make_node(Identity.generate(), clock=clock)
    dials = _stubbed(node)
    manager = _manager(node, settings=DiscoverySettings(interval=1000.0))
    manager.startService()
    try:
        clock.advance(1.0)
        assert dials.made == []  # nothing known yet
        banned = [Identity.generate() for _ in range(2)]
        for identity in banned:
            node.ban(identity.peer_id, "test")
        fine = Identity.generate()
        records = tuple(
            sign_record(i, 1, [f"192.0.2.{n}:7010"])
            for n, i in enumerate([*banned, fine], 1)
        )
        book = node.gossip.records
        for record in records:
            assert book.offer(record, Identity.generate().peer_id, outbound=True)
        source = Identity.generate().peer_id
        ticks: list[float] = []
        tick = manager.tick

        def counted() -> None:
            ticks.append(clock.seconds())
            tick()

        manager.tick = counted  # type: ignore[method-assign]
        manager._discovered(source, records)
        manager._discovered(source, ())  # one round for both, not two
        assert node.counters["discovery.records_refused"] == 2
        assert [r.peer_id in book for r in records] == [False, False, True]
        assert dials.made == []  # not in this call: at once, on the clock
        clock.advance(0)
        assert ticks == [1.0]
        assert dials.made == [("p2ptls:host=192.0.2.3:port=7010", fine.peer_id)]
        assert node.counters["discovery.dials"] == 1
        # More records: a round as soon as ROUND_GAP has passed since the last.
        manager._discovered(source, ())
        clock.advance(ROUND_GAP / 2)
        assert ticks == [1.0]
        manager._discovered(source, ())  # one round for both
        clock.advance(ROUND_GAP / 2)
        assert ticks == pytest.approx([1.0, 1.0 + ROUND_GAP])
        clock.advance(1.0)
        manager._discovered(source, ())  # long after: at once
        clock.advance(0)
        assert ticks == pytest.approx([1.0, 1.0 + ROUND_GAP, 2.0 + ROUND_GAP])
    finally:
        manager.stopService()
    # Stopped: records arriving start no round.
    manager._discovered(source, ())
    assert manager._soon is None
    clock.advance(0)
    assert ticks == pytest.approx([1.0, 1.0 + ROUND_GAP, 2.0 + ROUND_GAP])


def test_a_clock_stepped_back_puts_off_a_round_by_the_gap_at_most(
    make_node: MakeNode,
) -> None:
    """The node's clock is the wall's: stepped back, the last round seems
    to lie in the future; records still start one within ROUND_GAP."""
    clock = task.Clock()
    node = make_node(Identity.generate(), clock=clock)
    _stubbed(node)
    manager = _manager(node, settings=DiscoverySettings(interval=1000.0))
    manager.startService()
    try:
        ticks: list[float] = []
        manager.tick = lambda: ticks.append(clock.seconds())  # type: ignore[method-assign]
        manager._soon_after = clock.seconds() + 3600.0  # as after a step back
        manager._discovered(Identity.generate().peer_id, ())
        clock.advance(ROUND_GAP)
        assert ticks == pytest.approx([ROUND_GAP])
    finally:
        manager.stopService()


def test_a_record_book_source_is_weighed_by_its_connected_subnet(
    net: MemoryNetwork,
) -> None:
    node = net.add_node()
    peers = [net.add_node(host=f"192.0.2.{n}") for n in (1, 2)]
    for peer in peers:
        net.connect(peer, node)
    manager = _manager(node)
    manager.startService()
    try:
        netgroup = node.gossip.records.netgroup
        subnet = ipaddress.ip_network("192.0.2.0/24")
        assert [netgroup(p.peer_id) for p in peers] == [subnet, subnet]
        stranger = Identity.generate().peer_id
        assert netgroup(stranger) == stranger  # not connected: its own
    finally:
        manager.stopService()


def test_a_peer_at_an_address_without_a_host_is_its_own_netgroup(
    make_node: MakeNode,
) -> None:
    node = make_node(Identity.generate(), clock=task.Clock())
    manager = _manager(node)
    someone = Identity.generate().peer_id

    class Unix:
        name = "/tmp/socket"

    found = attrs.make_class("Found", ["address"])(Unix())
    node.peer = lambda peer_id: found  # type: ignore[method-assign]
    assert manager._netgroup(someone) == someone


def test_a_peer_our_dial_reached_is_outbound_tried_and_forgiven(
    net: MemoryNetwork, logged: list[dict[str, Any]]
) -> None:
    """Our dial to P failed once (backed off), then reached P, whose own
    connection to us is the one kept: P counts as outbound (never trimmed),
    its record is tried, and its backoff is forgotten."""
    node = net.add_node()
    dials = _stubbed(node)
    other = Identity.generate()
    settings = DiscoverySettings(target_peers=1, max_inbound=0, inbound_grace=0.0)
    manager = _manager(node, settings=settings, advertise=["10.0.0.1:7010"])
    book = node.gossip.records
    book.offer(sign_record(other, 1, ["10.9.0.1:7010"]), outbound=True)
    manager.startService()
    try:
        assert dials.made == [("p2ptls:host=10.9.0.1:port=7010", other.peer_id)]
        dials.pending[0].errback(ConnectFailed("refused (stubbed)"))
        assert node.counters["discovery.dial_failed"] == 1
        [event] = [e for e in logged if e.get("endpoint")]
        assert event["endpoint"] == "p2ptls:host=10.9.0.1:port=7010"
        assert event["delay"] == 1.0 and event["error"] == "refused (stubbed)"
        assert formatEvent(event) == (
            "dial p2ptls:host=10.9.0.1:port=7010 failed (refused (stubbed));"
            " next try in 1.0 s"
        )
        assert not manager.dialing
        net.advance(0.5)
        assert len(dials.made) == 1  # backing off for 1 s
        net.advance(0.5)
        assert len(dials.made) == 2
        peer_node = net.add_node(other)
        net.connect(peer_node, node)  # its dial to us, kept
        [peer] = node.peers
        assert peer.direction == "inbound"
        dials.pending[1].callback(peer)
        assert not manager.dialing
        assert [p.peer_id for p in manager.outbound()] == [other.peer_id]
        entry = book.entry(other.peer_id)
        assert entry is not None and entry.tried
        assert manager.backoff.ready(other.peer_id, net.clock.seconds())
        assert manager.backoff.failed(other.peer_id, 0.0) == 1.0  # counts anew
        net.advance(5.0)  # past the grace, inbound cap 0: still kept
        assert [p.peer_id for p in node.peers] == [other.peer_id]
        assert node.counters["discovery.inbound_trimmed"] == 0
    finally:
        manager.stopService()


def test_a_round_dials_at_most_max_dialing_and_only_what_is_missing(
    make_node: MakeNode,
) -> None:
    clock = task.Clock()
    node = make_node(Identity.generate(), clock=clock)
    dials = _stubbed(node)
    book = node.gossip.records
    for n in range(1, 7):
        book.offer(sign_record(Identity.generate(), 1, [f"192.0.{n}.1:7010"]))
    manager = _manager(node, settings=DiscoverySettings(target_peers=5))
    manager.startService()
    try:
        assert len(dials.made) == 4  # max_dialing
        assert len({endpoint for endpoint, _ in dials.made}) == 4
        assert node.counters["discovery.dials"] == 4
        clock.advance(1.0)
        assert len(dials.made) == 4  # four in flight: none more
        dials.pending[0].errback(ConnectFailed("refused"))
        clock.advance(1.0)
        assert len(dials.made) == 5  # one place free
        assert node.counters["discovery.dials"] == 5
        dials.pending[1].errback(ConnectFailed("refused"))
        dials.pending[2].errback(ConnectFailed("refused"))
        clock.advance(0.5)  # the failed ones back off for 1 s
        assert len(dials.made) == 5
    finally:
        manager.stopService()
    # Stopping cancels the dials in flight: not failures, nothing backs off.
    assert all(d.called for d in dials.pending)
    assert not manager.dialing
    assert node.counters["discovery.dial_failed"] == 3


def test_records_from_inbound_peers_wait_for_the_bootstrap_to_back_off(
    make_node: MakeNode,
) -> None:
    clock = task.Clock()
    node = make_node(Identity.generate(), clock=clock)
    dials = _stubbed(node)
    book = node.gossip.records
    stranger = Identity.generate()
    inbound_source = Identity.generate().peer_id
    book.offer(sign_record(stranger, 1, ["192.0.2.9:7010"]), inbound_source)
    mine = Identity.generate()  # the application's: as good as our own
    book.offer(sign_record(mine, 1, ["192.0.3.9:7010"]))
    own = ("p2ptls:host=192.0.3.9:port=7010", mine.peer_id)
    bootstrap = "tcp:192.0.2.1:7010"
    settings = DiscoverySettings(backoff_initial=5.0)
    manager = _manager(node, settings=settings, bootstrap=[bootstrap])
    manager.startService()
    try:
        assert dials.made == [own, (bootstrap, None)]
        clock.advance(1.0)  # the bootstrap is being dialed: still not
        assert dials.made == [own, (bootstrap, None)]
        dials.pending[1].errback(ConnectFailed("refused"))
        clock.advance(1.0)  # the bootstrap backs off (5 s): now the stranger
        stranger_dial = ("p2ptls:host=192.0.2.9:port=7010", stranger.peer_id)
        assert dials.made[2:] == [stranger_dial]
        clock.advance(3.0)
        assert len(dials.made) == 3
        clock.advance(1.0)  # and the bootstrap again once it may be
        assert dials.made[3:] == [(bootstrap, None)]
    finally:
        manager.stopService()


def test_an_address_a_record_cannot_hold_is_logged_and_dropped(
    make_node: MakeNode, logged: list[dict[str, Any]]
) -> None:
    clock = task.Clock()
    node = make_node(Identity.generate(), clock=clock)
    _stubbed(node)
    manager = _manager(node, advertise=["tcp:host=nope"])
    manager.startService()
    try:
        [event] = [e for e in logged if "addresses" in e]
        assert event["addresses"] == ["tcp:host=nope"]
        assert "address" in event["error"]
        assert event["log_level"].name == "error"
        assert formatEvent(event) == (
            f"cannot advertise ['tcp:host=nope']: {event['error']}"
        )
        assert manager.advertise == []
        assert node.gossip.own_record is None
        clock.advance(1.0)  # the next round signs a record with none
        own = node.gossip.own_record
        assert own is not None and own.addresses == ()
        clock.advance(1.0)  # and not again while unchanged
        assert node.gossip.own_record is own
        assert len([e for e in logged if "addresses" in e]) == 1
    finally:
        manager.stopService()


def test_dials_in_flight_count_towards_the_target(make_node: MakeNode) -> None:
    clock = task.Clock()
    node = make_node(Identity.generate(), clock=clock)
    dials = _stubbed(node)
    for n in range(1, 7):
        node.gossip.records.offer(
            sign_record(Identity.generate(), 1, [f"192.0.{n}.1:7010"])
        )
    manager = _manager(node, settings=DiscoverySettings(target_peers=2))
    manager.startService()
    try:
        assert len(dials.made) == 2
        clock.advance(1.0)
        assert len(dials.made) == 2
    finally:
        manager.stopService()


def test_a_dial_failing_with_a_foreign_error_logs_its_repr(
    net: MemoryNetwork, logged: list[dict[str, Any]]
) -> None:
    """Not one of ours (an OS error, say): its repr, so its kind shows."""
    node = net.add_node()
    dials = _stubbed(node)
    other = Identity.generate()
    manager = _manager(
        node, settings=DiscoverySettings(target_peers=1), advertise=["10.0.0.1:7010"]
    )
    node.gossip.records.offer(sign_record(other, 1, ["10.9.0.1:7010"]))
    manager.startService()
    try:
        dials.pending[0].errback(OSError("no route"))
        [event] = [e for e in logged if e.get("endpoint")]
        assert event["error"] == repr(OSError("no route"))
    finally:
        manager.stopService()


def test_only_a_peer_we_dialed_is_tried_when_it_verifies(net: MemoryNetwork) -> None:
    """Its handshake proved the id our dial was pinned to; a peer that
    dialed us proved only that it holds some key."""
    node, dialed, dialer = net.add_node(), net.add_node(), net.add_node()
    book = node.gossip.records
    for peer in (dialed, dialer):
        book.offer(sign_record(peer.identity, 1, ["10.9.0.1:7010"]))
    manager = _manager(node, settings=DiscoverySettings(target_peers=0))
    manager.startService()
    try:
        net.connect(node, dialed)  # node dials
        net.connect(dialer, node)  # the other way
        net.pump()
        tried = book.entry(dialed.peer_id)
        untried = book.entry(dialer.peer_id)
        assert tried is not None and untried is not None
        assert (tried.tried, untried.tried) == (True, False)
    finally:
        manager.stopService()


def test_a_bootstrap_whose_peer_is_connected_is_not_dialed_again(
    net: MemoryNetwork,
) -> None:
    """The bootstrap stays due while outbound peers are few, but the peer
    that answered at its address is connected: dialing it again would only
    make a duplicate connection each round."""
    node = net.add_node()
    dials = _stubbed(node)
    bootstrap = "tcp:192.0.2.1:7010"
    manager = _manager(node, settings=DiscoverySettings(), bootstrap=[bootstrap])
    manager.startService()
    try:
        assert dials.made == [(bootstrap, None)]
        answering = net.add_node()
        net.connect(answering, node)  # (our dial is stubbed: it comes to us)
        [peer] = node.peers
        dials.pending[0].callback(peer)
        assert [p.peer_id for p in manager.outbound()] == [peer.peer_id]
        net.advance(5.0)  # five rounds, the bootstrap still due (1 of 8)
        assert dials.made == [(bootstrap, None)]
        net.cut(node, answering)  # once it is gone, the bootstrap is dialed
        net.advance(1.0)
        assert dials.made == [(bootstrap, None)] * 2
    finally:
        manager.stopService()


def test_a_round_dials_only_what_its_outbound_peers_leave_missing(
    net: MemoryNetwork,
) -> None:
    """Target 3 with one peer we dialed already: two dials, not more."""
    node, reached = net.add_node(), net.add_node()
    net.connect(node, reached)
    dials = _stubbed(node)
    for n in range(1, 7):
        node.gossip.records.offer(
            sign_record(Identity.generate(), 1, [f"192.0.{n}.1:7010"])
        )
    manager = _manager(node, settings=DiscoverySettings(target_peers=3))
    manager.startService()
    try:
        assert [p.peer_id for p in manager.outbound()] == [reached.peer_id]
        assert len(dials.made) == 2
        net.advance(1.0)
        assert len(dials.made) == 2  # in flight: they count
    finally:
        manager.stopService()


def test_short_of_candidates_a_round_asks_a_peer_we_dialed_for_records(
    net: MemoryNetwork,
) -> None:
    """Nothing to dial: each round asks a peer for records, one we dialed
    while we have one (its answers are not a crowd's that chose us)."""
    node, ours = net.add_node(), net.add_node()
    theirs = [net.add_node() for _ in range(2)]
    for other in theirs:  # connected first: the first of node.peers
        net.connect(other, node)
    net.connect(node, ours)
    asked: list[PeerId] = []
    node.gossip.request_records = asked.append  # type: ignore[method-assign,assignment]
    manager = _manager(
        node, settings=DiscoverySettings(target_peers=3), rng=_FirstChoice(1)
    )
    manager.startService()
    try:
        assert asked == [ours.peer_id]
        net.advance(1.0)
        assert asked == [ours.peer_id] * 2
        net.cut(node, ours)
        net.advance(1.0)  # none dialed left: the one that dialed us
        assert asked == [ours.peer_id] * 2 + [theirs[0].peer_id]
    finally:
        manager.stopService()


def test_records_of_banned_or_unlisted_ids_already_held_are_not_dialed(
    make_node: MakeNode,
) -> None:
    """Banned (or dropped from the allow-list) after its record came: the
    record stays in the book, but is not dialed."""
    clock = task.Clock()
    node = make_node(Identity.generate(), clock=clock)
    dials = _stubbed(node)
    banned, unlisted, fine = (Identity.generate() for _ in range(3))
    for n, who in enumerate((banned, unlisted, fine), 1):
        node.gossip.records.offer(sign_record(who, 1, [f"192.0.{n}.1:7010"]))
    node.ban(banned.peer_id, "test")
    node.set_permitted([banned.peer_id, fine.peer_id])
    manager = _manager(node)
    manager.startService()
    try:
        assert dials.made == [("p2ptls:host=192.0.3.1:port=7010", fine.peer_id)]
    finally:
        manager.stopService()


def test_candidates_past_the_preferred_ones_fill_only_the_rest(
    make_node: MakeNode,
) -> None:
    """One record of our own choosing and three learned from a peer that
    dialed us (no bootstrap: they may be dialed): two wanted, two taken."""
    node = make_node(Identity.generate(), clock=task.Clock())
    book = node.gossip.records
    mine = Identity.generate()
    book.offer(sign_record(mine, 1, ["192.0.9.1:7010"]))
    inbound_source = Identity.generate().peer_id
    for n in range(1, 4):
        book.offer(
            sign_record(Identity.generate(), 1, [f"192.0.{n}.1:7010"]), inbound_source
        )
    manager = _manager(node)
    chosen = manager._candidates([], 2)
    assert len(chosen) == 2
    assert chosen[0] == (mine.peer_id, "192.0.9.1", 7010)


def test_candidates_leave_out_the_connected_the_dialing_ourselves_and_the_waiting(
    make_node: MakeNode,
) -> None:
    """Each record left out for its own reason, one at a time: a connected
    peer, one being dialed, our own, one backing off, one at a banned
    address; only the last record is a candidate."""
    node = make_node(Identity.generate(), clock=task.Clock())
    book = node.gossip.records
    who = [Identity.generate() for _ in range(5)]
    for n, identity in enumerate([*who, node.identity], 1):
        book.offer(sign_record(identity, 1, [f"192.0.{n}.1:7010"]))
    connected, dialing, waiting, _banned, fine = who
    node.ban("192.0.4.0/24", "test")  # _banned's address
    manager = _manager(node)
    manager.dialing[dialing.peer_id] = defer.Deferred()
    manager.backoff.failed(waiting.peer_id, 0.0)
    peer: Any = attrs.make_class("P", ["peer_id", "address"])(connected.peer_id, None)
    chosen = manager._candidates([peer], 10)
    assert chosen == [(fine.peer_id, "192.0.5.1", 7010)]


def test_candidates_prefer_a_netgroup_our_peers_are_not_in_by_the_settings(
    make_node: MakeNode,
) -> None:
    """A peer connected at 192.0.2.1; netgroups of /16 here: 192.0.3.1 is in
    its netgroup, so 198.51.100.1 is taken first (the rng leaves the book's
    order as it is: only the netgroups decide)."""
    node = make_node(Identity.generate(), clock=task.Clock())
    near, far = Identity.generate(), Identity.generate()
    node.gossip.records.offer(sign_record(near, 1, ["192.0.3.1:7010"]))
    node.gossip.records.offer(sign_record(far, 1, ["198.51.100.1:7010"]))
    settings = DiscoverySettings(netgroup_ipv4_prefix=16)
    manager = _manager(node, settings=settings, rng=_FirstChoice(1))
    address = attrs.make_class("A", ["host"])("192.0.2.1")
    peer: Any = attrs.make_class("P", ["peer_id", "address"])(
        Identity.generate().peer_id, address
    )
    assert [c[0] for c in manager._candidates([peer], 1)] == [far.peer_id]
    assert [c[0] for c in manager._candidates([], 1)] == [near.peer_id]


def test_a_peer_at_an_address_without_a_host_does_not_stop_a_round(
    make_node: MakeNode,
) -> None:
    """A connected peer on a transport without a host (a UNIX socket, say)
    counts in no subnet: the candidates are chosen all the same."""
    node = make_node(Identity.generate(), clock=task.Clock())
    other = Identity.generate()
    node.gossip.records.offer(sign_record(other, 1, ["192.0.2.1:7010"]))
    manager = _manager(node)

    class Unix:
        name = "/tmp/socket"

    hostless = attrs.make_class("Hostless", ["peer_id", "address"])(
        Identity.generate().peer_id, Unix()
    )
    assert manager._candidates([hostless], 1) == [(other.peer_id, "192.0.2.1", 7010)]


def test_inbound_peers_past_the_cap_are_closed_and_each_counted_once(
    net: MemoryNetwork,
) -> None:
    node = net.add_node()
    settings = DiscoverySettings(target_peers=0, max_inbound=1, inbound_grace=0.0)
    manager = _manager(node, settings=settings)
    manager.startService()
    try:
        for n in (1, 2, 3):
            net.connect(net.add_node(host=f"192.0.{n}.1"), node)
        assert len(node.peers) == 3
        net.advance(1.0)
        assert len(node.peers) == 1
        assert node.counters["discovery.inbound_trimmed"] == 2
    finally:
        manager.stopService()


def test_inbound_peers_are_trimmed_from_the_most_crowded_netgroup_first(
    net: MemoryNetwork,
) -> None:
    """Three inbound peers in 192.0.1.0/24 and one in 192.0.2.0/24, two
    allowed: both closed are of the crowded netgroup, told why (the rng
    takes the first it may: the lone one, were the netgroups ignored)."""
    node = net.add_node()
    settings = DiscoverySettings(target_peers=0, max_inbound=2, inbound_grace=0.0)
    manager = _manager(node, settings=settings, rng=_FirstChoice(1))
    manager.startService()
    try:
        hosts = ("192.0.2.1", "192.0.1.1", "192.0.1.2", "192.0.1.3")
        others = [net.add_node(host=host) for host in hosts]
        for other in others:
            net.connect(other, node)
        net.advance(1.0)
        kept = {p.peer_id for p in node.peers}
        assert len(kept) == 2 and others[0].peer_id in kept
        closed = [o for o in others if o.peer_id not in kept]
        assert [o.counters["closed.CONNECTION_LIMIT"] for o in closed] == [1, 1]
    finally:
        manager.stopService()


def test_a_peer_whose_dials_keep_failing_is_given_up(make_node: MakeNode) -> None:
    """Issue 23 item 9: a peer that left was redialed forever (every 300 s
    at most).  Its dials back off (1, 2, 4... s, the one ``Backoff``), and
    after ``give_up_after`` failures in a row its record is forgotten:
    never dialed again, counted once."""
    clock = task.Clock()
    node = make_node(Identity.generate(), clock=clock)
    dials = _stubbed(node)
    gone = Identity.generate()
    node.gossip.records.offer(sign_record(gone, 1, ["192.0.2.9:7010"]))
    settings = DiscoverySettings(target_peers=1, give_up_after=4, dials_per_host=99)
    manager = _manager(node, settings=settings)
    manager.startService()
    try:
        waits: list[float] = []
        for _ in range(4):
            assert len(dials.made) == len(waits) + 1
            dials.pending[-1].errback(ConnectFailed("refused"))
            start = clock.seconds()
            while len(dials.made) == len(waits) + 1 and clock.seconds() - start < 600:
                clock.advance(1.0)
            waits.append(clock.seconds() - start)
        assert waits[:3] == [1.0, 2.0, 4.0]  # backing off, no jitter here
        assert node.gossip.record(gone.peer_id) is None  # given up
        assert node.counters["discovery.given_up"] == 1
        assert node.counters["discovery.dial_failed"] == 4
        assert len(dials.made) == 4  # and not dialed again
        # Another that leaves is given up too: each is counted.
        other = Identity.generate()
        node.gossip.records.offer(sign_record(other, 1, ["192.0.2.10:7010"]))
        for _ in range(4):
            made, start = len(dials.made), clock.seconds()
            while len(dials.made) == made and clock.seconds() - start < 600:
                clock.advance(1.0)
            assert len(dials.made) == made + 1
            dials.pending[-1].errback(ConnectFailed("refused"))
        assert node.gossip.record(other.peer_id) is None
        assert node.counters["discovery.given_up"] == 2
    finally:
        manager.stopService()


def _frame_types(protocol: Any) -> list[int]:
    """The type byte of every frame ``protocol`` receives from now on."""
    types: list[int] = []
    decoder = FrameDecoder(wire.DEFAULT_MAX_FRAME)
    received = protocol.dataReceived

    def recording(data: bytes) -> None:
        types.extend(body[0] for body in decoder.feed(data))
        received(data)

    protocol.dataReceived = recording
    return types


def test_a_peer_that_answered_is_not_asked_again_and_the_link_goes_idle(
    net: MemoryNetwork,
) -> None:
    """Two nodes, one short of peers for good: it asks its peer on
    connecting and once more (the first answer was news), then not for
    ``records_refresh``: the link goes quiet, so keepalive pings it (it
    used to ask every round, a second apart, forever)."""
    interval = 30.0
    settings = Settings(keepalive_interval=interval)
    node = net.add_node(settings=settings)
    peer = net.add_node(settings=settings)
    peer.gossip.set_addresses(["10.0.0.2:4001"])
    peer.gossip.start()  # its heartbeat: one answer a heartbeat
    manager = _manager(node, settings=DiscoverySettings(target_peers=3))
    manager.startService()
    try:
        net.connect(node, peer)
        to_peer = _frame_types(peer._peers[node.peer_id])
        to_node = _frame_types(node._peers[peer.peer_id])
        net.advance(4 * interval)
        assert node.counters["discovery.dials"] == 0  # nothing to dial
        requests = to_peer.count(T_RECORDS_REQUEST)
        assert requests == 1  # the one after news (the first went on connecting)
        assert to_node.count(T_RECORDS) == 1
        pings = to_peer.count(wire.T_PING) + to_node.count(wire.T_PING)
        # At 31, 61 and 91 s, a silence of one interval: both ends heard
        # each other last at the same instant, so both ping.
        assert pings == 6
        assert [p.peer_id for p in node.peers] == [peer.peer_id]
    finally:
        manager.stopService()
