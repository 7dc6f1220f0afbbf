"""Rules docs/protocol.md states that no vector shows: each test pins one
decision the specification makes (the section is named in each test)."""

from __future__ import annotations

import datetime
from typing import Any, Callable, Optional

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from blueprint_net import RemoteError, Settings
from blueprint_net._adapters import tls
from blueprint_net._adapters.tls import PeerTLS
from blueprint_net._core import framing, wire
from blueprint_net._core.errors import ErrorCode, ProtocolError
from blueprint_net._core.identity import Identity
from blueprint_net.testing import MemoryNetwork
from tests.helpers import Idle, MakeNode, until
from tests.tls13 import tls_exporter

pytestmark = pytest.mark.usefixtures("clean_reactor")


# -- section 1: an Error fits the handshake's frame limit ---------------------


@pytest.mark.parametrize("filler", ["x", "é", "€", "😀"])
def test_a_long_error_text_is_cut_at_a_character_to_fit(filler: str) -> None:
    text = filler * 5000
    body = wire.encode(wire.Error(200, text))
    assert len(body) <= wire.HANDSHAKE_MAX_FRAME
    assert len(body) > wire.HANDSHAKE_MAX_FRAME - len(filler.encode())
    decoded = wire.decode(body)
    assert isinstance(decoded, wire.Error)
    assert text.startswith(decoded.message)  # whole characters only
    # A peer still in the handshake accepts it.
    [got] = framing.FrameDecoder(wire.HANDSHAKE_MAX_FRAME).feed(framing.frame(decoded))
    assert got == body


def test_a_short_error_text_is_sent_whole() -> None:
    text = "x" * wire.MAX_ERROR_TEXT
    assert wire.decode(wire.encode(wire.Error(200, text))) == wire.Error(200, text)


# -- section 6: a response too large for a frame ------------------------------


def _returning(data: bytes) -> Callable[[Any], bytes]:
    return lambda request: data


def test_a_response_over_the_frame_limit_is_payload_too_large() -> None:
    net = MemoryNetwork()
    limit = 4096
    answers = {"fits": bytes(limit - 9), "over": bytes(limit - 8)}
    a = net.add_node(settings=Settings(max_frame=limit, allow_plaintext=True))
    b = net.add_node(
        settings=Settings(max_frame=limit, allow_plaintext=True),
        handlers={name: _returning(data) for name, data in answers.items()},
    )
    net.connect(a, b)
    # ProtocolResponse: type, id, length = 9 bytes around the data.
    assert net.result(a.request(b.peer_id, "fits", b"")).data == answers["fits"]
    with pytest.raises(RemoteError) as caught:
        net.result(a.request(b.peer_id, "over", b""))
    assert caught.value.code == ErrorCode.PAYLOAD_TOO_LARGE
    assert [peer.peer_id for peer in a.peers] == [b.peer_id]  # still up


# -- section 8: what an Error's code means to its receiver --------------------


@pytest.mark.parametrize("code", [207, 211, 212, 213, 215])
def test_a_connection_code_is_kept(code: int) -> None:
    error = ProtocolError.from_peer(code, "bye")
    assert error.code == code and error.remote


@pytest.mark.parametrize("code", [0, 99, 216, 300, 304, 999, 1000, 65535])
def test_any_other_code_in_an_error_is_unexpected_message(code: int) -> None:
    error = ProtocolError.from_peer(code, "bye")
    assert error.code is ErrorCode.UNEXPECTED_MESSAGE and error.remote
    assert f"[{code}]" in error.message


# -- section 5, "Over TLS": what the TLS layer accepts ------------------------


class _Client(protocol.Protocol):
    def __init__(self) -> None:
        self.received = b""
        self.reason: Optional[Failure] = None
        self.closed: defer.Deferred[None] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.reason = reason
        self.closed.callback(None)


async def _dial_raw(port: int, creator: Any) -> _Client:
    client = _Client()
    endpoint = wrapClientTLS(creator, TCP4ClientEndpoint(reactor, "127.0.0.1", port))
    await endpoint.connect(protocol.Factory.forProtocol(lambda: client))
    await client.closed
    return client


async def _listening(node: Any) -> int:
    port = await node.listen("p2ptls:0:interface=127.0.0.1")
    number: int = port.getHost().port
    return number


@pytest_twisted.ensureDeferred
async def test_a_tls_1_2_offer_fails_the_tls_handshake(
    alice: Identity, bob: Identity, make_node: MakeNode
) -> None:
    b = make_node(bob, allow_plaintext=False)
    port = await _listening(b)
    creator = PeerTLS(alice, bob.peer_id)
    creator._context.set_min_proto_version(0)  # any
    creator._context.set_max_proto_version(SSL.TLS1_2_VERSION)
    client = await _dial_raw(port, creator)
    assert client.received == b""
    assert client.reason is not None and isinstance(client.reason.value, SSL.Error)
    assert "protocol version" in str(client.reason.value)
    assert b.counters["handshakes.ok"] == 0


@pytest_twisted.ensureDeferred
async def test_a_client_without_a_certificate_fails_the_tls_handshake(
    alice: Identity, bob: Identity, make_node: MakeNode
) -> None:
    b = make_node(bob, allow_plaintext=False)
    port = await _listening(b)
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_min_proto_version(SSL.TLS1_3_VERSION)
    context.set_alpn_protos([tls.ALPN])
    context.set_verify(SSL.VERIFY_NONE)

    class _NoCertificate(PeerTLS):
        def __init__(self) -> None:
            self.expected = None
            self._context = context

    client = await _dial_raw(port, _NoCertificate())
    # TLS 1.3: the client is done first; the server then refuses it.
    assert client.received == b""
    assert client.reason is not None and "certificate required" in str(
        client.reason.value
    )
    assert b.counters["handshakes.ok"] == 0


@pytest_twisted.ensureDeferred
async def test_the_binding_is_the_rfc_9266_exporter_and_no_sni_is_sent(
    alice: Identity, bob: Identity, make_node: MakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    keylog: list[bytes] = []
    server_names: list[Optional[bytes]] = []
    made = PeerTLS.__init__

    def logging_init(self: PeerTLS, *args: Any, **kwargs: Any) -> None:
        made(self, *args, **kwargs)
        self._context.set_keylog_callback(lambda conn, line: keylog.append(line))
        self._context.set_tlsext_servername_callback(
            lambda conn: server_names.append(conn.get_servername())
        )

    monkeypatch.setattr(PeerTLS, "__init__", logging_init)
    a = make_node(alice, allow_plaintext=False)
    b = make_node(bob, allow_plaintext=False)
    port = await _listening(b)
    await a.connect(f"p2ptls:127.0.0.1:{port}", bob.peer_id)
    await until(lambda: alice.peer_id in {p.peer_id for p in b.peers})
    ours = a._peers[bob.peer_id]
    theirs = b._peers[alice.peer_id]
    handle = ours.transport.getHandle()  # type: ignore[union-attr]
    [secret] = {
        bytes.fromhex(line.split()[2].decode())
        for line in keylog
        if line.startswith(b"EXPORTER_SECRET ")
    }
    expected = tls_exporter(
        handle.get_cipher_name(), secret, b"EXPORTER-Channel-Binding", b""
    )
    binding = ours.connection.handshake.channel_binding
    assert binding == expected == theirs.connection.handshake.channel_binding
    # The independent computation tells contexts apart.
    assert expected != tls_exporter(
        handle.get_cipher_name(), secret, b"EXPORTER-Channel-Binding", b"\x00"
    )
    assert server_names and set(server_names) == {None}  # the dialer sent no SNI


def _odd_certificate(identity: Identity) -> x509.Certificate:
    """Expired long ago, and named nothing like a peer id."""
    key = identity.private_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not a peer id")])
    start = datetime.datetime(2001, 1, 1, tzinfo=datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=1))
        .sign(key, None)
    )


@pytest_twisted.ensureDeferred
async def test_certificate_dates_and_names_are_not_checked(
    alice: Identity, bob: Identity, make_node: MakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = make_node(alice, allow_plaintext=False)
    b = make_node(bob, allow_plaintext=False)
    port = await _listening(b)
    monkeypatch.setattr(tls, "certificate", _odd_certificate)  # Alice's only
    peer = await a.connect(f"p2ptls:127.0.0.1:{port}", bob.peer_id)
    assert peer.peer_id == bob.peer_id
    await until(lambda: alice.peer_id in {p.peer_id for p in b.peers})


# -- section 5, "Over TLS": ALPN and the certificate's alerts ---------------


class _RawTLS(PeerTLS):
    """A TLS client of this test's making: ``identity``'s certificate (or
    ``chain``, leaf first; or ``key`` and its certificate), offering
    ``offered`` as ALPN (None: no ALPN extension at all)."""

    def __init__(
        self,
        identity: Identity,
        offered: Optional[list[bytes]] = None,
        chain: Optional[list[x509.Certificate]] = None,
        key: Any = None,
    ) -> None:
        super().__init__(identity)
        context = SSL.Context(SSL.TLS_METHOD)
        context.set_min_proto_version(SSL.TLS1_3_VERSION)
        context.use_privatekey(key or identity.private_key())  # type: ignore[arg-type]
        chain = chain or [tls.certificate(identity)]
        context.use_certificate(chain[0])  # type: ignore[arg-type]
        for extra in chain[1:]:
            context.add_extra_chain_cert(extra)  # type: ignore[arg-type]
        context.set_verify(SSL.VERIFY_NONE)
        if offered is not None:
            context.set_alpn_protos(offered)
        self._context = context


class _Speaking(_Client):
    """Sends a Ping frame as soon as it may (behind its TLS Finished): a
    node that read it would fail the connection with 200."""

    def connectionMade(self) -> None:
        self.transport.write(framing.frame(wire.Ping(1)))  # type: ignore[union-attr]


async def _dial_speaking(port: int, creator: Any) -> _Client:
    client = _Speaking()
    endpoint = wrapClientTLS(creator, TCP4ClientEndpoint(reactor, "127.0.0.1", port))
    await endpoint.connect(protocol.Factory.forProtocol(lambda: client))
    await client.closed
    return client


@pytest.mark.parametrize(
    ("offered", "alert"),
    [
        # RFC 7301: an offer without blueprint/1 is refused at the ClientHello.
        ([b"h2"], "no application protocol"),
        ([b"blueprint/2", b"http/1.1"], "no application protocol"),
        # No ALPN extension: TLS has no alert for it; the server refuses the
        # client's certificate (its check of the negotiated ALPN), after the
        # client, done first in TLS 1.3, may have sent application data.
        (None, "unknown ca"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_a_client_offering_no_blueprint_alpn_fails_the_tls_handshake(
    alice: Identity,
    bob: Identity,
    make_node: MakeNode,
    offered: Optional[list[bytes]],
    alert: str,
) -> None:
    b = make_node(bob, allow_plaintext=False)
    port = await _listening(b)
    client = await _dial_speaking(port, _RawTLS(alice, offered))
    assert client.received == b""
    assert client.reason is not None
    assert f"alert {alert}" in str(client.reason.value)
    # The Ping behind the client's Finished was never read.
    assert b.counters["handshakes.ok"] == 0
    assert b.counters["misbehaviour"] == 0
    assert sum(n for k, n in b.counters.items() if k.startswith("tls.failed.")) == 1


def _ecdsa_certificate() -> tuple[Any, x509.Certificate]:
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ecdsa")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return key, certificate


def _chain(leaf: Identity, issuer: Identity) -> list[x509.Certificate]:
    """``leaf``'s Ed25519 key certified by ``issuer``'s self-signed one."""
    top = tls.certificate(issuer)
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(leaf.peer_id))])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(top.subject)
        .public_key(leaf.private_key().public_key())
        .serial_number(2)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(issuer.private_key(), None)
    )
    return [certificate, top]


@pytest.mark.parametrize("kind", ["ecdsa", "chain"])
@pytest_twisted.ensureDeferred
async def test_a_non_ed25519_or_chained_certificate_gets_unknown_ca(
    alice: Identity, bob: Identity, make_node: MakeNode, kind: str
) -> None:
    b = make_node(bob, allow_plaintext=False)
    port = await _listening(b)
    if kind == "ecdsa":
        key, certificate = _ecdsa_certificate()
        creator = _RawTLS(alice, [tls.ALPN], chain=[certificate], key=key)
    else:
        creator = _RawTLS(alice, [tls.ALPN], chain=_chain(alice, Identity.generate()))
    client = await _dial_speaking(port, creator)
    assert client.received == b""
    assert client.reason is not None
    assert "alert unknown ca" in str(client.reason.value)
    assert b.counters["handshakes.ok"] == 0
    assert b.counters["misbehaviour"] == 0


# -- section 1 and 5: the frame limit of what follows a proof -----------------


@pytest.mark.parametrize("transport", ["p2ptls", "tcp"])
@pytest_twisted.ensureDeferred
async def test_a_large_request_right_behind_the_listeners_proof_is_read(
    alice: Identity, bob: Identity, make_node: MakeNode, transport: str
) -> None:
    """The listener's Proof (or HandshakeResponse) and a request of more
    than 4,096 bytes go out in one write, so the dialer reads them in one
    read: the request is read under the Verified limit, not the
    handshake's (it used to fail the connection with 105)."""
    payload = b"x" * 10_000
    a = make_node(alice, allow_plaintext=transport == "tcp")
    b = make_node(bob, allow_plaintext=transport == "tcp")
    a.register("echo", lambda request: request.payload)
    answers: list[Any] = []
    b.on_peer_verified(
        lambda peer: b.request(peer.peer_id, "echo", payload).addBoth(answers.append)
    )
    port: Any = await b.listen(f"{transport}:0:interface=127.0.0.1")
    peer = await a.connect(f"{transport}:127.0.0.1:{port.getHost().port}", bob.peer_id)
    assert peer.peer_id == bob.peer_id
    await until(lambda: answers)
    [answer] = answers
    assert not isinstance(answer, Failure), answer
    assert answer.data == payload
    assert a.counters["misbehaviour"] == b.counters["misbehaviour"] == 0


# -- section 5: the timeouts over TLS, and a plain client at a TLS port -------


async def _dial_tcp(port: int, client: protocol.Protocol) -> None:
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    await endpoint.connect(protocol.Factory.forProtocol(lambda: client))


@pytest_twisted.ensureDeferred
async def test_a_client_silent_in_tls_is_closed_at_the_first_frame_deadline_unanswered(
    bob: Identity, make_node: MakeNode
) -> None:
    """No TLS session, so no Error can be read: the node closes the TCP
    connection at the first-frame deadline, sending nothing, and its
    handshake place is free again.  (It used to queue the Error for a TLS
    session that never came, and Twisted's TLS held the socket, and the
    place, open for it: silent sockets could fill the places for good.)"""
    settings = Settings(first_frame_timeout=0.2, handshake_timeout=60.0)
    b = make_node(bob, allow_plaintext=False, settings=settings)
    port = await _listening(b)
    client = Idle()
    await _dial_tcp(port, client)
    await client.closed
    assert client.received == b""
    await until(lambda: b.limiter.open == 0)
    assert b.limiter.handshaking == 0
    assert b.counters["misbehaviour"] == 0


@pytest_twisted.ensureDeferred
async def test_a_client_silent_after_tls_gets_handshake_timeout_over_tls(
    alice: Identity, bob: Identity, make_node: MakeNode
) -> None:
    settings = Settings(first_frame_timeout=0.1, handshake_timeout=0.3)
    b = make_node(bob, allow_plaintext=False, settings=settings)
    port = await _listening(b)
    client = await _dial_raw(port, _RawTLS(alice, [tls.ALPN]))
    [error] = [
        wire.decode(body) for body in framing.FrameDecoder().feed(client.received)
    ]
    assert error == wire.Error(int(ErrorCode.HANDSHAKE_TIMEOUT), "handshake timed out")
    assert b.counters["misbehaviour"] == 0


@pytest_twisted.ensureDeferred
async def test_a_plain_hello_at_a_tls_port_gets_a_plain_error_209(
    alice: Identity, bob: Identity, make_node: MakeNode
) -> None:
    """Transports: a plain client's Hello at a p2ptls port is answered with
    the plain frame of vector ``error-not-tls`` (not a TLS alert it cannot
    read), then the close; not misbehaviour."""
    b = make_node(bob, allow_plaintext=False)
    port = await _listening(b)
    hello = framing.frame(wire.Hello(1, b"\xaa" * 32, alice.peer_id))
    client = Idle(hello)
    await _dial_tcp(port, client)
    await client.closed
    assert client.received == tls.PLAIN_AT_TLS_PORT
    [error] = [
        wire.decode(body) for body in framing.FrameDecoder().feed(client.received)
    ]
    assert isinstance(error, wire.Error) and error.code == ErrorCode.NOT_ALLOWED
    assert b.counters["wrong_protocol.plain"] == 1
    assert b.counters["misbehaviour"] == 0
