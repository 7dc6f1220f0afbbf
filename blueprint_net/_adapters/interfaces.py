"""The extension points, gathered in one place: request handlers, and what
the connection limiter needs of a protocol.

Layer: adapters (Twisted).

``IConnectionHost``, the contract between a ``PeerProtocol`` and its owner,
lives beside ``PeerProtocol`` in ``protocol.py``: it names that class in its
signatures, and declaring it here would make the two modules import each
other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from blueprint_net._core.messaging import IncomingRequest


class IHandshaking(Interface):
    """A protocol that must complete a handshake before it is of use; the
    connection limiter counts those still in it."""

    verified = Attribute(
        "A Deferred that fires (or fails) once, when the handshake ends."
    )


class IRequestHandler(Interface):
    """Serves the requests of one protocol name.

    Plain callables taking an :class:`~blueprint_net.IncomingRequest`
    are adapted to this interface when registered.
    """

    max_payload = Attribute(
        "Largest payload accepted, in bytes; None for the frame limit. A larger"
        " request is answered with PAYLOAD_TOO_LARGE without calling handle."
    )

    def handle(request: IncomingRequest) -> object:
        """Serve one request.

        Return ``None`` (``Success`` without data), ``bytes`` (``Protocol``
        with that data), a :class:`~blueprint_net.Success` or
        :class:`~blueprint_net.ProtocolData`, or a Deferred or
        coroutine of one of those.  Raise
        :class:`~blueprint_net.errors.RemoteError` to answer with an
        ``Error`` of your own code; any other exception answers
        ``HANDLER_ERROR`` without the traceback, which is logged here.
        """
