"""The send side of one connection: the queue, flow control and the memory
charged for what the connection holds.

Layer: adapters (Twisted: the transport's ``IPushProducer``).

In: the chunks the core ``Connection`` queued (taken by :meth:`Outbound.flush`),
the transport's ``pauseProducing``/``resumeProducing``, and the size of the
partial inbound frame (:attr:`Outbound.inbound`).  Out: writes to the
transport, a piece at a time while it reads; the charge against the
node-wide :class:`MemoryBudget`; and, through ``changed``, word that the
queue grew or drained (the protocol then decides whether to read the peer).

States: *writing* (the transport takes what we give it, the queue is empty)
and *paused* (the transport's buffer is full: frames wait in the queue,
counted, and :meth:`room` refuses what would pass ``max_send_queue`` or the
budget; what the connection holds for its next flush counts too,
then).  :meth:`close` writes what is queued and lets go of the transport;
:meth:`lost` forgets it.  :meth:`check_invariants` raises unless the counts
agree with the queue (tests call it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable, Protocol, Union

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from blueprint_net._core.errors import SendQueueFull
from blueprint_net._policy.resources import MemoryBudget

#: The most handed to the transport at once.  Twisted's transports pause
#: their producer once their buffer passes 64 KiB, and we write no more
#: until they resume, so a transport never holds more than its buffer and
#: one piece (:data:`TRANSPORT_HELD`, charged while paused); the rest waits
#: in our queue, where it is counted.
PIECE = 64 * 1024
TRANSPORT_HELD = 2 * PIECE
#: A chunk this small rides along with the piece before it (see
#: ``Outbound._write``): the small parts of a frame that ``framing.frame_chunks``
#: keeps around a large payload.
TAIL = 16 * 1024
#: Framing around a request's data, at most: the allowance a sender adds
#: to a frame whose size is not known exactly yet (:meth:`Outbound.check`).
#: A frame whose size is known (a response, a frame encoded once) is
#: counted as it is.
FRAME_OVERHEAD = 300
#: What any connection may hold whatever the node-wide budget says, so that
#: peers that stop reading cannot spend it for those that do: small answers
#: to a peer that reads always go out, and a small frame always comes in.
#: A frame this small always has room when nothing is queued.
ALWAYS_ALLOWED = 16 * 1024

Chunk = Union[bytes, memoryview]


class Queued(Protocol):
    """What the core ``Connection`` queued for the peer."""

    @property
    def unsent(self) -> int:
        """Bytes queued and not taken yet (answers given and requests sent
        during a read, flushed once at its end, and Errors that replaced
        answers that did not fit)."""

    def chunks_to_send(self) -> list[bytes]:
        """Take what is queued."""


def _nothing() -> None:
    """What a lost connection's :class:`Outbound` reports changes to."""


def _bytes(chunk: Chunk) -> bytes:
    return chunk if type(chunk) is bytes else bytes(chunk)


@implementer(IPushProducer)
class Outbound:
    """One connection's send queue: the transport's push producer."""

    def __init__(
        self,
        source: Queued,
        memory: MemoryBudget,
        max_send_queue: int,
        changed: Callable[[], None],
    ) -> None:
        #: What the connection has queued for the peer, taken by :meth:`flush`.
        self._source = source
        self.memory = memory
        self.max_send_queue = max_send_queue
        self._changed = changed
        #: Set by the protocol once connected.
        self.transport: Any = None
        self.paused = False
        self._queue: list[Chunk] = []
        #: Bytes in the queue.
        self.queued = 0
        #: Bytes already written of the frame at the queue's head, still held.
        self._pinned = 0
        #: Bytes of a partial inbound frame (set by the protocol).
        self.inbound = 0
        #: What the budget is charged with for this connection now.
        self.charged = 0

    def flush(self) -> None:
        """Hand what the connection has queued to the transport, a piece at
        a time until it pauses us; queue the rest."""
        chunks = self._source.chunks_to_send()
        if not chunks:
            return
        if self.paused or self._queue:
            self._enqueue(chunks)
        elif len(chunks) == 1 and len(chunks[0]) <= PIECE:
            # The usual case, and it holds nothing more here (a transport
            # that pauses us now charges itself: see pauseProducing).
            self.transport.write(chunks[0])
            return
        else:
            self._write(chunks)
        self.account()

    def room(self, size: int) -> bool:
        """Whether a frame of ``size`` bytes may be sent: it fits in the send
        queue (or the queue is empty) and in the budget."""
        queued = self._waiting()
        if queued and queued + size > self.max_send_queue:
            return False
        return queued + size <= ALWAYS_ALLOWED or self.memory.fits(size)

    def _waiting(self) -> int:
        """Bytes waiting for the peer to read: the queue, and what the
        connection holds for the next flush (a read's answers and requests)
        when that flush would queue it too (the transport paused, or frames
        queued before it).  Else the flush hands it to the transport, a piece
        at a time, as writing it at once would have: it waits no more."""
        if self.paused or self._queue:
            return self.queued + self._source.unsent
        return 0

    def reserve(self, size: int) -> bool:
        """Whether a response frame of ``size`` bytes may be queued (the
        connection then holds it, counted as unsent, until the next flush);
        if not, the budget counts a refused response."""
        busy = self.paused or self._queue  # else a small frame has room
        if (busy or size > ALWAYS_ALLOWED) and not self.room(size):
            self.memory.refuse("response")
            return False
        return True

    def check(self, size: int) -> None:
        """:class:`SendQueueFull` unless a frame of ``size`` bytes (with
        :data:`FRAME_OVERHEAD` for one not framed yet) has room; a small one
        while the transport reads and nothing is queued always has (not
        even asked)."""
        busy = self.paused or self._queue  # else a small frame has room
        if (busy or size > ALWAYS_ALLOWED) and not self.room(size):
            if self.memory.fits(size):
                raise SendQueueFull(
                    f"{self.queued} bytes wait for a peer that is not reading"
                    f" (limit {self.max_send_queue})"
                )
            self.memory.refuse("send")
            raise SendQueueFull(
                f"the node's memory budget ({self.memory.limit} bytes) is spent"
            )

    def account(self) -> None:
        """Charge the budget with what this connection holds now: a partial
        inbound frame, the send queue, a paused transport's buffer."""
        held = self.inbound + self.queued + self._pinned
        if self.paused:
            held += TRANSPORT_HELD
        delta = held - self.charged
        if delta:
            self.memory.charge(delta)
            self.charged = held

    def hold_inbound(self, size: int) -> bool:
        """Charge a partial inbound frame of ``size`` bytes; whether it may
        stay (no, once the node's budget is spent and it is past what any
        connection may hold)."""
        self.inbound = size
        self.account()
        memory = self.memory
        return memory.used <= memory.limit or size <= ALWAYS_ALLOWED

    def close(self) -> None:
        """Write everything queued, then let go of the transport (which
        closes next).

        The producer is unregistered first: a transport whose registered
        producer is paused (a peer that stopped reading) resumes it when its
        buffer drains instead of closing, and would never close.
        """
        queued = self._drop()
        if queued:
            self.transport.writeSequence([_bytes(chunk) for chunk in queued])
        self.account()
        self.transport.unregisterProducer()

    def lost(self) -> None:
        """The connection is gone: nothing is held any more, and nothing
        is reported (``changed`` is let go of: it refers back to the
        protocol, and the cycle would leave both for the cyclic garbage
        collector, whose work measurably slowed the handshake rate)."""
        self._drop()
        self.inbound = 0
        self.paused = False  # nor a transport's buffer
        self.account()
        self._changed = _nothing

    def check_invariants(self) -> None:
        """``RuntimeError`` unless the counts agree with the queue: the
        queued bytes are the chunks' sizes, the pinned bytes are the head's
        written part, only a paused transport leaves anything queued, and
        the charge is what is held.  Raised, not asserted: it holds under
        ``python -O`` too."""
        queue = self._queue
        head = queue[0] if queue else b""
        pinned = len(head.obj) - len(head) if type(head) is memoryview else 0  # type: ignore[arg-type]
        held = self.inbound + self.queued + self._pinned
        held += TRANSPORT_HELD if self.paused else 0
        sizes = sum(map(len, queue))
        if self.queued != sizes:
            raise RuntimeError(f"{self.queued} bytes counted queued, {sizes} queued")
        if self._pinned != pinned:
            raise RuntimeError(f"{self._pinned} bytes counted pinned, {pinned} pinned")
        if queue and not self.paused:
            raise RuntimeError("frames queued while the transport reads")
        if self.charged != held:
            raise RuntimeError(f"{self.charged} bytes charged, {held} held")

    def _drop(self) -> list[Chunk]:
        queued, self._queue = self._queue, []
        self.queued = self._pinned = 0
        return queued

    # -- IPushProducer: the transport tells us when the peer stops reading ---

    def pauseProducing(self) -> None:
        self.paused = True
        self.account()

    def resumeProducing(self) -> None:
        self.paused = False
        queued = self._drop()
        if queued:
            self._write(queued)
            self._changed()
        self.account()

    def stopProducing(self) -> None:
        """The transport is closing; connectionLost follows."""

    # -- internals ----------------------------------------------------------

    def _enqueue(self, chunks: Sequence[Chunk]) -> None:
        queue = self._queue
        queue.extend(chunks)
        self.queued += sum(map(len, chunks))
        head = queue[0] if queue else b""
        # A frame half written still holds its whole buffer: count that too.
        self._pinned = len(head.obj) - len(head) if type(head) is memoryview else 0  # type: ignore[arg-type]
        self._changed()

    def _write(self, chunks: Sequence[Chunk]) -> None:
        """Hand ``chunks`` to the transport a piece at a time until it
        pauses us; queue the rest.

        A piece is written once it holds :data:`PIECE` bytes and the next
        chunk is not a small one riding along: a frame's small tail (the
        byte after a 64 KiB payload) goes with its payload, rather than
        waiting in the queue for the transport to drain, a reactor turn
        later.  A piece stays under ``2 * PIECE`` either way.
        """
        transport = self.transport
        batch: list[bytes] = []
        size = 0
        for index, chunk in enumerate(chunks):
            length = len(chunk)
            if size >= PIECE and (length >= TAIL or size >= PIECE + TAIL):
                transport.writeSequence(batch)
                batch, size = [], 0
                if self.paused:
                    self._enqueue(chunks[index:])
                    return
            if length <= PIECE:
                batch.append(_bytes(chunk))
                size += length
                continue
            if batch:
                transport.writeSequence(batch)
                batch, size = [], 0
            view = chunk if type(chunk) is memoryview else memoryview(chunk)
            for start in range(0, length, PIECE):
                if self.paused:
                    self._enqueue([view[start:], *chunks[index + 1 :]])
                    return
                transport.write(bytes(view[start : start + PIECE]))
        if batch:
            if len(batch) == 1:
                transport.write(batch[0])
            else:
                transport.writeSequence(batch)
