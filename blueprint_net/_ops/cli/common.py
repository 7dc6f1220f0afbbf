"""What every command shares: exit statuses, errors, output, argument types.

Layer: ops (the operator surface).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import urllib.parse
from typing import Any, Callable

from blueprint_net._adapters import tls
from blueprint_net._core.gossip_mesh import check_topic
from blueprint_net._core.identity import PeerId
from blueprint_net._ops.config import not_utf8

OK, FAILED, USAGE, UNREACHABLE, BAD_FILE = 0, 1, 2, 3, 4
#: Stopped by SIGINT or SIGTERM before the command finished (as a shell says).
INTERRUPTED = 130
DEFAULT_STATUS_URL = "http://127.0.0.1:7080"
#: Where ``status``, ``peers`` and ``healthcheck`` look when ``--url`` is not
#: given: a container or unit sets it once, beside the node's ``--status``.
STATUS_URL_VARIABLE = "BLUEPRINT_NET_STATUS_URL"
DEFAULT_DATA_DIR = "blueprint-data"


class CommandFailed(Exception):
    """Ends the command with a message and an exit status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def read_stdin(cap: int, what: str) -> bytes:
    """Standard input, refused unread past ``cap`` bytes (reading all of
    ``/dev/zero`` first was a MemoryError): one line naming ``what``."""
    data: bytes = sys.stdin.buffer.read(cap + 1)
    if len(data) > cap:
        raise CommandFailed(
            FAILED, f"standard input: more than {cap} bytes, the size cap for {what}"
        )
    return data


def emit(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2) if args.json else text)


def peer_id(text: str) -> PeerId:
    """An argparse ``type``: a peer id, or a one-line usage error."""
    try:
        return PeerId.from_string(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def utf8(text: str) -> str:
    """An argparse ``type``: text that is valid UTF-8, or a one-line usage
    error.  (Python hands bytes that are not UTF-8 over as lone surrogates,
    which no encoder takes: a protocol name or a ban's reason would fail
    later, with a traceback.)"""
    problem = not_utf8(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def topic(text: str) -> str:
    """An argparse ``type``: a gossip topic (1 to 255 bytes of UTF-8)."""
    utf8(text)
    try:
        check_topic(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def raw_bytes(text: str) -> bytes:
    """An argparse ``type``: the argument's bytes exactly as the shell gave
    them (a payload may be any bytes, UTF-8 or not)."""
    return os.fsencode(text)


def status_url(text: str) -> str:
    """An argparse ``type``: an http(s) URL with a host (``127.0.0.1:7080``
    alone is a usage error, not an unreachable node)."""
    utf8(text)
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(
            f"wants an http:// URL such as {DEFAULT_STATUS_URL}, not {text!r}"
        )
    return text


def client_endpoint(text: str) -> str:
    """An argparse ``type``: a client endpoint description that parses."""
    utf8(text)
    try:
        tls.check_client(text)
    except tls.EndpointError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def checked_number(
    kind: type, minimum: float, maximum: float, *, strict: bool = False
) -> Callable[[str], Any]:
    """An argparse ``type``: a finite number in range, or a one-line error.

    ``float()`` takes ``nan`` (stored as a permanent ban: it compares false
    with every bound), ``inf`` (an OverflowError when listed) and negative
    durations (a ban already expired); each is refused here, by name.
    """

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            noun = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"wants {noun}, not {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"wants a finite number, not {text!r}")
        if value < minimum or (strict and value == minimum) or value > maximum:
            low = "more than" if strict else "at least"
            raise argparse.ArgumentTypeError(
                f"must be {low} {minimum:g} and at most {maximum:g}, not {text}"
            )
        return value

    parse.__name__ = "number"  # argparse names the type in some messages
    return parse


#: Longest ban the command makes with ``--duration`` (ten years, in seconds);
#: for longer, leave ``--duration`` out: the ban is then for good.
MAX_BAN_DURATION = 10 * 365 * 86400.0
ban_duration = checked_number(float, 0, MAX_BAN_DURATION, strict=True)
timeout = checked_number(float, 0, 86400.0, strict=True)
ping_count = checked_number(int, 1, 10_000)
message_count = checked_number(int, 1, 1_000_000_000)
