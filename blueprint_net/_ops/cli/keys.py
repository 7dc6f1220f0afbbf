"""``blueprint-net keygen`` and ``id``: key files.

Layer: ops (the operator surface).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from blueprint_net._core.errors import (
    KeyFileError,
)
from blueprint_net._ops.cli.common import BAD_FILE, OK, CommandFailed, emit
from blueprint_net._ops.keyfiles import load_identity, load_or_create_identity


def keygen(args: argparse.Namespace) -> int:
    path = Path(args.key_file)
    if path.exists():
        raise CommandFailed(BAD_FILE, f"{path}: already exists; not overwriting a key")
    try:
        # The two-node recipe's first step is ``keygen a/node.key``: the
        # directory is made, private, as twistd makes its data directory.
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        why = f"{path.parent}: cannot create: {error.strerror}"
        raise CommandFailed(BAD_FILE, why) from None
    try:
        identity = load_or_create_identity(path)
    except KeyFileError as error:
        raise CommandFailed(BAD_FILE, str(error)) from None
    emit(
        args,
        {"key_file": str(path), "peer_id": str(identity.peer_id)},
        f"{identity.peer_id}  (new key in {path}, mode 0600)",
    )
    return OK


def show_id(args: argparse.Namespace) -> int:
    try:
        identity = load_identity(args.key_file)
    except KeyFileError as error:
        raise CommandFailed(BAD_FILE, str(error)) from None
    emit(args, {"peer_id": str(identity.peer_id)}, str(identity.peer_id))
    return OK
