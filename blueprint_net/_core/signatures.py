"""Ed25519 signing backends behind one small interface, with one acceptance rule.

Layer: core (sans-IO; imports nothing from Twisted).

Ed25519 libraries disagree about which signatures are valid (see "Taming the
many EdDSAs", IACR ePrint 2020/1244): ``cryptography`` and the ``ed25519``
package accept small-order keys and nonces, and ``ed25519`` also accepts
malleable ``S + nL`` signatures.  A peer-to-peer network must not let the
choice of library change who can authenticate, so :func:`verify` applies the
strict libsodium rule itself -- canonical ``S < L``, canonical ``A`` and ``R``
that are not of small order -- before any backend sees the signature.  With
those checks every backend accepts exactly the set PyNaCl accepts.
"""

from __future__ import annotations

from typing import Any, Optional

from zope.interface import Attribute, Interface, implementer

#: The order of the Ed25519 base point.
_L = 2**252 + 27742317777372353535851937790883648493
#: The field prime.
_P = 2**255 - 19

#: y-coordinates (sign bit cleared) of every point of order 1, 2, 4 or 8.
#: Their canonical encodings are exactly libsodium's small-order blocklist;
#: the non-canonical ones (p and p + 1) are refused by the ``y < p`` check.
_SMALL_ORDER_Y = frozenset(
    {
        0,  # order 4
        1,  # the identity, order 1
        _P - 1,  # order 2
        int.from_bytes(
            bytes.fromhex(
                "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"
            ),
            "little",
        ),  # order 8
        int.from_bytes(
            bytes.fromhex(
                "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"
            ),
            "little",
        ),  # order 8
    }
)

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
SEED_SIZE = 32


class ISignatureBackend(Interface):
    """An Ed25519 implementation.  Only raw 32-byte seeds and keys cross it."""

    name: str = Attribute("A short name for logs and benchmarks.")

    def load(seed: bytes) -> tuple[bytes, Any]:
        """Return the 32-byte public key of a 32-byte seed, and the backend's
        own signing key for it (derived once, kept by the identity)."""

    def sign(signing_key: Any, message: bytes) -> bytes:
        """Return the 64-byte signature of ``message``."""

    def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
        """Return whether the signature verifies; never raise for bad input."""


@implementer(ISignatureBackend)
class NaClBackend:
    """libsodium through PyNaCl: strict, and the fastest measured here."""

    name = "pynacl"

    def __init__(self) -> None:
        from nacl import bindings, exceptions

        self._bindings = bindings
        self._bad = exceptions.BadSignatureError

    def load(self, seed: bytes) -> tuple[bytes, bytes]:
        # libsodium signs with a 64-byte secret key (seed || public key).
        public, secret = self._bindings.crypto_sign_seed_keypair(seed)
        return bytes(public), bytes(secret)

    def sign(self, signing_key: bytes, message: bytes) -> bytes:
        signed = self._bindings.crypto_sign(message, signing_key)
        return bytes(signed[:SIGNATURE_SIZE])

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        try:
            self._bindings.crypto_sign_open(signature + message, public_key)
        except (self._bad, ValueError, TypeError):
            return False
        return True


@implementer(ISignatureBackend)
class Ed25519Backend:
    """The ``ed25519`` package (SUPERCOP ref10): optional, slow, unmaintained.

    Offered for deployments that already pin it; :func:`verify` makes it as
    strict as libsodium.
    """

    name = "ed25519"

    def __init__(self) -> None:
        import ed25519

        self._module = ed25519

    def load(self, seed: bytes) -> tuple[bytes, Any]:
        key = self._module.SigningKey(seed)
        return bytes(key.get_verifying_key().to_bytes()), key

    def sign(self, signing_key: Any, message: bytes) -> bytes:
        return bytes(signing_key.sign(message))

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        try:
            self._module.VerifyingKey(public_key).verify(signature, message)
        except (self._module.BadSignatureError, ValueError, AssertionError):
            return False
        return True


_BACKENDS = {"pynacl": NaClBackend, "ed25519": Ed25519Backend}
_instances: dict[str, ISignatureBackend] = {}


def get_backend(name: str = "pynacl") -> ISignatureBackend:
    """Return the named backend; ``ImportError`` if its library is absent."""
    try:
        factory = _BACKENDS[name]
    except KeyError:
        raise ValueError(
            f"unknown signature backend {name!r}; choose one of {sorted(_BACKENDS)}"
        ) from None
    backend = _instances.get(name)
    if backend is None:
        backend = _instances[name] = factory()
    return backend


def available_backends() -> list[str]:
    """Names of the backends whose library imports on this machine."""
    names = []
    for name in _BACKENDS:
        try:
            get_backend(name)
        except ImportError:
            continue
        names.append(name)
    return names


def _is_strict_point(encoded: bytes) -> bool:
    """A canonical encoding of a point that is not of small order."""
    y = int.from_bytes(encoded, "little") & ((1 << 255) - 1)
    return y < _P and y not in _SMALL_ORDER_Y


def is_acceptable_public_key(public_key: bytes) -> bool:
    """Whether a key could ever verify under :func:`verify` (cheap checks)."""
    return len(public_key) == PUBLIC_KEY_SIZE and _is_strict_point(public_key)


def verify(
    public_key: bytes,
    message: bytes,
    signature: bytes,
    backend: Optional[ISignatureBackend] = None,
) -> bool:
    """Verify with the strict rule, whichever backend does the curve work."""
    if len(signature) != SIGNATURE_SIZE or not is_acceptable_public_key(public_key):
        return False
    if int.from_bytes(signature[32:], "little") >= _L:
        return False
    if not _is_strict_point(signature[:32]):
        return False
    return (backend or get_backend()).verify(public_key, message, signature)
