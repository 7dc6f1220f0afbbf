"""TLS between peers, with the node's own Ed25519 key as its certificate.

Layer: adapters (Twisted).

Two ways to use TLS:

* **Peer to peer** (``p2ptls:`` descriptions, this module): each node makes a
  self-signed certificate from its own Ed25519 key at start-up, so the TLS
  certificate and the blueprint handshake name the same identity.  TLS 1.3
  only; both sides present a certificate.  A certificate is trusted by its
  key: the dialer checks it against the peer id it expects, and after the
  handshake each side checks it against the id the peer proved (see
  ``tls_binding``, which also reads the session's channel binding).  Both
  sides require the ALPN protocol id :data:`ALPN` (``blueprint/1``): a peer
  that does not offer or select it fails the TLS handshake.  On such a link
  the blueprint handshake runs its TLS variant, one signed Proof each way
  bound to the session's RFC 9266 exporter (``docs/protocol.md``, "Over
  TLS"), so a relay between two TLS sessions fails.
* **Operator certificates**: Twisted's own ``ssl:`` (server) and ``tls:``
  (client) descriptions, with a CA bundle and hostname verification by
  ``service_identity`` in ``optionsForClientTLS``.  Nothing here is needed.

``p2ptls:`` takes the rest of a ``tcp:`` description:
``p2ptls:7443:interface=127.0.0.1`` to listen, ``p2ptls:127.0.0.1:7443`` (or
``p2ptls:host=...:port=...``) to dial.
"""

from __future__ import annotations

import datetime
from typing import Any, Optional

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet.endpoints import (
    clientFromString,
    serverFromString,
    wrapClientTLS,
)
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from zope.interface import implementer

from blueprint_net._core import framing, untrusted, wire
from blueprint_net._core.errors import ConfigurationError, ErrorCode
from blueprint_net._core.identity import Identity, PeerId, require_peer_id

PREFIX = "p2ptls:"
#: The ALPN protocol id of a ``p2ptls`` link; it names the wire version, and
#: its presence selects the TLS variant of the handshake at both ends.
ALPN = b"blueprint/1"
#: A certificate is made at each start; it outlives any connection.
VALIDITY = datetime.timedelta(days=365)


def certificate(identity: Identity) -> x509.Certificate:
    """A self-signed X.509 certificate of the identity's own Ed25519 key."""
    key = identity.private_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(identity.peer_id))])
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + VALIDITY)
        .sign(key, None)  # Ed25519 signs without a separate digest
    )


def certificate_key(x509_certificate: Any) -> Optional[bytes]:
    """The raw Ed25519 key of a pyOpenSSL certificate; None for other keys."""
    # Through the whole certificate: ~6x faster than get_pubkey()'s round
    # trip through DER (it runs four times per connection and side).
    key = x509_certificate.to_cryptography().public_key()
    if not isinstance(key, Ed25519PublicKey):
        return None
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class _Certified:
    """The key of the certificate :class:`PeerTLS` accepted on one
    connection, kept on its ``SSL.Connection`` (which this module made)."""

    __slots__ = ("key",)

    def __init__(self, key: bytes) -> None:
        self.key = key


def peer_certificate_key(handle: Any) -> Optional[bytes]:
    """The raw Ed25519 key of the peer's certificate on ``handle`` (an
    ``SSL.Connection`` whose TLS handshake completed); None for another key.

    On a :class:`PeerTLS` connection, the key its verify callback took from
    this very certificate in this handshake: parsing a certificate is ~23 us,
    and that callback has parsed it already.  Nothing is kept across
    connections.  Otherwise (another context) the certificate is read.
    """
    certified = handle.get_app_data()
    if isinstance(certified, _Certified):
        return certified.key
    peer = handle.get_peer_certificate()
    return None if peer is None else certificate_key(peer)


class UnexpectedCertificate(SSL.Error):
    """A dial's peer presented a certificate of another key than the peer id
    dialed for: raised from the verify callback, so the TLS handshake fails
    with this (words, both ids) instead of OpenSSL's ``certificate verify
    failed``.  ``presented`` is only what the peer claims: its key, never
    verified to be its own (nothing is believed of it but the mismatch)."""

    code = ErrorCode.UNEXPECTED_PEER

    def __init__(self, expected: PeerId, presented: PeerId) -> None:
        self.message = (
            f"expected peer id {expected}, but the peer presented {presented}"
        )
        # In OpenSSL's shape (a list of (library, function, reason)), which
        # Twisted's TLS layer reads when the connection is lost.
        super().__init__([("blueprint-net", "", self.message)])
        self.expected, self.presented = expected, presented

    def __str__(self) -> str:
        return f"UNEXPECTED_PEER: {self.message}"


def _dialed_name(mismatch: Any) -> str:
    """The host a ``service_identity`` mismatch is about, as text."""
    wanted = getattr(mismatch, "mismatched_id", None)
    name = getattr(wanted, "hostname", None) or getattr(wanted, "ip", None)
    if isinstance(name, bytes):
        return name.decode("ascii", "replace")
    return str(name if name is not None else mismatch)


class TLSFailure(Exception):
    """A TLS handshake's failure in words (:func:`explain`); ``kind`` is
    one of ``TLS_FAILURE_REASONS``, ``cause`` what OpenSSL or
    ``service_identity`` raised."""

    def __init__(self, kind: str, why: str, cause: BaseException) -> None:
        super().__init__(why)
        self.kind, self.cause = kind, cause


def explain(error: BaseException, own: PeerId) -> BaseException:
    """``error`` in words if it ended a TLS handshake (see
    :func:`handshake_failure`), else ``error``."""
    if isinstance(error, UnexpectedCertificate):
        return error
    failed = handshake_failure(error, own)
    return error if failed is None else TLSFailure(*failed, error)


#: Alerts a TLS peer sends when it will not accept this node's certificate.
_CERTIFICATE_ALERTS = ("unknown ca", "bad certificate", "certificate unknown")


def handshake_failure(error: BaseException, own: PeerId) -> Optional[tuple[str, str]]:
    """What ended a TLS handshake, as (a ``TLS_FAILURE_REASONS`` value, the
    reason in words), or None when ``error`` is not a TLS failure.  ``own``
    is this node's id, named when the peer refused its certificate.  Only
    OpenSSL's own text and the presented key are quoted, never a peer's
    free text."""
    if isinstance(error, UnexpectedCertificate):
        return "unexpected_peer", str(error)
    if type(error).__name__ == "VerificationError":  # service_identity's, CA mode
        names = [_dialed_name(m) for m in getattr(error, "errors", ())]
        return "untrusted", (
            "the peer's certificate is not valid for "
            + (" or ".join(names) or "the host dialed")
            + ", the host dialed (it is not among the names it certifies)"
        )
    if not isinstance(error, SSL.Error):
        return None
    queue = error.args[0] if error.args else None
    last = queue[-1] if isinstance(queue, list) and queue else None
    why = str(last[-1]) if isinstance(last, tuple) and last else str(error)
    alert = why.partition(" alert ")[2]
    if alert in _CERTIFICATE_ALERTS:
        return "refused_by_peer", (
            f"the peer refused this node's certificate (TLS alert '{alert}'):"
            f" it expected another peer id than this node's ({own}), or a"
            " certificate from a CA it trusts"
        )
    if why == "certificate verify failed":
        return "untrusted", (
            "the peer's certificate is not trusted (with p2ptls:, not a"
            " self-signed Ed25519 certificate offering blueprint/1; with tls:,"
            " expired or not signed by a CA of the trust bundle)"
        )
    if alert:
        return "other", f"the peer ended the TLS handshake (TLS alert '{alert}')"
    return "other", f"TLS: {why}"


@implementer(IOpenSSLServerConnectionCreator, IOpenSSLClientConnectionCreator)
class PeerTLS:
    """TLS 1.3 with the node's key as its certificate, both directions.

    ``expected`` (dialing) refuses any certificate but that peer id's key
    during the TLS handshake, before a byte of the protocol moves.  Both
    sides offer only :data:`ALPN` and refuse a handshake without it.
    """

    def __init__(self, identity: Identity, expected: Optional[PeerId] = None) -> None:
        # Checked here, not in the verify callback (where it would fail the
        # handshake with an AttributeError as "connection lost").
        self.expected = None if expected is None else require_peer_id(expected)
        context = SSL.Context(SSL.TLS_METHOD)
        context.set_min_proto_version(SSL.TLS1_3_VERSION)
        # pyOpenSSL takes cryptography's objects (its own are deprecated);
        # the types-pyOpenSSL stubs have not caught up.
        context.use_privatekey(identity.private_key())  # type: ignore[arg-type]
        context.use_certificate(certificate(identity))  # type: ignore[arg-type]
        context.set_verify(
            SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, self._verify
        )
        context.set_alpn_protos([ALPN])
        context.set_alpn_select_callback(_select_alpn)
        self._context = context

    def _verify(
        self, connection: Any, cert: Any, errno: int, depth: int, ok: int
    ) -> bool:
        # Self-signed by design: the key is the identity, and OpenSSL's own
        # verdict (no trusted issuer) does not apply.  One certificate only.
        key = certificate_key(cert)
        if depth != 0 or key is None:
            return False
        # The peer's certificate arrives after ALPN is settled (the server's
        # choice in EncryptedExtensions, the client's offer in ClientHello):
        # a client whose server ignored ALPN fails here, in the handshake.
        if connection.get_alpn_proto_negotiated() != ALPN:
            return False
        expected = self.expected
        if expected is not None and key != expected.public_key:
            # pyOpenSSL fails the handshake and re-raises this from it.
            raise UnexpectedCertificate(expected, PeerId.from_public_key(key))
        connection.set_app_data(_Certified(key))  # see peer_certificate_key
        return True

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        return SSL.Connection(self._context, None)

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        connection.set_connect_state()
        return connection


class NoApplicationProtocol(SSL.Error):
    """A client's ALPN offer without :data:`ALPN`: raised from the select
    callback, which makes OpenSSL fail the handshake with the fatal
    ``no_application_protocol`` alert (RFC 7301).  (Returning pyOpenSSL's
    ``NO_OVERLAPPING_PROTOCOLS`` would go on without ALPN, and the client
    would learn only later, from a refused certificate.)"""

    def __init__(self, offered: list[bytes]) -> None:
        names = ", ".join(repr(name) for name in offered[:4])
        super().__init__([("blueprint-net", "", f"ALPN {names} offered, not {ALPN!r}")])


def _select_alpn(connection: Any, offered: list[bytes]) -> bytes:
    """The server's ALPN choice: ours, or a fatal ``no_application_protocol``."""
    if ALPN not in offered:
        raise NoApplicationProtocol(offered)
    return ALPN


#: What a plain blueprint client (its ``Hello``) gets at a ``p2ptls`` port:
#: a plain ``Error`` frame it can decode and show, before the close.
PLAIN_AT_TLS_PORT = framing.frame(
    wire.Error(int(ErrorCode.NOT_ALLOWED), "this port speaks TLS (p2ptls:)")
)
_HTTP_BODY = (
    b"This is a blueprint-net peer port (TLS), not HTTP. A node's status page"
    b" is served on its --status endpoint (default http://127.0.0.1:7080/).\n"
)
#: What an HTTP client at a ``p2ptls`` port gets before the close.
HTTP_AT_TLS_PORT = untrusted.http_400(_HTTP_BODY)


#: The kinds of client that are wrong at a ``p2ptls`` port (see
#: ``untrusted.Sniffer``), and what each is answered with.
TLS_PORT_ANSWERS = {"http": HTTP_AT_TLS_PORT, "plain": PLAIN_AT_TLS_PORT}


class _SniffingTLS(TLSMemoryBIOProtocol):
    """TLS that first looks at the opening bytes (``untrusted.Sniffer``): a
    plain blueprint frame or an HTTP request is an operator's client at the
    wrong port, answered in its own protocol (never as a TLS alert it cannot
    show) and closed.  The wrapped protocol hears of it through
    ``wrong_opening(kind)``; it is counted, never scored.  Anything else
    goes to TLS unchanged."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self._sniffer: Optional[untrusted.Sniffer] = untrusted.Sniffer(TLS_PORT_ANSWERS)

    def dataReceived(self, data: bytes) -> None:
        sniffer = self._sniffer
        if sniffer is None:
            super().dataReceived(data)  # type: ignore[no-untyped-call]
            return
        verdict = sniffer.feed(data)
        if verdict is None:
            return
        self._sniffer = None
        if isinstance(verdict, untrusted.WrongOpening):
            self._refuse(verdict.kind, verdict.answer)
        else:
            super().dataReceived(verdict)  # type: ignore[no-untyped-call]

    def _refuse(self, kind: str, answer: bytes) -> None:
        inner: Any = self.wrappedProtocol
        while inner is not None and not hasattr(inner, "wrong_opening"):
            inner = getattr(inner, "wrappedProtocol", None)
        if inner is not None:
            inner.wrong_opening(kind)
        raw: Any = self.transport
        raw.write(answer)  # below TLS: the client reads it as sent
        raw.loseConnection()


class _SniffingTLSFactory(TLSMemoryBIOFactory):
    protocol = _SniffingTLS


@implementer(IStreamServerEndpoint)
class _TLSServerEndpoint:
    def __init__(self, wrapped: IStreamServerEndpoint, creator: PeerTLS) -> None:
        self.wrapped, self.creator = wrapped, creator

    def listen(self, factory: Any) -> Any:
        listening: Any = self.wrapped.listen(
            _SniffingTLSFactory(self.creator, False, factory)
        )
        return listening


def server_endpoint(
    reactor: Any, description: str, identity: Identity
) -> IStreamServerEndpoint:
    """``p2ptls:...`` with the node's certificate, or any strports description."""
    if description.startswith(PREFIX):
        tcp = serverFromString(reactor, "tcp:" + description[len(PREFIX) :])  # type: ignore[no-untyped-call]
        return _TLSServerEndpoint(tcp, PeerTLS(identity))
    endpoint: IStreamServerEndpoint = serverFromString(reactor, description)  # type: ignore[no-untyped-call]
    return endpoint


def client_endpoint(
    reactor: Any, description: str, identity: Identity, expected: Optional[PeerId]
) -> IStreamClientEndpoint:
    """``p2ptls:...`` checking the expected peer's key, or any description."""
    if description.startswith(PREFIX):
        tcp = clientFromString(reactor, "tcp:" + description[len(PREFIX) :])  # type: ignore[no-untyped-call]
        return wrapClientTLS(PeerTLS(identity, expected), tcp)
    endpoint: IStreamClientEndpoint = clientFromString(reactor, description)  # type: ignore[no-untyped-call]
    return endpoint


#: Descriptions whose transport is TLS: ours, and Twisted's for operator
#: certificates.  Anything else is plaintext (and the transport itself is
#: checked again when it connects; see ``PeerProtocol``).
TLS_KINDS = frozenset({"p2ptls", "ssl", "tls"})


def is_tls(description: str) -> bool:
    """Whether a strports description names a TLS transport."""
    return description.partition(":")[0].strip().lower() in TLS_KINDS


class EndpointError(ConfigurationError):
    """An endpoint description that does not parse: one line, saying why."""


#: Parsing a description builds an endpoint object and stops there: nothing
#: listens or dials, so no reactor is needed (the endpoints only store it).
_PARSE_ONLY: Any = object()


def check_server(description: str) -> None:
    """Raise :class:`EndpointError` unless ``description`` (``p2ptls:`` or
    any strports description) parses as a server endpoint; listens on
    nothing, so options are checked before the service starts."""
    _check(serverFromString, description)


def check_client(description: str) -> None:
    """Raise :class:`EndpointError` unless ``description`` parses as a
    client endpoint (``p2ptls:HOST:PORT``, ``tcp:HOST:PORT``...); dials
    nothing."""
    _check(clientFromString, description)


#: How to write an IPv6 address in a strports description (``:`` separates
#: its parts, so each colon of the address is escaped; no brackets).
IPV6_HINT = (
    r"an IPv6 address is written without brackets and with each colon"
    r" escaped: p2ptls:\:\:1:7443 to dial, p2ptls:7443:interface=\:\:1 to"
    r" listen"
)


def _parts_error(why: str) -> str:
    """A strports parser's ``TypeError`` (its function's signature speaking)
    in an operator's words."""
    if "unexpected keyword argument" in why:
        return f"unknown parameter {why.rpartition(' ')[2]}"
    if "got multiple values for argument" in why:
        name = why.rpartition(" ")[2]
        return f"{name} is given twice, or a ':' in a value split it; {IPV6_HINT}"
    if "positional argument" in why and "but" in why:  # too many parts
        return f"too many ':'-separated parts; {IPV6_HINT}"
    return f"missing {why.rpartition(': ')[2]}"  # the parts' names


def _unescaped_ipv6(text: str) -> bool:
    """``::`` not escaped: an IPv6 address the parser split into parts."""
    return "::" in text.replace("\\:", "")


def _check(parse: Any, description: str) -> None:
    text = description
    if text.startswith(PREFIX):
        text = "tcp:" + text[len(PREFIX) :]
    if "[" in text:  # p2ptls:[::1]:7443, as in a URL
        raise EndpointError(f"{description!r}: {IPV6_HINT}")
    try:
        endpoint = parse(_PARSE_ONLY, text)
    except TypeError as error:  # the endpoint's __init__ says what is wrong
        why = _parts_error(str(error))
        if why.startswith("missing") and _unescaped_ipv6(text):
            why = IPV6_HINT
        raise EndpointError(f"{description!r}: {why}") from None
    except OSError as error:  # ssl: a certificate or key file
        raise EndpointError(
            f"{description!r}: {error.filename}: {error.strerror}"
        ) from None
    except Exception as error:  # every parser's own complaint, in its words
        why = str(error)
        if why.startswith("invalid literal for int()"):  # a port, a backlog...
            # int()'s words end at the first ": "; the value (repr'd) may
            # hold another, behind an escaped colon.
            why = "wants a number, not " + why.partition(": ")[2]
        raise EndpointError(f"{description!r}: {why}") from None
    port = getattr(endpoint, "_port", None)
    if isinstance(port, int) and not 0 <= port <= 65535:
        raise EndpointError(f"{description!r}: port {port} is not in 0-65535")
