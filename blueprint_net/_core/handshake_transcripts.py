"""What a handshake signature covers: the transcripts of both variants.

Layer: core (sans-IO; imports nothing from Twisted).

The specification has each peer sign the other's peer id.  Such a signature
is the same on every connection between the same two peers, so whoever sees
it once can replay it forever.  Here each side signs a *transcript*::

    DOMAIN || role || version || signer id || signer nonce
           || verifier id || verifier nonce || channel binding

where both nonces are fresh per connection (exchanged in ``Hello`` as the
connection opens), ``role`` is the type byte of the message carrying the
signature, and the channel binding is the TLS exporter value when the
transport is TLS (empty otherwise).  ``docs/protocol.md`` explains what each
part defends against.  The TLS variant's :class:`~wire.Proof` signs::

    DOMAIN_TLS || role || version || signer id || verifier id || exporter

where the exporter, unique to the TLS session, takes the nonces' place.

In: the signer's role, the protocol version, both peers' ids, their nonces
(the nonce variant) and the channel binding (the TLS exporter, or empty).
Out: the bytes signed, each beginning with its variant's domain, so a
signature of one variant is never valid in the other (``docs/protocol.md``
gives the layouts and golden vectors).  Pure functions: no state.
"""

from __future__ import annotations

import struct

from blueprint_net._core.identity import PeerId

DOMAIN = b"blueprint-net/handshake/v1\x00"
#: The TLS variant's domain: its signatures are never valid in the other's.
DOMAIN_TLS = b"blueprint-net/handshake-tls/v1\x00"
#: The TLS variant's roles: the signer's side of the TLS handshake.
ROLE_TLS_CLIENT = 0x01
ROLE_TLS_SERVER = 0x02


def transcript(
    role: int,
    version: int,
    signer: PeerId,
    signer_nonce: bytes,
    verifier: PeerId,
    verifier_nonce: bytes,
    binding: bytes,
) -> bytes:
    """The bytes a handshake signature covers (see ``docs/protocol.md``)."""
    return b"".join(
        (
            DOMAIN,
            bytes((role,)),
            struct.pack("!H", version),
            bytes((len(signer.binary),)),
            signer.binary,
            signer_nonce,
            bytes((len(verifier.binary),)),
            verifier.binary,
            verifier_nonce,
            bytes((len(binding),)),
            binding,
        )
    )


def bound_transcript(
    role: int, version: int, signer: PeerId, verifier: PeerId, binding: bytes
) -> bytes:
    """The bytes a TLS-variant :class:`~wire.Proof` signs (``docs/protocol.md``,
    "Over TLS"): the exporter takes the nonces' place."""
    return b"".join(
        (
            DOMAIN_TLS,
            bytes((role,)),
            struct.pack("!H", version),
            bytes((len(signer.binary),)),
            signer.binary,
            bytes((len(verifier.binary),)),
            verifier.binary,
            bytes((len(binding),)),
            binding,
        )
    )
