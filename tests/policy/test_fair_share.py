"""The fair-share decision (``_policy/fair_share.py``): which peer's request
runs next, pinned branch by branch with made-up costs (no clock, no
sockets); the adapter's tests are in ``tests/adapters/test_fair_dispatch.py``."""

from __future__ import annotations

from typing import Optional

import pytest

from blueprint_net._policy.fair_share import QUANTUM, TURN, FairShare

Q = 1.0  # a quantum of one time unit keeps the sums exact


def _share(turn: float = 1e9) -> FairShare[str, str]:
    return FairShare(quantum=Q, turn=turn)


def _run(share: FairShare[str, str], costs: dict[str, float], count: int) -> list[str]:
    """The next ``count`` requests handed out, each charged its peer's cost."""
    order = []
    for _ in range(count):
        picked = share.next()
        assert picked is not None
        peer, item = picked
        order.append(item)
        share.charge(peer, costs[peer])
    return order


def _fill(share: FairShare[str, str], peer: str, count: int) -> None:
    for index in range(1, count + 1):
        share.add(peer, f"{peer}{index}")


def test_the_defaults_are_the_documented_ones() -> None:
    share: FairShare[str, str] = FairShare()
    assert (share.quantum, share.turn) == (QUANTUM, TURN) == (0.0001, 0.0002)
    assert QUANTUM < TURN  # several peers take turns within one turn


@pytest.mark.parametrize("quantum, turn", [(0.0, 1.0), (1.0, 0.0), (-1.0, 1.0)])
def test_a_quantum_or_turn_that_is_not_positive_is_refused(
    quantum: float, turn: float
) -> None:
    with pytest.raises(ValueError, match=r"^the quantum and the turn are positive$"):
        FairShare(quantum=quantum, turn=turn)


def test_one_peer_runs_in_order_and_nothing_waits_then() -> None:
    share = _share()
    assert share.next() is None and share.waiting == 0
    _fill(share, "a", 3)
    assert share.waiting == 3
    assert _run(share, {"a": 0.25}, 3) == ["a1", "a2", "a3"]
    assert share.waiting == 0
    assert share.next() is None
    assert share.spent == 0.75  # every charge counts


def test_equal_costs_alternate_request_by_request() -> None:
    """A deficit of exactly zero is spent: the next peer's turn."""
    share = _share()
    _fill(share, "a", 3)
    _fill(share, "b", 3)
    order = _run(share, {"a": Q, "b": Q}, 6)
    assert order == ["a1", "b1", "a2", "b2", "a3", "b3"]


def test_a_peer_whose_requests_cost_more_runs_fewer() -> None:
    """Costs known after the run: ``a`` overdraws and owes the rest."""
    share = _share()
    _fill(share, "a", 3)
    _fill(share, "b", 8)
    order = _run(share, {"a": 2 * Q, "b": Q / 2}, 9)
    assert order == ["a1", "b1", "b2", "b3", "b4", "a2", "b5", "b6", "b7"]


@pytest.mark.parametrize("k", [2, 3, 4])
def test_busy_peers_get_equal_handler_time_whatever_their_costs(k: int) -> None:
    share = _share()
    costs = {f"p{index}": Q * (index + 1) / 3 for index in range(k)}
    used = dict.fromkeys(costs, 0.0)
    for peer in costs:
        _fill(share, peer, 1000)
    for _ in range(600):
        picked = share.next()
        assert picked is not None
        peer, _item = picked
        share.charge(peer, costs[peer])
        used[peer] += costs[peer]
    # Each within a quantum and one request of the others.
    assert max(used.values()) - min(used.values()) <= Q + max(costs.values())


def test_a_peer_with_nothing_waiting_goes_before_the_busy_ones() -> None:
    share = _share()
    _fill(share, "flood", 100)
    assert _run(share, {"flood": Q / 4}, 6)[-1] == "flood6"
    share.add("honest", "h1")
    assert _run(share, {"flood": Q / 4, "honest": Q / 4}, 2) == ["h1", "flood7"]


def _busy(share: FairShare[str, str], peer: str) -> None:
    """``peer`` has many requests waiting and has spent its first quantum
    (it is no longer new)."""
    _fill(share, peer, 100)
    assert _run(share, {peer: Q / 2}, 2) == [f"{peer}1", f"{peer}2"]


def test_a_new_peer_spends_a_round_among_the_busy_before_it_is_new_again() -> None:
    share = _share()
    _busy(share, "flood")
    costs = {"flood": Q / 2, "honest": Q / 4}
    share.add("honest", "h1")
    assert _run(share, costs, 2) == ["h1", "flood3"]
    # Its queue empty, it is still listed (old) until its round comes.
    assert share.share("honest") == 3 * Q / 4
    share.add("honest", "h2")  # not new: it waits for the flood's quantum
    assert _run(share, costs, 3) == ["flood4", "h2", "flood5"]
    # A round with nothing waiting, and it is forgotten: new again.
    assert share.share("honest") is None
    share.add("honest", "h3")
    assert _run(share, costs, 1) == ["h3"]


def test_time_left_over_is_not_saved_up() -> None:
    share = _share()
    share.add("a", "a1")
    share.add("b", "b1")
    assert _run(share, {"a": Q / 10, "b": Q / 10}, 2) == ["a1", "b1"]
    assert share.next() is None  # both idle now: both forgotten
    assert share.share("a") is None and share.share("b") is None
    share.add("a", "a2")
    assert share.share("a") == Q  # a fresh quantum, not the 0.9 left


def test_a_peer_that_overdraws_keeps_its_debt_while_others_are_busy() -> None:
    share = _share()
    _busy(share, "busy")
    costs = {"heavy": 5 * Q, "busy": Q / 2}
    share.add("heavy", "x1")
    assert _run(share, costs, 1) == ["x1"]
    assert share.share("heavy") == -4 * Q
    share.add("heavy", "x2")  # owes time: neither new nor first
    # The busy peer gets the same 5 units of handler time meanwhile.
    assert _run(share, costs, 10) == [f"busy{n}" for n in range(3, 13)]
    assert _run(share, costs, 1) == ["x2"]
    assert share.share("heavy") == -4 * Q


def test_a_debt_is_paid_off_before_an_idle_peer_is_forgotten() -> None:
    share = _share()
    share.add("heavy", "x1")
    assert _run(share, {"heavy": 2.5 * Q}, 1) == ["x1"]
    assert share.next() is None  # nothing else waits: paid off at once
    assert share.share("heavy") is None


def test_the_turn_ends_once_its_budget_is_spent() -> None:
    share = _share(turn=3 * Q)
    _fill(share, "a", 10)
    assert _run(share, {"a": Q}, 2) == ["a1", "a2"]
    share.charge("a", Q - 1e-9)  # just short of the budget
    picked = share.next()
    assert picked is not None and picked[1] == "a3"
    share.charge("a", 1e-9)  # exactly the budget: the turn is over
    assert share.spent == 3 * Q
    assert share.next() is None
    assert share.waiting == 7  # still waiting, for the next turn
    share.new_turn()
    assert share.spent == 0.0
    assert _run(share, {"a": Q}, 1) == ["a4"]


def test_a_charge_for_a_forgotten_peer_counts_against_the_turn() -> None:
    """The caller charges after the run: the peer may be gone by then."""
    share = _share(turn=2 * Q)
    share.charge("ghost", 1.5 * Q)
    assert share.share("ghost") is None
    assert share.spent == 1.5 * Q
    share.add("a", "a1")
    share.charge("ghost", Q)
    assert share.next() is None


def _first(share: FairShare[str, str]) -> Optional[str]:
    picked = share.next()
    return None if picked is None else picked[1]


def test_new_peers_are_served_in_the_order_they_came() -> None:
    share = _share()
    _busy(share, "old")
    share.add("b", "b1")
    share.add("c", "c1")
    assert [_first(share), _first(share), _first(share)] == ["b1", "c1", "old3"]


def test_the_new_peers_last_waiting_request_is_said_to_be_so() -> None:
    """``new_peers_done``: the caller ends the turn there, so that the
    answers go out before the busy peers run again (once, however many new
    peers there were)."""
    share = _share()
    assert share.new_peers_done is False  # nothing handed out yet
    _busy(share, "flood")
    assert not share.new_peers_done  # a new peer's, but more of them wait
    share.add("honest", "h1")
    share.add("honest", "h2")
    share.add("other", "o1")
    assert _first(share) == "h1"
    assert not share.new_peers_done  # one more of its requests waits
    assert _first(share) == "h2"
    assert not share.new_peers_done  # another new peer waits
    assert _first(share) == "o1"
    assert share.new_peers_done
    assert _first(share) == "flood3"
    assert not share.new_peers_done
