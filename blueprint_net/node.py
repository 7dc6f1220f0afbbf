"""The embeddable node: listens, dials, and keeps one connection per peer."""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

import attrs
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from . import wire
from .connection import ConnectionFailed
from .errors import ErrorCode, HandshakeFailed, ProtocolError
from .identity import Identity, PeerId
from .interfaces import IConnectionHost
from .protocol import DEFAULT_HANDSHAKE_TIMEOUT, PeerFactory, PeerProtocol, Settings

ServerEndpoint = Union[str, IStreamServerEndpoint]
ClientEndpoint = Union[str, IStreamClientEndpoint]
PeerCallback = Callable[["Peer"], Any]

#: How long :meth:`Node.stop` lets a connection flush its goodbye before
#: aborting it (a peer that stopped reading would otherwise hold it open).
CLOSE_GRACE = 2.0


@attrs.frozen
class Peer:
    """A verified peer as the application sees it."""

    peer_id: PeerId
    address: IAddress
    since: float
    direction: str  # "inbound" or "outbound"


def _prefer(a: PeerProtocol, b: PeerProtocol) -> bool:
    """Whether to keep ``a`` over ``b``, two verified connections to one peer.

    Both ends see the same two nonces on each connection, so comparing them
    picks the same survivor on both sides, whichever end dialed and in
    whatever order the handshakes completed.
    """
    return a.connection.handshake.session_key < b.connection.handshake.session_key


@implementer(IConnectionHost)
class Node(Service):
    """A blueprint-net peer that an application creates and drives.

    An ``IService``: give it to a ``MultiService`` (or ``twistd``) and its
    connections close when the service stops.
    """

    _log = Logger()

    def __init__(
        self,
        identity: Identity,
        *,
        reactor: Optional[Any] = None,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        max_frame: int = wire.DEFAULT_MAX_FRAME,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.reactor = reactor
        self.identity = identity
        self.settings = Settings(
            identity=identity,
            clock=reactor,
            handshake_timeout=handshake_timeout,
            max_frame=max_frame,
        )
        self._verified: dict[PeerId, PeerProtocol] = {}
        self._open: set[PeerProtocol] = set()
        self._ports: list[IListeningPort] = []
        self._on_verified: list[PeerCallback] = []
        self._on_lost: list[PeerCallback] = []
        self.server_factory = PeerFactory(self, self.settings, initiator=False)

    @property
    def peer_id(self) -> PeerId:
        return self.identity.peer_id

    # -- the application's side -------------------------------------------

    @property
    def peers(self) -> list[Peer]:
        """Verified peers, one entry per peer id."""
        return [_describe(protocol) for protocol in self._verified.values()]

    def peer(self, peer_id: PeerId) -> Optional[Peer]:
        protocol = self._verified.get(peer_id)
        return None if protocol is None else _describe(protocol)

    def on_peer_verified(self, callback: PeerCallback) -> None:
        self._on_verified.append(callback)

    def on_peer_lost(self, callback: PeerCallback) -> None:
        self._on_lost.append(callback)

    def listen(self, endpoint: ServerEndpoint) -> defer.Deferred[IListeningPort]:
        """Accept peers on an endpoint object or strports description."""
        if isinstance(endpoint, str):
            endpoint = serverFromString(self.reactor, endpoint)  # type: ignore[no-untyped-call]
        assert not isinstance(endpoint, str)
        listening: defer.Deferred[IListeningPort] = endpoint.listen(self.server_factory)
        return listening.addCallback(self._listening)

    def _listening(self, port: IListeningPort) -> IListeningPort:
        self._ports.append(port)
        self._log.info("listening on {address}", address=port.getHost())
        return port

    def connect(
        self, endpoint: ClientEndpoint, peer_id: Optional[PeerId] = None
    ) -> defer.Deferred[Peer]:
        """Dial a peer; fires with it once verified.

        With ``peer_id``, any other identity at the far end fails the
        handshake (``UNEXPECTED_PEER``), and an existing connection to that
        peer is returned without dialing.
        """
        return defer.ensureDeferred(self._connect(endpoint, peer_id))

    async def _connect(
        self, endpoint: ClientEndpoint, peer_id: Optional[PeerId]
    ) -> Peer:
        if peer_id is not None:
            existing = self.peer(peer_id)
            if existing is not None:
                return existing
        if isinstance(endpoint, str):
            endpoint = clientFromString(self.reactor, endpoint)  # type: ignore[no-untyped-call]
        assert not isinstance(endpoint, str)
        factory = PeerFactory(
            self, self.settings, initiator=True, expected_peer=peer_id
        )
        protocol = await endpoint.connect(factory)
        assert isinstance(protocol, PeerProtocol)
        verified_id = await protocol.verified
        peer = self.peer(verified_id)
        if peer is None:  # verified, then lost before we got here
            raise HandshakeFailed(ErrorCode.GOING_AWAY, "peer left at once")
        return peer

    def stop(self) -> defer.Deferred[None]:
        """Stop listening, say goodbye to every peer, wait for them to close."""
        return defer.ensureDeferred(self._stop())

    async def _stop(self) -> None:
        ports, self._ports = self._ports, []
        await defer.gatherResults(
            [defer.maybeDeferred(port.stopListening) for port in ports]
        )
        closing = []
        for protocol in list(self._open):
            protocol.close(ProtocolError(ErrorCode.GOING_AWAY, "node stopping"))
            closing.append(protocol.closed)
        if closing:
            abort = self.reactor.callLater(CLOSE_GRACE, self._abort_open)
            await defer.gatherResults(closing)
            if abort.active():
                abort.cancel()

    def _abort_open(self) -> None:
        for protocol in list(self._open):
            protocol.transport.abortConnection()  # type: ignore[union-attr]

    # -- IService -----------------------------------------------------------

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        return self.stop()

    # -- IConnectionHost ----------------------------------------------------

    def authorize(self, peer_id: PeerId) -> None:
        """Every proven peer is welcome (bans and allow-lists come later)."""

    def connection_opened(self, protocol: PeerProtocol) -> None:
        self._open.add(protocol)

    def peer_verified(self, protocol: PeerProtocol) -> None:
        peer_id = protocol.peer_id
        assert peer_id is not None
        existing = self._verified.get(peer_id)
        if existing is not None:
            keep, drop = (
                (existing, protocol)
                if _prefer(existing, protocol)
                else (protocol, existing)
            )
            self._verified[peer_id] = keep
            self._log.info(
                "duplicate connection to {peer_id}; keeping one", peer_id=peer_id
            )
            drop.close(
                HandshakeFailed(
                    ErrorCode.DUPLICATE_CONNECTION, "already connected to this peer"
                )
            )
            return
        self._verified[peer_id] = protocol
        if self._on_verified:
            peer = _describe(protocol)
            for callback in self._on_verified:
                self._call(callback, peer)

    def connection_failed(
        self, protocol: PeerProtocol, event: ConnectionFailed
    ) -> None:
        """Protocol errors are logged by the protocol; policy comes later."""

    def connection_closed(self, protocol: PeerProtocol, reason: Failure) -> None:
        self._open.discard(protocol)
        peer_id = protocol.peer_id
        if peer_id is None or self._verified.get(peer_id) is not protocol:
            return
        del self._verified[peer_id]
        self._log.info(
            "peer {peer_id} lost: {reason.value}", peer_id=peer_id, reason=reason
        )
        if self._on_lost:
            peer = _describe(protocol)
            for callback in self._on_lost:
                self._call(callback, peer)

    def message_received(self, protocol: PeerProtocol, message: wire.Message) -> None:
        self._log.debug("ignoring {message!r}", message=message)

    def _call(self, callback: PeerCallback, peer: Peer) -> None:
        try:
            callback(peer)
        except Exception:
            self._log.failure("peer callback {callback!r} raised", callback=callback)


def _describe(protocol: PeerProtocol) -> Peer:
    assert protocol.peer_id is not None and protocol.verified_at is not None
    return Peer(
        peer_id=protocol.peer_id,
        address=protocol.address,
        since=protocol.verified_at,
        direction="outbound" if protocol.initiator else "inbound",
    )
