"""Topic gossip's tunables, with their defaults and reasons.

Layer: core (a plain value: no I/O).

In: keyword arguments (every one has a default); out: a frozen
``GossipSettings``, or :class:`ConfigurationError` saying in one line what
makes the combination unusable.  Like h2's ``H2Configuration``, the settings
live beside the machine that reads them: the router (``pubsub.py``) takes
this object itself, and the options of ``twistd`` and the config file are
made from its fields (``_ops/config.py``).

The overlay defaults are gossipsub v1.1's (go-libp2p-pubsub's
``DefaultGossipSubParams``); the caps are ours, chosen so that one peer, or
one origin, costs the node a bounded amount whatever it sends.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from blueprint_net._core.errors import ConfigurationError


@attrs.frozen
class GossipSettings:
    """Every gossip setting of one node (``docs/protocol.md`` section 9.6)."""

    # -- the overlay: gossipsub's defaults --------------------------------
    #: D: the mesh degree each topic aims for.
    mesh_degree: int = 6
    #: D_lo, D_hi: a heartbeat grafts below the one and prunes above the other.
    mesh_low: int = 5
    mesh_high: int = 12
    #: D_out: outbound peers kept in each mesh, so inbound connections (which
    #: an attacker controls) cannot fill it (gossipsub v1.1's eclipse defence).
    mesh_outbound: int = 2
    #: D_lazy: peers outside the mesh that each heartbeat's IHave reaches
    #: (or ``gossip_factor`` of them, if more).
    gossip_degree: int = 6
    gossip_factor: float = 0.25
    #: Seconds between heartbeats; the caches below count heartbeats.
    heartbeat_interval: float = 1.0
    #: Heartbeats a message stays in the cache for IWant, and the newest of
    #: them whose ids IHave offers.
    history_length: int = 5
    history_gossip: int = 3
    #: Seconds a topic published to without subscribing keeps its fanout.
    fanout_ttl: float = 60.0
    #: Seconds a pruned peer must wait before grafting again (sent in Prune),
    #: after an unsubscribe, and the most we honour from a peer's Prune.
    prune_backoff: int = 60
    unsubscribe_backoff: int = 10
    max_backoff: int = 3600
    #: A graft this soon after our Prune may have crossed it: refused, not
    #: penalised; our own re-grafts wait this long past a backoff too.
    graft_grace: float = 2.0
    #: Records in a Prune's peer exchange, and in a Records answer.
    prune_peers: int = 16
    #: Seconds before a peer whose last ``Records`` answer brought nothing
    #: new is asked again (after news: a heartbeat): we hold its record and
    #: all it gave, so asking sooner only keeps the link from going idle.
    records_refresh: float = 300.0
    #: Send our own publications to every peer of the topic, not just the
    #: mesh (gossipsub v1.1's default: a mesh of attackers cannot hide them).
    flood_publish: bool = True

    #: A publication whose ``data`` is at least this many bytes makes us
    #: tell the rest of our mesh of its topic, once its signature verifies,
    #: that we have it (gossipsub v1.2's ``IDontWant``), so they skip the
    #: copy they would push to us.  ``None``, the default, sends none: a
    #: node older than this message closes the link on it and charges the
    #: sender (section 8's ``UNKNOWN_MESSAGE_TYPE``, banned at the fifth),
    #: and a node cannot tell which peers are older.  Every node takes
    #: them; turn sending on (go-libp2p-pubsub uses 1,024 bytes: below it
    #: the 39-byte notice to each mesh peer saves too little) once every
    #: node of the network runs this version.
    idontwant_threshold: int | None = None
    # -- caps ---------------------------------------------------------------
    #: IHave ids looked at and IWant ids asked per peer per heartbeat, and
    #: IWant answers served per peer per heartbeat.
    max_ihave_length: int = 5000
    #: IHave messages taken from one peer per heartbeat.
    max_ihave_messages: int = 10
    #: IDontWant ids looked at per peer per heartbeat (go-libp2p-pubsub's
    #: 1,000), and the heartbeats each is kept: an honest peer sends one
    #: per large message it takes, to each of its mesh peers, and the id is
    #: only useful until our copy would go out.  Ids of messages we already
    #: forwarded are not kept, so honest notices cost little; junk ids cost
    #: at most ``max_idontwant x idontwant_heartbeats`` ids per peer.
    max_idontwant: int = 1000
    idontwant_heartbeats: int = 3
    #: Times one message is sent to one peer in answer to IWants.
    gossip_retransmission: int = 3
    #: A publication older than this (its seqno is its publication time, in
    #: ns) is dropped as stale, so a replay at any age is refused: the
    #: seen-cache needs to hold an id only this long.  60 s is far more than
    #: the worst propagation (hops plus an IHave/IWant round, a few seconds)
    #: plus a clock error well within what NTP keeps.
    max_message_age: float = 60.0
    #: A publication dated more than this ahead of our clock is dropped: an
    #: origin's clock may run a little fast, but a message dated far ahead
    #: would stay acceptable (and need remembering) for longer.
    max_clock_skew: float = 10.0
    #: Seconds after its publication time a message id is remembered: at
    #: least ``max_message_age + max_clock_skew`` and a heartbeat (when
    #: expiry runs), so an id is never forgotten while its message could be
    #: accepted.  gossipsub's 120 s.
    seen_ttl: float = 120.0
    #: Ids remembered at most: 1,092 messages/s network-wide for 120 s.
    #: Past it the id published first goes early (counted) and raises a
    #: floor below which messages are dropped as possibly seen, so memory
    #: stays bounded and a replay is still never taken for new.
    max_seen: int = 131072
    #: Bytes of messages cached for IWant (each charged 256 bytes besides
    #: its data); past it the oldest go early.
    max_cache_bytes: int = 64 * 1024 * 1024
    #: Largest ``data`` accepted or published on a topic, unless
    #: ``topic_max_sizes`` says otherwise.  64 KiB: gossip carries
    #: announcements, and every byte is sent by every subscriber to D peers
    #: and cached for 5 heartbeats, so a large cap multiplies what one origin
    #: can make the whole network carry.  Bulk data belongs in requests
    #: (16 MiB frames) to the peers that ask.  gossipsub allows 1 MiB.
    max_message_size: int = 64 * 1024
    topic_max_sizes: Mapping[str, int] = attrs.field(factory=dict)
    #: Publications per second (and burst) accepted from one origin, checked
    #: after its signature (a claimed origin is never charged).  Our own
    #: publishes meet the same limit, since peers would drop the excess.
    origin_rate: float = 20.0
    origin_burst: int = 200
    #: Publications per second (and burst) from one peer that get a
    #: signature check: the bound on the CPU an unproven message can cost.
    #: Duplicates are dropped before it and do not count.
    peer_rate: float = 500.0
    peer_burst: int = 1000
    #: Publications per second (and burst) from one peer whose origin this
    #: node has not yet accepted a message of, checked after the signature
    #: (forgeries are charged instead) and before the origin's rate: a peer
    #: signing each message with a fresh key (keys are free) is held to
    #: this, not to ``origin_rate`` per key.  Honest relays seldom bring
    #: new origins (a node joining, or publishing for the first time in a
    #: long while), and each one comes by several mesh links and IHave,
    #: each with its own budget; 10/s with a burst of 100 lets a whole
    #: network's start-up through in seconds and a flood of fresh keys add
    #: only 10 messages a second per attacking link.
    new_origin_rate: float = 10.0
    new_origin_burst: int = 100
    #: Messages first received from one peer that this node forwards, per
    #: second (and burst): a forwarder answers for what it forwards.  Junk
    #: a peer brings (signed by keys it made known one at a time) is then
    #: at most this much of what our neighbours take from us (their
    #: ``peer_rate``, 500/s by default), so up to four flooding peers cannot
    #: crowd honest relayed messages out at the next hop.  The excess is
    #: still delivered here, cached and announced in IHave; only the push
    #: is dropped.  An honest peer is the first to bring a message for a
    #: share of the network's publications, far below 100/s (the origin
    #: rate is 20/s).
    forward_rate: float = 100.0
    forward_burst: int = 200
    #: Origins (and peers) whose rates are tracked, and origins remembered
    #: as known (accepted); past it the least recently heard go.
    max_origins: int = 65536
    #: Messages awaiting the application's verdict, and how long they wait.
    max_pending: int = 1024
    validation_timeout: float = 10.0
    #: Topics one peer may announce; more are ignored (counted).  Also the
    #: most this node subscribes to (its peers would ignore the rest).
    max_topics_per_peer: int = 256
    #: (peer, topic) subscriptions held node-wide; more are ignored
    #: (counted).  Each costs up to ~1 KiB (a 255-byte topic and set
    #: entries), so this is ~32 MiB at worst however many peers announce:
    #: room for 1,024 peers with 32 topics each.
    max_subscriptions: int = 32768
    #: Subscription changes looked at, and grafts and prunes taken, from one
    #: peer per heartbeat interval (each counted apart); the excess is
    #: dropped and charged once an interval (``CONTROL_FLOOD``).  An honest
    #: peer stays far below: it announces at most ``max_topics_per_peer``
    #: topics on connecting and one change per join or leave, and sends at
    #: most a graft or prune per topic on a join, a leave, a heartbeat or an
    #: answer to our graft.  Four times ``max_topics_per_peer``.
    max_control_per_peer: int = 1024
    #: Peer records kept (the newest of each peer).
    max_records: int = 1024

    def __attrs_post_init__(self) -> None:
        problem = self.problem()
        if problem is not None:
            raise ConfigurationError(f"gossip settings: {problem}")

    def problem(self) -> str | None:
        """What makes these settings unusable, in one line, if anything."""
        if not 0 < self.mesh_low <= self.mesh_degree <= self.mesh_high:
            return "need 0 < mesh_low <= mesh_degree <= mesh_high"
        if not self.mesh_outbound < self.mesh_low or (
            self.mesh_outbound * 2 > self.mesh_degree
        ):
            return "need mesh_outbound < mesh_low and mesh_outbound <= mesh_degree / 2"
        if not 0 < self.history_gossip <= self.history_length:
            return "need 0 < history_gossip <= history_length"
        if self.seen_ttl < 2 * self.history_length * self.heartbeat_interval:
            return "seen_ttl must be at least twice the cache's lifetime"
        if min(self.max_message_age, self.max_clock_skew) < 0 or self.seen_ttl < (
            self.max_message_age + self.max_clock_skew + self.heartbeat_interval
        ):
            return (
                "need seen_ttl >= max_message_age + max_clock_skew"
                " + heartbeat_interval (both >= 0)"
            )
        sizes = [self.max_message_size, *self.topic_max_sizes.values()]
        if min(sizes) < 0 or max(sizes) >= 2**32:
            return "a message size cap is 0 to 2**32 - 1 bytes"
        rates = (
            self.origin_rate,
            self.peer_rate,
            self.new_origin_rate,
            self.forward_rate,
        )
        if not self.records_refresh >= self.heartbeat_interval:  # NaN too
            return "need records_refresh >= heartbeat_interval"
        if min(*rates, self.heartbeat_interval) <= 0:
            return "rates and the heartbeat interval must be positive"
        if self.idontwant_threshold is not None and self.idontwant_threshold < 0:
            return "idontwant_threshold is None or a size in bytes (>= 0)"
        if self.max_idontwant < 0 or self.idontwant_heartbeats < 1:
            return "need max_idontwant >= 0 and idontwant_heartbeats >= 1"
        if self.max_control_per_peer < 2 * self.max_topics_per_peer:
            return "need max_control_per_peer >= 2 * max_topics_per_peer"
        return None

    def max_size(self, topic: str) -> int:
        """The largest ``data`` accepted or published on ``topic``."""
        return self.topic_max_sizes.get(topic, self.max_message_size)

    def max_frame(self) -> int:
        """The largest gossip frame a connection takes (the 16 MiB request
        limit would let one frame cost 16 MiB of parsing): the largest
        ``Publish`` (its data plus 1 KiB of topic, ids, seqno and signature),
        or the longest IHave/IWant (32-byte ids), or a full ``Records``
        (255 records of 8 addresses), whichever is largest."""
        publish = max([self.max_message_size, *self.topic_max_sizes.values()])
        ids = 32 * self.max_ihave_length + 512
        return max(publish + 1024, ids, 255 * (8 * 256 + 128))


#: Every default.
DEFAULTS = GossipSettings()
