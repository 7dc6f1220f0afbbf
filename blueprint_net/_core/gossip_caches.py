"""The router's bounded memories: seen message ids, recent messages, rates.

Layer: core (sans-IO; imports nothing from Twisted).

Each is bounded in entries (and the message cache in bytes), so no peer can
make the router hold more than its settings allow, whatever it sends.
Time comes in as a number; nothing here reads a clock.
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from collections.abc import Hashable
from typing import Generic, Optional, TypeVar

from blueprint_net._core.gossip_wire import Publish

K = TypeVar("K", bound=Hashable)

#: Bytes charged per cached message on top of its data: the id, the
#: message object and its bookkeeping, so tiny messages are bounded too.
ENTRY_OVERHEAD = 256


class SeenCache:
    """Ids of messages that could still be accepted, at most ``limit``.

    Each id is kept by its message's publication time (its seqno, in
    nanoseconds since the Unix epoch, ``docs/protocol.md`` 9.2) until
    ``ttl`` seconds after it, when a receiver would drop the message as
    stale anyway (``GossipSettings.seen_ttl`` is longer than the oldest
    message accepted).  Past ``limit`` the id with the oldest publication
    time goes early (``evicted`` counts them) and raises :attr:`floor`: a
    message published at or before the floor may have been seen and is not
    to be taken for new.  So a replay is never taken for new, at any age,
    with bounded memory: until the message is stale the id or the floor
    holds it.
    """

    def __init__(self, ttl: float, limit: int) -> None:
        self.ttl, self.limit = ttl, limit
        self._ttl_ns = int(ttl * 1e9)
        self._published: dict[bytes, int] = {}
        #: (publication time, id): the oldest first (a heap).
        self._order: list[tuple[int, bytes]] = []
        #: Nothing published at or before this (ns) is known to be new.
        self.floor = -1
        self.evicted = 0

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._published

    def __len__(self) -> int:
        return len(self._published)

    def add(self, message_id: bytes, published: int) -> None:
        """Remember ``message_id``, published at ``published`` (ns)."""
        if message_id in self._published:
            return
        self._published[message_id] = published
        heapq.heappush(self._order, (published, message_id))
        while len(self._published) > self.limit:
            oldest, gone = heapq.heappop(self._order)
            del self._published[gone]
            self.floor = max(self.floor, oldest)
            self.evicted += 1

    def below_floor(self, published: int) -> bool:
        """A message published then may have been seen and evicted."""
        return published <= self.floor

    def expire(self, now: float) -> None:
        """Forget the ids of messages too old to be accepted at ``now``."""
        order, horizon = self._order, int(now * 1e9) - self._ttl_ns
        while order and order[0][0] <= horizon:
            del self._published[heapq.heappop(order)[1]]


class MessageCache:
    """Messages validated in the last ``windows`` heartbeats, for ``IWant``.

    gossipsub's ``mcache``: one window of ids per heartbeat, newest first;
    :meth:`gossip_ids` offers the newest ``gossip`` windows in ``IHave``,
    :meth:`shift` (once per heartbeat) drops the oldest window.  Also bounded
    in bytes: past ``max_bytes`` the oldest messages go early.
    """

    def __init__(self, windows: int, gossip: int, max_bytes: int) -> None:
        self.gossip, self.max_bytes = gossip, max_bytes
        self._windows: deque[list[bytes]] = deque([[] for _ in range(windows)])
        self._messages: dict[bytes, Publish] = {}
        #: Times each id was sent to each peer in answer to an IWant.
        self._sent: dict[bytes, Counter[object]] = {}
        self.size = 0

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._messages

    def __len__(self) -> int:
        return len(self._messages)

    def put(self, message_id: bytes, message: Publish) -> None:
        if message_id in self._messages:
            return
        self._messages[message_id] = message
        self._windows[0].append(message_id)
        self.size += len(message.data) + ENTRY_OVERHEAD
        while self.size > self.max_bytes:
            self._evict_oldest()

    def get_for_peer(
        self, message_id: bytes, peer: object
    ) -> tuple[Optional[Publish], int]:
        """The message, and how many times it has now been sent to ``peer``
        in answer to an IWant (this time included)."""
        message = self._messages.get(message_id)
        if message is None:
            return None, 0
        sent = self._sent.setdefault(message_id, Counter())
        sent[peer] += 1
        return message, sent[peer]

    def gossip_ids(self, topic: str) -> list[bytes]:
        """Ids of ``topic`` in the newest ``gossip`` windows."""
        messages = self._messages
        return [
            mid
            for window in list(self._windows)[: self.gossip]
            for mid in window
            if mid in messages and messages[mid].topic == topic
        ]

    def shift(self) -> None:
        """A heartbeat passed: forget the oldest window, open a new one."""
        for mid in self._windows.pop():
            self._drop(mid)
        self._windows.appendleft([])

    def _evict_oldest(self) -> None:
        for window in reversed(self._windows):
            if window:
                self._drop(window.pop(0))
                return

    def _drop(self, message_id: bytes) -> None:
        message = self._messages.pop(message_id, None)
        if message is not None:
            self.size -= len(message.data) + ENTRY_OVERHEAD
            self._sent.pop(message_id, None)


class RateLimiter(Generic[K]):
    """At most ``rate`` events a second per key, in bursts of ``burst``.

    The generic cell rate algorithm: one float per key (the theoretical
    arrival time), so the table stays small.  A key whose time has passed is
    indistinguishable from a new one, so dropping the least recently seen
    key when the table passes ``limit`` usually forgets nothing.
    """

    def __init__(self, rate: float, burst: float, limit: int) -> None:
        self.interval = 1.0 / rate
        self.tolerance = burst * self.interval
        self.limit = limit
        self._due: dict[K, float] = {}
        self.evicted = 0

    def allow(self, key: K, now: float) -> bool:
        """Count one event for ``key`` if it is within its rate."""
        due = max(self._due.pop(key, now), now)
        if due + self.interval - now > self.tolerance:
            self._due[key] = due
            return False
        self._due[key] = due + self.interval  # now the newest key
        if len(self._due) > self.limit:
            # The least recently seen key goes; if it was still limited it
            # may burst again, a bounded leak counted in ``evicted``.
            del self._due[next(iter(self._due))]
            self.evicted += 1
        return True


class RecentSet(Generic[K]):
    """The ``limit`` keys most recently :meth:`add`-ed (least recent go)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._keys: dict[K, None] = {}

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: K) -> None:
        keys = self._keys
        keys.pop(key, None)
        keys[key] = None  # now the newest
        if len(keys) > self.limit:
            del keys[next(iter(keys))]
