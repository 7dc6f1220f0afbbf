"""The node's numbers as Prometheus metric families, in the classic text
format and in OpenMetrics.

Layer: ops (the operator surface).

The node counts with one ``collections.Counter`` keyed by dotted names
(``handshakes.failed.BANNED``): one dict update on the hot path.  Every key
is declared once, in ``_core/telemetry.py``, with its family, help and
labels; this module reads those declarations when the page is asked for and
makes one family per declared counter, one dimension per label.  Every label
value is bounded: an error code, a refusal reason, a ban origin, or a
protocol name the node registered (or ``unknown``; a name a peer chose is
never a label).  Known series start at 0, so a rate over the first increment
is not lost.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

import twisted
from blueprint_net._adapters.gossip import TOPIC_STATS
from blueprint_net._core import telemetry
from blueprint_net._core.telemetry import Metric

Labels = tuple[tuple[str, str], ...]

#: Classic text format (what Prometheus asks for by default).
CLASSIC = "text/plain; version=0.0.4; charset=utf-8"
#: OpenMetrics, for a scraper that says it accepts it.
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


@attrs.frozen
class Family:
    """One metric family: ``name`` has no ``_total`` suffix; ``samples`` map
    label sets to values."""

    name: str
    kind: str  # "counter", "gauge" or "info"
    help: str
    samples: dict[Labels, float]


#: Where a key nobody declared in ``_core/telemetry.py`` goes (a guard: the
#: tests check that every key the package counts is declared).
UNDECLARED = "blueprint_other_events"


def _series(metric: Metric, values: tuple[str, ...]) -> Labels:
    return tuple(zip((label.name for label in metric.labels), values))


def counter_families(
    counters: Mapping[str, int], protocols: Iterable[str]
) -> list[Family]:
    """The node's counters as the families ``telemetry.NODE`` declares,
    known series at 0."""
    protocols = sorted(protocols)
    families = {
        metric: Family(
            metric.name,
            "counter",
            metric.help,
            {_series(metric, values): 0.0 for values in metric.known(protocols)},
        )
        for metric in telemetry.NODE
    }
    other = Family(
        UNDECLARED,
        "counter",
        "Counters not declared in telemetry (none should be), by key.",
        {},
    )
    for key, value in counters.items():
        found = telemetry.NODE.find(key)
        if found is None:
            other.samples[(("name", key),)] = value
        else:
            metric, values = found
            families[metric].samples[_series(metric, values)] = value
    return [*families.values(), *([other] if other.samples else [])]


def router_events(counters: Mapping[str, int]) -> Family:
    """The gossip router's counters as one family labelled ``event`` with
    each declared key (at 0 until counted), as dashboards know it."""
    samples: dict[Labels, float] = {
        (("event", metric.key_for(*values) if values else metric.key),): 0.0
        for metric in telemetry.ROUTER
        for values in metric.known()
    }
    for key, value in counters.items():
        samples[(("event", key),)] = value
    return Family(
        telemetry.ROUTER_EVENTS,
        "counter",
        "The gossip router's drops and events, by name.",
        samples,
    )


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
    families.append(router_events(gossip["counters"]))
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
