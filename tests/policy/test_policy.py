"""Admission rules: misbehaviour scores, automatic bans, allow-lists and
permissioned mode, on a fake clock."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from blueprint_net._core.errors import ErrorCode, HandshakeFailed
from blueprint_net._core.identity import Identity
from blueprint_net._policy.bans import Ban, BanRegistry, Origin
from blueprint_net._policy.scores import Policy, PolicySettings

PEER = Identity(bytes(range(32))).peer_id
OTHER = Identity(bytes(range(32, 64))).peer_id
HOST = "192.0.2.10"


def _policy(clock: Clock, **settings: float) -> Policy:
    return Policy(BanRegistry(clock), PolicySettings(**settings))  # type: ignore[arg-type]


def test_repeated_violations_ban_the_address_and_the_proven_id() -> None:
    clock = Clock()
    policy = _policy(clock)
    assert policy.misbehaved(HOST, PEER, ErrorCode.TRUNCATED) == []  # 20 points
    assert policy.misbehaved(HOST, PEER, ErrorCode.BAD_SIGNATURE) == []  # 70
    bans = policy.misbehaved(HOST, PEER, ErrorCode.WRONG_KEY)  # 120 >= 100
    assert {str(b.target) for b in bans} == {f"{HOST}/32", str(PEER)}
    assert all(b.origin is Origin.AUTOMATIC for b in bans)
    assert all(b.expires == 3600.0 for b in bans)
    assert policy.refuse_address(HOST) is not None
    with pytest.raises(HandshakeFailed) as refused:
        policy.authorize(PEER)
    assert refused.value.code is ErrorCode.BANNED


def test_an_unproven_id_is_never_scored() -> None:
    """Garbage sent under a claimed id must not get that id's owner banned:
    the node passes no peer id until the handshake proved it."""
    policy = _policy(Clock())
    for _ in range(10):
        policy.misbehaved(HOST, None, ErrorCode.UNEXPECTED_MESSAGE)
    assert policy.bans.peer_ban(PEER) is None
    assert policy.refuse_address(HOST) is not None


def test_scores_decay_with_their_half_life() -> None:
    clock = Clock()
    policy = _policy(clock, score_half_life=100.0)
    policy.misbehaved(HOST, None, ErrorCode.BAD_SIGNATURE)
    assert policy.score(HOST) == pytest.approx(50)
    clock.advance(100)
    assert policy.score(HOST) == pytest.approx(25)
    clock.advance(10_000)
    policy.misbehaved(HOST, None, ErrorCode.BAD_SIGNATURE)  # ~50 again: no ban
    assert policy.refuse_address(HOST) is None
    assert policy.score(HOST) == pytest.approx(50, abs=0.01)


def test_repeat_offenders_are_banned_longer_up_to_a_cap() -> None:
    clock = Clock()
    policy = _policy(clock, ban_duration=100.0, max_ban_duration=350.0)
    durations = []
    for _ in range(4):
        bans: list[Ban] = []
        while not bans:
            bans = policy.misbehaved(HOST, None, ErrorCode.BAD_SIGNATURE)
        [ban] = bans
        assert ban.expires is not None
        durations.append(ban.expires - clock.seconds())
        clock.advance(ban.expires - clock.seconds())  # served its time
        assert policy.refuse_address(HOST) is None
    assert durations == [100.0, 200.0, 350.0, 350.0]


def test_ipv6_offenders_are_scored_by_network() -> None:
    policy = _policy(Clock())
    for suffix in ("1", "2"):  # two addresses of one /64: one offender
        policy.misbehaved(f"2001:db8:0:1::{suffix}", None, ErrorCode.BAD_SIGNATURE)
    assert policy.refuse_address("2001:db8:0:1::ffff") is not None
    assert policy.refuse_address("2001:db8:0:2::1") is None


def test_the_allow_list_is_never_banned_automatically() -> None:
    policy = _policy(Clock())
    policy.set_allow_list([PEER], ["192.0.2.0/24"])
    for _ in range(10):
        assert policy.misbehaved(HOST, PEER, ErrorCode.BAD_SIGNATURE) == []
    assert policy.refuse_address(HOST) is None
    policy.authorize(PEER)  # not banned
    # A manual ban still applies to an allow-listed peer.
    policy.bans.ban(PEER, "operator says so")
    with pytest.raises(HandshakeFailed):
        policy.authorize(PEER)


def test_permissioned_mode_is_replaceable_while_running() -> None:
    policy = _policy(Clock())
    policy.authorize(OTHER)  # open by default
    policy.set_permitted([PEER])
    policy.authorize(PEER)
    with pytest.raises(HandshakeFailed) as refused:
        policy.authorize(OTHER)
    assert refused.value.code is ErrorCode.NOT_ALLOWED
    policy.set_permitted([OTHER])
    policy.authorize(OTHER)
    policy.set_permitted(None)
    policy.authorize(PEER)


def test_an_empty_permitted_list_admits_nobody() -> None:
    """``[]`` is permissioned mode with nobody on it; only ``None`` is off."""
    policy = _policy(Clock())
    policy.set_permitted([])
    assert policy.permitted == frozenset()
    for peer in (PEER, OTHER):
        with pytest.raises(HandshakeFailed) as refused:
            policy.authorize(peer)
        assert refused.value.code is ErrorCode.NOT_ALLOWED
    policy.set_permitted(None)
    policy.authorize(PEER)


def test_tracked_offenders_are_bounded() -> None:
    policy = _policy(Clock(), max_tracked=100)
    for i in range(1000):
        policy.misbehaved(f"10.0.{i // 256}.{i % 256}", None, ErrorCode.TRUNCATED)
    assert len(policy._scores) == 100
    assert policy.score("10.0.3.231") > 0  # the newest are kept
    assert policy.score("10.0.0.0") == 0


def test_charges_in_flight_when_a_ban_lands_do_not_escalate_it() -> None:
    """A forged burst: the first charges ban the id and the address for an
    hour; the rest of the burst, arriving while those bans stand, is the
    same offence and must neither re-ban nor double the duration."""
    clock = Clock()
    policy = _policy(clock)
    earned = []
    for _ in range(12):  # 50 points each: banned at the second
        earned += policy.misbehaved(HOST, PEER, ErrorCode.BAD_SIGNATURE)
    assert sorted(str(b.target) for b in earned) == sorted([f"{HOST}/32", str(PEER)])
    assert all(b.expires == 3600.0 for b in earned)
    assert policy.score(HOST) == 0.0
    clock.advance(3600)  # the bans expired: a new offence is a second one
    earned = policy.misbehaved(HOST, PEER, ErrorCode.BAD_SIGNATURE)
    earned += policy.misbehaved(HOST, PEER, ErrorCode.BAD_SIGNATURE)
    assert [b.expires for b in earned] == [3600.0 + 7200.0] * 2


def test_a_banned_address_is_not_scored_but_its_unbanned_peer_id_is() -> None:
    clock = Clock()
    policy = _policy(clock)
    policy.bans.ban(f"{HOST}/32", "by hand")
    assert policy.misbehaved(HOST, PEER, ErrorCode.BAD_SIGNATURE) == []
    assert policy.score(HOST) == 0.0
    assert policy.score(PEER) == 50.0
