"""The send queue of one connection (``_adapters/outbound.py``): flow
control against a transport that pauses, and the memory it charges, on an
in-memory transport."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from twisted.internet.testing import StringTransport

from blueprint_net._adapters.outbound import (
    ALWAYS_ALLOWED,
    PIECE,
    TAIL,
    TRANSPORT_HELD,
    Outbound,
)
from blueprint_net._core import framing, wire
from blueprint_net._core.errors import SendQueueFull
from blueprint_net._policy.resources import MemoryBudget


class PausingTransport(StringTransport):
    """Pauses its producer once ``limit`` bytes are unread, as Twisted's TCP
    transport does at its buffer size; ``read()`` empties it."""

    def __init__(self, limit: int = PIECE) -> None:
        super().__init__()
        self.limit = limit
        self.writes = 0

    def write(self, data: bytes) -> None:
        super().write(data)
        self.writes += 1
        self._check()

    def writeSequence(self, seq: Any) -> None:
        super().writeSequence(seq)
        self.writes += 1
        self._check()

    def _check(self) -> None:
        if len(self.value()) >= self.limit and self.producerState == "producing":
            self.producerState = "paused"
            self.producer.pauseProducing()  # type: ignore[union-attr]

    def read(self) -> bytes:
        data: bytes = self.value()
        self.clear()
        if self.producerState == "paused":
            self.producerState = "producing"
            self.producer.resumeProducing()  # type: ignore[union-attr]
        return data


class Sender:
    """An Outbound wired to a list standing for the connection's output."""

    def __init__(self, max_send_queue: int = 1 << 20, budget: int = 1 << 30) -> None:
        self.pending: list[bytes] = []
        self.changes = 0
        self.memory = MemoryBudget(budget)
        self.outbound = Outbound(self, self.memory, max_send_queue, self.changed)
        self.transport = PausingTransport()
        self.transport.registerProducer(self.outbound, True)
        self.outbound.transport = self.transport

    def chunks_to_send(self) -> list[bytes]:
        chunks, self.pending = self.pending, []
        return chunks

    @property
    def unsent(self) -> int:
        return sum(map(len, self.pending))

    def changed(self) -> None:
        self.changes += 1

    def send(self, *chunks: bytes) -> None:
        self.pending.extend(chunks)
        self.outbound.flush()
        self.outbound.check_invariants()


def test_a_small_frame_is_one_write_and_holds_nothing() -> None:
    sender = Sender()
    sender.send(b"frame")
    assert sender.transport.value() == b"frame" and sender.transport.writes == 1
    assert sender.outbound.queued == 0 and sender.memory.used == 0
    sender.outbound.flush()  # nothing queued: nothing written
    assert sender.transport.writes == 1


def test_frames_wait_while_paused_and_are_counted_then_drain_in_order() -> None:
    sender = Sender()
    outbound = sender.outbound
    outbound.pauseProducing()
    outbound.check_invariants()
    assert sender.memory.used == TRANSPORT_HELD  # the transport's buffer
    sender.send(b"a" * 10, b"b" * 20)
    sender.send(b"c" * 30)
    assert sender.transport.value() == b""
    assert outbound.queued == 60 and sender.memory.used == 60 + TRANSPORT_HELD
    assert sender.changes == 2  # each time the queue grew
    outbound.resumeProducing()
    outbound.check_invariants()
    assert sender.transport.value() == b"a" * 10 + b"b" * 20 + b"c" * 30
    assert outbound.queued == 0 and sender.memory.used == 0
    assert sender.changes == 3  # and once it drained


def test_a_large_frame_goes_a_piece_at_a_time_and_its_rest_is_pinned() -> None:
    """The transport pauses after the first piece: the rest of the frame
    waits as a view of it, and the whole frame's buffer is charged."""
    sender = Sender()
    outbound, transport = sender.outbound, sender.transport
    frame = bytes(range(256)) * (5 * PIECE // 256 + 7)
    sender.send(b"head", frame, b"tail")
    assert transport.value() == b"head" + frame[:PIECE]  # then it paused
    assert outbound.queued == len(frame) - PIECE + 4
    # The frame's written part is still held by the view of its rest.
    assert sender.memory.used == outbound.queued + PIECE + TRANSPORT_HELD
    written = b""
    while outbound.queued:
        written += transport.read()
        outbound.check_invariants()
    written += transport.read()
    assert written == b"head" + frame + b"tail"
    assert sender.memory.used == 0


def test_room_is_bounded_by_the_queue_and_the_budget() -> None:
    sender = Sender(max_send_queue=1000, budget=4 * PIECE)
    outbound = sender.outbound
    assert outbound.room(10_000)  # nothing queued: any frame the budget holds
    with mock.patch.object(outbound, "room", side_effect=AssertionError("asked")):
        outbound.check(10)  # small, nothing queued: not even asked
        assert outbound.reserve(10)
    outbound.pauseProducing()
    sender.send(b"x" * 600)
    assert outbound.room(1000 - 600)  # a frame's size, counted once
    assert not outbound.room(1000 - 600 + 1)
    outbound.check(1000 - 600)
    with pytest.raises(SendQueueFull, match="600 bytes wait"):
        outbound.check(1000 - 600 + 1)
    assert sender.memory.counters["memory.refused.send"] == 0
    outbound.resumeProducing()
    # The budget spent elsewhere: a frame past what any connection may
    # hold is refused, and counted.
    sender.memory.charge(4 * PIECE)
    with pytest.raises(SendQueueFull, match="budget"):
        outbound.check(20_000)
    assert sender.memory.counters["memory.refused.send"] == 1
    outbound.check(100)  # a small frame always goes out


def test_a_response_frame_is_counted_once() -> None:
    """``reserve`` is given a response's exact frame size: no framing
    allowance goes on top (one did, so a response that fitted was refused)."""
    sender = Sender(max_send_queue=1000)
    outbound = sender.outbound
    outbound.pauseProducing()
    sender.send(b"x" * 600)
    assert outbound.reserve(1000 - 600)  # fills the queue to its bound
    sender.pending.append(bytes(1000 - 600))  # the connection holds it
    assert not outbound.reserve(1)
    # Nothing queued and the budget spent: a frame of what any connection
    # may hold still goes out, one byte more does not.
    assert Sender(budget=0).outbound.reserve(ALWAYS_ALLOWED)
    spent = Sender(budget=0)
    assert not spent.outbound.reserve(ALWAYS_ALLOWED + 1)
    assert spent.memory.counters["memory.refused.response"] == 1


def test_answers_given_during_a_read_count_before_they_are_flushed() -> None:
    sender = Sender(max_send_queue=1000)
    outbound = sender.outbound
    outbound.pauseProducing()
    sender.send(b"x" * 10)
    sender.pending.append(b"a" * 800)  # answered, not flushed yet
    assert outbound.room(1000 - 810) and not outbound.room(1000 - 810 + 1)
    sender.send()  # flushed: now in the queue, counted there
    assert outbound.queued == 810 and outbound.room(1000 - 810)


def test_what_the_connection_holds_counts_only_once_the_transport_pauses() -> None:
    """Held for the next flush while the peer reads, frames are not waiting
    for it: the flush hands them to the transport, as writing each at once
    would.  Paused, they wait, and count."""
    sender = Sender(max_send_queue=1000)
    outbound = sender.outbound
    sender.pending.append(b"a" * 800)  # held, the transport reading
    outbound.check(600)  # not refused: 800 + 600 is past the bound
    assert outbound.reserve(600)
    outbound.pauseProducing()
    with pytest.raises(SendQueueFull):
        outbound.check(600)


def test_one_byte_waiting_is_waiting() -> None:
    """The head of the queue may be a frame's last byte: even then a frame
    must fit beside it."""
    sender = Sender(max_send_queue=10)
    outbound = sender.outbound
    outbound.pauseProducing()
    sender.send(b"z")
    assert outbound.queued == 1
    with pytest.raises(SendQueueFull):
        outbound.check(10)
    outbound.check(9)


def test_a_frame_filling_what_any_connection_may_hold_fits_a_spent_budget() -> None:
    """Something waiting and the budget spent: a frame that brings the
    connection to exactly ``ALWAYS_ALLOWED`` still goes, one byte more not."""
    sender = Sender(budget=0)
    outbound = sender.outbound
    outbound.pauseProducing()
    sender.send(b"q" * 100)
    assert outbound.reserve(ALWAYS_ALLOWED - 100)
    assert not outbound.reserve(ALWAYS_ALLOWED - 99)


def test_close_writes_the_queue_and_lets_go_of_the_transport() -> None:
    sender = Sender()
    outbound, transport = sender.outbound, sender.transport
    outbound.pauseProducing()
    frame = b"y" * (3 * PIECE)
    sender.send(frame)
    outbound.close()
    assert transport.value() == frame and transport.producer is None
    assert sender.memory.used == TRANSPORT_HELD  # until the transport is gone
    outbound.lost()
    outbound.check_invariants()
    assert sender.memory.used == 0


def test_lost_releases_everything_charged() -> None:
    sender = Sender()
    outbound = sender.outbound
    outbound.inbound = 5000  # a partial inbound frame
    outbound.pauseProducing()
    sender.send(b"z" * 100)
    assert sender.memory.used == 5100 + TRANSPORT_HELD
    outbound.lost()
    outbound.check_invariants()
    assert sender.memory.used == 0 and outbound.queued == 0


def test_the_invariant_check_catches_counts_that_disagree() -> None:
    sender = Sender()
    outbound = sender.outbound
    outbound.pauseProducing()
    sender.send(b"q" * 10)
    outbound.queued += 1
    with pytest.raises(RuntimeError, match="11 bytes counted queued, 10 queued"):
        outbound.check_invariants()
    outbound.queued -= 1
    outbound.charged += 1
    with pytest.raises(RuntimeError, match="charged"):
        outbound.check_invariants()
    outbound.charged -= 1
    outbound._pinned += 3
    with pytest.raises(RuntimeError, match="3 bytes counted pinned, 0 pinned"):
        outbound.check_invariants()
    outbound._pinned -= 3
    outbound.paused = False
    reading = r"^frames queued while the transport reads$"
    with pytest.raises(RuntimeError, match=reading):
        outbound.check_invariants()


def test_the_invariant_check_holds_under_python_o() -> None:
    """Raised, not asserted: ``python -O`` strips ``assert`` statements."""
    code = (
        "from blueprint_net._adapters.outbound import Outbound\n"
        "from blueprint_net._policy.resources import MemoryBudget\n"
        "o = Outbound(None, MemoryBudget(100), 100, object)\n"
        "o.queued = 1\n"
        "try:\n"
        "    o.check_invariants()\n"
        "except RuntimeError:\n"
        "    raise SystemExit(0)\n"
        "raise SystemExit(1)\n"
    )
    root = Path(__file__).resolve().parents[2]
    command = [sys.executable, "-O", "-c", code]
    done = subprocess.run(command, check=False, cwd=root, timeout=60)
    assert done.returncode == 0


def test_each_piece_counts_its_bytes_from_its_own_start() -> None:
    sender = Sender()
    sender.transport.limit = 10 * PIECE  # never pauses here
    chunks = [b"a" * PIECE, b"b" * TAIL, b"c" * (PIECE - TAIL - 1), b"d" * TAIL]
    sender.send(*chunks)
    # "a" is a piece; "b" and "c" make one byte short of the next, so "d"
    # rides along with them: two writes.
    assert sender.transport.value() == b"".join(chunks)
    assert sender.transport.writes == 2


def test_a_frames_small_tail_goes_with_its_payload() -> None:
    """A 64 KiB payload fills a piece and the transport pauses: the byte
    after it (``frame_chunks``'s tail) is written with it, not queued until
    the transport drains (a reactor turn later, on every such frame)."""
    sender = Sender()
    chunks = framing.frame_chunks(wire.Request(1, "echo", bytes(PIECE)))
    assert len(chunks) == 3 and len(chunks[1]) == PIECE  # head, payload, tail
    sender.send(*chunks)
    assert sender.outbound.paused and sender.outbound.queued == 0
    assert sender.transport.value() == b"".join(chunks)
    assert sender.transport.writes == 1
    # Small chunks ride along only so far: a piece stays under 2 * PIECE.
    sender.transport.read()
    sender.send(b"a" * PIECE, *[b"b" * (TAIL - 1)] * 4)
    assert sender.outbound.queued == 2 * (TAIL - 1)
