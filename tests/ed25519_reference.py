"""A pure-Python Ed25519 for the tests: the strict acceptance rule written
from its definition, and a lax ref10-style backend.

The strict rule (:func:`strict_verify`) is what ``signatures.verify`` must
decide with every backend: libsodium's rule, stated with the curve maths
(a point is of small order when ``[8]P`` is the identity) rather than with
the blocklist the production code uses, so the two are checked against each
other.  :class:`LaxBackend` accepts what SUPERCOP ref10 (the ``ed25519``
package) accepts -- non-canonical and small-order points, ``S`` up to
``2**253`` -- so the checks ``signatures.verify`` makes before any backend
are tested on every Python version, not only where that package builds.

Slow (a verification is a few milliseconds); for tests only.
"""

from __future__ import annotations

import hashlib
from typing import Optional

from zope.interface import implementer

from blueprint_net._core.signatures import ISignatureBackend

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)

#: Extended coordinates (X, Y, Z, T) with x = X/Z, y = Y/Z, xy = T/Z.
Point = tuple[int, int, int, int]
IDENTITY: Point = (0, 1, 1, 0)


def add(a: Point, b: Point) -> Point:
    """RFC 8032, section 5.1.4 (complete: any two points, doubling too)."""
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    aa = (y1 - x1) * (y2 - x2) % P
    bb = (y1 + x1) * (y2 + x2) % P
    cc = 2 * t1 * t2 * D % P
    dd = 2 * z1 * z2 % P
    e, f, g, h = bb - aa, dd - cc, dd + cc, bb + aa
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def multiply(scalar: int, point: Point) -> Point:
    result = IDENTITY
    while scalar > 0:
        if scalar & 1:
            result = add(result, point)
        point = add(point, point)
        scalar >>= 1
    return result


def same(a: Point, b: Point) -> bool:
    return (a[0] * b[2] - b[0] * a[2]) % P == 0 and (a[1] * b[2] - b[1] * a[2]) % P == 0


def recover_x(y: int, sign: int) -> Optional[int]:
    """The x of ``y`` with the given sign bit; None off the curve (or -0)."""
    if y >= P:
        return None
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P != 0:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P != 0:
        return None
    if x & 1 != sign:
        x = P - x
    return x


def decode(encoded: bytes, *, reduce: bool = False) -> Optional[Point]:
    """A point from 32 bytes; a non-canonical ``y`` (>= p) only if ``reduce``
    (as ref10 does), otherwise None."""
    value = int.from_bytes(encoded, "little")
    y, sign = value & ((1 << 255) - 1), value >> 255
    if reduce:
        y %= P
    x = recover_x(y, sign)
    if x is None:
        if not reduce or y not in (1, P - 1):
            return None
        x = 0  # ref10 takes "-0" as 0
    return (x, y, 1, x * y % P)


def encode(point: Point) -> bytes:
    x, y, z, _ = point
    zinv = pow(z, P - 2, P)
    x, y = x * zinv % P, y * zinv % P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


B: Point = decode((4 * pow(5, P - 2, P) % P).to_bytes(32, "little"))  # type: ignore[assignment]


def is_small_order(point: Point) -> bool:
    return same(multiply(8, point), IDENTITY)


def challenge(r: bytes, public_key: bytes, message: bytes) -> int:
    return (
        int.from_bytes(hashlib.sha512(r + public_key + message).digest(), "little") % L
    )


def strict_verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """libsodium's rule: 64-byte signature, canonical ``S < L``, ``A`` and
    ``R`` canonical and not of small order, and ``encode([S]B - [k]A) == R``
    (the cofactorless equation, compared as bytes)."""
    if len(signature) != 64 or len(public_key) != 32:
        return False
    r, s = signature[:32], int.from_bytes(signature[32:], "little")
    a = decode(public_key)
    if a is None or is_small_order(a) or s >= L:
        return False
    point_r = decode(r)
    if point_r is None or is_small_order(point_r):
        return False
    k = challenge(r, public_key, message)
    minus_ka = multiply(k, (P - a[0], a[1], a[2], P - a[3]))
    return encode(add(multiply(s, B), minus_ka)) == r


@implementer(ISignatureBackend)
class LaxBackend:
    """What ref10 accepts: any ``y`` (reduced mod p), small orders, ``S``
    below ``2**253``, and the cofactorless equation compared as bytes."""

    name = "lax-reference"

    def load(self, seed: bytes) -> tuple[bytes, bytes]:
        raise NotImplementedError("verification only")

    def sign(self, signing_key: bytes, message: bytes) -> bytes:
        raise NotImplementedError("verification only")

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        if len(signature) != 64 or len(public_key) != 32 or signature[63] & 0xE0:
            return False
        a = decode(public_key, reduce=True)
        if a is None:
            return False
        r, s = signature[:32], int.from_bytes(signature[32:], "little")
        k = challenge(r, public_key, message)
        minus_ka = multiply(k, (P - a[0], a[1], a[2], P - a[3]))
        return encode(add(multiply(s, B), minus_ka)) == r
