"""What a :class:`~blueprint_net._core.connection.Connection` reports: its
events, and which failures are the peer's misbehaviour.

Layer: core (sans-IO; imports nothing from Twisted).

Out of ``Connection.receive_data``, ``accept`` and ``respond``, in order:
:class:`PeerProven` (from the handshake: the decision is the caller's),
:class:`PeerVerified`, a peer's ``wire.Request``, :class:`ResponseReceived`,
:class:`GossipReceived`, :class:`StreamFrames`, and :class:`ConnectionFailed`
(always last).  Plain values, no states.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import attrs

from blueprint_net._core import gossip_wire, wire
from blueprint_net._core.errors import ErrorCode, ProtocolError
from blueprint_net._core.handshake_states import PeerProven
from blueprint_net._core.identity import PeerId

#: Failures that show a peer to be broken or hostile, as opposed to merely
#: slow, incompatible or refused by policy.  The ban registry scores these.
MISBEHAVIOUR = frozenset(
    {
        ErrorCode.UNKNOWN_MESSAGE_TYPE,
        ErrorCode.TRUNCATED,
        ErrorCode.TRAILING_BYTES,
        ErrorCode.INVALID_UTF8,
        ErrorCode.OUT_OF_RANGE,
        ErrorCode.FRAME_TOO_LARGE,
        ErrorCode.UNEXPECTED_MESSAGE,
        ErrorCode.BAD_SIGNATURE,
        ErrorCode.WRONG_KEY,
        ErrorCode.SELF_CONNECTION,
        ErrorCode.STREAM_SEQUENCE,
        ErrorCode.STREAM_ACK,
        ErrorCode.STREAM_LIMIT,
    }
)


@attrs.define
class PeerVerified:
    """The handshake completed: ``peer_id`` proved it holds its key."""

    peer_id: PeerId


@attrs.define
class ConnectionFailed:
    """The connection must close, for the reason ``error`` gives."""

    error: ProtocolError
    #: The other protocol a client spoke at us (``"http"``, ``"tls"``: see
    #: ``untrusted.opening``): a mistake, never misbehaviour.
    wrong_protocol: Optional[str] = None

    @property
    def misbehaviour(self) -> bool:
        """Whether the peer broke the protocol (for the ban registry)."""
        return (
            self.wrong_protocol is None
            and not self.error.remote
            and self.error.code in MISBEHAVIOUR
        )


@attrs.define
class ResponseReceived:
    """The response to one of our requests; ``token`` is the one it was
    sent with."""

    response: wire.Response
    token: Any


@attrs.define
class GossipReceived:
    """A topic-gossip message (types ``0x40``-``0x4F``) from the verified
    peer, for the node's router, and the frame body it came in (forwarded
    as it came: the strict decoder admits one encoding of each message)."""

    message: gossip_wire.GossipWireMessage
    body: bytes = attrs.field(default=b"", eq=False, repr=False)


@attrs.define
class StreamFrames:
    """Durable-stream frame bodies (types ``0x50``-``0x57``) from the
    verified peer, consecutive in one read, undecoded: the peer's stream
    machine decodes them (``_core/streams.py``, a fast path for data).  One
    event for a run of them: a read of small messages is one call."""

    bodies: list[bytes]


ConnectionEvent = Union[
    PeerProven,
    PeerVerified,
    ConnectionFailed,
    wire.Request,
    ResponseReceived,
    GossipReceived,
    StreamFrames,
]
