"""What a completed TLS session says about a connection: its RFC 9266
channel binding, whether that binding is unique, the handshake's start
bound to it, and the check of the peer's certificate against the id it
proved.

Layer: adapters (Twisted: reads a TLS transport).

In: a transport (TLS or plain) and, for the handshake, the connection's
core ``Connection``: once the TLS handshake completed
(:func:`start_handshake`); later, the id the peer proved
(:func:`check_certificate`).  Out: the exporter value
(:func:`channel_binding`, empty on a plain transport), whether a proof
over the link covers every later byte (:func:`channel_bound`: TLS 1.3
only), the blueprint handshake started (with ALPN ``blueprint/1``, the TLS
variant bound to the exporter and the certificate's key; otherwise the
nonce variant with the exporter as its channel binding) and the failures
that start found, or a ``HandshakeFailed`` (``WRONG_KEY``) for a peer
whose certificate is not Ed25519 on ``p2ptls`` or is not the proven key
(:func:`certificate_contradicts`).

No states of its own: ``PeerProtocol`` waits for TLS and calls
:func:`start_handshake` once; the core ``Handshake`` holds the rest.  The
certificates themselves (making, reading, the TLS context) are ``tls``'s.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import ISSLTransport

from blueprint_net._adapters.tls import ALPN, certificate_key, peer_certificate_key
from blueprint_net._core.connection import Connection
from blueprint_net._core.connection_events import ConnectionEvent
from blueprint_net._core.errors import ErrorCode, HandshakeFailed
from blueprint_net._core.identity import PeerId

#: RFC 9266: the label of the TLS 1.3 exporter used for channel binding.
TLS_EXPORTER_LABEL = b"EXPORTER-Channel-Binding"


def channel_binding(transport: Any) -> bytes:
    """RFC 9266 ``tls-exporter`` when ``transport`` is TLS, else empty."""
    if transport is None or not ISSLTransport.providedBy(transport):
        return b""
    # RFC 9266: an empty context, passed as such (TLS 1.3 treats "no
    # context" the same, RFC 8446 section 7.5; TLS 1.2 would not).
    handle: Any = transport.getHandle()  # type: ignore[attr-defined]
    exported: bytes = handle.export_keying_material(TLS_EXPORTER_LABEL, 32, b"")
    return exported


def channel_bound(transport: Any) -> bool:
    """Whether a proof made over ``transport`` covers every later byte: TLS
    1.3, whose exporter is a unique channel binding (RFC 9266); TLS 1.2's
    is not without the extended master secret, so a TLS 1.2 link counts as
    a plain one."""
    if transport is None or not ISSLTransport.providedBy(transport):
        return False
    handle: Any = transport.getHandle()  # type: ignore[attr-defined]
    return bool(handle.get_protocol_version_name() == "TLSv1.3")


def certificate_contradicts(transport: Any, peer_id: PeerId) -> bool:
    """Whether ``transport`` is TLS with an Ed25519 certificate that is not
    ``peer_id``'s key (nothing on a plain transport, or another kind of
    certificate, contradicts a proven id)."""
    if transport is None or not ISSLTransport.providedBy(transport):
        return False
    handle: Any = transport.getHandle()  # type: ignore[attr-defined]
    certificate = handle.get_peer_certificate()
    key = None if certificate is None else certificate_key(certificate)
    return key is not None and key != peer_id.public_key


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
