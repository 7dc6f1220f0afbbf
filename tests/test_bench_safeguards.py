"""``python -m bench.safeguards``: each patch applies to the tree and the
round trips still complete with it, and
its usage is a one-line error.  Counting (valgrind, minutes) is not run
here; nothing is asserted of counts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench import instructions, safeguards
from tests.helpers import run_module

ROOT = Path(__file__).resolve().parent.parent


def _run(patches: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    body = (
        "".join(patches)
        + (
            "    import blueprint_net._adapters.limiting_factory as L\n"
            "    import blueprint_net._adapters.dispatch as D\n"
            "    print('patched', L.LimitedProtocol.makeConnection.__name__,"
            " D.Dispatcher.serve.__name__)\n"
        )
        + safeguards.ROUND_TRIP.work
    )
    return subprocess.run(
        instructions.child(ROOT, body, "blueprint", 1),
        capture_output=True,
        check=False,
        text=True,
        timeout=50,
    )


@pytest.mark.parametrize("safeguard", safeguards.SAFEGUARDS, ids=lambda s: s.name)
def test_each_patch_leaves_the_round_trips_working(
    safeguard: safeguards.Safeguard,
) -> None:
    done = _run((safeguard.patch,))
    assert done.returncode == 0, done.stderr


def test_the_patches_take_effect_together() -> None:
    done = _run(tuple(s.patch for s in safeguards.SAFEGUARDS))
    assert done.returncode == 0, done.stderr
    assert "patched unwrapped admitted" in done.stdout  # not the package's own


def test_usage_is_a_one_line_error() -> None:
    done = run_module("bench.safeguards", "a", "b")
    assert done.returncode != 0
    assert done.stderr.strip() == "usage: python -m bench.safeguards [TREE]"
