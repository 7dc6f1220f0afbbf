"""The connection host: what every ``PeerProtocol`` of a node reports to, and
who decides what becomes of its connection.

Layer: adapters (Twisted).  ``Node`` is the public API and composes one
:class:`ConnectionHost`; nothing here imports the facade.

In: the ``IConnectionHost`` calls of each connection (opened, proven,
verified, failed, closed, a request, a gossip or stream frame), new bans from the
registry, gossip faults from the router's adapter.

Out: admission (``authorize``: bans, permissioned mode, connections per
peer), the duplicate rule applied through the peer table (the loser closed
with ``DUPLICATE_CONNECTION``), closes of what a ban or the allow-list no
longer covers, misbehaviour charged to the policy (the address always, the
peer id only over a channel-bound link), counters and summary lines, the
keepalive of verified connections, the node's ``on_peer_verified`` /
``on_peer_lost`` callbacks, requests handed to the dispatcher (in fair
shares of handler time, ``fair_dispatch``), gossip to
the router's adapter and stream frames (and the kept connection's changes)
to the streams' (``_adapters/streams.py``); and the factories a node
listens and dials with.

States: *running* until :meth:`begin_stop`, then *stopping*: a connection
still verified is not watched by the keepalive, its requests are answered
``SHUTTING_DOWN``, its gossip is dropped, and a kept dial builds nothing.
:meth:`close_all` then closes what is open.

A connection that reaches this very node (a ``--peer`` naming our own
address) fails its handshake with ``SELF_CONNECTION`` at both ends;
:class:`SelfConnections` (``self_connection``) recognises both halves, and
neither is scored or summarised as a failed handshake.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from blueprint_net._adapters import tls
from blueprint_net._adapters.dispatch import Dispatcher
from blueprint_net._adapters.factory import PeerFactory
from blueprint_net._adapters.fair_dispatch import FairDispatch
from blueprint_net._adapters.gossip import Gossip
from blueprint_net._adapters.keepalive import Keepalive
from blueprint_net._adapters.limiting_factory import LimitingFactory
from blueprint_net._adapters.peers import Peer, PeerTable, describe
from blueprint_net._adapters.protocol import IConnectionHost, PeerProtocol
from blueprint_net._adapters.self_connection import SelfConnections
from blueprint_net._adapters.streams import StreamHost
from blueprint_net._adapters.summary import EventSummary
from blueprint_net._core import untrusted, wire
from blueprint_net._core.connection_events import ConnectionFailed, GossipReceived
from blueprint_net._core.errors import (
    ErrorCode,
    HandshakeFailed,
    ProtocolError,
    SessionViolation,
)
from blueprint_net._core.gossip_outputs import Fault
from blueprint_net._core.identity import Identity, PeerId
from blueprint_net._core.telemetry import (
    BANS_IMPOSED,
    CONNECTIONS_CLOSED,
    CONNECTIONS_REFUSED,
    GOSSIP_FAULT_CHARGES,
    HANDSHAKE_FAILURES,
    HANDSHAKES,
    MISBEHAVIOURS,
    PEER_REPLACEMENTS,
    SESSION_VIOLATION_CHARGES,
    TLS_FAILURES,
    WRONG_PROTOCOL,
)
from blueprint_net._policy.bans import Ban
from blueprint_net._policy.gossip_faults import fault_code
from blueprint_net._policy.limits import (
    ConnectionLimiter,
    ConnectionLimits,
    TokenBucket,
)
from blueprint_net._policy.resources import MemoryBudget
from blueprint_net._policy.scores import Policy
from blueprint_net._policy.session_faults import violation_rule
from blueprint_net._policy.settings import Settings

PeerCallback = Callable[[Peer], Any]


class _KeepFactory(PeerFactory):
    """Dials one peer for a ``ClientService``; see
    :meth:`ConnectionHost.dial_factory`."""

    def __init__(self, host: ConnectionHost, peer_id: PeerId) -> None:
        super().__init__(
            host,
            host.identity,
            host.clock,
            host.settings,
            initiator=True,
            expected_peer=peer_id,
            waited_on=False,
            memory=host.memory,
        )
        self.owner, self.peer_id = host, peer_id

    def buildProtocol(self, addr: Optional[IAddress]) -> Any:
        owner = self.owner
        if owner.stopping or owner.peers.get(self.peer_id) is not None:
            return None
        return super().buildProtocol(addr)


@implementer(IConnectionHost)
class ConnectionHost:
    """The ``IConnectionHost`` of one node; see the module."""

    _log = Logger()

    def __init__(
        self,
        identity: Identity,
        clock: IReactorTime,
        settings: Settings,
        *,
        limits: ConnectionLimits,
        policy: Policy,
        counters: Counter[str],
        memory: MemoryBudget,
        peers: PeerTable,
        dispatch: Dispatcher,
        gossip: Gossip,
        gossip_frame: int,
        streams: Optional[StreamHost] = None,
        reactor: Optional[Callable[[], IReactorTime]] = None,
    ) -> None:
        self.identity, self.clock, self.settings = identity, clock, settings
        self.limits, self.policy, self.counters = limits, policy, counters
        self.memory, self.peers, self.gossip = memory, peers, gossip
        self._dispatch = dispatch
        #: Requests run in fair shares of handler time, turn by turn of
        #: ``reactor`` (the clock's, unless given).
        self.fair = FairDispatch(
            reactor or (lambda: clock), self._serve, peers=peers.__len__
        )
        #: Durable streams (None: stream frames are unknown types).
        self.streams = streams
        #: Largest gossip frame a verified peer may send us.
        self._gossip_frame = gossip_frame
        self.stopping = False
        #: One timer pings every quiet peer, not one per connection.
        self._keepalive = Keepalive(clock, settings.keepalive_interval)
        self._on_verified: list[PeerCallback] = []
        self._on_lost: list[PeerCallback] = []
        #: Failed handshakes and refused connections: a line per minute
        #: with a count per reason, never a line each (a flood's volume).
        self.failures = EventSummary(clock, "failed handshakes")
        self.refusals = EventSummary(clock, "refused connections")
        #: Recognises a connection that reached this very node.
        self.self_connections = SelfConnections(
            clock, settings.handshake_timeout, self._log
        )
        self.limiter = ConnectionLimiter(
            limits, clock, refuse_address=policy.refuse_address, counters=counters
        )
        self.server_factory = PeerFactory(
            self, identity, clock, settings, initiator=False, memory=memory
        )
        policy.bans.on_ban(self._banned)

    def on_peer_verified(self, callback: PeerCallback) -> None:
        self._on_verified.append(callback)

    def on_peer_lost(self, callback: PeerCallback) -> None:
        self._on_lost.append(callback)

    # -- the factories ------------------------------------------------------

    def listening_factory(self) -> LimitingFactory:
        """The factory to listen with: the node's, behind its limits."""
        return LimitingFactory(
            self.server_factory, self.limiter, inbound=True, summary=self.refusals
        )

    def connect_factory(self, peer_id: Optional[PeerId]) -> LimitingFactory:
        """A factory for one dial (``peer_id``: whom it must reach, if
        known); whoever dials awaits its protocol's ``verified``."""
        dial = PeerFactory(
            self,
            self.identity,
            self.clock,
            self.settings,
            initiator=True,
            expected_peer=peer_id,
            memory=self.memory,
        )
        return LimitingFactory(dial, self.limiter, inbound=False, summary=self.refusals)

    def dial_factory(self, peer_id: PeerId) -> LimitingFactory:
        """A factory that dials ``peer_id`` and nobody else, for a
        ``ClientService`` (see ``Node.dial_factory``)."""
        dial = _KeepFactory(self, peer_id)
        return LimitingFactory(dial, self.limiter, inbound=False, summary=self.refusals)

    # -- stopping -----------------------------------------------------------

    def begin_stop(self) -> None:
        """The node is stopping: see the module's states."""
        self.stopping = True
        self._keepalive.stop()
        self.fair.stop()

    async def close_all(self, grace: float) -> None:
        """Say goodbye to every open connection and wait for them to close;
        abort what has not closed ``grace`` seconds later (a peer that
        stopped reading would otherwise hold its connection open)."""
        closing = []
        for protocol in list(self.peers.open):
            protocol.close(ProtocolError(ErrorCode.GOING_AWAY, "node stopping"))
            closing.append(protocol.closed)
        if closing:
            abort = self.clock.callLater(grace, self._abort_open)
            await defer.gatherResults(closing)
            if abort.active():
                abort.cancel()
        self.failures.flush()
        self.refusals.flush()

    def _abort_open(self) -> None:
        for protocol in list(self.peers.open):
            protocol.transport.abortConnection()  # type: ignore[union-attr]

    # -- admission ------------------------------------------------------------

    def authorize(self, peer_id: PeerId) -> None:
        """A peer proved its id: the policy (bans, permissioned mode) and the
        per-peer limit may still refuse it."""
        self.policy.authorize(peer_id)
        if self.peers.connections_of(peer_id) >= self.limits.max_per_peer:
            self.counters[CONNECTIONS_REFUSED.key_for("peer")] += 1
            raise HandshakeFailed(
                ErrorCode.CONNECTION_LIMIT, "too many connections from this peer"
            )

    def close_unpermitted(self) -> int:
        """Close (``NOT_ALLOWED``) every connection whose peer the policy's
        allow-list no longer holds; how many closed."""
        permitted = self.policy.permitted
        if permitted is None:
            return 0
        gone = "no longer on the allow-list"
        return sum(
            protocol.close(HandshakeFailed(ErrorCode.NOT_ALLOWED, gone))
            for protocol in list(self.peers.open)
            if protocol.peer_id is not None and protocol.peer_id not in permitted
        )

    def _banned(self, ban: Ban) -> None:
        """A new ban: close every connection it covers, now."""
        self.counters[BANS_IMPOSED.key_for(ban.origin.value)] += 1
        target, bans = ban.target, self.policy.bans
        for protocol in list(self.peers.open):
            if isinstance(target, PeerId):
                covered = protocol.peer_id == target
            else:
                host = getattr(protocol.address, "host", None)
                covered = host is not None and bans.address_ban(host) is ban
            if covered:
                protocol.close(HandshakeFailed(ErrorCode.BANNED, "banned"))

    # -- a connection's life ------------------------------------------------

    def connection_opened(self, protocol: PeerProtocol) -> None:
        self.peers.opened(protocol)
        protocol.cap_gossip(self._gossip_frame)
        if self.streams is not None:
            protocol.connection.streams = True
        if protocol.initiator:
            self.self_connections.remember_own_end(protocol)

    def peer_verified(self, protocol: PeerProtocol) -> None:
        """Every verified connection comes here, however the duplicate rule
        then decides: each is counted (``handshakes.ok``) and spends its peer
        id's one budget.  The callbacks follow the peer id, not the
        connection: ``on_peer_verified`` fires when the id becomes connected;
        a replacement (the duplicate rule kept the new connection) fires
        nothing, since the peer was never lost, and is counted as
        ``peers.replaced``."""
        self.counters[HANDSHAKES.key] += 1
        outcome = self.peers.verified(protocol, self._new_budget)
        if outcome.dropped is not None:
            if outcome.replaced:
                self.counters[PEER_REPLACEMENTS.key] += 1
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
        if not self.stopping:
            self._keepalive.watch(protocol.liveness)
        if outcome.new:
            self.gossip.peer_connected(protocol)
        elif outcome.replaced:
            self.gossip.link_replaced(protocol)
        if self.streams is not None and (outcome.new or outcome.replaced):
            self.streams.link_changed(protocol.peer_id)  # type: ignore[arg-type]
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
        verified = protocol.verified_at is not None
        if verified:
            self.counters[CONNECTIONS_CLOSED.key_for(code.name)] += 1
        else:
            self.counters[HANDSHAKE_FAILURES.key_for(code.name)] += 1
        if code is ErrorCode.SELF_CONNECTION and self.self_connections.reached_self(
            protocol
        ):
            return
        if not verified:
            self.failures.record(
                code.name,
                "handshake with {address} failed: {code_name}: {message}",
                address=protocol.where,
                code_name=code.name,
                message=untrusted.quote(event.error.message),
                claimed=str(protocol.claimed_peer),
                misbehaviour=int(event.misbehaviour),
            )
        if event.misbehaviour:
            self._misbehaved(protocol, code)

    def _tls_failed(self, protocol: PeerProtocol, error: BaseException) -> None:
        """A TLS handshake that failed: counted by reason, and (bounded by
        the summary) logged in words at info: a wrong peer id is an
        operator's mistake on one side or the other."""
        failed = tls.handshake_failure(error, self.identity.peer_id)
        if failed is None:
            return
        kind, why = failed
        self.counters[TLS_FAILURES.key_for(kind)] += 1
        self.failures.record(
            f"TLS {kind}",
            "TLS handshake with {address} failed: {why}",
            notable=kind != "other",
            address=protocol.where,
            why=why,
            direction="outbound" if protocol.initiator else "inbound",
        )

    def _wrong_protocol(self, protocol: PeerProtocol, kind: str) -> None:
        """An HTTP or TLS client at a plain peer port: answered with a hint
        by the protocol; counted here, never scored."""
        self.counters[WRONG_PROTOCOL.key_for(kind)] += 1
        self.failures.record(
            f"wrong protocol ({kind})",
            "{kind} client at the peer port from {address}; sent a hint",
            kind=kind,
            address=protocol.where,
        )

    def connection_closed(self, protocol: PeerProtocol, reason: Failure) -> None:
        self._keepalive.forget(protocol.liveness)
        if self.streams is not None:
            self.streams.connection_closed(protocol)
        if not self.peers.closed(protocol):
            if protocol.verified_at is None and reason.value is not None:
                self._tls_failed(protocol, reason.value)
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
        self.fair.submit(protocol, request)

    def _serve(
        self, peer_id: PeerId, protocol: PeerProtocol, request: wire.Request
    ) -> None:
        """Run one request from ``protocol``'s verified peer ``peer_id``, in
        its turn (see :attr:`fair`)."""
        self._dispatch.serve(
            request,
            peer_id,
            protocol.respond,
            budget=self.peers.budget(peer_id),
            stopping=self.stopping,
        )

    def gossip_received(self, protocol: PeerProtocol, event: GossipReceived) -> None:
        """Gossip is taken from the connection kept for its peer only: one
        the duplicate rule closed may still hold messages older than those
        the peer repeats on the kept one (docs/protocol.md 9.5), such as a
        subscription it has since left.  (Not ``connection.closed``: a read
        that ends with the peer's goodbye sets it before the read's earlier
        messages are handed out, and those count.)"""
        peer_id = protocol.peer_id
        assert peer_id is not None
        if not self.stopping and self.peers.get(peer_id) is protocol:
            self.gossip.received(protocol, event.message, event.body)

    def stream_received(self, protocol: PeerProtocol, bodies: list[bytes]) -> None:
        if not self.stopping and self.streams is not None:
            self.streams.received(protocol, bodies)

    def _call(self, callback: PeerCallback, peer: Peer) -> None:
        try:
            callback(peer)
        except Exception:
            self._log.failure("peer callback {callback!r} raised", callback=callback)

    # -- misbehaviour -------------------------------------------------------

    def charge_gossip(self, peer_id: PeerId, fault: Fault) -> None:
        """Score a peer's gossip fault as a connection's failure is scored."""
        protocol = self.peers.get(peer_id)
        if protocol is None:
            return
        self.counters[GOSSIP_FAULT_CHARGES.key_for(fault.value)] += 1
        self._misbehaved(protocol, fault_code(fault))

    def charge_session(self, peer_id: PeerId, violation: SessionViolation) -> None:
        """Score a rule a party broke in a session (its message came on its
        authenticated stream) as a connection's failure is scored."""
        protocol = self.peers.get(peer_id)
        if protocol is None:
            return
        rule, code = violation_rule(violation)
        self.counters[SESSION_VIOLATION_CHARGES.key_for(rule)] += 1
        if code is not None:  # else: an honest party may have caused it
            self._misbehaved(protocol, code)

    def _misbehaved(self, protocol: PeerProtocol, code: ErrorCode) -> None:
        """Charge what ``protocol``'s peer provably did: its address always;
        its peer id only when proven *and* the link's channel binding ties
        the proof to every later byte (TLS 1.3).  On a plain link a relay can
        forward an honest peer's handshake, then send garbage in its name."""
        self.counters[MISBEHAVIOURS.key] += 1
        host = getattr(protocol.address, "host", None)
        peer_id = protocol.peer_id if protocol.channel_bound else None
        self.policy.misbehaved(host, peer_id, code)
