"""Request/response bookkeeping for one connection, sans-IO.

Layer: core (sans-IO; imports nothing from Twisted).

The specification draws one request at a time (Handshaked -> RequestPending
-> Processing -> ResponseSent/ErrorSent -> Handshaked).  Here that diagram is
the lifecycle of *each* request: every request carries an id, so many are in
flight at once and each response names the request it answers, in whatever
order the handlers finish.  This module allocates the ids, matches responses
to requests and keeps the per-request states; it holds no Deferreds and no
timers, so it is tested without a reactor.
"""

from __future__ import annotations

import enum
import heapq
from typing import Generic, Optional, TypeVar

import attrs

from blueprint_net._core import wire
from blueprint_net._core.errors import ErrorCode
from blueprint_net._core.identity import PeerId

Token = TypeVar("Token")

#: Request ids run 1 .. 2**32 - 1 and wrap; 0 means "no response wanted".
_MAX_ID = 2**32 - 1


@attrs.frozen
class IncomingRequest:
    """What a handler is given.  ``peer_id`` is the connection's verified id,
    never something the peer declares in the request."""

    peer_id: PeerId
    protocol: str
    payload: bytes
    metadata: Optional[bytes]
    request_id: int

    @property
    def wants_response(self) -> bool:
        return self.request_id != wire.NO_RESPONSE


@attrs.frozen
class Success:
    """A handler's answer: ``InstanceMessageResponse::Success {data?}``.

    What a handler returns; the node adds the request's id and sends it as a
    :class:`~blueprint_net._core.wire.SuccessResponse`, what the caller gets.
    """

    data: Optional[bytes] = None


@attrs.frozen
class ProtocolData:
    """A handler's answer: ``InstanceMessageResponse::Protocol {data}``
    (sent as a :class:`~blueprint_net._core.wire.ProtocolResponse`)."""

    data: bytes


class RequestState(enum.Enum):
    """Where one request is in the specification's message-flow diagram."""

    PENDING = "RequestPending"  # sent, awaiting its response (requester)
    PROCESSING = "Processing"  # received, its handler running (responder)
    RESPONSE_SENT = "ResponseSent"
    ERROR_SENT = "ErrorSent"


class Requests(Generic[Token]):
    """Both directions of one connection's requests.

    ``Token`` is whatever the caller needs back when a response arrives (the
    Twisted adapter uses the Deferred it handed out).
    """

    def __init__(self, max_in_flight: Optional[int] = None) -> None:
        self._next_id = 1
        #: Our requests awaiting a response, by id.
        self.pending: dict[int, Token] = {}
        #: The peer's requests whose handlers are running, by id.
        self.processing: set[int] = set()
        #: The peer's fire-and-forget (id 0) requests whose handlers run.
        self.notifications = 0
        #: The peer's requests of both kinds handed out at once, at most
        #: (None: no bound); see :attr:`full`.
        self.max_in_flight = max_in_flight

    @property
    def in_flight(self) -> int:
        """The peer's requests being processed, numbered or not."""
        return len(self.processing) + self.notifications

    @property
    def full(self) -> bool:
        """No more of the peer's requests may be handed out until one ends."""
        bound = self.max_in_flight
        return bound is not None and len(self.processing) + self.notifications >= bound

    # -- requester ----------------------------------------------------------

    def request(self, token: Optional[Token]) -> int:
        """A new request's id, its ``token`` kept until its response; with
        ``token`` None it asks for no response (id 0)."""
        if token is None:
            return wire.NO_RESPONSE
        pending = self.pending
        if len(pending) >= _MAX_ID:
            raise RuntimeError("every request id is in flight")
        request_id = self._next_id
        while request_id in pending:
            request_id = request_id % _MAX_ID + 1
        self._next_id = request_id % _MAX_ID + 1
        pending[request_id] = token
        return request_id

    def response_received(self, response: wire.Response) -> Optional[Token]:
        """The token of the request answered; None for an id not pending
        (a response that arrived after its request timed out)."""
        return self.pending.pop(response.request_id, None)

    def abandon(self, request_id: int) -> Optional[Token]:
        """Stop waiting (a timeout); a late response is then ignored."""
        return self.pending.pop(request_id, None)

    # -- responder ----------------------------------------------------------

    def request_received(self, request: wire.Request) -> Optional[wire.ErrorResponse]:
        """Admit a request to ``Processing``; an error to send if it cannot be."""
        request_id = request.request_id
        if request_id == wire.NO_RESPONSE:
            self.notifications += 1  # until the handler ends: see respond
            return None
        if request_id in self.processing:
            return wire.ErrorResponse(
                request_id,
                ErrorCode.DUPLICATE_REQUEST_ID,
                f"request {request_id} is already in flight",
            )
        self.processing.add(request_id)
        return None

    def respond(self, response: wire.Response) -> Optional[RequestState]:
        """Finish a request; the state it ends in, or None if it needs no
        response (fire and forget: its handler ended, so it no longer counts
        in flight) or is not being processed."""
        request_id = response.request_id
        if request_id == wire.NO_RESPONSE:
            if self.notifications:
                self.notifications -= 1
            return None
        if request_id not in self.processing:
            return None
        self.processing.discard(request_id)
        if isinstance(response, wire.ErrorResponse):
            return RequestState.ERROR_SENT
        return RequestState.RESPONSE_SENT

    def state(self, request_id: int) -> Optional[RequestState]:
        """The state of a request in flight in either direction."""
        if request_id in self.pending:
            return RequestState.PENDING
        if request_id in self.processing:
            return RequestState.PROCESSING
        return None

    # -- the end ------------------------------------------------------------

    def close(self) -> list[Token]:
        """The connection closed: every pending token, to be failed."""
        tokens = list(self.pending.values())
        self.pending.clear()
        self.processing.clear()
        self.notifications = 0
        return tokens


class Deadlines:
    """When each pending request times out, for one timer per connection.

    A ``callLater`` per request would keep a ``DelayedCall`` (and its
    arguments, all tracked by the garbage collector) alive for every request
    in flight.  Instead deadlines sit in a heap; a request answered in time is
    only forgotten (lazy deletion), and the heap is rebuilt whenever dead
    entries outnumber live ones, so it never holds more than about twice the
    requests in flight.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int]] = []
        #: request id -> its deadline, for the requests still waiting.
        self._live: dict[int, float] = {}

    def __len__(self) -> int:
        return len(self._live)

    def add(self, request_id: int, deadline: float) -> None:
        self._live[request_id] = deadline
        heapq.heappush(self._heap, (deadline, request_id))
        if len(self._heap) > 2 * len(self._live) + 64:
            self._heap = [(when, rid) for rid, when in self._live.items()]
            heapq.heapify(self._heap)

    def discard(self, request_id: int) -> None:
        self._live.pop(request_id, None)

    def earliest(self) -> Optional[float]:
        """The next deadline of a request still waiting, if any."""
        heap, live = self._heap, self._live
        while heap and live.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)  # answered, or its id reused since
        return heap[0][0] if heap else None

    def expire(self, now: float) -> list[int]:
        """Forget and return the requests whose deadline is ``now`` or past."""
        expired = []
        while (when := self.earliest()) is not None and when <= now:
            _, request_id = heapq.heappop(self._heap)
            del self._live[request_id]
            expired.append(request_id)
        return expired

    def clear(self) -> None:
        self._heap.clear()
        self._live.clear()
