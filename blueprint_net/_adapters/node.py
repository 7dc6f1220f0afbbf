"""The embeddable node: a thin facade that wires the peer table, request
dispatch, the connection limiter and the policy to Twisted endpoints.

Layer: adapters.  What a node *decides* lives below it (``_policy``); what it
*holds* per peer lives in :mod:`~blueprint_net._adapters.peers`; how it
serves requests, in :mod:`~blueprint_net._adapters.dispatch`.  This module
is lifecycle (listen, connect, stop), keepalive, ban enforcement and the
application's calls.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Callable, Optional, Union

import attrs
from twisted.application.service import Service
from twisted.internet import defer
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
from blueprint_net._adapters.dispatch import Dispatcher, Handler
from blueprint_net._adapters.facade import INode
from blueprint_net._adapters.gossip import Gossip, GossipHandler, Validator
from blueprint_net._adapters.keepalive import Keepalive
from blueprint_net._adapters.limiter import LimitingFactory
from blueprint_net._adapters.peers import Peer, PeerTable, describe
from blueprint_net._adapters.protocol import (
    PLAINTEXT_REFUSED,
    IConnectionHost,
    PeerFactory,
    PeerProtocol,
)
from blueprint_net._adapters.summary import EventSummary
from blueprint_net._core import untrusted, wire
from blueprint_net._core.connection import ConnectionFailed, GossipReceived
from blueprint_net._core.errors import (
    ConnectFailed,
    ErrorCode,
    HandshakeError,
    HandshakeFailed,
    NotConnected,
    PeerLost,
    PlaintextRefused,
    ProtocolError,
    Refused,
    SendQueueFull,
)
from blueprint_net._core.identity import Identity, PeerId
from blueprint_net._core.pubsub import Fault
from blueprint_net._policy import discovery
from blueprint_net._policy.addresses import Target
from blueprint_net._policy.bans import Ban, BanRegistry
from blueprint_net._policy.gossip import DEFAULTS as GOSSIP_DEFAULTS
from blueprint_net._policy.gossip import GossipSettings, fault_code
from blueprint_net._policy.limits import (
    ConnectionLimiter,
    ConnectionLimits,
    TokenBucket,
)
from blueprint_net._policy.resources import MemoryBudget
from blueprint_net._policy.scores import Policy
from blueprint_net._policy.settings import DEFAULTS, Settings

ServerEndpoint = Union[str, IStreamServerEndpoint]
ClientEndpoint = Union[str, IStreamClientEndpoint]
PeerCallback = Callable[[Peer], Any]

#: How long :meth:`Node.stop` lets a connection flush its goodbye before
#: aborting it (a peer that stopped reading would otherwise hold it open).
CLOSE_GRACE = 2.0


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


class _KeepFactory(PeerFactory):
    """Dials one peer for a ``ClientService``; see :meth:`Node.dial_factory`."""

    def __init__(self, node: Node, peer_id: PeerId) -> None:
        super().__init__(
            node,
            node.identity,
            node.clock,
            node.settings,
            initiator=True,
            expected_peer=peer_id,
            waited_on=False,
            memory=node.memory,
        )
        self.node, self.peer_id = node, peer_id

    def buildProtocol(self, addr: Optional[IAddress]) -> Any:
        node, peer_id = self.node, self.peer_id
        if node.stopping or node.peer(peer_id) is not None:
            return None
        return super().buildProtocol(addr)


def _relay(result: Any, waiting: defer.Deferred[Any]) -> None:
    """Pass a shared dial's result on to one waiter."""
    if isinstance(result, Failure):
        waiting.errback(result)
    else:
        waiting.callback(result)


async def _outcomes(asked: list[defer.Deferred[Outcome]]) -> dict[PeerId, Outcome]:
    # The caller holds only this coroutine's Deferred and the dict: a
    # DeferredList keeps its whole result list alive as long as it is held.
    outcomes = await defer.gatherResults(asked)
    return {outcome.peer_id: outcome for outcome in outcomes}


def require_tls(description: str, settings: Settings) -> None:
    """Refuse a plain (not TLS) endpoint description unless ``settings``
    opt in: an early, clear error (the transport is checked again when it
    connects)."""
    if not settings.allow_plaintext and not tls.is_tls(description):
        raise PlaintextRefused(
            f"{description!r} is plaintext: use p2ptls: (or opt in with"
            " allow_plaintext / --allow-plaintext, for trusted networks only)"
        )


def _innermost(protocol: Any) -> PeerProtocol:
    """The PeerProtocol inside the wrappers (limits, TLS) an endpoint gave."""
    while not isinstance(protocol, PeerProtocol):
        protocol = protocol.wrappedProtocol
    return protocol


@implementer(IConnectionHost, INode)
class Node(Service):
    """A blueprint-net peer that an application creates and drives.

    An ``IService``: give it to a ``MultiService`` (or ``twistd``) and its
    connections close when the service stops.  ``reactor`` does the I/O;
    ``clock`` (the reactor by default) runs every timeout, so tests can
    drive timeouts with ``task.Clock`` over real sockets.  ``settings``,
    ``limits`` and ``policy`` hold every tunable, with safe defaults.

    Every link is TLS unless ``settings.allow_plaintext``: a plain listener
    or dial fails with :class:`~blueprint_net.PlaintextRefused`, and a plain
    transport from an endpoint object is closed before its handshake
    (``NOT_ALLOWED``).
    """

    _log = Logger()

    def __init__(
        self,
        identity: Identity,
        *,
        reactor: Optional[Any] = None,
        clock: Optional[IReactorTime] = None,
        handlers: Optional[Mapping[str, Handler]] = None,
        settings: Settings = DEFAULTS,
        policy: Optional[Policy] = None,
        limits: Optional[ConnectionLimits] = None,
        gossip: GossipSettings = GOSSIP_DEFAULTS,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.reactor = reactor
        self.identity = identity
        self.clock: IReactorTime = reactor if clock is None else clock
        self.settings = settings
        if settings.allow_plaintext:
            self._log.warn(
                "plaintext links allowed (allow_plaintext): a relay can speak"
                " as a peer on them; for trusted networks only",
                allow_plaintext=True,
            )
        #: Refusals, bans, handshakes and requests, by name (for the status page).
        self.counters: Counter[str] = Counter()
        #: What every connection's buffers draw on (``memory.*`` counters).
        self.memory = MemoryBudget(settings.memory_budget, self.counters)
        self.limits = limits or ConnectionLimits()
        self._peers = PeerTable(self.limits.remembered_budgets)
        self._dispatch = Dispatcher(self.clock, self.counters, handlers=handlers)
        self._stopping = False
        #: One timer pings every quiet peer, not one per connection.
        self._keepalive = Keepalive(self.clock, settings.keepalive_interval)
        self._ports: list[IListeningPort] = []
        self._on_verified: list[PeerCallback] = []
        self._on_lost: list[PeerCallback] = []
        #: Failed handshakes and refused connections: a line per minute
        #: with a count per reason, never a line each (a flood's volume).
        self.failures = EventSummary(self.clock, "failed handshakes")
        self.refusals = EventSummary(self.clock, "refused connections")
        #: Local ends of our recent outbound connections, (host, port) ->
        #: until when: an inbound connection from one of them is ourselves.
        self._own_ends: dict[tuple[str, int], float] = {}
        #: Dials of peers known by their records, by id (one at a time
        #: each): who waits for each.
        self._record_dials: dict[PeerId, list[defer.Deferred[Peer]]] = {}
        self.server_factory = PeerFactory(
            self, identity, self.clock, settings, initiator=False, memory=self.memory
        )
        self.policy = policy or Policy(BanRegistry(self.clock))
        self.policy.bans.on_ban(self._banned)
        self.policy.bans.on_change(log_change)
        self.limiter = ConnectionLimiter(
            self.limits,
            self.clock,
            refuse_address=self.policy.refuse_address,
            counters=self.counters,
        )
        #: Topic gossip and peer records (see :meth:`subscribe`).
        self.gossip = Gossip(
            identity,
            self.clock,
            gossip,
            self._peers,
            self._charge_gossip,
            forward_queue_limit=settings.max_send_queue // 4,
        )
        self._gossip_frame = gossip.max_frame()

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

    def set_permitted(self, peers: Optional[Iterable[PeerId]]) -> int:
        """Replace permissioned mode's allow-list (``None``: any proven peer
        is welcome); connections to peers no longer on it close at once
        with ``NOT_ALLOWED``.  Returns how many closed."""
        self.policy.set_permitted(peers)
        permitted = self.policy.permitted
        if permitted is None:
            return 0
        gone = "no longer on the allow-list"
        return sum(
            protocol.close(HandshakeFailed(ErrorCode.NOT_ALLOWED, gone))
            for protocol in list(self._peers.open)
            if protocol.peer_id is not None and protocol.peer_id not in permitted
        )

    # -- the application's side -------------------------------------------

    @property
    def peers(self) -> list[Peer]:
        """Verified peers, one entry per peer id."""
        return [describe(protocol) for protocol in self._peers.protocols()]

    def peer(self, peer_id: PeerId) -> Optional[Peer]:
        protocol = self._peers.get(peer_id)
        return None if protocol is None else describe(protocol)

    def on_peer_verified(self, callback: PeerCallback) -> None:
        self._on_verified.append(callback)

    def on_peer_lost(self, callback: PeerCallback) -> None:
        self._on_lost.append(callback)

    def register(
        self, protocol: str, handler: Handler, *, max_payload: Optional[int] = None
    ) -> None:
        """Serve requests for ``protocol`` with an :class:`IRequestHandler`
        or a plain callable (``max_payload`` applies to callables)."""
        self._dispatch.register(protocol, handler, max_payload=max_payload)

    def unregister(self, protocol: str) -> None:
        self._dispatch.unregister(protocol)

    @property
    def protocols(self) -> list[str]:
        """The protocols this node serves (a handler is registered), sorted."""
        return self._dispatch.protocols

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
        connection = self._peers.get(peer_id)
        if connection is None:
            if self.gossip.records.get(peer_id) is not None:
                return defer.ensureDeferred(
                    self._dial_then_request(
                        peer_id, protocol, payload, metadata, timeout
                    )
                )
            return defer.fail(NotConnected(f"no verified connection to {peer_id}"))
        self.counters[f"requests.out.{protocol}"] += 1
        return connection.request(protocol, payload, metadata, timeout)

    async def _dial_then_request(
        self,
        peer_id: PeerId,
        protocol: str,
        payload: bytes,
        metadata: Optional[bytes],
        timeout: Optional[float],
    ) -> wire.Reply:
        """A peer known by its record but not connected: dial it (pinned to
        its id), then ask."""
        await self.dial_record(peer_id)
        return await self.request(peer_id, protocol, payload, metadata, timeout=timeout)

    def dial_record(self, peer_id: PeerId) -> defer.Deferred[Peer]:
        """Dial ``peer_id`` at the addresses of its signed record, in order;
        ``NotConnected`` if it has none we may dial, else the last failure.
        Concurrent calls for one peer share one dial."""
        mine: defer.Deferred[Peer] = defer.Deferred()
        waiting = self._record_dials.get(peer_id)
        if waiting is not None:
            waiting.append(mine)
            return mine
        self._record_dials[peer_id] = [mine]
        dialing = defer.ensureDeferred(self._dial_record(peer_id))
        dialing.addBoth(self._record_dialed, peer_id)
        return mine

    def _record_dialed(self, result: object, peer_id: PeerId) -> None:
        # Each caller has its own Deferred: one caller's callbacks (or its
        # unhandled failure) are not another's.
        for waiting in self._record_dials.pop(peer_id):
            _relay(result, waiting)

    async def _dial_record(self, peer_id: PeerId) -> Peer:
        record = self.gossip.records.get(peer_id)
        targets = (
            [] if record is None else discovery.dial_targets(record, self.dial_scopes())
        )
        if not targets:
            raise NotConnected(f"no verified connection to {peer_id}, no address")
        failure: Optional[Exception] = None
        for host, port in targets:
            try:
                return await self.connect(discovery.description(host, port), peer_id)
            except ConnectFailed as error:
                failure = error
        assert failure is not None
        raise failure

    # -- topic gossip ---------------------------------------------------------

    def subscribe(
        self,
        topic: str,
        handler: GossipHandler,
        *,
        validator: Optional[Validator] = None,
    ) -> None:
        """Join ``topic``: ``handler`` gets each verified message published
        to it (a :class:`~blueprint_net.GossipMessage`); ``validator``, if
        given, first answers :class:`~blueprint_net.Verdict` ``ACCEPT``,
        ``IGNORE`` or ``REJECT`` (or a Deferred or coroutine of one)."""
        self.gossip.subscribe(topic, handler, validator)

    def unsubscribe(self, topic: str) -> None:
        self.gossip.unsubscribe(topic)

    def publish(self, topic: str, data: bytes) -> bytes:
        """Sign ``data`` and send it to ``topic``'s peers; the message id.
        :class:`~blueprint_net.PublishFailed` over the topic's size cap or
        this node's publish rate."""
        return self.gossip.publish(topic, data)

    def _charge_gossip(self, peer_id: PeerId, fault: Fault) -> None:
        """Score a peer's gossip fault as a connection's failure is scored."""
        protocol = self._peers.get(peer_id)
        if protocol is None:
            return
        self.counters[f"gossip.fault.{fault.value}"] += 1
        self._misbehaved(protocol, fault_code(fault))

    def _misbehaved(self, protocol: PeerProtocol, code: ErrorCode) -> None:
        """Charge what ``protocol``'s peer provably did: its address always;
        its peer id only when proven *and* the link's channel binding ties
        the proof to every later byte (TLS 1.3).  On a plain link a relay can
        forward an honest peer's handshake, then send garbage in its name."""
        self.counters["misbehaviour"] += 1
        host = getattr(protocol.address, "host", None)
        peer_id = protocol.peer_id if protocol.channel_bound else None
        self.policy.misbehaved(host, peer_id, code)

    def notify(
        self,
        peer_id: PeerId,
        protocol: str,
        payload: bytes,
        metadata: Optional[bytes] = None,
    ) -> None:
        """Send a request that wants no response (fire and forget); raises
        NotConnected, PeerLost (the connection is closing) or SendQueueFull."""
        connection = self._peers.get(peer_id)
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
        targets = list(self._peers if peers is None else peers)
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
        connected, closing, or not reading, is skipped)."""
        frame = wire.frame(wire.Request(wire.NO_RESPONSE, protocol, payload, metadata))
        sent = []
        for peer_id in list(self._peers if peers is None else peers):
            connection = self._peers.get(peer_id)
            if connection is None:
                continue
            try:
                connection.send_frame(frame)
            except PeerLost:
                continue  # closed, not yet lost: it leaves the table soon
            except SendQueueFull as error:
                self._log.warn(
                    "not sent to {peer_id}: {error}",
                    peer_id=str(peer_id),
                    error=str(error),
                )
                continue
            sent.append(peer_id)
        return sent

    def listen(self, endpoint: ServerEndpoint) -> defer.Deferred[IListeningPort]:
        """Accept peers on an endpoint object or strports description
        (``p2ptls:`` for TLS with the node's own key; see ``tls``).  A plain
        description fails with ``PlaintextRefused`` unless opted in."""
        if isinstance(endpoint, str):
            try:
                require_tls(endpoint, self.settings)
            except PlaintextRefused:
                return defer.fail()
            endpoint = tls.server_endpoint(self.reactor, endpoint, self.identity)
        listening: defer.Deferred[IListeningPort]
        listening = endpoint.listen(self.listening_factory())
        return listening.addCallback(self._listening)

    def listening_factory(self) -> LimitingFactory:
        """The factory to listen with: the node's, behind its limits (for a
        ``StreamServerEndpointService`` of your own)."""
        return LimitingFactory(
            self.server_factory, self.limiter, inbound=True, summary=self.refusals
        )

    def dial_factory(self, peer_id: PeerId) -> LimitingFactory:
        """A factory that dials ``peer_id`` and nobody else, for a
        ``ClientService`` that keeps the peer connected.

        It builds nothing (the attempt ends before any handshake) while the
        node already has that peer, which it may have by the peer's own dial:
        a second connection would only be closed as a duplicate.
        """
        dial = _KeepFactory(self, peer_id)
        return LimitingFactory(dial, self.limiter, inbound=False, summary=self.refusals)

    def dial_scopes(self) -> frozenset[discovery.Scope]:
        """Which addresses learned from records we may dial: public, and
        private or loopback only if we listen or advertise in that scope."""
        own = self.gossip.own_record
        hosts = discovery.own_hosts(
            own.addresses if own else (), self.listening_addresses
        )
        return discovery.dial_scopes(hosts)

    @property
    def listening_addresses(self) -> list[tuple[str, int]]:
        """(host, port) of each port :meth:`listen` opened."""
        bound = [port.getHost() for port in self._ports]
        return [(a.host, a.port) for a in bound if hasattr(a, "port")]  # type: ignore[attr-defined]

    def _listening(self, port: IListeningPort) -> IListeningPort:
        self._ports.append(port)
        self._log.info("listening on {address}", address=str(port.getHost()))
        return port

    def connect(
        self, endpoint: ClientEndpoint, peer_id: Optional[PeerId] = None
    ) -> defer.Deferred[Peer]:
        """Dial a peer; fires with it once verified, or fails with a
        :class:`~blueprint_net.ConnectFailed`: :class:`~blueprint_net.Refused`
        (our own policy; :class:`~blueprint_net.PlaintextRefused` for a plain
        transport without the opt-in), :class:`~blueprint_net.HandshakeError` (closed
        before the handshake completed; its ``reason`` says why), or
        ``ConnectFailed`` itself with the transport's error as its cause.

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
            require_tls(endpoint, self.settings)
            endpoint = tls.client_endpoint(
                self.reactor, endpoint, self.identity, peer_id
            )
        factory = LimitingFactory(
            PeerFactory(
                self,
                self.identity,
                self.clock,
                self.settings,
                initiator=True,
                expected_peer=peer_id,
                memory=self.memory,
            ),
            self.limiter,
            inbound=False,
            summary=self.refusals,
        )
        try:
            connected = await endpoint.connect(factory)
        except defer.CancelledError:
            raise
        except Exception as error:
            raise ConnectFailed(f"cannot connect: {error}") from error
        if factory.refused is not None:  # a banned address, a limit
            raise Refused(f"connection refused by policy: {factory.refused}")
        protocol = _innermost(connected)
        try:
            verified_id = await protocol.verified
        except HandshakeError:
            if protocol.refused_plaintext:  # an endpoint object, not TLS
                raise PlaintextRefused(f"cannot connect: {PLAINTEXT_REFUSED}") from None
            raise
        peer = self.peer(verified_id)
        if peer is None:  # verified, then lost before we got here
            raise HandshakeError(
                ProtocolError(ErrorCode.GOING_AWAY, "peer left at once")
            )
        return peer

    def disconnect(
        self, peer_id: PeerId, error: Optional[ProtocolError] = None
    ) -> defer.Deferred[None]:
        """Say goodbye to one peer (``error``, by default
        ``Error{GOING_AWAY}``) and close; fires once closed.  Close through
        this (or :meth:`stop`), not the transport: a connection is its
        transport's producer, and TLS will not close a transport whose
        producer is still registered."""
        protocol = self._peers.get(peer_id)
        if protocol is None:
            return defer.succeed(None)
        if error is None:
            error = ProtocolError(ErrorCode.GOING_AWAY, "closed by the application")
        protocol.close(error)
        return protocol.closed

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` has begun: no new connection is wanted."""
        return self._stopping

    def stop(self) -> defer.Deferred[None]:
        """Stop listening, say goodbye to every peer, wait for them to close."""
        return defer.ensureDeferred(self._stop())

    async def _stop(self) -> None:
        self._stopping = True
        self._keepalive.stop()
        self.gossip.stop()
        ports, self._ports = self._ports, []
        await defer.gatherResults(
            [defer.maybeDeferred(port.stopListening) for port in ports]
        )
        closing = []
        for protocol in list(self._peers.open):
            protocol.close(ProtocolError(ErrorCode.GOING_AWAY, "node stopping"))
            closing.append(protocol.closed)
        if closing:
            abort = self.clock.callLater(CLOSE_GRACE, self._abort_open)
            await defer.gatherResults(closing)
            if abort.active():
                abort.cancel()
        self.failures.flush()
        self.refusals.flush()

    def _abort_open(self) -> None:
        for protocol in list(self._peers.open):
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
        if self._peers.connections_of(peer_id) >= self.limits.max_per_peer:
            self.counters["refused.peer"] += 1
            raise HandshakeFailed(
                ErrorCode.CONNECTION_LIMIT, "too many connections from this peer"
            )

    def connection_opened(self, protocol: PeerProtocol) -> None:
        self._peers.opened(protocol)
        protocol.connection.max_gossip_frame = self._gossip_frame
        if protocol.initiator:
            self._remember_own_end(protocol)

    def peer_verified(self, protocol: PeerProtocol) -> None:
        """Every verified connection comes here, however the duplicate rule
        then decides: each is counted (``handshakes.ok``) and spends its peer
        id's one budget.  The callbacks follow the peer id, not the
        connection: ``on_peer_verified`` fires when the id becomes connected;
        a replacement (the duplicate rule kept the new connection) fires
        nothing, since the peer was never lost, and is counted as
        ``peers.replaced``."""
        self.counters["handshakes.ok"] += 1
        outcome = self._peers.verified(protocol, self._new_budget)
        if outcome.dropped is not None:
            if outcome.replaced:
                self.counters["peers.replaced"] += 1
            self._log.info(
                "duplicate connection to {peer_id}; keeping one",
                peer_id=str(protocol.peer_id),
                replaced=outcome.replaced,
            )
            outcome.dropped.close(
                HandshakeFailed(
                    ErrorCode.DUPLICATE_CONNECTION, "already connected to this peer"
                )
            )
        if not self._stopping:
            self._keepalive.watch(protocol)
        if outcome.new:
            self.gossip.peer_connected(protocol)
        if outcome.new and self._on_verified:
            peer = describe(protocol)
            for callback in self._on_verified:
                self._call(callback, peer)

    def _new_budget(self) -> Optional[TokenBucket]:
        """A request budget for a peer id the node has not seen lately."""
        limits = self.limits
        if limits.request_rate <= 0:
            return None
        return TokenBucket(
            limits.request_rate, limits.request_burst, self.clock.seconds()
        )

    def connection_failed(
        self, protocol: PeerProtocol, event: ConnectionFailed
    ) -> None:
        """Count the failure; score it (:meth:`_misbehaved`) if the peer
        misbehaved."""
        code = event.error.code
        if event.wrong_protocol is not None:
            self._wrong_protocol(protocol, event.wrong_protocol)
            return
        stage = "closed" if protocol.connection.verified else "handshakes.failed"
        self.counters[f"{stage}.{code.name}"] += 1
        if code is ErrorCode.SELF_CONNECTION and self._reached_self(protocol):
            return
        if not protocol.connection.verified:
            self.failures.record(
                code.name,
                "handshake with {address} failed: {code_name}: {message}",
                address=protocol.where,
                code_name=code.name,
                message=untrusted.quote(event.error.message),
                claimed=str(protocol.connection.handshake.claimed_peer),
                misbehaviour=int(event.misbehaviour),
            )
        if event.misbehaviour:
            self._misbehaved(protocol, code)

    def _wrong_protocol(self, protocol: PeerProtocol, kind: str) -> None:
        """An HTTP or TLS client at a plain peer port: answered with a hint
        by the protocol; counted here, never scored."""
        self.counters[f"wrong_protocol.{kind}"] += 1
        self.failures.record(
            f"wrong protocol ({kind})",
            "{kind} client at the peer port from {address}; sent a hint",
            kind=kind,
            address=protocol.where,
        )

    def _remember_own_end(self, protocol: PeerProtocol) -> None:
        """Note an outbound connection's local end, so the inbound half of a
        connection to ourselves is known for what it is (not an attack)."""
        local = protocol.transport.getHost() if protocol.transport else None
        if not hasattr(local, "port"):
            return  # not TCP: no far end to recognise
        now = self.clock.seconds()
        ends = self._own_ends
        while ends and next(iter(ends.values())) < now:
            del ends[next(iter(ends))]  # the oldest first: dicts keep order
        key = (str(getattr(local, "host", "")), int(getattr(local, "port", 0)))
        ends[key] = now + self.settings.handshake_timeout

    def _reached_self(self, protocol: PeerProtocol) -> bool:
        """A SELF_CONNECTION failure of a connection that reached this very
        node (a configuration error, never scored): the outbound half is
        logged once; the inbound half is recognised by its far end."""
        if protocol.initiator:
            self._log.warn(
                "dialed {address} and reached this node itself; dropped"
                " (a --peer or connect() naming our own address?)",
                address=protocol.where,
            )
            return True
        far = protocol.address
        key = (getattr(far, "host", None), getattr(far, "port", None))
        expiry = self._own_ends.get(key)  # type: ignore[arg-type]
        return expiry is not None and expiry >= self.clock.seconds()

    def _banned(self, ban: Ban) -> None:
        """A new ban: close every connection it covers, now."""
        self.counters[f"bans.{ban.origin.value}"] += 1
        target = ban.target
        for protocol in list(self._peers.open):
            if isinstance(target, PeerId):
                covered = protocol.peer_id == target
            else:
                host = getattr(protocol.address, "host", None)
                covered = host is not None and self.bans.address_ban(host) is ban
            if covered:
                protocol.close(HandshakeFailed(ErrorCode.BANNED, "banned"))

    def connection_closed(self, protocol: PeerProtocol, reason: Failure) -> None:
        self._keepalive.forget(protocol)
        if not self._peers.closed(protocol):
            return
        assert protocol.peer_id is not None
        self.gossip.peer_disconnected(protocol.peer_id)
        self._log.info(
            "peer {peer_id} lost: {reason}",
            peer_id=str(protocol.peer_id),
            address=protocol.where,
            reason=reason.getErrorMessage(),
        )
        if self._on_lost:
            peer = describe(protocol)
            for callback in self._on_lost:
                self._call(callback, peer)

    def request_received(self, protocol: PeerProtocol, request: wire.Request) -> None:
        peer_id = protocol.peer_id
        assert peer_id is not None
        self._dispatch.serve(
            request,
            peer_id,
            protocol.respond,
            budget=self._peers.budget(peer_id),
            stopping=self._stopping,
        )

    def gossip_received(self, protocol: PeerProtocol, event: GossipReceived) -> None:
        if not self._stopping:
            self.gossip.received(protocol, event.message)

    def _call(self, callback: PeerCallback, peer: Peer) -> None:
        try:
            callback(peer)
        except Exception:
            self._log.failure("peer callback {callback!r} raised", callback=callback)
