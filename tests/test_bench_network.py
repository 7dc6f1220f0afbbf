"""``python -m bench.network`` at a small size, as a real multi-process run:
20 TLS nodes over 4 processes from one bootstrap address, publications, and
SIGKILL churn.  It asserts completion, the table's rows and full delivery
(which the protocol promises), never timings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import without_load_header

ROWS = (
    "N=20: seconds to target degree 4 and one component",
    "delivery to live subscribers, steady (%)",
    "latency p50 (ms)",
    "latency p99 (ms)",
    "duplicates received per node per message",
    "origin upload per publish (bytes)",
    "origin upload per publish (frames)",
    "network upload per message (bytes)",
    "churn: seconds to repair after SIGKILL of 5 nodes",
    "delivery to survivors before churn (%)",
    "delivery to survivors during repair (%)",
    "delivery to survivors after repair (%)",
)


@pytest.mark.timeout(200)
def test_a_small_network_converges_delivers_and_repairs() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.network",
            *("--nodes", "20", "--processes", "4", "--target-peers", "4"),
            *("--messages", "20", "--limit", "60", "--full-mesh-max", "0"),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
        cwd=Path(__file__).parent.parent,
    )
    assert result.stdout.startswith("load average: ")
    header, *lines = without_load_header(result.stdout).splitlines()
    assert header.split()[:2] == ["benchmark", "blueprint-net"]
    figures = {}
    for line in lines:
        name = line.split("  ")[0]
        figures[name] = float(line[len(name) :].split()[0])
    assert tuple(figures) == ROWS, result.stdout
    for name in ROWS:
        if name.startswith("delivery") and "during" not in name:
            assert figures[name] == 100.0, result.stdout
    assert figures["delivery to survivors during repair (%)"] >= 99.0, result.stdout
    # One hop to N-1 peers costs more at the origin than gossip does.
    assert figures["origin upload per publish (frames)"] < 19, result.stdout
