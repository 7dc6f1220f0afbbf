"""``python -m bench.connection_read``: each tree is measured in its own
process, from its own sources, with and without an in-flight bound.  Sizes
are cut down; timings are never asserted."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench import connection_read

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """40 requests, a bound of 8, three rounds of the best of two."""
    for name, value in (("REQUESTS", 40), ("BOUND", 8), ("ROUNDS", 3), ("BEST_OF", 2)):
        monkeypatch.setattr(connection_read, name, value)
    return monkeypatch


@pytest.mark.usefixtures("small")
def test_a_tree_is_measured_from_its_own_sources() -> None:
    runs = connection_read.measure(ROOT)
    assert set(runs) == {"None", "8"}
    for rounds in runs.values():
        assert len(rounds) == 3 and rounds == sorted(rounds) and rounds[0] > 0
    with pytest.raises(subprocess.CalledProcessError) as failed:
        connection_read.measure(ROOT / "no-such-tree")
    assert "No module named 'blueprint_net'" in failed.value.stderr or (
        "not from" in failed.value.stderr
    )


def test_the_table_names_each_tree_with_its_ratio_to_the_first(
    small: pytest.MonkeyPatch,
) -> None:
    lines: list[str] = []
    small.setattr("builtins.print", lambda *a, **k: lines.append(" ".join(a)))
    connection_read.main([str(ROOT), str(ROOT)])
    header, first, second = lines[-3:]
    assert "us/frame, no bound" in header and "us/frame, bound 8" in header
    assert first.split()[2] == "1.000" and first.split()[4] == "1.000"
    assert second.startswith(str(ROOT))
