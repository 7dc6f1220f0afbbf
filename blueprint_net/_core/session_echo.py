"""Reliable broadcast by echo (``docs/protocol.md`` section 11.5), sans-IO:
the bytes a party's broadcast signs and their check, our echo of a round,
the relays of a disagreement, what a relay proves, and anyone's offline
check of that proof.

Layer: core (sans-IO; imports nothing from Twisted).

:class:`~blueprint_net._core.sessions.PartySession` holds one
:class:`ReliableBroadcast` and calls it from the actions of its one table;
nothing here moves a round from one state to another (the machine does).

**In:** a payload to sign, a broadcast to check, a round's
:class:`~blueprint_net._core.session_states.RoundEntry` (the broadcasts the
machine took), a party's :class:`Relay`; for :func:`verify_equivocation`,
evidence and a session's id and parties.

**Out:** signatures and their verdicts, our echo's digest, the relays to
send a party whose echo differed, and a relay's verdict: the round's error
becomes :class:`~blueprint_net._core.session_states.Equivocation` or
:class:`~blueprint_net._core.errors.FalseEcho`, or the relay is refused
(:class:`~blueprint_net._core.errors.UnexpectedRelay`,
:class:`~blueprint_net._core.errors.BadBroadcastSignature`).
"""

from __future__ import annotations

from collections.abc import Sequence

from blueprint_net._core import session_wire as sw
from blueprint_net._core.errors import (
    BadBroadcastSignature,
    FalseEcho,
    UnexpectedRelay,
)
from blueprint_net._core.identity import Identity, PeerId
from blueprint_net._core.session_states import Equivocation, RoundEntry
from blueprint_net._core.session_wire import (
    Broadcast,
    EquivocationEvidence,
    Relay,
    SignedBroadcast,
)
from blueprint_net._core.signatures import verify


class ReliableBroadcast:
    """The local party's signing and checking of one session's broadcasts,
    and the echo and relays that make a broadcast reliable."""

    def __init__(
        self, identity: Identity, digest: bytes, keys: Sequence[bytes]
    ) -> None:
        self.identity = identity
        #: The session's digest, which every signature and echo covers.
        self.digest = digest
        #: The parties' public keys in index order.
        self.keys = tuple(keys)
        self.n = len(keys)
        self.index = self.keys.index(identity.public_key)

    def signed(self, round: int, origin: int, payload: bytes) -> bytes:
        """The bytes ``origin``'s broadcast of ``payload`` in ``round`` signs."""
        return sw.signed_bytes(self.digest, round, origin, payload)

    def sign(self, round: int, payload: bytes) -> SignedBroadcast:
        """Our broadcast of ``payload`` in ``round``, signed."""
        signature = self.identity.sign(self.signed(round, self.index, payload))
        return SignedBroadcast(payload, signature)

    def verifies(
        self, round: int, origin: int, payload: bytes, signature: bytes
    ) -> bool:
        signed = self.signed(round, origin, payload)
        return verify(self.keys[origin], signed, signature, self.identity.backend)

    def echo_digest(self, entry: RoundEntry, round: int) -> bytes:
        """Our echo of a reliable round whose every broadcast is in."""
        own = entry.own
        assert own is not None
        payloads = [
            own.payload if party == self.index else entry.messages[party].payload
            for party in range(self.n)
        ]
        return sw.echo_digest(self.digest, round, payloads)

    def relays(self, entry: RoundEntry, round: int) -> list[Relay]:
        """Every broadcast of the round as we have it, in origin order."""
        relays = []
        for origin in range(self.n):
            signed = self.broadcast_of(entry, origin)
            relays.append(
                Relay(self.index, round, origin, signed.payload, signed.signature)
            )
        return relays

    def take_relay(
        self, entry: RoundEntry, round: int, party: int, relay: Relay
    ) -> None:
        """Compare ``party``'s next relay with the broadcast we have: a
        different one its origin signed is an equivocation; all ``n`` equal
        to ours make ``party``'s echo false.  Raises, changing nothing, for a
        relay out of turn or one its origin did not sign."""
        expected = entry.disputes.get(party)
        if expected is None:  # (all n relays in decide the round: FAILED)
            raise UnexpectedRelay(
                f"party {party} relayed round {round} without a disagreement"
            )
        origin = relay.origin
        if origin != expected:
            raise UnexpectedRelay(
                f"party {party} relayed origin {origin} of round {round};"
                f" origin {expected} is next"
            )
        ours = self.broadcast_of(entry, origin)
        if relay.payload != ours.payload:
            if not self.verifies(round, origin, relay.payload, relay.signature):
                raise BadBroadcastSignature(
                    f"party {party} relayed a broadcast of party {origin}"
                    f" in round {round} that party {origin} did not sign"
                )
            theirs = SignedBroadcast(relay.payload, relay.signature)
            entry.error = Equivocation(sw.evidence(round, origin, ours, theirs))
        entry.disputes[party] = origin + 1
        if entry.error is None and origin + 1 == self.n:
            entry.error = FalseEcho(round, party)

    def broadcast_of(self, entry: RoundEntry, origin: int) -> SignedBroadcast:
        if origin == self.index:
            assert entry.own is not None
            return entry.own
        message = entry.messages[origin]
        assert type(message) is Broadcast
        return SignedBroadcast(message.payload, message.signature)


def verify_equivocation(
    evidence: EquivocationEvidence, session_id: bytes, parties: Sequence[PeerId]
) -> bool:
    """Whether ``evidence`` proves that its origin, a party of the session
    ``session_id`` among ``parties``, signed two different broadcasts for
    one round.  Needs only public keys; ``ValueError`` for a party list or
    session id that no session can have."""
    keys = sw.sorted_keys([party.public_key for party in parties])
    digest = sw.session_digest(session_id, keys)
    if not 0 <= evidence.origin < len(keys) or not 0 <= evidence.round < 2**32:
        return False
    first, second = evidence.first, evidence.second
    if first.payload == second.payload:
        return False
    key = keys[evidence.origin]
    return all(
        verify(
            key,
            sw.signed_bytes(digest, evidence.round, evidence.origin, signed.payload),
            signed.signature,
        )
        for signed in (first, second)
    )
