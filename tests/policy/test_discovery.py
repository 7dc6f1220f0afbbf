"""Discovery's pure decisions (``_policy/discovery.py``), and the gossip
figures on the status page, over the in-memory network."""

from __future__ import annotations

import ipaddress
import random
from typing import Any

from twisted.internet import defer, task

from blueprint_net import Identity
from blueprint_net._adapters.connection_manager import ConnectionManager
from blueprint_net._core.errors import ConnectFailed
from blueprint_net._core.records import PeerRecord, sign_record
from blueprint_net._ops.status import prometheus, snapshot
from blueprint_net._policy.addresses import format_address
from blueprint_net._policy.discovery import (
    DialRate,
    DiscoverySettings,
    Scope,
    advertised,
    bootstrap_due,
    description,
    dial_scopes,
    dial_targets,
    evict_inbound,
    own_hosts,
    prefer_diverse,
    scope,
)
from blueprint_net.testing import MemoryNetwork
from tests.helpers import MakeNode

PUBLIC = frozenset({Scope.PUBLIC})


def test_wildcards_are_never_advertised_and_loopback_only_alone() -> None:
    assert advertised([("0.0.0.0", 7010), ("::", 7011)]) == []
    assert advertised([("127.0.0.1", 7010)]) == ["127.0.0.1:7010"]
    both = [("127.0.0.1", 7010), ("192.0.2.5", 7010), ("2001:db8::1", 7012)]
    assert advertised(both) == ["192.0.2.5:7010", "[2001:db8::1]:7012"]
    assert Scope.LOOPBACK in dial_scopes(["127.0.0.1", "::1"])
    assert Scope.LOOPBACK not in dial_scopes(["127.0.0.1", "192.0.2.5"])
    assert Scope.LOOPBACK not in dial_scopes([])  # listens nowhere: not loopback


def test_a_record_is_dialed_only_at_addresses_it_may_be() -> None:
    record = sign_record(
        Identity.generate(),
        1,
        ["0.0.0.0:1", "127.0.0.1:2", "192.0.2.5:3", "[2001:db8::1]:4"],
    )
    assert dial_targets(record, PUBLIC) == [("192.0.2.5", 3), ("2001:db8::1", 4)]
    assert ("127.0.0.1", 2) in dial_targets(record, dial_scopes(["127.0.0.1"]))
    assert description("2001:db8::1", 4) == r"p2ptls:host=2001\:db8\:\:1:port=4"


NEVER = [
    "localhost",  # a name: never resolved for a stranger
    "metadata.google.internal",
    "node.example.com",
    "169.254.169.254",  # cloud metadata, and all of link-local
    "169.254.7.1",
    "fd00:ec2::254",  # AWS's IPv6 metadata (inside the ULA range)
    "fe80::1",
    "0.0.0.0",
    "::",
    "224.0.0.1",
    "ff02::1",
    "255.255.255.255",
    "100.100.100.200",  # Alibaba Cloud's metadata (inside 100.64/10)
    "168.63.129.16",  # Azure's platform endpoint
    "::ffff:169.254.169.254",  # IPv4-mapped: the carried address's scope
    # IPv6 forms that carry an IPv4 address past a gateway: never
    "::a9fe:a9fe",  # IPv4-compatible
    "::2",
    "::ffff:0:a9fe:a9fe",  # SIIT
    "64:ff9b::a9fe:a9fe",  # NAT64
    "64:ff9b:1::a9fe:a9fe",  # local-use NAT64
    "2002:a9fe:a9fe::1",  # 6to4
]
PRIVATE = ["10.1.2.3", "172.16.0.9", "192.168.1.1", "100.64.0.1", "fd12::1"]
LOOPBACK = ["127.0.0.1", "127.66.0.5", "::1", "::ffff:127.0.0.1"]


def test_addresses_are_scoped_by_range_and_names_are_never_dialed() -> None:
    for host in NEVER:
        assert scope(host) is Scope.NEVER, host
    for host in PRIVATE:
        assert scope(host) is Scope.PRIVATE, host
    for host in LOOPBACK:
        assert scope(host) is Scope.LOOPBACK, host
    for host in ["192.0.2.5", "8.8.8.8", "2001:db8::1", "::ffff:8.8.8.8"]:
        assert scope(host) is Scope.PUBLIC, host


def test_each_scope_is_dialed_only_by_a_node_in_it() -> None:
    addresses = [f"[{h}]:7" if ":" in h else f"{h}:7" for h in NEVER + PRIVATE]
    addresses += ["127.0.0.1:7", "[::1]:7", "8.8.8.8:7"]
    records = [
        sign_record(Identity.generate(), 1, addresses[i : i + 8])
        for i in range(0, len(addresses), 8)
    ]

    def targets(own: list[str]) -> set[str]:
        scopes = dial_scopes(own)
        return {h for r in records for h, _ in dial_targets(r, scopes)}

    public = targets(["198.51.100.7"])  # a node on the Internet
    assert public == {"8.8.8.8"}
    assert targets(["0.0.0.0"]) == {"8.8.8.8"}  # a wildcard is not private
    assert targets(["198.51.100.7", "10.0.0.2"]) == {"8.8.8.8", *PRIVATE}
    assert targets(["127.0.0.1"]) == {"8.8.8.8", "127.0.0.1", "::1"}
    assert targets(["127.0.0.1", "198.51.100.7"]) == {"8.8.8.8"}


def test_dials_to_one_host_are_bounded_whatever_its_spelling() -> None:
    """An attacker review split records between ``127.99.0.1`` and
    ``::ffff:127.99.0.1`` (the same host) and got twice the dials."""
    rate = DialRate(2, 60.0)
    rate.dialed("203.0.113.9", 0.0)
    rate.dialed("::ffff:203.0.113.9", 0.0)
    for spelling in ("203.0.113.9", "::ffff:203.0.113.9", "::ffff:cb00:7109"):
        assert not rate.allows(spelling, 1.0), spelling
    rate.dialed("2001:db8::0001", 0.0)
    rate.dialed("2001:0db8:0:0::1", 0.0)
    assert not rate.allows("2001:db8::1", 1.0)
    assert rate.allows("2001:db8::2", 1.0)


def test_dials_to_one_host_are_bounded_per_window_whatever_the_port() -> None:
    rate = DialRate(2, 60.0)
    for now in (0.0, 1.0):
        assert rate.allows("203.0.113.9", now)
        rate.dialed("203.0.113.9", now)
    assert not rate.allows("203.0.113.9", 30.0)
    assert rate.allows("203.0.113.10", 30.0)  # another host
    assert rate.allows("203.0.113.9", 60.0)  # the first dial left the window
    small = DialRate(1, 60.0, limit=2)
    for host in ("a", "b", "c"):
        small.dialed(host, 0.0)
    assert small.allows("a", 0.0) and not small.allows("c", 0.0)  # bounded


def test_the_bootstrap_is_due_whenever_outbound_peers_are_few() -> None:
    settings = DiscoverySettings(target_peers=8)
    assert [bootstrap_due(n, settings) for n in range(6)] == [True] * 4 + [False] * 2
    assert bootstrap_due(0, DiscoverySettings(target_peers=1))
    assert not bootstrap_due(1, DiscoverySettings(target_peers=1))


def test_inbound_eviction_takes_the_most_crowded_netgroup_first() -> None:
    settings = DiscoverySettings()
    inbound = [(f"sybil{i}", settings.netgroup(f"127.66.0.{i}")) for i in range(20)]
    inbound += [("honest", settings.netgroup("127.10.1.1"))]
    inbound += [("other", settings.netgroup("2001:db8:1::5"))]
    for seed in range(20):
        evicted = evict_inbound(inbound, 19, random.Random(seed))
        assert len(evicted) == len(set(evicted)) == 19
        assert all(key.startswith("sybil") for key in evicted)
    # Once the crowd is down to one a netgroup, every group loses in turn.
    assert len(evict_inbound(inbound, 22, random.Random(1))) == 22


def test_candidates_from_the_least_held_subnets_come_first() -> None:
    candidates = [(f"a{i}", f"192.0.2.{i}") for i in range(1, 6)]
    candidates.append(("b", "198.51.100.1"))
    connected = ["192.0.2.200"]
    for seed in range(10):
        chosen = prefer_diverse(candidates, connected, 2, random.Random(seed))
        assert chosen[0] == "b"  # the only subnet we hold no peer in
        assert len(chosen) == 2


def test_status_shows_topics_meshes_and_counts(net: MemoryNetwork) -> None:
    a = net.add_node(Identity.generate())
    b = net.add_node(Identity.generate())
    net.connect(a, b)
    got: list[bytes] = []
    a.subscribe('t"x', lambda message: None)
    b.subscribe('t"x', lambda message: got.append(message.data))
    net.advance(1.0)  # a heartbeat grafts
    a.publish('t"x', b"hello")
    net.pump()
    assert got == [b"hello"]
    status = snapshot(b, list)
    topic = status["gossip"]["topics"]['t"x']
    assert (topic["subscribed"], topic["mesh"], topic["delivered"]) == (True, 1, 1)
    assert snapshot(a, list)["gossip"]["topics"]['t"x']["published"] == 1
    text = prometheus(status)
    assert 'blueprint_topic_delivered_total{topic="t\\"x"} 1' in text
    assert 'blueprint_topic_mesh{topic="t\\"x"} 1' in text
    assert "blueprint_gossip_connected_peers 1" in text


def _dials_in_a_minute(
    make_node: MakeNode, advertise: str, addresses: list[list[str]]
) -> list[str]:
    """The endpoints a manager on a ``task.Clock`` dials in one minute (a
    round at 0 s, then one a second) from records at ``addresses``; every
    dial fails at once (stubbed: nothing is sent)."""
    clock = task.Clock()
    node = make_node(Identity.generate(), clock=clock)
    dials: list[str] = []

    def connect(endpoint: Any, peer_id: Any = None) -> defer.Deferred[Any]:
        dials.append(str(endpoint))
        return defer.fail(ConnectFailed("refused (stubbed)"))

    node.connect = connect  # type: ignore[method-assign]
    for each in addresses:
        node.gossip.records.offer(sign_record(Identity.generate(), 1, each))
    manager = ConnectionManager(
        node, DiscoverySettings(), advertise=[advertise], rng=random.Random(1)
    )
    manager.startService()
    try:
        for _ in range(59):
            clock.advance(1.0)
    finally:
        manager.stopService()
    return dials


def test_records_aimed_at_one_host_buy_a_bounded_number_of_dials(
    make_node: MakeNode,
) -> None:
    """480 records with fresh ids pointing at one third party (a port each)
    make a node dial it at most ``dials_per_host`` times a minute."""
    aimed = [[f"203.0.113.9:{1024 + n}"] for n in range(480)]
    dials = _dials_in_a_minute(make_node, "198.51.100.7:7010", aimed)
    assert len(dials) == DiscoverySettings().dials_per_host == 2
    assert all("host=203.0.113.9:" in dial for dial in dials)


def test_names_link_local_metadata_and_out_of_scope_addresses_are_not_dialed(
    make_node: MakeNode,
) -> None:
    """A node on a public address (not loopback-only, not on a LAN) dials
    none of these from strangers' records, only the public one."""
    hostile = [
        ["localhost:7010"],
        ["metadata.google.internal:80"],
        ["169.254.169.254:80"],
        ["[fd00:ec2::254]:80"],
        ["[fe80::1]:7010"],
        ["127.0.0.1:7010"],
        ["10.0.0.5:7010"],
        ["192.168.1.9:7010"],
        ["100.64.1.1:7010"],
        ["[fd12::1]:7010"],
        ["192.0.2.44:7010"],
    ]
    dials = _dials_in_a_minute(make_node, "198.51.100.7:7010", hostile)
    assert set(dials) == {r"p2ptls:host=192.0.2.44:port=7010"}
    # On a LAN, the LAN's private ranges are dialed (not loopback, not names).
    lan = _dials_in_a_minute(make_node, "10.0.0.2:7010", hostile)
    assert set(lan) == {
        r"p2ptls:host=10.0.0.5:port=7010",
        r"p2ptls:host=192.168.1.9:port=7010",
        r"p2ptls:host=100.64.1.1:port=7010",
        r"p2ptls:host=fd12\:\:1:port=7010",
        r"p2ptls:host=192.0.2.44:port=7010",
    }


# -- the settings' derived figures and the small decisions, at their bounds -----


def test_the_inbound_and_bootstrap_caps() -> None:
    assert DiscoverySettings(target_peers=5).inbound_cap == 15
    assert DiscoverySettings(target_peers=5, max_inbound=7).inbound_cap == 7
    assert DiscoverySettings(target_peers=5, max_inbound=0).inbound_cap == 0
    assert DiscoverySettings(target_peers=9).bootstrap_cap == 4
    assert DiscoverySettings(target_peers=1).bootstrap_cap == 1
    assert DiscoverySettings(target_peers=0).bootstrap_cap == 1
    assert DiscoverySettings(target_peers=8, bootstrap_below=6).bootstrap_cap == 6
    assert DiscoverySettings(target_peers=8, bootstrap_below=0).bootstrap_cap == 0
    # Never past the target, however high bootstrap_below is set.
    high = DiscoverySettings(target_peers=2, bootstrap_below=5)
    assert [bootstrap_due(n, high) for n in range(4)] == [True, True, False, False]
    assert not bootstrap_due(0, DiscoverySettings(bootstrap_below=0))


def test_netgroups_are_a_24_a_48_or_the_name() -> None:
    settings = DiscoverySettings()
    assert settings.netgroup("192.0.2.77") == ipaddress.ip_network("192.0.2.0/24")
    assert settings.netgroup("2001:db8:1:2::5") == ipaddress.ip_network(
        "2001:db8:1::/48"
    )
    assert settings.netgroup("node.example") == "node.example"
    wide = DiscoverySettings(netgroup_ipv4_prefix=16, netgroup_ipv6_prefix=32)
    assert wide.netgroup("192.0.2.77") == ipaddress.ip_network("192.0.0.0/16")
    assert wide.netgroup("2001:db8:1:2::5") == ipaddress.ip_network("2001:db8::/32")


def test_advertised_addresses_are_deduplicated_and_at_most_eight() -> None:
    listening = [(f"192.0.2.{n}", 7010) for n in range(1, 11)]
    assert advertised(listening) == [f"192.0.2.{n}:7010" for n in range(1, 9)]
    twice = [("192.0.2.1", 1), ("192.0.2.1", 1), ("::1", 2), ("::1", 2)]
    assert advertised(twice) == ["192.0.2.1:1"]
    assert advertised([("::1", 2), ("::1", 2), ("0.0.0.0", 3)]) == ["[::1]:2"]
    assert advertised([("node.example", 5)]) == ["node.example:5"]
    assert format_address("::1", 5) == "[::1]:5"
    assert format_address("192.0.2.1", 5) == "192.0.2.1:5"
    assert description("192.0.2.1", 5) == "p2ptls:host=192.0.2.1:port=5"


def test_own_hosts_are_the_listeners_then_the_parsable_addresses() -> None:
    hosts = own_hosts(
        ["192.0.2.1:7", "not an address", "[2001:db8::1]:8", "node.example:9"],
        [("10.0.0.1", 7010), ("127.0.0.1", 7011)],
    )
    assert hosts == [
        "10.0.0.1",
        "127.0.0.1",
        "192.0.2.1",
        "2001:db8::1",
        "node.example",
    ]
    assert own_hosts([]) == []
    assert dial_scopes(["10.0.0.1"]) == {Scope.PUBLIC, Scope.PRIVATE}
    assert dial_scopes(["node.example"]) == {Scope.PUBLIC}
    assert dial_scopes(["::1"]) == {Scope.PUBLIC, Scope.LOOPBACK}


def test_a_records_unparsable_addresses_are_skipped_not_the_rest() -> None:
    record = PeerRecord(
        Identity.generate().peer_id,
        1,
        ("192.0.2.1:0", "nonsense", "192.0.2.2:5", "192.0.2.3:6"),
        b"",
    )
    assert dial_targets(record, PUBLIC) == [("192.0.2.2", 5), ("192.0.2.3", 6)]
    assert dial_targets(record, frozenset()) == []


def test_the_dial_rate_forgets_the_longest_idle_host_first() -> None:
    rate = DialRate(1, 60.0, limit=2)
    rate.dialed("a", 0.0)
    rate.dialed("b", 1.0)
    rate.dialed("a", 2.0)  # a is now the most recent
    rate.dialed("c", 3.0)  # over the limit: b goes, not a
    assert rate.allows("b", 3.0)
    assert not rate.allows("a", 3.0) and not rate.allows("c", 3.0)
    # A dial's window ends exactly ``window`` seconds later.
    one = DialRate(1, 60.0)
    one.dialed("h", 0.0)
    assert not one.allows("h", 59.999)
    assert one.allows("h", 60.0)
    one.dialed("h", 60.0)
    one.dialed("h", 61.0)
    assert not one.allows("h", 120.5)  # 61 s is still in it


def test_eviction_stops_at_the_count_or_when_nobody_is_left() -> None:
    inbound = [("a", 1), ("b", 1), ("c", 2)]
    assert sorted(evict_inbound(inbound, 5, random.Random(3))) == ["a", "b", "c"]
    assert evict_inbound(inbound, 0, random.Random(3)) == []
    assert evict_inbound([], 2, random.Random(3)) == []
    for seed in range(10):
        assert evict_inbound(inbound, 1, random.Random(seed))[0] in ("a", "b")
        two = evict_inbound(inbound, 2, random.Random(seed))
        assert len(two) == 2 and two[0] in ("a", "b")
    # Two groups of equal size: either may lose first, and both do over seeds.
    firsts = {
        evict_inbound([("x", 1), ("y", 2)], 1, random.Random(s))[0] for s in range(20)
    }
    assert firsts == {"x", "y"}


def test_diversity_counts_the_candidates_already_chosen() -> None:
    candidates = [("a1", "192.0.2.1"), ("a2", "192.0.2.2"), ("b1", "198.51.100.1")]
    for seed in range(10):
        chosen = prefer_diverse(candidates, [], 2, random.Random(seed))
        assert "b1" in chosen and len(chosen) == 2
        assert sorted(prefer_diverse(candidates, [], 9, random.Random(seed))) == [
            "a1",
            "a2",
            "b1",
        ]
        assert prefer_diverse(candidates, [], 0, random.Random(seed)) == []
    # Coarser prefixes: 192.0.2.x and 192.0.3.x are one /16.
    by_16 = DiscoverySettings(netgroup_ipv4_prefix=16).netgroup
    by_32 = DiscoverySettings(netgroup_ipv6_prefix=32).netgroup
    wide = [("a", "192.0.2.1"), ("b", "192.0.3.1"), ("c", "198.51.100.1")]
    for seed in range(10):
        chosen = prefer_diverse(
            wide, ["192.0.9.9"], 1, random.Random(seed), netgroup=by_16
        )
        assert chosen == ["c"]
    v6 = [("a", "2001:db8:1::1"), ("b", "2001:db8:2::1"), ("c", "2001:db9::1")]
    held = ["2001:db8:1::9"]
    assert {prefer_diverse(v6, held, 1, random.Random(s))[0] for s in range(20)} == {
        "b",
        "c",
    }
    for seed in range(20):
        chosen = prefer_diverse(v6, held, 1, random.Random(seed), netgroup=by_32)
        assert chosen == ["c"]


def test_each_choice_counts_towards_its_subnet() -> None:
    """A subnet we already hold a peer in, and one we chose a candidate in,
    weigh alike: three picks from two subnets (one held) take two of the
    other, whatever the order of equals."""
    candidates = [
        ("a1", "192.0.2.1"),
        ("a2", "192.0.2.2"),
        ("b1", "198.51.100.1"),
        ("b2", "198.51.100.2"),
    ]
    for seed in range(20):
        chosen = prefer_diverse(candidates, ["192.0.2.200"], 3, random.Random(seed))
        assert sorted(key[0] for key in chosen) == ["a", "b", "b"], seed


def test_dial_rate_windows_hold_at_real_clock_times() -> None:
    """Times as a real clock gives them (seconds since 1970), not near 0."""
    now = 1_700_000_000.0
    rate = DialRate(2, 60.0)
    rate.dialed("203.0.113.9", now)
    rate.dialed("203.0.113.9", now + 1)
    assert not rate.allows("203.0.113.9", now + 2)
    assert rate.allows("203.0.113.9", now + 60)
    assert DialRate(1, 1.0).limit == 4096  # hosts held by default


def test_prefer_diverse_counts_each_choice_once_and_groups_ipv6_by_48() -> None:
    """Three held peers in B: three candidates of A go first, one by one
    (each choice adds one to A's count, never reaching B's three)."""
    held = ["192.0.2.1", "192.0.2.2", "192.0.2.3"]  # B = 192.0.2.0/24
    pool = [(f"a{n}", f"198.51.100.{n}") for n in range(3)] + [("b", "192.0.2.9")]
    for seed in range(5):
        chosen = prefer_diverse(pool, held, 3, random.Random(seed))
        assert sorted(chosen) == ["a0", "a1", "a2"], seed
    # IPv6 groups by /48 by default: two hosts in one /48 but different
    # /49s count as one subnet, so the other /48 goes first.
    v6_held = ["2001:db8:1::1"]
    v6_pool = [("same48", "2001:db8:1:8000::1"), ("other48", "2001:db8:2::1")]
    for seed in range(5):
        assert prefer_diverse(v6_pool, v6_held, 1, random.Random(seed)) == ["other48"]


def test_each_candidates_netgroup_is_asked_once() -> None:
    """A node may offer a thousand candidates a tick, and a netgroup parses
    an address: each is asked once, not once per candidate per pick."""
    asked: list[str] = []

    def netgroup(host: str) -> str:
        asked.append(host)
        return host.rsplit(".", 1)[0]

    candidates = [(n, f"192.0.{n % 7}.{n}") for n in range(100)]
    chosen = prefer_diverse(
        candidates, ["192.0.0.200"], 8, random.Random(3), netgroup=netgroup
    )
    assert len(chosen) == 8 and len({c % 7 for c in chosen}) >= 6
    assert sorted(asked) == sorted(["192.0.0.200", *(h for _, h in candidates)])
