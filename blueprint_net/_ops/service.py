"""A node as a service: listeners, kept peers, status page and ban database.

Layer: ops (the operator surface).

``twistd -n blueprint`` builds one of these (``tap.py``); an application may
build one too.  Its parts stop in the order that keeps every peer informed and
every ban on disk: stop accepting, say goodbye to each peer, stop redialing,
then close the ban database once its writes are committed.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from typing import Any, Optional

from twisted.application.internet import ClientService, TimerService, backoffPolicy
from twisted.application.service import MultiService, Service
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger
from twisted.web.server import Site

from blueprint_net._adapters import tls
from blueprint_net._adapters.banstore import SqliteBanStore
from blueprint_net._adapters.connections import ConnectionManager
from blueprint_net._adapters.node import Node, require_tls
from blueprint_net._core.identity import PeerId
from blueprint_net._ops.status import StatusPage
from blueprint_net._policy.discovery import DEFAULTS as DISCOVERY
from blueprint_net._policy.discovery import DiscoverySettings

#: How often the ban database is checked for another process's changes (s):
#: an operator's ban applies within this plus one write (well under 2 s).
BAN_REFRESH_INTERVAL = 1.0


class ListenService(Service):
    """Listens on one endpoint description with one factory; a port that
    cannot be bound fails start-up (as ``strports.service`` does), and the
    bound port is public, for the status page and tests."""

    _log = Logger()

    def __init__(self, endpoint: IStreamServerEndpoint, factory: Any) -> None:
        self.endpoint, self.factory = endpoint, factory
        self.port: Optional[Any] = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()  # type: ignore[no-untyped-call]
        failed: list[Any] = []
        listening = self.endpoint.listen(self.factory)
        listening.addCallbacks(self._listening, failed.append)
        if failed:
            failed[0].raiseException()

    def _listening(self, port: Any) -> None:
        self.port = port
        self._log.info("listening on {address}", address=port.getHost())

    def startService(self) -> None:
        if self.port is None:
            self.privilegedStartService()
        super().startService()  # type: ignore[no-untyped-call]

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        port, self.port = self.port, None
        return defer.maybeDeferred(port.stopListening) if port else defer.succeed(None)


class NodeService(MultiService):
    """A node, listening, keeping peers connected, reporting its status.

    ``store`` is the ban database of the node's registry (None when its bans
    are kept in memory only): refreshed every few seconds, closed last.
    """

    _log = Logger()

    def __init__(
        self,
        node: Node,
        store: Optional[SqliteBanStore],
        *,
        listen: list[str],
        peers: list[tuple[PeerId, str]],
        status: Optional[str],
        discovery: DiscoverySettings = DISCOVERY,
        bootstrap: Sequence[str] = (),
        advertise: Optional[Sequence[str]] = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.node, self.store = node, store
        for description in [*listen, *(e for _, e in peers), *bootstrap]:
            require_tls(description, node.settings)  # PlaintextRefused
        self.listeners = [
            ListenService(
                tls.server_endpoint(node.reactor, description, node.identity),
                node.listening_factory(),
            )
            for description in listen
        ]
        self.keepers = [
            ClientService(
                tls.client_endpoint(node.reactor, endpoint, node.identity, peer_id),
                node.dial_factory(peer_id),
                retryPolicy=backoffPolicy(initialDelay=0.5, maxDelay=30.0),
                clock=node.reactor,
            )
            for peer_id, endpoint in peers
        ]
        self.status: Optional[ListenService] = None
        if status is not None:
            page = Site(StatusPage(node, self.listening))  # type: ignore[no-untyped-call]
            page.noisy = False  # no "Starting factory" lines for each request
            endpoint = serverFromString(node.reactor, status)  # type: ignore[no-untyped-call]
            self.status = ListenService(endpoint, page)
        #: Discovery and the outbound target (``--target-peers``, ``--bootstrap``).
        self.manager = ConnectionManager(
            node,
            discovery,
            bootstrap=bootstrap,
            advertise=advertise,
            listening=self.bound,
        )
        self.refresher = TimerService(BAN_REFRESH_INTERVAL, self._refresh_bans)  # type: ignore[no-untyped-call]
        self.refresher.clock = node.reactor
        for child in (
            *self.listeners,
            *([self.status] if self.status else []),
            *self.keepers,
            self.manager,
            self.refresher,
        ):
            child.setServiceParent(self)  # type: ignore[no-untyped-call]

    def listening(self) -> list[str]:
        """Where the node accepts peers, for the status page."""
        return [
            f"{listener.port.getHost().host}:{listener.port.getHost().port}"
            for listener in self.listeners
            if listener.port is not None
        ]

    def bound(self) -> list[tuple[str, int]]:
        """(host, port) of each listener, for our peer record."""
        hosts = [
            listener.port.getHost() for listener in self.listeners if listener.port
        ]
        return [(address.host, address.port) for address in hosts]

    def _refresh_bans(self) -> defer.Deferred[int]:
        if self.store is None:
            return defer.succeed(0)
        return self.store.refresh().addErrback(self._refresh_failed)

    def _refresh_failed(self, failure: Any) -> int:
        self._log.failure("could not read the ban database", failure)
        return 0

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        # What exists now (modules, classes, the node and its settings) lives
        # as long as the process: frozen, it leaves the collector's
        # generations, so a full pass no longer walks it.  Measured with
        # ``python -m bench.gc``: the longest pause in the pipelined request
        # run fell from ~12-40 ms to under 5 ms; throughput within noise.
        gc.collect()
        gc.freeze()

    def stopService(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._stop())

    async def _stop(self) -> None:
        Service.stopService(self)  # type: ignore[no-untyped-call]
        accepting = [*self.listeners, *([self.status] if self.status else [])]
        await defer.gatherResults(
            [defer.maybeDeferred(s.stopService) for s in accepting]
        )
        await self.refresher.stopService()  # type: ignore[no-untyped-call]
        await self.manager.stopService()
        await self.node.stop()  # a goodbye to every peer; pending requests fail
        await defer.gatherResults([k.stopService() for k in self.keepers])
        if self.store is not None:
            await self.store.close()
