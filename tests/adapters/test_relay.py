"""A relay between two honest nodes, on loopback (issue 11).

Bob dials an address without pinning a peer id; behind it Mallory opens a
connection to Alice and forwards both handshakes byte for byte, then speaks
on her own.  Over TLS (the default) each TLS session has its own RFC 9266
exporter in the signed transcript, so Alice refuses the forwarded proof and
answers nothing.  Over plaintext (an explicit opt-in) the relay works -- that
is why it is an opt-in -- but what Mallory sends after the handshake is
charged to her address, never to Bob's proven id.
"""

from __future__ import annotations

from typing import Any, Optional

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor

from blueprint_net._adapters import tls
from blueprint_net._adapters.node import Node
from blueprint_net._core import framing, wire
from blueprint_net._core.errors import ConnectFailed, ErrorCode
from blueprint_net._core.identity import Identity
from blueprint_net._policy.bans import BanRegistry
from blueprint_net._policy.scores import Policy, PolicySettings
from tests.helpers import MakeNode, until

pytestmark = [pytest.mark.usefixtures("clean_reactor"), pytest.mark.timeout(30)]

MALLORY = Identity(bytes(range(96, 128)))
#: A frame header far past any max_frame: misbehaviour once verified.
GARBAGE = b"\xff\xff\xff\xff"


class _Forward(protocol.Protocol):
    """One side of the relay: what arrives goes out of the other side."""

    other: Optional[_Forward] = None
    #: Every side made, so a test can wait for all of them to close.
    made: list[_Forward] = []  # noqa: RUF012 (reset by each test)

    def __init__(self) -> None:
        self.pending: list[bytes] = []
        self.lost = False
        self.made.append(self)

    def dataReceived(self, data: bytes) -> None:
        if self.other is None or self.other.transport is None:
            self.pending.append(data)
        else:
            self.other.transport.write(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = True
        if self.other is not None and self.other.transport is not None:
            self.other.transport.loseConnection()


class Relay(protocol.Factory):
    """Mallory: accepts Bob, dials Alice, forwards the bytes both ways.

    Over ``p2ptls:`` she ends each TLS session herself (with her own key), so
    she sees and forwards the blueprint bytes in the clear, as a relay
    between two plain links would.
    """

    def __init__(self, target: str) -> None:
        self.target = target
        self.to_alice: Optional[_Forward] = None
        self.connected: defer.Deferred[None] = defer.Deferred()

    def buildProtocol(self, addr: Any) -> _Forward:
        from_bob = _Forward()
        from_bob.factory = self
        endpoint = tls.client_endpoint(reactor, self.target, MALLORY, None)
        endpoint.connect(protocol.Factory.forProtocol(_Forward)).addCallback(
            self._dialed, from_bob
        )
        return from_bob

    def _dialed(self, to_alice: Any, from_bob: _Forward) -> None:
        self.to_alice = to_alice
        from_bob.other, to_alice.other = to_alice, from_bob
        for data in from_bob.pending:
            to_alice.transport.write(data)
        self.connected.callback(None)


async def _relay(alice_at: str, listen: str) -> tuple[Relay, Any, str]:
    _Forward.made.clear()
    relay = Relay(alice_at)
    port: Any = await tls.server_endpoint(reactor, listen, MALLORY).listen(relay)
    kind = listen.partition(":")[0]
    return relay, port, f"{kind}:127.0.0.1:{port.getHost().port}"


async def _port(node: Node, description: str) -> int:
    port = await node.listen(description)
    number: int = port.getHost().port  # type: ignore[attr-defined]
    return number


async def _closed(port: Any, *nodes: Node) -> None:
    await port.stopListening()
    for side in _Forward.made:
        if side.transport is not None:
            side.transport.loseConnection()
    await until(lambda: all(side.lost for side in _Forward.made))
    await until(lambda: not any(node._peers.open for node in nodes))


def _answered(node: Node) -> int:
    return sum(n for key, n in node.counters.items() if key.startswith("requests.in"))


@pytest_twisted.ensureDeferred
async def test_over_tls_a_relayed_handshake_is_refused_and_nobody_is_charged(
    alice: Identity, bob: Identity, make_node: MakeNode
) -> None:
    """Every default: Alice refuses, nothing is answered, Bob is not scored."""
    asked: list[object] = []
    a = make_node(
        alice,
        allow_plaintext=False,
        handlers={"note": asked.append},
    )
    b = make_node(bob, allow_plaintext=False)
    port = await _port(a, "p2ptls:0:interface=127.0.0.1")
    relay, relay_port, mallory = await _relay(
        f"p2ptls:127.0.0.1:{port}", "p2ptls:0:interface=127.0.0.1"
    )
    try:
        with pytest.raises(ConnectFailed):
            await b.connect(mallory)  # no peer id pinned
        await until(lambda: any(k.startswith("handshakes.failed.") for k in a.counters))
        failed = {k for k in a.counters if k.startswith("handshakes.failed.")}
        assert failed <= {
            f"handshakes.failed.{code.name}"
            for code in (ErrorCode.BAD_SIGNATURE, ErrorCode.WRONG_KEY)
        }, failed
        assert a.peers == [] and b.peers == [] and a.counters["handshakes.ok"] == 0
        if relay.to_alice is not None and relay.to_alice.transport is not None:
            relay.to_alice.transport.write(
                framing.frame(wire.Request(1, "note", b"injected"))
            )
        assert asked == [] and _answered(a) == 0
        for node, other in ((a, bob), (b, alice)):
            assert node.policy.score(other.peer_id) == 0.0
            assert node.bans.peer_ban(other.peer_id) is None
    finally:
        await _closed(relay_port, a, b)


@pytest_twisted.ensureDeferred
async def test_over_plaintext_the_relay_works_but_only_the_address_is_charged(
    alice: Identity, bob: Identity, make_node: MakeNode
) -> None:
    """The opt-in's risk, shown plainly: Mallory's request reaches Alice's
    handler as Bob's; her garbage bans her address, not Bob's id."""
    asked: list[object] = []
    policy = Policy(
        BanRegistry(reactor), PolicySettings(ban_threshold=10, ban_loopback=True)
    )
    a = make_node(
        alice,
        policy=policy,
        handlers={"note": lambda request: asked.append(request.peer_id)},
    )
    b = make_node(bob)
    port = await _port(a, "tcp:0:interface=127.0.0.1")
    relay, relay_port, mallory = await _relay(
        f"tcp:127.0.0.1:{port}", "tcp:0:interface=127.0.0.1"
    )
    try:
        peer = await b.connect(mallory)  # no peer id pinned
        assert peer.peer_id == alice.peer_id  # Bob "verified" Alice through her
        await until(lambda: a.peer(bob.peer_id) is not None)
        assert relay.to_alice is not None and relay.to_alice.transport is not None
        injected = wire.Request(wire.NO_RESPONSE, "note", b"from mallory")
        relay.to_alice.transport.write(framing.frame(injected))
        await until(lambda: asked != [])
        assert asked == [bob.peer_id]  # answered as if Bob asked
        relay.to_alice.transport.write(GARBAGE)
        await until(lambda: a.counters["misbehaviour"] == 1)
        assert a.counters["closed.FRAME_TOO_LARGE"] == 1
        assert a.policy.score(bob.peer_id) == 0.0
        assert a.bans.peer_ban(bob.peer_id) is None  # Bob is not charged
        assert a.bans.address_ban("127.0.0.1") is not None  # the sender's address
    finally:
        await _closed(relay_port, a, b)


@pytest_twisted.ensureDeferred
async def test_over_tls_the_proven_id_is_charged_for_what_it_sent(
    alice: Identity, bob: Identity, make_node: MakeNode
) -> None:
    """The other half of the rule: over TLS the proof covers every later
    byte, so the id that sent garbage is the one charged."""
    policy = Policy(
        BanRegistry(reactor), PolicySettings(ban_threshold=10, ban_loopback=True)
    )
    a = make_node(alice, allow_plaintext=False, policy=policy)
    b = make_node(bob, allow_plaintext=False)
    port = await _port(a, "p2ptls:0:interface=127.0.0.1")
    await b.connect(f"p2ptls:127.0.0.1:{port}", peer_id=alice.peer_id)
    b._peers[alice.peer_id].transport.write(GARBAGE)  # type: ignore[union-attr]
    await until(lambda: a.counters["misbehaviour"] == 1)
    assert a.bans.peer_ban(bob.peer_id) is not None
    await until(lambda: not a._peers.open and not b._peers.open)
