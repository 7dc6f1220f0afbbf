"""Kept peers (``--peer``): back-off with jitter on a fake clock, no dial
while the peer is connected in either direction, one log line per change."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.logger import Logger
from zope.interface import implementer

from blueprint_net._adapters.keeper import (
    MAX_DELAY,
    UNREACHABLE_AFTER,
    PeerKeeper,
    State,
)
from blueprint_net.testing import MemoryNetwork


@implementer(IStreamClientEndpoint)
class Refusing:
    """A peer that is down: every attempt refused, each one's time noted."""

    def __init__(self, net: MemoryNetwork) -> None:
        self.net, self.attempts = net, []  # type: ignore[var-annotated]

    def connect(self, factory: IProtocolFactory) -> defer.Deferred[Any]:
        self.attempts.append(self.net.clock.seconds())
        return defer.fail(ConnectionRefusedError("down"))


def _keeper(net: MemoryNetwork, *args: Any, **kwargs: Any) -> tuple[PeerKeeper, list]:  # type: ignore[type-arg]
    keeper = PeerKeeper(*args, **kwargs)
    events: list[dict[str, Any]] = []
    keeper._log = Logger(observer=events.append)  # type: ignore[arg-type]
    return keeper, events


def test_an_unreachable_peer_is_retried_with_backoff_and_logged_once() -> None:
    with MemoryNetwork() as net:
        alice, bob = net.add_node(), net.add_node()
        down = Refusing(net)
        keeper, events = _keeper(
            net, alice, bob.peer_id, down, address="bob:7010", spread=lambda: 0.0
        )
        keeper.startService()
        net.advance(300)
        gaps = [b - a for a, b in zip(down.attempts, down.attempts[1:])]
        assert gaps[:8] == [0.5, 1, 2, 4, 8, 16, 30, 30]
        assert down.attempts[6:] == [31.5 + 30 * n for n in range(9)]  # to 271.5
        # One line, once the delay is at its longest, naming peer and address.
        [line] = events
        assert line["log_level"].name == "warn"
        assert line["failures"] == UNREACHABLE_AFTER
        assert line["peer_id"] == str(bob.peer_id) and line["address"] == "bob:7010"
        assert "down" in line["error"]
        assert keeper.state is State.WAITING and keeper.next_attempt is not None
        keeper.stopService()
        assert keeper.describe()["state"] == "stopped"
        assert not net.clock.getDelayedCalls()


def test_a_peer_that_dials_us_is_not_redialed_until_lost() -> None:
    with MemoryNetwork() as net:
        alice, bob = net.add_node(), net.add_node()
        down = Refusing(net)
        keeper, events = _keeper(net, alice, bob.peer_id, down, spread=lambda: 0.0)
        keeper.startService()
        net.advance(2)
        assert len(down.attempts) == 3  # at 0, 0.5 and 1.5
        net.connect(bob, alice)  # bob comes to us: inbound
        assert keeper.state is State.CONNECTED and keeper.failures == 0
        net.advance(600)
        assert len(down.attempts) == 3  # connected: never dialed
        [line] = events
        assert "connected" in line["log_format"] and line["direction"] == "inbound"
        net.cut(alice, bob)
        assert keeper.describe()["state"] == "waiting"
        assert "lost" in events[-1]["log_format"]
        net.advance(0.5)
        assert down.attempts[-1] == net.clock.seconds()  # redialed after 0.5 s
        assert len(events) == 2  # the failed redial is not logged
        keeper.stopService()


def test_a_kept_peer_is_dialed_and_stays_connected() -> None:
    with MemoryNetwork() as net:
        alice, bob = net.add_node(), net.add_node()
        keeper, events = _keeper(
            net, alice, bob.peer_id, net.endpoint(bob, source=alice)
        )
        keeper.startService()
        net.pump()
        assert keeper.state is State.CONNECTED
        assert [p.peer_id for p in alice.peers] == [bob.peer_id]
        assert alice.peers[0].direction == "outbound"
        net.advance(120)
        assert len(alice.peers) == 1 and len(events) == 1
        keeper.stopService()


def test_a_wrong_peer_id_backs_off_too() -> None:
    """A mistyped id: each attempt reaches a node that is not the one asked
    for, and fails its handshake; the remote is not re-handshaked each
    second."""
    with MemoryNetwork() as net:
        alice, bob, carol = net.add_node(), net.add_node(), net.add_node()
        keeper, events = _keeper(
            net,
            alice,
            carol.peer_id,
            net.endpoint(bob, source=alice),
            address="bob:7010",
            spread=lambda: 0.0,
        )
        keeper.startService()
        net.pump()
        # Said after the first attempt, with the kept peer and its address.
        [wrong] = events
        assert keeper.failures == 1 and wrong["log_level"].name == "warn"
        assert wrong["peer_id"] == str(carol.peer_id)
        assert wrong["address"] == "bob:7010"
        net.advance(60)
        # 7 attempts by 31.5 s, the next at 61.5 s: bob saw 7 handshakes.
        assert keeper.failures == UNREACHABLE_AFTER
        assert bob.counters["handshakes.failed.UNEXPECTED_PEER"] == 7
        # Said at once (issue 23 item 1), then once more as unreachable.
        assert [e.get("failures") for e in events] == [None, UNREACHABLE_AFTER]
        assert "wrong peer at that address" in events[0]["log_format"]
        assert all("UNEXPECTED_PEER" in e["error"] for e in events)
        keeper.stopService()


@implementer(IStreamClientEndpoint)
class RefusedFirst:
    """Refuses the first dial (nothing listens yet), then dials ``then``."""

    def __init__(self, then: IStreamClientEndpoint) -> None:
        self.then, self.dials = then, 0

    def connect(self, factory: Any) -> defer.Deferred[Any]:
        self.dials += 1
        if self.dials == 1:
            return defer.fail(ConnectionRefusedError("not listening yet"))
        return self.then.connect(factory)


def test_a_wrong_peer_id_is_said_even_after_other_failures() -> None:
    """The node at the address was not up at the first attempt: the wrong
    id is still said when it first shows, once, not only as unreachable
    after 7 attempts (a twistd test caught this race)."""
    with MemoryNetwork() as net:
        alice, bob, carol = net.add_node(), net.add_node(), net.add_node()
        endpoint = RefusedFirst(net.endpoint(bob, source=alice))
        keeper, events = _keeper(
            net, alice, carol.peer_id, endpoint, address="bob:7010", spread=lambda: 0.0
        )
        keeper.startService()
        net.pump()
        assert keeper.failures == 1 and events == []  # refused: the weather
        net.advance(1.0)  # the second attempt reaches bob, not carol
        [wrong] = events
        assert "wrong peer at that address" in wrong["log_format"]
        assert "UNEXPECTED_PEER" in wrong["error"] and keeper.failures == 2
        net.advance(8.0)  # more attempts, the same error: not said again
        assert len(events) == 1 and keeper.failures > 2
        keeper.stopService()


@implementer(IStreamClientEndpoint)
class Pending:
    """A dial that never answers; notes whether it was cancelled."""

    def __init__(self) -> None:
        self.cancelled = 0

    def connect(self, factory: IProtocolFactory) -> defer.Deferred[Any]:
        def cancel(waiting: defer.Deferred[Any]) -> None:
            self.cancelled += 1

        return defer.Deferred(cancel)


def test_describe_reports_each_field_through_a_keepers_life() -> None:
    """The status page reads these keys and values; a failure's error, the
    next attempt's time, and both cleared once connected."""
    with MemoryNetwork() as net:
        alice, bob = net.add_node(), net.add_node()
        down = Refusing(net)
        keeper, _events = _keeper(net, alice, bob.peer_id, down, spread=lambda: 0.0)
        # Without ``address``, the endpoint's own description is used.
        assert keeper.describe() == {
            "peer_id": str(bob.peer_id),
            "address": str(down),
            "state": "stopped",
            "failures": 0,
            "last_error": None,
            "next_attempt": None,
        }
        net.advance(10)
        keeper.startService()  # the first attempt fails at once: at 10
        described = keeper.describe()
        assert described["state"] == "waiting" and described["failures"] == 1
        assert "down" in described["last_error"]
        assert described["next_attempt"] == 10.5  # now + 0.5 s, not now - 0.5
        net.advance(0.5)
        assert keeper.describe()["failures"] == 2
        assert keeper.describe()["next_attempt"] == 11.5
        net.connect(bob, alice)
        assert keeper.describe() == {
            "peer_id": str(bob.peer_id),
            "address": str(down),
            "state": "connected",
            "failures": 0,
            "last_error": None,
            "next_attempt": None,
        }
        keeper.stopService()


def test_connected_and_lost_are_logged_with_the_peer_and_its_address() -> None:
    with MemoryNetwork() as net:
        alice, bob = net.add_node(), net.add_node()
        down = Refusing(net)
        keeper, events = _keeper(
            net, alice, bob.peer_id, down, address="bob:7010", spread=lambda: 0.0
        )
        keeper.startService()
        net.connect(bob, alice)
        net.cut(alice, bob)
        connected, lost = events
        for line in (connected, lost):
            assert line["log_level"].name == "info"
            assert line["peer_id"] == str(bob.peer_id)
            assert line["address"] == "bob:7010"
        assert "connected" in connected["log_format"]
        assert connected["direction"] == "inbound"
        assert "lost" in lost["log_format"]
        # A loss starts the count afresh: the redial is failure 1, 0.5 s on.
        assert keeper.describe()["failures"] == 0
        assert keeper.describe()["next_attempt"] == net.clock.seconds() + 0.5
        net.advance(0.5)
        assert keeper.failures == 1  # its delay is the first one again
        assert keeper.next_attempt == net.clock.seconds() + 0.5
        keeper.stopService()


def test_the_unreachable_line_carries_its_fields() -> None:
    with MemoryNetwork() as net:
        alice, bob = net.add_node(), net.add_node()
        keeper, events = _keeper(
            net, alice, bob.peer_id, Refusing(net), spread=lambda: 0.0
        )
        keeper.startService()
        net.advance(60)
        [line] = events
        assert "unreachable" in line["log_format"]
        assert line["maximum"] == MAX_DELAY
        assert line["failures"] == UNREACHABLE_AFTER
        assert line["error"] == keeper.last_error and "down" in line["error"]
        keeper.stopService()


def test_a_peer_already_connected_is_kept_without_a_dial() -> None:
    """``connect`` returns the existing connection at once, with no new
    verified event: the keeper learns it from the dial's result."""
    with MemoryNetwork() as net:
        alice, bob = net.add_node(), net.add_node()
        net.connect(alice, bob)
        down = Refusing(net)
        keeper, events = _keeper(net, alice, bob.peer_id, down)
        keeper.startService()
        assert keeper.state is State.CONNECTED and down.attempts == []
        [line] = events
        assert line["direction"] == "outbound"
        net.advance(120)
        assert down.attempts == []
        keeper.stopService()


def test_stopping_cancels_a_dial_in_flight() -> None:
    with MemoryNetwork() as net:
        alice, bob = net.add_node(), net.add_node()
        pending = Pending()
        keeper, events = _keeper(net, alice, bob.peer_id, pending)
        keeper.startService()
        assert keeper.state is State.DIALING and pending.cancelled == 0
        keeper.stopService()
        assert pending.cancelled == 1
        assert keeper.describe()["state"] == "stopped" and keeper.failures == 0
        assert events == []  # a cancelled dial is not a failure


class _VanishingNode:
    """A node whose dial succeeds but whose peer is gone again by the time
    the keeper asks for it (closed by another observer in between)."""

    def __init__(self, net: MemoryNetwork) -> None:
        self.clock = net.clock

    def on_peer_verified(self, callback: Any) -> None:
        pass

    def on_peer_lost(self, callback: Any) -> None:
        pass

    def connect(self, endpoint: Any, peer_id: Any) -> defer.Deferred[Any]:
        return defer.succeed(object())

    def peer(self, peer_id: Any) -> None:
        return None


def test_a_peer_gone_before_it_is_logged_has_an_unknown_direction() -> None:
    with MemoryNetwork() as net:
        bob = net.add_node()
        keeper, events = _keeper(
            net, _VanishingNode(net), bob.peer_id, Pending(), address="bob:7010"
        )
        keeper.startService()
        assert keeper.state is State.CONNECTED
        [line] = events
        assert line["direction"] == "unknown"
        assert line["peer_id"] == str(bob.peer_id) and line["address"] == "bob:7010"
