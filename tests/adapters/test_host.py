"""The connection host (``_adapters/host.py``): admission, the connections
that reach this node itself, bans and misbehaviour scoring, the kept-dial
factory, stopping.  Direct tests of a ``ConnectionHost`` with stand-in
connections first, then whole nodes in memory (``MemoryNetwork``)."""

from __future__ import annotations

from collections import Counter
from typing import Any, Optional, cast

import attrs
import pytest
from twisted.internet import defer
from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.endpoints import connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.logger import (
    Logger,
    LogLevel,
    formatEvent,
)
from twisted.python.failure import Failure

from blueprint_net._adapters.dispatch import Dispatcher
from blueprint_net._adapters.gossip import Gossip
from blueprint_net._adapters.host import ConnectionHost
from blueprint_net._adapters.limiting_factory import Refusal
from blueprint_net._adapters.peers import Peer, PeerTable
from blueprint_net._adapters.protocol import PeerProtocol
from blueprint_net._adapters.self_connection import SelfConnections
from blueprint_net._core import framing, gossip_wire, wire
from blueprint_net._core.connection_events import ConnectionFailed, GossipReceived
from blueprint_net._core.errors import (
    BadBroadcastSignature,
    DuplicateMessage,
    ErrorCode,
    HandshakeError,
    HandshakeFailed,
    ProtocolError,
    RemoteError,
    RoundTooFar,
)
from blueprint_net._core.gossip_outputs import Fault
from blueprint_net._core.gossip_settings import DEFAULTS as GOSSIP_DEFAULTS
from blueprint_net._core.identity import Identity, PeerId
from blueprint_net._policy.bans import BanRegistry
from blueprint_net._policy.gossip_faults import fault_code
from blueprint_net._policy.limits import (
    ConnectionLimits,
)
from blueprint_net._policy.resources import MemoryBudget
from blueprint_net._policy.scores import DEFAULT_POINTS, POINTS, Policy
from blueprint_net._policy.settings import Settings
from blueprint_net.testing import MemoryNetwork
from tests.helpers import decode_frames
from tests.test_testing import Raw

# -- a ConnectionHost on its own, with stand-in connections -----------------------


class _Unwatched:
    """A connection's liveness with nothing to watch."""

    def check(self, now: float, interval: float) -> Optional[float]:
        return None


class _Unsent:
    """A connection's sending side, keeping the frames sent on it."""

    requests_out = 0

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def send_frame(self, frame: bytes) -> None:
        self.frames.append(frame)

    def messages(self) -> list[object]:
        framer = framing.FrameDecoder(wire.DEFAULT_MAX_FRAME)
        return [gossip_wire.decode(body) for body in framer.feed(b"".join(self.frames))]


@attrs.define
class _Open:
    """A connection's sans-IO core, as far as the host's gossip reads it."""

    closed: bool = False


@attrs.define(eq=False)
class _Link:
    """What the host reads of a connection, and what it does to one."""

    peer_id: Optional[PeerId] = None
    host: str = "192.0.2.7"
    initiator: bool = False
    verified_at: Optional[float] = None
    claimed_peer: Optional[PeerId] = None
    channel_bound: bool = False
    transport: Any = None
    gossip_cap: Optional[int] = None
    closed_with: list[ProtocolError] = attrs.Factory(list)
    requests_in: int = 0
    sender: _Unsent = attrs.Factory(_Unsent)
    liveness: _Unwatched = attrs.Factory(_Unwatched)
    #: What the duplicate rule compares (the smaller is kept).
    session_key: bytes = b""
    connection: _Open = attrs.Factory(_Open)

    @property
    def address(self) -> IPv4Address:
        return IPv4Address("TCP", self.host, 4000)

    @property
    def where(self) -> str:
        return f"{self.host}:4000"

    def close(self, error: ProtocolError) -> bool:
        self.closed_with.append(error)
        return True

    def cap_gossip(self, cap: int) -> None:
        self.gossip_cap = cap


def _host(**limits: Any) -> ConnectionHost:
    clock, counters, peers = Clock(), Counter[str](), PeerTable()
    identity = Identity.generate()
    return ConnectionHost(
        identity,
        clock,
        Settings(),
        limits=ConnectionLimits(**limits),
        policy=Policy(BanRegistry(clock)),
        counters=counters,
        memory=MemoryBudget(1 << 20, counters),
        peers=peers,
        dispatch=Dispatcher(clock, counters),
        gossip=Gossip(
            identity,
            clock,
            GOSSIP_DEFAULTS,
            peers,
            lambda peer_id, fault: None,
            forward_queue_limit=1000,
        ),
        gossip_frame=4321,
    )


def _opened(host: ConnectionHost, link: _Link) -> PeerProtocol:
    protocol = cast(PeerProtocol, link)
    host.connection_opened(protocol)
    return protocol


def _verified(host: ConnectionHost, link: _Link) -> PeerProtocol:
    """``link`` opened and verified (``peer_id`` set)."""
    link.verified_at = 1.0
    protocol = _opened(host, link)
    host.peer_verified(protocol)
    return protocol


def _codes(link: _Link) -> list[ErrorCode]:
    return [error.code for error in link.closed_with]


def test_an_opened_connection_takes_gossip_up_to_the_nodes_frame_limit() -> None:
    host = _host()
    link = _Link()
    protocol = _opened(host, link)
    assert link.gossip_cap == 4321
    assert host.peers.open == {protocol}


def test_authorize_refuses_past_max_per_peer_and_counts_it(alice: Identity) -> None:
    host = _host(max_per_peer=1)
    host.authorize(alice.peer_id)  # none yet
    _verified(host, _Link(alice.peer_id))
    with pytest.raises(HandshakeFailed) as refused:
        host.authorize(alice.peer_id)
    assert refused.value.code is ErrorCode.CONNECTION_LIMIT
    assert host.counters["refused.peer"] == 1


def test_authorize_asks_the_policy_first(alice: Identity) -> None:
    host = _host()
    host.policy.bans.ban(alice.peer_id, "test")
    with pytest.raises(HandshakeFailed) as refused:
        host.authorize(alice.peer_id)
    assert refused.value.code is ErrorCode.BANNED
    assert host.counters["refused.peer"] == 0


def test_only_connections_off_the_allow_list_are_closed(
    alice: Identity, bob: Identity
) -> None:
    host = _host()
    kept, dropped, unproven = _Link(alice.peer_id), _Link(bob.peer_id), _Link()
    for link in (kept, dropped, unproven):
        _opened(host, link)
    assert host.close_unpermitted() == 0  # no allow-list: everyone stays
    host.policy.set_permitted([alice.peer_id])
    assert host.close_unpermitted() == 1
    assert _codes(dropped) == [ErrorCode.NOT_ALLOWED]
    assert kept.closed_with == [] and unproven.closed_with == []


def test_a_peer_id_ban_closes_that_peers_connections_only(
    alice: Identity, bob: Identity
) -> None:
    host = _host()
    first, second, other = (
        _Link(alice.peer_id),
        _Link(alice.peer_id),
        _Link(bob.peer_id),
    )
    for link in (first, second, other):
        _opened(host, link)
    host.policy.bans.ban(alice.peer_id, "test")
    assert _codes(first) == _codes(second) == [ErrorCode.BANNED]
    assert other.closed_with == []
    assert host.counters["bans.manual"] == 1


def test_a_network_ban_closes_the_connections_from_inside_it() -> None:
    host = _host()
    inside, outside = _Link(host="198.51.100.9"), _Link(host="203.0.113.9")
    for link in (inside, outside):
        _opened(host, link)
    host.policy.bans.ban("198.51.100.0/24", "test")
    assert _codes(inside) == [ErrorCode.BANNED] and outside.closed_with == []


def test_a_failed_handshake_is_counted_and_summarised_with_the_claimed_id(
    alice: Identity, summary_log: list[dict[str, Any]]
) -> None:
    host = _host()
    link = _Link(claimed_peer=alice.peer_id)
    failed = ConnectionFailed(ProtocolError(ErrorCode.HANDSHAKE_TIMEOUT, "slow"))
    host.connection_failed(_opened(host, link), failed)
    assert host.counters["handshakes.failed.HANDSHAKE_TIMEOUT"] == 1
    [detail] = [e for e in summary_log if e["log_level"] is LogLevel.debug]
    assert detail["claimed"] == str(alice.peer_id)
    assert detail["address"] == "192.0.2.7:4000"
    host.failures.flush()
    assert _summaries(summary_log) == [{"HANDSHAKE_TIMEOUT": 1}]


def test_a_verified_connections_failure_is_a_close_and_not_summarised(
    alice: Identity, summary_log: list[dict[str, Any]]
) -> None:
    host = _host()
    protocol = _verified(host, _Link(alice.peer_id))
    failed = ConnectionFailed(ProtocolError(ErrorCode.HANDSHAKE_TIMEOUT, "x"))
    host.connection_failed(protocol, failed)
    assert host.counters["closed.HANDSHAKE_TIMEOUT"] == 1
    assert host.counters["handshakes.failed.HANDSHAKE_TIMEOUT"] == 0
    host.failures.flush()
    assert summary_log == []


@pytest.mark.parametrize("bound", [True, False])
def test_misbehaviour_charges_the_peer_id_only_over_a_channel_bound_link(
    alice: Identity, bound: bool
) -> None:
    host = _host()
    protocol = _verified(host, _Link(alice.peer_id, channel_bound=bound))
    garbage = ConnectionFailed(ProtocolError(ErrorCode.UNKNOWN_MESSAGE_TYPE, "?"))
    assert garbage.misbehaviour
    host.connection_failed(protocol, garbage)
    assert host.counters["misbehaviour"] == 1
    assert host.policy.score("192.0.2.7") > 0
    assert (host.policy.score(alice.peer_id) > 0) is bound


def test_a_gossip_fault_is_charged_only_to_a_connected_peer(
    alice: Identity, bob: Identity
) -> None:
    host = _host()
    _verified(host, _Link(alice.peer_id, channel_bound=True))
    host.charge_gossip(bob.peer_id, Fault.INVALID_SIGNATURE)  # not connected
    assert host.counters["misbehaviour"] == 0
    host.charge_gossip(alice.peer_id, Fault.INVALID_SIGNATURE)
    assert host.counters["gossip.fault.invalid-signature"] == 1
    assert host.counters["misbehaviour"] == 1
    assert (
        host.policy.score(alice.peer_id) == POINTS[fault_code(Fault.INVALID_SIGNATURE)]
    )


def test_a_session_violation_is_charged_only_to_a_connected_peer(
    alice: Identity, bob: Identity
) -> None:
    host = _host()
    _verified(host, _Link(alice.peer_id, channel_bound=True))
    host.charge_session(bob.peer_id, BadBroadcastSignature("forged"))  # not here
    assert host.counters["misbehaviour"] == 0
    host.charge_session(alice.peer_id, BadBroadcastSignature("forged"))
    assert host.counters["sessions.violation.bad-signature"] == 1
    assert host.policy.score(alice.peer_id) == POINTS[ErrorCode.BAD_SIGNATURE]
    host.charge_session(alice.peer_id, DuplicateMessage("twice"))
    assert host.counters["sessions.violation.duplicate"] == 1
    assert host.counters["misbehaviour"] == 2
    assert host.policy.score(alice.peer_id) == (
        POINTS[ErrorCode.BAD_SIGNATURE] + DEFAULT_POINTS
    )
    host.charge_session(alice.peer_id, RoundTooFar("our settings differ"))
    assert host.counters["sessions.violation.round-too-far"] == 1
    assert host.counters["misbehaviour"] == 2  # counted, not charged


def test_a_kept_dial_builds_nothing_for_a_connected_peer_or_once_stopping(
    alice: Identity, bob: Identity
) -> None:
    host = _host()
    addr = IPv4Address("TCP", "192.0.2.8", 7010)
    _verified(host, _Link(alice.peer_id))
    assert host.dial_factory(alice.peer_id).wrappedFactory.buildProtocol(addr) is None
    wanted = host.dial_factory(bob.peer_id).wrappedFactory
    assert isinstance(wanted.buildProtocol(addr), PeerProtocol)
    host.begin_stop()
    assert host.stopping
    assert wanted.buildProtocol(addr) is None


def test_the_peer_callbacks_follow_the_peer_id(alice: Identity) -> None:
    host = _host()
    verified: list[Peer] = []
    lost: list[Peer] = []
    host.on_peer_verified(verified.append)
    host.on_peer_lost(lost.append)
    protocol = _verified(host, _Link(alice.peer_id))
    assert [peer.peer_id for peer in verified] == [alice.peer_id]
    assert host.counters["handshakes.ok"] == 1
    host.connection_closed(protocol, Failure(ConnectionDone()))
    assert [peer.peer_id for peer in lost] == [alice.peer_id]
    assert host.peers.open == set()


def test_a_replacement_sends_our_topics_again_on_the_kept_connection(
    alice: Identity,
) -> None:
    """What went out on the connection the duplicate rule closes may be
    lost with it (docs/protocol.md 9.5, *A replaced connection*)."""
    host = _host()
    host.gossip.subscribe("news", None)
    announce = gossip_wire.Subscriptions(((True, "news"),))
    first = _Link(alice.peer_id, session_key=b"\x02")
    _verified(host, first)
    assert first.sender.messages() == [announce]
    kept = _Link(alice.peer_id, session_key=b"\x01")
    kept_protocol = _verified(host, kept)
    assert _codes(first) == [ErrorCode.DUPLICATE_CONNECTION]
    assert host.counters["peers.replaced"] == 1
    assert kept.sender.messages() == [announce]
    # Our prune's backoff, running at the next replacement, is repeated
    # with the seconds left by the host's clock.
    host.gossip.received(
        kept_protocol, gossip_wire.Subscriptions(((True, "news"),)), b""
    )
    host.gossip.received(kept_protocol, gossip_wire.Graft("news"), b"")
    host.gossip.unsubscribe("news")
    host.gossip.subscribe("news", None)
    host.clock.advance(4.0)  # type: ignore[attr-defined]
    newest = _Link(alice.peer_id, session_key=b"\x00")
    _verified(host, newest)
    assert newest.sender.messages() == [
        announce,
        gossip_wire.Prune("news", GOSSIP_DEFAULTS.unsubscribe_backoff - 4),
    ]
    # A connection the rule closes on arrival replaces nothing: no repeat.
    late = _Link(alice.peer_id, session_key=b"\x03")
    late_protocol = _verified(host, late)
    assert _codes(late) == [ErrorCode.DUPLICATE_CONNECTION]
    assert len(newest.sender.messages()) == 2
    # Gossip is taken from the kept connection only: what the closed ones
    # still deliver may be older than the peer's repeats on the kept one.
    joined = GossipReceived(gossip_wire.Subscriptions(((True, "old"),)))
    for closed in (kept_protocol, late_protocol):
        host.gossip_received(closed, joined)
    assert "old" not in host.gossip.router.topic_peers
    host.gossip_received(cast(PeerProtocol, newest), joined)
    assert host.gossip.subscribers("old") == {alice.peer_id}
    host.gossip.stop()


# -- whole nodes in memory ------------------------------------------------------


def _second_connection(net: MemoryNetwork, max_per_peer: int) -> object:
    """A connects to B twice (two separate dials, no peer id expected)."""
    a = net.add_node()
    b = net.add_node(limits=ConnectionLimits(max_per_peer=max_per_peer))
    net.connect(a, b)
    dialing = a.connect(net.endpoint(b, source=a))
    try:
        return net.result(dialing)
    except HandshakeError as refused:
        return refused
    finally:
        net.pump()


def test_max_per_peer_refuses_the_connection_past_it() -> None:
    with MemoryNetwork() as net:
        outcome = _second_connection(net, max_per_peer=1)
        b = net.nodes[1]
        assert isinstance(outcome, HandshakeError), outcome
        assert getattr(outcome.reason, "code", None) is ErrorCode.CONNECTION_LIMIT
        assert b.counters["refused.peer"] == 1
        assert b.counters["handshakes.failed.CONNECTION_LIMIT"] == 1


def test_max_per_peer_admits_up_to_it() -> None:
    with MemoryNetwork() as net:
        outcome = _second_connection(net, max_per_peer=2)
        b = net.nodes[1]
        assert not isinstance(outcome, HandshakeError), outcome
        assert b.counters["refused.peer"] == 0
        assert b.counters["handshakes.ok"] == 2  # each verified connection
        assert len(b.peers) == 1  # a duplicate, not a new peer


def test_garbage_under_a_claimed_id_never_scores_that_id(alice: Identity) -> None:
    """A client claims Alice's id in its Hello, then sends garbage, five
    times: its address is banned, Alice is not (she proved nothing there)."""
    with MemoryNetwork() as net:
        b = net.add_node()
        hostile = "192.0.2.66"
        for _ in range(5):
            raw = Raw()
            net.result(connectProtocol(net.endpoint(b, source=hostile), raw))
            hello = wire.Hello(wire.PROTOCOL_VERSION, bytes(32), alice.peer_id)
            raw.transport.write(framing.frame(hello) + b"\x00\x00\x00\x01\xee")  # type: ignore[union-attr]
            net.pump()
            assert raw.lost
            *_, error = decode_frames(raw.received)
            assert error == wire.Error(
                ErrorCode.UNKNOWN_MESSAGE_TYPE,
                error.message,  # type: ignore[union-attr]
            )
        assert b.counters["misbehaviour"] == 5
        assert b.bans.address_ban(hostile) is not None  # the garbage was scored
        assert b.bans.peer_ban(alice.peer_id) is None
        assert b.policy.score(alice.peer_id) == 0.0
        a = net.add_node(alice)
        assert net.connect(a, b).peer_id == b.peer_id  # Alice is still welcome


def test_a_kept_dial_admits_only_the_peer_it_was_made_for(alice: Identity) -> None:
    """``dial_factory(peer_id)`` behind a ``ClientService``: whoever answers
    at that address must prove ``peer_id``, and a peer already connected is
    not dialed again."""
    with MemoryNetwork() as net:
        a, b = net.add_node(), net.add_node()
        failed: list[ErrorCode] = []
        a._host.connection_failed = lambda protocol, event: failed.append(  # type: ignore[method-assign]
            event.error.code
        )
        net.result(net.endpoint(b, source=a).connect(a.dial_factory(alice.peer_id)))
        net.pump()
        assert a.peers == [] and failed == [ErrorCode.UNEXPECTED_PEER]
        net.result(net.endpoint(b, source=a).connect(a.dial_factory(b.peer_id)))
        net.pump()
        assert [peer.peer_id for peer in a.peers] == [b.peer_id]
        again = net.endpoint(b, source=a).connect(a.dial_factory(b.peer_id))
        assert isinstance(net.result(again), Refusal)  # closed, nothing said
        net.pump()
        assert len(a._peers.open) == 1


def test_a_verified_peers_garbage_on_a_plain_link_scores_its_address() -> None:
    """In memory the link is plain: a relay could have sent the garbage, so
    the proven id is not charged, the address is (over TLS the id is too:
    tests/test_relay.py)."""
    with MemoryNetwork() as net:
        a, b = net.add_node(), net.add_node()
        net.connect(a, b)
        a._peers[b.peer_id].transport.write(b"\x00\x00\x00\x01\xee")  # type: ignore[union-attr]
        net.pump()
        assert b.policy.score(a.peer_id) == 0
        assert b.policy.score(net.host(a)) == 20
        assert b.counters["closed.UNKNOWN_MESSAGE_TYPE"] == 1
        assert b.counters["handshakes.failed.UNKNOWN_MESSAGE_TYPE"] == 0


def test_an_address_ban_closes_only_the_connections_it_covers() -> None:
    with MemoryNetwork() as net:
        a, c, d = net.add_node(), net.add_node(), net.add_node()
        net.connect(c, a)
        net.connect(d, a)
        a.ban(net.host(c), "test")
        net.pump()
        assert [peer.peer_id for peer in a.peers] == [d.peer_id]


def test_a_raising_peer_callback_is_logged_and_the_next_still_runs(
    node_log: list[dict[str, Any]],
) -> None:
    def broken(peer: Peer) -> None:
        raise KeyError("oops")

    seen: list[Peer] = []
    with MemoryNetwork() as net:
        a, b = net.add_node(), net.add_node()
        a.on_peer_verified(broken)
        a.on_peer_verified(seen.append)
        net.connect(b, a)
        assert [peer.peer_id for peer in seen] == [b.peer_id]
        [event] = [e for e in node_log if "log_failure" in e]
        assert event["log_failure"].check(KeyError)
        assert event["callback"] is broken
        assert formatEvent(event) == f"peer callback {broken!r} raised"


@attrs.define
class _SlowPort:
    """A listening port that stops when told to (a real one stops later)."""

    stopped: defer.Deferred[None] = attrs.Factory(defer.Deferred)

    def stopListening(self) -> defer.Deferred[None]:
        return self.stopped

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "192.0.2.9", 1)


@attrs.define
class _SlowEndpoint:
    port: _SlowPort = attrs.Factory(_SlowPort)

    def listen(self, factory: object) -> defer.Deferred[_SlowPort]:
        return defer.succeed(self.port)


def test_a_stopping_node_refuses_requests_and_kept_dials() -> None:
    """From the moment ``stop`` is called, while its ports still close."""
    with MemoryNetwork() as net:
        a = net.add_node(handlers={"x": lambda request: b"ok"})
        b = net.add_node()
        net.connect(b, a)
        endpoint = _SlowEndpoint()
        net.result(a.listen(cast(Any, endpoint)))
        stopping = a.stop()
        asked = b.request(a.peer_id, "x", b"")
        net.pump()
        refused: list[Failure] = []
        asked.addErrback(refused.append)
        [failure] = refused
        assert isinstance(failure.value, RemoteError)
        assert failure.value.code == ErrorCode.SHUTTING_DOWN
        dial = net.endpoint(b, source=a).connect(a.dial_factory(b.peer_id))
        endpoint.port.stopped.callback(None)
        net.pump()
        net.advance(3.0)
        assert stopping.called
        net.result(dial)
        net.pump()
        assert a.peers == []


def _summaries(events: list[dict[str, Any]]) -> list[dict[str, int]]:
    return [e["counts"] for e in events if e["log_level"] is LogLevel.info]


def test_dialing_ourselves_is_warned_and_is_no_failed_handshake(
    node_log: list[dict[str, Any]], summary_log: list[dict[str, Any]]
) -> None:
    with MemoryNetwork() as net:
        a = net.add_node()
        node_log.clear()
        with pytest.raises(HandshakeError):
            net.result(a.connect(net.endpoint(a, source=a)))
        net.pump()
        assert a.counters["handshakes.failed.SELF_CONNECTION"] == 2  # both halves
        [warning] = [e for e in node_log if e["log_level"] is LogLevel.warn]
        host, port = a.listening_addresses[0]
        assert formatEvent(warning) == (
            f"dialed {host}:{port} and reached this node itself; dropped"
            " (a --peer or connect() naming our own address?)"
        )
        a.failures.flush()
        assert _summaries(summary_log) == []


def test_a_stranger_with_our_key_is_a_failed_handshake(
    summary_log: list[dict[str, Any]],
) -> None:
    """Not our own connection (no local end of ours): counted as a failure."""
    with MemoryNetwork() as net:
        a = net.add_node()
        twin = net.add_node(a.identity)
        with pytest.raises(HandshakeError):
            net.result(twin.connect(net.endpoint(a, source=twin)))
        net.pump()
        a.failures.flush()
        assert _summaries(summary_log) == [{"SELF_CONNECTION": 1}]


@attrs.define
class _Inbound:
    """What ``reached_self`` reads of an inbound connection."""

    address: object
    initiator: bool = False


def test_our_own_end_is_recognised_until_its_expiry_inclusive() -> None:
    with MemoryNetwork() as net:
        ends = SelfConnections(net.clock, 5.0, Logger())
        expiry = net.clock.seconds() + 5
        ends.own_ends[("10.9.9.9", 4000)] = expiry
        inbound = cast(
            PeerProtocol,
            attrs.make_class(
                "P", {"initiator": attrs.field(), "address": attrs.field()}
            )(False, IPv4Address("TCP", "10.9.9.9", 4000)),
        )
        net.clock.advance(5)
        assert ends.reached_self(inbound)
        net.clock.advance(0.001)
        assert not ends.reached_self(inbound)
        inbound.address = UNIXAddress("/run/peer.sock")  # no host, no port
        assert not ends.reached_self(inbound)


def test_the_wrong_protocol_is_counted_and_summarised_each_time(
    summary_log: list[dict[str, Any]],
) -> None:
    with MemoryNetwork() as net:
        a = net.add_node()
        clients = [Raw(), Raw()]
        for client in clients:
            net.result(connectProtocol(net.endpoint(a), client))
            client.transport.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # type: ignore[union-attr]
            net.pump()
        assert a.counters["wrong_protocol.http"] == 2
        details = [e for e in summary_log if e["log_level"] is LogLevel.debug]
        local: Any = clients[0].transport.getHost()  # type: ignore[union-attr]
        assert formatEvent(details[0]) == (
            f"http client at the peer port from {local.host}:{local.port}; sent a hint"
        )
        a.failures.flush()
        assert _summaries(summary_log) == [{"wrong protocol (http)": 2}]


def test_a_kept_dial_uses_the_node_budget_and_its_failure_is_handled(
    alice: Identity,
) -> None:
    with MemoryNetwork() as net:
        a, b = net.add_node(), net.add_node()
        opened: list[PeerProtocol] = []
        host_opened = a._host.connection_opened

        def note(protocol: PeerProtocol) -> None:
            opened.append(protocol)
            host_opened(protocol)

        a._host.connection_opened = note  # type: ignore[method-assign]
        net.result(net.endpoint(b, source=a).connect(a.dial_factory(alice.peer_id)))
        net.pump()
        [wrong] = opened
        assert wrong.connection.closed
        unhandled: list[Failure] = []
        wrong.verified.addErrback(unhandled.append)
        assert unhandled == []  # consumed: no "Unhandled error in Deferred"
        net.result(net.endpoint(b, source=a).connect(a.dial_factory(b.peer_id)))
        net.pump()
        assert opened[1].memory is a.memory


def test_a_kept_dial_refused_by_a_ban_is_summarised(
    summary_log: list[dict[str, Any]],
) -> None:
    with MemoryNetwork() as net:
        a, b = net.add_node(), net.add_node()
        a.ban(net.host(b), "test")
        refused = net.result(
            net.endpoint(b, source=a).connect(a.dial_factory(b.peer_id))
        )
        assert isinstance(refused, Refusal)
        a.refusals.flush()
        [counts] = _summaries(summary_log)
        assert sum(counts.values()) == 1


def test_a_gossip_fault_on_a_plain_link_charges_the_address_each_time() -> None:
    with MemoryNetwork() as net:
        a, b = net.add_node(), net.add_node()
        a.subscribe("t", lambda message: None)
        net.connect(b, a)
        points = POINTS[fault_code(Fault.INVALID_SIGNATURE)]
        for seqno, score in ((1, points), (2, 0.0)):  # the second bans: 0 again
            forged = gossip_wire.Publish("t", b.peer_id, seqno, b"x", bytes(64))
            b._peers[a.peer_id].sender.send_frame(gossip_wire.frame(forged))
            net.pump()
            assert a.counters["gossip.fault.invalid-signature"] == seqno
            assert a.counters["misbehaviour"] == seqno
            assert a.policy.score(net.host(b)) == pytest.approx(score)
        assert a.bans.address_ban(net.host(b)) is not None
        assert a.policy.score(b.peer_id) == 0.0  # a plain link proves no sender
        assert a.bans.peer_ban(b.peer_id) is None
