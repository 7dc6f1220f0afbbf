"""The benchmark suite runs in quick mode and prints every row (a smoke test:
it asserts completion, never timings)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_bench_quick_prints_every_row() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=Path(__file__).parent.parent,
    )
    rows = result.stdout.splitlines()
    assert rows[0].startswith("benchmark")
    assert any(row.startswith("handshakes/s over TCP") for row in rows)
    assert any(row.startswith("handshakes/s over TLS") for row in rows)
    assert sum(row.startswith("framer ") for row in rows) == 4
    assert sum(row.startswith("pipelined requests/s") for row in rows) == 2
    assert sum(row.startswith("ping-pong round trips/s") for row in rows) == 2
    assert sum(row.startswith("reactor lateness") for row in rows) == 3
    assert any(row.startswith("memory per idle verified connection") for row in rows)
