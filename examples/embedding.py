"""blueprint-net embedded in a Twisted program: three nodes on loopback.

Run with ``python examples/embedding.py``.  Bob and Carol serve an ``echo``
protocol and a ``whoami`` protocol; Alice connects to both, asks each, then
broadcasts.  ``docs/embedding.md`` walks through it.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, task
from twisted.internet.interfaces import IListeningPort

from blueprint_net import Identity, IncomingRequest, Node, RemoteError, Success


def echo(request: IncomingRequest) -> bytes:
    """A plain callable: bytes back is a ``Protocol {data}`` response."""
    return request.payload


async def whoami(request: IncomingRequest) -> Success:
    """A coroutine: the asker is the connection's verified peer id."""
    return Success(str(request.peer_id).encode())


def address(port: IListeningPort) -> str:
    return f"p2ptls:127.0.0.1:{port.getHost().port}"  # type: ignore[attr-defined]


async def main(reactor: Any) -> None:
    handlers = {"echo": echo, "whoami": whoami}
    alice = Node(Identity.generate(), reactor=reactor)
    bob = Node(Identity.generate(), reactor=reactor, handlers=handlers)
    carol = Node(Identity.generate(), reactor=reactor, handlers=handlers)
    try:
        bob_port = await bob.listen("p2ptls:0:interface=127.0.0.1")
        carol_port = await carol.listen("p2ptls:0:interface=127.0.0.1")
        # Naming the expected peer id refuses anyone else at that address.
        await alice.connect(address(bob_port), peer_id=bob.peer_id)
        await alice.connect(address(carol_port), peer_id=carol.peer_id)
        print(f"alice is {alice.peer_id}")
        print(f"alice verified {len(alice.peers)} peers")

        reply = await alice.request(bob.peer_id, "echo", b"hi", metadata=b"route")
        print(f"bob echoed {reply.data!r}")
        reply = await alice.request(carol.peer_id, "whoami", b"")
        print(f"carol says alice is {reply.data.decode()}")  # type: ignore[union-attr]

        try:
            await alice.request(bob.peer_id, "nope", b"")
        except RemoteError as error:
            print(f"bob refused: {error}")

        outcomes = await alice.broadcast("echo", b"to all")
        answered = sum(outcome.ok for outcome in outcomes.values())
        print(f"broadcast answered by {answered} of {len(outcomes)}")
    finally:
        for node in (alice, bob, carol):
            await node.stop()


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
