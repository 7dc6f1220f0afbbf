"""``python -m bench.router_path``: each tree is measured in its own process,
from its own sources, and the table names each tree with its ratio to the
first.  Sizes are cut down; timings are never asserted."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench import router_path

ROOT = Path(__file__).resolve().parent.parent


def test_a_tree_is_measured_from_its_own_sources(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(router_path, "MESSAGES", 40)
    monkeypatch.setattr(router_path, "ROUNDS", 3)
    runs = router_path.measure(ROOT)
    assert len(runs) == 3 and runs == sorted(runs) and runs[0] > 0
    with pytest.raises(subprocess.CalledProcessError) as failed:
        router_path.measure(ROOT / "no-such-tree")
    assert "No module named 'blueprint_net'" in failed.value.stderr or (
        # run from the tree, the installed package is found: the child
        # refuses it, so a missing tree is never measured as this one
        "not from" in failed.value.stderr
    )
