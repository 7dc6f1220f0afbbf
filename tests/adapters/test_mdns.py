"""LAN discovery's service (``_adapters/mdns.py``) on a fake clock with an
in-memory transport: what it announces, and what becomes of each TXT
record heard -- verified before it is kept, and bounded in count, rate and
size.  (``test_mdns_loopback.py`` runs the real zeroconf on loopback.)"""

from __future__ import annotations

import threading
from typing import Any, Optional

import attrs
import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.logger import formatEvent
from zope.interface import implementer

from blueprint_net import Identity, Node
from blueprint_net._adapters.mdns import MdnsService, instance_name, server_name
from blueprint_net._adapters.mdns_zeroconf import (
    Found,
    IMdnsTransport,
    ZeroconfTransport,
)
from blueprint_net._core import mdns_txt
from blueprint_net._core.identity import PeerId
from blueprint_net._core.records import PeerRecord, sign_record
from blueprint_net._policy.mdns import MdnsSettings
from tests.helpers import MakeNode, until

LOOPBACK = ("127.0.0.1",)


@implementer(IMdnsTransport)
@attrs.define
class MemoryTransport:
    """Notes what the service asks; ``hear`` plays a TXT record heard."""

    started: list[tuple[list[str], str]] = attrs.Factory(list)
    announced: list[tuple[str, str, bytes, list[str], int]] = attrs.Factory(list)
    stopped: int = 0
    fail_start: Optional[Exception] = None
    found: Optional[Found] = None

    def start(self, interfaces: Any, service_type: str, found: Found) -> Any:
        self.started.append((list(interfaces), service_type))
        self.found = found
        if self.fail_start is not None:
            return defer.fail(self.fail_start)
        return defer.succeed(None)

    def announce(
        self, name: str, server: str, txt: bytes, addresses: Any, port: int
    ) -> Any:
        self.announced.append((name, server, txt, list(addresses), port))
        return defer.succeed(None)

    def stop(self) -> Any:
        self.stopped += 1
        return defer.succeed(None)

    def hear(self, record: Any, busy: int = 0) -> None:
        assert self.found is not None
        txt = mdns_txt.pack(record) if isinstance(record, PeerRecord) else record
        self.found(txt, {"busy": busy} if busy else {})


@attrs.define
class Rig:
    clock: task.Clock
    node: Node
    transport: MemoryTransport
    service: MdnsService
    #: (source, records) of each on_discovered call.
    discovered: list[tuple[Optional[PeerId], tuple[PeerRecord, ...]]]

    def count(self, outcome: str) -> int:
        return self.node.counters[f"mdns.records.{outcome}"]


@pytest.fixture
def rig(make_node: MakeNode) -> Any:
    def build(**options: Any) -> Rig:
        clock = task.Clock()
        node = make_node(Identity.generate(), clock=clock)
        node.gossip.set_addresses(options.pop("addresses", ["127.0.0.1:7010"]))
        transport = MemoryTransport(fail_start=options.pop("fail_start", None))
        options.setdefault("interfaces", LOOPBACK)
        service = MdnsService(node, MdnsSettings(**options), transport=transport)
        discovered: list[Any] = []
        node.gossip.on_discovered(lambda s, r: discovered.append((s, r)))
        service.startService()
        built.append(service)
        return Rig(clock, node, transport, service, discovered)

    built: list[MdnsService] = []
    yield build
    for service in built:
        if service.running:
            service.stopService()


def _record(n: int = 1, identity: Optional[Identity] = None) -> PeerRecord:
    return sign_record(
        identity or Identity.generate(), n, [f"127.0.0.{n % 250 + 2}:7010"]
    )


def test_a_record_heard_is_verified_kept_and_told_with_no_source(rig: Any) -> None:
    r = rig()
    record = _record()
    r.transport.hear(record)
    assert r.count("kept") == 1
    entry = r.node.gossip.records.entry(record.peer_id)
    assert entry is not None and entry.record == record
    assert entry.source is None and not entry.tried
    assert r.discovered == [(None, (record,))]
    r.transport.hear(record)  # the same again: no news
    assert r.count("stale") == 1 and r.count("kept") == 1
    assert len(r.discovered) == 1


def test_a_forged_record_is_counted_and_never_kept(rig: Any) -> None:
    r = rig()
    record = _record()
    forged = attrs.evolve(record, addresses=("127.0.0.9:7010",))
    r.transport.hear(forged)
    assert r.count("forged") == 1
    assert record.peer_id not in r.node.gossip.records
    assert r.discovered == []
    r.transport.hear(record)  # the genuine one still gets in
    assert r.count("kept") == 1


@pytest.mark.parametrize(
    ("txt", "outcome"),
    [
        (b"\x03v=1\x05r0=\x00\xff", "malformed"),
        (b"\x0bhello=world", "malformed"),
        (b"", "malformed"),
        (b"\xff" + b"x" * 255 + (b"\xfe" + b"y" * 254) * 5, "oversize"),
    ],
)
def test_malformed_and_oversize_txt_are_counted(
    rig: Any, txt: bytes, outcome: str
) -> None:
    r = rig()
    r.transport.hear(txt)
    assert r.count(outcome) == 1
    assert len(r.node.gossip.records) == 0


def test_our_own_announcement_heard_back_is_ignored(rig: Any) -> None:
    r = rig()
    own = r.node.gossip.own_record
    r.transport.hear(own)
    assert not any(r.count(o) for o in ("kept", "stale", "forged"))
    assert r.node.peer_id not in r.node.gossip.records


def test_verification_is_rate_limited_and_stale_records_spend_nothing(
    rig: Any,
) -> None:
    r = rig(rate=1.0, burst=2)
    first, second, third = (_record(n) for n in (1, 2, 3))
    r.transport.hear(first)
    for _ in range(5):
        r.transport.hear(first)  # stale: no signature work, no token
    r.transport.hear(second)
    r.transport.hear(third)  # past the burst: it waits
    assert (r.count("kept"), r.count("stale"), r.count("rate_limited")) == (2, 5, 0)
    assert third.peer_id not in r.node.gossip.records
    assert list(r.service.waiting) == [third.peer_id]


def test_a_record_over_the_rate_is_verified_later_without_being_heard_again(
    rig: Any,
) -> None:
    """zeroconf reports a service again only when its TXT changes: a record
    dropped for the rate used to be lost for good (a flood of forged ones
    kept the bucket spent while a real node announced itself once)."""
    r = rig(rate=1.0, burst=1)
    forged = attrs.evolve(_record(1), addresses=("127.0.0.9:7010",))
    honest = _record(2)
    r.transport.hear(forged)  # spends the only token
    r.transport.hear(honest)  # heard once, over the rate
    assert honest.peer_id not in r.node.gossip.records
    r.clock.advance(1.0)  # a token back: the record held is verified
    assert honest.peer_id in r.node.gossip.records
    assert (r.count("forged"), r.count("kept"), r.count("rate_limited")) == (1, 1, 0)
    assert r.service.waiting == {}


def test_records_waiting_for_the_rate_are_bounded(rig: Any) -> None:
    r = rig(rate=1.0, burst=1, max_waiting=2)
    records = [_record(n) for n in range(1, 6)]
    for record in records:
        r.transport.hear(record)
    assert r.count("kept") == 1
    assert len(r.service.waiting) == 2 and r.count("rate_limited") == 2
    r.clock.advance(1.0)
    r.clock.advance(1.0)
    assert r.count("kept") == 3 and r.service.waiting == {}


def test_at_most_max_records_from_the_lan_the_oldest_forgotten(rig: Any) -> None:
    r = rig(max_records=2, burst=100)
    records = [_record(n) for n in range(1, 6)]
    for record in records[:3]:
        r.transport.hear(record)
    book = r.node.gossip.records
    assert [rec.peer_id in book for rec in records[:3]] == [False, True, True]
    assert r.node.counters["mdns.evicted"] == 1
    # A record whose peer we connected to is ours now: it leaves the LAN's
    # count but stays in the book.
    r.node.gossip.mark_tried(records[1].peer_id)
    r.transport.hear(records[3])
    r.transport.hear(records[4])
    assert [rec.peer_id in book for rec in records] == [False, True, False, True, True]
    assert r.node.counters["mdns.evicted"] == 2
    assert list(r.service.held) == [records[3].peer_id, records[4].peer_id]


def test_finds_dropped_by_the_transport_are_counted(rig: Any) -> None:
    r = rig()
    r.service._found(None, {"busy": 3, "malformed": 2})  # a lookup timed out
    assert r.count("busy") == 3 and r.count("malformed") == 2


def test_it_announces_the_record_and_each_newer_one(rig: Any) -> None:
    r = rig()
    own = r.node.gossip.own_record
    service_type = r.service.settings.service_type
    assert r.transport.started == [(["127.0.0.1"], service_type)]
    assert r.transport.announced == [
        (
            instance_name(own.peer_id, service_type),
            server_name(own.peer_id),
            mdns_txt.pack(own),
            ["127.0.0.1"],
            7010,
        )
    ]
    r.clock.advance(1.0)
    assert len(r.transport.announced) == 1  # unchanged: not again
    newer = r.node.gossip.set_addresses(["127.0.0.1:7011", "127.0.0.2:7012"])
    r.clock.advance(1.0)
    assert r.transport.announced[-1][2:] == (
        mdns_txt.pack(newer),
        ["127.0.0.1", "127.0.0.2"],
        7011,
    )


def test_a_record_too_long_for_txt_is_not_announced(rig: Any, logged: Any) -> None:
    name = ".".join(["h" * 60] * 3)
    addresses = [f"{name}.n{n}.example:7010" for n in range(8)]
    r = rig(addresses=addresses)
    assert r.transport.announced == []
    assert any("cannot announce" in formatEvent(e) for e in logged)


def test_the_default_interfaces_are_the_records_private_or_loopback_ones(
    rig: Any,
) -> None:
    r = rig(interfaces=None, addresses=["203.0.113.5:7010", "127.0.0.1:7010"])
    assert r.transport.started[0][0] == ["127.0.0.1"]


def test_with_no_interface_to_run_on_it_logs_and_stays_off(
    rig: Any, logged: Any
) -> None:
    r = rig(interfaces=None, addresses=["203.0.113.5:7010"])
    assert r.transport.started == []
    assert any("LAN discovery off" in formatEvent(e) for e in logged)
    r.service.stopService()
    assert r.transport.stopped == 0


def test_a_failed_start_is_logged_and_nothing_is_announced(
    rig: Any, logged: Any
) -> None:
    r = rig(fail_start=OSError("no multicast here"))
    assert any("LAN discovery off: no multicast here" in formatEvent(e) for e in logged)
    r.clock.advance(5.0)
    assert r.transport.announced == []


def test_stopped_it_stops_the_transport_and_hears_nothing(rig: Any) -> None:
    r = rig()
    r.service.stopService()
    assert r.transport.stopped == 1
    r.transport.hear(_record())
    assert r.count("kept") == 0


# -- the zeroconf transport's own bounds (zeroconf itself stubbed) ----------


def _cache() -> Any:
    from zeroconf._cache import DNSCache

    return DNSCache()


@attrs.define
class _Info:
    text: bytes


@attrs.define
class _Zeroconf:
    """Answers every lookup at once, refusing what zeroconf refuses (a name
    that is not one); its cache is zeroconf's own."""

    cache: Any = attrs.Factory(_cache)
    looked_up: list[str] = attrs.Factory(list)

    def get_service_info(self, service_type: str, name: str, timeout: int) -> Any:
        from zeroconf import ServiceInfo

        ServiceInfo(service_type, name)  # BadTypeInNameException, as zeroconf
        self.looked_up.append(name)
        return _Info(b"txt of " + name.encode())

    def announced(self, name: str, txt: bytes) -> None:
        """The records of one announcement, in the cache."""
        import socket

        from zeroconf import const
        from zeroconf._dns import DNSAddress, DNSService, DNSText

        a, srv, t = const._TYPE_A, const._TYPE_SRV, const._TYPE_TXT
        c = const._CLASS_IN
        self.cache.async_add_records(
            [
                DNSService(name, srv, c, 120, 0, 0, 9, "h.local."),
                DNSText(name, t, c, 120, txt),
                DNSAddress("h.local.", a, c, 120, socket.inet_aton("127.0.0.1")),
            ]
        )


_T = "_t._tcp.local."


def _transport(**options: Any) -> tuple[ZeroconfTransport, list[Any]]:
    pytest.importorskip("zeroconf", reason="the mdns extra is not installed")
    transport = ZeroconfTransport(reactor, **options)
    heard: list[tuple[Optional[bytes], dict[str, int]]] = []
    transport._found = lambda txt, dropped: heard.append((txt, dict(dropped)))
    return transport, heard


@pytest_twisted.ensureDeferred
async def test_a_name_zeroconf_refuses_is_counted_and_browsing_goes_on() -> None:
    """One PTR naming an instance with a newline made zeroconf raise in the
    browser's callback, which ended its thread: LAN discovery off for good."""
    from zeroconf import ServiceStateChange

    transport, heard = _transport()
    zeroconf = _Zeroconf()
    for state in (ServiceStateChange.Added, ServiceStateChange.Updated):
        transport._changed(zeroconf, _T, f"<script>\n0.{_T}", state)
    await until(lambda: heard != [])
    assert heard == [(None, {"malformed": 2})]
    transport._changed(zeroconf, _T, f"n0.{_T}", ServiceStateChange.Added)
    transport._waiting.pop(f"n0.{_T}")  # as the lookup thread takes it
    transport._look_up(zeroconf, _T, f"n0.{_T}")
    await until(lambda: len(heard) == 2)
    assert heard[1] == (b"txt of n0." + _T.encode(), {})


@pytest_twisted.ensureDeferred
async def test_names_waiting_for_a_lookup_are_bounded_and_each_once() -> None:
    """Lookups take up to lookup_timeout each, one at a time: at most
    max_pending names wait (the rest counted busy), a name once, and a
    service whose records came in its announcement does not wait."""
    from zeroconf import ServiceStateChange

    added = ServiceStateChange.Added
    transport, heard = _transport(max_pending=2)
    zeroconf = _Zeroconf()
    for name in ("n0", "n0", "n1", "n2", "n3"):  # nothing answered these yet
        transport._changed(zeroconf, _T, f"{name}.{_T}", added)
    transport._changed(zeroconf, _T, f"gone.{_T}", ServiceStateChange.Removed)
    assert list(transport._waiting) == [f"n0.{_T}", f"n1.{_T}"]
    await until(lambda: heard != [])
    assert heard == [(None, {"busy": 2})]
    transport._waiting.pop(f"n0.{_T}")  # as the lookup thread takes it
    transport._look_up(zeroconf, _T, f"n0.{_T}")
    await until(lambda: len(heard) == 2)  # n0 handed over: room for one
    zeroconf.announced(f"c0.{_T}", b"\x03v=1")
    transport._changed(zeroconf, _T, f"c0.{_T}", added)
    await until(lambda: len(heard) == 3)
    assert heard[2] == (b"\x03v=1", {})  # from the cache, no lookup
    assert zeroconf.looked_up == [f"n0.{_T}"]
    assert list(transport._waiting) == [f"n1.{_T}"]


@pytest_twisted.ensureDeferred
async def test_the_transport_runs_calls_in_order_in_threads_that_end() -> None:
    before = set(threading.enumerate())
    transport = ZeroconfTransport(reactor)
    ran: list[str] = []
    gate = threading.Event()

    def slow() -> None:
        gate.wait(10)
        ran.append("slow")

    def failing() -> None:
        ran.append("failing")
        raise OSError("no such interface")

    first = transport._serial(slow)
    second = transport._serial(failing)
    third = transport._serial(lambda: ran.append("third"))
    assert ran == []
    gate.set()
    await first
    with pytest.raises(OSError, match="no such interface"):
        await second
    await third
    assert ran == ["slow", "failing", "third"]
    assert set(threading.enumerate()) <= before


def test_started_again_it_announces_afresh(rig: Any) -> None:
    r = rig()
    r.service.stopService()
    r.service.startService()
    assert len(r.transport.started) == 2
    assert [a[2] for a in r.transport.announced] == [
        mdns_txt.pack(r.node.gossip.own_record)
    ] * 2
