"""Peers that hold a node's resources without misbehaving, from their own
process (so the node's RSS is its own).

``python -m bench.hogs idle PORT SECONDS ADDRESSES`` keeps 16 silent sockets
open from each of ADDRESSES loopback addresses (127.0.64.1 onwards),
reopening each as the node closes it, for SECONDS.

``python -m bench.hogs unread PORT SECONDS PEERS`` makes PEERS verified
connections (a fresh key each, from 127.0.128.1 onwards, five per address),
each of which asks for 16 one-MiB ``blob`` answers and never reads them,
then holds on for SECONDS.

Both print a JSON summary.  Loopback only; every loop is bounded in count
and time.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from typing import Any

from twisted.internet import defer, protocol, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

from blueprint_net._core.connection import Connection
from blueprint_net._core.connection_events import PeerVerified
from blueprint_net._core.handshake_states import PeerProven
from blueprint_net._core.identity import Identity

SOCKETS_PER_ADDRESS = 16
PEERS_PER_ADDRESS = 5
BLOBS = 16


class Silent(protocol.Protocol):
    def __init__(self) -> None:
        self.done: defer.Deferred[None] = defer.Deferred()

    def connectionLost(self, reason: Any = None) -> None:
        self.done.callback(None)


class Unreading(protocol.Protocol):
    """Completes the handshake, asks for ``BLOBS`` answers, stops reading."""

    def __init__(self) -> None:
        self.connection = Connection(Identity.generate(), initiator=True)
        self.verified: defer.Deferred[None] = defer.Deferred()
        self.done: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        self.connection.initiate()
        self._send()

    def dataReceived(self, data: bytes) -> None:
        events: list[Any] = list(self.connection.receive_data(data))
        for event in events:
            if isinstance(event, PeerProven):
                events += self.connection.accept()
            elif isinstance(event, PeerVerified):
                for _ in range(BLOBS):
                    self.connection.request("blob", b"x", token=object())
                self.transport.stopReading()  # type: ignore[union-attr]
                self.verified.callback(None)
        self._send()

    def _send(self) -> None:
        data = self.connection.data_to_send()
        if data:
            self.transport.write(data)  # type: ignore[union-attr]

    def connectionLost(self, reason: Any = None) -> None:
        if not self.verified.called:
            self.verified.errback(ConnectionError("closed before verified"))
        self.done.callback(None)


async def idle(
    reactor: Any, port: int, seconds: float, addresses: int
) -> dict[str, int]:
    stats: Counter[str] = Counter()
    deadline = time.monotonic() + seconds

    async def worker(source: str) -> None:
        endpoint = TCP4ClientEndpoint(
            reactor, "127.0.0.1", port, timeout=5, bindAddress=(source, 0)
        )
        for _ in range(100_000):  # bounded; the deadline ends it first
            if time.monotonic() >= deadline:
                return
            stats["attempts"] += 1
            silent = Silent()
            try:
                await connectProtocol(endpoint, silent)
            except Exception:
                stats["connect_failed"] += 1
                await task.deferLater(reactor, 0.05)
                continue
            closer = reactor.callLater(
                max(0.0, deadline - time.monotonic()),
                silent.transport.loseConnection,  # type: ignore[union-attr]
            )
            await silent.done
            if closer.active():
                closer.cancel()
                stats["closed_by_node"] += 1
            await task.deferLater(reactor, 0.05)  # then open another

    await defer.gatherResults(
        [
            defer.ensureDeferred(worker(f"127.0.{64 + a // 250}.{a % 250 + 1}"))
            for a in range(addresses)
            for _ in range(SOCKETS_PER_ADDRESS)
        ]
    )
    return dict(stats)


async def unread(reactor: Any, port: int, seconds: float, peers: int) -> dict[str, int]:
    stats: Counter[str] = Counter()
    deadline = time.monotonic() + seconds
    opened: list[Unreading] = []
    for index in range(peers):
        address = index // PEERS_PER_ADDRESS
        source = f"127.0.{128 + address // 250}.{address % 250 + 1}"
        endpoint = TCP4ClientEndpoint(
            reactor, "127.0.0.1", port, timeout=5, bindAddress=(source, 0)
        )
        peer = Unreading()
        try:
            await connectProtocol(endpoint, peer)
            await peer.verified
        except Exception:
            stats["failed"] += 1
            continue
        stats["verified"] += 1
        opened.append(peer)
    await task.deferLater(reactor, max(0.0, deadline - time.monotonic()))
    stats["dropped_by_node"] = sum(1 for peer in opened if peer.done.called)
    for peer in opened:
        if not peer.done.called:
            peer.transport.abortConnection()  # type: ignore[union-attr]
        await peer.done
    return dict(stats)


def main() -> None:
    mode, port, seconds, count = (
        sys.argv[1],
        int(sys.argv[2]),
        float(sys.argv[3]),
        int(sys.argv[4]),
    )
    run = {"idle": idle, "unread": unread}[mode]

    async def go(reactor: Any) -> None:
        print(json.dumps(await run(reactor, port, seconds, count)), flush=True)

    task.react(lambda reactor: defer.ensureDeferred(go(reactor)))


if __name__ == "__main__":
    main()
