"""Durable streams between two nodes over real TLS on loopback: messages
arrive exactly once and in order across connections aborted mid-stream, a
restarted peer is seen by both applications, and a full window applies
backpressure.  Each test waits for behaviours (``until``), never a time."""

from __future__ import annotations

from typing import Any

import attrs
import pytest_twisted
from twisted.internet import defer

from blueprint_net import Identity, Node
from blueprint_net._core.streams import StreamSettings
from blueprint_net.errors import StreamReset
from blueprint_net.streams import ResetCode
from tests.helpers import MakeNode, until

LISTEN = "p2ptls:0:interface=127.0.0.1"


async def tls_node(make_node: MakeNode, identity: Identity, **options: Any) -> Node:
    node = make_node(identity, allow_plaintext=False, **options)
    await node.listen(LISTEN)
    return node


async def link(a: Node, b: Node) -> None:
    """``a`` dials ``b`` over TLS and both see the other verified."""
    (port,) = (p for _, p in b.listening_addresses)
    await a.connect(f"p2ptls:127.0.0.1:{port}", peer_id=b.peer_id)
    await until(lambda: b.peer(a.peer_id) is not None)


async def abort(a: Node, b: Node) -> None:
    """Cut the link between ``a`` and ``b`` with no goodbye (a TCP reset),
    and wait until both have noticed."""
    protocol = a._peers.get(b.peer_id)
    assert protocol is not None and protocol.transport is not None
    protocol.transport.abortConnection()  # type: ignore[attr-defined]
    await until(lambda: a.peer(b.peer_id) is None and b.peer(a.peer_id) is None)


@pytest_twisted.ensureDeferred
async def test_every_message_arrives_once_in_order_across_aborted_connections(
    make_node: MakeNode, alice: Identity, bob: Identity
) -> None:
    settings = StreamSettings(window=64 * 1024)
    a = await tls_node(make_node, alice, streams=settings)
    b = await tls_node(make_node, bob, streams=settings)
    await link(a, b)
    received: list[bytes] = []
    resets: list[StreamReset] = []
    sender = a.stream(b.peer_id, b"session", lambda p: None, resets.append)
    b.stream(a.peer_id, b"session", received.append, resets.append)
    total, cuts = 3000, 5

    async def send_all() -> None:
        for n in range(total):
            await sender.put(b"%06d" % n + b"." * 200)

    sending = defer.ensureDeferred(send_all())
    for cut in range(1, cuts + 1):
        goal = cut * total // (cuts + 2)
        await until(lambda goal=goal: len(received) >= goal)  # type: ignore[misc]
        await abort(a, b)
        await link(*((a, b) if cut % 2 else (b, a)))
    await sending
    await until(lambda: len(received) >= total)
    assert [int(p[:6]) for p in received] == list(range(total))
    assert resets == []
    await until(lambda: a.streams.status()["buffered_bytes"] == 0)
    for node in (a, b):
        assert not node.counters["misbehaviour"]


@pytest_twisted.ensureDeferred
async def test_a_restarted_peer_gives_both_sides_a_restarted_reset(
    make_node: MakeNode, alice: Identity, bob: Identity
) -> None:
    a = await tls_node(make_node, alice)
    b = await tls_node(make_node, bob)
    await link(a, b)
    seen_by_a: list[StreamReset] = []
    stream = a.stream(b.peer_id, b"s", lambda p: None, seen_by_a.append)
    got: list[bytes] = []
    b.stream(a.peer_id, b"s", got.append)
    assert stream.send(b"hello")
    await until(lambda: got == [b"hello"])
    await abort(a, b)
    # b "crashes" (its state is lost) and starts again: the same key, a new
    # node, so a new incarnation.
    b2 = await tls_node(make_node, bob)
    seen_by_b2: list[StreamReset] = []
    b2.stream(a.peer_id, b"s", got.append, seen_by_b2.append)
    await link(b2, a)
    await until(lambda: seen_by_a and seen_by_b2)
    assert [(e.code, e.by_peer) for e in seen_by_a] == [(ResetCode.RESTARTED, False)]
    assert [(e.code, e.by_peer) for e in seen_by_b2] == [(ResetCode.RESTARTED, True)]
    assert got == [b"hello"]


@pytest_twisted.ensureDeferred
async def test_a_full_window_refuses_and_acks_make_room(
    make_node: MakeNode, alice: Identity, bob: Identity
) -> None:
    small = attrs.evolve(StreamSettings(), window=4096, ack_every=1000)
    a = await tls_node(make_node, alice, streams=small)
    b = await tls_node(make_node, bob, streams=small)
    await link(a, b)
    got: list[bytes] = []
    stream = a.stream(b.peer_id, b"s", lambda p: None)
    b.stream(a.peer_id, b"s", got.append)
    sent = 0
    while stream.send(b"x" * 1000):
        sent += 1
    assert sent == 4  # 4000 bytes fit the window, 5000 do not
    room = stream.wait_for_room()
    assert not room.called
    await room  # b acknowledged (at half the window, or after ack_delay)
    assert stream.send(b"x" * 1000)
    await until(lambda: len(got) == 5)
