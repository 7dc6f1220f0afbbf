"""``bench/compare.py``: two trees' ``python -m bench`` tables, row by row."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench.compare import Figure, change, compare, parse
from bench.report import Row, load_header, table
from tests.helpers import run_module


def _table(*rows: Row) -> str:
    return load_header() + "\n" + table(list(rows))


def test_a_table_is_read_back_row_by_row() -> None:
    output = _table(
        Row("pipelined requests/s, 64 B echo", 60000.0, 350000.0, "ref: bare; x"),
        Row("pipelined requests/s, 64 B echo", 60000.0, 18000.0, "ref: AMP"),
        Row("requests refused RATE_LIMITED, all rows", 0.0, None, "target 0"),
    )
    assert parse(output) == {
        ("pipelined requests/s, 64 B echo", "ref: bare"): Figure(60000.0, 0.17),
        ("pipelined requests/s, 64 B echo", "ref: AMP"): Figure(60000.0, 3.33),
        ("requests refused RATE_LIMITED, all rows", "target 0"): Figure(0.0, None),
    }


def test_a_change_is_positive_when_better() -> None:
    assert change("pipelined requests/s", 100.0, 110.0) == pytest.approx(0.10)
    assert change("reactor lateness p99 (ms)", 1.0, 1.1) == pytest.approx(-0.10)
    assert change("memory per idle verified connection (KiB)", 8.0, 6.0) == 0.25
    assert change("anything", 0.0, 1.0) is None


def _runs(*figures: float) -> list[dict[tuple[str, str], Figure]]:
    return [{("rate/s", "ref: r"): Figure(f, f / 100)} for f in figures]


def test_a_row_worse_by_more_than_five_percent_is_marked() -> None:
    lines = compare(_runs(100.0, 102.0, 98.0), _runs(94.0, 95.0, 93.0))
    assert lines[1] == (
        "rate/s | ref: r | 1.00, 1.02, 0.98 | 0.94, 0.95, 0.93 | -6%"
        " | 100.00 | 94.00 | -6% | WORSE"
    )
    lines = compare(_runs(100.0, 102.0, 98.0), _runs(96.0, 97.0, 95.0))
    assert not lines[1].endswith("WORSE")  # -4%


def test_only_rows_every_run_has_are_compared() -> None:
    before = _runs(100.0, 100.0)
    after = _runs(100.0, 100.0)
    after[1] = {("other/s", "ref: r"): Figure(1.0, 1.0)}
    assert compare(before, after) == compare(before, after)[:1]


def _compare(*arguments: str) -> subprocess.CompletedProcess[str]:
    return run_module("bench.compare", *arguments)


def test_two_trees_are_run_alternately_and_compared() -> None:
    result = _compare(".", ".", "--runs", "2", "--", "--smoke", "--only", "framing")
    assert result.returncode == 0, result.stderr
    runs = [line for line in result.stdout.splitlines() if line.startswith("run ")]
    assert [line.split(":")[0] for line in runs] == [
        "run 1, .",
        "run 1, .",
        "run 2, .",
        "run 2, .",
    ]
    assert all("load average: " in line for line in runs)
    rows = {
        line.split(" | ")[0]: line.split(" | ")
        for line in result.stdout.splitlines()
        if " | " in line
    }
    row = rows["framer 1460 B pieces, cost/byte: frame x4"]
    assert row[1] == "1.0 = linear"
    assert len(row[2].split(", ")) == len(row[3].split(", ")) == 2  # a run each


def test_without_its_trees_it_says_how_to_call_it() -> None:
    result = _compare()
    assert result.returncode == 2
    assert "usage: python -m bench.compare BEFORE AFTER" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_tree_without_its_own_code_is_refused(tmp_path: Path) -> None:
    result = _compare(str(tmp_path), ".")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"python -m bench.compare: {tmp_path} has no blueprint_net"
    )
