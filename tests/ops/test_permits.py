"""The live allow-list of permissioned mode: the file format, the
``allow``/``disallow`` commands, the node's refresh closing a connection that
is no longer permitted (real TCP), and SIGHUP reloading ``--permit-file`` in
a real ``twistd`` process."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.logger import formatEvent

from blueprint_net._adapters.node import Node
from blueprint_net._core.errors import ConfigurationError
from blueprint_net._core.identity import Identity, PeerId
from blueprint_net._ops.cli import FAILED, OK, main
from blueprint_net._ops.permit_file import PERMITS_FILE, PermitSources
from blueprint_net._ops.service import NodeService
from blueprint_net._policy.permits import parse_permits, with_permit
from tests.helpers import free_port

pytestmark = [pytest.mark.usefixtures("clean_reactor"), pytest.mark.timeout(60)]

TWISTD = str(Path(sys.executable).with_name("twistd"))


def _id(n: int) -> PeerId:
    return Identity(bytes([n]) * 32).peer_id


def test_the_file_format() -> None:
    a, b = _id(1), _id(2)
    text = f"# the team\n{a}  # alice\n\n   {b}\n"
    assert parse_permits(text, "f") == {a, b}
    with pytest.raises(ConfigurationError, match=r"^f:3: invalid peer id 'nope'"):
        parse_permits(f"{a}\n#\nnope\n", "f")
    removed = with_permit(text, a, False)
    assert removed == f"# the team\n\n   {b}\n"  # comments and layout kept
    assert with_permit(removed, a, True) == removed + f"{a}\n"
    assert with_permit(text, b, True) == text  # listed once


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as done:
        main(list(argv))
    out, err = capsys.readouterr()
    assert isinstance(done.value.code, int)
    return done.value.code, out + err


def test_allow_and_disallow_edit_the_data_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = str(_id(1)), str(_id(2))
    where = ["--data-dir", str(tmp_path)]
    code, out = _cli(capsys, "allow", a, *where)
    assert code == OK and "a new list" in out
    assert _cli(capsys, "allow", b, *where)[0] == OK
    assert _cli(capsys, "allow", b, *where)[0] == OK  # already there
    assert _cli(capsys, "disallow", a, *where)[0] == OK
    code, out = _cli(capsys, "disallow", a, *where)
    assert code == FAILED and "was not on" in out
    assert (tmp_path / PERMITS_FILE).read_text() == f"{b}\n"
    code, out = _cli(capsys, "allow", "12D3KooWnope", *where)
    assert code == 2 and "invalid peer id" in out
    (tmp_path / PERMITS_FILE).write_text("garbage\n")
    code, out = _cli(capsys, "allow", a, *where)
    assert code == 4 and f"{PERMITS_FILE}:1: invalid peer id" in out
    assert (tmp_path / PERMITS_FILE).read_text() == "garbage\n"  # left alone


async def _until(check: Callable[[], Any], what: str, limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        await task.deferLater(reactor, 0.05)


@pytest_twisted.ensureDeferred
async def test_disallow_closes_a_connected_peer_within_the_refresh(
    alice: Identity, bob: Identity, carol: Identity, tmp_path: Path
) -> None:
    (tmp_path / PERMITS_FILE).write_text(f"{alice.peer_id}\n")
    node = Node(bob)
    permits = PermitSources(node, data_dir_file=tmp_path / PERMITS_FILE)
    service = NodeService(
        node,
        None,
        listen=["p2ptls:0:interface=127.0.0.1"],
        peers=[],
        status=None,
        permits=permits,
    )
    service.startService()
    client, stranger = Node(alice), Node(carol)
    try:
        port = service.listeners[0].port.getHost().port  # type: ignore[union-attr]
        endpoint = f"p2ptls:127.0.0.1:{port}"
        with pytest.raises(Exception, match="NOT_ALLOWED"):
            await stranger.connect(endpoint, peer_id=bob.peer_id)
        await client.connect(endpoint, peer_id=bob.peer_id)
        assert [p.peer_id for p in node.peers] == [alice.peer_id]

        with pytest.raises(SystemExit) as done:
            main(["disallow", str(alice.peer_id), "--data-dir", str(tmp_path)])
        assert done.value.code == OK
        await _until(lambda: not client.peers, "the refresh closes alice")
        assert client.counters["closed.NOT_ALLOWED"] == 1
        assert node.peers == []
    finally:
        await client.stop()
        await stranger.stop()
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_sighup_reloads_the_permit_file_of_a_twistd_node(
    alice: Identity, tmp_path: Path
) -> None:
    permit_file = tmp_path / "team.txt"
    permit_file.write_text(f"# the team\n{alice.peer_id}\n")
    port = free_port()
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
            f"p2ptls:{port}:interface=127.0.0.1",
            "--status",
            "none",
            "--permit-file",
            str(permit_file),
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = Node(alice)
    try:
        await _until(lambda: "listening for peers on" in _read(log), "the node listens")
        await client.connect(f"p2ptls:127.0.0.1:{port}")
        assert len(client.peers) == 1
        permit_file.write_text("# the team, without alice\n")
        process.send_signal(signal.SIGHUP)
        await _until(lambda: not client.peers, "SIGHUP closes alice")
        assert client.counters["closed.NOT_ALLOWED"] == 1
        assert process.poll() is None  # SIGHUP no longer ends the node
        logged = _read(log)
        assert "SIGHUP: reloading the allow-list" in logged
        assert "0 peers permitted; 1 connection closed" in logged
    finally:
        await client.stop()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)
    assert "Traceback" not in _read(log)


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def test_a_bad_file_keeps_the_previous_list_and_deleting_it_opens_up(
    tmp_path: Path,
) -> None:
    path = tmp_path / PERMITS_FILE
    a, b = _id(1), _id(2)
    path.write_text(f"{a}\n")
    clock = task.Clock()
    node = Node(Identity(bytes([3]) * 32), reactor=clock)
    permits = PermitSources(node, peers=[b], data_dir_file=path)
    assert node.policy.permitted == frozenset({a, b})
    path.write_text(f"{a}\nnot-an-id\n")
    permits.refresh()
    assert node.policy.permitted == frozenset({a, b})  # refused whole: the old list
    path.unlink()
    permits.refresh()
    assert node.policy.permitted == frozenset({b})  # --permit-peer still applies
    open_node = Node(Identity(bytes([4]) * 32), reactor=clock)
    path.write_text(f"{a}\n")
    only_file = PermitSources(open_node, data_dir_file=path)
    assert open_node.policy.permitted == frozenset({a})
    path.unlink()
    only_file.refresh()
    assert open_node.policy.permitted is None  # no source left: mode off
    with pytest.raises(ConfigurationError, match="no such file"):
        PermitSources(open_node, file=tmp_path / "missing")


def test_the_log_says_when_a_file_that_did_not_read_kept_its_list(
    tmp_path: Path, logged: list[dict[str, Any]]
) -> None:
    """After a bad file the log must not claim the list was read from it."""
    path = tmp_path / PERMITS_FILE
    path.write_text(f"{_id(1)}\n")
    node = Node(Identity(bytes([3]) * 32), reactor=task.Clock())
    permits = PermitSources(node, data_dir_file=path)
    path.write_text("not-an-id\n")
    permits.reload()
    lines = [formatEvent(event) for event in logged]
    assert any("allow-list not reloaded" in line for line in lines), lines
    assert lines[-1] == (
        "allow-list kept where a file did not read: 1 peer permitted;"
        " 0 connections closed (NOT_ALLOWED)"
    )
    path.write_text(f"{_id(1)}\n{_id(2)}\n")
    permits.reload()
    assert formatEvent(logged[-1]).startswith("allow-list read from every")
    assert "2 peers permitted" in formatEvent(logged[-1])
