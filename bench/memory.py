"""Memory per idle verified connection, at 100, 1,000 and 5,000 connections.

The node runs here under ``tracemalloc``; a second process opens N
connections to it, each a distinct identity driven by the sans-IO
``Connection`` (light, and it answers keepalive pings), and holds them idle.
Once the node has N verified peers it measures its Python heap and RSS growth
since before the first connection, per connection.  Target: <= 8 KiB of Python
heap per idle verified connection.
"""

from __future__ import annotations

import gc
import os
import sys
import tracemalloc
from pathlib import Path
from typing import Any

from twisted.internet import defer, protocol, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.utils import getProcessOutputAndValue

from bench import PLAINTEXT
from blueprint_net._adapters.node import Node
from blueprint_net._core.connection import Connection
from blueprint_net._core.handshake_states import PeerProven
from blueprint_net._core.identity import Identity, PeerId
from blueprint_net._policy.limits import ConnectionLimits

from . import report
from .report import Point, Row, table

HOLD = 30.0  # seconds the client process keeps its connections open, at most


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _Idle(protocol.Protocol):
    def __init__(self, expected: PeerId) -> None:
        self.connection = Connection(
            Identity.generate(), initiator=True, expected_peer=expected
        )
        self.lost: defer.Deferred[None] = defer.Deferred()

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)

    def connectionMade(self) -> None:
        self.connection.initiate()
        self.transport.write(self.connection.data_to_send())  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        for event in self.connection.receive_data(data):
            if isinstance(event, PeerProven):
                self.connection.accept()  # no policy here: admit the prover
        out = self.connection.data_to_send()
        if out:
            self.transport.write(out)  # type: ignore[union-attr]


async def _clients(reactor: Any, port: int, peer: PeerId, count: int) -> None:
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    idle = []
    for start in range(0, count, 64):  # 64 handshakes at a time
        batch = [_Idle(peer) for _ in range(min(64, count - start))]
        await defer.gatherResults([connectProtocol(endpoint, p) for p in batch])
        idle.extend(batch)
    # The node measures, then closes them all (at most HOLD seconds).
    closed = defer.gatherResults([p.lost for p in idle])
    await closed.addTimeout(HOLD, reactor).addErrback(lambda failure: None)


async def _measure(reactor: Any, count: int) -> tuple[float, float]:
    limits = ConnectionLimits(max_connections=count + 100, max_handshaking=1024)
    node = Node(Identity.generate(), reactor=reactor, limits=limits, settings=PLAINTEXT)
    port = (await node.listen("tcp:0:interface=127.0.0.1")).getHost().port  # type: ignore[attr-defined]
    gc.collect()
    heap_before, rss_before = tracemalloc.get_traced_memory()[0], _rss()
    clients = getProcessOutputAndValue(
        sys.executable,
        ["-m", "bench.memory", "--clients", str(port), str(node.peer_id), str(count)],
        env=dict(os.environ),
        path=str(Path(__file__).parent.parent),
    )
    while len(node.peers) < count:
        await task.deferLater(reactor, 0.05)
    await task.deferLater(reactor, 0.5)  # let the last handshakes settle
    gc.collect()
    heap = (tracemalloc.get_traced_memory()[0] - heap_before) / count
    rss = (_rss() - rss_before) / count
    await node.stop()  # closes every connection: the client process ends
    await clients
    return heap, rss


async def run(reactor: Any, quick: bool = False) -> list[Row]:
    tracemalloc.start()
    rows = []
    for count in (10, 20, 50) if report.SMOKE else (100, 1000, 5000):
        heap, rss = await _measure(reactor, count)
        rows.append(
            Row(
                f"memory per idle verified connection, {count} (KiB)",
                heap / 1024,
                8.0,
                f"ref: the 8 KiB heap target; RSS {rss / 1024:.1f} KiB",
                Point("memory", count, heap / 1024, rss / 1024),
            )
        )
    tracemalloc.stop()
    return rows


def main() -> None:
    if sys.argv[1:2] == ["--clients"]:
        port, peer, count = sys.argv[2:5]
        task.react(
            lambda r: defer.ensureDeferred(
                _clients(r, int(port), PeerId.from_string(peer), int(count))
            )
        )
        return

    async def go(reactor: Any) -> None:
        print(table(await run(reactor)))

    task.react(lambda reactor: defer.ensureDeferred(go(reactor)))


if __name__ == "__main__":
    main()
