"""``blueprint-net``: keys, requests, a node's status, and its ban database.

Layer: ops (the operator surface).

Exit status: 0 success; 1 the operation failed (the peer answered with an
Error, a request timed out, nothing to unban); 2 bad usage; 3 the node could
not be reached or the handshake failed; 4 a local file (key, ban database)
could not be used.  ``--json`` prints one JSON document instead of text.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional

from twisted.internet import defer, task

from blueprint_net._adapters import banstore, tls
from blueprint_net._adapters.node import Node, require_tls
from blueprint_net._core import wire
from blueprint_net._core.errors import (
    KeyFileError,
    PlaintextRefused,
    RemoteError,
    RequestFailed,
)
from blueprint_net._core.identity import Identity, PeerId
from blueprint_net._ops.keyfiles import load_identity, load_or_create_identity
from blueprint_net._ops.permits import PERMITS_FILE, write_permits
from blueprint_net._ops.status import duration
from blueprint_net._ops.tap import version_line
from blueprint_net._policy.addresses import parse_target
from blueprint_net._policy.bans import Ban, Origin
from blueprint_net._policy.permits import PermitListError, parse_permits, with_permit
from blueprint_net._policy.settings import Settings

OK, FAILED, USAGE, UNREACHABLE, BAD_FILE = 0, 1, 2, 3, 4
DEFAULT_STATUS_URL = "http://127.0.0.1:7080"
DEFAULT_DATA_DIR = "blueprint-data"


class CommandFailed(Exception):
    """Ends the command with a message and an exit status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2) if args.json else text)


# -- keys --------------------------------------------------------------------


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
    _emit(
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
    _emit(args, {"peer_id": str(identity.peer_id)}, str(identity.peer_id))
    return OK


# -- talking to a node --------------------------------------------------------


def _identity(args: argparse.Namespace) -> Identity:
    if args.key_file is None:
        return Identity.generate()  # a throwaway identity is enough to ask
    try:
        return load_identity(args.key_file)
    except KeyFileError as error:
        raise CommandFailed(BAD_FILE, str(error)) from None


def peer_id(text: str) -> PeerId:
    """An argparse ``type``: a peer id, or a one-line usage error."""
    try:
        return PeerId.from_string(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def client_endpoint(text: str) -> str:
    """An argparse ``type``: a client endpoint description that parses."""
    try:
        tls.check_client(text)
    except tls.EndpointError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _run(work: Callable[[Any], Any], limit: Optional[float] = None) -> Any:
    """Run a coroutine on the reactor and hand back its result or error;
    past ``limit`` seconds it is cancelled (``--timeout`` bounds the whole
    command, not only each request)."""
    outcome: list[Any] = []

    async def main(reactor: Any) -> None:
        running = defer.ensureDeferred(work(reactor))
        if limit is not None:
            running.addTimeout(limit, reactor)
        try:
            outcome.append(await running)
        except defer.TimeoutError:
            outcome.append(
                CommandFailed(FAILED, f"no answer within {limit:g} s (--timeout)")
            )
        except BaseException as error:  # re-raised below, off the reactor
            outcome.append(error)

    try:
        task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
    except SystemExit as done:
        if done.code not in (0, None):
            raise
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def _settings(args: argparse.Namespace) -> Settings:
    """The command's node settings; a plain endpoint without the opt-in is
    a usage error, found before the reactor starts."""
    settings = Settings(
        request_timeout=args.timeout, allow_plaintext=args.allow_plaintext
    )
    try:
        require_tls(args.endpoint, settings)
    except PlaintextRefused as error:
        raise CommandFailed(USAGE, str(error)) from None
    return settings


async def _connected(reactor: Any, args: argparse.Namespace) -> tuple[Node, PeerId]:
    node = Node(_identity(args), reactor=reactor, settings=args.settings)
    try:
        peer = await node.connect(args.endpoint, peer_id=args.peer_id)
    except PlaintextRefused as error:
        await node.stop()
        raise CommandFailed(USAGE, str(error)) from None
    except defer.CancelledError:  # --timeout, while connecting or handshaking
        # The goodbye goes out, but a peer that never answered is not waited
        # for (up to 2 s); the process ends with the reactor.
        node.stop()
        raise CommandFailed(
            UNREACHABLE,
            f"{args.endpoint}: no handshake within {args.timeout:g} s (--timeout)",
        ) from None
    except Exception as error:
        await node.stop()
        raise CommandFailed(UNREACHABLE, f"{args.endpoint}: {error}") from None
    return node, peer.peer_id


def request(args: argparse.Namespace) -> int:
    args.settings = _settings(args)

    async def work(reactor: Any) -> tuple[str, Optional[bytes], int, str]:
        node, peer_id = await _connected(reactor, args)
        try:
            reply = await node.request(
                peer_id,
                args.protocol,
                args.payload.encode(),
                args.metadata.encode() if args.metadata is not None else None,
            )
            kind = "success" if isinstance(reply, wire.SuccessResponse) else "protocol"
            return kind, reply.data, 0, ""
        except RemoteError as error:
            return "error", None, error.code, str(error)
        except RequestFailed as error:
            return "failed", None, 0, str(error)
        finally:
            await node.stop()

    kind, data, code, message = _run(work, args.timeout)
    text = data.decode("utf-8", "replace") if data is not None else ""
    if kind in ("success", "protocol"):
        _emit(
            args,
            {"response": kind, "data": text},
            text if data is not None else "(no data)",
        )
        return OK
    _emit(args, {"response": kind, "code": code, "message": message}, message)
    return FAILED


def ping(args: argparse.Namespace) -> int:
    args.settings = _settings(args)

    async def work(reactor: Any) -> list[float]:
        node, peer_id = await _connected(reactor, args)
        times = []
        try:
            for _ in range(args.count):
                start = time.perf_counter()
                await node.request(peer_id, "ping", b"")
                times.append((time.perf_counter() - start) * 1e3)
        except RequestFailed as error:
            raise CommandFailed(FAILED, f"ping failed: {error}") from None
        finally:
            await node.stop()
        return times

    times = _run(work, args.timeout)
    summary = {
        "count": len(times),
        "min_ms": min(times),
        "median_ms": statistics.median(times),
        "max_ms": max(times),
        "times_ms": times,
    }
    _emit(
        args,
        summary,
        "\n".join(f"{t:.3f} ms" for t in times)
        + f"\n{len(times)} pings: min {min(times):.3f}, median"
        f" {statistics.median(times):.3f}, max {max(times):.3f} ms",
    )
    return OK


# -- a running node's status --------------------------------------------------


def _status(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(
            url.rstrip("/") + "/status.json", timeout=5
        ) as page:
            status: dict[str, Any] = json.load(page)
            return status
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise CommandFailed(
            UNREACHABLE, f"{url}: {getattr(error, 'reason', error)}"
        ) from None


def status(args: argparse.Namespace) -> int:
    data = _status(args.url)
    uptime = data.get("uptime_seconds", 0)
    lines = [
        f"peer id   {data['peer_id']}",
        f"version   {data.get('version', '?')}, up {duration(uptime)}",
        f"listening {', '.join(data['listening'])}",
        "links     "
        + ("plaintext allowed" if data.get("allow_plaintext") else "TLS only"),
        f"peers     {len(data['peers'])}",
        f"bans      {data['bans']}",
        *(f"  {name:<40} {value}" for name, value in data["counters"].items()),
    ]
    _emit(args, data, "\n".join(lines))
    return OK


def _uptime(data: dict[str, Any]) -> str:
    seconds = int(data.get("uptime_seconds", 0))
    return (
        f"{seconds // 86400} d {seconds % 86400 // 3600} h {seconds % 3600 // 60} min"
    )


def peers(args: argparse.Namespace) -> int:
    data = _status(args.url)["peers"]
    lines = [f"{p['peer_id']}  {p['address']:<22} {p['direction']}" for p in data]
    _emit(args, data, "\n".join(lines) or "(no verified peers)")
    return OK


# -- a node's ban database ----------------------------------------------------


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
    _emit(args, _describe(entry), f"banned {target}: {args.reason}")
    return OK


def unban(args: argparse.Namespace) -> int:
    try:
        target = parse_target(args.target)
    except ValueError as error:
        raise CommandFailed(USAGE, str(error)) from None
    with _editing(args) as connection:
        removed = banstore.remove(connection, target)
    _emit(
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
    _emit(args, [_describe(b) for b in active], "\n".join(lines) or "(no bans)")
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


# -- a permissioned node's allow-list ----------------------------------------


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
        f"{verb} {peer_id} ({listed} peers on {path})"
        if changed
        else f"{peer_id} was {'already' if permitted else 'not'} on {path}"
    )
    if new:
        message += "; a new list: the node now admits only the peers on it"
    _emit(
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


# -- the parser --------------------------------------------------------------


def _checked(
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
ban_duration = _checked(float, 0, MAX_BAN_DURATION, strict=True)
timeout = _checked(float, 0, 86400.0, strict=True)
ping_count = _checked(int, 1, 10_000)


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
        description="Keys, requests, status and bans for blueprint-net nodes.",
        epilog="Exit status: 0 ok, 1 the operation failed, 2 usage, "
        "3 node unreachable or handshake failed, 4 bad local file.",
    )
    top.add_argument("--json", action="store_true", help="print JSON")
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
            sub.add_argument("protocol")
            sub.add_argument("payload", nargs="?", default="")
            sub.add_argument("--metadata")
        else:
            sub.add_argument("--count", type=ping_count, default=5, help="pings [5]")

    for name, handler, help in (
        ("status", status, "A running node's status (from its status endpoint)."),
        ("peers", peers, "A running node's verified peers."),
    ):
        sub = command(name, handler, help)
        sub.add_argument(
            "--url", default=DEFAULT_STATUS_URL, help=f"[{DEFAULT_STATUS_URL}]"
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
            sub.add_argument("--reason", default="banned by the operator")
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


def main(argv: Optional[list[str]] = None) -> NoReturn:
    arguments = sys.argv[1:] if argv is None else argv
    _Parser.json = "--json" in arguments
    args = parser().parse_args(arguments)
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
