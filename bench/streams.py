"""Durable streams: one-way messages per second against a bare framing
protocol, and the fault run.

**One way.**  ``Stream.send`` (the fast path; ``wait_for_room`` when the
window is full) from one node to another, against a bare
``Int32StringReceiver`` sending the same payloads one way over the same
transport (its producer paused by the transport, as our connection is),
64 B and 4 KiB, over plain TCP and over TLS (``p2ptls``; the reference over
the same ``PeerTLS`` contexts).  Both sides in this process, on one
reactor, interleaved; the clock stops when the receiver has the last
message.

**The fault run.**  Messages numbered from 0 on one stream over TLS; the
receiver aborts the connection (a TCP reset, no goodbye) after a random
1,000 to 3,000 messages, about every 2,000; the sender's node dials again
once both nodes saw the loss.  Counted at the receiver: messages lost,
duplicated and out of order (all must be 0), and the recovery time of each
cut (from the abort to the next message delivered: the loss noticed, a new
TLS connection and handshake, the hellos, the retransmission).
"""

from __future__ import annotations

import gc
import random
import statistics
import time
from typing import Any, Optional

from twisted.internet import defer, interfaces, protocol
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    wrapClientTLS,
)
from twisted.protocols.basic import Int32StringReceiver
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from bench import PLAINTEXT
from blueprint_net._adapters.node import Node
from blueprint_net._adapters.tls import PeerTLS
from blueprint_net._core.identity import Identity, PeerId
from blueprint_net.streams import Stream

from . import report
from .messaging import KiB, label
from .report import Row

SIZES = (64, 4 * KiB)
#: Messages per one-way run, full and quick, by size.
COUNTS = {64: (200_000, 20_000), 4 * KiB: (50_000, 5_000)}
FAULT_MESSAGES = (100_000, 10_000)
#: A cut after this many messages, drawn uniformly (about every 2,000).
CUT_EVERY = (1_000, 3_000)


# -- the reference: a bare Int32StringReceiver one way -----------------------


class _Counter(Int32StringReceiver):
    """Answers the first string (the link is up: TLS done) and the last."""

    MAX_LENGTH = 1024 * 1024

    def __init__(self, count: int) -> None:
        self.remaining = count + 1

    def stringReceived(self, string: bytes) -> None:
        self.remaining -= 1
        if not self.remaining or string == b"ready?":
            self.sendString(b"")


@implementer(interfaces.IPushProducer)
class _Sender(Int32StringReceiver):
    """Sends ``count`` strings as fast as the transport takes them."""

    def __init__(self, payload: bytes, count: int) -> None:
        self.payload, self.unsent = payload, count
        self.paused = self.started = False
        self.ready: defer.Deferred[None] = defer.Deferred()
        self.done: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.registerProducer(self, True)  # type: ignore[union-attr]

    def start(self) -> None:
        self.started = True
        self.resumeProducing()

    def resumeProducing(self) -> None:
        self.paused = False
        send, payload = self.sendString, self.payload
        while self.unsent and not self.paused and self.started:
            self.unsent -= 1
            send(payload)

    def pauseProducing(self) -> None:
        self.paused = True

    def stopProducing(self) -> None:
        self.unsent = 0

    def stringReceived(self, string: bytes) -> None:
        if not self.ready.called:
            self.ready.callback(None)
            return
        self.transport.unregisterProducer()  # type: ignore[union-attr]
        self.transport.loseConnection()  # type: ignore[union-attr]
        self.done.callback(None)


async def _bare(
    reactor: Any, size: int, count: int, tls: Optional[tuple[Identity, Identity]]
) -> float:
    server: Any = protocol.Factory.forProtocol(lambda: _Counter(count))
    if tls is not None:
        server = TLSMemoryBIOFactory(PeerTLS(tls[1]), False, server)
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(server)
    sender = _Sender(bytes(size), count)
    endpoint: Any = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
    if tls is not None:
        endpoint = wrapClientTLS(PeerTLS(tls[0], expected=tls[1].peer_id), endpoint)
    await endpoint.connect(protocol.Factory.forProtocol(lambda: sender))
    sender.sendString(b"ready?")  # the link (and TLS) up: not what is measured
    await sender.ready
    gc.collect()
    start = time.perf_counter()
    sender.start()
    await sender.done
    elapsed = time.perf_counter() - start
    await port.stopListening()
    return count / elapsed


# -- ours: Stream.send between two nodes --------------------------------------


async def _pair(
    reactor: Any, tls: Optional[tuple[Identity, Identity]]
) -> tuple[Node, Node]:
    a_id, b_id = tls if tls is not None else (Identity.generate(), Identity.generate())
    settings = None if tls is not None else PLAINTEXT
    options: dict[str, Any] = {} if settings is None else {"settings": settings}
    a = Node(a_id, reactor=reactor, **options)
    b = Node(b_id, reactor=reactor, **options)
    if tls is not None:
        port = await b.listen("p2ptls:0:interface=127.0.0.1")
        target: Any = f"p2ptls:127.0.0.1:{port.getHost().port}"  # type: ignore[attr-defined]
    else:
        port = await b.listen(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"))
        target = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)  # type: ignore[attr-defined]
    await a.connect(target, peer_id=b.peer_id)
    return a, b


async def send_all(stream: Stream, payload: bytes, count: int) -> None:
    """The fast path: ``send`` until refused, then wait for room."""
    send, wait = stream.send, stream.wait_for_room
    sent = 0
    while sent < count:
        if send(payload):
            sent += 1
        else:
            await wait()


async def _ours(
    reactor: Any, size: int, count: int, tls: Optional[tuple[Identity, Identity]]
) -> float:
    a, b = await _pair(reactor, tls)
    done: defer.Deferred[None] = defer.Deferred()
    remaining = [count]

    def received(payload: bytes) -> None:
        remaining[0] -= 1
        if not remaining[0]:
            done.callback(None)

    stream = a.stream(b.peer_id, b"bench", lambda p: None)
    b.stream(a.peer_id, b"bench", received)
    gc.collect()
    start = time.perf_counter()
    await send_all(stream, bytes(size), count)
    await done
    elapsed = time.perf_counter() - start
    await a.stop()
    await b.stop()
    return count / elapsed


# -- the fault run --------------------------------------------------------------


class _Checker:
    """The receiver's side of the fault run: counts, and cuts."""

    def __init__(
        self, reactor: Any, rng: random.Random, every: tuple[int, int] = CUT_EVERY
    ) -> None:
        self.reactor, self.rng, self.every = reactor, rng, every
        self.cuts_made = 0
        self.expected = 0
        self.duplicated = self.out_of_order = 0
        self.seen: set[int] = set()
        self.next_cut = rng.randint(*every)
        self.cut_at: Optional[float] = None
        self.cut_link: Any = None
        self.recoveries: list[float] = []
        self.receiver: Optional[Node] = None
        self.sender_id: Optional[PeerId] = None
        self.cuts: defer.DeferredQueue[None] = defer.DeferredQueue()
        self.done: defer.Deferred[None] = defer.Deferred()
        self.total = 0

    def received(self, payload: bytes) -> None:
        if self.cut_at is not None and self._link() not in (None, self.cut_link):
            # The first message on a new connection (those of the cut one's
            # last read may still come, and are not a recovery).
            self.recoveries.append(time.perf_counter() - self.cut_at)
            self.cut_at = None
        n = int.from_bytes(payload[:8], "big")
        if n in self.seen:
            self.duplicated += 1
        elif n != self.expected:
            self.out_of_order += 1
        self.seen.add(n)
        self.expected = max(self.expected, n + 1)
        if len(self.seen) == self.total:
            self.done.callback(None)
        elif len(self.seen) >= self.next_cut and self.cut():
            self.next_cut += self.rng.randint(*self.every)

    def _link(self) -> Any:
        assert self.receiver is not None and self.sender_id is not None
        return self.receiver._peers.get(self.sender_id)

    def cut(self) -> bool:
        """Abort the link, unless the last cut has not recovered yet."""
        link = self._link()
        if link is None or link is self.cut_link or self.cut_at is not None:
            return False  # tried again at the next message
        self.cut_at = time.perf_counter()
        self.cut_link = link
        link.transport.abortConnection()
        self.cuts_made += 1
        self.cuts.put(None)
        return True


async def _fault_run(
    reactor: Any, count: int, every: tuple[int, int] = CUT_EVERY, seed: int = 20
) -> dict[str, Any]:
    a_id, b_id = Identity.generate(), Identity.generate()
    a, b = await _pair(reactor, (a_id, b_id))
    (port,) = (p for _, p in b.listening_addresses)
    checker = _Checker(reactor, random.Random(seed), every)
    checker.receiver, checker.sender_id, checker.total = b, a.peer_id, count
    lost_waiters: list[defer.Deferred[None]] = []

    def lost(peer: Any) -> None:
        for waiting in list(lost_waiters):
            if not waiting.called:
                waiting.callback(None)

    a.on_peer_lost(lost)
    stream = a.stream(b.peer_id, b"fault", lambda p: None)
    b.stream(a.peer_id, b"fault", checker.received)

    async def redial() -> None:
        while True:
            await checker.cuts.get()
            if a.peer(b.peer_id) is not None:
                gone: defer.Deferred[None] = defer.Deferred()
                lost_waiters.append(gone)
                if a.peer(b.peer_id) is not None:
                    await gone
                lost_waiters.remove(gone)
            await a.connect(f"p2ptls:127.0.0.1:{port}", peer_id=b.peer_id)

    dialing = defer.ensureDeferred(redial())
    dialing.addErrback(lambda failure: None)
    payloads = (n.to_bytes(8, "big") + bytes(56) for n in range(count))

    async def send() -> None:
        for payload in payloads:
            while not stream.send(payload):
                await stream.wait_for_room()

    await send()
    await checker.done
    dialing.cancel()
    await a.stop()
    await b.stop()
    return {
        "lost": count - len(checker.seen),
        "duplicated": checker.duplicated,
        "out_of_order": checker.out_of_order,
        "cuts": checker.cuts_made,
        "recovery": sorted(checker.recoveries),
    }


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    return values[min(len(values) - 1, int(fraction * len(values)))]


async def run(reactor: Any, quick: bool = False) -> list[Row]:
    pick = 1 if quick else 0
    rounds = 1 if quick else 3
    scale = 20 if report.SMOKE else 1
    tls_ids = (Identity.generate(), Identity.generate())
    transports: dict[str, Optional[tuple[Identity, Identity]]] = {
        "TCP": None,
        "TLS": tls_ids,
    }
    ours: dict[tuple[int, str], list[float]] = {}
    bare: dict[tuple[int, str], list[float]] = {}
    for _ in range(rounds):  # interleaved, so drift hits both alike
        for size in SIZES:
            count = COUNTS[size][pick] // scale
            for name, tls in transports.items():
                key = (size, name)
                bare.setdefault(key, []).append(await _bare(reactor, size, count, tls))
                ours.setdefault(key, []).append(await _ours(reactor, size, count, tls))
    rows = [
        Row(
            f"stream one-way msgs/s, {label(size)}, {name}",
            statistics.median(ours[size, name]),
            statistics.median(bare[size, name]),
            f"ref: bare Int32StringReceiver one way, same bytes; goal >= 0.5;"
            f" {COUNTS[size][pick] // scale} msgs",
        )
        for size in SIZES
        for name in transports
    ]
    count = 3_000 if report.SMOKE else FAULT_MESSAGES[pick]
    every = (500, 1_000) if report.SMOKE else CUT_EVERY  # smoke: a few cuts
    fault = await _fault_run(reactor, count, every)
    note = f"{count} msgs over TLS, {fault['cuts']} cuts; must be 0"
    rows += [
        Row("stream fault run: lost", fault["lost"], None, note),
        Row("stream fault run: duplicated", fault["duplicated"], None, note),
        Row("stream fault run: out of order", fault["out_of_order"], None, note),
    ]
    recovery = fault["recovery"]
    for name, fraction in (("p50", 0.5), ("p99", 0.99)):
        rows.append(
            Row(
                f"stream fault run: recovery after a cut {name} (ms)",
                _percentile(recovery, fraction) * 1000,
                None,
                "abort -> next message delivered (redial, TLS, hellos, resend)",
            )
        )
    return rows
