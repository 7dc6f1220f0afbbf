"""What the parts of a ping-pong round trip cost, in instructions, without a
reactor: ``python -m bench.parts [TREE]``.

The ping-pong target (0.80 of the bare echo) leaves blueprint-net a budget
above the floor (``bench/messaging.py``: the least a request/response API
does on the bare echo's ``Int32StringReceiver``).  Is the budget enough for
what the sans-IO core must do?  Each row here runs one part on its own, in
a loop, and counts it as ``python -m bench.instructions`` does (valgrind,
collector off, fixed addresses; the loop run once and three times, the
difference divided by two rounds' units; both ends where a round trip is
counted), less the empty loop's own count:

* the floor's two protocols, driven by hand through in-memory pipes: one
  request and its answer (a Deferred, a request id and its table, the
  handler found by name, one ``struct`` call each way, the
  ``Int32StringReceiver`` framing);
* our two verified :class:`~blueprint_net._core.connection.Connection`\\ s,
  the same round trip and a Deferred fired by its answer: framing, the
  strict codec, the request table and in-flight bound, the send
  accounting, the events; then again with a deadline per request;
* the core's codec steps one at a time, for where the difference goes.

In: a source tree (this one by default) that has this module (the child
runs its helpers from the tree).  Out: a table of instructions per
unit.  What it does not count: Twisted's reactor and transports, the
adapters (the protocol, the sender, the dispatcher and the host) and the
safeguards ``python -m bench.safeguards`` prices; those are the rest of
``python -m bench.instructions``' round trip.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any, NamedTuple

from blueprint_net._core.connection import Connection
from blueprint_net._core.handshake_states import PeerProven
from blueprint_net._core.identity import Identity
from blueprint_net._policy.settings import Settings

from . import instructions
from .messaging import _FloorClient, _FloorServer
from .report import load_header

#: Round trips (or steps) per round of the loop.
UNITS = 5_000
PAYLOAD = bytes(64)
#: The in-flight bound a node gives its connections by default.
IN_FLIGHT = Settings().max_concurrent_requests


class Part(NamedTuple):
    """A row: what is set up once (statements), one unit's step, and what
    must hold after the last (that the step did its work)."""

    name: str
    setup: str
    step: str
    check: str = ""


class _Pipe:
    """A transport that keeps what is written, for a protocol driven by hand.

    Not ``twisted.internet.testing.StringTransport``: its bookkeeping per
    write (a type check, a ``BytesIO``) would be counted as the floor's own
    work; this keeps the transport's share to an append and one join, as the
    core's part pays for taking its chunks."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def writeSequence(self, data: list[bytes]) -> None:
        self.written.extend(data)

    def take(self) -> bytes:
        data, self.written = b"".join(self.written), []
        return data


def floor_pair() -> tuple[_FloorClient, _Pipe, _FloorServer, _Pipe]:
    """The floor's client and server, each with a pipe to read its output."""
    client, server = _FloorClient(), _FloorServer()
    to_server, to_client = _Pipe(), _Pipe()
    client.makeConnection(to_server)
    server.makeConnection(to_client)
    return client, to_server, server, to_client


def verified_pair(in_flight: int = IN_FLIGHT) -> tuple[Connection, Connection]:
    """Two core connections through the handshake (plaintext), each peer
    accepted as it proves itself."""
    a = Connection(Identity.generate(), initiator=True, max_in_flight=in_flight)
    b = Connection(Identity.generate(), initiator=False, max_in_flight=in_flight)
    a.initiate()
    b.initiate()
    for _ in range(8):  # four frames each way at most
        if a.verified and b.verified:
            return a, b
        _deliver(a, b)
        _deliver(b, a)
    raise RuntimeError("the core handshake did not complete")


def _deliver(sender: Connection, receiver: Connection) -> None:
    """What ``sender`` queued, read by ``receiver``; a proven peer is
    accepted (the node's policy would decide here)."""
    proven = receiver.receive_data(sender.data_to_send())
    if any(isinstance(event, PeerProven) for event in proven):
        receiver.accept()


#: ``chunks_to_send`` is what the protocol takes for its transport's
#: ``writeSequence``; the join stands in for that write (``data_to_send``
#: would add a call the real path does not make).
_CORE_STEP = """
answer = Deferred()
a.request("echo", payload, token=answer{deadline})
for request in b.receive_data(b"".join(a.chunks_to_send())):
    b.respond(ProtocolResponse(request.request_id, request.payload))
for event in a.receive_data(b"".join(b.chunks_to_send())):
    event.token.callback(event.response.data)
"""

_CORE_CHECK = (
    "assert answer.called and not a.requests.pending and b.requests.in_flight == 0"
)

_SETUP = f"""
from twisted.internet.defer import Deferred
from blueprint_net._core import framing, wire
from blueprint_net._core.wire import ProtocolResponse
from bench import parts
payload = bytes({len(PAYLOAD)})
limit = wire.DEFAULT_MAX_FRAME
"""

PARTS = (
    Part("the empty loop (subtracted from the others)", "", "pass"),
    Part(
        "floor: both protocols, one round trip",
        "client, to_server, server, to_client = parts.floor_pair()",
        """
answer = client.request(b"echo", payload)
server.dataReceived(to_server.take())
client.dataReceived(to_client.take())
""",
        "assert answer.called and not client.waiting",
    ),
    Part(
        "core: both connections, one round trip",
        "a, b = parts.verified_pair()",
        _CORE_STEP.format(deadline=""),
        _CORE_CHECK,
    ),
    Part(
        "core: the same, with a deadline per request",
        "a, b = parts.verified_pair()",
        _CORE_STEP.format(deadline=", deadline=1e9"),
        # Answered deadlines stay in the heap until asked for (lazy
        # deletion): there are some only if the requests carried one.
        _CORE_CHECK + " and a.deadlines._heap and a.next_deadline is None",
    ),
    Part(
        "core step: frame a request (framing.request_chunks)",
        "",
        'got = framing.request_chunks(7, "echo", payload, None, limit)',
        'assert got == [framing.frame(wire.Request(7, "echo", payload))]',
    ),
    Part(
        "core step: take one frame from a read (FrameDecoder.feed)",
        """
decoder = framing.FrameDecoder(limit)
frame = framing.frame(wire.Request(7, "echo", payload))
""",
        "got = decoder.feed(frame)",
        "assert got == [frame[4:]] and not decoder.buffered",
    ),
    Part(
        "core step: decode a request, strictly (wire.decode)",
        "body = framing.frame(wire.Request(7, 'echo', payload))[4:]",
        "got = wire.decode(body)",
        "assert got == wire.Request(7, 'echo', payload)",
    ),
    Part(
        "core step: frame an answer (framing.frame_chunks)",
        "",
        "got = framing.frame_chunks(ProtocolResponse(7, payload), limit)",
        "assert got == [framing.frame(ProtocolResponse(7, payload))]",
    ),
    Part(
        "core step: decode an answer, strictly (wire.decode)",
        "body = framing.frame(ProtocolResponse(7, payload))[4:]",
        "got = wire.decode(body)",
        "assert got == ProtocolResponse(7, payload)",
    ),
)


def work(part: Part) -> str:
    """The child's coroutine body: the setup, then rounds of the step."""
    return (
        textwrap.indent(_SETUP + part.setup, "    ")
        + f"\n    for _ in range(rounds):\n        for _ in range({UNITS}):\n"
        + textwrap.indent(textwrap.dedent(part.step).strip() + "\n", " " * 12)
        + (f"    {part.check}\n" if part.check else "")
    )


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise SystemExit("usage: python -m bench.parts [TREE]")
    instructions.require_valgrind()
    tree = Path(argv[0]).resolve() if argv else instructions.HERE
    if not (tree / "bench" / "parts.py").exists():
        raise SystemExit(f"{tree} has no bench/parts.py (its helpers run in the tree)")
    print(load_header(), flush=True)
    print(f"{'part (per round trip or step)':<60} {'instructions':>13}")
    empty: Any = None
    for part in PARTS:
        figure = instructions.per_unit(tree, work(part), "blueprint", UNITS)
        if empty is None:
            empty = figure
            print(f"{part.name:<60} {figure:>13,.0f}", flush=True)
        else:
            print(f"{part.name:<60} {figure - empty:>13,.0f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
