"""The sending side of one connection: our requests, notifications and
messages, and the answers to our requests.

Layer: adapters (Twisted: Deferreds and the clock).

In: the owner's sends (:meth:`Sender.request`, :meth:`Sender.notify`,
:meth:`Sender.send_frame`, :meth:`Sender.send`) and, from the connection's
reads, each answer to one of our requests
(:meth:`Sender.response_received`).  Out: the frames queued on the core
``Connection`` and sent by ``flush`` through :class:`Outbound` (which
refuses what the send queue cannot hold; during a read of the same
connection the protocol holds them for the read's one write), a deadline
for each request handed to the :class:`RequestTimer`, and each request's
Deferred fired once.

No states of its own: the core ``Connection`` keeps our requests (their
ids, tokens and deadlines) and says when it is closing; ``requests_out``
only counts what was sent.
"""

from __future__ import annotations

from typing import Callable, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from blueprint_net._adapters.outbound import FRAME_OVERHEAD, Outbound
from blueprint_net._adapters.request_timer import RequestTimer
from blueprint_net._core import wire
from blueprint_net._core.connection import Connection
from blueprint_net._core.connection_events import ResponseReceived
from blueprint_net._core.errors import PeerLost, RemoteError, SendQueueFull


class Sender:
    """Sends on one connection and fires our requests' Deferreds."""

    def __init__(
        self,
        connection: Connection,
        outbound: Outbound,
        request_timer: RequestTimer,
        clock: IReactorTime,
        request_timeout: float,
        flush: Callable[[], None],
    ) -> None:
        self.connection = connection
        self.outbound = outbound
        #: Sends what the connection queued: at once, or (the protocol's
        #: choice) with the answers of the read being handled.
        self.flush = flush
        self.request_timer = request_timer
        self.clock = clock
        self.request_timeout = request_timeout
        #: Requests sent on this connection (the status page).
        self.requests_out = 0

    def request(
        self,
        protocol: str,
        payload: bytes,
        metadata: Optional[bytes] = None,
        timeout: Optional[float] = None,
    ) -> defer.Deferred[wire.Reply]:
        """Send a request; the Deferred fires once, with the Success or
        Protocol response, or fails with RemoteError (an Error response),
        RequestTimeout, PeerLost or SendQueueFull."""
        waiting: defer.Deferred[wire.Reply] = defer.Deferred()
        size = len(payload) + len(protocol) + FRAME_OVERHEAD
        if metadata is not None:
            size += len(metadata)
        delay = self.request_timeout if timeout is None else timeout
        deadline = self.clock.seconds() + delay
        try:
            self.outbound.check(size)
            self.connection.request(protocol, payload, metadata, waiting, deadline)
        except (SendQueueFull, PeerLost, ValueError, RuntimeError) as error:
            return defer.fail(error)
        self.requests_out += 1
        self.request_timer.due(deadline, delay)
        self.flush()
        return waiting

    def notify(
        self, protocol: str, payload: bytes, metadata: Optional[bytes] = None
    ) -> None:
        """Send a request that wants no response (fire and forget); raises
        SendQueueFull, or PeerLost once the connection is closing."""
        size = len(payload) + len(metadata or b"") + len(protocol)
        self.outbound.check(size + FRAME_OVERHEAD)
        self.connection.request(protocol, payload, metadata)
        self.requests_out += 1
        self.flush()

    def send_frame(self, frame: bytes) -> None:
        """Send an encoded fire-and-forget request (broadcast encodes once)."""
        self.outbound.check(len(frame))
        self.connection.send_frame(frame)
        self.requests_out += 1
        self.flush()

    def send(self, message: wire.Message) -> None:
        """Send an application message (the connection must be verified)."""
        self.connection.send(message)
        self.flush()

    def lost(self) -> None:
        """The connection is gone: let go of the protocol's ``flush``
        (the cycle would leave both to the cyclic garbage collector)."""
        self.flush = self.outbound.flush

    def response_received(self, event: ResponseReceived) -> None:
        """Fire the request's Deferred: with the reply, or with
        ``RemoteError`` for an Error response."""
        response = event.response
        if isinstance(response, wire.ErrorResponse):
            event.token.errback(RemoteError(response.code, response.message))
        else:
            event.token.callback(response)
