"""Retry delays: the one back-off of the package.

Layer: policy (pure decisions; no Twisted, no clock of its own).

In: how many attempts in a row have failed, and a random fraction; out: the
seconds to wait before the next.  ``PeerKeeper`` uses :func:`retry_delay`
for its one peer; discovery keeps a :class:`Backoff` per peer id and per
bootstrap address.  Twisted's ``backoffPolicy`` (for ``ClientService``)
computes the same shape, but it is a closure over its own randomness and
cannot be told the failure count, so the two that need one share this.
"""

from __future__ import annotations

import random
from collections.abc import Hashable


def retry_delay(
    failures: int, initial: float, maximum: float, fraction: float
) -> float:
    """The delay after ``failures`` (1, 2, ...) failed attempts in a row:
    ``initial`` doubled per earlier failure up to ``maximum``, then cut by
    up to half by ``fraction`` (0 to 1, drawn at random), so peers that
    lost each other at once do not redial in step.  Never above
    ``maximum``."""
    delay = min(maximum, initial * 2.0 ** min(max(0, failures - 1), 30))
    return float(delay * (1.0 - 0.5 * fraction))


class Backoff:
    """When each key (a peer id, a bootstrap address) may be dialed again:
    :func:`retry_delay` after each failure in a row, forgotten on success;
    at most ``limit`` keys held (the oldest go)."""

    def __init__(
        self,
        initial: float,
        maximum: float,
        rng: random.Random,
        limit: int = 4096,
    ) -> None:
        self.initial, self.maximum, self.rng, self.limit = initial, maximum, rng, limit
        self._failures: dict[Hashable, tuple[int, float]] = {}

    def ready(self, key: Hashable, now: float) -> bool:
        entry = self._failures.get(key)
        return entry is None or entry[1] <= now

    def failed(self, key: Hashable, now: float) -> float:
        """Note a failure; the delay before the next attempt."""
        count = self._failures.pop(key, (0, 0.0))[0] + 1
        delay = retry_delay(count, self.initial, self.maximum, self.rng.random())
        self._failures[key] = (count, now + delay)
        while len(self._failures) > self.limit:
            del self._failures[next(iter(self._failures))]
        return delay

    def failures(self, key: Hashable) -> int:
        """Failed attempts in a row for ``key`` (0 when none is held)."""
        entry = self._failures.get(key)
        return 0 if entry is None else entry[0]

    def succeeded(self, key: Hashable) -> None:
        self._failures.pop(key, None)
