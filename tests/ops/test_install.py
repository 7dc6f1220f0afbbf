"""The systemd install path (issue 23 items 4 and 5), as documented, run.

docs/operations.md's install lines are run into a temporary directory in
place of ``/opt/blueprint-net`` (offline: ``tests/venvs.py``), then the unit's
``ExecStart`` is started from there, unable to write the plugin folders --
the unit's position: its user may not write the virtualenv (``DynamicUser``,
``ProtectSystem=strict``) -- until it sends ``READY=1``, as systemd would
wait for it; then it is asked for its health and stopped.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import free_port
from tests.venvs import (
    OFFLINE,
    ROOT,
    checkout_copy,
    link_dependencies,
    site_packages,
    view_without_us,
)

pytestmark = pytest.mark.timeout(300)

UNIT = ROOT / "deploy" / "blueprint-net.service"
VENV = "/opt/blueprint-net"
CONFIG = "/etc/blueprint-net/node.ini"
STATE = "/var/lib/blueprint-net"
CACHE_ERROR = "Unable to write to plugin cache"
#: What lets root write a folder whose mode says it may not.
FILE_CAPABILITIES = ("dac_override", "dac_read_search", "fowner")


def unit_file(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit file: its sections, each ``Key=value`` (a key may
    repeat), lines joined at a trailing backslash, ``#``/``;`` comments."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    logical = re.sub(r"\\\n\s*", " ", path.read_text())
    for raw in logical.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def documented_install() -> list[str]:
    """The lines of the first ``sh`` block of docs/operations.md's "systemd"
    section that install into the virtualenv, without ``sudo``."""
    doc = (ROOT / "docs" / "operations.md").read_text()
    section = doc.split("\n## systemd\n")[1].split("\n## ")[0]
    block = re.findall(r"```sh\n(.*?)```", section, re.S)[0]
    return [
        line[len("sudo ") :].strip()
        for line in block.splitlines()
        if line.startswith("sudo ") and VENV in line
    ]


def _exec_start() -> list[str]:
    (line,) = unit_file(UNIT)["Service"]["ExecStart"]
    return shlex.split(line)


def _cache_command(text: str) -> str:
    found = re.search(r"-I -c '[^']*getPlugins[^']*'", text)
    assert found is not None, text
    return found.group(0)


def test_the_unit_runs_what_the_docs_install() -> None:
    """The unit starts twistd from the virtualenv the docs install into
    (``/usr/local/bin/twistd`` assumed a system-wide pip install, which
    Debian refuses); its documentation is installed, not a dead link."""
    unit = unit_file(UNIT)
    argv = _exec_start()
    assert argv[0] == f"{VENV}/bin/twistd"
    assert argv[argv.index("--config") + 1] == CONFIG
    assert argv[argv.index("--data-dir") + 1] == STATE
    assert unit["Service"]["StateDirectory"] == [Path(STATE).name]
    (documentation,) = unit["Unit"]["Documentation"]
    assert documentation == f"file://{VENV}/share/doc/blueprint-net/operations.md"
    setup = (ROOT / "setup.cfg").read_text()
    assert "share/doc/blueprint-net = docs/operations.md" in setup

    create, install, cache = documented_install()
    assert create == f"python3 -m venv {VENV}"
    assert install == f"{VENV}/bin/pip install ."
    assert cache.startswith(f"{VENV}/bin/python -I -c ")
    # One command writes the plugin cache everywhere it is shown.
    command = _cache_command(cache)
    assert command == _cache_command(UNIT.read_text())
    assert command == _cache_command((ROOT / "deploy" / "Dockerfile").read_text())
    doc = (ROOT / "docs" / "operations.md").read_text()
    assert f"install -m 644 deploy/node.ini {Path(CONFIG).parent}/" in doc
    assert "install -m 644 deploy/blueprint-net.service /etc/systemd/system/" in doc


@pytest.fixture
def base() -> Iterator[Path]:
    """A directory whose plugin folders can be made read-only and back."""
    path = Path(tempfile.mkdtemp(prefix="blueprint-install-"))
    try:
        yield path
    finally:
        # (Not rglob: the view links to this environment's site-packages.)
        for folder in [
            path / "deps" / "twisted" / "plugins",
            *path.glob("venv/lib/python*/site-packages/twisted/plugins"),
        ]:
            if folder.is_dir():
                folder.chmod(0o755)
        shutil.rmtree(path, ignore_errors=True)


def _run(line: str, venv: Path, **options: Any) -> None:
    argv = shlex.split(line.replace(VENV, str(venv)))
    if argv[0] == "python3":
        argv[0] = sys.executable
    if argv[1:3] == ["install", "."]:
        argv += OFFLINE
    subprocess.run(argv, check=True, capture_output=True, timeout=240, **options)


def _unprivileged(plugin_folders: list[Path]) -> list[str]:
    """A command prefix that runs the node where it may not write the
    plugin folders (made read-only here): root without the capabilities
    that override file permissions (this machine's interpreter is under
    ``/root``, which an unprivileged user may not enter)."""
    for folder in plugin_folders:
        folder.chmod(0o555)
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("root, and no setpriv to drop the file capabilities")
    return ["setpriv", f"--bounding-set=-{',-'.join(FILE_CAPABILITIES)}", "--"]


def _start_unit(argv: list[str], log: Path, url: str, venv: Path) -> str:
    """Run the unit's command line until it is ready (``READY=1`` on
    ``$NOTIFY_SOCKET``), check its health, stop it; its log."""
    name = f"blueprint-install-{os.getpid()}-{log.stem}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind("\0" + name)  # abstract: no file the user must write
        notify.settimeout(60)
        with log.open("w") as output:
            process = subprocess.Popen(
                argv,
                cwd="/",  # systemd's default WorkingDirectory
                env={"PATH": os.environ["PATH"], "NOTIFY_SOCKET": "@" + name},
                stdout=output,
                stderr=subprocess.STDOUT,
            )
            stopping = False
            try:
                ready = notify.recv(4096).decode().split("\n")
                assert ready[0] == "READY=1", log.read_text()
                health = subprocess.run(
                    [venv / "bin" / "blueprint-net", "healthcheck"],
                    env={"BLUEPRINT_NET_STATUS_URL": url},
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=False,
                )
                assert health.returncode == 0, health.stderr
                assert health.stdout.startswith("ok: listening on 127.0.0.1:")
                process.send_signal(signal.SIGTERM)
                stopping = True
                assert notify.recv(4096) == b"STOPPING=1"
            finally:
                # One SIGTERM only: a second, mid-shutdown, is a traceback.
                if not stopping and process.poll() is None:
                    process.send_signal(signal.SIGTERM)
                assert process.wait(timeout=60) in (0, -signal.SIGTERM)
    return log.read_text()


def test_the_documented_install_runs_the_unit_without_a_plugin_cache_error(
    base: Path,
) -> None:
    """Issue 23 item 5: a node that may not write the plugin folders logged
    ``Unable to write to plugin cache ... error number 13`` at every start;
    the documented install writes the cache, as root, so it does not."""
    if subprocess.run(
        [sys.executable, "-c", "import setuptools"], check=False
    ).returncode:
        pytest.skip("setuptools is not installed here, so no offline build")
    project = checkout_copy(base / "project")
    venv = base / "venv"
    create, install, cache = documented_install()
    _run(create, venv)
    python = venv / "bin" / "python"
    view = view_without_us(base / "deps")
    link_dependencies(python, view)
    _run(install, venv, cwd=project)
    # pip installs Twisted's console script with Twisted; offline, Twisted
    # comes through the view, so write the same script.
    twistd = venv / "bin" / "twistd"
    twistd.write_text(
        f"#!{python}\nimport sys\nfrom twisted.scripts.twistd import run\n"
        "sys.exit(run())\n"
    )
    twistd.chmod(0o755)
    documentation = unit_file(UNIT)["Unit"]["Documentation"][0]
    assert Path(
        documentation.removeprefix("file://").replace(VENV, str(venv))
    ).is_file()

    # The unit's configuration: deploy/node.ini, on loopback, on free ports.
    port, status = free_port(), free_port()
    ini = (ROOT / "deploy" / "node.ini").read_text()
    ini = ini.replace("0.0.0.0", "127.0.0.1").replace(":7010:", f":{port}:")
    config = base / "node.ini"
    config.write_text(ini.replace("tcp:7080:", f"tcp:{status}:"))
    state = base / "state"
    state.mkdir(mode=0o700)
    argv = [
        part.replace(VENV, str(venv))
        .replace(CONFIG, str(config))
        .replace(STATE, str(state))
        for part in _exec_start()
    ]
    if shutil.which("systemd-analyze"):
        copy = base / "unit" / UNIT.name
        copy.parent.mkdir()
        copy.write_text(UNIT.read_text().replace(VENV, str(venv)))
        verified = subprocess.run(
            ["systemd-analyze", "verify", str(copy)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert verified.returncode == 0, verified.stderr
    plugins = [
        site_packages(python) / "twisted" / "plugins",
        view / "twisted" / "plugins",
    ]
    url = f"http://127.0.0.1:{status}"

    # Without the cache step the node cannot write the cache: the check can fail.
    before = _start_unit(
        [*_unprivileged(plugins), *argv], base / "before.log", url, venv
    )
    assert CACHE_ERROR in before and "error number 13" in before, before

    for folder in plugins:
        folder.chmod(0o755)
    _run(cache, venv, cwd=project)  # "from a checkout", as documented
    logged = _start_unit(
        [*_unprivileged(plugins), *argv], base / "after.log", url, venv
    )
    assert CACHE_ERROR not in logged, logged
    assert "Traceback" not in logged, logged
    assert f"listening for peers on 127.0.0.1:{port}" in logged, logged
