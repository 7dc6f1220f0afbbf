"""Test request handlers on nodes connected in memory, on a fake clock.

Three helpers, from the whole stack to one handler:

* :class:`MemoryNetwork`: real nodes joined by in-memory connections;
* :class:`StubNode`: a stand-in node for a handler's unit tests (like treq's
  ``StubTreq``): register handlers, ask them as if a peer id had, get the
  answer -- no connection, no handshake;
* :class:`RecordingHandler`: records each request the code under test sends
  and lets the test answer it (like treq's ``RequestSequence``), on either.

:class:`INode` (what services beside a node may use of it) is re-exported
here: the nodes of a :class:`MemoryNetwork` provide it.

A :class:`MemoryNetwork` makes real :class:`~blueprint_net._adapters.node.Node`
objects and connects them through in-memory transports
(``twisted.test.iosim``), so a test runs exactly the production code -- the
node, its limits and policy, ``PeerProtocol``, the handshake, the framing --
with no sockets, no threads and no reactor: bytes move only when the test
calls :meth:`~MemoryNetwork.pump`, and time only when it calls
:meth:`~MemoryNetwork.advance`.  Every run is the same run.

::

    from blueprint_net.testing import MemoryNetwork

    def test_echo() -> None:
        with MemoryNetwork() as net:
            alice = net.add_node()
            bob = net.add_node(handlers={"echo": lambda request: request.payload})
            net.connect(alice, bob)
            reply = net.result(alice.request(bob.peer_id, "echo", b"hi"))
            assert reply.data == b"hi"

What is not simulated: TLS (the in-memory transport is plain, so there is no
channel binding, and every node here opts in to plaintext links with
``Settings(allow_plaintext=True)``: without it a node closes a plain
transport before its handshake), and backpressure (the transport never
pauses a writer, so ``SendQueueFull`` cannot happen here).  Test those over
loopback sockets.
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
from collections import Counter
from collections.abc import Coroutine, Mapping
from types import TracebackType
from typing import Any, Optional, TypeVar, Union, cast

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
from twisted.python.failure import Failure
from twisted.test.iosim import FakeTransport, IOPump
from zope.interface import implementer

from blueprint_net import Identity, IncomingRequest, Node, PeerId, Reply, Settings
from blueprint_net._adapters.dispatch import Dispatcher
from blueprint_net._adapters.node import CLOSE_GRACE
from blueprint_net._core import wire
from blueprint_net.errors import RemoteError
from blueprint_net.node import Handler, INode, IRequestHandler, Peer

__all__ = [
    "LINK_PORT",
    "INode",
    "MemoryNetwork",
    "NoResult",
    "RecordedRequest",
    "RecordingHandler",
    "StubNode",
]

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


class NoResult(AssertionError):
    """:meth:`MemoryNetwork.result` found the Deferred still waiting.

    An ``AssertionError``, so a test framework reports it as a failed
    assertion: usually a missing :meth:`~MemoryNetwork.advance`, or a
    handler whose Deferred nobody fired.
    """


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
        return _fired(deferred)

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


def _fired(deferred: defer.Deferred[_T]) -> _T:
    """What ``deferred`` fired with, or its exception raised as ``await``
    would; :class:`NoResult` if it has not fired."""
    outcome: list[Union[_T, Failure]] = []

    def seen(result: Union[_T, Failure]) -> Union[_T, Failure]:
        outcome.append(result)
        return result  # a failure that fires later stays unhandled

    deferred.addBoth(seen)
    if not outcome:
        raise NoResult(f"{deferred!r} has not fired (advance the clock?)")
    [result] = outcome
    if isinstance(result, Failure):
        deferred.addErrback(lambda failure: None)  # handled: raised here
        result.raiseException()
    return result


# -- one node's handlers, without a network ------------------------------------


class StubNode:
    """A stand-in node for a handler's unit tests, like treq's ``StubTreq``.

    Register handlers as on a :class:`Node`, then :meth:`request_from` asks
    one as if the verified peer ``peer_id`` had: the request and the answer
    go through the same encoding, admission (the handler's ``max_payload``)
    and answer rules as on a node, and the Deferred fires as
    :meth:`Node.request` would -- a ``SuccessResponse`` or
    ``ProtocolResponse``, or :class:`~blueprint_net.RemoteError`.  There is
    no connection, handshake, rate limit or timeout: for those use a
    :class:`MemoryNetwork`.  A handler that waits should wait on
    :attr:`clock`; the test moves it (``stub.clock.advance(5)``).

    ::

        stub = StubNode({"greet": greet})
        reply = stub.result(stub.request_from(alice, "greet", b"bob"))
        assert reply.data == b"hello, bob"
    """

    def __init__(
        self,
        handlers: Optional[Mapping[str, Handler]] = None,
        *,
        settings: Optional[Settings] = None,
    ) -> None:
        #: The time its handlers wait on.
        self.clock = Clock()
        #: ``requests.in.<protocol>``, ``requests.refused...``, as on a node.
        self.counters: Counter[str] = Counter()
        self.settings = Settings() if settings is None else settings
        self._dispatch = Dispatcher(self.clock, self.counters, handlers=handlers)
        self._ids = itertools.count(1)

    def register(
        self, protocol: str, handler: Handler, *, max_payload: Optional[int] = None
    ) -> None:
        """As :meth:`Node.register`."""
        self._dispatch.register(protocol, handler, max_payload=max_payload)

    def unregister(self, protocol: str) -> None:
        self._dispatch.unregister(protocol)

    @property
    def protocols(self) -> list[str]:
        """The protocols served (a handler is registered), sorted."""
        return self._dispatch.protocols

    def request_from(
        self,
        peer_id: PeerId,
        protocol: str,
        payload: bytes,
        metadata: Optional[bytes] = None,
    ) -> defer.Deferred[Reply]:
        """Ask the handler for ``protocol`` as ``peer_id`` would, over a
        verified connection; fires once with the answer, or fails with
        :class:`~blueprint_net.RemoteError` (an unknown protocol, a payload
        over ``max_payload``, the handler's own ``RemoteError``, or
        ``HANDLER_ERROR``).  ``ValueError`` if the request could not travel
        (as :meth:`Node.request`)."""
        request = wire.Request(next(self._ids), protocol, payload, metadata)
        wire.frame_chunks(request, self.settings.max_frame)  # ValueError
        answered: defer.Deferred[Reply] = defer.Deferred()
        self._dispatch.serve(
            _travelled(request),
            peer_id,
            _Asker(answered, self.settings.max_frame).respond,
            budget=None,
            stopping=False,
        )
        return answered

    def result(self, waiting: defer.Deferred[_T]) -> _T:
        """What ``waiting`` fired with, or its exception raised (as
        :meth:`MemoryNetwork.result`, without a network to pump)."""
        return _fired(waiting)


_M = TypeVar("_M", bound=wire.Message)


def _travelled(message: _M) -> _M:
    """``message`` as the far end decodes it from its bytes."""
    decoded = wire.decode(wire.encode(message))
    assert type(decoded) is type(message)
    return cast(_M, decoded)


@attrs.define
class _Asker:
    """Where a :class:`StubNode` request's answer goes: the dispatcher's
    ``respond`` callable, as a connection's ``respond`` is on a node."""

    answered: defer.Deferred[Reply]
    max_frame: int

    def respond(self, response: wire.Response) -> None:
        try:
            wire.frame_chunks(response, self.max_frame)
        except ValueError:  # as a connection answers (Connection.respond)
            response = wire.oversized(response, self.max_frame)
        received = _travelled(response)
        if isinstance(received, wire.ErrorResponse):
            self.answered.errback(RemoteError(received.code, received.message))
        else:
            self.answered.callback(received)


# -- recording what the code under test asks -------------------------------------


@attrs.define(eq=False)
class RecordedRequest:
    """One request a :class:`RecordingHandler` was given, waiting for the
    test to :meth:`answer` or :meth:`fail` it."""

    #: What the handler was given: ``peer_id``, ``protocol``, ``payload``...
    request: IncomingRequest
    #: Fires with the answer; the node waits on it.
    waiting: defer.Deferred[Any] = attrs.field(factory=defer.Deferred, repr=False)

    @property
    def answered(self) -> bool:
        return bool(self.waiting.called)

    def answer(self, value: Any = None) -> None:
        """Answer with what a handler may return: ``None``, ``bytes``,
        ``Success(data)`` or ``ProtocolData(data)``."""
        self._check()
        self.waiting.callback(value)

    def fail(self, error: Exception) -> None:
        """Answer as a handler that raised ``error``: a
        :class:`~blueprint_net.RemoteError` is the peer's ``Error`` with its
        code, anything else ``HANDLER_ERROR``."""
        self._check()
        self.waiting.errback(error)

    def _check(self) -> None:
        if self.answered:
            raise AssertionError(f"{self.request.protocol!r} was already answered")


@implementer(IRequestHandler)
class RecordingHandler:
    """A handler that records every request and answers only when the test
    says, like treq's ``RequestSequence``: register it (for one protocol or
    several) on the node the code under test talks to -- a node of a
    :class:`MemoryNetwork`, or a :class:`StubNode` -- run the code, then
    check what it asked and answer it.

    ::

        recorder = RecordingHandler()
        server = net.add_node(handlers={"price": recorder})
        ...  # the code under test asks the server for "price" of b"apple"
        asked = recorder.next()
        assert asked.request.payload == b"apple"
        asked.answer(b"42")

    A notification (``notify``, no response wanted) is recorded too;
    answering it sends nothing.
    """

    def __init__(self, *, max_payload: Optional[int] = None) -> None:
        #: The largest payload accepted (``None``: the frame limit).
        self.max_payload = max_payload
        #: Every request given, in order, answered or not.
        self.requests: list[RecordedRequest] = []

    def handle(self, request: IncomingRequest) -> defer.Deferred[Any]:
        recorded = RecordedRequest(request)
        self.requests.append(recorded)
        return recorded.waiting

    @property
    def unanswered(self) -> list[RecordedRequest]:
        """The requests the test has not answered yet, oldest first."""
        return [recorded for recorded in self.requests if not recorded.answered]

    def next(self) -> RecordedRequest:
        """The oldest request not yet answered; ``AssertionError`` if none
        is waiting (the code under test asked nothing, or the network was not
        pumped)."""
        waiting = self.unanswered
        if not waiting:
            raise AssertionError("no request is waiting for an answer")
        return waiting[0]
