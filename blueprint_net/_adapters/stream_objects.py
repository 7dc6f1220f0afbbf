"""The application's durable streams: the :class:`Stream` it holds, the
:class:`StreamReset` that ends one, the life behind each, and what the
stream host keeps per peer.

Layer: adapters (Twisted).  ``streams`` (:class:`StreamHost`) makes and
drives these; this module knows it only as a :class:`StreamOwner`.

**In:** the application's ``send``, ``put``, ``wait_for_room`` and ``reset``
on a :class:`Stream`; from the host, each message for the stream
(:meth:`StreamLife.deliver`), the messages held while it was unclaimed
(:meth:`StreamLife.hand_over`), room (:meth:`StreamLife.wake`) and its end
(:meth:`StreamLife.end`).

**Out:** payloads handed to the peer's machine (``PeerStreams.send``) and
charged to the node's memory budget; calls of ``on_message`` and
``on_reset``; the Deferreds of ``put`` and ``wait_for_room`` fired or
failed with the :class:`StreamReset`.

**States:** a life is live (``error`` is None) or ended (``error`` set,
for good); while live it may be handing over held messages (``backlog``
not None) and may have puts and waiters queued (``pending``, ``waiters``).
A :class:`StreamPeer` records whether the peer's window is full
(``blocked``) or a stream limit or reset in progress refused a send
(``stalled``).
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Optional, Protocol, Union

import attrs
from twisted.internet import defer
from twisted.logger import Logger

from blueprint_net._adapters.protocol import PeerProtocol
from blueprint_net._core.errors import BlueprintError, SendQueueFull
from blueprint_net._core.identity import PeerId
from blueprint_net._core.stream_states import Refusal, StreamRefused
from blueprint_net._core.stream_wire import ResetCode
from blueprint_net._core.streams import PeerStreams
from blueprint_net._policy.resources import MemoryBudget

#: What a stream calls with each message, and with the error that ended it.
MessageCallback = Callable[[bytes], Any]
ResetCallback = Callable[["StreamReset"], Any]


class StreamReset(BlueprintError):
    """A stream ended: messages sent on it and not acknowledged may be
    lost, and nothing more arrives on it (``docs/protocol.md`` 10.5).

    ``code`` is a :class:`ResetCode` (``RESTARTED``: one end restarted and
    lost the stream's state; ``CANCELLED``: reset by an application, or
    this node stopped; ``STREAM_LIMIT``; ``UNCLAIMED``: the receiving
    application did not open the stream in time) or an application's code
    (1000-65535); ``by_peer``: the peer ended it (else this node did).
    """

    def __init__(
        self, peer_id: PeerId, stream: bytes, code: int, *, by_peer: bool
    ) -> None:
        self.peer_id, self.stream, self.by_peer = peer_id, stream, by_peer
        self.code: Union[ResetCode, int] = (
            ResetCode(code) if code in _RESET_CODES else code
        )
        name = getattr(self.code, "name", str(code))
        who = "the peer" if by_peer else "this node"
        super().__init__(f"stream {stream!r} with {peer_id} reset by {who}: {name}")


_RESET_CODES = frozenset(ResetCode)


def reset_label(code: int) -> str:
    """The ``streams.reset`` label of a reset code: its name, or
    ``application`` for the applications' codes (a bounded label)."""
    return ResetCode(code).name if code in _RESET_CODES else "application"


class StreamOwner(Protocol):
    """What a stream's life asks of the host that made it (``StreamHost``)."""

    log: Logger
    memory: MemoryBudget

    def soon(self, state: StreamPeer) -> None: ...

    def charge(self, state: StreamPeer) -> None: ...

    def reset_stream(
        self, life: StreamLife, code: int, report: bool = False
    ) -> None: ...


class Stream:
    """One durable stream with one peer, as the application holds it.

    ``send`` is the fast path (no Deferred); ``put`` the convenience for
    coroutines.  A stream is ended by :meth:`reset`, by the peer, by a
    restart, or by the node stopping: ``closed`` is then true and every
    later ``send`` or ``put`` raises the :class:`StreamReset` that ended it.
    """

    __slots__ = ("_life", "name", "peer_id")

    def __init__(self, life: StreamLife) -> None:
        self._life = life
        self.peer_id, self.name = life.peer.peer_id, life.name

    def __repr__(self) -> str:
        return f"<Stream {self.name!r} with {self.peer_id}>"

    @property
    def closed(self) -> bool:
        return self._life.error is not None

    def send(self, payload: bytes) -> bool:
        """Queue ``payload`` as the stream's next message: ``True`` (it is
        kept until the peer acknowledges it, and sent again after a
        reconnection), or ``False`` when there is no room now (the peer's
        window is full, the stream's previous life is still being reset,
        or ``put`` calls are waiting): nothing was queued; see
        :meth:`wait_for_room`.

        Raises the :class:`StreamReset` that ended the stream; ``ValueError``
        for a message larger than the window; ``SendQueueFull`` when the
        node's memory budget is spent.
        """
        life = self._life
        if life.error is not None:
            raise life.error
        if life.pending:
            return False  # after the puts before it, in order
        return life.send(payload)

    def wait_for_room(self) -> defer.Deferred[None]:
        """Fires once a send refused for lack of room may be tried again
        (at once if none was refused); fails with the :class:`StreamReset`
        if the stream ends first."""
        life = self._life
        if life.error is not None:
            return defer.fail(life.error)
        peer = life.peer
        if not (peer.blocked or peer.stalled or life.pending):
            return defer.succeed(None)
        waiting: defer.Deferred[None] = defer.Deferred()
        life.waiters.append(waiting)
        peer.waiting[life] = None
        return waiting

    def acknowledged(self) -> defer.Deferred[None]:
        """Fires once the peer has acknowledged every message ``send``
        accepted on the stream so far (at once if it has); fails with the
        :class:`StreamReset` if the stream ends first.  What a graceful
        close waits for.  It does not wait for ``put`` calls still waiting
        for room (await them first); and an acknowledgement means the
        peer's node has the message: if the peer's application has not
        opened the stream yet, a reset still drops what its node holds
        for it."""
        life = self._life
        if life.error is not None:
            return defer.fail(life.error)
        if not life.peer.machine.unacknowledged(life.name):
            return defer.succeed(None)
        waiting: defer.Deferred[None] = defer.Deferred()
        life.drains.append(waiting)
        life.peer.draining[life] = None
        return waiting

    def put(self, payload: bytes) -> defer.Deferred[None]:
        """Send ``payload``, waiting for room as needed: fires once it is
        queued (puts keep their order).  One Deferred per call: for the
        fast path, use :meth:`send`."""
        life = self._life
        if not life.pending:
            try:
                if self.send(payload):
                    return defer.succeed(None)
            except Exception:
                return defer.fail()
        waiting: defer.Deferred[None] = defer.Deferred()
        life.pending.append((payload, waiting))
        life.peer.waiting[life] = None
        return waiting

    def reset(self, code: int = ResetCode.CANCELLED) -> None:
        """End the stream in both directions; the peer is told ``code``
        (``CANCELLED`` or the application's 1000-65535).  Whatever is not
        yet acknowledged is dropped.  Waiters fail with the
        :class:`StreamReset`; ``on_reset`` is not called (the caller
        knows).  Nothing happens on a closed stream."""
        if not (code == ResetCode.CANCELLED or 1000 <= code < 2**16):
            raise ValueError(f"a reset code is CANCELLED or 1000-65535, not {code}")
        life = self._life
        life.host.reset_stream(life, int(code))


@attrs.define(eq=False)
class StreamLife:
    """One life of a stream (from ``open`` to its reset): what its
    :class:`Stream` shows the application, and what the host acts on."""

    host: StreamOwner
    peer: StreamPeer
    name: bytes
    on_message: MessageCallback
    on_reset: Optional[ResetCallback]
    error: Optional[StreamReset] = None
    #: Messages held while unclaimed, being handed over (then None).
    backlog: Optional[deque[bytes]] = None
    #: ``put`` calls waiting for room, in order, and ``wait_for_room``'s.
    pending: deque[tuple[bytes, defer.Deferred[None]]] = attrs.Factory(deque)
    waiters: list[defer.Deferred[None]] = attrs.Factory(list)
    #: ``acknowledged`` calls waiting for the peer's acknowledgements.
    drains: list[defer.Deferred[None]] = attrs.Factory(list)

    def send(self, payload: bytes) -> bool:
        peer, host = self.peer, self.host
        size = len(payload)
        memory = host.memory
        if not memory.fits(size):
            memory.refuse("stream")
            raise SendQueueFull("the node's memory budget is spent")
        try:
            sent = peer.machine.send(self.name, payload)
        except StreamRefused as refused:
            if refused.reason is Refusal.TOO_LARGE:
                raise ValueError(str(refused)) from None
            peer.stalled = True  # resetting, or as many streams as allowed
            return False
        if not sent:
            peer.blocked = True
            return False
        memory.charge(size)
        peer.charged += size
        if peer.link is not None:
            host.soon(peer)
        return True

    def deliver(self, payload: bytes) -> None:
        backlog = self.backlog
        if backlog is not None:  # after the held ones
            backlog.append(payload)
            self.peer.handed += len(payload)
            return
        self.call(payload)

    def call(self, payload: bytes) -> None:
        try:
            self.on_message(payload)
        except Exception:
            self.host.log.failure(
                "on_message of stream {stream!r} raised", stream=self.name
            )

    def hand_over(self) -> None:
        """Deliver the messages held while unclaimed, in order, then go
        live (a reset on the way drops the rest)."""
        backlog, peer = self.backlog, self.peer
        assert backlog is not None
        while backlog and self.error is None:
            payload = backlog.popleft()
            peer.handed -= len(payload)
            self.call(payload)
        peer.handed -= sum(map(len, backlog))
        backlog.clear()
        self.backlog = None
        self.host.charge(peer)

    def wake(self) -> None:
        """Room may have come: drain the puts in order, then the waiters."""
        pending = self.pending
        while pending:
            payload, waiting = pending.popleft()
            try:
                sent = self.send(payload)
            except Exception:
                waiting.errback()
                continue
            if not sent:
                pending.appendleft((payload, waiting))
                return
            waiting.callback(None)
        self.peer.waiting.pop(self, None)
        waiters, self.waiters = self.waiters, []
        for waiting in waiters:
            waiting.callback(None)

    def drained(self) -> None:
        """Acknowledgements came: fire ``acknowledged`` once all are in."""
        if self.drains and not self.peer.machine.unacknowledged(self.name):
            self.peer.draining.pop(self, None)
            drains, self.drains = self.drains, []
            for waiting in drains:
                waiting.callback(None)

    def end(self, error: StreamReset, report: bool) -> None:
        self.error = error
        self.peer.waiting.pop(self, None)
        self.peer.draining.pop(self, None)
        waiting = [d for _, d in self.pending] + self.waiters + self.drains
        self.pending.clear()
        self.waiters = []
        self.drains = []
        for deferred in waiting:
            deferred.errback(error)
        if report and self.on_reset is not None:
            try:
                self.on_reset(error)
            except Exception:
                self.host.log.failure(
                    "on_reset of stream {stream!r} raised", stream=self.name
                )


@attrs.define(eq=False)
class UnclaimedMessages:
    """Messages of a stream the application has not opened yet."""

    since: float
    messages: deque[bytes] = attrs.Factory(deque)
    size: int = 0


@attrs.frozen
class PeerNumbers:
    """What is kept of a forgotten peer: enough that neither side mistakes
    the next connection's streams for another incarnation's (10.2, 10.5)."""

    incarnation: int
    peer_incarnation: Optional[int]
    peer_window: int
    peer_max_streams: int
    peer_resets: int
    resets_sent: int


@attrs.define(eq=False)
class StreamPeer:
    """One peer's machine and what the adapter keeps beside it."""

    peer_id: PeerId
    machine: PeerStreams
    #: The connection the machine is ``connected()`` to, if any.
    link: Optional[PeerProtocol] = None
    streams: dict[bytes, StreamLife] = attrs.Factory(dict)
    unclaimed: dict[bytes, UnclaimedMessages] = attrs.Factory(dict)
    #: Payload bytes held unclaimed, and those being handed over.
    unclaimed_bytes: int = 0
    handed: int = 0
    #: Bytes charged to the memory budget now.
    charged: int = 0
    #: A send was refused for the window (a Room event follows), or for a
    #: stream being reset or the stream limit (re-checked on each frame
    #: that may end a stream).
    blocked: bool = False
    stalled: bool = False
    #: Streams with puts or waiters (a dict: ordered, no duplicates).
    waiting: dict[StreamLife, None] = attrs.Factory(dict)
    #: Streams whose ``acknowledged`` callers wait.
    draining: dict[StreamLife, None] = attrs.Factory(dict)
    #: When the last data frame came: its acknowledgement is due by then
    #: plus ``ack_delay``.
    last_data: float = 0.0

    def numbers(self) -> PeerNumbers:
        m = self.machine
        return PeerNumbers(
            m.incarnation,
            m.peer_incarnation,
            m.peer_window,
            m.peer_max_streams,
            m.peer_resets,
            m.resets_sent,
        )
