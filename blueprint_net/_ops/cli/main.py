"""The ``blueprint-net`` command line: the parser and ``main``.

Layer: ops (the operator surface).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable, NoReturn, Optional

from twisted.logger import LogLevel, globalLogBeginner, textFileLogObserver

from blueprint_net._ops import loglevel
from blueprint_net._ops.cli.access import allow, ban, disallow, list_bans, unban
from blueprint_net._ops.cli.common import (
    BAD_FILE,
    DEFAULT_DATA_DIR,
    DEFAULT_STATUS_URL,
    STATUS_URL_VARIABLE,
    USAGE,
    CommandFailed,
    ban_duration,
    client_endpoint,
    message_count,
    peer_id,
    ping_count,
    raw_bytes,
    status_url,
    timeout,
    topic,
    utf8,
)
from blueprint_net._ops.cli.health import healthcheck
from blueprint_net._ops.cli.keys import keygen, show_id
from blueprint_net._ops.cli.remote import ping, request
from blueprint_net._ops.cli.show import peers, status
from blueprint_net._ops.cli.topics import publish, subscribe
from blueprint_net._ops.permit_file import PERMITS_FILE
from blueprint_net._ops.tap import version_line


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line (``blueprint-net ban: --duration ...``) with
    exit status 2, instead of argparse's usage block."""

    #: Whether ``--json`` was asked for (usage errors come before the parse).
    json = False

    def error(self, message: str) -> NoReturn:
        sys.exit(_fail(self.prog, USAGE, message))


def parser() -> argparse.ArgumentParser:
    top = _Parser(
        prog="blueprint-net",
        description="Keys, requests, gossip, status and bans for blueprint-net nodes.",
        epilog="Exit status: 0 ok, 1 the operation failed, 2 usage, "
        "3 node unreachable or handshake failed, 4 bad local file,"
        " 130 interrupted.",
    )
    top.add_argument("--json", action="store_true", help="print JSON")
    top.add_argument(
        "--log-level",
        type=_log_level,
        help="show the command's own node's log on stderr, at this level and"
        f" above ({', '.join(loglevel.LEVELS)}) [none]",
    )
    top.add_argument("--version", action="version", version=version_line())
    commands = top.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    def command(
        name: str, handler: Callable[[argparse.Namespace], int], help: str
    ) -> Any:
        sub = commands.add_parser(name, help=help, description=help)
        # SUPPRESS: a default here would undo a --json given before the command.
        sub.add_argument(
            "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON"
        )
        sub.set_defaults(handler=handler)
        return sub

    sub = command("keygen", keygen, "Create a new key file (PKCS#8 PEM, mode 0600).")
    sub.add_argument("key_file", nargs="?", default=f"{DEFAULT_DATA_DIR}/node.key")
    sub = command("id", show_id, "Print the peer id of a key file.")
    sub.add_argument("key_file", nargs="?", default=f"{DEFAULT_DATA_DIR}/node.key")

    for name, handler, help in (
        ("request", request, "Connect, handshake, send one request, print the answer."),
        ("ping", ping, "Round-trip times of the built-in ping protocol."),
        ("publish", publish, "Publish one message to a topic through a node."),
        ("subscribe", subscribe, "Print the messages of a topic, through a node."),
    ):
        sub = command(name, handler, help)
        sub.add_argument(
            "endpoint",
            type=client_endpoint,
            help="client endpoint, e.g. p2ptls:127.0.0.1:7010",
        )
        sub.add_argument(
            "--peer-id", type=peer_id, help="refuse any other identity at the endpoint"
        )
        sub.add_argument(
            "--key-file", help="identity to connect as [default: a new one]"
        )
        if name == "subscribe":
            sub.add_argument(
                "--timeout",
                type=timeout,
                help="seconds for the whole command [none: until stopped]",
            )
        else:
            sub.add_argument(
                "--timeout",
                type=timeout,
                default=10.0,
                help="seconds for the whole command: connect, handshake, requests [10]",
            )
        sub.add_argument(
            "--allow-plaintext",
            action="store_true",
            help="allow a tcp: endpoint (no TLS: trusted networks only)",
        )
        if name == "request":
            sub.add_argument("protocol", type=utf8)
            sub.add_argument(
                "payload",
                nargs="?",
                type=raw_bytes,
                default=b"",
                help="the request's bytes; - reads them from standard input",
            )
            sub.add_argument(
                "--stdin",
                action="store_true",
                help="read the payload from standard input (as PAYLOAD -)",
            )
            sub.add_argument("--metadata", type=raw_bytes)
        elif name == "ping":
            sub.add_argument("--count", type=ping_count, default=5, help="pings [5]")
        else:  # publish, subscribe
            sub.add_argument("topic", type=topic, help="a topic the node joined")
        if name == "publish":
            sub.add_argument(
                "data",
                type=raw_bytes,
                help="the message's bytes; - reads them from standard input",
            )
        elif name == "subscribe":
            sub.add_argument(
                "--count",
                type=message_count,
                help="stop after this many messages [none: until stopped]",
            )

    for name, handler, help in (
        ("status", status, "A running node's status (from its status endpoint)."),
        ("peers", peers, "A running node's verified peers."),
        ("healthcheck", healthcheck, "Exit 0 if a running node is listening."),
    ):
        sub = command(name, handler, help)
        sub.add_argument(
            "--url",
            type=status_url,
            default=os.environ.get(STATUS_URL_VARIABLE, DEFAULT_STATUS_URL),
            help=f"the node's status page [${STATUS_URL_VARIABLE}"
            f" or {DEFAULT_STATUS_URL}]",
        )
        if name == "healthcheck":
            sub.add_argument(
                "--timeout", type=timeout, default=3.0, help="seconds to wait [3]"
            )

    for name, handler, help in (
        ("ban", ban, "Ban a peer id, address or network (a running node applies it)."),
        ("unban", unban, "Lift a ban."),
        ("bans", list_bans, "List the bans in force."),
    ):
        sub = command(name, handler, help)
        sub.add_argument(
            "--data-dir", default=DEFAULT_DATA_DIR, help=f"[{DEFAULT_DATA_DIR}]"
        )
        sub.add_argument("--database", help="the ban database [DATA-DIR/bans.sqlite]")
        if name != "bans":
            sub.add_argument("target", help="a peer id, an address or a CIDR network")
        if name == "ban":
            sub.add_argument("--reason", type=utf8, default="banned by the operator")
            sub.add_argument(
                "--duration",
                type=ban_duration,
                help="seconds, at most ten years [forever]",
            )
    for name, handler, help in (
        ("allow", allow, "Permit a peer id on a permissioned node (applied live)."),
        ("disallow", disallow, "Take a peer id off the allow-list; it is closed."),
    ):
        sub = command(name, handler, help)
        sub.add_argument(
            "--data-dir", default=DEFAULT_DATA_DIR, help=f"[{DEFAULT_DATA_DIR}]"
        )
        sub.add_argument(
            "--file", help=f"the allow-list file [DATA-DIR/{PERMITS_FILE}]"
        )
        sub.add_argument("peer_id", type=peer_id, help="a peer id (12D3KooW...)")
    return top


def _log_level(text: str) -> LogLevel:
    try:
        return loglevel.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def main(argv: Optional[list[str]] = None) -> NoReturn:
    arguments = sys.argv[1:] if argv is None else argv
    _Parser.json = "--json" in arguments
    args = parser().parse_args(arguments)
    if args.log_level is not None:
        observer = textFileLogObserver(sys.stderr)
        globalLogBeginner.beginLoggingTo(
            [loglevel.filtered(observer, args.log_level)],
            redirectStandardIO=False,
        )
    try:
        status_code = args.handler(args)
    except CommandFailed as failure:
        status_code = _fail(f"blueprint-net {args.command}", failure.status, failure)
    except OSError as error:  # a local file, wherever it was met
        where = f"{error.filename}: " if error.filename else ""
        status_code = _fail(
            f"blueprint-net {args.command}", BAD_FILE, f"{where}{error.strerror}"
        )
    sys.exit(status_code)


def _fail(prog: str, status: int, message: object) -> int:
    """One line on stderr; with ``--json``, a JSON error object on stdout."""
    print(f"{prog}: {message}", file=sys.stderr)
    if _Parser.json:
        print(json.dumps({"error": str(message), "code": status}))
    return status


if __name__ == "__main__":
    main()
