"""Real nodes joined by in-memory connections on one fake clock:
:class:`MemoryNetwork` (``blueprint_net.testing``; see its docstring).

In: the nodes a test adds, and its calls to :meth:`MemoryNetwork.pump`,
:meth:`~MemoryNetwork.advance` and :meth:`~MemoryNetwork.cut`.  Out: bytes
moved between the nodes' transports (``twisted.test.iosim``) and timers run,
only when the test says.
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
from collections.abc import Coroutine, Mapping
from types import TracebackType
from typing import Any, Optional, TypeVar, Union

import attrs
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionLost, ConnectionRefusedError, NoProtocol
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.test.iosim import FakeTransport, IOPump
from zope.interface import implementer

from blueprint_net import Identity, Node, Settings
from blueprint_net._adapters.node import CLOSE_GRACE
from blueprint_net.node import Handler, Peer
from blueprint_net.testing._results import fired

_T = TypeVar("_T")

#: The port a node listens on (each has its own address; nodes given one
#: host listen on the ports after it).
LINK_PORT = 7010
#: Rounds of :meth:`MemoryNetwork.pump` before it gives up: enough for any
#: exchange that ends, so reaching it means handlers that answer each other
#: forever.
_MAX_ROUNDS = 10_000
#: Node options the network owns: every node must share its clock.
_OWNED = frozenset({"reactor", "clock"})


@attrs.define(eq=False)
class _Link:
    """One connection: a dialer's transport, a listener's, and their pump."""

    dialer: FakeTransport
    listener: FakeTransport
    pump: IOPump
    #: The nodes at the two ends (a stranger's end is None).
    ends: frozenset[Optional[Node]]

    @property
    def closed(self) -> bool:
        return bool(self.dialer.disconnected and self.listener.disconnected)


@implementer(IListeningPort)
class _Port:
    """A node's listening place in the network, closed by ``stopListening``."""

    def __init__(
        self,
        network: MemoryNetwork,
        address: IPv4Address,
        factory: IProtocolFactory,
        node: Optional[Node],
    ) -> None:
        self.network = network
        self.address = address
        self.factory = factory
        self.node = node

    def startListening(self) -> None:
        self.network._ports[self.address.host, self.address.port] = self

    def stopListening(self) -> None:
        key = (self.address.host, self.address.port)
        if self.network._ports.get(key) is self:
            del self.network._ports[key]

    def getHost(self) -> IPv4Address:
        return self.address


@implementer(IStreamServerEndpoint)
class _ServerEndpoint:
    def __init__(
        self, network: MemoryNetwork, host: str, port: int, node: Optional[Node]
    ) -> None:
        self.network, self.host, self.port = network, host, port
        self.node = node

    def listen(
        self, protocolFactory: IProtocolFactory
    ) -> defer.Deferred[IListeningPort]:
        key = (self.host, self.port)
        if key in self.network._ports:
            return defer.fail(ValueError(f"{self.host}:{self.port} is taken"))
        address = IPv4Address("TCP", *key)
        port = _Port(self.network, address, protocolFactory, self.node)
        port.startListening()
        return defer.succeed(port)


class _Closed(Protocol):
    """What a listener's declined connection gets: a close, as TCP does."""

    def connectionMade(self) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]


@implementer(IStreamClientEndpoint)
class _ClientEndpoint:
    def __init__(
        self,
        network: MemoryNetwork,
        address: tuple[str, int],
        source: str,
        node: Optional[Node],
    ) -> None:
        self.network, self.address = network, address
        self.source, self.node = source, node

    def connect(self, protocolFactory: IProtocolFactory) -> defer.Deferred[IProtocol]:
        port = self.network._ports.get(self.address)
        if port is None:
            host, number = self.address
            nobody = ConnectionRefusedError(string=f"nobody listens at {host}:{number}")  # type: ignore[no-untyped-call]
            return defer.fail(nobody)
        return self.network._open_link(port, protocolFactory, self.source, self.node)


class MemoryNetwork:
    """Nodes, the in-memory connections between them, and their one clock.

    Every node made by :meth:`add_node` uses :attr:`clock` as its reactor
    and clock, and listens on its own IPv4 address (``10.0.0.1``, then
    ``10.0.0.2``...: not loopback, so the connection limits apply as they
    would between hosts).  Nothing happens between calls: :meth:`pump`
    delivers bytes, :meth:`advance` moves time, :meth:`result` pumps and
    reads a Deferred.  Use it as a context manager, or call :meth:`stop`.
    """

    def __init__(self) -> None:
        #: The time of every node, timer and timeout on this network.
        self.clock = Clock()
        #: Every node made here, in the order made.
        self.nodes: list[Node] = []
        self._addresses: dict[Node, tuple[str, int]] = {}
        self._ports: dict[tuple[str, int], _Port] = {}
        self._links: list[_Link] = []
        self._hosts = (
            str(ipaddress.IPv4Address("10.0.0.0") + n) for n in itertools.count(1)
        )
        self._strangers = (
            str(ipaddress.IPv4Address("10.255.0.0") + n) for n in itertools.count(1)
        )
        self._ephemeral = itertools.count(50000)

    # -- building the network ----------------------------------------------

    def add_node(
        self,
        identity: Optional[Identity] = None,
        *,
        handlers: Optional[Mapping[str, Handler]] = None,
        host: Optional[str] = None,
        listen: bool = True,
        **options: Any,
    ) -> Node:
        """A new node on this network, listening on ``host`` (by default the
        next free address) at :data:`LINK_PORT` (or the next port free there)
        unless ``listen`` is false.

        ``identity`` defaults to one derived from the node's position, so
        peer ids (and whatever depends on their order) are the same on every
        run.  ``options`` are the other keyword arguments of :class:`Node`:
        ``settings`` (with ``allow_plaintext`` turned on), ``limits``,
        ``policy``, ``gossip`` and ``streams``; the network provides ``reactor`` and
        ``clock``.  (A timeout such as ``request_timeout`` is a field of
        ``settings``: ``settings=Settings(request_timeout=5.0)``.)
        """
        owned = _OWNED.intersection(options)
        if owned:
            raise TypeError(f"the network provides {', '.join(sorted(owned))}")
        if identity is None:
            seed = f"blueprint_net.testing node {len(self.nodes) + 1}"
            identity = Identity(hashlib.sha256(seed.encode()).digest())
        if host is None:
            host = next(self._hosts)
        port = LINK_PORT
        while (host, port) in self._ports:
            port += 1
        # The in-memory transport is not TLS: opt in (see the module docstring).
        settings = attrs.evolve(
            options.pop("settings", Settings()), allow_plaintext=True
        )
        node = Node(
            identity,
            reactor=self.clock,
            clock=self.clock,
            handlers=handlers,
            settings=settings,
            **options,
        )
        self.nodes.append(node)
        self._addresses[node] = (host, port)
        if listen:
            self.result(node.listen(_ServerEndpoint(self, host, port, node)))
        return node

    def host(self, node: Node) -> str:
        """The IP address ``node`` has on this network (what its peers see)."""
        return self._addresses[node][0]

    def endpoint(
        self, target: Node, *, source: Union[Node, str, None] = None
    ) -> IStreamClientEndpoint:
        """A client endpoint reaching ``target``'s listening port.

        Give it to ``Node.connect`` (or a ``ClientService``, or
        ``connectProtocol`` with a protocol of your own).  The connection
        comes from ``source``'s address (a node of this network, or an IP
        address), by default from an address no node has.
        """
        if isinstance(source, Node):
            node: Optional[Node] = source
            host = self.host(source)
        else:
            node, host = None, next(self._strangers) if source is None else source
        return _ClientEndpoint(self, self._addresses[target], host, node)

    def connect(self, dialer: Node, listener: Node) -> Peer:
        """``dialer`` dials ``listener`` expecting its peer id, and the
        bytes are pumped until the handshake ends; returns the listener as
        the dialer sees it, or raises why the connection failed."""
        dialing = dialer.connect(
            self.endpoint(listener, source=dialer), peer_id=listener.peer_id
        )
        return self.result(dialing)

    def _open_link(
        self,
        port: _Port,
        factory: IProtocolFactory,
        source: str,
        node: Optional[Node],
    ) -> defer.Deferred[IProtocol]:
        server_address = port.getHost()
        client_address = IPv4Address("TCP", source, next(self._ephemeral))
        client = factory.buildProtocol(server_address)
        if client is None:  # as TCP4ClientEndpoint reports it
            return defer.fail(NoProtocol())
        server = port.factory.buildProtocol(client_address) or _Closed()
        listener = FakeTransport(  # type: ignore[no-untyped-call]
            server, True, hostAddress=server_address, peerAddress=client_address
        )
        dialer = FakeTransport(  # type: ignore[no-untyped-call]
            client, False, hostAddress=client_address, peerAddress=server_address
        )
        server.makeConnection(listener)  # accepted, then the dialer learns it
        client.makeConnection(dialer)
        pump = IOPump(  # type: ignore[no-untyped-call]
            client, server, dialer, listener, False, clock=self.clock
        )
        self._links.append(_Link(dialer, listener, pump, frozenset({node, port.node})))
        return defer.succeed(client)

    # -- driving it -------------------------------------------------------

    def pump(self) -> None:
        """Deliver every byte written, and run every timer already due,
        until nothing more happens (the clock does not move)."""
        clock = self.clock
        for _ in range(_MAX_ROUNDS):
            clock.advance(0)
            moved = False
            for link in list(self._links):
                if link.pump.pump(advanceClock=False):  # type: ignore[no-untyped-call]
                    moved = True
                if link.closed:
                    self._links.remove(link)
            now = clock.seconds()
            if not moved and all(c.getTime() > now for c in clock.getDelayedCalls()):
                return
        raise RuntimeError(
            f"still busy after {_MAX_ROUNDS} rounds: do handlers answer each "
            "other forever?"
        )

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, stopping at every timer due on
        the way to run it and pump what it sent, as a real clock would (a
        keepalive's ping is answered before the next tick looks for it)."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        clock = self.clock
        end = clock.seconds() + seconds
        self.pump()
        for _ in range(_MAX_ROUNDS):
            due = [c.getTime() for c in clock.getDelayedCalls()]
            upcoming = min((t for t in due if t <= end), default=None)
            if upcoming is None:
                break
            clock.rightNow = max(clock.rightNow, upcoming)
            self.pump()
        else:
            raise RuntimeError("timers keep rescheduling themselves at once")
        clock.rightNow = max(clock.rightNow, end)
        self.pump()

    def result(self, waiting: Union[defer.Deferred[_T], Coroutine[Any, Any, _T]]) -> _T:
        """Pump, then return what ``waiting`` fired with, or raise the
        exception it failed with (as ``await`` would, so ``pytest.raises``
        works).  Raises :class:`NoResult` if it has not fired yet."""
        deferred = defer.ensureDeferred(waiting)
        self.pump()
        return fired(deferred)

    def cut(self, a: Node, b: Node) -> None:
        """The network between ``a`` and ``b`` fails: every connection
        between them is lost at once, with no goodbye and nothing more
        delivered (unlike ``Node.disconnect``, which says why first)."""
        for link in self._links:
            if link.ends == {a, b}:
                for transport in (link.dialer, link.listener):
                    transport.stream = []
                    transport.disconnectReason = ConnectionLost("network cut")  # type: ignore[assignment]
                    transport.disconnecting = True
        self.pump()

    # -- tearing it down ------------------------------------------------------

    def stop(self, *, check: bool = True) -> None:
        """Stop every node, and pump until their connections have closed.

        With ``check``, raise ``AssertionError`` if a timer is still pending
        afterwards (a handler's ``callLater``, a Deferred nobody fired that
        holds one): it is cancelled either way, so nothing runs later.
        """
        stopping = [node.stop() for node in self.nodes]
        self.pump()
        if self._links:  # a peer that never answers the goodbye
            self.advance(CLOSE_GRACE)
        for deferred in stopping:
            self.result(deferred)
        left = [call for call in self.clock.getDelayedCalls() if call.active()]
        for call in left:
            call.cancel()
        if left and check:
            raise AssertionError(f"timers left pending after stop: {left}")

    def __enter__(self) -> MemoryNetwork:
        return self

    def __exit__(
        self,
        kind: Optional[type[BaseException]],
        value: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        # A test that already failed should report its own error, not ours.
        self.stop(check=kind is None)
