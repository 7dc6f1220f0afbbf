"""LAN discovery: the node's signed record announced over mDNS, and the
records of other nodes on the local network found the same way.

Layer: adapters (a Twisted ``Service`` beside a node; its TXT form is
``_core/mdns_txt.py``, its knobs and bounds ``_policy/mdns.py``).

In: the node's own record (``node.gossip.own_record``, signed by the
connection manager), and TXT records heard on the LAN.  Out: our record
registered as a DNS-SD service (``<peer id>._blueprint._tcp.local.``), and
each record found handed to the node's record book by
:meth:`~blueprint_net._adapters.gossip.Gossip.found_record`: verified there
like a record a peer sent, then the connection manager's like any other
(bans and the allow-list first, then its dial rules).  Nothing heard is
trusted before its signature verifies, and what the LAN can cost is
bounded: a TXT record over 1300 bytes is not read, at most ``rate``
records a second are verified, at most ``max_records`` are held (the
oldest go), at most ``max_pending`` finds wait for the reactor.

``zeroconf`` (the ``blueprint-net[mdns]`` extra) runs its own thread and
asyncio loop; its blocking calls (start, register, close) run in a short
thread of ours, and every result comes back with ``callFromThread``, so
everything else here runs on the reactor.  The transport is an interface
(:class:`IMdnsTransport`): the tests drive the service with one in memory,
and :class:`ZeroconfTransport` on loopback.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import threading
from collections.abc import Sequence
from typing import Any, Callable, Optional

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from blueprint_net._adapters.facade import INode
from blueprint_net._core import mdns_txt
from blueprint_net._core.errors import ConfigurationError
from blueprint_net._core.identity import PeerId
from blueprint_net._core.records import PeerRecord, parse_address
from blueprint_net._core.telemetry import MDNS_EVICTED, MDNS_RECORDS
from blueprint_net._policy import discovery
from blueprint_net._policy.limits import TokenBucket
from blueprint_net._policy.mdns import DEFAULTS, MdnsSettings, default_interfaces

#: What ``--mdns`` without the extra says.
INSTALL_HINT = (
    "LAN discovery (--mdns) needs zeroconf: pip install 'blueprint-net[mdns]'"
)

#: Told, on the reactor, of each TXT record found (None: no answer in time),
#: and how many finds were dropped since the last one (``max_pending``).
Found = Callable[[Optional[bytes], int], None]


class MdnsUnavailable(ConfigurationError):
    """LAN discovery cannot run here: zeroconf is missing, or an interface
    is not this machine's."""


def require_zeroconf() -> None:
    """:class:`MdnsUnavailable` with :data:`INSTALL_HINT` if zeroconf is
    not installed."""
    try:
        import zeroconf  # noqa: F401
    except ImportError:
        raise MdnsUnavailable(INSTALL_HINT) from None


def check_local(address: str) -> None:
    """:class:`MdnsUnavailable` unless ``address`` is one of this machine's
    (a UDP bind to it, port 0: nothing is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError as error:
            raise MdnsUnavailable(
                f"{address} is not an address of this machine ({error.strerror})"
            ) from None


class IMdnsTransport(Interface):
    """Where the service announces and hears records (zeroconf, or a test's)."""

    def start(
        interfaces: Sequence[str], service_type: str, found: Found
    ) -> defer.Deferred[None]:
        """Run on ``interfaces`` and browse for ``service_type``; ``found``
        is called on the reactor with each service's TXT RDATA."""

    def announce(
        name: str, server: str, txt: bytes, addresses: Sequence[str], port: int
    ) -> defer.Deferred[None]:
        """Register instance ``name`` (or update it) with this TXT RDATA."""

    def stop() -> defer.Deferred[None]:
        """Say goodbye and stop: no thread of its own is left running."""


@implementer(IMdnsTransport)
class ZeroconfTransport:
    """:class:`IMdnsTransport` with ``zeroconf``, restricted to the given
    interfaces (never zeroconf's default of every interface).

    Its calls run one after another, each in a thread of ours that ends with
    it; zeroconf's browser thread looks up each service found and hands its
    TXT RDATA to the reactor, at most ``max_pending`` at a time.
    """

    def __init__(
        self, reactor: Any, *, max_pending: int = 64, lookup_timeout: float = 3.0
    ) -> None:
        self.reactor = reactor
        self.max_pending = max_pending
        self.lookup_timeout = lookup_timeout
        self._lock = threading.Lock()
        self._pending = 0
        self._busy = 0
        self._found: Optional[Found] = None
        self._service_type = ""
        self._zeroconf: Any = None
        self._browser: Any = None
        self._registered = False
        self._tail: defer.Deferred[Any] = defer.succeed(None)

    # -- IMdnsTransport (on the reactor) -------------------------------------

    def start(
        self, interfaces: Sequence[str], service_type: str, found: Found
    ) -> defer.Deferred[None]:
        self._found, self._service_type = found, service_type
        return self._serial(self._start, list(interfaces))

    def announce(
        self, name: str, server: str, txt: bytes, addresses: Sequence[str], port: int
    ) -> defer.Deferred[None]:
        return self._serial(self._announce, name, server, txt, list(addresses), port)

    def stop(self) -> defer.Deferred[None]:
        self._found = None
        return self._serial(self._stop)

    # -- in a thread of ours -------------------------------------------------

    def _start(self, interfaces: list[str]) -> None:
        from zeroconf import ServiceBrowser, Zeroconf

        for address in interfaces:
            check_local(address)
        # Made here, where no asyncio loop runs: zeroconf then starts its own
        # thread and loop (in the reactor's thread, under Twisted's asyncio
        # reactor, it would attach to the reactor's loop instead).
        self._zeroconf = Zeroconf(interfaces=interfaces)
        self._browser = ServiceBrowser(
            self._zeroconf, self._service_type, handlers=[self._changed]
        )

    def _announce(
        self, name: str, server: str, txt: bytes, addresses: list[str], port: int
    ) -> None:
        from zeroconf import ServiceInfo

        if self._zeroconf is None:
            return  # not started (or its start failed)
        info = ServiceInfo(
            self._service_type,
            name,
            port=port,
            properties=txt,
            server=server,
            parsed_addresses=addresses,
        )
        if self._registered:
            self._zeroconf.update_service(info)
        else:
            self._zeroconf.register_service(info)
            self._registered = True

    def _stop(self) -> None:
        browser, zeroconf = self._browser, self._zeroconf
        self._browser = self._zeroconf = None
        self._registered = False
        if browser is not None:
            browser.cancel()  # joins its thread
        if zeroconf is not None:
            zeroconf.close()  # goodbyes, then joins its loop's thread

    # -- in zeroconf's browser thread ----------------------------------------

    def _changed(
        self, zeroconf: Any, service_type: str, name: str, state_change: Any
    ) -> None:
        from zeroconf import ServiceStateChange

        if state_change is ServiceStateChange.Removed:
            return  # a goodbye is unsigned: records are forgotten by dials
        with self._lock:
            if self._pending >= self.max_pending:
                self._busy += 1
                return
            self._pending += 1
        txt: Optional[bytes] = None
        try:
            info = zeroconf.get_service_info(
                service_type, name, timeout=int(self.lookup_timeout * 1000)
            )
            txt = None if info is None else info.text
        finally:
            self.reactor.callFromThread(self._deliver, txt)

    # -- back on the reactor -------------------------------------------------

    def _deliver(self, txt: Optional[bytes]) -> None:
        with self._lock:
            self._pending -= 1
            busy, self._busy = self._busy, 0
        if self._found is not None:
            self._found(txt, busy)

    def _serial(self, call: Callable[..., None], *args: Any) -> defer.Deferred[None]:
        """Run ``call(*args)`` in a new thread once the previous call ended;
        its outcome comes back on the reactor, after the thread has ended."""
        done: defer.Deferred[None] = defer.Deferred()
        previous, self._tail = self._tail, defer.Deferred()
        tail = self._tail

        def run(_: object) -> None:
            threading.Thread(
                target=self._run, args=(done, tail, call, args), name="blueprint-mdns"
            ).start()

        previous.addCallback(run)
        return done

    def _run(
        self,
        done: defer.Deferred[None],
        tail: defer.Deferred[None],
        call: Callable[..., None],
        args: Any,
    ) -> None:
        outcome: Optional[Failure] = None
        try:
            call(*args)
        except BaseException:
            outcome = Failure()  # type: ignore[no-untyped-call]
        self.reactor.callFromThread(
            self._finish, threading.current_thread(), done, tail, outcome
        )

    def _finish(
        self,
        thread: threading.Thread,
        done: defer.Deferred[None],
        tail: defer.Deferred[None],
        outcome: Optional[Failure],
    ) -> None:
        thread.join()  # it has handed its outcome over and is ending
        if outcome is None:
            done.callback(None)
        else:
            done.errback(outcome)
        tail.callback(None)  # the next call may run


def instance_name(peer_id: PeerId, service_type: str) -> str:
    """Our DNS-SD instance: the peer id, under the service type."""
    return f"{peer_id}.{service_type}"


def server_name(peer_id: PeerId) -> str:
    """Our mDNS host name: from the id's digest (host names are case-blind,
    peer ids are not)."""
    return f"bp-{hashlib.sha256(peer_id.binary).hexdigest()[:20]}.local."


class MdnsService(Service):
    """LAN discovery for one node (see the module).  Build it beside a
    ``ConnectionManager``, which signs the record this announces and dials
    the records this finds."""

    _log = Logger()

    def __init__(
        self,
        node: INode,
        settings: MdnsSettings = DEFAULTS,
        *,
        transport: Optional[IMdnsTransport] = None,
        reactor: Any = None,
    ) -> None:
        if transport is None:
            require_zeroconf()
            if reactor is None:
                from twisted.internet import reactor
            transport = ZeroconfTransport(
                reactor,
                max_pending=settings.max_pending,
                lookup_timeout=settings.lookup_timeout,
            )
        self.node, self.settings, self.transport = node, settings, transport
        self.counters = node.counters
        self.bucket = TokenBucket(settings.rate, settings.burst, node.clock.seconds())
        #: Ids whose records mDNS put in the book, oldest first.
        self.held: dict[PeerId, None] = {}
        #: The interfaces it runs on, once started.
        self.interfaces: list[str] = []
        self._announced: Optional[PeerRecord] = None
        self._announcing = False
        self._loop = task.LoopingCall(self._announce)
        self._loop.clock = node.clock

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        interfaces = self.settings.interfaces
        if interfaces is None:
            interfaces = tuple(default_interfaces(self._addresses()))
        if not interfaces:
            self._log.error(
                "LAN discovery off: the node advertises no private or loopback"
                " IPv4 address to run mDNS on (name one: --mdns-interface)"
            )
            return
        self.interfaces = list(interfaces)
        started = self.transport.start(
            self.interfaces, self.settings.service_type, self._found
        )
        started.addCallbacks(self._running, self._failed)

    def _addresses(self) -> list[str]:
        own = self.node.gossip.own_record
        if own is not None:
            return list(own.addresses)
        return discovery.advertised(self.node.listening_addresses)

    def _running(self, _: object) -> None:
        self._log.info(
            "LAN discovery (mDNS) on {interfaces}",
            interfaces=", ".join(self.interfaces),
        )
        if self.running:
            self._loop.start(1.0, now=True)

    def _failed(self, failure: Failure) -> None:
        self._log.error(
            "LAN discovery off: {error}",
            error=str(failure.value) or repr(failure.value),
        )

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        if self._loop.running:
            self._loop.stop()
        self._announced = None  # started again, it announces afresh
        if not self.interfaces:
            return defer.succeed(None)
        return self.transport.stop().addErrback(self._stop_failed)

    def _stop_failed(self, failure: Failure) -> None:
        self._log.failure("LAN discovery did not stop cleanly", failure)

    # -- announcing ------------------------------------------------------------

    def _announce(self) -> None:
        """Register our record, or its newer version, once signed."""
        record = self.node.gossip.own_record
        if record is None or record is self._announced or self._announcing:
            return
        self._announced = record
        if not record.addresses:
            return
        try:
            txt = mdns_txt.pack(record)
        except mdns_txt.OversizeTxt as error:
            self._log.error("LAN discovery cannot announce: {error}", error=str(error))
            return
        hosts, port = _hosts_and_port(record)
        self._announcing = True
        announced = self.transport.announce(
            instance_name(record.peer_id, self.settings.service_type),
            server_name(record.peer_id),
            txt,
            hosts or self.interfaces,
            port,
        )
        announced.addErrback(self._announce_failed)
        announced.addBoth(self._announced_one)

    def _announce_failed(self, failure: Failure) -> None:
        self._log.error(
            "LAN discovery could not announce: {error}",
            error=str(failure.value) or repr(failure.value),
        )

    def _announced_one(self, _: object) -> None:
        self._announcing = False

    # -- finding ---------------------------------------------------------------

    def _found(self, txt: Optional[bytes], busy: int) -> None:
        """One TXT record heard (on the reactor): read, checked for news,
        rate-limited, then verified and kept by the record book."""
        counters = self.counters
        if busy:
            counters[MDNS_RECORDS.key_for("busy")] += busy
        if txt is None or not self.running:
            return
        try:
            record = mdns_txt.unpack(txt)
        except mdns_txt.OversizeTxt:
            counters[MDNS_RECORDS.key_for("oversize")] += 1
            return
        except mdns_txt.MalformedTxt:
            counters[MDNS_RECORDS.key_for("malformed")] += 1
            return
        gossip = self.node.gossip
        if record.peer_id == self.node.peer_id:
            return  # our own announcement, heard back
        if not gossip.records.is_news(record):
            counters[MDNS_RECORDS.key_for("stale")] += 1
            return
        if not self.bucket.take(self.node.clock.seconds()):
            counters[MDNS_RECORDS.key_for("rate_limited")] += 1
            return
        kept = gossip.found_record(record)
        if kept is None:
            counters[MDNS_RECORDS.key_for("forged")] += 1
            return
        if not kept:
            counters[MDNS_RECORDS.key_for("stale")] += 1
            return
        counters[MDNS_RECORDS.key_for("kept")] += 1
        self.held.pop(record.peer_id, None)
        self.held[record.peer_id] = None
        self._bound()

    def _bound(self) -> None:
        """At most ``max_records`` records from the LAN: the oldest go from
        the book, unless we connected to their peer since (then the record
        is the node's own finding, no longer the LAN's word)."""
        book = self.node.gossip.records
        while len(self.held) > self.settings.max_records:
            oldest = next(iter(self.held))
            del self.held[oldest]
            entry = book.entry(oldest)
            if entry is not None and entry.source is None and not entry.tried:
                self.node.gossip.forget_record(oldest)
                self.counters[MDNS_EVICTED.key] += 1


def _hosts_and_port(record: PeerRecord) -> tuple[list[str], int]:
    """The IP addresses of ``record`` (for the service's address records)
    and the port of its first address."""
    hosts: list[str] = []
    port = 0
    for text in record.addresses:
        try:
            host, number = parse_address(text)
            ipaddress.ip_address(host)
        except ValueError:
            continue
        port = port or number
        if host not in hosts:
            hosts.append(host)
    if not port:
        port = parse_address(record.addresses[0])[1]
    return hosts, port
