"""A handler that records what the code under test asks and answers when
the test says: :class:`RecordingHandler` (``blueprint_net.testing``).

In: requests (as any handler gets them).  Out: a :class:`RecordedRequest`
each, answered by the test.  States of one request: waiting, then answered
(once).
"""

from __future__ import annotations

from typing import Any, Optional

import attrs
from twisted.internet import defer
from zope.interface import implementer

from blueprint_net import IncomingRequest
from blueprint_net.node import IRequestHandler


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
