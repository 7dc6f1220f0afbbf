"""Subprocess tests (CLI, twistd, examples) run the tree under test, not the
installed copy: ``tree_env`` puts the tree first on their path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT, tree_env

#: What twistd does: find the plugin, then import the module it names.  The
#: plugin file itself may be the installed copy (Twisted searches its own
#: ``twisted/plugins`` first); the code it runs must be the tree's.
IMPORTS = """
import importlib
import blueprint_net
from twisted.plugins import blueprint
print(blueprint_net.__file__)
print(importlib.import_module(blueprint.blueprint.module).__file__)
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
    package, service_maker = result.stdout.split()
    assert Path(package) == ROOT / "blueprint_net" / "__init__.py"
    assert Path(service_maker) == ROOT / "blueprint_net" / "_ops" / "tap.py"
