"""Durable streams' vocabulary: their settings, states, inputs, what the
machine yields and why a send is refused.

Layer: core (sans-IO; imports nothing from Twisted).

Nothing here moves: :mod:`~blueprint_net._core.streams` is the machine
(:class:`~blueprint_net._core.streams.PeerStreams`) whose one table
(state, input) -> (next state, action) uses these.

- Settings: :class:`StreamSettings` (the machine's limits and the node's
  for unclaimed streams), :data:`DEFAULTS`.
- States: :class:`LinkState` (the link to the peer) and :class:`StreamState`
  (each stream), together :data:`State`; :class:`StreamEntry`, each
  stream's record (its state and counters).
- In: :class:`Input`, the kinds of input the table is keyed by.
- Out: :data:`StreamEvent` (:class:`Delivered`, :class:`Reset`,
  :class:`Room`) for the application; a send refused raises
  :class:`StreamRefused` with a :class:`Refusal`; a peer that broke the
  rules is refused with one of :data:`VIOLATIONS`.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Any, Union

import attrs

from blueprint_net._core.errors import BlueprintError, ErrorCode
from blueprint_net._core.stream_wire import T_STREAM_DATA, stream_prefix

#: The codes :meth:`PeerStreams.receive` raises for a peer that broke the
#: stream rules (beside ``UNEXPECTED_MESSAGE`` and the decoding codes): all
#: misbehaviour.
VIOLATIONS = frozenset(
    {ErrorCode.STREAM_SEQUENCE, ErrorCode.STREAM_ACK, ErrorCode.STREAM_LIMIT}
)


@attrs.frozen
class StreamSettings:
    """Limits of the streams with one peer (each peer gets its own)."""

    #: Most unacknowledged payload bytes kept for the peer, over all its
    #: streams; also the largest message.  Sent to the peer in our hello.
    window: int = attrs.field(default=1024 * 1024)
    #: Most streams the peer may hold open at us (sent in our hello), and
    #: most we hold ourselves; a stream being reset (``RESET_SENT``) keeps
    #: its place until its reset is answered.
    max_streams: int = attrs.field(default=1024)
    #: An acknowledgement is sent at the latest after this many messages...
    ack_every: int = attrs.field(default=32)
    #: ...or on the first ``tick`` this many seconds after the last one.
    ack_delay: float = attrs.field(default=0.05)
    # The node's (``_adapters/streams.py``), beside the machine's above:
    #: Streams the peer opened that this node's application has not (yet):
    #: their messages are held, at most this many streams per peer...
    max_unclaimed_streams: int = attrs.field(default=16)
    #: ...and this many payload bytes per peer over all of them...
    max_unclaimed_bytes: int = attrs.field(default=1024 * 1024)
    #: ...for at most this many seconds; past any of these, the stream is
    #: reset with ``UNCLAIMED`` (the sender is told: never a silent loss).
    unclaimed_timeout: float = attrs.field(default=60.0)
    #: Peers with no stream and no link are forgotten but for a few numbers
    #: (their incarnation, the resets counted both ways), kept for this many
    #: of them, least recently used dropped first (see the adapter).
    remembered_peers: int = attrs.field(default=4096)

    @window.validator
    def _check_window(self, _: object, value: int) -> None:
        if not 1 <= value < 2**32:
            raise ValueError("window is 1 to 2**32 - 1 bytes")

    @max_streams.validator
    def _check_streams(self, _: object, value: int) -> None:
        if not 1 <= value < 2**16:
            raise ValueError("max_streams is 1 to 65535")

    @ack_every.validator
    def _check_every(self, _: object, value: int) -> None:
        if value < 1:
            raise ValueError("ack_every is at least 1")

    @ack_delay.validator
    @unclaimed_timeout.validator
    def _check_positive(self, attribute: Any, value: float) -> None:
        if not value > 0:
            raise ValueError(f"{attribute.name} is more than 0 seconds")

    @max_unclaimed_streams.validator
    @max_unclaimed_bytes.validator
    @remembered_peers.validator
    def _check_count(self, attribute: Any, value: int) -> None:
        if value < 0:
            raise ValueError(f"{attribute.name} is at least 0")


#: Every default: what a node made without ``streams`` uses.
DEFAULTS = StreamSettings()


class LinkState(enum.Enum):
    """The link to the peer."""

    #: Members are singletons: hashed by identity, not by a Python-level
    #: ``Enum.__hash__`` (two per table lookup, on every message).
    __hash__ = object.__hash__

    DOWN = enum.auto()
    #: A connection is up and our hello sent; the peer's is awaited.
    AWAITING_HELLO = enum.auto()
    UP = enum.auto()


class StreamState(enum.Enum):
    """One stream (by id) with the peer."""

    #: Members are singletons: hashed by identity, not by a Python-level
    #: ``Enum.__hash__`` (two per table lookup, on every message).
    __hash__ = object.__hash__

    #: No entry: never used, or ended on both sides.
    ABSENT = enum.auto()
    OPEN = enum.auto()
    #: We ended it and sent (or will send on the next link) a ResetFrame;
    #: the peer's ResetFrame (its own or its answer), or a hello saying it
    #: took ours, ends the entry.
    RESET_SENT = enum.auto()


class Input(enum.Enum):
    __hash__ = object.__hash__  # see LinkState

    CONNECTED = enum.auto()
    DISCONNECTED = enum.auto()
    #: The peer's HelloFrame.
    HELLO = enum.auto()
    #: The application's send (room already checked).
    SEND = enum.auto()
    #: The application's reset.
    LOCAL_RESET = enum.auto()
    #: The peer's DataFrame, AckFrame, ResetFrame (not an answer).
    DATA = enum.auto()
    ACK = enum.auto()
    RESET = enum.auto()
    #: The peer's ResetFrame answering ours.
    ANSWER = enum.auto()
    #: The peer's hello counts our reset as taken (its answer was lost).
    RESET_TAKEN = enum.auto()
    #: The peer's hello carries a new incarnation: it restarted.
    RESTART = enum.auto()
    #: The peer's first hello allows fewer streams than we queued for it.
    OVER_LIMIT = enum.auto()


State = Union[LinkState, StreamState]


class Refusal(enum.Enum):
    """Why :meth:`PeerStreams.send` refused a message (it was not queued)."""

    #: Larger than the window.
    TOO_LARGE = enum.auto()
    #: A new stream, and as many are open as either side allows.
    TOO_MANY_STREAMS = enum.auto()
    #: The stream is being reset: send again once its Reset is reported.
    RESETTING = enum.auto()


class StreamRefused(BlueprintError):
    """A send this node will not queue; ``reason`` says why."""

    def __init__(self, reason: Refusal, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@attrs.define
class Delivered:
    """The next messages of ``stream``, in order, for the application: those
    of one row of frames of the stream come as one event (no object per
    message on the receiving path)."""

    stream: bytes
    payloads: list[bytes]


@attrs.frozen
class Reset:
    """``stream`` ended (both directions): messages sent on it and not
    acknowledged may be lost, and nothing more arrives on it.  ``remote``:
    the peer reset it (else a restart or a limit did, here)."""

    stream: bytes
    code: int
    remote: bool


@attrs.frozen
class Room:
    """Bytes were acknowledged after a send was refused: send again."""


StreamEvent = Union[Delivered, Reset, Room]


class StreamEntry:
    """One stream's counters; no per-message object but the payloads kept."""

    __slots__ = (
        "by_peer",
        "id",
        "prefix",
        "reset_code",
        "reset_number",
        "rx_conn",
        "rx_last",
        "state",
        "tx_acked",
        "tx_next",
        "unacked",
    )

    def __init__(self, stream: bytes, by_peer: bool) -> None:
        self.id = stream
        self.state = StreamState.ABSENT
        #: Opened by the peer's first message (it counts against our limit).
        self.by_peer = by_peer
        #: Our data frames' type byte and stream id, made once.
        self.prefix = stream_prefix(T_STREAM_DATA, stream)
        self.tx_next = 1  # the seq of our next message
        self.tx_acked = 0  # every seq up to it was delivered
        self.unacked: deque[bytes] = deque()  # seqs tx_acked+1 .. tx_next-1
        self.rx_last = 0  # the last seq delivered to our application
        self.rx_conn = 0  # the last seq received on this connection
        self.reset_code = 0
        self.reset_number = 0  # ours, while RESET_SENT
