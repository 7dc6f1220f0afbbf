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
    others = [rule for rule in RULES if rule is not errors.BadBroadcastSignature]
    for rule in others:
        assert violation_rule(rule("x"))[1] is ErrorCode.UNEXPECTED_MESSAGE
    assert violation_rule(errors.RoundTooFar("x"))[0] == "round-too-far"
