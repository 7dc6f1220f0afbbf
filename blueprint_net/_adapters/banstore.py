"""Bans in an SQLite file, written without stalling the reactor; the
synchronous edits the command line makes to the same file; the log of bans.

Layer: adapters (Twisted).

:class:`SqliteBanStore` is the :class:`~blueprint_net._policy.bans.IBanStore`
of a running node: it writes through to SQLite on a worker thread
(``twisted.enterprise.adbapi``), so a commit's ``fsync`` never stalls the
reactor.  The database runs in WAL mode with ``synchronous=FULL``: a process
killed in the middle of a write loses at most that write, never an earlier ban.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Callable, Optional, Union

from twisted.enterprise import adbapi
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from blueprint_net._core.errors import ConfigurationError
from blueprint_net._core.identity import PeerId
from blueprint_net._policy.addresses import Target, parse_network
from blueprint_net._policy.bans import Ban, IBanStore, Origin, Reconcile

_SCHEMA_VERSION = 1
#: ``PRAGMA application_id``: "bpnt".  A file without it is ours only if it
#: is empty or holds our table at our version (written before the stamp).
_APPLICATION_ID = 0x62706E74
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
_SELECT = "SELECT kind, target, reason, created, origin, expires FROM bans"

#: A change for the writer thread: a put or a delete of one ban's row.
Change = tuple[Callable[[Any, Ban], None], Ban]

_log = Logger()


def log_change(ban: Ban, lifted: bool) -> None:
    """Record a ban made or lifted (a :meth:`BanRegistry.on_change` callback:
    the registry is pure, so the record is made here)."""
    if lifted:
        _log.info("unbanned {target}", target=str(ban.target))
    else:
        _log.info(
            "banned {kind} {target} ({origin}): {reason}",
            kind=ban.kind,
            target=str(ban.target),
            origin=ban.origin.value,
            reason=ban.reason,
            expires=ban.expires,
        )


class BanDatabaseError(ConfigurationError):
    """The ban database cannot be used; the message says why in one line."""


@implementer(IBanStore)
class SqliteBanStore:
    """A ban registry's bans in the SQLite file at ``path``: read (created if
    need be) now, every change written by one worker thread, in order.

    A damaged file, a file of another schema or a directory is a
    :class:`BanDatabaseError` now, never an empty list.
    """

    _log = Logger()

    def __init__(self, path: Union[str, Path]) -> None:
        self.path = Path(path)
        self._loaded: list[Ban] = _load(self.path)
        self._reconcile: Optional[Reconcile] = None
        self._queued: list[Change] = []
        self._writing: Optional[defer.Deferred[Any]] = None
        self._failing = False  # the last write failed: retry on refresh()
        self._in_flight = 0  # changes in the transaction being written
        self._batch: list[Change] = []  # ...and the changes themselves
        self._reading = False
        self._flushed: list[defer.Deferred[None]] = []
        self._data_version: Optional[int] = None
        self._changes = 0  # changes heard of, so a reload never undoes one
        self._pool: Optional[adbapi.ConnectionPool] = adbapi.ConnectionPool(  # type: ignore[no-untyped-call]
            "sqlite3",
            str(self.path),
            check_same_thread=False,
            cp_min=1,
            cp_max=1,  # one writer thread: writes land in order
            cp_openfun=_configure,
        )

    # -- IBanStore ------------------------------------------------------------

    def attach(self, reconcile: Reconcile) -> Iterable[Ban]:
        self._reconcile = reconcile
        loaded, self._loaded = self._loaded, []
        return loaded

    def put(self, ban: Ban) -> None:
        self._write(_put, ban)

    def delete(self, ban: Ban) -> None:
        self._write(_delete, ban)

    @property
    def unsaved(self) -> int:
        """Changes not yet in the file (queued, or waiting for a retry)."""
        return len(self._queued) + self._in_flight

    # -- writing --------------------------------------------------------------

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
        self._in_flight, self._batch = len(batch), batch
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

    def _save_failed(self, failure: Any, batch: list[Change]) -> bool:
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
        self._writing, self._in_flight, self._batch = None, 0, []
        if saved and self._queued:
            self._commit_queued()
        else:
            waiting, self._flushed = self._flushed, []
            for deferred in waiting:
                deferred.callback(None)

    # -- reading another process's changes ------------------------------------

    def refresh(self) -> defer.Deferred[int]:
        """Take in changes another process (the ``blueprint-net ban``
        command) committed to the file; fires with how many bans changed.
        Retries a failed write first, if there is one.

        SQLite's ``data_version`` changes only for other connections'
        commits; both it and the reload run on the writer thread, queued
        behind at most the one write in progress: however many automatic
        bans are being written, an operator's ban is read within one
        refresh.  Our own changes not yet committed when the rows were read
        are laid over them, so a reload never undoes one.
        """
        if self._pool is None or self._reading:
            return defer.succeed(0)
        if self._queued and self._writing is None:  # a retry of a failed write
            self._commit_queued()
        self._reading = True
        read: defer.Deferred[tuple[int, Optional[list[Ban]]]]
        read = self._pool.runInteraction(_read_if_changed, self._data_version)  # type: ignore[no-untyped-call]
        read.addBoth(self._read_over)
        return read.addCallback(self._apply_reload)

    def _read_over(self, result: Any) -> Any:
        self._reading = False
        return result

    def _apply_reload(self, read: tuple[int, Optional[list[Ban]]]) -> int:
        self._data_version, stored = read
        if stored is None or self._reconcile is None:
            return 0
        rows = {(ban.kind, str(ban.target)): ban for ban in stored}
        # Writes run in order on one thread: what is still in flight or
        # queued now was committed after the read, so the rows lack it.
        for operation, ban in self._batch + self._queued:
            key = (ban.kind, str(ban.target))
            if operation is _put:
                rows[key] = ban
            else:
                rows.pop(key, None)
        changed = self._reconcile(rows.values())
        if changed:
            self._log.info(
                "{changed} ban changes taken from {path}",
                changed=changed,
                path=str(self.path),
            )
        return changed

    # -- the end --------------------------------------------------------------

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
    return version, [_row(*row) for row in cursor.execute(_SELECT).fetchall()]


def _apply(cursor: Any, batch: list[Change]) -> None:
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


def _delete_row(cursor: Any, kind: str, target: str) -> int:
    cursor.execute("DELETE FROM bans WHERE kind = ? AND target = ?", (kind, target))
    return int(cursor.rowcount)


def _delete(cursor: Any, ban: Ban) -> None:
    _delete_row(cursor, ban.kind, str(ban.target))


def _load(path: Path) -> list[Ban]:
    """Open (creating if need be) and read the database; any fault is a
    :class:`BanDatabaseError`, never an empty list."""
    if path.exists() and not path.is_file():
        raise BanDatabaseError(f"{path}: not a regular file")
    try:
        connection = sqlite3.connect(str(path))
    except sqlite3.Error as error:
        raise BanDatabaseError(f"{path}: cannot open: {error}") from None
    try:
        _check_ours(connection, path)  # first: not even WAL mode on a stranger
        _configure(connection)
        check = connection.execute("PRAGMA quick_check").fetchone()
        if check != ("ok",):
            raise BanDatabaseError(f"{path}: the database is damaged ({check[0]})")
        with connection:
            connection.execute(_SCHEMA)
            connection.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            connection.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
        rows = connection.execute(_SELECT).fetchall()
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


def _check_ours(connection: sqlite3.Connection, path: Path) -> None:
    """Refuse a file of another application or schema, before touching it:
    ours is stamped with our application id; an unstamped file is adopted
    only if it is empty, or holds our ``bans`` table at user_version 1 (as
    this project wrote before the stamp)."""
    application = connection.execute("PRAGMA application_id").fetchone()[0]
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    tables = {
        name
        for (name,) in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'"
        )
    }
    if application in (0, _APPLICATION_ID):
        if version not in (0, _SCHEMA_VERSION) or (
            application and version != _SCHEMA_VERSION
        ):
            raise BanDatabaseError(
                f"{path}: schema version {version}; this version reads"
                f" {_SCHEMA_VERSION}"
            )
        if application:
            return
    empty = application == 0 and version == 0 and not tables
    legacy = application == 0 and version == _SCHEMA_VERSION and "bans" in tables
    if not (empty or legacy):
        raise BanDatabaseError(
            f"{path}: not a blueprint-net ban database (application_id"
            f" {application}, user_version {version}, tables"
            f" {', '.join(sorted(tables)) or 'none'}); refusing to modify it"
        )


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
    _load(path)  # the same checks as at a node's start-up
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
    return bool(_delete_row(connection.cursor(), kind, str(target)))


def stored(connection: sqlite3.Connection) -> list[Ban]:
    rows = connection.execute(_SELECT).fetchall()
    return sorted((_row(*row) for row in rows), key=lambda ban: ban.created)
