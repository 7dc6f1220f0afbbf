"""The application's durable streams (``_adapters/stream_objects.py``), on
nodes in memory on one ``task.Clock``: what their errors and logs say,
``acknowledged`` waiting for the stream's own acknowledgements, and an ended
stream let go of by its peer's state.  (Delivery, backpressure and resets
end to end: ``test_streams.py``.)"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.logger import formatEvent

from blueprint_net import Identity
from blueprint_net._core.errors import SendQueueFull
from blueprint_net._core.stream_states import StreamSettings
from blueprint_net.errors import StreamReset
from blueprint_net.streams import ResetCode, Stream
from blueprint_net.testing import MemoryNetwork
from tests.adapters.test_streams import Inbox, open_both, pair

#: Acknowledgements only after ``ack_delay``: none while the clock stands.
SLOW_ACKS = StreamSettings(window=1000, ack_every=1000, ack_delay=0.05)


def test_a_stream_reset_says_who_ended_the_stream_in_so_many_words() -> None:
    peer = Identity.generate().peer_id
    ours = StreamReset(peer, b"s", int(ResetCode.CANCELLED), by_peer=False)
    theirs = StreamReset(peer, b"s", 1234, by_peer=True)
    assert str(ours) == f"stream b's' with {peer} reset by this node: CANCELLED"
    assert str(theirs) == f"stream b's' with {peer} reset by the peer: 1234"


def test_a_send_past_the_memory_budget_says_why(net: MemoryNetwork) -> None:
    a, b = pair(net)
    sa, *_ = open_both(a, b)
    a.memory.limit = a.memory.used
    with pytest.raises(SendQueueFull, match=r"^the node's memory budget is spent$"):
        sa.send(b"x")


def test_a_raising_callback_is_logged_naming_it_and_the_stream(
    net: MemoryNetwork, logged: list[dict[str, Any]]
) -> None:
    a, b = pair(net)

    def fussy(_: object) -> None:
        raise RuntimeError("boom")

    sa = a.stream(b.peer_id, b"s", lambda p: None)
    b.stream(a.peer_id, b"s", fussy, fussy)
    sa.send(b"1")
    net.pump()
    sa.reset(1234)
    net.pump()
    assert [formatEvent(e) for e in logged if "log_failure" in e] == [
        "on_message of stream b's' raised",
        "on_reset of stream b's' raised",
    ]


def test_acknowledged_on_a_closed_stream_fails_with_the_reset_that_closed_it(
    net: MemoryNetwork,
) -> None:
    a, b = pair(net)
    sa, *_ = open_both(a, b)
    sa.reset()
    with pytest.raises(StreamReset) as raised:
        sa.send(b"late")
    failures: list[Any] = []
    sa.acknowledged().addErrback(failures.append)
    assert [f.value for f in failures] == [raised.value]


def test_acknowledged_waits_for_the_streams_own_acknowledgements(
    net: MemoryNetwork,
) -> None:
    a, b = pair(net, SLOW_ACKS)
    sa, *_ = open_both(a, b)
    ua, _, ub, _ = open_both(a, b, b"u")
    assert sa.send(b"x") and ua.send(b"y")
    done = sa.acknowledged()
    net.pump()  # "x" is in; b acknowledges it after ack_delay
    ub.reset()  # meanwhile a frame of another kind reaches a
    net.pump()
    assert ua.closed and not done.called
    state = a.streams.peers[b.peer_id]
    assert len(state.draining) == 1
    net.advance(0.1)
    assert done.called
    assert state.draining == {}  # nobody waits: nothing to look at on acks


def test_an_ended_stream_is_let_go_of_by_its_peers_state(net: MemoryNetwork) -> None:
    a, b = pair(net, StreamSettings(window=4, ack_every=1000, ack_delay=0.05))
    sa, *_ = open_both(a, b)
    assert sa.send(b"xxxx")
    waiting = [sa.put(b"y"), sa.acknowledged()]
    state = a.streams.peers[b.peer_id]
    assert (len(state.waiting), len(state.draining)) == (1, 1)
    failures: list[Any] = []
    for deferred in waiting:
        deferred.addErrback(failures.append)
    sa.reset()
    assert [f.value.code for f in failures] == [ResetCode.CANCELLED] * 2
    assert state.waiting == {} and state.draining == {}


def test_a_stream_reset_in_anothers_on_reset_while_the_node_stops_ends_once(
    net: MemoryNetwork,
) -> None:
    """Stopping resets every open stream, reported; one whose application
    resets another in its ``on_reset`` has ended that one already: it is
    not ended again (found by mutation testing: it was reported to its
    ``on_reset``, ``CANCELLED`` instead of its own code)."""
    a, b = pair(net)
    first, second = Inbox(), Inbox()
    streams: dict[bytes, Stream] = {}

    def reset_the_second(error: StreamReset) -> None:
        first.reset(error)
        streams[b"2"].reset(1234)

    streams[b"1"] = a.stream(b.peer_id, b"1", first.message, reset_the_second)
    streams[b"2"] = a.stream(b.peer_id, b"2", second.message, second.reset)
    net.result(a.stop())
    assert [e.code for e in first.resets] == [ResetCode.CANCELLED]
    assert second.resets == []  # its application reset it: it knows
    with pytest.raises(StreamReset) as raised:
        streams[b"2"].send(b"late")
    assert raised.value.code == 1234
    resets = {k: n for k, n in a.counters.items() if k.startswith("streams.reset.")}
    assert resets == {"streams.reset.CANCELLED": 1, "streams.reset.application": 1}
