"""End to end: real ``twistd`` nodes on loopback, driven by the real
``blueprint-net`` command.

Two nodes find each other through ``--peer``; the command line sends a
request, bans a peer (the running node applies it and disconnects it), the
ban survives a restart, and SIGTERM ends each node with a goodbye to its
peers.  Waits poll for a condition (the processes are separate); nothing
here asserts how long anything took: shutdown times are recorded with
``record_property`` for the closing note.
"""

from __future__ import annotations

import json
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.utils import getProcessOutputAndValue

from tests.helpers import free_port, tree_env

pytestmark = [pytest.mark.usefixtures("clean_reactor"), pytest.mark.timeout(120)]

BIN = Path(sys.executable).parent
TWISTD, CLI = str(BIN / "twistd"), str(BIN / "blueprint-net")


@attrs.define
class TwistdNode:
    directory: Path
    peer_id: str
    port: int = attrs.Factory(free_port)
    status_port: int = attrs.Factory(free_port)
    process: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.status_port}"

    @property
    def log(self) -> Path:
        return self.directory / "twistd.log"

    def start(
        self, *peers: TwistdNode, plaintext: bool = False, extra: Sequence[str] = ()
    ) -> None:
        """Run the node; ``plaintext`` listens on ``tcp:`` (opted in);
        ``extra``, more options."""
        listen = "tcp" if plaintext else "p2ptls"
        arguments = [
            TWISTD,
            "-n",
            "--pidfile=",
            f"--logfile={self.log}",
            "blueprint",
            "--data-dir",
            str(self.directory),
            "--listen",
            f"{listen}:{self.port}:interface=127.0.0.1",
            "--status",
            f"tcp:{self.status_port}:interface=127.0.0.1",
            *(f"--peer={p.peer_id}@p2ptls:127.0.0.1:{p.port}" for p in peers),
            *(["--allow-plaintext"] if plaintext else []),
            *extra,
        ]
        self.process = subprocess.Popen(
            arguments,
            cwd=self.directory,
            env=tree_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def terminate(self) -> float:
        """SIGTERM; the seconds until the process exited."""
        start = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=30)
        elapsed = time.monotonic() - start
        # twistd re-raises the signal it stopped for, so its status shows it.
        assert code in (0, -signal.SIGTERM), self.process.stderr.read()
        self.process.stderr.close()
        return elapsed


async def _cli(*arguments: str, cwd: Path) -> tuple[int, str, str]:
    out, err, code = await getProcessOutputAndValue(
        CLI, arguments, env=tree_env({"PATH": str(BIN)}), path=str(cwd)
    )
    return code, out.decode(), err.decode()


async def _status(node: TwistdNode) -> dict[str, Any]:
    code, out, _ = await _cli("status", "--json", "--url", node.url, cwd=node.directory)
    return json.loads(out) if code == 0 else {}


async def _until(check: Callable[[], Any], what: str, limit: float = 60.0) -> Any:
    """Poll an async check until it returns something true."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await task.deferLater(reactor, 0.1)
    raise AssertionError(f"never happened: {what}")


async def _keygen(directory: Path) -> str:
    directory.mkdir()
    code, out, err = await _cli(
        "keygen", "--json", str(directory / "node.key"), cwd=directory
    )
    assert code == 0, err
    peer_id: str = json.loads(out)["peer_id"]
    return peer_id


@pytest_twisted.ensureDeferred
async def test_two_twistd_nodes_cli_request_ban_restart_and_sigterm(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    a = TwistdNode(tmp_path / "a", await _keygen(tmp_path / "a"))
    b = TwistdNode(tmp_path / "b", await _keygen(tmp_path / "b"))
    a.start(b)
    b.start(a)
    try:
        # They find each other through their configured peers.
        async def connected() -> bool:
            sa, sb = await _status(a), await _status(b)
            return bool(sa and sb) and (
                [p["peer_id"] for p in sa["peers"]] == [b.peer_id]
                and [p["peer_id"] for p in sb["peers"]] == [a.peer_id]
            )

        await _until(connected, "the two nodes verify each other")

        # A request from the command line, to a node that must be A.
        code, out, err = await _cli(
            "request",
            f"p2ptls:127.0.0.1:{a.port}",
            "echo",
            "over the wire",
            "--peer-id",
            a.peer_id,
            cwd=tmp_path,
        )
        assert (code, out.strip()) == (0, "over the wire"), err

        # A ban written by the command line into B's database while B runs.
        code, out, err = await _cli(
            "ban",
            a.peer_id,
            "--data-dir",
            str(b.directory),
            "--reason",
            "test",
            cwd=tmp_path,
        )
        assert code == 0, err

        async def a_dropped() -> bool:
            sb = await _status(b)
            return bool(sb) and sb["peers"] == [] and sb["bans"] == 1

        await _until(a_dropped, "B applies the ban and drops A")

        # B restarts: the ban is still in force, so A's redials are refused.
        record_property("sigterm_seconds_b_first", b.terminate())
        b.start(a)

        async def still_banned() -> bool:
            sb = await _status(b)
            refused = sb.get("counters", {}).get("handshakes.failed.BANNED", 0)
            return bool(sb) and sb["bans"] == 1 and refused >= 1 and sb["peers"] == []

        await _until(still_banned, "the ban survives B's restart")
        code, out, err = await _cli(
            "bans", "--json", "--data-dir", str(b.directory), cwd=tmp_path
        )
        assert [entry["target"] for entry in json.loads(out)] == [a.peer_id]

        # Lift it: A's keeper reconnects by itself (within its 30 s back-off).
        code, out, err = await _cli(
            "unban", a.peer_id, "--data-dir", str(b.directory), cwd=tmp_path
        )
        assert code == 0, err
        await _until(connected, "A reconnects once unbanned")
    finally:
        times = {}
        for name, node in (("b", b), ("a", a)):
            if node.process is not None and node.process.poll() is None:
                times[name] = node.terminate()
    record_property("sigterm_seconds", times)
    for node in (a, b):
        logged = node.log.read_text()
        assert "Received SIGTERM, shutting down." in logged
        assert "Server Shut Down." in logged
        assert "Traceback" not in logged, logged
    # B said goodbye to A before going (A was still connected to it).
    assert "GOING_AWAY" in a.log.read_text()


def _readme_request() -> list[str]:
    """The arguments of README.md's ``blueprint-net request`` line."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    [line] = [
        line for line in readme.splitlines() if line.startswith("blueprint-net request")
    ]
    arguments = shlex.split(line.partition("#")[0])[1:]
    assert arguments[1].startswith("p2ptls:"), line  # the documented default
    return arguments


def _taken(port: int) -> bool:
    """Whether twistd could not listen there (it sets SO_REUSEADDR, so a
    TIME_WAIT left by an earlier run does not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


@pytest_twisted.ensureDeferred
async def test_the_readme_command_alone_runs_a_working_node(tmp_path: Path) -> None:
    """``twistd -n blueprint`` with every default, as README.md's first line."""
    if _taken(7010) or _taken(7080):
        pytest.skip("the default ports 7010 and 7080 are in use on this machine")
    process = subprocess.Popen(
        [TWISTD, "-n", "blueprint"],
        cwd=tmp_path,
        env=tree_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    node = TwistdNode(tmp_path, "", port=7010, status_port=7080, process=process)
    try:
        status = await _until(lambda: _status(node), "the node serves its status")
        assert status["listening"] == ["127.0.0.1:7010"]
        assert status["allow_plaintext"] is False
        # README's follow-up command, exactly as written: over TLS.
        code, out, err = await _cli(*_readme_request(), cwd=tmp_path)
        assert (code, out.strip()) == (0, "hello"), err
        status = await _status(node)
        assert status["counters"]["handshakes.ok"] == 1
        # A plain client (opted in on its side) is refused at a default node.
        code, out, err = await _cli(
            "request", "tcp:127.0.0.1:7010", "echo", "--allow-plaintext", cwd=tmp_path
        )
        assert code == 3 and "Traceback" not in err, err
        assert (
            tmp_path / "blueprint-data" / "node.key"
        ).stat().st_mode & 0o777 == 0o600
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0].decode()
    assert "Server Shut Down." in output and "Traceback" not in output, output


@pytest_twisted.ensureDeferred
async def test_a_wrong_peer_id_is_said_in_words_on_every_path(tmp_path: Path) -> None:
    """Issue 23 item 1: a mistyped id, with the CLI's ``--peer-id`` and with
    twistd's ``--peer``, says which id was expected and which was presented
    (not OpenSSL's ``certificate verify failed``); the node dialled logs it
    in words and counts it (``tls.failed.refused_by_peer``)."""
    a = TwistdNode(tmp_path / "a", await _keygen(tmp_path / "a"))
    wrong = TwistdNode(tmp_path / "w", await _keygen(tmp_path / "w"), port=a.port)
    b = TwistdNode(tmp_path / "b", await _keygen(tmp_path / "b"))
    a.start()
    b.start(wrong)  # B keeps "wrong" at A's address
    expected = f"expected peer id {wrong.peer_id}, but the peer presented {a.peer_id}"
    try:
        await _until(_status_of(a), "A serves its status page")
        code, out, err = await _cli(
            "request",
            f"p2ptls:127.0.0.1:{a.port}",
            "echo",
            "hi",
            "--peer-id",
            wrong.peer_id,
            cwd=tmp_path,
        )
        assert code == 3 and out == "", (code, out, err)
        assert err.count("\n") == 1 and expected in err, err
        assert "SSL routines" not in err and "certificate verify failed" not in err

        async def b_says_so() -> Any:
            kept = (await _status(b)).get("kept_peers", [])
            return kept and expected in (kept[0]["last_error"] or "")

        await _until(b_says_so, "B's kept peer names both ids")
        await _until(
            lambda: _logged(
                b.log, f"wrong peer at that address (UNEXPECTED_PEER: {expected})"
            ),
            "B logs the wrong peer at once",
        )

        async def a_counts() -> Any:
            counters = (await _status(a)).get("counters", {})
            return counters.get("tls.failed.refused_by_peer", 0) >= 2

        await _until(a_counts, "A counts the CLI's and B's refusals")
        await _until(
            lambda: _logged(a.log, "the peer refused this node's certificate"),
            "A logs the refusal in words",
        )
        assert a.peer_id in a.log.read_text()
    finally:
        for node in (b, a):
            if node.process is not None and node.process.poll() is None:
                node.terminate()


def _status_of(node: TwistdNode) -> Callable[[], Any]:
    async def check() -> Any:
        return await _status(node)

    return check


async def _logged(log: Path, text: str) -> bool:
    return log.exists() and text in log.read_text()


def test_the_readme_first_command_leaves_nothing_for_git(tmp_path: Path) -> None:
    """Issue 23 item 11: ``twistd -n blueprint`` run in a checkout (the
    README's first command; only its ports changed, to free ones) writes
    ``blueprint-data/`` (the private key) and ``twistd.pid`` there: while it
    runs, ``git status`` shows neither, by the project's ``.gitignore``."""
    root = Path(__file__).resolve().parents[2]
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / ".gitignore").write_bytes((root / ".gitignore").read_bytes())

    def git(*argv: str) -> str:
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *argv],
            cwd=checkout,
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    git("init", "-q")
    git("add", ".gitignore")
    git("commit", "-qm", "ignore")
    port, status = free_port(), free_port()
    process = subprocess.Popen(
        [TWISTD, "-n", "blueprint", "--listen", f"p2ptls:{port}:interface=127.0.0.1",
         "--status", f"tcp:{status}:interface=127.0.0.1"],
        cwd=checkout,
        env=tree_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        written = [checkout / "blueprint-data" / "node.key", checkout / "twistd.pid"]
        while not all(path.exists() for path in written):
            assert process.poll() is None, "twistd ended"
            assert time.monotonic() < deadline, "twistd wrote neither file"
            time.sleep(0.05)
        assert git("status", "--porcelain", "--untracked-files=all") == ""
        ignored = git("status", "--porcelain", "--ignored", "--untracked-files=all")
        assert "blueprint-data/node.key" in ignored and "twistd.pid" in ignored
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


@pytest_twisted.ensureDeferred
async def test_status_lists_kept_peers_and_the_metrics_agree(tmp_path: Path) -> None:
    """Issue 23 item 7, with real nodes and the real command: ``blueprint-net
    status`` lists the kept peers; requests a node sends without wanting an
    answer are in ``blueprint_requests_sent`` as in the per-peer "requests
    out"; ``connections_closed`` says a GOING_AWAY goodbye is counted."""
    a = TwistdNode(tmp_path / "a", await _keygen(tmp_path / "a"))
    b = TwistdNode(tmp_path / "b", await _keygen(tmp_path / "b"))
    a.start()
    b.start(a)
    try:

        async def kept_connected() -> Any:
            kept = (await _status(b)).get("kept_peers", [])
            return kept and kept[0]["state"] == "connected"

        await _until(kept_connected, "B keeps A connected")
        code, out, err = await _cli("status", "--url", b.url, cwd=tmp_path)
        assert code == 0, err
        assert "kept      1" in out, out
        assert f"  {a.peer_id}  p2ptls:127.0.0.1:{a.port}  connected" in out, out
    finally:
        for node in (b, a):
            if node.process is not None and node.process.poll() is None:
                node.terminate()


@pytest_twisted.ensureDeferred
async def test_every_request_sent_is_counted(
    alice: Any, bob: Any, make_node: Any
) -> None:
    """``notify`` and ``notify_all`` count in ``requests.out`` as the peer's
    own "requests out" does (they were missing from the metric)."""
    from blueprint_net._ops import metrics
    from blueprint_net._ops.handlers import BUILTINS

    a, b = make_node(alice), make_node(bob, handlers=BUILTINS)
    port = await b.listen("tcp:0:interface=127.0.0.1")
    await a.connect(f"tcp:127.0.0.1:{port.getHost().port}", peer_id=bob.peer_id)
    await a.request(bob.peer_id, "echo", b"1")
    a.notify(bob.peer_id, "echo", b"2")
    assert a.notify_all("echo", b"3") == [bob.peer_id]
    [peer] = a.peers
    assert peer.requests_out == 3
    assert a.counters["requests.out.echo"] == 3
    page = metrics.render(
        metrics.counter_families(a.counters, a.protocols), openmetrics=False
    )
    assert 'blueprint_requests_sent_total{protocol="echo"} 3' in page
    help_line = [
        line
        for line in page.splitlines()
        if line.startswith("# HELP blueprint_connections_closed")
    ]
    assert help_line and "with an error" not in help_line[0]
    assert "GOING_AWAY: a normal goodbye" in help_line[0]


@pytest.mark.parametrize("level", ["info", "debug"])
@pytest_twisted.ensureDeferred
async def test_failed_discovery_dials_are_debug_lines_behind_log_level(
    tmp_path: Path, level: str
) -> None:
    """Issue 23 item 9: twistd wrote every event, debug included, so each
    failed discovery dial (here, to a bootstrap nobody listens on) was a
    line at the default level.  ``--log-level`` (default ``info``) filters:
    the dials are counted either way, and logged only at ``debug``."""
    node = TwistdNode(tmp_path / "n", await _keygen(tmp_path / "n"))
    dead = free_port()
    arguments = [
        TWISTD, "-n", "--pidfile=", f"--logfile={node.log}", "blueprint",
        "--data-dir", str(node.directory),
        "--listen", f"p2ptls:{node.port}:interface=127.0.0.1",
        "--status", f"tcp:{node.status_port}:interface=127.0.0.1",
        "--bootstrap", f"p2ptls:127.0.0.1:{dead}",
        *(["--log-level", level] if level != "info" else []),
    ]  # fmt: skip
    node.process = subprocess.Popen(
        arguments,
        cwd=node.directory,
        env=tree_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:

        async def failed_twice() -> Any:
            counters = (await _status(node)).get("counters", {})
            return counters.get("discovery.dial_failed", 0) >= 2

        await _until(failed_twice, "discovery fails to dial the bootstrap")
    finally:
        node.terminate()
    text = node.log.read_text()
    assert "started: peers on" in text  # info is logged at every level
    dial_lines = [
        line for line in text.splitlines() if f"dial p2ptls:127.0.0.1:{dead}" in line
    ]
    if level == "debug":
        assert len(dial_lines) >= 2, text
    else:
        assert dial_lines == [], dial_lines
