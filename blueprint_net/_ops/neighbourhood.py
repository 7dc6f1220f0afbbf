"""The node's topics, meshes and discovery on the status endpoint, and the
picture of its neighbourhood.

Layer: ops (the operator surface).

In: a node, through its public accessors (``node.peers``, ``node.gossip``'s
``status``, ``mesh`` and ``records``).  Out: the ``gossip`` and
``discovery`` parts of ``/status.json``, and from those the page's Topics,
Neighbourhood and Discovery sections -- the picture an inline SVG (no
script, no external asset) in which every peer-provided string (topic
names, ids, addresses) is escaped, and whose size is bounded however many
peers or records a node holds.
"""

from __future__ import annotations

import math
from typing import Any

from blueprint_net._adapters.node import Node
from blueprint_net._ops.html_table import cell, escape, table

#: Known peers listed in ``/status.json`` (``known_peers`` is the whole count).
KNOWN_SHOWN = 100
#: What the picture draws at most: connected peers, known peers that are not
#: connected, and topics (the rest are counted in words under it).
DRAWN_PEERS, DRAWN_KNOWN, DRAWN_TOPICS = 24, 16, 6
#: Okabe-Ito colours: told apart with the commonest colour blindness too.
COLOURS = ("#E69F00", "#0072B2", "#009E73", "#D55E00", "#CC79A7", "#56B4E9")
WIDTH, HEIGHT = 700, 400
_CX, _CY = 260, 200
_INNER, _OUTER = 115, 165


def gossip_status(node: Node) -> dict[str, Any]:
    """The gossip router's status with each topic's mesh peers by id."""
    status = node.gossip.status()
    for topic, figures in status["topics"].items():
        figures["mesh_peers"] = sorted(str(p) for p in node.gossip.mesh(topic))
    return status


def discovery(node: Node) -> dict[str, Any]:
    """Known peers (verified records held) against connected ones; the
    most recently heard of first, at most :data:`KNOWN_SHOWN`."""
    entries = node.gossip.records.entries()
    connected = {peer.peer_id for peer in node.peers}
    return {
        "known_peers": len(entries),
        "connected_peers": len(connected),
        "known": [
            {
                "peer_id": str(entry.record.peer_id),
                "addresses": list(entry.record.addresses),
                "connected": entry.record.peer_id in connected,
                "tried": entry.tried,
            }
            for entry in reversed(entries[-KNOWN_SHOWN:])
        ],
    }


def short(peer_id: str) -> str:
    """A peer id's last six characters (they all begin ``12D3KooW``)."""
    return "…" + peer_id[-6:]


def _at(radius: float, index: int, count: int, turn: float = 0.0) -> tuple[int, int]:
    angle = 2 * math.pi * (index + turn) / max(count, 1) - math.pi / 2
    return round(_CX + radius * math.cos(angle)), round(_CY + radius * math.sin(angle))


def _label(x: int, y: int, text: str, css: str) -> str:
    dx, dy = x - _CX, y - _CY
    length = math.hypot(dx, dy) or 1.0
    lx, ly = round(x + 16 * dx / length), round(y + 16 * dy / length + 4)
    anchor = "start" if dx > 20 else "end" if dx < -20 else "middle"
    return (
        f'<text x="{lx}" y="{ly}" text-anchor="{anchor}" class="{css}">'
        f"{escape(text)}</text>"
    )


def picture(status: dict[str, Any]) -> str:
    """The node, its connected peers (inner ring), known peers it is not
    connected to (outer ring, dashed) and, per topic, a coloured link to
    each peer in that topic's mesh; a legend names the topics."""
    peers = sorted(p["peer_id"] for p in status.get("peers", []))
    topics = list(status.get("gossip", {}).get("topics", {}).items())
    known = [
        k["peer_id"]
        for k in status.get("discovery", {}).get("known", [])
        if not k["connected"]
    ]
    drawn, far = peers[:DRAWN_PEERS], known[:DRAWN_KNOWN]
    place = {p: _at(_INNER, i, len(drawn)) for i, p in enumerate(drawn)}
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}"'
        f' viewBox="0 0 {WIDTH} {HEIGHT}" role="img" class="neighbourhood"'
        ' aria-label="This node, its peers and its topic meshes">',
        # A white halo keeps labels legible where links cross them.
        "<style>text{font:11px system-ui,sans-serif;fill:#333;stroke:#fff;"
        "stroke-width:3px;paint-order:stroke}.far{fill:#888}.me{font-weight:600}"
        "</style>",
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#fff" stroke="#ddd"/>',
    ]
    for index, peer_id in enumerate(far):  # known, not connected: no link
        x, y = _at(_OUTER, index, len(far), turn=0.5)
        parts.append(
            f'<circle cx="{x}" cy="{y}" r="7" fill="#fff" stroke="#888"'
            f' stroke-dasharray="3 2" class="known"><title>{escape(peer_id)}'
            " (known, not connected)</title></circle>"
            + _label(x, y, short(peer_id), "far")
        )
    for x, y in place.values():  # every link, in grey
        parts.append(
            f'<line x1="{_CX}" y1="{_CY}" x2="{x}" y2="{y}" stroke="#ccc"'
            ' stroke-width="1"/>'
        )
    for number, (topic, figures) in enumerate(topics[:DRAWN_TOPICS]):
        colour = COLOURS[number]
        bend = (number - (min(len(topics), DRAWN_TOPICS) - 1) / 2) * 16
        for peer_id in figures.get("mesh_peers", []):
            if peer_id not in place:
                continue
            x, y = place[peer_id]
            length = math.hypot(x - _CX, y - _CY) or 1.0
            mx = round((x + _CX) / 2 - bend * (y - _CY) / length)
            my = round((y + _CY) / 2 + bend * (x - _CX) / length)
            parts.append(
                f'<path d="M{_CX},{_CY} Q{mx},{my} {x},{y}" fill="none"'
                f' stroke="{colour}" stroke-width="2.5" class="mesh">'
                f"<title>{escape(topic)}: mesh link to {escape(peer_id)}</title>"
                "</path>"
            )
    for peer_id, (x, y) in place.items():
        parts.append(
            f'<circle cx="{x}" cy="{y}" r="8" fill="#f0f0f0" stroke="#555"'
            f' class="peer"><title>{escape(peer_id)}</title></circle>'
            + _label(x, y, short(peer_id), "peer")
        )
    me = status.get("peer_id", "")
    parts.append(
        f'<circle cx="{_CX}" cy="{_CY}" r="13" fill="#333" class="self">'
        f"<title>this node: {escape(me)}</title></circle>"
        f'<text x="{_CX}" y="{_CY + 30}" text-anchor="middle" class="me">'
        f"this node {escape(short(me))}</text>"
    )
    parts += _legend(topics, len(peers) - len(drawn), len(known) - len(far))
    parts.append("</svg>")
    return "".join(parts)


def _legend(
    topics: list[tuple[str, Any]], more_peers: int, more_known: int
) -> list[str]:
    x, y = 510, 30
    parts = [f'<text x="{x}" y="{y}" class="me">Topic meshes</text>']
    for number, (topic, figures) in enumerate(topics[:DRAWN_TOPICS]):
        y += 22
        name = topic if len(topic) <= 18 else topic[:17] + "…"
        parts.append(
            f'<line x1="{x}" y1="{y - 4}" x2="{x + 22}" y2="{y - 4}"'
            f' stroke="{COLOURS[number]}" stroke-width="3"/>'
            f'<text x="{x + 28}" y="{y}" class="topic">{escape(name)}'
            f" ({len(figures.get('mesh_peers', []))})</text>"
        )
    if not topics:
        y += 22
        parts.append(f'<text x="{x}" y="{y}" class="far">no topics</text>')
    notes = [
        f"+{len(topics) - DRAWN_TOPICS} topics not drawn"
        if len(topics) > DRAWN_TOPICS
        else "",
        f"+{more_peers} peers not drawn" if more_peers > 0 else "",
        f"+{more_known} known peers not drawn" if more_known > 0 else "",
    ]
    y += 14
    parts.append(
        f'<line x1="{x}" y1="{y + 14}" x2="{x + 22}" y2="{y + 14}" stroke="#ccc"/>'
        f'<text x="{x + 28}" y="{y + 18}" class="far">connected</text>'
        f'<circle cx="{x + 11}" cy="{y + 36}" r="6" fill="none" stroke="#999"'
        ' stroke-dasharray="3 2"/>'
        f'<text x="{x + 28}" y="{y + 40}" class="far">known, not connected</text>'
    )
    y += 44
    for note in filter(None, notes):
        y += 18
        parts.append(f'<text x="{x}" y="{y}" class="far">{escape(note)}</text>')
    return parts


def section(status: dict[str, Any]) -> str:
    """The page's Topics, Neighbourhood and Discovery sections."""
    gossip = status.get("gossip", {"topics": {}})
    found = status.get("discovery", {"known_peers": 0, "connected_peers": 0})
    topics = [
        [
            f"<td><code>{escape(topic)}</code></td>",
            cell("yes" if figures["subscribed"] else "no"),
            cell(figures["mesh"], True),
            cell(figures["peers"], True),
            *(
                cell(figures[name], True)
                for name in ("published", "delivered", "forwarded", "dropped")
            ),
            cell(", ".join(short(p) for p in figures.get("mesh_peers", []))),
        ]
        for topic, figures in gossip["topics"].items()
    ]
    known = [
        [
            f"<td><code>{escape(k['peer_id'])}</code></td>",
            cell(", ".join(k["addresses"])),
            f'<td class="{"ok" if k["connected"] else "muted"}">'
            f"{'connected' if k['connected'] else 'not connected'}</td>",
            cell("yes" if k["tried"] else "no"),
        ]
        for k in found.get("known", [])
    ]
    return (
        f"<h2>Topics ({len(topics)})</h2>"
        + table(
            [
                "Topic",
                "Subscribed",
                "Mesh",
                "Peers on it",
                "Published",
                "Delivered",
                "Forwarded",
                "Dropped",
                "Mesh peers",
            ],
            topics,
            "No topics (twistd: --topic NAME).",
        )
        + "<h2>Neighbourhood</h2>"
        + f'<div class="picture">{picture(status)}</div>'
        + f"<h2>Discovery ({found['known_peers']} known, "
        f"{found['connected_peers']} connected)</h2>"
        + table(
            ["Peer id", "Addresses", "State", "Tried"],
            known,
            "No peer records heard.",
        )
    )
