"""The embeddable node: listens, dials, keeps one connection per peer, and
serves and sends requests."""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Callable, Optional, Union

import attrs
from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    IReactorTime,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from blueprint_net._adapters import tls
from blueprint_net._adapters.banstore import log_change
from blueprint_net._adapters.interfaces import IConnectionHost, IRequestHandler
from blueprint_net._adapters.limiter import LimitingFactory
from blueprint_net._adapters.protocol import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_KEEPALIVE_INTERVAL,
    DEFAULT_MAX_CONCURRENT_REQUESTS,
    DEFAULT_MAX_SEND_QUEUE,
    DEFAULT_REQUEST_TIMEOUT,
    PeerFactory,
    PeerProtocol,
    Settings,
)
from blueprint_net._core import wire
from blueprint_net._core.connection import ConnectionFailed
from blueprint_net._core.errors import (
    ErrorCode,
    HandshakeFailed,
    NotConnected,
    ProtocolError,
    Refused,
    RemoteError,
    SendQueueFull,
)
from blueprint_net._core.identity import Identity, PeerId
from blueprint_net._core.messaging import IncomingRequest, ProtocolData, Success
from blueprint_net._policy.addresses import Target
from blueprint_net._policy.bans import Ban, BanRegistry
from blueprint_net._policy.limits import (
    ConnectionLimiter,
    ConnectionLimits,
    TokenBucket,
)
from blueprint_net._policy.scores import Policy

ServerEndpoint = Union[str, IStreamServerEndpoint]
ClientEndpoint = Union[str, IStreamClientEndpoint]
PeerCallback = Callable[["Peer"], Any]
Handler = Union[IRequestHandler, Callable[[IncomingRequest], Any]]

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


@attrs.frozen
class Outcome:
    """One peer's result in a broadcast: a response, or why there is none."""

    peer_id: PeerId
    response: Optional[wire.Reply] = None
    error: Optional[Exception] = None

    @property
    def ok(self) -> bool:
        """A Success or Protocol response (not an Error, timeout or loss)."""
        return self.error is None


@implementer(IRequestHandler)
class FunctionHandler:
    """Adapts a plain callable to :class:`IRequestHandler`."""

    def __init__(
        self, function: Callable[[IncomingRequest], Any], max_payload: Optional[int]
    ) -> None:
        self.function = function
        self.max_payload = max_payload

    def handle(self, request: IncomingRequest) -> Any:
        return self.function(request)


class _KeepFactory(PeerFactory):
    """Dials one peer for a ``ClientService``; see :meth:`Node.dial_factory`."""

    def __init__(self, node: Node, peer_id: PeerId) -> None:
        super().__init__(
            node, node.settings, initiator=True, expected_peer=peer_id, waited_on=False
        )
        self.node = node

    def buildProtocol(self, addr: Optional[IAddress]) -> Any:
        node, peer_id = self.node, self.expected_peer
        if node._stopping or peer_id in node._verified:
            return None
        return super().buildProtocol(addr)


async def _outcomes(asked: list[defer.Deferred[Outcome]]) -> dict[PeerId, Outcome]:
    # The caller holds only this coroutine's Deferred and the dict: a
    # DeferredList keeps its whole result list alive as long as it is held.
    outcomes = await defer.gatherResults(asked)
    return {outcome.peer_id: outcome for outcome in outcomes}


def _innermost(protocol: Any) -> PeerProtocol:
    """The PeerProtocol inside the wrappers (limits, TLS) an endpoint gave."""
    while not isinstance(protocol, PeerProtocol):
        protocol = protocol.wrappedProtocol
    return protocol


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
    connections close when the service stops.  ``reactor`` does the I/O;
    ``clock`` (the reactor by default) runs every timeout, so tests can
    drive timeouts with ``task.Clock`` over real sockets.
    """

    _log = Logger()

    def __init__(
        self,
        identity: Identity,
        *,
        reactor: Optional[Any] = None,
        clock: Optional[IReactorTime] = None,
        handlers: Optional[Mapping[str, Handler]] = None,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        max_frame: int = wire.DEFAULT_MAX_FRAME,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        keepalive_interval: float = DEFAULT_KEEPALIVE_INTERVAL,
        max_send_queue: int = DEFAULT_MAX_SEND_QUEUE,
        max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS,
        policy: Optional[Policy] = None,
        limits: Optional[ConnectionLimits] = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.reactor = reactor
        self.identity = identity
        self.settings = Settings(
            identity=identity,
            clock=reactor if clock is None else clock,
            handshake_timeout=handshake_timeout,
            max_frame=max_frame,
            request_timeout=request_timeout,
            keepalive_interval=keepalive_interval,
            max_send_queue=max_send_queue,
            max_concurrent_requests=max_concurrent_requests,
        )
        self._handlers: dict[str, IRequestHandler] = {}
        for name, handler in (handlers or {}).items():
            self.register(name, handler)
        self._stopping = False
        #: One timer pings every quiet peer, not one per connection.
        self._keepalive = task.LoopingCall(self._keepalive_sweep)
        self._keepalive.clock = self.settings.clock
        self._verified: dict[PeerId, PeerProtocol] = {}
        self._open: set[PeerProtocol] = set()
        self._ports: list[IListeningPort] = []
        self._on_verified: list[PeerCallback] = []
        self._on_lost: list[PeerCallback] = []
        self.server_factory = PeerFactory(self, self.settings, initiator=False)
        #: Refusals, bans, handshakes and requests, by name (for the status page).
        self.counters: Counter[str] = Counter()
        self.policy = policy or Policy(BanRegistry(self.settings.clock))
        self.policy.bans.on_ban(self._banned)
        self.policy.bans.on_change(log_change)
        self.limits = limits or ConnectionLimits()
        self.limiter = ConnectionLimiter(
            self.limits,
            self.settings.clock,
            refuse_address=self.policy.refuse_address,
            counters=self.counters,
        )

    @property
    def peer_id(self) -> PeerId:
        return self.identity.peer_id

    @property
    def bans(self) -> BanRegistry:
        return self.policy.bans

    def ban(
        self, target: Union[Target, str], reason: str, duration: Optional[float] = None
    ) -> Ban:
        """Ban a peer id or network for ``duration`` seconds (or for good);
        connections it covers are closed at once."""
        return self.bans.ban(target, reason, duration=duration)

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

    def register(
        self, protocol: str, handler: Handler, *, max_payload: Optional[int] = None
    ) -> None:
        """Serve requests for ``protocol`` with an :class:`IRequestHandler`
        or a plain callable (``max_payload`` applies to callables)."""
        if not 1 <= len(protocol.encode("utf-8")) <= 255:
            raise ValueError("a protocol name is 1 to 255 bytes of UTF-8")
        if not IRequestHandler.providedBy(handler):
            if not callable(handler):
                raise TypeError(f"{handler!r} is not a request handler")
            handler = FunctionHandler(handler, max_payload)
        self._handlers[protocol] = handler

    def unregister(self, protocol: str) -> None:
        self._handlers.pop(protocol, None)

    def request(
        self,
        peer_id: PeerId,
        protocol: str,
        payload: bytes,
        metadata: Optional[bytes] = None,
        *,
        timeout: Optional[float] = None,
    ) -> defer.Deferred[wire.Reply]:
        """Ask one verified peer; fires once with its Success or Protocol
        response, or fails with RemoteError (its Error response),
        RequestTimeout, PeerLost, NotConnected or SendQueueFull."""
        connection = self._verified.get(peer_id)
        if connection is None:
            return defer.fail(NotConnected(f"no verified connection to {peer_id}"))
        self.counters[f"requests.out.{protocol}"] += 1
        return connection.request(protocol, payload, metadata, timeout)

    def notify(
        self,
        peer_id: PeerId,
        protocol: str,
        payload: bytes,
        metadata: Optional[bytes] = None,
    ) -> None:
        """Send a request that wants no response (fire and forget); raises
        NotConnected or SendQueueFull."""
        connection = self._verified.get(peer_id)
        if connection is None:
            raise NotConnected(f"no verified connection to {peer_id}")
        connection.notify(protocol, payload, metadata)

    def broadcast(
        self,
        protocol: str,
        payload: bytes,
        metadata: Optional[bytes] = None,
        *,
        peers: Optional[Iterable[PeerId]] = None,
        timeout: Optional[float] = None,
    ) -> defer.Deferred[dict[PeerId, Outcome]]:
        """Ask every verified peer (or ``peers``); fires with each one's
        outcome once all have answered, failed or timed out."""
        targets = list(self._verified if peers is None else peers)
        asked = [
            self.request(
                peer_id, protocol, payload, metadata, timeout=timeout
            ).addCallbacks(
                lambda response, peer_id=peer_id: Outcome(peer_id, response=response),
                lambda failure, peer_id=peer_id: Outcome(peer_id, error=failure.value),
            )
            for peer_id in targets
        ]
        return defer.ensureDeferred(_outcomes(asked))

    def notify_all(
        self,
        protocol: str,
        payload: bytes,
        metadata: Optional[bytes] = None,
        *,
        peers: Optional[Iterable[PeerId]] = None,
    ) -> list[PeerId]:
        """Fire and forget to every verified peer (or ``peers``), encoding
        the request once; returns the peers it was sent to (a peer not
        connected, or not reading, is skipped)."""
        frame = wire.frame(wire.Request(wire.NO_RESPONSE, protocol, payload, metadata))
        sent = []
        for peer_id in list(self._verified if peers is None else peers):
            connection = self._verified.get(peer_id)
            if connection is None:
                continue
            try:
                connection.send_frame(frame)
            except SendQueueFull as error:
                self._log.warn(
                    "not sent to {peer_id}: {error}", peer_id=peer_id, error=error
                )
                continue
            sent.append(peer_id)
        return sent

    def listen(self, endpoint: ServerEndpoint) -> defer.Deferred[IListeningPort]:
        """Accept peers on an endpoint object or strports description
        (``p2ptls:`` for TLS with the node's own key; see ``tls``)."""
        if isinstance(endpoint, str):
            endpoint = tls.server_endpoint(self.reactor, endpoint, self.identity)
        listening: defer.Deferred[IListeningPort]
        listening = endpoint.listen(self.listening_factory())
        return listening.addCallback(self._listening)

    def listening_factory(self) -> LimitingFactory:
        """The factory to listen with: the node's, behind its limits (for a
        ``StreamServerEndpointService`` of your own)."""
        return LimitingFactory(self.server_factory, self.limiter, inbound=True)

    def dial_factory(self, peer_id: PeerId) -> LimitingFactory:
        """A factory that dials ``peer_id`` and nobody else, for a
        ``ClientService`` that keeps the peer connected.

        It builds nothing (the attempt ends before any handshake) while the
        node already has that peer, which it may have by the peer's own dial:
        a second connection would only be closed as a duplicate.
        """
        dial = _KeepFactory(self, peer_id)
        return LimitingFactory(dial, self.limiter, inbound=False)

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
            if self.bans.peer_ban(peer_id) is not None:
                self.counters["refused.banned"] += 1
                raise Refused(f"{peer_id} is banned")
        if isinstance(endpoint, str):
            endpoint = tls.client_endpoint(
                self.reactor, endpoint, self.identity, peer_id
            )
        factory = LimitingFactory(
            PeerFactory(self, self.settings, initiator=True, expected_peer=peer_id),
            self.limiter,
            inbound=False,
        )
        connected = await endpoint.connect(factory)
        if factory.refused is not None:  # a banned address, a limit
            raise Refused(f"connection refused by policy: {factory.refused}")
        protocol = _innermost(connected)
        verified_id = await protocol.verified
        peer = self.peer(verified_id)
        if peer is None:  # verified, then lost before we got here
            raise HandshakeFailed(ErrorCode.GOING_AWAY, "peer left at once")
        return peer

    def disconnect(self, peer_id: PeerId) -> defer.Deferred[None]:
        """Say goodbye to one peer (``Error{GOING_AWAY}``) and close; fires
        once closed.  Close through this (or :meth:`stop`), not the
        transport: a connection is its transport's producer, and TLS will not
        close a transport whose producer is still registered."""
        protocol = self._verified.get(peer_id)
        if protocol is None:
            return defer.succeed(None)
        protocol.close(ProtocolError(ErrorCode.GOING_AWAY, "closed by the application"))
        return protocol.closed

    def stop(self) -> defer.Deferred[None]:
        """Stop listening, say goodbye to every peer, wait for them to close."""
        return defer.ensureDeferred(self._stop())

    async def _stop(self) -> None:
        self._stopping = True
        if self._keepalive.running:
            self._keepalive.stop()
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

    def _keepalive_sweep(self) -> None:
        for protocol in list(self._verified.values()):
            protocol.keepalive_tick()
        if not self._verified:
            self._keepalive.stop()  # restarted by the next verified peer

    def _abort_open(self) -> None:
        for protocol in list(self._open):
            protocol.transport.abortConnection()  # type: ignore[union-attr]

    # -- IService -----------------------------------------------------------

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        return self.stop()

    # -- IConnectionHost ----------------------------------------------------

    def authorize(self, peer_id: PeerId) -> None:
        """A peer proved its id: the policy (bans, permissioned mode) and the
        per-peer limit may still refuse it."""
        self.policy.authorize(peer_id)
        proven = sum(1 for p in self._open if p.peer_id == peer_id)
        if proven >= self.limits.max_per_peer:
            self.counters["refused.peer"] += 1
            raise HandshakeFailed(
                ErrorCode.CONNECTION_LIMIT, "too many connections from this peer"
            )

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
        self.counters["handshakes.ok"] += 1
        limits = self.limits
        if limits.request_rate > 0:
            protocol.request_budget = TokenBucket(
                limits.request_rate, limits.request_burst, self.settings.clock.seconds()
            )
        interval = self.settings.keepalive_interval
        if interval > 0 and not self._keepalive.running and not self._stopping:
            self._keepalive.start(interval, now=False)
        if self._on_verified:
            peer = _describe(protocol)
            for callback in self._on_verified:
                self._call(callback, peer)

    def connection_failed(
        self, protocol: PeerProtocol, event: ConnectionFailed
    ) -> None:
        """Count the failure; score it if the peer misbehaved."""
        code = event.error.code
        stage = "closed" if protocol.connection.verified else "handshakes.failed"
        self.counters[f"{stage}.{code.name}"] += 1
        if event.misbehaviour:
            self.counters["misbehaviour"] += 1
            host = getattr(protocol.address, "host", None)
            # Only a proven id is scored: a claimed one may be anyone's.
            self.policy.misbehaved(host, protocol.peer_id, code)

    def _banned(self, ban: Ban) -> None:
        """A new ban: close every connection it covers, now."""
        self.counters[f"bans.{ban.origin.value}"] += 1
        target = ban.target
        for protocol in list(self._open):
            if isinstance(target, PeerId):
                covered = protocol.peer_id == target
            else:
                host = getattr(protocol.address, "host", None)
                covered = host is not None and self.bans.address_ban(host) is ban
            if covered and not protocol.connection.closed:
                protocol.close(HandshakeFailed(ErrorCode.BANNED, "banned"))

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

    def request_received(self, protocol: PeerProtocol, request: wire.Request) -> None:
        """Run the handler; answer with what it returns, or an Error."""
        handler = self._handlers.get(request.protocol)
        budget = protocol.request_budget
        if self._stopping:
            error = (ErrorCode.SHUTTING_DOWN, "the node is stopping")
        elif budget is not None and not budget.take(self.settings.clock.seconds()):
            self.counters["requests.rate_limited"] += 1
            error = (ErrorCode.RATE_LIMITED, "too many requests; slow down")
        elif handler is None:
            error = (ErrorCode.UNKNOWN_PROTOCOL, f"no handler for {request.protocol!r}")
        elif handler.max_payload is not None and len(request.payload) > int(
            handler.max_payload
        ):
            error = (
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"{request.protocol!r} accepts at most {handler.max_payload} bytes",
            )
        else:
            peer_id = protocol.peer_id
            assert peer_id is not None
            incoming = IncomingRequest(
                peer_id,
                request.protocol,
                request.payload,
                request.metadata,
                request.request_id,
            )
            self.counters[f"requests.in.{request.protocol}"] += 1
            try:
                result = handler.handle(incoming)
            except Exception as failed:
                protocol.respond(self._handler_failed(incoming, failed))
                return
            if result is None or type(result) is bytes:  # the common case, first
                protocol.respond(self._answer(result, incoming))
            elif inspect.isawaitable(result):  # a Deferred or a coroutine
                defer.ensureDeferred(self._answer_later(protocol, incoming, result))
            else:
                protocol.respond(self._answer(result, incoming))
            return
        name = request.protocol if handler is not None else "unknown"
        self.counters[f"requests.refused.{name}.{error[0].name}"] += 1
        protocol.respond(wire.ErrorResponse(request.request_id, *error))

    async def _answer_later(
        self, protocol: PeerProtocol, request: IncomingRequest, result: Any
    ) -> None:
        try:
            value = await result
        except Exception as failed:
            protocol.respond(self._handler_failed(request, failed))
        else:
            protocol.respond(self._answer(value, request))

    def _answer(self, result: Any, request: IncomingRequest) -> wire.Response:
        """Turn what a handler returned into the response to send."""
        request_id = request.request_id
        response: Union[wire.SuccessResponse, wire.ProtocolResponse]
        if result is None:
            return wire.SuccessResponse(request_id)
        if isinstance(result, bytes):
            response = wire.ProtocolResponse(request_id, result)
        elif isinstance(result, ProtocolData):
            response = wire.ProtocolResponse(request_id, result.data)
        elif isinstance(result, Success):
            response = wire.SuccessResponse(request_id, result.data)
        else:
            self._log.error(
                "handler for {protocol!r} returned {kind}, not bytes or None",
                protocol=request.protocol,
                kind=type(result).__name__,
                peer_id=request.peer_id,
            )
            return wire.ErrorResponse(
                request_id, ErrorCode.HANDLER_ERROR, "the handler failed"
            )
        data = response.data
        if data is not None and len(data) > self.settings.max_frame - 16:
            return wire.ErrorResponse(
                request_id, ErrorCode.HANDLER_ERROR, "the response is too large"
            )
        return response

    def _handler_failed(
        self, request: IncomingRequest, error: Exception
    ) -> wire.ErrorResponse:
        """The Error for a handler that raised (call it in the except block)."""
        # Codes below 300 are the connection's, never a request's answer.
        if isinstance(error, RemoteError) and 300 <= error.code <= 0xFFFF:
            return wire.ErrorResponse(request.request_id, error.code, error.message)
        self._log.failure(
            "handler for {protocol!r} failed on a request from {peer_id}",
            protocol=request.protocol,
            peer_id=request.peer_id,
        )
        # The peer learns that it failed, never how: no traceback leaks.
        return wire.ErrorResponse(
            request.request_id, ErrorCode.HANDLER_ERROR, "the handler failed"
        )

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
