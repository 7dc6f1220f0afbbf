"""Test request handlers on nodes connected in memory, on a fake clock.

Three helpers, from the whole stack to one handler, each in its own module
(``_memory``, ``_stub``, ``_recording``; import them from here):

* :class:`MemoryNetwork`: real nodes joined by in-memory connections;
* :class:`StubNode`: a stand-in node for a handler's unit tests (like treq's
  ``StubTreq``): register handlers, ask them as if a peer id had, get the
  answer -- no connection, no handshake;
* :class:`RecordingHandler`: records each request the code under test sends
  and lets the test answer it (like treq's ``RequestSequence``), on either.

:class:`INode` (what services beside a node may use of it) is re-exported
here: the nodes of a :class:`MemoryNetwork` provide it.

A :class:`MemoryNetwork` makes real :class:`~blueprint_net._adapters.node.Node`
objects and connects them through in-memory transports
(``twisted.test.iosim``), so a test runs exactly the production code -- the
node, its limits and policy, ``PeerProtocol``, the handshake, the framing --
with no sockets, no threads and no reactor: bytes move only when the test
calls :meth:`~MemoryNetwork.pump`, and time only when it calls
:meth:`~MemoryNetwork.advance`.  Every run is the same run.

::

    from blueprint_net.testing import MemoryNetwork

    def test_echo() -> None:
        with MemoryNetwork() as net:
            alice = net.add_node()
            bob = net.add_node(handlers={"echo": lambda request: request.payload})
            net.connect(alice, bob)
            reply = net.result(alice.request(bob.peer_id, "echo", b"hi"))
            assert reply.data == b"hi"

What is not simulated: TLS (the in-memory transport is plain, so there is no
channel binding, and every node here opts in to plaintext links with
``Settings(allow_plaintext=True)``: without it a node closes a plain
transport before its handshake), and backpressure (the transport never
pauses a writer, so ``SendQueueFull`` cannot happen here).  Test those over
loopback sockets.
"""

from __future__ import annotations

from blueprint_net.node import INode
from blueprint_net.testing._memory import LINK_PORT, MemoryNetwork
from blueprint_net.testing._recording import RecordedRequest, RecordingHandler
from blueprint_net.testing._results import NoResult
from blueprint_net.testing._stub import StubNode

__all__ = [
    "LINK_PORT",
    "INode",
    "MemoryNetwork",
    "NoResult",
    "RecordedRequest",
    "RecordingHandler",
    "StubNode",
]
