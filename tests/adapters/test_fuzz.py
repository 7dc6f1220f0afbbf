"""Two protocol instances driven by hypothesis through arbitrary interleavings
of valid and invalid input, splits, timeouts and disconnects.

Invariants, checked after every step:

* no request reaches a host before its side is Verified;
* every request's Deferred fires at most once, and by the end exactly once
  (a response, or a failure);
* a closed connection keeps no pending request, no request being processed,
  no deadline and no timer.
"""

from __future__ import annotations

from typing import Any

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from blueprint_net._adapters.factory import PeerFactory
from blueprint_net._adapters.protocol import PeerProtocol
from blueprint_net._core import wire
from blueprint_net._core.errors import RequestFailed
from blueprint_net._core.identity import Identity
from blueprint_net._policy.settings import Settings
from tests.helpers import RecordingHost

ALICE, BOB = Identity(bytes(range(32))), Identity(bytes(range(32, 64)))
ADDRESS = IPv4Address("TCP", "127.0.0.1", 4000)


class Host(RecordingHost):
    """Checks that nothing arrives before Verified."""

    def request_received(self, protocol: PeerProtocol, request: wire.Request) -> None:
        assert protocol.connection.verified, "a request before Verified"
        super().request_received(protocol, request)
        self.protocols = getattr(self, "protocols", [])
        self.protocols.append(protocol)


class Side:
    def __init__(self, identity: Identity, clock: Clock, *, initiator: bool) -> None:
        self.host = Host()
        factory = PeerFactory(
            self.host,
            identity,
            clock,
            Settings(request_timeout=5.0, allow_plaintext=True),
            initiator=initiator,
            waited_on=False,
        )
        self.protocol = factory.buildProtocol(ADDRESS)
        self.transport = StringTransport(peerAddress=ADDRESS)
        self.outbox = b""
        self.lost = False

    def take(self) -> None:
        self.outbox += self.transport.value()
        self.transport.clear()


class TwoPeers(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.sides = [
            Side(ALICE, self.clock, initiator=True),
            Side(BOB, self.clock, initiator=False),
        ]
        for side in self.sides:
            side.protocol.makeConnection(side.transport)
        self.requests: list[tuple[Deferred[Any], list[Any]]] = []

    def _lose(self, side: Side) -> None:
        if not side.lost:
            side.lost = True
            side.protocol.connectionLost(Failure(ConnectionDone()))

    # -- moving bytes -----------------------------------------------------------

    @rule(source=st.integers(0, 1), fraction=st.just(1.0) | st.floats(0.0, 1.0))
    def deliver(self, source: int, fraction: float) -> None:
        """Some of what one side wrote reaches the other (a random split)."""
        sender, receiver = self.sides[source], self.sides[1 - source]
        sender.take()
        if receiver.lost or not sender.outbox:
            return
        cut = max(1, int(len(sender.outbox) * fraction))
        chunk, sender.outbox = sender.outbox[:cut], sender.outbox[cut:]
        receiver.protocol.dataReceived(chunk)
        for side in self.sides:  # a side that asked to close has closed
            if side.transport.disconnecting:
                self._lose(side)

    @rule()
    def settle(self) -> None:
        """Everything written so far arrives, both ways, until all is quiet
        (a healthy network between the hostile steps)."""
        for _ in range(10):
            self.deliver(0, 1.0)
            self.deliver(1, 1.0)
            if not any(side.outbox or side.transport.value() for side in self.sides):
                return

    @rule(which=st.integers(0, 1), garbage=st.binary(min_size=1, max_size=40))
    def inject(self, which: int, garbage: bytes) -> None:
        """Bytes that are not what the peer sent: the stream is corrupt."""
        side = self.sides[which]
        if not side.lost:
            side.protocol.dataReceived(garbage)
            if side.transport.disconnecting:
                self._lose(side)

    # -- requests -----------------------------------------------------------------

    @rule(
        source=st.integers(0, 1), payload=st.binary(max_size=64), notify=st.booleans()
    )
    def ask(self, source: int, payload: bytes, notify: bool) -> None:
        side = self.sides[source]
        if side.lost or not side.protocol.connection.verified:
            return  # nothing may be sent before Verified (the API refuses)
        if notify:
            side.protocol.sender.notify("echo", payload)
            return
        event("a request between verified peers")
        results: list[Any] = []
        deferred = side.protocol.sender.request("echo", payload)
        deferred.addBoth(results.append)
        self.requests.append((deferred, results))

    @rule(which=st.integers(0, 1), index=st.integers(0, 1000), error=st.booleans())
    def answer(self, which: int, index: int, error: bool) -> None:
        """A host answers one of the requests it holds, in any order."""
        host = self.sides[which].host
        if not host.requests:
            return
        request = host.requests.pop(index % len(host.requests))
        protocol = host.protocols.pop(index % (len(host.protocols)))
        response: wire.Response = (
            wire.ErrorResponse(request.request_id, 301, "no")
            if error
            else wire.ProtocolResponse(request.request_id, request.payload)
        )
        protocol.respond(response)
        event("an answer, in any order")

    @rule(seconds=st.sampled_from([0.5, 3.0, 10.0, 40.0]))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)
        for side in self.sides:
            if side.transport.disconnecting:
                self._lose(side)

    @precondition(lambda self: not all(side.lost for side in self.sides))
    @rule(which=st.integers(0, 1))
    def disconnect(self, which: int) -> None:
        self._lose(self.sides[which])

    # -- invariants -----------------------------------------------------------------

    @invariant()
    def fired_at_most_once(self) -> None:
        for _, results in self.requests:
            assert len(results) <= 1
            for result in results:
                if isinstance(result, Failure):
                    assert result.check(RequestFailed, ValueError), result

    @invariant()
    def nothing_pending_once_closed(self) -> None:
        for side in self.sides:
            if side.lost:
                protocol = side.protocol
                assert protocol.connection.requests.pending == {}
                assert protocol.connection.requests.processing == set()
                assert len(protocol.connection.deadlines) == 0
                assert not protocol.request_timer.armed

    def teardown(self) -> None:
        for side in self.sides:
            self._lose(side)
        for _, results in self.requests:
            assert len(results) == 1, "a request that neither answered nor failed"
            if isinstance(results[0], Failure):
                results[0].trap(RequestFailed)
        assert self.clock.getDelayedCalls() == []


TwoPeers.TestCase.settings = settings(
    max_examples=300, stateful_step_count=40, deadline=None
)
test_two_peers = TwoPeers.TestCase
