"""A distributed key generation on blueprint-net party sessions: n = 5, t = 3.

Run with ``python examples/dkg.py``; ``--cut`` cuts every link between the
parties in the middle of the protocol (after the commitments, while the
shares are in flight), ``--cheat`` makes one party send a bad share (and
stand by it), ``--accuse`` makes one party accuse every other dealer.

Five nodes on loopback, each with its own identity, open one session
(``Node.session``) and run a joint Feldman DKG (the arithmetic is in
``examples/feldman.py``):

1. every party deals a random polynomial of degree ``t - 1`` and broadcasts
   its commitments *reliably*: the session's echo step makes sure every
   party saw the same commitments from each dealer, or fails the round with
   evidence of who equivocated;
2. every party sends each other party its share, point to point (a durable
   stream: nothing is lost when links drop), and checks each share it
   receives against that dealer's commitments;
3. every party broadcasts, reliably, the dealers whose share failed its
   check;
4. every accused dealer reveals, reliably, the shares it dealt its
   accusers; a dealer whose revealed share is missing or fails the check is
   left out (so a false accusation cannot push an honest dealer out, and a
   dealer with invalid commitments is left out by everyone alike).

The group public key is the sum of the remaining dealers' first commitments;
each party's secret share is the sum of the shares it got from them, and any
``t`` parties' public shares give the group key back, which the example
checks.  The parties dial each other through small TCP forwarders
(Twisted's ``portforward``), so that ``--cut`` can drop every connection the
way a network does, and the session's keepers must dial again.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, cast

import attrs
from twisted.internet import defer, task
from twisted.internet.interfaces import IListeningPort, ITCPTransport
from twisted.internet.protocol import connectionDone
from twisted.protocols import portforward
from twisted.python.failure import Failure

sys.path.insert(0, str(Path(__file__).parent))

import feldman

from blueprint_net import Identity, Node, PeerId

PARTIES, THRESHOLD = 5, 3
SESSION = b"dkg example, run 1"
ROUND_TIMEOUT = 30.0


@attrs.frozen
class Outcome:
    """What one party derived."""

    index: int
    group_key: bytes
    #: ``secret_share * G``: the public half of this party's share.
    public_share: bytes
    disqualified: tuple[int, ...]
    #: The dealers whose commitments or share failed this party's checks.
    accused: tuple[int, ...]


class TrackedServer(portforward.ProxyServer):
    """One forwarded connection, known to its :class:`Forwarder`."""

    noisy = False

    def connectionMade(self) -> None:
        cast(Forwarder, self.factory).live.add(self)
        super().connectionMade()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        cast(Forwarder, self.factory).live.discard(self)
        super().connectionLost(reason)  # type: ignore[no-untyped-call]


class Forwarder(portforward.ProxyFactory):
    """A TCP forwarder to one party's port that can cut every link."""

    protocol = TrackedServer

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.live: set[TrackedServer] = set()

    def cut(self) -> int:
        """Abort every connection through this forwarder, both halves."""
        links = list(self.live)
        for server in links:
            halves = [server.transport, server.peer and server.peer.transport]
            for transport in halves:
                if transport is not None:
                    cast(ITCPTransport, transport).abortConnection()
        return len(links)


class Barrier:
    """Holds every party at one point until the example lets them go."""

    def __init__(self, parties: int) -> None:
        self.arrived: list[defer.Deferred[None]] = [
            defer.Deferred() for _ in range(parties)
        ]
        self.released: defer.Deferred[None] = defer.Deferred()

    def all_arrived(self) -> defer.Deferred[list[None]]:
        return defer.gatherResults(self.arrived)

    async def wait(self, index: int) -> None:
        self.arrived[index].callback(None)
        await self.released


def commitments_of(data: bytes) -> list[bytes]:
    """A dealer's broadcast: ``THRESHOLD`` points, each checked."""
    size = feldman.POINT_SIZE
    if len(data) != THRESHOLD * size:
        raise feldman.InvalidPoint("not the commitments of a polynomial")
    return [feldman.point(data[k : k + size]) for k in range(0, len(data), size)]


async def run_party(
    node: Node,
    parties: list[PeerId],
    addresses: dict[PeerId, str],
    cheat: bool = False,
    accuse: bool = False,
    halfway: Barrier | None = None,
) -> Outcome:
    """One party's whole protocol; at ``halfway``, if given, it waits once
    its shares are sent (``--cut`` cuts the links there).  ``cheat``: deal
    the next party a bad share, and stand by it when accused; ``accuse``:
    accuse every other dealer falsely."""
    session = node.session(SESSION, parties, addresses)
    try:
        me, n = session.index, len(parties)
        dealing = feldman.Dealing(THRESHOLD)
        victim = (me + 1) % n

        def share_for(party: int) -> bytes:
            share = dealing.share(party + 1)
            if cheat and party == victim:
                share = feldman.add_scalars([share, feldman.scalar(1)])
            return share

        # Round 0: commitments, reliably broadcast (rounds count from 0).
        # Every party sees the same ones, so an invalid one is left out by
        # all alike, without a complaint.
        session.broadcast(0, b"".join(dealing.commitments()), reliable=True)
        received = await session.gather(0, timeout=ROUND_TIMEOUT)
        commitments = {me: dealing.commitments()}
        invalid: set[int] = set()
        for dealer, data in received.items():
            try:
                commitments[dealer] = commitments_of(data)
            except feldman.InvalidPoint:
                invalid.add(dealer)
        # Round 1: shares, point to point.
        for party in range(n):
            if party != me:
                session.send(1, party, share_for(party))
        if halfway is not None:
            await halfway.wait(me)
        shares = await session.gather(1, timeout=ROUND_TIMEOUT)
        shares[me] = dealing.share(me + 1)
        accused = {
            dealer
            for dealer, share in shares.items()
            if dealer in commitments
            and not feldman.share_is_valid(commitments[dealer], me + 1, share)
        }
        if accuse:
            accused = set(commitments) - {me}
        # Round 2: complaints, reliably broadcast (one byte per dealer).
        session.broadcast(2, bytes(sorted(accused)), reliable=True)
        complaints = await session.gather(2, timeout=ROUND_TIMEOUT)
        complaints[me] = bytes(sorted(accused))
        against = {
            (accuser, dealer)
            for accuser, data in complaints.items()
            for dealer in data
            if dealer in commitments and dealer != accuser
        }
        # Round 3: each accused dealer reveals the disputed shares, reliably;
        # a complaint stands only if the revealed share is missing or bad,
        # so a false accuser cannot push an honest dealer out.
        mine = [a for a, d in sorted(against) if d == me]
        session.broadcast(3, b"".join(bytes([a]) + share_for(a) for a in mine), True)
        answers = await session.gather(3, timeout=ROUND_TIMEOUT)
        answers[me] = b"".join(bytes([a]) + share_for(a) for a in mine)
        out = set(invalid)
        for accuser, dealer in against:
            answer = answers.get(dealer, b"")
            revealed = {
                answer[k]: answer[k + 1 : k + 33] for k in range(0, len(answer), 33)
            }
            share = revealed.get(accuser)
            if share is None or not feldman.share_is_valid(
                commitments[dealer], accuser + 1, share
            ):
                out.add(dealer)
            elif accuser == me:
                shares[dealer] = share  # the dealer's answer stands
        qualified = [dealer for dealer in range(n) if dealer not in out]
        if not qualified:
            raise RuntimeError("every dealer was left out")
        group_key = feldman.add_points([commitments[d][0] for d in qualified])
        secret = feldman.add_scalars([shares[d] for d in qualified])
        public_share = feldman.times_base(secret)
        expected = [feldman.expected(commitments[d], me + 1) for d in qualified]
        assert public_share == feldman.add_points(expected)
        return Outcome(
            me, group_key, public_share, tuple(sorted(out)), tuple(sorted(accused))
        )
    finally:
        await session.close()  # once the others have all we sent


async def main(
    reactor: Any, cut: bool = False, cheat: bool = False, accuse: bool = False
) -> list[Outcome]:
    nodes = [Node(Identity.generate(), reactor=reactor) for _ in range(PARTIES)]
    ports: list[IListeningPort] = []
    forwarders: list[Forwarder] = []
    try:
        addresses: dict[PeerId, str] = {}
        for node in nodes:
            port = await node.listen("p2ptls:0:interface=127.0.0.1")
            forwarder = Forwarder("127.0.0.1", port.getHost().port)  # type: ignore[attr-defined]
            front = reactor.listenTCP(0, forwarder, interface="127.0.0.1")
            ports.extend([port, front])
            forwarders.append(forwarder)
            addresses[node.peer_id] = f"p2ptls:127.0.0.1:{front.getHost().port}"
        parties = [node.peer_id for node in nodes]
        halfway = Barrier(PARTIES)
        cheater = nodes[-1].peer_id if cheat else None
        accuser = nodes[0].peer_id if accuse else None
        runs = [
            defer.Deferred.fromCoroutine(
                run_party(
                    node,
                    parties,
                    addresses,
                    cheat=node.peer_id == cheater,
                    accuse=node.peer_id == accuser,
                    halfway=halfway if cut else None,
                )
            )
            for node in nodes
        ]
        if cut:
            # Once every party has sent its shares, drop every link, go on.
            await halfway.all_arrived()
            links = sum(forwarder.cut() for forwarder in forwarders)
            print(f"cut {links} links in the middle of round 1")
            halfway.released.callback(None)
        outcomes: list[Outcome] = await defer.gatherResults(runs, consumeErrors=True)
        return outcomes
    finally:
        for port in ports:
            await defer.maybeDeferred(port.stopListening)
        for node in nodes:
            await node.stop()


def report(outcomes: list[Outcome]) -> None:
    keys = {outcome.group_key for outcome in outcomes}
    for outcome in outcomes:
        print(
            f"party {outcome.index}: group key {outcome.group_key.hex()[:16]}..., "
            f"left out {list(outcome.disqualified)}"
        )
    for outcome in outcomes:
        for dealer in outcome.accused:
            print(f"party {outcome.index} accused party {dealer}")
    print("every party derived the same group key" if len(keys) == 1 else "KEYS DIFFER")
    by_party = {o.index + 1: o.public_share for o in outcomes}
    qualified = [j for j in sorted(by_party) if j - 1 not in outcomes[0].disqualified]
    chosen = {j: by_party[j] for j in qualified[:THRESHOLD]}
    back = feldman.combine_public(chosen)
    ok = back == outcomes[0].group_key
    print(f"any {THRESHOLD} public shares give the group key back: {ok}")


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cut", action="store_true", help="cut every link mid-way")
    parser.add_argument(
        "--cheat", action="store_true", help="one party sends a bad share"
    )
    parser.add_argument(
        "--accuse", action="store_true", help="one party accuses every dealer"
    )
    options = parser.parse_args()

    async def go(reactor: Any) -> None:
        outcomes = await main(
            reactor, cut=options.cut, cheat=options.cheat, accuse=options.accuse
        )
        report(outcomes)

    task.react(lambda reactor: defer.Deferred.fromCoroutine(go(reactor)))


if __name__ == "__main__":
    run()
