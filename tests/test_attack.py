"""A hostile flood from another process while an honest peer keeps asking:
the honest peer is served throughout (outcomes only; the figures with
latencies come from ``python -m bench.attack``).  A flood from another
process runs in real time, so this asserts what happened, never how much
happened in the time."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor

from bench.attack import LIMITS, run

pytestmark = pytest.mark.usefixtures("clean_reactor")


@pytest_twisted.ensureDeferred
async def test_honest_requests_succeed_through_a_flood() -> None:
    result = await run(reactor, seconds=2.0, concurrency=10)
    quiet, flooded = result["phases"]
    assert quiet.failures == 0 and flooded.failures == 0
    assert flooded.latencies  # the honest peer was served during the flood
    flood, counters = result["flood"], result["counters"]
    assert all(flood[f"{kind}.attempts"] for kind in ("garbage", "badsig"))
    # Offenders were scored and banned, then refused before a byte was read.
    assert counters["misbehaviour"] > 0 and counters["bans.automatic"] > 0
    assert counters["refused.banned"] > 0
    assert flood["replay.error.202"] > 0  # a replayed handshake: BAD_SIGNATURE
    assert max(sample[2] for sample in result["samples"]) <= LIMITS.max_connections


@pytest_twisted.ensureDeferred
async def test_honest_newcomers_and_requests_through_idle_and_unread_hogs() -> None:
    """The ``--hogs`` phases, small: silent sockets from 5 addresses, 10
    verified peers that never read (outcomes only, never timings)."""
    result = await run(
        reactor,
        seconds=1.0,
        concurrency=2,
        hogs=True,
        idle_addresses=5,
        unread_peers=10,
    )
    _, _, dial, idle, unread = result["phases"]
    assert dial.success == idle.success == unread.success == 1.0
    assert len(idle.latencies) > 5 and len(unread.latencies) > 5
    assert result["hogs"]["unread"]["verified"] == 10
    assert result["hogs"]["idle"]["attempts"] >= 5 * 16
    counters = result["counters"]
    # Each peer asked for 16 MiB: its send queue, not its asking, bounds it.
    assert counters["memory.refused.response"] > 0
    assert result["bounds"]["memory_peak"] <= result["bounds"]["memory_budget"]
