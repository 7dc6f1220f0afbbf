"""A stand-in node for a handler's unit tests: :class:`StubNode`
(``blueprint_net.testing``).

In: handlers, and requests asked as if a verified peer had sent them.  Out:
the answer, through the same encoding, admission and answer rules as on a
node.  No connection, no handshake, no states.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Mapping
from typing import Optional, TypeVar, cast

import attrs
from twisted.internet import defer
from twisted.internet.task import Clock

from blueprint_net import PeerId, Reply, Settings
from blueprint_net._adapters.dispatch import Dispatcher
from blueprint_net._core import framing, wire
from blueprint_net.errors import RemoteError
from blueprint_net.node import Handler
from blueprint_net.testing._results import fired

_T = TypeVar("_T")


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
        framing.frame_chunks(request, self.settings.max_frame)  # ValueError
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
        return fired(waiting)


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
            framing.frame_chunks(response, self.max_frame)
        except ValueError:  # as a connection answers (Connection.respond)
            response = framing.oversized(response, self.max_frame)
        received = _travelled(response)
        if isinstance(received, wire.ErrorResponse):
            self.answered.errback(RemoteError(received.code, received.message))
        else:
            self.answered.callback(received)
