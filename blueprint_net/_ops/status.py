"""The status endpoint: JSON, Prometheus text and a small page, on loopback.

Layer: ops (the operator surface).

``/status.json`` -- identity, listening addresses, whether plaintext links
are allowed, verified peers, bans, counters.
``/metrics`` -- the same counters in the Prometheus text format.
``/`` -- a page for people.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any, Callable

from twisted.web.resource import Resource
from twisted.web.server import Request

from blueprint_net._adapters.gossip import TOPIC_STATS
from blueprint_net._adapters.node import Node

_NAME = re.compile(r"[^a-zA-Z0-9_]")


def snapshot(node: Node, listening: Callable[[], list[str]]) -> dict[str, Any]:
    """What ``/status.json`` serves (and ``blueprint-net status`` prints)."""
    return {
        "peer_id": str(node.peer_id),
        "listening": listening(),
        "allow_plaintext": node.settings.allow_plaintext,
        "peers": [
            {
                "peer_id": str(peer.peer_id),
                "address": _address(peer.address),
                "since": peer.since,
                "direction": peer.direction,
            }
            for peer in node.peers
        ],
        "bans": len(node.bans.bans()),
        "bans_unsaved": node.bans.unsaved,
        "counters": dict(sorted(node.counters.items())),
        "gossip": node.gossip.status(),
    }


def _address(address: Any) -> str:
    host, port = getattr(address, "host", None), getattr(address, "port", None)
    return f"{host}:{port}" if host is not None else str(address)


def prometheus(status: dict[str, Any]) -> str:
    """Counters ``family.what`` become ``blueprint_family_total{what="..."}``."""
    lines = [
        "# HELP blueprint_peers Verified peers now.",
        "# TYPE blueprint_peers gauge",
        f"blueprint_peers {len(status['peers'])}",
        "# HELP blueprint_bans Bans in force now.",
        "# TYPE blueprint_bans gauge",
        f"blueprint_bans {status['bans']}",
        "# HELP blueprint_bans_unsaved Ban changes not yet in the ban database.",
        "# TYPE blueprint_bans_unsaved gauge",
        f"blueprint_bans_unsaved {status['bans_unsaved']}",
        "# HELP blueprint_plaintext_allowed 1 if links without TLS are allowed.",
        "# TYPE blueprint_plaintext_allowed gauge",
        f"blueprint_plaintext_allowed {int(status['allow_plaintext'])}",
    ]
    if "gossip" in status:
        lines += gossip_metrics(status["gossip"])
    families: dict[str, list[tuple[str, int]]] = {}
    for key, value in status["counters"].items():
        family, _, what = key.partition(".")
        families.setdefault(_NAME.sub("_", family), []).append((what, value))
    for family, samples in sorted(families.items()):
        lines.append(f"# TYPE blueprint_{family}_total counter")
        for what, value in samples:
            label = what.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
            lines.append(f'blueprint_{family}_total{{what="{label}"}} {value}')
    return "\n".join(lines) + "\n"


def page(status: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td><code>{html.escape(p['peer_id'])}</code></td>"
        f"<td>{html.escape(p['address'])}</td><td>{p['direction']}</td></tr>"
        for p in status["peers"]
    )
    counters = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>"
        for k, v in status["counters"].items()
    )
    links = (
        "<strong>Plaintext links allowed</strong> (--allow-plaintext): a relay"
        " can speak as a peer on them; for trusted networks only."
        if status["allow_plaintext"]
        else "Every link is TLS."
    )
    return (
        "<!doctype html><meta charset=utf-8><title>blueprint-net</title>"
        "<style>body{font-family:sans-serif;margin:2em}td{padding:0 1em}</style>"
        "<h1>blueprint-net</h1>"
        f"<p>{links}</p>"
        f"<p>Peer id <code>{html.escape(status['peer_id'])}</code>"
        f"; listening on {html.escape(', '.join(status['listening']))}"
        f"; {status['bans']} bans.</p>"
        f"<h2>Peers ({len(status['peers'])})</h2><table>{rows}</table>"
        f"<h2>Counters</h2><table>{counters}</table>"
        '<p><a href="/status.json">JSON</a> · <a href="/metrics">Prometheus</a></p>'
    )


class StatusPage(Resource):
    isLeaf = True

    def __init__(self, node: Node, listening: Callable[[], list[str]]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.node, self.listening = node, listening

    def render_GET(self, request: Request) -> bytes:
        status = snapshot(self.node, self.listening)
        path = request.path
        if path == b"/status.json":
            request.setHeader(b"content-type", b"application/json")  # type: ignore[no-untyped-call]
            return json.dumps(status, indent=2).encode()
        if path == b"/metrics":
            request.setHeader(b"content-type", b"text/plain; version=0.0.4")  # type: ignore[no-untyped-call]
            return prometheus(status).encode()
        if path == b"/":
            request.setHeader(b"content-type", b"text/html; charset=utf-8")  # type: ignore[no-untyped-call]
            return page(status).encode()
        request.setResponseCode(404)
        return b"not found\n"


#: Per-topic figures in ``/metrics``: a gauge or a counter each.
_TOPIC_GAUGES = ("mesh", "fanout", "peers")


def gossip_metrics(gossip: dict[str, Any]) -> list[str]:
    """Topic gossip's lines of ``/metrics``: known and connected peers, and
    per topic (only this node's own topics) mesh sizes and message counts."""
    lines = [
        "# HELP blueprint_gossip_known_peers Peer records held.",
        "# TYPE blueprint_gossip_known_peers gauge",
        f"blueprint_gossip_known_peers {gossip['known_peers']}",
        "# HELP blueprint_gossip_connected_peers Peers in the gossip router.",
        "# TYPE blueprint_gossip_connected_peers gauge",
        f"blueprint_gossip_connected_peers {gossip['connected_peers']}",
    ]
    for name in (*_TOPIC_GAUGES, *TOPIC_STATS):
        kind = "gauge" if name in _TOPIC_GAUGES else "counter"
        suffix = "" if kind == "gauge" else "_total"
        lines.append(f"# TYPE blueprint_topic_{name}{suffix} {kind}")
        for topic, figures in gossip["topics"].items():
            label = topic.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
            lines.append(
                f'blueprint_topic_{name}{suffix}{{topic="{label}"}} {figures[name]}'
            )
    lines.append("# TYPE blueprint_gossip_router_total counter")
    for key, value in gossip["counters"].items():
        label = key.replace('"', "")
        lines.append(f'blueprint_gossip_router_total{{what="{label}"}} {value}')
    return lines
