"""Banned peers and networks: checked in memory, persisted in SQLite.

The original system kept a ban list it never enforced on connections and whose
check ignored expiry.  Here every check is against the clock (a ban stops
applying the moment it expires, with nothing to purge first), bans by address
cover single hosts and CIDR networks of either family, and the list survives
a restart.

Checks never touch the disk: the registry holds every ban in memory and
writes through to SQLite on a worker thread (``twisted.enterprise.adbapi``),
so a commit's ``fsync`` never stalls the reactor.  The database runs in WAL
mode with ``synchronous=FULL``: a process killed in the middle of a write loses
at most that write, never an earlier ban.
"""

from __future__ import annotations

import contextlib
import enum
import ipaddress
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Callable, Optional, Union

import attrs
from twisted.enterprise import adbapi
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from blueprint_net._core.errors import ConfigurationError
from blueprint_net._core.identity import PeerId

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
Target = Union[PeerId, Network]

#: Automatic bans kept at most; past it the oldest automatic ban goes first
#: (never a manual one).  Bitcoin Core's unbounded list was a DoS bug.
DEFAULT_MAX_AUTOMATIC = 10_000
#: Expired bans are dropped from memory and disk at most this often (s).
PURGE_INTERVAL = 60.0

_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS bans (
    kind TEXT NOT NULL CHECK (kind IN ('peer', 'network')),
    target TEXT NOT NULL,
    reason TEXT NOT NULL,
    created REAL NOT NULL,
    origin TEXT NOT NULL CHECK (origin IN ('manual', 'automatic')),
    expires REAL,
    PRIMARY KEY (kind, target)
)
"""


class Origin(enum.Enum):
    MANUAL = "manual"
    AUTOMATIC = "automatic"


class BanDatabaseError(ConfigurationError):
    """The ban database cannot be used; the message says why in one line."""


@attrs.frozen
class Ban:
    target: Target
    reason: str
    created: float
    origin: Origin
    #: When the ban stops applying (seconds since the epoch); None: never.
    expires: Optional[float] = None

    def active(self, now: float) -> bool:
        return self.expires is None or now < self.expires

    @property
    def kind(self) -> str:
        return "peer" if isinstance(self.target, PeerId) else "network"


def parse_network(text: str) -> Network:
    """An address or CIDR network; a bare address is a /32 or /128.

    IPv4-mapped IPv6 addresses are taken as the IPv4 address they carry, so
    ``::ffff:192.0.2.1`` cannot slip past a ban on ``192.0.2.1``.
    """
    network = ipaddress.ip_network(text.strip(), strict=False)
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


def parse_address(host: str) -> Union[ipaddress.IPv4Address, ipaddress.IPv6Address]:
    """A connection's host; IPv4-mapped IPv6 becomes IPv4, a scope is dropped."""
    address = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def parse_target(text: str) -> Target:
    """A peer id (``12D3KooW...``) or an address/network; ``ValueError``."""
    text = text.strip()
    if text.startswith("12D3KooW"):
        return PeerId.from_string(text)
    try:
        return parse_network(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a peer id nor an IP address or network"
        ) from None


class BanRegistry:
    """Every ban, with lookups by peer id and by address.

    ``path`` None (or ``":memory:"``) keeps bans in memory only; otherwise
    they are loaded from that SQLite file now, and every change is written
    to it.  ``on_ban`` callbacks hear of each new ban (the node disconnects
    whoever it covers).
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        path: Union[str, Path, None] = None,
        *,
        max_automatic: int = DEFAULT_MAX_AUTOMATIC,
    ) -> None:
        self.clock = clock
        self.max_automatic = max_automatic
        self._peers: dict[PeerId, Ban] = {}
        #: (version, prefix length) -> network address -> ban.
        self._networks: dict[tuple[int, int], dict[int, Ban]] = {}
        self._callbacks: list[Callable[[Ban], Any]] = []
        self._queued: list[tuple[Callable[[Any, Ban], None], Ban]] = []
        self._writing: Optional[defer.Deferred[Any]] = None
        self._failing = False  # the last write failed: retry on refresh()
        self._in_flight = 0  # changes in the transaction being written
        self._flushed: list[defer.Deferred[None]] = []
        self._data_version: Optional[int] = None
        self._changes = 0  # local changes, so a reload never undoes one
        self._pool: Optional[adbapi.ConnectionPool] = None
        self._purged = float("-inf")
        self.path = None if path is None or path == ":memory:" else Path(path)
        if self.path is not None:
            for ban in _load(self.path):
                self._index(ban)
            self._pool = adbapi.ConnectionPool(  # type: ignore[no-untyped-call]
                "sqlite3",
                str(self.path),
                check_same_thread=False,
                cp_min=1,
                cp_max=1,  # one writer thread: writes land in order
                cp_openfun=_configure,
            )

    # -- queries ------------------------------------------------------------

    def peer_ban(self, peer_id: PeerId) -> Optional[Ban]:
        """The ban on this peer id, if one applies now."""
        ban = self._peers.get(peer_id)
        return ban if ban is not None and ban.active(self.clock.seconds()) else None

    def address_ban(self, host: str) -> Optional[Ban]:
        """The ban covering this address, if one applies now."""
        if not self._networks:
            return None  # the common case: no address bans to parse for
        try:
            address = parse_address(host)
        except ValueError:
            return None  # not an IP address (a UNIX socket, say)
        value, version = int(address), address.version
        bits = address.max_prefixlen
        now = self.clock.seconds()
        for (family, prefix), bans in self._networks.items():
            if family == version:
                ban = bans.get(value >> (bits - prefix) << (bits - prefix))
                if ban is not None and ban.active(now):
                    return ban
        return None

    def bans(self) -> list[Ban]:
        """Every ban that applies now, oldest first."""
        now = self.clock.seconds()
        active = (ban for ban in self._every() if ban.active(now))
        return sorted(active, key=lambda ban: ban.created)

    def on_ban(self, callback: Callable[[Ban], Any]) -> None:
        self._callbacks.append(callback)

    # -- changes ------------------------------------------------------------

    def ban(
        self,
        target: Union[Target, str],
        reason: str,
        *,
        duration: Optional[float] = None,
        origin: Origin = Origin.MANUAL,
    ) -> Ban:
        """Ban a peer id or network (a string is parsed) now, for
        ``duration`` seconds or for good; replaces any ban on that target."""
        if isinstance(target, str):
            target = parse_target(target)
        elif not isinstance(target, PeerId):
            target = parse_network(str(target))
        now = self.clock.seconds()
        ban = Ban(
            target, reason, now, origin, None if duration is None else now + duration
        )
        if now - self._purged >= PURGE_INTERVAL:
            self.purge()
        if origin is Origin.AUTOMATIC:
            self._bound_automatic()
        self._index(ban)
        self._write(_put, ban)
        self._log.info(
            "banned {kind} {target} ({origin}): {reason}",
            kind=ban.kind,
            target=str(target),
            origin=origin.value,
            reason=reason,
            expires=ban.expires,
        )
        for callback in self._callbacks:
            callback(ban)
        return ban

    def unban(self, target: Union[Target, str]) -> bool:
        """Lift the ban on exactly this target; whether there was one."""
        if isinstance(target, str):
            target = parse_target(target)
        ban = self._unindex(target)
        if ban is None:
            return False
        self._write(_delete, ban)
        self._log.info("unbanned {target}", target=str(target))
        return True

    def purge(self) -> int:
        """Forget expired bans, here and on disk; how many.  (They stopped
        applying when they expired; this only reclaims their space.)"""
        self._purged = now = self.clock.seconds()
        expired = [ban for ban in self._every() if not ban.active(now)]
        for ban in expired:
            self.unban(ban.target)
        return len(expired)

    def _bound_automatic(self) -> None:
        automatic = [b for b in self.bans() if b.origin is Origin.AUTOMATIC]
        for ban in automatic[: max(0, len(automatic) - self.max_automatic + 1)]:
            self.unban(ban.target)  # oldest first

    def _every(self) -> list[Ban]:
        every = [*self._peers.values()]
        for bans in self._networks.values():
            every.extend(bans.values())
        return every

    def _index(self, ban: Ban) -> None:
        target = ban.target
        if isinstance(target, PeerId):
            self._peers[target] = ban
        else:
            key = (target.version, target.prefixlen)
            self._networks.setdefault(key, {})[int(target.network_address)] = ban

    def _unindex(self, target: Target) -> Optional[Ban]:
        if isinstance(target, PeerId):
            return self._peers.pop(target, None)
        target = parse_network(str(target))
        key = (target.version, target.prefixlen)
        bans = self._networks.get(key, {})
        ban = bans.pop(int(target.network_address), None)
        if not bans:
            self._networks.pop(key, None)
        return ban

    # -- persistence --------------------------------------------------------

    def _write(self, operation: Callable[[Any, Ban], None], ban: Ban) -> None:
        if self._pool is None:
            return
        self._changes += 1
        self._queued.append((operation, ban))
        if self._writing is None and not self._failing:
            self._commit_queued()

    def _commit_queued(self) -> None:
        """Group commit: everything queued goes in one transaction; what
        arrives meanwhile waits for the next.  Fewer hand-offs to the writer
        thread and fewer ``fsync`` calls than a transaction per ban."""
        assert self._pool is not None
        batch, self._queued = self._queued, []
        self._in_flight = len(batch)
        writing = self._pool.runInteraction(_apply, batch)  # type: ignore[no-untyped-call]
        self._writing = writing
        writing.addCallbacks(self._saved, self._save_failed, errbackArgs=(batch,))
        writing.addBoth(self._written)

    def _saved(self, _: object) -> bool:
        if self._failing:
            self._failing = False
            self._log.info(
                "ban database {path} is writable again; unsaved changes saved",
                path=str(self.path),
            )
        return True

    def _save_failed(
        self, failure: Any, batch: list[tuple[Callable[[Any, Ban], None], Ban]]
    ) -> bool:
        """The transaction rolled back: the bans still apply in memory, and
        the batch goes back to the head of the queue, to be retried at the
        next :meth:`refresh` (the service calls it every few seconds).  One
        error per outage, not one per retry.  Only the last change to each
        target is kept (each is a whole-row put or delete), so the queue of
        an outage is bounded by the bans there are, not by how long it lasts."""
        latest = {
            (ban.kind, str(ban.target)): (op, ban) for op, ban in batch + self._queued
        }
        self._queued = list(latest.values())
        if not self._failing:
            self._failing = True
            self._log.error(
                "cannot save bans to {path}: {error}; they apply in memory and"
                " saving is retried until the file is writable",
                path=str(self.path),
                error=str(failure.value),
                unsaved=len(self._queued),
            )
        return False

    def _written(self, saved: bool) -> None:
        self._writing, self._in_flight = None, 0
        if saved and self._queued:
            self._commit_queued()
        else:
            waiting, self._flushed = self._flushed, []
            for deferred in waiting:
                deferred.callback(None)

    @property
    def unsaved(self) -> int:
        """Changes not yet in the file (queued, or waiting for a retry)."""
        return len(self._queued) + self._in_flight

    def refresh(self) -> defer.Deferred[int]:
        """Take in changes another process (the ``blueprint-net ban``
        command) committed to the file; fires with how many bans changed.

        SQLite's ``data_version`` changes only for other connections'
        commits; both it and the reload run on the writer thread.
        """
        if self._pool is None or self._writing is not None:
            return defer.succeed(0)
        if self._queued:  # our own changes first (a retry); read next time
            self._commit_queued()
            return defer.succeed(0)
        read: defer.Deferred[tuple[int, Optional[list[Ban]]]]
        read = self._pool.runInteraction(_read_if_changed, self._data_version)  # type: ignore[no-untyped-call]
        return read.addCallback(self._apply_reload, self._changes)

    def _apply_reload(
        self, read: tuple[int, Optional[list[Ban]]], changes_then: int
    ) -> int:
        if self._changes != changes_then:
            # A ban changed here while the file was read: the rows may not
            # hold it yet.  Read again next time.
            self._data_version = None
            return 0
        self._data_version, stored = read
        if stored is None:
            return 0
        wanted = {(ban.kind, str(ban.target)): ban for ban in stored}
        have = {(ban.kind, str(ban.target)): ban for ban in self._every()}
        changed = 0
        for key, ban in have.items():
            if key not in wanted:
                self._unindex(ban.target)
                changed += 1
        for key, ban in wanted.items():
            if have.get(key) != ban:
                self._index(ban)
                changed += 1
                if ban.active(self.clock.seconds()):
                    for callback in self._callbacks:
                        callback(ban)
        if changed:
            self._log.info(
                "{changed} ban changes taken from {path}",
                changed=changed,
                path=str(self.path),
            )
        return changed

    def flush(self) -> defer.Deferred[None]:
        """Fires once the write in progress, if any, has been committed or
        has failed (what failed stays queued: see :attr:`unsaved`)."""
        if self._writing is None:
            return defer.succeed(None)
        flushed: defer.Deferred[None] = defer.Deferred()
        self._flushed.append(flushed)
        return flushed

    def close(self) -> defer.Deferred[None]:
        """Wait for pending writes (one last try for any that failed), then
        close the database; what still could not be saved is logged.  Once
        closed, closing again does nothing."""
        if self._pool is None:
            return defer.succeed(None)
        if self._writing is None and self._queued:
            self._commit_queued()

        def closed(_: object) -> None:
            if self._queued:
                self._log.error(
                    "{unsaved} ban changes were never saved to {path}",
                    unsaved=len(self._queued),
                    path=str(self.path),
                )
            if self._pool is not None:  # not closed meanwhile by another call
                self._pool.close()  # type: ignore[no-untyped-call]
                self._pool = None

        return self.flush().addCallback(closed)


# -- SQLite, on the writer thread (and once at start-up) ----------------------


def _configure(connection: sqlite3.Connection) -> None:
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("PRAGMA busy_timeout=5000")


def _read_if_changed(
    cursor: Any, known: Optional[int]
) -> tuple[int, Optional[list[Ban]]]:
    version: int = cursor.execute("PRAGMA data_version").fetchone()[0]
    if version == known:
        return version, None
    rows = cursor.execute(
        "SELECT kind, target, reason, created, origin, expires FROM bans"
    ).fetchall()
    return version, [_row(*row) for row in rows]


def _apply(cursor: Any, batch: list[tuple[Callable[[Any, Ban], None], Ban]]) -> None:
    """One transaction (adbapi commits it when this returns)."""
    for operation, ban in batch:
        operation(cursor, ban)


def _put(cursor: Any, ban: Ban) -> None:
    cursor.execute(
        "INSERT OR REPLACE INTO bans VALUES (?, ?, ?, ?, ?, ?)",
        (
            ban.kind,
            str(ban.target),
            ban.reason,
            ban.created,
            ban.origin.value,
            ban.expires,
        ),
    )


def _delete(cursor: Any, ban: Ban) -> None:
    cursor.execute(
        "DELETE FROM bans WHERE kind = ? AND target = ?", (ban.kind, str(ban.target))
    )


def _load(path: Path) -> Iterable[Ban]:
    """Open (creating if need be) and read the database; any fault is a
    :class:`BanDatabaseError`, never an empty list."""
    if path.exists() and not path.is_file():
        raise BanDatabaseError(f"{path}: not a regular file")
    try:
        connection = sqlite3.connect(str(path))
    except sqlite3.Error as error:
        raise BanDatabaseError(f"{path}: cannot open: {error}") from None
    try:
        _configure(connection)
        check = connection.execute("PRAGMA quick_check").fetchone()
        if check != ("ok",):
            raise BanDatabaseError(f"{path}: the database is damaged ({check[0]})")
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, _SCHEMA_VERSION):
            raise BanDatabaseError(
                f"{path}: schema version {version}; this version reads"
                f" {_SCHEMA_VERSION}"
            )
        with connection:
            connection.execute(_SCHEMA)
            connection.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
        rows = connection.execute(
            "SELECT kind, target, reason, created, origin, expires FROM bans"
        ).fetchall()
    except sqlite3.DatabaseError as error:
        raise BanDatabaseError(f"{path}: not a usable ban database ({error})") from None
    finally:
        connection.close()
    bans = []
    for row in rows:
        try:
            bans.append(_row(*row))
        except ValueError as error:
            raise BanDatabaseError(f"{path}: bad ban row {row[1]!r}: {error}") from None
    return bans


def _row(
    kind: str, target: str, reason: str, created: float, origin: str, expires: Any
) -> Ban:
    parsed: Target = (
        PeerId.from_string(target) if kind == "peer" else parse_network(target)
    )
    return Ban(parsed, reason, created, Origin(origin), expires)


# -- for another process (the command line), synchronously ---------------------


@contextlib.contextmanager
def edit(path: Union[str, Path]) -> Iterator[sqlite3.Connection]:
    """One transaction on an existing ban database (committed at the end of
    the ``with`` block, then closed); safe while a node has it open (WAL)."""
    path = Path(path)
    if not path.is_file():
        raise BanDatabaseError(f"{path}: no such ban database")
    list(_load(path))  # the same checks as at a node's start-up
    connection = sqlite3.connect(str(path))
    try:
        _configure(connection)
        with connection:
            yield connection
    finally:
        connection.close()


def store(connection: sqlite3.Connection, ban: Ban) -> None:
    _put(connection.cursor(), ban)


def remove(connection: sqlite3.Connection, target: Target) -> bool:
    kind = "peer" if isinstance(target, PeerId) else "network"
    cursor = connection.execute(
        "DELETE FROM bans WHERE kind = ? AND target = ?", (kind, str(target))
    )
    return bool(cursor.rowcount)


def stored(connection: sqlite3.Connection) -> list[Ban]:
    rows = connection.execute(
        "SELECT kind, target, reason, created, origin, expires FROM bans"
    ).fetchall()
    return sorted((_row(*row) for row in rows), key=lambda ban: ban.created)
