"""Every backend accepts exactly the signatures libsodium accepts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from blueprint_net._core import signatures

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
BACKENDS = ["pynacl", "ed25519"]


def _backend(name: str) -> signatures.ISignatureBackend:
    if name not in signatures.available_backends():
        pytest.skip(f"the {name} package is not installed")
    return signatures.get_backend(name)


def _wycheproof() -> list[tuple[int, bytes, bytes, bytes, bool]]:
    data = json.loads((VECTORS / "wycheproof-ed25519_test.json").read_text())
    cases = []
    for group in data["testGroups"]:
        public_key = bytes.fromhex(group["publicKey"]["pk"])
        for test in group["tests"]:
            cases.append(
                (
                    test["tcId"],
                    public_key,
                    bytes.fromhex(test["msg"]),
                    bytes.fromhex(test["sig"]),
                    test["result"] == "valid",
                )
            )
    return cases


def _speccheck() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads(
        (VECTORS / "speccheck-cases.json").read_text()
    )
    return cases


WYCHEPROOF = _wycheproof()
SPECCHECK = _speccheck()
#: What libsodium accepts of the speccheck cases: only case 3, a mixed-order
#: key with a signature valid under the cofactorless equation.
SPECCHECK_ACCEPTED = {3}
#: The identity key and the signature that verifies every message under
#: libraries that skip the small-order checks.
IDENTITY_KEY = bytes([1]) + bytes(31)
FORGERY = bytes([1]) + bytes(63)


def test_vectors_are_all_there() -> None:
    assert len(WYCHEPROOF) == 151
    assert len(SPECCHECK) == 12


@pytest.mark.parametrize("name", BACKENDS)
def test_wycheproof(name: str) -> None:
    backend = _backend(name)
    wrong = [
        tc_id
        for tc_id, public_key, message, signature, valid in WYCHEPROOF
        if signatures.verify(public_key, message, signature, backend) != valid
    ]
    assert wrong == []


@pytest.mark.parametrize("name", BACKENDS)
def test_speccheck(name: str) -> None:
    backend = _backend(name)
    accepted = {
        index
        for index, case in enumerate(SPECCHECK)
        if signatures.verify(
            bytes.fromhex(case["pub_key"]),
            bytes.fromhex(case["message"]),
            bytes.fromhex(case["signature"]),
            backend,
        )
    }
    assert accepted == SPECCHECK_ACCEPTED


def test_raw_ed25519_package_is_lax_without_our_checks() -> None:
    """Shows the strict checks are what make the backends agree."""
    backend = _backend("ed25519")
    raw = {
        index
        for index, case in enumerate(SPECCHECK)
        if backend.verify(
            bytes.fromhex(case["pub_key"]),
            bytes.fromhex(case["message"]),
            bytes.fromhex(case["signature"]),
        )
    }
    assert raw > SPECCHECK_ACCEPTED


@pytest.mark.parametrize("message", [b"", b"anything", b"pay mallory 1000"])
def test_identity_key_forgery_is_refused(message: bytes) -> None:
    # cryptography (OpenSSL) accepts it for every message: the threat is real.
    Ed25519PublicKey.from_public_bytes(IDENTITY_KEY).verify(FORGERY, message)
    for name in signatures.available_backends():
        assert not signatures.verify(
            IDENTITY_KEY, message, FORGERY, signatures.get_backend(name)
        )


@pytest.mark.parametrize("name", BACKENDS)
def test_sign_and_verify_round_trip(name: str) -> None:
    backend = _backend(name)
    seed = bytes(range(32))
    public_key, signing_key = backend.load(seed)
    signature = backend.sign(signing_key, b"message")
    assert signatures.verify(public_key, b"message", signature, backend)
    assert not signatures.verify(public_key, b"massage", signature, backend)
    with pytest.raises(InvalidSignature):
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, b"massage")


def test_backends_sign_identically() -> None:
    names = signatures.available_backends()
    seed = bytes(range(1, 33))
    results = set()
    for name in names:
        backend = signatures.get_backend(name)
        public_key, signing_key = backend.load(seed)
        results.add((public_key, backend.sign(signing_key, b"m")))
    assert len(results) == 1


@pytest.mark.parametrize(
    ("public_key", "signature"),
    [(bytes(31), bytes(64)), (bytes(32), bytes(63)), (b"", b"")],
)
def test_wrong_lengths_are_refused(public_key: bytes, signature: bytes) -> None:
    assert not signatures.verify(public_key, b"m", signature)


def test_unknown_backend() -> None:
    with pytest.raises(ValueError, match="unknown signature backend"):
        signatures.get_backend("rot13")
