"""A node as a service: listeners, kept peers, status page and ban database.

Layer: ops (the operator surface).

``twistd -n blueprint`` builds one of these (``tap.py``); an application may
build one too.  Its parts stop in the order that keeps every peer informed and
every ban on disk: stop accepting, stop redialing, say goodbye to each peer,
then close the ban database once its writes are committed.
"""

from __future__ import annotations

import gc
import os
import signal
from collections.abc import Sequence
from typing import Any, Optional

from twisted.application.internet import TimerService
from twisted.application.service import MultiService, Service
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger

from blueprint_net._adapters import tls
from blueprint_net._adapters.banstore import SqliteBanStore
from blueprint_net._adapters.connection_manager import ConnectionManager
from blueprint_net._adapters.dialer import require_tls
from blueprint_net._adapters.keeper import PeerKeeper
from blueprint_net._adapters.mdns import MdnsService
from blueprint_net._adapters.node import Node
from blueprint_net._core.errors import ConfigurationError
from blueprint_net._core.identity import PeerId
from blueprint_net._ops.notify import notify
from blueprint_net._ops.permit_file import PermitSources
from blueprint_net._ops.status import StatusPage, StatusSite
from blueprint_net._ops.topic_log import TopicLog
from blueprint_net._policy.addresses import where
from blueprint_net._policy.discovery import DEFAULTS as DISCOVERY
from blueprint_net._policy.discovery import DiscoverySettings
from blueprint_net._policy.mdns import MdnsSettings

#: How often the ban database is checked for another process's changes (s):
#: an operator's ban applies within this plus one write (well under 2 s).
BAN_REFRESH_INTERVAL = 1.0


class ListenError(ConfigurationError):
    """A port that cannot be bound: one line naming the option and address."""


class ListenService(Service):
    """Listens on one endpoint description with one factory; a port that
    cannot be bound fails start-up with :class:`ListenError` naming
    ``option`` (``--listen``, ``--status``), and the bound port is public,
    for the status page and tests."""

    _log = Logger()

    def __init__(
        self,
        endpoint: IStreamServerEndpoint,
        factory: Any,
        *,
        option: str = "--listen",
        description: str = "",
    ) -> None:
        self.endpoint, self.factory = endpoint, factory
        self.option, self.description = option, description
        self.port: Optional[Any] = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()  # type: ignore[no-untyped-call]
        if self.port is not None:
            return  # bound early (NodeService.bind)
        failed: list[Any] = []
        listening = self.endpoint.listen(self.factory)
        listening.addCallbacks(self._listening, failed.append)
        if failed:
            error = failed[0].value
            if isinstance(error, CannotListenError):
                why = getattr(error.socketError, "strerror", None) or error.socketError
                at = f"{error.interface or '*'}:{error.port}"
                raise ListenError(
                    f"{self.option} {self.description}: cannot listen on {at}:"
                    f" {str(why).lower()}"
                )
            failed[0].raiseException()

    def _listening(self, port: Any) -> None:
        self.port = port
        address = where(port.getHost())
        if self.option == "--status":
            self._log.info("status page on http://{address}/", address=address)
        else:
            self._log.info(
                "listening for peers on {address} ({transport})",
                address=address,
                transport=transport(self.description),
            )

    def startService(self) -> None:
        if self.port is None:
            self.privilegedStartService()
        super().startService()  # type: ignore[no-untyped-call]

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        port, self.port = self.port, None
        return defer.maybeDeferred(port.stopListening) if port else defer.succeed(None)


def transport(description: str) -> str:
    """How a listener's peers are carried, for the log and status page."""
    if not tls.is_tls(description):
        return "plaintext"
    return "TLS, " + description.partition(":")[0]


class NodeService(MultiService):
    """A node, listening, keeping peers connected, reporting its status.

    ``store`` is the ban database of the node's registry (None when its bans
    are kept in memory only): refreshed every few seconds, closed last.
    ``permits``, the allow-list's sources, are refreshed with it.  With
    ``sighup``, SIGHUP reloads what can be reloaded (:meth:`reload`) instead
    of ending the process.  With ``ready``, a service manager that asked for
    it (``$NOTIFY_SOCKET``) hears ``READY=1`` once every listener is bound.
    ``topic_log``, where the node's topics' messages go, is reopened by
    :meth:`reload` (after a log rotation) and closed last.
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
        permits: Optional[PermitSources] = None,
        topic_log: Optional[TopicLog] = None,
        sighup: bool = False,
        ready: bool = False,
        discovery: DiscoverySettings = DISCOVERY,
        bootstrap: Sequence[str] = (),
        advertise: Optional[Sequence[str]] = None,
        mdns: Optional[MdnsSettings] = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.node, self.store = node, store
        for description in [*listen, *(e for _, e in peers), *bootstrap]:
            require_tls(description, node.settings)  # PlaintextRefused
        self.permits, self.sighup, self.ready = permits, sighup, ready
        self.topic_log = topic_log
        self._previous_sighup: Any = None
        self.listeners = [
            ListenService(
                tls.server_endpoint(node.reactor, description, node.identity),
                node.listening_factory(),
                description=description,
            )
            for description in listen
        ]
        self.keepers = [
            PeerKeeper(
                node,
                peer_id,
                tls.client_endpoint(node.reactor, endpoint, node.identity, peer_id),
                address=endpoint,
            )
            for peer_id, endpoint in peers
        ]
        self.status: Optional[ListenService] = None
        if status is not None:
            resource = StatusPage(
                node,
                self.listening,
                listen=listen,
                kept=lambda: [keeper.describe() for keeper in self.keepers],
            )
            page = StatusSite(resource)
            endpoint = serverFromString(node.reactor, status)  # type: ignore[no-untyped-call]
            self.status = ListenService(
                endpoint, page, option="--status", description=status
            )
        #: Discovery and the outbound target (``--target-peers``, ``--bootstrap``).
        self.manager = ConnectionManager(
            node,
            discovery,
            bootstrap=bootstrap,
            advertise=advertise,
            listening=self.bound,
        )
        #: LAN discovery (``--mdns``), after the manager: it announces the
        #: record the manager signs.
        self.mdns: Optional[MdnsService] = None
        if mdns is not None:
            self.mdns = MdnsService(node, mdns, reactor=node.reactor)
        self.refresher = TimerService(BAN_REFRESH_INTERVAL, self._refresh_bans)  # type: ignore[no-untyped-call]
        self.refresher.clock = node.reactor
        for child in (
            *self.listeners,
            *([self.status] if self.status else []),
            *self.keepers,
            self.manager,
            *([self.mdns] if self.mdns else []),
            self.refresher,
        ):
            child.setServiceParent(self)  # type: ignore[no-untyped-call]

    def bind(self) -> None:
        """Bind every port now, before the service starts (``twistd`` calls
        this from ``makeService``, before its logging and daemonizing, so a
        port in use is one line on the terminal); :class:`ListenError`."""
        bound: list[ListenService] = []
        try:
            for listener in [*self.listeners, *([self.status] if self.status else [])]:
                listener.privilegedStartService()
                bound.append(listener)
        except ListenError:
            for listener in bound:  # all or nothing
                port, listener.port = listener.port, None
                if port is not None:
                    port.stopListening()
            raise

    def listening(self) -> list[str]:
        """Where the node accepts peers, for the status page."""
        return [
            where(listener.port.getHost())
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
        if self.permits is not None:
            self.permits.refresh()
        if self.store is None:
            return defer.succeed(0)
        return self.store.refresh().addErrback(self._refresh_failed)

    def _refresh_failed(self, failure: Any) -> int:
        self._log.failure("could not read the ban database", failure)
        return 0

    def reload(self) -> defer.Deferred[int]:
        """Re-read the allow-list files and the ban database, and reopen the
        topic log, now (SIGHUP)."""
        self._log.info(
            "SIGHUP: reloading the allow-list and the ban database{topic_log}",
            topic_log=f", reopening --topic-log {self.topic_log.path}"
            if self.topic_log is not None and self.topic_log.path is not None
            else "",
        )
        if self.permits is not None:
            self.permits.reload()
        if self.topic_log is not None:
            self.topic_log.reopen()
        return self._refresh_bans()

    def _hangup(self, signum: int, frame: Any) -> None:
        reactor: Any = self.node.reactor
        reactor.callFromThread(self.reload)

    def startService(self) -> None:
        if self.sighup and hasattr(signal, "SIGHUP"):
            self._previous_sighup = signal.signal(signal.SIGHUP, self._hangup)
        super().startService()  # type: ignore[no-untyped-call]
        # What exists now (modules, classes, the node and its settings) lives
        # as long as the process: frozen, it leaves the collector's
        # generations, so a full pass no longer walks it.  Measured with
        # ``python -m bench.gc``: the longest pause in the pipelined request
        # run fell from ~12-40 ms to under 5 ms; throughput within noise.
        gc.collect()
        gc.freeze()
        self._log.info(
            "node {peer_id} started: peers on {listening}; {links}",
            peer_id=str(self.node.peer_id),
            listening=", ".join(
                f"{where(listener.port.getHost())} ({transport(listener.description)})"
                for listener in self.listeners
                if listener.port is not None
            )
            or "no port",
            links="plaintext links allowed (--allow-plaintext)"
            if self.node.settings.allow_plaintext
            else "TLS only",
            allow_plaintext=self.node.settings.allow_plaintext,
        )
        if self.ready:
            # Listeners are bound by now; twistd starts services before the
            # reactor runs (and installs its SIGTERM handler): wait for that.
            reactor: Any = self.node.reactor
            reactor.callWhenRunning(self._notify_ready)

    def _notify_ready(self) -> None:
        if self.running:
            addresses = ", ".join(self.listening())
            notify(f"READY=1\nSTATUS=listening on {addresses}\nMAINPID={os.getpid()}")

    def stopService(self) -> defer.Deferred[None]:
        if self.ready:
            notify("STOPPING=1")
        if self._previous_sighup is not None:
            signal.signal(signal.SIGHUP, self._previous_sighup)
            self._previous_sighup = None
        return defer.ensureDeferred(self._stop())

    async def _stop(self) -> None:
        Service.stopService(self)  # type: ignore[no-untyped-call]
        accepting = [*self.listeners, *([self.status] if self.status else [])]
        await defer.gatherResults(
            [defer.maybeDeferred(s.stopService) for s in accepting]
        )
        await self.refresher.stopService()  # type: ignore[no-untyped-call]
        if self.mdns is not None:
            await self.mdns.stopService()  # goodbyes on the LAN; its threads end
        await self.manager.stopService()
        await defer.gatherResults([k.stopService() for k in self.keepers])
        await self.node.stop()  # a goodbye to every peer; pending requests fail
        if self.store is not None:
            await self.store.close()
        if self.topic_log is not None:
            self.topic_log.close()
