"""A hostile flood against one node, from its own process.

``python -m bench.flood PORT SECONDS [CONCURRENCY]`` keeps CONCURRENCY
connections of each kind open against 127.0.0.1:PORT for SECONDS, reopening
each as the node closes it, then prints a JSON summary.  Each kind comes from
its own range of loopback source addresses (all of 127.0.0.0/8 is loopback),
so the node's per-address limits and bans apply to each attacker:

* ``idle`` -- connects and never speaks;
* ``garbage`` -- 64 random bytes;
* ``oversized`` -- a length prefix of 4 GiB;
* ``badsig`` -- a valid Hello, then a HandshakeRequest with a random signature;
* ``replay`` -- the Hello and HandshakeRequest of a real, recorded handshake,
  sent again on new connections.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from typing import Any, Callable

from twisted.internet import defer, protocol, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

from blueprint_net._core import framing, wire
from blueprint_net._core.connection import Connection
from blueprint_net._core.errors import WireError
from blueprint_net._core.handshake_states import PeerProven
from blueprint_net._core.identity import Identity

#: Source addresses per kind: 127.0.<k>.1 .. 127.0.<k>.<ADDRESSES>.
ADDRESSES = 20
KINDS = ("idle", "garbage", "oversized", "badsig", "replay")


class Attacker(protocol.Protocol):
    def __init__(self, kind: str, opening: bytes, on_hello: bytes = b"") -> None:
        self.kind, self.opening, self.on_hello = kind, opening, on_hello
        self.received = b""
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def connectionMade(self) -> None:
        if self.opening:
            self.transport.write(self.opening)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        first = not self.received
        self.received += data
        if first and self.on_hello:
            self.transport.write(self.on_hello)  # type: ignore[union-attr]

    def connectionLost(self, reason: Any = None) -> None:
        self.done.callback(self.received)


async def record_handshake(reactor: Any, port: int) -> bytes:
    """A real handshake's opening frames, made with the sans-IO core."""
    connection = Connection(Identity.generate(), initiator=True)
    sent: list[bytes] = []

    class Recorder(protocol.Protocol):
        def connectionMade(self) -> None:
            connection.initiate()
            self._send()

        def dataReceived(self, data: bytes) -> None:
            for event in connection.receive_data(data):
                if isinstance(event, PeerProven):
                    connection.accept()  # no policy here: admit the prover
            self._send()
            if connection.verified:
                self.transport.loseConnection()  # type: ignore[union-attr]

        def _send(self) -> None:
            data = connection.data_to_send()
            sent.append(data)
            self.transport.write(data)  # type: ignore[union-attr]

    recorder = Recorder()
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    await connectProtocol(endpoint, recorder)
    for _ in range(500):
        if connection.verified:
            break
        await task.deferLater(reactor, 0.01)
    return b"".join(sent)  # Hello, then HandshakeRequest


def openings(recorded: bytes) -> dict[str, Callable[[], tuple[bytes, bytes]]]:
    def badsig() -> tuple[bytes, bytes]:
        identity = Identity.generate()
        hello = framing.frame(wire.Hello(1, os.urandom(32), identity.peer_id))
        forged = framing.frame(
            wire.HandshakeRequest(identity.public_key, os.urandom(64))
        )
        return hello, forged

    return {
        "idle": lambda: (b"", b""),
        "garbage": lambda: (os.urandom(64), b""),
        "oversized": lambda: (b"\xff\xff\xff\xff", b""),
        "badsig": badsig,
        "replay": lambda: (recorded, b""),
    }


async def flood(
    reactor: Any, port: int, seconds: float, concurrency: int
) -> dict[str, Any]:
    recorded = await record_handshake(reactor, port)
    makers = openings(recorded)
    stats: Counter[str] = Counter()
    deadline = time.monotonic() + seconds

    async def worker(kind: str, index: int) -> None:
        block = KINDS.index(kind) + 1
        source = f"127.0.{block}.{index % ADDRESSES + 1}"
        endpoint = TCP4ClientEndpoint(
            reactor, "127.0.0.1", port, timeout=5, bindAddress=(source, 0)
        )
        while time.monotonic() < deadline:
            opening, on_hello = makers[kind]()
            attacker = Attacker(kind, opening, on_hello)
            stats[f"{kind}.attempts"] += 1
            try:
                await connectProtocol(endpoint, attacker)
            except Exception:
                stats[f"{kind}.connect_failed"] += 1
                await task.deferLater(reactor, 0.01)
                continue
            closer = None
            if kind == "idle":  # hold the place until the flood ends
                closer = reactor.callLater(
                    max(0.0, deadline - time.monotonic()),
                    attacker.transport.loseConnection,  # type: ignore[union-attr]
                )
            received = await attacker.done
            if closer is not None and closer.active():
                closer.cancel()
            if not received:
                stats[f"{kind}.refused_unread"] += 1  # closed before a byte
            for message in _messages(received):
                if isinstance(message, wire.Error):
                    stats[f"{kind}.error.{message.code}"] += 1

    await defer.gatherResults(
        [
            defer.ensureDeferred(worker(kind, i))
            for kind in KINDS
            for i in range(concurrency)
        ]
    )
    return dict(sorted(stats.items()))


def _messages(data: bytes) -> list[wire.Message]:
    try:
        return [wire.decode(b) for b in framing.FrameDecoder(1 << 20).feed(data)]
    except WireError:
        return []


def main() -> None:
    port, seconds = int(sys.argv[1]), float(sys.argv[2])
    concurrency = int(sys.argv[3]) if len(sys.argv) > 3 else 40

    async def run(reactor: Any) -> None:
        print(json.dumps(await flood(reactor, port, seconds, concurrency)), flush=True)

    task.react(lambda reactor: defer.ensureDeferred(run(reactor)))


if __name__ == "__main__":
    main()
