"""Dialing: an endpoint, an endpoint description or a peer's signed record
in, a verified peer (or the reason there is none) out.

Layer: adapters (Twisted).  ``Node.connect`` and ``Node.dial_record`` are
this module's calls; the connections it makes belong to the node's
``ConnectionHost`` like any other.

In: a ``connect`` (an endpoint object, or a description made into a TLS
endpoint unless plaintext is opted into) with the peer id expected, if any;
a ``dial_record`` of a peer id whose record the node holds.

Out: a Deferred of the :class:`~blueprint_net._adapters.peers.Peer` once its
handshake verified it, or the error a caller can act on: ``Refused``
(banned, or the node's own limits), ``PlaintextRefused``, ``HandshakeError``
(with the peer's or our reason), ``ConnectFailed`` (the transport's error
as its cause), ``NotConnected`` (a record with no address we may dial).

States: one record dial at a time per peer id; callers that ask while it
runs wait for its result, each on a Deferred of its own.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Optional, Union

from twisted.internet import defer
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.python.failure import Failure

from blueprint_net._adapters import tls
from blueprint_net._adapters.gossip import Gossip
from blueprint_net._adapters.host import ConnectionHost
from blueprint_net._adapters.peers import Peer, PeerTable, describe
from blueprint_net._adapters.protocol import PeerProtocol
from blueprint_net._core.errors import (
    ConnectFailed,
    ErrorCode,
    HandshakeError,
    NotConnected,
    PlaintextRefused,
    ProtocolError,
    Refused,
)
from blueprint_net._core.identity import Identity, PeerId
from blueprint_net._core.telemetry import CONNECTIONS_REFUSED
from blueprint_net._policy import discovery
from blueprint_net._policy.bans import BanRegistry
from blueprint_net._policy.settings import PLAINTEXT_REFUSED, Settings

ClientEndpoint = Union[str, IStreamClientEndpoint]


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


def _relay(result: Any, waiting: defer.Deferred[Any]) -> None:
    """Pass a shared dial's result on to one waiter."""
    if isinstance(result, Failure):
        waiting.errback(result)
    else:
        waiting.callback(result)


class Dialer:
    """A node's outbound dials; see the module.

    ``reactor`` is asked for only when a description is dialed (so building
    a node picks no reactor); ``scopes`` says which addresses of a record
    may be dialed now (it depends on where the node listens).
    """

    def __init__(
        self,
        identity: Identity,
        settings: Settings,
        host: ConnectionHost,
        *,
        reactor: Callable[[], Any],
        peers: PeerTable,
        bans: BanRegistry,
        counters: Counter[str],
        gossip: Gossip,
        scopes: Callable[[], frozenset[discovery.Scope]],
    ) -> None:
        self.identity, self.settings, self.host = identity, settings, host
        self._reactor, self._scopes = reactor, scopes
        self.peers, self.bans, self.counters = peers, bans, counters
        self.gossip = gossip
        #: Dials of peers known by their records, by id (one at a time
        #: each): who waits for each.
        self._record_dials: dict[PeerId, list[defer.Deferred[Peer]]] = {}

    def _peer(self, peer_id: PeerId) -> Optional[Peer]:
        protocol = self.peers.get(peer_id)
        return None if protocol is None else describe(protocol)

    async def connect(
        self, endpoint: ClientEndpoint, peer_id: Optional[PeerId]
    ) -> Peer:
        """See ``Node.connect``."""
        if peer_id is not None:
            existing = self._peer(peer_id)
            if existing is not None:
                return existing
            if self.bans.peer_ban(peer_id) is not None:
                self.counters[CONNECTIONS_REFUSED.key_for("banned")] += 1
                raise Refused(f"{peer_id} is banned")
        if isinstance(endpoint, str):
            require_tls(endpoint, self.settings)
            endpoint = tls.client_endpoint(
                self._reactor(), endpoint, self.identity, peer_id
            )
        factory = self.host.connect_factory(peer_id)
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
        except HandshakeError as error:
            if protocol.refused_plaintext:  # an endpoint object, not TLS
                raise PlaintextRefused(f"cannot connect: {PLAINTEXT_REFUSED}") from None
            explained = tls.explain(error.reason, self.identity.peer_id)
            if explained is not error.reason:  # OpenSSL's words, made plain
                raise HandshakeError(explained) from error
            raise
        peer = self._peer(verified_id)
        if peer is None:  # verified, then lost before we got here
            raise HandshakeError(
                ProtocolError(ErrorCode.GOING_AWAY, "peer left at once")
            )
        return peer

    def dial_record(
        self,
        peer_id: PeerId,
        connect: Callable[[str, PeerId], defer.Deferred[Peer]],
    ) -> defer.Deferred[Peer]:
        """Dial ``peer_id`` at the addresses of its signed record, in order,
        each with ``connect``; see ``Node.dial_record``."""
        mine: defer.Deferred[Peer] = defer.Deferred()
        waiting = self._record_dials.get(peer_id)
        if waiting is not None:
            waiting.append(mine)
            return mine
        self._record_dials[peer_id] = [mine]
        dialing = defer.ensureDeferred(self._dial_record(peer_id, connect))
        dialing.addBoth(self._record_dialed, peer_id)
        return mine

    def _record_dialed(self, result: object, peer_id: PeerId) -> None:
        # Each caller has its own Deferred: one caller's callbacks (or its
        # unhandled failure) are not another's.
        for waiting in self._record_dials.pop(peer_id):
            _relay(result, waiting)

    async def _dial_record(
        self,
        peer_id: PeerId,
        connect: Callable[[str, PeerId], defer.Deferred[Peer]],
    ) -> Peer:
        record = self.gossip.record(peer_id)
        targets = (
            [] if record is None else discovery.dial_targets(record, self._scopes())
        )
        if not targets:
            raise NotConnected(f"no verified connection to {peer_id}, no address")
        failure: Optional[Exception] = None
        for host, port in targets:
            try:
                return await connect(discovery.description(host, port), peer_id)
            except ConnectFailed as error:
                failure = error
        assert failure is not None
        raise failure
