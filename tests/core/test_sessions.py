"""Party sessions, sans-IO: several parties driven by passing each one's
outputs to the others; a dishonest party is played by hand with its key."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Optional

import pytest

from blueprint_net._core import session_states as st
from blueprint_net._core import session_wire as sw
from blueprint_net._core import sessions as s
from blueprint_net._core import signatures
from blueprint_net._core.errors import (
    BadBroadcastSignature,
    DuplicateMessage,
    FalseEcho,
    MalformedSessionMessage,
    NotAParty,
    OversizedMessage,
    PartyLost,
    RoundTimeout,
    RoundTooFar,
    SessionBufferFull,
    SessionViolation,
    UnexpectedRelay,
    WrongIndex,
    WrongKind,
)
from blueprint_net._core.identity import Identity, PeerId
from blueprint_net._core.session_echo import verify_equivocation

SESSION = b"dkg-2026-12-06"
IDENTITIES = [Identity(bytes([i + 1]) * 32) for i in range(5)]
#: In index order (the bytewise order of the keys).
BY_INDEX = sorted(IDENTITIES, key=lambda identity: identity.public_key)
STRANGER = Identity(b"\x77" * 32)

#: (from index, to index, data) -> the data to deliver, or None to hold it.
Filter = Callable[[int, int, bytes], Optional[bytes]]


class Net:
    """``n`` parties (the first ``n`` keys in index order); every party in
    ``manual`` is played by the test: its outputs are kept, not sent."""

    def __init__(
        self,
        n: int,
        manual: frozenset[int] = frozenset(),
        settings: Optional[st.SessionSettings] = None,
    ) -> None:
        settings = settings or st.SessionSettings()
        self.identities = BY_INDEX[:n]
        peers = [identity.peer_id for identity in self.identities]
        self.sessions = [
            s.PartySession(identity, SESSION, list(reversed(peers)), settings)
            for identity in self.identities
        ]
        self.manual = manual
        self.held: list[tuple[int, int, bytes]] = []
        self.results: dict[int, list[st.Output]] = {i: [] for i in range(n)}
        self.sent: dict[int, list[tuple[int, bytes]]] = {i: [] for i in range(n)}
        self.filter: Optional[Filter] = None

    def peer(self, index: int) -> PeerId:
        return self.identities[index].peer_id

    def deliver(self, source: int, to: int, data: bytes) -> None:
        if to not in self.manual:
            self.sessions[to].receive(self.peer(source), data)

    def pump(self) -> None:
        moved = True
        while moved:
            moved = False
            for index, session in enumerate(self.sessions):
                for output in session.outputs():
                    moved = True
                    if isinstance(output, st.Outgoing):
                        self.sent[index].append((output.to, output.data))
                        if index in self.manual:
                            continue
                        data: Optional[bytes] = output.data
                        if self.filter is not None:
                            data = self.filter(index, output.to, output.data)
                        if data is None:
                            self.held.append((index, output.to, output.data))
                        else:
                            self.deliver(index, output.to, data)
                    else:
                        self.results[index].append(output)

    def release(self) -> None:
        held, self.held = self.held, []
        for source, to, data in held:
            self.deliver(source, to, data)
        self.pump()

    def take(self, index: int) -> list[st.Output]:
        results, self.results[index] = self.results[index], []
        return results

    def honest(self) -> list[int]:
        return [i for i in range(len(self.sessions)) if i not in self.manual]


def sign(index: int, round: int, payload: bytes, n: int) -> bytes:
    keys = [identity.public_key for identity in BY_INDEX[:n]]
    digest = sw.session_digest(SESSION, keys)
    return BY_INDEX[index].sign(sw.signed_bytes(digest, round, index, payload))


def broadcast(index: int, round: int, payload: bytes, n: int, reliable: bool) -> bytes:
    signature = sign(index, round, payload, n)
    return sw.encode(sw.Broadcast(index, round, payload, signature, reliable))


def completed(net: Net, index: int) -> dict[int, dict[int, bytes]]:
    results = net.take(index)
    assert all(isinstance(r, st.Completed) for r in results), results
    return {r.round: r.messages for r in results if isinstance(r, st.Completed)}


def failure(net: Net, index: int) -> BaseException:
    [result] = net.take(index)
    assert isinstance(result, st.Failed), result
    return result.error


def violations(net: Net, index: int) -> list[tuple[PeerId, SessionViolation]]:
    results = net.take(index)
    return [(r.peer, r.error) for r in results if isinstance(r, st.Violation)]


# -- who is who ----------------------------------------------------------------


def test_the_index_is_the_rank_of_the_key_and_the_digest_binds_the_list() -> None:
    net = Net(5)
    for index, session in enumerate(net.sessions):
        assert session.index == index
        assert session.parties == tuple(i.peer_id for i in BY_INDEX[:5])
        assert session.n == 5
    keys = sorted(identity.public_key for identity in IDENTITIES)
    first = net.sessions[0]
    expected = hashlib.sha256(
        b"blueprint-net/session/v1\x00"
        + bytes([len(SESSION)])
        + SESSION
        + b"".join(keys)
    ).digest()
    assert {session.digest for session in net.sessions} == {expected}
    assert first.stream_name == b"bn/session/" + expected[:16]
    fewer = s.PartySession(BY_INDEX[0], SESSION, [i.peer_id for i in BY_INDEX[:4]])
    other_id = s.PartySession(BY_INDEX[0], SESSION + b"!", first.parties)
    assert len({first.digest, fewer.digest, other_id.digest}) == 3


class _Recording(signatures.NaClBackend):
    """The default curve work, noting each message it verifies."""

    def __init__(self) -> None:
        super().__init__()
        self.verified: list[bytes] = []

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        self.verified.append(message)
        return super().verify(public_key, message, signature)


def test_broadcasts_verify_with_the_backend_of_the_identity() -> None:
    backend = _Recording()
    seed = bytes([IDENTITIES.index(BY_INDEX[0]) + 1]) * 32  # party 0's
    me = Identity(seed, backend)
    session = s.PartySession(me, SESSION, [i.peer_id for i in BY_INDEX[:2]])
    session.receive(BY_INDEX[1].peer_id, broadcast(1, 0, b"hi", 2, False))
    assert backend.verified == [sw.signed_bytes(session.digest, 0, 1, b"hi")]
    session.broadcast(0, b"mine")
    session.gather(0)
    assert [type(o) for o in session.outputs()] == [st.Outgoing, st.Completed]


@pytest.mark.parametrize(
    ("parties", "match"),
    [
        ([BY_INDEX[1].peer_id, BY_INDEX[2].peer_id], "own peer id"),
        ([BY_INDEX[0].peer_id], "2 to"),
        ([BY_INDEX[0].peer_id, BY_INDEX[0].peer_id, BY_INDEX[1].peer_id], "twice"),
    ],
)
def test_a_party_list_no_session_can_have_is_refused(
    parties: list[PeerId], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        s.PartySession(BY_INDEX[0], SESSION, parties)


@pytest.mark.parametrize("session_id", [b"", b"x" * 256])
def test_a_session_id_is_1_to_255_bytes(session_id: bytes) -> None:
    with pytest.raises(ValueError, match="1 to 255"):
        s.PartySession(BY_INDEX[0], session_id, [i.peer_id for i in BY_INDEX[:2]])


@pytest.mark.parametrize(
    "settings",
    [
        {"max_rounds_ahead": 0},
        {"max_rounds_ahead": 2**32},
        {"max_buffered": 0},
        {"max_payload": -1},
        {"max_payload": 2**32},
    ],
)
def test_settings_out_of_range_are_refused(settings: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        st.SessionSettings(**settings)


def test_settings_at_their_bounds_are_taken() -> None:
    st.SessionSettings(max_rounds_ahead=1, max_buffered=1, max_payload=0)
    st.SessionSettings(max_rounds_ahead=2**32 - 1, max_payload=2**32 - 1)


# -- complete rounds -------------------------------------------------------------


@pytest.mark.parametrize("n", [3, 5])
def test_rounds_of_every_kind_complete(n: int) -> None:
    net = Net(n)
    for session in net.sessions:
        session.broadcast(0, b"plain %d" % session.index)
        session.gather(0)
        for to in range(n):
            if to != session.index:
                session.send(1, to, b"%d to %d" % (session.index, to))
        session.gather(1)
        session.broadcast(2, b"reliable %d" % session.index, reliable=True)
        session.gather(2)
    net.pump()
    for i in range(n):
        others = [j for j in range(n) if j != i]
        assert completed(net, i) == {
            0: {j: b"plain %d" % j for j in others},
            1: {j: b"%d to %d" % (j, i) for j in others},
            2: {j: b"reliable %d" % j for j in others},
        }
        assert net.sessions[i].base == 3
        assert net.sessions[i].held == dict.fromkeys(range(n), 0)
        assert net.sessions[i].next_deadline() is None


def test_a_reliable_round_costs_one_echo_to_each_party() -> None:
    net = Net(3)
    for session in net.sessions:
        session.broadcast(0, b"x", reliable=True)
        session.gather(0)
    net.pump()
    kinds = [data[0] for _, data in net.sent[0]]
    assert kinds == [sw.K_RELIABLE] * 2 + [sw.K_ECHO] * 2
    net = Net(3)
    for session in net.sessions:
        session.broadcast(0, b"x")
        session.gather(0)
    net.pump()
    assert [data[0] for _, data in net.sent[0]] == [sw.K_BROADCAST] * 2


def test_a_round_gathered_before_its_messages_completes_when_they_arrive() -> None:
    net = Net(3)
    net.sessions[0].gather(0)
    assert net.sessions[0].state(0) is st.RoundState.OPEN
    net.sessions[1].send(0, 0, b"a")
    net.pump()
    assert net.take(0) == []
    net.sessions[2].send(0, 0, b"b")
    net.pump()
    assert completed(net, 0) == {0: {1: b"a", 2: b"b"}}


def test_a_round_complete_before_it_is_gathered_waits_for_it() -> None:
    net = Net(3)
    net.sessions[1].send(0, 0, b"a")
    net.sessions[2].send(0, 0, b"b")
    net.pump()
    assert net.sessions[0].state(0) is st.RoundState.DONE
    assert net.take(0) == []
    net.sessions[0].send(0, 1, b"late but fine")
    net.sessions[0].gather(0)
    net.pump()
    assert completed(net, 0) == {0: {1: b"a", 2: b"b"}}
    assert net.sessions[0].state(0) is st.RoundState.ABSENT  # forgotten


def test_rounds_arriving_out_of_order_are_delivered_per_round() -> None:
    """Party 0 gets every round-1 message before any of round 0."""
    net = Net(3)
    net.filter = lambda source, to, data: (
        None if to == 0 and sw.decode(data).round == 0 else data
    )
    for session in net.sessions:
        session.broadcast(0, b"r0 %d" % session.index, reliable=True)
    net.pump()
    for session in net.sessions[1:]:
        session.gather(0)
        session.broadcast(1, b"r1 %d" % session.index)
    net.pump()
    net.sessions[0].gather(0)
    net.sessions[0].broadcast(1, b"r1 0")
    net.pump()
    assert net.take(0) == []
    assert net.sessions[0].state(0) is st.RoundState.OPEN
    assert net.sessions[0].state(1) is st.RoundState.DONE
    net.filter = None
    net.release()
    net.sessions[0].gather(1)
    net.pump()
    assert completed(net, 0) == {
        0: {1: b"r0 1", 2: b"r0 2"},
        1: {1: b"r1 1", 2: b"r1 2"},
    }
    assert net.sessions[0].base == 2


def test_rounds_may_be_gathered_out_of_order() -> None:
    net = Net(2)
    a, b = net.sessions
    b.send(0, 0, b"zero")
    b.send(1, 0, b"one")
    net.pump()
    a.gather(1)
    net.pump()
    assert completed(net, 0) == {1: {1: b"one"}}
    assert a.base == 0  # round 0 is not finished: round 1 is kept as finished
    assert a.state(1) is st.RoundState.FINISHED
    a.gather(0)
    net.pump()
    assert completed(net, 0) == {0: {1: b"zero"}}
    assert a.base == 2 and a.state(1) is st.RoundState.ABSENT


def test_a_message_for_a_finished_round_is_dropped_and_counted() -> None:
    net = Net(3, manual=frozenset({2}))
    a = net.sessions[0]
    a.gather(0, deadline=5.0)
    net.sessions[1].send(0, 0, b"x")
    net.pump()
    a.tick(5.0)
    net.pump()
    assert isinstance(failure(net, 0), RoundTimeout)
    a.receive(net.peer(2), sw.encode(sw.Direct(2, 0, b"late")))
    a.receive(net.peer(1), sw.encode(sw.Direct(1, 0, b"again")))
    net.pump()
    assert a.late == 2
    assert net.take(0) == []  # late is no violation
    assert a.lost_parties == {}


def test_a_finished_round_kept_above_the_base_drops_late_messages() -> None:
    net = Net(2)
    a, b = net.sessions
    b.send(1, 0, b"one")
    net.pump()
    a.gather(1)
    net.pump()
    net.take(0)
    for data in (
        sw.encode(sw.Direct(1, 1, b"again")),
        broadcast(1, 1, b"again", 2, True),
        sw.encode(sw.Echo(1, 1, b"\0" * 32)),
        sw.encode(sw.Relay(1, 1, 0, b"", b"\0" * 64)),
    ):
        a.receive(b.identity.peer_id, data)
    assert a.late == 4
    assert net.take(0) == [] and a.outputs() == []


# -- the application's mistakes ----------------------------------------------------


def test_the_applications_mistakes_are_value_errors() -> None:
    net = Net(3)
    a = net.sessions[0]
    with pytest.raises(ValueError, match="party 0 is not another party"):
        a.send(0, 0, b"")
    with pytest.raises(ValueError, match="party 3 is not another"):
        a.send(0, 3, b"")
    with pytest.raises(ValueError, match="party -1 is not another"):
        a.send(0, -1, b"")
    a.send(0, 1, b"")
    with pytest.raises(ValueError, match="party 1 was sent a message"):
        a.send(0, 1, b"")
    with pytest.raises(ValueError, match="sent its message"):
        a.broadcast(0, b"")
    a.broadcast(1, b"")
    with pytest.raises(ValueError, match="broadcast already"):
        a.send(1, 2, b"")
    with pytest.raises(ValueError, match="sent its message"):
        a.broadcast(1, b"", reliable=True)
    with pytest.raises(ValueError, match="0 to 2"):
        a.gather(-1)
    with pytest.raises(ValueError, match="0 to 2"):
        a.gather(2**32)
    with pytest.raises(ValueError, match="more than 16 rounds past round 0"):
        a.broadcast(16, b"")
    a.broadcast(15, b"")
    a.gather(2)
    with pytest.raises(ValueError, match="round 2 is gathered already"):
        a.gather(2)
    limit = a.settings.max_payload
    with pytest.raises(ValueError, match=f"the limit is {limit}"):
        a.send(3, 1, b"x" * (limit + 1))
    a.send(3, 1, b"x" * limit)
    assert a.outputs()  # what was accepted went out; the refusals sent nothing


def test_sending_or_gathering_a_finished_round_is_refused() -> None:
    net = Net(2)
    a, b = net.sessions
    b.send(0, 0, b"x")
    b.send(1, 0, b"y")
    net.pump()
    a.gather(1)
    net.pump()
    with pytest.raises(ValueError, match="round 1 is finished"):
        a.send(1, 1, b"")
    with pytest.raises(ValueError, match="round 1 is gathered already"):
        a.gather(1)
    a.gather(0)
    net.pump()
    with pytest.raises(ValueError, match="round 0 is finished"):
        a.send(0, 1, b"")
    with pytest.raises(ValueError, match="round 1 is finished"):
        a.gather(1)


def test_a_round_complete_without_echo_takes_no_reliable_broadcast() -> None:
    net = Net(2)
    a, b = net.sessions
    b.send(0, 0, b"x")
    net.pump()
    assert a.state(0) is st.RoundState.DONE
    with pytest.raises(ValueError, match="ended without echo"):
        a.broadcast(0, b"", reliable=True)
    a.broadcast(0, b"plain is fine")
    net.pump()
    assert b.outputs() == [] and net.take(1) == []


# -- blame ----------------------------------------------------------------------------


def test_a_timeout_names_the_missing_parties() -> None:
    net = Net(5, manual=frozenset({1, 3}))
    a = net.sessions[0]
    a.gather(0, deadline=10.0)
    assert a.next_deadline() == 10.0
    for i in (2, 4):
        net.sessions[i].send(0, 0, b"here")
    net.pump()
    a.tick(9.999)
    assert net.take(0) == []
    a.tick(10.0)
    net.pump()
    error = failure(net, 0)
    assert isinstance(error, RoundTimeout)
    assert error.round == 0 and error.missing == (1, 3)
    assert "missing parties: 1, 3" in str(error)
    assert a.next_deadline() is None and a.base == 1


def test_a_round_without_a_deadline_never_times_out() -> None:
    net = Net(2, manual=frozenset({1}))
    net.sessions[0].gather(0)
    net.sessions[0].tick(1e12)
    assert net.sessions[0].outputs() == []


def test_a_reliable_round_times_out_on_missing_echoes() -> None:
    net = Net(3, manual=frozenset({2}))
    for session in net.sessions[:2]:
        session.broadcast(0, b"b%d" % session.index, reliable=True)
        session.gather(0, deadline=1.0)
    net.sessions[0].receive(net.peer(2), broadcast(2, 0, b"b2", 3, True))
    net.sessions[1].receive(net.peer(2), broadcast(2, 0, b"b2", 3, True))
    net.pump()
    for session in net.sessions[:2]:
        assert session.state(0) is st.RoundState.ECHOED
        session.tick(1.0)
    net.pump()
    for i in (0, 1):
        error = failure(net, i)
        assert isinstance(error, RoundTimeout) and error.missing == (2,)


def test_a_timeout_before_our_own_broadcast_names_no_one() -> None:
    """Every other party broadcast reliably; we never did."""
    net = Net(2, manual=frozenset({1}))
    a = net.sessions[0]
    a.gather(0, deadline=1.0)
    a.receive(net.peer(1), broadcast(1, 0, b"b", 2, True))
    assert a.state(0) is st.RoundState.OPEN
    a.tick(1.0)
    net.pump()
    error = failure(net, 0)
    assert isinstance(error, RoundTimeout) and error.missing == ()
    assert "never sent" in str(error)


def _equivocation(n: int, liar: int) -> Net:
    """Party ``liar`` sends one signed broadcast to the first half of the
    honest parties and another to the rest in a reliable round."""
    net = Net(n, manual=frozenset({liar}))
    for i in net.honest():
        net.sessions[i].broadcast(0, b"honest %d" % i, reliable=True)
        net.sessions[i].gather(0, deadline=30.0)
    honest = net.honest()
    for i in honest:
        payload = b"A" if i in honest[: len(honest) // 2] else b"B"
        net.sessions[i].receive(net.peer(liar), broadcast(liar, 0, payload, n, True))
    net.pump()
    return net


@pytest.mark.parametrize(("n", "liar"), [(3, 2), (3, 0), (5, 1)])
def test_equivocation_is_caught_with_evidence_that_verifies_offline(
    n: int, liar: int
) -> None:
    net = _equivocation(n, liar)
    parties = [identity.peer_id for identity in BY_INDEX[:n]]
    for i in net.honest():
        error = failure(net, i)
        assert isinstance(error, st.Equivocation), error
        evidence = error.evidence
        assert evidence.origin == liar and evidence.round == 0
        assert (evidence.first.payload, evidence.second.payload) == (b"A", b"B")
        assert f"party {liar} signed two different broadcasts" in str(error)
        assert verify_equivocation(evidence, SESSION, parties)
        assert verify_equivocation(evidence, SESSION, list(reversed(parties)))
        data = sw.encode_evidence(evidence)
        assert sw.decode_evidence(data) == evidence


def test_tampered_evidence_does_not_verify() -> None:
    net = _equivocation(3, 2)
    error = failure(net, 0)
    assert isinstance(error, st.Equivocation)
    evidence = error.evidence
    parties = [identity.peer_id for identity in BY_INDEX[:3]]
    first, second = evidence.first, evidence.second
    forged = sw.SignedBroadcast(b"C", second.signature)
    tampered = [
        sw.EquivocationEvidence(1, 2, first, second),  # another round
        sw.EquivocationEvidence(0, 1, first, second),  # another origin
        sw.EquivocationEvidence(0, 3, first, second),  # no such party
        sw.EquivocationEvidence(0, -1, first, second),
        sw.EquivocationEvidence(2**32, 2, first, second),
        sw.EquivocationEvidence(0, 2, first, first),  # one message twice
        sw.EquivocationEvidence(0, 2, first, forged),  # a payload changed
        sw.EquivocationEvidence(0, 2, forged, second),
        sw.EquivocationEvidence(
            0, 2, first, sw.SignedBroadcast(second.payload, first.signature)
        ),
    ]
    for proof in tampered:
        assert not verify_equivocation(proof, SESSION, parties), proof
    assert not verify_equivocation(evidence, SESSION + b"!", parties)
    other = [*parties[:2], BY_INDEX[3].peer_id]
    assert not verify_equivocation(evidence, SESSION, other)
    more = [*parties, BY_INDEX[3].peer_id]
    assert not verify_equivocation(evidence, SESSION, more)
    swapped = sw.EquivocationEvidence(0, 2, second, first)  # order is no proof
    assert verify_equivocation(swapped, SESSION, parties)
    with pytest.raises(ValueError, match="twice"):
        verify_equivocation(evidence, SESSION, [*parties, parties[0]])
    with pytest.raises(ValueError, match="1 to 255"):
        verify_equivocation(evidence, b"", parties)


def test_a_false_echo_is_blamed_on_its_sender() -> None:
    """Party 2 broadcasts honestly, echoes a digest it never saw, then
    relays the true broadcasts: no equivocation, so its echo lied."""
    net = Net(3, manual=frozenset({2}))
    a = net.sessions[0]
    for i in (0, 1):
        net.sessions[i].broadcast(0, b"b%d" % i, reliable=True)
        net.sessions[i].gather(0)
    for i in (0, 1):
        net.sessions[i].receive(net.peer(2), broadcast(2, 0, b"b2", 3, True))
    net.pump()
    assert completed(net, 0) == {} and a.state(0) is st.RoundState.ECHOED
    a.receive(net.peer(2), sw.encode(sw.Echo(2, 0, b"\x01" * 32)))
    net.pump()
    assert a.state(0) is st.RoundState.DISPUTED
    relays = [sw.decode(d) for to, d in net.sent[0] if to == 2 and d[0] == sw.K_RELAY]
    assert [r.origin for r in relays] == [0, 1, 2]  # type: ignore[union-attr]
    signatures = {0: a._rounds[0].own.signature}  # type: ignore[union-attr]
    for origin in (1, 2):
        message = a._rounds[0].messages[origin]
        assert isinstance(message, sw.Broadcast)
        signatures[origin] = message.signature
    for origin, payload in enumerate((b"b0", b"b1", b"b2")):
        relay = sw.Relay(2, 0, origin, payload, signatures[origin])
        assert a.state(0) is st.RoundState.DISPUTED
        a.receive(net.peer(2), sw.encode(relay))
    net.pump()
    error = failure(net, 0)
    assert isinstance(error, FalseEcho) and error.party == 2 and error.round == 0
    # Party 1 saw party 2's honest echo... it never got one: a timeout.
    assert net.sessions[1].state(0) is st.RoundState.ECHOED


def test_a_party_that_disagrees_and_never_relays_is_named_by_the_timeout() -> None:
    net = Net(3, manual=frozenset({2}))
    a = net.sessions[0]
    a.broadcast(0, b"b0", reliable=True)
    a.gather(0, deadline=3.0)
    net.sessions[1].broadcast(0, b"b1", reliable=True)
    for session in net.sessions[:2]:
        session.receive(net.peer(2), broadcast(2, 0, b"b2", 3, True))
    net.pump()
    a.receive(net.peer(2), sw.encode(sw.Echo(2, 0, b"\x01" * 32)))
    net.pump()
    assert a.state(0) is st.RoundState.DISPUTED
    a.receive(net.peer(2), sw.encode(sw.Relay(2, 0, 0, b"b0", b"\0" * 64)))
    a.tick(3.0)
    net.pump()
    error = failure(net, 0)
    assert isinstance(error, RoundTimeout) and error.missing == (2,)


def test_honest_parties_that_agree_exchange_no_relay() -> None:
    net = _equivocation(5, 4)
    for i in net.honest():
        net.take(i)
    # Parties 0 and 1 saw "A", 2 and 3 saw "B": relays only across the split.
    for i in net.honest():
        targets = {to for to, d in net.sent[i] if d[0] == sw.K_RELAY}
        assert targets  # and none to a party that saw the same
        assert targets <= {j for j in net.honest() if (j < 2) != (i < 2)}


# -- refusals: each rule is its own violation, the party is lost ---------------------


def _violation(net: Net, index: int) -> SessionViolation:
    [(peer, error)] = violations(net, index)
    assert peer == net.peer(1) or isinstance(error, NotAParty)
    return error


def _refused(data: bytes, setup: Callable[[Net], None] = lambda net: None) -> Net:
    net = Net(3, manual=frozenset({1}))
    setup(net)
    net.pump()
    net.take(0)
    net.sessions[0].receive(net.peer(1), data)
    net.pump()
    return net


@pytest.mark.parametrize(
    ("data", "error", "match"),
    [
        (b"", MalformedSessionMessage, "empty"),
        (b"\x09", MalformedSessionMessage, "0x09 is not a session message kind"),
        (sw.encode(sw.Direct(1, 0, b"x")) + b"\0", MalformedSessionMessage, "after"),
        (sw.encode(sw.Direct(2, 0, b"x")), WrongIndex, "party 1 sent a message as 2"),
        (sw.encode(sw.Direct(0, 0, b"x")), WrongIndex, "as party 0"),
        (sw.encode(sw.Direct(1, 16, b"x")), RoundTooFar, "round 16 is more than 16"),
        (sw.encode(sw.Echo(1, 2**32 - 1, b"\0" * 32)), RoundTooFar, "past round 0"),
        (
            sw.encode(sw.Broadcast(1, 0, b"x", sign(1, 0, b"y", 3))),
            BadBroadcastSignature,
            "broadcast of round 0 is not signed by it",
        ),
        (
            sw.encode(sw.Broadcast(1, 0, b"x", sign(1, 1, b"x", 3), True)),
            BadBroadcastSignature,
            "not signed",
        ),
        (
            sw.encode(sw.Broadcast(1, 0, b"x", sign(2, 0, b"x", 3), True)),
            BadBroadcastSignature,
            "not signed",
        ),
        (
            sw.encode(sw.Relay(1, 0, 0, b"x", b"\0" * 64)),
            UnexpectedRelay,
            "relayed round 0 without a disagreement",
        ),
    ],
)
def test_a_bad_message_is_a_violation(
    data: bytes, error: type[SessionViolation], match: str
) -> None:
    net = _refused(data)
    found = _violation(net, 0)
    assert type(found) is error
    assert match.replace("as 2", "as party 2") in str(found) or match in str(found)
    assert 1 in net.sessions[0].lost_parties


def test_a_message_just_inside_the_rounds_ahead_is_held() -> None:
    net = _refused(sw.encode(sw.Direct(1, 15, b"x")))
    assert net.take(0) == [] and net.sessions[0].held[1] > 0


def test_a_stranger_is_not_a_party() -> None:
    net = Net(3)
    a = net.sessions[0]
    a.receive(STRANGER.peer_id, sw.encode(sw.Direct(1, 0, b"x")))
    a.receive(a.identity.peer_id, sw.encode(sw.Direct(0, 0, b"x")))
    found = violations(net, 0) + [
        (o.peer, o.error) for o in a.outputs() if isinstance(o, st.Violation)
    ]
    assert [peer for peer, _ in found] == [STRANGER.peer_id, a.identity.peer_id]
    assert all(type(error) is NotAParty for _, error in found)
    assert "is not a party of the session" in str(found[0][1])
    assert a.lost_parties == {}


def test_a_second_message_of_a_party_in_a_round_is_a_violation() -> None:
    def first(net: Net) -> None:
        net.sessions[0].receive(net.peer(1), sw.encode(sw.Direct(1, 0, b"x")))

    net = _refused(sw.encode(sw.Direct(1, 0, b"y")), first)
    error = _violation(net, 0)
    assert type(error) is DuplicateMessage
    assert "a second direct of party 1 in round 0" in str(error)


def test_a_second_echo_of_a_party_in_a_round_is_a_violation() -> None:
    echo = sw.encode(sw.Echo(1, 0, b"\0" * 32))
    net = _refused(echo, lambda net: net.sessions[0].receive(net.peer(1), echo))
    error = _violation(net, 0)
    assert type(error) is DuplicateMessage and "second echo" in str(error)


@pytest.mark.parametrize("state", ["echoed", "done"])
def test_a_message_after_all_are_in_is_a_duplicate(state: str) -> None:
    net = Net(3, manual=frozenset({1}))
    a = net.sessions[0]
    reliable = state == "echoed"
    a.broadcast(0, b"b0", reliable=reliable)
    net.sessions[2].broadcast(0, b"b2", reliable=reliable)
    a.receive(net.peer(1), broadcast(1, 0, b"b1", 3, reliable))
    net.pump()
    assert a.state(0) is (st.RoundState.ECHOED if reliable else st.RoundState.DONE)
    a.receive(net.peer(1), broadcast(1, 0, b"b1", 3, reliable))
    net.pump()
    error = _violation(net, 0)
    assert type(error) is DuplicateMessage
    assert str(error) == "a second broadcast of party 1 in round 0"


def test_an_echo_after_a_reliable_round_completed_is_a_duplicate() -> None:
    net = Net(3)
    for session in net.sessions:
        session.broadcast(0, b"b", reliable=True)
    net.pump()
    a = net.sessions[0]
    assert a.state(0) is st.RoundState.DONE
    echo = a._rounds[0].echoes[1]
    a.receive(net.peer(1), sw.encode(sw.Echo(1, 0, echo)))
    net.pump()
    assert type(_violation(net, 0)) is DuplicateMessage


def test_a_message_in_a_disputed_round_is_a_duplicate() -> None:
    net = Net(3, manual=frozenset({1}))
    a = net.sessions[0]
    a.broadcast(0, b"b0", reliable=True)
    net.sessions[2].broadcast(0, b"b2", reliable=True)
    a.receive(net.peer(1), broadcast(1, 0, b"b1", 3, True))
    a.receive(net.peer(1), sw.encode(sw.Echo(1, 0, b"\x05" * 32)))
    net.pump()
    assert a.state(0) is st.RoundState.DISPUTED
    a.receive(net.peer(1), broadcast(1, 0, b"b1", 3, True))
    net.pump()
    assert type(_violation(net, 0)) is DuplicateMessage


@pytest.mark.parametrize(
    ("mine", "theirs"),
    [
        ("reliable", "direct"),
        ("reliable", "plain"),
        ("direct", "reliable"),
        ("plain", "reliable"),
        ("direct", "echo"),
        ("plain", "echo"),
    ],
)
@pytest.mark.parametrize("ours_first", [True, False])
def test_a_message_of_the_wrong_kind_for_the_round_is_a_violation(
    mine: str, theirs: str, ours_first: bool
) -> None:
    """Our own send fixes the round's kind, whether the other's message came
    before it (held, judged then) or after."""
    net = Net(3, manual=frozenset({1}))
    a = net.sessions[0]
    data = {
        "direct": sw.encode(sw.Direct(1, 0, b"x")),
        "plain": broadcast(1, 0, b"x", 3, False),
        "reliable": broadcast(1, 0, b"x", 3, True),
        "echo": sw.encode(sw.Echo(1, 0, b"\0" * 32)),
    }[theirs]

    def ours() -> None:
        if mine == "direct":
            a.send(0, 1, b"d")
        else:
            a.broadcast(0, b"b", reliable=mine == "reliable")

    if ours_first:
        ours()
        a.receive(net.peer(1), data)
    else:
        a.receive(net.peer(1), data)
        assert a.outputs() == []
        ours()
    net.pump()
    error = _violation(net, 0)
    assert type(error) is WrongKind
    assert "party 1" in str(error) and "round 0" in str(error)


def test_an_echo_in_a_round_completed_without_echo_is_the_wrong_kind() -> None:
    net = Net(3, manual=frozenset({1}))
    a = net.sessions[0]
    a.receive(net.peer(1), sw.encode(sw.Direct(1, 0, b"x")))
    net.sessions[2].send(0, 0, b"y")
    net.pump()
    assert a.state(0) is st.RoundState.DONE
    a.receive(net.peer(1), sw.encode(sw.Echo(1, 0, b"\0" * 32)))
    net.pump()
    error = _violation(net, 0)
    assert type(error) is WrongKind and "which has no echo" in str(error)


def test_matching_held_messages_are_no_violation() -> None:
    net = Net(3, manual=frozenset({1}))
    a = net.sessions[0]
    a.receive(net.peer(1), broadcast(1, 0, b"x", 3, True))
    a.receive(net.peer(1), sw.encode(sw.Echo(1, 0, b"\0" * 32)))
    a.receive(net.peer(1), broadcast(1, 1, b"x", 3, False))
    a.receive(net.peer(1), sw.encode(sw.Direct(1, 2, b"x")))
    a.broadcast(0, b"b", reliable=True)
    a.send(1, 2, b"d")
    a.broadcast(2, b"b")
    net.pump()
    assert violations(net, 0) == [] and a.lost_parties == {}


def test_an_oversized_payload_is_a_violation() -> None:
    settings = st.SessionSettings(max_payload=10)
    for message in (
        sw.Direct(1, 0, b"x" * 11),
        sw.Relay(1, 0, 0, b"x" * 11, b"\0" * 64),
    ):
        net = Net(3, manual=frozenset({1}), settings=settings)
        net.sessions[0].receive(net.peer(1), sw.encode(message))
        net.pump()
        error = _violation(net, 0)
        assert type(error) is OversizedMessage
        assert "a payload of 11 bytes; the limit is 10" in str(error)
    net = Net(3, manual=frozenset({1}), settings=settings)
    net.sessions[0].receive(net.peer(1), sw.encode(sw.Direct(1, 0, b"x" * 10)))
    net.pump()
    assert net.take(0) == []


def test_the_bytes_buffered_for_a_party_are_bounded() -> None:
    direct = sw.encode(sw.Direct(1, 0, b"x" * 10))
    size = len(direct)
    echo = sw.encode(sw.Echo(1, 1, b"\0" * 32))
    settings = st.SessionSettings(max_buffered=size + len(echo))
    net = Net(3, manual=frozenset({1}), settings=settings)
    a = net.sessions[0]
    a.receive(net.peer(1), direct)
    a.receive(net.peer(1), echo)
    assert a.held[1] == size + len(echo)
    net.pump()
    assert net.take(0) == []
    a.receive(net.peer(1), sw.encode(sw.Direct(1, 2, b"")))
    net.pump()
    error = _violation(net, 0)
    assert type(error) is SessionBufferFull
    assert f"would have {size + len(echo) + 11} bytes buffered" in str(error)
    assert f"the limit is {size + len(echo)}" in str(error)


def test_buffered_bytes_are_released_when_a_round_finishes() -> None:
    net = Net(2)
    a, b = net.sessions
    b.send(0, 0, b"x" * 100)
    net.pump()
    assert a.held == {0: 0, 1: 111}
    a.gather(0)
    net.pump()
    assert a.held == {0: 0, 1: 0}


def test_a_relay_is_refused_in_every_state_but_a_dispute() -> None:
    relay = sw.encode(sw.Relay(1, 0, 0, b"x", b"\0" * 64))
    for prepare in ("open", "echoed", "done"):
        net = Net(3, manual=frozenset({1}))
        a = net.sessions[0]
        if prepare != "open":
            reliable = prepare == "echoed"
            a.broadcast(0, b"b0", reliable=reliable)
            net.sessions[2].broadcast(0, b"b2", reliable=reliable)
            a.receive(net.peer(1), broadcast(1, 0, b"b1", 3, reliable))
        else:
            a.gather(0)
        net.pump()
        a.receive(net.peer(1), relay)
        net.pump()
        assert type(_violation(net, 0)) is UnexpectedRelay, prepare


def _disputed() -> Net:
    net = Net(3, manual=frozenset({1}))
    a = net.sessions[0]
    a.broadcast(0, b"b0", reliable=True)
    a.gather(0)
    net.sessions[2].broadcast(0, b"b2", reliable=True)
    a.receive(net.peer(1), broadcast(1, 0, b"b1", 3, True))
    net.pump()
    a.receive(net.peer(1), sw.encode(sw.Echo(1, 0, b"\x05" * 32)))
    net.pump()
    assert a.state(0) is st.RoundState.DISPUTED
    net.take(0)
    return net


def test_relays_must_come_in_index_order() -> None:
    net = _disputed()
    net.sessions[0].receive(net.peer(1), sw.encode(sw.Relay(1, 0, 1, b"", b"\0" * 64)))
    net.pump()
    error = _violation(net, 0)
    assert type(error) is UnexpectedRelay
    assert "relayed origin 1 of round 0; origin 0 is next" in str(error)


def test_a_relay_from_a_party_that_agreed_is_refused() -> None:
    net = _disputed()
    a = net.sessions[0]
    a.receive(net.peer(2), sw.encode(sw.Relay(2, 0, 0, b"b0", b"\0" * 64)))
    [(peer, error)] = [
        (o.peer, o.error) for o in a.outputs() if isinstance(o, st.Violation)
    ]
    assert peer == net.peer(2) and type(error) is UnexpectedRelay
    assert str(error) == "party 2 relayed round 0 without a disagreement"


def test_a_relayed_broadcast_its_origin_did_not_sign_is_a_violation() -> None:
    net = _disputed()
    a = net.sessions[0]
    a.receive(net.peer(1), sw.encode(sw.Relay(1, 0, 0, b"not b0", b"\0" * 64)))
    net.pump()
    [violation, failed] = net.take(0)
    assert isinstance(violation, st.Violation) and isinstance(failed, st.Failed)
    error = violation.error
    assert type(error) is BadBroadcastSignature
    assert "relayed a broadcast of party 0 in round 0 that party 0 did not" in str(
        error
    )
    lost = failed.error
    assert isinstance(lost, PartyLost) and lost.party == 1


def test_a_relay_after_the_dispute_is_settled_is_dropped() -> None:
    net = _disputed()
    a = net.sessions[0]
    own = a._rounds[0].own
    assert own is not None
    signatures = [own.signature]
    for origin in (1, 2):
        message = a._rounds[0].messages[origin]
        assert isinstance(message, sw.Broadcast)
        signatures.append(message.signature)
    relays = [
        sw.encode(sw.Relay(1, 0, origin, payload, signatures[origin]))
        for origin, payload in enumerate((b"b0", b"b1", b"b2"))
    ]
    for data in relays:
        a.receive(net.peer(1), data)
    net.pump()
    error = failure(net, 0)
    assert isinstance(error, FalseEcho) and error.party == 1
    assert "party 1's echo of round 0 disagrees" in str(error)
    assert a.state(0) is st.RoundState.ABSENT and a.base == 1
    a.receive(net.peer(1), relays[0])
    assert a.late == 1 and a.outputs() == []


def test_a_relay_to_a_failed_round_not_yet_gathered_is_dropped() -> None:
    net = Net(3, manual=frozenset({1}))
    a = net.sessions[0]
    # Party 2's echo never reaches party 0: the round still needs it when
    # party 2 is lost, so the loss fails it.
    net.filter = lambda source, to, data: (
        None if (source, to, data[0]) == (2, 0, sw.K_ECHO) else data
    )
    a.broadcast(0, b"b0", reliable=True)
    net.sessions[2].broadcast(0, b"b2", reliable=True)
    a.receive(net.peer(1), broadcast(1, 0, b"b1", 3, True))
    net.pump()
    assert a.state(0) is st.RoundState.ECHOED
    a.lost(net.peer(2), RoundTooFar("gone"))
    assert a.state(0) is st.RoundState.FAILED
    for data in (
        sw.encode(sw.Relay(1, 0, 0, b"b0", b"\0" * 64)),
        sw.encode(sw.Echo(1, 0, b"\x05" * 32)),
        broadcast(1, 0, b"b1", 3, True),
    ):
        a.receive(net.peer(1), data)
    assert a.late == 3 and net.take(0) == [] and a.outputs() == []


def test_a_violation_ends_the_session_with_that_party() -> None:
    net = Net(3, manual=frozenset({1}))
    a = net.sessions[0]
    a.gather(0)
    a.broadcast(1, b"b", reliable=True)
    a.receive(net.peer(1), b"\x09")
    net.pump()
    results = net.take(0)
    assert [type(r) for r in results] == [st.Violation, st.Failed]
    failed = results[1]
    assert isinstance(failed, st.Failed) and isinstance(failed.error, PartyLost)
    assert failed.error.party == 1
    assert isinstance(failed.error.reason, MalformedSessionMessage)
    assert a.state(1) is st.RoundState.FAILED  # not gathered yet
    a.gather(1)
    a.gather(2)  # a new round fails at once
    net.pump()
    assert [r.round for r in net.take(0) if isinstance(r, st.Failed)] == [1, 2]
    a.receive(net.peer(1), b"\x09")  # nothing more of it counts
    assert a.outputs() == []


def test_a_reset_stream_ends_the_session_with_that_party() -> None:
    net = Net(3)
    a = net.sessions[0]
    a.gather(0)
    net.sessions[1].send(0, 0, b"x")
    net.pump()
    reason = RoundTooFar("stand-in for the stream's reset")
    a.lost(net.peer(2), reason)
    a.lost(net.peer(2), RoundTooFar("a second reason is not kept"))
    a.lost(STRANGER.peer_id, reason)
    a.lost(a.identity.peer_id, reason)
    net.pump()
    error = failure(net, 0)
    assert isinstance(error, PartyLost) and error.party == 2 and error.reason is reason
    assert str(error) == "party 2 is lost: stand-in for the stream's reset"
    assert a.lost_parties == {2: reason}


def test_a_complete_round_is_delivered_after_a_party_is_lost() -> None:
    net = Net(2)
    a, b = net.sessions
    b.send(0, 0, b"x")
    net.pump()
    a.lost(net.peer(1), RoundTooFar("gone"))
    a.gather(0)
    net.pump()
    assert completed(net, 0) == {0: {1: b"x"}}


# -- what the mutation run asked for ---------------------------------------------


def test_only_rounds_still_waiting_have_a_deadline() -> None:
    """A finished round kept above the base, and a round gathered without a
    deadline, are no deadline."""
    net = Net(2, manual=frozenset({1}))
    a = net.sessions[0]
    a.gather(0)  # waits, with no deadline
    a.receive(net.peer(1), sw.encode(sw.Direct(1, 1, b"x")))
    a.gather(1, deadline=4.0)
    net.pump()
    assert completed(net, 0) == {1: {1: b"x"}}
    assert a.state(1) is st.RoundState.FINISHED
    assert a.next_deadline() is None
    a.tick(5.0)
    assert a.outputs() == []
    a.gather(2, deadline=7.0)
    assert a.next_deadline() == 7.0


def test_a_held_echo_keeps_a_round_of_plain_messages_open() -> None:
    """An echo says the round is reliable: wait for our own send."""
    net = Net(2, manual=frozenset({1}))
    a = net.sessions[0]
    a.receive(net.peer(1), sw.encode(sw.Echo(1, 0, b"\0" * 32)))
    a.receive(net.peer(1), sw.encode(sw.Direct(1, 0, b"x")))
    assert a.state(0) is st.RoundState.OPEN
    a.send(0, 1, b"y")
    net.pump()
    assert type(_violation(net, 0)) is WrongKind


def test_sending_in_an_echoed_round_is_refused() -> None:
    net = Net(2, manual=frozenset({1}))
    a = net.sessions[0]
    a.broadcast(0, b"b", reliable=True)
    a.receive(net.peer(1), broadcast(1, 0, b"b1", 2, True))
    assert a.state(0) is st.RoundState.ECHOED
    with pytest.raises(ValueError, match=r"^round 0: this party sent its message$"):
        a.send(0, 1, b"")


def test_the_late_echo_and_relay_errors_name_the_party_and_round() -> None:
    net = Net(3)
    for session in net.sessions:
        session.broadcast(1, b"b", reliable=True)
    net.pump()
    a = net.sessions[0]
    echo = a._rounds[1].echoes[1]
    a.receive(net.peer(1), sw.encode(sw.Echo(1, 1, echo)))
    net.pump()
    [(_, error)] = violations(net, 0)
    assert str(error) == "a second echo of party 1 in round 1"
    net = Net(3, manual=frozenset({1}))
    a = net.sessions[0]
    a.receive(net.peer(1), sw.encode(sw.Direct(1, 2, b"x")))
    net.sessions[2].send(2, 0, b"y")
    net.pump()
    a.receive(net.peer(1), sw.encode(sw.Echo(1, 2, b"\0" * 32)))
    net.pump()
    [(_, error)] = violations(net, 0)
    assert str(error) == "party 1 echoed round 2, which has no echo"
    net = Net(3, manual=frozenset({1}))
    net.sessions[0].receive(net.peer(1), sw.encode(sw.Relay(1, 3, 0, b"", b"\0" * 64)))
    net.pump()
    [(_, error)] = violations(net, 0)
    assert str(error) == "party 1 relayed round 3 without a disagreement"


def test_evidence_of_any_round_verifies() -> None:
    parties = [identity.peer_id for identity in BY_INDEX[:3]]
    for round in (0, 1000, 2**32 - 1):
        one = sw.SignedBroadcast(b"A", sign(1, round, b"A", 3))
        other = sw.SignedBroadcast(b"B", sign(1, round, b"B", 3))
        proof = sw.evidence(round, 1, one, other)
        assert verify_equivocation(proof, SESSION, parties)


def test_a_round_opened_by_a_message_has_no_deadline() -> None:
    net = Net(2, manual=frozenset({1}))
    a = net.sessions[0]
    a.receive(net.peer(1), sw.encode(sw.Echo(1, 0, b"\0" * 32)))
    assert a.next_deadline() is None
    a.tick(1.0)
    assert a.outputs() == []


def test_the_refusals_say_exactly_what_is_wrong() -> None:
    peers = [identity.peer_id for identity in BY_INDEX[:3]]
    with pytest.raises(ValueError) as caught:
        s.PartySession(BY_INDEX[3], SESSION, peers)
    assert str(caught.value) == "this node's own peer id is not in the party list"
    session = s.PartySession(BY_INDEX[0], SESSION, peers)
    assert session.session_id == SESSION
    with pytest.raises(ValueError) as caught:
        session.gather(2**32)
    assert str(caught.value) == "a round is 0 to 2**32 - 1"
    far = s.PartySession(
        BY_INDEX[0], SESSION, peers, st.SessionSettings(max_rounds_ahead=2**32 - 1)
    )
    far.broadcast(2**32 - 2, b"far ahead")
    assert far.outputs()


@pytest.mark.parametrize(
    ("mine", "theirs", "text"),
    [
        ("reliable", "plain", "with"),
        ("plain", "reliable", "without"),
    ],
)
def test_the_wrong_kind_errors_say_which_kind(
    mine: str, theirs: str, text: str
) -> None:
    for ours_first in (True, False):
        net = Net(3, manual=frozenset({1}))
        a = net.sessions[0]
        data = broadcast(1, 0, b"x", 3, theirs == "reliable")
        if not ours_first:
            a.receive(net.peer(1), data)
        a.broadcast(0, b"b", reliable=mine == "reliable")
        if ours_first:
            a.receive(net.peer(1), data)
        net.pump()
        [(_, error)] = violations(net, 0)
        if ours_first:
            other = "plain" if theirs == "plain" else "reliable"
            assert str(error) == (
                f"party 1 sent a {other} message in round 0, which is {text} echo here"
            )
        else:
            assert str(error) == (
                f"party 1's message of round 0 does not match the round ({text} echo)"
            )


def test_a_held_second_echo_says_its_round() -> None:
    net = Net(3, manual=frozenset({1}))
    a = net.sessions[0]
    echo = sw.encode(sw.Echo(1, 4, b"\0" * 32))
    a.receive(net.peer(1), echo)
    a.receive(net.peer(1), echo)
    net.pump()
    [(_, error)] = violations(net, 0)
    assert str(error) == "a second echo of party 1 in round 4"


def test_a_lost_party_fails_only_the_rounds_that_still_need_it() -> None:
    """Party 2 is lost after giving round 0 its message and round 1 its
    reliable broadcast but not its echo: round 0 goes on (and completes
    with party 1's message), round 1 and a round with nothing from it fail."""
    net = Net(3, manual=frozenset({2}))
    a, b = net.sessions[0], net.sessions[1]
    a.receive(net.peer(2), sw.encode(sw.Direct(2, 0, b"from 2")))
    a.broadcast(1, b"a1", reliable=True)
    a.receive(net.peer(2), broadcast(2, 1, b"b2", 3, True))
    for round in (0, 1, 2):
        a.gather(round)
    a.lost(net.peer(2), RoundTooFar("gone"))
    net.pump()
    failed = {r.round: r.error for r in net.take(0) if isinstance(r, st.Failed)}
    assert sorted(failed) == [1, 2]
    assert all(isinstance(e, PartyLost) and e.party == 2 for e in failed.values())
    assert a.state(0) is st.RoundState.OPEN
    b.send(0, 0, b"from 1")
    net.pump()
    assert completed(net, 0) == {0: {1: b"from 1", 2: b"from 2"}}


def test_a_lost_party_whose_echo_is_in_is_not_needed() -> None:
    net = Net(3, manual=frozenset({2}))
    a = net.sessions[0]
    a.broadcast(0, b"a0", reliable=True)
    a.gather(0)
    for honest in net.sessions[:2]:
        honest.receive(net.peer(2), broadcast(2, 0, b"b2", 3, True))
    net.sessions[1].broadcast(0, b"b1", reliable=True)
    net.pump()
    [ours] = [sw.decode(d) for to, d in net.sent[0] if to == 2 and d[0] == sw.K_ECHO]
    assert isinstance(ours, sw.Echo)
    a.receive(net.peer(2), sw.encode(sw.Echo(2, 0, ours.digest)))  # it agrees
    a.lost(net.peer(2), RoundTooFar("gone"))
    net.pump()
    assert completed(net, 0) == {0: {1: b"b1", 2: b"b2"}}


@pytest.mark.parametrize("lose_first", [True, False])
def test_a_party_lost_after_its_part_does_not_hide_a_false_echo(
    lose_first: bool,
) -> None:
    """Party 0 completes the reliable round and closes; party 2 then sends
    party 1 a false echo and its relays: party 1 blames party 2
    (``FalseEcho``), not the party that left after giving everything."""
    net = Net(3, manual=frozenset({2}))
    a, b = net.sessions[0], net.sessions[1]
    for x in (a, b):
        x.gather(0)
        x.receive(net.peer(2), broadcast(2, 0, b"x2", 3, True))
    a.broadcast(0, b"a0", reliable=True)
    b.broadcast(0, b"b1", reliable=True)
    net.pump()
    [ours] = [sw.decode(d) for to, d in net.sent[0] if to == 2 and d[0] == sw.K_ECHO]
    assert isinstance(ours, sw.Echo)
    a.receive(net.peer(2), sw.encode(sw.Echo(2, 0, ours.digest)))
    net.pump()
    assert completed(net, 0) == {0: {1: b"b1", 2: b"x2"}}
    gone = RoundTooFar("party 0 closed")
    if lose_first:
        b.lost(net.peer(0), gone)
    b.receive(net.peer(2), sw.encode(sw.Echo(2, 0, b"\x11" * 32)))
    net.pump()
    if not lose_first:
        b.lost(net.peer(0), gone)
    for origin, payload in ((0, b"a0"), (1, b"b1"), (2, b"x2")):
        relay = sw.Relay(2, 0, origin, payload, sign(origin, 0, payload, 3))
        b.receive(net.peer(2), sw.encode(relay))
    net.pump()
    error = failure(net, 1)
    assert isinstance(error, FalseEcho) and error.party == 2


def test_a_party_lost_before_its_echo_fails_a_reliable_round_at_once() -> None:
    """Party 2's reliable broadcast makes the round reliable before our own
    broadcast: it still owes its echo, so its loss fails the round now,
    not when we broadcast or at a deadline."""
    net = Net(3, manual=frozenset({2}))
    a = net.sessions[0]
    a.receive(net.peer(2), broadcast(2, 0, b"b2", 3, True))
    a.gather(0)
    a.lost(net.peer(2), RoundTooFar("gone"))
    net.pump()
    error = failure(net, 0)
    assert isinstance(error, PartyLost) and error.party == 2
