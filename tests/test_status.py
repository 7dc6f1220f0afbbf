"""The status endpoint: JSON, Prometheus text and the page, over loopback."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.web.client import Agent, readBody

from blueprint_net._adapters.node import Node
from blueprint_net._core.identity import Identity
from blueprint_net._ops.service import NodeService
from blueprint_net._ops.status import page, prometheus, snapshot
from blueprint_net._policy.bans import BanRegistry
from blueprint_net._policy.scores import Policy
from blueprint_net._policy.settings import Settings

pytestmark = [
    pytest.mark.usefixtures("clean_reactor"),
    # Twisted's own Agent, not this code: its response transport lacks
    # abortConnection on this path (twisted.web.client).
    pytest.mark.filterwarnings("ignore:Using readBody with a transport"),
]


async def _get(port: int, path: str) -> tuple[int, bytes, str]:
    agent = Agent(reactor)
    response = await agent.request(b"GET", f"http://127.0.0.1:{port}{path}".encode())
    body = await readBody(response)
    kind = response.headers.getRawHeaders(b"content-type", [b""])[0].decode()
    return response.code, body, kind


@pytest_twisted.ensureDeferred
async def test_status_json_metrics_and_page(alice: Identity, bob: Identity) -> None:
    registry = BanRegistry(reactor)
    node = Node(bob, policy=Policy(registry))
    service = NodeService(
        node,
        None,
        listen=["p2ptls:0:interface=127.0.0.1"],
        peers=[],
        status="tcp:0:interface=127.0.0.1",
    )
    service.startService()
    client = Node(alice)
    try:
        port = service.listeners[0].port.getHost().port  # type: ignore[union-attr]
        await client.connect(f"p2ptls:127.0.0.1:{port}", peer_id=bob.peer_id)
        node.ban("192.0.2.0/24", "test")
        assert service.status is not None and service.status.port is not None
        status_port = service.status.port.getHost().port

        code, body, kind = await _get(status_port, "/status.json")
        status = json.loads(body)
        assert (code, kind) == (200, "application/json")
        assert status["peer_id"] == str(bob.peer_id)
        assert status["listening"] == [f"127.0.0.1:{port}"]
        assert status["allow_plaintext"] is False
        assert [p["peer_id"] for p in status["peers"]] == [str(alice.peer_id)]
        assert status["peers"][0]["direction"] == "inbound"
        assert status["bans"] == 1
        assert status["bans_unsaved"] == 0
        assert status["counters"]["handshakes.ok"] == 1

        code, body, kind = await _get(status_port, "/metrics")
        assert code == 200 and kind.startswith("text/plain")
        text = body.decode()
        assert "blueprint_peers 1" in text
        assert "blueprint_bans_unsaved 0" in text
        assert "blueprint_plaintext_allowed 0" in text
        assert 'blueprint_handshakes_total{what="ok"} 1' in text
        assert 'blueprint_bans_total{what="manual"} 1' in text

        code, body, kind = await _get(status_port, "/")
        assert code == 200 and kind.startswith("text/html")
        assert str(alice.peer_id).encode() in body
        assert b"Every link is TLS." in body

        code, _, _ = await _get(status_port, "/nope")
        assert code == 404
    finally:
        await client.stop()
        await service.stopService()


def test_prometheus_labels_are_escaped() -> None:
    status = {
        "peers": [],
        "bans": 0,
        "bans_unsaved": 0,
        "allow_plaintext": False,
        "counters": Counter({'requests.in.odd"name\\\n': 3, "refused.rate": 2}),
    }
    text = prometheus(status)
    assert 'blueprint_requests_total{what="in.odd\\"name\\\\\\n"} 3' in text
    assert 'blueprint_refused_total{what="rate"} 2' in text


def test_the_plaintext_opt_in_shows_in_json_metrics_and_page(bob: Identity) -> None:
    node = Node(bob, settings=Settings(allow_plaintext=True))
    status = snapshot(node, list)
    assert status["allow_plaintext"] is True
    assert json.loads(json.dumps(status))["allow_plaintext"] is True
    assert "blueprint_plaintext_allowed 1" in prometheus(status)
    shown = page(status)
    assert "Plaintext links allowed" in shown and "Every link is TLS" not in shown
