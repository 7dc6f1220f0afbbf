"""Requests per second over loopback TCP: blueprint-net, AMP, and a bare echo.

Each system runs the same echo of a 64-byte payload, client and server in this
process on one reactor, in the same run:

* **pipelined** -- ``COUNT`` requests sent at once, timed until every response
  is in;
* **ping-pong** -- one request at a time, each sent when the last answered.

The bare ``Int32StringReceiver`` echo is the limit: length-prefixed frames with
no request ids, no codec and no Deferreds.  AMP is what Twisted itself offers
for request/response.
"""

from __future__ import annotations

import gc
import statistics
import time
from typing import Any, Callable

from twisted.internet import defer, protocol
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.protocols import amp
from twisted.protocols.basic import Int32StringReceiver

from blueprint_net.identity import Identity
from blueprint_net.limits import ConnectionLimits
from blueprint_net.messaging import IncomingRequest
from blueprint_net.node import Node

PAYLOAD = bytes(64)

Run = Callable[[int, bool], "defer.Deferred[Any]"]


# -- the bare echo ----------------------------------------------------------


class _EchoServer(Int32StringReceiver):
    MAX_LENGTH = 16 * 1024 * 1024

    def stringReceived(self, string: bytes) -> None:
        self.sendString(string)


class _EchoClient(Int32StringReceiver):
    MAX_LENGTH = 16 * 1024 * 1024

    def __init__(self) -> None:
        self.remaining = 0
        self.pipelined = False
        self.done: defer.Deferred[None] = defer.Deferred()

    def run(self, count: int, pipelined: bool) -> defer.Deferred[None]:
        self.remaining, self.pipelined = count, pipelined
        self.done = defer.Deferred()
        if pipelined:
            for _ in range(count):
                self.sendString(PAYLOAD)
        else:
            self.sendString(PAYLOAD)
        return self.done

    def stringReceived(self, string: bytes) -> None:
        self.remaining -= 1
        if self.remaining == 0:
            self.done.callback(None)
        elif not self.pipelined:
            self.sendString(PAYLOAD)


# -- AMP ----------------------------------------------------------------------


class Echo(amp.Command):
    arguments = [(b"payload", amp.String())]  # noqa: RUF012 (AMP's declarative API)
    response = [(b"payload", amp.String())]  # noqa: RUF012


class _AMPServer(amp.AMP):
    @Echo.responder
    def echo(self, payload: bytes) -> dict[str, bytes]:
        return {"payload": payload}


# -- the harness --------------------------------------------------------------


async def _timed(run: Run, count: int, pipelined: bool) -> float:
    gc.collect()  # start each measurement from the same heap
    start = time.perf_counter()
    await run(count, pipelined)
    return count / (time.perf_counter() - start)


async def _bare(reactor: Any) -> tuple[Run, Callable[[], Any]]:
    server = protocol.Factory.forProtocol(_EchoServer)
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(server)
    client = _EchoClient()
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
    await endpoint.connect(protocol.Factory.forProtocol(lambda: client))

    async def close() -> None:
        client.transport.loseConnection()  # type: ignore[union-attr]
        await port.stopListening()

    return client.run, close


async def _amp(reactor: Any) -> tuple[Run, Callable[[], Any]]:
    server = protocol.Factory.forProtocol(_AMPServer)
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(server)
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
    client = await endpoint.connect(protocol.Factory.forProtocol(amp.AMP))
    assert isinstance(client, amp.AMP)

    def run(count: int, pipelined: bool) -> defer.Deferred[float]:
        return defer.ensureDeferred(_each(count, pipelined, _call))

    def _call() -> defer.Deferred[Any]:
        return client.callRemote(Echo, payload=PAYLOAD)  # type: ignore[no-any-return]

    async def close() -> None:
        client.transport.loseConnection()  # type: ignore[union-attr]
        await port.stopListening()

    return run, close


async def _blueprint(reactor: Any) -> tuple[Run, Callable[[], Any]]:
    def echo(request: IncomingRequest) -> bytes:
        return request.payload

    # Capacity, not policy: the default request rate limit (100 per 10 s per
    # peer) would refuse nearly all of a pipelined burst.
    server = Node(
        Identity.generate(),
        reactor=reactor,
        handlers={"echo": echo},
        limits=ConnectionLimits(request_rate=0),
    )
    client = Node(Identity.generate(), reactor=reactor)
    port = await server.listen(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"))
    address = port.getHost()
    await client.connect(
        TCP4ClientEndpoint(reactor, "127.0.0.1", address.port),  # type: ignore[attr-defined]
        peer_id=server.peer_id,
    )
    peer_id = server.peer_id

    def run(count: int, pipelined: bool) -> defer.Deferred[float]:
        return defer.ensureDeferred(_each(count, pipelined, _call))

    def _call() -> defer.Deferred[Any]:
        return client.request(peer_id, "echo", PAYLOAD)

    async def close() -> None:
        await client.stop()
        await server.stop()

    return run, close


async def _each(
    count: int, pipelined: bool, call: Callable[[], defer.Deferred[Any]]
) -> float:
    if pipelined:
        await defer.gatherResults([call() for _ in range(count)])
    else:
        for _ in range(count):
            await call()
    return float(count)


async def run(reactor: Any, quick: bool = False) -> list[tuple[str, float, float, str]]:
    count, rounds = (500, 2) if quick else (10_000, 5)
    systems = {"bare": _bare, "amp": _amp, "blueprint": _blueprint}
    results: dict[tuple[str, bool], list[float]] = {}
    for _ in range(rounds):  # interleaved, so drift hits every system alike
        for name, make in systems.items():
            call, close = await make(reactor)
            for pipelined in (True, False):
                n = count if pipelined else count // 5
                rate = await _timed(call, n, pipelined)
                results.setdefault((name, pipelined), []).append(rate)
            await close()
    median = {key: statistics.median(values) for key, values in results.items()}
    return [
        (
            "pipelined requests/s (64 B echo)",
            median["blueprint", True],
            median["amp", True],
            "ref: AMP; target >= 5",
        ),
        (
            "pipelined requests/s (64 B echo)",
            median["blueprint", True],
            median["bare", True],
            "ref: Int32StringReceiver echo; target >= 0.60",
        ),
        (
            "ping-pong round trips/s (64 B echo)",
            median["blueprint", False],
            median["bare", False],
            "ref: Int32StringReceiver echo; target >= 0.80",
        ),
        (
            "ping-pong round trips/s (64 B echo)",
            median["blueprint", False],
            median["amp", False],
            "ref: AMP",
        ),
    ]
