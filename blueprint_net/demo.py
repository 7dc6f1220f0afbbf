"""Two nodes on loopback, over TLS (the default): they handshake, print each
other's verified id, and exchange a request.  Then a third node joins behind
bob, and a message alice publishes to a topic crosses two hops to it
(alice -> bob -> carol), signed by alice and checked at every hop.

Run with ``python -m blueprint_net.demo``.  It uses only the public API
(``blueprint_net``), as an application would.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, task
from twisted.internet.address import IPv4Address

from blueprint_net import Identity, IncomingRequest, Node
from blueprint_net.gossip import GossipMessage
from blueprint_net.node import Peer


def echo(request: IncomingRequest) -> bytes:
    return request.payload


async def demo(reactor: Any) -> None:
    alice = Node(Identity.generate(), reactor=reactor)
    bob = Node(Identity.generate(), reactor=reactor, handlers={"echo": echo})
    try:
        port = await bob.listen("p2ptls:0:interface=127.0.0.1")
        address = port.getHost()
        assert isinstance(address, IPv4Address)
        print(f"bob   {bob.peer_id} listening on 127.0.0.1:{address.port}")
        bob_saw: defer.Deferred[Peer] = defer.Deferred()
        bob.on_peer_verified(
            lambda peer: None if bob_saw.called else bob_saw.callback(peer)
        )
        where = f"p2ptls:127.0.0.1:{address.port}"
        peer = await alice.connect(where, peer_id=bob.peer_id)
        print(f"alice {alice.peer_id} verified {peer.peer_id} ({peer.direction})")
        seen = await bob_saw
        print(f"bob   {bob.peer_id} verified {seen.peer_id} ({seen.direction})")
        reply = await alice.request(bob.peer_id, "echo", b"hello, bob")
        print(f"alice asked bob to echo b'hello, bob' and got {reply.data!r}")
        await two_hops(reactor, alice, bob, where)
    finally:
        await alice.stop()
        await bob.stop()


async def two_hops(reactor: Any, alice: Node, bob: Node, bob_at: str) -> None:
    """carol connects to bob only; alice's publication reaches her via bob."""
    carol = Node(Identity.generate(), reactor=reactor)
    try:
        await carol.connect(bob_at, peer_id=bob.peer_id)
        got: defer.Deferred[GossipMessage] = defer.Deferred()
        for node in (alice, bob):
            node.subscribe("news", lambda message: None)
        carol.subscribe("news", got.callback)
        # Subscriptions travel, then a heartbeat (1 s) grafts the meshes.
        for _ in range(100):  # at most 10 s
            await task.deferLater(reactor, 0.1, lambda: None)
            if bob.gossip.status()["topics"]["news"]["mesh"] == 2:
                break
        alice.publish("news", b"two hops")
        message = await got
        print(
            f"carol {carol.peer_id} got {message.data!r} from {message.origin}"
            f" via bob (not connected to alice: {carol.peer(alice.peer_id) is None})"
        )
    finally:
        await carol.stop()


def main() -> None:
    task.react(lambda reactor: defer.ensureDeferred(demo(reactor)))


if __name__ == "__main__":
    main()
