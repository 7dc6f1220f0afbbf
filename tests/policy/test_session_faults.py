"""_policy/session_faults.py: every session rule has a price and a label."""

from __future__ import annotations

from blueprint_net._core import errors, telemetry
from blueprint_net._core.errors import ErrorCode, SessionViolation
from blueprint_net._policy.session_faults import RULES, violation_rule


def _rules() -> set[type[SessionViolation]]:
    return {
        value
        for value in vars(errors).values()
        if isinstance(value, type)
        and issubclass(value, SessionViolation)
        and value is not SessionViolation
    }


def test_every_rule_has_a_price_and_the_counters_name_each() -> None:
    assert set(RULES) == _rules()
    assert tuple(label for label, _ in RULES.values()) == telemetry.SESSION_RULES


def test_a_forged_signature_costs_what_a_bad_handshake_signature_does() -> None:
    assert violation_rule(errors.BadBroadcastSignature("x")) == (
        "bad-signature",
        ErrorCode.BAD_SIGNATURE,
    )
    for rule in (
        errors.NotAParty,
        errors.WrongIndex,
        errors.DuplicateMessage,
        errors.UnexpectedRelay,
        errors.MalformedSessionMessage,
    ):
        assert violation_rule(rule("x"))[1] is ErrorCode.UNEXPECTED_MESSAGE


def test_what_an_honest_party_can_cause_is_not_charged() -> None:
    """Differences of settings or of the applications' choices."""
    for rule, label in (
        (errors.RoundTooFar, "round-too-far"),
        (errors.SessionBufferFull, "buffer-full"),
        (errors.OversizedMessage, "oversized"),
        (errors.WrongKind, "wrong-kind"),
    ):
        assert violation_rule(rule("x")) == (label, None)
