"""Party sessions on nodes (``_adapters/sessions.py``), in memory on one
``task.Clock``: rounds over durable streams, across cut links, with
backpressure, timeouts, violations and an equivocating party caught with
evidence that verifies offline."""

from __future__ import annotations

import gc
from itertools import combinations
from typing import Any

import pytest
from twisted.internet import defer
from twisted.logger import LogLevel, formatEvent

from blueprint_net import Node
from blueprint_net._adapters.sessions import VIOLATION_RESET, Session
from blueprint_net._core import session_wire as sw
from blueprint_net._core.errors import MalformedSessionMessage, SendQueueFull
from blueprint_net._core.stream_states import StreamSettings
from blueprint_net.errors import Equivocation, PartyLost, RoundTimeout, StreamReset
from blueprint_net.sessions import SessionSettings, verify_equivocation
from blueprint_net.testing import MemoryNetwork

SESSION = b"test-session"


def mesh(net: MemoryNetwork, n: int, **options: Any) -> list[Node]:
    nodes = [net.add_node(**options) for _ in range(n)]
    for a, b in combinations(nodes, 2):
        net.connect(a, b)
    return nodes


def sessions(nodes: list[Node], **options: Any) -> list[Session]:
    parties = [node.peer_id for node in nodes]
    made = [node.session(SESSION, parties, **options) for node in nodes]
    return sorted(made, key=lambda session: session.index)


@pytest.mark.parametrize("n", [3, 5])
def test_rounds_complete_over_streams(net: MemoryNetwork, n: int) -> None:
    group = sessions(mesh(net, n))
    assert [s.index for s in group] == list(range(n))
    assert group[0].parties == tuple(sorted(node.peer_id for node in net.nodes))
    gathered = []
    for s in group:
        s.broadcast(0, b"commit %d" % s.index, reliable=True)
        gathered.append(s.gather(0, timeout=10))
    for s, waiting in zip(group, gathered):
        assert net.result(waiting) == {
            j: b"commit %d" % j for j in range(n) if j != s.index
        }
    gathered = []
    for s in group:
        for j in range(n):
            if j != s.index:
                s.send(1, j, b"share %d->%d" % (s.index, j))
        gathered.append(s.gather(1))
    for s, waiting in zip(group, gathered):
        assert net.result(waiting) == {
            j: b"share %d->%d" % (j, s.index) for j in range(n) if j != s.index
        }


def test_a_round_completes_across_cut_links(net: MemoryNetwork) -> None:
    nodes = mesh(net, 3)
    group = sessions(nodes)
    for s in group[:2]:
        s.broadcast(0, b"b%d" % s.index, reliable=True)
    for a, b in combinations(nodes, 2):
        net.cut(a, b)
    group[2].broadcast(0, b"b2", reliable=True)
    waiting = [s.gather(0, timeout=60) for s in group]
    net.pump()
    assert not any(w.called for w in waiting)
    for a, b in combinations(nodes, 2):
        net.connect(a, b)
    for s, w in zip(group, waiting):
        assert net.result(w) == {j: b"b%d" % j for j in range(3) if j != s.index}


def test_a_full_window_holds_messages_until_room(net: MemoryNetwork) -> None:
    small = StreamSettings(window=600, ack_every=1)
    group = sessions(
        mesh(net, 2, streams=small),
        settings=SessionSettings(max_payload=500),
    )
    a, b = group
    for r in range(5):
        a.send(r, 1, bytes([r]) * 500)  # one fits the window at a time
    results = [b.gather(r) for r in range(5)]
    for r, waiting in enumerate(results):
        assert net.result(waiting) == {0: bytes([r]) * 500}


def test_a_missing_party_is_named_by_the_timeout(net: MemoryNetwork) -> None:
    group = sessions(mesh(net, 3))
    group[0].send(0, 2, b"x")
    waiting = group[2].gather(0, timeout=5.0)
    net.advance(4.9)
    assert not waiting.called
    net.advance(0.2)
    with pytest.raises(RoundTimeout) as caught:
        net.result(waiting)
    assert caught.value.missing == (1,)


def test_a_party_breaking_a_rule_is_reset_and_lost(net: MemoryNetwork) -> None:
    nodes = mesh(net, 2)
    parties = [node.peer_id for node in nodes]
    honest = nodes[0].session(SESSION, parties)
    other = nodes[1]
    resets: list[StreamReset] = []
    raw = other.stream(
        nodes[0].peer_id, honest._core.stream_name, lambda p: None, resets.append
    )
    waiting = honest.gather(0)
    raw.send(b"\x09 not a session message")
    with pytest.raises(PartyLost) as caught:
        net.result(waiting)
    assert isinstance(caught.value.reason, MalformedSessionMessage)
    net.pump()
    assert [r.code for r in resets] == [VIOLATION_RESET] and resets[0].by_peer
    assert honest.violations == {1 - honest.index: 1}
    # Charged to the party that sent it, as a connection's failure is.
    assert nodes[0].counters["sessions.violation.malformed"] == 1
    assert nodes[0].counters["misbehaviour"] == 1


def test_an_equivocating_party_is_caught_with_evidence(net: MemoryNetwork) -> None:
    nodes = mesh(net, 3)
    parties = [node.peer_id for node in nodes]
    liar = max(nodes, key=lambda node: node.peer_id.public_key)  # party 2
    honest = [node.session(SESSION, parties) for node in nodes if node is not liar]
    digest = honest[0]._core.digest
    for s, payload in zip(honest, (b"A", b"B")):
        s.broadcast(0, b"honest %d" % s.index, reliable=True)
        signature = liar.identity.sign(sw.signed_bytes(digest, 0, 2, payload))
        message = sw.Broadcast(2, 0, payload, signature, reliable=True)
        stream = liar.stream(
            s.parties[s.index], honest[0]._core.stream_name, lambda p: None
        )
        stream.send(sw.encode(message))
    for s in honest:
        with pytest.raises(Equivocation) as caught:
            net.result(s.gather(0))
        evidence = caught.value.evidence
        assert evidence.origin == 2
        assert verify_equivocation(evidence, SESSION, parties)
        assert verify_equivocation(
            sw.decode_evidence(sw.encode_evidence(evidence)), SESSION, parties
        )


def test_close_cancels_what_waits_and_resets_the_streams(net: MemoryNetwork) -> None:
    group = sessions(mesh(net, 2))
    group[0].send(0, 1, b"x")
    assert net.result(group[1].gather(0)) == {0: b"x"}
    waiting = group[0].gather(1, timeout=5)
    closing = group[0].close()
    assert waiting.called
    failures: list[object] = []
    waiting.addErrback(failures.append)
    assert len(failures) == 1
    net.advance(0.1)  # the batched acknowledgement of b"x"
    net.result(closing)
    with pytest.raises(PartyLost) as caught:
        net.result(group[1].gather(1))
    reason = caught.value.reason
    assert isinstance(reason, StreamReset) and reason.by_peer
    net.advance(10)  # no timer left behind


def test_close_waits_until_the_others_have_what_was_sent(net: MemoryNetwork) -> None:
    """A party that finishes first and closes must not take its last
    messages with it: the reset waits for their acknowledgement, and a
    round that has everything from the closed party completes."""
    group = sessions(mesh(net, 3))
    for s in group:
        s.broadcast(0, b"commit %d" % s.index, reliable=True)
    assert net.result(group[0].gather(0)) == {1: b"commit 1", 2: b"commit 2"}
    closing = group[0].close()
    assert not closing.called  # our echo is not acknowledged yet
    for s in group[1:]:
        assert net.result(s.gather(0)) == {
            j: b"commit %d" % j for j in range(3) if j != s.index
        }
    net.advance(0.1)  # the batched acknowledgements
    net.result(closing)


def test_close_resets_after_the_linger_if_nothing_is_acknowledged(
    net: MemoryNetwork,
) -> None:
    nodes = mesh(net, 2)
    group = sessions(nodes)
    net.cut(nodes[0], nodes[1])
    group[0].send(0, 1, b"never acknowledged")
    closing = group[0].close(linger=3.0)
    net.advance(2.9)
    assert not closing.called
    net.advance(0.2)
    assert closing.called


def test_a_party_that_gave_everything_and_closed_is_not_missed(
    net: MemoryNetwork,
) -> None:
    """Party 0 finishes round 0 and closes while party 1 still waits for
    party 2 (their link is down): party 1's round goes on, since it has
    everything from party 0, and completes once the link is back."""
    nodes = sorted(mesh(net, 3), key=lambda node: node.peer_id.public_key)
    group = sessions(nodes)
    net.cut(nodes[1], nodes[2])
    for s in group:
        for j in range(3):
            if j != s.index:
                s.send(0, j, b"%d->%d" % (s.index, j))
    assert net.result(group[0].gather(0)) == {1: b"1->0", 2: b"2->0"}
    closing = group[0].close()
    net.advance(0.1)  # the batched acknowledgements
    net.result(closing)
    waiting = group[1].gather(0, timeout=30)
    net.pump()
    assert not waiting.called  # not failed: party 0 gave all it had to
    net.connect(nodes[1], nodes[2])
    net.advance(0.1)
    assert net.result(waiting) == {0: b"0->1", 2: b"2->1"}


def test_a_session_keeps_its_id_and_its_settings(net: MemoryNetwork) -> None:
    a, b = sessions(mesh(net, 2), settings=SessionSettings(max_payload=100))
    assert a.session_id == SESSION
    assert repr(a) == f"<Session {SESSION!r} party 0 of 2>"
    with pytest.raises(ValueError, match="a payload of 101 bytes; the limit is 100"):
        a.send(0, 1, b"x" * 101)
    a.send(0, 1, b"x" * 100)
    assert net.result(b.gather(0)) == {0: b"x" * 100}


def test_a_broadcast_is_without_echo_unless_asked(net: MemoryNetwork) -> None:
    a, b = sessions(mesh(net, 2))
    a.broadcast(0, b"plain")
    b.send(0, 0, b"direct")  # a round without echo: a plain broadcast fits it
    assert net.result(b.gather(0)) == {0: b"plain"}
    assert net.result(a.gather(0)) == {1: b"direct"}
    assert a.violations == b.violations == {}


def test_a_violation_is_logged_with_its_fields_and_counted_per_rule(
    net: MemoryNetwork, logged: list[dict[str, Any]]
) -> None:
    a, b = sessions(mesh(net, 2))
    for r in (0, 1):  # b broadcasts with echo where a sends without
        b.broadcast(r, b"r%d" % r, reliable=True)
    net.pump()
    assert a.violations == {}  # held until a's own message fixes the kind
    a.send(0, 1, b"d0")
    a.send(1, 1, b"d1")  # b's held message of round 1 broke the rule too
    net.pump()
    assert a.violations == {1: 2}
    events = [e for e in logged if e.get("rule") and e.get("party") == 1]
    assert [
        (e["session"], e["party"], e["peer"], e["rule"], e["error"]) for e in events
    ] == [
        (
            SESSION,
            1,
            str(b.parties[1]),
            "WrongKind",
            f"party 1's message of round {r} does not match the round (without echo)",
        )
        for r in (0, 1)
    ]
    assert all(e["log_level"] is LogLevel.warn for e in events)
    assert formatEvent(events[0]) == (
        f"session {SESSION!r}: party 1 ({b.parties[1]}) broke a rule:"
        f" {events[0]['error']}"
    )


def test_a_send_the_memory_budget_refuses_loses_the_party(net: MemoryNetwork) -> None:
    nodes = mesh(net, 2)
    a, b = sessions(nodes)
    node_a = next(n for n in nodes if n.peer_id == a.parties[a.index])
    a.send(0, 1, b"x")
    assert net.result(b.gather(0)) == {0: b"x"}
    waiting = a.gather(1)
    node_a.memory.limit = node_a.memory.used + 5
    a.send(1, 1, b"x" * 6)
    with pytest.raises(PartyLost) as caught:
        net.result(waiting)
    assert caught.value.party == 1
    assert isinstance(caught.value.reason, SendQueueFull)
    # The stream is reset, so the other party loses this one too.
    with pytest.raises(PartyLost) as theirs:
        net.result(b.gather(1))
    assert theirs.value.party == 0
    reason = theirs.value.reason
    assert isinstance(reason, StreamReset) and reason.by_peer


def test_a_closed_session_takes_no_more_sends_or_gathers(net: MemoryNetwork) -> None:
    a, _ = sessions(mesh(net, 2))
    waiting = a.gather(1)
    a.close()
    waiting.addErrback(lambda failure: None)
    for call in (
        lambda: a.send(1, 1, b"x"),
        lambda: a.broadcast(2, b"y"),
        lambda: a.gather(3),
    ):
        with pytest.raises(ValueError, match=r"^the session is closed$"):
            call()


def test_a_message_during_the_linger_sets_no_timer(net: MemoryNetwork) -> None:
    """A round gathered with a deadline, then closed: a message that comes
    while the close waits for acknowledgements arms no deadline again."""
    a, b = sessions(mesh(net, 2))
    a.gather(0, timeout=100).addErrback(lambda failure: None)
    a.send(0, 1, b"x")
    closing = a.close(linger=5)
    b.send(0, 0, b"y")  # reaches a during its linger
    net.advance(0.1)
    net.result(closing)
    assert [c for c in net.clock.getDelayedCalls() if c.getTime() > 50] == []


def test_close_without_a_timer_and_a_reset_while_blocked(
    net: MemoryNetwork, logged: list[dict[str, Any]]
) -> None:
    small = StreamSettings(window=600, ack_every=1)
    a, b = sessions(
        mesh(net, 2, streams=small), settings=SessionSettings(max_payload=500)
    )
    gc.collect()  # what earlier tests left
    logged.clear()
    a.send(0, 1, b"0" * 500)
    a.send(1, 1, b"1" * 500)  # no room: waits for it
    a.close()  # no timer to cancel; the wait fails with the reset
    del a, b  # (a failure left in a Deferred is logged when it is collected)
    gc.collect()
    assert [e for e in logged if "log_failure" in e] == []


def test_close_cancels_the_gathers_timer(net: MemoryNetwork) -> None:
    a, _ = sessions(mesh(net, 2))
    a.gather(0, timeout=5).addErrback(lambda failure: None)
    a.close()
    net.stop()  # raises if a timer is left pending


def test_the_timer_follows_the_earliest_deadline(net: MemoryNetwork) -> None:
    a, _ = sessions(mesh(net, 2))
    net.advance(100)  # deadlines are times, delays are what is left of them
    later = a.gather(0, timeout=10)
    sooner = a.gather(1, timeout=0.5)
    net.advance(0.5)
    with pytest.raises(RoundTimeout) as caught:
        net.result(sooner)
    assert caught.value.missing == (1,)
    net.advance(9.4)
    assert not later.called
    net.advance(0.1)
    with pytest.raises(RoundTimeout):
        net.result(later)


# -- what the mutation run asked for ---------------------------------------------


def test_close_waits_for_every_held_message_not_only_for_room(
    net: MemoryNetwork,
) -> None:
    """Messages held for room when the session closes are all sent and
    acknowledged before the reset: the close waits past the first room."""
    small = StreamSettings(window=600, ack_every=1)
    a, b = sessions(
        mesh(net, 2, streams=small), settings=SessionSettings(max_payload=500)
    )
    for r in range(4):
        a.send(r, 1, bytes([r]) * 500)  # one fits the window at a time
    closing = a.close()
    results = [b.gather(r) for r in range(4)]
    for r, waiting in enumerate(results):
        assert net.result(waiting) == {0: bytes([r]) * 500}
    net.advance(0.1)
    assert net.result(closing) is None


def test_close_lingers_ten_seconds_by_default(net: MemoryNetwork) -> None:
    nodes = mesh(net, 2)
    a, _ = sessions(nodes)
    net.cut(nodes[0], nodes[1])
    a.send(0, 1, b"never acknowledged")
    closing = a.close()
    net.advance(9.9)
    assert not closing.called
    net.advance(0.2)
    assert net.result(closing) is None


def test_a_linger_that_runs_out_while_messages_wait_leaves_no_error(
    net: MemoryNetwork, logged: list[dict[str, Any]]
) -> None:
    """The close's waits are cancelled and our message's wait for room
    fails with the reset: each is handled, none is left to be logged."""
    small = StreamSettings(window=600, ack_every=1)
    nodes = mesh(net, 2, streams=small)
    a, b = sessions(nodes, settings=SessionSettings(max_payload=500))
    net.cut(nodes[0], nodes[1])
    gc.collect()  # what earlier tests left
    logged.clear()
    a.send(0, 1, b"0" * 500)
    a.send(1, 1, b"1" * 500)  # no room: waits for it
    closing = a.close(linger=1.0)
    net.advance(1.1)  # the waits are cancelled, the streams reset
    assert net.result(closing) is None
    del a, b, closing  # (a failure left in a Deferred is logged when collected)
    gc.collect()
    assert [e for e in logged if "log_failure" in e] == []


def test_a_round_completed_during_the_linger_reports_nothing(
    net: MemoryNetwork, logged: list[dict[str, Any]]
) -> None:
    """Close cancelled the round's gather: its completion, when the other
    party's message comes during the linger, fires nothing and raises
    nothing."""
    a, b = sessions(mesh(net, 2))
    failures: list[Any] = []
    a.gather(0).addErrback(failures.append)
    a.send(0, 1, b"x")
    closing = a.close()
    b.send(0, 0, b"y")  # reaches a during its linger: a's round 0 is complete
    net.advance(0.1)
    net.result(closing)
    assert [f.type for f in failures] == [defer.CancelledError]
    assert [e for e in logged if "log_failure" in e] == []
