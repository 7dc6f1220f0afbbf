"""README's first command: the two-node demo, as a real process."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.helpers import tree_env


def test_demo_prints_both_verified_ids() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "blueprint_net.demo"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        env=tree_env(),
    )
    ids = re.findall(r"(12D3KooW\w+) verified (12D3KooW\w+)", result.stdout)
    assert len(ids) == 2, result.stdout
    (alice, bob_seen), (bob, alice_seen) = ids
    assert (alice, bob) == (alice_seen, bob_seen)
    assert "got b'hello, bob'" in result.stdout
    hop = re.search(
        r"got b'two hops' from (\w+) via bob \(not connected to alice: True\)",
        result.stdout,
    )
    assert hop is not None and hop[1] == alice, result.stdout
