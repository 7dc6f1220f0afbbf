"""The status page's topics, meshes, discovery and neighbourhood picture:
checked as structure (html.parser, xml.etree), never in a browser."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from typing import Any

import pytest
import pytest_twisted

from blueprint_net._ops.neighbourhood import (
    COLOURS,
    DRAWN_KNOWN,
    DRAWN_PEERS,
    DRAWN_TOPICS,
    picture,
    section,
)
from blueprint_net._ops.status import page, snapshot
from tests.adapters.test_gossip_network import TOPIC, build
from tests.helpers import MakeNode
from tests.ops.test_status import _status

SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = "<script>alert(1)</script>&\"'<img src=x onerror=alert(2)>"


def _figures(mesh_peers: list[str]) -> dict[str, Any]:
    figures: dict[str, Any] = dict.fromkeys(
        ("published", "delivered", "forwarded", "duplicate", "invalid"), 0
    )
    figures.update(
        subscribed=True,
        mesh=len(mesh_peers),
        fanout=0,
        peers=len(mesh_peers),
        ignored=0,
        dropped=0,
        mesh_peers=mesh_peers,
    )
    return figures


def _with(peers: list[str], topics: dict[str, list[str]], known: list[str]) -> Any:
    connected = set(peers)
    return _status(
        peers=[
            {
                "peer_id": p,
                "address": "127.0.0.1:1",
                "since": 1_700_000_000.0,
                "direction": "inbound",
                "requests_in": 0,
                "requests_out": 0,
            }
            for p in peers
        ],
        gossip={"topics": {t: _figures(m) for t, m in topics.items()}},
        discovery={
            "known_peers": len(known),
            "connected_peers": len(peers),
            "known": [
                {
                    "peer_id": k,
                    "addresses": [HOSTILE],
                    "connected": k in connected,
                    "tried": False,
                }
                for k in known
            ],
        },
    )


class _Elements(HTMLParser):
    """Every start tag the HTML parser sees."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, Any]]) -> None:
        self.tags.append(tag)


def _svg(html_text: str) -> ET.Element:
    start, end = html_text.index("<svg"), html_text.index("</svg>") + len("</svg>")
    assert html_text.count("<svg") == 1
    return ET.fromstring(html_text[start:end])  # well-formed XML, or it raises


def _of(svg: ET.Element, tag: str, css: str) -> list[ET.Element]:
    return [e for e in svg.iter(SVG + tag) if e.get("class") == css]


def test_hostile_topics_ids_and_addresses_stay_text() -> None:
    peer = "12D3KooW" + HOSTILE
    status = _with([peer], {HOSTILE: [peer], "plain": []}, [peer, HOSTILE])
    text = page(status, now=1_700_000_100.0)
    parser = _Elements()
    parser.feed(text)
    assert "script" not in parser.tags and "img" not in parser.tags
    assert "<script>" not in text and "<img" not in text
    svg = _svg(text)
    # What the parsers read back is the string itself: escaped, not dropped.
    titles = [t.text for t in svg.iter(SVG + "title")]
    assert f"{HOSTILE}: mesh link to {peer}" in titles
    legend = [t.text or "" for t in _of(svg, "text", "topic")]
    assert legend[0].startswith(HOSTILE[:17] + "…")  # long names are cut
    assert "src=" not in text.replace("src=x onerror", "")  # no external asset
    assert not [e for e in svg.iter() if any(k.startswith("on") for k in e.attrib)]


def test_the_picture_draws_peers_known_peers_and_each_topics_mesh() -> None:
    peers = [f"12D3KooWpeer{i}" for i in range(4)]
    known = [*peers, "12D3KooWgone1", "12D3KooWgone2"]
    topics = {"news": peers[:3], "blocks": peers[1:2], "idle": []}
    svg = ET.fromstring(picture(_with(peers, topics, known)))
    assert svg.tag == SVG + "svg"
    assert len(_of(svg, "circle", "peer")) == 4
    assert len(_of(svg, "circle", "self")) == 1
    assert len(_of(svg, "circle", "known")) == 2  # known, not connected
    mesh = _of(svg, "path", "mesh")
    by_colour = {c: sum(p.get("stroke") == c for p in mesh) for c in COLOURS[:3]}
    assert by_colour == {COLOURS[0]: 3, COLOURS[1]: 1, COLOURS[2]: 0}
    # The two topics' links to the peer in both meshes do not coincide.
    shared = [p.get("d") for p in mesh if p.get("d", "").endswith(_end(svg, peers[1]))]
    assert len(shared) == 2 and shared[0] != shared[1]
    legend = [t.text for t in _of(svg, "text", "topic")]
    assert legend == ["news (3)", "blocks (1)", "idle (0)"]


def _end(svg: ET.Element, peer_id: str) -> str:
    """The ``x,y`` of a peer's circle, as a path ending there writes it."""
    for circle in _of(svg, "circle", "peer"):
        title = circle.find(SVG + "title")
        if title is not None and title.text == peer_id:
            return f"{circle.get('cx')},{circle.get('cy')}"
    raise AssertionError(peer_id)


def test_the_picture_is_bounded_and_says_what_it_left_out() -> None:
    peers = [f"12D3KooWpeer{i:03}" for i in range(200)]
    known = [f"12D3KooWknown{i:03}" for i in range(100)]
    topics = {f"topic{i}": peers for i in range(20)}
    svg_text = picture(_with(peers, topics, known))
    svg = ET.fromstring(svg_text)
    assert len(_of(svg, "circle", "peer")) == DRAWN_PEERS
    assert len(_of(svg, "circle", "known")) == DRAWN_KNOWN
    assert len(_of(svg, "path", "mesh")) == DRAWN_PEERS * DRAWN_TOPICS
    notes = " ".join(t.text or "" for t in svg.iter(SVG + "text"))
    assert f"+{200 - DRAWN_PEERS} peers not drawn" in notes
    assert f"+{20 - DRAWN_TOPICS} topics not drawn" in notes
    assert f"+{100 - DRAWN_KNOWN} known peers not drawn" in notes


def test_a_status_without_gossip_still_renders() -> None:
    """An older snapshot (no ``gossip``, no ``discovery``) still renders."""
    text = section(_status())
    assert "No topics" in text and "No peer records heard." in text
    ET.fromstring(picture(_status()))


@pytest.mark.usefixtures("clean_reactor")
@pytest_twisted.ensureDeferred
async def test_the_snapshot_lists_each_topics_mesh_by_peer(
    make_node: MakeNode,
) -> None:
    net = await build(make_node, 3, [(0, 1), (0, 2)])
    await net.subscribe_all()
    centre = net.nodes[0]
    status = snapshot(centre, list)
    figures = status["gossip"]["topics"][TOPIC]
    assert figures["mesh_peers"] == sorted(str(n.peer_id) for n in net.nodes[1:])
    assert status["discovery"]["connected_peers"] == 2
    svg = _svg(page(status))
    assert len(_of(svg, "path", "mesh")) == 2
    assert len(_of(svg, "circle", "peer")) == 2
