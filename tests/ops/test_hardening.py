"""Issue 12, items 5-10: each hole an attack on a running node found, closed.

Each test here failed on the code before its fix (see the report of the
change that added it).
"""

from __future__ import annotations

import math
import os
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock

from blueprint_net._adapters.banstore import (
    _SCHEMA,
    BanDatabaseError,
    SqliteBanStore,
    edit,
    remove,
    store,
    stored,
)
from blueprint_net._core import framing, wire
from blueprint_net._core.errors import ErrorCode, HandshakeError, KeyFileError
from blueprint_net._core.identity import Identity
from blueprint_net._ops.cli import OK, USAGE, main
from blueprint_net._ops.keyfiles import load_identity, load_or_create_identity
from blueprint_net._policy.bans import Ban, BanRegistry, Origin
from blueprint_net._policy.scores import Policy, PolicySettings
from tests.helpers import MakeNode, send_and_read, until
from tests.ops.test_operations import TWISTD, TwistdNode, _cli, _keygen, _status, _until

pytestmark = pytest.mark.timeout(60)


def _main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(list(argv))
    out, err = capsys.readouterr()
    assert isinstance(done.value.code, int)
    return done.value.code, out, err


# -- 9. numeric options are finite and in range ------------------------------


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["ban", "192.0.2.1", "--duration", "nan"], "--duration: wants a finite"),
        (["ban", "192.0.2.1", "--duration", "inf"], "--duration: wants a finite"),
        (["ban", "192.0.2.1", "--duration", "-100"], "--duration: must be more"),
        (["ban", "192.0.2.1", "--duration", "0"], "--duration: must be more"),
        (["ban", "192.0.2.1", "--duration", "1e300"], "at most"),
        (["ban", "192.0.2.1", "--duration", "soon"], "wants a number"),
        (["ping", "tcp:127.0.0.1:9", "--count", "0"], "--count: must be at least"),
        (["ping", "tcp:127.0.0.1:9", "--count", "1.5"], "--count: wants an integer"),
        (["ping", "tcp:127.0.0.1:9", "--timeout", "nan"], "--timeout: wants a fin"),
        (["request", "tcp:127.0.0.1:9", "p", "--timeout", "-1"], "--timeout: must"),
        (["request", "tcp:127.0.0.1:9", "p", "--timeout", "inf"], "--timeout: wants"),
    ],
)
def test_numeric_options_are_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], words: str
) -> None:
    database = tmp_path / "bans.sqlite"
    SqliteBanStore(database)._pool.close()  # type: ignore[union-attr]
    if argv[0] == "ban":
        argv = [*argv, "--database", str(database)]
    code, _, err = _main(capsys, *argv)
    assert code == USAGE
    assert words in err
    assert len(err.strip().splitlines()) == 1, err  # one line, no usage block
    with edit(database) as connection:
        assert stored(connection) == []  # nothing was banned


def test_a_sane_duration_is_still_taken_and_listed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = tmp_path / "bans.sqlite"
    SqliteBanStore(database)._pool.close()  # type: ignore[union-attr]
    db = ["--database", str(database)]
    assert _main(capsys, "ban", "192.0.2.1", "--duration", "90", *db)[0] == OK
    code, out, _ = _main(capsys, "bans", *db)
    assert code == OK and "192.0.2.1/32" in out and " s left" in out


@pytest.mark.parametrize("duration", [math.nan, math.inf, -math.inf, -100.0])
def test_the_registry_refuses_a_nonsense_duration(duration: float) -> None:
    registry = BanRegistry(Clock())
    with pytest.raises(ValueError, match="finite and not negative"):
        registry.ban("192.0.2.1", "x", duration=duration)
    assert registry.bans() == []


# -- 6, 7, 8: a real twistd node, attacked over loopback ------------------------


def _wait_for_listening(node: TwistdNode) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert node.process.poll() is None, node.process.stderr.read()
        try:
            socket.create_connection(("127.0.0.1", node.port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the node never listened")


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_a_twistd_node_survives_its_operators_mistakes(tmp_path: Path) -> None:
    """Item 6: a --peer naming the node itself is refused at start-up.
    Item 7: HTTP and TLS clients at the peer port get a hint, and neither they
    nor garbage from 127.0.0.1 lock the local command line out.
    Item 8: a flood of unverified Errors with long, control-laden text
    leaves a small, clean log with a summary line."""
    peer_id = await _keygen(tmp_path / "a")
    node = TwistdNode(tmp_path / "a", peer_id)

    own = subprocess.run(
        [
            TWISTD,
            "-n",
            "--pidfile=",
            "--logfile=-",
            "blueprint",
            "--data-dir",
            str(node.directory),
            "--listen",
            f"tcp:{node.port}:interface=127.0.0.1",
            "--status",
            "none",
            f"--peer={peer_id}@tcp:127.0.0.1:{node.port}",
            "--allow-plaintext",
        ],
        cwd=node.directory,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert own.returncode != 0
    assert f"--peer {peer_id}@tcp:127.0.0.1:{node.port}" in own.stderr
    assert "this node's own id" in own.stderr
    assert "Traceback" not in own.stderr

    node.start(plaintext=True)  # HTTP and TLS clients at a plain port
    try:
        _wait_for_listening(node)
        answer = send_and_read(node.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"\r\n\r\n" in answer.partition(b"HTTP/1.0 400 ")[2]
        assert b"blueprint-net peer port" in answer
        tls_hello = bytes.fromhex("160301002e010000")  # a ClientHello's start
        assert b"not TLS" in send_and_read(node.port, tls_hello + bytes(46))
        for _ in range(10):  # HTTP clients, then garbage: 10 x 20 points
            send_and_read(node.port, b"POST /x HTTP/1.0\r\n\r\n")
            send_and_read(node.port, b"\x00\x00\x00\x01\xee")

        evil = "\r\n[ERROR] forged line " + "A" * 4000
        error_frame = framing.frame(wire.Error(int(ErrorCode.GOING_AWAY), evil))
        for _ in range(300):
            send_and_read(node.port, error_frame)

        code, out, err = await _cli(
            "ping",
            "--count",
            "1",
            "--allow-plaintext",
            f"tcp:127.0.0.1:{node.port}",
            cwd=node.directory,
        )
        assert code == 0, out + err  # loopback was never banned
        status = await _until(lambda: _status(node), "the status page")
        assert status["bans"] == 0
        counters = status["counters"]
        assert counters["wrong_protocol.http"] == 11
        assert counters["wrong_protocol.tls"] == 1
    finally:
        node.terminate()
    log = node.log.read_text(encoding="utf-8", errors="replace")
    assert "forged line" not in log.replace("\\x0d\\x0a[ERROR] forged line", "")
    assert "\r" not in log
    assert "A" * 201 not in log  # truncated to 200 characters
    assert len(log) < 40_000, len(log)  # 300 x 4 KB was 1.3 MB of log
    assert "failed handshakes in the last 60 s" in log
    assert "GOING_AWAY 300" in log or "UNEXPECTED_MESSAGE" in log


@pytest_twisted.ensureDeferred
async def test_dialing_ourselves_is_dropped_and_never_scored(
    alice: Identity, make_node: MakeNode
) -> None:
    """Item 6 at run time: even with loopback bannable, three dials of our
    own address (the old threshold: 3 x 50 points) ban nothing."""
    policy = Policy(BanRegistry(reactor), PolicySettings(ban_loopback=True))
    a = make_node(alice, policy=policy)
    port = (await a.listen("tcp:0:interface=127.0.0.1")).getHost().port  # type: ignore[attr-defined]
    for _ in range(3):
        with pytest.raises(HandshakeError):
            await a.connect(f"tcp:127.0.0.1:{port}")
    await until(lambda: a.counters["handshakes.failed.SELF_CONNECTION"] >= 3)
    assert a.bans.bans() == [] and a.counters["misbehaviour"] == 0
    assert policy.score("127.0.0.1") == 0.0


# -- 5. operator bans apply through a flood of automatic bans ------------------


@pytest_twisted.ensureDeferred
async def test_an_operator_ban_is_read_while_automatic_bans_are_written(
    tmp_path: Path,
) -> None:
    """The writer thread never idles during a flood: a refresh must still
    read the operator's change, and must not undo the automatic bans written
    meanwhile."""
    path = tmp_path / "bans.sqlite"
    registry = BanRegistry(reactor, SqliteBanStore(path))
    database = registry.store
    assert isinstance(database, SqliteBanStore)
    operator = Identity(bytes(range(32))).peer_id
    flood = (f"10.{i // 256}.{i % 256}.1" for i in range(10_000))

    def automatic(count: int) -> None:
        for _ in range(count):
            registry.ban(next(flood), "flood", duration=60, origin=Origin.AUTOMATIC)

    try:
        automatic(50)
        await database.refresh()
        with edit(path) as other:  # `blueprint-net ban`, from another process
            store(other, Ban(operator, "operator", time.time(), Origin.MANUAL))
        automatic(50)  # a write is in flight...
        assert database._writing is not None
        await database.refresh()  # ...and the refresh reads anyway
        assert registry.peer_ban(operator) is not None
        automatic(50)
        with edit(path) as other:
            assert remove(other, operator)
        automatic(50)
        await database.refresh()
        assert registry.peer_ban(operator) is None
        # Nothing written here meanwhile was undone by the reloads.
        assert len(registry.bans()) == 200
        await database.flush()
        with edit(path) as other:
            assert len(stored(other)) == 200
    finally:
        await database.close()


def test_automatic_bans_in_one_network_coalesce() -> None:
    clock = Clock()
    clock.advance(1_000_000)
    policy = Policy(BanRegistry(clock), PolicySettings(ban_threshold=10))
    for i in range(7):  # seven /64s of one /48: seven bans
        policy.misbehaved(f"2001:db8:1:{i}::1", None, ErrorCode.TRUNCATED)
    assert len(policy.bans.bans()) == 7
    earned = policy.misbehaved("2001:db8:1:7::1", None, ErrorCode.TRUNCATED)
    assert [str(b.target) for b in earned] == ["2001:db8:1::/48"]
    assert [str(b.target) for b in policy.bans.bans()] == ["2001:db8:1::/48"]
    assert policy.bans.address_ban("2001:db8:1:ffff::9") is not None
    assert policy.bans.address_ban("2001:db8:2::1") is None
    for i in range(8):  # IPv4: eight hosts of one /24
        policy.misbehaved(f"198.51.100.{i}", None, ErrorCode.TRUNCATED)
    assert "198.51.100.0/24" in {str(b.target) for b in policy.bans.bans()}
    assert len(policy.bans.bans()) == 2


def test_coalescing_spares_an_allow_listed_network() -> None:
    policy = Policy(
        BanRegistry(Clock()),
        PolicySettings(ban_threshold=10),
        allowed_networks=["198.51.100.200/32"],
    )
    for i in range(20):
        policy.misbehaved(f"198.51.100.{i}", None, ErrorCode.TRUNCATED)
    assert len(policy.bans.bans()) == 20  # one each, never the /24


# -- 10. file hygiene ----------------------------------------------------------


def test_a_foreign_sqlite_file_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "bans.sqlite"
    with sqlite3.connect(path) as other:
        other.execute("CREATE TABLE accounts (name TEXT)")
    before = path.read_bytes()
    with pytest.raises(BanDatabaseError, match="not a blueprint-net ban database"):
        SqliteBanStore(path)
    with (
        pytest.raises(BanDatabaseError, match="not a blueprint-net ban database"),
        edit(path),
    ):
        pass
    assert path.read_bytes() == before
    with sqlite3.connect(path) as other:
        other.execute("PRAGMA user_version = 1")  # the right number, not ours
    with pytest.raises(BanDatabaseError, match="not a blueprint-net ban database"):
        SqliteBanStore(path)


def test_a_file_written_before_the_stamp_is_adopted_and_stamped(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bans.sqlite"
    with sqlite3.connect(path) as old:  # what this project wrote until now
        old.execute(_SCHEMA)
        old.execute("PRAGMA user_version = 1")
        old.execute(
            "INSERT INTO bans VALUES ('network', '192.0.2.0/24', 'old', 0, 'manual',"
            " NULL)"
        )
    database = SqliteBanStore(path)
    try:
        assert [str(b.target) for b in database.attach(lambda bans: 0)] == [
            "192.0.2.0/24"
        ]
    finally:
        database._pool.close()  # type: ignore[union-attr]
    with sqlite3.connect(path) as stamped:
        assert stamped.execute("PRAGMA application_id").fetchone()[0] == 0x62706E74
    SqliteBanStore(path)._pool.close()  # type: ignore[union-attr]


def test_a_key_file_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "node.key"
    load_or_create_identity(key)
    os.chown(key, os.geteuid() + 4242, -1)
    with pytest.raises(KeyFileError, match="owned by uid"):
        load_identity(key)
    os.chown(key, os.geteuid(), -1)
    load_identity(key)


def test_a_data_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o777)
    result = subprocess.run(
        [TWISTD, "-n", "--pidfile=", "blueprint", "--data-dir", str(data)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert f"--data-dir {data}: writable by group or others (mode 0777)" in (
        result.stderr + result.stdout
    )
    assert "Traceback" not in result.stderr + result.stdout
    assert not (data / "node.key").exists()  # nothing written into it
