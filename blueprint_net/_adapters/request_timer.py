"""One timer for every deadline of our requests on one connection.

Layer: adapters (Twisted: one ``IDelayedCall``).

In: :meth:`RequestTimer.due` as each request goes out (its deadline, and
the delay to it), :meth:`RequestTimer.cancel` when the connection is lost.
Out: each request past its deadline failed with :class:`RequestTimeout`, as
the core ``Connection.expire`` names them; the timer then re-armed for the
core's ``next_deadline``.

States: *idle* (no request waits) and *armed* (for the earliest deadline
known when it was armed: a shorter timeout moves it earlier, a longer one
waits for the next firing).
"""

from __future__ import annotations

from typing import Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from blueprint_net._core.connection import Connection
from blueprint_net._core.errors import RequestTimeout


class RequestTimer:
    """One timer; see the module."""

    __slots__ = ("_at", "_call", "_clock", "_connection")

    def __init__(self, clock: IReactorTime, connection: Connection) -> None:
        self._clock = clock
        self._connection = connection
        self._call: Optional[IDelayedCall] = None
        #: When the armed call fires (kept here: asking the call is a
        #: method call per request).
        self._at = 0.0

    @property
    def armed(self) -> bool:
        call = self._call
        return call is not None and call.active()

    def due(self, deadline: float, delay: float) -> None:
        """A request went out that times out at ``deadline``, ``delay``
        seconds from now."""
        call = self._call
        if call is None:
            self._call = self._clock.callLater(delay, self._expire)
            self._at = deadline
        elif deadline < self._at:  # a shorter timeout than those before
            call.reset(delay)
            self._at = deadline

    def cancel(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _expire(self) -> None:
        """Fail every request past its deadline; wake again for the next."""
        clock = self._clock
        self._call = None
        connection = self._connection
        for request_id, waiting in connection.expire(clock.seconds()):
            waiting.errback(RequestTimeout(f"no response to request {request_id}"))
        earliest = connection.next_deadline
        if earliest is not None and not connection.closed:
            self._call = clock.callLater(
                max(0.0, earliest - clock.seconds()), self._expire
            )
            self._at = earliest
