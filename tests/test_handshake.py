"""Every handshake path, driven without a reactor."""

from __future__ import annotations

from typing import Optional

import pytest

from blueprint_net._core import wire
from blueprint_net._core.errors import ErrorCode, HandshakeFailed
from blueprint_net._core.handshake import (
    TRANSITIONS,
    Handshake,
    HandshakeState,
    transcript,
)
from blueprint_net._core.identity import Identity, PeerId

S = HandshakeState


def pair(
    initiator: Identity,
    responder: Identity,
    *,
    expected: Optional[PeerId] = None,
    binding_i: bytes = b"",
    binding_r: bytes = b"",
) -> tuple[Handshake, Handshake]:
    return (
        Handshake(
            initiator, initiator=True, expected_peer=expected, binding=lambda: binding_i
        ),
        Handshake(responder, initiator=False, binding=lambda: binding_r),
    )


def run(a: Handshake, b: Handshake) -> list[tuple[str, wire.Message]]:
    """Exchange messages until both sides are quiet; returns the transcript."""
    log: list[tuple[str, wire.Message]] = []
    to_b, to_a = a.start(), b.start()
    while to_a or to_b:
        next_a, next_b = [], []
        for message in to_b:
            log.append(("a->b", message))
            next_a += b.receive(message)
        for message in to_a:
            log.append(("b->a", message))
            next_b += a.receive(message)
        to_a, to_b = next_a, next_b
    return log


def test_valid_handshake(alice: Identity, bob: Identity) -> None:
    a, b = pair(alice, bob, expected=bob.peer_id)
    log = run(a, b)
    assert a.state is b.state is S.VERIFIED
    assert a.peer_id == bob.peer_id and b.peer_id == alice.peer_id
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
    signatures_checked = 0

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        type(self).signatures_checked += 1
        return super().verify(public_key, message, signature)


@pytest.mark.parametrize("initiator", [True, False])
def test_wrong_version_fails_before_signature_work(
    bob: Identity, initiator: bool
) -> None:
    me = CountingIdentity(bytes(range(100, 132)))
    handshake = Handshake(me, initiator=initiator)
    handshake.start()
    code = failure(handshake, wire.Hello(2, bytes(32), bob.peer_id))
    assert code is ErrorCode.INCOMPATIBLE_VERSION
    assert CountingIdentity.signatures_checked == 0
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
    assert a.state is S.FAILED


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


def test_authorize_refuses_after_proof(alice: Identity, bob: Identity) -> None:
    refused: list[PeerId] = []

    def authorize(peer_id: PeerId) -> None:
        refused.append(peer_id)
        raise HandshakeFailed(ErrorCode.BANNED, "banned")

    a = Handshake(alice, initiator=True)
    b = Handshake(bob, initiator=False, authorize=authorize)
    with pytest.raises(HandshakeFailed) as caught:
        run(a, b)
    assert caught.value.code is ErrorCode.BANNED
    assert refused == [alice.peer_id]  # only once Alice had proved her id
    assert b.state is S.FAILED and b.peer_id is None


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
    assert seen == TRANSITIONS


def test_illegal_transitions_are_impossible(alice: Identity, bob: Identity) -> None:
    a, b = pair(alice, bob)
    run(a, b)
    with pytest.raises(AssertionError):
        a.receive(wire.Ping(1))
    with pytest.raises(AssertionError):
        a._move(S.CONNECTED)
    all_edges = {(x, y) for x in S for y in S}
    assert all_edges - TRANSITIONS  # the rest really are forbidden
    for edge in all_edges - TRANSITIONS:
        h = Handshake(alice, initiator=False)
        h.state = edge[0]
        with pytest.raises(AssertionError):
            h._move(edge[1])
