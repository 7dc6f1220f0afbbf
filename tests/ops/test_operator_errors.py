"""Issue 15 items 2-5 and issue 12 item 7: what an operator sees when
something is wrong.  Every bad input is one line naming what is wrong, with
the documented exit status and no traceback; the logs serialise as JSON; a
client of the wrong protocol at a TLS port gets an answer it can show."""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, threads

from blueprint_net._core.errors import HandshakeError
from blueprint_net._core.identity import Identity
from blueprint_net._ops.cli import BAD_FILE, OK, UNREACHABLE, USAGE, main
from blueprint_net._ops.keyfiles import load_identity
from blueprint_net._policy.bans import BanRegistry
from blueprint_net._policy.scores import Policy, PolicySettings
from blueprint_net._policy.settings import Settings
from tests.helpers import free_port, send_and_read, tree_env, until

CLI = str(Path(sys.executable).with_name("blueprint-net"))
TWISTD = str(Path(sys.executable).with_name("twistd"))
PEER = str(Identity(bytes(32)).peer_id)


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(list(argv))
    out, err = capsys.readouterr()
    assert isinstance(done.value.code, int)
    return done.value.code, out, err


@pytest.fixture
def locked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A data directory this user may not read.  As root (the suite's
    usual user) permissions do not apply, so ``stat`` of anything inside
    fails as it would for anyone else: with EACCES, from the real
    ``Path.is_file`` that the ban database's opening calls."""
    directory = tmp_path / "locked"
    directory.mkdir()
    directory.chmod(0)
    if os.geteuid() == 0:
        real = pathlib.Path.stat

        def stat(self: Path, **kwargs: Any) -> os.stat_result:
            if directory in self.parents:
                raise PermissionError(13, "Permission denied", str(self))
            return real(self, **kwargs)

        monkeypatch.setattr(pathlib.Path, "stat", stat)
    yield directory
    directory.chmod(0o700)


def _bad_inputs(tmp_path: Path, locked: Path) -> list[tuple[list[str], int, str]]:
    (tmp_path / "a-file").write_text("")
    latin1 = tmp_path / "permitted-latin1"
    latin1.write_bytes(b"caf\xe9\n")
    db = ["--database", str(tmp_path / "none.sqlite")]
    return [
        ([], USAGE, "required: COMMAND"),
        (["fly"], USAGE, "invalid choice: 'fly'"),
        (["keygen", str(tmp_path / "a-file" / "node.key")], BAD_FILE, "cannot create"),
        (["id", str(tmp_path / "missing.key")], BAD_FILE, "no such key file"),
        (["request", "foo", "echo"], USAGE, "'foo': Unknown endpoint type"),
        (["request", "tcp:127.0.0.1", "echo"], USAGE, "'tcp:127.0.0.1': missing"),
        (["request", "p2ptls:127.0.0.1:99999", "echo"], USAGE, "port 99999"),
        (
            ["request", "p2ptls:127.0.0.1:1", "echo", "--peer-id", "notapeerid"],
            USAGE,
            "--peer-id: invalid peer id 'notapeerid'",
        ),
        (["request", "p2ptls:127.0.0.1:1", "x", "--timeout", "0"], USAGE, "more than"),
        (["request", "tcp:127.0.0.1:1", "echo"], USAGE, "is plaintext"),
        # Issue 23 item 6: IPv6 and parameters in words, not Python's.
        (["request", "p2ptls:[::1]:1", "echo"], USAGE, r"p2ptls:\:\:1:7443 to dial"),
        (["request", "p2ptls:::1:1", "echo"], USAGE, "each colon escaped"),
        (
            ["request", "p2ptls:127.0.0.1:1:bogus=1", "echo"],
            USAGE,
            "'p2ptls:127.0.0.1:1:bogus=1': unknown parameter 'bogus'",
        ),
        (["ping", "p2ptls:127.0.0.1:1", "--count", "0"], USAGE, "--count"),
        (["status", "--url", "http://127.0.0.1:9"], UNREACHABLE, "refused"),
        (["peers", "--url", "http://127.0.0.1:9"], UNREACHABLE, "refused"),
        (["ban", "not-a-target", *db], USAGE, "neither a peer id nor"),
        (["ban", "192.0.2.1", "--duration", "nan", *db], USAGE, "finite"),
        (["ban", "192.0.2.1", *db], BAD_FILE, "no such ban database"),
        (["unban", "192.0.2.1", *db], BAD_FILE, "no such ban database"),
        (["bans", "--data-dir", str(locked)], BAD_FILE, "Permission denied"),
        (["ban", "192.0.2.1", "--data-dir", str(locked)], BAD_FILE, "Permission"),
        (["allow", "nope"], USAGE, "invalid peer id 'nope'"),
        (["disallow", "nope"], USAGE, "invalid peer id 'nope'"),
        (["allow", PEER, "--file", str(latin1)], BAD_FILE, "not UTF-8 text"),
        # Bytes that are not UTF-8, as the shell hands them to Python.
        (["request", "p2ptls:127.0.0.1:1", "\udcff"], USAGE, "b'\\xff' is not valid"),
        (["request", "p2ptls:\udcff:1", "echo"], USAGE, "is not valid UTF-8"),
        (["ban", "192.0.2.1", "--reason", "caf\udce9", *db], USAGE, "b'caf\\xe9'"),
    ]


@pytest.mark.parametrize("as_json", [False, True])
def test_every_command_with_bad_input_is_one_line(
    tmp_path: Path,
    locked: Path,
    capsys: pytest.CaptureFixture[str],
    as_json: bool,
) -> None:
    """Table-driven: one line on stderr naming the problem, the documented
    exit status, no traceback; with ``--json`` (before the command, where
    a user may well put it) a JSON error object on stdout too."""
    for argv, status, message in _bad_inputs(tmp_path, locked):
        code, out, err = _cli(capsys, *(["--json"] if as_json else []), *argv)
        assert (code, err.count("\n")) == (status, 1), (argv, err)
        assert message in err and "Traceback" not in err, (argv, err)
        assert "()" not in err, (argv, err)  # no Python function speaking
        if as_json:
            assert json.loads(out) == {"error": json.loads(out)["error"], "code": code}
            assert message in json.loads(out)["error"], argv
        else:
            assert out == "", argv


def test_keygen_makes_its_directory_private(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Step one of the two-node recipe: ``keygen a/node.key``."""
    key = tmp_path / "a" / "node.key"
    code, out, err = _cli(capsys, "keygen", str(key), "--json")
    assert code == OK, err
    assert json.loads(out)["peer_id"] == str(load_identity(key).peer_id)
    assert (key.parent.stat().st_mode & 0o777) == 0o700
    assert (key.stat().st_mode & 0o777) == 0o600


def test_a_key_where_nothing_may_be_created_says_why(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """/proc exists: ENOENT there is the file system refusing, not a
    missing directory (the message once said "directory /proc does not
    exist")."""
    code, _, err = _cli(capsys, "keygen", "/proc/blueprint-test.key")
    assert code == BAD_FILE and "does not exist" not in err
    assert "/proc/blueprint-test.key: cannot create: No such file or directory" in err


def test_json_before_or_after_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for index, argv in enumerate(
        (["--json", "keygen"], ["keygen", "--json"], ["--json", "keygen", "--json"])
    ):
        key = str(tmp_path / f"{index}.key")
        code, out, _ = _cli(capsys, *argv, key)
        assert code == OK and json.loads(out)["key_file"] == key
    code, out, _ = _cli(capsys, "keygen", str(tmp_path / "plain.key"))
    assert code == OK and out.startswith("12D3KooW")  # text without --json


def _run(
    *argv: str, cwd: Path, timeout: float = 60, env: Any = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        check=False,
        env=tree_env(os.environ if env is None else env),  # this tree's code
    )


def test_versions(tmp_path: Path) -> None:
    for argv in ([CLI, "--version"], [TWISTD, "blueprint", "--version"]):
        result = _run(*argv, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("blueprint-net "), result.stdout
        assert "Twisted " in result.stdout and result.stdout.count("\n") == 1


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never
    answers: a TLS handshake there waits for ever."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


@pytest.mark.parametrize("command", ["request", "ping"])
def test_timeout_bounds_connecting_and_the_handshake(
    tmp_path: Path, silent_port: int, command: str
) -> None:
    """``--timeout 0.5`` against a port that never answers: exit 3 well
    before the 30 s handshake timeout (the subprocess limit would fire)."""
    extra = ["echo"] if command == "request" else []
    result = _run(
        CLI,
        command,
        f"p2ptls:127.0.0.1:{silent_port}",
        *extra,
        "--timeout",
        "0.5",
        "--json",
        cwd=tmp_path,
        timeout=20,
    )
    assert result.returncode == UNREACHABLE, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "no handshake within 0.5 s (--timeout)" in result.stderr
    assert json.loads(result.stdout)["code"] == UNREACHABLE


# -- twistd: one line at start-up ----------------------------------------------


def _twistd(tmp_path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return _run(
        TWISTD,
        "-n",
        "--pidfile=",
        "blueprint",
        "--data-dir",
        str(tmp_path / "data"),
        *options,
        cwd=tmp_path,
    )


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stdout == "", result.stdout  # no usage text, no log
    assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr


@pytest.mark.parametrize("option", ["--listen", "--status"])
def test_a_port_in_use_is_one_line_naming_the_option(
    tmp_path: Path, silent_port: int, option: str
) -> None:
    """Starting a second node on the same port: the first thing a user of
    the two-node recipe may see."""
    taken = f"tcp:{silent_port}:interface=127.0.0.1"
    listen = f"p2ptls:{silent_port}:interface=127.0.0.1"
    options = (
        ["--listen", listen, "--status", "none"]
        if option == "--listen"
        else ["--listen", "p2ptls:0:interface=127.0.0.1", "--status", taken]
    )
    line = _one_line(_twistd(tmp_path, *options))
    assert line.startswith(f"blueprint: {option} "), line
    assert f"cannot listen on 127.0.0.1:{silent_port}: address already in use" in line


@pytest.mark.parametrize(
    ("options", "ini", "message"),
    [
        (["--listen", "p2ptls:x"], None, "'p2ptls:x': wants a number, not 'x'"),
        (["--listen", "tcp:7010:backlog=y", "--allow-plaintext"], None, "not 'y'"),
        ([f"--peer={PEER}@bogus:1"], None, "--peer 'bogus:1': Unknown endpoint"),
        ([f"--peer={PEER}@tcp:127.0.0.1"], None, "--peer 'tcp:127.0.0.1': missing"),
        (["--status", "foo:1"], None, "--status 'foo:1': Unknown endpoint type"),
        (["--max-connections", "0"], None, "--max-connections must be at least 1"),
        (["--bogus"], None, "option --bogus not recognized"),
        (  # issue 23 item 6
            ["--listen", "p2ptls:7010:interface=::1"],
            None,
            r"'interface' is given twice, or a ':' in a value split it; an IPv6"
            r" address is written without brackets and with each colon escaped:"
            r" p2ptls:\:\:1:7443 to dial, p2ptls:7443:interface=\:\:1 to listen",
        ),
        (["--listen", "p2ptls:7010:bogus=1"], None, "unknown parameter 'bogus'"),
        (  # issue 23 item 9
            ["--log-level", "loud"],
            None,
            "--log-level wants one of debug, info, warn, error, critical, not 'loud'",
        ),
        ([f"--peer={PEER}@p2ptls:[::1]:7010"], None, "without brackets"),
        ([], b"[blueprint]\nno-builtins = maybe\n", "--no-builtins wants yes or no"),
        ([], b"[blueprint]\nstatus = caf\xe9\n", "not UTF-8 text (byte 0xe9"),
        ([], b"[blueprint]\nlisten = p2ptls:x\n", "--listen 'p2ptls:x'"),
        (  # a byte that is not UTF-8, as the shell passes it
            ["--listen", "p2ptls:0:interface=\udcff"],
            None,
            "--listen b'p2ptls:0:interface=\\xff' is not valid UTF-8",
        ),
    ],
)
def test_bad_options_are_one_line_without_the_usage_text(
    tmp_path: Path, options: list[str], ini: bytes | None, message: str
) -> None:
    if ini is not None:
        (tmp_path / "node.ini").write_bytes(ini)
        options = ["--config", "node.ini", *options]
    line = _one_line(_twistd(tmp_path, *options))
    assert line.startswith("blueprint: ") and message in line, line
    assert "()" not in line, line  # no Python function speaking


def test_an_ipv6_node_logs_its_addresses_ipv6_style(tmp_path: Path) -> None:
    """Issue 23 item 6: the escaped ``\\:\\:1`` works, and the log says
    ``[::1]:PORT``, not ``::1:PORT``."""
    log = tmp_path / "twistd.log"
    process = subprocess.Popen(
        [
            TWISTD,
            "-n",
            "--pidfile=",
            f"--logfile={log}",
            "blueprint",
            "--data-dir",
            str(tmp_path / "data"),
            "--listen",
            r"p2ptls:0:interface=\:\:1",
            "--status",
            r"tcp:0:interface=\:\:1",
        ],
        cwd=tmp_path,
        env=tree_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (log.exists() and "started: peers on" in log.read_text()):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the node never started"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
        assert process.stderr is not None
        process.stderr.close()
    text = log.read_text()
    assert re.search(r"started: peers on \[::1\]:\d+ \(TLS, p2ptls\)", text), text
    assert re.search(r"status page on http://\[::1\]:\d+/", text), text
    assert re.search(r"listening for peers on \[::1\]:\d+ ", text), text


# -- logs: serialisable, and what an operator needs ---------------------------

_JSON_LOGGER = """
import io, os
from twisted.logger import jsonFileLogObserver

def observer():
    return jsonFileLogObserver(io.open(os.environ["JSON_LOG"], "a"))
"""


def _wait_for(port: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("twistd did not start listening")


def test_json_logs_of_a_real_node(tmp_path: Path) -> None:
    """``twistd --logger`` with ``jsonFileLogObserver``: every event
    serialises (no ``{"unpersistable": true}``), ``peer_id`` and
    ``address`` are strings to select on, the start-up line names the peer
    id, listeners and transport, the status page says what it is, a CLI
    client's goodbye is no warning, and SIGHUP is logged."""
    (tmp_path / "jsonlogger.py").write_text(_JSON_LOGGER)
    log = tmp_path / "node.json"
    peer_port, status_port = free_port(), free_port()
    environment = tree_env(
        {**os.environ, "PYTHONPATH": str(tmp_path), "JSON_LOG": str(log)}
    )
    process = subprocess.Popen(
        [
            TWISTD,
            "-n",
            "--pidfile=",
            "--logger=jsonlogger.observer",
            "blueprint",
            "--data-dir",
            str(tmp_path / "data"),
            "--allow-plaintext",
            "--listen",
            f"tcp:{peer_port}:interface=127.0.0.1",
            "--status",
            f"tcp:{status_port}:interface=127.0.0.1",
        ],
        cwd=tmp_path,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(peer_port, process)
        request = _run(
            CLI,
            "request",
            f"tcp:127.0.0.1:{peer_port}",
            "echo",
            "hi",
            "--allow-plaintext",
            cwd=tmp_path,
        )
        assert request.returncode == OK and request.stdout == "hi\n", request.stderr
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while "SIGHUP: reloading" not in log.read_text():
            assert time.monotonic() < deadline, "no SIGHUP line"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
    text = log.read_text()
    events = [json.loads(line.strip("\x1e")) for line in text.splitlines() if line]
    unpersistable = {"unpersistable": True}
    for event in events:  # the logger and its source object never serialise
        kept = {k: v for k, v in event.items() if k not in ("log_logger", "log_source")}
        assert unpersistable not in kept.values(), event
        assert "unpersistable" not in json.dumps(kept), event
    own = str(load_identity(tmp_path / "data" / "node.key").peer_id)
    started = [e for e in events if e.get("peer_id") == own and "listening" in e]
    assert len(started) == 1, started
    assert started[0]["listening"] == f"127.0.0.1:{peer_port} (plaintext)"
    assert "plaintext links allowed" in started[0]["links"]
    formats = [e.get("log_format", "") for e in events]
    assert "status page on http://{address}/" in formats
    assert any(e.get("address") == f"127.0.0.1:{status_port}" for e in events)
    verified = [e for e in events if e.get("log_format", "").endswith("at {address}")]
    assert verified and all(isinstance(e["peer_id"], str) for e in verified)
    assert all(re.fullmatch(r"127\.0\.0\.1:\d+", e["address"]) for e in verified)
    closed = [e for e in events if e.get("code_name") == "GOING_AWAY"]
    assert closed, "the CLI's goodbye is logged"
    assert all(e["log_level"]["name"] == "info" for e in closed), closed
    for event in events:
        for field in ("peer_id", "address"):
            if field in event:
                assert isinstance(event[field], str), event


# -- issue 12 item 7: the wrong protocol at a TLS port -------------------------


@pytest_twisted.ensureDeferred
async def test_plain_and_http_clients_at_a_tls_port(
    alice: Identity, bob: Identity, make_node: Any
) -> None:
    """A plain blueprint client at a ``p2ptls:`` port reads a plain
    ``Error{NOT_ALLOWED}`` naming TLS; curl reads an HTTP 400 saying what
    the port is; neither is scored, even with loopback bannable and a
    threshold one offence would pass."""
    policy = Policy(
        BanRegistry(reactor), PolicySettings(ban_loopback=True, ban_threshold=1)
    )
    server = make_node(alice, policy=policy)
    listening = await server.listen("p2ptls:0:interface=127.0.0.1")
    port = listening.getHost().port
    client = make_node(bob, settings=Settings(allow_plaintext=True))
    for _ in range(3):
        with pytest.raises(HandshakeError) as caught:
            await client.connect(f"tcp:127.0.0.1:{port}", peer_id=alice.peer_id)
        assert "this port speaks TLS (p2ptls:)" in str(caught.value)
        assert "NOT_ALLOWED" in str(caught.value) or "209" in str(caught.value)
    answer = await threads.deferToThread(
        send_and_read, port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.0 400 Bad Request\r\n"), answer
    assert b"\r\n\r\nThis is a blueprint-net peer port (TLS), not HTTP." in answer
    await until(lambda: server.counters["wrong_protocol.http"] == 1)
    assert server.counters["wrong_protocol.plain"] == 3
    assert server.counters["misbehaviour"] == 0 and server.bans.bans() == []
    assert policy.score("127.0.0.1") == 0.0
    # and TLS still works on the same port
    tls_client = make_node(Identity.generate())
    peer = await tls_client.connect(f"p2ptls:127.0.0.1:{port}", peer_id=alice.peer_id)
    assert peer.peer_id == alice.peer_id


@pytest_twisted.ensureDeferred
async def test_http_and_tls_clients_at_a_plain_port(
    alice: Identity, bob: Identity, make_node: Any
) -> None:
    """The other direction, on a node that opted in to plaintext: curl's
    request gets the HTTP 400 hint after the responder's Hello (one binary
    frame: the wire spec's order, kept), a real TLS client fails at once;
    neither is scored, with loopback bannable at a threshold of 1."""
    policy = Policy(
        BanRegistry(reactor), PolicySettings(ban_loopback=True, ban_threshold=1)
    )
    server = make_node(alice, policy=policy, settings=Settings(allow_plaintext=True))
    port = (await server.listen("tcp:0:interface=127.0.0.1")).getHost().port
    answer = await threads.deferToThread(
        send_and_read, port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    hello_length = int.from_bytes(answer[:4], "big")
    assert answer[4 + hello_length :].startswith(b"HTTP/1.0 400 Bad Request\r\n")
    assert b"This is a blueprint-net peer port, not HTTP." in answer
    client = make_node(bob)
    with pytest.raises(HandshakeError):
        await client.connect(f"p2ptls:127.0.0.1:{port}", peer_id=alice.peer_id)
    await until(lambda: server.counters["wrong_protocol.tls"] == 1)
    assert server.counters["wrong_protocol.http"] == 1
    assert server.counters["misbehaviour"] == 0 and server.bans.bans() == []
    assert policy.score("127.0.0.1") == 0.0
