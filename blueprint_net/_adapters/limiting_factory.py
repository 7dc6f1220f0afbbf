"""Connection limits applied: a ``WrappingFactory`` that refuses before a
byte is read.

Layer: adapters (Twisted).

``policies.LimitConnectionsByPeer`` is broken on current Twisted (it indexes
an attrs ``IPv4Address``, twisted#12183) and never forgets a protocol;
``LimitTotalConnectionsFactory`` is not a wrapper; ``ThrottlingFactory``
throttles a whole factory.  So this module keys everything on ``addr.host``
and refuses in ``buildProtocol`` with a :class:`Refusal`, which aborts the
connection as it is made, before reading from it.

When every handshake place is taken, the limiter may name a pending
handshake to evict instead of refusing the newcomer; closing it is done
here.

The decisions and counts are the pure
:class:`~blueprint_net._policy.limits.ConnectionLimiter` of a node; its
listening factory and every outbound dial are wrapped with
:class:`LimitingFactory` around it, so outbound connections count against the
same limits.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.interfaces import IAddress, IHandshakeListener, ITransport
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from zope.interface import directlyProvides, implementer, providedBy

from blueprint_net._adapters.interfaces import IHandshaking
from blueprint_net._adapters.summary import EventSummary
from blueprint_net._policy.addresses import Network
from blueprint_net._policy.limits import DECLINED, ConnectionLimiter, Slot


class Refusal(Protocol):
    """A refused connection: aborted as it is made, before a byte is read.

    Returning ``None`` from ``buildProtocol`` says the same for a bare TCP
    port, but a factory wrapped from outside (TLS, a client endpoint) would
    wrap the ``None`` and fail; this works under any wrapper.
    """

    def connectionMade(self) -> None:
        self.transport.abortConnection()  # type: ignore[union-attr]


@implementer(IHandshakeListener)
class LimitedProtocol(ProtocolWrapper):
    """Remembers what its connection counts against."""

    subnet: Optional[Network] = None
    slot: Optional[Slot] = None

    #: (wrapper class, the transport's declaration) -> the wrapper's
    #: declaration: transports of one kind declare the same interfaces, and
    #: computing it again (``directlyProvides``) cost ~6 us per connection.
    _provides: dict[tuple[type, Any], Any] = {}  # noqa: RUF012 (a shared cache)
    _PROVIDES_KINDS = 32  # bounded: a few kinds of transport in a process

    def makeConnection(self, transport: ITransport) -> None:
        """``ProtocolWrapper.makeConnection``, with its copy of the
        transport's interfaces made once per kind of transport."""
        key = (type(self), providedBy(transport))
        provides = self._provides.get(key)
        if provides is None:
            directlyProvides(self, key[1])
            if len(self._provides) < self._PROVIDES_KINDS:
                self._provides[key] = getattr(self, "__provides__")  # noqa: B009
        else:
            self.__provides__ = provides  # what directlyProvides sets
        Protocol.makeConnection(self, transport)  # type: ignore[no-untyped-call]
        self.factory.registerProtocol(self)
        self.wrappedProtocol.makeConnection(self)  # type: ignore[arg-type]

    def handshakeCompleted(self) -> None:
        """TLS completed: pass it on (a ``p2ptls`` peer proves itself now)."""
        if IHandshakeListener.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.handshakeCompleted()


class LimitingFactory(WrappingFactory[LimitedProtocol]):
    """Wraps any factory; refuses what the shared limiter refuses."""

    protocol = LimitedProtocol
    noisy = False  # one per outbound dial
    _log = Logger()

    def __init__(
        self,
        wrapped: Factory,
        limiter: ConnectionLimiter,
        *,
        inbound: bool,
        summary: Optional[EventSummary] = None,
    ) -> None:
        super().__init__(wrapped)  # type: ignore[no-untyped-call]
        self.limiter = limiter
        self.inbound = inbound
        #: Where refusals are counted for a periodic line (a node's); without
        #: one, each is logged at debug.
        self.summary = summary
        #: Why the last connection was refused (what a dialer reports).
        self.refused: Optional[str] = None

    def buildProtocol(self, addr: Optional[IAddress]) -> Protocol:  # type: ignore[override]
        host: Optional[str] = getattr(addr, "host", None)
        subnet = None if host is None else self.limiter.subnet(host)
        admission = self.limiter.admit(host, self.inbound, subnet)
        self.refused = None
        if admission.refused is not None:
            return self._refuse(host, admission.refused)
        # The wrapped factory has its say before anyone is evicted: an honest
        # pending handshake is not killed for a connection declined anyway.
        inner = self.wrappedFactory.buildProtocol(addr)
        if inner is None:
            return self._refuse(host, self.limiter.refused(DECLINED))
        if admission.evict is not None:
            self.limiter.evict(admission.evict)
            self._evict(admission.evict.owner)
        protocol = LimitedProtocol(self, inner)
        protocol.subnet = subnet
        return protocol

    def _refuse(self, host: Optional[str], reason: str) -> Refusal:
        self.refused = reason
        direction = "inbound" if self.inbound else "outbound"
        if self.summary is not None:
            self.summary.record(
                reason,
                "refused {direction} connection {host}: {reason}",
                direction=direction,
                host=str(host),
            )
        else:
            self._log.debug(
                "refused {direction} connection {host}: {reason}",
                direction=direction,
                host=host,
                reason=reason,
            )
        return Refusal()

    def registerProtocol(self, protocol: LimitedProtocol) -> None:
        super().registerProtocol(protocol)  # type: ignore[no-untyped-call]
        inner = protocol.wrappedProtocol
        while not IHandshaking.providedBy(inner) and hasattr(inner, "wrappedProtocol"):
            inner = inner.wrappedProtocol  # through a TLS layer, say
        if IHandshaking.providedBy(inner):
            protocol.slot = self.limiter.opened(
                protocol.subnet, handshaking=True, inbound=self.inbound, owner=protocol
            )
            inner.verified.addBoth(self._handshake_over, protocol.slot)
        else:
            protocol.slot = self.limiter.opened(protocol.subnet, handshaking=False)

    def _evict(self, victim: object) -> None:
        """Close a pending handshake the limiter chose to make room (its
        place is already free); aborted, as a refusal is: it has had its
        chance to speak, and a flood must not cost a goodbye each."""
        assert isinstance(victim, LimitedProtocol)
        self._log.debug(
            "evicted a pending handshake from {host} to make room",
            host=getattr(victim.transport.getPeer(), "host", None),  # type: ignore[union-attr]
        )
        victim.transport.abortConnection()  # type: ignore[union-attr]

    def _handshake_over(self, result: object, slot: Slot) -> object:
        self.limiter.handshake_over(slot)
        return result

    def unregisterProtocol(self, protocol: LimitedProtocol) -> None:
        super().unregisterProtocol(protocol)  # type: ignore[no-untyped-call]
        if protocol.slot is not None:
            self.limiter.closed(protocol.slot)
