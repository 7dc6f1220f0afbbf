"""Requests in fair shares (``_adapters/fair_dispatch.py``): the adapter's
turns on a fake reactor and timer, then a default node over real loopback
answering an honest peer while another verified peer floods it."""

from __future__ import annotations

import time
from typing import Any, Callable

import attrs
import pytest
import pytest_twisted

from blueprint_net._adapters.fair_dispatch import FairDispatch
from blueprint_net._core import wire
from blueprint_net._core.identity import Identity
from blueprint_net._core.messaging import IncomingRequest
from blueprint_net._policy.fair_share import FairShare
from tests.adapters.test_admission import _client, _port
from tests.helpers import MakeNode, until


@attrs.define
class _Connection:
    closed: bool = False


@attrs.define
class _Protocol:
    """What the adapter uses of a ``PeerProtocol``: ``log`` says when its
    answers were held and sent."""

    peer_id: str
    connection: _Connection = attrs.Factory(_Connection)
    log: list[str] = attrs.Factory(list)
    reading: bool = False  # inside a read, answers are held already
    on_send: Callable[[], None] = lambda: None

    def cork(self) -> bool:
        self.log.append("cork")
        return not self.reading

    def uncork(self) -> None:
        self.log.append("send")
        self.on_send()


@attrs.define
class _Call:
    function: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@attrs.define
class _Reactor:
    """Turns as the real reactor takes them: a ``callLater(0)`` made during
    a turn runs in the next one, after the sockets are read."""

    calls: list[_Call] = attrs.Factory(list)

    def callLater(self, delay: float, function: Callable[[], None]) -> _Call:
        assert delay == 0
        self.calls.append(_Call(function))
        return self.calls[-1]

    def due(self) -> int:
        return sum(not call.cancelled for call in self.calls)

    def turn(self) -> None:
        calls, self.calls = self.calls, []
        for call in calls:
            if not call.cancelled:
                call.function()


class _Harness:
    """A FairDispatch on a fake reactor whose every run costs ``cost`` (a
    quantum of 1, a turn of 3: three runs a turn); ``then[n]``, if any,
    runs after the n-th request served (as an answer letting out more of
    a read's requests)."""

    def __init__(self, cost: float = 1.0, peers: int = 2) -> None:
        self.reactor = _Reactor()
        self.now = 0.0
        self.cost = cost
        self.served: list[str] = []
        self.then: dict[int, Callable[[], None]] = {}
        #: How many peers are connected (a test may change it).
        self.peers = peers
        self.fair = FairDispatch(
            lambda: self.reactor,  # type: ignore[arg-type,return-value]
            self._serve,
            share=FairShare(quantum=1.0, turn=3.0),
            timer=lambda: self.now,
            peers=lambda: self.peers,
        )

    def _serve(self, peer: Any, protocol: Any, request: wire.Request) -> None:
        assert peer == protocol.peer_id  # the request's own peer, passed along
        self.served.append(f"{peer}{request.payload.decode()}")
        self.now += self.cost
        after = self.then.get(len(self.served))
        if after is not None:
            after()

    def submit(self, protocol: _Protocol, *payloads: str) -> None:
        for payload in payloads:
            request = wire.Request(1, "p", payload.encode())
            self.fair.submit(protocol, request)  # type: ignore[arg-type]


def test_a_request_that_finds_nothing_waiting_runs_at_once() -> None:
    h = _Harness()
    a = _Protocol("a")
    for index in range(3):  # the turn's budget
        h.submit(a, str(index))
        assert h.served[-1] == f"a{index}"
    assert h.reactor.due() == 1  # a fresh budget after the next read
    h.reactor.turn()
    assert h.reactor.due() == 0  # nothing ran: nothing more is due
    h.submit(a, "3")
    assert h.served[-1] == "a3"


def test_past_the_turns_budget_the_rest_waits_for_the_next_turn() -> None:
    h = _Harness()
    a, b = _Protocol("a"), _Protocol("b")

    def more() -> None:  # the first answer lets out four of a, and b asks
        h.submit(a, "2", "3", "4", "5")
        h.submit(b, "1")

    h.then[1] = more
    h.submit(a, "1")
    # b is new: before a's second, and its answer ends the turn.
    assert h.served == ["a1", "b1"]
    assert h.reactor.due() == 1
    h.submit(b, "2")  # others wait: this waits too, for the turn
    assert h.served == ["a1", "b1"]
    h.reactor.turn()  # three runs, the budget
    assert h.served[2:] == ["a2", "b2", "a3"]
    h.reactor.turn()
    assert h.served[5:] == ["a4", "a5"]
    assert h.fair.share.waiting == 0
    h.reactor.turn()  # the budget's reset
    assert h.reactor.due() == 0


def test_a_new_peers_answers_go_out_before_the_busy_peers_run_again() -> None:
    """The transport writes when the reactor looks at the sockets: a new
    peer's last request ends the turn, so its answer is sent then, not
    after the busy peer's part of the turn."""
    h = _Harness()
    a, b = _Protocol("a"), _Protocol("b")
    h.then[1] = lambda: h.submit(a, *map(str, range(2, 20)))
    h.submit(a, "1")
    assert h.served == ["a1", "a2", "a3"]  # the budget
    h.submit(b, "1")  # a peer asking now and then
    h.then[4] = lambda: b.log.append("b1 ran")
    h.reactor.turn()
    assert h.served[3:] == ["b1"]  # and nothing after it in this turn
    assert b.log == ["cork", "b1 ran", "send"]
    assert h.reactor.due() == 1  # a's next, once the sockets are read
    h.reactor.turn()
    assert h.served[4:] == ["a4", "a5", "a6"]


def test_a_peers_answers_in_a_row_go_out_together_charged_to_it() -> None:
    h = _Harness()
    a, b = _Protocol("a"), _Protocol("b")
    sends: list[str] = []

    def send_a() -> None:
        sends.append("a")
        h.now += 0.5

    a.on_send, b.on_send = send_a, lambda: sends.append("b")

    def more() -> None:
        h.submit(a, "2", "3", "4")
        h.submit(b, "1")

    h.then[1] = more
    h.fair.share.turn = 10.0
    h.fair.share.quantum = 2.0
    h.submit(a, "1")
    # a's first two in a row (a quantum of 2), then b's, which ends the turn.
    assert h.served == ["a1", "a2", "b1"]
    assert sends == ["a", "b"]
    # Three runs of 1, and a's send cost 0.5: all charged.
    assert h.fair.share.spent == 3 + 0.5
    h.reactor.turn()
    assert h.served[3:] == ["a3", "a4"]
    assert sends == ["a", "b", "a"]
    assert h.fair.share.spent == 2 + 0.5


def test_inside_a_read_the_answers_are_held_by_the_read() -> None:
    h = _Harness()
    a = _Protocol("a", reading=True)
    h.then[1] = lambda: h.submit(a, "2")
    h.submit(a, "1")
    assert h.served == ["a1", "a2"]
    assert a.log == ["cork"]  # asked once; the read sends them


def test_with_one_peer_connected_no_turn_ends() -> None:
    """Nobody else's request can be waiting to be read: no turns."""
    h = _Harness(peers=1)
    a = _Protocol("a")
    h.then[1] = lambda: h.submit(a, "2", "3", "4", "5", "6")
    h.submit(a, "1")
    assert h.served == [f"a{n}" for n in range(1, 7)]  # twice the budget
    assert h.reactor.due() == 0
    h.submit(a, "7")
    assert h.served[-1] == "a7"


def test_alone_a_request_submitted_during_a_run_runs_after_it() -> None:
    """With one peer connected too, a request its handler lets out runs
    once the handler returns, never inside it."""
    h = _Harness(peers=1)
    a = _Protocol("a")

    def more() -> None:
        h.submit(a, "2")
        h.served.append("a1 returns")

    h.then[1] = more
    h.submit(a, "1")
    assert h.served == ["a1", "a1 returns", "a2"]


def test_a_peer_left_alone_still_waits_behind_its_own_requests() -> None:
    """The other peer goes while a peer's requests wait for a turn: its next
    request joins the end of its line, so one peer's requests still run in
    the order they came (alone, it is not run at once)."""
    h = _Harness()
    a = _Protocol("a")
    h.then[1] = lambda: h.submit(a, "2", "3", "4", "5")
    h.submit(a, "1")
    assert h.served == ["a1", "a2", "a3"]  # the budget spent; a4, a5 wait
    h.peers = 1
    h.submit(a, "6")
    assert h.served == ["a1", "a2", "a3"]
    h.reactor.turn()
    assert h.served == ["a1", "a2", "a3", "a4", "a5", "a6"]


def test_a_closed_connections_requests_are_dropped_not_run() -> None:
    h = _Harness()
    a, b = _Protocol("a"), _Protocol("b")

    def close_a() -> None:
        h.submit(a, "2", "3")
        h.submit(b, "1")
        a.connection.closed = True

    h.then[1] = close_a
    h.submit(a, "1")
    assert h.served == ["a1", "b1"]
    h.reactor.turn()
    assert h.served == ["a1", "b1"]
    assert h.fair.share.waiting == 0


def test_stopping_runs_what_waits_and_what_comes_with_no_more_turns() -> None:
    h = _Harness()
    a = _Protocol("a")
    h.then[1] = lambda: h.submit(a, "2", "3", "4", "5", "6", "7")
    h.submit(a, "1")
    assert h.served == ["a1", "a2", "a3"]
    assert h.reactor.due() == 1
    h.fair.stop()
    assert h.reactor.due() == 0
    assert h.served == [f"a{n}" for n in range(1, 8)]  # past several budgets
    h.submit(a, "8", "9", "10", "11")
    assert h.served[7:] == ["a8", "a9", "a10", "a11"]
    assert h.reactor.due() == 0
    h.fair.stop()  # twice: nothing due, nothing waits


def test_a_request_submitted_during_a_run_joins_that_run() -> None:
    """With nothing else waiting, a request that arrives while a run serves
    another (an answer let it out) runs in that run, after the current one:
    not inside it, where its time would be charged to both."""
    h = _Harness()
    h.fair.share.turn = 10.0  # the budget is not what ends the turn
    a, b = _Protocol("a"), _Protocol("b")
    h.then[1] = lambda: h.submit(b, "1", "2")  # wait while a1 runs
    h.then[2] = lambda: h.submit(a, "2")  # b1 runs in a run
    h.submit(a, "1")
    # a2 joined the run, new, after b's quantum (b1); it ended the turn.
    assert h.served == ["a1", "b1", "a2"]
    assert h.fair.share.spent == 3.0  # three runs of 1, each charged once
    assert a.log == ["cork", "send"]  # a2 ran in the run: held, then sent
    assert h.fair.share.waiting == 1  # b2, for the next turn


def test_a_peer_left_alone_by_a_run_is_not_held_for_a_turn() -> None:
    """Once the other peers are gone there is nobody to write for first:
    a new peer's last request does not end the turn."""
    h = _Harness()

    def more() -> None:
        h.submit(a, "2")
        h.submit(b, "1")
        h.peers = 1  # a's only peer now

    a, b = _Protocol("a"), _Protocol("b")
    h.then[1] = more
    h.submit(a, "1")
    assert h.served == ["a1", "b1", "a2"]
    assert h.reactor.due() == 0


def test_two_new_peers_are_answered_in_one_turn() -> None:
    """The turn ends once the new peers' requests have all run, not after
    each: one more look at the sockets a turn, however many there are."""
    h = _Harness()
    h.fair.share.turn = 10.0
    a, b, c = _Protocol("a"), _Protocol("b"), _Protocol("c")
    h.then[1] = lambda: h.submit(a, *map(str, range(2, 12)))
    h.submit(a, "1")
    assert h.served == [f"a{n}" for n in range(1, 11)]  # the budget
    h.submit(b, "1")
    h.submit(c, "1")
    h.reactor.turn()
    assert h.served[10:] == ["b1", "c1"]
    assert b.log == ["cork", "send"] and c.log == ["cork", "send"]
    assert h.reactor.due() == 1


def test_a_request_submitted_while_a_new_peers_request_runs_waits() -> None:
    """It is not run inside the one under way, where its time would be
    charged twice; that one ends the turn (it was new), so it waits for the
    next."""
    h = _Harness()
    a, b = _Protocol("a"), _Protocol("b")
    h.then[1] = lambda: h.submit(b, "1")  # waits while a1 runs
    h.then[2] = lambda: h.submit(a, "2")  # while b1 runs
    h.submit(a, "1")
    assert h.served == ["a1", "b1"]
    assert h.fair.share.spent == 2.0
    h.reactor.turn()
    assert h.served == ["a1", "b1", "a2"]
    assert h.fair.share.spent == 1.0


def test_after_a_run_empties_the_line_a_fresh_budget_still_comes() -> None:
    h = _Harness()
    a, b = _Protocol("a"), _Protocol("b")
    h.submit(a, "0", "1", "2")  # the turn's budget, at once
    h.submit(b, "0")  # waits for the next turn
    h.reactor.turn()
    assert h.served[3:] == ["b0"] and h.fair.share.waiting == 0
    assert h.reactor.due() == 1  # b0's time: a fresh budget after the read
    h.reactor.turn()
    h.submit(a, "3", "4", "5")  # a whole budget again, at once
    assert h.served[4:] == ["a3", "a4", "a5"]


def test_past_a_budget_spent_exactly_a_request_waits_in_its_peers_line() -> None:
    h = _Harness()
    a, b = _Protocol("a"), _Protocol("b")
    h.submit(a, "0", "1", "2")  # spends the turn's budget exactly
    h.submit(a, "3")  # nothing waits, but the budget is spent: it waits
    h.submit(a, "4")
    h.submit(b, "0")
    assert h.served == ["a0", "a1", "a2"]
    h.reactor.turn()
    # a3 and a4 share a's line: a3 uses a's quantum, b0 runs (and ends the
    # turn: it was new), then a4.
    assert h.served[3:] == ["a3", "b0"]
    h.reactor.turn()
    assert h.served[5:] == ["a4"]


def test_sending_a_peers_held_answers_counts_against_its_share() -> None:
    """Each send of a's held answers costs 1: a's deficit pays for it, so b
    runs its third request before a's fourth."""
    h = _Harness()
    a, b = _Protocol("a"), _Protocol("b")

    def send_a() -> None:
        h.now += 1.0

    a.on_send = send_a

    def more() -> None:
        h.submit(a, "2", "3", "4")
        h.submit(b, "1", "2", "3")

    h.then[1] = more
    h.fair.share.turn = 100.0
    h.fair.share.quantum = 2.0
    h.submit(a, "1")
    assert h.served == ["a1", "a2", "b1", "b2", "a3", "b3", "a4"]
    assert h.fair.share.spent == 7 + 3 * 1.0  # seven runs, three sends of a's


# -- over real loopback -------------------------------------------------------


@pytest.mark.usefixtures("clean_reactor")
@pytest_twisted.ensureDeferred
async def test_a_default_node_answers_every_pipelined_request(
    alice: Identity, bob: Identity, make_node: MakeNode
) -> None:
    """Issue 23 item 13: an independent client saw 100 of 200 pipelined
    requests refused ``RATE_LIMITED`` by the default request rate."""
    b = make_node(bob, handlers={"echo": lambda r: r.payload})
    client = await _client(await _port(b), alice)
    try:
        client.request("echo", b"x", 1000)
        await until(lambda: len(client.replies) == 1000)
        assert client.codes() == [0] * 1000
    finally:
        client.transport.loseConnection()  # type: ignore[union-attr]
        await client.closed


#: The flooding peer's requests, each of which holds the reactor this long.
WORK = 0.0002
FLOOD = 500


@pytest.mark.usefixtures("clean_reactor")
@pytest_twisted.ensureDeferred
async def test_an_honest_request_is_answered_while_a_verified_peer_floods(
    alice: Identity, bob: Identity, make_node: MakeNode
) -> None:
    """Default settings: the flood is served in full (no ``RATE_LIMITED``),
    and the honest peer, asking after the flood has begun, is answered long
    before the flood is: with requests run first come, first served, it
    waited for all of the flood's read."""
    honest_client: list[Any] = []

    def work(request: IncomingRequest) -> bytes:
        if not honest_client[0].replies and not honest_client[1]:
            honest_client[1] = True  # the flood's first request runs: ask
            honest_client[0].request("echo", b"h")
        until = time.perf_counter() + WORK
        while time.perf_counter() < until:
            pass
        return b"w"

    b = make_node(bob, handlers={"work": work, "echo": lambda r: r.payload})
    port = await _port(b)
    flood = await _client(port, alice)
    honest = await _client(port, Identity.generate())
    seen: list[int] = []

    class Watched(list):  # type: ignore[type-arg]
        def append(self, reply: Any) -> None:
            seen.append(len(flood.replies))
            super().append(reply)

    honest.replies = Watched()
    honest_client[:] = [honest, False]
    try:
        flood.request("work", b"w", FLOOD)  # one write: one read at the node
        await until(lambda: len(flood.replies) == FLOOD and honest.replies)
        assert flood.codes() == [0] * FLOOD and honest.codes() == [0]
        assert seen[0] < FLOOD // 2, seen  # answered while the flood was served
    finally:
        for client in (flood, honest):
            client.transport.loseConnection()  # type: ignore[union-attr]
            await client.closed
