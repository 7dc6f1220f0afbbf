"""One timer for every connection's keepalive, due exactly when a peer is.

Layer: adapters (Twisted: one reactor timer).

A verified peer silent for one interval is pinged; silent for one more
interval after the ping, it is closed (``docs/protocol.md``, section 7).
:meth:`PeerProtocol.keepalive_check` makes that decision and says when to
look again; this keeps those times in one :class:`Deadlines` heap and one
``DelayedCall`` armed for the earliest.  A timer per connection would be
re-armed on every read; a sweep once per interval pings up to an interval
late.
"""

from __future__ import annotations

from typing import Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from blueprint_net._adapters.protocol import PeerProtocol
from blueprint_net._core.messaging import Deadlines


class Keepalive:
    """The keepalive of a node's verified connections (interval 0: off)."""

    def __init__(self, clock: IReactorTime, interval: float) -> None:
        self.clock = clock
        self.interval = interval
        self._due = Deadlines()
        #: The connections watched, by ``id()`` (held here, so ids are unique).
        self._watched: dict[int, PeerProtocol] = {}
        self._timer: Optional[IDelayedCall] = None
        self._armed_for = 0.0

    def __len__(self) -> int:
        return len(self._watched)

    def watch(self, protocol: PeerProtocol) -> None:
        """A connection was verified: look at it one interval after its
        peer was last heard from."""
        if self.interval <= 0:
            return
        key = id(protocol)
        self._watched[key] = protocol
        when = protocol.keepalive_check(self.clock.seconds(), self.interval)
        if when is None:
            del self._watched[key]
            return
        self._due.add(key, when)
        self._arm()

    def forget(self, protocol: PeerProtocol) -> None:
        """The connection closed."""
        key = id(protocol)
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
            protocol = self._watched.get(key)
            if protocol is None:
                continue
            when = protocol.keepalive_check(now, self.interval)
            if when is None:
                del self._watched[key]
            else:
                self._due.add(key, when)
        self._arm()
