"""The Twisted adapter: a thin ``Protocol`` around the sans-IO Connection."""

from __future__ import annotations

from typing import Optional

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IReactorTime,
    ISSLTransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import wire
from .connection import Connection, ConnectionFailed, PeerVerified
from .errors import ProtocolError
from .identity import Identity, PeerId
from .interfaces import IConnectionHost

#: RFC 9266: the label of the TLS 1.3 exporter used for channel binding.
TLS_EXPORTER_LABEL = b"EXPORTER-Channel-Binding"
DEFAULT_HANDSHAKE_TIMEOUT = 30.0


@attrs.define
class Settings:
    """What every connection of one node shares."""

    identity: Identity
    clock: IReactorTime
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    max_frame: int = wire.DEFAULT_MAX_FRAME


class HandshakeError(Exception):
    """The connection closed before its handshake completed."""

    def __init__(self, reason: ProtocolError | Failure) -> None:
        super().__init__(str(reason.value if isinstance(reason, Failure) else reason))
        self.reason = reason


class PeerProtocol(Protocol):
    """Feeds bytes to a :class:`Connection` and acts on what comes out.

    ``verified`` fires with the peer id once the handshake completes, or
    fails with :class:`HandshakeError` if the connection closes first.
    """

    _log = Logger()

    def __init__(
        self,
        host: IConnectionHost,
        settings: Settings,
        *,
        initiator: bool,
        expected_peer: Optional[PeerId] = None,
    ) -> None:
        self.host = host
        self.settings = settings
        self.initiator = initiator
        self.connection = Connection(
            settings.identity,
            initiator=initiator,
            expected_peer=expected_peer,
            max_frame=settings.max_frame,
            authorize=host.authorize,
            binding=self._channel_binding,
        )
        self.verified: defer.Deferred[PeerId] = defer.Deferred()
        self.closed: defer.Deferred[None] = defer.Deferred()
        self.verified_at: Optional[float] = None
        self._timeout: Optional[IDelayedCall] = None
        self._failure: Optional[ProtocolError] = None

    @property
    def peer_id(self) -> Optional[PeerId]:
        return self.connection.peer_id

    @property
    def address(self) -> IAddress:
        return self.transport.getPeer()  # type: ignore[union-attr]

    # -- Protocol -----------------------------------------------------------

    def connectionMade(self) -> None:
        self.host.connection_opened(self)
        self._timeout = self.settings.clock.callLater(
            self.settings.handshake_timeout, self._handshake_timed_out
        )
        self.connection.initiate()
        self._flush()

    def dataReceived(self, data: bytes) -> None:
        events = self.connection.receive_data(data)
        self._flush()
        for event in events:
            if isinstance(event, PeerVerified):
                self._on_verified(event.peer_id)
            elif isinstance(event, ConnectionFailed):
                self._on_failed(event)
            else:
                self.host.message_received(self, event)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_timeout()
        self.host.connection_closed(self, reason)
        if not self.verified.called:
            self.verified.errback(HandshakeError(self._failure or reason))
        self.closed.callback(None)

    # -- outbound -----------------------------------------------------------

    def send(self, message: wire.Message) -> None:
        """Send an application message (the connection must be verified)."""
        self.connection.send(message)
        self._flush()

    def close(self, error: ProtocolError) -> None:
        """Tell the peer why, then close."""
        self._on_failed(self.connection.fail(error))

    # -- internals ----------------------------------------------------------

    def _flush(self) -> None:
        data = self.connection.data_to_send()
        if data:
            self.transport.write(data)  # type: ignore[union-attr]

    def _on_verified(self, peer_id: PeerId) -> None:
        self._cancel_timeout()
        self.verified_at = self.settings.clock.seconds()
        self._log.info(
            "peer {peer_id} verified at {address}",
            peer_id=peer_id,
            address=self.address,
            direction="outbound" if self.initiator else "inbound",
        )
        self.host.peer_verified(self)
        if not self.verified.called:
            self.verified.callback(peer_id)

    def _on_failed(self, event: ConnectionFailed) -> None:
        self._flush()
        error = event.error
        self._failure = error
        self._log.warn(
            "connection to {address} failed: {code_name} ({code}): {reason}",
            address=self.address,
            peer_id=self.connection.handshake.claimed_peer,
            code=int(error.code),
            code_name=error.code.name,
            reason=error.message,
            remote=error.remote,
            misbehaviour=event.misbehaviour,
        )
        self.host.connection_failed(self, event)
        self._cancel_timeout()
        self.transport.loseConnection()  # type: ignore[union-attr]

    def _handshake_timed_out(self) -> None:
        self._timeout = None
        self._on_failed(self.connection.timed_out())

    def _cancel_timeout(self) -> None:
        if self._timeout is not None:
            if self._timeout.active():
                self._timeout.cancel()
            self._timeout = None

    def _channel_binding(self) -> bytes:
        """RFC 9266 ``tls-exporter`` when the transport is TLS, else empty."""
        transport = self.transport
        if transport is None or not ISSLTransport.providedBy(transport):
            return b""
        handle = transport.getHandle()  # type: ignore[attr-defined]
        exported: bytes = handle.export_keying_material(TLS_EXPORTER_LABEL, 32)
        return exported


class PeerFactory(Factory):
    """Builds :class:`PeerProtocol` for one side of a connection.

    One factory serves a listening port (``initiator=False``); an outbound
    connection gets its own, carrying the id it expects to reach.
    """

    #: One factory per dial: Twisted's "Starting factory" lines would be
    #: noise, one pair per outbound connection.
    noisy = False

    def __init__(
        self,
        host: IConnectionHost,
        settings: Settings,
        *,
        initiator: bool,
        expected_peer: Optional[PeerId] = None,
    ) -> None:
        self.host = host
        self.settings = settings
        self.initiator = initiator
        self.expected_peer = expected_peer

    def buildProtocol(self, addr: Optional[IAddress]) -> PeerProtocol:
        protocol = PeerProtocol(
            self.host,
            self.settings,
            initiator=self.initiator,
            expected_peer=self.expected_peer,
        )
        protocol.factory = self
        return protocol
