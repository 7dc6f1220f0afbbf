"""Requests per second over loopback TCP: blueprint-net, AMP, and a bare echo.

Each system runs the same echo, client and server in this process on one
reactor, in the same run, at payloads of 64 B, 4 KiB, 64 KiB and 1 MiB:

* **pipelined** -- ``count`` requests, up to a window of 1 MiB of
  payload in flight (all 10,000 at once at 64 B), timed until every
  response is in;
* **ping-pong** -- one request at a time, each sent when the last answered.

The bare ``Int32StringReceiver`` echo is the limit: length-prefixed frames with
no request ids, no codec and no Deferreds.  AMP is what Twisted itself offers
for request/response; its values stop at 65,535 bytes, so it runs at 64 B and
4 KiB only.

The **floor** (:class:`_FloorClient`, :class:`_FloorServer`) is the least any
Python implementation of ``Node.request``'s promise must do on top of the bare
echo, on the same ``Int32StringReceiver``: a Deferred per request, a request
id and the table of requests waiting for it, the handler looked up by its
protocol name, and a header packed and parsed with one ``struct`` call each
way.  It has none of what makes blueprint-net safe to expose (strict decoding,
deadlines, the in-flight bound, memory accounting, fair shares, counters), so
a ratio to the bare echo above the floor's cannot be reached with this API,
and the floor's ratio to blueprint-net is what all of that costs.  It runs
below 1 MiB only: there ``Int32StringReceiver``'s own buffering of a 1 MiB
string, not the API, set its pace (0.1-0.8 of the bare echo, run to run).
"""

from __future__ import annotations

import gc
import statistics
import struct
import time
from typing import Any, Callable

from twisted.internet import defer, protocol
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.protocols import amp
from twisted.protocols.basic import Int32StringReceiver

from bench import PLAINTEXT
from blueprint_net._adapters.node import Node
from blueprint_net._core.identity import Identity
from blueprint_net._core.messaging import IncomingRequest

from . import report
from .report import Point, Row

KiB, MiB = 1024, 1024 * 1024
SIZES = (64, 4 * KiB, 64 * KiB, MiB)
WINDOW = MiB  # payload bytes in flight when pipelining (see docs/performance.md)
AMP_LIMIT = 0xFFFF

#: (pipelined count, ping-pong count) per payload size, full run
COUNTS = {
    64: (10_000, 2_000),
    4 * KiB: (5_000, 1_000),
    64 * KiB: (1_000, 300),
    MiB: (100, 40),
}

Run = Callable[[int, int], "defer.Deferred[Any]"]


def label(size: int) -> str:
    return (
        f"{size // MiB} MiB"
        if size >= MiB
        else f"{size // KiB} KiB"
        if size >= KiB
        else f"{size} B"
    )


def window(size: int, count: int) -> int:
    return max(1, min(count, WINDOW // size))


# -- the bare echo ----------------------------------------------------------


class _EchoServer(Int32StringReceiver):
    MAX_LENGTH = 16 * MiB

    def stringReceived(self, string: bytes) -> None:
        self.sendString(string)


class _EchoClient(Int32StringReceiver):
    MAX_LENGTH = 16 * MiB

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.unsent = self.unanswered = 0
        self.done: defer.Deferred[None] = defer.Deferred()

    def run(self, count: int, in_flight: int) -> defer.Deferred[None]:
        self.unsent, self.unanswered = count - in_flight, count
        self.done = defer.Deferred()
        for _ in range(in_flight):
            self.sendString(self.payload)
        return self.done

    def stringReceived(self, string: bytes) -> None:
        self.unanswered -= 1
        if self.unanswered == 0:
            self.done.callback(None)
        elif self.unsent:
            self.unsent -= 1
            self.sendString(self.payload)


# -- the floor: the least a request/response API does -------------------------

#: Type byte, request id, protocol-name length; the name and payload follow.
_REQUEST = struct.Struct(">BIB")
#: Type byte, request id; the payload follows.
_RESPONSE = struct.Struct(">BI")


def _echo(payload: bytes) -> bytes:
    return payload


def _empty(payload: bytes) -> bytes:
    return b""


class _FloorServer(Int32StringReceiver):
    MAX_LENGTH = 16 * MiB

    def __init__(self, echo: bool = True) -> None:
        self.handlers: dict[bytes, Callable[[bytes], bytes]] = {
            b"echo": _echo if echo else _empty
        }

    def stringReceived(self, string: bytes) -> None:
        _, request_id, length = _REQUEST.unpack_from(string)
        start = _REQUEST.size + length
        handler = self.handlers[string[_REQUEST.size : start]]
        answer = handler(string[start:])
        self.sendString(_RESPONSE.pack(0x11, request_id) + answer)


class _FloorClient(Int32StringReceiver):
    MAX_LENGTH = 16 * MiB

    def __init__(self) -> None:
        self.waiting: dict[int, defer.Deferred[bytes]] = {}
        self.next_id = 0

    def request(self, name: bytes, payload: bytes) -> defer.Deferred[bytes]:
        self.next_id = request_id = self.next_id + 1
        answer: defer.Deferred[bytes] = defer.Deferred()
        self.waiting[request_id] = answer
        self.sendString(_REQUEST.pack(0x10, request_id, len(name)) + name + payload)
        return answer

    def stringReceived(self, string: bytes) -> None:
        _, request_id = _RESPONSE.unpack_from(string)
        self.waiting.pop(request_id).callback(string[_RESPONSE.size :])


# -- AMP ----------------------------------------------------------------------


class Echo(amp.Command):
    arguments = [(b"payload", amp.String())]  # noqa: RUF012 (AMP's declarative API)
    response = [(b"payload", amp.String())]  # noqa: RUF012


class _AMPServer(amp.AMP):
    @Echo.responder
    def echo(self, payload: bytes) -> dict[str, bytes]:
        return {"payload": payload}


# -- the harness --------------------------------------------------------------


async def _timed(run: Run, count: int, in_flight: int) -> float:
    gc.collect()  # start each measurement from the same heap
    start = time.perf_counter()
    await run(count, in_flight)
    return count / (time.perf_counter() - start)


async def _bare(reactor: Any, payload: bytes) -> tuple[Run, Callable[[], Any]]:
    server = protocol.Factory.forProtocol(_EchoServer)
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(server)
    client = _EchoClient(payload)
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
    await endpoint.connect(protocol.Factory.forProtocol(lambda: client))

    async def close() -> None:
        client.transport.loseConnection()  # type: ignore[union-attr]
        await port.stopListening()

    return client.run, close


async def _amp(reactor: Any, payload: bytes) -> tuple[Run, Callable[[], Any]]:
    server = protocol.Factory.forProtocol(_AMPServer)
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(server)
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
    client = await endpoint.connect(protocol.Factory.forProtocol(amp.AMP))
    assert isinstance(client, amp.AMP)

    def call() -> defer.Deferred[Any]:
        return client.callRemote(Echo, payload=payload)  # type: ignore[no-any-return]

    async def close() -> None:
        client.transport.loseConnection()  # type: ignore[union-attr]
        await port.stopListening()

    return _windowed(call), close


async def _floor(reactor: Any, payload: bytes) -> tuple[Run, Callable[[], Any]]:
    server = protocol.Factory.forProtocol(_FloorServer)
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(server)
    client = _FloorClient()
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
    await endpoint.connect(protocol.Factory.forProtocol(lambda: client))
    return floor_run(client, port, payload)


def floor_run(
    client: _FloorClient, port: Any, payload: bytes
) -> tuple[Run, Callable[[], Any]]:
    """The floor's run and close, once ``client`` is connected to ``port``
    (over TCP here, over TLS in ``bench/tls.py``)."""

    def call() -> defer.Deferred[Any]:
        return client.request(b"echo", payload)

    async def close() -> None:
        client.transport.loseConnection()  # type: ignore[union-attr]
        await port.stopListening()

    return _windowed(call), close


async def _blueprint(reactor: Any, payload: bytes) -> tuple[Run, Callable[[], Any]]:
    def echo(request: IncomingRequest) -> bytes:
        return request.payload

    # Capacity, not policy: the default request rate limit (100 per 10 s per
    # peer) would refuse nearly all of a pipelined burst.
    server = Node(
        Identity.generate(),
        reactor=reactor,
        handlers={"echo": echo},
        settings=PLAINTEXT,
    )
    client = Node(Identity.generate(), reactor=reactor, settings=PLAINTEXT)
    port = await server.listen(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"))
    address = port.getHost()
    await client.connect(
        TCP4ClientEndpoint(reactor, "127.0.0.1", address.port),  # type: ignore[attr-defined]
        peer_id=server.peer_id,
    )
    peer_id = server.peer_id

    def call() -> defer.Deferred[Any]:
        return client.request(peer_id, "echo", payload)

    async def close() -> None:
        await client.stop()
        await server.stop()

    return _windowed(call), close


def _windowed(call: Callable[[], defer.Deferred[Any]]) -> Run:
    """``count`` calls, ``in_flight`` at a time: each answer sends the next."""

    def run(count: int, in_flight: int) -> defer.Deferred[None]:
        done: defer.Deferred[None] = defer.Deferred()
        unsent, unanswered = count - in_flight, count

        def answered(_: object) -> None:
            nonlocal unsent, unanswered
            unanswered -= 1
            if unanswered == 0:
                done.callback(None)
            elif unsent:
                unsent -= 1
                call().addCallbacks(answered, failed)

        def failed(failure: Any) -> None:
            if not done.called:  # the first failure ends the run
                done.errback(failure)

        for _ in range(in_flight):
            call().addCallbacks(answered, failed)
        return done

    return run


async def measure(reactor: Any, quick: bool) -> dict[tuple[str, int, bool], float]:
    """Median rate per (system, payload size, pipelined)."""
    rounds = 1 if report.SMOKE else 2 if quick else 5
    systems = {"bare": _bare, "amp": _amp, "floor": _floor, "blueprint": _blueprint}
    results: dict[tuple[str, int, bool], list[float]] = {}
    for _ in range(rounds):  # interleaved, so drift hits every system alike
        for size in SIZES:
            payload = bytes(size)
            pipelined, ping_pong = COUNTS[size]
            if quick:
                pipelined, ping_pong = max(4, pipelined // 20), max(4, ping_pong // 20)
            if report.SMOKE:
                pipelined, ping_pong = 4, 4
            for name, make in systems.items():
                if (name == "amp" and size > AMP_LIMIT) or (
                    name == "floor" and size >= MiB
                ):
                    continue
                call, close = await make(reactor, payload)
                rate = await _timed(call, pipelined, window(size, pipelined))
                results.setdefault((name, size, True), []).append(rate)
                rate = await _timed(call, ping_pong, 1)
                results.setdefault((name, size, False), []).append(rate)
                await close()
    return {key: statistics.median(values) for key, values in results.items()}


#: (pipelined?, row name, target against the bare echo, target against AMP)
_KINDS = (
    (True, "pipelined requests/s", ">= 0.60", "; target >= 5"),
    (False, "ping-pong round trips/s", ">= 0.80", ""),
)


async def run(reactor: Any, quick: bool = False) -> list[Row]:
    median = await measure(reactor, quick)
    rows = []
    for size in SIZES:
        mb = 2 * size / 1e6  # payload bytes per echo, both directions, in MB
        for pipelined, kind, bare_target, amp_target in _KINDS:
            name = f"{kind}, {label(size)} echo"
            ours, bare = (
                median["blueprint", size, pipelined],
                median["bare", size, pipelined],
            )
            note = f"ref: Int32StringReceiver echo; target {bare_target}"
            point = None
            if pipelined:
                note += f"; {ours * mb:.0f} MB/s"
                point = Point("throughput", size, ours * mb, bare * mb)
            rows.append(Row(name, ours, bare, note, point))
            if size <= AMP_LIMIT:
                amp = median["amp", size, pipelined]
                rows.append(Row(name, ours, amp, f"ref: AMP{amp_target}"))
            if size >= MiB:
                continue  # no floor at 1 MiB (see the module)
            floor = median["floor", size, pipelined]
            rows.append(
                Row(name, ours, floor, "ref: the floor (see bench/messaging.py)")
            )
            rows.append(
                Row(
                    f"{name}: the floor",
                    floor,
                    bare,
                    "ref: Int32StringReceiver echo (the best ratio this API allows)",
                )
            )
    return rows
