"""The status endpoint: JSON, Prometheus text and the page, over loopback."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
import pytest_twisted
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_parser,
)
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.logger import ILogObserver, formatEvent, globalLogPublisher
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers
from zope.interface import provider

from blueprint_net._adapters.node import Node
from blueprint_net._core import telemetry
from blueprint_net._core.identity import Identity
from blueprint_net._ops.service import NodeService
from blueprint_net._ops.status import health, page, prometheus, snapshot
from blueprint_net._policy.bans import BanRegistry
from blueprint_net._policy.scores import Policy
from blueprint_net._policy.settings import Settings

pytestmark = [
    pytest.mark.usefixtures("clean_reactor"),
    # Twisted's own Agent, not this code: its response transport lacks
    # abortConnection on this path (twisted.web.client).
    pytest.mark.filterwarnings("ignore:Using readBody with a transport"),
]


async def _get(port: int, path: str, accept: str = "*/*") -> tuple[int, bytes, str]:
    agent = Agent(reactor)
    headers = Headers({b"accept": [accept.encode()]})
    url = f"http://127.0.0.1:{port}{path}".encode()
    response = await agent.request(b"GET", url, headers)
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
    logged: list[str] = []

    @provider(ILogObserver)
    def observer(event: dict[str, Any]) -> None:
        logged.append(formatEvent(event))

    globalLogPublisher.addObserver(observer)
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
        assert all(telemetry.NODE.find(key) for key in status["counters"])

        assert status["version"] and status["uptime_seconds"] >= 0
        assert status["transport"]["plaintext"] is False  # the default: TLS only
        assert status["protocols"] == []

        code, body, kind = await _get(status_port, "/metrics")
        assert code == 200 and kind == "text/plain; version=0.0.4; charset=utf-8"
        text = body.decode()
        assert "blueprint_peers 1\n" in text
        assert "blueprint_bans_unsaved 0\n" in text
        assert "blueprint_plaintext_allowed 0\n" in text
        assert "blueprint_handshakes_total 1\n" in text
        assert 'blueprint_bans_imposed_total{origin="manual"} 1\n' in text
        classic = {f.name: f for f in text_string_to_metric_families(text)}
        assert classic["blueprint_handshakes"].samples[0].value == 1

        code, body, kind = await _get(
            status_port, "/metrics", accept="application/openmetrics-text"
        )
        assert kind.startswith("application/openmetrics-text; version=1.0.0")
        parsed = {f.name: f for f in openmetrics_parser(body.decode())}
        assert parsed["blueprint_build"].type == "info"
        assert parsed["blueprint_peers"].samples[0].value == 1

        code, body, kind = await _get(status_port, "/healthz")
        assert (code, body) == (
            200,
            f"ok: listening on 127.0.0.1:{port}; 1 peers\n".encode(),
        )

        code, body, kind = await _get(status_port, "/")
        assert code == 200 and kind.startswith("text/html")
        assert str(alice.peer_id).encode() in body
        assert b"Every link is TLS." in body
        assert b"<th>Requests in</th>" in body and b"192.0.2.0/24" in body

        code, _, _ = await _get(status_port, "/nope")
        assert code == 404
        # A scraper's requests leave no access log line each.
        assert not [line for line in logged if '"GET /' in line]
    finally:
        globalLogPublisher.removeObserver(observer)
        await client.stop()
        await service.stopService()


def _status(**changes: Any) -> dict[str, Any]:
    status: dict[str, Any] = {
        "peer_id": "12D3KooW<script>",
        "version": "0.1.0",
        "started": 1_700_000_000.0,
        "uptime_seconds": 3725.0,
        "listening": ["127.0.0.1:7010"],
        "transport": {
            "listeners": [{"endpoint": "tcp:7010", "tls": False}],
            "plaintext": True,
        },
        "permitted": None,
        "peers": [],
        "kept_peers": [],
        "bans": 0,
        "bans_unsaved": 0,
        "allow_plaintext": True,
        "ban_list": [],
        "protocols": ["echo", 'odd"name\\\n'],
        "counters": Counter(),
    }
    status.update(changes)
    return status


def test_the_plaintext_opt_in_shows_in_json_metrics_and_page(bob: Identity) -> None:
    node = Node(bob, settings=Settings(allow_plaintext=True))
    status = snapshot(node, list)
    assert status["allow_plaintext"] is True
    assert json.loads(json.dumps(status))["allow_plaintext"] is True
    assert "blueprint_plaintext_allowed 1" in prometheus(status)
    shown = page(status)
    assert "Plaintext links allowed" in shown and "Every link is TLS" not in shown


COUNTERS = Counter(
    {
        'requests.in.odd"name\\\n': 3,
        "requests.in.echo": 1,
        "requests.refused.unknown.UNKNOWN_PROTOCOL": 4,
        "requests.refused.my.proto.RATE_LIMITED": 1,
        "refused.rate": 2,
        "handshakes.ok": 5,
        "handshakes.failed.BANNED": 1,
        "closed.GOING_AWAY": 2,
        "bans.automatic": 1,
        "misbehaviour": 2,
        "some.future.counter": 7,
    }
)


def test_metrics_parse_with_both_prometheus_parsers() -> None:
    status = _status(counters=COUNTERS)
    classic = prometheus(status)
    families = {f.name: f for f in text_string_to_metric_families(classic)}
    openmetrics = prometheus(status, openmetrics=True)
    assert openmetrics.endswith("# EOF\n")
    parsed = {f.name: f for f in openmetrics_parser(openmetrics)}
    # The same families either way (classic has no info type: a gauge).
    assert set(families) == {
        f"{name}_info" if family.type == "info" else name
        for name, family in parsed.items()
    }
    for name, family in parsed.items():
        assert family.documentation, f"{name} has no HELP"
        assert all(s.labels.get(k) for s in family.samples for k in s.labels)
    refused = {
        tuple(sorted(s.labels.items())): s.value
        for s in parsed["blueprint_requests_refused"].samples
    }
    # One dimension per label; a dotted protocol name survives.
    assert refused[(("code", "UNKNOWN_PROTOCOL"), ("protocol", "unknown"))] == 4
    assert refused[(("code", "RATE_LIMITED"), ("protocol", "my.proto"))] == 1
    # Known series start at 0, before their first increment.
    assert refused[(("code", "PAYLOAD_TOO_LARGE"), ("protocol", "echo"))] == 0
    failures = {
        s.labels["code"]: s.value
        for s in parsed["blueprint_handshake_failures"].samples
    }
    assert failures["BANNED"] == 1 and failures["HANDSHAKE_TIMEOUT"] == 0
    received = {
        s.labels["protocol"]: s.value
        for s in parsed["blueprint_requests_received"].samples
    }
    assert received == {"echo": 1, 'odd"name\\\n': 3}  # escaped, parsed back
    assert parsed["blueprint_handshakes"].samples[0].value == 5
    assert parsed["blueprint_bans_active"].type == "gauge"
    assert parsed["blueprint_bans_imposed"].type == "counter"
    assert parsed["blueprint_start_time_seconds"].samples[0].value == 1_700_000_000
    # A key nobody declared is still shown, in the guard family.
    other = parsed["blueprint_other_events"].samples
    assert [(s.labels["name"], s.value) for s in other] == [("some.future.counter", 7)]
    assert parsed["blueprint_memory_refusals"].samples[0].value == 0  # new families


def test_health_is_503_when_not_listening() -> None:
    assert health(_status())[0] == 200
    assert health(_status(listening=[])) == (503, "not listening; 0 peers\n")


def test_the_page_escapes_everything_and_has_headers() -> None:
    hostile = "<img src=x onerror=alert(1)>"
    status = _status(
        peers=[
            {
                "peer_id": hostile,
                "address": hostile,
                "since": 1_700_000_000.0,
                "direction": "inbound",
                "requests_in": 3,
                "requests_out": 4,
            }
        ],
        ban_list=[
            {
                "target": "192.0.2.0/24",
                "kind": "network",
                "origin": "manual",
                "reason": hostile,
                "created": 1_700_000_000.0,
                "expires": None,
            }
        ],
        bans=1,
        counters=COUNTERS,
    )
    text = page(status, now=1_700_003_725.0)
    assert "<img" not in text and "<script>" not in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text
    for header in ("Peer id", "Address", "Direction", "Since", "Requests out"):
        assert f"<th>{header}</th>" in text
    assert "Plaintext links allowed" in text
    assert 'http-equiv="refresh"' in text and "Up 1 h 2 min" in text
    assert "src=" not in text.replace("&lt;img src=x", "")  # no external assets
    assert "1 h 2 min ago" in text  # the peer's "since"
    tls = _status(
        transport={
            "listeners": [{"endpoint": "p2ptls:7010", "tls": True}],
            "plaintext": False,
        }
    )
    assert "Plaintext allowed" not in page(tls)


def test_every_refusal_reason_has_its_series() -> None:
    from blueprint_net._ops.metrics import counter_families

    families = {f.name: f for f in counter_families({}, [])}
    refused = families["blueprint_connections_refused"].samples
    for reason in ("handshaking_subnet", "declined", "rate", "peer"):
        assert refused[(("reason", reason),)] == 0.0
    assert "blueprint_requests_rate_limited" not in families  # counted once


def test_a_peers_ipv6_address_is_bracketed(monkeypatch: pytest.MonkeyPatch) -> None:
    from twisted.internet.address import IPv6Address

    from blueprint_net._adapters.node import Node
    from blueprint_net._adapters.peers import Peer
    from blueprint_net._core.identity import Identity
    from blueprint_net._ops import status

    node = Node(Identity.generate())
    address = IPv6Address("TCP", "::1", 7010)
    peer = Peer(Identity.generate().peer_id, address, 0.0, "inbound")
    monkeypatch.setattr(Node, "peers", property(lambda self: [peer]))
    [shown] = status.snapshot(node, list)["peers"]
    assert shown["address"] == "[::1]:7010"
