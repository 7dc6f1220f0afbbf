"""The Twisted adapter: a thin ``Protocol`` around the sans-IO Connection.

Layer: adapters (Twisted; imports from _policy and _core only).
"""

from __future__ import annotations

from typing import Optional

from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IPushProducer,
    IReactorTime,
    ISSLTransport,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from blueprint_net._adapters.interfaces import IHandshaking
from blueprint_net._adapters.tls import certificate_key
from blueprint_net._core import untrusted, wire
from blueprint_net._core.connection import (
    Connection,
    ConnectionFailed,
    Event,
    GossipReceived,
    PeerVerified,
    ResponseReceived,
)
from blueprint_net._core.errors import (
    ErrorCode,
    HandshakeError,
    HandshakeFailed,
    PeerLost,
    ProtocolError,
    RemoteError,
    RequestTimeout,
    SendQueueFull,
)
from blueprint_net._core.handshake import PeerProven
from blueprint_net._core.identity import Identity, PeerId
from blueprint_net._core.messaging import Deadlines
from blueprint_net._policy.settings import DEFAULTS, Settings

#: RFC 9266: the label of the TLS 1.3 exporter used for channel binding.
TLS_EXPORTER_LABEL = b"EXPORTER-Channel-Binding"
#: Why a plain transport is closed on a node without the opt-in.
PLAINTEXT_REFUSED = (
    "this node accepts TLS links only (p2ptls:); plaintext needs"
    " allow_plaintext / --allow-plaintext"
)

_HTTP_HINT_BODY = (
    b"This is a blueprint-net peer port, not HTTP. A node's status page is"
    b" served on its --status endpoint (default http://127.0.0.1:7080/);"
    b" `blueprint-net status --url URL` reads it.\n"
)
#: What an HTTP request to a peer port gets back before the close.
HTTP_HINT = (
    b"HTTP/1.0 400 Bad Request\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\n"
    b"Connection: close\r\n\r\n" % len(_HTTP_HINT_BODY)
) + _HTTP_HINT_BODY
#: What a TLS ClientHello on a plain peer port gets back before the close.
TLS_HINT = (
    b"blueprint-net: this peer port speaks plain blueprint-net, not TLS;"
    b" dial it with tcp:, or listen with p2ptls: for TLS.\n"
)


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

    def request_received(protocol: PeerProtocol, request: wire.Request) -> None:
        """A request arrived on a verified connection; answer it with
        ``protocol.respond`` (unless its id is 0: no response wanted)."""

    def gossip_received(protocol: PeerProtocol, event: GossipReceived) -> None:
        """A topic-gossip message arrived on a verified connection."""


@implementer(IPushProducer, IHandshaking)
class PeerProtocol(Protocol):
    """Feeds bytes to a :class:`Connection` and acts on what comes out.

    ``verified`` fires with the peer id once the handshake completes, or
    fails with :class:`HandshakeError` if the connection closes first.

    It is also the transport's push producer: when the transport's write
    buffer fills (the peer is not reading), Twisted calls
    :meth:`pauseProducing`; frames then wait in a queue bounded by
    ``max_send_queue``, new requests are refused with :class:`SendQueueFull`,
    and we stop reading the peer's requests until it drains.
    """

    _log = Logger()

    def __init__(
        self,
        host: IConnectionHost,
        identity: Identity,
        clock: IReactorTime,
        settings: Settings = DEFAULTS,
        *,
        initiator: bool,
        expected_peer: Optional[PeerId] = None,
        waited_on: Optional[bool] = None,
    ) -> None:
        self.host = host
        self.clock = clock
        self.settings = settings
        self.initiator = initiator
        if waited_on is None:
            waited_on = initiator  # a dialer usually awaits the handshake
        self.connection = Connection(
            identity,
            initiator=initiator,
            expected_peer=expected_peer,
            max_frame=settings.max_frame,
        )
        self.verified: defer.Deferred[PeerId] = defer.Deferred()
        if not waited_on:
            # Nobody awaits this handshake (an inbound connection, a redial by
            # a ClientService): its failure is reported to the host, and would
            # otherwise be an "Unhandled error" for every port scanner too.
            self.verified.addErrback(lambda failure: None)
        self.closed: defer.Deferred[None] = defer.Deferred()
        self.verified_at: Optional[float] = None
        self._timeout: Optional[IDelayedCall] = None
        self._failure: Optional[ProtocolError] = None
        #: When our pending requests time out; one timer for them all.
        self._deadlines = Deadlines()
        self._expiry: Optional[IDelayedCall] = None
        self._heard = False  # any bytes since the last keepalive tick
        self._pinged = False  # a Ping went unanswered for one tick
        self._writing_paused = False
        self._reading_paused = False
        self._queued: list[bytes] = []
        self._queued_size = 0
        self._receiving = False  # in dataReceived: flush once, at its end
        #: No read yet: the channel binding is still to be given.
        self._unbound = True
        #: Closed before its handshake: a plain transport, no opt-in.
        self.refused_plaintext = False
        #: An accepted connection's first bytes, until they are known not to
        #: be another protocol (None once decided, or when dialing).
        self._opening: Optional[bytes] = None if initiator else b""

    @property
    def peer_id(self) -> Optional[PeerId]:
        return self.connection.peer_id

    @property
    def session_key(self) -> bytes:
        """Both handshake nonces, smaller first: the same bytes at both ends,
        so both ends pick the same survivor of two connections."""
        return self.connection.handshake.session_key

    @property
    def queued(self) -> int:
        """Bytes waiting for a peer that is not reading."""
        return self._queued_size

    # -- Protocol -----------------------------------------------------------

    def connectionMade(self) -> None:
        transport = self.transport
        #: The peer's address, read once: it cannot change.
        self.address: IAddress = transport.getPeer()  # type: ignore[union-attr]
        if ITCPTransport.providedBy(transport):
            # Requests and responses are small and answered at once: with
            # Nagle's algorithm, a second write before the peer's delayed ACK
            # (a response, then a request) would wait ~40 ms.  Writes are
            # already batched, one per read.
            transport.setTcpNoDelay(True)
        transport.registerProducer(self, True)  # type: ignore[union-attr]
        self.host.connection_opened(self)
        if not self.settings.allow_plaintext and not ISSLTransport.providedBy(
            transport
        ):
            # Checked on the transport itself, so no endpoint object bypasses
            # it.  NOT_ALLOWED: a local policy refusal, never misbehaviour.
            self.refused_plaintext = True
            self.close(HandshakeFailed(ErrorCode.NOT_ALLOWED, PLAINTEXT_REFUSED))
            return
        self._timeout = self.clock.callLater(
            self.settings.handshake_timeout, self._handshake_timed_out
        )
        self.connection.initiate()
        self._flush()

    def dataReceived(self, data: bytes) -> None:
        self._heard = True
        if self._opening is not None:
            data = self._opening + data
            kind = untrusted.opening(data)
            if (
                kind is untrusted.Opening.UNDECIDED
                and len(data) < untrusted.SNIFF_BYTES
            ):
                self._opening = data
                return
            self._opening = None
            if kind in (untrusted.Opening.HTTP, untrusted.Opening.TLS):
                self._wrong_protocol(kind)
                return
        if self._unbound:
            # TLS completes its handshake before it delivers any data, and
            # no signature is made or checked before this first read.
            # (IHandshakeListener would not reach us through the limiter's
            # ProtocolWrapper.)
            self._unbound = False
            self.connection.set_channel_binding(self._channel_binding())
        events = self.connection.receive_data(data)
        # Answers given while these events are handled go out in one write.
        self._receiving = True
        try:
            for event in events:
                if isinstance(event, wire.Request):
                    self.host.request_received(self, event)
                elif isinstance(event, ResponseReceived):
                    self._response_received(event)
                elif isinstance(event, GossipReceived):
                    self.host.gossip_received(self, event)
                elif isinstance(event, PeerVerified):
                    self._on_verified(event.peer_id)
                elif isinstance(event, PeerProven):
                    # Always the last event: the decision's events (the held
                    # frames') join this loop, in order.
                    events += self._decide(event.peer_id)
                else:
                    self._on_failed(event)
        finally:
            self._receiving = False
        self._flush()
        self._update_reading()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_timeout()
        self._queued.clear()
        self._queued_size = 0
        self._deadlines.clear()
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        self._expiry = None
        # The host first: a requester's errback that retries must not find
        # this connection still listed among the verified peers.
        self.host.connection_closed(self, reason)
        waiting = self.connection.requests.close()
        if waiting:
            lost = PeerLost(f"connection lost: {reason.getErrorMessage()}")
            for deferred in waiting:
                deferred.errback(lost)
        if not self.verified.called:
            self.verified.errback(
                HandshakeError(self._failure or reason.value or ConnectionDone())
            )
        self.closed.callback(None)

    # -- requests -----------------------------------------------------------

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
        try:
            self._check_queue()
            request_id = self.connection.request(protocol, payload, metadata, waiting)
        except (SendQueueFull, ValueError, RuntimeError) as error:
            return defer.fail(error)
        clock = self.clock
        delay = self.settings.request_timeout if timeout is None else timeout
        deadline = clock.seconds() + delay
        self._deadlines.add(request_id, deadline)
        expiry = self._expiry
        if expiry is None:
            self._expiry = clock.callLater(delay, self._expire)
        elif deadline < expiry.getTime():  # a shorter timeout than those before
            expiry.reset(delay)
        self._flush()
        return waiting

    def notify(
        self, protocol: str, payload: bytes, metadata: Optional[bytes] = None
    ) -> None:
        """Send a request that wants no response (fire and forget)."""
        self._check_queue()
        self.connection.request(protocol, payload, metadata)
        self._flush()

    def send_frame(self, frame: bytes) -> None:
        """Send an encoded fire-and-forget request (broadcast encodes once)."""
        self._check_queue()
        self.connection.send_frame(frame)
        self._flush()

    def respond(self, response: wire.Response) -> None:
        """Answer one of the peer's requests (a no-op once closed)."""
        if self.connection.respond(response) is not None and not self._receiving:
            self._flush()
            self._update_reading()  # one fewer being processed

    def _response_received(self, event: ResponseReceived) -> None:
        response = event.response
        self._deadlines.discard(response.request_id)
        if isinstance(response, wire.ErrorResponse):
            event.token.errback(RemoteError(response.code, response.message))
        else:
            event.token.callback(response)

    def _expire(self) -> None:
        """Fail every request past its deadline; wake again for the next."""
        clock = self.clock
        self._expiry = None
        for request_id in self._deadlines.expire(clock.seconds()):
            waiting = self.connection.requests.abandon(request_id)
            if waiting is not None:
                waiting.errback(RequestTimeout(f"no response to request {request_id}"))
        earliest = self._deadlines.earliest()
        if earliest is not None and not self.connection.closed:
            self._expiry = clock.callLater(
                max(0.0, earliest - clock.seconds()), self._expire
            )

    # -- outbound -----------------------------------------------------------

    def send(self, message: wire.Message) -> None:
        """Send an application message (the connection must be verified)."""
        self.connection.send(message)
        self._flush()

    def close(self, error: ProtocolError) -> None:
        """Tell the peer why, then close."""
        self._on_failed(self.connection.fail(error))

    def _check_queue(self) -> None:
        if self._queued_size > self.settings.max_send_queue:
            raise SendQueueFull(
                f"{self._queued_size} bytes wait for a peer that is not reading"
                f" (limit {self.settings.max_send_queue})"
            )

    def _flush(self) -> None:
        chunks = self.connection.chunks_to_send()
        if not chunks:
            return
        if self._writing_paused:
            self._queued.extend(chunks)
            self._queued_size += sum(map(len, chunks))
            self._update_reading()
        elif len(chunks) == 1:
            self.transport.write(chunks[0])  # type: ignore[union-attr]
        else:
            self.transport.writeSequence(chunks)  # type: ignore[union-attr]

    # -- IPushProducer: the transport tells us when the peer stops reading ---

    def pauseProducing(self) -> None:
        self._writing_paused = True

    def resumeProducing(self) -> None:
        self._writing_paused = False
        queued, self._queued, self._queued_size = self._queued, [], 0
        if queued:
            self.transport.writeSequence(queued)  # type: ignore[union-attr]
            self._update_reading()

    def stopProducing(self) -> None:
        """The transport is closing; connectionLost follows."""

    def _update_reading(self) -> None:
        """Stop reading a peer that has ``max_concurrent_requests`` being
        processed, or whose unread responses fill the send queue.

        Not merely because writing is paused: two peers sending each other
        large payloads would then each wait for the other to read.
        """
        pause = (
            len(self.connection.requests.processing)
            >= self.settings.max_concurrent_requests
            or self._queued_size > self.settings.max_send_queue
        )
        if pause is not self._reading_paused and not self.connection.closed:
            self._reading_paused = pause
            if pause:
                self.transport.pauseProducing()  # type: ignore[union-attr]
            else:
                self.transport.resumeProducing()  # type: ignore[union-attr]

    # -- internals ----------------------------------------------------------

    def _on_verified(self, peer_id: PeerId) -> None:
        self._cancel_timeout()
        clock = self.clock
        self.verified_at = clock.seconds()
        self._log.info(
            "peer {peer_id} verified at {address}",
            peer_id=peer_id,
            address=self.address,
            direction="outbound" if self.initiator else "inbound",
        )
        self.host.peer_verified(self)
        if not self.verified.called:
            self.verified.callback(peer_id)

    def keepalive_tick(self) -> None:
        """Called once per keepalive interval (the node sweeps all its
        connections with one timer): ping a peer that has been quiet since
        the last tick; drop one that stayed silent since the ping."""
        if self.connection.closed:
            return  # closing (a ban, a trim): connectionLost is on its way
        if self._heard:
            self._heard = self._pinged = False
        elif self._pinged:
            self.close(ProtocolError(ErrorCode.IDLE_TIMEOUT, "no keepalive answer"))
        else:
            self._pinged = True
            self.send(wire.Ping(int(self.clock.seconds() * 1000)))

    def _wrong_protocol(self, kind: untrusted.Opening) -> None:
        """An operator's client at the wrong port: a hint it can show, then
        close; the host hears of it as a failure that is not misbehaviour."""
        self.transport.write(  # type: ignore[union-attr]
            HTTP_HINT if kind is untrusted.Opening.HTTP else TLS_HINT
        )
        error = ProtocolError(
            ErrorCode.UNEXPECTED_MESSAGE,
            f"{kind.value} on a blueprint-net peer port; answered with a hint",
        )
        self._failure = error
        self.host.connection_failed(
            self, ConnectionFailed(error, wrong_protocol=kind.value)
        )
        self._cancel_timeout()
        self.disconnect()

    def _on_failed(self, event: ConnectionFailed) -> None:
        self._flush()
        error = event.error
        self._failure = error
        if self.connection.verified:
            # A proven peer's failures are rare and worth a line each; an
            # unverified one's are counted and summarised by the host.
            self._log.warn(
                "connection to {address} failed: {code_name} ({code}): {reason}",
                address=str(self.address),
                peer_id=str(self.peer_id),
                code=int(error.code),
                code_name=error.code.name,
                reason=untrusted.quote(error.message),
                remote=error.remote,
                misbehaviour=event.misbehaviour,
            )
        self.host.connection_failed(self, event)
        self._cancel_timeout()
        self.disconnect()

    def disconnect(self) -> None:
        """Close after writing what is queued.

        The producer is unregistered first: a transport whose registered
        producer is paused (a peer that stopped reading) resumes it when its
        buffer drains instead of closing, and would never close.
        """
        transport = self.transport
        assert transport is not None
        queued, self._queued, self._queued_size = self._queued, [], 0
        if queued:
            transport.writeSequence(queued)
        transport.unregisterProducer()  # type: ignore[attr-defined]
        transport.loseConnection()

    def _handshake_timed_out(self) -> None:
        self._timeout = None
        self._on_failed(self.connection.timed_out())

    def _cancel_timeout(self) -> None:
        if self._timeout is not None:
            if self._timeout.active():
                self._timeout.cancel()
            self._timeout = None

    def _decide(self, peer_id: PeerId) -> list[Event]:
        """The peer proved ``peer_id``: admit it, or refuse it with the code
        the certificate check or the host's policy gives."""
        try:
            self._authorize(peer_id)
        except HandshakeFailed as refusal:
            return [self.connection.refuse(refusal.code, refusal.message)]
        return self.connection.accept()

    def _authorize(self, peer_id: PeerId) -> None:
        """The peer proved ``peer_id``: over TLS with an Ed25519 certificate
        (``p2ptls``), that certificate must be the same key; then the host's
        policy decides."""
        transport = self.transport
        if transport is not None and ISSLTransport.providedBy(transport):
            peer_certificate = transport.getHandle().get_peer_certificate()  # type: ignore[attr-defined]
            key = (
                None if peer_certificate is None else certificate_key(peer_certificate)
            )
            if key is not None and key != peer_id.public_key:
                raise HandshakeFailed(
                    ErrorCode.WRONG_KEY, "the TLS certificate is not the proven key"
                )
        self.host.authorize(peer_id)

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
        identity: Identity,
        clock: IReactorTime,
        settings: Settings = DEFAULTS,
        *,
        initiator: bool,
        expected_peer: Optional[PeerId] = None,
        waited_on: Optional[bool] = None,
    ) -> None:
        self.host = host
        self.identity = identity
        self.clock = clock
        self.settings = settings
        self.initiator = initiator
        self.expected_peer = expected_peer
        #: Whether someone awaits each protocol's ``verified`` (by default,
        #: for a dialer); if not, its failure is consumed once reported.
        self.waited_on = waited_on

    def buildProtocol(self, addr: Optional[IAddress]) -> PeerProtocol:
        protocol = PeerProtocol(
            self.host,
            self.identity,
            self.clock,
            self.settings,
            initiator=self.initiator,
            expected_peer=self.expected_peer,
            waited_on=self.waited_on,
        )
        protocol.factory = self
        return protocol
