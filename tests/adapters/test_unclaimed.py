"""Messages of streams the application has not opened
(``_adapters/unclaimed.py``), on nodes in memory on one ``task.Clock``: each
reset past a bound counted and logged, and the bytes of streams claimed
together handed over whole.  (The bounds themselves: ``test_streams.py``.)"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.logger import formatEvent

from blueprint_net._core import telemetry
from blueprint_net.testing import MemoryNetwork
from tests.adapters.test_streams import SMALL, Inbox, pair


def test_every_unclaimed_reset_is_counted_and_logged(
    net: MemoryNetwork, logged: list[dict[str, Any]]
) -> None:
    a, b = pair(net, attrs.evolve(SMALL, max_unclaimed_streams=1))
    for name in (b"s0", b"s1", b"s2"):
        a.stream(b.peer_id, name, lambda p: None).send(b"hi")
    net.pump()  # s0 is held; s1 and s2 pass the bound
    counters = b.counters
    assert counters[telemetry.STREAM_UNCLAIMED_RESETS.key_for("streams")] == 2
    assert counters[telemetry.STREAM_RESETS.key_for("UNCLAIMED")] == 2
    assert counters[telemetry.STREAM_RESETS.key_for("application")] == 0
    events = [
        e
        for e in logged
        if str(e.get("log_namespace")).startswith("blueprint_net._adapters.unclaimed")
    ]
    assert [formatEvent(e) for e in events] == [
        f"stream {name!r} of {a.peer_id} reset: unclaimed (streams)"
        for name in (b"s1", b"s2")
    ]
    assert [(e["stream"], e["peer_id"], e["reason"]) for e in events] == [
        (name, str(a.peer_id), "streams") for name in (b"s1", b"s2")
    ]


def test_streams_claimed_together_hand_over_all_their_bytes(
    net: MemoryNetwork,
) -> None:
    a, b = pair(net)
    for name, payload in ((b"s", b"12"), (b"t", b"345")):
        a.stream(b.peer_id, name, lambda p: None).send(payload)
    net.pump()
    state = b.streams.peers[a.peer_id]
    assert (state.unclaimed_bytes, state.handed, b.memory.used) == (5, 0, 5)
    inboxes = {name: Inbox() for name in (b"s", b"t")}
    for name, inbox in inboxes.items():  # both claimed before either hands over
        b.stream(a.peer_id, name, inbox.message)
    assert (state.unclaimed_bytes, state.handed) == (0, 5)
    assert state not in b.streams.unclaimed.holding  # nothing left to time out
    net.pump()
    assert [i.messages for i in inboxes.values()] == [[b"12"], [b"345"]]
    assert (state.handed, state.charged, b.memory.used) == (0, 0, 0)
