"""``blueprint-net publish`` and ``subscribe``: gossip through a node.

Layer: ops (the operator surface).

Like ``request``, each command runs a throwaway node of its own (or the
identity of ``--key-file``) that dials the given node and handshakes.  That
node must have joined the topic (twistd ``--topic``): its answer to a ping
comes after the topics it announced on connecting, so the command knows
within one round trip, and refuses a node that did not join rather than
publish into nothing or wait forever.  ``publish`` signs the message as the
command's node (its origin) and sends it to the node, which delivers it and
passes it on to its mesh.  ``subscribe`` joins the topic; the node grafts it
into its mesh within a heartbeat (1 s) and forwards what it receives from
then on.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
from typing import Any, Optional

from twisted.internet import defer

from blueprint_net._adapters.gossip import GossipMessage
from blueprint_net._adapters.node import Node
from blueprint_net._core.errors import PublishFailed, RemoteError, RequestFailed
from blueprint_net._core.gossip_settings import DEFAULTS as GOSSIP_DEFAULTS
from blueprint_net._core.identity import PeerId
from blueprint_net._ops.cli.common import (
    FAILED,
    INTERRUPTED,
    OK,
    UNREACHABLE,
    CommandFailed,
    emit,
    read_stdin,
)
from blueprint_net._ops.cli.remote import _connected, _run, _settings
from blueprint_net._ops.topic_log import json_line


async def _check_joined(node: Node, peer_id: PeerId, topic: str) -> None:
    """:class:`CommandFailed` unless ``peer_id`` subscribes to ``topic``.

    A node sends its topics as soon as it has verified us, before it serves
    any request of ours: once a ping is answered (an ``unknown protocol``
    error from a node without the built-ins answers as well), the topics
    have arrived."""
    if peer_id not in node.gossip.subscribers(topic):
        # Any answer will do; a lost peer is found below.
        with contextlib.suppress(RemoteError, RequestFailed):
            await node.request(peer_id, "ping", b"")
    if node.peer(peer_id) is None:
        raise CommandFailed(UNREACHABLE, f"{peer_id} closed the connection")
    if peer_id not in node.gossip.subscribers(topic):
        raise CommandFailed(
            FAILED,
            f"{peer_id} has not joined topic {topic!r}"
            f" (twistd: --topic {shlex.quote(topic)})",
        )


def publish(args: argparse.Namespace) -> int:
    args.settings = _settings(args)
    if args.data == b"-":
        data = read_stdin(GOSSIP_DEFAULTS.max_size(args.topic), repr(args.topic))
    else:
        data = args.data

    async def work(reactor: Any) -> tuple[str, bytes]:
        node, peer_id = await _connected(reactor, args)
        try:
            await _check_joined(node, peer_id, args.topic)
            try:
                message_id = node.publish(args.topic, data)
            except PublishFailed as error:
                raise CommandFailed(FAILED, str(error)) from None
            # node.stop() sends its goodbye behind the message, on one link.
            return str(peer_id), message_id
        finally:
            await node.stop()

    peer, message_id = _run(work, args.timeout)
    emit(
        args,
        {
            "topic": args.topic,
            "peer_id": peer,
            "bytes": len(data),
            "message_id": message_id.hex(),
        },
        f"published {len(data)} bytes to {args.topic!r} through {peer}"
        f" (message id {message_id.hex()})",
    )
    return OK


class _Printer:
    """Writes each message as it arrives and says when to stop: after
    ``count`` messages, or when standard output is closed."""

    def __init__(self, json_lines: bool, count: Optional[int]) -> None:
        self.json_lines, self.count = json_lines, count
        self.received = 0
        self.done: defer.Deferred[str] = defer.Deferred()

    def end(self, why: str) -> None:
        if not self.done.called:
            self.done.callback(why)

    def __call__(self, message: GossipMessage) -> None:
        if self.done.called:
            return
        # Else the data as published, then a newline (as ``request`` prints).
        line = json_line(message) if self.json_lines else message.data + b"\n"
        try:
            sys.stdout.buffer.write(line)
            sys.stdout.buffer.flush()
        except BrokenPipeError:  # e.g. ``| head -1`` has what it wanted
            # Python's last flush at exit would complain of it again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            self.end("closed")
            return
        self.received += 1
        if self.count is not None and self.received >= self.count:
            self.end("count")


def subscribe(args: argparse.Namespace) -> int:
    args.settings = _settings(args)
    printer = _Printer(args.json, args.count)

    async def work(reactor: Any) -> str:
        connecting = defer.ensureDeferred(_connected(reactor, args))

        def expire() -> None:
            if not connecting.called:
                connecting.cancel()  # _connected: "no handshake within"
            printer.end("timeout")

        timer = reactor.callLater(args.timeout, expire) if args.timeout else None
        try:
            node, peer_id = await connecting
            try:
                await _check_joined(node, peer_id, args.topic)
                node.subscribe(args.topic, printer)

                def lost(peer: Any) -> None:
                    if peer.peer_id == peer_id:
                        printer.end("lost")

                node.on_peer_lost(lost)
                return await printer.done
            finally:
                await node.stop()
        finally:
            if timer is not None and timer.active():
                timer.cancel()

    try:
        why = _run(work)
    except CommandFailed as failure:
        if failure.status != INTERRUPTED:
            raise
        return OK  # Ctrl-C is how an unbounded subscription ends
    if why == "lost":
        raise CommandFailed(
            UNREACHABLE,
            f"{args.endpoint}: the node closed the connection after"
            f" {printer.received} messages",
        )
    if why == "timeout" and args.count is not None:
        raise CommandFailed(
            FAILED,
            f"{printer.received} of {args.count} messages within"
            f" {args.timeout:g} s (--timeout)",
        )
    return OK
