"""Durable streams with one peer, sans-IO: exactly once, in order, across
connection loss, for as long as both processes live.

Layer: core (sans-IO; imports nothing from Twisted).

One :class:`PeerStreams` per peer id, kept across that peer's connections;
``docs/protocol.md`` section 10 is the specification this implements.  Its
vocabulary (settings, states, inputs, events, refusals) is
:mod:`~blueprint_net._core.stream_states`; this module is the machine and
its table, kept together (each stream's record,
:class:`~blueprint_net._core.stream_states.StreamEntry`, is there too).

**In:** ``send(stream, payload)`` and ``reset(stream, code)`` from the
application; ``connected()`` / ``disconnected()`` as a verified connection to
the peer comes and goes; ``receive(body)`` for each frame body of a stream
type (``stream_wire.TYPES``) on that connection; ``tick(now)`` (seconds, any
monotonic origin) for the batched acknowledgements.

**Out:** :meth:`PeerStreams.data_to_send` -- whole frames for the current
connection, in order; :meth:`PeerStreams.events` -- :class:`Delivered`
(each message exactly once, in order per stream), :class:`Reset` (a stream
ended: by the peer, by a restart, or by a limit), and :class:`Room` (a send
refused for lack of room may be retried).  ``send`` answers ``False`` when
the unacknowledged bytes would pass the window (nothing is dropped and
nothing grows); :attr:`PeerStreams.buffered_bytes` is what to charge to the
node's memory budget.  ``receive`` raises :class:`WireError` (``1xx``) or
:class:`ProtocolError` (``200``, ``213``-``215``): the peer broke the
protocol, and the caller closes the connection with that code and charges it.

**States**, all in one table, :data:`TABLE`: (state, input) -> (next state,
action).  The link to the peer is ``DOWN``, ``AWAITING_HELLO`` (ours is sent,
the peer's is awaited) or ``UP``; each stream is ``ABSENT`` (no entry),
``OPEN`` or ``RESET_SENT`` (we ended it and wait for the peer's
``ResetFrame`` -- its answer, its own reset, or its hello's count of our
resets taken -- the only thing that tells us nothing more of the stream is
in flight).  Nothing outside those states records where the machine is.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from blueprint_net._core.errors import ErrorCode, ProtocolError
from blueprint_net._core.stream_states import (
    DEFAULTS,
    Delivered,
    Input,
    LinkState,
    Refusal,
    Reset,
    Room,
    State,
    StreamEntry,
    StreamEvent,
    StreamRefused,
    StreamSettings,
    StreamState,
)
from blueprint_net._core.stream_wire import (
    MAX_STREAM_ID,
    T_STREAM_DATA,
    AckFrame,
    DataFrame,
    HelloFrame,
    ResetCode,
    ResetFrame,
    data_frame,
    decode,
    fast_data,
    frame,
)

_ROOM = Room()


#: An action: (machine, the entry or None, the stream id, the input's value).
Action = Callable[["PeerStreams", Any, bytes, Any], Any]


class PeerStreams:
    """Every durable stream between this node and one peer."""

    def __init__(self, incarnation: int, settings: StreamSettings = DEFAULTS) -> None:
        if not 0 <= incarnation < 2**64:
            raise ValueError("an incarnation is a u64")
        self.incarnation = incarnation
        self.settings = settings
        self.link = LinkState.DOWN
        #: The peer's, from its last hello (None until the first).
        self.peer_incarnation: Optional[int] = None
        self.peer_window = settings.window
        self.peer_max_streams = settings.max_streams
        #: The highest number of the peer's resets taken (sent in our hello).
        self.peer_resets = 0
        #: The number of our last reset (the next is one more).
        self.resets_sent = 0
        #: Unacknowledged payload bytes held, over every stream.
        self.buffered_bytes = 0
        self._streams: dict[bytes, StreamEntry] = {}
        #: Entries (open or being reset) of streams we opened, and the peer.
        self._own = 0
        self._peer = 0
        self._blocked = False
        self._out: list[bytes] = []
        self._events: list[StreamEvent] = []
        self._ack_due: dict[bytes, StreamEntry] = {}
        self._since_ack = 0
        self._since_ack_bytes = 0
        self._now = 0.0
        self._acked_at = 0.0

    # -- inputs -------------------------------------------------------------

    def connected(self) -> None:
        """A verified connection to the peer is up (the previous one, if
        any, was reported with :meth:`disconnected`): our hello goes out."""
        self._link_input(Input.CONNECTED, None)

    def disconnected(self) -> None:
        """The connection is gone, with whatever was in flight on it."""
        self._link_input(Input.DISCONNECTED, None)

    def receive(self, body: bytes) -> None:
        """One frame body of a stream type from the connected peer."""
        if body and body[0] == T_STREAM_DATA and self.link is LinkState.UP:
            data = fast_data(body)
            if data is not None:
                stream = data.stream
                entry = self._streams.get(stream)
                if entry is not None and entry.state is _OPEN:
                    _DATA_WHEN_OPEN(self, entry, stream, data)  # the fast path
                else:
                    self._step(entry, stream, Input.DATA, data)
                return
        message = decode(body)
        if type(message) is HelloFrame:
            self._link_input(Input.HELLO, message)
            return
        if self.link is not LinkState.UP:
            if self.link is LinkState.DOWN:
                raise AssertionError("a frame while no connection is up")
            raise ProtocolError(
                ErrorCode.UNEXPECTED_MESSAGE,
                f"{type(message).__name__} before the peer's HelloFrame",
            )
        assert not isinstance(message, HelloFrame)
        kind = _INPUTS[type(message)]
        if type(message) is ResetFrame and message.answer:
            kind = Input.ANSWER
        stream = message.stream
        self._step(self._streams.get(stream), stream, kind, message)

    def send(self, stream: bytes, payload: bytes) -> bool:
        """Queue ``payload`` as the next message of ``stream`` (sent now if
        the link is up, else on the next): ``True``.  ``False`` when it
        does not fit the window now; a :class:`Room` event follows.

        Raises :class:`StreamRefused` for a message larger than the window,
        a new stream past the limit, or a stream being reset; ``ValueError``
        for a stream id not 1 to 255 bytes long.
        """
        size = len(payload)
        window = self.settings.window
        if size > window:
            raise StreamRefused(
                Refusal.TOO_LARGE,
                f"a message of {size} bytes exceeds the window of {window}",
            )
        if self.buffered_bytes + size > window:
            self._blocked = True
            return False
        entry = self._streams.get(stream)
        if entry is not None and entry.state is _OPEN:
            _SEND_WHEN_OPEN(self, entry, stream, payload)  # the fast path
        else:
            self._step(entry, stream, Input.SEND, payload)
        return True

    def reset(self, stream: bytes, code: int = ResetCode.CANCELLED) -> None:
        """End ``stream`` in both directions; the peer is told ``code``
        (``1000``-``65535`` are the application's).  What is not yet
        acknowledged is dropped.  Nothing is reported back: the caller
        knows."""
        if not 0 <= code < 2**16:
            raise ValueError("a reset code is a u16")
        self._step(self._streams.get(stream), stream, Input.LOCAL_RESET, int(code))

    def tick(self, now: float) -> None:
        """The time is ``now``: acknowledge what is due for ``ack_delay``."""
        self._now = now
        if self._ack_due and now - self._acked_at >= self.settings.ack_delay:
            self._flush_acks()

    # -- outputs ------------------------------------------------------------

    def data_to_send(self) -> list[bytes]:
        """Whole frames for the current connection, in order (then none)."""
        out, self._out = self._out, []
        return out

    def events(self) -> list[StreamEvent]:
        """What happened since the last call, in order (then nothing)."""
        events, self._events = self._events, []
        return events

    def state(self, stream: bytes) -> StreamState:
        entry = self._streams.get(stream)
        return StreamState.ABSENT if entry is None else entry.state

    def unacknowledged(self, stream: bytes) -> int:
        """Our messages on ``stream`` the peer has not acknowledged yet (0
        for a stream that is not open): what a graceful close waits for."""
        entry = self._streams.get(stream)
        if entry is None or entry.state is not StreamState.OPEN:
            return 0
        return len(entry.unacked)

    @property
    def stream_count(self) -> int:
        """Entries held (open and resetting), each at most 255 bytes of id
        and a few counters beside the payloads counted in buffered_bytes."""
        return len(self._streams)

    # -- the machine --------------------------------------------------------

    def _link_input(self, kind: Input, value: Any) -> None:
        step = TABLE.get((self.link, kind))
        if step is None:
            if kind is Input.HELLO and self.link is LinkState.UP:
                raise ProtocolError(ErrorCode.UNEXPECTED_MESSAGE, "a second HelloFrame")
            raise AssertionError(f"{kind} is not an input in {self.link}")
        target, action = step
        self.link = target  # type: ignore[assignment]
        action(self, None, b"", value)

    def _step(
        self, entry: Optional[StreamEntry], stream: bytes, kind: Input, value: Any
    ) -> Any:
        """Look the stream's state and ``kind`` up in :data:`TABLE`, run the
        action (it raises before changing anything when the input is
        refused), then move the entry to the next state."""
        state = StreamState.ABSENT if entry is None else entry.state
        target, action = TABLE[state, kind]
        result = action(self, entry, stream, value)
        if target is not state:
            self._move(stream, target)  # type: ignore[arg-type]
        return result

    def _move(self, stream: bytes, target: StreamState) -> None:
        """The one place an entry changes state, and the counts with it: an
        entry holds its place from its first message until it is gone (a
        stream being reset too: nothing is forgotten early, 10.6)."""
        entry = self._streams[stream]
        source = entry.state
        if source is StreamState.OPEN:
            self._ack_due.pop(stream, None)
        elif source is StreamState.ABSENT:
            self._count(entry, 1)
        entry.state = target
        if target is StreamState.ABSENT:
            del self._streams[stream]
            self._count(entry, -1)

    def _count(self, entry: StreamEntry, change: int) -> None:
        if entry.by_peer:
            self._peer += change
        else:
            self._own += change

    # -- link actions -------------------------------------------------------

    def _send_hello(self, _: object, __: bytes, ___: None) -> None:
        settings = self.settings
        hello = HelloFrame(
            self.incarnation, settings.window, settings.max_streams, self.peer_resets
        )
        self._out.append(frame(hello))

    def _resume(self, _: object, __: bytes, hello: HelloFrame) -> None:
        """Both hellos are in: reset everything if the peer restarted, end
        the streams whose reset the peer's hello says it took, then send our
        other resets (oldest first), our acknowledgements and every
        unacknowledged message, in that order."""
        previous = self.peer_incarnation
        if previous is not None and hello.incarnation != previous:
            self.peer_resets = 0  # the new incarnation's count from 1
            for entry in list(self._streams.values()):
                self._step(entry, entry.id, Input.RESTART, None)
        for entry in list(self._streams.values()):
            if 0 < entry.reset_number <= hello.resets:
                self._step(entry, entry.id, Input.RESET_TAKEN, None)
        self.peer_incarnation = hello.incarnation
        self.peer_window = hello.window
        self.peer_max_streams = hello.max_streams
        if previous is None and self._own > hello.max_streams:
            # Only open streams travel: one being reset is no stream to it.
            opened = [
                e
                for e in self._streams.values()
                if not e.by_peer and e.state is StreamState.OPEN
            ]
            for entry in opened[hello.max_streams :]:
                self._step(entry, entry.id, Input.OVER_LIMIT, None)
        out = self._out
        entries = list(self._streams.values())
        pending = [e for e in entries if e.state is StreamState.RESET_SENT]
        for entry in sorted(pending, key=lambda e: e.reset_number):
            out.append(
                frame(ResetFrame(entry.id, entry.reset_code, entry.reset_number))
            )
        for entry in entries:
            if entry.state is StreamState.OPEN and entry.rx_last:
                out.append(frame(AckFrame(entry.id, entry.rx_last)))
        for entry in entries:
            if entry.state is StreamState.OPEN:
                seq = entry.tx_acked
                for payload in entry.unacked:
                    seq += 1
                    out.append(data_frame(entry.prefix, seq, payload))

    def _lost(self, _: object, __: bytes, ___: None) -> None:
        """What was queued for the connection died with it; every stream
        may start over from its last delivered message on the next."""
        self._out.clear()
        self._ack_due.clear()
        self._since_ack = self._since_ack_bytes = 0
        for entry in self._streams.values():
            entry.rx_conn = 0

    # -- stream actions (entry is None exactly when the state is ABSENT) ----

    def _open_and_send(self, _: None, stream: bytes, payload: bytes) -> None:
        limit = min(self.settings.max_streams, self.peer_max_streams)
        if self._own >= limit:
            raise StreamRefused(
                Refusal.TOO_MANY_STREAMS,
                f"{limit} streams are open or being reset already",
            )
        if not 1 <= len(stream) <= MAX_STREAM_ID:
            raise ValueError(f"a stream id is 1 to {MAX_STREAM_ID} bytes")
        entry = self._streams[stream] = StreamEntry(stream, by_peer=False)
        self._send(entry, stream, payload)

    def _send(self, entry: StreamEntry, _: bytes, payload: bytes) -> None:
        seq = entry.tx_next
        entry.tx_next = seq + 1
        entry.unacked.append(payload)
        self.buffered_bytes += len(payload)
        if self.link is LinkState.UP:
            self._out.append(data_frame(entry.prefix, seq, payload))

    def _refuse_resetting(self, _: StreamEntry, stream: bytes, __: bytes) -> None:
        raise StreamRefused(Refusal.RESETTING, f"stream {stream!r} is being reset")

    def _open_and_receive(self, _: None, stream: bytes, data: DataFrame) -> None:
        if data.seq != 1:
            raise ProtocolError(
                ErrorCode.STREAM_SEQUENCE,
                f"message {data.seq} of stream {stream!r}, which it never opened",
            )
        if self._peer >= self.settings.max_streams:
            raise ProtocolError(
                ErrorCode.STREAM_LIMIT,
                f"a stream past the limit of {self.settings.max_streams}",
            )
        entry = self._streams[stream] = StreamEntry(stream, by_peer=True)
        self._receive(entry, stream, data)

    def _receive(self, entry: StreamEntry, stream: bytes, data: DataFrame) -> None:
        seq = data.seq
        previous = entry.rx_conn
        if previous and seq != previous + 1:
            raise ProtocolError(
                ErrorCode.STREAM_SEQUENCE,
                f"message {seq} of stream {stream!r} after {previous}"
                " on the same connection",
            )
        last = entry.rx_last
        if seq == last + 1:
            entry.rx_last = entry.rx_conn = seq
            events = self._events
            row = events[-1] if events else None
            if type(row) is Delivered and row.stream == stream:
                row.payloads.append(data.payload)
            else:
                events.append(Delivered(stream, [data.payload]))
        elif seq <= last:  # a retransmission: dropped, acknowledged again
            entry.rx_conn = seq
        else:
            raise ProtocolError(
                ErrorCode.STREAM_SEQUENCE,
                f"message {seq} of stream {stream!r} after {last}: a gap",
            )
        self._ack_due[stream] = entry
        self._since_ack += 1
        self._since_ack_bytes += len(data.payload)
        if (
            self._since_ack >= self.settings.ack_every
            or 2 * self._since_ack_bytes >= self.peer_window
        ):
            self._flush_acks()

    def _flush_acks(self) -> None:
        out = self._out
        for entry in self._ack_due.values():
            out.append(frame(AckFrame(entry.id, entry.rx_last)))
        self._ack_due.clear()
        self._since_ack = self._since_ack_bytes = 0
        self._acked_at = self._now

    def _refuse_ack(self, _: None, stream: bytes, ack: AckFrame) -> None:
        raise ProtocolError(
            ErrorCode.STREAM_ACK,
            f"acknowledgement {ack.seq} of stream {stream!r}, never sent",
        )

    def _ack(self, entry: StreamEntry, stream: bytes, ack: AckFrame) -> None:
        seq = ack.seq
        if seq >= entry.tx_next:
            raise ProtocolError(
                ErrorCode.STREAM_ACK,
                f"acknowledgement {seq} of stream {stream!r}:"
                f" {entry.tx_next - 1} were sent",
            )
        done = seq - entry.tx_acked
        if done <= 0:
            return  # older news
        entry.tx_acked = seq
        unacked = entry.unacked
        freed = 0
        for _ in range(done):
            freed += len(unacked.popleft())
        self._free(freed)

    def _free(self, size: int) -> None:
        self.buffered_bytes -= size
        if self._blocked and size:
            self._blocked = False
            self._events.append(_ROOM)

    def _drop(self, entry: StreamEntry) -> None:
        """Forget what the stream holds unacknowledged."""
        self._free(sum(map(len, entry.unacked)))
        entry.unacked.clear()

    def _take(self, _: object, __: bytes, reset: ResetFrame) -> None:
        """The peer's reset is taken: our next hello says so, and the peer
        never sends it again (10.5)."""
        self.peer_resets = max(self.peer_resets, reset.number)

    def _answer(self, stream: bytes, reset: ResetFrame) -> None:
        self._take(None, stream, reset)
        answer = ResetFrame(stream, reset.code, reset.number, answer=True)
        self._out.append(frame(answer))

    def _reset_by_peer(
        self, entry: StreamEntry, stream: bytes, reset: ResetFrame
    ) -> None:
        self._drop(entry)
        self._events.append(Reset(stream, reset.code, remote=True))
        self._answer(stream, reset)

    def _answer_unknown(self, _: None, stream: bytes, reset: ResetFrame) -> None:
        """Answered (the peer waits for it); reported only when the peer
        says a restart ended it: it is then our previous incarnation's."""
        if reset.code == ResetCode.RESTARTED:
            self._events.append(Reset(stream, reset.code, remote=True))
        self._answer(stream, reset)

    def _number(self, entry: StreamEntry, code: int) -> None:
        """Our next reset: the entry keeps its number until it is taken."""
        self.resets_sent += 1
        entry.reset_number = self.resets_sent
        entry.reset_code = code

    def _reset_locally(self, entry: StreamEntry, stream: bytes, code: int) -> None:
        self._drop(entry)
        self._number(entry, code)
        if self.link is LinkState.UP:
            reset = ResetFrame(stream, code, entry.reset_number)
            self._out.append(frame(reset))

    def _reset_restarted(self, entry: StreamEntry, stream: bytes, _: None) -> None:
        self._drop(entry)
        self._number(entry, ResetCode.RESTARTED)
        if entry.by_peer:  # the new incarnation never opened it: ours to end
            entry.by_peer = False
            self._count(entry, 1)
            self._peer -= 1
        self._events.append(Reset(stream, ResetCode.RESTARTED, remote=False))

    def _drop_over_limit(self, entry: StreamEntry, stream: bytes, _: None) -> None:
        self._drop(entry)
        self._events.append(Reset(stream, ResetCode.STREAM_LIMIT, remote=False))

    def _ignore(self, _: object, __: bytes, ___: object) -> None:
        return None


_INPUTS: dict[type, Input] = {
    DataFrame: Input.DATA,
    AckFrame: Input.ACK,
    ResetFrame: Input.RESET,
}

_ABSENT, _OPEN, _RESET_SENT = StreamState

#: The machine: (state, input) -> (next state, action).  Link states take
#: link inputs, stream states stream inputs; the action runs before the move
#: and raises, changing nothing, when the input is refused.  A peer's
#: message the link's row does not list is ``UNEXPECTED_MESSAGE``; every
#: (stream state, stream input) pair is listed.
TABLE: dict[tuple[State, Input], tuple[State, Action]] = {
    # The link.
    (LinkState.DOWN, Input.CONNECTED): (
        LinkState.AWAITING_HELLO,
        PeerStreams._send_hello,
    ),
    (LinkState.AWAITING_HELLO, Input.HELLO): (LinkState.UP, PeerStreams._resume),
    (LinkState.AWAITING_HELLO, Input.DISCONNECTED): (LinkState.DOWN, PeerStreams._lost),
    (LinkState.UP, Input.DISCONNECTED): (LinkState.DOWN, PeerStreams._lost),
    # The application sends.
    (_ABSENT, Input.SEND): (_OPEN, PeerStreams._open_and_send),
    (_OPEN, Input.SEND): (_OPEN, PeerStreams._send),
    (_RESET_SENT, Input.SEND): (_RESET_SENT, PeerStreams._refuse_resetting),
    # The peer's data: the first of a stream is seq 1, then one more each.
    (_ABSENT, Input.DATA): (_OPEN, PeerStreams._open_and_receive),
    (_OPEN, Input.DATA): (_OPEN, PeerStreams._receive),
    (_RESET_SENT, Input.DATA): (_RESET_SENT, PeerStreams._ignore),
    # The peer's acknowledgements.
    (_ABSENT, Input.ACK): (_ABSENT, PeerStreams._refuse_ack),
    (_OPEN, Input.ACK): (_OPEN, PeerStreams._ack),
    (_RESET_SENT, Input.ACK): (_RESET_SENT, PeerStreams._ignore),
    # The peer's resets: answered unless they cross ours; taken either way.
    (_ABSENT, Input.RESET): (_ABSENT, PeerStreams._answer_unknown),
    (_OPEN, Input.RESET): (_ABSENT, PeerStreams._reset_by_peer),
    (_RESET_SENT, Input.RESET): (_ABSENT, PeerStreams._take),
    # The peer's answers: never answered, and they end only our reset.
    (_ABSENT, Input.ANSWER): (_ABSENT, PeerStreams._ignore),
    (_OPEN, Input.ANSWER): (_OPEN, PeerStreams._ignore),
    (_RESET_SENT, Input.ANSWER): (_ABSENT, PeerStreams._ignore),
    (_RESET_SENT, Input.RESET_TAKEN): (_ABSENT, PeerStreams._ignore),
    # The application resets.
    (_ABSENT, Input.LOCAL_RESET): (_ABSENT, PeerStreams._ignore),
    (_OPEN, Input.LOCAL_RESET): (_RESET_SENT, PeerStreams._reset_locally),
    (_RESET_SENT, Input.LOCAL_RESET): (_RESET_SENT, PeerStreams._ignore),
    # The peer restarted: ours end, its previous incarnation's are gone.
    (_OPEN, Input.RESTART): (_RESET_SENT, PeerStreams._reset_restarted),
    (_RESET_SENT, Input.RESTART): (_ABSENT, PeerStreams._ignore),
    # The peer's first hello allows fewer streams than we queued (unsent).
    (_OPEN, Input.OVER_LIMIT): (_ABSENT, PeerStreams._drop_over_limit),
}


def _staying_open(kind: Input) -> Action:
    """The table's action for ``kind`` on an open stream, which must leave
    it open: ``send`` and ``receive`` take it without :meth:`PeerStreams._step`
    (one message each, the hot path), and still do what the table says."""
    target, action = TABLE[_OPEN, kind]
    if target is not _OPEN:
        raise AssertionError(f"{kind} moves an open stream: no fast path")
    return action


_SEND_WHEN_OPEN = _staying_open(Input.SEND)
_DATA_WHEN_OPEN = _staying_open(Input.DATA)
