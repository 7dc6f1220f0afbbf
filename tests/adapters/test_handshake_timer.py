"""The handshake's deadline (``_adapters/handshake_timer.py``), on a
``task.Clock``: short while the peer says nothing, then the rest of the
handshake timeout counted from the connection."""

from __future__ import annotations

from twisted.internet.task import Clock

from blueprint_net._adapters.handshake_timer import HandshakeTimer
from blueprint_net._policy.settings import Settings

SETTINGS = Settings(first_frame_timeout=5.0, handshake_timeout=30.0)


def _timer(settings: Settings = SETTINGS) -> tuple[HandshakeTimer, Clock, list[float]]:
    clock = Clock()
    clock.advance(100.0)
    expired: list[float] = []
    timer = HandshakeTimer(clock, settings, lambda: expired.append(clock.seconds()))
    return timer, clock, expired


def test_a_silent_peer_has_the_first_frame_deadline() -> None:
    timer, clock, expired = _timer()
    assert not timer.silent
    timer.start()
    assert timer.silent
    clock.advance(4.9)
    assert expired == []
    clock.advance(0.1)
    assert expired == [105.0] and not timer.silent
    assert clock.getDelayedCalls() == []


def test_a_peer_that_spoke_has_the_handshake_timeout_from_the_start() -> None:
    timer, clock, expired = _timer()
    timer.start()
    clock.advance(2.0)
    timer.spoke()
    assert not timer.silent
    clock.advance(27.9)
    assert expired == []
    clock.advance(0.1)
    assert expired == [130.0]


def test_speaking_past_the_handshake_timeout_expires_at_once() -> None:
    settings = Settings(first_frame_timeout=60.0, handshake_timeout=30.0)
    timer, clock, expired = _timer(settings)
    timer.start()  # the shorter of the two: 30 s
    clock.advance(29.0)
    timer.spoke()
    clock.advance(1.0)
    assert expired == [130.0]
    timer.spoke()  # over: nothing to move
    assert clock.getDelayedCalls() == []


def test_a_cancelled_deadline_never_fires() -> None:
    timer, clock, expired = _timer()
    timer.start()
    timer.cancel()
    assert not timer.silent and clock.getDelayedCalls() == []
    clock.advance(100.0)
    timer.cancel()  # twice: nothing
    assert expired == []


def test_the_first_frame_deadline_is_never_past_the_handshake_timeout() -> None:
    settings = Settings(first_frame_timeout=60.0, handshake_timeout=30.0)
    timer, clock, expired = _timer(settings)
    timer.start()
    clock.advance(30.0)
    assert expired == [130.0]
