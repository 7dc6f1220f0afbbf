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
    assert max(n for _, _, n in result["samples"]) <= LIMITS.max_connections
