"""Keeping one configured peer connected: dial it when it is not connected,
back off with jitter when that fails, and say so once per change.

Layer: adapters (Twisted timers, the node's dial).

A ``ClientService`` would redial a connection it made itself, but knows
nothing of the same peer arriving by its own dial (so it dialed a connected
peer again and again), and logs every attempt with an endpoint's ``repr``.
A keeper follows the node's verified and lost events instead: a peer that is
connected, in either direction, is never dialed.  Its life is one transition
table (:data:`TRANSITIONS`); the log names the peer id and address on a
change of state (connected, lost, unreachable), never per attempt.
"""

from __future__ import annotations

import enum
import random
from typing import Any, Callable, Optional, Union

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IStreamClientEndpoint
from twisted.logger import Logger

from blueprint_net._adapters.facade import INode
from blueprint_net._adapters.peers import Peer
from blueprint_net._core.errors import ErrorCode
from blueprint_net._core.identity import PeerId
from blueprint_net._policy.backoff import retry_delay

#: The first retry's delay and the longest delay, in seconds.
INITIAL_DELAY, MAX_DELAY = 0.5, 30.0
#: Failed attempts in a row before the keeper says the peer is unreachable
#: (by then the delay has grown to its maximum: 0.5 s doubled 6 times).
UNREACHABLE_AFTER = 7


class State(enum.Enum):
    STOPPED = "stopped"
    DIALING = "dialing"
    WAITING = "waiting"  # for the next attempt
    CONNECTED = "connected"


class Input(enum.Enum):
    START = "start"
    VERIFIED = "verified"  # the peer is connected (either direction)
    LOST = "lost"  # ... and is not any more
    FAILED = "failed"  # our dial failed
    DIALED = "dialed"  # our dial succeeded
    TIMER = "timer"  # the back-off delay is over
    STOP = "stop"


#: (state, event) -> (next state, action).  A pair not listed changes
#: nothing: a dial that fails while the peer came in by itself, a lost
#: event for a connection the keeper never saw.
TRANSITIONS: dict[tuple[State, Input], tuple[State, str]] = {
    (State.STOPPED, Input.START): (State.DIALING, "dial"),
    (State.DIALING, Input.DIALED): (State.CONNECTED, "connected"),
    (State.DIALING, Input.VERIFIED): (State.CONNECTED, "connected"),
    (State.DIALING, Input.FAILED): (State.WAITING, "back_off"),
    (State.WAITING, Input.TIMER): (State.DIALING, "dial"),
    (State.WAITING, Input.VERIFIED): (State.CONNECTED, "connected"),
    (State.CONNECTED, Input.LOST): (State.WAITING, "lost"),
    (State.DIALING, Input.STOP): (State.STOPPED, "stop"),
    (State.WAITING, Input.STOP): (State.STOPPED, "stop"),
    (State.CONNECTED, Input.STOP): (State.STOPPED, "stop"),
}


class PeerKeeper(Service):
    """Keeps ``peer_id`` (at ``endpoint``, described as ``address`` in the
    log) connected to ``node`` while the service runs."""

    _log = Logger()

    def __init__(
        self,
        node: INode,
        peer_id: PeerId,
        endpoint: Union[str, IStreamClientEndpoint],
        *,
        address: Optional[str] = None,
        spread: Callable[[], float] = random.random,
    ) -> None:
        self.node, self.peer_id, self.endpoint = node, peer_id, endpoint
        self.address = address if address is not None else str(endpoint)
        self.state = State.STOPPED
        self.failures = 0  # failed attempts since the peer was last connected
        self.last_error: Optional[str] = None
        self.next_attempt: Optional[float] = None  # when WAITING
        self._spread = spread
        self._timer: Optional[IDelayedCall] = None
        self._dialing: Optional[defer.Deferred[Peer]] = None
        node.on_peer_verified(self._peer_event(Input.VERIFIED))
        node.on_peer_lost(self._peer_event(Input.LOST))

    def _peer_event(self, event: Input) -> Callable[[Peer], None]:
        def seen(peer: Peer) -> None:
            if peer.peer_id == self.peer_id:
                self.handle(event)

        return seen

    # -- IService ---------------------------------------------------------

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self.handle(Input.START)

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        self.handle(Input.STOP)
        return defer.succeed(None)

    # -- the state machine --------------------------------------------------

    def handle(self, event: Input, error: Optional[str] = None) -> None:
        """Apply ``event``; the table says what follows."""
        step = TRANSITIONS.get((self.state, event))
        if step is None:
            return
        self.state, action = step
        if action == "dial":
            self._dial()
        elif action == "connected":
            self._connected()
        elif action == "back_off":
            self._back_off(error)
        elif action == "lost":
            self._lost()
        elif action == "stop":
            self._stop()

    def _dial(self) -> None:
        self._timer = self.next_attempt = None
        # A peer already connected is returned at once, without a dial.
        dialing = self.node.connect(self.endpoint, self.peer_id)
        self._dialing = dialing
        dialing.addCallbacks(self._dialed, self._failed)

    def _dialed(self, peer: Peer) -> None:
        self._dialing = None
        self.handle(Input.DIALED)

    def _failed(self, failure: Any) -> None:
        self._dialing = None
        if failure.check(defer.CancelledError):
            return
        error = failure.value
        reason = getattr(error, "reason", None)
        # Another id at the address: a mistyped --peer, not the network's
        # weather; said at once, once per change (not after 7 attempts), also
        # when the attempts before it failed otherwise (the node at the
        # address was not listening yet).
        wrong_peer = getattr(reason, "code", None) is ErrorCode.UNEXPECTED_PEER
        if wrong_peer and str(error) != self.last_error:
            self._log.warn(
                "kept peer {peer_id} at {address}: wrong peer at that"
                " address ({error}); check --peer; still trying",
                peer_id=str(self.peer_id),
                address=self.address,
                error=str(error),
            )
        self.handle(Input.FAILED, str(error))

    def _connected(self) -> None:
        self._cancel_timer()
        peer = self.node.peer(self.peer_id)
        self._log.info(
            "kept peer {peer_id} at {address}: connected ({direction})",
            peer_id=str(self.peer_id),
            address=self.address,
            direction=peer.direction if peer is not None else "unknown",
        )
        self.failures, self.last_error = 0, None

    def _back_off(self, error: Optional[str]) -> None:
        self.failures += 1
        self.last_error = error
        if self.failures == UNREACHABLE_AFTER:
            self._log.warn(
                "kept peer {peer_id} at {address}: unreachable after {failures}"
                " attempts ({error}); still trying, every {maximum:g} s at most",
                peer_id=str(self.peer_id),
                address=self.address,
                failures=self.failures,
                error=error,
                maximum=MAX_DELAY,
            )
        self._schedule(
            retry_delay(self.failures, INITIAL_DELAY, MAX_DELAY, self._spread())
        )

    def _lost(self) -> None:
        self._log.info(
            "kept peer {peer_id} at {address}: connection lost; redialing",
            peer_id=str(self.peer_id),
            address=self.address,
        )
        self.failures = 0
        self._schedule(retry_delay(1, INITIAL_DELAY, MAX_DELAY, self._spread()))

    def _schedule(self, delay: float) -> None:
        clock = self.node.clock
        self.next_attempt = clock.seconds() + delay
        self._timer = clock.callLater(delay, self.handle, Input.TIMER)

    def _stop(self) -> None:
        self._cancel_timer()
        dialing, self._dialing = self._dialing, None
        if dialing is not None:
            dialing.cancel()

    def _cancel_timer(self) -> None:
        timer, self._timer = self._timer, None
        self.next_attempt = None
        if timer is not None and timer.active():
            timer.cancel()

    def describe(self) -> dict[str, Any]:
        """For the status page: the peer, its state, failures, next attempt."""
        return {
            "peer_id": str(self.peer_id),
            "address": self.address,
            "state": self.state.value,
            "failures": self.failures,
            "last_error": self.last_error,
            "next_attempt": self.next_attempt,
        }
