"""Shared fixtures.  pytest-twisted runs one global reactor for the session,
so every test that touches it must leave it as it found it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

import attrs
import hypothesis
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.logger import ILogObserver, Logger, globalLogPublisher

from blueprint_net._adapters.host import ConnectionHost
from blueprint_net._adapters.node import Node
from blueprint_net._adapters.summary import EventSummary
from blueprint_net._core.identity import Identity
from blueprint_net._policy.settings import Settings
from blueprint_net.testing import MemoryNetwork
from tests.helpers import MakeNode


@pytest.fixture
def clean_reactor() -> Iterator[None]:
    """Fail a test that leaves a delayed call, a port or a connection behind."""
    before_calls = set(reactor.getDelayedCalls())
    before_sockets = _sockets()
    yield
    left_calls = [
        call
        for call in reactor.getDelayedCalls()
        if call not in before_calls and call.active()
    ]
    left_selectables = _sockets() - before_sockets
    assert not left_calls, f"delayed calls left behind: {left_calls}"
    assert not left_selectables, f"ports or connections left open: {left_selectables}"


def _sockets() -> set[object]:
    """Ports and connections the reactor watches (not its own wakers)."""
    selectables = set(reactor.getReaders()) | set(reactor.getWriters())
    return {s for s in selectables if hasattr(s, "getHost")}


@pytest.fixture
def alice() -> Identity:
    return Identity(bytes(range(32)))


@pytest.fixture
def bob() -> Identity:
    return Identity(bytes(range(32, 64)))


@pytest.fixture
def carol() -> Identity:
    return Identity(bytes(range(64, 96)))


@pytest_twisted.async_yield_fixture
async def make_node() -> AsyncIterator[MakeNode]:
    """Nodes stopped at the end of the test, pass or fail: the teardown
    every node test needs, once (stopping twice is harmless).

    They opt in to plaintext (``allow_plaintext``): most tests here dial
    ``tcp:`` on loopback, where TLS would only slow them down.  A test of the
    default, TLS-only path passes ``allow_plaintext=False``.
    """
    made: list[Node] = []

    def make(
        identity: Identity, *, allow_plaintext: bool = True, **options: Any
    ) -> Node:
        settings = attrs.evolve(
            options.pop("settings", Settings()), allow_plaintext=allow_plaintext
        )
        made.append(Node(identity, settings=settings, **options))
        return made[-1]

    yield make
    for node in made:
        await node.stop()


@pytest.fixture
def net() -> Iterator[MemoryNetwork]:
    """Nodes connected in memory on one fake clock (``blueprint_net.testing``),
    stopped at the end; for node tests that need no sockets."""
    with MemoryNetwork() as network:
        yield network


# ``mutmut run`` (docs/testing.md) selects this profile: every mutant reruns
# the tests that reach it, so property tests there draw fewer examples.
hypothesis.settings.register_profile("mutation", max_examples=25, deadline=None)


@pytest.fixture
def logged() -> Iterator[list[dict[str, Any]]]:
    """Every log event emitted during the test."""
    events: list[dict[str, Any]] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    yield events
    globalLogPublisher.removeObserver(observer)


@pytest.fixture
def node_log(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every event the nodes log (caught on the class, no global observer)."""
    events: list[dict[str, Any]] = []
    logger = Logger(observer=cast(ILogObserver, events.append))
    monkeypatch.setattr(Node, "_log", logger)
    monkeypatch.setattr(ConnectionHost, "_log", logger)
    return events


@pytest.fixture
def summary_log(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every event the nodes' failure and refusal summaries log."""
    events: list[dict[str, Any]] = []
    monkeypatch.setattr(
        EventSummary, "_log", Logger(observer=cast(ILogObserver, events.append))
    )
    return events
