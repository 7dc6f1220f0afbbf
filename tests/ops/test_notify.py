"""systemd readiness (``Type=notify``): the datagram, to a socket the test
listens on, from the function and from a real ``twistd`` process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from blueprint_net._ops.notify import notify
from tests.helpers import free_port

pytestmark = pytest.mark.timeout(60)

TWISTD = str(Path(sys.executable).with_name("twistd"))


def _listener(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(30)
    return sock


def test_notify_a_path_and_an_abstract_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with _listener(path) as sock:
        assert notify("READY=1", {"NOTIFY_SOCKET": path})
        assert sock.recv(4096) == b"READY=1"
    name = f"blueprint-test-{os.getpid()}"
    with _listener("\0" + name) as sock:
        assert notify("STOPPING=1", {"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096) == b"STOPPING=1"
    assert not notify("READY=1", {})  # not run by systemd: nothing to do
    # Nobody listening: a warning, not an exception.
    assert not notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone")})


def test_twistd_says_ready_once_listening_and_stopping_at_the_end(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "notify")
    port = free_port()
    with _listener(path) as sock:
        process = subprocess.Popen(
            [
                TWISTD,
                "-n",
                "--pidfile=",
                f"--logfile={tmp_path / 'twistd.log'}",
                "blueprint",
                "--data-dir",
                str(tmp_path / "data"),
                "--listen",
                f"p2ptls:{port}:interface=127.0.0.1",
                "--status",
                "none",
            ],
            env={**os.environ, "NOTIFY_SOCKET": path},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            ready = sock.recv(4096).decode().split("\n")
            assert ready[0] == "READY=1"
            assert f"STATUS=listening on 127.0.0.1:{port}" in ready
            assert f"MAINPID={process.pid}" in ready
            # READY=1 means it: the port accepts a connection already.
            socket.create_connection(("127.0.0.1", port), timeout=10).close()
            process.send_signal(signal.SIGTERM)
            assert sock.recv(4096) == b"STOPPING=1"
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) in (0, -signal.SIGTERM)
