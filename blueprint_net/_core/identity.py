"""Who a peer is: Ed25519 keys and libp2p-compatible peer ids.

Layer: core (sans-IO; imports nothing from Twisted).

A peer id is libp2p's for Ed25519 keys -- the identity multihash of the
protobuf-encoded public key, written in base58btc (``12D3KooW...``) -- so a
key already used on a libp2p network keeps its name here.
"""

from __future__ import annotations

import secrets
from functools import total_ordering
from typing import Optional

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from blueprint_net._core import signatures
from blueprint_net._core.errors import KeyFileError
from blueprint_net._core.signatures import ISignatureBackend

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {char: value for value, char in enumerate(_B58_ALPHABET)}

#: protobuf ``PublicKey{Type: Ed25519 (1), Data: <32 bytes>}``: field 1 varint 1,
#: field 2 length-delimited 32.
_PROTOBUF_ED25519_PREFIX = b"\x08\x01\x12\x20"
#: multihash: code 0x00 (identity), digest length 36.
_MULTIHASH_IDENTITY_PREFIX = b"\x00\x24"
_PEER_ID_PREFIX = _MULTIHASH_IDENTITY_PREFIX + _PROTOBUF_ED25519_PREFIX
PEER_ID_SIZE = len(_PEER_ID_PREFIX) + signatures.PUBLIC_KEY_SIZE  # 38


def b58encode(data: bytes) -> str:
    """base58btc, the Bitcoin alphabet; each leading zero byte becomes ``1``."""
    number = int.from_bytes(data, "big")
    digits = []
    while number:
        number, digit = divmod(number, 58)
        digits.append(_B58_ALPHABET[digit])
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + "".join(reversed(digits))


def b58decode(text: str) -> bytes:
    """Inverse of :func:`b58encode`; ``ValueError`` for a foreign character."""
    number = 0
    for char in text:
        try:
            number = number * 58 + _B58_INDEX[char]
        except KeyError:
            raise ValueError(f"{char!r} is not a base58btc character") from None
    zeros = len(text) - len(text.lstrip("1"))
    body = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return b"\0" * zeros + body


@total_ordering
class PeerId:
    """The name of a peer: derived from its public key, never chosen.

    Compared and ordered by its binary form, which is what both ends of a
    connection use to break ties the same way.
    """

    __slots__ = ("_text", "binary")

    def __init__(self, binary: bytes) -> None:
        if len(binary) != PEER_ID_SIZE or not binary.startswith(_PEER_ID_PREFIX):
            raise ValueError("not an Ed25519 identity-multihash peer id")
        self.binary = bytes(binary)
        self._text: Optional[str] = None

    @classmethod
    def from_public_key(cls, public_key: bytes) -> PeerId:
        if len(public_key) != signatures.PUBLIC_KEY_SIZE:
            raise ValueError("an Ed25519 public key is 32 bytes")
        return cls(_PEER_ID_PREFIX + public_key)

    @classmethod
    def from_string(cls, text: str) -> PeerId:
        """Parse the ``12D3KooW...`` form; ``ValueError`` says what is wrong."""
        try:
            binary = b58decode(text)
        except ValueError as error:
            raise ValueError(f"invalid peer id {text!r}: {error}") from None
        try:
            return cls(binary)
        except ValueError:
            raise ValueError(
                f"invalid peer id {text!r}: not an Ed25519 libp2p peer id"
            ) from None

    @property
    def public_key(self) -> bytes:
        return self.binary[len(_PEER_ID_PREFIX) :]

    def __str__(self) -> str:
        if self._text is None:
            self._text = b58encode(self.binary)
        return self._text

    def __repr__(self) -> str:
        return f"PeerId({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PeerId):
            return NotImplemented
        return self.binary == other.binary

    def __lt__(self, other: PeerId) -> bool:
        return self.binary < other.binary

    def __hash__(self) -> int:
        return hash(self.binary)


def require_peer_id(value: object, name: str = "peer_id") -> PeerId:
    """``value`` if it is a :class:`PeerId`; else a ``TypeError`` at the
    call saying what to pass.  The API takes ids parsed once, where the text
    came in (``PeerId.from_string``): a text id that slipped through would
    fail far from the call (in TLS's verify callback), or quietly match no
    peer."""
    if isinstance(value, PeerId):
        return value
    hint = (
        f"PeerId.from_string({value!r})"
        if isinstance(value, str)
        else "PeerId.from_string('12D3KooW...')"
    )
    raise TypeError(
        f"{name} must be a blueprint_net.PeerId, not {type(value).__name__}:"
        f" pass {hint}"
    )


class Identity:
    """A node's own key pair.  Holds the secret; signs with the chosen backend."""

    def __init__(
        self, seed: bytes, backend: Optional[ISignatureBackend] = None
    ) -> None:
        if len(seed) != signatures.SEED_SIZE:
            raise ValueError("an Ed25519 seed is 32 bytes")
        self._seed = bytes(seed)
        self.backend = backend or signatures.get_backend()
        self.public_key, self._signing_key = self.backend.load(self._seed)
        self.peer_id = PeerId.from_public_key(self.public_key)

    @classmethod
    def generate(cls, backend: Optional[ISignatureBackend] = None) -> Identity:
        return cls(secrets.token_bytes(signatures.SEED_SIZE), backend)

    def sign(self, message: bytes) -> bytes:
        return self.backend.sign(self._signing_key, message)

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        """Verify another peer's signature with this identity's backend."""
        return signatures.verify(public_key, message, signature, self.backend)

    def private_key(self) -> Ed25519PrivateKey:
        """The secret key as ``cryptography`` holds it (for key files and TLS
        certificates; signing goes through the backend)."""
        return Ed25519PrivateKey.from_private_bytes(self._seed)

    def to_pem(self) -> bytes:
        """The secret key as unencrypted PKCS#8 PEM, the format OpenSSL reads."""
        return self.private_key().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @classmethod
    def from_pem(
        cls, data: bytes, backend: Optional[ISignatureBackend] = None
    ) -> Identity:
        """Parse PKCS#8 PEM; :class:`KeyFileError` for anything but Ed25519."""
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except TypeError:
            raise KeyFileError("the key is encrypted; store it unencrypted") from None
        except (ValueError, UnsupportedAlgorithm) as error:
            raise KeyFileError(f"not a PEM private key ({error})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError(
                f"holds a {type(key).__name__.lstrip('_')}, not an Ed25519 key"
            )
        seed = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return cls(seed, backend)
