"""Plugin discovery after each documented install, in fresh virtualenvs,
offline (``tests/venvs.py`` says how)."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.venvs import (
    OFFLINE,
    ROOT,
    checkout_copy,
    link_dependencies,
    view_without_us,
)

pytestmark = pytest.mark.timeout(300)


@pytest.mark.parametrize(
    "install",
    [
        ["."],
        ["-e", ".", "--config-settings", "editable_mode=strict"],
    ],
    ids=["pip install .", "pip install -e . (strict)"],
)
def test_twistd_finds_the_plugin_after_install(
    tmp_path: Path, install: list[str]
) -> None:
    if subprocess.run(
        [sys.executable, "-c", "import setuptools"], check=False
    ).returncode:
        pytest.skip("setuptools is not installed here, so no offline build")
    project = checkout_copy(tmp_path / "project")
    environment = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(environment)
    python = environment / "bin" / "python"
    link_dependencies(python, view_without_us(tmp_path / "deps"))
    # Without the install, the plugin is nowhere to be found: the check can fail.
    twistd = [str(python), "-c", "from twisted.scripts.twistd import run; run()"]
    before = subprocess.run(
        [*twistd, "--help"], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert " blueprint " not in before.stdout, before.stdout
    subprocess.run(
        [
            python,
            "-m",
            "pip",
            "install",
            "--quiet",
            *OFFLINE,
            *install,
        ],
        cwd=project,
        check=True,
        capture_output=True,
    )
    listed = subprocess.run(
        [*twistd, "--help"], capture_output=True, text=True, cwd=tmp_path, check=True
    )
    assert " blueprint " in listed.stdout, listed.stdout + listed.stderr
    options = subprocess.run(
        [*twistd, "blueprint", "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    )
    assert "--peer" in options.stdout and "--max-connections" in options.stdout


def test_every_package_of_the_tree_is_installed() -> None:
    """setup.cfg lists its packages one by one (Twisted's plugin folder must
    not get an ``__init__.py``): a new package left off the list installs
    without it, and only a non-editable install shows it (the suite runs
    from the checkout).  ``blueprint_net.testing`` was missed once."""
    listed = set()
    lines = (ROOT / "setup.cfg").read_text().splitlines()
    start = lines.index("packages =") + 1
    for line in lines[start:]:
        if not line.startswith("    "):
            break
        listed.add(line.strip())
    tree = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "blueprint_net").rglob("__init__.py")
    }
    assert tree <= listed, sorted(tree - listed)
