"""Who may connect: ``blueprint-net ban``, ``unban``, ``bans``, ``allow``,
``disallow``.

Layer: ops (the operator surface).

Bans are written to the node's ban database and the allow-list to its
permit file; a running node applies both.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

from blueprint_net._adapters import banstore
from blueprint_net._core.identity import PeerId
from blueprint_net._ops.cli.common import (
    BAD_FILE,
    FAILED,
    OK,
    USAGE,
    CommandFailed,
    emit,
)
from blueprint_net._ops.permit_file import PERMITS_FILE, counted, write_permits
from blueprint_net._policy.addresses import parse_target
from blueprint_net._policy.bans import Ban, Origin
from blueprint_net._policy.permits import PermitListError, parse_permits, with_permit


def _database(args: argparse.Namespace) -> Path:
    return Path(args.database) if args.database else Path(args.data_dir) / "bans.sqlite"


def _describe(ban: Ban) -> dict[str, Any]:
    return {
        "target": str(ban.target),
        "kind": ban.kind,
        "reason": ban.reason,
        "origin": ban.origin.value,
        "created": ban.created,
        "expires": ban.expires,
    }


def ban(args: argparse.Namespace) -> int:
    try:
        target = parse_target(args.target)
    except ValueError as error:
        raise CommandFailed(USAGE, str(error)) from None
    now = time.time()
    entry = Ban(
        target,
        args.reason,
        now,
        Origin.MANUAL,
        None if args.duration is None else now + args.duration,
    )
    with _editing(args) as connection:
        banstore.store(connection, entry)
    emit(args, _describe(entry), f"banned {target}: {args.reason}")
    return OK


def unban(args: argparse.Namespace) -> int:
    try:
        target = parse_target(args.target)
    except ValueError as error:
        raise CommandFailed(USAGE, str(error)) from None
    with _editing(args) as connection:
        removed = banstore.remove(connection, target)
    emit(
        args,
        {"target": str(target), "removed": removed},
        f"unbanned {target}" if removed else f"{target} was not banned",
    )
    return OK if removed else FAILED


def list_bans(args: argparse.Namespace) -> int:
    with _editing(args) as connection:
        stored = banstore.stored(connection)
    now = time.time()
    active = [b for b in stored if b.active(now)]
    lines = [
        f"{b.target!s:<54} {b.origin.value:<9} "
        + (
            "forever"
            if b.expires is None or not math.isfinite(b.expires)
            else f"{int(b.expires - now)} s left"
        )
        + f"  {b.reason}"
        for b in active
    ]
    emit(args, [_describe(b) for b in active], "\n".join(lines) or "(no bans)")
    return OK


class _editing:
    """The ban database as one transaction, its errors as exit status 4."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.editor = banstore.edit(_database(args))

    def __enter__(self) -> Any:
        try:
            return self.editor.__enter__()
        except banstore.BanDatabaseError as error:
            raise CommandFailed(BAD_FILE, str(error)) from None
        except OSError as error:  # a data directory we may not read
            where = error.filename or _database(self.args)
            raise CommandFailed(BAD_FILE, f"{where}: {error.strerror}") from None

    def __exit__(self, *exc: Any) -> Any:
        return self.editor.__exit__(*exc)


def _permit(args: argparse.Namespace, permitted: bool) -> int:
    peer_id: PeerId = args.peer_id
    path = Path(args.file) if args.file else Path(args.data_dir) / PERMITS_FILE
    new = not path.exists()
    try:
        text = "" if new else path.read_text(encoding="utf-8")
        changed = (peer_id in parse_permits(text, str(path))) != permitted
        updated = with_permit(text, peer_id, permitted)
        if changed or new:
            write_permits(path, updated)
    except PermitListError as error:
        raise CommandFailed(BAD_FILE, str(error)) from None
    except (OSError, UnicodeDecodeError) as error:
        why = getattr(error, "strerror", None) or "not UTF-8 text"
        raise CommandFailed(BAD_FILE, f"{path}: {why}") from None
    listed = len(parse_permits(updated, str(path)))
    verb = "allowed" if permitted else "disallowed"
    message = (
        f"{verb} {peer_id} ({counted(listed, 'peer')} on {path})"
        if changed
        else f"{peer_id} was {'already' if permitted else 'not'} on {path}"
    )
    if new:
        message += (
            "; a new list: the node is now permissioned and admits the peers"
            " on it and on any --permit-peer or --permit-file it was given"
        )
    emit(
        args,
        {
            "peer_id": str(peer_id),
            "file": str(path),
            "changed": changed,
            "listed": listed,
        },
        message,
    )
    return OK if changed or permitted else FAILED


def allow(args: argparse.Namespace) -> int:
    return _permit(args, True)


def disallow(args: argparse.Namespace) -> int:
    return _permit(args, False)
