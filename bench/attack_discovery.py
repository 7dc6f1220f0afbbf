"""Attacks on discovery: eclipse at start-up, and records that aim our dials.

``python -m bench.attack_discovery [--smoke]`` prints rows of
``name  figure  note``:

* **eclipse at start-up**: honest nodes (each on its own 127.10.i.1, one
  /24 each, a ``ConnectionManager`` bootstrapping from the first) form a
  network; a victim opens its port (127.20.0.1) and 60 Sybil identities
  from one /27 (127.66.0.1-30, two ids an address) race to connect to it
  before its manager starts, answer its record requests with Sybil records
  only, and never forward a publication.  The victim's manager then starts,
  with the first honest node as bootstrap.  At 10 s and 40 s: the honest
  outbound peers the victim keeps, and the share of 20 publications by
  honest nodes it receives.
* **record-aimed dials**: 480 records with fresh ids all pointing at one
  third-party host (127.99.0.1, a port each), given to a node by one peer;
  its dials to that host over one minute (a ``task.Clock``, the dials
  stubbed: nothing is sent).

Everything is on loopback and bounded in count and time; ``--smoke`` runs
a small network for a few seconds (the test suite's check that it runs).
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from typing import Any, Optional

import attrs
from twisted.internet import defer, task
from twisted.internet.address import IPv4Address

from blueprint_net import Identity, Node, Settings
from blueprint_net._adapters.connection_manager import ConnectionManager
from blueprint_net._core import gossip_wire
from blueprint_net._core.errors import ConnectFailed
from blueprint_net._core.gossip_outputs import Send
from blueprint_net._core.identity import PeerId
from blueprint_net._core.records import sign_record
from blueprint_net._policy.discovery import DiscoverySettings
from blueprint_net.gossip import GossipMessage

TOPIC = "news"
VICTIM_HOST = "127.20.0.1"
TARGET_HOST = "127.99.0.1"  # the third party records aim at (nobody listens)
#: The Sybils' /27: 30 usable addresses, several ids an address.
SYBIL_ADDRESSES = 30


def honest_host(index: int) -> str:
    return f"127.10.{index + 1}.1"


def sybil_host(index: int) -> str:
    return f"127.66.0.{1 + index % SYBIL_ADDRESSES}"


MakeNode = Callable[..., Node]


@attrs.define
class Swarm:
    """Honest nodes, Sybils and a victim, on one clock (the reactor, or a
    ``task.Clock`` in the tests, whose caller advances it)."""

    make: MakeNode
    clock: Any
    target: int
    honest: list[Node] = attrs.Factory(list)
    ports: list[int] = attrs.Factory(list)
    managers: list[ConnectionManager] = attrs.Factory(list)
    sybils: list[Node] = attrs.Factory(list)
    victim: Optional[Node] = None
    victim_manager: Optional[ConnectionManager] = None
    got: list[GossipMessage] = attrs.Factory(list)

    async def _listen(self, node: Node, host: str) -> int:
        port = await node.listen(f"p2ptls:0:interface={host}")
        address = port.getHost()
        assert isinstance(address, IPv4Address)
        return address.port

    def _manager(
        self, node: Node, bootstrap: list[str], seed: int
    ) -> ConnectionManager:
        manager = ConnectionManager(
            node,
            DiscoverySettings(target_peers=self.target),
            bootstrap=bootstrap,
            rng=random.Random(seed),
        )
        self.managers.append(manager)
        return manager

    async def start_honest(self, count: int) -> None:
        """``count`` honest nodes, subscribed, bootstrapping from the first."""
        for index in range(count):
            node = self.make(Identity.generate(), clock=self.clock)
            self.ports.append(await self._listen(node, honest_host(index)))
            self.honest.append(node)
            node.subscribe(TOPIC, lambda message: None)
        seed = f"p2ptls:{honest_host(0)}:{self.ports[0]}"
        for index, node in enumerate(self.honest):
            self._manager(node, [] if index == 0 else [seed], index).startService()

    async def start_sybils(self, count: int) -> None:
        """``count`` Sybils: each answers a record request with Sybil records
        only, and drops every publication, IHave and IWant."""
        records = []
        for index in range(count):
            node = self.make(Identity.generate(), clock=self.clock)
            port = await self._listen(node, sybil_host(index))
            records.append(node.gossip.set_addresses([f"{sybil_host(index)}:{port}"]))
            self.sybils.append(node)
        for index, node in enumerate(self.sybils):
            own = records[index]
            others = records[:index] + records[index + 1 :]
            _make_sybil(
                node, (own, *random.Random(index).sample(others, min(15, len(others))))
            )
            node.subscribe(TOPIC, lambda message: None)

    async def start_victim(self) -> None:
        """Open the victim's port, let every Sybil connect to it (the race),
        then start its manager with the first honest node as bootstrap."""
        victim = self.victim = self.make(Identity.generate(), clock=self.clock)
        port = await self._listen(victim, VICTIM_HOST)
        victim.subscribe(TOPIC, self.got.append)
        dials = [
            sybil.connect(
                f"p2ptls:host={VICTIM_HOST}:port={port}"
                f":bindAddress={sybil_host(index)}",
                victim.peer_id,
            )
            for index, sybil in enumerate(self.sybils)
        ]
        await defer.DeferredList(dials, consumeErrors=True)
        seed = f"p2ptls:{honest_host(0)}:{self.ports[0]}"
        self.victim_manager = self._manager(victim, [seed], 1000)
        self.victim_manager.startService()

    def honest_outbound(self) -> int:
        """Honest peers the victim dialed and keeps."""
        assert self.victim_manager is not None
        honest = {node.peer_id for node in self.honest}
        return sum(p.peer_id in honest for p in self.victim_manager.outbound())

    def sybil_outbound(self) -> int:
        assert self.victim_manager is not None
        sybils = {node.peer_id for node in self.sybils}
        return sum(p.peer_id in sybils for p in self.victim_manager.outbound())

    def publish(self, count: int) -> set[bytes]:
        """``count`` publications by honest nodes (in turn); their ids."""
        return {
            self.honest[n % len(self.honest)].publish(TOPIC, b"%d" % n)
            for n in range(count)
        }

    def delivered(self, ids: set[bytes]) -> int:
        return len(ids & {message.message_id for message in self.got})

    async def stop(self) -> None:
        for manager in self.managers:
            await manager.stopService()
        nodes = [*self.honest, *self.sybils]
        nodes += [self.victim] if self.victim is not None else []
        for node in nodes:
            await node.stop()


def _make_sybil(node: Node, answer: tuple[Any, ...]) -> None:
    """Make ``node`` answer record requests with ``answer`` and forward
    nothing: what a Sybil does to a victim, on its own router."""
    router = node.gossip.router
    receive = router.receive
    silent = (gossip_wire.Publish, gossip_wire.IHave, gossip_wire.IWant)

    def sybil_receive(
        peer: PeerId, message: Any, now: float, body: bytes = b""
    ) -> list[Any]:
        if isinstance(message, silent):
            return []
        if isinstance(message, gossip_wire.RecordsRequest):
            return [Send((peer,), gossip_wire.Records(answer[: message.limit]))]
        return receive(peer, message, now, body)

    router.receive = sybil_receive  # type: ignore[method-assign]


# -- the rows ------------------------------------------------------------------


def _sleep(reactor: Any, seconds: float) -> defer.Deferred[None]:
    return task.deferLater(reactor, seconds, lambda: None)


async def eclipse(
    reactor: Any, sybils: int, honest: int, target: int, checkpoints: tuple[float, ...]
) -> list[tuple[float, int, int, float]]:
    """(seconds, honest outbound, Sybil outbound, delivery %) at each
    checkpoint after the victim's manager started."""
    made: list[Node] = []

    def make(identity: Identity, **options: Any) -> Node:
        made.append(Node(identity, **options))
        return made[-1]

    swarm = Swarm(make, reactor, target)
    figures = []
    try:
        await swarm.start_honest(honest)
        # The honest network forms before the victim arrives.
        for _ in range(200):
            if all(len(n.peers) >= min(target, honest - 1) for n in swarm.honest):
                break
            await _sleep(reactor, 0.05)
        await swarm.start_sybils(sybils)
        start = reactor.seconds()
        await swarm.start_victim()
        for at in checkpoints:
            await _sleep(reactor, max(0.0, start + at - reactor.seconds()))
            honest_out, sybil_out = swarm.honest_outbound(), swarm.sybil_outbound()
            ids = swarm.publish(20)
            await _sleep(reactor, 1.0)
            share = 100.0 * swarm.delivered(ids) / len(ids)
            figures.append((at, honest_out, sybil_out, share))
    finally:
        await swarm.stop()
    return figures


def aimed_dials(records: int = 480, seconds: int = 60) -> int:
    """Dials to one third-party host in ``seconds`` by a node given
    ``records`` records (fresh ids, one port each) all pointing at it."""
    clock = task.Clock()
    node = Node(Identity.generate(), clock=clock, settings=Settings())
    source = Identity.generate().peer_id
    dials: list[Any] = []

    def connect(endpoint: Any, peer_id: Any = None) -> defer.Deferred[Any]:
        dials.append(endpoint)
        return defer.fail(ConnectFailed("refused (stubbed)"))

    node.connect = connect  # type: ignore[method-assign]
    manager = ConnectionManager(
        node, DiscoverySettings(), advertise=["127.0.0.1:7010"], rng=random.Random(1)
    )
    book = node.gossip.records
    for n in range(records):
        record = sign_record(Identity.generate(), 1, [f"{TARGET_HOST}:{1024 + n}"])
        book.offer(record, source, outbound=True)
    manager.startService()  # a round at 0 s, then one a second to 59 s
    for _ in range(seconds - 1):
        clock.advance(1.0)
    manager.stopService()
    return sum(f"host={TARGET_HOST}:" in str(endpoint) for endpoint in dials)


async def run(reactor: Any, smoke: bool) -> None:
    if smoke:
        sybils, honest, target, checkpoints = 6, 4, 3, (2.0, 4.0)
    else:
        sybils, honest, target, checkpoints = 60, 10, 8, (10.0, 40.0)
    figures = await eclipse(reactor, sybils, honest, target, checkpoints)
    rows = []
    for at, honest_out, sybil_out, share in figures:
        note = f"{sybils} Sybils from one /27, {honest} honest nodes, target {target}"
        name = f"eclipse at start-up, honest outbound peers at {at:g} s"
        rows.append((name, float(honest_out), f"{note}; Sybil outbound {sybil_out}"))
        name = f"eclipse at start-up, delivery at {at:g} s (%)"
        rows.append((name, share, note))
    aimed = 480 if not smoke else 48
    rows.append(
        (
            "record-aimed dials (dials per target per minute)",
            float(aimed_dials(aimed)),
            f"{aimed} records, fresh ids, one third-party IP",
        )
    )
    width = max(len(name) for name, _, _ in rows)
    for name, figure, note in rows:
        print(f"{name:<{width}}  {figure:>8.1f}  {note}")


def main() -> None:
    smoke = "--smoke" in sys.argv[1:]
    task.react(lambda reactor: defer.ensureDeferred(run(reactor, smoke)))


if __name__ == "__main__":
    main()
