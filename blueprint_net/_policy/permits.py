"""Allow-list files of permissioned mode: one peer id per line, ``#``
comments; read and written as text, so an operator or a tool can edit them.

Layer: policy (pure; the file I/O is the caller's).

A file that does not parse is refused whole, naming its first bad line: a
half-read list would shut out peers (or, worse, be mistaken for the list).
"""

from __future__ import annotations

from blueprint_net._core.errors import ConfigurationError
from blueprint_net._core.identity import PeerId


class PermitListError(ConfigurationError):
    """An allow-list file that does not parse; the message names the line."""


def parse_permits(text: str, source: str) -> frozenset[PeerId]:
    """The peer ids in an allow-list file's ``text`` (``source`` names it in
    an error)."""
    peers = set()
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        try:
            peers.add(PeerId.from_string(entry))
        except ValueError as error:
            raise PermitListError(f"{source}:{number}: {error}") from None
    return frozenset(peers)


def with_permit(text: str, peer_id: PeerId, permitted: bool) -> str:
    """``text`` with ``peer_id`` added (once) or removed, comments and every
    other line kept as they were."""

    def names(line: str) -> bool:
        return line.split("#", 1)[0].strip() == str(peer_id)

    lines = text.splitlines()
    if not permitted:
        lines = [line for line in lines if not names(line)]
    elif not any(names(line) for line in lines):
        lines.append(str(peer_id))
    return "".join(f"{line}\n" for line in lines)
