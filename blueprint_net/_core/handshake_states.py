"""The handshake's vocabulary: its states, its phases, its local inputs and
what it yields.

Layer: core (sans-IO; imports nothing from Twisted).

Nothing here moves: :mod:`~blueprint_net._core.handshake` is the machine
whose one table (phase, input kind) -> (next phase, action) uses these.

- States: :class:`HandshakeState` is the specification's five
  (``docs/protocol.md``, "States"); :class:`Phase` splits them where the
  next allowed input differs (the nonce variant's ``OUTBOUND_*`` and
  ``INBOUND_*``, the TLS variant's ``BOUND_*``), and :data:`SPEC_STATE` maps
  each phase back to its state.
- In: a peer's message (its class is the input kind) or a :class:`Local`
  input (start, accept, refuse, fail).
- Out: :data:`HandshakeOutput`, messages for the peer or
  :class:`PeerProven`, after which the machine waits for the caller.
"""

from __future__ import annotations

import enum
from typing import Union

import attrs

from blueprint_net._core.identity import PeerId
from blueprint_net._core.wire import Message


class HandshakeState(enum.Enum):
    """The specification's states (``docs/protocol.md``, "States")."""

    CONNECTED = "Connected"
    OUTBOUND_PENDING = "OutboundPending"
    INBOUND_PENDING = "InboundPending"
    VERIFIED = "Verified"
    FAILED = "Failed"


class Phase(enum.Enum):
    """Where the machine is: the specification's states, split where the
    next allowed input differs (see :data:`SPEC_STATE`)."""

    CONNECTED = enum.auto()
    #: Initiator: our Hello is out; the peer's is awaited.
    OUTBOUND_AWAITING_HELLO = enum.auto()
    #: Initiator: our HandshakeRequest is out; the peer's proof is awaited
    #: (its response, or its own request when both sides initiated).
    OUTBOUND_AWAITING_PROOF = enum.auto()
    #: Initiator: the peer proved its id; the caller's decision is awaited.
    OUTBOUND_PROVEN = enum.auto()
    #: Responder: the peer's Hello is in; its HandshakeRequest is awaited.
    INBOUND_AWAITING_REQUEST = enum.auto()
    #: Responder: the peer proved its id; the caller's decision is awaited
    #: (our response is sent only on accept).
    INBOUND_PROVEN = enum.auto()
    #: TLS variant, dialer: our Proof is out; the listener's is awaited.
    BOUND_OUTBOUND_AWAITING_PROOF = enum.auto()
    #: TLS variant, dialer: the listener proved its id; the decision is awaited.
    BOUND_OUTBOUND_PROVEN = enum.auto()
    #: TLS variant, listener: the dialer's Proof is awaited.
    BOUND_INBOUND_AWAITING_PROOF = enum.auto()
    #: TLS variant, listener: the dialer proved its id; the decision is
    #: awaited (our Proof is sent only on accept).
    BOUND_INBOUND_PROVEN = enum.auto()
    VERIFIED = enum.auto()
    FAILED = enum.auto()


#: The specification's state of each phase.
SPEC_STATE: dict[Phase, HandshakeState] = {
    Phase.CONNECTED: HandshakeState.CONNECTED,
    Phase.OUTBOUND_AWAITING_HELLO: HandshakeState.OUTBOUND_PENDING,
    Phase.OUTBOUND_AWAITING_PROOF: HandshakeState.OUTBOUND_PENDING,
    Phase.OUTBOUND_PROVEN: HandshakeState.OUTBOUND_PENDING,
    Phase.INBOUND_AWAITING_REQUEST: HandshakeState.INBOUND_PENDING,
    Phase.INBOUND_PROVEN: HandshakeState.INBOUND_PENDING,
    Phase.BOUND_OUTBOUND_AWAITING_PROOF: HandshakeState.OUTBOUND_PENDING,
    Phase.BOUND_OUTBOUND_PROVEN: HandshakeState.OUTBOUND_PENDING,
    Phase.BOUND_INBOUND_AWAITING_PROOF: HandshakeState.INBOUND_PENDING,
    Phase.BOUND_INBOUND_PROVEN: HandshakeState.INBOUND_PENDING,
    Phase.VERIFIED: HandshakeState.VERIFIED,
    Phase.FAILED: HandshakeState.FAILED,
}


class Local(enum.Enum):
    """Inputs that come from this side rather than from the peer."""

    #: The connection is open and we dialed: send Hello, expect one back.
    START_INITIATOR = enum.auto()
    #: The connection is open and we accepted it: send Hello.
    START_RESPONDER = enum.auto()
    #: TLS variant: TLS completed and we dialed (the TLS client): prove.
    START_BOUND_INITIATOR = enum.auto()
    #: TLS variant: TLS completed and we accepted: await the dialer's Proof.
    START_BOUND_RESPONDER = enum.auto()
    #: The caller's policy admits the proven peer.
    ACCEPT = enum.auto()
    #: The caller's policy refuses the proven peer.
    REFUSE = enum.auto()
    #: Anything else that ends the handshake: a timeout, a local close, or
    #: an action that found the peer's input invalid.
    FAIL = enum.auto()


@attrs.define
class PeerProven:
    """The peer proved it holds ``peer_id``'s key; the machine waits for
    :meth:`Handshake.accept` or :meth:`Handshake.refuse`."""

    peer_id: PeerId


#: What an input yields: messages for the peer, or :class:`PeerProven`.
HandshakeOutput = Union[Message, PeerProven]
#: An input's kind, the table's second key: a message class, or a local input.
InputKind = Union[type[object], Local]
