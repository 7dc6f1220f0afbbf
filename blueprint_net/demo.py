"""Two nodes on loopback, over TLS (the default): they handshake, print each
other's verified id, and exchange a request.

Run with ``python -m blueprint_net.demo``.  It uses only the public API
(``blueprint_net``), as an application would.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, task
from twisted.internet.address import IPv4Address

from blueprint_net import Identity, IncomingRequest, Node, Peer


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
        bob.on_peer_verified(bob_saw.callback)
        where = f"p2ptls:127.0.0.1:{address.port}"
        peer = await alice.connect(where, peer_id=bob.peer_id)
        print(f"alice {alice.peer_id} verified {peer.peer_id} ({peer.direction})")
        seen = await bob_saw
        print(f"bob   {bob.peer_id} verified {seen.peer_id} ({seen.direction})")
        reply = await alice.request(bob.peer_id, "echo", b"hello, bob")
        print(f"alice asked bob to echo b'hello, bob' and got {reply.data!r}")
    finally:
        await alice.stop()
        await bob.stop()


def main() -> None:
    task.react(lambda reactor: defer.ensureDeferred(demo(reactor)))


if __name__ == "__main__":
    main()
