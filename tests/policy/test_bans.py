"""The ban registry: lookups, expiry, the bound on automatic bans, and a real
SQLite file across restarts, kills and damage."""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogLevel, globalLogPublisher

from blueprint_net._adapters.banstore import (
    BanDatabaseError,
    SqliteBanStore,
    edit,
    remove,
    store,
    stored,
)
from blueprint_net._core.identity import Identity
from blueprint_net._policy.addresses import parse_target
from blueprint_net._policy.bans import Ban, BanRegistry, Origin
from blueprint_net._policy.scores import Policy
from tests.helpers import MakeNode, until

PEER = Identity(bytes(range(32))).peer_id
OTHER = Identity(bytes(range(32, 64))).peer_id


def test_peer_ban_applies_to_that_id_only() -> None:
    registry = BanRegistry(Clock())
    registry.ban(PEER, "spam")
    ban = registry.peer_ban(PEER)
    assert ban is not None and ban.reason == "spam" and ban.origin is Origin.MANUAL
    assert registry.peer_ban(OTHER) is None


@pytest.mark.parametrize(
    ("banned", "inside", "outside"),
    [
        ("192.0.2.7", ["192.0.2.7", "::ffff:192.0.2.7"], ["192.0.2.8", "10.0.0.1"]),
        ("198.51.100.0/24", ["198.51.100.0", "198.51.100.255"], ["198.51.101.0"]),
        ("10.0.0.0/8", ["10.255.0.1"], ["11.0.0.1", "::1"]),
        ("2001:db8::1", ["2001:db8::1"], ["2001:db8::2"]),
        ("2001:db8:aa00::/40", ["2001:db8:aaff::1"], ["2001:db8:ab00::1"]),
        ("::ffff:203.0.113.9", ["203.0.113.9"], ["203.0.113.10"]),
    ],
)
def test_address_and_network_bans(
    banned: str, inside: list[str], outside: list[str]
) -> None:
    registry = BanRegistry(Clock())
    registry.ban(banned, "abuse")
    for host in inside:
        assert registry.address_ban(host) is not None, host
    for host in outside:
        assert registry.address_ban(host) is None, host


def test_non_ip_hosts_are_never_banned() -> None:
    registry = BanRegistry(Clock())
    registry.ban("0.0.0.0/0", "everyone")
    assert registry.address_ban("/run/node.sock") is None


def test_targets_are_parsed_with_clear_errors() -> None:
    assert parse_target(str(PEER)) == PEER
    with pytest.raises(ValueError, match="neither a peer id nor"):
        parse_target("not-a-host")
    with pytest.raises(ValueError, match="invalid peer id"):
        parse_target("12D3KooWnope")


def test_expiry_on_a_fake_clock() -> None:
    clock = Clock()
    registry = BanRegistry(clock)
    registry.ban(PEER, "cool off", duration=60)
    registry.ban("192.0.2.0/24", "cool off", duration=30)
    clock.advance(29.999)
    assert registry.address_ban("192.0.2.1") is not None
    clock.advance(0.001)  # the moment it expires, with nothing to purge first
    assert registry.address_ban("192.0.2.1") is None
    assert registry.peer_ban(PEER) is not None
    clock.advance(30)
    assert registry.peer_ban(PEER) is None
    assert registry.bans() == []
    assert registry.purge() == 2


def test_unban_and_replace() -> None:
    registry = BanRegistry(Clock())
    registry.ban(PEER, "first")
    registry.ban(PEER, "second", duration=10)
    assert [b.reason for b in registry.bans()] == ["second"]
    assert registry.unban(str(PEER)) is True
    assert registry.unban(PEER) is False
    assert registry.peer_ban(PEER) is None


def test_automatic_bans_are_bounded_oldest_first_never_manual() -> None:
    clock = Clock()
    registry = BanRegistry(clock, max_automatic=3)
    registry.ban("192.0.2.1", "operator", origin=Origin.MANUAL)
    for i in range(5):
        clock.advance(1)
        registry.ban(f"198.51.100.{i}", "score", origin=Origin.AUTOMATIC)
    hosts = [str(b.target) for b in registry.bans()]
    assert hosts == ["192.0.2.1/32", *[f"198.51.100.{i}/32" for i in (2, 3, 4)]]


def test_new_bans_are_announced() -> None:
    registry = BanRegistry(Clock())
    heard: list[Ban] = []
    registry.on_ban(heard.append)
    registry.ban(PEER, "x")
    assert [b.target for b in heard] == [PEER]


# -- a real SQLite file ---------------------------------------------------------


def _persistent(path: Path, clock: Any = reactor) -> tuple[BanRegistry, SqliteBanStore]:
    """A registry whose bans live in the SQLite file at ``path``."""
    database = SqliteBanStore(path)
    return BanRegistry(clock, database), database


@pytest_twisted.ensureDeferred
async def test_bans_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "bans.sqlite"
    first, first_database = _persistent(path)
    first.ban(PEER, "spam")
    first.ban("2001:db8::/48", "abuse", duration=3600, origin=Origin.AUTOMATIC)
    first.ban("192.0.2.1", "lifted")
    first.unban("192.0.2.1")
    await first_database.close()
    second, second_database = _persistent(path)
    try:
        bans = {str(b.target): b for b in second.bans()}
        assert set(bans) == {str(PEER), "2001:db8::/48"}
        assert bans["2001:db8::/48"].origin is Origin.AUTOMATIC
        assert bans["2001:db8::/48"].expires is not None
        assert second.address_ban("2001:db8:0:1::1") is not None
        assert second.address_ban("192.0.2.1") is None
    finally:
        await second_database.close()


def test_a_damaged_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bans.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(BanDatabaseError, match="not a usable ban database"):
        SqliteBanStore(path)


def test_a_database_of_another_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bans.sqlite"
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA user_version = 7")
    with pytest.raises(BanDatabaseError, match="schema version 7"):
        SqliteBanStore(path)


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BanDatabaseError, match="not a regular file"):
        SqliteBanStore(tmp_path)


def test_a_bad_row_is_refused_not_skipped(tmp_path: Path) -> None:
    path = tmp_path / "bans.sqlite"
    SqliteBanStore(path)._pool.close()  # type: ignore[union-attr]
    with sqlite3.connect(path) as connection:
        connection.execute(
            "INSERT INTO bans VALUES ('network', 'nonsense', 'r', 0, 'manual', NULL)"
        )
    with pytest.raises(BanDatabaseError, match="bad ban row 'nonsense'"):
        SqliteBanStore(path)


WRITER = textwrap.dedent(
    """
    import sys
    from twisted.internet import defer, task
    from blueprint_net._adapters.banstore import SqliteBanStore
    from blueprint_net._policy.bans import BanRegistry

    async def main(reactor):
        database = SqliteBanStore(sys.argv[1])
        registry = BanRegistry(reactor, database)
        for i in range(100_000):
            registry.ban(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", "load")
            await database.flush()
            print(i + 1, flush=True)  # committed: it must survive a kill

    task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
    """
)


def test_a_writer_killed_mid_stream_loses_no_committed_ban(tmp_path: Path) -> None:
    path = tmp_path / "bans.sqlite"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None
    committed = 0
    for line in writer.stdout:
        committed = int(line)
        if committed >= 200:
            break
    writer.send_signal(signal.SIGKILL)  # in the middle of further writes
    writer.wait(timeout=10)
    writer.stdout.close()
    registry, database = _persistent(path, Clock())  # opens cleanly: no damage
    database._pool.close()  # type: ignore[union-attr]
    stored = registry._every()
    assert len(stored) >= committed
    for i in range(committed):
        assert registry.address_ban(f"10.0.{i // 256}.{i % 256}") is not None


@pytest_twisted.ensureDeferred
async def test_changes_by_another_process_are_taken_in(tmp_path: Path) -> None:
    path = tmp_path / "bans.sqlite"
    registry, database = _persistent(path)
    heard: list[Ban] = []
    registry.on_ban(heard.append)
    try:
        assert await database.refresh() == 0  # first read: nothing stored
        with edit(path) as other:  # what `blueprint-net ban` does
            store(other, Ban(PEER, "from the CLI", 0.0, Origin.MANUAL))
        assert await database.refresh() == 1
        assert registry.peer_ban(PEER) is not None
        assert [b.reason for b in heard] == ["from the CLI"]
        assert await database.refresh() == 0  # nothing new
        with edit(path) as other:
            assert remove(other, PEER)
        assert await database.refresh() == 1
        assert registry.peer_ban(PEER) is None
    finally:
        await database.close()


@pytest_twisted.ensureDeferred
async def test_a_refresh_never_undoes_a_local_ban(tmp_path: Path) -> None:
    path = tmp_path / "bans.sqlite"
    registry, database = _persistent(path)
    try:
        await database.refresh()
        with edit(path) as other:  # another process changes the file...
            store(other, Ban(OTHER, "cli", 0.0, Origin.MANUAL))
        refreshing = database.refresh()
        registry.ban(PEER, "local, while the file is being read")
        await refreshing
        await database.flush()
        await database.refresh()  # ...and is taken in on a later round
        assert registry.peer_ban(PEER) is not None
        assert registry.peer_ban(OTHER) is not None
    finally:
        await database.close()


def test_editing_a_missing_or_damaged_database_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.sqlite"
    with pytest.raises(BanDatabaseError, match="no such ban"), edit(missing):
        pass
    damaged = tmp_path / "bad.sqlite"
    damaged.write_bytes(b"garbage" * 1000)
    with pytest.raises(BanDatabaseError, match="not a usable ban"), edit(damaged):
        pass


# -- the file made read-only while the node runs --------------------------------


def _immutable(paths: list[Path], on: bool) -> bool:
    """``chattr +i``: unlike ``chmod`` it stops writes through descriptors
    already open (SQLite then fails with an I/O error), and root too."""
    flag = "+i" if on else "-i"
    results = [
        subprocess.run(["chattr", flag, str(p)], capture_output=True, check=False)
        for p in paths
    ]
    return all(r.returncode == 0 for r in results)


@pytest.fixture
def errors() -> Iterator[list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []

    def record(event: dict[str, Any]) -> None:
        if (
            event.get("log_namespace")
            == "blueprint_net._adapters.banstore.SqliteBanStore"
        ):
            events.append(event)

    observer = cast(ILogObserver, record)
    globalLogPublisher.addObserver(observer)
    yield events
    globalLogPublisher.removeObserver(observer)


@pytest_twisted.async_yield_fixture
async def read_only(
    tmp_path: Path,
) -> AsyncIterator[tuple[BanRegistry, SqliteBanStore]]:
    """A registry whose file took one ban, then was made immutable under it
    (writable again, and the file closed, at teardown)."""
    if shutil.which("chattr") is None:
        pytest.skip("needs chattr")
    path = tmp_path / "bans.sqlite"
    registry, database = _persistent(path)
    registry.ban("192.0.2.1", "before")
    await database.flush()  # the file and its write-ahead log now exist
    files = [path, path.with_name(path.name + "-wal")]
    try:
        if not _immutable(files, True):
            pytest.skip("needs chattr +i: root, on a filesystem with the flag")
        yield registry, database
    finally:
        _immutable(files, False)
        await database.close()


def _writable(database: SqliteBanStore) -> bool:
    assert database.path is not None
    path = database.path
    return _immutable([path, path.with_name(path.name + "-wal")], False)


@pytest.mark.usefixtures("clean_reactor")
@pytest_twisted.ensureDeferred
async def test_a_database_made_read_only_while_running(
    read_only: tuple[BanRegistry, SqliteBanStore],
    make_node: MakeNode,
    alice: Identity,
    bob: Identity,
    carol: Identity,
    errors: list[dict[str, Any]],
) -> None:
    registry, database = read_only
    node = make_node(
        bob, handlers={"echo": lambda r: r.payload}, policy=Policy(registry)
    )
    honest, banned = make_node(alice), make_node(carol)
    listening = await node.listen("tcp:0:interface=127.0.0.1")
    port = listening.getHost().port  # type: ignore[attr-defined]
    for client in (honest, banned):
        await client.connect(f"tcp:127.0.0.1:{port}", peer_id=bob.peer_id)

    node.ban(carol.peer_id, "while read-only")
    await database.flush()
    assert registry.peer_ban(carol.peer_id) is not None  # applies in memory
    await until(lambda: [p.peer_id for p in node.peers] == [alice.peer_id])
    assert registry.unsaved == 1
    failed = [e for e in errors if e["log_level"] == LogLevel.error]
    assert len(failed) == 1 and "cannot save bans" in failed[0]["log_format"]
    assert failed[0]["error"]  # SQLite's own words, no traceback
    answer = await honest.request(bob.peer_id, "echo", b"still served")
    assert answer.data == b"still served"

    node.ban(carol.peer_id, "replaced while read-only")
    await database.refresh()  # a retry while still read-only...
    await database.flush()
    assert registry.unsaved == 1  # the last change to each target only
    assert len([e for e in errors if e["log_level"] == LogLevel.error]) == 1

    assert _writable(database)
    await database.refresh()  # ...and one once writable again
    await database.flush()
    assert registry.unsaved == 0
    assert any("writable again" in e["log_format"] for e in errors)
    assert database.path is not None
    with edit(database.path) as connection:
        saved = {str(b.target): b.reason for b in stored(connection)}
    assert saved == {
        "192.0.2.1/32": "before",
        str(carol.peer_id): "replaced while read-only",
    }


@pytest.mark.usefixtures("clean_reactor")
@pytest_twisted.ensureDeferred
async def test_what_could_never_be_saved_is_logged_at_close(
    read_only: tuple[BanRegistry, SqliteBanStore], errors: list[dict[str, Any]]
) -> None:
    registry, database = read_only
    registry.ban("192.0.2.2", "lost")
    await database.close()  # one last try, then a clear record of the loss
    lost = [e for e in errors if "never saved" in e["log_format"]]
    assert len(lost) == 1 and lost[0]["unsaved"] == 1
