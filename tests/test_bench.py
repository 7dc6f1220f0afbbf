"""The benchmark suite runs at its smoke scale and prints every row (a smoke
test: it asserts completion and the table's shape, never timings)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import load_header, without_load_header
from tests.helpers import ROOT, run_module, tree_env

SIZES = ("64 B", "4 KiB", "64 KiB", "1 MiB")
AMP = ("64 B", "4 KiB")  # AMP's values stop at 65,535 bytes


def rows(
    memory: tuple[int, ...],
    frame: str,
    stars: tuple[int, ...],
    parties: tuple[int, ...],
    demos: tuple[str, ...],
    mpyc_parties: tuple[int, ...],
) -> dict[str, int]:
    """Every row of the table, by name, with how many times it appears; the
    sizes some rows are named for are the scale's."""
    return {
        **{f"memory per idle verified connection, {n} (KiB)": 1 for n in memory},
        f"framer {frame} frame, 1460 B pieces (ms)": 1,
        f"framer {frame} frame, 64 KiB pieces (ms)": 1,
        f"framer {frame} frame, 1460 B / 64 KiB cost": 1,
        "framer 1460 B pieces, cost/byte: frame x4": 1,
        "handshakes/s over TCP (connect+handshake+close)": 2,
        # Against bare TLS 1.3 and the floor; the floor against bare TLS.
        "handshakes/s over TLS (TLS + blueprint, close)": 2,
        "handshakes/s over TLS (TLS + blueprint, close): the floor": 1,
        # Over p2ptls, against a bare Int32StringReceiver over the same TLS
        # and against the floor; the floor against the bare echo.
        **{
            f"{kind} over TLS, {s} echo{floor}": 1 if floor else 2
            for kind in ("pipelined requests/s", "ping-pong round trips/s")
            for s in SIZES[:3]
            for floor in ("", ": the floor")
        },
        "one-way MB/s over TLS, 1 MiB requests": 1,
        # Against the bare echo at every size, AMP where its values fit and
        # the floor below 1 MiB; the floor against the bare echo.
        **{
            f"{kind}, {s} echo": 1 + (s in AMP) + (s != "1 MiB")
            for kind in ("pipelined requests/s", "ping-pong round trips/s")
            for s in SIZES
        },
        **{
            f"{kind}, {s} echo: the floor": 1
            for kind in ("pipelined requests/s", "ping-pong round trips/s")
            for s in SIZES[:3]
        },
        "one-way MB/s, 64 KiB requests": 1,
        "one-way MB/s, 1 MiB requests": 1,
        **{f"broadcast to {n} peers (ms per broadcast)": 1 for n in stars},
        **{f"broadcast to {n} peers (us per recipient)": 1 for n in stars},
        "reactor lateness p99 while banning (ms)": 1,
        "reactor lateness worst while banning (ms)": 1,
        "reactor lateness median while banning (ms)": 1,
        # Durable streams: one way against a bare Int32StringReceiver, and
        # the fault run.
        **{
            f"stream one-way msgs/s, {s}, {t}": 1
            for s in ("64 B", "4 KiB")
            for t in ("TCP", "TLS")
        },
        "stream fault run: lost": 1,
        "stream fault run: duplicated": 1,
        "stream fault run: out of order": 1,
        "stream fault run: recovery after a cut p50 (ms)": 1,
        "stream fault run: recovery after a cut p99 (ms)": 1,
        # Party sessions among processes, against a bare TLS mesh.
        **{
            f"party rounds/s, {n} parties, {kind}broadcast round + direct round"
            " (1 KiB)": 1
            for n in parties
            for kind in ("", "reliable ")
        },
        # MPyC's demos over blueprint-net and MPyC's TCP, against MPyC's TLS.
        **{
            f"mpyc {demo} -M{n} over {transport} (s)": 1
            for demo in demos
            for n in mpyc_parties
            for transport in ("blueprint-net", "MPyC TCP")
        },
    }


#: ``--smoke``: the full table's rows (its sizes are 100, 1000 and 5000
#: connections, a 16 MiB frame, stars of 10, 100 and 500, sessions of 3, 10
#: and 50 parties, four MPyC demos with 3 and 5 parties), at the smallest
#: sizes (one session size, one demo, 3 parties).
SMOKE_ROWS = rows((10, 20, 50), "1 MiB", (2, 3, 5), (3,), ("helloworld.py",), (3,))


def _run_module(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """``python -m ARGS`` from the checkout's tree; fails the test on a
    non-zero exit or past ``timeout`` seconds."""
    return subprocess.run(
        [sys.executable, "-m", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
        cwd=ROOT,
        env=tree_env(),
    )


def test_bench_smoke_prints_every_row() -> None:
    result = _run_module("bench", "--smoke", timeout=50)
    assert result.stdout.startswith("load average: ")
    header, *lines = without_load_header(result.stdout).splitlines()
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
    assert names == SMOKE_ROWS


def test_the_gossip_attack_bench_smoke_prints_every_row() -> None:
    """``python -m bench.attack --gossip --smoke``: the gossip attacks'
    table, a blank line, then discovery's rows, each with a figure."""
    result = _run_module("bench.attack", "--gossip", "--smoke", timeout=180)
    assert result.stdout.startswith("load average: ")
    gossip, discovery = without_load_header(result.stdout).strip().split("\n\n")
    header, *lines = gossip.splitlines()
    assert header.split() == ["attack", "figure", "value"]
    attacks = [line[:20].strip() for line in lines]
    assert (
        attacks
        == ["fresh-origin flood"] * 3
        + ["known-key flood"] * 2
        + ["backoff exhaustion"] * 2
        + ["subscription flood"] * 2
        + ["control frames"] * 2
    )
    names = []
    for line in discovery.splitlines():
        name, figure = line.split("  ")[0], line.split("  ")[1:]
        names.append(name)
        float(next(part for part in figure if part.strip()))  # a figure each
    assert names == [
        "eclipse at start-up, honest outbound peers at 2 s",
        "eclipse at start-up, delivery at 2 s (%)",
        "eclipse at start-up, honest outbound peers at 4 s",
        "eclipse at start-up, delivery at 4 s (%)",
        "record-aimed dials (dials per target per minute)",
    ]


def test_the_fair_share_attack_bench_smoke_prints_every_row() -> None:
    """``python -m bench.attack --fair --smoke``: a default node, flooded by
    verified peers from another process, refuses none of their requests and
    answers the honest peer throughout (outcomes; latencies are figures)."""
    result = _run_module("bench.attack", "--fair", "--smoke", timeout=180)
    assert result.stdout.startswith("load average: ")
    header, *lines = without_load_header(result.stdout).strip().splitlines()
    assert header.split()[:3] == ["benchmark", "blueprint-net", "reference"]
    rows = {line.split("  ")[0]: line for line in lines}
    assert list(rows) == [
        "honest p99 ms, a verified peer floods echo",
        "honest p99 ms, a verified peer floods work",
        "flooder's share of handler time, k = 2",
        "flooder's share of handler time, k = 4",
        "requests refused RATE_LIMITED, all rows",
    ]
    figures = {name: float(line[len(name) :].split()[0]) for name, line in rows.items()}
    if hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) >= 2:
        # Separate machines, emulated: the node alone on a CPU.
        for name in list(rows)[:2]:
            assert "node on CPU " in rows[name]
    for name in list(rows)[2:4]:
        assert 0 < figures[name] < 1
        assert " 0 failed" in rows[name]  # every busy peer's request answered
    assert figures["requests refused RATE_LIMITED, all rows"] == 0


def test_the_load_header_gives_the_load_and_warns_above_1(tmp_path: Path) -> None:
    """Every bench's first line; a busy machine adds one warning line."""
    quiet, busy = tmp_path / "quiet", tmp_path / "busy"
    quiet.write_text("0.15 0.40 1.20 1/200 1234\n")
    busy.write_text("1.01 0.90 0.80 3/200 1234\n")
    assert load_header(quiet) == "load average: 0.15 0.40 1.20 (1, 5, 15 min)"
    first, warning = load_header(busy).splitlines()
    assert first == "load average: 1.01 0.90 0.80 (1, 5, 15 min)"
    assert warning.startswith("warning: the 1-minute load average 1.01 is above 1")
    assert load_header(tmp_path / "absent").startswith("load average: unknown")
    assert without_load_header(load_header(busy) + "\ntable") == "table"


def test_the_streams_bench_loses_nothing_across_cuts() -> None:
    """``python -m bench --only streams --smoke``: its rows, and the fault
    run's counts, which are correctness (0), not speed."""
    result = _run_module("bench", "--only", "streams", "--smoke", timeout=50)
    figures = {}
    for line in without_load_header(result.stdout).splitlines()[1:]:
        name = line.split("  ")[0]
        figures[name] = float(line[len(name) :].split()[0])
    assert set(figures) == {n for n in SMOKE_ROWS if n.startswith("stream ")}
    for count in ("lost", "duplicated", "out of order"):
        assert figures[f"stream fault run: {count}"] == 0
    assert re.search(r"over TLS, [1-9]\d* cuts", result.stdout)  # it did cut


@pytest.mark.parametrize(
    ("module", "usage"),
    [
        ("bench.router_path", "usage: python -m bench.router_path TREE"),
        ("bench.attack_quiet", "usage: python -m bench.attack_quiet placed|shared"),
        ("bench.connection_read", "usage: python -m bench.connection_read TREE"),
    ],
)
def test_a_bench_without_its_arguments_says_how_to_call_it(
    module: str, usage: str
) -> None:
    result = run_module(module)
    assert result.returncode == 1
    assert usage in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        (["--bootstraps", "2"], "--bootstraps must be 1 to N, with --simulate N"),
        (["--simulate", "5", "--bootstraps", "6"], "--bootstraps must be 1 to N"),
        (["--simulate", "50", "--max-connections", "32"], "--max-connections must"),
    ],
)
def test_a_simulation_option_out_of_range_is_one_line(
    arguments: list[str], error: str
) -> None:
    result = run_module("bench.network", *arguments)
    assert result.returncode == 2
    assert error in result.stderr and "Traceback" not in result.stderr
