"""Subprocess tests (CLI, twistd, examples) run the tree under test, not the
installed copy: ``tree_env`` puts the tree first on their path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .helpers import ROOT, tree_env

IMPORTS = """
import blueprint_net
from twisted.plugins import blueprint
print(blueprint_net.__file__)
print(blueprint.__file__)
"""


def test_a_subprocess_imports_the_tree(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", IMPORTS],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        cwd=tmp_path,  # outside the tree, as the CLI and twistd tests run
        env=tree_env({}),
    )
    package, plugin = result.stdout.split()
    assert Path(package) == ROOT / "blueprint_net" / "__init__.py"
    assert Path(plugin) == ROOT / "twisted" / "plugins" / "blueprint.py"
