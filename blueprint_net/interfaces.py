"""The extension points, gathered in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

from zope.interface import Interface

if TYPE_CHECKING:
    from twisted.python.failure import Failure

    from .connection import ConnectionFailed
    from .identity import PeerId
    from .protocol import PeerProtocol
    from .wire import Message


class IConnectionHost(Interface):
    """What owns connections: told of each one's life, asked about peers.

    :class:`~blueprint_net.node.Node` is the implementation; tests supply
    small fakes.
    """

    def authorize(peer_id: PeerId) -> None:
        """Called once a peer has proved its id; raise ``HandshakeFailed`` to
        refuse it (bans, allow-lists)."""

    def connection_opened(protocol: PeerProtocol) -> None:
        """A transport connected; the handshake is starting."""

    def peer_verified(protocol: PeerProtocol) -> None:
        """A connection completed its handshake."""

    def connection_closed(protocol: PeerProtocol, reason: Failure) -> None:
        """A connection closed, verified or not."""

    def connection_failed(protocol: PeerProtocol, event: ConnectionFailed) -> None:
        """A connection failed with a protocol error (before or after the
        handshake); ``event.misbehaviour`` says whether the peer is to blame."""

    def message_received(protocol: PeerProtocol, message: Message) -> None:
        """An application message arrived on a verified connection."""
