"""The Twisted adapter: a ``Protocol`` around the sans-IO Connection.

Layer: adapters (Twisted; imports from _policy, _core and its own parts).

In: the transport's bytes and events (connected, TLS done, lost), the
owner's answers (``respond``), the clock.  Out: the core ``Connection``'s
decisions carried out (events to the :class:`IConnectionHost`, reading
paused while the peer has too many requests in flight), its bytes through
:class:`Outbound`.  The owner sends through :attr:`PeerProtocol.sender`.

Its parts, each with its own header: ``untrusted.Sniffer`` (a plain port's
wrong-protocol opening), :class:`HandshakeTimer` (the handshake's
deadline), :class:`RequestTimer` (our requests' deadlines),
:class:`Outbound` (send queue, flow control, memory), :class:`Sender`
(our requests, notifications and messages out, their answers' Deferreds
fired), :class:`Liveness` (``keepalive``: when the peer was last heard,
our unanswered ping), ``tls_binding`` (the session's channel binding, the
handshake's start over TLS, the certificate check).

States: connected, then (over TLS) waiting for TLS, handshaking, verified,
closed; the core ``Connection`` holds the protocol's own states.
"""

from __future__ import annotations

from typing import Optional

from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IHandshakeListener,
    IReactorTime,
    ISSLTransport,
    ITCPTransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from blueprint_net._adapters.handshake_timer import HandshakeTimer
from blueprint_net._adapters.interfaces import IHandshaking
from blueprint_net._adapters.keepalive import Liveness
from blueprint_net._adapters.outbound import PIECE, Outbound
from blueprint_net._adapters.request_timer import RequestTimer
from blueprint_net._adapters.sender import Sender
from blueprint_net._adapters.tls_binding import (
    channel_bound,
    check_certificate,
    start_handshake,
)
from blueprint_net._core import untrusted, wire
from blueprint_net._core.connection import Connection
from blueprint_net._core.connection_events import (
    ConnectionEvent,
    ConnectionFailed,
    GossipReceived,
    PeerVerified,
    ResponseReceived,
    StreamFrames,
)
from blueprint_net._core.errors import (
    ErrorCode,
    HandshakeError,
    HandshakeFailed,
    PeerLost,
    ProtocolError,
)
from blueprint_net._core.handshake_states import PeerProven
from blueprint_net._core.identity import Identity, PeerId
from blueprint_net._policy.addresses import where
from blueprint_net._policy.resources import MemoryBudget
from blueprint_net._policy.settings import DEFAULTS, PLAINTEXT_REFUSED, Settings


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

    def stream_received(protocol: PeerProtocol, bodies: list[bytes]) -> None:
        """Durable-stream frame bodies arrived on a verified connection, in
        a row (only once ``connection.streams`` is on)."""


@implementer(IHandshaking, IHandshakeListener)
class PeerProtocol(Protocol):
    """Feeds bytes to a :class:`Connection` and carries out what comes out.

    ``verified`` fires with the peer id once the handshake completes, or
    fails with :class:`HandshakeError` if the connection closes first.

    Its :class:`Outbound` is the transport's push producer: when the
    transport's write buffer fills (the peer is not reading), frames wait in
    a queue bounded by ``max_send_queue``, new requests are refused with
    :class:`SendQueueFull`, and we stop reading the peer's requests once
    unread answers fill half of it, or once the core says the peer has
    ``max_concurrent_requests`` in flight (``Connection.saturated``).
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
        memory: Optional[MemoryBudget] = None,
    ) -> None:
        self.host = host
        self.clock = clock
        self.settings = settings
        self.initiator = initiator
        #: The node-wide budget this connection's buffers count against.
        self.memory = MemoryBudget(settings.memory_budget) if memory is None else memory
        if waited_on is None:
            waited_on = initiator  # a dialer usually awaits the handshake
        self.connection = Connection(
            identity,
            initiator=initiator,
            expected_peer=expected_peer,
            max_frame=settings.max_frame,
            max_in_flight=settings.max_concurrent_requests,
        )
        self.verified: defer.Deferred[PeerId] = defer.Deferred()
        if not waited_on:
            # Nobody awaits this handshake (an inbound connection, a redial by
            # a ClientService): its failure is reported to the host, and would
            # otherwise be an "Unhandled error" for every port scanner too.
            self.verified.addErrback(lambda failure: None)
        self.closed: defer.Deferred[None] = defer.Deferred()
        self.verified_at: Optional[float] = None
        #: Requests received on this connection (the status page).
        self.requests_in = 0
        #: The handshake's deadline (short until the peer's first frame).
        self.deadline = HandshakeTimer(clock, settings, self._handshake_timed_out)
        self._failure: Optional[ProtocolError] = None
        #: One timer for every request's deadline (the connection's).
        self.request_timer = RequestTimer(clock, self.connection)
        self._reading_paused = False
        #: The send queue, flow control and memory accounting.
        self.outbound = Outbound(
            self.connection,
            self.memory,
            settings.max_send_queue,
            self._update_reading,
        )
        #: Our requests and messages out, their answers in.
        self.sender = Sender(
            self.connection,
            self.outbound,
            self.request_timer,
            clock,
            settings.request_timeout,
            self._send_or_hold,
        )
        #: When the peer was last heard from, and our unanswered Ping.
        self.liveness = Liveness(self.connection, self.sender.send, self.close)
        self._receiving = False  # in dataReceived: flush once, at its end
        #: TLS, and the handshake waits for TLS to complete (the channel
        #: binding and, on ``p2ptls``, the variant are known only then).
        self._unbound = False
        #: Closed before its handshake: a plain transport, no opt-in.
        self.refused_plaintext = False
        #: Holds a plain accepted connection's first bytes until they are
        #: known not to be another protocol (None once decided, when
        #: dialing, or over TLS).
        self._sniffer: Optional[untrusted.Sniffer] = None

    @property
    def peer_id(self) -> Optional[PeerId]:
        return self.connection.peer_id

    @property
    def session_key(self) -> bytes:
        """Both handshake nonces, smaller first, or on ``p2ptls`` the TLS
        exporter: the same bytes at both ends, so both ends pick the same
        survivor of two connections."""
        return self.connection.handshake.session_key

    @property
    def queued(self) -> int:
        """Bytes waiting for a peer that is not reading."""
        return self.outbound.queued

    @property
    def claimed_peer(self) -> Optional[PeerId]:
        """The id the peer claims, proven or not (for log lines only)."""
        return self.connection.handshake.claimed_peer

    def cap_gossip(self, cap: int) -> None:
        """Take gossip frames of up to ``cap`` bytes from the verified peer."""
        self.connection.max_gossip_frame = cap

    # -- Protocol -----------------------------------------------------------

    def connectionMade(self) -> None:
        transport = self.transport
        #: The peer's address, read once: it cannot change.
        self.address: IAddress = transport.getPeer()  # type: ignore[union-attr]
        #: The same as ``HOST:PORT`` text, for log fields a tool selects on.
        self.where = where(self.address)
        if ITCPTransport.providedBy(transport):
            # Requests and responses are small and answered at once: with
            # Nagle's algorithm, a second write before the peer's delayed ACK
            # (a response, then a request) would wait ~40 ms.  Writes are
            # already batched, one per read.
            transport.setTcpNoDelay(True)
        self.outbound.transport = transport
        transport.registerProducer(self.outbound, True)  # type: ignore[union-attr]
        self.host.connection_opened(self)
        if not self.settings.allow_plaintext and not ISSLTransport.providedBy(
            transport
        ):
            # Checked on the transport itself, so no endpoint object bypasses
            # it.  NOT_ALLOWED: a local policy refusal, never misbehaviour.
            self.refused_plaintext = True
            self.close(HandshakeFailed(ErrorCode.NOT_ALLOWED, PLAINTEXT_REFUSED))
            return
        self.deadline.start()
        if ISSLTransport.providedBy(transport):
            self._unbound = True  # see handshakeCompleted
        else:
            if not self.initiator:
                # A plain port may be reached by the wrong client (HTTP, TLS):
                # its first bytes are looked at before they are framed.
                self._sniffer = untrusted.Sniffer(untrusted.PLAIN_PORT_ANSWERS)
            self.connection.initiate()
            self.outbound.flush()

    def handshakeCompleted(self) -> None:
        """TLS completed (``IHandshakeListener``): start the handshake, bound
        to the session.  With ALPN ``blueprint/1`` (``p2ptls``), both ends
        run the TLS variant, and the dialer proves itself in the same flight
        as its TLS Finished; otherwise (operator certificates) the nonce
        variant, with the exporter as its channel binding."""
        if not self._unbound or self.connection.closed:
            return  # started already, or timed out while TLS was still going
        self._unbound = False
        # The peer has spoken (TLS): on the TLS variant its first frame may
        # be the listener's decision, so it gets the handshake timeout.
        self.deadline.spoke()
        try:
            failures = start_handshake(self.connection, self.transport)
        except HandshakeFailed as refusal:
            self.close(refusal)
            return
        for event in failures:
            assert isinstance(event, ConnectionFailed)  # nothing else, if any
            self._on_failed(event)
        self.outbound.flush()

    def dataReceived(self, data: bytes) -> None:
        self.liveness.heard_at = self.clock.seconds()
        sniffer = self._sniffer
        if sniffer is not None:
            verdict = sniffer.feed(data)
            if verdict is None:
                return
            self._sniffer = None
            if isinstance(verdict, untrusted.WrongOpening):
                self._wrong_protocol(verdict)
                return
            data = verdict
        if self._unbound:
            # TLS without IHandshakeListener reaching us: TLS completes its
            # handshake before it delivers any data.
            self.handshakeCompleted()
        connection = self.connection
        self._handle(connection.receive_data(data))
        outbound, buffered = self.outbound, connection.buffered
        if (
            (buffered or outbound.inbound)  # else nothing held, nothing to charge
            and not outbound.hold_inbound(buffered)
            and not connection.closed
        ):
            self.memory.refuse("inbound")
            self.close(
                ProtocolError(
                    ErrorCode.CONNECTION_LIMIT,
                    "the node's memory budget cannot hold this frame",
                )
            )
        deadline = self.deadline
        if deadline.silent and connection.handshake.claimed_peer is not None:
            deadline.spoke()

    def _handle(self, events: list[ConnectionEvent]) -> None:
        """Act on a read's events, then, while the answers given meanwhile
        made room, on the requests they let out of the backlog (a batch at a
        time, not one per answer); flush once, at the end."""
        # Answers given while these events are handled go out in one write.
        outer, self._receiving = self._receiving, True
        connection = self.connection
        try:
            self._dispatch(events)
            while connection.backlog and not connection.requests.full:
                self._dispatch(connection.release())
        finally:
            # Even if a handler's error escapes: what is held goes out.
            self._receiving = outer
            self.outbound.flush()
            self._update_reading()

    def _dispatch(self, events: list[ConnectionEvent]) -> None:
        for event in events:
            if isinstance(event, wire.Request):
                self.requests_in += 1
                self.host.request_received(self, event)
            elif isinstance(event, StreamFrames):
                self.host.stream_received(self, event.bodies)
            elif isinstance(event, ResponseReceived):
                self.sender.response_received(event)
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

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        # Each part lets go of what refers back to this protocol, so that
        # a closed connection is freed at once, by reference counting.
        self.deadline.cancel()
        self.outbound.lost()
        self.sender.lost()
        self.request_timer.cancel()
        self.liveness.end()
        # The host first: a requester's errback that retries must not find
        # this connection still listed among the verified peers.
        self.host.connection_closed(self, reason)
        waiting = self.connection.lost()
        if waiting:
            lost = PeerLost(f"connection lost: {reason.getErrorMessage()}")
            for deferred in waiting:
                deferred.errback(lost)
        if not self.verified.called:
            self.verified.errback(
                HandshakeError(self._failure or reason.value or ConnectionDone())
            )
        self.closed.callback(None)

    # -- answers ------------------------------------------------------------

    def respond(self, response: wire.Response) -> None:
        """Answer one of the peer's requests (a no-op once closed); for a
        fire-and-forget request, say its handler ended (``request_id`` 0)."""
        outbound, connection = self.outbound, self.connection
        connection.respond(response, outbound.reserve)
        if self._receiving:
            # The read being handled serves what the answers let out, then
            # flushes: small answers go out together, large ones at once
            # (to the transport or the queue).
            if connection.unsent >= PIECE:
                outbound.flush()
        elif connection.backlog:
            self._handle(connection.release())
        else:
            outbound.flush()
            self._update_reading()  # one fewer being processed

    def _send_or_hold(self) -> None:
        """Send what the connection queued now; or, while answers are held
        (a read being handled, or a cork), with them, in the one write at
        its end (a piece's worth at once).  Twisted writes to the socket
        only at the reactor's next look at it either way: a request sent
        from a callback of the read waits no longer for being held."""
        if not self._receiving or self.connection.unsent >= PIECE:
            self.outbound.flush()

    def cork(self) -> bool:
        """Hold the answers given from now on, to go out in one write at
        :meth:`uncork`, as a read's do (the node serving several of this
        peer's requests in a row, outside a read); False, and nothing to
        undo, if they are held already (inside a read)."""
        if self._receiving:
            return False
        self._receiving = True
        return True

    def uncork(self) -> None:
        """After :meth:`cork`: serve what the answers let out, send them."""
        self._receiving = False
        self._handle([])  # held again meanwhile, then sent

    # -- closing and reading ------------------------------------------------

    def close(self, error: ProtocolError) -> bool:
        """Tell the peer why, then close; whether this call closed it (once
        closed, a second close does nothing: failures are counted once)."""
        if self.connection.closed:
            return False
        self._on_failed(self.connection.fail(error))
        return True

    def _update_reading(self) -> None:
        """Stop reading a peer that has ``max_concurrent_requests`` being
        processed (or waiting), or whose unread responses fill half the send
        queue (the queue never passes its bound, so half is the signal).

        Not merely because writing is paused: two peers sending each other
        large payloads would then each wait for the other to read.
        """
        connection = self.connection
        pause = (
            connection.saturated
            or self.outbound.queued > self.settings.max_send_queue // 2
        )
        if pause is not self._reading_paused and not self.connection.closed:
            self._reading_paused = pause
            if pause:
                self.transport.pauseProducing()  # type: ignore[union-attr]
            else:
                self.transport.resumeProducing()  # type: ignore[union-attr]

    # -- internals ----------------------------------------------------------

    def _on_verified(self, peer_id: PeerId) -> None:
        self.deadline.cancel()
        clock = self.clock
        self.verified_at = clock.seconds()
        self._log.info(
            "peer {peer_id} verified at {address}",
            peer_id=str(peer_id),
            address=self.where,
            direction="outbound" if self.initiator else "inbound",
        )
        self.host.peer_verified(self)
        if not self.verified.called:
            self.verified.callback(peer_id)

    def _wrong_protocol(self, verdict: untrusted.WrongOpening) -> None:
        """An operator's client at the wrong port: a hint it can show, then
        close; the host hears of it as a failure that is not misbehaviour."""
        self.transport.write(verdict.answer)  # type: ignore[union-attr]
        self.wrong_opening(verdict.kind)
        self.disconnect()

    def wrong_opening(self, kind: str) -> None:
        """A client of another protocol (``http``, ``tls``, or ``plain`` at a
        TLS port) was answered with a hint by whoever saw its first bytes
        (here, or the TLS layer): report it, never as misbehaviour.  The
        caller closes the transport."""
        error = ProtocolError(
            ErrorCode.UNEXPECTED_MESSAGE,
            f"{kind} on a blueprint-net peer port; answered with a hint",
        )
        self._failure = error
        self.host.connection_failed(self, ConnectionFailed(error, wrong_protocol=kind))
        self.deadline.cancel()

    def _on_failed(self, event: ConnectionFailed) -> None:
        self.outbound.flush()
        error = event.error
        self._failure = error
        if self.connection.verified:
            # A proven peer's failures are rare and worth a line each; an
            # unverified one's are counted and summarised by the host.  A
            # goodbye (GOING_AWAY, either side's) is a normal close.
            going_away = error.code is ErrorCode.GOING_AWAY
            (self._log.info if going_away else self._log.warn)(
                "connection to {address} closed: {code_name} ({code}): {reason}"
                if going_away
                else "connection to {address} failed: {code_name} ({code}): {reason}",
                address=self.where,
                peer_id=str(self.peer_id),
                code=int(error.code),
                code_name=error.code.name,
                reason=untrusted.quote(error.message),
                remote=error.remote,
                misbehaviour=event.misbehaviour,
            )
        self.host.connection_failed(self, event)
        self.deadline.cancel()
        self.disconnect()

    def disconnect(self) -> None:
        """Close after writing what is queued (see :meth:`Outbound.close`);
        before TLS completes, at once: nothing queued can reach the peer,
        and Twisted's TLS would hold the socket open for it until a TLS
        handshake the peer may never finish."""
        self.outbound.close()
        if self._unbound:
            self.transport.abortConnection()  # type: ignore[union-attr]
        else:
            self.transport.loseConnection()  # type: ignore[union-attr]

    def _handshake_timed_out(self) -> None:
        self._on_failed(self.connection.timed_out())

    def _decide(self, peer_id: PeerId) -> list[ConnectionEvent]:
        """The peer proved ``peer_id``: admit it, or refuse it with the code
        the certificate check (``tls_binding``) or the host's policy gives."""
        try:
            check_certificate(self.connection, self.transport, peer_id)
            self.host.authorize(peer_id)
        except HandshakeFailed as refusal:
            return [self.connection.refuse(refusal.code, refusal.message)]
        return self.connection.accept()

    @property
    def channel_bound(self) -> bool:
        """Whether the proof covers every later byte (TLS 1.3: see
        ``tls_binding.channel_bound``)."""
        return channel_bound(self.transport)
