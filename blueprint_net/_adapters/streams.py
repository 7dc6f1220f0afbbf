"""Durable streams on a node: the sans-IO machines (``_core/streams.py``)
driven by the node's verified connections, clock and memory budget, and the
application's :class:`Stream` objects.

Layer: adapters (Twisted).  ``docs/protocol.md`` section 10 is the protocol.

**In:** stream frame bodies of the connection kept for each peer id
(:meth:`StreamHost.received`, from the connection host after ``Verified``);
that connection's coming and going (:meth:`StreamHost.link_changed`,
:meth:`StreamHost.connection_closed`); the application's
:meth:`StreamHost.open` and each :class:`Stream`'s ``send``, ``put`` and
``reset``; the node's clock.

**Out:** the machines' frames written through the kept connection's
outbound queue; each message delivered to its stream's ``on_message``;
:class:`StreamReset` to ``on_reset`` and to whoever waits on the stream;
the bytes held charged to the node's :class:`MemoryBudget`; the peer's
violations (``213``-``215``, ``UNEXPECTED_MESSAGE`` and decoding errors)
closing its connection with that code, which the host charges to the peer
(``connection.MISBEHAVIOUR``); counters (``streams.*``).

**What it decides.**  A peer's machine is made lazily: when the application
opens a stream to it, or when the peer's hello comes (a node whose
application never uses streams sends no stream frame to anyone, so a peer
that does not speak them is never bothered).  It is kept across that peer's
connections, and forgotten once it holds no stream, no message and no link:
only its numbers stay (incarnations, window, stream limit, reset counts: a
few integers), for ``remembered_peers`` peers, least recently used dropped
first.  A peer whose numbers were dropped is afterwards shown a new
incarnation (:attr:`StreamHost.incarnation` changes whenever one is
dropped): to it we restarted, which is the truth about its streams (10.2),
and no reset number is ever reused with it.

Messages of a stream the application has not opened (*unclaimed*) are held,
at most ``max_unclaimed_streams`` streams and ``max_unclaimed_bytes`` per
peer, within the memory budget, for ``unclaimed_timeout`` seconds; past any
of these the stream is reset with ``UNCLAIMED``, so the sender learns it:
nothing is lost silently.  :meth:`StreamHost.open` claims them, handed over
in order on the next reactor turn, before anything newer.

One timer (:meth:`StreamHost._tick`) serves the acknowledgements due for
``ack_delay`` and the unclaimed streams' deadlines; it runs only while one
of them is pending.
"""

from __future__ import annotations

import os
from collections import Counter, OrderedDict, deque
from typing import Any, Callable, Optional, Union

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from blueprint_net._adapters.peers import PeerTable
from blueprint_net._adapters.protocol import PeerProtocol
from blueprint_net._core.errors import (
    BlueprintError,
    ProtocolError,
    SendQueueFull,
    WireError,
)
from blueprint_net._core.identity import PeerId
from blueprint_net._core.stream_wire import MAX_STREAM_ID, T_STREAM_DATA, ResetCode
from blueprint_net._core.streams import (
    Delivered,
    PeerStreams,
    Refusal,
    Reset,
    StreamRefused,
    StreamSettings,
)
from blueprint_net._core.telemetry import (
    STREAM_PEERS_FORGOTTEN,
    STREAM_RESETS,
    STREAM_UNCLAIMED_RESETS,
    STREAM_VIOLATIONS,
)
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


class Stream:
    """One durable stream with one peer, as the application holds it.

    ``send`` is the fast path (no Deferred); ``put`` the convenience for
    coroutines.  A stream is ended by :meth:`reset`, by the peer, by a
    restart, or by the node stopping: ``closed`` is then true and every
    later ``send`` or ``put`` raises the :class:`StreamReset` that ended it.
    """

    __slots__ = ("_life", "name", "peer_id")

    def __init__(self, life: _Life) -> None:
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
        if life.error is None:
            life.host.reset_stream(life, int(code))


@attrs.define(eq=False)
class _Life:
    """One life of a stream (from ``open`` to its reset): what its
    :class:`Stream` shows the application, and what the host acts on."""

    host: StreamHost
    peer: _Peer
    name: bytes
    on_message: MessageCallback
    on_reset: Optional[ResetCallback]
    error: Optional[StreamReset] = None
    #: Messages held while unclaimed, being handed over (then None).
    backlog: Optional[deque[bytes]] = None
    #: ``put`` calls waiting for room, in order, and ``wait_for_room``'s.
    pending: deque[tuple[bytes, defer.Deferred[None]]] = attrs.Factory(deque)
    waiters: list[defer.Deferred[None]] = attrs.Factory(list)

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

    def end(self, error: StreamReset, report: bool) -> None:
        self.error = error
        self.peer.waiting.pop(self, None)
        waiting = [d for _, d in self.pending] + self.waiters
        self.pending.clear()
        self.waiters = []
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
class _Unclaimed:
    """Messages of a stream the application has not opened yet."""

    since: float
    messages: deque[bytes] = attrs.Factory(deque)
    size: int = 0


@attrs.frozen
class _Numbers:
    """What is kept of a forgotten peer: enough that neither side mistakes
    the next connection's streams for another incarnation's (10.2, 10.5)."""

    incarnation: int
    peer_incarnation: Optional[int]
    peer_window: int
    peer_max_streams: int
    peer_resets: int
    resets_sent: int


@attrs.define(eq=False)
class _Peer:
    """One peer's machine and what the adapter keeps beside it."""

    peer_id: PeerId
    machine: PeerStreams
    #: The connection the machine is ``connected()`` to, if any.
    link: Optional[PeerProtocol] = None
    streams: dict[bytes, _Life] = attrs.Factory(dict)
    unclaimed: dict[bytes, _Unclaimed] = attrs.Factory(dict)
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
    waiting: dict[_Life, None] = attrs.Factory(dict)
    #: When the last data frame came: its acknowledgement is due by then
    #: plus ``ack_delay``.
    last_data: float = 0.0

    def numbers(self) -> _Numbers:
        m = self.machine
        return _Numbers(
            m.incarnation,
            m.peer_incarnation,
            m.peer_window,
            m.peer_max_streams,
            m.peer_resets,
            m.resets_sent,
        )


def _random_incarnation() -> int:
    return int.from_bytes(os.urandom(8), "big")


class StreamHost:
    """Every durable stream of one node; see the module."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        settings: StreamSettings,
        peers: PeerTable,
        memory: MemoryBudget,
        counters: Counter[str],
        *,
        incarnation: Optional[int] = None,
    ) -> None:
        self.clock, self.settings = clock, settings
        self.memory, self.counters = memory, counters
        self._table = peers
        #: Shown to every peer whose machine is made afresh (10.2): random
        #: at start, and again whenever a peer's numbers are dropped.
        self.incarnation = _random_incarnation() if incarnation is None else incarnation
        self.peers: dict[PeerId, _Peer] = {}
        #: Forgotten peers' numbers, least recently used first.
        self.remembered: OrderedDict[PeerId, _Numbers] = OrderedDict()
        #: Peers with acknowledgements possibly due, and with unclaimed
        #: streams: what the one timer looks at.
        self._acking: dict[_Peer, None] = {}
        self._holding: dict[_Peer, None] = {}
        self._timer: Optional[IDelayedCall] = None
        #: Peers whose sends are written at the end of this reactor turn,
        #: together (one write for a burst of small messages).
        self._sending: dict[_Peer, None] = {}
        self._flush: Optional[IDelayedCall] = None
        self.stopped = False

    # -- the application's side ---------------------------------------------

    def open(
        self,
        peer_id: PeerId,
        name: bytes,
        on_message: MessageCallback,
        on_reset: Optional[ResetCallback] = None,
    ) -> Stream:
        """The stream ``name`` with ``peer_id``; see ``Node.stream``."""
        if not isinstance(peer_id, PeerId):
            raise TypeError(
                f"peer_id is a PeerId, not {type(peer_id).__name__}"
                " (PeerId.from_string reads the text form)"
            )
        if not isinstance(name, bytes):
            raise TypeError(f"a stream name is bytes, not {type(name).__name__}")
        if not 1 <= len(name) <= MAX_STREAM_ID:
            raise ValueError(f"a stream name is 1 to {MAX_STREAM_ID} bytes")
        if self.stopped:
            raise RuntimeError("the node is stopping: no new stream")
        state = self._peer(peer_id)
        if name in state.streams:
            raise ValueError(f"stream {name!r} with {peer_id} is open already")
        life = state.streams[name] = _Life(self, state, name, on_message, on_reset)
        held = state.unclaimed.pop(name, None)
        if held is not None:
            if not state.unclaimed:
                self._holding.pop(state, None)
            state.unclaimed_bytes -= held.size
            state.handed += held.size
            life.backlog = held.messages
            self.clock.callLater(0, life.hand_over)
        if state.link is None:
            kept = self._table.get(peer_id)
            if kept is not None and not kept.connection.closed:
                self._connect(state, kept)
        return Stream(life)

    # -- the connection host's side -----------------------------------------

    def link_changed(self, peer_id: PeerId) -> None:
        """A connection to ``peer_id`` was verified: if the peer table now
        keeps one other than the machine's, the machine moves to it."""
        state = self.peers.get(peer_id)
        kept = self._table.get(peer_id)
        if state is None or kept is None or state.link is kept or self.stopped:
            return
        if state.link is not None:
            state.machine.disconnected()
        self._connect(state, kept)

    def connection_closed(self, protocol: PeerProtocol) -> None:
        """A connection is gone, with whatever was in flight on it."""
        peer_id = protocol.peer_id
        state = None if peer_id is None else self.peers.get(peer_id)
        if state is None or state.link is not protocol:
            return
        state.link = None
        state.machine.disconnected()
        self._acking.pop(state, None)
        self._forget_if_idle(state)

    def received(self, protocol: PeerProtocol, bodies: list[bytes]) -> None:
        """Stream frame bodies from a verified peer, in a row: fed to its
        machine, then what came out acted on once."""
        connection = protocol.connection
        peer_id = protocol.peer_id
        assert peer_id is not None
        state = self.peers.get(peer_id)
        if state is None or state.link is not protocol:
            if connection.closed or self._table.get(peer_id) is not protocol:
                # A duplicate the table did not keep, or frames after a
                # violation of the same read (the link was let go).
                return
            if state is None:
                state = self._peer(peer_id)
            if state.link is not None:
                state.machine.disconnected()
            self._connect(state, protocol)
        machine = state.machine
        receive = machine.receive
        data = other = False
        violation = None
        try:
            for body in bodies:
                receive(body)
                if body[0] == T_STREAM_DATA:
                    data = True
                else:
                    other = True
        except (WireError, ProtocolError) as error:
            violation = error  # what came before it stands (10.3)
        out = machine.data_to_send()
        if out and not connection.closed:  # closed: the peer said goodbye
            connection.send_frame(out[0] if len(out) == 1 else b"".join(out))
        events = machine.events()
        if events:
            self._handle(state, events)
        if violation is not None:
            self.counters[STREAM_VIOLATIONS.key_for(violation.code.name)] += 1
            protocol.close(violation)  # the host charges it (MISBEHAVIOUR)
            self.connection_closed(protocol)  # nothing more is read from it
        elif data:
            state.last_data = self.clock.seconds()
            if state not in self._acking:
                self._acking[state] = None
                self._arm()
        if other and state.stalled:
            state.stalled = False  # a hello or reset may have freed a stream
            self._wake(state)
        if state.charged != machine.buffered_bytes + state.unclaimed_bytes + (
            state.handed
        ):
            self.charge(state)

    def stop(self) -> None:
        """The node stops: every stream is reset (the peers are told, as
        far as the connections still carry it) and reported ``CANCELLED``;
        the timer stops."""
        self.stopped = True
        for state in list(self.peers.values()):
            for life in list(state.streams.values()):
                self.reset_stream(life, ResetCode.CANCELLED, report=True)
            for name in list(state.unclaimed):
                state.machine.reset(name, ResetCode.CANCELLED)
                self._drop_unclaimed(state, name)
            self.write(state)
        self._acking.clear()
        self._holding.clear()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._write_all()
        if self._flush is not None and self._flush.active():
            self._flush.cancel()
        self._flush = None

    def status(self) -> dict[str, int]:
        """Figures for the status page."""
        peers = self.peers.values()
        return {
            "peers": len(self.peers),
            "streams": sum(len(s.streams) for s in peers),
            "unclaimed": sum(len(s.unclaimed) for s in peers),
            "buffered_bytes": sum(s.charged for s in peers),
            "remembered_peers": len(self.remembered),
        }

    # -- the machines -------------------------------------------------------

    def _peer(self, peer_id: PeerId) -> _Peer:
        """The peer's state, made (from its numbers if remembered)."""
        state = self.peers.get(peer_id)
        if state is not None:
            return state
        numbers = self.remembered.pop(peer_id, None)
        incarnation = self.incarnation if numbers is None else numbers.incarnation
        machine = PeerStreams(incarnation, self.settings)
        if numbers is not None:
            machine.peer_incarnation = numbers.peer_incarnation
            machine.peer_window = numbers.peer_window
            machine.peer_max_streams = numbers.peer_max_streams
            machine.peer_resets = numbers.peer_resets
            machine.resets_sent = numbers.resets_sent
        state = self.peers[peer_id] = _Peer(peer_id, machine)
        return state

    def _forget_if_idle(self, state: _Peer) -> None:
        """Forget a peer with no link, no stream and nothing held; keep its
        numbers (see the module).  (A stream held unclaimed is open in the
        machine: ``stream_count`` covers it.)"""
        if state.link is not None or state.streams or state.machine.stream_count:
            return
        peer_id = state.peer_id
        del self.peers[peer_id]
        self._holding.pop(state, None)
        self.charge(state)  # to 0
        if self.settings.remembered_peers == 0:
            self._dropped()
            return
        remembered = self.remembered
        remembered[peer_id] = state.numbers()
        while len(remembered) > self.settings.remembered_peers:
            remembered.popitem(last=False)
            self._dropped()

    def _dropped(self) -> None:
        """A peer's numbers are gone: from now on a peer met afresh is
        shown a new incarnation (it may be that one)."""
        self.counters[STREAM_PEERS_FORGOTTEN.key] += 1
        self.incarnation = _random_incarnation()

    def _connect(self, state: _Peer, protocol: PeerProtocol) -> None:
        state.link = protocol
        state.machine.connected()
        self.write(state)

    def soon(self, state: _Peer) -> None:
        """Write what ``state``'s machine queued at the end of this turn."""
        self._sending[state] = None
        if self._flush is None:
            self._flush = self.clock.callLater(0, self._write_all)

    def _write_all(self) -> None:
        self._flush = None
        sending, self._sending = self._sending, {}
        for state in sending:
            self.write(state)

    def write(self, state: _Peer) -> None:
        """What the machine queued, through its connection's queue (not the
        send queue's bound: the window bounds a peer's stream bytes, and a
        frame left out would be a gap to the peer)."""
        out = state.machine.data_to_send()
        link = state.link
        if not out or link is None or link.connection.closed:
            return  # nothing, or lost with the connection (resent on the next)
        link.connection.send_frame(out[0] if len(out) == 1 else b"".join(out))
        link.outbound.flush()

    def charge(self, state: _Peer) -> None:
        held = state.machine.buffered_bytes + state.unclaimed_bytes + state.handed
        if self.peers.get(state.peer_id) is not state:
            held = 0  # forgotten
        self.memory.charge(held - state.charged)
        state.charged = held

    def _handle(self, state: _Peer, events: list[Any]) -> None:
        streams = state.streams
        for event in events:
            kind = type(event)
            if kind is Delivered:
                life = streams.get(event.stream)
                if life is not None:
                    life.deliver(event.payload)
                else:
                    self._hold(state, event.stream, event.payload)
            elif kind is Reset:
                self._ended(state, event)
            else:  # Room
                state.blocked = False
                self._wake(state)

    def _wake(self, state: _Peer) -> None:
        for life in list(state.waiting):
            life.wake()

    def _ended(self, state: _Peer, event: Reset) -> None:
        self.counters[STREAM_RESETS.key_for(reset_label(event.code))] += 1
        life = state.streams.pop(event.stream, None)
        if life is not None:
            error = StreamReset(
                state.peer_id, event.stream, event.code, by_peer=event.remote
            )
            life.end(error, report=True)
        elif event.stream in state.unclaimed:
            self._drop_unclaimed(state, event.stream)
        if state.stalled:
            state.stalled = False
            self._wake(state)

    def reset_stream(self, life: _Life, code: int, report: bool = False) -> None:
        """End ``life`` here (the application's reset, or the node stops)."""
        state, name = life.peer, life.name
        state.machine.reset(name, code)
        if state.streams.get(name) is life:
            del state.streams[name]
        self.counters[STREAM_RESETS.key_for(reset_label(code))] += 1
        life.end(StreamReset(state.peer_id, name, code, by_peer=False), report)
        self.write(state)
        self.charge(state)
        self._forget_if_idle(state)

    # -- unclaimed streams ----------------------------------------------------

    def _hold(self, state: _Peer, name: bytes, payload: bytes) -> None:
        settings = self.settings
        held = state.unclaimed.get(name)
        size = len(payload)
        reason = None
        if held is None and len(state.unclaimed) >= settings.max_unclaimed_streams:
            reason = "streams"
        elif state.unclaimed_bytes + size > settings.max_unclaimed_bytes:
            reason = "bytes"
        elif not self.memory.fits(size):
            self.memory.refuse("unclaimed")
            reason = "memory"
        if reason is not None:
            self._refuse_unclaimed(state, name, reason)
            return
        if held is None:
            held = state.unclaimed[name] = _Unclaimed(self.clock.seconds())
            if state not in self._holding:
                self._holding[state] = None
                self._arm()
        held.messages.append(payload)
        held.size += size
        state.unclaimed_bytes += size

    def _refuse_unclaimed(self, state: _Peer, name: bytes, reason: str) -> None:
        self.counters[STREAM_UNCLAIMED_RESETS.key_for(reason)] += 1
        self.counters[STREAM_RESETS.key_for(reset_label(ResetCode.UNCLAIMED))] += 1
        self.log.info(
            "stream {stream!r} of {peer_id} reset: unclaimed ({reason})",
            stream=name,
            peer_id=str(state.peer_id),
            reason=reason,
        )
        state.machine.reset(name, ResetCode.UNCLAIMED)
        if name in state.unclaimed:
            self._drop_unclaimed(state, name)
        self.write(state)

    def _drop_unclaimed(self, state: _Peer, name: bytes) -> None:
        held = state.unclaimed.pop(name)
        state.unclaimed_bytes -= held.size
        if not state.unclaimed:
            self._holding.pop(state, None)
        self.charge(state)

    # -- the one timer --------------------------------------------------------

    def _deadline(self) -> Optional[float]:
        due = []
        if self._acking:
            due.append(self.clock.seconds() + self.settings.ack_delay)
        timeout = self.settings.unclaimed_timeout
        for state in self._holding:
            due.append(min(h.since for h in state.unclaimed.values()) + timeout)
        return min(due, default=None)

    def _arm(self) -> None:
        when = self._deadline()
        timer = self._timer
        if timer is not None and timer.active():
            if when is not None and timer.getTime() <= when:
                return
            timer.cancel()
        self._timer = None
        if when is not None and not self.stopped:
            delay = max(0.0, when - self.clock.seconds())
            self._timer = self.clock.callLater(delay, self._tick)

    def _tick(self) -> None:
        """Acknowledge what is due; reset the unclaimed streams that waited
        ``unclaimed_timeout``; sleep until the next of either."""
        self._timer = None
        now = self.clock.seconds()
        delay = self.settings.ack_delay
        for state in list(self._acking):
            state.machine.tick(now)
            self.write(state)
            if now >= state.last_data + delay:
                del self._acking[state]  # every acknowledgement went out
        timeout = self.settings.unclaimed_timeout
        for state in list(self._holding):
            for name, held in list(state.unclaimed.items()):
                if now >= held.since + timeout:
                    self._refuse_unclaimed(state, name, "timeout")
        self._arm()
