"""Connection limits: the counts, and the decision to refuse a connection.

Layer: policy (pure decisions; no Twisted).

One :class:`ConnectionLimiter` holds the counts of a node.  It decides; the
adapter (``_adapters/limiting_factory.py``, a ``WrappingFactory``) asks it before
building a protocol, and tells it when a connection opens, ends its
handshake and closes.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Optional

import attrs

from blueprint_net._core.clock import TimeSource
from blueprint_net._core.telemetry import CONNECTIONS_REFUSED, HANDSHAKE_EVICTIONS
from blueprint_net._policy import addresses
from blueprint_net._policy.addresses import Network

#: The wrapped factory declined a connection (a refusal reason; every reason
#: is declared in ``_core/telemetry.py``'s ``REFUSAL_REASONS``).
DECLINED = "declined"


@attrs.define
class ConnectionLimits:
    """Every limit, with its default; ``docs/security.md`` says how to tune."""

    #: Open connections at once, both directions.
    max_connections: int = 1024
    #: Connections from one subnet (see the two prefixes) at once.
    max_per_subnet: int = 16
    ipv4_prefix: int = 32
    ipv6_prefix: int = 56
    #: Loopback is exempt from the per-subnet limits (local tools, tests).
    exempt_loopback: bool = True
    #: New inbound connections per second from one subnet (token bucket).
    connect_rate: float = 5.0
    connect_burst: int = 20
    #: Connections still in their handshake at once: a flood of idle sockets
    #: cannot hold more than this many places.  When they are all taken, a
    #: newcomer evicts the oldest pending inbound handshake of the subnet
    #: that holds the most, rather than being refused.
    max_handshaking: int = 256
    #: Of those places, the most that inbound connections from one subnet
    #: may hold (not for exempt loopback).
    max_handshaking_per_subnet: int = 4
    #: Connections to one peer id (two lets simultaneous dials resolve).
    max_per_peer: int = 2
    #: Requests per second from one verified peer; 0, the default: no rate.
    #: A flooding peer is held by its in-flight bound (the node stops
    #: reading it) and by fair shares of handler time (``fair_share.py``),
    #: so an honest heavy user is never refused; a rate is for operators
    #: who want one (``request_burst`` applies only then).
    request_rate: float = 0.0
    request_burst: int = 100
    #: Request budgets kept for peer ids that disconnected (least recently
    #: used dropped first), so that reconnecting does not refill one.
    remembered_budgets: int = 4096


class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second; one per event."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.stamp = float(burst), now

    def take(self, now: float) -> bool:
        """Spend a token if there is one."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def full(self, now: float) -> bool:
        return self.tokens + (now - self.stamp) * self.rate >= self.burst


@attrs.define(eq=False)
class Slot:
    """What one open connection holds in a limiter's counts."""

    subnet: Optional[Network]
    handshaking: bool
    inbound: bool = True
    #: Set by the adapter: how to close the connection if it is evicted.
    owner: Optional[object] = None


@attrs.frozen
class Admission:
    """The decision on a new connection: ``refused`` names why it may not
    open; otherwise it may, once the adapter has closed ``evict``, if any
    (and told :meth:`ConnectionLimiter.evict`)."""

    refused: Optional[str] = None
    evict: Optional[Slot] = None


class ConnectionLimiter:
    """The counts that every limited factory of one node shares.

    ``refuse_address`` names a reason to refuse a host outright (a ban).
    Every refusal adds to ``counters`` under ``refused.<reason>``.
    """

    #: Idle per-subnet buckets are dropped once there are this many.
    _MAX_BUCKETS = 4096

    def __init__(
        self,
        limits: ConnectionLimits,
        clock: TimeSource,
        *,
        refuse_address: Callable[[str], Optional[object]] = lambda host: None,
        counters: Optional[Counter[str]] = None,
    ) -> None:
        self.limits = limits
        self.clock = clock
        self.refuse_address = refuse_address
        self.counters: Counter[str] = Counter() if counters is None else counters
        self.open = 0
        self.handshaking = 0
        self._per_subnet: Counter[Network] = Counter()
        self._buckets: dict[Network, TokenBucket] = {}
        #: Inbound slots in their handshake, by subnet, oldest first (an
        #: ordered set): our own dials neither use a subnet's places nor
        #: make it a likelier victim.
        self._pending: dict[Optional[Network], dict[Slot, None]] = {}

    def subnet(self, host: str) -> Optional[Network]:
        """The subnet a host counts against; None where none applies."""
        limits = self.limits
        return addresses.subnet(
            host, limits.ipv4_prefix, limits.ipv6_prefix, limits.exempt_loopback
        )

    def refusal(
        self, host: Optional[str], inbound: bool, subnet: Optional[Network]
    ) -> Optional[str]:
        """Why a connection from (or to) ``host`` may not open, if it may
        not; see :meth:`admit`, which this is without eviction."""
        return self.admit(host, inbound, subnet, evict=False).refused

    def admit(
        self,
        host: Optional[str],
        inbound: bool,
        subnet: Optional[Network],
        *,
        evict: bool = True,
    ) -> Admission:
        """Whether a connection from (or to) ``host``, in ``subnet`` (see
        :meth:`subnet`), may open, and which pending handshake it evicts.

        Handshake places are bounded per subnet, so when every place is
        taken, some subnet holds several: the newcomer takes the place of the
        oldest inbound handshake of the subnet that holds the most (as
        Bitcoin Core protects its inbound slots), and an idle-socket flood
        only ever evicts itself.
        """
        limits = self.limits
        reason = None
        victim = None
        if host is not None and self.refuse_address(host) is not None:
            reason = "banned"
        elif self.open >= limits.max_connections:
            reason = "connections"
        elif subnet is not None and self._per_subnet[subnet] >= limits.max_per_subnet:
            reason = "subnet"
        elif (
            inbound
            and subnet is not None
            and len(self._pending.get(subnet, ())) >= limits.max_handshaking_per_subnet
        ):
            reason = "handshaking_subnet"
        elif (
            inbound
            and subnet is not None
            and not self._bucket(subnet).take(self.clock.seconds())
        ):
            reason = "rate"
        elif self.handshaking >= limits.max_handshaking:
            victim = self._victim() if evict else None
            if victim is None:
                reason = "handshaking"
        if reason is not None:
            self.refused(reason)
        return Admission(reason, victim)

    def refused(self, reason: str) -> str:
        """Count a refusal; ``reason`` back."""
        self.counters[CONNECTIONS_REFUSED.key_for(reason)] += 1
        return reason

    def evict(self, slot: Slot) -> None:
        """The adapter closes ``slot``, an admission's victim, to make room:
        its place is free from now (only once the newcomer is sure to open,
        so a connection the factory declines evicts nobody)."""
        self.handshake_over(slot)
        self.counters[HANDSHAKE_EVICTIONS.key] += 1

    def _victim(self) -> Optional[Slot]:
        """The oldest inbound handshake of the subnet holding the most."""
        best: Optional[Slot] = None
        most = 0
        for slots in self._pending.values():
            if len(slots) > most:
                best, most = next(iter(slots)), len(slots)
        return best

    def _bucket(self, subnet: Network) -> TokenBucket:
        bucket = self._buckets.get(subnet)
        if bucket is None:
            now = self.clock.seconds()
            if len(self._buckets) >= self._MAX_BUCKETS:
                for key in [k for k, b in self._buckets.items() if b.full(now)]:
                    del self._buckets[key]  # a full bucket is a fresh one
            limits = self.limits
            bucket = TokenBucket(limits.connect_rate, limits.connect_burst, now)
            self._buckets[subnet] = bucket
        return bucket

    def opened(
        self,
        subnet: Optional[Network],
        *,
        handshaking: bool,
        inbound: bool = True,
        owner: Optional[object] = None,
    ) -> Slot:
        """A connection in ``subnet`` opened (still in its handshake, if
        ``handshaking``); what it holds, to hand back as it ends."""
        self.open += 1
        if subnet is not None:
            self._per_subnet[subnet] += 1
        slot = Slot(subnet, handshaking, inbound, owner)
        if handshaking:
            self.handshaking += 1
            if inbound:
                self._pending.setdefault(subnet, {})[slot] = None
        return slot

    def handshake_over(self, slot: Slot) -> None:
        """The connection's handshake ended (either way, or it was evicted);
        only the first call for a slot counts."""
        if slot.handshaking:
            slot.handshaking = False
            self.handshaking -= 1
            if slot.inbound:
                pending = self._pending[slot.subnet]
                del pending[slot]
                if not pending:
                    del self._pending[slot.subnet]

    def closed(self, slot: Slot) -> None:
        self.open -= 1
        if slot.subnet is not None:
            self._per_subnet[slot.subnet] -= 1
            if not self._per_subnet[slot.subnet]:
                del self._per_subnet[slot.subnet]
        self.handshake_over(slot)
