"""Every counter the package keeps, declared once.

Layer: core (pure declarations; no I/O, no Twisted).

In: nothing at run time.  Out: :class:`Metric` declarations.  An emitter
counts with one dict update, building the key from the declaration, so the
dotted string is written here only::

    counters[HANDSHAKES.key] += 1
    counters[HANDSHAKE_FAILURES.key_for(code.name)] += 1

A node keeps one ``collections.Counter`` (``node.counters``, the
:data:`NODE` metrics); its gossip router keeps another (``router.counters``,
the :data:`ROUTER` metrics).  ``_ops/metrics.py`` reads these declarations to
build the Prometheus families, with every known series at 0; the table in
``docs/operations.md`` is checked against them (``tests/test_telemetry.py``).

Keys stay the dotted names ``/status.json`` has always shown
(``handshakes.failed.BANNED``): a labelled metric's key is its stem, then each
label's value, dotted.  Only the first label's value may hold dots (a
protocol name); every label value is bounded (a declared set, or a protocol
the node's application named, never one a peer chose).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import product
from typing import Optional

import attrs

from blueprint_net._core.errors import ErrorCode

#: Error codes that end a connection, and those that answer a request.
CONNECTION_CODES = tuple(code.name for code in ErrorCode if code < 300)
REQUEST_CODES = tuple(code.name for code in ErrorCode if code >= 300)
#: Why a connection was refused (``_policy/limits.py``'s reasons, then the
#: node's: a ban found at handshake time, too many connections to one peer
#: id, then the wrapped factory declining).
REFUSAL_REASONS = (
    "banned",
    "connections",
    "subnet",
    "handshaking_subnet",
    "rate",
    "handshaking",
    "peer",
    "declined",
)
#: Why a TLS handshake failed (``_adapters/tls.handshake_failure``).
TLS_FAILURE_REASONS = ("unexpected_peer", "refused_by_peer", "untrusted", "other")
#: ``_policy/bans.Origin``'s values (a test keeps them equal).
BAN_ORIGINS = ("manual", "automatic")
#: ``_core/gossip_outputs.Fault``'s values (a test keeps them equal).
GOSSIP_FAULTS = (
    "invalid-signature",
    "rejected",
    "invalid-record",
    "graft-in-backoff",
    "control-flood",
)
#: ``_policy/session_faults.RULES``' labels (a test keeps them equal).
SESSION_RULES = (
    "not-a-party",
    "wrong-index",
    "duplicate",
    "round-too-far",
    "buffer-full",
    "oversized",
    "bad-signature",
    "wrong-kind",
    "unexpected-relay",
    "malformed",
)
#: ``_core/gossip_outputs.Verdict``'s values (a test keeps them equal).
VERDICTS = ("accept", "ignore", "reject")
#: Another protocol's client at a peer port (``untrusted.WrongOpening.kind``).
WRONG_PROTOCOL_KINDS = ("http", "tls", "plain")
#: What became of a record heard on the LAN (``_adapters/mdns.py``).
MDNS_OUTCOMES = (
    "kept",
    "stale",
    "forged",
    "malformed",
    "oversize",
    "rate_limited",
    "busy",
)
#: The buffers ``MemoryBudget.refuse`` is told about.
MEMORY_BUFFERS = ("inbound", "response", "send", "stream", "unclaimed")
#: ``_core/stream_wire.ResetCode``'s names (a test keeps them equal), then
#: every application's code as one.
STREAM_RESET_CODES = ("RESTARTED", "CANCELLED", "STREAM_LIMIT", "UNCLAIMED")
#: Why a stream nobody opened was reset (``_adapters/streams.py``).
UNCLAIMED_REASONS = ("streams", "bytes", "memory", "timeout")
#: Why a delivered message was not written to ``--topic-log``.
TOPIC_LOG_DROP_REASONS = ("rate", "error")


@attrs.frozen
class Label:
    """One dimension of a metric: ``values`` it always shows (at 0 until
    counted); with ``protocols`` also each protocol the node registered."""

    name: str
    values: tuple[str, ...] = ()
    protocols: bool = False
    #: What its values are, for the docs when listing them would not help.
    doc: str = ""


@attrs.frozen
class Metric:
    """A counter: ``key`` in the ``Counter`` (the stem of a labelled one),
    the Prometheus family ``name`` (no ``_total``), its ``help``, and its
    ``labels`` in key order."""

    key: str
    name: str
    help: str
    labels: tuple[Label, ...] = ()
    #: ``key`` and a dot, made once: a one-label key is one concatenation.
    stem: str = attrs.field(init=False, repr=False, eq=False)

    @stem.default
    def _stem(self) -> str:
        return self.key + "."

    def key_for(self, value: str, *more: str) -> str:
        """The key of one series: the stem, then each label's value."""
        if more:
            return ".".join((self.key, value, *more))
        return self.stem + value

    def known(self, protocols: Iterable[str] = ()) -> list[tuple[str, ...]]:
        """The label values of every series shown before it is counted."""
        protocols = tuple(protocols)
        choices = [
            (*(protocols if label.protocols else ()), *label.values)
            for label in self.labels
        ]
        return list(product(*choices))


class Index:
    """Declared metrics by key: which metric (and label values) a counter
    key belongs to, or None for a key nobody declared."""

    def __init__(self, metrics: Iterable[Metric]) -> None:
        self.metrics = tuple(metrics)
        self._exact = {m.key: m for m in self.metrics if not m.labels}
        self._stems = {m.stem: m for m in self.metrics if m.labels}

    def __iter__(self) -> Iterator[Metric]:
        return iter(self.metrics)

    def find(self, key: str) -> Optional[tuple[Metric, tuple[str, ...]]]:
        metric = self._exact.get(key)
        if metric is not None:
            return metric, ()
        end = len(key)
        while (end := key.rfind(".", 0, end)) > 0:
            metric = self._stems.get(key[: end + 1])
            if metric is not None:
                count = len(metric.labels)
                values = tuple(key[end + 1 :].rsplit(".", count - 1))
                if len(values) == count and all(values):
                    return metric, values
                return None
        return None


# -- the node's counters (node.counters) -----------------------------------

HANDSHAKES = Metric("handshakes.ok", "blueprint_handshakes", "Handshakes completed.")
HANDSHAKE_FAILURES = Metric(
    "handshakes.failed",
    "blueprint_handshake_failures",
    "Handshakes that failed, by error code.",
    (Label("code", CONNECTION_CODES, doc="an error code name"),),
)
TLS_FAILURES = Metric(
    "tls.failed",
    "blueprint_tls_handshake_failures",
    "TLS handshakes that failed, by reason (unexpected_peer: a dialed peer"
    " presented another peer id than expected; refused_by_peer: the peer"
    " refused this node's certificate, as a dialer expecting another id"
    " does; untrusted: a certificate not trusted or not valid for the host;"
    " other).",
    (Label("reason", TLS_FAILURE_REASONS),),
)
CONNECTIONS_CLOSED = Metric(
    "closed",
    "blueprint_connections_closed",
    "Verified connections closed, by the code of the Error that closed them"
    " (GOING_AWAY: a normal goodbye, either side's).",
    (Label("code", CONNECTION_CODES, doc="an error code name"),),
)
CONNECTIONS_REFUSED = Metric(
    "refused",
    "blueprint_connections_refused",
    "Connections refused before the handshake, by reason.",
    (Label("reason", REFUSAL_REASONS),),
)
MISBEHAVIOURS = Metric(
    "misbehaviour",
    "blueprint_misbehaviours",
    "Protocol violations scored against a peer.",
)
BANS_IMPOSED = Metric(
    "bans",
    "blueprint_bans_imposed",
    "Bans imposed, by origin (manual or automatic).",
    (Label("origin", BAN_ORIGINS),),
)
REQUESTS_RECEIVED = Metric(
    "requests.in",
    "blueprint_requests_received",
    "Requests handed to a handler, by protocol.",
    (Label("protocol", protocols=True, doc="registered protocols only"),),
)
REQUESTS_SENT = Metric(
    "requests.out",
    "blueprint_requests_sent",
    "Requests sent by this node (with or without a response wanted), by protocol.",
    (Label("protocol", doc="named by this node's application"),),
)
REQUESTS_REFUSED = Metric(
    "requests.refused",
    "blueprint_requests_refused",
    "Requests answered with an Error before a handler ran, by protocol"
    " (unknown: no handler) and code.",
    (
        Label(
            "protocol",
            ("unknown",),
            protocols=True,
            doc="registered protocols; `unknown` for one with no handler",
        ),
        Label("code", REQUEST_CODES, doc="an error code name"),
    ),
)
HANDSHAKE_EVICTIONS = Metric(
    "evicted.handshaking",
    "blueprint_handshake_evictions",
    "Inbound handshakes closed to make room for a newcomer (the oldest of"
    " the subnet holding the most).",
)
PEER_REPLACEMENTS = Metric(
    "peers.replaced",
    "blueprint_peer_replacements",
    "Duplicate connections to a connected peer that replaced the one kept.",
)
MEMORY_REFUSALS = Metric(
    "memory.refused",
    "blueprint_memory_refusals",
    "Buffers refused because the node's memory budget was spent, by buffer"
    " (inbound: a partial frame, its connection dropped; response: answered"
    " with an error; send: refused to the caller; stream: a stream message,"
    " refused to the caller; unclaimed: a message of a stream nobody opened,"
    " the stream reset).",
    (Label("buffer", MEMORY_BUFFERS),),
)
WRONG_PROTOCOL = Metric(
    "wrong_protocol",
    "blueprint_wrong_protocol_clients",
    "Clients of another protocol at a peer port, answered with a hint and"
    " closed, never scored, by kind (http; tls at a plain port; plain at a"
    " TLS port).",
    (Label("kind", WRONG_PROTOCOL_KINDS),),
)
GOSSIP_FAULT_CHARGES = Metric(
    "gossip.fault",
    "blueprint_gossip_faults",
    "Gossip faults charged to a connected peer, by fault.",
    (Label("fault", GOSSIP_FAULTS),),
)
SESSION_VIOLATION_CHARGES = Metric(
    "sessions.violation",
    "blueprint_session_violations",
    "Party-session rules a connected peer broke, charged to it, by rule.",
    (Label("rule", SESSION_RULES),),
)
DISCOVERY_DIALS = Metric(
    "discovery.dials", "blueprint_discovery_dials", "Connections discovery dialed."
)
DISCOVERY_DIAL_FAILURES = Metric(
    "discovery.dial_failed",
    "blueprint_discovery_dial_failures",
    "Discovery dials that failed (a cancelled one is not counted).",
)
DISCOVERY_GIVEN_UP = Metric(
    "discovery.given_up",
    "blueprint_discovery_given_up",
    "Peers discovery stopped dialing: their dials failed give_up_after times"
    " in a row, so their records were forgotten.",
)
DISCOVERY_RECORDS_REFUSED = Metric(
    "discovery.records_refused",
    "blueprint_discovery_records_refused",
    "Peer records dropped: their id is banned or (permissioned mode) not"
    " allowed, so they are neither dialed nor passed on.",
)
DISCOVERY_INBOUND_TRIMMED = Metric(
    "discovery.inbound_trimmed",
    "blueprint_discovery_inbound_trimmed",
    "Inbound peers disconnected to keep inbound links under the cap.",
)
MDNS_RECORDS = Metric(
    "mdns.records",
    "blueprint_mdns_records",
    "Peer records heard on the LAN (mDNS), by outcome (kept: verified and"
    " newer than any held; stale: not newer; forged: its"
    " signature does not verify; malformed: a TXT record that is not one,"
    " or a name zeroconf refuses;"
    " oversize: a TXT record over 1300 bytes, not read; rate_limited: over"
    " the verification rate and dropped from the records waiting for it;"
    " busy: a name dropped unread while too many waited for a lookup).",
    (Label("outcome", MDNS_OUTCOMES),),
)
MDNS_EVICTED = Metric(
    "mdns.evicted",
    "blueprint_mdns_evicted",
    "Records learned on the LAN forgotten to keep at most max_records of"
    " them (the oldest first).",
)
STREAM_RESETS = Metric(
    "streams.reset",
    "blueprint_stream_resets",
    "Durable streams ended, by reset code (application: the applications'"
    " codes, 1000 and up), whichever end reset them.",
    (Label("code", (*STREAM_RESET_CODES, "application")),),
)
STREAM_VIOLATIONS = Metric(
    "streams.violation",
    "blueprint_stream_violations",
    "Stream frames that broke the protocol, by error code (the connection"
    " closed with it).",
    (Label("code", CONNECTION_CODES, doc="an error code name"),),
)
STREAM_UNCLAIMED_RESETS = Metric(
    "streams.unclaimed",
    "blueprint_stream_unclaimed_resets",
    "Streams a peer opened that this node's application did not, reset"
    " UNCLAIMED, by reason (streams, bytes: the per-peer bounds; memory: the"
    " node's budget; timeout: not opened in time).",
    (Label("reason", UNCLAIMED_REASONS),),
)
STREAM_PEERS_FORGOTTEN = Metric(
    "streams.peers_forgotten",
    "blueprint_stream_peers_forgotten",
    "Idle peers whose stream numbers were dropped to keep the table bounded"
    " (they see this node's streams restart).",
)
TOPIC_LOG_DROPPED = Metric(
    "topic_log.dropped",
    "blueprint_topic_log_dropped",
    "Messages delivered to a --topic but not written to --topic-log, by"
    " reason (rate: over --topic-log-rate, the total or the origin's share;"
    " error: the file could not be written).",
    (Label("reason", TOPIC_LOG_DROP_REASONS),),
)

#: Every counter of ``node.counters``, in the order ``/metrics`` shows them.
NODE = Index(
    [
        HANDSHAKES,
        HANDSHAKE_FAILURES,
        TLS_FAILURES,
        CONNECTIONS_CLOSED,
        CONNECTIONS_REFUSED,
        MISBEHAVIOURS,
        BANS_IMPOSED,
        REQUESTS_RECEIVED,
        REQUESTS_SENT,
        REQUESTS_REFUSED,
        HANDSHAKE_EVICTIONS,
        PEER_REPLACEMENTS,
        MEMORY_REFUSALS,
        WRONG_PROTOCOL,
        GOSSIP_FAULT_CHARGES,
        SESSION_VIOLATION_CHARGES,
        DISCOVERY_DIALS,
        DISCOVERY_DIAL_FAILURES,
        DISCOVERY_GIVEN_UP,
        DISCOVERY_RECORDS_REFUSED,
        DISCOVERY_INBOUND_TRIMMED,
        MDNS_RECORDS,
        MDNS_EVICTED,
        STREAM_RESETS,
        STREAM_VIOLATIONS,
        STREAM_UNCLAIMED_RESETS,
        STREAM_PEERS_FORGOTTEN,
        TOPIC_LOG_DROPPED,
    ]
)

# -- the gossip router's counters (router.counters) -------------------------

#: One family for all of them, labelled ``event`` with the counter's key
#: (the name dashboards already use); each key is declared below.
ROUTER_EVENTS = "blueprint_gossip_router_events"


def _event(key: str, help: str, *labels: Label) -> Metric:
    return Metric(key, ROUTER_EVENTS, help, labels)


PUBLISH_NOT_SUBSCRIBED = _event(
    "publish.not_subscribed", "Publications dropped: a topic this node is not in."
)
PUBLISH_TOO_LARGE = _event(
    "publish.too_large", "Publications dropped: over the topic's size limit."
)
PUBLISH_DUPLICATE = _event(
    "publish.duplicate", "Publications dropped: seen before (or our own)."
)
PUBLISH_STALE = _event(
    "publish.stale", "Publications dropped: too old, or dated in the future."
)
PUBLISH_POSSIBLY_SEEN = _event(
    "publish.possibly_seen",
    "Publications dropped: older than the oldest id still remembered.",
)
PUBLISH_ORIGIN_RATE = _event(
    "publish.origin_rate", "Publications dropped: their origin's rate was spent."
)
PUBLISH_PEER_RATE = _event(
    "publish.peer_rate",
    "Publications dropped: the forwarding peer's rate was spent.",
)
PUBLISH_INVALID_SIGNATURE = _event(
    "publish.invalid_signature",
    "Publications dropped: the signature does not verify (the peer is charged).",
)
PUBLISH_NEW_ORIGIN_RATE = _event(
    "publish.new_origin_rate",
    "Publications dropped: the peer's budget for new origins was spent.",
)
PUBLISH_VALIDATION_FULL = _event(
    "publish.validation_full",
    "Publications dropped: too many awaiting the validator.",
)
PUBLISH_NO_PEERS = _event(
    "publish.no_peers", "This node's publications with no peer to send to."
)
VALIDATIONS = _event(
    "validation", "Publications the validator judged.", Label("verdict", VERDICTS)
)
VALIDATION_TIMEOUT = _event(
    "validation.timeout",
    "Publications dropped: the validator did not answer in time.",
)
FORWARD_SOURCE_RATE = _event(
    "forward.source_rate",
    "Publications announced but not pushed: the sender's forward rate was spent.",
)
FORWARD_QUEUE_FULL = _event(
    "forward.queue_full",
    "Forwards dropped: the peer's send queue was over the forward limit.",
)
SEND_QUEUE_FULL = _event(
    "send.queue_full", "Gossip frames dropped: the peer's send queue was full."
)
SUBSCRIPTIONS_OVER_LIMIT = _event(
    "subscriptions.over_limit",
    "Subscriptions ignored: the peer holds as many as it may.",
)
SUBSCRIPTIONS_NODE_FULL = _event(
    "subscriptions.node_full",
    "Subscriptions ignored: the node holds as many as it may, all peers together.",
)
CONTROL_OVER_BUDGET = _event(
    "control.over_budget",
    "Control entries (subscriptions, grafts, prunes) dropped over a peer's"
    " budget for a heartbeat interval.",
)
GRAFT_IGNORED = _event(
    "graft.ignored",
    "Grafts ignored: no mesh of the topic, or the peer has not announced it"
    " (a graft before its subscriptions).",
)
GRAFT_IN_BACKOFF = _event(
    "graft.in_backoff",
    "Grafts during a backoff our prune set (answered with a prune).",
)
PRUNE_IGNORED = _event("prune.ignored", "Prunes ignored: no mesh of the topic.")
IHAVE_OVER_LIMIT = _event(
    "ihave.over_limit", "IHave messages ignored: over the peer's limit."
)
IWANT_OVER_LIMIT = _event(
    "iwant.over_limit", "IWant messages cut short: the peer was served its limit."
)
IDONTWANT_OVER_LIMIT = _event(
    "idontwant.over_limit",
    "IDontWant messages cut short: the peer sent its limit of ids this heartbeat.",
)
FORWARD_UNWANTED = _event(
    "forward.unwanted",
    "Copies not forwarded: the peer said it had the message (IDontWant).",
)
RECORDS_REQUEST_OVER_LIMIT = _event(
    "records.request_over_limit",
    "Peer-record requests ignored: over one per peer per heartbeat.",
)
RECORDS_UNSOLICITED = _event(
    "records.unsolicited", "Peer records ignored: sent unasked."
)
RECORDS_INVALID = _event(
    "records.invalid",
    "Peer records that do not verify (the sender is charged).",
)
BACKOFF_DEPARTED_EVICTED = _event(
    "backoff.departed_evicted",
    "Departed peers' backoffs forgotten to keep the table bounded.",
)

#: Every counter of the gossip router's ``counters``.
ROUTER = Index(
    [
        PUBLISH_NOT_SUBSCRIBED,
        PUBLISH_TOO_LARGE,
        PUBLISH_DUPLICATE,
        PUBLISH_STALE,
        PUBLISH_POSSIBLY_SEEN,
        PUBLISH_ORIGIN_RATE,
        PUBLISH_PEER_RATE,
        PUBLISH_INVALID_SIGNATURE,
        PUBLISH_NEW_ORIGIN_RATE,
        PUBLISH_VALIDATION_FULL,
        PUBLISH_NO_PEERS,
        VALIDATIONS,
        VALIDATION_TIMEOUT,
        FORWARD_SOURCE_RATE,
        FORWARD_QUEUE_FULL,
        SEND_QUEUE_FULL,
        SUBSCRIPTIONS_OVER_LIMIT,
        SUBSCRIPTIONS_NODE_FULL,
        CONTROL_OVER_BUDGET,
        GRAFT_IGNORED,
        GRAFT_IN_BACKOFF,
        PRUNE_IGNORED,
        IHAVE_OVER_LIMIT,
        IWANT_OVER_LIMIT,
        IDONTWANT_OVER_LIMIT,
        FORWARD_UNWANTED,
        RECORDS_REQUEST_OVER_LIMIT,
        RECORDS_UNSOLICITED,
        RECORDS_INVALID,
        BACKOFF_DEPARTED_EVICTED,
    ]
)
