"""Plugin discovery after each documented install, in fresh virtualenvs.

Offline: the fresh environment installs only this project (``--no-deps``,
``--no-build-isolation``) from a copy of the checkout, and reaches its
dependencies through a ``.pth`` file naming a view of this environment's
site-packages with this project (package and plugin) left out, so the plugin
can only be found where the fresh install put it.
"""

from __future__ import annotations

import shutil
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).parent.parent
OURS = ("blueprint_net", "__editable__", "_blueprint_net", "blueprint-net")


def _view_without_us(target: Path) -> Path:
    """Symlinks to this environment's site-packages, minus this project."""
    source = Path(site.getsitepackages()[0])
    target.mkdir()
    for entry in source.iterdir():
        if entry.name.startswith(OURS) or entry.name.replace("_", "-").startswith(OURS):
            continue
        if entry.name == "twisted":
            twisted = target / "twisted"
            twisted.mkdir()
            for part in entry.iterdir():
                if part.name != "plugins":
                    (twisted / part.name).symlink_to(part)
            plugins = twisted / "plugins"
            plugins.mkdir()
            for plugin in (entry / "plugins").iterdir():
                if plugin.name not in ("blueprint.py", "dropin.cache"):
                    (plugins / plugin.name).symlink_to(plugin)
            continue
        (target / entry.name).symlink_to(entry)
    return target


def _checkout_copy(target: Path) -> Path:
    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in files:
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, destination)
    return target


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
    project = _checkout_copy(tmp_path / "project")
    environment = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(environment)
    python = environment / "bin" / "python"
    fresh = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (fresh / "dependencies.pth").write_text(
        str(_view_without_us(tmp_path / "deps")) + "\n"
    )
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
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
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
