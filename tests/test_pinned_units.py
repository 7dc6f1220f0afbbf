"""Unit-level behaviour that mutation testing found unpinned in the policy,
the peer table and the backends (``docs/testing.md``)."""

from __future__ import annotations

import ipaddress
from typing import cast

import attrs
import pytest
from twisted.internet.task import Clock

from blueprint_net._adapters.peers import PeerTable
from blueprint_net._adapters.protocol import PeerProtocol
from blueprint_net._core import signatures
from blueprint_net._core.errors import ErrorCode
from blueprint_net._core.handshake import Handshake
from blueprint_net._core.identity import Identity, PeerId
from blueprint_net._core.messaging import Requests
from blueprint_net._policy.bans import Ban, BanRegistry, Origin
from blueprint_net._policy.limits import TokenBucket
from blueprint_net._policy.scores import Policy

# -- signature backends -------------------------------------------------------


@pytest.mark.parametrize("name", signatures.available_backends())
def test_a_fresh_backend_signs_verifies_and_refuses(name: str) -> None:
    """A new instance, not the cached one: its own setup is what runs."""
    backend: signatures.ISignatureBackend = {
        "pynacl": signatures.NaClBackend,
        "ed25519": signatures.Ed25519Backend,
    }[name]()
    public, key = backend.load(bytes(range(32)))
    signature = backend.sign(key, b"m")
    assert backend.verify(public, b"m", signature)
    assert not backend.verify(public, b"n", signature)  # bad signature: False
    assert not backend.verify(public, b"m", signature[:10])  # malformed: False


# -- the handshake ------------------------------------------------------------


def test_a_local_failure_is_recorded(alice: Identity) -> None:
    handshake = Handshake(alice, initiator=True)
    handshake.start()
    failure = handshake.timed_out()
    assert failure.code is ErrorCode.HANDSHAKE_TIMEOUT
    assert handshake.failure is failure


# -- request ids --------------------------------------------------------------


def test_abandoning_an_unknown_request_is_harmless() -> None:
    requests: Requests[str] = Requests()
    assert requests.abandon(12345) is None


# -- scores -------------------------------------------------------------------


def test_a_host_that_is_not_an_address_has_no_score() -> None:
    assert Policy(BanRegistry(Clock())).score("not-an-address") == 0.0


def test_a_ban_starts_the_score_afresh_and_says_why(alice: Identity) -> None:
    policy = Policy(BanRegistry(Clock()))
    policy.misbehaved(None, alice.peer_id, ErrorCode.BAD_SIGNATURE)
    [ban] = policy.misbehaved(None, alice.peer_id, ErrorCode.WRONG_KEY)
    assert "WRONG_KEY" in ban.reason
    assert policy.score(alice.peer_id) == 0.0


# -- token buckets ------------------------------------------------------------


def test_a_bucket_is_full_once_refilled_at_its_rate() -> None:
    bucket = TokenBucket(rate=4.0, burst=2, now=100.0)
    assert bucket.take(100.0)  # one token left
    assert not bucket.full(100.2)  # 1 + 0.8
    assert bucket.full(100.25)  # 1 + 4 * 0.25


# -- the ban registry ---------------------------------------------------------


def test_change_callbacks_say_whether_a_ban_was_lifted() -> None:
    registry = BanRegistry(Clock())
    seen: list[tuple[str, bool]] = []
    registry.on_change(lambda ban, lifted: seen.append((str(ban.target), lifted)))
    registry.ban("192.0.2.0/24", "test")
    assert registry.unban("192.0.2.0/24")
    assert seen == [("192.0.2.0/24", False), ("192.0.2.0/24", True)]


def test_unbanning_what_is_not_banned_is_false_and_leaves_nothing() -> None:
    registry = BanRegistry(Clock())
    assert not registry.unban("192.0.2.0/24")  # no ban of that prefix length
    registry.ban("192.0.2.0/24", "test")
    assert not registry.unban("198.51.100.0/24")  # same length, other network
    assert registry.unban("192.0.2.0/24")
    assert registry._networks == {}  # no empty index left behind


def test_reconcile_counts_each_change_and_announces_active_bans(
    alice: Identity, bob: Identity
) -> None:
    clock = Clock()
    clock.advance(1000.0)
    registry = BanRegistry(clock)
    announced: list[Ban] = []
    registry.on_ban(announced.append)
    kept = registry.ban(alice.peer_id, "kept")
    registry.ban("192.0.2.0/24", "dropped by the other writer")
    announced.clear()
    new = Ban(bob.peer_id, "new", 990.0, Origin.MANUAL, 2000.0)
    net = ipaddress.ip_network("198.51.100.0/24")
    expired = Ban(net, "expired", 10.0, Origin.MANUAL, 20.0)
    assert registry.reconcile([kept, new, expired]) == 3  # one gone, two new
    assert sorted(map(str, (b.target for b in registry._every()))) == sorted(
        [str(alice.peer_id), str(bob.peer_id), "198.51.100.0/24"]
    )
    assert announced == [new]  # the expired one no longer applies
    assert registry.reconcile([kept, new, expired]) == 0


# -- the peer table -----------------------------------------------------------


@attrs.define(eq=False)
class _Conn:
    """What the peer table reads of a connection."""

    peer_id: PeerId
    session_key: bytes


def _conn(peer: PeerId, key: bytes) -> PeerProtocol:
    return cast(PeerProtocol, _Conn(peer, key))


def test_the_peer_table_keeps_one_connection_per_peer(alice: Identity) -> None:
    table = PeerTable()
    first, better, worse = (_conn(alice.peer_id, k) for k in (b"m", b"a", b"z"))
    for conn in (first, better, worse):
        table.opened(conn)
    assert table.budget(alice.peer_id) is None  # not verified yet
    bucket = TokenBucket(1.0, 1, 0.0)
    outcome = table.verified(first, bucket)
    assert (outcome.new, outcome.dropped) == (True, None)
    outcome = table.verified(better, None)  # the smaller key wins: replaces
    assert (outcome.new, outcome.dropped) == (False, first)
    outcome = table.verified(worse, None)  # loses: the newcomer is dropped
    assert (outcome.new, outcome.dropped) == (False, worse)
    assert table[alice.peer_id] is better
    assert table.budget(alice.peer_id) is bucket  # the first one's, kept
    assert table.connections_of(alice.peer_id) == 3
    assert not table.closed(worse) and table.closed(better)
    assert table.get(alice.peer_id) is None
