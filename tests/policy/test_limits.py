"""The connection-limiting wrapper: every limit at its bound and one past it,
on in-memory transports and a fake clock."""

from __future__ import annotations

from typing import Any, Optional

import pytest
from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer, providedBy

from blueprint_net._adapters.interfaces import IHandshaking
from blueprint_net._adapters.limiting_factory import (
    LimitedProtocol,
    LimitingFactory,
    Refusal,
)
from blueprint_net._adapters.summary import EventSummary
from blueprint_net._policy.limits import (
    ConnectionLimiter,
    ConnectionLimits,
    TokenBucket,
)


@implementer(IHandshaking)
class Handshaking(Protocol):
    def __init__(self) -> None:
        self.verified: defer.Deferred[None] = defer.Deferred()


def _factory(
    clock: Clock, banned: Optional[str] = None, **limits: object
) -> LimitingFactory:
    limiter = ConnectionLimiter(
        ConnectionLimits(**limits),  # type: ignore[arg-type]
        clock,
        refuse_address=lambda host: "ban" if host == banned else None,
    )
    return LimitingFactory(Factory.forProtocol(Handshaking), limiter, inbound=True)


def _connect(factory: LimitingFactory, host: str) -> Optional[LimitedProtocol]:
    kind = IPv6Address if ":" in host else IPv4Address
    protocol = factory.buildProtocol(kind("TCP", host, 4000))
    transport = StringTransport()
    protocol.makeConnection(transport)
    if isinstance(protocol, Refusal):
        assert transport.disconnecting  # aborted as it was made
        return None
    assert isinstance(protocol, LimitedProtocol)
    return protocol


def _close(protocol: LimitedProtocol) -> None:
    protocol.connectionLost(Failure(ConnectionDone()))


def test_total_connections() -> None:
    factory = _factory(Clock(), max_connections=3, exempt_loopback=True)
    opened = [_connect(factory, "127.0.0.1") for _ in range(3)]
    assert all(opened)
    assert _connect(factory, "127.0.0.1") is None
    assert factory.refused == "connections"
    assert opened[0] is not None
    _close(opened[0])
    assert _connect(factory, "127.0.0.1") is not None


def test_per_address_ipv4() -> None:
    factory = _factory(Clock(), max_per_subnet=2, exempt_loopback=False)
    assert _connect(factory, "192.0.2.1") and _connect(factory, "192.0.2.1")
    assert _connect(factory, "192.0.2.1") is None
    assert factory.refused == "subnet"
    assert _connect(factory, "192.0.2.2") is not None  # /32: another address


def test_per_subnet_ipv6_56() -> None:
    factory = _factory(Clock(), max_per_subnet=2)
    assert _connect(factory, "2001:db8:0:1::1")
    assert _connect(factory, "2001:db8:0:ff::2")  # same /56
    assert _connect(factory, "2001:db8:0:2::3") is None
    assert _connect(factory, "2001:db8:0:100::1") is not None  # the next /56


def test_loopback_is_exemptible() -> None:
    exempt = _factory(Clock(), max_per_subnet=1, exempt_loopback=True)
    assert _connect(exempt, "127.0.0.1") and _connect(exempt, "::1")
    assert _connect(exempt, "127.0.0.1") is not None
    counted = _factory(Clock(), max_per_subnet=1, exempt_loopback=False)
    assert _connect(counted, "127.0.0.1") is not None
    assert _connect(counted, "127.0.0.1") is None


def test_new_connections_per_second_per_subnet() -> None:
    clock = Clock()
    factory = _factory(clock, connect_rate=1.0, connect_burst=3, max_per_subnet=100)
    for _ in range(3):
        protocol = _connect(factory, "192.0.2.1")
        assert protocol is not None
        _close(protocol)  # short-lived: only the rate limit applies
    assert _connect(factory, "192.0.2.1") is None
    assert factory.refused == "rate"
    assert _connect(factory, "192.0.2.2") is not None  # another subnet's bucket
    clock.advance(1.0)
    assert _connect(factory, "192.0.2.1") is not None
    assert _connect(factory, "192.0.2.1") is None


def test_connections_still_in_their_handshake() -> None:
    factory = _factory(Clock(), max_handshaking=2)
    first = _connect(factory, "127.0.0.1")
    second = _connect(factory, "127.0.0.1")
    assert first is not None and second is not None
    # Full: the newcomer takes the place of the oldest pending handshake.
    assert _connect(factory, "127.0.0.1") is not None
    assert first.transport.disconnecting  # type: ignore[union-attr]
    assert factory.limiter.counters["evicted.handshaking"] == 1
    assert factory.limiter.handshaking == 2
    inner = second.wrappedProtocol
    assert isinstance(inner, Handshaking)
    inner.verified.callback(None)  # verified: it no longer holds a place
    assert factory.limiter.handshaking == 1
    assert _connect(factory, "127.0.0.1") is not None
    assert factory.limiter.counters["evicted.handshaking"] == 1


def test_a_declined_connection_evicts_nobody_and_is_counted() -> None:
    factory = _factory(Clock(), max_handshaking=1)
    first = _connect(factory, "127.0.0.1")
    assert first is not None
    # The wrapped factory (a dial to a peer already connected, say) declines.
    factory.wrappedFactory = _Declining()
    assert _connect(factory, "127.0.0.1") is None
    assert factory.refused == "declined"
    assert not first.transport.disconnecting  # type: ignore[union-attr]
    limiter = factory.limiter
    assert limiter.counters["refused.declined"] == 1
    assert limiter.counters["evicted.handshaking"] == 0
    assert limiter.handshaking == 1


class _Declining(Factory):
    def buildProtocol(self, addr: object) -> None:
        return None


def test_outbound_handshakes_are_never_evicted() -> None:
    factory = _factory(Clock(), max_handshaking=2)
    factory.inbound = False
    assert _connect(factory, "127.0.0.1") and _connect(factory, "127.0.0.1")
    assert _connect(factory, "127.0.0.1") is None
    assert factory.refused == "handshaking"


def test_a_handshake_that_fails_releases_its_place_once() -> None:
    factory = _factory(Clock(), max_handshaking=1)
    protocol = _connect(factory, "127.0.0.1")
    assert protocol is not None
    inner = protocol.wrappedProtocol
    assert isinstance(inner, Handshaking)
    inner.verified.errback(Exception("bad signature"))
    inner.verified.addErrback(lambda failure: None)
    _close(protocol)
    assert factory.limiter.handshaking == 0 and factory.limiter.open == 0


def test_banned_addresses_are_refused_and_counted() -> None:
    factory = _factory(Clock(), banned="192.0.2.66")
    assert _connect(factory, "192.0.2.66") is None
    assert _connect(factory, "192.0.2.67") is not None
    assert factory.limiter.counters["refused.banned"] == 1


def test_closed_connections_are_forgotten() -> None:
    factory = _factory(Clock(), exempt_loopback=False, max_per_subnet=5)
    for i in range(1000):
        protocol = _connect(factory, f"10.0.{i // 256}.{i % 256}")
        assert protocol is not None
        inner = protocol.wrappedProtocol
        assert isinstance(inner, Handshaking)
        inner.verified.callback(None)
        _close(protocol)
    limiter = factory.limiter
    assert (limiter.open, limiter.handshaking) == (0, 0)
    assert not limiter._per_subnet and not factory.protocols


@pytest.mark.parametrize(
    ("elapsed", "allowed"), [(0.0, 0), (0.5, 0), (1.0, 1), (9.0, 3)]
)
def test_token_bucket(elapsed: float, allowed: int) -> None:
    bucket = TokenBucket(rate=1.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert sum(bucket.take(elapsed) for _ in range(5)) == allowed


def test_a_wrapped_factory_that_declines_is_passed_through() -> None:
    """Twisted's WrappingFactory would wrap the None and fail later."""
    limiter = ConnectionLimiter(ConnectionLimits(), Clock())

    class Declining(Factory):
        def buildProtocol(self, addr: object) -> None:
            return None

    factory = LimitingFactory(Declining(), limiter, inbound=False)
    refusal = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    assert isinstance(refusal, Refusal) and factory.refused == "declined"
    assert limiter.open == 0


def test_the_wrapper_provides_what_each_transport_provides() -> None:
    """The copy of the transport's interfaces is made once per kind of
    transport: each wrapper still provides exactly its own transport's (a
    TLS one's ISSLTransport, a plain one's none), whichever came first."""
    factory = _factory(Clock())
    kinds = []
    for tls in (True, False, True, False):
        transport = StringTransport()
        if tls:
            directlyProvides(transport, ISSLTransport, *providedBy(transport))
        protocol = factory.buildProtocol(IPv4Address("TCP", "10.0.0.1", 4000))
        assert isinstance(protocol, LimitedProtocol)
        protocol.makeConnection(transport)
        assert protocol.wrappedProtocol.transport is protocol  # type: ignore[attr-defined]
        assert ISSLTransport.providedBy(protocol) is tls
        assert set(providedBy(transport)) <= set(providedBy(protocol))
        kinds.append(ISSLTransport.providedBy(protocol))
    assert kinds == [True, False, True, False]


def _logged(factory: LimitingFactory) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    factory._log = Logger(observer=events.append)  # type: ignore[arg-type]
    return events


@pytest.mark.parametrize("inbound", [True, False])
def test_a_refusal_is_logged_with_its_direction_host_and_reason(inbound: bool) -> None:
    """Without a summary, each refusal is one debug event whose fields say
    which way, from where, and why."""
    factory = _factory(Clock(), banned="10.0.0.9")
    factory.inbound = inbound
    events = _logged(factory)
    assert _connect(factory, "10.0.0.9") is None
    [event] = events
    assert event["log_level"] is LogLevel.debug
    assert "refused" in event["log_format"]
    assert event["direction"] == ("inbound" if inbound else "outbound")
    assert event["host"] == "10.0.0.9"
    assert event["reason"] == "banned" == factory.refused


@pytest.mark.parametrize("inbound", [True, False])
def test_a_refusal_is_counted_in_the_summary_with_its_fields(inbound: bool) -> None:
    """With a node's summary: counted by reason, and the first few detailed
    at debug with the same fields."""
    clock = Clock()
    factory = _factory(clock, banned="10.0.0.9")
    factory.inbound = inbound
    factory.summary = summary = EventSummary(clock, "refused connections")
    own = _logged(factory)
    events: list[dict[str, Any]] = []
    summary._log = Logger(observer=events.append)  # type: ignore[arg-type]
    assert _connect(factory, "10.0.0.9") is None
    assert own == []
    [event] = events
    assert event["log_level"] is LogLevel.debug
    assert "refused" in event["log_format"]
    assert event["direction"] == ("inbound" if inbound else "outbound")
    assert (event["host"], event["reason"]) == ("10.0.0.9", "banned")
    summary.flush()
    assert events[-1]["counts"] == {"banned": 1}


def test_an_eviction_is_logged_with_the_evicted_host() -> None:
    factory = _factory(Clock(), max_handshaking=1)
    events = _logged(factory)
    oldest = factory.buildProtocol(IPv4Address("TCP", "10.0.0.7", 4000))
    oldest.makeConnection(
        StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.7", 4000))
    )
    assert _connect(factory, "10.0.0.8") is not None  # takes the oldest's place
    assert oldest.transport.disconnecting  # type: ignore[union-attr]
    [event] = events
    assert event["log_level"] is LogLevel.debug
    assert "evicted" in event["log_format"]
    assert event["host"] == "10.0.0.7"


def test_evicting_a_connection_without_a_host_logs_none() -> None:
    """A UNIX socket's peer has no host: the eviction still happens."""
    factory = _factory(Clock(), max_handshaking=1)
    events = _logged(factory)
    oldest = factory.buildProtocol(UNIXAddress(None))
    oldest.makeConnection(StringTransport(peerAddress=UNIXAddress(None)))
    assert isinstance(oldest, LimitedProtocol)
    assert _connect(factory, "10.0.0.8") is not None
    assert oldest.transport.disconnecting  # type: ignore[union-attr]
    [event] = events
    assert event["host"] is None
