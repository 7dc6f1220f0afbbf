"""Keepalive: each connection's liveness, and one timer for every
connection's, due exactly when a peer is.

Layer: adapters (Twisted: one reactor timer).

A verified peer silent for one interval is pinged; silent for one more
interval after the ping, it is closed (``docs/protocol.md``, section 7).

In: each read's time (``Liveness.heard_at``, set by ``PeerProtocol``); the
host's :meth:`Keepalive.watch` of a verified connection's
:class:`Liveness` and :meth:`Keepalive.forget` once it closed.  Out: a
``Ping`` or an ``IDLE_TIMEOUT`` close, through the connection's ``send``
and ``close``.

:meth:`Liveness.check` makes that decision and says when to look again;
:class:`Keepalive` keeps those times in one :class:`Deadlines` heap and one
``DelayedCall`` armed for the earliest.  A timer per connection would be
re-armed on every read; a sweep once per interval pings up to an interval
late.

States of a :class:`Liveness`: *heard* (no ping unanswered) and *pinged*
(our Ping went out after an interval of silence; any bytes since answer
it); the connection's own ``closed`` ends it.
"""

from __future__ import annotations

from typing import Callable, Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from blueprint_net._core import wire
from blueprint_net._core.connection import Connection
from blueprint_net._core.errors import ErrorCode, ProtocolError
from blueprint_net._core.messaging import Deadlines


def _not_sent(message: wire.Message) -> None:
    """What an ended :class:`Liveness` would send with: nothing."""


def _not_closed(error: ProtocolError) -> bool:
    """What an ended :class:`Liveness` would close with: nothing."""
    return False


class Liveness:
    """When one connection's peer was last heard from (any bytes), and when
    our keepalive Ping went out, if it is unanswered."""

    __slots__ = ("_close", "_connection", "_send", "heard_at", "pinged_at")

    def __init__(
        self,
        connection: Connection,
        send: Callable[[wire.Message], None],
        close: Callable[[ProtocolError], bool],
    ) -> None:
        self._connection = connection
        self._send = send
        self._close = close
        self.heard_at = 0.0
        self.pinged_at: Optional[float] = None

    def end(self) -> None:
        """The connection is gone: let go of its callbacks (they refer back
        to the protocol; the cycle would leave both for the cyclic garbage
        collector).  The keepalive has forgotten it by then; were ``check``
        still called, it would send and close nothing."""
        self._send = _not_sent
        self._close = _not_closed

    def check(self, now: float, interval: float) -> Optional[float]:
        """Ping a peer silent for ``interval``; close one still silent
        ``interval`` after the ping (``IDLE_TIMEOUT``).  Returns when to look
        again, or None once closed.  Any bytes received are a sign of life.
        (``Keepalive`` calls this for the node, at exactly those times.)"""
        if self._connection.closed:
            return None
        pinged, heard = self.pinged_at, self.heard_at
        # A ping goes out only once ``interval`` has passed since the peer
        # was heard, so "heard since the ping" is heard >= pinged.
        if pinged is not None and heard < pinged:
            if now < pinged + interval:
                return pinged + interval
            self._close(ProtocolError(ErrorCode.IDLE_TIMEOUT, "no keepalive answer"))
            return None
        self.pinged_at = None
        if now < heard + interval:
            return heard + interval
        self.pinged_at = now
        self._send(wire.Ping(int(now * 1000)))
        return now + interval


class Keepalive:
    """The keepalive of a node's verified connections (interval 0: off)."""

    def __init__(self, clock: IReactorTime, interval: float) -> None:
        self.clock = clock
        self.interval = interval
        self._due = Deadlines()
        #: The connections watched, by ``id()`` (held here, so ids are unique).
        self._watched: dict[int, Liveness] = {}
        self._timer: Optional[IDelayedCall] = None
        self._armed_for = 0.0

    def __len__(self) -> int:
        return len(self._watched)

    def watch(self, liveness: Liveness) -> None:
        """A connection was verified: look at it one interval after its
        peer was last heard from."""
        if self.interval <= 0:
            return
        key = id(liveness)
        self._watched[key] = liveness
        when = liveness.check(self.clock.seconds(), self.interval)
        if when is None:
            del self._watched[key]
            return
        self._due.add(key, when)
        self._arm()

    def forget(self, liveness: Liveness) -> None:
        """The connection closed."""
        key = id(liveness)
        if self._watched.pop(key, None) is not None:
            self._due.discard(key)
            if not self._watched:
                self.stop()

    def stop(self) -> None:
        """Forget every connection and cancel the timer."""
        self._watched.clear()
        self._due.clear()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _arm(self) -> None:
        earliest = self._due.earliest()
        timer = self._timer
        if earliest is None:
            return
        if timer is not None and timer.active():
            if self._armed_for <= earliest:
                return
            timer.cancel()
        self._armed_for = earliest
        self._timer = self.clock.callLater(
            max(0.0, earliest - self.clock.seconds()), self._fire
        )

    def _fire(self) -> None:
        self._timer = None
        # The time armed for has come, whatever float rounding says about
        # ``seconds()``: without this a check could find itself a hair early
        # and re-arm at the same instant, forever.
        now = max(self.clock.seconds(), self._armed_for)
        for key in self._due.expire(now):
            liveness = self._watched.get(key)
            if liveness is None:
                continue
            when = liveness.check(now, self.interval)
            if when is None:
                del self._watched[key]
            else:
                self._due.add(key, when)
        self._arm()
