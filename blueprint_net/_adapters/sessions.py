"""Party sessions on a node: the sans-IO :class:`PartySession` run over one
durable stream with each other party.

Layer: adapters (Twisted).  ``docs/protocol.md`` section 11 is the protocol.

**In:** the application's ``send``, ``broadcast``, ``gather`` and
``close``; each message of the session's streams and the end of each
(``Node.stream``'s callbacks); the node's clock, for ``gather``'s timeouts.

**Out:** the core's payloads, written to each party's stream in order (held
here while its window is full, sent when room comes: nothing is dropped);
each ``gather`` Deferred fired with the round's messages or failed with its
:class:`SessionError`; a party's :class:`SessionViolation` resets the stream
with it (code :data:`VIOLATION_RESET`), and is logged and counted.

Links are kept by the caller, or by one :class:`PeerKeeper` per address
given: a stream does not dial.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any, Callable, Optional

from twisted.application.service import IService
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from blueprint_net._adapters.stream_objects import Stream, StreamReset
from blueprint_net._core.errors import BlueprintError, SessionError, SessionViolation
from blueprint_net._core.identity import Identity, PeerId
from blueprint_net._core.session_states import (
    Completed,
    Failed,
    Outgoing,
    SessionSettings,
    Violation,
)
from blueprint_net._core.sessions import PartySession

#: The reset code a session gives a party's stream when the party broke a
#: rule (an application code of section 10: sessions are an application of
#: streams, and own their streams' names).
VIOLATION_RESET = 1000

#: ``Node.stream``'s signature.
OpenStream = Callable[..., Stream]


class Session:
    """One party's session on a node (``Node.session``).

    ``index`` is this party's index, ``parties`` the peer ids in index order
    (the bytewise order of their keys).  Each round, send one message to
    each other party (``send``) or one broadcast (``broadcast``), then
    ``gather`` the round.
    """

    _log = Logger()

    def __init__(
        self,
        identity: Identity,
        clock: IReactorTime,
        open_stream: OpenStream,
        session_id: bytes,
        parties: Sequence[PeerId],
        settings: Optional[SessionSettings] = None,
        keepers: Sequence[IService] = (),
        charge: Callable[[PeerId, SessionViolation], None] = lambda _, __: None,
    ) -> None:
        settings = settings or SessionSettings()
        self._core = core = PartySession(identity, session_id, parties, settings)
        self._clock = clock
        self.session_id = core.session_id
        self.parties = core.parties
        self.index = core.index
        #: Violations seen, by the index of the party that broke the rule.
        self.violations: dict[int, int] = {}
        self._keepers = list(keepers)
        #: ``close`` was called: no more sends, gathers or deadlines.
        self._closing = False
        self._charge = charge
        self._gathers: dict[int, defer.Deferred[dict[int, bytes]]] = {}
        self._queues: dict[int, deque[bytes]] = {}
        self._blocked: set[int] = set()
        self._timer: Optional[IDelayedCall] = None
        self._streams: dict[int, Stream] = {}
        for party, peer in enumerate(core.parties):
            if party != core.index:
                self._queues[party] = deque()
                self._streams[party] = open_stream(
                    peer,
                    core.stream_name,
                    self._receiver(peer),
                    self._resetter(peer),
                )

    def __repr__(self) -> str:
        return (
            f"<Session {self.session_id!r} party {self.index} of {len(self.parties)}>"
        )

    # -- the application ----------------------------------------------------

    def send(self, round: int, to: int, payload: bytes) -> None:
        """Send ``payload`` to party ``to`` alone as this party's message of
        ``round``; ``ValueError`` for a second one, or a finished round."""
        self._check_open()
        self._core.send(round, to, payload)
        self._flush()

    def broadcast(self, round: int, payload: bytes, reliable: bool = False) -> None:
        """Send ``payload``, signed, to every other party as this party's
        message of ``round``; ``reliable``: every party broadcasts in the
        round, and it completes only when all saw the same broadcasts."""
        self._check_open()
        self._core.broadcast(round, payload, reliable)
        self._flush()

    def gather(
        self, round: int, timeout: Optional[float] = None
    ) -> defer.Deferred[dict[int, bytes]]:
        """Fires with each other party's payload of ``round``, by index;
        fails with :class:`RoundTimeout` after ``timeout`` seconds (naming
        the missing parties), :class:`Equivocation`, :class:`FalseEcho` or
        :class:`PartyLost`."""
        self._check_open()
        deadline = None if timeout is None else self._clock.seconds() + timeout
        self._core.gather(round, deadline)
        waiting: defer.Deferred[dict[int, bytes]] = defer.Deferred()
        self._gathers[round] = waiting
        self._flush()
        return waiting

    def close(self, linger: float = 10.0) -> defer.Deferred[None]:
        """End the session: cancel every gather still waiting, then, once
        the other parties have acknowledged everything sent to them (at
        most ``linger`` seconds, the links kept up meanwhile), reset every
        stream and stop the keepers.  Fires when that is done.  Resetting at
        once would drop our last messages still in flight, and a party
        that finished first would fail the rounds of those still
        gathering them."""
        self._closing = True
        self._cancel_timer()
        gathers, self._gathers = self._gathers, {}
        for waiting in gathers.values():
            waiting.cancel()
        drains = [self._settled(party) for party in self._streams]
        done: defer.Deferred[Any] = defer.DeferredList(drains, consumeErrors=True)
        done.addTimeout(linger, self._clock, onTimeoutCancel=lambda *_: None)

        def end(_: object) -> None:
            self._cancel_timer()
            for stream in self._streams.values():
                stream.reset()
            for keeper in self._keepers:
                keeper.stopService()  # type: ignore[no-untyped-call]
            self._keepers.clear()

        done.addCallback(end)
        return done

    def _settled(self, party: int) -> defer.Deferred[None]:
        """Fires once what we queued for ``party`` is sent and acknowledged
        (fails if its stream ends first)."""
        stream = self._streams[party]
        if stream.closed or not self._queues[party]:
            return stream.acknowledged()
        # _write's own waiter was registered first: it runs before ours.
        room = stream.wait_for_room()
        room.addCallback(lambda _: self._settled(party))
        return room

    # -- the streams --------------------------------------------------------

    def _receiver(self, peer: PeerId) -> Callable[[bytes], None]:
        def received(payload: bytes) -> None:
            self._core.receive(peer, payload)
            self._flush()

        return received

    def _resetter(self, peer: PeerId) -> Callable[[StreamReset], None]:
        def ended(error: StreamReset) -> None:
            self._core.lost(peer, error)
            self._flush()

        return ended

    def _flush(self) -> None:
        """Carry out what the core decided, then set the timer."""
        core = self._core
        for output in core.outputs():
            if type(output) is Outgoing:
                self._queues[output.to].append(output.data)
                self._write(output.to)
            elif type(output) is Completed:
                self._fire(output.round, output.messages)
            elif type(output) is Failed:
                self._fire(output.round, output.error)
            else:
                assert type(output) is Violation
                self._violated(output)
        self._arm()

    def _fire(self, round: int, result: Any) -> None:
        waiting = self._gathers.pop(round, None)
        if waiting is None:
            return
        if isinstance(result, SessionError):
            waiting.errback(result)
        else:
            waiting.callback(result)

    def _write(self, party: int) -> None:
        """Send what is queued for ``party`` until its window is full."""
        if party in self._blocked:
            return
        queue, stream = self._queues[party], self._streams[party]
        while queue:
            try:
                sent = stream.send(queue[0])
            except BlueprintError as error:
                queue.clear()
                self._lose(party, error)
                return
            if not sent:
                self._blocked.add(party)
                stream.wait_for_room().addCallbacks(
                    self._room, self._no_room, callbackArgs=(party,)
                )
                return
            queue.popleft()

    def _room(self, _: None, party: int) -> None:
        self._blocked.discard(party)
        self._write(party)

    def _no_room(self, failure: Any) -> None:
        failure.trap(StreamReset)  # on_reset tells the core

    def _lose(self, party: int, error: BlueprintError) -> None:
        stream = self._streams[party]
        if not stream.closed:
            stream.reset()
        self._core.lost(self.parties[party], error)
        self._flush()

    def _violated(self, violation: Violation) -> None:
        party = self.parties.index(violation.peer)
        self.violations[party] = self.violations.get(party, 0) + 1
        self._log.warn(
            "session {session!r}: party {party} ({peer}) broke a rule: {error}",
            session=self.session_id,
            party=party,
            peer=str(violation.peer),
            error=str(violation.error),
            rule=type(violation.error).__name__,
        )
        self._charge(violation.peer, violation.error)
        self._queues[party].clear()
        stream = self._streams[party]
        if not stream.closed:
            stream.reset(VIOLATION_RESET)

    def _check_open(self) -> None:
        if self._closing:
            raise ValueError("the session is closed")

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _arm(self) -> None:
        if self._closing:
            return  # no round is gathered any more: nothing to time out
        deadline = self._core.next_deadline()
        timer = self._timer
        if timer is not None and timer.active():
            if deadline is not None and timer.getTime() == deadline:
                return
            timer.cancel()
        self._timer = None
        if deadline is not None:
            delay = max(0.0, deadline - self._clock.seconds())
            self._timer = self._clock.callLater(delay, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._core.tick(self._clock.seconds())
        self._flush()
