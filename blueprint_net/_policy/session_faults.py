"""The price of each party-session violation: which connection fault it is
scored as, and its name in the counters.

Layer: policy (pure values and decisions; no Twisted).

In: a :class:`~blueprint_net._core.errors.SessionViolation` a session
reported (a party's message on its authenticated stream broke a rule of
``docs/protocol.md`` section 11); out: the :class:`ErrorCode` that
``Policy.misbehaved`` scores it as, and the ``rule`` label it is counted
under.
"""

from __future__ import annotations

from typing import Optional

from blueprint_net._core.errors import (
    BadBroadcastSignature,
    DuplicateMessage,
    ErrorCode,
    MalformedSessionMessage,
    NotAParty,
    OversizedMessage,
    RoundTooFar,
    SessionBufferFull,
    SessionViolation,
    UnexpectedRelay,
    WrongIndex,
    WrongKind,
)

#: A forged broadcast signature is scored as a bad handshake signature (50
#: points); a message from a non-party, as another index, a second one in a
#: round, an unasked relay or bytes that are no session message as an
#: unexpected message (20): an honest party never sends one, and the stream
#: it came on is authenticated to the party charged.  ``None``: not charged
#: (only counted, and the session with that party ends), because an honest
#: party can cause it when the two sides' settings or applications differ:
#: a round too far ahead of ours, our buffer full, a payload over our limit,
#: a kind other than the one our application chose for the round.
RULES: dict[type[SessionViolation], tuple[str, Optional[ErrorCode]]] = {
    NotAParty: ("not-a-party", ErrorCode.UNEXPECTED_MESSAGE),
    WrongIndex: ("wrong-index", ErrorCode.UNEXPECTED_MESSAGE),
    DuplicateMessage: ("duplicate", ErrorCode.UNEXPECTED_MESSAGE),
    RoundTooFar: ("round-too-far", None),
    SessionBufferFull: ("buffer-full", None),
    OversizedMessage: ("oversized", None),
    BadBroadcastSignature: ("bad-signature", ErrorCode.BAD_SIGNATURE),
    WrongKind: ("wrong-kind", None),
    UnexpectedRelay: ("unexpected-relay", ErrorCode.UNEXPECTED_MESSAGE),
    MalformedSessionMessage: ("malformed", ErrorCode.UNEXPECTED_MESSAGE),
}


def violation_rule(violation: SessionViolation) -> tuple[str, Optional[ErrorCode]]:
    """The counter label of ``violation`` and the code it is scored as
    (None: not scored)."""
    return RULES[type(violation)]
