"""The handshake's TLS variant (docs/protocol.md, "Over TLS"), driven without
a reactor: one Proof each way, bound to the TLS exporter, no nonces."""

from __future__ import annotations

import pytest

from blueprint_net._core import wire
from blueprint_net._core.connection import Connection
from blueprint_net._core.connection_events import ConnectionFailed, PeerVerified
from blueprint_net._core.errors import ErrorCode, HandshakeFailed
from blueprint_net._core.handshake import TABLE, Handshake
from blueprint_net._core.handshake_states import (
    SPEC_STATE,
    HandshakeState,
    Local,
    PeerProven,
    Phase,
)
from blueprint_net._core.handshake_transcripts import (
    DOMAIN,
    ROLE_TLS_CLIENT,
    ROLE_TLS_SERVER,
    bound_transcript,
)
from blueprint_net._core.identity import Identity, PeerId
from tests.core.test_handshake import BOUND, CountingIdentity, failure, reach_bound
from tests.helpers import decode_frames

S = HandshakeState
P = Phase
EXPORTER = bytes(range(32))
OTHER_EXPORTER = bytes(range(1, 33))


def bound_pair(
    dialer: Identity,
    listener: Identity,
    *,
    binding: bytes = EXPORTER,
    expected: PeerId | None = None,
) -> tuple[Handshake, Handshake, wire.Proof]:
    """Both sides started once TLS completed; returns them and the dialer's
    Proof (sent at once)."""
    a = Handshake(dialer, initiator=True, expected_peer=expected)
    b = Handshake(listener, initiator=False)
    [proof] = a.start_bound(binding, listener.peer_id)
    assert b.start_bound(binding, dialer.peer_id) == []  # the listener waits
    assert isinstance(proof, wire.Proof)
    return a, b, proof


def test_one_proof_each_way(alice: Identity, bob: Identity) -> None:
    a, b, proof = bound_pair(alice, bob)
    assert (a.phase, b.phase) == (
        P.BOUND_OUTBOUND_AWAITING_PROOF,
        P.BOUND_INBOUND_AWAITING_PROOF,
    )
    assert proof == wire.Proof(1, alice.peer_id, alice.public_key, proof.signature)
    assert b.receive(proof) == [PeerProven(alice.peer_id)]
    assert (b.phase, b.peer_public_key) == (P.BOUND_INBOUND_PROVEN, None)  # not yet
    [answer] = b.accept()  # the listener proves itself only on accept
    assert isinstance(answer, wire.Proof) and answer.peer_id == bob.peer_id
    assert a.receive(answer) == [PeerProven(bob.peer_id)]
    assert a.accept() == []
    assert a.state is b.state is S.VERIFIED
    assert (a.peer_id, b.peer_id) == (bob.peer_id, alice.peer_id)
    assert (a.peer_public_key, b.peer_public_key) == (bob.public_key, alice.public_key)
    # The nonce handshake's edges: Connected -> *Pending -> Verified.
    for handshake, pending in ((a, S.OUTBOUND_PENDING), (b, S.INBOUND_PENDING)):
        assert handshake.history == [(S.CONNECTED, pending), (pending, S.VERIFIED)]
    # The duplicate-connection rule's key: the same at both ends, the exporter.
    assert a.session_key == b.session_key == EXPORTER
    assert a.bound and b.bound


def test_the_signatures_cover_the_documented_transcript(
    alice: Identity, bob: Identity
) -> None:
    _a, b, proof = bound_pair(alice, bob)
    signed = bound_transcript(ROLE_TLS_CLIENT, 1, alice.peer_id, bob.peer_id, EXPORTER)
    assert alice.verify(alice.public_key, signed, proof.signature)
    b.receive(proof)
    [answer] = b.accept()
    assert isinstance(answer, wire.Proof)
    signed = bound_transcript(ROLE_TLS_SERVER, 1, bob.peer_id, alice.peer_id, EXPORTER)
    assert bob.verify(bob.public_key, signed, answer.signature)


def test_each_side_signs_once_and_checks_once() -> None:
    me = CountingIdentity(bytes(range(100, 132)))
    peer = CountingIdentity(bytes(range(32, 64)))
    a, b, proof = bound_pair(me, peer)
    b.receive(proof)
    a.receive(b.accept()[0])
    a.accept()
    assert (me.signatures_made, me.signatures_checked) == (1, 1)
    assert (peer.signatures_made, peer.signatures_checked) == (1, 1)


# -- refusals -----------------------------------------------------------------


def test_a_relay_between_two_tls_sessions_fails(alice: Identity, bob: Identity) -> None:
    """Mallory terminates Alice's TLS session and opens her own to Bob; even
    were Bob's certificate check fooled into naming Alice, her Proof is bound
    to the other session's exporter."""
    _a, _b, proof = bound_pair(alice, bob, binding=EXPORTER)
    relayed_to = Handshake(bob, initiator=False)
    relayed_to.start_bound(OTHER_EXPORTER, alice.peer_id)
    assert failure(relayed_to, proof) is ErrorCode.BAD_SIGNATURE


def test_a_recorded_proof_fails_on_a_new_session(
    alice: Identity, bob: Identity
) -> None:
    """Replay: no nonce, but every session has its own exporter."""
    _a, b, proof = bound_pair(alice, bob)
    b.receive(proof)
    later = Handshake(bob, initiator=False)
    later.start_bound(OTHER_EXPORTER, alice.peer_id)
    assert failure(later, proof) is ErrorCode.BAD_SIGNATURE


def test_a_proof_for_bob_is_refused_by_carol(
    alice: Identity, bob: Identity, carol: Identity
) -> None:
    """The verifier's id: even on the same exporter, a proof made for Bob
    does not prove Alice to Carol."""
    _a, _b, proof = bound_pair(alice, bob)
    c = Handshake(carol, initiator=False)
    c.start_bound(EXPORTER, alice.peer_id)
    assert failure(c, proof) is ErrorCode.BAD_SIGNATURE


def test_the_dialers_proof_is_not_the_listeners(alice: Identity, bob: Identity) -> None:
    """The role: a signature Bob made as the TLS client does not pass as the
    server's, though every other part of the transcript matches."""
    a, _b, _proof = bound_pair(alice, bob)
    as_client = bound_transcript(
        ROLE_TLS_CLIENT, 1, bob.peer_id, alice.peer_id, EXPORTER
    )
    forged = wire.Proof(1, bob.peer_id, bob.public_key, bob.sign(as_client))
    assert failure(a, forged) is ErrorCode.BAD_SIGNATURE


def test_a_nonce_variant_signature_is_not_a_proof(
    alice: Identity, bob: Identity
) -> None:
    """Domain separation between the two variants."""
    a, _b, _proof = bound_pair(alice, bob)
    signed = bound_transcript(ROLE_TLS_SERVER, 1, bob.peer_id, alice.peer_id, EXPORTER)
    plain_domain = DOMAIN + signed[len(b"blueprint-net/handshake-tls/v1\x00") :]
    forged = wire.Proof(1, bob.peer_id, bob.public_key, bob.sign(plain_domain))
    assert failure(a, forged) is ErrorCode.BAD_SIGNATURE


def test_a_reflected_proof_is_refused(alice: Identity, bob: Identity) -> None:
    a, _b, proof = bound_pair(alice, bob)
    assert failure(a, proof) is ErrorCode.SELF_CONNECTION


def test_a_forged_signature_fails(alice: Identity, bob: Identity) -> None:
    _a, b, proof = bound_pair(alice, bob)
    forged = wire.Proof(1, proof.peer_id, proof.public_key, bytes(64))
    assert failure(b, forged) is ErrorCode.BAD_SIGNATURE


def test_a_key_that_is_not_the_claimed_ids(
    alice: Identity, bob: Identity, carol: Identity
) -> None:
    _a, b, proof = bound_pair(alice, bob)
    forged = wire.Proof(1, alice.peer_id, carol.public_key, proof.signature)
    assert failure(b, forged) is ErrorCode.WRONG_KEY


def test_a_claim_that_is_not_the_certificates(
    alice: Identity, bob: Identity, carol: Identity
) -> None:
    """Carol proves Carol, correctly signed, but TLS certified Alice."""
    b = Handshake(bob, initiator=False)
    b.start_bound(EXPORTER, alice.peer_id)
    signed = bound_transcript(ROLE_TLS_CLIENT, 1, carol.peer_id, bob.peer_id, EXPORTER)
    proof = wire.Proof(1, carol.peer_id, carol.public_key, carol.sign(signed))
    assert failure(b, proof) is ErrorCode.WRONG_KEY


@pytest.mark.parametrize("initiator", [True, False])
def test_another_version_fails_before_any_signature_is_checked(
    bob: Identity, initiator: bool
) -> None:
    me = CountingIdentity(bytes(range(100, 132)))
    handshake = Handshake(me, initiator=initiator)
    sent = handshake.start_bound(EXPORTER, bob.peer_id)  # the dialer's Proof
    code = failure(handshake, wire.Proof(2, bob.peer_id, bob.public_key, bytes(64)))
    work = (me.signatures_checked, me.signatures_made)
    assert (code, work) == (ErrorCode.INCOMPATIBLE_VERSION, (0, len(sent)))
    assert handshake.failure is not None and "version 2" in handshake.failure.message


@pytest.mark.parametrize("initiator", [True, False])
def test_a_certificate_naming_us_is_a_self_connection(
    alice: Identity, initiator: bool
) -> None:
    me = CountingIdentity(bytes(range(32)))
    handshake = Handshake(me, initiator=initiator)
    with pytest.raises(HandshakeFailed) as caught:
        handshake.start_bound(EXPORTER, alice.peer_id)
    assert caught.value.code is ErrorCode.SELF_CONNECTION
    assert handshake.state is S.FAILED and me.signatures_made == 0  # nothing sent


def test_an_unexpected_certificate_fails_before_proving(
    alice: Identity, bob: Identity, carol: Identity
) -> None:
    me = CountingIdentity(bytes(range(32)))
    handshake = Handshake(me, initiator=True, expected_peer=bob.peer_id)
    with pytest.raises(HandshakeFailed) as caught:
        handshake.start_bound(EXPORTER, carol.peer_id)
    assert caught.value.code is ErrorCode.UNEXPECTED_PEER
    assert handshake.state is S.FAILED and me.signatures_made == 0


def test_an_unexpected_peer_in_the_proof(
    alice: Identity, bob: Identity, carol: Identity
) -> None:
    """The check runs on the Proof's claim too, before its signature."""
    a = Handshake(alice, initiator=True, expected_peer=bob.peer_id)
    a.start_bound(EXPORTER, bob.peer_id)
    proof = wire.Proof(1, carol.peer_id, carol.public_key, bytes(64))
    assert failure(a, proof) is ErrorCode.UNEXPECTED_PEER


@pytest.mark.parametrize("initiator", [True, False])
def test_a_refused_peer_is_not_proven_to(
    alice: Identity, bob: Identity, initiator: bool
) -> None:
    me, peer = (alice, bob) if initiator else (bob, alice)
    phase = P.BOUND_OUTBOUND_PROVEN if initiator else P.BOUND_INBOUND_PROVEN
    handshake = reach_bound(phase, me, peer)
    refusal = handshake.refuse(ErrorCode.BANNED, "banned")
    assert handshake.state is S.FAILED and handshake.failure is refusal
    assert handshake.peer_id is None


def test_the_nonce_variant_on_a_bound_link_is_unexpected(
    alice: Identity, bob: Identity
) -> None:
    """Both ends see the ALPN: a Hello here is a peer that broke the rule."""
    for initiator in (True, False):
        handshake = Handshake(alice, initiator=initiator)
        handshake.start_bound(EXPORTER, bob.peer_id)
        hello = wire.Hello(1, bytes(32), bob.peer_id)
        assert failure(handshake, hello) is ErrorCode.UNEXPECTED_MESSAGE


def test_a_proof_on_a_nonce_link_is_unexpected(alice: Identity, bob: Identity) -> None:
    for initiator in (True, False):
        handshake = Handshake(alice, initiator=initiator)
        handshake.start()
        proof = wire.Proof(1, bob.peer_id, bob.public_key, bytes(64))
        assert failure(handshake, proof) is ErrorCode.UNEXPECTED_MESSAGE


# -- every (phase, input) of the variant ----------------------------------------


def test_every_bound_phase_and_input() -> None:
    """Each bound phase lists exactly these inputs; the messages it does not
    list are UNEXPECTED_MESSAGE (tests/test_handshake.py checks that for
    every phase, these included)."""
    listed = {
        phase: {kind for (p, kind) in TABLE if p is phase}
        for phase in sorted(BOUND, key=str)
    }
    assert listed == {
        P.BOUND_OUTBOUND_AWAITING_PROOF: {wire.Proof, wire.Error, Local.FAIL},
        P.BOUND_INBOUND_AWAITING_PROOF: {wire.Proof, wire.Error, Local.FAIL},
        P.BOUND_OUTBOUND_PROVEN: {Local.ACCEPT, Local.REFUSE, Local.FAIL},
        P.BOUND_INBOUND_PROVEN: {Local.ACCEPT, Local.REFUSE, Local.FAIL},
    }
    assert TABLE[P.CONNECTED, Local.START_BOUND_INITIATOR][0] is (
        P.BOUND_OUTBOUND_AWAITING_PROOF
    )
    assert TABLE[P.CONNECTED, Local.START_BOUND_RESPONDER][0] is (
        P.BOUND_INBOUND_AWAITING_PROOF
    )


@pytest.mark.parametrize("phase", sorted(BOUND, key=str), ids=lambda p: p.name)
def test_every_bound_phase_times_out_and_takes_errors(
    alice: Identity, bob: Identity, phase: Phase
) -> None:
    handshake = reach_bound(phase, alice, bob)
    assert handshake.timed_out().code is ErrorCode.HANDSHAKE_TIMEOUT
    assert handshake.history[-1] == (SPEC_STATE[phase], S.FAILED)
    if phase in (P.BOUND_OUTBOUND_AWAITING_PROOF, P.BOUND_INBOUND_AWAITING_PROOF):
        again = reach_bound(phase, alice, bob)
        error = wire.Error(int(ErrorCode.BANNED), "go away")
        with pytest.raises(HandshakeFailed) as caught:
            again.receive(error)
        assert caught.value.remote and caught.value.code is ErrorCode.BANNED
        assert again.state is S.FAILED


@pytest.mark.parametrize("phase", sorted(BOUND, key=str), ids=lambda p: p.name)
def test_deciding_out_of_turn_or_starting_twice_is_a_caller_bug(
    alice: Identity, bob: Identity, phase: Phase
) -> None:
    handshake = reach_bound(phase, alice, bob)
    with pytest.raises(AssertionError):
        handshake.start_bound(EXPORTER, bob.peer_id)
    with pytest.raises(AssertionError):
        handshake.start()
    if phase not in (P.BOUND_OUTBOUND_PROVEN, P.BOUND_INBOUND_PROVEN):
        with pytest.raises(AssertionError):
            handshake.accept()
    assert handshake.phase is phase


# -- the Connection ----------------------------------------------------------------


def test_connections_over_tls(alice: Identity, bob: Identity) -> None:
    """Bytes in, bytes out: the dialer's Proof, then the listener's, and what
    the dialer sent after its Proof waits for the listener's decision."""
    a = Connection(alice, initiator=True, expected_peer=bob.peer_id)
    b = Connection(bob, initiator=False)
    assert a.start_bound(EXPORTER, bob.peer_id) == []
    assert b.start_bound(EXPORTER, alice.peer_id) == []
    assert b.data_to_send() == b""
    first = a.data_to_send()
    assert [type(m) for m in decode_frames(first)] == [wire.Proof]
    assert b.receive_data(first) == [PeerProven(alice.peer_id)]
    assert b.accept() == [PeerVerified(alice.peer_id)]
    b.request("echo", b"early")  # verified: may ask at once
    answer = b.data_to_send()
    assert [type(m) for m in decode_frames(answer)] == [wire.Proof, wire.Request]
    assert a.receive_data(answer) == [PeerProven(bob.peer_id)]
    events = a.accept()
    assert events[0] == PeerVerified(bob.peer_id)
    assert isinstance(events[1], wire.Request) and events[1].payload == b"early"


def test_a_connection_whose_certificate_names_us(alice: Identity) -> None:
    a = Connection(alice, initiator=False)
    [event] = a.start_bound(EXPORTER, alice.peer_id)
    assert isinstance(event, ConnectionFailed)
    assert event.error.code is ErrorCode.SELF_CONNECTION and a.closed
    [error] = decode_frames(a.data_to_send())
    assert error == wire.Error(int(ErrorCode.SELF_CONNECTION), "peer claims our own id")
