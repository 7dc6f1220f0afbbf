"""A gossip network simulated in one process: ``python -m bench.network
--simulate N``.

In: the command line of ``bench.network``.  Out: the same table as the real
run, with the figures of N simulated nodes.  Each node is the shipped code
without its sockets: a sans-IO :class:`~blueprint_net._core.pubsub.Router`,
driven by the calls the Twisted adapter (``_adapters/gossip.py``) makes --
``peer_connected``, ``peer_disconnected``, ``receive``, ``validated``,
``publish``, ``subscribe``, ``heartbeat``, ``request_records``, ``records_due``,
``set_addresses`` -- and discovery's own ``ConnectionManager`` (its
decisions are ``_policy/discovery.py``'s), handed a stand-in node as
``INode`` allows.  What replaces the network:

* time is a number: :class:`EventQueue` is a priority queue of calls (the
  clock the Twisted parts see, ``seconds()`` and ``callLater``); there is no
  reactor and no socket, so N is bounded by memory and patience, not by
  file descriptors or cores;
* :class:`LatencyModel`: each link's one-way delay is drawn once, from a
  log-normal distribution, by a seeded ``random.Random``; each node uploads
  at most ``bandwidth`` bytes a second, so a frame waits for the frames its
  node queued before it; a dial takes ``handshake_rtts`` round trips, and a
  dial to a dead node fails after one, and so does a dial to a node that
  has ``ConnectionLimits.max_connections`` connections open or opening
  (the shipped limit: a thousand nodes dialing one bootstrap at once fill
  it, and the rest come back after their back-off, as they would at real
  nodes; past 1,000 nodes there are several bootstraps, ``--bootstraps``);
* a frame is the router's message object, handed over at its arrival time
  (never decoded); its size is its encoding's, counted once per send;
* signatures are real: each publication and record is signed once by its
  origin.  Each receipt verifies (``--verify each``, what nodes do) or, for
  large N, each distinct signature is verified once and remembered
  (``--verify once``; the table's header says which).

What it does not model: CPU time (a node handles a frame the instant it
arrives), packet loss, TCP's own flow control.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import math
import random
import re
import time
from collections import Counter
from typing import Any, Callable, Optional, cast

import attrs
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionRefusedError

from blueprint_net._adapters.connection_manager import ConnectionManager
from blueprint_net._adapters.facade import INode
from blueprint_net._adapters.peers import Peer
from blueprint_net._core import gossip_wire, telemetry
from blueprint_net._core.gossip_outputs import (
    Deliver,
    Discovered,
    Penalty,
    RouterOutput,
    Send,
    Validate,
    Verdict,
)
from blueprint_net._core.gossip_settings import GossipSettings
from blueprint_net._core.gossip_wire import GossipWireMessage, Publish
from blueprint_net._core.identity import Identity, PeerId
from blueprint_net._core.pubsub import Router
from blueprint_net._core.records import PeerRecord, RecordBook
from blueprint_net._policy import discovery
from blueprint_net._policy.discovery import DiscoverySettings, Scope
from blueprint_net._policy.limits import ConnectionLimits

#: The port every simulated node listens on (each has its own host).
PORT = 7000
#: A node's connections at once, both directions, as a node's default.
MAX_CONNECTIONS = ConnectionLimits().max_connections
#: Router counters that mean "a duplicate" (the real run's ``duplicate``).
DUPLICATES = (telemetry.PUBLISH_DUPLICATE.key, telemetry.PUBLISH_POSSIBLY_SEEN.key)


# -- the fake clock -------------------------------------------------------------


class Timer:
    """A call :meth:`EventQueue.callLater` scheduled (``IDelayedCall``'s
    part that ``LoopingCall`` and the connection manager use)."""

    __slots__ = ("args", "call", "called", "cancelled", "kwargs", "time")

    def __init__(self, when: float, call: Callable[..., Any], args: Any, kw: Any):
        self.time, self.call, self.args, self.kwargs = when, call, args, kw
        self.cancelled = self.called = False

    def getTime(self) -> float:
        return self.time

    def active(self) -> bool:
        return not (self.cancelled or self.called)

    def cancel(self) -> None:
        self.cancelled = True

    def fire(self) -> None:
        if not self.cancelled:
            self.called = True
            self.call(*self.args, **self.kwargs)


class EventQueue:
    """Simulated time: calls ordered by (time, order scheduled).

    :meth:`at` is the cheap path (frames: no handle to cancel);
    :meth:`callLater` returns a :class:`Timer` as Twisted's clocks do.  Time
    only moves when :meth:`run_until` takes the next call.  Not
    ``twisted.internet.task.Clock``: its ``callLater`` sorts every pending
    call each time, and ``advance`` walks them; at 10,000 nodes, with a
    frame in flight per link, a heap is what keeps a run in minutes."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now
        self._heap: list[tuple[float, int, Callable[..., Any], tuple[Any, ...]]] = []
        self._order = itertools.count()
        self.ran = 0

    def seconds(self) -> float:
        return self.now

    def at(self, when: float, call: Callable[..., Any], *args: Any) -> None:
        heapq.heappush(self._heap, (max(when, self.now), next(self._order), call, args))

    def callLater(
        self, delay: float, call: Callable[..., Any], *a: Any, **kw: Any
    ) -> Timer:
        timer = Timer(self.now + max(0.0, delay), call, a, kw)
        self.at(timer.time, timer.fire)
        return timer

    def __len__(self) -> int:
        return len(self._heap)

    def run_until(self, when: float) -> None:
        """Run every call due by ``when``, in order; then the time is ``when``."""
        heap, pop = self._heap, heapq.heappop
        while heap and heap[0][0] <= when:
            self.now, _, call, args = pop(heap)
            call(*args)
            self.ran += 1
        self.now = max(self.now, when)


# -- the latency model -----------------------------------------------------------


@attrs.frozen
class LatencyModel:
    """How long a frame takes: the link's delay after the sender's upload."""

    #: Median one-way delay of a link (seconds), and the log-normal spread
    #: (sigma of its log): 0.5 puts the 5th-95th percentiles at 0.44-2.3x.
    median: float = 0.010
    sigma: float = 0.5
    #: Bytes a second one node uploads (12.5 MB/s: 100 Mbit/s).
    bandwidth: float = 12.5e6
    #: Round trips from dial to verified peer (TCP connect, TLS 1.3, the
    #: blueprint handshake's identity proof).
    handshake_rtts: float = 3.0
    #: Seconds the application's validator takes to accept a publication
    #: (``--validate-ms``; 0: at once, the adapter's default without one).
    validate: float = 0.0

    def link_delay(self, rng: random.Random) -> float:
        return rng.lognormvariate(math.log(self.median), self.sigma)


@attrs.define
class Link:
    """One open connection between two nodes (its delay both ways)."""

    delay: float
    open: bool = True


# -- signatures ---------------------------------------------------------------


class SimIdentity(Identity):
    """A real key pair whose verifications are counted; with ``once``, each
    distinct (key, bytes, signature) is verified for real the first time
    and its answer remembered (the simulation shares it between nodes)."""

    verified = 0
    remembered: Optional[dict[tuple[bytes, bytes, bytes], bool]] = None

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        table = SimIdentity.remembered
        if table is None:
            SimIdentity.verified += 1
            return super().verify(public_key, message, signature)
        key = (public_key, signature, message)
        known = table.get(key)
        if known is None:
            SimIdentity.verified += 1
            known = table[key] = super().verify(public_key, message, signature)
        return known


# -- a node ---------------------------------------------------------------------


class _NoBans:
    def peer_ban(self, peer_id: PeerId) -> None:
        return None

    def address_ban(self, host: str) -> None:
        return None


class _Open:
    permitted = None


class SimGossip:
    """What the connection manager uses of a node's gossip (the adapter's
    thin calls into the router), for a simulated node."""

    def __init__(self, node: SimNode) -> None:
        self._node = node
        self.router = node.router
        self.discovered: list[Callable[[PeerId, tuple[PeerRecord, ...]], None]] = []

    def start(self) -> None:
        self._node.start_heartbeat()

    def on_discovered(
        self, callback: Callable[[PeerId, tuple[PeerRecord, ...]], None]
    ) -> None:
        self.discovered.append(callback)

    def group_sources(self, netgroup: Callable[[PeerId], Any]) -> None:
        self.router.exchange.book.netgroup = netgroup

    @property
    def records(self) -> RecordBook:
        return self.router.exchange.book

    @property
    def own_record(self) -> Optional[PeerRecord]:
        return self.router.exchange.own_record

    def set_addresses(self, addresses: list[str]) -> PeerRecord:
        return self.router.exchange.set_addresses(addresses, self._node.clock.now)

    def mark_tried(self, peer_id: PeerId) -> None:
        self.router.exchange.book.mark_tried(peer_id)

    def forget_record(self, peer_id: PeerId) -> None:
        self.router.exchange.book.forget(peer_id)

    def request_records(self, peer_id: PeerId) -> None:
        self._node.run(self.router.exchange.request(peer_id, self._node.clock.now))

    def records_due(self, peer_id: PeerId) -> bool:
        return self.router.exchange.due(peer_id, self._node.clock.now)


_ENDPOINT = re.compile(r"p2ptls:(?:host=)?([0-9.]+):(?:port=)?(\d+)")


class SimNode:
    """One node: its router, its connection manager, its links (the
    members ``INode`` declares, backed by the simulation)."""

    def __init__(self, net: Network, index: int, identity: Identity) -> None:
        self.net, self.index, self.clock = net, index, net.clock
        self.peer_id = identity.peer_id
        self.host = net.host(index)
        self.listening_addresses = [(self.host, PORT)]
        self.counters: Counter[str] = Counter()
        self.policy, self.bans = _Open(), _NoBans()
        self.stopping = False
        self.router = Router(
            identity,
            net.gossip_settings,
            now=net.clock.now,
            rng=random.Random(net.seed * 1_000_003 + index),
        )
        self.gossip = SimGossip(self)
        self.links: dict[PeerId, Link] = {}
        self._peers: dict[PeerId, Peer] = {}
        #: Handshakes under way, either way (they count against the limit).
        self.opening = 0
        self._verified: list[Callable[[Peer], Any]] = []
        self.busy_until = 0.0  # the upload queue is empty from then
        self.sent_bytes = self.sent_frames = 0
        #: Hops from the origin of each message this node accepted.
        self.hops: dict[bytes, int] = {}
        self._hop_now = 0
        self._heartbeat: Optional[Timer] = None
        self.manager: Optional[ConnectionManager] = None

    @property
    def alive(self) -> bool:
        return not self.stopping

    @property
    def open(self) -> int:
        """Connections open or opening (``ConnectionLimits.max_connections``)."""
        return len(self.links) + self.opening

    # INode ------------------------------------------------------------------

    @property
    def peers(self) -> list[Peer]:
        return list(self._peers.values())

    def peer(self, peer_id: PeerId) -> Optional[Peer]:
        return self._peers.get(peer_id)

    def dial_scopes(self) -> frozenset[Scope]:
        return discovery.dial_scopes([self.host])

    def on_peer_verified(self, callback: Callable[[Peer], Any]) -> None:
        self._verified.append(callback)

    def on_peer_lost(self, callback: Callable[[Peer], Any]) -> None:
        pass  # nothing beside a simulated node listens for it

    def connect(self, endpoint: Any, peer_id: Optional[PeerId] = None) -> Any:
        return self.net.dial(self, str(endpoint), peer_id)

    def disconnect(self, peer_id: PeerId, error: Any = None) -> Any:
        link = self.links.get(peer_id)
        if link is not None:
            self.net.close(self, self.net.by_id[peer_id], link, link.delay)
        return defer.succeed(None)

    # the adapter's part ----------------------------------------------------

    def start_heartbeat(self) -> None:
        if self._heartbeat is None and self.alive:
            interval = self.net.gossip_settings.heartbeat_interval
            # Nodes start their heartbeats out of step, as real ones do.
            delay = interval * self.net.rng.random()
            self._heartbeat = self.clock.callLater(delay, self._beat)

    def _beat(self) -> None:
        if not self.alive:
            return
        self._heartbeat = self.clock.callLater(
            self.net.gossip_settings.heartbeat_interval, self._beat
        )
        self.run(self.router.heartbeat(self.clock.now))

    def connected(self, other: SimNode, link: Link, outbound: bool) -> Peer:
        address = IPv4Address("TCP", other.host, PORT)
        direction = "outbound" if outbound else "inbound"
        peer = Peer(other.peer_id, address, self.clock.now, direction)
        self.links[other.peer_id], self._peers[other.peer_id] = link, peer
        self.run(self.router.peer_connected(other.peer_id, outbound=outbound))
        for callback in self._verified:
            callback(peer)
        return peer

    def lost(self, other: PeerId) -> None:
        self.links.pop(other, None)
        self._peers.pop(other, None)
        self.run(self.router.peer_disconnected(other))

    def receive(self, sender: PeerId, link: Link, message: Any, hops: int) -> None:
        if not (link.open and self.alive):
            return
        self._hop_now = hops
        self.run(self.router.receive(sender, message, self.clock.now))

    def run(self, outputs: list[RouterOutput]) -> None:
        """Carry out the router's outputs, in order (as the adapter does)."""
        for output in outputs:
            if isinstance(output, Send):
                self._send(output.peers, output.message)
            elif isinstance(output, Validate):
                # Accepted at once (the adapter's default without a
                # validator), or after the model's validation time.
                self.hops[output.message_id] = self._hop_now
                delay = self.net.latency.validate
                if delay:
                    self.clock.callLater(delay, self._accept, output.message_id)
                else:
                    self._accept(output.message_id)
            elif isinstance(output, Deliver):
                self.net.delivered(self, output.message)
            elif isinstance(output, Penalty):
                self.net.penalties[output.fault.value] += 1
            elif isinstance(output, Discovered):
                for callback in self.gossip.discovered:
                    callback(output.source, output.records)

    def _accept(self, message_id: bytes) -> None:
        if not self.stopping:
            self.run(self.router.validated(message_id, Verdict.ACCEPT, self.clock.now))

    def _send(self, peers: tuple[PeerId, ...], message: GossipWireMessage) -> None:
        size = self.net.frame_size(message)
        hops = 1
        if isinstance(message, Publish):
            hops += self.hops.get(message.message_id, 0)
        model, now, at = self.net.latency, self.clock.now, self.clock.at
        start = max(now, self.busy_until)
        for peer in peers:
            link = self.links.get(peer)
            if link is None:
                continue
            start += size / model.bandwidth
            at(
                start + link.delay,
                self.net.by_id[peer].receive,
                self.peer_id,
                link,
                message,
                hops,
            )
            self.sent_frames += 1
            self.sent_bytes += size
        self.busy_until = start

    def kill(self) -> None:
        """SIGKILL: gone at once; each peer's socket closes after the link's
        delay (the kernel resets the connections)."""
        self.stopping = True
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if self.manager is not None:
            self.manager.stopService()
        for peer_id, link in list(self.links.items()):
            self.net.close(self, self.net.by_id[peer_id], link, link.delay)


# -- the network --------------------------------------------------------------


class Network:
    """N simulated nodes, their links and what they delivered."""

    def __init__(
        self,
        count: int,
        *,
        seed: int,
        target: int,
        latency: LatencyModel,
        gossip: GossipSettings,
        topic: str,
        host: Callable[[int], str],
        bootstraps: int = 1,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.clock = EventQueue()
        self.rng = random.Random(seed)
        self.seed, self.latency, self.topic = seed, latency, topic
        self.gossip_settings, self.host = gossip, host
        self.max_connections = max_connections
        self.penalties: Counter[str] = Counter()
        self._sizes: dict[bytes, int] = {}
        self._delays: dict[tuple[int, int], float] = {}
        #: (node index, message id) -> (latency s, hops): first deliveries.
        self.deliveries: dict[tuple[int, bytes], tuple[float, int]] = {}
        self.published: dict[bytes, tuple[int, float]] = {}  # id -> origin, when
        keys = random.Random(seed + 1)
        self.nodes = [
            SimNode(self, i, SimIdentity(keys.randbytes(32))) for i in range(count)
        ]
        self.by_id = {node.peer_id: node for node in self.nodes}
        self.by_host = {node.host: node for node in self.nodes}
        # K bootstrap nodes, the first K.  Each of the others knows two of
        # them (one if K is 1), drawn by a seeded RNG, so each is dialed by
        # about 2N/K nodes at the start; the bootstrap nodes know node 0.
        # Two, not one: a bootstrap answers with records of its own peers,
        # so nodes that shared only one bootstrap would form K clusters.
        chooser = random.Random(seed + 2)
        for node in self.nodes:
            index = node.index
            if index >= bootstraps:
                known = chooser.sample(range(bootstraps), min(2, bootstraps))
            else:
                known = [0] if index else []
            node.manager = ConnectionManager(
                cast(INode, node),
                DiscoverySettings(target_peers=target),
                bootstrap=[f"p2ptls:{self.nodes[k].host}:{PORT}" for k in known],
                rng=random.Random(index),
            )

    def start(self, spread: float = 0.5) -> None:
        """Every node subscribes and starts its manager within ``spread`` s."""
        for node in self.nodes:
            self.clock.at(
                self.rng.random() * spread * (node.index > 0), self._start, node
            )

    def _start(self, node: SimNode) -> None:
        node.run(node.router.subscribe(self.topic, self.clock.now))
        node.start_heartbeat()
        assert node.manager is not None
        node.manager.startService()

    def frame_size(self, message: GossipWireMessage) -> int:
        if isinstance(message, Publish):
            mid = message.message_id
            size = self._sizes.get(mid)
            if size is None:
                size = self._sizes[mid] = len(gossip_wire.frame(message))
            return size
        return len(gossip_wire.frame(message))

    def delay(self, a: SimNode, b: SimNode) -> float:
        """The link delay between two hosts (drawn once: a reconnect takes
        the same path)."""
        key = (min(a.index, b.index), max(a.index, b.index))
        found = self._delays.get(key)
        if found is None:
            found = self._delays[key] = self.latency.link_delay(self.rng)
        return found

    def dial(self, node: SimNode, endpoint: str, peer_id: Optional[PeerId]) -> Any:
        dialing: defer.Deferred[Peer] = defer.Deferred()
        match = _ENDPOINT.fullmatch(endpoint)
        other = None if match is None else self.by_host.get(match[1])
        if peer_id is not None and peer_id in node._peers:
            dialing.callback(node._peers[peer_id])
            return dialing
        if other is None or other is node:
            self.clock.at(self.clock.now, _fail, dialing, "no such host")
            return dialing
        rtt = 2 * self.delay(node, other)
        if not other.alive or (peer_id is not None and peer_id != other.peer_id):
            self.clock.at(self.clock.now + rtt, _fail, dialing, "refused")
            return dialing
        if max(node.open, other.open) >= self.max_connections:
            self.clock.at(self.clock.now + rtt, _fail, dialing, "connection limit")
            return dialing
        node.opening += 1
        other.opening += 1
        when = self.clock.now + self.latency.handshake_rtts * rtt
        self.clock.at(when, self._handshake_done, node, other, dialing)
        return dialing

    def _handshake_done(
        self, node: SimNode, other: SimNode, dialing: defer.Deferred[Peer]
    ) -> None:
        node.opening -= 1
        other.opening -= 1
        if dialing.called:
            return  # cancelled (the manager stopped)
        if not (node.alive and other.alive):
            dialing.errback(ConnectionRefusedError("gone during the handshake"))
            return
        kept = node._peers.get(other.peer_id)
        if kept is not None:  # both dialed: one connection is kept
            dialing.callback(kept)
            return
        link = Link(self.delay(node, other))
        other.connected(node, link, outbound=False)
        dialing.callback(node.connected(other, link, outbound=True))

    def close(self, node: SimNode, other: SimNode, link: Link, delay: float) -> None:
        if not link.open:
            return
        link.open = False
        if node.alive:
            node.lost(other.peer_id)
        else:
            node.links.pop(other.peer_id, None)
            node._peers.pop(other.peer_id, None)
        self.clock.at(self.clock.now + delay, self._closed, other, node.peer_id, link)

    def _closed(self, node: SimNode, peer_id: PeerId, link: Link) -> None:
        if node.links.get(peer_id) is link:
            node.lost(peer_id)

    # publications --------------------------------------------------------------

    def publish(self, origin: SimNode, size: int) -> bytes:
        data = (b"%d" % len(self.published)).ljust(size, b".")
        now = self.clock.now
        outputs = origin.router.publish(self.topic, data, now)
        mid = gossip_wire.message_id(origin.peer_id, origin.router.seqno)
        self.published[mid] = (origin.index, now)
        origin.hops[mid] = 0
        before = origin.sent_bytes
        origin.run(outputs)
        self.last_upload = origin.sent_bytes - before
        return mid

    def delivered(self, node: SimNode, message: Publish) -> None:
        mid = message.message_id
        origin, when = self.published.get(mid, (-1, 0.0))
        if origin != node.index:
            self.deliveries.setdefault(
                (node.index, mid), (self.clock.now - when, node.hops.get(mid, 0))
            )

    # status ---------------------------------------------------------------------

    def live(self) -> list[SimNode]:
        return [node for node in self.nodes if node.alive]

    def duplicates(self) -> int:
        return sum(node.router.counters[k] for node in self.nodes for k in DUPLICATES)

    def sent_bytes(self) -> int:
        return sum(node.sent_bytes for node in self.nodes)


def _fail(dialing: defer.Deferred[Peer], why: str) -> None:
    if not dialing.called:
        dialing.errback(ConnectionRefusedError(why))


# -- the run --------------------------------------------------------------------


class OutOfTime(Exception):
    """The wall-clock budget (``--budget``) ran out."""


@attrs.define
class Phase:
    """Publications of one phase and who got them."""

    name: str
    origins: dict[bytes, int] = attrs.Factory(dict)
    uploads: list[int] = attrs.Factory(list)

    def ratio(self, net: Network, live: set[int]) -> float:
        """Deliveries to live non-origin nodes over those expected (%)."""
        want = sum(len(live - {origin}) for origin in self.origins.values())
        got = sum(
            1
            for i in live
            for mid, origin in self.origins.items()
            if i != origin and (i, mid) in net.deliveries
        )
        return 100 * got / want if want else float("nan")


def status(net: Network) -> list[dict[str, Any]]:
    """What ``bench.network``'s ``status`` command gives of each live node
    (ids as PeerId, not text: the checks only compare them)."""
    out = []
    for node in net.live():
        assert node.manager is not None
        out.append(
            {
                "i": node.index,
                "id": node.peer_id,
                "outbound": len(node.manager.outbound()),
                "peers": list(node._peers),
                "mesh": list(node.router.mesh.get(net.topic, ())),
            }
        )
    return out


def verify_cost(count: int = 300) -> float:
    """Seconds one strict verification of a 512-byte publication takes."""
    identity = Identity(bytes(32))
    data = gossip_wire.signed_bytes("bench", identity.peer_id, 1, b"." * 512)
    signature = identity.sign(data)
    began = time.perf_counter()
    for _ in range(count):
        identity.verify(identity.public_key, data, signature)
    return (time.perf_counter() - began) / count


def widen_address_cache(nodes: int) -> None:
    """Give this process's address cache room for every node's host.

    ``addresses.subnet`` (and discovery's ``scope`` and ``_dial_key``)
    keep a few thousand parsed addresses per process: room
    for one node's peers and records.  Here N nodes share one process, and
    each one's connection manager asks for the netgroups of its candidates
    every tick, so past a few thousand nodes the cache thrashes and the run
    spends its time parsing addresses (at N = 10,000, 75 minutes of CPU for
    5 simulated seconds) -- a cost no real node has.
    """
    from blueprint_net._policy import addresses, discovery

    wanted = 2 * nodes + 4096
    for name, homes in (
        ("subnet", (addresses, discovery)),
        ("scope", (discovery,)),
        ("_dial_key", (discovery,)),
    ):
        cached = getattr(homes[0], name)
        size = cached.cache_info().maxsize
        if size is None or size >= wanted:
            continue
        wider = functools.lru_cache(maxsize=wanted)(cached.__wrapped__)
        for module in homes:
            setattr(module, name, wider)


def run(args: Any) -> tuple[list[str], list[Any]]:
    """The simulated network's header lines and table rows (``bench.network``'s)."""
    from bench.network import TOPIC, churn_rows, host, mesh_hops, ready, steady_rows

    began = time.monotonic()
    deadline = began + args.budget
    n, target = args.simulate, args.target_peers
    # A node takes at most MAX_CONNECTIONS: a bootstrap node for every 500
    # nodes, each dialed by about a thousand at the start (each node knows
    # two; one bootstrap up to 1,000 nodes, known by all).  Drawn at random,
    # some get a few more than 1,024 dials: those are refused and come back
    # after their back-off, as they would be by a real node.
    bootstraps = args.bootstraps or (1 if n <= 1000 else math.ceil(n / 500))
    widen_address_cache(n)
    verify = args.verify or ("each" if n <= 1000 else "once")
    SimIdentity.verified = 0
    SimIdentity.remembered = None if verify == "each" else {}
    latency = LatencyModel(
        median=args.link_ms / 1000,
        sigma=args.link_sigma,
        bandwidth=args.upload_mbps * 125e3,
        validate=args.validate_ms / 1000,
    )
    net = Network(
        n,
        seed=args.seed,
        target=target,
        latency=latency,
        gossip=GossipSettings(
            flood_publish=args.flood_publish, idontwant_threshold=args.idontwant
        ),
        topic=TOPIC,
        host=host,
        bootstraps=bootstraps,
        max_connections=args.max_connections or MAX_CONNECTIONS,
    )
    clock, rng = net.clock, random.Random(args.seed)
    built = time.monotonic() - began
    rows: list[Any] = []

    def advance(seconds: float) -> None:
        end = clock.now + seconds
        while clock.now < end:
            clock.run_until(min(end, clock.now + 0.05))
            if time.monotonic() > deadline:
                raise OutOfTime

    def publish(phase: Phase, live: list[int]) -> None:
        mid = net.publish(net.nodes[rng.choice(live)], args.size)
        phase.origins[mid] = net.published[mid][0]
        phase.uploads.append(net.last_upload)
        advance(1 / args.rate)

    def settle(phase: Phase, live: set[int]) -> None:
        until = clock.now + args.settle
        while phase.ratio(net, live) < 100 and clock.now < until:
            advance(0.2)

    def converged(live: Optional[set[int]] = None) -> bool:
        return ready(status(net), target)

    try:
        net.start()
        took: Optional[float] = None
        while clock.now < args.limit:
            advance(0.25)
            if converged():
                took = clock.now
                break
        if took is None:
            raise SystemExit(f"the overlay was not ready within {args.limit} s")
        rows.append(
            (
                f"N={n}: seconds to target degree {target} and one component",
                took,
                None,
                f"simulated: {bootstraps} bootstrap address"
                f"{'es (each node knows two)' if bootstraps > 1 else ''},"
                f" {net.max_connections:,} connections a node at most,"
                " the shipped ConnectionManager",
            )
        )
        # The real run's start is CPU-bound (tens of seconds on 2 cores):
        # its steady phase meets meshes heartbeats have maintained and
        # inbound peers trimmed (after inbound_grace).  So does this one.
        advance(max(0.0, args.warmup - clock.now))
        snapshot = status(net)
        sent_before, dup_before = net.sent_bytes(), net.duplicates()
        everyone = list(range(n))
        live = set(everyone)
        steady = Phase("steady")
        for _ in range(args.messages):
            publish(steady, everyone)
        settle(steady, live)
        hops = mesh_hops(
            snapshot, {net.nodes[o].peer_id for o in steady.origins.values()}
        )
        remote = [
            (net.deliveries[i, mid], origin, i)
            for mid, origin in steady.origins.items()
            for i in everyone
            if i != origin and (i, mid) in net.deliveries
        ]
        rows += steady_rows(
            args,
            n,
            delivery=steady.ratio(net, live),
            latencies=[lat * 1000 for (lat, _), _, _ in remote],
            hops=[
                hops[net.nodes[o].peer_id].get(net.nodes[i].peer_id, -1)
                for _, o, i in remote
            ],
            duplicates=(net.duplicates() - dup_before) / (args.messages * (n - 1)),
            uploads=steady.uploads,
            network_bytes=(net.sent_bytes() - sent_before) / args.messages,
            reference=None,
        )
        path_hops = [h for (_, h), _, _ in remote]

        # -- churn: the nodes of "processes" 1 and 2 of 10, as the real run --
        per = math.ceil(n / args.processes)
        victims = max(1, round(0.2 * math.ceil(n / per)))
        killed = set(range(per, min(n, per * (1 + victims))))
        before = Phase("before")
        for _ in range(args.messages // 2):
            publish(before, sorted(live))
        settle(before, live)
        for index in sorted(killed):
            net.nodes[index].kill()
        live -= killed
        dead_at = clock.now
        during = Phase("during")
        repaired: Optional[float] = None
        while clock.now - dead_at < args.limit:
            publish(during, sorted(live))
            if len(during.origins) % 5 == 0 and converged():
                repaired = clock.now - dead_at
                break
        settle(during, live)
        after = Phase("after")
        for _ in range(args.messages // 2):
            publish(after, sorted(live))
        settle(after, live)
        rows += churn_rows(
            len(killed),
            repaired,
            {
                p.name: (p.ratio(net, live), len(p.origins))
                for p in (before, during, after)
            },
        )
        finished = "completed"
    except OutOfTime:
        finished = f"stopped by --budget {args.budget:g} s (the rows so far)"
    wall = time.monotonic() - began
    cost = verify_cost()
    header = [
        f"simulated: {n} nodes in one process on a fake clock (bench/simulate.py);"
        f" link delay log-normal, median {args.link_ms:g} ms, sigma"
        f" {args.link_sigma:g}; upload {args.upload_mbps:g} Mbit/s per node;"
        f" seed {args.seed}",
        f"simulated {clock.now:.1f} s in {wall:.1f} s of wall time"
        f" ({built:.1f} s to build; {clock.ran:,} events); {finished}",
    ]
    if verify == "each":
        header.append(
            f"signatures: verified at each receipt, as nodes do"
            f" ({SimIdentity.verified:,} verifications, {cost * 1e6:.0f} us each)"
        )
    else:
        header.append(
            f"signatures: each distinct signature verified once and the answer"
            f" shared ({SimIdentity.verified:,} verifications): NOT at each"
            f" receipt, which costs {cost * 1e6:.0f} us per receipt"
        )
    if "path_hops" in locals() and path_hops:
        header.append(
            f"hops the first copy of each delivery travelled: mean"
            f" {sum(path_hops) / len(path_hops):.2f}, at most {max(path_hops)}"
        )
    return header, rows
