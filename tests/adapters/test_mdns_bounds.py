"""LAN discovery's bounds and edges (``_adapters/mdns.py``), pinned exactly:
each outcome counted once per find (never reset), which records the
``max_records`` bound keeps, the announcement's one-at-a-time rule and its
hosts and port, the logs' fields, and the zeroconf transport's calls with
zeroconf and the reactor stubbed (no thread of zeroconf's, no network)."""

from __future__ import annotations

import contextlib
import hashlib
import sys
import threading
from typing import Any, Callable, Optional

import attrs
import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.logger import formatEvent
from zope.interface import implementer

from blueprint_net import Identity, Node
from blueprint_net._adapters.mdns import (
    Found,
    IMdnsTransport,
    MdnsService,
    MdnsUnavailable,
    ZeroconfTransport,
    check_local,
    require_zeroconf,
    server_name,
)
from blueprint_net._core import mdns_txt
from blueprint_net._core.records import PeerRecord, sign_record
from blueprint_net._policy.mdns import DEFAULTS, MdnsSettings
from tests.helpers import MakeNode, until


@implementer(IMdnsTransport)
@attrs.define
class Transport:
    """In memory; ``announce`` answers with ``answer`` (None: at once)."""

    started: list[list[str]] = attrs.Factory(list)
    announced: list[tuple[list[str], int, bytes]] = attrs.Factory(list)
    answers: list[defer.Deferred[None]] = attrs.Factory(list)
    hold_announce: bool = False
    fail_start: Optional[Exception] = None
    fail_stop: Optional[Exception] = None
    found: Optional[Found] = None

    def start(self, interfaces: Any, service_type: str, found: Found) -> Any:
        self.started.append(list(interfaces))
        self.found = found
        if self.fail_start is not None:
            return defer.fail(self.fail_start)
        return defer.succeed(None)

    def announce(
        self, name: str, server: str, txt: bytes, addresses: Any, port: int
    ) -> Any:
        self.announced.append((list(addresses), port, txt))
        answer: defer.Deferred[None] = defer.Deferred()
        self.answers.append(answer)
        if not self.hold_announce:
            answer.callback(None)
        return answer

    def stop(self) -> Any:
        if self.fail_stop is not None:
            return defer.fail(self.fail_stop)
        return defer.succeed(None)

    def hear(self, txt: Any, busy: int = 0) -> None:
        assert self.found is not None
        if isinstance(txt, PeerRecord):
            txt = mdns_txt.pack(txt)
        self.found(txt, busy)


@attrs.define
class Rig:
    clock: task.Clock
    node: Node
    transport: Transport
    service: MdnsService

    def count(self, outcome: str) -> int:
        return self.node.counters[f"mdns.records.{outcome}"]


@pytest.fixture
def rig(make_node: MakeNode) -> Any:
    def build(
        addresses: Optional[list[str]] = None,
        transport: Optional[Transport] = None,
        **options: Any,
    ) -> Rig:
        clock = task.Clock()
        node = make_node(Identity.generate(), clock=clock)
        node.gossip.set_addresses(addresses or ["127.0.0.1:7010"])
        transport = transport or Transport()
        options.setdefault("interfaces", ("127.0.0.1",))
        service = MdnsService(node, MdnsSettings(**options), transport=transport)
        service.startService()
        built.append(service)
        return Rig(clock, node, transport, service)

    built: list[MdnsService] = []
    yield build
    for service in built:
        if service.running:
            service.stopService()


def _record(n: int = 1, seqno: int = 1, identity: Optional[Identity] = None) -> Any:
    return sign_record(identity or Identity.generate(), seqno, [f"127.0.0.{n}:7010"])


def _messages(logged: list[dict[str, Any]], start: str) -> list[dict[str, Any]]:
    return [e for e in logged if (e.get("log_format") or "").startswith(start)]


# -- what is heard: each outcome counted once per find ----------------------


def test_each_outcome_adds_one_per_find_and_busy_adds_its_number(rig: Any) -> None:
    r = rig(rate=1.0, burst=1)
    oversize = b"\xff" + b"x" * 255 + (b"\xfe" + b"y" * 254) * 5
    for txt in (oversize, oversize, b"\x03v=2", b"\x03v=2"):
        r.transport.hear(txt)
    r.transport.hear(None, busy=3)
    r.transport.hear(None, busy=2)
    record = _record(2)
    forged = attrs.evolve(_record(3), addresses=("127.0.0.9:7010",))
    r.transport.hear(forged)  # the one token, spent on a forgery
    r.transport.hear(record)
    r.transport.hear(_record(4))
    r.clock.advance(1.0)
    r.transport.hear(forged)
    r.clock.advance(1.0)
    r.transport.hear(record)
    counts = {
        o: r.count(o)
        for o in ("oversize", "malformed", "busy", "rate_limited", "forged", "kept")
    }
    assert counts == {
        "oversize": 2,
        "malformed": 2,
        "busy": 5,
        "rate_limited": 2,
        "forged": 2,
        "kept": 1,
    }


def test_a_newer_record_of_a_held_peer_is_the_youngest_held(rig: Any) -> None:
    """max_records=2: A, B, then A's newer record: A is now the youngest, so
    C's arrival forgets B, not A."""
    r = rig(max_records=2, burst=100)
    alice, bob, carol = (Identity.generate() for _ in range(3))
    r.transport.hear(_record(2, 1, alice))
    r.transport.hear(_record(3, 1, bob))
    r.transport.hear(_record(2, 2, alice))
    assert list(r.service.held) == [bob.peer_id, alice.peer_id]
    r.transport.hear(_record(4, 1, carol))
    book = r.node.gossip.records
    assert [p in book for p in (alice.peer_id, bob.peer_id, carol.peer_id)] == [
        True,
        False,
        True,
    ]
    assert list(r.service.held) == [alice.peer_id, carol.peer_id]
    assert r.node.counters["mdns.evicted"] == 1


def test_exactly_max_records_are_held_one_more_evicts_one(rig: Any) -> None:
    r = rig(max_records=3, burst=100)
    records = [_record(n) for n in range(2, 6)]
    for record in records[:3]:
        r.transport.hear(record)
    assert len(r.service.held) == 3 and r.node.counters["mdns.evicted"] == 0
    r.transport.hear(records[3])
    assert len(r.service.held) == 3 and r.node.counters["mdns.evicted"] == 1
    assert records[0].peer_id not in r.node.gossip.records


# -- announcing ---------------------------------------------------------------


def test_one_announcement_at_a_time_the_newest_once_the_last_is_answered(
    rig: Any,
) -> None:
    r = rig(transport=Transport(hold_announce=True))
    assert len(r.transport.announced) == 1  # at once, not a second later
    r.node.gossip.set_addresses(["127.0.0.1:7011"])
    r.clock.advance(1.0)
    r.clock.advance(1.0)
    assert len(r.transport.announced) == 1  # the first is not answered yet
    r.transport.answers[0].callback(None)
    r.clock.advance(1.0)
    assert [a[1] for a in r.transport.announced] == [7010, 7011]


def test_a_newer_record_is_announced_within_one_second(rig: Any) -> None:
    r = rig()
    r.node.gossip.set_addresses(["127.0.0.1:7011"])
    r.clock.advance(0.999)
    assert len(r.transport.announced) == 1
    r.clock.advance(0.001)
    assert [a[1] for a in r.transport.announced] == [7010, 7011]


def test_a_failed_announcement_is_logged_and_the_next_one_goes_out(
    rig: Any, logged: Any
) -> None:
    r = rig(transport=Transport(hold_announce=True))
    r.transport.answers[0].errback(OSError("no route"))
    r.transport.answers[0].addErrback(lambda _: None)
    events = _messages(logged, "LAN discovery could not announce")
    assert [e["error"] for e in events] == ["no route"]
    assert formatEvent(events[0]) == "LAN discovery could not announce: no route"
    r.node.gossip.set_addresses(["127.0.0.1:7011"])
    r.clock.advance(1.0)
    assert len(r.transport.announced) == 2
    r.transport.answers[1].errback(OSError())  # no words: its repr is told
    assert [e["error"] for e in _messages(logged, "LAN discovery could not")] == [
        "no route",
        "OSError()",
    ]


def test_an_oversize_record_is_logged_with_its_size(rig: Any, logged: Any) -> None:
    name = ".".join(["h" * 60] * 3)
    r = rig(addresses=[f"{name}.n{n}.example:7010" for n in range(8)])
    assert r.transport.announced == []
    [event] = _messages(logged, "LAN discovery cannot announce")
    assert "bytes of TXT; 1300 fit" in event["error"]
    assert event["error"].startswith("the record needs ")


@pytest.mark.parametrize(
    ("addresses", "hosts", "port"),
    [
        # The port is the first IP address's; names are not hosts.
        (
            ["n.example:7000", "127.0.0.2:7010", "127.0.0.3:7020"],
            ["127.0.0.2", "127.0.0.3"],
            7010,
        ),
        (["127.0.0.2:7010", "127.0.0.2:7011"], ["127.0.0.2"], 7010),
        # Names alone: the first address's port, on the service's interfaces.
        (["n.example:7000", "m.example:7001"], ["127.0.0.1"], 7000),
    ],
)
def test_the_announced_hosts_and_port(
    rig: Any, addresses: list[str], hosts: list[str], port: int
) -> None:
    r = rig(addresses=addresses)
    [(announced_hosts, announced_port, _)] = r.transport.announced
    assert (announced_hosts, announced_port) == (hosts, port)


def test_the_server_name_is_twenty_hex_digits_of_the_ids_digest() -> None:
    peer_id = Identity(bytes(range(32))).peer_id
    digest = hashlib.sha256(peer_id.binary).hexdigest()
    assert server_name(peer_id) == f"bp-{digest[:20]}.local."
    assert len(server_name(peer_id)) == len("bp-.local.") + 20


# -- starting and stopping ----------------------------------------------------


def test_running_is_logged_with_the_interfaces(rig: Any, logged: Any) -> None:
    rig(interfaces=("127.0.0.1", "127.0.0.2"))
    [event] = _messages(logged, "LAN discovery (mDNS)")
    assert event["interfaces"] == "127.0.0.1, 127.0.0.2"
    assert formatEvent(event) == "LAN discovery (mDNS) on 127.0.0.1, 127.0.0.2"


def test_a_start_failing_without_words_logs_its_repr(rig: Any, logged: Any) -> None:
    r = rig(transport=Transport(fail_start=OSError()))
    [event] = _messages(logged, "LAN discovery off")
    assert event["error"] == "OSError()"
    assert r.transport.announced == []


def test_with_no_interface_it_runs_on_none_and_says_why(rig: Any, logged: Any) -> None:
    r = rig(interfaces=None, addresses=["203.0.113.5:7010"])
    assert r.service.interfaces == [] and r.transport.started == []
    [event] = _messages(logged, "LAN discovery off")
    assert formatEvent(event) == (
        "LAN discovery off: the node advertises no private or loopback IPv4"
        " address to run mDNS on (name one: --mdns-interface)"
    )


def test_a_failed_stop_is_logged_not_raised(rig: Any, logged: Any) -> None:
    r = rig(transport=Transport(fail_stop=OSError("stuck")))
    stopped = r.service.stopService()
    results: list[Any] = []
    stopped.addBoth(results.append)
    assert results == [None]
    [event] = _messages(logged, "LAN discovery did not stop cleanly")
    assert event["log_failure"].value.args == ("stuck",)


@pytest_twisted.ensureDeferred
async def test_without_a_record_the_default_interfaces_are_the_listening_ones(
    make_node: MakeNode,
) -> None:
    node = make_node(Identity.generate(), clock=task.Clock())
    await node.listen("tcp:0:interface=127.0.0.1")
    assert node.gossip.own_record is None
    transport = Transport()
    service = MdnsService(node, MdnsSettings(), transport=transport)
    service.startService()
    try:
        assert transport.started == [["127.0.0.1"]]
    finally:
        await service.stopService()


def test_without_a_transport_it_builds_zeroconfs_with_its_settings(
    make_node: MakeNode,
) -> None:
    pytest.importorskip("zeroconf", reason="the mdns extra is not installed")
    clock = task.Clock()
    node = make_node(Identity.generate(), clock=clock)
    settings = MdnsSettings(max_pending=5, lookup_timeout=0.5)
    built = MdnsService(node, settings, reactor=clock).transport
    assert isinstance(built, ZeroconfTransport)
    assert (built.reactor, built.max_pending, built.lookup_timeout) == (clock, 5, 0.5)
    default = MdnsService(node).transport
    assert isinstance(default, ZeroconfTransport)
    assert default.reactor is reactor
    assert (default.max_pending, default.lookup_timeout) == (
        DEFAULTS.max_pending,
        DEFAULTS.lookup_timeout,
    )


def test_without_zeroconf_it_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "zeroconf", None)
    with pytest.raises(MdnsUnavailable, match=r"pip install 'blueprint-net\[mdns\]'"):
        require_zeroconf()


# -- check_local: a bind, nothing sent ----------------------------------------


def test_a_loopback_address_is_local_a_documentation_one_is_not() -> None:
    check_local("127.0.0.1")
    with pytest.raises(MdnsUnavailable, match=r"^192\.0\.2\.1 is not an address"):
        check_local("192.0.2.1")


# -- the zeroconf transport, zeroconf and the reactor stubbed -----------------


@attrs.define
class StepReactor:
    """callFromThread noted, run when the test says."""

    calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = attrs.Factory(list)

    def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:
        self.calls.append((f, args))

    def run(self) -> None:
        calls, self.calls = self.calls, []
        for f, args in calls:
            f(*args)


@attrs.define
class Info:
    text: bytes


@attrs.define
class Zeroconf:
    """Lookups noted and answered with ``answer``; services noted."""

    answer: Callable[[str], Any] = lambda name: Info(name.encode())
    lookups: list[tuple[str, str, int]] = attrs.Factory(list)
    services: list[tuple[str, Any]] = attrs.Factory(list)
    closed: int = 0

    def get_service_info(self, service_type: str, name: str, timeout: int) -> Any:
        self.lookups.append((service_type, name, timeout))
        return self.answer(name)

    def register_service(self, info: Any) -> None:
        self.services.append(("register", info))

    def update_service(self, info: Any) -> None:
        self.services.append(("update", info))

    def close(self) -> None:
        self.closed += 1


@attrs.define
class Browser:
    cancelled: int = 0

    def cancel(self) -> None:
        self.cancelled += 1


def _added() -> Any:
    return pytest.importorskip("zeroconf").ServiceStateChange.Added


def test_the_lookup_asks_for_the_service_with_the_timeout_in_ms() -> None:
    added = _added()
    transport = ZeroconfTransport(StepReactor(), lookup_timeout=2.5)
    zeroconf = Zeroconf()
    transport._changed(zeroconf, "_t._tcp.local.", "n0._t._tcp.local.", added)
    assert zeroconf.lookups == [("_t._tcp.local.", "n0._t._tcp.local.", 2500)]


def test_a_lookup_with_no_answer_or_an_error_hands_over_none() -> None:
    added = _added()
    step = StepReactor()
    transport = ZeroconfTransport(step, max_pending=1)
    heard: list[tuple[Optional[bytes], int]] = []
    transport._found = lambda txt, busy: heard.append((txt, busy))
    transport._changed(Zeroconf(answer=lambda name: None), "_t", "n0", added)
    step.run()

    def fail(name: str) -> Any:
        raise RuntimeError("lookup failed")

    with contextlib.suppress(RuntimeError):
        transport._changed(Zeroconf(answer=fail), "_t", "n1", added)
    step.run()
    assert heard == [(None, 0), (None, 0)]


def test_each_find_handed_over_makes_room_for_exactly_one_more() -> None:
    added = _added()
    step = StepReactor()
    transport = ZeroconfTransport(step, max_pending=2)
    heard: list[tuple[Optional[bytes], int]] = []
    transport._found = lambda txt, busy: heard.append((txt, busy))
    zeroconf = Zeroconf()
    for n in range(3):
        transport._changed(zeroconf, "_t", f"a{n}", added)
    step.run()
    assert heard == [(b"a0", 1), (b"a1", 0)]
    for n in range(3):
        transport._changed(zeroconf, "_t", f"b{n}", added)
    assert [name for _, name, _ in zeroconf.lookups] == ["a0", "a1", "b0", "b1"]
    step.run()
    assert heard[2:] == [(b"b0", 1), (b"b1", 0)]


def test_the_transports_defaults_are_the_settings_defaults() -> None:
    transport = ZeroconfTransport(StepReactor())
    assert (transport.max_pending, transport.lookup_timeout) == (
        DEFAULTS.max_pending,
        DEFAULTS.lookup_timeout,
    )


def test_before_start_and_after_stop_the_transport_does_nothing() -> None:
    step = StepReactor()
    transport = ZeroconfTransport(step)
    transport._announce("n", "s.local.", b"\x03v=1", ["127.0.0.1"], 7010)
    transport._stop()
    transport._pending = 1
    transport._deliver(b"late")  # nobody to tell: nothing happens


def test_start_announce_and_stop_run_their_calls_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    transport = ZeroconfTransport(StepReactor())
    calls: list[tuple[Any, tuple[Any, ...]]] = []

    def serial(call: Any, *args: Any) -> Any:
        calls.append((call, args))
        return defer.succeed(None)

    monkeypatch.setattr(transport, "_serial", serial)
    heard: list[Any] = []
    transport.start(("127.0.0.1",), "_t._tcp.local.", lambda t, b: heard.append(t))
    transport.announce("n", "s.local.", b"txt", ("127.0.0.1",), 7010)
    transport._deliver(b"found")
    transport.stop()
    transport._deliver(b"after stop")
    assert calls == [
        (transport._start, (["127.0.0.1"],)),
        (transport._announce, ("n", "s.local.", b"txt", ["127.0.0.1"], 7010)),
        (transport._stop, ()),
    ]
    assert heard == [b"found"]


def test_start_checks_each_interface_then_browses_on_them_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    zeroconf_module = pytest.importorskip("zeroconf")
    made: list[Any] = []

    def fake_zeroconf(interfaces: Any) -> Any:
        made.append(("zeroconf", interfaces))
        return Zeroconf()

    def fake_browser(zc: Any, service_type: str, handlers: Any) -> Any:
        made.append(("browser", zc, service_type, handlers))
        return Browser()

    monkeypatch.setattr(zeroconf_module, "Zeroconf", fake_zeroconf)
    monkeypatch.setattr(zeroconf_module, "ServiceBrowser", fake_browser)
    transport = ZeroconfTransport(StepReactor())
    transport._service_type = "_t._tcp.local."
    with pytest.raises(MdnsUnavailable, match=r"192\.0\.2\.1"):
        transport._start(["127.0.0.1", "192.0.2.1"])
    assert made == []
    transport._start(["127.0.0.1"])
    assert made[0] == ("zeroconf", ["127.0.0.1"])
    _, zc, service_type, handlers = made[1]
    assert isinstance(zc, Zeroconf) and service_type == "_t._tcp.local."
    assert handlers == [transport._changed]
    browser = transport._browser
    transport._stop()  # what it started, it stops
    assert (browser.cancelled, zc.closed) == (1, 1)


def test_the_first_announcement_registers_later_ones_update() -> None:
    pytest.importorskip("zeroconf")
    transport = ZeroconfTransport(StepReactor())
    transport._service_type = "_t._tcp.local."
    for _ in range(2):  # started, announced twice, stopped; then again
        zeroconf, browser = Zeroconf(), Browser()
        transport._zeroconf, transport._browser = zeroconf, browser
        for port in (7010, 7011):
            transport._announce(
                "n._t._tcp.local.", "s.local.", b"\x03v=1", ["127.0.0.1"], port
            )
        assert [kind for kind, _ in zeroconf.services] == ["register", "update"]
        assert zeroconf.services[1][1].port == 7011
        info = zeroconf.services[0][1]
        assert (info.type, info.name, info.server, info.port, info.text) == (
            "_t._tcp.local.",
            "n._t._tcp.local.",
            "s.local.",
            7010,
            b"\x03v=1",
        )
        assert info.parsed_addresses() == ["127.0.0.1"]
        transport._stop()
        assert (browser.cancelled, zeroconf.closed) == (1, 1)
        transport._stop()  # twice: nothing more to close
        assert (browser.cancelled, zeroconf.closed) == (1, 1)
        transport._announce("n._t._tcp.local.", "s.local.", b"", ["127.0.0.1"], 1)
        assert len(zeroconf.services) == 2  # stopped: not announced


@pytest_twisted.ensureDeferred
async def test_the_transports_threads_are_named() -> None:
    transport = ZeroconfTransport(reactor)
    names: list[str] = []
    await transport._serial(lambda: names.append(threading.current_thread().name))
    await until(lambda: bool(names))
    assert names == ["blueprint-mdns"]
