"""A gossip network of real nodes, measured: ``python -m bench.network``.

``python -m bench.network --nodes N [--processes P] [--messages M]`` starts N
nodes (TLS, the default; each on its own loopback address 127.0.x.y) spread
over P worker processes, each node knowing only one bootstrap address and
running a ``ConnectionManager`` (target 8 outbound peers), all subscribed to
one topic.  It prints one table:

* the time until every node has its target outbound peers and the overlay is
  one component;
* M publications from random origins: delivery ratio to live subscribers,
  latency p50/p99 (with the mesh hop count of the p99 delivery), duplicates
  received per node per message, bytes the origin uploads per publication
  and bytes the whole network uploads per message, beside the same messages
  sent one hop with ``notify_all`` over a full mesh (measured when
  N <= ``--full-mesh-max``, else that row's reference is the exact
  encoded size times N-1, marked "computed");
* churn: the worker processes holding 20% of the nodes are killed with
  SIGKILL mid-run; publications continue; the time until every survivor is
  back at its target with a mesh again, and the delivery ratio to survivors
  during that repair window and after it.

Everything is bounded: every wait has a deadline, every loop a count; only
loopback is used.  Latency compares ``time.monotonic()`` across processes
(one system-wide clock on Linux).
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import random
import select
import signal
import subprocess
import sys
import time
from collections import deque
from typing import Any, Optional

TOPIC = "bench"
WORKER = "--worker"


def host(index: int) -> str:
    """Node ``index``'s own loopback address (127.0.0.1 is left alone)."""
    return f"127.0.{1 + index // 250}.{1 + index % 250}"


# -- the worker: some nodes in one process ----------------------------------


def worker_main() -> None:
    from twisted.internet import reactor, stdio, task
    from twisted.internet.address import IPv4Address
    from twisted.protocols.basic import LineReceiver

    nodes: dict[int, Any] = {}
    managers: dict[int, Any] = {}
    deliveries: list[tuple[int, str, float]] = []

    async def start(spec: dict[str, Any]) -> dict[str, Any]:
        from blueprint_net import Identity, Node
        from blueprint_net.discovery import ConnectionManager, DiscoverySettings
        from blueprint_net.gossip import GossipMessage, GossipSettings

        gossip = GossipSettings(
            flood_publish=spec["flood"], idontwant_threshold=spec["idontwant"]
        )

        out = []
        for index in spec["indices"]:
            node = Node(Identity.generate(), reactor=reactor, gossip=gossip)
            port = await node.listen(f"p2ptls:0:interface={host(index)}")

            def got(message: GossipMessage, index: int = index) -> None:
                sent = json.loads(message.data[: message.data.index(b"}") + 1])
                deliveries.append((index, sent["tag"], time.monotonic() - sent["t"]))

            node.subscribe(TOPIC, got, validator=validator(spec["validate"]))
            bootstrap = [spec["bootstrap"]] if spec["bootstrap"] else []
            manager = ConnectionManager(
                node,
                DiscoverySettings(target_peers=spec["target"]),
                bootstrap=bootstrap,
                rng=random.Random(index),
            )
            manager.startService()
            nodes[index], managers[index] = node, manager
            address = port.getHost()
            assert isinstance(address, IPv4Address)
            out.append(
                {
                    "i": index,
                    "id": str(node.peer_id),
                    "at": f"p2ptls:{address.host}:{address.port}",
                }
            )
        return {"nodes": out}

    def validator(seconds: float) -> Any:
        """None (accepted at once), or one that accepts after ``seconds``."""
        from blueprint_net.gossip import Verdict

        if not seconds:
            return None
        return lambda message: task.deferLater(reactor, seconds, lambda: Verdict.ACCEPT)

    def status(spec: dict[str, Any]) -> dict[str, Any]:
        out = []
        for index, node in nodes.items():
            out.append(
                {
                    "i": index,
                    "id": str(node.peer_id),
                    "outbound": len(managers[index].outbound()),
                    "peers": [str(p.peer_id) for p in node.peers],
                    "mesh": [str(p) for p in node.gossip.mesh(TOPIC)],
                    "sent": node.gossip.sent["bytes"],
                    "duplicate": node.gossip.stats[TOPIC]["duplicate"],
                }
            )
        return {"nodes": out}

    def publish(spec: dict[str, Any]) -> dict[str, Any]:
        node = nodes[spec["i"]]
        stamp = json.dumps({"tag": spec["tag"], "t": time.monotonic()}).encode()
        data = stamp + b"." * max(0, spec["size"] - len(stamp))
        before = node.gossip.sent["bytes"]
        node.publish(TOPIC, data)
        return {"upload": node.gossip.sent["bytes"] - before}

    def cpu(spec: dict[str, Any]) -> dict[str, Any]:
        return {"cpu": time.process_time()}

    def collect(spec: dict[str, Any]) -> dict[str, Any]:
        taken = list(deliveries)
        deliveries.clear()
        return {"deliveries": taken}

    async def mesh_reference(spec: dict[str, Any]) -> dict[str, Any]:
        """The one-hop reference: a full mesh of plain nodes in this worker,
        each message sent with notify_all by its origin."""
        from blueprint_net import Identity, IncomingRequest, Node

        got: list[float] = []

        def handler(request: IncomingRequest) -> None:
            sent = json.loads(request.payload[: request.payload.index(b"}") + 1])
            got.append(time.monotonic() - sent["t"])

        count = spec["nodes"]
        mesh = [
            Node(Identity.generate(), reactor=reactor, handlers={"bench": handler})
            for _ in range(count)
        ]
        try:
            where = []
            for index, node in enumerate(mesh):
                port = await node.listen(f"p2ptls:0:interface={host(1000 + index)}")
                address = port.getHost()
                assert isinstance(address, IPv4Address)
                where.append(f"p2ptls:{address.host}:{address.port}")
            for a in range(count):
                for b in range(a + 1, count):
                    await mesh[a].connect(where[b], mesh[b].peer_id)
            rng = random.Random(7)
            upload = 0
            from blueprint_net._core import framing, wire

            for tag in range(spec["messages"]):
                stamp = json.dumps({"tag": tag, "t": time.monotonic()}).encode()
                data = stamp + b"." * max(0, spec["size"] - len(stamp))
                frame = framing.frame(wire.Request(wire.NO_RESPONSE, "bench", data))
                sent = rng.choice(mesh).notify_all("bench", data)
                upload += len(frame) * len(sent)
                await deferLater(1 / spec["rate"])  # the gossip run's pace
            deadline = time.monotonic() + 10
            want = spec["messages"] * (count - 1)
            while len(got) < want and time.monotonic() < deadline:
                await deferLater(0.01)
            return {
                "delivered": len(got),
                "expected": want,
                "latencies": got,
                "upload": upload / spec["messages"],
            }
        finally:
            for node in mesh:
                await node.stop()

    def deferLater(seconds: float) -> Any:
        from twisted.internet import task

        return task.deferLater(reactor, seconds, lambda: None)

    commands = {
        "start": start,
        "status": status,
        "publish": publish,
        "collect": collect,
        "cpu": cpu,
        "mesh_reference": mesh_reference,
    }

    class Commands(LineReceiver):
        delimiter = b"\n"
        MAX_LENGTH = 64 * 1024 * 1024

        def lineReceived(self, line: bytes) -> None:
            from twisted.internet import defer

            spec = json.loads(line)
            answer: defer.Deferred[Any]
            try:
                result = commands[spec["cmd"]](spec)
            except Exception:
                answer = defer.fail()
            else:
                answer = (
                    defer.ensureDeferred(result)
                    if inspect.iscoroutine(result)
                    else defer.succeed(result)
                )
            answer.addCallbacks(
                lambda result: self.sendLine(json.dumps(result).encode()),
                lambda failure: self.sendLine(
                    json.dumps({"error": failure.getErrorMessage()}).encode()
                ),
            )

        def connectionLost(self, reason: Any = None) -> None:
            os._exit(0)  # the controller went away: so do we, at once

    stdio.StandardIO(Commands())
    reactor.run()


# -- the controller ------------------------------------------------------------


class Worker:
    """One worker process and its command pipe."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.network", WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
        self.buffer = b""
        self.alive = True

    def send(self, spec: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(spec).encode() + b"\n")
        self.process.stdin.flush()

    def receive(self, deadline: float) -> dict[str, Any]:
        stdout = self.process.stdout
        assert stdout is not None
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([stdout], [], [], left)[0]:
                raise TimeoutError(f"worker {self.number} did not answer in time")
            chunk = os.read(stdout.fileno(), 1 << 20)
            if not chunk:
                raise RuntimeError(f"worker {self.number} exited")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"worker {self.number}: {answer['error']}")
        return answer

    def ask(self, spec: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        self.send(spec)
        return self.receive(time.monotonic() + timeout)

    def kill(self) -> None:
        self.alive = False
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def ask_all(
    workers: list[Worker], spec: dict[str, Any], timeout: float = 60.0
) -> list[dict[str, Any]]:
    live = [w for w in workers if w.alive]
    for worker in live:
        worker.send(spec)
    deadline = time.monotonic() + timeout
    return [worker.receive(deadline) for worker in live]


def nodes_status(workers: list[Worker]) -> list[dict[str, Any]]:
    return [
        n for answer in ask_all(workers, {"cmd": "status"}) for n in answer["nodes"]
    ]


def components(status: list[dict[str, Any]]) -> int:
    ids = {n["id"] for n in status}
    edges: dict[str, set[str]] = {i: set() for i in ids}
    for n in status:
        for p in n["peers"]:
            if p in ids:
                edges[n["id"]].add(p)
                edges[p].add(n["id"])
    seen: set[str] = set()
    count = 0
    for start in ids:
        if start in seen:
            continue
        count += 1
        todo = [start]
        seen.add(start)
        while todo:
            for p in edges[todo.pop()]:
                if p not in seen:
                    seen.add(p)
                    todo.append(p)
    return count


def mesh_hops(
    status: list[dict[str, Any]], sources: Optional[set[Any]] = None
) -> dict[Any, dict[Any, int]]:
    """Hops from each node (of ``sources``, if given) to every other over
    the topic's meshes."""
    edges: dict[str, set[str]] = {n["id"]: set() for n in status}
    for n in status:
        for p in n["mesh"]:
            if p in edges:
                edges[n["id"]].add(p)
                edges[p].add(n["id"])
    hops = {}
    for start in edges if sources is None else sources & set(edges):
        dist = {start: 0}
        todo = deque([start])
        while todo:
            at = todo.popleft()
            for p in edges[at]:
                if p not in dist:
                    dist[p] = dist[at] + 1
                    todo.append(p)
        hops[start] = dist
    return hops


def ready(status: list[dict[str, Any]], target: int) -> bool:
    """Every node at its target outbound peers (or connected to every other
    node, when the network is too small for that), with a mesh; one component."""
    everyone = len(status) - 1
    want = min(target, everyone)
    if os.environ.get("BENCH_DEBUG"):
        short = [
            (n["i"], n["outbound"], len(n["peers"]), len(n["mesh"]))
            for n in status
            if not (
                (n["outbound"] >= want or len(n["peers"]) >= everyone) and n["mesh"]
            )
        ]
        print(
            f"{time.monotonic():.1f} not ready: {short[:10]} ({len(short)})",
            file=sys.stderr,
        )
    return (
        all(
            (n["outbound"] >= want or len(n["peers"]) >= everyone) and n["mesh"]
            for n in status
        )
        and components(status) == 1
    )


def wait_ready(workers: list[Worker], target: int, limit: float) -> Optional[float]:
    """Seconds until :func:`ready` (polled), or None past ``limit``."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if ready(nodes_status(workers), target):
            return time.monotonic() - start
        time.sleep(0.25)
    return None


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


class Phase:
    """Publications from random origins among the live nodes, and what each
    live subscriber received of them."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.tags: dict[str, tuple[int, float]] = {}  # tag -> (origin, time)
        self.uploads: list[int] = []
        self.deliveries: list[tuple[int, str, float]] = []

    def publish(
        self, workers: list[Worker], where: dict[int, Worker], origin: int, size: int
    ) -> None:
        tag = f"{self.name}-{len(self.tags)}"
        answer = where[origin].ask(
            {"cmd": "publish", "i": origin, "tag": tag, "size": size}
        )
        self.tags[tag] = (origin, time.monotonic())
        self.uploads.append(answer["upload"])

    def ratio(self, live: set[int]) -> float:
        """Deliveries to live non-origin nodes over those expected."""
        got = {(i, tag) for i, tag, _ in self.deliveries if i in live}
        want = sum(len(live - {origin}) for origin, _ in self.tags.values())
        # The origin delivers its own message locally: not a network delivery.
        mine = sum(1 for i, tag in got if self.tags.get(tag, (-1,))[0] == i)
        return (len(got) - mine) / want if want else float("nan")


def collect(workers: list[Worker], phases: list[Phase]) -> None:
    by_name = {phase.name: phase for phase in phases}
    for answer in ask_all(workers, {"cmd": "collect"}):
        for index, tag, latency in answer["deliveries"]:
            phase = by_name.get(tag.rsplit("-", 1)[0])
            if phase is not None and tag in phase.tags:
                phase.deliveries.append((index, tag, latency))


#: One row of the table: name, figure, reference (None: "-"), note.
TableRow = tuple[str, float, Optional[float], str]


def steady_rows(
    args: argparse.Namespace,
    n: int,
    *,
    delivery: float,
    latencies: list[float],
    hops: list[int],
    duplicates: float,
    uploads: list[int],
    network_bytes: float,
    reference: Optional[dict[str, Any]],
    cpu_per_delivery: Optional[tuple[float, float, float]] = None,
) -> list[TableRow]:
    """The steady phase's rows, for the real run and the simulation alike:
    ``latencies`` (ms) and ``hops`` (mesh hops from the origin) are per
    delivery, in the same order; ``reference`` is the measured one-hop
    full mesh, if one was run; ``cpu_per_delivery`` (us) is the workers'
    CPU time over the phase per delivery, the same less the nodes' idle
    upkeep, and that upkeep per node per second (the simulation has
    none)."""
    from blueprint_net import Identity
    from blueprint_net._core import framing, gossip_wire, wire
    from blueprint_net.gossip import GossipSettings

    p99 = percentile(latencies, 0.99)
    hop_of = sorted(h for h, lat in zip(hops, latencies) if lat >= p99)
    frame = len(
        framing.frame(wire.Request(wire.NO_RESPONSE, "bench", b"x" * args.size))
    )
    someone = Identity.generate()
    gossip_frame = len(
        gossip_wire.frame(
            gossip_wire.Publish(TOPIC, someone.peer_id, 1, b"x" * args.size, b"\0" * 64)
        )
    )
    upload = sum(uploads) / len(uploads)
    d = GossipSettings().mesh_degree
    theirs = None if reference is None else [x * 1000 for x in reference["latencies"]]
    cpu_rows: list[TableRow] = []
    if cpu_per_delivery is not None:
        total, busy, upkeep = cpu_per_delivery
        floor = verify_and_decode_us(args.size)
        cpu_rows += [
            (
                "CPU per delivered message per node (us)",
                total,
                floor,
                "all worker CPU over the phase / deliveries; reference: one"
                " strict signature check plus one decode (goal <= 2x)",
            ),
            (
                "the same, less the nodes' idle upkeep (us)",
                busy,
                floor,
                f"idle upkeep: {upkeep:.0f} us of CPU per node per second",
            ),
        ]
    return [
        (
            "delivery to live subscribers, steady (%)",
            delivery,
            None
            if reference is None
            else 100 * reference["delivered"] / reference["expected"],
            f"{args.messages} messages of {args.size} B from random origins",
        ),
        (
            "latency p50 (ms)",
            percentile(latencies, 0.5),
            None if theirs is None else percentile(theirs, 0.5),
            "reference: one hop, notify_all over a full mesh",
        ),
        (
            "latency p99 (ms)",
            p99,
            None if theirs is None else percentile(theirs, 0.99),
            f"deliveries at or past p99: {max(hop_of, default=0)} mesh hops at"
            f" most, median {hop_of[len(hop_of) // 2] if hop_of else 0}",
        ),
        (
            "mesh hops from origin per delivery, mean",
            sum(hops) / len(hops) if hops else float("nan"),
            None,
            "over the meshes as the steady phase began;"
            f" at most {max(hops, default=0)}",
        ),
        (
            "duplicates received per node per message",
            duplicates,
            float(d),
            f"reference: D = {d}, the bound",
        ),
        (
            "origin upload per publish (bytes)",
            upload,
            reference["upload"] if reference else (n - 1) * frame,
            "reference: notify_all to N-1 peers"
            + ("" if reference else f" (computed: {n - 1} x {frame} B frame)"),
        ),
        (
            "origin upload per publish (frames)",
            upload / gossip_frame,
            float(n - 1),
            f"target peers {args.target_peers}; "
            + (
                "flood publish (the default) reaches every peer of the topic"
                if args.flood_publish
                else "flood_publish off: the mesh only"
            ),
        ),
        (
            "network upload per message (bytes)",
            network_bytes,
            reference["upload"] if reference else (n - 1) * frame,
            "all gossip frames (forwards, IHave/IWant/IDontWant, control) per"
            " message; IDontWant "
            + ("off" if args.idontwant is None else f"from {args.idontwant} B"),
        ),
        *cpu_rows,
    ]


#: Seconds the nodes' idle upkeep is measured before the steady phase.
IDLE_SECONDS = 3.0


def workers_cpu(workers: list[Worker]) -> float:
    """The CPU seconds all workers have used so far."""
    return sum(float(r["cpu"]) for r in ask_all(workers, {"cmd": "cpu"}))


def verify_and_decode_us(size: int, rounds: int = 2000) -> float:
    """Microseconds for one strict signature check and one decode of a
    ``size``-byte publication's frame body: what a node must do with each
    message it takes (the median of five timed runs, in this process)."""
    from blueprint_net import Identity
    from blueprint_net._core import gossip_wire

    origin = Identity.generate()
    data = b"x" * size
    signed = gossip_wire.signed_bytes(TOPIC, origin.peer_id, 1, data)
    message = gossip_wire.Publish(TOPIC, origin.peer_id, 1, data, origin.sign(signed))
    body = gossip_wire.encode(message)
    key = origin.peer_id.public_key
    runs = []
    for _ in range(5):
        began = time.process_time()
        for _ in range(rounds):
            decoded = gossip_wire.decode(body)
            assert isinstance(decoded, gossip_wire.Publish)
            ok = origin.verify(
                key,
                gossip_wire.signed_bytes(
                    decoded.topic, decoded.origin, decoded.seqno, decoded.data
                ),
                decoded.signature,
            )
            assert ok
        runs.append((time.process_time() - began) / rounds * 1e6)
    return sorted(runs)[2]


def churn_rows(
    killed: int, repaired: Optional[float], phases: dict[str, tuple[float, int]]
) -> list[TableRow]:
    """The churn rows: ``phases`` maps before/during/after to (delivery %
    to survivors, messages)."""
    return [
        (
            f"churn: seconds to repair after SIGKILL of {killed} nodes",
            float("nan") if repaired is None else repaired,
            None,
            "every survivor at target degree with a mesh, one component",
        ),
        (
            "delivery to survivors before churn (%)",
            phases["before"][0],
            None,
            f"{phases['before'][1]} messages",
        ),
        (
            "delivery to survivors during repair (%)",
            phases["during"][0],
            None,
            f"{phases['during'][1]} messages while meshes were repaired",
        ),
        (
            "delivery to survivors after repair (%)",
            phases["after"][0],
            None,
            f"{phases['after'][1]} messages",
        ),
    ]


def run(args: argparse.Namespace) -> list[TableRow]:
    n, target, rng = args.nodes, args.target_peers, random.Random(args.seed)
    per = math.ceil(n / args.processes)
    workers = [Worker(k) for k in range(math.ceil(n / per))]
    where = {i: workers[i // per] for i in range(n)}
    rows: list[TableRow] = []
    try:
        seed = workers[0].ask(
            {
                "cmd": "start",
                "indices": [0],
                "bootstrap": None,
                "target": target,
                "flood": args.flood_publish,
                "idontwant": args.idontwant,
                "validate": args.validate_ms / 1000,
            }
        )["nodes"][0]
        for k, worker in enumerate(workers):
            indices = [i for i in range(k * per, min(n, (k + 1) * per)) if i]
            worker.send(
                {
                    "cmd": "start",
                    "indices": indices,
                    "bootstrap": seed["at"],
                    "target": target,
                    "flood": args.flood_publish,
                    "idontwant": args.idontwant,
                    "validate": args.validate_ms / 1000,
                }
            )
        began = time.monotonic()
        deadline = began + 120
        for worker in workers:
            worker.receive(deadline)
        took = wait_ready(workers, target, args.limit)
        if took is None:
            raise SystemExit(f"the overlay was not ready within {args.limit} s")
        rows.append(
            (
                f"N={n}: seconds to target degree {target} and one component",
                time.monotonic() - began,
                None,
                f"{len(workers)} processes, TLS, one bootstrap address",
            )
        )
        status = nodes_status(workers)
        hops = mesh_hops(status)
        ids = {s["i"]: s["id"] for s in status}
        sent_before = sum(s["sent"] for s in status)
        dup_before = sum(s["duplicate"] for s in status)
        live = set(range(n))

        # -- steady state ------------------------------------------------------
        # First the nodes' upkeep alone (heartbeats, IHave, keepalive, the
        # connection managers): CPU per node per second with nothing sent.
        idle_began, idle_cpu = time.monotonic(), workers_cpu(workers)
        time.sleep(IDLE_SECONDS)
        upkeep = (workers_cpu(workers) - idle_cpu) / (
            n * (time.monotonic() - idle_began)
        )
        steady = Phase("steady")
        began, cpu_before = time.monotonic(), workers_cpu(workers)
        for _ in range(args.messages):
            steady.publish(workers, where, rng.randrange(n), args.size)
            time.sleep(1 / args.rate)
        settle(workers, [steady], live, args.settle)
        cpu = workers_cpu(workers) - cpu_before
        busy = cpu - upkeep * n * (time.monotonic() - began)
        status = nodes_status(workers)
        network_bytes = (sum(s["sent"] for s in status) - sent_before) / args.messages
        dups = (sum(s["duplicate"] for s in status) - dup_before) / (
            args.messages * (n - 1)
        )
        remote = [
            (i, tag, lat)
            for i, tag, lat in steady.deliveries
            if i != steady.tags[tag][0]  # not the origin's own local delivery
        ]
        reference = None
        if n <= args.full_mesh_max:
            reference = workers[0].ask(
                {
                    "cmd": "mesh_reference",
                    "nodes": n,
                    "messages": args.messages,
                    "size": args.size,
                    "rate": args.rate,
                },
                timeout=300,
            )
        rows += steady_rows(
            args,
            n,
            delivery=100 * steady.ratio(live),
            latencies=[lat * 1000 for _, _, lat in remote],
            hops=[
                hops[ids[steady.tags[tag][0]]].get(ids[i], -1) for i, tag, _ in remote
            ],
            duplicates=dups,
            uploads=steady.uploads,
            network_bytes=network_bytes,
            reference=reference,
            cpu_per_delivery=(
                cpu / len(steady.deliveries) * 1e6,
                busy / len(steady.deliveries) * 1e6,
                upkeep * 1e6,
            ),
        )

        # -- churn -------------------------------------------------------------
        victims = [w for w in workers[1:]][: max(1, round(0.2 * len(workers)))]
        killed = {i for i, w in where.items() if w in victims}
        before = Phase("before")
        for _ in range(args.messages // 2):
            before.publish(workers, where, rng.choice(sorted(live)), args.size)
            time.sleep(1 / args.rate)
        settle(workers, [before], live, args.settle)
        for worker in victims:
            worker.kill()
        live -= killed
        dead_at = time.monotonic()
        during = Phase("during")
        repaired: Optional[float] = None
        while time.monotonic() - dead_at < args.limit:
            during.publish(workers, where, rng.choice(sorted(live)), args.size)
            time.sleep(1 / args.rate)
            if len(during.tags) % 5 == 0 and ready(nodes_status(workers), target):
                repaired = time.monotonic() - dead_at
                break
        settle(workers, [during], live, args.settle)
        after = Phase("after")
        for _ in range(args.messages // 2):
            after.publish(workers, where, rng.choice(sorted(live)), args.size)
            time.sleep(1 / args.rate)
        settle(workers, [after], live, args.settle)
        rows += churn_rows(
            len(killed),
            repaired,
            {
                p.name: (100 * p.ratio(live), len(p.tags))
                for p in (before, during, after)
            },
        )
        return rows
    finally:
        for worker in workers:
            worker.close()


def settle(
    workers: list[Worker], phases: list[Phase], live: set[int], seconds: float
) -> None:
    """Collect deliveries until every live node has every message, or for
    ``seconds`` at most."""
    deadline = time.monotonic() + seconds
    while True:
        collect(workers, phases)
        if all(phase.ratio(live) >= 1 for phase in phases):
            return
        if time.monotonic() > deadline:
            return
        time.sleep(0.2)


def _threshold(text: str) -> Optional[int]:
    return None if text == "off" else int(text)


def _default_threshold() -> Optional[int]:
    from blueprint_net.gossip import GossipSettings

    return GossipSettings().idontwant_threshold


def main(argv: Optional[list[str]] = None) -> None:
    if argv is None and sys.argv[1:2] == [WORKER]:
        worker_main()
        return
    parser = argparse.ArgumentParser(prog="python -m bench.network")
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--processes", type=int, default=10)
    parser.add_argument("--target-peers", type=int, default=8)
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rate", type=float, default=20.0, help="publishes/s")
    parser.add_argument("--limit", type=float, default=120.0, help="longest wait, s")
    parser.add_argument("--settle", type=float, default=10.0)
    parser.add_argument("--full-mesh-max", type=int, default=40)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument(
        "--idontwant",
        type=_threshold,
        default=_default_threshold(),
        metavar="BYTES|off",
        help="GossipSettings.idontwant_threshold (default %(default)s)",
    )
    parser.add_argument(
        "--validate-ms",
        type=float,
        default=0.0,
        help="each node's validator accepts after this long (default: none)",
    )
    parser.add_argument(
        "--no-flood-publish",
        dest="flood_publish",
        action="store_false",
        help="origins send to their mesh only (GossipSettings.flood_publish)",
    )
    simulation = parser.add_argument_group(
        "simulation", "--simulate N: N nodes on a fake clock, no sockets"
    )
    simulation.add_argument("--simulate", type=int, metavar="N")
    simulation.add_argument(
        "--budget", type=float, default=1800.0, help="wall-clock seconds at most"
    )
    simulation.add_argument(
        "--verify",
        choices=("each", "once"),
        help="verify signatures at each receipt, or each distinct one once"
        " (default: each up to 1,000 nodes)",
    )
    simulation.add_argument(
        "--warmup",
        type=float,
        default=25.0,
        help="simulated seconds before the steady phase begins, at least",
    )
    simulation.add_argument(
        "--bootstraps",
        type=int,
        metavar="K",
        help="bootstrap nodes; each other node knows two of them (default:"
        " one up to 1,000 nodes, else one per 500, as a node takes 1,024"
        " connections)",
    )
    simulation.add_argument(
        "--max-connections",
        type=int,
        metavar="C",
        help="connections a simulated node takes at once (default: a node's"
        " 1,024; more lifts the limit, as no real node does)",
    )
    simulation.add_argument("--link-ms", type=float, default=10.0)
    simulation.add_argument("--link-sigma", type=float, default=0.5)
    simulation.add_argument("--upload-mbps", type=float, default=100.0)
    args = parser.parse_args(argv)
    if args.simulate is None and not 2 <= args.nodes <= 1000:
        parser.error("--nodes must be 2 to 1000")
    if args.simulate is not None and not 2 <= args.simulate <= 60000:
        parser.error("--simulate must be 2 to 60000")
    if args.bootstraps is not None and not 1 <= args.bootstraps <= (args.simulate or 0):
        parser.error("--bootstraps must be 1 to N, with --simulate N")
    if args.max_connections is not None and (
        args.simulate is None or args.max_connections <= 4 * args.target_peers
    ):
        # A full bootstrap node never trims: its inbound cap (3 x target)
        # and its own outbound peers must fit under the limit.
        parser.error(
            "--max-connections must be above 4 x --target-peers, with --simulate N"
        )
    from .report import Row, load_header, table

    print(load_header(), flush=True)
    if args.simulate is not None:
        from . import simulate

        header, rows = simulate.run(args)
        print("\n".join(header))
    else:
        rows = run(args)
    print(table([Row(name, ours, ref, note) for name, ours, ref, note in rows]))


if __name__ == "__main__":
    main()
