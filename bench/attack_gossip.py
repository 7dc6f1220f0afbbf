"""Topic gossip under attack, on real loopback nodes (TLS, one process).

``python -m bench.attack_gossip [SECONDS] [--smoke]`` runs four attacks on a
victim node V and prints one row per figure:

* fresh-origin flood: V publishes 10 messages a second to its honest
  neighbour N, and so does H, whose only link is to V, while 0, 1 or 3
  verified attackers connected to V send it 600 publications a second
  each, every one signed by a new key; the row is the share of V's own
  messages and of H's (relayed by V) that N delivered;
* known-key flood: the same with 1 or 3 attackers that first make 60 keys
  each known at V (one accepted message a key), then flood with them;
* backoff exhaustion: 4,200 throwaway ids each announce the topic, send V a
  ``Prune`` with a one-hour backoff and leave (driven at V's router: that
  many real handshakes would take the phase's time); then an honest peer H
  leaves and rejoins the topic (its ``Prune`` asks V for a 3 s backoff).
  The rows are V's grafts H received during its backoff, and whether H
  banned V for them;
* subscription flood: attacking peers each announce 300 topics of 255
  bytes; the rows are the (peer, topic) entries V holds and its RSS growth
  per attacking peer (the process's, attackers included: an upper bound);
* control frames: one attacker sends ``Subscriptions`` frames of 1,024
  toggles as fast as its connection takes them; the row is the CPU time V
  spent on that connection (``time.process_time`` around its
  ``dataReceived``: decoding and routing) as a share of the phase.

Every loop is bounded in count and in time; loopback only.  ``--smoke``
runs each phase for a second at its smallest size (the test suite's check
that it runs).
"""

from __future__ import annotations

import argparse
import resource
import time
from typing import Any, Optional

from twisted.internet import defer, task

from blueprint_net import Identity, Settings
from blueprint_net._adapters.node import Node
from blueprint_net._core import gossip_wire
from blueprint_net._core.gossip_outputs import Fault
from blueprint_net._core.gossip_settings import DEFAULTS as GOSSIP_DEFAULTS
from blueprint_net._core.gossip_wire import Prune, Publish, Subscriptions
from blueprint_net._policy.limits import ConnectionLimits
from blueprint_net.gossip import GossipSettings

TOPIC = "bench"
#: Plenty of room: what is measured is gossip, not admission.
LIMITS = ConnectionLimits(
    max_connections=2048, max_handshaking=512, connect_rate=10_000, connect_burst=10_000
)
#: Patient deadlines: a busy machine must not close a link mid-phase.
PATIENT = Settings(first_frame_timeout=60.0, handshake_timeout=60.0)
JUNK_RATE = 600  # publications a second per attacking link
HONEST_RATE = 10  # V's own publications a second


def _node(gossip: GossipSettings = GOSSIP_DEFAULTS, **options: Any) -> Node:
    from twisted.internet import reactor

    return Node(
        Identity.generate(),
        reactor=reactor,
        limits=LIMITS,
        settings=PATIENT,
        gossip=gossip,
        **options,
    )


async def _listen(node: Node) -> str:
    port = await node.listen("p2ptls:0:interface=127.0.0.1")
    return f"p2ptls:127.0.0.1:{port.getHost().port}"  # type: ignore[attr-defined]


async def _sleep(seconds: float) -> None:
    from twisted.internet import reactor

    await task.deferLater(reactor, seconds, lambda: None)


async def _until(condition: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        await _sleep(0.01)
    return True


def _send(sender: Node, to: Node, message: gossip_wire.GossipWireMessage) -> bool:
    protocol = sender._peers.get(to.peer_id)
    if protocol is None or protocol.connection.closed:
        return False
    protocol.sender.send_frame(gossip_wire.frame(message))
    return True


def _rss() -> int:
    """Peak RSS of this process, in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


async def _shutdown(nodes: list[Node]) -> None:
    for node in nodes:
        await node.stop()


# -- 1. fresh origins ---------------------------------------------------------


async def fresh_origin_flood(
    attackers: int, seconds: float, *, known: int = 0
) -> tuple[float, float]:
    """The share (%) of V's own messages, and of those of H (connected to V
    alone, so relayed by V), that N delivers while ``attackers`` flood V.

    ``known``: each attacker first makes that many keys known at V (one
    accepted message each, within the new-origin burst), then floods with
    them, which the new-origin budget no longer holds."""
    victim, neighbour, relay = _node(), _node(), _node()
    bad = [_node() for _ in range(attackers)]
    nodes = [victim, neighbour, relay, *bad]
    try:
        where = await _listen(victim)
        for node in (neighbour, relay, *bad):
            await node.connect(where, victim.peer_id)
        got: list[bytes] = []
        neighbour.subscribe(TOPIC, lambda m: got.append(m.data))
        for node in (victim, relay, *bad):
            node.subscribe(TOPIC, lambda m: None)
        router = victim.gossip.router
        await _until(
            lambda: len(router.topic_peers.get(TOPIC, ())) == len(nodes) - 1, 10
        )
        await _sleep(1.5)  # a heartbeat grafts the meshes
        keys = [[Identity.generate() for _ in range(known)] for _ in bad]
        for node, mine in zip(bad, keys):
            for key in mine:
                _send(node, victim, _junk(time.time(), key))
        await _until(lambda: len(router.known_origins) >= known * len(bad), 10)
        # Junk signed beforehand (fresh keys, or the known ones), dated as sent.
        per_step = JUNK_RATE // 100
        steps = int(seconds * 100)

        def junk(mine: list[Identity], step: int, n: int) -> Publish:
            key = mine[(step * per_step + n) % len(mine)] if mine else None
            return _junk(time.time() + step / 100 + n * 1e-6, key)

        flood = [
            [[junk(mine, step, n) for n in range(per_step)] for step in range(steps)]
            for mine in keys
        ]
        own: list[bytes] = []
        relayed: list[bytes] = []
        start = time.monotonic()
        for step in range(steps):
            for node, messages in zip(bad, flood):
                for message in messages[step]:
                    _send(node, victim, message)
            if step % (100 // HONEST_RATE) == 0:
                own.append(b"own %d" % step)
                victim.publish(TOPIC, own[-1])
                relayed.append(b"relayed %d" % step)
                relay.publish(TOPIC, relayed[-1])
            late = start + (step + 1) / 100 - time.monotonic()
            await _sleep(max(late, 0))
        await _until(lambda: set(own + relayed) <= set(got), 3)

        def share(mine: list[bytes]) -> float:
            return 100 * len(set(mine) & set(got)) / max(len(mine), 1)

        return share(own), share(relayed)
    finally:
        await _shutdown(nodes)


def _junk(when: float, key: Optional[Identity] = None) -> Publish:
    key = key or Identity.generate()
    seqno = int(when * 1e9)
    signed = gossip_wire.signed_bytes(TOPIC, key.peer_id, seqno, b"junk")
    return Publish(TOPIC, key.peer_id, seqno, b"junk", key.sign(signed))


# -- 2. backoff exhaustion ----------------------------------------------------


async def backoff_exhaustion(throwaways: int) -> tuple[int, bool]:
    """H's count of V's grafts during its backoff, and whether H banned V."""
    backoff = 3
    victim = _node()
    honest = _node(GossipSettings(unsubscribe_backoff=backoff))
    nodes = [victim, honest]
    try:
        where = await _listen(victim)
        await honest.connect(where, victim.peer_id)
        victim.subscribe(TOPIC, lambda m: None)
        honest.subscribe(TOPIC, lambda m: None)
        router = victim.gossip.router
        await _until(lambda: honest.peer_id in router.mesh.get(TOPIC, ()), 10)
        now = victim.clock.seconds()
        for _ in range(throwaways):  # each announces, prunes us for an hour, leaves
            peer = Identity.generate().peer_id
            router.peer_connected(peer, outbound=False)
            router.receive(peer, Subscriptions(((True, TOPIC),)), now)
            router.receive(peer, Prune(TOPIC, 3600), now)
            router.peer_disconnected(peer)
        honest.unsubscribe(TOPIC)
        honest.subscribe(TOPIC, lambda m: None)
        fault = f"gossip.fault.{Fault.GRAFT_IN_BACKOFF.value}"
        await _sleep(backoff + 3)
        early = honest.gossip.router.counters["graft.in_backoff"]
        assert honest.counters[fault] <= early
        banned = honest.bans.peer_ban(victim.peer_id) is not None
        return early, banned
    finally:
        await _shutdown(nodes)


# -- 3. subscriptions ---------------------------------------------------------


async def subscription_flood(peers: int) -> tuple[int, float]:
    """Entries V holds, and RSS growth (KiB) per attacking peer."""
    victim = _node()
    bad = [_node() for _ in range(peers)]
    nodes = [victim, *bad]
    try:
        where = await _listen(victim)
        for start in range(0, peers, 25):
            await defer.gatherResults(
                [n.connect(where, victim.peer_id) for n in bad[start : start + 25]]
            )
        before = _rss()
        for index, node in enumerate(bad):
            topics = tuple((True, f"{index}-{n}-".ljust(255, "x")) for n in range(300))
            _send(node, victim, Subscriptions(topics))
        router = victim.gossip.router
        limit = min(peers * 256, victim.gossip.settings.max_subscriptions)
        await _until(lambda: router.subscriptions >= limit, 20)
        return router.subscriptions, (_rss() - before) / 1024 / max(peers, 1)
    finally:
        await _shutdown(nodes)


# -- 4. control frames --------------------------------------------------------


async def control_frames(seconds: float) -> tuple[float, Optional[float]]:
    """V's CPU share on the attacker's connection (%), and when (s) V banned
    the attacker (None if it did not within the phase)."""
    victim, attacker = _node(), _node()
    nodes = [victim, attacker]
    try:
        where = await _listen(victim)
        await attacker.connect(where, victim.peer_id)
        victim.subscribe(TOPIC, lambda m: None)
        protocol = victim._peers.get(attacker.peer_id)
        assert protocol is not None
        spent = [0.0]
        original = protocol.dataReceived

        def timed(data: bytes) -> None:
            began = time.process_time()
            try:
                original(data)
            finally:
                spent[0] += time.process_time() - began

        protocol.dataReceived = timed  # type: ignore[method-assign]
        toggles = Subscriptions(
            tuple(
                (n % 2 == 0, "toggled")
                for n in range(gossip_wire.MAX_SUBSCRIPTION_CHANGES)
            )
        )
        start = time.monotonic()
        banned: Optional[float] = None
        for _ in range(int(seconds * 1000)):  # bounded in count and time
            if time.monotonic() - start > seconds:
                break
            link = attacker._peers.get(victim.peer_id)
            if link is None or link.connection.closed:
                if banned is None:
                    banned = time.monotonic() - start
                await _sleep(0.01)
                continue
            if link.queued < 256 * 1024:
                for _ in range(4):
                    _send(attacker, victim, toggles)
            await _sleep(0)
        elapsed = time.monotonic() - start
        return 100 * spent[0] / elapsed, banned
    finally:
        await _shutdown(nodes)


# -- the table ----------------------------------------------------------------


async def run_gossip_attacks(
    reactor: Any, seconds: float, smoke: bool = False
) -> list[dict[str, Any]]:
    """Each attack's figures, one dict per row: ``attack``, ``figure``,
    ``value``."""
    rows: list[dict[str, Any]] = []

    def row(attack: str, figure: str, value: Any) -> None:
        rows.append({"attack": attack, "figure": figure, "value": value})

    for known, links in ((0, 0), (0, 1), (0, 3), (60, 1), (60, 3)):
        own, relayed = await fresh_origin_flood(links, seconds, known=known)
        attack = "known-key flood" if known else "fresh-origin flood"
        row(
            attack,
            f"own / relayed delivery, {links} attacking links (%)",
            f"{own:.1f} / {relayed:.1f}",
        )
    early, banned = await backoff_exhaustion(400 if smoke else 4200)
    row("backoff exhaustion", "early grafts the honest peer saw", early)
    row("backoff exhaustion", "honest peer banned the victim", banned)
    peers = 5 if smoke else 100
    held, per_peer = await subscription_flood(peers)
    row("subscription flood", f"entries held, {peers} peers x 300 topics", held)
    row("subscription flood", "RSS growth per attacking peer (KiB)", f"{per_peer:.0f}")
    share, banned_at = await control_frames(seconds)
    row("control frames", "victim CPU on the attacker's link (%)", f"{share:.1f}")
    row(
        "control frames",
        "attacker banned after (s)",
        "not banned" if banned_at is None else f"{banned_at:.1f}",
    )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'attack':<20} {'figure':<46} value"]
    lines += [f"{r['attack']:<20} {r['figure']:<46} {r['value']}" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.attack_gossip")
    parser.add_argument("seconds", nargs="?", type=float, default=8.0)
    parser.add_argument("--smoke", action="store_true", help="tiny and quick")
    options = parser.parse_args()
    seconds = 1.0 if options.smoke else min(options.seconds, 60.0)

    async def go(reactor: Any) -> None:
        print(
            table(await run_gossip_attacks(reactor, seconds, options.smoke)), flush=True
        )

    task.react(lambda reactor: defer.ensureDeferred(go(reactor)))


if __name__ == "__main__":
    main()
