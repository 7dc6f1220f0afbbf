"""``python -m bench.parts``: every part runs on the tree and does its work
(its check holds after the loop), a check that fails fails the child, and
the usage is a one-line error.  Counting (valgrind, minutes) is not run
here; nothing is asserted of counts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench import instructions, parts
from tests.helpers import run_module

ROOT = Path(__file__).resolve().parent.parent


def _run(part: parts.Part) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        instructions.child(ROOT, parts.work(part), "blueprint", 1),
        capture_output=True,
        check=False,
        text=True,
        timeout=50,
    )


@pytest.mark.parametrize("part", parts.PARTS, ids=lambda p: p.name)
def test_each_part_runs_and_does_its_work(part: parts.Part) -> None:
    done = _run(part)
    assert done.returncode == 0, done.stderr


def test_a_round_trip_that_is_not_answered_fails_its_check() -> None:
    core = next(p for p in parts.PARTS if p.name.startswith("core: both"))
    unanswered = core._replace(step=core.step.replace("event.token.callback", "str"))
    done = _run(unanswered)
    assert done.returncode != 0
    assert "AssertionError" in done.stderr


def test_a_deadline_part_without_deadlines_fails_its_check() -> None:
    timed = next(p for p in parts.PARTS if "deadline" in p.name)
    done = _run(timed._replace(step=timed.step.replace(", deadline=1e9", "")))
    assert done.returncode != 0
    assert "AssertionError" in done.stderr


@pytest.mark.parametrize(
    "part", [p for p in parts.PARTS if p.check], ids=lambda p: p.name
)
def test_a_step_that_does_nothing_fails_its_check(part: parts.Part) -> None:
    """Every part but the empty loop checks what its last step did."""
    idle = part._replace(step="answer, got = Deferred(), None")
    done = _run(idle)
    assert done.returncode != 0
    assert "AssertionError" in done.stderr


def test_every_part_but_the_empty_loop_has_a_check() -> None:
    assert [p.name for p in parts.PARTS if not p.check] == [parts.PARTS[0].name]


def test_a_tree_without_this_module_is_a_one_line_error(tmp_path: Path) -> None:
    done = run_module("bench.parts", str(tmp_path))
    assert done.returncode != 0
    if "valgrind" in done.stderr:
        pytest.skip("no valgrind here: refused before the tree is looked at")
    assert (
        done.stderr.strip()
        == f"{tmp_path} has no bench/parts.py (its helpers run in the tree)"
    )


def test_the_core_pair_is_verified_both_ways() -> None:
    a, b = parts.verified_pair()
    assert a.verified and b.verified
    assert a.peer_id is not None and b.peer_id is not None
    assert a.requests.max_in_flight == parts.IN_FLIGHT


def test_usage_is_a_one_line_error() -> None:
    done = run_module("bench.parts", "a", "b")
    assert done.returncode != 0
    assert done.stderr.strip() == "usage: python -m bench.parts [TREE]"
