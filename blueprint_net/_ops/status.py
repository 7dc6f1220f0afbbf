"""The status endpoint: JSON, Prometheus metrics, a health check and a page
an operator keeps open, on loopback.

Layer: ops (the operator surface).

``/status.json`` -- identity, version, uptime, listeners, whether plaintext
links are allowed, peers, kept peers, bans, counters (what ``blueprint-net
status`` prints).
``/metrics`` -- the same numbers for Prometheus (:mod:`.metrics`).
``/healthz`` -- 200 while the node listens, with its peer count; else 503.
``/`` -- the page: self-contained (no external assets), every value
HTML-escaped, refreshing itself.
"""

from __future__ import annotations

import importlib.metadata
import json
import time
from collections.abc import Sequence
from typing import Any, Callable, Optional

from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from blueprint_net._adapters import tls
from blueprint_net._adapters.node import Node
from blueprint_net._ops import metrics, neighbourhood
from blueprint_net._ops.html_table import cell as _td
from blueprint_net._ops.html_table import escape as _e
from blueprint_net._ops.html_table import table as _table
from blueprint_net._policy.addresses import where

#: Seconds between the page's own refreshes.
REFRESH = 5
#: Bans listed on the page and in ``/status.json`` (the count is always whole).
BANS_SHOWN = 100
try:  # the package's own metadata: this layer may not import the surface
    VERSION = importlib.metadata.version("blueprint-net")
except importlib.metadata.PackageNotFoundError:  # run from a source tree
    VERSION = "unknown"


def snapshot(
    node: Node,
    listening: Callable[[], list[str]],
    *,
    listen: Sequence[str] = (),
    kept: Callable[[], list[dict[str, Any]]] = list,
    started: Optional[float] = None,
) -> dict[str, Any]:
    """What ``/status.json`` serves (and ``blueprint-net status`` prints)."""
    now = time.time()
    started = now if started is None else started
    bans = node.bans.bans()
    permitted = node.policy.permitted
    return {
        "peer_id": str(node.peer_id),
        "version": VERSION,
        "started": started,
        "uptime_seconds": now - started,
        "listening": listening(),
        "allow_plaintext": node.settings.allow_plaintext,
        "transport": _transport(node, listen),
        "permitted": None if permitted is None else sorted(map(str, permitted)),
        "peers": [
            {
                "peer_id": str(peer.peer_id),
                "address": where(peer.address),
                "since": peer.since,
                "direction": peer.direction,
                "requests_in": peer.requests_in,
                "requests_out": peer.requests_out,
            }
            for peer in node.peers
        ],
        "kept_peers": kept(),
        "bans": len(bans),
        "bans_unsaved": node.bans.unsaved,
        "ban_list": [
            {
                "target": str(ban.target),
                "kind": ban.kind,
                "origin": ban.origin.value,
                "reason": ban.reason,
                "created": ban.created,
                "expires": ban.expires,
            }
            for ban in bans[-BANS_SHOWN:]
        ],
        "protocols": node.protocols,
        "counters": dict(sorted(node.counters.items())),
        "gossip": neighbourhood.gossip_status(node),
        "discovery": neighbourhood.discovery(node),
    }


def _transport(node: Node, listen: Sequence[str]) -> dict[str, Any]:
    listeners = [
        {"endpoint": description, "tls": tls.is_tls(description)}
        for description in listen
    ]
    return {"listeners": listeners, "plaintext": node.settings.allow_plaintext}


def prometheus(status: dict[str, Any], *, openmetrics: bool = False) -> str:
    """The ``/metrics`` page for a snapshot."""
    return metrics.render(metrics.families(status), openmetrics=openmetrics)


def health(status: dict[str, Any]) -> tuple[int, str]:
    """``/healthz``: 200 while listening (with the peer count), else 503."""
    peers = len(status["peers"])
    if status["listening"]:
        return (
            200,
            f"ok: listening on {', '.join(status['listening'])}; {peers} peers\n",
        )
    return 503, f"not listening; {peers} peers\n"


# -- the page -----------------------------------------------------------------

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em 2em;color:#222;background:#fafafa}
h1{font-size:1.4em;margin:0}h2{font-size:1.1em;margin:1.6em 0 .4em}
h3{font-size:.95em;margin:1em 0 .2em}
.meta{color:#555;margin:.3em 0 1em}
table{border-collapse:collapse;background:#fff;margin-bottom:.5em}
th,td{border:1px solid #ddd;padding:.25em .7em;text-align:left;vertical-align:top}
th{background:#f0f0f0;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
code{font-size:.9em}.warn{background:#fff3cd;border:1px solid #e0b400;padding:.5em 1em}
.ok{color:#176f2c}.bad{color:#a4000f}.muted{color:#777}
.groups{display:flex;flex-wrap:wrap;gap:0 2em}
.picture svg{max-width:100%;height:auto}
footer{margin-top:2em;color:#777}
"""


def duration(seconds: float) -> str:
    """``3 d 4 h``, ``5 min 2 s``: the two largest units."""
    seconds = max(0, int(seconds))
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            parts.append(f"{seconds // size} {unit}")
            seconds %= size
    return " ".join(parts[:2])


def _when(timestamp: Optional[float], now: float) -> str:
    if timestamp is None:
        return "never"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))
    delta = now - timestamp
    relative = f"{duration(delta)} ago" if delta >= 0 else f"in {duration(-delta)}"
    return f'{_e(relative)} <span class="muted">({_e(stamp)})</span>'


def page(status: dict[str, Any], now: Optional[float] = None) -> str:
    """The status page for a snapshot."""
    now = time.time() if now is None else now
    transport = status["transport"]
    listeners = ", ".join(
        f"{_e(listener['endpoint'])} ({'TLS' if listener['tls'] else 'plaintext'})"
        for listener in transport["listeners"]
    ) or _e(", ".join(status["listening"]) or "nothing")
    warning = (
        '<p class="warn"><b>Plaintext links allowed</b> (--allow-plaintext):'
        " peers can connect without TLS; their traffic can be read, and a relay"
        " can speak as a peer on such links. For trusted networks only.</p>"
        if transport["plaintext"]
        else '<p class="meta">Every link is TLS.</p>'
    )
    permitted = status["permitted"]
    mode = (
        "open (any proven peer)"
        if permitted is None
        else f"permissioned ({len(permitted)} peers on the allow-list)"
    )
    peers = [
        [
            f"<td><code>{_e(p['peer_id'])}</code></td>",
            _td(p["address"]),
            _td(p["direction"]),
            f"<td>{_when(p['since'], now)}</td>",
            _td(p["requests_in"], True),
            _td(p["requests_out"], True),
        ]
        for p in status["peers"]
    ]
    kept = [
        [
            f"<td><code>{_e(k['peer_id'])}</code></td>",
            _td(k["address"]),
            f'<td class="{"ok" if k["state"] == "connected" else "bad"}">'
            f"{_e(k['state'])}</td>",
            _td(k["failures"], True),
            _td(k["last_error"] or ""),
            f"<td>{_when(k['next_attempt'], now) if k['next_attempt'] else ''}</td>",
        ]
        for k in status["kept_peers"]
    ]
    bans = [
        [
            f"<td><code>{_e(b['target'])}</code></td>",
            _td(b["kind"]),
            _td(b["origin"]),
            _td(b["reason"]),
            f"<td>{_when(b['created'], now)}</td>",
            f"<td>{_when(b['expires'], now) if b['expires'] else 'never'}</td>",
        ]
        for b in reversed(status["ban_list"])
    ]
    shown = len(status["ban_list"])
    more = (
        f'<p class="muted">The newest {shown} of {status["bans"]} bans;'
        " <code>blueprint-net bans</code> lists them all.</p>"
        if shown < status["bans"]
        else ""
    )
    groups = "".join(
        f'<div><h3 title="{_e(family.help)}">{_e(family.name)}</h3>'
        + _table(
            ["labels", "value"],
            [
                [
                    _td(", ".join(f"{k}={v}" for k, v in labels) or "(total)"),
                    _td(f"{value:g}", True),
                ]
                for labels, value in family.samples.items()
                if value
            ],
            "all 0",
        )
        + "</div>"
        for family in metrics.counter_families(status["counters"], status["protocols"])
    )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="refresh" content="{REFRESH}">'
        '<meta name="viewport" content="width=device-width">'
        f"<title>blueprint-net {_e(status['peer_id'][:16])}…</title>"
        f"<style>{_STYLE}</style></head><body>"
        f"<h1>blueprint-net {_e(status['version'])}</h1>"
        f'<p class="meta">Peer id <code>{_e(status["peer_id"])}</code><br>'
        f"Up {_e(duration(status['uptime_seconds']))}, since"
        f" {_when(status['started'], now)}<br>"
        f"Listening on {listeners}<br>Admission: {_e(mode)}; serving"
        f" {_e(', '.join(status['protocols']) or 'no protocols')}</p>"
        f"{warning}"
        f"<h2>Peers ({len(status['peers'])})</h2>"
        + _table(
            ["Peer id", "Address", "Direction", "Since", "Requests in", "Requests out"],
            peers,
            "No verified peers.",
        )
        + f"<h2>Kept peers ({len(status['kept_peers'])})</h2>"
        + _table(
            ["Peer id", "Address", "State", "Failures", "Last error", "Next attempt"],
            kept,
            "No peers configured with --peer.",
        )
        + neighbourhood.section(status)
        + f"<h2>Bans ({status['bans']}; {status['bans_unsaved']} unsaved)</h2>"
        + _table(
            ["Target", "Kind", "Origin", "Reason", "Since", "Expires"],
            bans,
            "No bans in force.",
        )
        + more
        + f'<h2>Counters</h2><div class="groups">{groups}</div>'
        + f"<footer>Refreshes every {REFRESH} s; as of"
        f" {_e(time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(now)))}."
        ' <a href="/status.json">JSON</a> · <a href="/metrics">Prometheus</a>'
        ' · <a href="/healthz">health</a></footer></body></html>'
    )


class StatusPage(Resource):
    isLeaf = True

    def __init__(
        self,
        node: Node,
        listening: Callable[[], list[str]],
        *,
        listen: Sequence[str] = (),
        kept: Callable[[], list[dict[str, Any]]] = list,
        started: Optional[float] = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.node, self.listening = node, listening
        self.listen, self.kept = list(listen), kept
        self.started = time.time() if started is None else started

    def render_GET(self, request: Request) -> bytes:
        status = snapshot(
            self.node,
            self.listening,
            listen=self.listen,
            kept=self.kept,
            started=self.started,
        )
        path = request.path
        if path == b"/status.json":
            request.setHeader(b"content-type", b"application/json")  # type: ignore[no-untyped-call]
            return json.dumps(status, indent=2).encode()
        if path == b"/metrics":
            accept = request.getHeader(b"accept") or b""
            openmetrics = b"application/openmetrics-text" in accept
            kind = metrics.OPENMETRICS if openmetrics else metrics.CLASSIC
            request.setHeader(b"content-type", kind.encode())  # type: ignore[no-untyped-call]
            return prometheus(status, openmetrics=openmetrics).encode()
        if path == b"/healthz":
            code, text = health(status)
            request.setResponseCode(code)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")  # type: ignore[no-untyped-call]
            return text.encode()
        if path == b"/":
            request.setHeader(b"content-type", b"text/html; charset=utf-8")  # type: ignore[no-untyped-call]
            return page(status).encode()
        request.setResponseCode(404)
        return b"not found\n"


class StatusSite(Site):
    """The status endpoint's site: no log line per request (a scraper asks
    every few seconds) and none for each connection."""

    noisy = False

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource)  # type: ignore[no-untyped-call]

    def log(self, request: Any) -> None:
        pass
