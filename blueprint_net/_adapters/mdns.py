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
records a second are verified (those over it wait, at most
``max_waiting``, and are verified when the rate allows: zeroconf tells of
a service again only when its TXT changes), at most ``max_records`` are
held (the oldest go).

The transport (``mdns_zeroconf.py``) bounds what reaches this side: at most
``max_pending`` names waiting for a lookup, each lookup ``lookup_timeout``.
It is an interface (:class:`IMdnsTransport`): the tests drive the service
with one in memory, and :class:`ZeroconfTransport` on loopback.
"""

from __future__ import annotations

import hashlib
import ipaddress
import random
from collections.abc import Mapping
from typing import Any, Optional

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from blueprint_net._adapters.facade import INode
from blueprint_net._adapters.mdns_zeroconf import (
    IMdnsTransport,
    ZeroconfTransport,
    require_zeroconf,
)
from blueprint_net._core import mdns_txt
from blueprint_net._core.identity import PeerId
from blueprint_net._core.records import PeerRecord, parse_address
from blueprint_net._core.telemetry import MDNS_EVICTED, MDNS_RECORDS
from blueprint_net._policy import discovery
from blueprint_net._policy.limits import TokenBucket
from blueprint_net._policy.mdns import DEFAULTS, MdnsSettings, default_interfaces


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
        #: Records heard over the verification rate, verified when tokens
        #: are back (at most ``max_waiting``; past it a random one goes, so
        #: a flood of fresh names cannot keep one out for good).
        self.waiting: dict[PeerId, PeerRecord] = {}
        self._random = random.SystemRandom()
        #: The interfaces it runs on, once started.
        self.interfaces: list[str] = []
        self._announced: Optional[PeerRecord] = None
        self._announcing = False
        self._loop = task.LoopingCall(self._tick)
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
        self.waiting.clear()
        if not self.interfaces:
            return defer.succeed(None)
        return self.transport.stop().addErrback(self._stop_failed)

    def _stop_failed(self, failure: Failure) -> None:
        self._log.failure("LAN discovery did not stop cleanly", failure)

    def _tick(self) -> None:
        self._announce()
        self._verify_waiting()

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

    def _found(self, txt: Optional[bytes], dropped: Mapping[str, int]) -> None:
        """One TXT record heard (on the reactor): read, checked for news,
        then verified and kept by the record book as the rate allows."""
        counters = self.counters
        for outcome, count in dropped.items():
            counters[MDNS_RECORDS.key_for(outcome)] += count
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
        if record.peer_id == self.node.peer_id:
            return  # our own announcement, heard back
        if not self.node.gossip.records.is_news(record):
            counters[MDNS_RECORDS.key_for("stale")] += 1
            return
        self._wait(record)
        self._verify_waiting()

    def _wait(self, record: PeerRecord) -> None:
        """Hold ``record`` for verification; at the bound a random one held
        goes (counted ``rate_limited``): the newest would let a flood keep
        every later record out, the oldest would let it push each one out."""
        waiting = self.waiting
        waiting.pop(record.peer_id, None)
        if len(waiting) >= self.settings.max_waiting:
            del waiting[self._random.choice(list(waiting))]
            self.counters[MDNS_RECORDS.key_for("rate_limited")] += 1
        waiting[record.peer_id] = record

    def _verify_waiting(self) -> None:
        """Verify records held, in random order, while the rate allows."""
        now = self.node.clock.seconds()
        while self.waiting and self.bucket.take(now):
            peer_id = self._random.choice(list(self.waiting))
            self._verify(self.waiting.pop(peer_id))

    def _verify(self, record: PeerRecord) -> None:
        counters = self.counters
        gossip = self.node.gossip
        if not gossip.records.is_news(record):
            counters[MDNS_RECORDS.key_for("stale")] += 1
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
