"""Request dispatch: the handlers, the admission of each request, and turning
what a handler returns into the response.

Layer: adapters (handlers may return Deferreds).

In: a verified peer's request, its id, the peer's rate budget, and
``respond``, the callable its answer goes to (a connection's
``PeerProtocol.respond``; a list's ``append`` in a test).  Out: exactly one
call of ``respond`` per request, now or once the handler's result is ready.
Sizing the answer (the frame limit) is the connection's job.

Admission happens in one place, in a fixed order: a stopping node refuses
everything, then the peer's rate budget, then the protocol name, then the
handler's payload limit.  A handler's exception never reaches the peer: it
gets a code and a fixed text, and the traceback goes to the log.
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Mapping
from typing import Any, Callable, Optional, Union

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from blueprint_net._adapters.interfaces import IRequestHandler
from blueprint_net._core import wire
from blueprint_net._core.errors import ErrorCode, RemoteError
from blueprint_net._core.identity import PeerId
from blueprint_net._core.messaging import IncomingRequest, ProtocolData, Success
from blueprint_net._core.telemetry import REQUESTS_RECEIVED, REQUESTS_REFUSED
from blueprint_net._policy.limits import TokenBucket

Handler = Union[IRequestHandler, Callable[[IncomingRequest], Any]]
#: Where a request's answer goes: the connection it came on.
Respond = Callable[[wire.Response], None]


@implementer(IRequestHandler)
class FunctionHandler:
    """Adapts a plain callable to :class:`IRequestHandler`: each instance's
    ``handle`` is its callable (``verifyObject`` holds for a callable of one
    argument; ``verifyClass`` cannot see an attribute set per instance)."""

    def __init__(
        self, function: Callable[[IncomingRequest], Any], max_payload: Optional[int]
    ) -> None:
        #: ``IRequestHandler.handle`` is the function itself: no call
        #: between the dispatcher and it.
        self.handle: Callable[[IncomingRequest], Any] = function
        self.max_payload = max_payload


class Dispatcher:
    """Serves a node's incoming requests with its registered handlers."""

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        counters: Counter[str],
        *,
        handlers: Optional[Mapping[str, Handler]] = None,
    ) -> None:
        self.clock = clock
        self.counters = counters
        self._handlers: dict[str, IRequestHandler] = {}
        for name, handler in (handlers or {}).items():
            self.register(name, handler)

    def register(
        self, protocol: str, handler: Handler, *, max_payload: Optional[int] = None
    ) -> None:
        """Serve requests for ``protocol`` with an :class:`IRequestHandler`
        or a plain callable (``max_payload`` applies to callables)."""
        if not 1 <= len(protocol.encode("utf-8")) <= 255:
            raise ValueError("a protocol name is 1 to 255 bytes of UTF-8")
        if not IRequestHandler.providedBy(handler):
            if not callable(handler):
                raise TypeError(f"{handler!r} is not a request handler")
            handler = FunctionHandler(handler, max_payload)
        self._handlers[protocol] = handler

    def unregister(self, protocol: str) -> None:
        self._handlers.pop(protocol, None)

    @property
    def protocols(self) -> list[str]:
        """The protocols served now, sorted."""
        return sorted(self._handlers)

    def serve(
        self,
        request: wire.Request,
        peer_id: PeerId,
        respond: Respond,
        *,
        budget: Optional[TokenBucket],
        stopping: bool,
    ) -> None:
        """Admit one request from ``peer_id`` and run its handler; answer
        (through ``respond``) with what it returns, or an Error."""
        handler = self._handlers.get(request.protocol)
        error: Optional[tuple[ErrorCode, str]] = None
        if stopping:
            error = (ErrorCode.SHUTTING_DOWN, "the node is stopping")
        elif budget is not None and not budget.take(self.clock.seconds()):
            error = (ErrorCode.RATE_LIMITED, "too many requests; slow down")
        elif handler is None:
            error = (ErrorCode.UNKNOWN_PROTOCOL, f"no handler for {request.protocol!r}")
        elif handler.max_payload is not None and len(request.payload) > int(
            handler.max_payload
        ):
            error = (
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"{request.protocol!r} accepts at most {handler.max_payload} bytes",
            )
        if error is not None:
            name = request.protocol if handler is not None else "unknown"
            self.counters[REQUESTS_REFUSED.key_for(name, error[0].name)] += 1
            respond(wire.ErrorResponse(request.request_id, *error))
            return
        # Admitted: run the handler (here, not in a method of its own: this
        # is every request's path).
        assert handler is not None
        incoming = IncomingRequest(
            peer_id,
            request.protocol,
            request.payload,
            request.metadata,
            request.request_id,
        )
        self.counters[REQUESTS_RECEIVED.key_for(request.protocol)] += 1
        try:
            result = handler.handle(incoming)
        except Exception as failed:
            respond(self._handler_failed(incoming, failed))
            return
        if type(result) is bytes:  # the common case, first
            respond(wire.ProtocolResponse(request.request_id, result))
        elif result is None:
            respond(wire.SuccessResponse(request.request_id))
        elif inspect.isawaitable(result):  # a Deferred or a coroutine
            defer.ensureDeferred(self._answer_later(respond, incoming, result))
        else:
            respond(self._answer(result, incoming))

    async def _answer_later(
        self, respond: Respond, request: IncomingRequest, result: Any
    ) -> None:
        try:
            value = await result
        except Exception as failed:
            respond(self._handler_failed(request, failed))
        else:
            respond(self._answer(value, request))

    def _answer(self, result: Any, request: IncomingRequest) -> wire.Response:
        """Turn what a handler returned into the response to send."""
        request_id = request.request_id
        if result is None:
            return wire.SuccessResponse(request_id)
        if isinstance(result, bytes):
            return wire.ProtocolResponse(request_id, result)
        if isinstance(result, ProtocolData):
            return wire.ProtocolResponse(request_id, result.data)
        if isinstance(result, Success):
            return wire.SuccessResponse(request_id, result.data)
        self._log.error(
            "handler for {protocol!r} returned {kind}, not bytes or None",
            protocol=request.protocol,
            kind=type(result).__name__,
            peer_id=str(request.peer_id),
        )
        return wire.ErrorResponse(
            request_id, ErrorCode.HANDLER_ERROR, "the handler failed"
        )

    def _handler_failed(
        self, request: IncomingRequest, error: Exception
    ) -> wire.ErrorResponse:
        """The Error for a handler that raised (call it in the except block)."""
        # Codes below 300 are the connection's, never a request's answer;
        # 306-999 are reserved (docs/protocol.md section 8).
        if isinstance(error, RemoteError) and _answerable(error.code):
            return wire.ErrorResponse(request.request_id, error.code, error.message)
        self._log.failure(
            "handler for {protocol!r} failed on a request from {peer_id}",
            protocol=request.protocol,
            peer_id=str(request.peer_id),
        )
        # The peer learns that it failed, never how: no traceback leaks.
        return wire.ErrorResponse(
            request.request_id, ErrorCode.HANDLER_ERROR, "the handler failed"
        )


#: The request codes the protocol defines (300-305): a handler may use them.
_REQUEST_CODES = frozenset(code for code in ErrorCode if 300 <= code < 1000)


def _answerable(code: int) -> bool:
    """Whether a handler may answer with ``code``: a request code the
    protocol defines, or one of the protocols' own (1000-65535)."""
    return 1000 <= code <= 0xFFFF or code in _REQUEST_CODES
