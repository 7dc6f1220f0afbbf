"""The handshake's deadline for one connection: short until the peer says
anything, then the rest of the handshake timeout.

Layer: adapters (Twisted: one ``IDelayedCall``).

In: :meth:`HandshakeTimer.start` when the transport connects,
:meth:`HandshakeTimer.spoke` once the peer's first frame (or its TLS) has
arrived, :meth:`HandshakeTimer.cancel` once the handshake is over (verified,
failed or closed).  Out: ``expired()``, called once if it is not over in
time.

States: *idle*; *silent* (the first-frame deadline,
``first_frame_timeout``: a socket that says nothing is dropped early);
*spoken* (the peer has until ``handshake_timeout`` after the connection to
prove itself); *over* (cancelled, or expired).  Cancelling lets go of
``expired``, which refers back to the protocol, so the pair is freed by
reference counting rather than left for the cyclic garbage collector.
"""

from __future__ import annotations

from typing import Callable, Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from blueprint_net._policy.settings import Settings


def _over() -> None:
    """What an over timer would call: nothing (it is never armed again)."""


class HandshakeTimer:
    """One timer; see the module."""

    __slots__ = ("_call", "_clock", "_expired", "_settings", "_started", "silent")

    def __init__(
        self, clock: IReactorTime, settings: Settings, expired: Callable[[], None]
    ) -> None:
        self._clock = clock
        self._settings = settings
        self._expired = expired
        self._call: Optional[IDelayedCall] = None
        self._started = 0.0
        #: The peer has said nothing yet (the short deadline applies).
        self.silent = False

    def start(self) -> None:
        settings = self._settings
        self._started = self._clock.seconds()
        self.silent = True
        self._call = self._clock.callLater(
            min(settings.first_frame_timeout, settings.handshake_timeout),
            self._expire,
        )

    def spoke(self) -> None:
        """The peer's first frame arrived: it has the rest of the handshake
        timeout (counted from the connection) to prove itself."""
        self.silent = False
        call = self._call
        if call is not None and call.active():
            left = self._started + self._settings.handshake_timeout
            call.reset(max(0.0, left - self._clock.seconds()))

    def cancel(self) -> None:
        self.silent = False
        self._expired = _over
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()

    def _expire(self) -> None:
        self._call = None
        self.silent = False
        self._expired()
