"""``python -m bench.attack_quiet``: the quiet reference of ``bench.attack
--fair`` in consecutive phases, as one JSON line; shapes, never timings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(90)
def test_consecutive_quiet_phases_each_have_their_own_figures() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.attack_quiet", "shared", "0.3", "2"],
        capture_output=True,
        check=True,
        text=True,
        cwd=ROOT,
        timeout=80,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["placed"] is False
    assert [p["phase"] for p in report["phases"]] == [0, 1]
    for phase in report["phases"]:
        assert phase["asked"] > 0 and phase["p99"] >= phase["median"] > 0
        assert phase["p99_after_first_second"] is None  # shorter than a second
        assert phase["slowest"] == sorted(phase["slowest"])
