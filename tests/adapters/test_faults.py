"""Faults: a connection cut at every byte offset of a handshake and of a
request/response exchange, on in-memory transports and a fake clock."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.python.failure import Failure

from blueprint_net._adapters.factory import PeerFactory
from blueprint_net._adapters.protocol import PeerProtocol
from blueprint_net._core import wire
from blueprint_net._core.errors import PeerLost
from blueprint_net._core.identity import Identity
from tests.helpers import PLAINTEXT, RecordingHost

ADDRESS = IPv4Address("TCP", "127.0.0.1", 4000)


class Echo(RecordingHost):
    def request_received(self, protocol: PeerProtocol, request: wire.Request) -> None:
        super().request_received(protocol, request)
        protocol.respond(wire.ProtocolResponse(request.request_id, request.payload))


def _exchange(alice: Identity, bob: Identity, cut: int) -> tuple[int, list[Any], Clock]:
    """Alice dials Bob, then asks; bytes move one at a time, alternating,
    and both ends are cut after ``cut`` bytes.  Returns the bytes moved, the
    request's outcomes and the clock."""
    clock = Clock()
    client = PeerFactory(
        RecordingHost(),
        alice,
        clock,
        PLAINTEXT,
        initiator=True,
        waited_on=False,  # nobody awaits this handshake but the asserts below
    ).buildProtocol(ADDRESS)
    server = PeerFactory(Echo(), bob, clock, PLAINTEXT, initiator=False).buildProtocol(
        ADDRESS
    )
    ends = [(client, StringTransport(peerAddress=ADDRESS)), (server, StringTransport())]
    for protocol, transport in ends:
        protocol.makeConnection(transport)
    outcomes: list[Any] = []
    moved, asked = 0, False
    while moved < cut:
        progressed = False
        for (_, out), (receiver, _) in (ends, ends[::-1]):
            data = out.value()
            if data and moved < cut and not receiver.connection.closed:
                out.clear()
                out.write(data[1:])
                receiver.dataReceived(data[:1])
                moved += 1
                progressed = True
        if client.connection.verified and not asked:
            asked = True
            client.sender.request("echo", b"payload").addBoth(outcomes.append)
            progressed = True
        if not progressed:
            break
    for protocol, _ in ends:
        protocol.connectionLost(Failure(ConnectionDone()))
    if asked:
        assert len(outcomes) == 1  # answered before the cut, or failed by it
    for protocol, _ in ends:
        assert protocol.connection.requests.pending == {}
        assert protocol.connection.requests.processing == set()
        assert len(protocol.connection.deadlines) == 0
    return moved, outcomes, clock


@pytest.fixture
def failures() -> Iterator[list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []

    def record(event: dict[str, Any]) -> None:
        if "log_failure" in event:
            events.append(event)

    observer = cast(ILogObserver, record)
    globalLogPublisher.addObserver(observer)
    yield events
    globalLogPublisher.removeObserver(observer)


def test_cut_at_every_byte_offset(
    alice: Identity, bob: Identity, failures: list[dict[str, Any]]
) -> None:
    total, outcomes, _ = _exchange(alice, bob, cut=10**9)  # the whole exchange
    assert isinstance(outcomes[0], wire.ProtocolResponse)  # uncut, it completes
    answered = lost = 0
    for cut in range(total + 1):
        moved, outcomes, clock = _exchange(alice, bob, cut)
        assert moved == cut
        if outcomes and isinstance(outcomes[0], wire.ProtocolResponse):
            answered += 1
        elif outcomes:
            assert isinstance(outcomes[0], Failure) and outcomes[0].check(PeerLost)
            lost += 1
        assert clock.getDelayedCalls() == []  # no timer survives the cut
    assert answered > 0 and lost > 0  # both sides of the line were reached
    assert failures == []  # nothing was logged as a failure
