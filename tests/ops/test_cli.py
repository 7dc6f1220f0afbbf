"""The ``blueprint-net`` command: keys and ban database in-process; the
commands that need a reactor of their own run as a real process."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import threads
from twisted.internet.utils import getProcessOutputAndValue

from blueprint_net._adapters.banstore import SqliteBanStore
from blueprint_net._adapters.node import Node
from blueprint_net._core.identity import Identity
from blueprint_net._ops.cli import BAD_FILE, FAILED, OK, UNREACHABLE, USAGE, main
from blueprint_net._ops.keyfiles import load_identity
from blueprint_net._policy.settings import Settings
from tests.helpers import fed_without_end, tree_env

CLI = str(Path(sys.executable).with_name("blueprint-net"))


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(list(argv))
    out, err = capsys.readouterr()
    assert isinstance(done.value.code, int)
    return done.value.code, out, err


def test_keygen_then_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = str(tmp_path / "node.key")
    code, out, _ = _run(capsys, "keygen", "--json", key)
    assert code == OK
    peer_id = json.loads(out)["peer_id"]
    assert peer_id == str(load_identity(key).peer_id)
    assert (Path(key).stat().st_mode & 0o777) == 0o600
    assert _run(capsys, "id", key)[1].strip() == peer_id
    code, _, err = _run(capsys, "keygen", key)
    assert code == BAD_FILE and "already exists" in err  # never overwrites a key
    code, _, err = _run(capsys, "id", str(tmp_path / "missing.key"))
    assert code == BAD_FILE and "no such key file" in err


def test_ban_unban_and_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    database = tmp_path / "bans.sqlite"
    SqliteBanStore(database)._pool.close()  # type: ignore[union-attr]
    db = ["--database", str(database)]
    assert _run(capsys, "ban", "192.0.2.0/24", "--reason", "abuse", *db)[0] == OK
    peer = str(Identity(bytes(range(32))).peer_id)
    assert _run(capsys, "ban", peer, "--duration", "60", *db)[0] == OK
    code, out, _ = _run(capsys, "bans", "--json", *db)
    listed = {entry["target"]: entry for entry in json.loads(out)}
    assert set(listed) == {"192.0.2.0/24", peer}
    assert listed["192.0.2.0/24"]["reason"] == "abuse"
    assert listed[peer]["expires"] is not None
    assert _run(capsys, "unban", "192.0.2.0/24", *db)[0] == OK
    code, _, _ = _run(capsys, "unban", "192.0.2.0/24", *db)
    assert code == FAILED  # nothing left to unban
    code, _, err = _run(capsys, "ban", "not-a-target", *db)
    assert code == USAGE and "neither a peer id nor" in err
    code, _, err = _run(capsys, "bans", "--database", str(tmp_path / "none.sqlite"))
    assert code == BAD_FILE and "no such ban database" in err


def test_status_of_nothing_is_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "status", "--url", "http://127.0.0.1:9")
    assert code == UNREACHABLE and "Connection refused" in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "request")
    assert code == USAGE and "required" in err


@pytest_twisted.ensureDeferred
async def test_request_and_ping_as_a_process(alice: Identity, tmp_path: Path) -> None:
    """Every default: the command dials ``p2ptls:``; ``tcp:`` only with
    ``--allow-plaintext`` (the node opts in to serve both)."""
    from blueprint_net._ops.handlers import BUILTINS

    node = Node(alice, handlers=BUILTINS, settings=Settings(allow_plaintext=True))
    tls_port = await node.listen("p2ptls:0:interface=127.0.0.1")
    tcp_port = await node.listen("tcp:0:interface=127.0.0.1")
    endpoint = f"p2ptls:127.0.0.1:{tls_port.getHost().port}"  # type: ignore[attr-defined]
    plain = f"tcp:127.0.0.1:{tcp_port.getHost().port}"  # type: ignore[attr-defined]

    async def cli(*argv: str | bytes) -> tuple[bytes, bytes, int]:
        return await getProcessOutputAndValue(  # type: ignore[no-any-return]
            CLI, argv, path=str(tmp_path), env=tree_env({})
        )

    try:
        out, err, code = await cli(
            "request", endpoint, "echo", "hi", "--metadata", "m", "--json",
            "--peer-id", str(alice.peer_id),
        )  # fmt: skip
        assert code == OK, err
        assert json.loads(out) == {"response": "protocol", "data": "hi"}
        # A payload and metadata of any bytes travel as given (not UTF-8 here).
        out, err, code = await cli(
            "request",
            endpoint,
            "echo",
            b"\xffok",
            "--metadata",
            b"\xfe",
        )
        assert (code, out) == (OK, b"\xffok\n"), err  # as sent, not decoded
        out, err, code = await cli("ping", endpoint, "--count", "3", "--json")
        assert code == OK, err
        assert json.loads(out)["count"] == 3
        wrong = str(Identity(bytes(range(1, 33))).peer_id)
        out, err, code = await cli("request", endpoint, "echo", "--peer-id", wrong)
        assert code == UNREACHABLE, err  # refused in the TLS handshake
        out, err, code = await cli("request", plain, "echo", "hi")
        assert code == USAGE and b"--allow-plaintext" in err, err
        assert len(err.splitlines()) == 1 and b"Traceback" not in err
        out, err, code = await cli("request", plain, "echo", "hi", "--allow-plaintext")
        assert (code, out.strip()) == (OK, b"hi"), err
        out, err, code = await cli(
            "request", plain, "echo", "--peer-id", wrong, "--allow-plaintext"
        )
        assert code == UNREACHABLE and b"UNEXPECTED_PEER" in err
    finally:
        await node.stop()


def test_status_url_without_a_scheme_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 23 item 10: ``--url 127.0.0.1:7080`` was exit 3 (unreachable)."""
    for command in ("status", "peers"):
        code, out, err = _run(capsys, command, "--url", "127.0.0.1:7080")
        assert (code, out) == (USAGE, ""), err
        assert err.count("\n") == 1 and "wants an http:// URL" in err, err


@pytest_twisted.ensureDeferred
async def test_payload_from_stdin_binary_replies_and_refusals(
    alice: Identity, tmp_path: Path
) -> None:
    """Issue 23 item 10, as a process: a payload from standard input (``-``
    or ``--stdin``); a reply that is not UTF-8 is written as its bytes, and
    with ``--json`` as ``data_base64``; a refusal is one line on stderr and
    exit 1, nothing on stdout."""
    from blueprint_net._ops.handlers import BUILTINS

    node = Node(alice, handlers=BUILTINS)
    port = await node.listen("p2ptls:0:interface=127.0.0.1")
    endpoint = f"p2ptls:127.0.0.1:{port.getHost().port}"  # type: ignore[attr-defined]
    binary = bytes(range(256)) + b"\n\xff"

    def cli(*argv: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [CLI, *argv],
            input=stdin,
            capture_output=True,
            cwd=tmp_path,
            env=tree_env({}),
            timeout=60,
            check=False,
        )

    try:
        for argv in (["echo", "-"], ["echo", "--stdin"]):
            done = await threads.deferToThread(
                cli, "request", endpoint, *argv, stdin=binary
            )
            assert (done.returncode, done.stdout) == (OK, binary + b"\n"), done
        done = await threads.deferToThread(
            cli, "request", endpoint, "echo", "-", "--json", stdin=binary
        )
        assert json.loads(done.stdout) == {
            "response": "protocol",
            "data_base64": base64.b64encode(binary).decode(),
        }
        done = await threads.deferToThread(
            cli, "request", endpoint, "echo", "-", "--json", stdin="é".encode()
        )
        assert json.loads(done.stdout) == {"response": "protocol", "data": "é"}
        done = await threads.deferToThread(cli, "request", endpoint, "nope", "x")
        assert (done.returncode, done.stdout) == (FAILED, b""), done
        assert done.stderr.count(b"\n") == 1, done.stderr
        assert b"UNKNOWN_PROTOCOL (300)" in done.stderr, done.stderr
    finally:
        await node.stop()


def test_a_request_reads_standard_input_up_to_a_frame() -> None:
    """A payload from a standard input that does not end (a pipe kept open,
    past what one frame holds) is refused at the frame limit + 1 bytes; all
    of it was read first, without bound."""
    cap = Settings().max_frame
    argv = [CLI, "request", "p2ptls:127.0.0.1:9", "echo", "-"]
    status, err = fed_without_end(argv, bytes(cap + 1))
    assert status == FAILED
    assert err.strip() == (
        f"blueprint-net request: standard input: more than {cap} bytes,"
        " the size cap for a request"
    )
