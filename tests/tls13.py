"""RFC 8446's TLS 1.3 exporter computed from a session's exporter secret,
independently of OpenSSL: ``tests/test_spec.py`` checks it against a live
session's channel binding, ``tests/test_protocol_doc.py`` against the
specification's vectors (Python's ``ssl`` has no exporter, so an
implementer may need this computation to check its own)."""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand


def hkdf_expand_label(
    algorithm: hashes.HashAlgorithm,
    secret: bytes,
    label: bytes,
    context: bytes,
    length: int,
) -> bytes:
    """RFC 8446 section 7.1."""
    full = b"tls13 " + label
    info = length.to_bytes(2, "big") + bytes((len(full),)) + full
    info += bytes((len(context),)) + context
    return HKDFExpand(algorithm, length, info).derive(secret)


def exporter_parts(
    hash_name: str, exporter_secret: bytes, label: bytes, context: bytes
) -> tuple[bytes, bytes]:
    """RFC 8446 section 7.5 with a length of 32: (the label's derived
    secret, the exported value), for ``hash_name`` ``sha256`` or ``sha384``
    (the cipher suite's hash)."""
    algorithm = hashes.SHA384() if hash_name == "sha384" else hashes.SHA256()
    empty = hashlib.new(hash_name, b"").digest()
    derived = hkdf_expand_label(
        algorithm, exporter_secret, label, empty, algorithm.digest_size
    )
    exported = hkdf_expand_label(
        algorithm, derived, b"exporter", hashlib.new(hash_name, context).digest(), 32
    )
    return derived, exported


def tls_exporter(
    cipher: str, exporter_secret: bytes, label: bytes, context: bytes
) -> bytes:
    """The exporter of a session whose cipher suite is ``cipher`` (its name
    ends with its hash)."""
    name = "sha384" if cipher.endswith("SHA384") else "sha256"
    return exporter_parts(name, exporter_secret, label, context)[1]
