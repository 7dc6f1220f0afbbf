"""The node's numbers as Prometheus metric families, in the classic text
format and in OpenMetrics.

Layer: ops (the operator surface).

The node counts with one ``collections.Counter`` keyed by dotted names
(``handshakes.failed.BANNED``): one dict update on the hot path.  Turning
those names into families with one dimension per label happens here, when
the page is asked for.  Every label value is bounded: an error code, a
refusal reason, a ban origin, or a protocol name the node registered (or
``unknown``; a name a peer chose is never a label).  Known series start at 0,
so a rate over the first increment is not lost.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

import twisted
from blueprint_net._adapters.gossip import TOPIC_STATS
from blueprint_net._core.errors import ErrorCode
from blueprint_net._policy.bans import Origin
from blueprint_net._policy.limits import REFUSAL_REASONS

Labels = tuple[tuple[str, str], ...]

#: Classic text format (what Prometheus asks for by default).
CLASSIC = "text/plain; version=0.0.4; charset=utf-8"
#: OpenMetrics, for a scraper that says it accepts it.
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"

_CONNECTION_CODES = tuple(code.name for code in ErrorCode if code < 300)
_REQUEST_CODES = tuple(code.name for code in ErrorCode if code >= 300)


@attrs.frozen
class Family:
    """One metric family: ``name`` has no ``_total`` suffix; ``samples`` map
    label sets to values."""

    name: str
    kind: str  # "counter", "gauge" or "info"
    help: str
    samples: dict[Labels, float]


@attrs.frozen
class _Counted:
    """Counter keys starting ``prefix`` (or equal to it, with no labels)."""

    prefix: str
    name: str
    help: str
    labels: tuple[str, ...] = ()


COUNTED = (
    _Counted("handshakes.ok", "blueprint_handshakes", "Handshakes completed."),
    _Counted(
        "handshakes.failed.",
        "blueprint_handshake_failures",
        "Handshakes that failed, by error code.",
        ("code",),
    ),
    _Counted(
        "closed.",
        "blueprint_connections_closed",
        "Verified connections closed with an error, by code.",
        ("code",),
    ),
    _Counted(
        "refused.",
        "blueprint_connections_refused",
        "Connections refused before the handshake, by reason.",
        ("reason",),
    ),
    _Counted(
        "misbehaviour",
        "blueprint_misbehaviours",
        "Protocol violations scored against a peer.",
    ),
    _Counted(
        "bans.",
        "blueprint_bans_imposed",
        "Bans imposed, by origin (manual or automatic).",
        ("origin",),
    ),
    _Counted(
        "requests.in.",
        "blueprint_requests_received",
        "Requests handed to a handler, by protocol.",
        ("protocol",),
    ),
    _Counted(
        "requests.out.",
        "blueprint_requests_sent",
        "Requests sent by this node, by protocol.",
        ("protocol",),
    ),
    _Counted(
        "requests.refused.",
        "blueprint_requests_refused",
        "Requests answered with an Error before a handler ran, by protocol"
        " (unknown: no handler) and code.",
        ("protocol", "code"),
    ),
)


def _known(counted: _Counted, protocols: Iterable[str]) -> list[Labels]:
    """The label sets a family always shows, at 0 until counted."""
    label = counted.labels
    if not label:
        return [()]
    if label == ("code",):
        return [(("code", code),) for code in _CONNECTION_CODES]
    if label == ("reason",):
        return [(("reason", reason),) for reason in REFUSAL_REASONS]
    if label == ("origin",):
        return [(("origin", origin.value),) for origin in Origin]
    if counted.prefix == "requests.in.":
        return [(("protocol", name),) for name in protocols]
    if counted.prefix == "requests.refused.":
        return [
            (("protocol", name), ("code", code))
            for name in [*protocols, "unknown"]
            for code in _REQUEST_CODES
        ]
    return []


def _labels(counted: _Counted, rest: str) -> Labels:
    if len(counted.labels) == 2:  # protocol.CODE: a protocol may hold dots
        protocol, _, code = rest.rpartition(".")
        return (("protocol", protocol), ("code", code))
    return ((counted.labels[0], rest),) if counted.labels else ()


def counter_families(
    counters: Mapping[str, int], protocols: Iterable[str]
) -> list[Family]:
    """The node's dotted counters as families, known series at 0."""
    protocols = sorted(protocols)
    families = [
        Family(c.name, "counter", c.help, dict.fromkeys(_known(c, protocols), 0.0))
        for c in COUNTED
    ]
    other = Family(
        "blueprint_other_events",
        "counter",
        "Counters without a family of their own yet, by their internal name.",
        {},
    )
    for key, value in counters.items():
        for counted, family in zip(COUNTED, families):
            if counted.labels and key.startswith(counted.prefix):
                family.samples[_labels(counted, key[len(counted.prefix) :])] = value
                break
            if not counted.labels and key == counted.prefix:
                family.samples[()] = value
                break
        else:
            other.samples[(("name", key),)] = value
    return families + ([other] if other.samples else [])


def families(status: Mapping[str, Any]) -> list[Family]:
    """Every family, from a ``/status.json`` snapshot."""
    return [
        Family(
            "blueprint_build",
            "info",
            "The running blueprint-net version.",
            {
                (
                    ("version", status["version"]),
                    ("python", platform.python_version()),
                    ("twisted", twisted.__version__),
                ): 1.0
            },
        ),
        Family(
            "blueprint_start_time_seconds",
            "gauge",
            "When the node started, in seconds since the Unix epoch.",
            {(): status["started"]},
        ),
        Family(
            "blueprint_peers",
            "gauge",
            "Verified peers now.",
            {(): len(status["peers"])},
        ),
        Family(
            "blueprint_bans_active",
            "gauge",
            "Bans in force now.",
            {(): status["bans"]},
        ),
        Family(
            "blueprint_bans_unsaved",
            "gauge",
            "Ban changes not yet written to the ban database.",
            {(): status["bans_unsaved"]},
        ),
        Family(
            "blueprint_plaintext_allowed",
            "gauge",
            "1 if links without TLS are allowed (--allow-plaintext), else 0.",
            {(): int(status["allow_plaintext"])},
        ),
        *counter_families(status["counters"], status["protocols"]),
        *(gossip_families(status["gossip"]) if "gossip" in status else ()),
    ]


#: Per-topic figures that are gauges; the rest of TOPIC_STATS are counters.
_TOPIC_GAUGES = ("mesh", "fanout", "peers")


def gossip_families(gossip: Mapping[str, Any]) -> list[Family]:
    """Topic gossip: known and connected peers, and per topic (only this
    node's own topics, so the label is bounded) mesh sizes and messages."""
    topics = gossip["topics"]
    families = [
        Family(
            "blueprint_gossip_known_peers",
            "gauge",
            "Peer records held.",
            {(): gossip["known_peers"]},
        ),
        Family(
            "blueprint_gossip_connected_peers",
            "gauge",
            "Peers in the gossip router.",
            {(): gossip["connected_peers"]},
        ),
    ]
    for name in (*_TOPIC_GAUGES, *TOPIC_STATS):
        gauge = name in _TOPIC_GAUGES
        samples: dict[Labels, float] = {
            (("topic", str(topic)),): figures[name] for topic, figures in topics.items()
        }
        families.append(
            Family(
                f"blueprint_topic_{name}",
                "gauge" if gauge else "counter",
                f"Per topic: {name}" + (" peers now." if gauge else " messages."),
                samples,
            )
        )
    families.append(
        Family(
            "blueprint_gossip_router_events",
            "counter",
            "The gossip router's drops and events, by name.",
            {(("event", key),): value for key, value in gossip["counters"].items()},
        )
    )
    return families


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _sample(name: str, labels: Labels, value: float) -> str:
    inner = ",".join(f'{key}="{_escape(text)}"' for key, text in labels)
    number = repr(float(value)) if value != int(value) else str(int(value))
    return f"{name}{{{inner}}} {number}" if inner else f"{name} {number}"


def render(families: Iterable[Family], *, openmetrics: bool) -> str:
    """The exposition page: classic text format, or OpenMetrics (which
    names a counter family without ``_total`` and ends with ``# EOF``)."""
    lines = []
    for family in families:
        suffix = {"counter": "_total", "info": "_info"}.get(family.kind, "")
        if openmetrics:
            head, kind = family.name, family.kind
        else:
            head = family.name + suffix
            kind = "gauge" if family.kind == "info" else family.kind
        text = family.help.replace("\\", "\\\\").replace("\n", "\\n")
        lines += [f"# HELP {head} {text}", f"# TYPE {head} {kind}"]
        for labels, value in family.samples.items():
            lines.append(_sample(family.name + suffix, labels, value))
    if openmetrics:
        lines.append("# EOF")
    return "\n".join(lines) + "\n"
