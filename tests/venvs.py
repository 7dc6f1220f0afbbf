"""Fresh virtualenvs that install this project offline (for the packaging
and install tests).

The fresh environment installs only this project (``--no-deps``,
``--no-build-isolation``, ``--no-index``: :data:`OFFLINE`) from a copy of the
checkout, and reaches its dependencies through a ``.pth`` file naming a view
of this environment's site-packages with this project (package and plugin)
left out, so the plugin can only be found where the fresh install put it.
"""

from __future__ import annotations

import shutil
import site
import subprocess
from pathlib import Path

ROOT = Path(__file__).parent.parent
OURS = ("blueprint_net", "__editable__", "_blueprint_net", "blueprint-net")
#: pip's options for an install that needs no network.
OFFLINE = ("--no-deps", "--no-build-isolation", "--no-index")


def view_without_us(target: Path) -> Path:
    """Symlinks to this environment's site-packages, minus this project.

    ``twisted/plugins`` is a real folder of links (without this project's
    plugin or any plugin cache): a plugin cache written there is the fresh
    environment's, never this one's."""
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


def checkout_copy(target: Path) -> Path:
    """The files git tracks, as they are in the working tree."""
    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in files:
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, destination)
    return target


def site_packages(python: Path) -> Path:
    """The fresh environment's site-packages (``purelib``)."""
    return Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )


def link_dependencies(python: Path, view: Path) -> None:
    """Make ``view`` (see :func:`view_without_us`) importable in the fresh
    environment whose interpreter is ``python``."""
    (site_packages(python) / "dependencies.pth").write_text(f"{view}\n")
