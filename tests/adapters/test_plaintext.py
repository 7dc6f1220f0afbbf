"""TLS by default: a plain listener, dial or transport needs the explicit,
logged opt-in (``Settings(allow_plaintext=True)``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.logger import ILogObserver, globalLogPublisher

from blueprint_net import Settings
from blueprint_net._adapters import tls
from blueprint_net._adapters.node import Node
from blueprint_net._core.errors import ErrorCode, HandshakeError
from blueprint_net._core.identity import Identity
from blueprint_net.errors import ConfigurationError, PlaintextRefused, Refused
from blueprint_net.testing import MemoryNetwork
from tests.helpers import MakeNode, until

pytestmark = [pytest.mark.usefixtures("clean_reactor"), pytest.mark.timeout(30)]


@pytest.fixture
def warnings() -> Iterator[list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    yield events
    globalLogPublisher.removeObserver(observer)


def _opt_ins(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e.get("allow_plaintext") is True]


@pytest.mark.parametrize(
    ("description", "secure"),
    [
        ("p2ptls:7010:interface=127.0.0.1", True),
        ("ssl:0:privateKey=k.pem", True),
        ("TLS:localhost:7010", True),
        ("tcp:7010", False),
        ("unix:/tmp/socket", False),
        ("7010", False),
    ],
)
def test_which_descriptions_are_tls(description: str, secure: bool) -> None:
    assert tls.is_tls(description) is secure


@pytest_twisted.ensureDeferred
async def test_a_default_node_refuses_plain_descriptions(
    alice: Identity, make_node: MakeNode
) -> None:
    node = make_node(alice, allow_plaintext=False)
    with pytest.raises(PlaintextRefused) as listening:
        await node.listen("tcp:0:interface=127.0.0.1")
    with pytest.raises(PlaintextRefused) as dialing:
        await node.connect("tcp:127.0.0.1:9")  # refused before any dial
    for refused in (listening.value, dialing.value):
        assert isinstance(refused, ConfigurationError)
        assert isinstance(refused, Refused)  # what connect documents
        message = str(refused)
        assert "allow_plaintext / --allow-plaintext" in message
        assert "\n" not in message
    assert node.counters == {}


@pytest_twisted.ensureDeferred
async def test_a_plain_transport_from_an_endpoint_object_is_closed_first(
    alice: Identity, bob: Identity, make_node: MakeNode
) -> None:
    """Endpoint objects bypass the description check: the transport itself
    is checked, and closed with NOT_ALLOWED before any handshake."""
    server = make_node(bob, allow_plaintext=False)
    client = make_node(alice)  # opted in: it would speak plaintext
    port = await server.listen(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"))
    number = port.getHost().port  # type: ignore[attr-defined]
    with pytest.raises(HandshakeError) as refused:
        await client.connect(TCP4ClientEndpoint(reactor, "127.0.0.1", number))
    reason = refused.value.reason
    assert reason.code is ErrorCode.NOT_ALLOWED and reason.remote  # type: ignore[union-attr]
    assert "--allow-plaintext" in str(reason)
    await until(lambda: not server._peers.open)
    assert server.counters["handshakes.failed.NOT_ALLOWED"] == 1
    assert server.counters["misbehaviour"] == 0  # our policy, not the peer's fault
    assert server.peers == [] and client.peers == []


@pytest_twisted.ensureDeferred
async def test_a_default_node_dialing_a_plain_endpoint_object_is_refused(
    alice: Identity, bob: Identity, make_node: MakeNode
) -> None:
    server = make_node(bob, handlers={"echo": lambda request: request.payload})
    client = make_node(alice, allow_plaintext=False)
    port = await server.listen("tcp:0:interface=127.0.0.1")
    number = port.getHost().port  # type: ignore[attr-defined]
    with pytest.raises(PlaintextRefused, match="--allow-plaintext"):
        await client.connect(TCP4ClientEndpoint(reactor, "127.0.0.1", number))
    await until(lambda: server.counters["handshakes.failed.NOT_ALLOWED"] == 1)
    assert server.peers == [] and client.peers == []
    await until(lambda: not server._peers.open)


def test_the_opt_in_is_logged_once_per_node(
    alice: Identity, warnings: list[dict[str, Any]]
) -> None:
    Node(alice, reactor=reactor)
    assert _opt_ins(warnings) == []
    Node(alice, reactor=reactor, settings=Settings(allow_plaintext=True))
    [logged] = _opt_ins(warnings)
    assert logged["log_level"].name == "warn"
    assert "trusted networks only" in logged["log_format"]


def test_memory_networks_opt_in_whatever_settings_they_get() -> None:
    with MemoryNetwork() as net:
        node = net.add_node(settings=Settings(request_timeout=3.0))
        assert node.settings.allow_plaintext
        assert node.settings.request_timeout == 3.0
