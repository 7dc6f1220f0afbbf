"""The command line of ``python -m blueprint_net.mpyc``: its options, the
party list and addresses, and MPyC's own reading of the program's options.

Layer: surface (the command line; no process, socket or reactor).

In: the arguments (``[--key FILE] [--listen HOST:PORT] [--party
PEER_ID@HOST:PORT ...] PROGRAM.py [MPyC options and program arguments]``),
a ``--party`` value, a ``HOST:PORT`` text.  Out: the parsed options
(:func:`parser`), a :class:`Member` (a party's peer id and address) or a
``(host, port)``, MPyC's options (:func:`mpyc_options`); a
:class:`UsageError` (one line) for what cannot run.  No states.

``launch`` runs the parties with these.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import attrs

from blueprint_net import PeerId

#: How long the parties may take to start and find each other (seconds).
START_TIMEOUT = 60.0

USAGE = (
    "python -m blueprint_net.mpyc [--key FILE] [--listen HOST:PORT]"
    " [--party PEER_ID@HOST:PORT ...] PROGRAM.py [MPyC options] [program arguments]"
)


class UsageError(Exception):
    """A command line that cannot run: one line, printed as is."""


@attrs.frozen
class Member:
    """One party: its peer id and where it listens."""

    peer_id: PeerId
    host: str
    port: int

    def endpoint(self) -> str:
        """The ``p2ptls:`` client description of its address."""
        return f"p2ptls:{escape_host(self.host)}:{self.port}"

    def describe(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.peer_id}@{host}:{self.port}"


def escape_host(host: str) -> str:
    """A host as a strports description takes it (each colon escaped)."""
    return host.replace(":", "\\:")


def split_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise UsageError(f"{text!r}: not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        number = int(port)
    except ValueError:
        raise UsageError(f"{text!r}: the port is not a number") from None
    if not 0 <= number <= 65535:
        raise UsageError(f"{text!r}: the port is not 0-65535")
    return host, number


def parse_member(text: str) -> Member:
    """``PEER_ID@HOST:PORT`` (a ``--party`` value)."""
    peer, sep, address = text.partition("@")
    if not sep:
        raise UsageError(f"--party {text!r}: not PEER_ID@HOST:PORT")
    try:
        peer_id = PeerId.from_string(peer)
    except ValueError as error:
        raise UsageError(f"--party: {error}") from None
    return Member(peer_id, *split_address(address))


def parser() -> argparse.ArgumentParser:
    parse = argparse.ArgumentParser(
        prog="python -m blueprint_net.mpyc",
        usage=USAGE,
        description="Run an MPyC program with its parties linked by blueprint-net.",
        allow_abbrev=False,
    )
    parse.add_argument(
        "--key",
        metavar="FILE",
        help="this party's key file (created 0600 on first use); default: a"
        " fresh identity in memory for each party",
    )
    parse.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="where this party accepts TLS links (default: its own --party"
        " address; with -M: 127.0.0.1 and a port the kernel picks)",
    )
    parse.add_argument(
        "--party",
        metavar="PEER_ID@HOST:PORT",
        action="append",
        default=[],
        help="one per party, in MPyC's index order, the same list everywhere"
        " (instead of MPyC's -P/-C/-M)",
    )
    parse.add_argument(
        "--start-timeout",
        type=float,
        default=START_TIMEOUT,
        metavar="SECONDS",
        help=f"how long the -M parties may take to start (default {START_TIMEOUT:g})",
    )
    parse.add_argument("program", metavar="PROGRAM.py")
    parse.add_argument("args", nargs=argparse.REMAINDER, metavar="...")
    return parse


def mpyc_options(program: str, args: Sequence[str]) -> Any:
    """MPyC's own reading of the program's arguments.

    Importing ``mpyc`` configures logging from ``sys.argv`` (and may pick
    uvloop's event loop policy), so ``sys.argv`` is the program's first.
    """
    sys.argv = [program, *args]
    import mpyc

    return mpyc._get_arg_parser().parse_known_args(list(args))[0]
