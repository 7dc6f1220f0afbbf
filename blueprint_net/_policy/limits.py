"""Connection limits: a ``WrappingFactory`` that refuses before a byte is read.

``policies.LimitConnectionsByPeer`` is broken on current Twisted (it indexes
an attrs ``IPv4Address``, twisted#12183) and never forgets a protocol;
``LimitTotalConnectionsFactory`` is not a wrapper; ``ThrottlingFactory``
throttles a whole factory.  So this module keys everything on ``addr.host``
and refuses in ``buildProtocol`` with a :class:`Refusal`, which aborts the
connection as it is made, before reading from it.

One :class:`ConnectionLimiter` holds the counts of a node; its listening
factory and every outbound dial are wrapped with :class:`LimitingFactory`
around it, so outbound connections count against the same limits.
"""

from __future__ import annotations

import functools
import ipaddress
from collections import Counter
from typing import Any, Callable, Optional

import attrs
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

from blueprint_net._adapters.interfaces import IHandshaking
from blueprint_net._policy.addresses import parse_address


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
    #: cannot hold more than this many places.
    max_handshaking: int = 256
    #: Connections to one peer id (two lets simultaneous dials resolve).
    max_per_peer: int = 2
    #: Requests per second from one verified peer (the original: 100 / 10 s).
    request_rate: float = 10.0
    request_burst: int = 100


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


class ConnectionLimiter:
    """The counts that every limited factory of one node shares.

    ``refuse_address`` names a reason to refuse a host outright (a ban).
    Every refusal adds to ``counters`` under ``refused.<reason>``.
    """

    _log = Logger()
    #: Idle per-subnet buckets are dropped once there are this many.
    _MAX_BUCKETS = 4096

    def __init__(
        self,
        limits: ConnectionLimits,
        clock: IReactorTime,
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
        self._per_subnet: Counter[Any] = Counter()
        self._buckets: dict[Any, TokenBucket] = {}

    def subnet(self, host: str) -> Optional[Any]:
        """The subnet a host counts against; None where none applies."""
        limits = self.limits
        return _subnet(
            host, limits.ipv4_prefix, limits.ipv6_prefix, limits.exempt_loopback
        )

    def refusal(
        self, addr: Optional[IAddress], inbound: bool, subnet: Optional[Any]
    ) -> Optional[str]:
        """Why a connection from (or to) ``addr``, in ``subnet`` (see
        :meth:`subnet`), may not open; None if it may."""
        limits = self.limits
        host = getattr(addr, "host", None)
        reason = None
        if host is not None and self.refuse_address(host) is not None:
            reason = "banned"
        elif self.open >= limits.max_connections:
            reason = "connections"
        elif self.handshaking >= limits.max_handshaking:
            reason = "handshaking"
        elif subnet is not None:
            if self._per_subnet[subnet] >= limits.max_per_subnet:
                reason = "subnet"
            elif inbound and not self._bucket(subnet).take(self.clock.seconds()):
                reason = "rate"
        if reason is not None:
            self.counters[f"refused.{reason}"] += 1
            self._log.debug(
                "refused {direction} connection {host}: {reason}",
                direction="inbound" if inbound else "outbound",
                host=host,
                reason=reason,
            )
        return reason

    def _bucket(self, subnet: Any) -> TokenBucket:
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

    def opened(self, protocol: LimitedProtocol) -> None:
        self.open += 1
        if protocol.subnet is not None:
            self._per_subnet[protocol.subnet] += 1
        inner = protocol.wrappedProtocol
        while not IHandshaking.providedBy(inner) and hasattr(inner, "wrappedProtocol"):
            inner = inner.wrappedProtocol  # through a TLS layer, say
        if IHandshaking.providedBy(inner):
            self.handshaking += 1
            protocol.handshaking = True
            inner.verified.addBoth(self._handshake_over, protocol)

    def _handshake_over(self, result: object, protocol: LimitedProtocol) -> object:
        if protocol.handshaking:
            protocol.handshaking = False
            self.handshaking -= 1
        return result

    def closed(self, protocol: LimitedProtocol) -> None:
        self.open -= 1
        if protocol.subnet is not None:
            self._per_subnet[protocol.subnet] -= 1
            if not self._per_subnet[protocol.subnet]:
                del self._per_subnet[protocol.subnet]
        self._handshake_over(None, protocol)


@functools.lru_cache(maxsize=4096)
def _subnet(
    host: str, ipv4_prefix: int, ipv6_prefix: int, exempt_loopback: bool
) -> Optional[Any]:
    # Cached: parsing an address costs more than the rest of admission, and
    # peers come back from the same hosts.
    try:
        address = parse_address(host)
    except ValueError:
        return None
    if address.is_loopback and exempt_loopback:
        return None
    prefix = ipv4_prefix if address.version == 4 else ipv6_prefix
    return ipaddress.ip_network((address, prefix), strict=False)


class Refusal(Protocol):
    """A refused connection: aborted as it is made, before a byte is read.

    Returning ``None`` from ``buildProtocol`` says the same for a bare TCP
    port, but a factory wrapped from outside (TLS, a client endpoint) would
    wrap the ``None`` and fail; this works under any wrapper.
    """

    def connectionMade(self) -> None:
        self.transport.abortConnection()  # type: ignore[union-attr]


class LimitedProtocol(ProtocolWrapper):
    """Remembers what its connection counts against."""

    subnet: Optional[Any] = None
    handshaking = False


class LimitingFactory(WrappingFactory[LimitedProtocol]):
    """Wraps any factory; refuses what the shared limiter refuses."""

    protocol = LimitedProtocol
    noisy = False  # one per outbound dial

    def __init__(
        self, wrapped: Factory, limiter: ConnectionLimiter, *, inbound: bool
    ) -> None:
        super().__init__(wrapped)  # type: ignore[no-untyped-call]
        self.limiter = limiter
        self.inbound = inbound
        #: Why the last connection was refused (what a dialer reports).
        self.refused: Optional[str] = None

    def buildProtocol(self, addr: Optional[IAddress]) -> Protocol:  # type: ignore[override]
        host = getattr(addr, "host", None)
        subnet = None if host is None else self.limiter.subnet(host)
        self.refused = self.limiter.refusal(addr, self.inbound, subnet)
        if self.refused is not None:
            return Refusal()
        inner = self.wrappedFactory.buildProtocol(addr)
        if inner is None:  # the wrapped factory declined: so do we
            self.refused = "declined"
            return Refusal()
        protocol = LimitedProtocol(self, inner)
        protocol.subnet = subnet
        return protocol

    def registerProtocol(self, protocol: LimitedProtocol) -> None:
        super().registerProtocol(protocol)  # type: ignore[no-untyped-call]
        self.limiter.opened(protocol)

    def unregisterProtocol(self, protocol: LimitedProtocol) -> None:
        super().unregisterProtocol(protocol)  # type: ignore[no-untyped-call]
        self.limiter.closed(protocol)
