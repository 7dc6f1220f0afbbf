"""``blueprint-net request`` and ``ping``: talk to a node as a peer.

Layer: ops (the operator surface).

Each command makes a throwaway node (or uses ``--key-file``), dials,
handshakes, and is bounded by ``--timeout`` as a whole.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any, Callable, Optional

from twisted.internet import defer, task

from blueprint_net._adapters.dialer import require_tls
from blueprint_net._adapters.node import Node
from blueprint_net._core import wire
from blueprint_net._core.errors import (
    KeyFileError,
    PlaintextRefused,
    RemoteError,
    RequestFailed,
)
from blueprint_net._core.identity import Identity, PeerId
from blueprint_net._ops.cli.common import (
    BAD_FILE,
    FAILED,
    INTERRUPTED,
    OK,
    UNREACHABLE,
    USAGE,
    CommandFailed,
    emit,
    read_stdin,
)
from blueprint_net._ops.keyfiles import load_identity
from blueprint_net._ops.topic_log import data_json
from blueprint_net._policy.settings import DEFAULTS, Settings


def _identity(args: argparse.Namespace) -> Identity:
    if args.key_file is None:
        return Identity.generate()  # a throwaway identity is enough to ask
    try:
        return load_identity(args.key_file)
    except KeyFileError as error:
        raise CommandFailed(BAD_FILE, str(error)) from None


def _run(work: Callable[[Any], Any], limit: Optional[float] = None) -> Any:
    """Run a coroutine on the reactor and hand back its result or error;
    past ``limit`` seconds it is cancelled (``--timeout`` bounds the whole
    command, not only each request).  A signal (SIGINT, SIGTERM) stopping
    the reactor first is :data:`INTERRUPTED`, whatever the work then met
    (the reactor's shutdown closes its connections: a "connection lost"
    would blame the node)."""
    outcome: list[Any] = []
    interrupted: list[bool] = []

    def shutting_down() -> None:
        if not outcome:
            interrupted.append(True)

    async def main(reactor: Any) -> None:
        reactor.addSystemEventTrigger("before", "shutdown", shutting_down)
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
    if interrupted or not outcome:
        raise CommandFailed(INTERRUPTED, "interrupted")
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def _settings(args: argparse.Namespace) -> Settings:
    """The command's node settings; a plain endpoint without the opt-in is
    a usage error, found before the reactor starts."""
    settings = Settings(
        # subscribe's --timeout may be None: it then streams until stopped.
        request_timeout=args.timeout or DEFAULTS.request_timeout,
        allow_plaintext=args.allow_plaintext,
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
    if args.payload == b"-" or args.stdin:  # the payload from standard input
        if args.stdin and args.payload:
            raise CommandFailed(USAGE, "a PAYLOAD and --stdin: give one")
        # A request is one frame: no more than a frame may hold is read.
        args.payload = read_stdin(args.settings.max_frame, "a request")

    async def work(reactor: Any) -> tuple[str, Optional[bytes], str]:
        node, peer_id = await _connected(reactor, args)
        try:
            reply = await node.request(
                peer_id,
                args.protocol,
                args.payload,
                args.metadata,
            )
            kind = "success" if isinstance(reply, wire.SuccessResponse) else "protocol"
            return kind, reply.data, ""
        except RemoteError as error:
            return "error", None, str(error)
        except RequestFailed as error:
            return "failed", None, str(error)
        finally:
            await node.stop()

    kind, data, message = _run(work, args.timeout)
    if kind not in ("success", "protocol"):
        # A refusal is an error: one line on stderr (JSON on stdout with
        # --json), never the reply's place on stdout.
        raise CommandFailed(FAILED, message)
    if args.json:
        emit(args, {"response": kind, **reply_json(data)}, "")
    elif data is None:
        print("(no data)")
    else:  # the reply's bytes as sent, then a newline
        sys.stdout.flush()
        sys.stdout.buffer.write(data + b"\n")
        sys.stdout.buffer.flush()
    return OK


def reply_json(data: Optional[bytes]) -> dict[str, Any]:
    """A reply's data for ``--json``: ``data`` as text when it is UTF-8,
    else ``data_base64`` (never decoded lossily); nothing without data."""
    return {} if data is None else data_json(data)


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
    emit(
        args,
        summary,
        "\n".join(f"{t:.3f} ms" for t in times)
        + f"\n{len(times)} pings: min {min(times):.3f}, median"
        f" {statistics.median(times):.3f}, max {max(times):.3f} ms",
    )
    return OK
