"""The benchmark suite runs in quick mode and prints every row (a smoke test:
it asserts completion and the table's shape, never timings)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SIZES = ("64 B", "4 KiB", "64 KiB", "1 MiB")
AMP = ("64 B", "4 KiB")  # AMP's values stop at 65,535 bytes

#: Every row of the full table, by name, with how many times it appears.
ROWS = {
    **{f"memory per idle verified connection, {n} (KiB)": 1 for n in (100, 1000, 5000)},
    "framer 16 MiB frame, 1460 B pieces (ms)": 1,
    "framer 16 MiB frame, 64 KiB pieces (ms)": 1,
    "framer 16 MiB frame, 1460 B / 64 KiB cost": 1,
    "framer 1460 B pieces, cost/byte: frame x4": 1,
    "handshakes/s over TCP (connect+handshake+close)": 2,
    "handshakes/s over TLS (TLS + blueprint, close)": 1,
    # Over p2ptls, against a bare Int32StringReceiver over the same TLS.
    **{f"pipelined requests/s over TLS, {s} echo": 1 for s in SIZES[:3]},
    **{f"ping-pong round trips/s over TLS, {s} echo": 1 for s in SIZES[:3]},
    "one-way MB/s over TLS, 1 MiB requests": 1,
    # Against the bare echo at every size, and AMP where its values fit.
    **{f"pipelined requests/s, {s} echo": 2 if s in AMP else 1 for s in SIZES},
    **{f"ping-pong round trips/s, {s} echo": 2 if s in AMP else 1 for s in SIZES},
    "one-way MB/s, 64 KiB requests": 1,
    "one-way MB/s, 1 MiB requests": 1,
    **{f"broadcast to {n} peers (ms per broadcast)": 1 for n in (10, 100, 500)},
    **{f"broadcast to {n} peers (us per recipient)": 1 for n in (10, 100, 500)},
    "reactor lateness p99 while banning (ms)": 1,
    "reactor lateness worst while banning (ms)": 1,
    "reactor lateness median while banning (ms)": 1,
}


@pytest.mark.timeout(400)  # 5,000 connections under tracemalloc take a while
def test_bench_quick_prints_every_row() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick"],
        capture_output=True,
        text=True,
        timeout=380,
        check=True,
        cwd=Path(__file__).parent.parent,
    )
    header, *lines = result.stdout.splitlines()
    assert header.split() == [
        "benchmark",
        "blueprint-net",
        "reference",
        "ratio",
        "note",
    ]
    names: dict[str, int] = {}
    for line in lines:
        name = line.split("  ")[0]
        names[name] = names.get(name, 0) + 1
        number = line[len(name) :].split()[0]
        float(number)  # every row has a figure
    assert names == ROWS
