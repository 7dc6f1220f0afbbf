"""A hostile flood from another process while an honest peer keeps asking:
the honest peer is served throughout (outcomes only; the figures with
latencies come from ``python -m bench.attack``)."""

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
    assert len(flooded.latencies) > 50  # the honest peer kept asking throughout
    flood, counters = result["flood"], result["counters"]
    assert sum(flood[f"{kind}.attempts"] for kind in ("garbage", "badsig")) > 100
    # Offenders were scored and banned, then refused before a byte was read.
    assert counters["misbehaviour"] > 0 and counters["bans.automatic"] > 0
    assert counters["refused.banned"] > 0
    assert flood["replay.error.202"] > 0  # a replayed handshake: BAD_SIGNATURE
    assert max(sample[2] for sample in result["samples"]) <= LIMITS.max_connections
