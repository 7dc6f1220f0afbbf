"""A node-wide memory budget that every connection's buffers count against.

Layer: policy (pure counting; no Twisted).

Modelled on libp2p's resource manager, with two scopes: each connection
bounds what it holds by itself (``Settings.max_send_queue``, ``max_frame``),
and all of them together draw on one :class:`MemoryBudget`.  A connection
asks before it grows; what does not fit is refused (a send), answered with an
error (a response) or dropped with its connection (a partial inbound frame),
and counted under ``memory.*``.
"""

from __future__ import annotations

from collections import Counter
from typing import Optional

from blueprint_net._core.telemetry import MEMORY_REFUSALS


class MemoryBudget:
    """Bytes held for peers, against ``limit``: a connection asks
    :meth:`fits` before it grows; :meth:`charge` records what it holds, what
    it held already included, so ``used`` can pass ``limit``."""

    __slots__ = ("counters", "limit", "peak", "used")

    def __init__(self, limit: int, counters: Optional[Counter[str]] = None) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0
        self.counters: Counter[str] = Counter() if counters is None else counters

    def fits(self, size: int) -> bool:
        """Whether ``size`` more bytes may be held."""
        return self.used + size <= self.limit

    def refuse(self, what: str) -> None:
        """Count a refusal (``memory.refused.<what>``)."""
        self.counters[MEMORY_REFUSALS.key_for(what)] += 1

    def charge(self, delta: int) -> None:
        """Record that a connection now holds ``delta`` more (or fewer) bytes."""
        self.used += delta
        self.peak = max(self.peak, self.used)
