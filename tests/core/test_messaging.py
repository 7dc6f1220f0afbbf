"""The sans-IO request bookkeeping: ids, matching, the per-request states."""

from __future__ import annotations

from blueprint_net._core import wire
from blueprint_net._core.errors import ErrorCode
from blueprint_net._core.messaging import Deadlines, Requests, RequestState


def test_ids_are_unique_nonzero_and_matched_to_responses() -> None:
    requests: Requests[str] = Requests()
    first = requests.request("first")
    second = requests.request("second")
    assert first not in (0, second)
    assert requests.state(first) is RequestState.PENDING
    # Answered out of order, each reaches its own requester.
    assert requests.response_received(wire.SuccessResponse(second)) == "second"
    assert requests.response_received(wire.ProtocolResponse(first, b"")) == "first"
    assert requests.pending == {}


def test_fire_and_forget_takes_no_id() -> None:
    requests: Requests[str] = Requests()
    request = requests.request(None)
    assert request == wire.NO_RESPONSE
    assert requests.pending == {}


def test_late_and_unknown_responses_are_dropped() -> None:
    requests: Requests[str] = Requests()
    request = requests.request("token")
    assert requests.abandon(request) == "token"  # timed out
    assert requests.response_received(wire.SuccessResponse(request)) is None
    assert requests.response_received(wire.SuccessResponse(12345)) is None


def test_ids_wrap_and_skip_those_in_flight() -> None:
    requests: Requests[int] = Requests()
    requests._next_id = 2**32 - 1
    last = requests.request(1)
    assert last == 2**32 - 1
    assert requests.request(2) == 1  # never 0
    requests._next_id = 1
    assert requests.request(3) == 2  # 1 is in flight


def test_responder_lifecycle() -> None:
    requests: Requests[str] = Requests()
    request = wire.Request(7, "echo", b"hi")
    assert requests.request_received(request) is None
    assert requests.state(7) is RequestState.PROCESSING
    assert (
        requests.respond(wire.ProtocolResponse(7, b"hi")) is RequestState.RESPONSE_SENT
    )
    assert requests.state(7) is None
    assert requests.request_received(request) is None  # an id may be reused after
    error = wire.ErrorResponse(7, ErrorCode.HANDLER_ERROR, "x")
    assert requests.respond(error) is RequestState.ERROR_SENT
    assert requests.respond(error) is None  # answered once only


def test_duplicate_request_id_in_flight_is_refused() -> None:
    requests: Requests[str] = Requests()
    assert requests.request_received(wire.Request(7, "echo", b"")) is None
    refusal = requests.request_received(wire.Request(7, "echo", b""))
    assert refusal is not None and refusal.code == ErrorCode.DUPLICATE_REQUEST_ID
    assert requests.processing == {7}


def test_fire_and_forget_requests_are_never_answered() -> None:
    requests: Requests[str] = Requests()
    assert requests.request_received(wire.Request(0, "echo", b"")) is None
    assert requests.respond(wire.SuccessResponse(0)) is None
    assert requests.processing == set()


def test_close_returns_every_pending_token() -> None:
    requests: Requests[str] = Requests()
    requests.request("a")
    requests.request("b")
    requests.request_received(wire.Request(9, "p", b""))
    assert sorted(requests.close()) == ["a", "b"]
    assert requests.pending == {} and requests.processing == set()


def test_deadlines_expire_in_order_and_forget_answered_requests() -> None:
    deadlines = Deadlines()
    deadlines.add(1, 30.0)
    deadlines.add(2, 10.0)  # a shorter timeout, sent later
    deadlines.add(3, 20.0)
    assert deadlines.earliest() == 10.0
    deadlines.discard(2)  # answered in time
    assert deadlines.earliest() == 20.0
    assert deadlines.expire(19.9) == []
    assert deadlines.expire(25.0) == [3]
    assert deadlines.expire(100.0) == [1]
    assert len(deadlines) == 0 and deadlines.earliest() is None


def test_a_reused_id_keeps_only_its_new_deadline() -> None:
    deadlines = Deadlines()
    deadlines.add(7, 5.0)
    deadlines.discard(7)
    deadlines.add(7, 50.0)  # the id came round again
    assert deadlines.expire(10.0) == []
    assert deadlines.earliest() == 50.0


def test_deadlines_stay_within_twice_the_live_entries() -> None:
    deadlines = Deadlines()
    for request_id in range(10_000):
        deadlines.add(request_id, 30.0 + request_id)
        deadlines.discard(request_id)  # every request answered at once
    assert len(deadlines) == 0
    assert len(deadlines._heap) <= 64 + 1
