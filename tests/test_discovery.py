"""Discovery's pure decisions (``_policy/discovery.py``), and the gossip
figures on the status page, over the in-memory network."""

from __future__ import annotations

import random

from blueprint_net import Identity
from blueprint_net._core.records import sign_record
from blueprint_net._ops.status import prometheus, snapshot
from blueprint_net._policy.discovery import (
    Backoff,
    advertised,
    description,
    dial_targets,
    loopback_only,
    prefer_diverse,
)
from blueprint_net.testing import MemoryNetwork


def test_wildcards_are_never_advertised_and_loopback_only_alone() -> None:
    assert advertised([("0.0.0.0", 7010), ("::", 7011)]) == []
    assert advertised([("127.0.0.1", 7010)]) == ["127.0.0.1:7010"]
    both = [("127.0.0.1", 7010), ("192.0.2.5", 7010), ("2001:db8::1", 7012)]
    assert advertised(both) == ["192.0.2.5:7010", "[2001:db8::1]:7012"]
    assert loopback_only(["127.0.0.1:1", "[::1]:2"])
    assert not loopback_only(["127.0.0.1:1", "192.0.2.5:2"])


def test_a_record_is_dialed_only_at_addresses_it_may_be() -> None:
    record = sign_record(
        Identity.generate(),
        1,
        ["0.0.0.0:1", "127.0.0.1:2", "192.0.2.5:3", "[2001:db8::1]:4"],
    )
    assert dial_targets(record, loopback=False) == [
        ("192.0.2.5", 3),
        ("2001:db8::1", 4),
    ]
    assert ("127.0.0.1", 2) in dial_targets(record, loopback=True)
    assert description("2001:db8::1", 4) == r"p2ptls:host=2001\:db8\:\:1:port=4"


def test_backoff_doubles_with_jitter_and_forgets_on_success() -> None:
    backoff = Backoff(1.0, 8.0, random.Random(1))
    delays = [backoff.failed("peer", 0.0) for _ in range(6)]
    for count, delay in enumerate(delays):
        base = min(8.0, 2.0**count)
        assert 0.5 * base <= delay <= 1.5 * base
    assert not backoff.ready("peer", 0.0)
    backoff.succeeded("peer")
    assert backoff.ready("peer", 0.0)


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
