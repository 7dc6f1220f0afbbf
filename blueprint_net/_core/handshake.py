"""The handshake state machine: mutual Ed25519 authentication, sans-IO.

Layer: core (sans-IO; imports nothing from Twisted).

Each side proves its key by signing a *transcript* of this connection
(both ids, both fresh nonces, the version and the channel binding:
:mod:`~blueprint_net._core.handshake_transcripts` says what each part
defends against), so a signature seen once is no good on another connection.
Over a ``p2ptls`` link (TLS 1.3, ALPN ``blueprint/1``, each side's
certificate its node key) the session's exporter is already unique to the
connection, so the nonces buy nothing and cost a round trip: there the
machine runs the *TLS variant* (:meth:`Handshake.start_bound`), one
:class:`~wire.Proof` each way.  The dialer (the TLS client) proves itself as
soon as TLS completes; the listener proves itself once it has verified and
admitted the dialer.  Both variants share the table below; the TLS phases
are ``BOUND_*``.

The machine is one table, :data:`TABLE`: (phase, input kind) -> (next phase,
action).  Every phase is a sub-state of one of the specification's states
(:data:`SPEC_STATE`), and nothing outside the phase records where the machine
is.  It never calls out: once the peer's proof verifies it stops and returns
:class:`PeerProven`; the caller's policy answers with :meth:`Handshake.accept`
or :meth:`Handshake.refuse`.  A failure moves it to ``FAILED``: one the peer
caused is raised as :class:`HandshakeFailed`, a local one (timeout, refusal)
is returned.

In: ``start``/``start_bound``, the peer's messages (``receive``) and the
caller's ``accept``, ``refuse`` or ``fail``.  Out: messages for the peer and
:class:`PeerProven`.  States: the phases of
:mod:`~blueprint_net._core.handshake_states`, which also names the inputs
and outputs.
"""

from __future__ import annotations

import secrets
from typing import Any, Callable, Optional, cast

from blueprint_net._core.errors import ErrorCode, HandshakeFailed
from blueprint_net._core.handshake_states import (
    SPEC_STATE,
    HandshakeOutput,
    HandshakeState,
    InputKind,
    Local,
    PeerProven,
    Phase,
)
from blueprint_net._core.handshake_transcripts import (
    ROLE_TLS_CLIENT,
    ROLE_TLS_SERVER,
    bound_transcript,
    transcript,
)
from blueprint_net._core.identity import Identity, PeerId
from blueprint_net._core.signatures import is_acceptable_public_key
from blueprint_net._core.wire import (
    NONCE_SIZE,
    PROTOCOL_VERSION,
    T_HANDSHAKE_REQUEST,
    T_HANDSHAKE_RESPONSE,
    Error,
    HandshakeRequest,
    HandshakeResponse,
    Hello,
    Message,
    Proof,
)

Action = Callable[["Handshake", Any], list[HandshakeOutput]]

_OVER = frozenset({Phase.VERIFIED, Phase.FAILED})
#: Where the caller's decision is awaited.
_PROVEN = frozenset(
    {
        Phase.OUTBOUND_PROVEN,
        Phase.INBOUND_PROVEN,
        Phase.BOUND_OUTBOUND_PROVEN,
        Phase.BOUND_INBOUND_PROVEN,
    }
)


class Handshake:
    """One side of one connection's handshake.

    ``initiator`` is the side that opens the handshake (normally the dialer);
    when both sides of a connection initiate at once, both end ``VERIFIED``.
    The channel binding is supplied with :meth:`set_channel_binding` once the
    transport knows it, before the first signature is made or checked.
    """

    def __init__(
        self,
        identity: Identity,
        *,
        initiator: bool,
        expected_peer: Optional[PeerId] = None,
        version: int = PROTOCOL_VERSION,
        nonce: Optional[bytes] = None,
    ) -> None:
        self.identity = identity
        self.initiator = initiator
        self.expected_peer = expected_peer
        self.version = version
        #: Ours, made when our Hello is (the TLS variant needs none).
        self.nonce = b"" if nonce is None else nonce
        self.channel_binding = b""
        self.phase = Phase.CONNECTED
        #: The specification-level edges taken, in order (moves between
        #: phases of one state are not edges).
        self.history: list[tuple[HandshakeState, HandshakeState]] = []
        self.peer_hello: Optional[Hello] = None
        #: Set on accept: the proven peer, and the key it proved.
        self.peer_id: Optional[PeerId] = None
        self.peer_public_key: Optional[bytes] = None
        self.failure: Optional[HandshakeFailed] = None
        self._proven_key = b""
        #: TLS variant: the id the peer's certificate names, given at start.
        self.certified_peer: Optional[PeerId] = None
        self._bound_proof: Optional[Proof] = None

    @property
    def state(self) -> HandshakeState:
        """The specification's name for where the machine is."""
        return SPEC_STATE[self.phase]

    @property
    def bound(self) -> bool:
        """Whether this is the TLS variant (started by :meth:`start_bound`)."""
        return self.certified_peer is not None

    @property
    def claimed_peer(self) -> Optional[PeerId]:
        """The id the peer claims in its ``Hello`` or ``Proof`` (proved only
        once verified)."""
        if self._bound_proof is not None:
            return self._bound_proof.peer_id
        return self.peer_hello.peer_id if self.peer_hello is not None else None

    @property
    def session_key(self) -> bytes:
        """The same bytes at both ends, unique to the connection: both nonces,
        smaller first; in the TLS variant, the exporter."""
        if self.bound:
            return self.channel_binding
        assert self.peer_hello is not None
        return b"".join(sorted((self.nonce, self.peer_hello.nonce)))

    def set_channel_binding(self, value: bytes) -> None:
        """The TLS exporter value; signatures made or checked afterwards
        cover it (a relay between two TLS sessions then fails)."""
        self.channel_binding = value

    # -- inputs -------------------------------------------------------------

    def start(self) -> list[Message]:
        """The connection is open: say hello; an initiator is now pending."""
        kind = Local.START_INITIATOR if self.initiator else Local.START_RESPONDER
        return cast("list[Message]", self._input(kind, None))

    def start_bound(self, binding: bytes, certified_peer: PeerId) -> list[Message]:
        """TLS completed with ALPN ``blueprint/1``: run the TLS variant, bound
        to ``binding`` (the exporter), with the peer that its certificate
        names.  The dialer's Proof is returned at once.

        Raises :class:`HandshakeFailed` when the certificate names us, or
        another peer than the one expected (nothing is sent then).
        """
        kind = (
            Local.START_BOUND_INITIATOR
            if self.initiator
            else Local.START_BOUND_RESPONDER
        )
        return cast("list[Message]", self._input(kind, (binding, certified_peer)))

    def receive(self, message: Message) -> list[HandshakeOutput]:
        """Feed one message from the peer; returns what to send back, or
        ``[PeerProven(...)]`` when the peer's proof verified.

        Raises :class:`HandshakeFailed` when the message fails the handshake.
        """
        return self._input(type(message), message)

    def accept(self) -> list[Message]:
        """Admit the proven peer: ``VERIFIED``; returns what to send (the
        responder's HandshakeResponse)."""
        return cast("list[Message]", self._input(Local.ACCEPT, None))

    def refuse(self, code: ErrorCode, reason: str) -> HandshakeFailed:
        """Refuse the proven peer (a ban, an allow-list, a limit): ``FAILED``
        with the failure to report, which the peer is told."""
        failure = HandshakeFailed(code, reason)
        self._input(Local.REFUSE, failure)
        return failure

    def fail(self, code: ErrorCode, reason: str) -> HandshakeFailed:
        """End the handshake from this side: ``FAILED`` unless it is already
        over; returns the failure to report."""
        failure = HandshakeFailed(code, reason)
        self._input(Local.FAIL, failure)
        return failure

    def timed_out(self) -> HandshakeFailed:
        """The deadline passed; returns the failure to report."""
        return self.fail(ErrorCode.HANDSHAKE_TIMEOUT, "handshake timed out")

    # -- the machine --------------------------------------------------------

    def _input(self, kind: InputKind, value: Any) -> list[HandshakeOutput]:
        """Look ``kind`` up in :data:`TABLE` for the current phase, move, and
        run the action in the new phase.  A peer's message the table does
        not list fails the handshake; a local input it does not list is a
        bug in the caller."""
        step = TABLE.get((self.phase, kind))
        if step is None:
            if self.phase in _OVER or isinstance(kind, Local):
                raise AssertionError(f"{kind} is not an input in {self.phase}")
            assert isinstance(kind, type)
            raise self._rejected(
                HandshakeFailed(
                    ErrorCode.UNEXPECTED_MESSAGE,
                    f"{kind.__name__} is not allowed in state {self.state.value}",
                )
            )
        target, action = step
        before = SPEC_STATE[self.phase]
        after = SPEC_STATE[target]
        if after is not before:
            self.history.append((before, after))
        self.phase = target
        try:
            return action(self, value)
        except HandshakeFailed as failure:
            self._rejected(failure)
            raise

    def _rejected(self, failure: HandshakeFailed) -> HandshakeFailed:
        """The peer's input was invalid: fail, and give back the exception
        for the caller to raise."""
        self._input(Local.FAIL, failure)
        return failure

    # -- actions: run on arriving in the table's next phase -----------------

    def _send_hello(self, _: None) -> list[HandshakeOutput]:
        if not self.nonce:
            self.nonce = secrets.token_bytes(NONCE_SIZE)
        return [Hello(self.version, self.nonce, self.identity.peer_id)]

    def _check_hello(self, hello: Hello) -> list[HandshakeOutput]:
        """Checks that need no signature work come first (``docs/protocol.md``)."""
        if hello.version != self.version:
            raise HandshakeFailed(
                ErrorCode.INCOMPATIBLE_VERSION,
                f"peer speaks version {hello.version}, we speak {self.version}",
            )
        if hello.peer_id == self.identity.peer_id:
            raise HandshakeFailed(ErrorCode.SELF_CONNECTION, "peer claims our own id")
        if self.expected_peer is not None and hello.peer_id != self.expected_peer:
            raise HandshakeFailed(
                ErrorCode.UNEXPECTED_PEER,
                f"expected {self.expected_peer}, peer claims {hello.peer_id}",
            )
        self.peer_hello = hello
        return []

    def _check_hello_then_prove(self, hello: Hello) -> list[HandshakeOutput]:
        self._check_hello(hello)
        return [HandshakeRequest(*self._proof(T_HANDSHAKE_REQUEST))]

    def _check_request(self, request: HandshakeRequest) -> list[HandshakeOutput]:
        return self._check_proof(T_HANDSHAKE_REQUEST, request)

    def _check_response(self, response: HandshakeResponse) -> list[HandshakeOutput]:
        return self._check_proof(T_HANDSHAKE_RESPONSE, response)

    def _admit(self, _: None) -> list[HandshakeOutput]:
        assert self.peer_hello is not None
        self.peer_id = self.peer_hello.peer_id
        self.peer_public_key = self._proven_key
        return []

    def _admit_and_respond(self, _: None) -> list[HandshakeOutput]:
        self._admit(None)
        return [HandshakeResponse(*self._proof(T_HANDSHAKE_RESPONSE))]

    def _bind(self, start: tuple[bytes, PeerId]) -> list[HandshakeOutput]:
        """The checks a certificate allows before any signature work."""
        self.channel_binding, peer = start
        self.certified_peer = peer
        self._check_claim(peer)
        return []

    def _bind_and_prove(self, start: tuple[bytes, PeerId]) -> list[HandshakeOutput]:
        self._bind(start)
        return [self._bound_proof_of_me()]

    def _check_claim(self, peer: PeerId) -> None:
        if peer == self.identity.peer_id:
            raise HandshakeFailed(ErrorCode.SELF_CONNECTION, "peer claims our own id")
        if self.expected_peer is not None and peer != self.expected_peer:
            raise HandshakeFailed(
                ErrorCode.UNEXPECTED_PEER,
                f"expected {self.expected_peer}, peer claims {peer}",
            )

    def _check_bound_proof(self, proof: Proof) -> list[HandshakeOutput]:
        """Checks that need no signature work come first (``docs/protocol.md``)."""
        self._bound_proof = proof
        if proof.version != self.version:
            raise HandshakeFailed(
                ErrorCode.INCOMPATIBLE_VERSION,
                f"peer speaks version {proof.version}, we speak {self.version}",
            )
        self._check_claim(proof.peer_id)
        if proof.peer_id != self.certified_peer or not (
            is_acceptable_public_key(proof.public_key)
            and PeerId.from_public_key(proof.public_key) == proof.peer_id
        ):
            raise HandshakeFailed(
                ErrorCode.WRONG_KEY,
                f"the key presented is not {proof.peer_id}'s, or not the"
                " TLS certificate's",
            )
        role = ROLE_TLS_SERVER if self.initiator else ROLE_TLS_CLIENT
        signed = bound_transcript(
            role,
            self.version,
            proof.peer_id,
            self.identity.peer_id,
            self.channel_binding,
        )
        if not self.identity.verify(proof.public_key, signed, proof.signature):
            raise HandshakeFailed(
                ErrorCode.BAD_SIGNATURE, "handshake signature invalid"
            )
        self._proven_key = proof.public_key
        return [PeerProven(proof.peer_id)]

    def _admit_bound(self, _: None) -> list[HandshakeOutput]:
        assert self._bound_proof is not None
        self.peer_id = self._bound_proof.peer_id
        self.peer_public_key = self._proven_key
        return []

    def _admit_and_prove(self, _: None) -> list[HandshakeOutput]:
        self._admit_bound(None)
        return [self._bound_proof_of_me()]

    def _bound_proof_of_me(self) -> Proof:
        assert self.certified_peer is not None
        me = self.identity.peer_id
        role = ROLE_TLS_CLIENT if self.initiator else ROLE_TLS_SERVER
        signed = bound_transcript(
            role, self.version, me, self.certified_peer, self.channel_binding
        )
        return Proof(
            self.version, me, self.identity.public_key, self.identity.sign(signed)
        )

    def _peer_failed(self, error: Error) -> list[HandshakeOutput]:
        failure = HandshakeFailed.from_peer(error.code, error.message)
        assert isinstance(failure, HandshakeFailed)
        self.failure = failure
        raise failure

    def _failed(self, failure: HandshakeFailed) -> list[HandshakeOutput]:
        self.failure = failure
        return []

    def _ignore(self, _: object) -> list[HandshakeOutput]:
        return []

    # -- signatures ---------------------------------------------------------

    def _transcript(self, role: int, signer_is_me: bool) -> bytes:
        hello = self.peer_hello
        assert hello is not None
        me = (self.identity.peer_id, self.nonce)
        peer = (hello.peer_id, hello.nonce)
        signer, verifier = (me, peer) if signer_is_me else (peer, me)
        return transcript(role, self.version, *signer, *verifier, self.channel_binding)

    def _proof(self, role: int) -> tuple[bytes, bytes]:
        signature = self.identity.sign(self._transcript(role, signer_is_me=True))
        return self.identity.public_key, signature

    def _check_proof(
        self, role: int, proof: HandshakeRequest | HandshakeResponse
    ) -> list[HandshakeOutput]:
        hello = self.peer_hello
        assert hello is not None
        if not is_acceptable_public_key(proof.public_key) or (
            PeerId.from_public_key(proof.public_key) != hello.peer_id
        ):
            raise HandshakeFailed(
                ErrorCode.WRONG_KEY, f"the key presented is not {hello.peer_id}'s"
            )
        message = self._transcript(role, signer_is_me=False)
        if not self.identity.verify(proof.public_key, message, proof.signature):
            raise HandshakeFailed(
                ErrorCode.BAD_SIGNATURE, "handshake signature invalid"
            )
        self._proven_key = proof.public_key
        return [PeerProven(hello.peer_id)]


#: The machine: (phase, input kind) -> (next phase, action).  The action runs
#: in the next phase; if it finds the input invalid, the machine goes on from
#: there to ``FAILED``.  A message the table does not list is
#: ``UNEXPECTED_MESSAGE``.
TABLE: dict[tuple[Phase, InputKind], tuple[Phase, Action]] = {
    (Phase.CONNECTED, Local.START_INITIATOR): (
        Phase.OUTBOUND_AWAITING_HELLO,
        Handshake._send_hello,
    ),
    (Phase.CONNECTED, Local.START_RESPONDER): (Phase.CONNECTED, Handshake._send_hello),
    (Phase.CONNECTED, Hello): (Phase.INBOUND_AWAITING_REQUEST, Handshake._check_hello),
    (Phase.OUTBOUND_AWAITING_HELLO, Hello): (
        Phase.OUTBOUND_AWAITING_PROOF,
        Handshake._check_hello_then_prove,
    ),
    (Phase.OUTBOUND_AWAITING_PROOF, HandshakeResponse): (
        Phase.OUTBOUND_PROVEN,
        Handshake._check_response,
    ),
    # Both sides initiated: the peer's request proves it as well.
    (Phase.OUTBOUND_AWAITING_PROOF, HandshakeRequest): (
        Phase.OUTBOUND_PROVEN,
        Handshake._check_request,
    ),
    (Phase.INBOUND_AWAITING_REQUEST, HandshakeRequest): (
        Phase.INBOUND_PROVEN,
        Handshake._check_request,
    ),
    (Phase.OUTBOUND_PROVEN, Local.ACCEPT): (Phase.VERIFIED, Handshake._admit),
    (Phase.INBOUND_PROVEN, Local.ACCEPT): (
        Phase.VERIFIED,
        Handshake._admit_and_respond,
    ),
    # The TLS variant ("Over TLS"): one Proof each way, no Hello, no nonces.
    (Phase.CONNECTED, Local.START_BOUND_INITIATOR): (
        Phase.BOUND_OUTBOUND_AWAITING_PROOF,
        Handshake._bind_and_prove,
    ),
    (Phase.CONNECTED, Local.START_BOUND_RESPONDER): (
        Phase.BOUND_INBOUND_AWAITING_PROOF,
        Handshake._bind,
    ),
    (Phase.BOUND_OUTBOUND_AWAITING_PROOF, Proof): (
        Phase.BOUND_OUTBOUND_PROVEN,
        Handshake._check_bound_proof,
    ),
    (Phase.BOUND_INBOUND_AWAITING_PROOF, Proof): (
        Phase.BOUND_INBOUND_PROVEN,
        Handshake._check_bound_proof,
    ),
    (Phase.BOUND_OUTBOUND_PROVEN, Local.ACCEPT): (
        Phase.VERIFIED,
        Handshake._admit_bound,
    ),
    (Phase.BOUND_INBOUND_PROVEN, Local.ACCEPT): (
        Phase.VERIFIED,
        Handshake._admit_and_prove,
    ),
    # After the end a failure changes nothing: the outcome stands.
    (Phase.VERIFIED, Local.FAIL): (Phase.VERIFIED, Handshake._ignore),
    (Phase.FAILED, Local.FAIL): (Phase.FAILED, Handshake._ignore),
}
for _phase in Phase:
    if _phase in _OVER:
        continue
    TABLE[_phase, Local.FAIL] = (Phase.FAILED, Handshake._failed)
    if _phase in _PROVEN:
        TABLE[_phase, Local.REFUSE] = (Phase.FAILED, Handshake._failed)
    else:
        # While the caller decides, the connection holds the peer's messages,
        # so an Error is an input only outside the proven phases.
        TABLE[_phase, Error] = (Phase.FAILED, Handshake._peer_failed)
del _phase

#: The specification's edges, as the table implies them (for the docs and
#: the tests; the machine itself reads only :data:`TABLE`).
TRANSITIONS = frozenset(
    (SPEC_STATE[phase], SPEC_STATE[target])
    for (phase, _kind), (target, _action) in TABLE.items()
    if SPEC_STATE[phase] is not SPEC_STATE[target]
)
