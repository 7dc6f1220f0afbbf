"""LAN discovery with the real zeroconf, on loopback only: two nodes find
each other's signed records over mDNS and connect, and a forged record
announced there is counted and never dialed.

Every zeroconf here is restricted to ``127.0.0.1`` (``MdnsSettings
.interfaces``; a ``ZeroconfTransport`` is never made without interfaces):
nothing is sent on another interface.  Linux carries multicast on ``lo``
without its MULTICAST flag (``IP_MULTICAST_IF`` 127.0.0.1 with
``IP_MULTICAST_LOOP``), which is what these tests rely on.  Each test
browses a service type of its own, so tests running at once (two pytest
workers) do not see each other's nodes.
"""

from __future__ import annotations

import secrets
import threading
from typing import Any

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor

from blueprint_net import Identity, Node
from blueprint_net._adapters.mdns import instance_name, server_name
from blueprint_net._adapters.mdns_zeroconf import ZeroconfTransport
from blueprint_net._core import mdns_txt
from blueprint_net._core.records import sign_record
from blueprint_net._ops.service import NodeService
from blueprint_net._policy.mdns import MdnsSettings
from blueprint_net._policy.settings import Settings
from tests.helpers import until

zeroconf = pytest.importorskip("zeroconf", reason="the mdns extra is not installed")

LOOPBACK = ("127.0.0.1",)


def _settings() -> MdnsSettings:
    """Loopback only, and a service type no other test browses."""
    return MdnsSettings(
        interfaces=LOOPBACK, service_type=f"_bp{secrets.token_hex(4)}._tcp.local."
    )


def _service(mdns: MdnsSettings) -> NodeService:
    node = Node(Identity.generate(), reactor=reactor, settings=Settings())
    return NodeService(
        node,
        None,
        listen=["p2ptls:0:interface=127.0.0.1"],
        peers=[],
        status=None,
        mdns=mdns,
    )


def _threads() -> set[threading.Thread]:
    return set(threading.enumerate())


@pytest_twisted.ensureDeferred
async def test_two_nodes_on_loopback_find_each_other_and_connect() -> None:
    before = _threads()
    mdns = _settings()
    services = [_service(mdns), _service(mdns)]
    alice, bob = (s.node for s in services)
    try:
        for service in services:
            service.startService()
        await until(
            lambda: (
                alice.peer(bob.peer_id) is not None
                and bob.peer(alice.peer_id) is not None
            ),
            timeout=30,
        )
        # No bootstrap, no --peer: the first record came from mDNS, was
        # verified and dialed (the other node may have had it from that
        # connection first: then mDNS brought it news of nothing, "stale").
        kept = [n.counters["mdns.records.kept"] for n in (alice, bob)]
        assert sum(kept) >= 1
        assert sum(n.counters["discovery.dials"] for n in (alice, bob)) >= 1
        finder, found = (alice, bob) if kept[0] else (bob, alice)
        entry = finder.gossip.records.entry(found.peer_id)
        assert entry is not None and entry.source is None  # the LAN, no peer
        # Both hear each other on the LAN.
        await until(
            lambda: all(
                n.counters["mdns.records.kept"] + n.counters["mdns.records.stale"] >= 1
                for n in (alice, bob)
            ),
            timeout=30,
        )
    finally:
        for service in services:
            await service.stopService()
    # Stopped: every thread zeroconf and the service started has ended.
    await until(lambda: _threads() <= before)
    assert {t.name for t in _threads() - before} == set()


@pytest_twisted.ensureDeferred
async def test_a_forged_record_on_loopback_is_counted_and_not_dialed() -> None:
    before = _threads()
    mdns = _settings()
    service = _service(mdns)
    node = service.node
    forger = Identity.generate()
    record = sign_record(forger, 1, ["127.0.0.1:9"])
    forged = attrs.evolve(record, addresses=("127.0.0.1:10",))  # not what it signed
    transport = ZeroconfTransport(reactor)
    heard: list[Any] = []
    try:
        service.startService()
        await transport.start(LOOPBACK, mdns.service_type, lambda *a: heard.append(a))
        await transport.announce(
            instance_name(forger.peer_id, mdns.service_type),
            server_name(forger.peer_id),
            mdns_txt.pack(forged),
            ["127.0.0.1"],
            10,
        )
        await until(lambda: node.counters["mdns.records.forged"] >= 1, timeout=30)
        assert forger.peer_id not in node.gossip.records
        assert node.counters["discovery.dials"] == 0
    finally:
        await transport.stop()
        await service.stopService()
    await until(lambda: _threads() <= before)


def _crafted_ptr(service_type: str, name: str) -> Any:
    """An answer naming instance ``name`` (which zeroconf refuses to look up)."""
    import socket

    from zeroconf import const
    from zeroconf._dns import DNSAddress, DNSPointer, DNSService, DNSText
    from zeroconf._protocol.outgoing import DNSOutgoing

    c, unique = const._CLASS_IN, const._CLASS_IN | const._CLASS_UNIQUE
    out = DNSOutgoing(const._FLAGS_QR_RESPONSE | const._FLAGS_AA)
    for record in (
        DNSPointer(service_type, const._TYPE_PTR, c, 120, name),
        DNSService(name, const._TYPE_SRV, unique, 120, 0, 0, 9, "evil.local."),
        DNSText(name, const._TYPE_TXT, unique, 120, b"\x03v=1"),
        DNSAddress(
            "evil.local.", const._TYPE_A, unique, 120, socket.inet_aton("127.0.0.1")
        ),
    ):
        out.add_answer_at_time(record, 0)
    return out


@pytest_twisted.ensureDeferred
async def test_a_name_zeroconf_refuses_does_not_end_discovery_on_loopback() -> None:
    """One crafted answer (an instance name with a newline) made zeroconf
    raise in its browser thread's callback, which ended the thread: no
    record was heard after it.  Now it is counted, and browsing goes on."""
    before = _threads()
    mdns = _settings()
    service = _service(mdns)
    node = service.node
    forger = Identity.generate()
    forged = attrs.evolve(
        sign_record(forger, 1, ["127.0.0.1:9"]), addresses=("127.0.0.1:10",)
    )
    transport = ZeroconfTransport(reactor)  # the attacker's zeroconf
    try:
        service.startService()
        mdns_service = service.mdns
        assert mdns_service is not None
        await until(lambda: mdns_service._loop.running, timeout=30)
        await transport.start(LOOPBACK, mdns.service_type, lambda *a: None)
        bad = _crafted_ptr(mdns.service_type, f"<b>\n0.{mdns.service_type}")
        await transport._serial(lambda: transport._zeroconf.send(bad))
        await until(lambda: node.counters["mdns.records.malformed"] >= 1, timeout=30)
        # Still browsing: a record announced after it is heard (and refused).
        await transport.announce(
            instance_name(forger.peer_id, mdns.service_type),
            server_name(forger.peer_id),
            mdns_txt.pack(forged),
            ["127.0.0.1"],
            10,
        )
        await until(lambda: node.counters["mdns.records.forged"] >= 1, timeout=30)
    finally:
        await transport.stop()
        await service.stopService()
    await until(lambda: _threads() <= before)
