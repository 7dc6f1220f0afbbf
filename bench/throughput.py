"""Large payloads one way: blueprint-net requests against raw Twisted TCP.

Both move the same payload bytes from a client to a server over loopback, in
this process on one reactor, in the same run:

* **raw TCP** -- a push producer writes the payloads back to back as plain
  bytes (no framing, no ids, no answers), flow-controlled by the transport;
  the server counts bytes and answers one byte at the end;
* **blueprint-net** -- ``Node.request`` with each payload, answered with an
  empty ``Success``, 1 MiB of payload in flight
  (:func:`bench.messaging.window`).
"""

from __future__ import annotations

import gc
import statistics
import time
from typing import Any, Optional

from twisted.internet import defer, interfaces, protocol
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from zope.interface import implementer

from bench import PLAINTEXT
from blueprint_net._adapters.node import Node
from blueprint_net._core.identity import Identity
from blueprint_net._core.messaging import IncomingRequest

from . import report
from .messaging import KiB, MiB, _windowed, label, window
from .report import Row

SIZES = (64 * KiB, MiB)


class _Sink(protocol.Protocol):
    def __init__(self, expected: int) -> None:
        self.remaining = expected

    def dataReceived(self, data: bytes) -> None:
        self.remaining -= len(data)
        if self.remaining == 0:
            self.transport.write(b"!")  # type: ignore[union-attr]


@implementer(interfaces.IPushProducer)
class _Source(protocol.Protocol):
    def __init__(self, payload: bytes, count: int) -> None:
        self.payload, self.unsent = payload, count
        self.paused = False
        self.done: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.registerProducer(self, True)  # type: ignore[union-attr]
        self.resumeProducing()

    def resumeProducing(self) -> None:
        self.paused = False
        while self.unsent and not self.paused:
            self.unsent -= 1
            self.transport.write(self.payload)  # type: ignore[union-attr]
        if not self.unsent:
            self.transport.unregisterProducer()  # type: ignore[union-attr]

    def pauseProducing(self) -> None:
        self.paused = True

    def stopProducing(self) -> None:
        self.unsent = 0

    def dataReceived(self, data: bytes) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]
        self.done.callback(None)


async def _raw(reactor: Any, size: int, count: int) -> float:
    server = protocol.Factory.forProtocol(lambda: _Sink(size * count))
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(server)
    source = _Source(bytes(size), count)
    gc.collect()
    start = time.perf_counter()
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
    await endpoint.connect(protocol.Factory.forProtocol(lambda: source))
    await source.done
    elapsed = time.perf_counter() - start
    await port.stopListening()
    return size * count / elapsed / 1e6


async def _blueprint(reactor: Any, size: int, count: int) -> float:
    def accept(request: IncomingRequest) -> Optional[bytes]:
        return None  # Success without data

    server = Node(
        Identity.generate(),
        reactor=reactor,
        handlers={"put": accept},
        settings=PLAINTEXT,
    )
    client = Node(Identity.generate(), reactor=reactor, settings=PLAINTEXT)
    port = await server.listen(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"))
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)  # type: ignore[attr-defined]
    await client.connect(endpoint, peer_id=server.peer_id)
    payload, peer_id = bytes(size), server.peer_id
    run = _windowed(lambda: client.request(peer_id, "put", payload))
    gc.collect()
    start = time.perf_counter()
    await run(count, window(size, count))
    elapsed = time.perf_counter() - start
    await client.stop()
    await server.stop()
    return size * count / elapsed / 1e6


async def run(reactor: Any, quick: bool = False) -> list[Row]:
    total, rounds = (16 * MiB, 2) if quick else (256 * MiB, 5)
    if report.SMOKE:
        total, rounds = 1 * MiB, 1
    ours: dict[int, list[float]] = {size: [] for size in SIZES}
    raw: dict[int, list[float]] = {size: [] for size in SIZES}
    for _ in range(rounds):  # interleaved, so drift hits both alike
        for size in SIZES:
            raw[size].append(await _raw(reactor, size, total // size))
            ours[size].append(await _blueprint(reactor, size, total // size))
    return [
        Row(
            f"one-way MB/s, {label(size)} requests",
            statistics.median(ours[size]),
            statistics.median(raw[size]),
            f"ref: raw Twisted TCP, the same bytes; target >= 0.70; {total // MiB} MiB",
        )
        for size in SIZES
    ]
