"""Permissioned mode's allow-list, from its three sources, applied live.

Layer: ops (the operator surface).

``--permit-peer`` is fixed at start; ``--permit-file`` is re-read on SIGHUP;
the data directory's ``permitted-peers`` (what ``blueprint-net allow`` and
``disallow`` edit) is re-read when it changes, on the node's 2 s refresh.
The node admits the union.  Permissioned mode is on while any source is
given (the data directory's file counts once it exists); a list that no
longer names a connected peer closes its connection with ``NOT_ALLOWED``.
A file that does not parse is refused whole and the previous list stays.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Optional

from twisted.logger import Logger

from blueprint_net._adapters.node import Node
from blueprint_net._core.identity import PeerId
from blueprint_net._policy.permits import PermitListError, parse_permits

#: The allow-list file in a data directory.
PERMITS_FILE = "permitted-peers"

Stamp = Optional[tuple[int, int, int]]


def read_permits(path: Path) -> Optional[frozenset[PeerId]]:
    """The peer ids listed in ``path``; None when there is no such file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        why = getattr(error, "strerror", None) or "not UTF-8 text"
        raise PermitListError(f"{path}: {why}") from None
    return parse_permits(text, str(path))


def write_permits(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` at once: a node reading it meanwhile
    sees the old list or the new, never half of one."""
    partial = path.with_name(f".{path.name}.new")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def counted(count: int, noun: str) -> str:
    """``1 peer``, ``2 peers``: a count in words a person reads."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _stamp(path: Path) -> Stamp:
    try:
        found = path.stat()
    except OSError:
        return None
    return (found.st_ino, found.st_mtime_ns, found.st_size)


class PermitSources:
    """The allow-list's sources for one node; :meth:`refresh` and
    :meth:`reload` re-read them and apply the union."""

    _log = Logger()

    def __init__(
        self,
        node: Node,
        *,
        peers: Iterable[PeerId] = (),
        file: Optional[Path] = None,
        data_dir_file: Optional[Path] = None,
    ) -> None:
        """Read every source now: a missing ``--permit-file`` or a bad line
        raises :class:`PermitListError`."""
        self.node = node
        self.peers = frozenset(peers)
        self.file, self.data_dir_file = file, data_dir_file
        self._from_file: Optional[frozenset[PeerId]] = None
        if file is not None:
            self._from_file = read_permits(file)
            if self._from_file is None:
                raise PermitListError(f"--permit-file {file}: no such file")
        self._stamp: Stamp = None
        self._from_dir: Optional[frozenset[PeerId]] = None
        if data_dir_file is not None:
            self._stamp = _stamp(data_dir_file)
            self._from_dir = read_permits(data_dir_file)
        self.node.set_permitted(self.permitted())

    def permitted(self) -> Optional[frozenset[PeerId]]:
        """The union of the sources; None (anyone proven) when none is given."""
        if not self.peers and self.file is None and self._from_dir is None:
            return None
        return (
            self.peers
            | (self._from_file or frozenset())
            | (self._from_dir or frozenset())
        )

    def refresh(self) -> None:
        """Re-read the data directory's list if the file changed."""
        if self.data_dir_file is None:
            return
        stamp = _stamp(self.data_dir_file)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        kept = not self._read_data_dir()
        self._apply(str(self.data_dir_file), kept)

    def reload(self) -> None:
        """Re-read every file (SIGHUP)."""
        kept = False
        if self.file is not None:
            try:
                found = read_permits(self.file)
            except PermitListError as error:
                self._log.error("allow-list not reloaded: {error}", error=str(error))
                kept = True
            else:
                if found is None:
                    self._log.error(
                        "allow-list not reloaded: {path}: no such file",
                        path=str(self.file),
                    )
                    kept = True
                else:
                    self._from_file = found
        if self.data_dir_file is not None:
            self._stamp = _stamp(self.data_dir_file)
            kept = not self._read_data_dir() or kept
        self._apply("every allow-list file", kept)

    def _read_data_dir(self) -> bool:
        """Whether the data directory's file was read (else its old list
        stays, and why is logged)."""
        assert self.data_dir_file is not None
        try:
            self._from_dir = read_permits(self.data_dir_file)
        except PermitListError as error:
            self._log.error("allow-list not reloaded: {error}", error=str(error))
            return False
        return True

    def _apply(self, source: str, kept: bool = False) -> None:
        """Give the node the union of the sources; ``kept``: a file that did
        not read keeps its previous part of it (said so, not "read")."""
        before = self.node.policy.permitted
        permitted = self.permitted()
        closed = self.node.set_permitted(permitted)
        if permitted is None:
            if before is not None:
                self._log.warn(
                    "permissioned mode is off ({source} is gone): any proven"
                    " peer may connect",
                    source=source,
                )
            return
        self._log.info(
            "allow-list {how}: {peers} permitted; {connections} closed (NOT_ALLOWED)",
            how="kept where a file did not read" if kept else f"read from {source}",
            source=source,
            count=len(permitted),
            peers=counted(len(permitted), "peer"),
            closed=closed,
            connections=counted(closed, "connection"),
        )
