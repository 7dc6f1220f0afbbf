"""Fair shares of handler time among the peers whose requests wait.

Layer: policy (pure decisions; no Twisted).

In: a verified peer's request, ready to run (:meth:`FairShare.add`); what
running one cost (:meth:`FairShare.charge`: seconds of handler time, which
the caller measures); the start of a turn (:meth:`FairShare.new_turn`).
Out: the request to run next and whose it is (:meth:`FairShare.next`), or
None: none waits, or this turn's budget is spent (the caller then lets the
reactor read every peer before it starts a new turn); whether that request
was the last waiting of the new peers (:attr:`FairShare.new_peers_done`).

Deficit round robin (Shreedhar and Varghese) over peers, with costs known
only after the run: a busy peer's deficit grows by ``quantum`` each round
and it runs requests while its deficit is positive, each charged what it
cost, so a peer whose requests cost ten times as much runs a tenth as many.
As with FQ-CoDel's new flows (RFC 8290), a peer that had nothing waiting is
served before the busy ones, for one quantum: an honest peer asking now and
then is answered at once however hard another one floods, and flooding
never makes a peer new (it must spend a whole round with nothing waiting).
A peer that leaves owing time keeps its debt until it is paid off.

Why this and not a rate: the node stops reading a peer past its in-flight
bound, so a flooding peer fills only its own queue; it gets all the idle
handler time, and its share, no more, when others are busy.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Generic, Optional, TypeVar

import attrs

#: Handler time a busy peer may use per round, in seconds (about ten
#: small requests): small, so that peers interleave finely.
QUANTUM = 0.0001
#: Handler time run between two looks at the sockets, in seconds: an honest
#: peer's request, once read, waits about this long (``bench.attack_fair``;
#: a millisecond made its median under a flood five times as long).
TURN = 0.0002

Peer = TypeVar("Peer", bound=Hashable)
Item = TypeVar("Item")


@attrs.define(eq=False)
class _Flow(Generic[Item]):
    """One peer's waiting requests and the handler time it may still use."""

    deficit: float
    queue: deque[Item] = attrs.Factory(deque)


class FairShare(Generic[Peer, Item]):
    """The scheduling decision of one node; see the module."""

    def __init__(self, quantum: float = QUANTUM, turn: float = TURN) -> None:
        if not quantum > 0 or not turn > 0:
            raise ValueError("the quantum and the turn are positive")
        self.quantum, self.turn = quantum, turn
        #: Every peer on one of the two lists below, and only those.
        self._flows: dict[Peer, _Flow[Item]] = {}
        #: Peers that had nothing waiting, served first; then the busy ones.
        self._new: deque[Peer] = deque()
        self._old: deque[Peer] = deque()
        #: Handler time charged since the turn began.
        self.spent = 0.0
        #: Requests added and not handed out yet.
        self.waiting = 0
        #: Whether the request :meth:`next` handed out last was the last one
        #: waiting of the new peers (served ahead of the busy): the caller
        #: lets their answers go out before it runs more (once a turn, however
        #: many new peers there were).
        self.new_peers_done = False

    def add(self, peer: Peer, item: Item) -> None:
        """``peer``'s request is ready to run."""
        flow = self._flows.get(peer)
        if flow is None:
            flow = self._flows[peer] = _Flow(self.quantum)
            self._new.append(peer)
        flow.queue.append(item)
        self.waiting += 1

    def new_turn(self) -> None:
        """The reactor has looked at the sockets: a fresh budget."""
        self.spent = 0.0

    def next(self) -> Optional[tuple[Peer, Item]]:
        """The request to run now, and its peer; None when none waits or
        this turn's budget is spent.  Charge its cost once it has run."""
        if self.spent >= self.turn:
            return None
        flows, new, old = self._flows, self._new, self._old
        while new or old:
            line = new if new else old
            peer = line[0]
            flow = flows[peer]
            if flow.deficit <= 0:
                # Its share for this round is spent: the next round's, later.
                flow.deficit += self.quantum
                line.popleft()
                old.append(peer)
            elif flow.queue:
                self.waiting -= 1
                item = flow.queue.popleft()
                self.new_peers_done = line is new and not flow.queue and len(new) == 1
                return peer, item
            elif line is new:
                # A round among the busy before it may count as new again.
                new.popleft()
                old.append(peer)
            else:
                old.popleft()  # idle: what it had left is not saved up
                del flows[peer]
        return None

    def charge(self, peer: Peer, cost: float) -> None:
        """What running ``peer``'s request (from :meth:`next`) cost."""
        self.spent += cost
        flow = self._flows.get(peer)
        if flow is not None:
            flow.deficit -= cost

    def share(self, peer: Peer) -> Optional[float]:
        """Handler time ``peer`` may still use this round (negative: owed);
        None when it has nothing waiting and owes nothing."""
        flow = self._flows.get(peer)
        return None if flow is None else flow.deficit
