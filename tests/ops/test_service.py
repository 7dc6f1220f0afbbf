"""``NodeService``: what it does at start-up beyond starting its children."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
import pytest_twisted
from twisted.internet import reactor

from blueprint_net import Identity, Node
from blueprint_net._ops.service import NodeService
from tests.helpers import PLAINTEXT


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # other tests' objects must stay collectable


@pytest_twisted.ensureDeferred
async def test_start_up_freezes_what_lives_as_long_as_the_process(
    alice: Identity, unfrozen: None
) -> None:
    """Start-up objects leave the collector's generations, so a full pass
    does not walk them (``python -m bench.gc`` measures the pauses)."""
    node = Node(alice, reactor=reactor, settings=PLAINTEXT)
    service = NodeService(
        node, None, listen=["tcp:0:interface=127.0.0.1"], peers=[], status=None
    )
    assert gc.get_freeze_count() == 0
    service.startService()
    try:
        assert gc.get_freeze_count() > 0
    finally:
        await service.stopService()
