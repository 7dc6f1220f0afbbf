"""The embeddable node: the public API an application drives.

Layer: adapters (the floor's facade: no other adapter imports it).

In: the application's calls (listen, connect, request, notify, broadcast,
subscribe and publish, ban, stop).  Out: Deferreds of peers and replies,
and the callbacks it registers.  What a node *decides* lives below it
(``_policy``); what it *holds* per peer, in
:mod:`~blueprint_net._adapters.peers`; how it serves requests, in
:mod:`~blueprint_net._adapters.dispatch`; what its connections report to
and who admits, scores and closes them, in
:mod:`~blueprint_net._adapters.host`; topic gossip and peer records, in
:mod:`~blueprint_net._adapters.gossip`.  This module wires those parts
(:class:`Node.__init__`) and turns the application's calls into theirs.

States: running, then stopping once :meth:`Node.stop` begins (no new
connection is wanted; see ``ConnectionHost``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Optional, Union

import attrs
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import (
    IListeningPort,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from zope.interface import implementer

from blueprint_net._adapters import tls
from blueprint_net._adapters.banstore import log_change
from blueprint_net._adapters.default_reactor import DefaultClock, default_reactor
from blueprint_net._adapters.dialer import ClientEndpoint, Dialer, require_tls
from blueprint_net._adapters.dispatch import Dispatcher, Handler
from blueprint_net._adapters.facade import INode
from blueprint_net._adapters.gossip import Gossip, GossipHandler, Validator
from blueprint_net._adapters.host import ConnectionHost, PeerCallback
from blueprint_net._adapters.keeper import PeerKeeper
from blueprint_net._adapters.limiting_factory import LimitingFactory
from blueprint_net._adapters.peers import Peer, PeerTable, describe
from blueprint_net._adapters.sessions import Session
from blueprint_net._adapters.stream_objects import (
    MessageCallback,
    ResetCallback,
    Stream,
)
from blueprint_net._adapters.streams import StreamHost
from blueprint_net._core import framing, wire
from blueprint_net._core.errors import (
    ErrorCode,
    NotConnected,
    PeerLost,
    PlaintextRefused,
    ProtocolError,
    SendQueueFull,
)
from blueprint_net._core.gossip_outputs import Fault
from blueprint_net._core.gossip_settings import DEFAULTS as GOSSIP_DEFAULTS
from blueprint_net._core.gossip_settings import GossipSettings
from blueprint_net._core.identity import Identity, PeerId, require_peer_id
from blueprint_net._core.session_states import SessionSettings
from blueprint_net._core.stream_states import DEFAULTS as STREAM_DEFAULTS
from blueprint_net._core.stream_states import StreamSettings
from blueprint_net._core.telemetry import REQUESTS_SENT
from blueprint_net._policy import discovery
from blueprint_net._policy.addresses import Target, where
from blueprint_net._policy.bans import Ban, BanRegistry
from blueprint_net._policy.limits import ConnectionLimits
from blueprint_net._policy.resources import MemoryBudget
from blueprint_net._policy.scores import Policy
from blueprint_net._policy.settings import DEFAULTS, Settings

ServerEndpoint = Union[str, IStreamServerEndpoint]

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


async def _outcomes(asked: list[defer.Deferred[Outcome]]) -> dict[PeerId, Outcome]:
    # The caller holds only this coroutine's Deferred and the dict: a
    # DeferredList keeps its whole result list alive as long as it is held.
    outcomes = await defer.gatherResults(asked)
    return {outcome.peer_id: outcome for outcome in outcomes}


@implementer(INode)
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
        streams: StreamSettings = STREAM_DEFAULTS,
    ) -> None:
        # The global reactor is picked on first use, not here: an
        # application may build its nodes before installing its reactor.
        self._reactor = reactor
        self.identity = identity
        self.clock: IReactorTime = (
            clock
            if clock is not None
            else reactor
            if reactor is not None
            else DefaultClock()
        )
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
        self._ports: list[IListeningPort] = []
        self.policy = policy or Policy(BanRegistry(self.clock))
        #: Topic gossip and peer records (see :meth:`subscribe`).
        self.gossip = Gossip(
            identity,
            self.clock,
            gossip,
            self._peers,
            self._charge_gossip,
            forward_queue_limit=settings.max_send_queue // 4,
        )
        #: Durable streams (see :meth:`stream`).
        self.streams = StreamHost(
            self.clock, streams, self._peers, self.memory, self.counters
        )
        #: What every connection reports to: admission, scoring, bans.
        self._host = ConnectionHost(
            identity,
            self.clock,
            settings,
            limits=self.limits,
            policy=self.policy,
            counters=self.counters,
            memory=self.memory,
            peers=self._peers,
            dispatch=self._dispatch,
            gossip=self.gossip,
            gossip_frame=gossip.max_frame(),
            streams=self.streams,
            reactor=lambda: self.reactor,
        )
        self.policy.bans.on_change(log_change)
        self._dialer = Dialer(
            identity,
            settings,
            self._host,
            reactor=lambda: self.reactor,
            peers=self._peers,
            bans=self.policy.bans,
            counters=self.counters,
            gossip=self.gossip,
            scopes=self.dial_scopes,
        )
        self.limiter = self._host.limiter
        self.server_factory = self._host.server_factory
        #: Failed handshakes and refused connections, summarised.
        self.failures = self._host.failures
        self.refusals = self._host.refusals

    @property
    def reactor(self) -> Any:
        """The reactor that does the I/O: the one given, else the global
        one, looked up when first needed."""
        if self._reactor is None:
            self._reactor = default_reactor()
        return self._reactor

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
        return self._host.close_unpermitted()

    # -- the application's side -------------------------------------------

    @property
    def peers(self) -> list[Peer]:
        """Verified peers, one entry per peer id."""
        return [describe(protocol) for protocol in self._peers.protocols()]

    def peer(self, peer_id: PeerId) -> Optional[Peer]:
        protocol = self._peers.get(require_peer_id(peer_id))
        return None if protocol is None else describe(protocol)

    def on_peer_verified(self, callback: PeerCallback) -> None:
        self._host.on_peer_verified(callback)

    def on_peer_lost(self, callback: PeerCallback) -> None:
        self._host.on_peer_lost(callback)

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
        connection = self._peers.get(require_peer_id(peer_id))
        if connection is None:
            if self.gossip.record(peer_id) is not None:
                return defer.ensureDeferred(
                    self._dial_then_request(
                        peer_id, protocol, payload, metadata, timeout
                    )
                )
            return defer.fail(NotConnected(f"no verified connection to {peer_id}"))
        self.counters[REQUESTS_SENT.key_for(protocol)] += 1
        return connection.sender.request(protocol, payload, metadata, timeout)

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
        return self._dialer.dial_record(require_peer_id(peer_id), self.connect)

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

    # -- durable streams ------------------------------------------------------

    def stream(
        self,
        peer_id: PeerId,
        name: bytes,
        on_message: MessageCallback,
        on_reset: Optional[ResetCallback] = None,
    ) -> Stream:
        """The durable stream ``name`` (1 to 255 bytes) with ``peer_id``:
        each message the peer sends on it reaches ``on_message`` exactly
        once and in order, across reconnections, for as long as both nodes
        run; ``on_reset`` gets the :class:`~blueprint_net.errors.StreamReset`
        when the peer resets it, either node restarted, a limit ended it or
        this node stops.  Messages that came before the stream was opened
        here are handed over first (on the next reactor turn).

        A stream does not dial: keep the peer connected (``connect``, a
        kept peer); what is sent meanwhile waits within the window.
        ``ValueError`` if the stream is open already (or a bad name),
        ``TypeError`` for a ``peer_id`` that is not a ``PeerId``.
        """
        if peer_id == self.peer_id:
            raise ValueError("a stream is with another node, not this one")
        return self.streams.open(peer_id, name, on_message, on_reset)

    def session(
        self,
        session_id: bytes,
        parties: Sequence[PeerId],
        addresses: Optional[Mapping[PeerId, ClientEndpoint]] = None,
        settings: Optional[SessionSettings] = None,
    ) -> Session:
        """A party session (``docs/protocol.md`` section 11) named
        ``session_id`` (1 to 255 bytes) among ``parties``, this node's peer
        id among them: its rounds travel on one durable stream with each
        other party.  The party index is the rank of a party's public key in
        bytewise order (``Session.index``, ``Session.parties``).  Each party
        in ``addresses`` is kept connected (a :class:`PeerKeeper` each,
        stopped by ``Session.close``); the others must be connected by the
        caller.  ``ValueError`` for a list no session can have."""
        keepers = [
            PeerKeeper(self, peer, endpoint)
            for peer, endpoint in (addresses or {}).items()
            if peer != self.peer_id
        ]
        session = Session(
            self.identity,
            self.clock,
            self.stream,
            session_id,
            parties,
            settings,
            keepers,
            self._host.charge_session,
        )
        for keeper in keepers:
            keeper.startService()
        return session

    def _charge_gossip(self, peer_id: PeerId, fault: Fault) -> None:
        # The router's adapter is built before the host it reports to.
        self._host.charge_gossip(peer_id, fault)

    def notify(
        self,
        peer_id: PeerId,
        protocol: str,
        payload: bytes,
        metadata: Optional[bytes] = None,
    ) -> None:
        """Send a request that wants no response (fire and forget); raises
        NotConnected, PeerLost (the connection is closing) or SendQueueFull."""
        connection = self._peers.get(require_peer_id(peer_id))
        if connection is None:
            raise NotConnected(f"no verified connection to {peer_id}")
        connection.sender.notify(protocol, payload, metadata)
        self.counters[REQUESTS_SENT.key_for(protocol)] += 1

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
        frame = framing.frame(
            wire.Request(wire.NO_RESPONSE, protocol, payload, metadata)
        )
        sent = []
        for peer_id in list(self._peers if peers is None else peers):
            connection = self._peers.get(peer_id)
            if connection is None:
                continue
            try:
                connection.sender.send_frame(frame)
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
        if sent:  # what each peer's "requests out" counts too
            self.counters[REQUESTS_SENT.key_for(protocol)] += len(sent)
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
        return self._host.listening_factory()

    def dial_factory(self, peer_id: PeerId) -> LimitingFactory:
        """A factory that dials ``peer_id`` and nobody else, for a
        ``ClientService`` that keeps the peer connected.

        It builds nothing (the attempt ends before any handshake) while the
        node already has that peer, which it may have by the peer's own dial:
        a second connection would only be closed as a duplicate.
        """
        return self._host.dial_factory(require_peer_id(peer_id))

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
        self._log.info("listening on {address}", address=where(port.getHost()))
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
        peer is returned without dialing.  ``peer_id`` is a
        :class:`~blueprint_net.PeerId`; its text form is refused with a
        ``TypeError`` here, at the call (``PeerId.from_string`` parses it).
        """
        if peer_id is not None:
            require_peer_id(peer_id)
        return defer.ensureDeferred(self._dialer.connect(endpoint, peer_id))

    def disconnect(
        self, peer_id: PeerId, error: Optional[ProtocolError] = None
    ) -> defer.Deferred[None]:
        """Say goodbye to one peer (``error``, by default
        ``Error{GOING_AWAY}``) and close; fires once closed.  Close through
        this (or :meth:`stop`), not the transport: a connection is its
        transport's producer, and TLS will not close a transport whose
        producer is still registered."""
        protocol = self._peers.get(require_peer_id(peer_id))
        if protocol is None:
            return defer.succeed(None)
        if error is None:
            error = ProtocolError(ErrorCode.GOING_AWAY, "closed by the application")
        protocol.close(error)
        return protocol.closed

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` has begun: no new connection is wanted."""
        return self._host.stopping

    def stop(self) -> defer.Deferred[None]:
        """Stop listening, say goodbye to every peer, wait for them to close."""
        return defer.ensureDeferred(self._stop())

    async def _stop(self) -> None:
        self._host.begin_stop()
        self.gossip.stop()
        self.streams.stop()
        ports, self._ports = self._ports, []
        await defer.gatherResults(
            [defer.maybeDeferred(port.stopListening) for port in ports]
        )
        await self._host.close_all(CLOSE_GRACE)

    # -- IService -----------------------------------------------------------

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        return self.stop()
