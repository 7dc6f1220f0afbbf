"""Durable streams between two machines (``_core/streams.py``): exactly once,
in order, across lost connections; acknowledgements batched; bounded."""

from __future__ import annotations

import contextlib
import random
from collections import deque
from typing import Optional

import pytest

from blueprint_net._core import stream_wire as w
from blueprint_net._core.errors import ErrorCode, ProtocolError, WireError
from blueprint_net._core.stream_states import (
    Delivered,
    Input,
    LinkState,
    Refusal,
    Reset,
    Room,
    StreamEvent,
    StreamRefused,
    StreamSettings,
    StreamState,
)
from blueprint_net._core.streams import TABLE, PeerStreams


class Link:
    """Two machines and the frames in flight between them; :meth:`cut`
    loses whatever is in flight, as a dropped connection does."""

    def __init__(self, a: PeerStreams, b: PeerStreams) -> None:
        self.a, self.b = a, b
        self.flight: dict[int, deque[bytes]] = {id(a): deque(), id(b): deque()}
        #: Frames delivered, by type byte.
        self.delivered: dict[int, int] = {}

    def connect(self) -> None:
        self.a.connected()
        self.b.connected()

    def cut(self) -> None:
        for queue in self.flight.values():
            queue.clear()
        self.a.disconnected()
        self.b.disconnected()

    def _collect(self) -> None:
        for x, y in ((self.a, self.b), (self.b, self.a)):
            for frame in x.data_to_send():
                assert int.from_bytes(frame[:4], "big") == len(frame) - 4
                self.flight[id(y)].append(frame)

    def deliver_one(self, rng: Optional[random.Random] = None) -> bool:
        """Deliver one frame in flight (a random direction); False if none."""
        self._collect()
        ready = [m for m in (self.a, self.b) if self.flight[id(m)]]
        if not ready:
            return False
        target = rng.choice(ready) if rng else ready[0]
        frame = self.flight[id(target)].popleft()
        self.delivered[frame[4]] = self.delivered.get(frame[4], 0) + 1
        target.receive(frame[4:])
        return True

    def flight_pending(self) -> bool:
        self._collect()
        return any(self.flight.values())

    def pump(self) -> None:
        while self.deliver_one():
            pass

    def count(self, kind: int) -> int:
        return self.delivered.get(kind, 0)


def pair(**settings: float) -> tuple[PeerStreams, PeerStreams, Link]:
    config = StreamSettings(**settings)  # type: ignore[arg-type]
    a, b = PeerStreams(0xA, config), PeerStreams(0xB, config)
    return a, b, Link(a, b)


def connected(**settings: float) -> tuple[PeerStreams, PeerStreams, Link]:
    a, b, link = pair(**settings)
    link.connect()
    link.pump()
    assert a.link is b.link is LinkState.UP
    return a, b, link


def payloads(events: list[StreamEvent], stream: bytes = b"s") -> list[bytes]:
    return [
        payload
        for e in events
        if isinstance(e, Delivered) and e.stream == stream
        for payload in e.payloads
    ]


def resets(events: list[StreamEvent]) -> list[Reset]:
    return [e for e in events if isinstance(e, Reset)]


def body(message: w.StreamMessage) -> bytes:
    return w.encode(message)


def raises(machine: PeerStreams, message: w.StreamMessage) -> ErrorCode:
    with pytest.raises(ProtocolError) as caught:
        machine.receive(body(message))
    return caught.value.code


# -- delivery -----------------------------------------------------------------


def test_messages_are_delivered_once_and_in_order_per_stream() -> None:
    a, b, link = connected()
    for i in range(50):
        assert a.send(b"s", b"%d" % i)
        assert a.send(b"t", b"t%d" % i)
        assert b.send(b"s", b"back%d" % i)  # the same id, the other way
    link.pump()
    got = b.events()
    assert payloads(got) == [b"%d" % i for i in range(50)]
    assert payloads(got, b"t") == [b"t%d" % i for i in range(50)]
    assert payloads(a.events()) == [b"back%d" % i for i in range(50)]


def test_messages_sent_before_any_connection_go_once_both_hellos_are_in() -> None:
    a, b, link = pair()
    assert a.send(b"s", b"early")
    a.connected()
    [hello] = a.data_to_send()  # only the hello: b's is not in yet
    assert w.decode(hello[4:]) == w.HelloFrame(0xA, 1 << 20, 1024, 0)
    b.connected()
    b.receive(hello[4:])
    link.pump()
    assert payloads(b.events()) == [b"early"]


def test_a_retransmission_after_a_reconnection_is_in_order_and_never_twice() -> None:
    """Messages whose acknowledgement was lost with the connection are
    resent; the receiver drops those it delivered and acknowledges them."""
    a, b, link = connected(ack_every=1000)
    for i in range(10):
        a.send(b"s", b"%d" % i)
    for _ in range(6):
        link.deliver_one()  # a's first six arrive; no acknowledgement yet
    assert payloads(b.events()) == [b"%d" % i for i in range(6)]
    link.cut()  # the other four are lost in flight
    assert a.buffered_bytes == 10
    for i in range(10, 12):
        a.send(b"s", b"%d" % i)  # while down: queued
    link.connect()
    link.pump()
    assert payloads(b.events()) == [b"%d" % i for i in range(6, 12)]
    b.tick(1.0)
    link.pump()
    assert a.buffered_bytes == 0


def test_a_duplicate_is_dropped_and_acknowledged_again() -> None:
    _, b, _ = connected(ack_every=1000)
    b.receive(body(w.DataFrame(b"s", 1, b"one")))
    b.tick(1.0)
    assert [w.decode(f[4:]) for f in b.data_to_send()] == [w.AckFrame(b"s", 1)]
    b.disconnected()
    b.connected()
    b.receive(body(w.HelloFrame(0xA, 1 << 20, 1024, 0)))
    assert [w.decode(f[4:]) for f in b.data_to_send()][1:] == [w.AckFrame(b"s", 1)]
    b.receive(body(w.DataFrame(b"s", 1, b"one")))  # resent: its ack was lost
    assert b.events() == [Delivered(b"s", [b"one"])]
    b.tick(2.0)
    assert [w.decode(f[4:]) for f in b.data_to_send()] == [w.AckFrame(b"s", 1)]
    b.receive(body(w.DataFrame(b"s", 2, b"two")))
    assert b.events() == [Delivered(b"s", [b"two"])]


# -- violations ---------------------------------------------------------------


def test_a_gap_is_a_violation() -> None:
    _, b, _ = connected()
    b.receive(body(w.DataFrame(b"s", 1, b"")))
    assert raises(b, w.DataFrame(b"s", 3, b"")) is ErrorCode.STREAM_SEQUENCE
    assert payloads(b.events()) == [b""]
    # The first message on a new connection may repeat, never skip.
    b.disconnected()
    b.connected()
    b.receive(body(w.HelloFrame(0xA, 1 << 20, 1024, 0)))
    with pytest.raises(ProtocolError) as caught:
        b.receive(body(w.DataFrame(b"s", 3, b"")))
    assert caught.value.code is ErrorCode.STREAM_SEQUENCE
    assert "a gap" in caught.value.message
    b.receive(body(w.DataFrame(b"s", 2, b"two")))
    assert payloads(b.events()) == [b"two"]


def test_a_first_message_not_numbered_one_is_a_violation() -> None:
    """Data for a stream the receiver does not know, with seq != 1: the
    sender's stream is from before a restart or a reset, never a new one."""
    _, b, _ = connected()
    assert raises(b, w.DataFrame(b"s", 2, b"")) is ErrorCode.STREAM_SEQUENCE
    assert b.state(b"s") is StreamState.ABSENT and b.stream_count == 0


def test_a_rewind_on_one_connection_is_a_violation() -> None:
    """Duplicates only come as the retransmitted prefix of a connection:
    on one connection each message is the previous one plus one."""
    _, b, _ = connected()
    for seq in (1, 2, 3):
        b.receive(body(w.DataFrame(b"s", seq, b"")))
    assert raises(b, w.DataFrame(b"s", 2, b"")) is ErrorCode.STREAM_SEQUENCE
    b.disconnected()
    b.connected()
    b.receive(body(w.HelloFrame(0xA, 1 << 20, 1024, 0)))
    b.receive(body(w.DataFrame(b"s", 2, b"")))  # a new connection: a resend
    b.receive(body(w.DataFrame(b"s", 3, b"")))
    assert raises(b, w.DataFrame(b"s", 3, b"")) is ErrorCode.STREAM_SEQUENCE


def test_an_ack_beyond_what_was_sent_is_a_violation() -> None:
    a, _, _ = connected()
    a.send(b"s", b"x")
    a.send(b"s", b"y")
    assert raises(a, w.AckFrame(b"s", 3)) is ErrorCode.STREAM_ACK
    assert raises(a, w.AckFrame(b"never", 1)) is ErrorCode.STREAM_ACK
    assert a.buffered_bytes == 2
    a.receive(body(w.AckFrame(b"s", 2)))
    assert a.buffered_bytes == 0
    a.receive(body(w.AckFrame(b"s", 1)))  # older news: ignored
    assert raises(a, w.AckFrame(b"s", 3)) is ErrorCode.STREAM_ACK


def test_stream_messages_before_the_hello_and_a_second_hello_are_unexpected() -> None:
    a, _, _ = pair()
    a.connected()
    assert raises(a, w.DataFrame(b"s", 1, b"")) is ErrorCode.UNEXPECTED_MESSAGE
    a.receive(body(w.HelloFrame(0xB, 100, 10, 0)))
    assert raises(a, w.HelloFrame(0xB, 100, 10, 0)) is ErrorCode.UNEXPECTED_MESSAGE


# -- acknowledgements ---------------------------------------------------------


def test_acknowledgements_are_batched_never_one_per_message() -> None:
    a, b, link = connected(ack_every=32)
    for i in range(1000):
        a.send(b"s", b"%d" % i)
    link.pump()
    assert len(payloads(b.events())) == 1000
    # 1000 // 32 acks, then the last 8 messages wait for a tick.
    assert link.count(w.T_STREAM_ACK) == 31
    assert a.buffered_bytes > 0
    b.tick(10.0)
    link.pump()
    assert link.count(w.T_STREAM_ACK) == 32 and a.buffered_bytes == 0


def test_a_half_full_window_is_acknowledged_before_the_count() -> None:
    """Large messages: the receiver acknowledges at half the sender's
    window (from its hello), so a sender is never held up to the tick."""
    a, _, link = connected(ack_every=1000, window=10_000)
    for _ in range(4):
        a.send(b"s", bytes(1000))
    link.pump()
    assert link.count(w.T_STREAM_ACK) == 0
    a.send(b"s", bytes(1000))  # 5000 bytes: half the window
    link.pump()
    assert link.count(w.T_STREAM_ACK) == 1 and a.buffered_bytes == 0


def test_a_tick_acknowledges_at_most_once_per_delay() -> None:
    """A tick sends what is due unless the last acknowledgement went out
    less than ack_delay ago: a trickle is acknowledged once per delay."""
    a, b, link = connected(ack_every=1000, ack_delay=0.5)
    b.tick(100.0)
    link.pump()
    assert link.count(w.T_STREAM_ACK) == 0  # nothing due: nothing sent
    a.send(b"s", b"x")
    link.pump()
    b.tick(100.1)  # the first in a while: at once
    link.pump()
    assert link.count(w.T_STREAM_ACK) == 1 and a.buffered_bytes == 0
    a.send(b"s", b"y")
    link.pump()
    b.tick(100.5)
    link.pump()
    assert link.count(w.T_STREAM_ACK) == 1 and a.buffered_bytes == 1
    b.tick(100.6)
    link.pump()
    assert link.count(w.T_STREAM_ACK) == 2 and a.buffered_bytes == 0


def test_one_flush_acknowledges_each_stream_once() -> None:
    a, b, link = connected(ack_every=1000)
    for i in range(10):
        a.send(b"s%d" % (i % 3), b"x")
    link.pump()
    b.tick(1.0)
    link.pump()
    assert link.count(w.T_STREAM_ACK) == 3 and a.buffered_bytes == 0


# -- backpressure -------------------------------------------------------------


def test_a_full_window_refuses_a_send_and_signals_room_after_an_ack() -> None:
    a, b, link = connected(window=100, ack_every=1000)
    b.disconnected()
    a.disconnected()  # no acknowledgement can come
    assert a.send(b"s", bytes(60))
    assert not a.send(b"s", bytes(41))  # 101 > 100: refused, not queued
    assert a.buffered_bytes == 60
    assert a.send(b"s", bytes(40))  # exactly full
    assert not a.send(b"t", b"x")
    assert a.buffered_bytes == 100 and a.stream_count == 1
    assert a.events() == []
    link.connect()
    link.pump()  # the first 60 bytes pass half the window: acknowledged
    assert a.events() == [Room()]
    assert a.buffered_bytes == 40
    assert a.send(b"t", b"x")
    link.pump()
    b.tick(2.0)
    link.pump()
    assert a.buffered_bytes == 0
    assert a.events() == []  # no refusal since the last Room: no Room


def test_a_message_larger_than_the_window_is_refused() -> None:
    a, _, _ = connected(window=100)
    with pytest.raises(StreamRefused) as caught:
        a.send(b"s", bytes(101))
    assert caught.value.reason is Refusal.TOO_LARGE
    assert a.buffered_bytes == 0 and a.state(b"s") is StreamState.ABSENT


# -- resets and restarts ------------------------------------------------------


def test_a_reset_ends_the_stream_on_both_sides() -> None:
    a, b, link = connected(ack_every=1000)
    a.send(b"s", b"one")
    b.send(b"s", b"back")
    link.pump()
    a.reset(b"s", 1234)
    assert a.state(b"s") is StreamState.RESET_SENT and a.buffered_bytes == 0
    with pytest.raises(StreamRefused) as caught:
        a.send(b"s", b"more")
    assert caught.value.reason is Refusal.RESETTING
    link.pump()
    assert resets(b.events()) == [Reset(b"s", 1234, remote=True)]
    assert a.state(b"s") is b.state(b"s") is StreamState.ABSENT
    assert b.buffered_bytes == 0
    assert a.send(b"s", b"again")  # a new stream of the same name
    link.pump()
    assert payloads(b.events()) == [b"again"]


def test_data_in_flight_behind_a_reset_is_dropped_not_delivered() -> None:
    a, b, link = connected()
    b.send(b"s", b"1")
    link.pump()
    a.events()
    b.send(b"s", b"2")  # in flight when a resets
    a.reset(b"s")
    link.pump()
    assert payloads(a.events()) == []
    assert resets(b.events()) == [Reset(b"s", w.ResetCode.CANCELLED, remote=True)]
    assert a.state(b"s") is b.state(b"s") is StreamState.ABSENT


def test_resets_that_cross_end_the_stream_without_answers() -> None:
    a, b, link = connected()
    a.send(b"s", b"1")
    link.pump()
    a.reset(b"s")
    b.reset(b"s")
    link.pump()
    assert link.count(w.T_STREAM_RESET) == 2
    assert a.state(b"s") is b.state(b"s") is StreamState.ABSENT
    assert resets(a.events()) == resets(b.events()) == []


def test_a_reset_whose_answer_was_lost_is_sent_again_and_answered() -> None:
    a, b, link = connected()
    a.send(b"s", b"1")
    link.pump()
    a.reset(b"s")
    link.deliver_one()  # b gets the reset and answers; the answer is lost
    link.cut()
    assert a.state(b"s") is StreamState.RESET_SENT
    assert b.state(b"s") is StreamState.ABSENT
    link.connect()
    link.pump()
    assert a.state(b"s") is StreamState.ABSENT
    assert resets(b.events()) == [Reset(b"s", w.ResetCode.CANCELLED, remote=True)]


def test_a_reset_answered_before_a_loss_never_ends_the_next_stream_of_its_id() -> None:
    """b answers a's reset, the answer is lost with the connection, and b
    opens a new stream of the same id: on the next connection a learns from
    b's hello that its reset arrived, so it neither sends it again (ending
    b's new stream, which a's application never reset) nor drops b's new
    message."""
    a, b, link = connected()
    a.send(b"s", b"old")
    link.pump()
    b.events()
    a.reset(b"s")
    link.deliver_one()  # b gets the reset and answers; the answer is lost
    link.cut()
    assert resets(b.events()) == [Reset(b"s", w.ResetCode.CANCELLED, remote=True)]
    b.send(b"s", b"new")
    link.connect()
    link.pump()
    got_a, got_b = a.events(), b.events()
    assert resets(got_a + got_b) == []
    assert payloads(got_a) == [b"new"]
    a.tick(10)
    link.pump()
    assert link.count(w.T_STREAM_RESET) == 1  # the first reset, only
    assert a.state(b"s") is b.state(b"s") is StreamState.OPEN
    assert b.buffered_bytes == 0  # "new" was delivered and acknowledged


def test_a_reset_lost_with_the_connection_is_sent_again_and_arrives_once() -> None:
    a, b, link = connected()
    a.send(b"s", b"1")
    link.pump()
    b.events()
    a.reset(b"s", 1234)
    link.cut()  # the reset is lost
    link.connect()
    link.pump()
    assert resets(b.events()) == [Reset(b"s", 1234, remote=True)]
    assert link.count(w.T_STREAM_RESET) == 2  # the reset, its answer
    assert a.state(b"s") is b.state(b"s") is StreamState.ABSENT


def test_an_answer_is_never_answered_and_never_ends_an_open_stream() -> None:
    a, _, _ = connected()
    a.send(b"s", b"1")
    a.data_to_send()
    for stream in (b"s", b"gone"):
        a.receive(body(w.ResetFrame(stream, 2, 1, answer=True)))
    assert a.data_to_send() == [] and a.events() == []
    assert a.state(b"s") is StreamState.OPEN and a.state(b"gone") is StreamState.ABSENT


def test_a_restarted_peer_resets_every_stream_on_both_sides() -> None:
    a, b, link = connected(ack_every=1000)
    a.send(b"s", b"to b")
    b.send(b"s", b"to a")
    b.send(b"t", b"unacked")
    link.pump()
    link.cut()
    # a's process restarts: a new incarnation, no state; it opens "s" anew.
    a2 = PeerStreams(0xA2, a.settings)
    a2.send(b"s", b"after restart")
    link = Link(a2, b)
    link.connect()
    link.pump()
    # b detects the restart: each stream ends there, reported once.
    assert sorted(resets(b.events()), key=lambda r: r.stream) == [
        Reset(b"s", w.ResetCode.RESTARTED, remote=False),
        Reset(b"t", w.ResetCode.RESTARTED, remote=False),
    ]
    assert b.buffered_bytes == 0
    # The restarted side learns it from b's StreamResets, one per stream;
    # its own new "s" ended with it (b dropped what it sent).
    got = a2.events()
    assert sorted(resets(got), key=lambda r: r.stream) == [
        Reset(b"s", w.ResetCode.RESTARTED, remote=True),
        Reset(b"t", w.ResetCode.RESTARTED, remote=True),
    ]
    assert payloads(b.events()) == []
    for machine in (a2, b):
        assert machine.state(b"s") is machine.state(b"t") is StreamState.ABSENT
    # Both start over cleanly.
    a2.send(b"s", b"fresh")
    link.pump()
    assert payloads(b.events()) == [b"fresh"]


def test_the_same_incarnation_again_is_a_reconnection_not_a_restart() -> None:
    a, b, link = connected()
    a.send(b"s", b"1")
    link.pump()
    link.cut()
    link.connect()
    link.pump()
    assert resets(a.events()) == resets(b.events()) == []
    assert b.state(b"s") is StreamState.OPEN


def test_a_new_incarnation_without_streams_resets_nothing() -> None:
    _, b, link = connected()
    link.cut()
    a2 = PeerStreams(0xA2)
    link = Link(a2, b)
    link.connect()
    link.pump()
    assert b.peer_incarnation == 0xA2
    assert link.count(w.T_STREAM_RESET) == 0


# -- limits -------------------------------------------------------------------


def test_streams_per_peer_are_bounded_both_ways() -> None:
    a, b, link = connected(max_streams=2)
    a.send(b"1", b"")
    a.send(b"2", b"")
    with pytest.raises(StreamRefused) as caught:
        a.send(b"3", b"")
    assert caught.value.reason is Refusal.TOO_MANY_STREAMS
    link.pump()
    b.events()
    # A peer that ignores the limit its hello was told is refused.
    assert raises(b, w.DataFrame(b"3", 1, b"")) is ErrorCode.STREAM_LIMIT
    assert b.stream_count == 2
    # Streams b opens itself do not count against a's.
    b.send(b"mine", b"")
    link.pump()
    a.reset(b"1")
    link.pump()
    assert a.send(b"3", b"")


def test_the_peers_smaller_limit_drops_the_newest_streams_queued_for_it() -> None:
    a = PeerStreams(0xA, StreamSettings(max_streams=10))
    b = PeerStreams(0xB, StreamSettings(max_streams=2))
    for name in (b"1", b"2", b"3", b"4"):
        a.send(name, name)
    link = Link(a, b)
    link.connect()
    link.pump()
    assert resets(a.events()) == [
        Reset(b"3", w.ResetCode.STREAM_LIMIT, remote=False),
        Reset(b"4", w.ResetCode.STREAM_LIMIT, remote=False),
    ]
    assert [e.stream for e in b.events() if isinstance(e, Delivered)] == [b"1", b"2"]
    assert a.buffered_bytes == 2
    with pytest.raises(StreamRefused):
        a.send(b"5", b"")


def test_a_stream_id_is_one_to_255_bytes() -> None:
    a, _, _ = connected()
    for bad in (b"", b"x" * 256):
        with pytest.raises(ValueError):
            a.send(bad, b"")
        assert a.stream_count == 0
    assert a.send(b"x" * 255, b"")


def quiet_within(link: Link, frames: int) -> bool:
    """Deliver frames until none is in flight: True if that took at most
    ``frames`` (an exchange that never ends does not)."""
    for _ in range(frames):
        if not link.deliver_one():
            return True
    return not link.flight_pending()


def test_a_stream_being_reset_keeps_its_slot_until_the_reset_is_answered() -> None:
    """Nothing is forgotten to stay bounded: a reset not yet answered holds
    its stream's place, and a new stream waits for it."""
    a, b, link = connected(max_streams=2)
    for name in (b"0", b"1"):
        a.send(name, b"x")
        a.reset(name)
    with pytest.raises(StreamRefused) as caught:
        a.send(b"2", b"x")
    assert caught.value.reason is Refusal.TOO_MANY_STREAMS
    assert a.stream_count == 2
    assert quiet_within(link, 20)
    assert a.stream_count == b.stream_count == 0
    assert a.send(b"2", b"x")
    a.reset(b"2")
    assert quiet_within(link, 20)
    assert a.stream_count == b.stream_count == 0
    assert not hasattr(a, "evicted")


def test_resets_during_an_outage_are_not_forgotten_and_charge_nobody() -> None:
    """The peer's messages of the streams we reset while the link was
    down are in flight again after it: they are dropped, not taken for a
    new stream's (which would charge an honest peer STREAM_SEQUENCE)."""
    a, b, link = connected(max_streams=2)
    for name in (b"p", b"q"):
        b.send(name, b"1")
    link.pump()
    a.tick(10)
    link.pump()  # delivered and acknowledged
    for name in (b"p", b"q"):
        b.send(name, b"2")  # lost with the connection
    link.cut()
    for name in (b"u", b"v"):
        a.send(name, b"z")
    for name in (b"p", b"q", b"u"):
        a.reset(name)
    link.connect()
    assert quiet_within(link, 40)  # raises nothing
    assert [e.stream for e in resets(b.events())] == [b"p", b"q"]
    assert a.stream_count == b.stream_count == 1  # v


def test_the_peers_first_hello_drops_only_open_streams_past_its_limit() -> None:
    """Only streams we opened that are open count against the peer's
    limit: one being reset is not dropped twice, nor does it push an open
    one out."""
    for reset, kept, dropped in ((b"c", b"a", b"b"), (b"a", b"b", b"c")):
        a = PeerStreams(0xA, StreamSettings(max_streams=4))
        b = PeerStreams(0xB, StreamSettings(max_streams=1))
        for name in (b"a", b"b", b"c"):
            a.send(name, name)
        a.reset(reset)
        link = Link(a, b)
        link.connect()
        assert quiet_within(link, 20)
        assert resets(a.events()) == [
            Reset(dropped, w.ResetCode.STREAM_LIMIT, remote=False)
        ]
        assert payloads(b.events(), kept) == [kept]
        assert a.state(kept) is StreamState.OPEN
        assert a.state(reset) is a.state(dropped) is StreamState.ABSENT


def test_a_hello_with_window_0_is_out_of_range() -> None:
    """A peer that keeps no byte would have every message acknowledged
    alone (half its window is 0): its hello is malformed."""
    a, _, _ = pair()
    a.connected()
    hello = bytes((w.T_STREAM_HELLO,)) + (0xB).to_bytes(8, "big") + bytes(4)
    with pytest.raises(WireError) as caught:
        a.receive(hello + (1).to_bytes(2, "big") + bytes(8))
    assert caught.value.code is ErrorCode.OUT_OF_RANGE
    assert a.link is LinkState.AWAITING_HELLO and a.peer_incarnation is None


def test_a_peer_with_max_streams_0_accepts_no_stream_of_ours() -> None:
    a = PeerStreams(0xA)
    a.send(b"q", b"queued")
    a.connected()
    a.receive(body(w.HelloFrame(0xB, 100, 0, 0)))
    assert resets(a.events()) == [Reset(b"q", w.ResetCode.STREAM_LIMIT, remote=False)]
    with pytest.raises(StreamRefused) as caught:
        a.send(b"n", b"")
    assert caught.value.reason is Refusal.TOO_MANY_STREAMS
    assert a.stream_count == a.buffered_bytes == 0
    # Its own streams are welcome all the same.
    a.receive(body(w.DataFrame(b"theirs", 1, b"x")))
    assert payloads(a.events(), b"theirs") == [b"x"]


def test_settings_are_checked() -> None:
    for bad in ({"window": 0}, {"max_streams": 0}, {"ack_every": 0}):
        with pytest.raises(ValueError):
            StreamSettings(**bad)
    with pytest.raises(ValueError):
        PeerStreams(2**64)
    a, _, _ = connected()
    with pytest.raises(ValueError):
        a.reset(b"s", 2**16)


# -- the table ----------------------------------------------------------------

STREAM_INPUTS = (
    Input.SEND,
    Input.DATA,
    Input.ACK,
    Input.RESET,
    Input.ANSWER,
    Input.LOCAL_RESET,
)


def test_every_stream_state_answers_every_input_from_the_peer_or_the_application() -> (
    None
):
    for state in StreamState:
        for kind in STREAM_INPUTS:
            assert (state, kind) in TABLE, (state, kind)
    # Restarts and limits only ever find streams that exist.
    for kind in (Input.RESTART, Input.OVER_LIMIT, Input.RESET_TAKEN):
        assert (StreamState.ABSENT, kind) not in TABLE


def test_the_link_is_down_awaiting_hello_or_up() -> None:
    link_edges = {
        (state, kind, target)
        for (state, kind), (target, _) in TABLE.items()
        if isinstance(state, LinkState)
    }
    assert link_edges == {
        (LinkState.DOWN, Input.CONNECTED, LinkState.AWAITING_HELLO),
        (LinkState.AWAITING_HELLO, Input.HELLO, LinkState.UP),
        (LinkState.AWAITING_HELLO, Input.DISCONNECTED, LinkState.DOWN),
        (LinkState.UP, Input.DISCONNECTED, LinkState.DOWN),
    }


# -- any input -----------------------------------------------------------------


def _drive(machine: PeerStreams, rng: random.Random, steps: int) -> None:
    """Random inputs of every kind, the peer's well-formed or not; each
    raises nothing but what its method documents."""
    ids = [b"a", b"b", b"c", b"d"]
    for _ in range(steps):
        stream = rng.choice(ids)
        kind = rng.randrange(10)
        if kind == 0:
            if machine.link is LinkState.DOWN:
                machine.connected()
            else:
                machine.disconnected()
            continue
        if kind <= 2:
            with contextlib.suppress(StreamRefused):
                machine.send(stream, bytes(rng.randrange(30)))
            continue
        if kind == 3:
            machine.reset(stream, rng.choice([1, 2, 1000]))
            continue
        if kind == 4:
            machine.tick(rng.random() * 10)
            continue
        if machine.link is LinkState.DOWN:
            continue
        message: w.StreamMessage
        if kind == 5:
            message = w.HelloFrame(
                rng.choice([7, 8]),
                rng.randint(1, 60),
                rng.randrange(4),
                rng.randrange(4),
            )
        elif kind == 6:
            message = w.DataFrame(stream, rng.randint(1, 4), bytes(rng.randrange(9)))
        elif kind == 7:
            message = w.AckFrame(stream, rng.randint(1, 4))
        else:
            message = w.ResetFrame(
                stream, rng.choice([1, 2]), rng.randint(1, 3), rng.random() < 0.3
            )
        frame = w.encode(message)
        if rng.random() < 0.05:
            frame = frame[: rng.randrange(len(frame))] + bytes(rng.randrange(3))
        try:
            machine.receive(frame)
        except (WireError, ProtocolError):
            machine.disconnected()  # the caller closes the connection
        assert machine.buffered_bytes >= 0
        assert machine.stream_count <= 3 * machine.settings.max_streams


@pytest.mark.parametrize("seed", range(4))
def test_no_input_raises_anything_but_the_documented_errors(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(300):
        config = StreamSettings(window=50, max_streams=rng.randint(1, 3))
        _drive(PeerStreams(1, config), rng, 60)


@pytest.mark.parametrize("seed", range(6))
def test_honest_peers_that_reset_across_lost_connections_never_fault(
    seed: int,
) -> None:
    """Two honest machines send, reset and lose connections at random: no
    violation, every exchange ends, both agree on every stream, a reset is
    reported only where the other application made one, and nothing is
    delivered twice or out of order."""
    rng = random.Random(seed)
    config = StreamSettings(window=200, max_streams=2, ack_every=4, ack_delay=1.0)
    a, b = PeerStreams(1, config), PeerStreams(2, config)
    link = Link(a, b)
    link.connect()
    up = True
    ids = [b"w", b"x", b"y", b"z"]
    made: dict[int, list[tuple[bytes, int]]] = {1: [], 2: []}
    heard: dict[int, list[tuple[bytes, int]]] = {1: [], 2: []}
    last: dict[tuple[int, bytes], int] = {}
    count = 0
    code = 1000
    now = 0.0

    def collect() -> None:
        for machine, key in ((a, 1), (b, 2)):
            for event in machine.events():
                if isinstance(event, Reset):
                    assert event.remote
                    heard[key].append((event.stream, event.code))
                elif isinstance(event, Delivered):
                    for payload in event.payloads:
                        number = int(payload)
                        assert number > last.get((key, event.stream), -1)
                        last[key, event.stream] = number

    for _ in range(3000):
        now += 0.01
        roll = rng.random()
        machine, key = rng.choice(((a, 1), (b, 2)))
        stream = rng.choice(ids)
        if roll < 0.01:
            if up:
                link.cut()
            else:
                link.connect()
            up = not up
        elif roll < 0.3:
            count += 1
            with contextlib.suppress(StreamRefused):
                machine.send(stream, b"%d" % count)
        elif roll < 0.36:
            if machine.state(stream) is StreamState.OPEN:
                code += 1
                made[key].append((stream, code))
            machine.reset(stream, code)
        elif roll < 0.4:
            machine.tick(now)
        elif up:
            link.deliver_one(rng)
        collect()
    if not up:
        link.connect()
    a.tick(now + 10)
    b.tick(now + 10)
    assert quiet_within(link, 500)
    collect()
    for stream in ids:
        assert a.state(stream) is b.state(stream) is not StreamState.RESET_SENT
    for key, other in ((1, 2), (2, 1)):
        assert set(heard[key]) <= set(made[other])
        assert len(heard[key]) == len(set(heard[key]))


# -- a lossy pipe -------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_a_pipe_that_drops_connections_loses_duplicates_and_reorders_nothing(
    seed: int,
) -> None:
    """Both sides send on three streams each while the connection is cut at
    random points (everything in flight lost), acknowledgements batched and
    the window small enough to push back: every message arrives once, in
    order."""
    rng = random.Random(seed)
    config = StreamSettings(window=3000, ack_every=8, ack_delay=1.0)
    a, b = PeerStreams(1, config), PeerStreams(2, config)
    link = Link(a, b)
    link.connect()
    total = 1500
    streams = [b"x", b"y", b"z"]
    sent: dict[int, dict[bytes, list[bytes]]] = {1: {}, 2: {}}
    got: dict[int, dict[bytes, list[bytes]]] = {1: {}, 2: {}}
    counter = {1: 0, 2: 0}
    now = 0.0
    cuts = 0
    up = True
    while counter[1] < total or counter[2] < total or link.flight_pending():
        now += 0.01
        action = rng.random()
        if action < 0.003 and up:
            link.cut()
            cuts += 1
            up = False
        elif not up and action < 0.05:
            link.connect()
            up = True
        elif action < 0.45:
            for machine, key in ((a, 1), (b, 2)):
                if counter[key] < total:
                    stream = rng.choice(streams)
                    payload = b"%d:%d" % (key, counter[key]) + bytes(rng.randrange(80))
                    if machine.send(stream, payload):
                        sent[key].setdefault(stream, []).append(payload)
                        counter[key] += 1
        elif action < 0.5:
            a.tick(now)
            b.tick(now)
        elif up:
            link.deliver_one(rng)
        for machine, other in ((a, 2), (b, 1)):
            for event in machine.events():
                assert not isinstance(event, Reset)
                if isinstance(event, Delivered):
                    got[other].setdefault(event.stream, []).extend(event.payloads)
        if not up and counter[1] >= total and counter[2] >= total:
            link.connect()
            up = True
        if counter[1] >= total and counter[2] >= total and not link.flight_pending():
            a.tick(now + 10)
            b.tick(now + 10)
            link.pump()
            for machine, other in ((a, 2), (b, 1)):
                for event in machine.events():
                    if isinstance(event, Delivered):
                        got[other].setdefault(event.stream, []).extend(event.payloads)
            break
    assert cuts >= 3
    assert got == sent  # nothing lost, nothing twice, nothing out of order
    assert a.buffered_bytes == b.buffered_bytes == 0


# -- exact numbers and messages -------------------------------------------------


def frames(machine: PeerStreams) -> list[w.StreamMessage]:
    return [w.decode(f[4:]) for f in machine.data_to_send()]


def test_a_fresh_machine_assumes_its_own_settings_until_the_peers_hello() -> None:
    """The numbers the node keeps of a peer (the adapter remembers them)
    start from our settings and zero counts; incarnation 0 is a u64 too."""
    config = StreamSettings(window=500, max_streams=7)
    for incarnation in (0, 2**64 - 1):
        a = PeerStreams(incarnation, config)
        assert (a.peer_incarnation, a.peer_window, a.peer_max_streams) == (None, 500, 7)
        assert (a.peer_resets, a.resets_sent, a.buffered_bytes) == (0, 0, 0)
        assert a.link is LinkState.DOWN
        a.connected()
        assert frames(a) == [w.HelloFrame(incarnation, 500, 7, 0)]
    for bad in (-1, 2**64):
        with pytest.raises(ValueError) as caught:
            PeerStreams(bad)
        assert str(caught.value) == "an incarnation is a u64"


def test_our_resets_are_numbered_from_one_one_by_one() -> None:
    a, _, _ = connected()
    for name in (b"s", b"t", b"u"):
        a.send(name, b"x")
    a.data_to_send()
    a.reset(b"s", 1000)
    a.reset(b"t")
    a.reset(b"u", 0)  # any u16 is a code, 0 too
    assert frames(a) == [
        w.ResetFrame(b"s", 1000, 1),
        w.ResetFrame(b"t", w.ResetCode.CANCELLED, 2),
        w.ResetFrame(b"u", 0, 3),
    ]
    assert a.resets_sent == 3
    for bad in (-1, 2**16):
        with pytest.raises(ValueError) as caught:
            a.reset(b"v", bad)
        assert str(caught.value) == "a reset code is a u16"


def test_room_is_signalled_only_after_a_refusal() -> None:
    a, _, link = connected(ack_every=1)
    assert a.send(b"s", b"x")
    link.pump()
    assert a.buffered_bytes == 0 and a.events() == []


def test_a_message_of_exactly_the_window_fits() -> None:
    a, _, _ = connected(window=100)
    assert a.send(b"s", bytes(100))
    assert a.buffered_bytes == 100
    assert not a.send(b"s", b"x")


def test_each_batch_of_acknowledgements_counts_from_zero_on_each_connection() -> None:
    """ack_every messages, or half the sender's window in bytes, since the
    last batch: counted from nothing at the start and after a loss."""
    a, _, link = connected(ack_every=2, window=10)
    a.send(b"s", bytes(4))  # 1 message, 8 < 10 bytes doubled: not yet
    link.pump()
    assert link.count(w.T_STREAM_ACK) == 0 and a.buffered_bytes == 4
    a.send(b"s", b"")  # 2 messages: a batch
    link.pump()
    assert link.count(w.T_STREAM_ACK) == 1 and a.buffered_bytes == 0
    a.send(b"s", bytes(4))
    link.cut()  # lost, with the count of what arrived since the batch
    link.connect()
    link.pump()  # the hellos, b's ack of seq 2, a's resend of seq 3
    assert link.count(w.T_STREAM_ACK) == 2 and a.buffered_bytes == 4
    a.send(b"s", b"")
    link.pump()
    assert link.count(w.T_STREAM_ACK) == 3 and a.buffered_bytes == 0


def test_a_batch_before_the_first_tick_counts_as_sent_at_time_zero() -> None:
    a, b, link = connected(ack_every=2, ack_delay=0.1)
    a.send(b"s", b"1")
    a.send(b"s", b"2")
    link.pump()  # a batch by count, before any tick
    assert link.count(w.T_STREAM_ACK) == 1
    a.send(b"s", b"3")
    link.pump()
    b.tick(0.05)  # 0.05 s after time zero: not yet
    link.pump()
    assert link.count(w.T_STREAM_ACK) == 1
    b.tick(0.1)
    link.pump()
    assert link.count(w.T_STREAM_ACK) == 2 and a.buffered_bytes == 0


def test_only_a_data_frame_takes_the_fast_path() -> None:
    """A body of another stream type is judged by the strict decoder even
    when its bytes would read as a data frame: a reserved type is unknown,
    a second hello unexpected."""
    _, b, _ = connected()
    data = body(w.DataFrame(b"s", 1, b""))
    with pytest.raises(WireError) as caught:
        b.receive(b"\x54" + data[1:])
    assert caught.value.code is ErrorCode.UNKNOWN_MESSAGE_TYPE
    # Read as data: id 01020304050607a0a1 (9 bytes), seq 1 << 32 | 7, and
    # an empty payload.
    hello = w.HelloFrame(0x0901020304050607, 0xA0A1_0000, 1, 7 << 32)
    assert w.fast_data(body(hello)) is not None
    assert raises(b, hello) is ErrorCode.UNEXPECTED_MESSAGE
    assert b.events() == [] and b.stream_count == 0


def test_link_inputs_out_of_order_are_the_callers_bug_not_the_peers() -> None:
    """Only a second hello is the peer's fault (UNEXPECTED_MESSAGE); a frame
    or a connection the caller reports out of order is an AssertionError."""
    a = PeerStreams(0xA)
    for message, error_text in (
        (w.HelloFrame(0xB, 100, 1, 0), "Input.HELLO is not an input in LinkState.DOWN"),
        (w.DataFrame(b"s", 1, b""), "a frame while no connection is up"),
    ):
        with pytest.raises(AssertionError) as error:
            a.receive(body(message))
        assert str(error.value) == error_text
    with pytest.raises(AssertionError) as error:
        a.disconnected()
    assert str(error.value) == "Input.DISCONNECTED is not an input in LinkState.DOWN"
    a.connected()
    a.receive(body(w.HelloFrame(0xB, 100, 1, 0)))
    with pytest.raises(AssertionError) as error:
        a.connected()
    assert str(error.value) == "Input.CONNECTED is not an input in LinkState.UP"
    with pytest.raises(ProtocolError) as caught:
        a.receive(body(w.HelloFrame(0xB, 100, 1, 0)))
    assert (caught.value.code, caught.value.message) == (
        ErrorCode.UNEXPECTED_MESSAGE,
        "a second HelloFrame",
    )
    assert a.link is LinkState.UP


def test_every_violation_and_refusal_says_what_was_wrong() -> None:
    def violation(machine: PeerStreams, message: w.StreamMessage) -> object:
        with pytest.raises(ProtocolError) as caught:
            machine.receive(body(message))
        return caught.value.code, caught.value.message

    def refusal(machine: PeerStreams, stream: bytes, payload: bytes) -> object:
        with pytest.raises(StreamRefused) as caught:
            machine.send(stream, payload)
        return caught.value.reason, str(caught.value)

    early = PeerStreams(0xA)
    early.connected()
    assert violation(early, w.DataFrame(b"s", 1, b"")) == (
        ErrorCode.UNEXPECTED_MESSAGE,
        "DataFrame before the peer's HelloFrame",
    )
    assert violation(early, w.AckFrame(b"s", 1)) == (
        ErrorCode.UNEXPECTED_MESSAGE,
        "AckFrame before the peer's HelloFrame",
    )
    _, b, _ = connected(max_streams=2)
    assert violation(b, w.DataFrame(b"s", 2, b"")) == (
        ErrorCode.STREAM_SEQUENCE,
        "message 2 of stream b's', which it never opened",
    )
    for seq in (1, 2, 3):
        b.receive(body(w.DataFrame(b"s", seq, b"")))
    assert violation(b, w.DataFrame(b"s", 2, b"")) == (
        ErrorCode.STREAM_SEQUENCE,
        "message 2 of stream b's' after 3 on the same connection",
    )
    b.receive(body(w.DataFrame(b"t", 1, b"")))
    assert violation(b, w.DataFrame(b"u", 1, b"")) == (
        ErrorCode.STREAM_LIMIT,
        "a stream past the limit of 2",
    )
    a, _, link = connected(max_streams=2, window=100)
    a.send(b"p", b"x")
    a.send(b"p", b"y")
    assert violation(a, w.AckFrame(b"p", 3)) == (
        ErrorCode.STREAM_ACK,
        "acknowledgement 3 of stream b'p': 2 were sent",
    )
    assert violation(a, w.AckFrame(b"never", 1)) == (
        ErrorCode.STREAM_ACK,
        "acknowledgement 1 of stream b'never', never sent",
    )
    assert refusal(a, b"p", bytes(101)) == (
        Refusal.TOO_LARGE,
        "a message of 101 bytes exceeds the window of 100",
    )
    a.send(b"q", b"")
    assert refusal(a, b"r", b"") == (
        Refusal.TOO_MANY_STREAMS,
        "2 streams are open or being reset already",
    )
    a.reset(b"p")
    assert refusal(a, b"p", b"") == (Refusal.RESETTING, "stream b'p' is being reset")
    a.reset(b"q")
    link.pump()  # both resets answered: the places are free
    assert a.stream_count == 0
    for bad in (b"", b"x" * 256):
        with pytest.raises(ValueError) as caught:
            a.send(bad, b"")
        assert str(caught.value) == "a stream id is 1 to 255 bytes"


def test_a_restart_resets_the_count_of_the_peers_resets_taken() -> None:
    """Our hello tells the peer which of its resets we took: counted anew
    for its new incarnation, whose first reset is number 1 again."""
    b = PeerStreams(0xB)
    b.connected()
    b.receive(body(w.HelloFrame(0xA, 100, 10, 0)))
    b.receive(body(w.ResetFrame(b"s", 2, 3)))
    assert b.peer_resets == 3
    b.disconnected()
    b.connected()
    assert frames(b) == [w.HelloFrame(0xB, 1 << 20, 1024, 3)]
    b.receive(body(w.HelloFrame(0xA2, 100, 10, 0)))  # a restarted
    assert b.peer_resets == 0
    b.disconnected()
    b.connected()
    assert frames(b) == [w.HelloFrame(0xB, 1 << 20, 1024, 0)]


def test_only_the_peers_first_hello_drops_streams_past_its_limit() -> None:
    """A later hello with a smaller limit ends nothing (the streams were
    accepted); it only bounds the new ones."""
    a = PeerStreams(0xA)
    a.connected()
    a.receive(body(w.HelloFrame(0xB, 100, 2, 0)))
    a.send(b"1", b"one")
    a.send(b"2", b"two")
    a.disconnected()
    a.connected()
    a.data_to_send()
    a.receive(body(w.HelloFrame(0xB, 100, 1, 0)))
    assert a.events() == []
    assert frames(a) == [w.DataFrame(b"1", 1, b"one"), w.DataFrame(b"2", 1, b"two")]
    assert a.state(b"1") is a.state(b"2") is StreamState.OPEN
    assert a.peer_max_streams == 1
    with pytest.raises(StreamRefused) as caught:
        a.send(b"3", b"")
    assert caught.value.reason is Refusal.TOO_MANY_STREAMS


def test_streams_reset_for_a_restart_take_our_places_not_the_new_incarnations() -> None:
    b = PeerStreams(0xB, StreamSettings(max_streams=1))
    b.connected()
    b.receive(body(w.HelloFrame(0xA, 100, 1, 0)))
    b.receive(body(w.DataFrame(b"s", 1, b"old")))  # the peer's one stream
    b.disconnected()
    b.connected()
    b.receive(body(w.HelloFrame(0xA2, 100, 1, 0)))  # a restarted
    assert b.events() == [
        Delivered(b"s", [b"old"]),
        Reset(b"s", w.ResetCode.RESTARTED, remote=False),
    ]
    assert frames(b)[1:] == [w.ResetFrame(b"s", w.ResetCode.RESTARTED, 1)]
    # The new incarnation may open its one stream, and no more.
    b.receive(body(w.DataFrame(b"t", 1, b"new")))
    assert b.events() == [Delivered(b"t", [b"new"])]
    assert raises(b, w.DataFrame(b"u", 1, b"")) is ErrorCode.STREAM_LIMIT
    # "s" holds our one place until its reset is answered, then frees it.
    with pytest.raises(StreamRefused) as caught:
        b.send(b"v", b"")
    assert caught.value.reason is Refusal.TOO_MANY_STREAMS
    b.receive(body(w.ResetFrame(b"s", w.ResetCode.RESTARTED, 1, answer=True)))
    assert b.state(b"s") is StreamState.ABSENT
    assert b.send(b"v", b"")
    with pytest.raises(StreamRefused):
        b.send(b"w", b"")


def test_a_row_of_one_streams_messages_is_one_event() -> None:
    """No object per message on the receiving path: consecutive messages of
    a stream come as one Delivered, in order; another stream's between them
    starts a new one, so the order across streams is kept too."""
    _, b, _ = connected(ack_every=1000)
    for frame in (
        w.DataFrame(b"s", 1, b"1"),
        w.DataFrame(b"s", 2, b"2"),
        w.DataFrame(b"t", 1, b"3"),
        w.DataFrame(b"s", 3, b"4"),
    ):
        b.receive(body(frame))
    assert b.events() == [
        Delivered(b"s", [b"1", b"2"]),
        Delivered(b"t", [b"3"]),
        Delivered(b"s", [b"4"]),
    ]
    b.receive(body(w.DataFrame(b"s", 4, b"5")))  # a new row after events()
    assert b.events() == [Delivered(b"s", [b"5"])]
