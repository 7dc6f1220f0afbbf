"""Verified peers' requests run in fair shares of handler time.

Layer: adapters (Twisted: the reactor's turns).

In: each request a verified connection hands over (:meth:`FairDispatch.submit`).
Out: each run through ``serve`` (the dispatcher's admission and handler),
in the order ``_policy/fair_share.py`` decides, its handler time measured
and charged to its peer.

A request that finds nothing waiting runs at once, within the turn's
budget (an idle node adds no latency).  Past the budget the rest wait for
the next turn, a ``callLater(0)``: the reactor reads every socket first, so
a request from another peer joins the line before that turn rather than
waiting behind everything one peer sent.  The new peers' requests (those
of peers that had nothing waiting, served first) end the turn once they
are all run (``FairShare.new_peers_done``): the transport writes only when
the reactor looks at the sockets, so their answers would otherwise wait
for the busy peers' part of the turn.  (This holds for a turn its timer
runs, as under a flood, where a request that finds others waiting waits
for that timer; a run started inside a read, by an answer that let
requests out, is followed by the next turn before the reactor writes.)
A turn is due whenever handler time was spent since the last one, so one
turn's budget covers all that runs between two looks at the sockets.
With a single peer connected no turn ends (nobody else's request can be
waiting to be read).  A connection's waiting requests count against its
in-flight bound, so past it the node stops reading that peer.  A peer's
answers given in a row go out in one write (``PeerProtocol.cork``), as a
read's do; sending them is charged to it too.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from blueprint_net._core import wire
from blueprint_net._core.identity import PeerId
from blueprint_net._policy.fair_share import FairShare

if TYPE_CHECKING:
    from blueprint_net._adapters.protocol import PeerProtocol

#: Runs one request: its verified peer, the connection, the request.
Serve = Callable[[PeerId, "PeerProtocol", wire.Request], None]


class FairDispatch:
    """Runs requests through ``serve`` in fair shares; see the module."""

    def __init__(
        self,
        reactor: Callable[[], IReactorTime],
        serve: Serve,
        *,
        share: Optional[FairShare[PeerId, tuple[PeerProtocol, wire.Request]]] = None,
        timer: Callable[[], float] = time.perf_counter,
        peers: Callable[[], int] = lambda: 2,
    ) -> None:
        self._reactor, self._serve, self._timer = reactor, serve, timer
        #: How many peers are connected: with one, nobody else's request
        #: can be waiting to be read, so a turn never ends for it.
        self._peers = peers
        self.share: FairShare[PeerId, tuple[PeerProtocol, wire.Request]] = (
            FairShare() if share is None else share
        )
        #: The next turn, while requests wait.
        self._turn: Optional[IDelayedCall] = None
        self._running = False
        self._stopped = False

    def submit(self, protocol: PeerProtocol, request: wire.Request) -> None:
        """Run ``request`` from ``protocol``'s verified peer in its turn."""
        share, peer = self.share, protocol.peer_id
        assert peer is not None
        if self._running:
            share.add(peer, (protocol, request))  # the run under way takes it
        elif share.waiting or self._stopped:
            share.add(peer, (protocol, request))
            if self._stopped:
                self._drain()
        elif self._peers() < 2:
            self._alone(peer, protocol, request)
        elif share.spent < share.turn:
            self._now(peer, protocol, request)  # nothing waits: at once
        else:  # the turn's budget is spent: after the sockets are read
            share.add(peer, (protocol, request))
            self._run()  # (a turn is due already; this makes sure)

    def _alone(
        self, peer: PeerId, protocol: PeerProtocol, request: wire.Request
    ) -> None:
        """Run a request from the only peer connected, nothing waiting:
        there is no one to share with, so its time is not measured."""
        self._running = True
        try:
            if not protocol.connection.closed:
                self._serve(peer, protocol, request)
        finally:
            self._running = False
        if self.share.waiting:
            self._run()  # what its answer let out

    def _now(self, peer: PeerId, protocol: PeerProtocol, request: wire.Request) -> None:
        """Run a request that found nothing waiting, then what it let out."""
        share, timer = self.share, self._timer
        self._running = True
        started = timer()
        try:
            if not protocol.connection.closed:
                self._serve(peer, protocol, request)
        finally:
            share.charge(peer, timer() - started)
            self._running = False
        if share.waiting:
            self._run()  # what its answer let out
        elif self._turn is None and not self._stopped:
            # A fresh budget once the reactor has read every socket.
            self._turn = self._reactor().callLater(0, self._next_turn)

    def stop(self) -> None:
        """The node is stopping: what waits runs now (to be refused, cheaply:
        see ``Dispatcher.serve``), and so does what comes later; no turns."""
        self._stopped = True
        if self._turn is not None:
            self._turn.cancel()
            self._turn = None
        self._drain()

    def _drain(self) -> None:
        share = self.share
        while share.waiting:
            share.new_turn()
            self._run()

    def _uncork(self, protocol: PeerProtocol) -> None:
        """Send ``protocol``'s held answers, charged to its peer."""
        started = self._timer()
        protocol.uncork()
        assert protocol.peer_id is not None
        self.share.charge(protocol.peer_id, self._timer() - started)

    def _next_turn(self) -> None:
        self._turn = None
        self.share.new_turn()
        self._run()

    def _run(self) -> None:
        share, timer, serve, peers = self.share, self._timer, self._serve, self._peers
        self._running = True
        #: The connection whose answers are held (``PeerProtocol.cork``): a
        #: peer's requests in a row go out in one write.
        corked: Optional[PeerProtocol] = None
        current: Optional[PeerProtocol] = None
        try:
            while True:
                alone = peers() < 2
                if alone:
                    share.new_turn()  # no other peer to read first
                picked = share.next()
                if picked is None:
                    break
                peer, (protocol, request) = picked
                if protocol is not current:
                    if corked is not None:
                        self._uncork(corked)
                    current = protocol
                    corked = protocol if protocol.cork() else None
                started = timer()
                if not protocol.connection.closed:
                    serve(peer, protocol, request)
                share.charge(peer, timer() - started)
                if share.new_peers_done and not alone:
                    # Peers asking now and then: the turn ends here, so that
                    # their answers are written before the busy peers run.
                    break
        finally:
            if corked is not None:
                self._uncork(corked)
            self._running = False
            if (
                self._turn is None
                and not self._stopped
                and (share.waiting or share.spent)
            ):
                # The next turn runs what waits, or only starts a fresh
                # budget: after the reactor has read every socket.
                self._turn = self._reactor().callLater(0, self._next_turn)
