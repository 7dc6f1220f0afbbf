"""The handshake state machine: mutual Ed25519 authentication, sans-IO.

The specification has each peer sign the other's peer id.  Such a signature
is the same on every connection between the same two peers, so whoever sees
it once can replay it forever.  Here each side signs a *transcript*::

    DOMAIN || role || version || signer id || signer nonce
           || verifier id || verifier nonce || channel binding

where both nonces are fresh per connection (exchanged in ``Hello`` as the
connection opens), ``role`` is the type byte of the message carrying the
signature, and the channel binding is the TLS exporter value when the
transport is TLS (empty otherwise).  ``docs/protocol.md`` explains what each
part defends against.

The machine consumes decoded messages and returns messages to send; a failure
moves it to ``FAILED`` and raises :class:`HandshakeFailed`.
"""

from __future__ import annotations

import enum
import os
import struct
from typing import Callable, Optional

from blueprint_net._core.errors import ErrorCode, HandshakeFailed
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
)

DOMAIN = b"blueprint-net/handshake/v1\x00"


class HandshakeState(enum.Enum):
    CONNECTED = "Connected"
    OUTBOUND_PENDING = "OutboundPending"
    INBOUND_PENDING = "InboundPending"
    VERIFIED = "Verified"
    FAILED = "Failed"


S = HandshakeState

#: Every transition the machine can make.  The specification's diagram, plus
#: ``Connected -> Failed`` for a responder whose peer never opens (timeout) or
#: opens with something other than ``Hello``: without it an idle socket could
#: be held forever.
TRANSITIONS = frozenset(
    {
        (S.CONNECTED, S.OUTBOUND_PENDING),
        (S.CONNECTED, S.INBOUND_PENDING),
        (S.OUTBOUND_PENDING, S.VERIFIED),
        (S.OUTBOUND_PENDING, S.FAILED),
        (S.INBOUND_PENDING, S.VERIFIED),
        (S.INBOUND_PENDING, S.FAILED),
        (S.CONNECTED, S.FAILED),
    }
)


def transcript(
    role: int,
    version: int,
    signer: PeerId,
    signer_nonce: bytes,
    verifier: PeerId,
    verifier_nonce: bytes,
    binding: bytes,
) -> bytes:
    """The bytes a handshake signature covers (see ``docs/protocol.md``)."""
    return b"".join(
        (
            DOMAIN,
            bytes((role,)),
            struct.pack("!H", version),
            bytes((len(signer.binary),)),
            signer.binary,
            signer_nonce,
            bytes((len(verifier.binary),)),
            verifier.binary,
            verifier_nonce,
            bytes((len(binding),)),
            binding,
        )
    )


class Handshake:
    """One side of one connection's handshake.

    ``initiator`` is the side that opens the handshake (normally the dialer);
    when both sides of a connection initiate at once, both end ``VERIFIED``.
    ``authorize`` runs once the peer has proved its id and may refuse it by
    raising :class:`HandshakeFailed` (bans, allow-lists).  ``binding`` is
    called when a signature is made or checked, after the TLS handshake.
    """

    def __init__(
        self,
        identity: Identity,
        *,
        initiator: bool,
        expected_peer: Optional[PeerId] = None,
        authorize: Optional[Callable[[PeerId], None]] = None,
        binding: Optional[Callable[[], bytes]] = None,
        version: int = PROTOCOL_VERSION,
        nonce: Optional[bytes] = None,
    ) -> None:
        self.identity = identity
        self.initiator = initiator
        self.expected_peer = expected_peer
        self._authorize = authorize
        self._binding = binding
        self.version = version
        self.nonce = os.urandom(NONCE_SIZE) if nonce is None else nonce
        self.state = S.CONNECTED
        self.history: list[tuple[HandshakeState, HandshakeState]] = []
        self.peer_hello: Optional[Hello] = None
        self.peer_id: Optional[PeerId] = None
        self.peer_public_key: Optional[bytes] = None
        self.failure: Optional[HandshakeFailed] = None
        self._sent_request = False

    @property
    def claimed_peer(self) -> Optional[PeerId]:
        """The id the peer claims in its ``Hello`` (proved only once verified)."""
        return self.peer_hello.peer_id if self.peer_hello is not None else None

    @property
    def session_key(self) -> bytes:
        """Both nonces, smaller first: the same bytes at both ends."""
        assert self.peer_hello is not None
        return b"".join(sorted((self.nonce, self.peer_hello.nonce)))

    # -- transitions --------------------------------------------------------

    def _move(self, new: HandshakeState) -> None:
        edge = (self.state, new)
        if edge not in TRANSITIONS:
            raise AssertionError(f"illegal transition {edge}")
        self.history.append(edge)
        self.state = new

    def _fail(self, code: ErrorCode, reason: str) -> HandshakeFailed:
        failure = HandshakeFailed(code, reason)
        if self.state not in (S.VERIFIED, S.FAILED):
            self._move(S.FAILED)
            self.failure = failure
        return failure

    # -- inputs -------------------------------------------------------------

    def start(self) -> list[Message]:
        """The connection is open: say hello; an initiator is now pending."""
        if self.initiator:
            self._move(S.OUTBOUND_PENDING)
        return [Hello(self.version, self.nonce, self.identity.peer_id)]

    def timed_out(self) -> HandshakeFailed:
        """The deadline passed; returns the failure to report."""
        return self._fail(ErrorCode.HANDSHAKE_TIMEOUT, "handshake timed out")

    def receive(self, message: Message) -> list[Message]:
        """Feed one message from the peer; returns what to send back."""
        if self.state in (S.VERIFIED, S.FAILED):
            raise AssertionError("the handshake is over")
        kind = type(message)
        if kind is Hello and self.peer_hello is None:
            assert isinstance(message, Hello)
            return self._on_hello(message)
        if kind is HandshakeRequest and self.peer_hello is not None:
            assert isinstance(message, HandshakeRequest)
            return self._on_request(message)
        if kind is HandshakeResponse and self._sent_request:
            assert isinstance(message, HandshakeResponse)
            self._verify(T_HANDSHAKE_RESPONSE, message)
            self._move(S.VERIFIED)
            return []
        if kind is Error:
            assert isinstance(message, Error)
            failure = HandshakeFailed.from_peer(message.code, message.message)
            self._fail(failure.code, failure.message)
            raise failure
        raise self._fail(
            ErrorCode.UNEXPECTED_MESSAGE,
            f"{kind.__name__} is not allowed in state {self.state.value}",
        )

    def _on_hello(self, hello: Hello) -> list[Message]:
        if self.state is S.CONNECTED:
            self._move(S.INBOUND_PENDING)
        if hello.version != self.version:
            raise self._fail(
                ErrorCode.INCOMPATIBLE_VERSION,
                f"peer speaks version {hello.version}, we speak {self.version}",
            )
        if hello.peer_id == self.identity.peer_id:
            raise self._fail(ErrorCode.SELF_CONNECTION, "peer claims our own id")
        if self.expected_peer is not None and hello.peer_id != self.expected_peer:
            raise self._fail(
                ErrorCode.UNEXPECTED_PEER,
                f"expected {self.expected_peer}, peer claims {hello.peer_id}",
            )
        self.peer_hello = hello
        if self.state is S.OUTBOUND_PENDING:
            self._sent_request = True
            return [HandshakeRequest(*self._proof(T_HANDSHAKE_REQUEST))]
        return []

    def _on_request(self, request: HandshakeRequest) -> list[Message]:
        self._verify(T_HANDSHAKE_REQUEST, request)
        if self.state is S.OUTBOUND_PENDING:
            # Both sides initiated: each has the other's proof already.
            self._move(S.VERIFIED)
            return []
        response = HandshakeResponse(*self._proof(T_HANDSHAKE_RESPONSE))
        self._move(S.VERIFIED)
        return [response]

    # -- signatures ---------------------------------------------------------

    def _transcript(self, role: int, signer_is_me: bool) -> bytes:
        hello = self.peer_hello
        assert hello is not None
        me = (self.identity.peer_id, self.nonce)
        peer = (hello.peer_id, hello.nonce)
        signer, verifier = (me, peer) if signer_is_me else (peer, me)
        binding = self._binding() if self._binding is not None else b""
        return transcript(role, self.version, *signer, *verifier, binding)

    def _proof(self, role: int) -> tuple[bytes, bytes]:
        signature = self.identity.sign(self._transcript(role, signer_is_me=True))
        return self.identity.public_key, signature

    def _verify(self, role: int, proof: HandshakeRequest | HandshakeResponse) -> None:
        hello = self.peer_hello
        assert hello is not None
        if not is_acceptable_public_key(proof.public_key) or (
            PeerId.from_public_key(proof.public_key) != hello.peer_id
        ):
            raise self._fail(
                ErrorCode.WRONG_KEY, f"the key presented is not {hello.peer_id}'s"
            )
        message = self._transcript(role, signer_is_me=False)
        if not self.identity.verify(proof.public_key, message, proof.signature):
            raise self._fail(ErrorCode.BAD_SIGNATURE, "handshake signature invalid")
        if self._authorize is not None:
            try:
                self._authorize(hello.peer_id)
            except HandshakeFailed as refusal:
                raise self._fail(refusal.code, refusal.message) from None
        self.peer_id = hello.peer_id
        self.peer_public_key = proof.public_key
