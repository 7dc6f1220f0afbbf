"""The router's bounded memories (``_core/gossip_caches.py``): the seen-cache
and its floor, the message cache's windows and byte bound, the rate limiter
at its boundaries and the set of recent keys (docs/protocol.md 9.4, 9.5)."""

from __future__ import annotations

from blueprint_net._core.gossip_caches import (
    ENTRY_OVERHEAD,
    MessageCache,
    RateLimiter,
    RecentSet,
    SeenCache,
)
from blueprint_net._core.gossip_wire import Publish
from blueprint_net._core.identity import Identity

NS = 10**9
ORIGIN = Identity((1).to_bytes(32, "big")).peer_id


def message(seqno: int, topic: str = "t", size: int = 100) -> Publish:
    """A publication (its signature is never checked here)."""
    return Publish(topic, ORIGIN, seqno, bytes(size), bytes(64))


# -- SeenCache ---------------------------------------------------------------


def test_the_seen_cache_remembers_each_id_once() -> None:
    seen = SeenCache(ttl=120.0, limit=2)
    seen.add(b"a", 10 * NS)
    seen.add(b"a", 10 * NS)
    seen.add(b"b", 20 * NS)
    assert b"a" in seen and b"b" in seen and b"c" not in seen
    assert len(seen) == 2
    # The repeated add took no room: nothing was evicted.
    assert seen.evicted == 0
    assert seen.floor == -1
    # ... and it is forgotten once, by its first publication time.
    seen.add(b"a", 50 * NS)
    seen.expire(135.0)
    assert b"a" not in seen and len(seen) == 1
    seen.add(b"c", 30 * NS)
    seen.add(b"d", 40 * NS)  # b, the oldest, goes
    assert b"b" not in seen and len(seen) == 2
    assert seen.evicted == 1 and seen.floor == 20 * NS
    seen.expire(1000.0)
    assert len(seen) == 0


def test_the_seen_cache_starts_with_nothing_below_its_floor() -> None:
    seen = SeenCache(ttl=120.0, limit=2)
    assert not seen.below_floor(0)
    assert seen.below_floor(-1)


def test_a_full_seen_cache_evicts_the_oldest_publication_and_raises_the_floor() -> None:
    seen = SeenCache(ttl=120.0, limit=2)
    seen.add(b"late", 30)
    seen.add(b"early", 10)
    seen.add(b"middle", 20)
    assert b"early" not in seen
    assert b"late" in seen and b"middle" in seen
    assert len(seen) == 2
    assert seen.evicted == 1
    assert seen.floor == 10
    # At the floor is below it; one nanosecond later is not.
    assert seen.below_floor(10)
    assert not seen.below_floor(11)


def test_the_seen_cache_floor_never_goes_down() -> None:
    seen = SeenCache(ttl=120.0, limit=1)
    seen.add(b"a", 100)
    seen.add(b"b", 50)  # b is the oldest: it goes at once.
    assert seen.floor == 50 and b"a" in seen and b"b" not in seen
    seen.add(b"c", 10)
    assert seen.floor == 50
    assert seen.evicted == 2
    seen.add(b"d", 200)  # a goes.
    assert seen.floor == 100
    assert list(x for x in (b"a", b"d") if x in seen) == [b"d"]
    assert seen.evicted == 3


def test_the_seen_cache_forgets_an_id_ttl_after_its_publication() -> None:
    seen = SeenCache(ttl=2.0, limit=10)
    seen.add(b"old", 8 * NS)
    seen.add(b"newer", 8 * NS + 1)
    seen.add(b"new", 9 * NS)
    seen.expire(9.0)
    assert len(seen) == 3
    seen.expire(10.0)  # the horizon is 8 s: published at 8 s goes.
    assert b"old" not in seen
    assert b"newer" in seen and b"new" in seen
    assert len(seen) == 2
    # Expiry is not eviction: the floor and the count stay.
    assert seen.floor == -1 and seen.evicted == 0
    seen.expire(10.5)
    assert b"newer" not in seen and b"new" in seen
    seen.expire(100.0)
    assert len(seen) == 0
    seen.expire(200.0)  # an empty cache expires nothing, without failing


def test_an_expired_id_leaves_room_in_the_seen_cache() -> None:
    seen = SeenCache(ttl=1.0, limit=2)
    seen.add(b"a", 1 * NS)
    seen.add(b"b", 5 * NS)
    seen.expire(2.0)
    seen.add(b"c", 6 * NS)
    assert b"b" in seen and b"c" in seen
    assert seen.evicted == 0 and seen.floor == -1


# -- MessageCache ------------------------------------------------------------


def test_the_message_cache_counts_each_message_once_with_its_overhead() -> None:
    cache = MessageCache(windows=3, gossip=2, max_bytes=10_000)
    m = message(1)
    cache.put(b"m", m)
    cache.put(b"m", m)
    assert b"m" in cache and b"x" not in cache
    assert len(cache) == 1
    assert cache.size == 100 + ENTRY_OVERHEAD
    assert ENTRY_OVERHEAD == 256
    assert cache.gossip_ids("t") == [b"m"]


def test_the_message_cache_gossips_the_newest_windows_of_a_topic() -> None:
    cache = MessageCache(windows=3, gossip=2, max_bytes=10_000)
    cache.put(b"m1", message(1))
    cache.shift()
    cache.put(b"m2", message(2))
    cache.put(b"other", message(3, topic="u"))
    cache.shift()
    cache.put(b"m3", message(4))
    cache.put(b"m4", message(5))
    # Newest window first, in arrival order within a window; m1 is in the
    # third window: cached, not gossiped.
    assert cache.gossip_ids("t") == [b"m3", b"m4", b"m2"]
    assert cache.gossip_ids("u") == [b"other"]
    assert cache.gossip_ids("v") == []
    assert b"m1" in cache and len(cache) == 5
    cache.shift()  # m1's window was the oldest: it goes.
    assert b"m1" not in cache
    assert len(cache) == 4
    assert cache.size == 4 * (100 + ENTRY_OVERHEAD)
    assert cache.gossip_ids("t") == [b"m3", b"m4"]
    cache.shift()
    cache.shift()
    assert len(cache) == 0 and cache.size == 0
    assert cache.gossip_ids("t") == []


def test_a_full_message_cache_drops_its_oldest_messages_first() -> None:
    entry = 100 + ENTRY_OVERHEAD
    cache = MessageCache(windows=3, gossip=3, max_bytes=2 * entry)
    cache.put(b"a", message(1))
    cache.put(b"b", message(2))
    assert cache.size == 2 * entry  # exactly full is not over
    assert b"a" in cache and b"b" in cache
    cache.put(b"c", message(3))
    assert b"a" not in cache
    assert b"b" in cache and b"c" in cache
    assert cache.size == 2 * entry
    assert cache.gossip_ids("t") == [b"b", b"c"]


def test_a_full_message_cache_drops_from_the_oldest_window() -> None:
    entry = 100 + ENTRY_OVERHEAD
    cache = MessageCache(windows=3, gossip=3, max_bytes=3 * entry)
    cache.put(b"a", message(1))
    cache.shift()
    cache.put(b"b", message(2))
    cache.shift()
    cache.put(b"c", message(3))
    cache.put(b"d", message(4))
    assert b"a" not in cache
    assert [x for x in (b"b", b"c", b"d") if x in cache] == [b"b", b"c", b"d"]
    # A message as big as three makes room for itself.
    cache.put(b"big", message(5, size=3 * entry - ENTRY_OVERHEAD))
    assert list(cache.gossip_ids("t")) == [b"big"]
    assert len(cache) == 1 and cache.size == 3 * entry


def test_the_message_cache_counts_iwant_answers_per_message_and_peer() -> None:
    cache = MessageCache(windows=2, gossip=1, max_bytes=10_000)
    m, n = message(1), message(2)
    cache.put(b"m", m)
    cache.put(b"n", n)
    assert cache.get_for_peer(b"m", "x") == (m, 1)
    assert cache.get_for_peer(b"m", "x") == (m, 2)
    assert cache.get_for_peer(b"m", "y") == (m, 1)
    assert cache.get_for_peer(b"n", "x") == (n, 1)
    assert cache.get_for_peer(b"gone", "x") == (None, 0)


def test_a_message_cached_again_starts_its_iwant_count_afresh() -> None:
    cache = MessageCache(windows=1, gossip=1, max_bytes=10_000)
    m = message(1)
    cache.put(b"m", m)
    assert cache.get_for_peer(b"m", "x") == (m, 1)
    assert cache.get_for_peer(b"m", "x") == (m, 2)
    cache.shift()
    assert cache.get_for_peer(b"m", "x") == (None, 0)
    cache.put(b"m", m)
    assert cache.get_for_peer(b"m", "x") == (m, 1)


# -- RateLimiter -------------------------------------------------------------


def test_a_rate_limiter_allows_a_burst_then_one_per_interval() -> None:
    limiter: RateLimiter[str] = RateLimiter(rate=1.0, burst=3, limit=10)
    assert [limiter.allow("k", 0.0) for _ in range(4)] == [True, True, True, False]
    # A refusal costs nothing: the next event is due at exactly 1 s.
    assert not limiter.allow("k", 0.999)
    assert limiter.allow("k", 1.0)
    assert not limiter.allow("k", 1.0)
    # Other keys have their own budget.
    assert limiter.allow("other", 1.0)
    # A long pause refills the burst, no more.
    assert [limiter.allow("k", 100.0) for _ in range(4)] == [True, True, True, False]


def test_a_rate_limiters_interval_is_the_inverse_of_its_rate() -> None:
    limiter: RateLimiter[str] = RateLimiter(rate=4.0, burst=2, limit=10)
    assert limiter.interval == 0.25
    assert limiter.tolerance == 0.5
    assert [limiter.allow("k", 0.0) for _ in range(3)] == [True, True, False]
    assert limiter.allow("k", 0.25)
    assert not limiter.allow("k", 0.25)


def test_a_rate_limiter_forgets_the_least_recently_seen_key() -> None:
    limiter: RateLimiter[str] = RateLimiter(rate=1.0, burst=1, limit=2)
    assert limiter.allow("a", 0.0)
    assert limiter.allow("b", 0.0)
    assert not limiter.allow("a", 0.0)  # refused, but now the newest key
    assert limiter.evicted == 0
    assert limiter.allow("c", 0.0)  # b goes
    assert limiter.evicted == 1
    assert not limiter.allow("a", 0.0)  # still limited: remembered
    assert limiter.allow("b", 0.0)  # forgotten, so free again
    assert limiter.evicted == 2
    # b's return pushed out c, seen before a's refusal.
    assert not limiter.allow("a", 0.0)
    assert limiter.allow("c", 0.0)
    assert limiter.evicted == 3


# -- RecentSet ---------------------------------------------------------------


def test_a_recent_set_keeps_the_most_recently_added_keys() -> None:
    recent: RecentSet[str] = RecentSet(limit=2)
    recent.add("a")
    recent.add("b")
    recent.add("a")  # a is now the newest
    assert len(recent) == 2
    recent.add("c")  # b goes
    assert "a" in recent and "c" in recent and "b" not in recent
    assert len(recent) == 2
