"""LAN discovery's bounds and edges (``_adapters/mdns.py``), pinned exactly:
each outcome counted once per find (never reset), which records the
``max_records`` bound keeps, the announcement's one-at-a-time rule and its
hosts and port, the logs' fields, and the zeroconf transport's calls with
zeroconf and the reactor stubbed (no thread of zeroconf's, no network)."""

from __future__ import annotations

import hashlib
import sys
from typing import Any, Optional

import attrs
import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.logger import formatEvent
from zope.interface import implementer

from blueprint_net import Identity, Node
from blueprint_net._adapters.mdns import MdnsService, server_name
from blueprint_net._adapters.mdns_zeroconf import (
    Found,
    IMdnsTransport,
    MdnsUnavailable,
    ZeroconfTransport,
    check_local,
    require_zeroconf,
)
from blueprint_net._core import mdns_txt
from blueprint_net._core.records import PeerRecord, sign_record
from blueprint_net._policy.mdns import DEFAULTS, MdnsSettings
from tests.helpers import MakeNode


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
        self.found(txt, {"busy": busy} if busy else {})


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
    """Records over the rate wait and are verified later (tested beside the
    rate in test_mdns.py); here every record has a token."""
    r = rig(rate=1.0, burst=10)
    oversize = b"\xff" + b"x" * 255 + (b"\xfe" + b"y" * 254) * 5
    for txt in (oversize, oversize, b"\x03v=2", b"\x03v=2"):
        r.transport.hear(txt)
    r.transport.hear(None, busy=3)
    r.transport.hear(None, busy=2)
    forged = attrs.evolve(_record(3), addresses=("127.0.0.9:7010",))
    r.transport.hear(forged)
    r.transport.hear(_record(2))
    r.transport.hear(_record(4))
    counts = {
        o: r.count(o) for o in ("oversize", "malformed", "busy", "forged", "kept")
    }
    assert counts == {"oversize": 2, "malformed": 2, "busy": 5, "forged": 1, "kept": 2}


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
