"""Topic gossip on a node: the sans-IO router (``_core/pubsub.py``) driven
by the node's connections, clock and the application's handlers.

Layer: adapters.  The router decides everything; this module carries out its
outputs in order -- frames to peers (encoded once; a forward to a peer that
is not reading is dropped and counted, never waited for), validators (sync,
Deferred or coroutine), delivery to handlers, penalties to the node's
policy, discovered records to whoever listens -- and runs its heartbeat on
the node's clock.  Only verified connections of admitted peers reach it:
the node calls it after its own admission (bans, permissioned mode).
"""

from __future__ import annotations

import inspect
import random
from collections import Counter
from collections.abc import Hashable, Iterable
from typing import Any, Callable, Optional, Union

import attrs
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from blueprint_net._adapters.peers import PeerTable
from blueprint_net._adapters.protocol import PeerProtocol
from blueprint_net._core import framing, gossip_wire
from blueprint_net._core.errors import SendQueueFull
from blueprint_net._core.gossip_outputs import (
    Deliver,
    Discovered,
    Dropped,
    Fault,
    Penalty,
    RouterOutput,
    Send,
    Validate,
    Verdict,
)
from blueprint_net._core.gossip_settings import GossipSettings
from blueprint_net._core.gossip_wire import Publish, message_id
from blueprint_net._core.identity import Identity, PeerId
from blueprint_net._core.pubsub import Router
from blueprint_net._core.records import PeerRecord, RecordBook
from blueprint_net._core.telemetry import FORWARD_QUEUE_FULL, SEND_QUEUE_FULL


@attrs.frozen
class GossipMessage:
    """A publication as a topic's handler and validator see it: ``data``
    from ``origin``, whose signature the router has verified."""

    origin: PeerId
    topic: str
    data: bytes
    seqno: int
    message_id: bytes


#: A topic's handler: called with each message delivered.
GossipHandler = Callable[[GossipMessage], Any]
#: A topic's validator: a :class:`Verdict` (or its value, ``"accept"`` ...),
#: or a Deferred or coroutine of one.
Validator = Callable[[GossipMessage], Any]
#: Told of verified records newer than those held, and who sent them (None:
#: the node found them itself, on the LAN).
DiscoveredCallback = Callable[[Optional[PeerId], tuple[PeerRecord, ...]], None]
#: Charges a peer for a gossip fault (the node's policy decides the price).
Charge = Callable[[PeerId, Fault], None]

#: Per-topic figures kept for each topic this node subscribes or publishes to
#: (never for a topic a peer names: that would be memory a peer chooses).
TOPIC_STATS = (
    "published",
    "delivered",
    "forwarded",
    "duplicate",
    "invalid",
    "ignored",
    "dropped",
)


@attrs.define
class _Topic:
    handler: Optional[GossipHandler]
    validator: Optional[Validator]


def _as_message(publish: Publish) -> GossipMessage:
    return GossipMessage(
        publish.origin, publish.topic, publish.data, publish.seqno, publish.message_id
    )


class Gossip:
    """One node's topic gossip: a router, its heartbeat, the topics' handlers."""

    _log = Logger()

    def __init__(
        self,
        identity: Identity,
        clock: IReactorTime,
        settings: GossipSettings,
        peers: PeerTable,
        charge: Charge,
        *,
        forward_queue_limit: int,
        rng: Optional[random.Random] = None,
    ) -> None:
        self.clock = clock
        self.settings = settings
        self.router = Router(identity, settings, now=clock.seconds(), rng=rng)
        self._peers = peers
        self._charge = charge
        #: A forward is dropped for a peer with more than this queued (our
        #: own publications and control messages may fill the whole queue).
        self.forward_queue_limit = forward_queue_limit
        self.topics: dict[str, _Topic] = {}
        #: TOPIC_STATS per topic subscribed or published to.
        self.stats: dict[str, Counter[str]] = {}
        self._discovered: list[DiscoveredCallback] = []
        #: Made by :meth:`start`: a LoopingCall made here would look up the
        #: global reactor (installing one) even with a clock of our own.
        self._heartbeat: Optional[task.LoopingCall] = None
        #: Frames and bytes sent, for the benchmarks' upload figures.
        self.sent: Counter[str] = Counter()

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Start the heartbeat (idempotent): on the first subscribe or
        publish (a node that never uses topics runs no gossip timer)."""
        if self._heartbeat is None:
            self._heartbeat = task.LoopingCall(self.heartbeat)
            self._heartbeat.clock = self.clock
        if not self._heartbeat.running:
            self._heartbeat.start(self.settings.heartbeat_interval, now=False)

    def stop(self) -> None:
        if self._heartbeat is not None and self._heartbeat.running:
            self._heartbeat.stop()

    def heartbeat(self) -> None:
        self._run(self.router.heartbeat(self.clock.seconds()))

    def on_discovered(self, callback: DiscoveredCallback) -> None:
        self._discovered.append(callback)

    # -- the node's side -----------------------------------------------------

    def peer_connected(self, protocol: PeerProtocol) -> None:
        assert protocol.peer_id is not None
        self._run(
            self.router.peer_connected(protocol.peer_id, outbound=protocol.initiator)
        )

    def link_replaced(self, protocol: PeerProtocol) -> None:
        """The peer's connection is now ``protocol`` (the duplicate rule kept
        it): the router's state the old one carried is sent again, and
        our recent publications offered (``Router.link_replaced``)."""
        assert protocol.peer_id is not None
        self._run(self.router.link_replaced(protocol.peer_id, self.clock.seconds()))

    def peer_disconnected(self, peer_id: PeerId) -> None:
        self._run(self.router.peer_disconnected(peer_id))

    def received(self, protocol: PeerProtocol, message: Any, body: bytes) -> None:
        """A gossip message from a verified, admitted peer (and the frame
        body it came in: see ``Router.receive``)."""
        peer = protocol.peer_id
        assert peer is not None
        self._run(self.router.receive(peer, message, self.clock.seconds(), body))

    # -- the application's side ---------------------------------------------

    def subscribe(
        self,
        topic: str,
        handler: Optional[GossipHandler],
        validator: Optional[Validator] = None,
    ) -> None:
        outputs = self.router.subscribe(topic, self.clock.seconds())  # ValueError
        self.topics[topic] = _Topic(handler, validator)
        self.stats.setdefault(topic, Counter())
        self.start()
        self._run(outputs)

    def unsubscribe(self, topic: str) -> None:
        self.topics.pop(topic, None)
        self._run(self.router.unsubscribe(topic, self.clock.seconds()))

    def publish(self, topic: str, data: bytes) -> bytes:
        """Sign and send; the message id.  ``PublishFailed`` over the size
        cap or our own rate; ``ValueError`` for a bad topic."""
        outputs = self.router.publish(topic, data, self.clock.seconds())
        self.stats.setdefault(topic, Counter())["published"] += 1
        self.start()
        self._run(outputs)
        return message_id(self.router.peer_id, self.router.seqno)

    @property
    def records(self) -> RecordBook:
        """The peer records heard so far, to read (discovery changes them
        through the methods below, never through the book or the router)."""
        return self.router.exchange.book

    def mesh(self, topic: str) -> frozenset[PeerId]:
        """The peers in our mesh of ``topic`` (none if not subscribed)."""
        return frozenset(self.router.mesh.get(topic, ()))

    def subscribers(self, topic: str) -> frozenset[PeerId]:
        """The connected peers that said they subscribe to ``topic``."""
        return frozenset(self.router.topic_peers.get(topic, ()))

    def record(self, peer_id: PeerId) -> Optional[PeerRecord]:
        """The newest verified record ``peer_id`` signed, if one was heard."""
        return self.router.exchange.book.get(peer_id)

    def mark_tried(self, peer_id: PeerId) -> None:
        """A peer we dialed proved its record's id (discovery's *tried*)."""
        self.router.exchange.book.mark_tried(peer_id)

    def found_record(self, record: PeerRecord) -> Optional[bool]:
        """A record the node found itself (on the LAN, ``_adapters/mdns.py``),
        verified and kept as news by the book like a peer's, and announced to
        the ``on_discovered`` callbacks with no source: True if kept, False
        if stale or our own, None if its signature does not verify."""
        if record.peer_id == self.router.peer_id:
            return False
        kept = self.router.exchange.book.offer(record)
        if kept:
            for callback in self._discovered:
                callback(None, (record,))
        return kept

    def forget_record(self, peer_id: PeerId) -> None:
        """Drop ``peer_id``'s record: neither dialed nor passed on."""
        self.router.exchange.book.forget(peer_id)

    def group_sources(self, netgroup: Callable[[PeerId], Hashable]) -> None:
        """How the record book groups the peers records come from (each
        group's share is capped): by ``netgroup(source)``."""
        self.router.exchange.book.netgroup = netgroup

    @property
    def own_record(self) -> Optional[PeerRecord]:
        """Our signed record, once :meth:`set_addresses` has made one."""
        return self.router.exchange.own_record

    def request_records(self, peer_id: PeerId) -> None:
        """Ask ``peer_id`` for records, if it is due (the router's
        ``PeerExchange.request``: once per connection, then only as often as
        its answers bring news)."""
        self._run(self.router.exchange.request(peer_id, self.clock.seconds()))

    def records_due(self, peer_id: PeerId) -> bool:
        """Whether :meth:`request_records` would ask ``peer_id`` now."""
        return self.router.exchange.due(peer_id, self.clock.seconds())

    def set_addresses(self, addresses: Iterable[str]) -> PeerRecord:
        return self.router.exchange.set_addresses(addresses, self.clock.seconds())

    # -- carrying out the router's outputs -----------------------------------

    def _run(self, outputs: list[RouterOutput]) -> None:
        for output in outputs:
            if isinstance(output, Send):
                self._send(output)
            elif isinstance(output, Validate):
                self._validate(output)
            elif isinstance(output, Deliver):
                self._deliver(output.message)
            elif isinstance(output, Penalty):
                self._charge(output.peer, output.fault)
            elif isinstance(output, Discovered):
                for callback in self._discovered:
                    callback(output.source, output.records)
            elif isinstance(output, Dropped):
                stats = self.stats.get(output.topic)
                if stats is not None:
                    stats[output.why] += 1

    def _send(self, send: Send) -> None:
        message = send.message
        if send.body:
            frame = framing.frame_body(send.body)  # forwarded as it came
        else:
            frame = gossip_wire.frame(message)
        forward = isinstance(message, Publish) and message.origin != self.router.peer_id
        stats = self.stats.get(message.topic) if isinstance(message, Publish) else None
        peers, counters, sent = self._peers, self.router.counters, 0
        for peer in send.peers:
            protocol = peers.get(peer)
            if protocol is None or protocol.connection.closed:
                continue
            if forward and protocol.queued > self.forward_queue_limit:
                counters[FORWARD_QUEUE_FULL.key] += 1
                if stats is not None:
                    stats["dropped"] += 1
                continue
            try:
                protocol.sender.send_frame(frame)
            except SendQueueFull:
                counters[SEND_QUEUE_FULL.key] += 1
                if stats is not None:
                    stats["dropped"] += 1
                continue
            sent += 1
        if sent:
            self.sent["frames"] += sent
            self.sent["bytes"] += sent * len(frame)
            if forward and stats is not None:
                stats["forwarded"] += sent

    def _validate(self, output: Validate) -> None:
        topic = self.topics.get(output.message.topic)
        if topic is None or topic.validator is None:
            self._validated(output, Verdict.ACCEPT)
            return
        try:
            result = topic.validator(_as_message(output.message))
        except Exception:
            self._log.failure(
                "validator of {topic!r} raised", topic=output.message.topic
            )
            self._validated(output, Verdict.IGNORE)
            return
        if inspect.iscoroutine(result):
            result = defer.ensureDeferred(result)
        if isinstance(result, defer.Deferred):
            result.addCallbacks(
                lambda verdict: self._validated(output, verdict),
                lambda failure: self._validator_failed(output, failure),
            )
            return
        self._validated(output, result)

    def _validator_failed(self, output: Validate, failure: Any) -> None:
        self._log.failure(
            "validator of {topic!r} failed", failure, topic=output.message.topic
        )
        self._validated(output, Verdict.IGNORE)

    def _validated(self, output: Validate, verdict: Union[Verdict, str]) -> None:
        try:
            verdict = Verdict(verdict)
        except Exception:  # ValueError, or whatever a strange object raises
            self._log.error(
                "validator of {topic!r} answered {verdict!r}, not a Verdict;"
                " ignored the message",
                topic=output.message.topic,
                verdict=repr(verdict)[:80],
            )
            verdict = Verdict.IGNORE
        stats = self.stats.get(output.message.topic)
        if stats is not None and verdict is not Verdict.ACCEPT:
            stats["invalid" if verdict is Verdict.REJECT else "ignored"] += 1
        self._run(
            self.router.validated(output.message_id, verdict, self.clock.seconds())
        )

    def _deliver(self, publish: Publish) -> None:
        topic = self.topics.get(publish.topic)
        stats = self.stats.get(publish.topic)
        if stats is not None:
            stats["delivered"] += 1
        if topic is None or topic.handler is None:
            return
        try:
            topic.handler(_as_message(publish))
        except Exception:
            self._log.failure("handler of {topic!r} raised", topic=publish.topic)

    # -- status ----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Topics, meshes and drops, for ``/status.json`` and ``/metrics``."""
        router = self.router
        topics = {}
        for topic in sorted(set(self.stats) | router.subscribed):
            topics[topic] = {
                "subscribed": topic in router.subscribed,
                "mesh": len(router.mesh.get(topic, ())),
                "fanout": len(router.fanout.get(topic, ())),
                "peers": len(router.topic_peers.get(topic, ())),
                **{
                    name: self.stats.get(topic, Counter())[name] for name in TOPIC_STATS
                },
            }
        return {
            "topics": topics,
            "known_peers": len(router.exchange.book),
            "connected_peers": len(router.peers),
            "subscriptions": router.subscriptions,
            "counters": dict(sorted(router.counters.items())),
        }
