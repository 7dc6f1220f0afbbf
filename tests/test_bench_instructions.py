"""``python -m bench.instructions``: each workload runs from the tree it is
given, its usage and a missing valgrind are one-line errors.  Counting
itself (valgrind, minutes) is not run here; nothing is asserted of counts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench import instructions
from tests.helpers import run_module

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("workload", instructions.WORKLOADS, ids=lambda w: w.name)
def test_each_workload_runs_from_its_tree(workload: instructions.Workload) -> None:
    system = "bare" if "broadcast" not in workload.name else "blueprint"
    done = subprocess.run(
        instructions.child(ROOT, workload.work, system, 1),
        capture_output=True,
        check=False,
        text=True,
        timeout=50,
    )
    assert done.returncode == 0, done.stderr
    elsewhere = subprocess.run(
        instructions.child(ROOT / "no-such-tree", workload.work, system, 1),
        capture_output=True,
        check=False,
        text=True,
        timeout=50,
    )
    assert elsewhere.returncode != 0  # never measured as this tree


def test_usage_and_a_missing_valgrind_are_one_line_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    done = run_module("bench.instructions")
    assert done.returncode != 0
    assert done.stderr.strip() == "usage: python -m bench.instructions TREE [TREE ...]"
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SystemExit, match="need valgrind"):
        instructions.main([str(ROOT)])


def test_addresses_are_fixed_only_where_setarch_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    instructions._fixed_addresses.cache_clear()
    monkeypatch.setattr("shutil.which", lambda name: None)
    assert instructions._fixed_addresses() == ()  # no setarch: counted as is
    instructions._fixed_addresses.cache_clear()
    monkeypatch.setattr("shutil.which", lambda name: "/bin/setarch")
    monkeypatch.setattr("platform.machine", lambda: "no-such-architecture")
    assert instructions._fixed_addresses() == ()  # setarch refuses: the same
    instructions._fixed_addresses.cache_clear()
