"""blueprint-net in an asyncio program: two nodes on loopback.

Run with ``python examples/asyncio_node.py``.  The program is asyncio code:
Twisted's asyncio reactor runs on its event loop, every Deferred a node
returns is awaited as an asyncio future (``Deferred.asFuture(loop)``), and
Bob's handler calls an asyncio coroutine (``Deferred.fromFuture``).
``docs/embedding.md`` ("In an asyncio program") walks through it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any, TypeVar

from twisted.internet import asyncioreactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ReactorNotRunning

from blueprint_net import Identity, IncomingRequest, Node

T = TypeVar("T")


def run(program: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` with Twisted's reactor on the same event loop.

    The reactor must be installed before anything imports
    ``twisted.internet.reactor``; ``reactor.run()`` runs the loop
    (``loop.run_forever()``) with Twisted's start-up and shut-down steps
    (its thread pool, which resolves host names, starts and stops with
    them), and stops when the program ends."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    asyncioreactor.install(loop)  # type: ignore[no-untyped-call]
    from twisted.internet import reactor

    def stop(_: object) -> None:
        with contextlib.suppress(ReactorNotRunning):  # stopped by a signal
            reactor.stop()

    task = loop.create_task(program)
    task.add_done_callback(stop)
    reactor.run()
    try:
        if not task.done():  # Ctrl-C or SIGTERM: let the program clean up
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(task)
        return task.result()
    finally:  # as asyncio.run ends
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


async def shout(text: bytes) -> bytes:
    """Stands for any asyncio library call: it awaits an asyncio future."""
    return await asyncio.to_thread(bytes.upper, text)


async def upper(request: IncomingRequest) -> bytes:
    """A handler runs as a Twisted coroutine: an asyncio future awaited in
    it directly fails (``RuntimeError: await wasn't used with future``), so
    the asyncio call goes through ``Deferred.fromFuture``."""
    return await Deferred.fromFuture(asyncio.ensure_future(shout(request.payload)))


async def main() -> None:
    loop = asyncio.get_running_loop()
    alice = Node(Identity.generate())
    bob = Node(Identity.generate(), handlers={"upper": upper})
    print(f"reactor {type(alice.reactor).__name__}")
    try:
        port = await bob.listen("p2ptls:0:interface=127.0.0.1").asFuture(loop)
        where = f"p2ptls:127.0.0.1:{port.getHost().port}"  # type: ignore[attr-defined]
        await alice.connect(where, peer_id=bob.peer_id).asFuture(loop)
        print(f"alice verified {len(alice.peers)} peer")

        reply = await alice.request(bob.peer_id, "upper", b"hi").asFuture(loop)
        print(f"bob answered {reply.data!r}")

        # asyncio's own tools take the futures: a deadline, a gather.
        asked = [
            alice.request(bob.peer_id, "upper", word).asFuture(loop)
            for word in (b"one", b"two", b"three")
        ]
        replies = await asyncio.wait_for(asyncio.gather(*asked), timeout=30)
        print(f"gathered {[r.data for r in replies]}")
    finally:
        for node in (alice, bob):
            await node.stop().asFuture(loop)
    print("stopped")


if __name__ == "__main__":
    run(main())
