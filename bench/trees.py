"""Source trees measured side by side, each in its own process.

In: a tree (a checkout or ``git worktree``), a child script, its sizes.
Out: what the child printed last, as JSON.  The child is run with the tree
first on ``sys.path`` after :data:`FROM_TREE`, which refuses to measure a
``blueprint_net`` imported from anywhere else (run from one tree, the
installed package would otherwise answer for a missing one).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

#: The child script's first lines: import ``blueprint_net`` from the tree.
FROM_TREE = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import blueprint_net
if not blueprint_net.__file__.startswith(sys.argv[1].rstrip("/") + "/"):
    raise SystemExit(f"{blueprint_net.__file__}: not from {sys.argv[1]}")
"""


def run_in(tree: Path, child: str, *sizes: int) -> Any:
    """Run ``child`` (after :data:`FROM_TREE`) on ``tree`` with ``sizes``
    as its arguments; the JSON on its last line of output."""
    out = subprocess.run(
        [sys.executable, "-c", FROM_TREE + child, str(tree), *map(str, sizes)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])
