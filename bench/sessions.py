"""Party sessions: rounds per second among parties that are each their own
process, against a bare full mesh among the same processes.

**A round** is what a multi-party protocol's round costs: every party
sends one 1 KiB broadcast and one 1 KiB message to each other party.  With
the session API that is two session rounds: ``broadcast(r)`` then
``gather(r)``, then ``send(r + 1, p)`` to each other party then
``gather(r + 1)``; once with ``reliable=False`` and once with
``reliable=True`` (the echo step: each party sends every party a digest of
the round's broadcasts).  Each party is a ``Node`` in its own process,
listening on ``p2ptls`` on 127.0.0.1; the session dials (its keepers) the
parties after it in the coordinator's list, so each pair has one link.

**The reference**, in the same processes and the same run: a full mesh of
bare ``Int32StringReceiver`` connections over TLS (the same ``PeerTLS``
contexts), each party sending 1 KiB to each other party and waiting for
the n - 1 it is sent, twice per round (the two exchanges of a session
round pair).  It has no signature, no acknowledgement, no echo: what a
hand-written protocol without durable streams would cost.

**Timing.**  The coordinator (this process) starts the parties
(``python -m bench.sessions --worker``; JSON lines on their stdin and
stdout), hands them the list, then asks for each run in turn (reference,
session, reliable session, interleaved).  A run is a round or two of
warm-up (links come up, the parties fall into step), then the timed
rounds; each party times its own and the slowest party's time counts.
Every wait is bounded: a party count that cannot start, or a run that does
not finish, within its budget is reported as such and its parties are
killed.
"""

from __future__ import annotations

import contextlib
import gc
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Optional

from twisted.internet import defer, protocol, stdio
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    wrapClientTLS,
)
from twisted.protocols.basic import Int32StringReceiver, LineReceiver
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure

from blueprint_net._adapters.node import Node
from blueprint_net._adapters.sessions import Session
from blueprint_net._adapters.tls import PeerTLS
from blueprint_net._core.identity import Identity, PeerId

from . import child_env, report
from .report import Row

KiB = 1024
PAYLOAD = 1 * KiB
#: Party counts: full, quick, smoke.
PARTIES = ((3, 10, 50), (3, 10), (3,))
#: Timed rounds per run (full, quick), by party count; smoke: 3.
ROUNDS = {3: (200, 30), 10: (60, 10), 50: (5, 2)}
#: Runs of each kind (interleaved), by party count (full, quick); smoke: 1.
REPEATS = {3: (3, 1), 10: (3, 1), 50: (1, 1)}
WARMUP = 2
#: Seconds for all the parties of one count to start and link up, and for
#: one run; past either the count is given up.
START_BUDGET = {3: 60.0, 10: 90.0, 50: 240.0}
RUN_BUDGET = {3: 60.0, 10: 90.0, 50: 240.0}
KINDS = ("bare", "session", "reliable")
ROOT = Path(__file__).resolve().parents[1]


# -- the parties' side ---------------------------------------------------------


class _Mesh:
    """One party's bare TLS links to every other party, by index."""

    def __init__(self) -> None:
        self.me = 0
        self.n = 0
        self.links: dict[int, _Link] = {}
        self.counts: dict[int, int] = {}
        self.waiting: dict[int, defer.Deferred[None]] = {}
        self.ready: defer.Deferred[None] = defer.Deferred()
        self.phase = 0

    def add(self, index: int, link: _Link) -> None:
        self.links[index] = link
        if len(self.links) == self.n - 1 and not self.ready.called:
            self.ready.callback(None)

    def received(self, phase: int) -> None:
        count = self.counts[phase] = self.counts.get(phase, 0) + 1
        if count == self.n - 1 and phase in self.waiting:
            self.waiting.pop(phase).callback(None)

    async def exchange(self, payload: bytes) -> None:
        """Send ``payload`` to every other party; wait for theirs."""
        self.phase += 1
        phase = self.phase
        message = phase.to_bytes(4, "big") + payload
        for link in self.links.values():
            link.sendString(message)
        if self.counts.get(phase, 0) < self.n - 1:
            waiting: defer.Deferred[None] = defer.Deferred()
            self.waiting[phase] = waiting
            await waiting
        del self.counts[phase]


class _Link(Int32StringReceiver):
    """A bare mesh link: the dialler's index first, then phase + payload."""

    def __init__(self, mesh: _Mesh, index: Optional[int] = None) -> None:
        self.mesh, self.index = mesh, index

    def connectionMade(self) -> None:
        if self.index is not None:  # we dialled
            self.sendString(self.mesh.me.to_bytes(2, "big"))
            self.mesh.add(self.index, self)

    def stringReceived(self, string: bytes) -> None:
        if self.index is None:
            self.index = int.from_bytes(string, "big")
            self.mesh.add(self.index, self)
        else:
            self.mesh.received(int.from_bytes(string[:4], "big"))


class _Control(LineReceiver):
    """The coordinator's commands (stdin) and our answers (stdout)."""

    delimiter = b"\n"
    MAX_LENGTH = 1 << 20

    def __init__(self) -> None:
        self.commands: defer.DeferredQueue[Optional[dict[str, Any]]] = (
            defer.DeferredQueue()
        )

    def lineReceived(self, line: bytes) -> None:
        self.commands.put(json.loads(line))

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.commands.put(None)  # the coordinator is gone

    def say(self, **fields: Any) -> None:
        self.sendLine(json.dumps(fields).encode())


async def _rounds(
    session: Session, rounds: int, reliable: bool, timeout: float
) -> float:
    payload = bytes(PAYLOAD)
    start = time.perf_counter()
    for r in range(WARMUP + rounds):
        if r == WARMUP:
            start = time.perf_counter()
        session.broadcast(2 * r, payload, reliable=reliable)
        await session.gather(2 * r, timeout=timeout)
        for party in range(len(session.parties)):
            if party != session.index:
                session.send(2 * r + 1, party, payload)
        await session.gather(2 * r + 1, timeout=timeout)
    return time.perf_counter() - start


async def _bare_rounds(mesh: _Mesh, rounds: int) -> float:
    payload = bytes(PAYLOAD)
    start = time.perf_counter()
    for r in range(WARMUP + rounds):
        if r == WARMUP:
            start = time.perf_counter()
        await mesh.exchange(payload)  # the broadcast's copies
        await mesh.exchange(payload)  # the direct messages
    return time.perf_counter() - start


async def worker(reactor: Any) -> None:
    """One party: say where we listen, then do what the coordinator says."""
    identity = Identity.generate()
    node = Node(identity, reactor=reactor)
    port = await node.listen("p2ptls:0:interface=127.0.0.1")
    mesh = _Mesh()
    bare_factory = TLSMemoryBIOFactory(
        PeerTLS(identity), False, protocol.Factory.forProtocol(lambda: _Link(mesh))
    )
    bare = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        bare_factory
    )
    control = _Control()
    stdio.StandardIO(control, reactor=reactor)
    control.say(
        peer=str(identity.peer_id),
        port=port.getHost().port,  # type: ignore[attr-defined]
        bare=bare.getHost().port,
    )
    peers: list[PeerId] = []
    ports: list[int] = []
    session: Optional[Session] = None
    while True:
        command = await control.commands.get()
        if session is not None:  # every party is done with it: close it
            session.close()
            session = None
        if command is None or "quit" in command:
            break
        try:
            if "parties" in command:
                peers = [PeerId.from_string(p) for p, _, _ in command["parties"]]
                ports = [p for _, p, _ in command["parties"]]
                mesh.me, mesh.n = peers.index(identity.peer_id), len(peers)
                for index in range(mesh.me + 1, mesh.n):
                    endpoint = wrapClientTLS(
                        PeerTLS(identity, expected=peers[index]),
                        TCP4ClientEndpoint(
                            reactor, "127.0.0.1", command["parties"][index][2]
                        ),
                    )
                    await endpoint.connect(
                        protocol.Factory.forProtocol(
                            lambda index=index: _Link(mesh, index)  # type: ignore[misc]
                        )
                    )
                if mesh.n > 1:
                    await mesh.ready
                control.say(ready=True)
            else:
                kind, rounds = command["run"], command["rounds"]
                gc.collect()
                if kind == "bare":
                    elapsed = await _bare_rounds(mesh, rounds)
                else:
                    me = peers.index(identity.peer_id)
                    later = range(me + 1, len(peers))
                    addresses = {
                        peers[i]: f"p2ptls:127.0.0.1:{ports[i]}" for i in later
                    }
                    name = f"bench {command['tag']}".encode()
                    session = node.session(name, peers, addresses)
                    elapsed = await _rounds(
                        session, rounds, kind == "reliable", command["timeout"]
                    )
                control.say(elapsed=elapsed)
        except Exception as error:
            control.say(error=f"{type(error).__name__}: {error}")
    for link in mesh.links.values():
        link.transport.loseConnection()  # type: ignore[union-attr]
    await bare.stopListening()
    await node.stop()


# -- the coordinator ------------------------------------------------------------


class _Party(protocol.ProcessProtocol):
    """One party process: its answers, one JSON object a line."""

    def __init__(self) -> None:
        self.answers: defer.DeferredQueue[Optional[dict[str, Any]]] = (
            defer.DeferredQueue()
        )
        self.buffer = b""
        self.errors = b""
        self.ended: defer.Deferred[None] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            self.answers.put(json.loads(line))

    def errReceived(self, data: bytes) -> None:
        self.errors = (self.errors + data)[-2000:]

    def processEnded(self, reason: Failure) -> None:
        self.answers.put(None)
        self.ended.callback(None)

    def tell(self, **fields: Any) -> None:
        assert self.transport is not None
        self.transport.write(json.dumps(fields).encode() + b"\n")


class GaveUp(Exception):
    """A party count did not start or a run did not finish in its budget."""


async def _answers(
    reactor: Any, parties: list[_Party], deadline: float
) -> list[dict[str, Any]]:
    """One answer from every party, by ``deadline`` (reactor seconds)."""
    waits = [
        party.answers.get().addTimeout(max(0.0, deadline - reactor.seconds()), reactor)
        for party in parties
    ]
    try:
        answers = await defer.gatherResults(waits, consumeErrors=True)
    except defer.FirstError as error:
        for waiting in waits:
            waiting.cancel()
        raise GaveUp("timed out") from error.subFailure.value
    given = []
    for number, answer in enumerate(answers):
        if answer is None:
            err = parties[number].errors.decode(errors="replace").strip()
            raise GaveUp(f"party {number} exited: {err[-300:]}")
        if "error" in answer:
            raise GaveUp(f"party {number}: {answer['error']}")
        given.append(answer)
    return given


async def _stop(reactor: Any, parties: list[_Party]) -> None:
    for party in parties:
        if not party.ended.called:
            party.tell(quit=True)
    waits = [party.ended for party in parties]
    done = defer.DeferredList(waits, consumeErrors=True)
    done.addTimeout(20, reactor)
    with contextlib.suppress(defer.TimeoutError):
        await done
    for party in parties:
        if not party.ended.called:
            assert party.transport is not None
            party.transport.signalProcess("KILL")


async def _count(
    reactor: Any, n: int, rounds: int, repeats: int
) -> tuple[dict[str, list[float]], float, Optional[str]]:
    """Every run for ``n`` parties: rounds/s by kind, how long starting
    took, and why it stopped early (None when it did not)."""
    env = child_env()
    command = [sys.executable, "-m", "bench.sessions", "--worker"]
    parties = []
    figures: dict[str, list[float]] = {kind: [] for kind in KINDS}
    begun = reactor.seconds()
    try:
        for _ in range(n):
            party = _Party()
            reactor.spawnProcess(party, sys.executable, command, env=env, path=ROOT)
            parties.append(party)
        deadline = begun + START_BUDGET[n]
        hellos = await _answers(reactor, parties, deadline)
        listing = [[h["peer"], h["port"], h["bare"]] for h in hellos]
        for party in parties:
            party.tell(parties=listing)
        await _answers(reactor, parties, deadline)
        started = reactor.seconds() - begun
        tag = 0
        for _ in range(repeats):
            for kind in KINDS:
                tag += 1
                budget = RUN_BUDGET[n]
                for party in parties:
                    party.tell(run=kind, rounds=rounds, tag=tag, timeout=budget)
                answers = await _answers(reactor, parties, reactor.seconds() + budget)
                slowest = max(answer["elapsed"] for answer in answers)
                figures[kind].append(rounds / slowest)
        return figures, started, None
    except GaveUp as error:
        return figures, reactor.seconds() - begun, str(error)
    finally:
        await _stop(reactor, parties)


async def run(reactor: Any, quick: bool = False) -> list[Row]:
    pick = 1 if quick else 0
    counts = PARTIES[2] if report.SMOKE else PARTIES[pick]
    rows = []
    for n in counts:
        rounds = 3 if report.SMOKE else ROUNDS[n][pick]
        repeats = 1 if report.SMOKE else REPEATS[n][pick]
        before = report.load_now()
        figures, started, stopped = await _count(reactor, n, rounds, repeats)
        runs = len(figures["reliable"])
        note = (
            f"{n} processes, {rounds} rounds x {runs} runs, started in {started:.0f} s;"
            f" load {before} before, {report.load_now()} after"
        )
        if stopped is not None:
            note += f"; GAVE UP after {runs} of {repeats} runs: {stopped}"
        reference = figures["bare"]
        bare = statistics.median(reference) if reference else None
        for kind, name in (
            ("session", "broadcast round + direct round"),
            ("reliable", "reliable broadcast round + direct round"),
        ):
            ours = figures[kind]
            rows.append(
                Row(
                    f"party rounds/s, {n} parties, {name} (1 KiB)",
                    statistics.median(ours) if ours else 0.0,
                    bare,
                    f"ref: bare Int32StringReceiver TLS mesh, 2 exchanges; {note}",
                )
            )
    return rows


if __name__ == "__main__" and sys.argv[1:] == ["--worker"]:
    from twisted.internet import task

    task.react(lambda reactor: defer.ensureDeferred(worker(reactor)))
