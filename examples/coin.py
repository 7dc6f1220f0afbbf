"""A shared random coin among three parties, on a party session.

Run with ``python examples/coin.py``.  Each party commits to a random value
(a reliable broadcast of its hash), then reveals it (a broadcast); each
checks every reveal against its commitment and XORs the values.  No party
can bias the coin once it has seen the others' commitments, and the echo
step of the reliable broadcast makes sure nobody showed different parties
different commitments.  ``docs/embedding.md`` walks through it.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from twisted.internet import defer, task

from blueprint_net import Identity, Node, PeerId
from blueprint_net.errors import SessionError


async def flip(node: Node, parties: list[PeerId], addresses: dict[PeerId, str]) -> int:
    session = node.session(b"coin 1", parties, addresses)
    try:
        mine = secrets.token_bytes(32)
        session.broadcast(0, hashlib.sha256(mine).digest(), reliable=True)
        commitments = await session.gather(0, timeout=30)
        session.broadcast(1, mine)
        reveals = await session.gather(1, timeout=30)
        coin = int.from_bytes(mine, "big")
        for party, value in reveals.items():
            if hashlib.sha256(value).digest() != commitments[party]:
                raise SessionError(f"party {party} revealed what it did not commit")
            coin ^= int.from_bytes(value, "big")
        return coin & 1
    finally:
        await session.close()  # once the others have all we sent


async def main(reactor: Any) -> None:
    nodes = [Node(Identity.generate(), reactor=reactor) for _ in range(3)]
    try:
        addresses = {}
        for node in nodes:
            port = await node.listen("p2ptls:0:interface=127.0.0.1")
            addresses[node.peer_id] = f"p2ptls:127.0.0.1:{port.getHost().port}"  # type: ignore[attr-defined]
        parties = list(addresses)
        coins = await defer.gatherResults(
            [defer.Deferred.fromCoroutine(flip(n, parties, addresses)) for n in nodes]
        )
        print(f"the coins: {coins}")  # the same for every party
    finally:
        for node in nodes:
            await node.stop()


if __name__ == "__main__":
    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor)))
