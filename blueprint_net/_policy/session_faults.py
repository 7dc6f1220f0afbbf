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
#: points), every other broken rule as an unexpected message (20): each is
#: something an honest party never sends, and the stream it came on is
#: authenticated to the party charged.
RULES: dict[type[SessionViolation], tuple[str, ErrorCode]] = {
    NotAParty: ("not-a-party", ErrorCode.UNEXPECTED_MESSAGE),
    WrongIndex: ("wrong-index", ErrorCode.UNEXPECTED_MESSAGE),
    DuplicateMessage: ("duplicate", ErrorCode.UNEXPECTED_MESSAGE),
    RoundTooFar: ("round-too-far", ErrorCode.UNEXPECTED_MESSAGE),
    SessionBufferFull: ("buffer-full", ErrorCode.UNEXPECTED_MESSAGE),
    OversizedMessage: ("oversized", ErrorCode.UNEXPECTED_MESSAGE),
    BadBroadcastSignature: ("bad-signature", ErrorCode.BAD_SIGNATURE),
    WrongKind: ("wrong-kind", ErrorCode.UNEXPECTED_MESSAGE),
    UnexpectedRelay: ("unexpected-relay", ErrorCode.UNEXPECTED_MESSAGE),
    MalformedSessionMessage: ("malformed", ErrorCode.UNEXPECTED_MESSAGE),
}


def violation_rule(violation: SessionViolation) -> tuple[str, ErrorCode]:
    """The counter label and the score code of ``violation``."""
    return RULES[type(violation)]
