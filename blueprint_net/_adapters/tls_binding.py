"""The handshake's start over TLS, bound to the session, and the check of
the peer's certificate against the id it proved.

Layer: adapters (Twisted: reads a TLS transport).

In: a connection's core ``Connection`` and its transport once the TLS
handshake completed (:func:`start_handshake`); later, the id the peer
proved (:func:`check_certificate`).  Out: the blueprint handshake started
(with ALPN ``blueprint/1``, the TLS variant bound to the exporter and the
certificate's key; otherwise the nonce variant with the exporter as its
channel binding) and the failures that start found, or a
``HandshakeFailed`` (``WRONG_KEY``) for a peer whose certificate is not
Ed25519 on ``p2ptls`` or is not the proven key.

No states of its own: ``PeerProtocol`` waits for TLS and calls
:func:`start_handshake` once; the core ``Handshake`` holds the rest.  The
certificate and exporter helpers are ``tls``'s.
"""

from __future__ import annotations

from typing import Any

from blueprint_net._adapters.tls import (
    ALPN,
    certificate_contradicts,
    channel_binding,
    peer_certificate_key,
)
from blueprint_net._core.connection import Connection
from blueprint_net._core.connection_events import ConnectionEvent
from blueprint_net._core.errors import ErrorCode, HandshakeFailed
from blueprint_net._core.identity import PeerId


def start_handshake(connection: Connection, transport: Any) -> list[ConnectionEvent]:
    """Start ``connection``'s handshake, bound to ``transport``'s completed
    TLS session.  With ALPN ``blueprint/1`` (``p2ptls``), both ends run the
    TLS variant, and the dialer proves itself in the same flight as its TLS
    Finished; otherwise (operator certificates) the nonce variant, with the
    exporter as its channel binding.  Returns what the start failed with;
    raises ``HandshakeFailed`` when a ``p2ptls`` peer has no Ed25519
    certificate."""
    binding = channel_binding(transport)
    if getattr(transport, "negotiatedProtocol", None) != ALPN:
        connection.set_channel_binding(binding)
        connection.initiate()
        return []
    key = peer_certificate_key(transport.getHandle())
    if key is None:  # PeerTLS accepts no other certificate
        raise HandshakeFailed(ErrorCode.WRONG_KEY, "no Ed25519 certificate")
    certified = PeerId.from_public_key(key)
    return connection.start_bound(binding, certified)


def check_certificate(connection: Connection, transport: Any, peer_id: PeerId) -> None:
    """The peer proved ``peer_id``: over TLS with an Ed25519 certificate,
    that certificate must be the same key; raises ``HandshakeFailed``
    (``WRONG_KEY``) if it is not.  (The TLS variant has checked its claim
    against the certificate already.)"""
    if not connection.handshake.bound and certificate_contradicts(transport, peer_id):
        raise HandshakeFailed(
            ErrorCode.WRONG_KEY, "the TLS certificate is not the proven key"
        )
