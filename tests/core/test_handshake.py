"""Every handshake path, driven without a reactor."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional, get_args

import pytest

from blueprint_net._core import framing, stream_wire, wire
from blueprint_net._core.connection import Connection
from blueprint_net._core.connection_events import (
    ConnectionFailed,
    PeerVerified,
    StreamFrames,
)
from blueprint_net._core.errors import ErrorCode, HandshakeFailed, PeerLost
from blueprint_net._core.handshake import TABLE, TRANSITIONS, Handshake
from blueprint_net._core.handshake_states import (
    SPEC_STATE,
    HandshakeState,
    Local,
    PeerProven,
    Phase,
)
from blueprint_net._core.handshake_transcripts import transcript
from blueprint_net._core.identity import Identity, PeerId
from tests.helpers import decode_frames

S = HandshakeState
P = Phase


def pair(
    initiator: Identity,
    responder: Identity,
    *,
    expected: Optional[PeerId] = None,
    binding_i: bytes = b"",
    binding_r: bytes = b"",
) -> tuple[Handshake, Handshake]:
    a = Handshake(initiator, initiator=True, expected_peer=expected)
    b = Handshake(responder, initiator=False)
    a.set_channel_binding(binding_i)
    b.set_channel_binding(binding_r)
    return a, b


def answer(
    handshake: Handshake, message: wire.Message, proven: list[PeerId]
) -> list[wire.Message]:
    """Feed ``message``; a proven peer is accepted (and noted in ``proven``)."""
    outputs = handshake.receive(message)
    if outputs and isinstance(outputs[-1], PeerProven):
        assert len(outputs) == 1 and handshake.peer_id is None  # not yet
        proven.append(outputs[-1].peer_id)
        return handshake.accept()
    return [m for m in outputs if not isinstance(m, PeerProven)]


def run(
    a: Handshake, b: Handshake, proven: Optional[list[PeerId]] = None
) -> list[tuple[str, wire.Message]]:
    """Exchange messages until both sides are quiet, accepting every proven
    peer; returns the transcript."""
    proven = [] if proven is None else proven
    log: list[tuple[str, wire.Message]] = []
    to_b, to_a = a.start(), b.start()
    while to_a or to_b:
        next_a: list[wire.Message] = []
        next_b: list[wire.Message] = []
        for message in to_b:
            log.append(("a->b", message))
            next_a += answer(b, message, proven)
        for message in to_a:
            log.append(("b->a", message))
            next_b += answer(a, message, proven)
        to_a, to_b = next_a, next_b
    return log


def test_valid_handshake(alice: Identity, bob: Identity) -> None:
    a, b = pair(alice, bob, expected=bob.peer_id)
    proven: list[PeerId] = []
    log = run(a, b, proven)
    assert a.state is b.state is S.VERIFIED
    assert a.peer_id == bob.peer_id and b.peer_id == alice.peer_id
    assert proven == [alice.peer_id, bob.peer_id]  # each side decided once
    assert [type(m).__name__ for _, m in log] == [
        "Hello",
        "Hello",
        "HandshakeRequest",
        "HandshakeResponse",
    ]
    assert a.history == [
        (S.CONNECTED, S.OUTBOUND_PENDING),
        (S.OUTBOUND_PENDING, S.VERIFIED),
    ]
    assert b.history == [
        (S.CONNECTED, S.INBOUND_PENDING),
        (S.INBOUND_PENDING, S.VERIFIED),
    ]


def test_simultaneous_initiation_on_one_connection(
    alice: Identity, bob: Identity
) -> None:
    a = Handshake(alice, initiator=True)
    b = Handshake(bob, initiator=True)
    log = run(a, b)
    assert a.state is b.state is S.VERIFIED
    assert a.peer_id == bob.peer_id and b.peer_id == alice.peer_id
    assert sorted(type(m).__name__ for _, m in log) == [
        "HandshakeRequest",
        "HandshakeRequest",
        "Hello",
        "Hello",
    ]


def _request_from(a: Handshake, b: Handshake) -> wire.HandshakeRequest:
    """Run a's side until it has sent its request to b; return that request."""
    hello_a = a.start()[0]
    hello_b = b.start()
    b.receive(hello_a)
    [request] = a.receive(hello_b[0])
    assert isinstance(request, wire.HandshakeRequest)
    return request


def failure(handshake: Handshake, message: wire.Message) -> ErrorCode:
    with pytest.raises(HandshakeFailed) as caught:
        handshake.receive(message)
    assert handshake.state is S.FAILED
    assert handshake.failure is caught.value
    return caught.value.code


def test_bad_signature(alice: Identity, bob: Identity) -> None:
    a, b = pair(alice, bob)
    request = _request_from(a, b)
    forged = wire.HandshakeRequest(request.public_key, bytes(64))
    assert failure(b, forged) is ErrorCode.BAD_SIGNATURE


def test_wrong_key_for_claimed_id(
    alice: Identity, bob: Identity, carol: Identity
) -> None:
    a, b = pair(alice, bob)
    request = _request_from(a, b)
    # A valid-looking proof, but under Carol's key while the Hello claimed Alice.
    assert failure(b, wire.HandshakeRequest(carol.public_key, request.signature)) is (
        ErrorCode.WRONG_KEY
    )


def test_replayed_handshake_fails_on_a_new_connection(
    alice: Identity, bob: Identity
) -> None:
    a1, b1 = pair(alice, bob)
    recorded_hello = a1.start()[0]
    b1.start()
    recorded = _request_from(Handshake(alice, initiator=True, nonce=a1.nonce), b1)
    # The attacker opens a new connection to Bob, replaying Alice's Hello
    # (same nonce, same claimed id) and her recorded request.
    b2 = Handshake(bob, initiator=False)
    b2.start()
    b2.receive(recorded_hello)
    assert failure(b2, recorded) is ErrorCode.BAD_SIGNATURE


def test_signature_for_bob_is_refused_by_carol(
    alice: Identity, bob: Identity, carol: Identity
) -> None:
    a, b = pair(alice, bob)
    hello_a = a.start()[0]
    request = _request_from(Handshake(alice, initiator=True, nonce=a.nonce), b)
    # Carol even picks Bob's nonce: only the verifier id differs.
    c = Handshake(carol, initiator=False, nonce=b.nonce)
    c.start()
    c.receive(hello_a)
    assert failure(c, request) is ErrorCode.BAD_SIGNATURE


def test_reflected_hello_is_refused(alice: Identity) -> None:
    a = Handshake(alice, initiator=True)
    [hello] = a.start()
    assert failure(a, hello) is ErrorCode.SELF_CONNECTION


def test_peer_claiming_our_id_is_refused(alice: Identity) -> None:
    b = Handshake(alice, initiator=False)
    b.start()
    intruder = wire.Hello(wire.PROTOCOL_VERSION, bytes(32), alice.peer_id)
    assert failure(b, intruder) is ErrorCode.SELF_CONNECTION


def test_reflected_request_is_refused(alice: Identity, bob: Identity) -> None:
    """Alice's own request sent back to her as a response does not verify."""
    a, b = pair(alice, bob)
    request = _request_from(a, b)
    reflected = wire.HandshakeResponse(request.public_key, request.signature)
    assert failure(a, reflected) is ErrorCode.WRONG_KEY


def test_request_signature_is_not_a_response(alice: Identity, bob: Identity) -> None:
    """The role byte: a signature Bob made as a request cannot pass as his response."""
    a, b = pair(alice, bob)
    _request_from(a, b)
    as_request = transcript(
        wire.T_HANDSHAKE_REQUEST, 1, bob.peer_id, b.nonce, alice.peer_id, a.nonce, b""
    )
    forged = wire.HandshakeResponse(bob.public_key, bob.sign(as_request))
    assert failure(a, forged) is ErrorCode.BAD_SIGNATURE


def test_misbound_channel_fails(alice: Identity, bob: Identity) -> None:
    """A relay between two TLS sessions: each side sees a different exporter."""
    a, b = pair(alice, bob, binding_i=b"\x01" * 32, binding_r=b"\x02" * 32)
    with pytest.raises(HandshakeFailed) as caught:
        run(a, b)
    assert caught.value.code is ErrorCode.BAD_SIGNATURE
    assert b.state is S.FAILED


def test_matching_channel_binding_verifies(alice: Identity, bob: Identity) -> None:
    a, b = pair(alice, bob, binding_i=b"\x07" * 32, binding_r=b"\x07" * 32)
    run(a, b)
    assert a.state is b.state is S.VERIFIED


def test_unexpected_peer_fails_before_signatures(
    alice: Identity, bob: Identity, carol: Identity
) -> None:
    a, b = pair(alice, bob, expected=carol.peer_id)
    a.start()
    assert failure(a, b.start()[0]) is ErrorCode.UNEXPECTED_PEER


class CountingIdentity(Identity):
    """Counts its own signature work (per instance: no count leaks between
    tests or parametrized cases)."""

    def __init__(self, seed: bytes) -> None:
        super().__init__(seed)
        self.signatures_made = 0
        self.signatures_checked = 0

    def sign(self, message: bytes) -> bytes:
        self.signatures_made += 1
        return super().sign(message)

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        self.signatures_checked += 1
        return super().verify(public_key, message, signature)


def test_counting_identity_counts(bob: Identity) -> None:
    """The control for the test below: a handshake that gets that far signs
    once and checks once on each side."""
    me = CountingIdentity(bytes(range(100, 132)))
    peer = CountingIdentity(bytes(range(32, 64)))
    a, b = pair(me, peer)
    run(a, b)
    assert (me.signatures_made, me.signatures_checked) == (1, 1)
    assert (peer.signatures_made, peer.signatures_checked) == (1, 1)


@pytest.mark.parametrize("initiator", [True, False])
def test_wrong_version_fails_before_signature_work(
    bob: Identity, initiator: bool
) -> None:
    me = CountingIdentity(bytes(range(100, 132)))
    handshake = Handshake(me, initiator=initiator)
    handshake.start()
    code = failure(handshake, wire.Hello(2, bytes(32), bob.peer_id))
    assert code is ErrorCode.INCOMPATIBLE_VERSION
    assert me.signatures_checked == me.signatures_made == 0
    expected_edge = (S.OUTBOUND_PENDING if initiator else S.INBOUND_PENDING, S.FAILED)
    assert handshake.history[-1] == expected_edge


@pytest.mark.parametrize(
    "message",
    [
        wire.Request(1, "echo", b""),
        wire.Ping(1),
        wire.SuccessResponse(1),
        wire.HandshakeResponse(bytes(32), bytes(64)),
    ],
)
def test_message_before_verified(
    alice: Identity, bob: Identity, message: wire.Message
) -> None:
    _a, b = pair(alice, bob)
    b.start()
    assert failure(b, message) is ErrorCode.UNEXPECTED_MESSAGE
    assert b.history == [(S.CONNECTED, S.FAILED)]


def test_request_before_hello(alice: Identity, bob: Identity) -> None:
    b = Handshake(bob, initiator=False)
    b.start()
    assert failure(b, wire.HandshakeRequest(alice.public_key, bytes(64))) is (
        ErrorCode.UNEXPECTED_MESSAGE
    )


def test_second_hello(alice: Identity, bob: Identity) -> None:
    a, b = pair(alice, bob)
    hello = a.start()[0]
    b.start()
    b.receive(hello)
    assert failure(b, hello) is ErrorCode.UNEXPECTED_MESSAGE


def test_response_to_a_responder(alice: Identity, bob: Identity) -> None:
    a, b = pair(alice, bob)
    b.start()
    b.receive(a.start()[0])
    assert failure(b, wire.HandshakeResponse(alice.public_key, bytes(64))) is (
        ErrorCode.UNEXPECTED_MESSAGE
    )


def test_peer_error_fails_the_handshake(alice: Identity, bob: Identity) -> None:
    a, _ = pair(alice, bob)
    a.start()
    with pytest.raises(HandshakeFailed) as caught:
        a.receive(wire.Error(int(ErrorCode.BANNED), "go away"))
    assert caught.value.code is ErrorCode.BANNED and caught.value.remote
    assert a.state is S.FAILED and a.failure is caught.value


@pytest.mark.parametrize("initiator", [True, False])
@pytest.mark.parametrize("after_hello", [True, False])
def test_timeout_from_every_pending_state(
    alice: Identity, bob: Identity, initiator: bool, after_hello: bool
) -> None:
    handshake = Handshake(alice, initiator=initiator)
    handshake.start()
    if after_hello:
        handshake.receive(wire.Hello(1, bytes(32), bob.peer_id))
    before = handshake.state
    assert handshake.timed_out().code is ErrorCode.HANDSHAKE_TIMEOUT
    assert handshake.history[-1] == (before, S.FAILED)


# -- the decision: the machine stops at the proof; the caller decides --------


@pytest.mark.parametrize("initiator", [True, False])
def test_a_refused_peer_fails_with_the_refusals_code(
    alice: Identity, bob: Identity, initiator: bool
) -> None:
    """Whichever side decides, it decides only once the peer has proved its
    id, and a refusal ends the handshake with the refusal's own code."""
    me, peer = (alice, bob) if initiator else (bob, alice)
    handshake = reach(P.OUTBOUND_PROVEN if initiator else P.INBOUND_PROVEN, me, peer)
    assert handshake.peer_id is None and handshake.peer_public_key is None
    pending = handshake.state
    refusal = handshake.refuse(ErrorCode.CONNECTION_LIMIT, "too many")
    assert (refusal.code, refusal.message) == (ErrorCode.CONNECTION_LIMIT, "too many")
    assert not refusal.remote
    assert handshake.state is S.FAILED and handshake.failure is refusal
    assert handshake.history[-1] == (pending, S.FAILED)
    assert handshake.peer_id is None  # refused: never the proven peer


def test_the_response_is_made_only_on_accept(alice: Identity, bob: Identity) -> None:
    a, b = pair(alice, bob)
    request = _request_from(a, b)
    assert b.receive(request) == [PeerProven(alice.peer_id)]
    # Proven, not yet Verified:
    assert (b.phase, b.state) == (P.INBOUND_PROVEN, S.INBOUND_PENDING)
    [response] = b.accept()
    assert isinstance(response, wire.HandshakeResponse)
    assert b.state is S.VERIFIED and b.peer_id == alice.peer_id
    assert b.peer_public_key == alice.public_key
    assert a.receive(response) == [PeerProven(bob.peer_id)]
    assert a.accept() == [] and a.state is S.VERIFIED


def test_deciding_twice_or_before_the_proof_is_a_caller_bug(
    alice: Identity, bob: Identity
) -> None:
    """Local inputs the table does not list raise (and change nothing):
    no policy can admit a peer that has not proved its id."""
    for phase in (P.CONNECTED, P.INBOUND_AWAITING_REQUEST, P.VERIFIED, P.FAILED):
        handshake = reach(phase, bob, alice)
        with pytest.raises(AssertionError):
            handshake.accept()
        with pytest.raises(AssertionError):
            handshake.refuse(ErrorCode.BANNED, "banned")
        assert handshake.phase is phase
    started = reach(P.OUTBOUND_AWAITING_HELLO, alice, bob)
    with pytest.raises(AssertionError):
        started.start()


# -- the table is the machine -------------------------------------------------

#: The specification's diagram (docs/protocol.md, "States") ...
DIAGRAM = {
    (S.CONNECTED, S.OUTBOUND_PENDING),
    (S.CONNECTED, S.INBOUND_PENDING),
    (S.OUTBOUND_PENDING, S.VERIFIED),
    (S.OUTBOUND_PENDING, S.FAILED),
    (S.INBOUND_PENDING, S.VERIFIED),
    (S.INBOUND_PENDING, S.FAILED),
}
#: ... plus the documented way out of Connected for a silent peer.
DOCUMENTED_EXTRA = {(S.CONNECTED, S.FAILED)}
MESSAGE_KINDS = set(get_args(wire.Message))


def test_the_table_is_the_specifications_diagram() -> None:
    edges = {
        (SPEC_STATE[phase], SPEC_STATE[target])
        for (phase, _kind), (target, _action) in TABLE.items()
        if SPEC_STATE[phase] is not SPEC_STATE[target]
    }
    assert edges == DIAGRAM | DOCUMENTED_EXTRA
    assert edges == TRANSITIONS
    # Every phase is one of the specification's states, and each state has
    # a phase; the table speaks only of messages and local inputs.
    assert set(SPEC_STATE) == set(Phase)
    assert set(SPEC_STATE.values()) == set(HandshakeState)
    assert {kind for _, kind in TABLE} <= MESSAGE_KINDS | set(Local)
    # Failing is possible from every phase not over, and only to FAILED.
    for phase in Phase:
        if phase not in (P.VERIFIED, P.FAILED):
            assert TABLE[phase, Local.FAIL][0] is P.FAILED


def test_the_documented_table_is_the_diagram() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    section = doc.split("### States", 1)[1].split("\n\n**Timeout.**", 1)[0]
    rows = re.findall(r"^\| (\w+) \| (\w+) \| .+ \|$", section, re.MULTILINE)
    documented = {(S(a), S(b)) for a, b in rows if a != "from"}
    assert documented == DIAGRAM | DOCUMENTED_EXTRA


BOUND = {
    P.BOUND_OUTBOUND_AWAITING_PROOF,
    P.BOUND_OUTBOUND_PROVEN,
    P.BOUND_INBOUND_AWAITING_PROOF,
    P.BOUND_INBOUND_PROVEN,
}


def reach_bound(phase: Phase, me: Identity, peer: Identity) -> Handshake:
    """The same, for the TLS variant's phases."""
    outbound = phase in (P.BOUND_OUTBOUND_AWAITING_PROOF, P.BOUND_OUTBOUND_PROVEN)
    mine = Handshake(me, initiator=outbound)
    theirs = Handshake(peer, initiator=not outbound)
    binding = bytes(range(32))
    mine_first = mine.start_bound(binding, peer.peer_id)
    theirs_first = theirs.start_bound(binding, me.peer_id)
    if phase is P.BOUND_OUTBOUND_PROVEN:
        theirs.receive(mine_first[0])
        mine.receive(theirs.accept()[0])
    elif phase is P.BOUND_INBOUND_PROVEN:
        mine.receive(theirs_first[0])
    assert mine.phase is phase
    return mine


def reach(phase: Phase, me: Identity, peer: Identity) -> Handshake:
    """A handshake of ``me`` (with ``peer``) driven by real messages into
    ``phase``."""
    if phase in BOUND:
        return reach_bound(phase, me, peer)
    outbound = phase in (
        P.OUTBOUND_AWAITING_HELLO,
        P.OUTBOUND_AWAITING_PROOF,
        P.OUTBOUND_PROVEN,
        P.VERIFIED,
    )
    mine = Handshake(me, initiator=outbound)
    theirs = Handshake(peer, initiator=not outbound)
    if phase is P.FAILED:
        mine.start()
        mine.timed_out()
        return mine
    hello_mine, hello_theirs = mine.start()[0], theirs.start()[0]
    steps = {
        P.OUTBOUND_AWAITING_PROOF: 1,
        P.INBOUND_AWAITING_REQUEST: 1,
        P.INBOUND_PROVEN: 2,
        P.OUTBOUND_PROVEN: 3,
        P.VERIFIED: 4,
    }.get(phase, 0)
    if steps >= 1:
        to_theirs = mine.receive(hello_theirs)
        to_mine = theirs.receive(hello_mine)
    if steps >= 2:
        [proof] = to_mine or to_theirs
        assert isinstance(proof, wire.HandshakeRequest)
        (mine if to_mine else theirs).receive(proof)
    if steps >= 3:
        [response] = theirs.accept()
        mine.receive(response)
    if steps >= 4:
        mine.accept()
    assert mine.phase is phase
    return mine


def samples(peer: Identity) -> list[wire.Message]:
    """One message of every kind the wire has."""
    made: list[wire.Message] = [
        wire.Hello(wire.PROTOCOL_VERSION, bytes(32), peer.peer_id),
        wire.HandshakeRequest(peer.public_key, bytes(64)),
        wire.HandshakeResponse(peer.public_key, bytes(64)),
        wire.Proof(wire.PROTOCOL_VERSION, peer.peer_id, peer.public_key, bytes(64)),
        wire.Error(int(ErrorCode.GOING_AWAY), "bye"),
        wire.Ping(1),
        wire.Pong(1),
        wire.Request(1, "echo", b""),
        wire.SuccessResponse(1),
        wire.ProtocolResponse(1, b""),
        wire.ErrorResponse(1, 300, "no"),
    ]
    assert {type(m) for m in made} == MESSAGE_KINDS
    return made


PENDING = [phase for phase in Phase if phase not in (P.VERIFIED, P.FAILED)]


@pytest.mark.parametrize("phase", PENDING, ids=lambda p: p.name)
def test_every_message_the_table_does_not_list_is_unexpected(
    alice: Identity, bob: Identity, phase: Phase
) -> None:
    unlisted = [m for m in samples(bob) if (phase, type(m)) not in TABLE]
    assert unlisted  # every phase refuses something
    for message in unlisted:
        handshake = reach(phase, alice, bob)
        with pytest.raises(HandshakeFailed) as caught:
            handshake.receive(message)
        assert caught.value.code is ErrorCode.UNEXPECTED_MESSAGE, message
        assert caught.value.message == (
            f"{type(message).__name__} is not allowed in state"
            f" {SPEC_STATE[phase].value}"
        )
        assert handshake.phase is P.FAILED and handshake.failure is caught.value
        assert handshake.history[-1] == (SPEC_STATE[phase], S.FAILED)


@pytest.mark.parametrize("phase", [P.VERIFIED, P.FAILED], ids=lambda p: p.name)
def test_no_message_is_an_input_once_over(
    alice: Identity, bob: Identity, phase: Phase
) -> None:
    """After the end, the connection routes messages itself: feeding one to
    the machine is a bug, and changes nothing."""
    for message in samples(bob):
        handshake = reach(phase, alice, bob)
        history = list(handshake.history)
        with pytest.raises(AssertionError):
            handshake.receive(message)
        assert handshake.phase is phase and handshake.history == history


def test_failing_once_over_changes_nothing(alice: Identity, bob: Identity) -> None:
    verified = reach(P.VERIFIED, alice, bob)
    verified.timed_out()
    assert verified.phase is P.VERIFIED and verified.failure is None
    failed = reach(P.FAILED, alice, bob)
    first = failed.failure
    failed.fail(ErrorCode.GOING_AWAY, "again")
    assert failed.phase is P.FAILED and failed.failure is first


def test_every_transition_is_reached_and_no_other() -> None:
    """The union of edges taken by the scenarios above equals TRANSITIONS."""
    alice, bob = Identity.generate(), Identity.generate()
    seen: set[tuple[HandshakeState, HandshakeState]] = set()
    a, b = pair(alice, bob)
    run(a, b)
    seen |= set(a.history) | set(b.history)
    for initiator in (True, False):
        h = Handshake(alice, initiator=initiator)
        h.start()
        h.receive(wire.Hello(1, bytes(32), bob.peer_id))
        h.timed_out()
        seen |= set(h.history)
    h = Handshake(alice, initiator=False)
    h.start()
    h.timed_out()
    seen |= set(h.history)
    assert seen == TRANSITIONS == DIAGRAM | DOCUMENTED_EXTRA


# -- the Connection holds what follows the proof until the decision ----------


def _connections(
    alice: Identity, bob: Identity
) -> tuple[Connection, Connection, bytes]:
    """Alice dials Bob; Bob is verified; returns Alice's Connection waiting
    for Bob's response, Bob's, and the response's bytes."""
    a = Connection(alice, initiator=True, expected_peer=bob.peer_id)
    b = Connection(bob, initiator=False)
    a.initiate()
    b.initiate()
    assert b.receive_data(a.data_to_send()) == []
    assert a.receive_data(b.data_to_send()) == []
    assert b.receive_data(a.data_to_send()) == [PeerProven(alice.peer_id)]
    assert b.data_to_send() == b""  # no response before the decision
    assert not b.verified and b.peer_id is None
    assert b.accept() == [PeerVerified(alice.peer_id)]
    response = b.data_to_send()
    assert [type(m) for m in decode_frames(response)] == [wire.HandshakeResponse]
    return a, b, response


def test_frames_after_the_proof_wait_for_the_decision(
    alice: Identity, bob: Identity
) -> None:
    a, b, response = _connections(alice, bob)
    # Bob, verified, pings and asks at once: one read carries it all.
    b.send(wire.Ping(7))
    b.request("echo", b"hi")
    assert a.receive_data(response + b.data_to_send()) == [PeerProven(bob.peer_id)]
    assert a.data_to_send() == b""  # the Ping is not answered yet
    assert not a.verified and a.peer_id is None
    # A read while the decision is pending waits too, unframed: its frame is
    # larger than the handshake allows, but it is read after the decision.
    big = bytes(2 * wire.HANDSHAKE_MAX_FRAME)
    b.request("echo", big)
    assert a.receive_data(b.data_to_send()) == []
    assert a.accept() == [
        PeerVerified(bob.peer_id),
        wire.Request(0, "echo", b"hi"),  # no token: no response wanted
        wire.Request(0, "echo", big),
    ]
    assert decode_frames(a.data_to_send()) == [wire.Pong(7)]
    assert a.verified and a.peer_id == bob.peer_id


def test_a_large_frame_in_the_proofs_read_is_read_under_the_verified_limit(
    alice: Identity, bob: Identity
) -> None:
    """Section 1: the limit changes at the proof, wherever the reads split
    the bytes: a frame over 4,096 bytes in the very read of the proof waits
    for the decision, then is read as on a Verified connection."""
    a, b, response = _connections(alice, bob)
    big = bytes(2 * wire.HANDSHAKE_MAX_FRAME)
    b.send(wire.Ping(7))
    b.request("echo", big)
    b.send(wire.Ping(8))
    assert a.receive_data(response + b.data_to_send()) == [PeerProven(bob.peer_id)]
    assert a.accept() == [PeerVerified(bob.peer_id), wire.Request(0, "echo", big)]
    assert decode_frames(a.data_to_send()) == [wire.Pong(7), wire.Pong(8)]


def test_a_large_frame_before_any_proof_is_frame_too_large(
    alice: Identity, bob: Identity
) -> None:
    a, _b, _response = _connections(alice, bob)
    header = (wire.HANDSHAKE_MAX_FRAME + 1).to_bytes(4, "big")
    [event] = a.receive_data(header)
    assert isinstance(event, ConnectionFailed)
    assert event.error.code is ErrorCode.FRAME_TOO_LARGE and a.closed


def test_a_refused_peer_gets_the_refusals_code(alice: Identity, bob: Identity) -> None:
    a, b, response = _connections(alice, bob)
    b.send(wire.Ping(7))
    assert a.receive_data(response + b.data_to_send()) == [PeerProven(bob.peer_id)]
    failed = a.refuse(ErrorCode.CONNECTION_LIMIT, "too many")
    assert isinstance(failed, ConnectionFailed)
    assert failed.error.code is ErrorCode.CONNECTION_LIMIT and not failed.misbehaviour
    assert a.closed and a.state is S.FAILED and a.peer_id is None
    # The peer is told, and nothing else: the held Ping goes unanswered.
    told = a.data_to_send()
    assert decode_frames(told) == [wire.Error(ErrorCode.CONNECTION_LIMIT, "too many")]
    assert a.receive_data(framing.frame(wire.Ping(8))) == []
    [event] = b.receive_data(told)
    assert isinstance(event, ConnectionFailed) and event.error.remote
    assert event.error.code is ErrorCode.CONNECTION_LIMIT


def test_a_timeout_while_deciding_fails_the_handshake(
    alice: Identity, bob: Identity
) -> None:
    a, _b, response = _connections(alice, bob)
    assert a.receive_data(response) == [PeerProven(bob.peer_id)]
    failed = a.timed_out()
    assert failed.error.code is ErrorCode.HANDSHAKE_TIMEOUT
    assert a.state is S.FAILED
    assert a.handshake.history[-1] == (S.OUTBOUND_PENDING, S.FAILED)


# -- the Connection around the handshake: local failures, sending, the backlog --


def test_a_local_refusal_before_verification_fails_the_handshake(
    alice: Identity, bob: Identity
) -> None:
    """A policy decision during the handshake ends it (FAILED, the reason
    sent), not just the connection."""
    a = Connection(alice, initiator=True)
    b = Connection(bob, initiator=False)
    a.initiate()
    b.initiate()
    b.receive_data(a.data_to_send())
    b.data_to_send()
    refused = HandshakeFailed(ErrorCode.NOT_ALLOWED, "not on the list")
    assert b.fail(refused).error is refused
    assert b.state is HandshakeState.FAILED and b.closed
    assert decode_frames(b.data_to_send()) == [
        wire.Error(int(ErrorCode.NOT_ALLOWED), "not on the list")
    ]


def test_sending_before_verification_is_a_programming_error(alice: Identity) -> None:
    a = Connection(alice, initiator=True)
    a.initiate()
    with pytest.raises(RuntimeError, match="before the handshake completes"):
        a.send(wire.Ping(1))


def test_requesting_before_verification_is_a_programming_error(
    alice: Identity,
) -> None:
    a = Connection(alice, initiator=True)
    a.initiate()
    with pytest.raises(RuntimeError, match="before the handshake completes"):
        a.request("echo", b"", token=object())
    assert a.requests.pending == {}  # checked before a token waits


@pytest.mark.parametrize(
    ("payload", "metadata"),
    [
        (b"p", None),  # one chunk
        (b"p", b"m" * framing.LARGE_PART),  # two: the large metadata its own
        (b"p" * framing.LARGE_PART, None),  # three: the large payload its own
    ],
)
def test_unsent_counts_every_queued_requests_bytes(
    alice: Identity, bob: Identity, payload: bytes, metadata: Optional[bytes]
) -> None:
    _, b, _ = _connections(alice, bob)  # Bob is verified
    b.request("echo", b"first")
    b.request("echo", payload, metadata)
    assert b.unsent == len(b.data_to_send())


def _requests(*ids: int) -> bytes:
    return b"".join(framing.frame(wire.Request(i, "echo", b"")) for i in ids)


def _waiting(c: Connection) -> list[int]:
    """The ids of the requests in the backlog (held as frame bodies)."""
    return [wire.decode(body).request_id for body in c.backlog]  # type: ignore[union-attr]


def test_the_backlog_is_handed_out_as_requests_end(
    alice: Identity, bob: Identity
) -> None:
    _, b, _ = _connections(alice, bob)
    b.requests.max_in_flight = 2
    events = b.receive_data(_requests(1, 2, 3))
    assert [r.request_id for r in events] == [1, 2]  # type: ignore[union-attr]
    assert b.backlog == [framing.frame(wire.Request(3, "echo", b""))[4:]]
    assert b.release() == []  # none has ended
    # One ends: the one waiting is handed out, and the backlog is empty.
    b.respond(wire.SuccessResponse(1))
    assert b.release() == [wire.Request(3, "echo", b"")]
    assert b.backlog == [] and b.saturated  # two in flight
    b.respond(wire.SuccessResponse(2))
    assert b.release() == [] and not b.saturated


def test_the_backlog_is_handed_out_in_a_batch_once_answers_made_room(
    alice: Identity, bob: Identity
) -> None:
    """A read's answers first, then one release: as many as have room."""
    _, b, _ = _connections(alice, bob)
    b.requests.max_in_flight = 2
    b.receive_data(_requests(1, 2, 3, 4, 5))
    b.respond(wire.SuccessResponse(1))
    b.respond(wire.SuccessResponse(2))
    assert b.release() == [wire.Request(i, "echo", b"") for i in (3, 4)]
    assert _waiting(b) == [5] and b.saturated


def test_a_backlogged_duplicate_is_refused_when_its_turn_comes(
    alice: Identity, bob: Identity
) -> None:
    _, b, _ = _connections(alice, bob)
    b.requests.max_in_flight = 2
    b.receive_data(_requests(1, 2, 1))
    b.data_to_send()
    assert b.saturated
    b.respond(wire.SuccessResponse(2))
    assert b.release() == []  # request 1 is in flight
    answer, refusal = decode_frames(b.data_to_send())
    assert answer == wire.SuccessResponse(2)
    assert isinstance(refusal, wire.ErrorResponse) and refusal.request_id == 1
    assert refusal.code == ErrorCode.DUPLICATE_REQUEST_ID
    assert b.backlog == []


def test_a_refused_backlogged_request_leaves_its_turn_to_the_next(
    alice: Identity, bob: Identity
) -> None:
    _, b, _ = _connections(alice, bob)
    b.requests.max_in_flight = 2
    b.receive_data(_requests(1, 2, 1, 3))
    b.data_to_send()
    assert _waiting(b) == [1, 3]
    # Request 2 ends: the duplicate 1 is refused, and 3 takes the free slot.
    b.respond(wire.SuccessResponse(2))
    assert b.release() == [wire.Request(3, "echo", b"")]
    assert b.backlog == [] and b.saturated
    answer, refusal = decode_frames(b.data_to_send())
    assert answer == wire.SuccessResponse(2)
    assert isinstance(refusal, wire.ErrorResponse) and refusal.request_id == 1
    # Nothing of 3 is left behind to be refused as a duplicate later.
    b.respond(wire.SuccessResponse(1))
    assert b.release() == []
    assert decode_frames(b.data_to_send()) == [wire.SuccessResponse(1)]


def test_a_duplicate_request_id_in_flight_is_refused_and_the_link_goes_on(
    alice: Identity, bob: Identity
) -> None:
    _, b, _ = _connections(alice, bob)
    events = b.receive_data(_requests(1, 1, 2))
    assert [r.request_id for r in events] == [1, 2]  # type: ignore[union-attr]
    [refusal] = decode_frames(b.data_to_send())
    assert isinstance(refusal, wire.ErrorResponse) and refusal.request_id == 1
    assert refusal.code == ErrorCode.DUPLICATE_REQUEST_ID and not b.closed


def test_every_type_byte_of_the_streams_range_goes_to_the_streams(
    alice: Identity, bob: Identity
) -> None:
    """0x50-0x57, the reserved ones too: the stream machine refuses those
    in its own words; with streams off they are unknown types here."""
    _, b, _ = _connections(alice, bob)
    b.streams = True
    reserved = bytes([stream_wire.TYPES[-1]])
    assert b.receive_data(framing.frame_body(reserved)) == [StreamFrames([reserved])]
    _, c, _ = _connections(alice, bob)
    [failed] = c.receive_data(framing.frame_body(reserved))
    assert isinstance(failed, ConnectionFailed)
    assert failed.error.code == ErrorCode.UNKNOWN_MESSAGE_TYPE


def test_a_peers_error_after_verified_ends_the_link_with_its_words(
    alice: Identity, bob: Identity
) -> None:
    _, b, _ = _connections(alice, bob)
    error = wire.Error(int(ErrorCode.GOING_AWAY), "shutting down")
    [failed] = b.receive_data(framing.frame(error))
    assert isinstance(failed, ConnectionFailed) and failed.error.remote
    assert failed.error.code == ErrorCode.GOING_AWAY
    assert failed.error.message == "peer said: shutting down" and b.closed


def test_a_waiting_request_is_decoded_only_when_its_turn_comes(
    alice: Identity, bob: Identity
) -> None:
    """A flooder's whole read is not decoded ahead of other peers' reads: a
    malformed request past the bound is found when it is released, and the
    frames behind it in the read are acted on meanwhile."""
    _, b, _ = _connections(alice, bob)
    b.requests.max_in_flight = 1
    malformed = bytes([wire.T_REQUEST]) + b"\x00\x00\x00\x02"  # truncated
    data = _requests(1) + framing.frame_body(malformed) + framing.frame(wire.Ping(9))
    events = b.receive_data(data)
    assert [r.request_id for r in events] == [1]  # type: ignore[union-attr]
    assert b.backlog == [malformed] and not b.closed
    assert decode_frames(b.data_to_send()) == [wire.Pong(9)]  # not held
    b.respond(wire.SuccessResponse(1))
    [failed] = b.release()
    assert isinstance(failed, ConnectionFailed)
    assert failed.error.code == ErrorCode.TRUNCATED and b.closed
    assert b.backlog == []
    answer, error = decode_frames(b.data_to_send())
    assert answer == wire.SuccessResponse(1)
    assert isinstance(error, wire.Error) and error.code == ErrorCode.TRUNCATED


def test_a_malformed_waiting_request_ends_the_link_after_those_ahead_of_it(
    alice: Identity, bob: Identity
) -> None:
    """Requests ahead of it in the backlog are served; it closes the link
    when its turn comes, and the request behind it is never handed out."""
    _, b, _ = _connections(alice, bob)
    b.requests.max_in_flight = 1
    malformed = bytes([wire.T_REQUEST]) + b"\x00\x00\x00\x09"  # truncated
    data = _requests(1, 2) + framing.frame_body(malformed) + _requests(3)
    assert [r.request_id for r in b.receive_data(data)] == [1]  # type: ignore[union-attr]
    b.respond(wire.SuccessResponse(1))
    assert b.release() == [wire.Request(2, "echo", b"")]
    b.respond(wire.SuccessResponse(2))
    [failed] = b.release()
    assert isinstance(failed, ConnectionFailed) and not failed.error.remote
    assert failed.error.code == ErrorCode.TRUNCATED and b.closed
    *answers, error = decode_frames(b.data_to_send())
    assert answers == [wire.SuccessResponse(1), wire.SuccessResponse(2)]
    assert isinstance(error, wire.Error) and error.code == ErrorCode.TRUNCATED


def test_an_answer_past_the_frame_limit_is_an_error(
    alice: Identity, bob: Identity
) -> None:
    """max_frame 100: a Protocol response's body is 9 bytes and its data, so
    91 bytes of data fit its frame and 92 do not (a Success's body is one
    byte longer: 90 fit).  The answer is framed once, by respond."""
    _, b, _ = _connections(alice, bob)
    b.max_frame = 100
    b.receive_data(_requests(1, 2, 3, 4))
    b.respond(wire.ProtocolResponse(1, bytes(91)))
    b.respond(wire.ProtocolResponse(2, bytes(92)))
    b.respond(wire.SuccessResponse(3, bytes(91)))
    b.respond(wire.SuccessResponse(4, bytes(90)))
    fits, big, success, fits_too = decode_frames(b.data_to_send())
    assert fits == wire.ProtocolResponse(1, bytes(91))
    reason = "the response exceeds the frame limit of 100 bytes"
    assert big == wire.ErrorResponse(2, ErrorCode.PAYLOAD_TOO_LARGE, reason)
    assert success == wire.ErrorResponse(3, ErrorCode.PAYLOAD_TOO_LARGE, reason)
    assert fits_too == wire.SuccessResponse(4, bytes(90))


def test_an_answer_without_room_is_a_short_rate_limited_error(
    alice: Identity, bob: Identity
) -> None:
    """``room`` is asked once, with the frame's size; a no gets the peer a
    RATE_LIMITED Error in the answer's place."""
    _, b, _ = _connections(alice, bob)
    b.receive_data(_requests(1, 2, 0))
    asked: list[int] = []

    def room(size: int) -> bool:
        asked.append(size)
        return size < 100

    b.respond(wire.ProtocolResponse(1, bytes(50)), room)
    b.respond(wire.ProtocolResponse(2, bytes(500)), room)
    b.respond(wire.SuccessResponse(0), room)  # fire and forget: nothing sent
    assert asked == [len(framing.frame(wire.ProtocolResponse(1, bytes(50)))), 513]
    answered, refused = decode_frames(b.data_to_send())
    assert answered == wire.ProtocolResponse(1, bytes(50))
    assert refused == wire.ErrorResponse(
        2, ErrorCode.RATE_LIMITED, "not reading: the send queue is full"
    )


def test_our_requests_deadlines_are_kept_by_the_connection(
    alice: Identity, bob: Identity
) -> None:
    a, _, response = _connections(alice, bob)
    assert a.receive_data(response) == [PeerProven(bob.peer_id)]
    a.accept()
    assert a.request("echo", b"", token="long", deadline=10.0) == 1
    assert a.request("echo", b"", token="short", deadline=5.0) == 2
    a.request("echo", b"", deadline=1.0)  # wants no response: no deadline
    assert a.next_deadline == 5.0
    assert a.expire(4.9) == []
    assert a.expire(5.0) == [(2, "short")]
    assert a.next_deadline == 10.0
    # Answered in time: its deadline is forgotten, and a late one ignored.
    events = a.receive_data(framing.frame(wire.SuccessResponse(1)))
    assert [e.token for e in events] == ["long"]  # type: ignore[union-attr]
    assert a.next_deadline is None and a.expire(20.0) == []
    assert a.receive_data(framing.frame(wire.SuccessResponse(2))) == []
    a.request("echo", b"", token="lost", deadline=30.0)
    assert a.lost() == ["lost"] and a.next_deadline is None
    # Once lost, nothing more is sent or waited for: a request fails at once.
    with pytest.raises(PeerLost):
        a.request("echo", b"", token="too late", deadline=40.0)
    assert a.next_deadline is None


def test_a_handshake_message_after_verified_fails_the_connection_by_name(
    alice: Identity, bob: Identity
) -> None:
    a, _, response = _connections(alice, bob)
    assert a.receive_data(response) == [PeerProven(bob.peer_id)]
    a.accept()
    a.data_to_send()
    late = wire.HandshakeResponse(bytes(32), bytes(64))
    [failed] = a.receive_data(framing.frame(late))
    assert isinstance(failed, ConnectionFailed) and a.closed
    assert failed.error.code is ErrorCode.UNEXPECTED_MESSAGE
    assert failed.error.message == "HandshakeResponse after the handshake"
    told = wire.decode(a.data_to_send()[4:])
    assert told == wire.Error(ErrorCode.UNEXPECTED_MESSAGE, failed.error.message)
