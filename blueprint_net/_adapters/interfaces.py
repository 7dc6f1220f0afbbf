"""The extension points, gathered in one place.

Layer: adapters (Twisted).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from twisted.python.failure import Failure

    from blueprint_net._adapters.protocol import PeerProtocol
    from blueprint_net._core.connection import ConnectionFailed
    from blueprint_net._core.identity import PeerId
    from blueprint_net._core.messaging import IncomingRequest
    from blueprint_net._core.wire import Request


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

    def request_received(protocol: PeerProtocol, request: Request) -> None:
        """A request arrived on a verified connection; answer it with
        ``protocol.respond`` (unless its id is 0: no response wanted)."""


class IHandshaking(Interface):
    """A protocol that must complete a handshake before it is of use; the
    connection limiter counts those still in it."""

    verified = Attribute(
        "A Deferred that fires (or fails) once, when the handshake ends."
    )


class IRequestHandler(Interface):
    """Serves the requests of one protocol name.

    Plain callables taking an :class:`~blueprint_net.messaging.IncomingRequest`
    are adapted to this interface when registered.
    """

    max_payload = Attribute(
        "Largest payload accepted, in bytes; None for the frame limit. A larger"
        " request is answered with PAYLOAD_TOO_LARGE without calling handle."
    )

    def handle(request: IncomingRequest) -> object:
        """Serve one request.

        Return ``None`` (``Success`` without data), ``bytes`` (``Protocol``
        with that data), a :class:`~blueprint_net.messaging.Success` or
        :class:`~blueprint_net.messaging.ProtocolData`, or a Deferred or
        coroutine of one of those.  Raise
        :class:`~blueprint_net.errors.RemoteError` to answer with an
        ``Error`` of your own code; any other exception answers
        ``HANDLER_ERROR`` without the traceback, which is logged here.
        """
