"""What each safeguard costs a ping-pong round trip, in instructions:
``python -m bench.safeguards [TREE]``.

The ping-pong target (0.80 of the bare echo) asks for about a fifth fewer
instructions per round trip; the floor (``bench/messaging.py``) shows the API
allows it.  Where do the rest go?  Each row takes one part of what makes a
node safe to expose out of the process by a monkeypatch, then counts the
64 B round trip exactly as ``python -m bench.instructions`` does (valgrind,
collector off, both ends).  The patches are measuring instruments only:
each removes a protection (a bound, a deadline, a limit) that the node must
keep, and none is reachable from the package.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NamedTuple

from . import instructions
from .report import load_header


class Safeguard(NamedTuple):
    """A row: what is taken out, and the patch (statements run in the child
    before the node is made) that takes it out."""

    name: str
    patch: str


#: Each patch as statements indented for the child's coroutine body.
SAFEGUARDS = (
    Safeguard(
        "the limiter's wrapper on every read and write",
        """
    from blueprint_net._adapters.limiting_factory import LimitedProtocol
    wrap = LimitedProtocol.makeConnection
    def unwrapped(self, transport):
        wrap(self, transport)  # counted against the limits, as before
        inner = self.wrappedProtocol
        if hasattr(transport, "protocol") and hasattr(inner, "outbound"):
            transport.protocol = inner  # reads skip the wrapper
            inner.transport = inner.outbound.transport = transport  # writes too
    LimitedProtocol.makeConnection = unwrapped
""",
    ),
    Safeguard(
        "our requests' deadlines (the heap and the timer)",
        """
    from blueprint_net._adapters.request_timer import RequestTimer
    from blueprint_net._core.messaging import Deadlines
    RequestTimer.due = lambda self, deadline, delay: None
    Deadlines.add = lambda self, request_id, deadline: None
""",
    ),
    Safeguard(
        "the dispatcher's admission (stopping, budget, max_payload, counters)",
        """
    from blueprint_net._adapters.dispatch import Dispatcher
    from blueprint_net._core import wire
    from blueprint_net._core.messaging import IncomingRequest
    def admitted(self, request, peer_id, respond, *, budget, stopping):
        handle = self._handlers[request.protocol].handle
        result = handle(IncomingRequest(peer_id, request.protocol,
            request.payload, request.metadata, request.request_id))
        respond(wire.ProtocolResponse(request.request_id, result))
    Dispatcher.serve = admitted
""",
    ),
    Safeguard(
        "the send queue as the transport's push producer",
        """
    from blueprint_net._adapters.protocol import PeerProtocol
    made = PeerProtocol.connectionMade
    def unregistered(self):
        transport = self.transport
        transport.registerProducer = lambda producer, streaming: None
        try:
            made(self)
        finally:
            del transport.registerProducer
    PeerProtocol.connectionMade = unregistered
""",
    ),
    Safeguard(
        "fair shares (one peer connected)",
        """
    from blueprint_net._adapters.host import ConnectionHost
    def unshared(self, protocol, request):
        self._serve(protocol.connection.peer_id, protocol, request)
    ConnectionHost.request_received = unshared
""",
    ),
)

#: The ping-pong workload of ``bench.instructions``.
ROUND_TRIP = instructions.WORKLOADS[1]


def work(patches: tuple[str, ...]) -> str:
    """The child's coroutine body: the patches, then the round trips."""
    return "".join(patches) + ROUND_TRIP.work


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise SystemExit("usage: python -m bench.safeguards [TREE]")
    instructions.require_valgrind()
    tree = Path(argv[0]).resolve() if argv else instructions.HERE
    units = ROUND_TRIP.units
    print(load_header(), flush=True)
    print(f"{'taken out':<70} {'instructions':>13} {'saved':>8}")
    whole = instructions.per_unit(tree, work(()), "blueprint", units)
    print(f"{'nothing':<70} {whole:>13,.0f}", flush=True)
    rows: list[tuple[str, tuple[str, ...]]] = [(s.name, (s.patch,)) for s in SAFEGUARDS]
    rows.append(("all of these", tuple(s.patch for s in SAFEGUARDS)))
    for name, patches in rows:
        figure = instructions.per_unit(tree, work(patches), "blueprint", units)
        print(f"{name:<70} {figure:>13,.0f} {whole - figure:>8,.0f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
