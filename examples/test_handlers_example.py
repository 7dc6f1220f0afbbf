"""Testing an application's request handlers with ``blueprint_net.testing``.

Real nodes, handshake and framing; the connections are in memory and the
clock is fake, so no socket is opened, no reactor runs and nothing sleeps.
Run with ``python -m pytest examples/test_handlers_example.py``;
``docs/embedding.md`` walks through it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from twisted.internet import defer

from blueprint_net import Identity, IncomingRequest, Node, RemoteError, Settings
from blueprint_net.errors import PeerLost, RequestTimeout
from blueprint_net.testing import MemoryNetwork, RecordingHandler, StubNode


class Greeter:
    """The application's handlers: the code under test."""

    def __init__(self) -> None:
        self.events: list[bytes] = []

    def greet(self, request: IncomingRequest) -> bytes:
        if not request.payload:
            raise RemoteError(1000, "greet whom?")  # the peer gets this code
        return b"hello, " + request.payload

    def log(self, request: IncomingRequest) -> None:
        self.events.append(request.payload)


@pytest.fixture
def net() -> Iterator[MemoryNetwork]:
    with MemoryNetwork() as network:  # stops every node at the end
        yield network


def test_greet(net: MemoryNetwork) -> None:
    greeter = Greeter()
    server = net.add_node(handlers={"greet": greeter.greet, "log": greeter.log})
    client = net.add_node()
    net.connect(client, server)  # handshake done: both ends verified

    reply = net.result(client.request(server.peer_id, "greet", b"alice"))
    assert reply.data == b"hello, alice"

    with pytest.raises(RemoteError) as refused:
        net.result(client.request(server.peer_id, "greet", b""))
    assert refused.value.code == 1000

    client.notify(server.peer_id, "log", b"started")  # fire and forget
    net.pump()  # deliver it
    assert greeter.events == [b"started"]


def test_a_slow_handler_times_out(net: MemoryNetwork) -> None:
    server = net.add_node(handlers={"slow": lambda request: defer.Deferred()})
    client = net.add_node(settings=Settings(request_timeout=5.0))
    net.connect(client, server)
    asked = client.request(server.peer_id, "slow", b"")
    net.advance(5.0)  # fake time: instant
    with pytest.raises(RequestTimeout):
        net.result(asked)


def test_a_lost_peer_fails_what_was_asked(net: MemoryNetwork) -> None:
    server = net.add_node(handlers={"slow": lambda request: defer.Deferred()})
    client = net.add_node()
    net.connect(client, server)
    asked = client.request(server.peer_id, "slow", b"")
    net.cut(client, server)  # the network fails: no goodbye
    with pytest.raises(PeerLost):
        net.result(asked)
    assert client.peers == []


def test_greet_without_a_network() -> None:
    """A handler's unit test: a stand-in node, no connection at all."""
    stub = StubNode({"greet": Greeter().greet})
    alice = Identity(bytes(32)).peer_id  # the peer the request comes from
    reply = stub.result(stub.request_from(alice, "greet", b"bob"))
    assert reply.data == b"hello, bob"
    with pytest.raises(RemoteError):
        stub.result(stub.request_from(alice, "greet", b""))


async def greet_everyone(node: Node, names: list[bytes]) -> list[bytes]:
    """Code under test that asks its peers: greets each name at each peer."""
    replies = []
    for peer in node.peers:
        for name in names:
            reply = await node.request(peer.peer_id, "greet", name)
            replies.append(reply.data or b"")
    return replies


def test_what_the_code_asks_is_recorded(net: MemoryNetwork) -> None:
    recorder = RecordingHandler()
    server = net.add_node(handlers={"greet": recorder})
    client = net.add_node()
    net.connect(client, server)
    greeting = defer.ensureDeferred(greet_everyone(client, [b"ann", b"bo"]))
    net.pump()
    asked = recorder.next()  # it asks one at a time: the second waits
    assert (asked.request.peer_id, asked.request.payload) == (client.peer_id, b"ann")
    asked.answer(b"hi ann")
    net.pump()
    recorder.next().answer(b"hi bo")
    assert net.result(greeting) == [b"hi ann", b"hi bo"]
