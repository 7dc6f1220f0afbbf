"""The one back-off: retry delays for the keeper and discovery."""

from __future__ import annotations

import random

from blueprint_net._policy.backoff import Backoff, retry_delay


def test_retry_delay_doubles_up_to_its_maximum_and_jitter_only_cuts() -> None:
    assert [retry_delay(n, 0.5, 30.0, 0.0) for n in range(1, 10)] == [
        0.5, 1, 2, 4, 8, 16, 30, 30, 30,
    ]  # fmt: skip
    assert retry_delay(1, 0.5, 30.0, 1.0) == 0.25
    assert retry_delay(20, 0.5, 30.0, 0.5) == 0.75 * 30
    assert retry_delay(0, 2.0, 30.0, 0.0) == 2.0  # no failure yet: the first delay
    assert retry_delay(10**6, 1.0, 10.0**12, 0.0) == 2.0**30  # no overflow


def test_the_default_limit_is_4096_keys() -> None:
    assert Backoff(1.0, 2.0, random.Random(0)).limit == 4096


def test_backoff_doubles_with_jitter_and_forgets_on_success() -> None:
    backoff = Backoff(1.0, 8.0, random.Random(1))
    delays = [backoff.failed("peer", 0.0) for _ in range(6)]
    for count, delay in enumerate(delays):
        base = min(8.0, 2.0**count)
        assert 0.5 * base <= delay <= base
    assert not backoff.ready("peer", 0.0)
    assert backoff.failures("peer") == 6
    backoff.succeeded("peer")
    assert backoff.ready("peer", 0.0)
    assert backoff.failures("peer") == 0 == backoff.failures("never failed")


class _Fixed(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


def _none() -> _Fixed:
    """No jitter: the fraction 0 keeps the whole delay."""
    return _Fixed(0.0)


def test_backoff_delays_exactly_and_is_ready_at_its_time() -> None:
    backoff = Backoff(2.0, 20.0, _none())
    assert [backoff.failed("p", 100.0) for _ in range(5)] == [2, 4, 8, 16, 20]
    assert not backoff.ready("p", 119.999)
    assert backoff.ready("p", 120.0)  # at exactly its time
    assert backoff.ready("other", 0.0)
    backoff.succeeded("p")
    backoff.succeeded("never failed")
    assert backoff.failed("p", 0.0) == 2.0  # counting from the start again
    # Many failures never overflow: the exponent stops at 30.
    many = Backoff(1.0, 10.0**12, _none())
    for _ in range(40):
        delay = many.failed("p", 0.0)
    assert delay == 2.0**30
    # The jitter cuts the delay by up to half, never adds to it.
    assert Backoff(2.0, 20.0, _Fixed(0.5)).failed("p", 0.0) == 1.5
    assert Backoff(2.0, 20.0, _Fixed(1.0)).failed("p", 0.0) == 1.0


def test_backoff_holds_at_most_limit_keys_forgetting_the_oldest() -> None:
    backoff = Backoff(1.0, 8.0, _none(), limit=2)
    backoff.failed("a", 0.0)
    backoff.failed("b", 0.0)
    backoff.failed("a", 0.0)  # a failed again: now the newest
    backoff.failed("c", 0.0)
    assert backoff.ready("b", 0.0)  # forgotten
    assert not backoff.ready("a", 0.0) and not backoff.ready("c", 0.0)
    assert backoff.failed("a", 0.0) == 4.0  # a's count was kept: its third
