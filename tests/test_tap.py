"""The twistd plugin: discovery, options, and a real twistd process."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytest_twisted
from twisted.python import usage

from blueprint_net.identity import load_identity
from blueprint_net.node import Node
from blueprint_net.config import DEFAULT_LISTEN
from blueprint_net.tap import Options

pytestmark = pytest.mark.usefixtures("clean_reactor")


#: The twistd script installed beside this interpreter.
TWISTD = str(Path(sys.executable).with_name("twistd"))


def _twistd(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # Run outside the source tree, so only the installed package is seen.
    return subprocess.run(
        [TWISTD, *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def test_twistd_lists_the_plugin(tmp_path: Path) -> None:
    result = _twistd("--help", cwd=tmp_path)
    assert "blueprint" in result.stdout, result.stdout + result.stderr


def test_plugin_help_documents_options(tmp_path: Path) -> None:
    result = _twistd("blueprint", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for option in ("--listen", "--key-file", "--handshake-timeout"):
        assert option in result.stdout


def test_options_defaults_and_errors() -> None:
    options = Options()
    options.parseOptions([])
    assert options["listen"] == [DEFAULT_LISTEN]
    with pytest.raises(usage.UsageError, match="handshake-timeout"):
        Options().parseOptions(["--handshake-timeout", "0"])
    with pytest.raises(usage.UsageError):
        Options().parseOptions(["--handshake-timeout", "soon"])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"twistd exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("twistd did not start listening")


@pytest_twisted.ensureDeferred
async def test_real_twistd_node_handshakes(tmp_path: Path, alice) -> None:  # type: ignore[no-untyped-def]
    port = _free_port()
    key = tmp_path / "node.key"
    log = tmp_path / "twistd.log"
    process = subprocess.Popen(
        [
            TWISTD,
            "-n",
            "--pidfile=",
            f"--logfile={log}",
            "blueprint",
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            "--key-file",
            str(key),
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    node = Node(alice)
    try:
        _wait_for_port(port, process)
        server_id = load_identity(key).peer_id  # created by twistd on first run
        peer = await node.connect(f"tcp:127.0.0.1:{port}", peer_id=server_id)
        assert peer.peer_id == server_id
    finally:
        await node.stop()
        process.send_signal(signal.SIGTERM)
        # twistd re-raises the signal it stopped for, so its status reports it.
        assert process.wait(timeout=10) in (0, -signal.SIGTERM)
    logged = log.read_text()
    assert "Received SIGTERM, shutting down." in logged
    assert "Server Shut Down." in logged
    assert "Traceback" not in logged
