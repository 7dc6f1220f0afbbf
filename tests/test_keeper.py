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
    backoff,
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


def test_backoff_doubles_from_half_a_second_to_thirty_with_jitter() -> None:
    assert [backoff(n, spread=lambda: 0.0) for n in range(1, 10)] == [
        0.5, 1, 2, 4, 8, 16, MAX_DELAY, MAX_DELAY, MAX_DELAY,
    ]  # fmt: skip
    assert backoff(1, spread=lambda: 1.0) == 0.25
    assert backoff(20, spread=lambda: 0.5) == 0.75 * MAX_DELAY


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
            spread=lambda: 0.0,
        )
        keeper.startService()
        net.advance(60)
        # 7 attempts by 31.5 s, the next at 61.5 s: bob saw 7 handshakes.
        assert keeper.failures == UNREACHABLE_AFTER
        assert bob.counters["handshakes.failed.UNEXPECTED_PEER"] == 7
        assert [e["failures"] for e in events] == [UNREACHABLE_AFTER]
        assert "UNEXPECTED_PEER" in events[0]["error"]
        keeper.stopService()
