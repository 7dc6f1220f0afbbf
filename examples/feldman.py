"""Feldman verifiable secret sharing in the Ed25519 prime-order group.

The arithmetic of ``examples/dkg.py``, kept apart so that it reads (and is
tested) without any networking.  Scalars are 32-byte little-endian integers
modulo the group order; points are 32-byte compressed Edwards points.  Every
point that comes from a peer goes through :func:`point`, which refuses
anything that is not a canonical point of the prime-order subgroup
(``crypto_core_ed25519_is_valid_point``: no small-order or mixed-order
points), so a malicious party cannot smuggle a torsion component into the
group key.

A dealer with threshold ``t`` draws a polynomial ``f`` of degree ``t - 1``,
publishes the commitments ``C_k = a_k * G`` of its coefficients, and gives
party ``j`` (numbered from 1) the share ``f(j)``; party ``j`` checks
``f(j) * G == sum_k C_k * j**k``.  Any ``t`` shares determine ``f(0)``.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from nacl.bindings import (
    crypto_core_ed25519_add,
    crypto_core_ed25519_is_valid_point,
    crypto_core_ed25519_scalar_add,
    crypto_core_ed25519_scalar_mul,
    crypto_core_ed25519_scalar_reduce,
    crypto_scalarmult_ed25519_base_noclamp,
    crypto_scalarmult_ed25519_noclamp,
)

SCALAR_SIZE = 32
POINT_SIZE = 32
#: The order of the prime-order subgroup (the ``l`` of RFC 8032).
ORDER = 2**252 + 27742317777372353535851937790883648493


class InvalidPoint(ValueError):
    """Bytes that are not a point of the prime-order subgroup."""


def random_scalar() -> bytes:
    """A uniform non-zero scalar: 64 random bytes reduced modulo the order."""
    while True:
        scalar = crypto_core_ed25519_scalar_reduce(secrets.token_bytes(64))
        if any(scalar):
            return scalar


def scalar(number: int) -> bytes:
    """The scalar of a (small, non-negative) integer."""
    return (number % ORDER).to_bytes(SCALAR_SIZE, "little")


def point(data: bytes) -> bytes:
    """``data`` if it is a valid point of the prime-order subgroup."""
    if len(data) != POINT_SIZE or not crypto_core_ed25519_is_valid_point(data):
        raise InvalidPoint("not a point of the Ed25519 prime-order group")
    return data


def times_base(value: bytes) -> bytes:
    """``value * G``."""
    return crypto_scalarmult_ed25519_base_noclamp(value)


def add_points(points: Sequence[bytes]) -> bytes:
    total = points[0]
    for each in points[1:]:
        total = crypto_core_ed25519_add(total, each)
    return total


def add_scalars(values: Sequence[bytes]) -> bytes:
    total = scalar(0)
    for each in values:
        total = crypto_core_ed25519_scalar_add(total, each)
    return total


class Dealing:
    """One dealer's secret polynomial of degree ``threshold - 1``."""

    def __init__(self, threshold: int) -> None:
        if threshold < 1:
            raise ValueError("the threshold is at least 1")
        self.coefficients = [random_scalar() for _ in range(threshold)]

    def commitments(self) -> list[bytes]:
        """``C_k = a_k * G``, to be broadcast reliably."""
        return [times_base(a) for a in self.coefficients]

    def share(self, party: int) -> bytes:
        """``f(party)``, for party number ``party`` (from 1), by Horner."""
        if party < 1:
            raise ValueError("parties are numbered from 1")
        x, value = scalar(party), scalar(0)
        for a in reversed(self.coefficients):
            value = crypto_core_ed25519_scalar_add(
                crypto_core_ed25519_scalar_mul(value, x), a
            )
        return value


def expected(commitments: Sequence[bytes], party: int) -> bytes:
    """``sum_k C_k * party**k``: what ``share(party) * G`` must be."""
    terms, power = [], 1
    for commitment in commitments:
        if power % ORDER == 1:
            terms.append(commitment)
        else:
            terms.append(crypto_scalarmult_ed25519_noclamp(scalar(power), commitment))
        power = power * party % ORDER
    return add_points(terms)


def share_is_valid(commitments: Sequence[bytes], party: int, share: bytes) -> bool:
    """Whether ``share`` (from the dealer of ``commitments``) is ``f(party)``."""
    if len(share) != SCALAR_SIZE or not any(share):
        return False
    if crypto_core_ed25519_scalar_reduce(share + bytes(32)) != share:
        return False  # not reduced: not a scalar any honest dealer sends
    return times_base(share) == expected(commitments, party)


def lagrange_at_zero(parties: Sequence[int], party: int) -> bytes:
    """The Lagrange coefficient of ``party`` for interpolating at 0."""
    numerator, denominator = 1, 1
    for other in parties:
        if other != party:
            numerator = numerator * other % ORDER
            denominator = denominator * (other - party) % ORDER
    return scalar(numerator * pow(denominator, -1, ORDER))


def combine_public(shares: dict[int, bytes]) -> bytes:
    """``f(0) * G`` from ``t`` public shares ``{party: f(party) * G}``."""
    parties = sorted(shares)
    return add_points(
        [
            crypto_scalarmult_ed25519_noclamp(lagrange_at_zero(parties, j), shares[j])
            for j in parties
        ]
    )
