"""TLS on loopback: peer-to-peer certificates from node keys, and operator
certificates with hostname verification."""

from __future__ import annotations

import contextlib
import datetime
from pathlib import Path
from typing import Any, Optional

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import (
    IHandshakeListener,
    ISSLTransport,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import connectionDone
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer

from blueprint_net._adapters.node import Node
from blueprint_net._adapters.protocol import PeerFactory
from blueprint_net._adapters.tls import (
    ALPN,
    PeerTLS,
    _Certified,
    certificate_key,
    peer_certificate_key,
)
from blueprint_net._core import wire
from blueprint_net._core.errors import ErrorCode, HandshakeError
from blueprint_net._core.identity import Identity
from blueprint_net._policy.settings import Settings

from .helpers import MakeNode, RecordingHost, decode_frames, until

pytestmark = [
    pytest.mark.usefixtures("clean_reactor"),
    # Twisted's ssl: strports (the operator mode) still hands pyOpenSSL its
    # own key and certificate objects; this code passes cryptography's.
    pytest.mark.filterwarnings("ignore:Passing pyOpenSSL .* objects is deprecated"),
]


async def _tls_port(
    node: Node, description: str = "p2ptls:0:interface=127.0.0.1"
) -> int:
    port = await node.listen(description)
    number: int = port.getHost().port  # type: ignore[attr-defined]
    return number


# -- peer to peer: the node's own key is its certificate -------------------------


@pytest_twisted.ensureDeferred
async def test_peer_to_peer_tls(
    alice: Identity, bob: Identity, make_node: MakeNode
) -> None:
    a, b = (
        make_node(alice, allow_plaintext=False),
        make_node(bob, allow_plaintext=False, handlers={"echo": lambda r: r.payload}),
    )
    port = await _tls_port(b)
    peer = await a.connect(f"p2ptls:127.0.0.1:{port}", peer_id=bob.peer_id)
    assert peer.peer_id == bob.peer_id
    reply = await a.request(bob.peer_id, "echo", b"over TLS")
    assert reply.data == b"over TLS"
    for node, other in ((a, bob), (b, alice)):
        protocol = node._peers[other.peer_id]
        handle = protocol.transport.getHandle()  # type: ignore[union-attr]
        assert handle.get_protocol_version_name() == "TLSv1.3"
        assert len(protocol._channel_binding()) == 32  # the handshake is bound
        binding = protocol.connection.handshake.channel_binding
        assert binding == protocol._channel_binding()  # ... to this session


@pytest_twisted.ensureDeferred
async def test_the_wrong_peer_id_fails_during_tls(
    alice: Identity, bob: Identity, carol: Identity, make_node: MakeNode
) -> None:
    a, b = (
        make_node(alice, allow_plaintext=False),
        make_node(bob, allow_plaintext=False),
    )
    port = await _tls_port(b)
    with pytest.raises(HandshakeError):
        await a.connect(f"p2ptls:127.0.0.1:{port}", peer_id=carol.peer_id)
    assert b.peers == [] and b.counters["handshakes.ok"] == 0


@pytest_twisted.ensureDeferred
async def test_a_certificate_that_is_not_the_proven_key_is_refused(
    alice: Identity, bob: Identity, carol: Identity, make_node: MakeNode
) -> None:
    """Alice proves her id in the handshake, but her TLS certificate is
    Carol's key: the two must name the same identity."""
    a, b = (
        make_node(alice, allow_plaintext=False),
        make_node(bob, allow_plaintext=False),
    )
    port = await _tls_port(b)
    mismatched = wrapClientTLS(
        PeerTLS(carol, expected=bob.peer_id),
        TCP4ClientEndpoint(reactor, "127.0.0.1", port),
    )
    with pytest.raises(HandshakeError) as refused:
        await a.connect(mismatched, peer_id=bob.peer_id)
    assert refused.value.reason.code is ErrorCode.WRONG_KEY  # type: ignore[union-attr]
    assert b.counters["handshakes.failed.WRONG_KEY"] == 1


@pytest_twisted.ensureDeferred
async def test_a_plain_tcp_client_at_a_tls_port(
    alice: Identity, bob: Identity, make_node: MakeNode
) -> None:
    a, b = (
        make_node(alice, settings=Settings(handshake_timeout=5)),
        make_node(bob, allow_plaintext=False),
    )
    port = await _tls_port(b)
    with pytest.raises(HandshakeError):
        await a.connect(f"tcp:127.0.0.1:{port}", peer_id=bob.peer_id)
    assert b.peers == []


# -- operator certificates: a CA, hostname verification --------------------------


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: Optional[tuple[x509.Certificate, ec.EllipticCurvePrivateKey]],
    *,
    expired: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    start = now - datetime.timedelta(days=30 if expired else 1)
    end = (
        now - datetime.timedelta(days=1)
        if expired
        else now + datetime.timedelta(days=30)
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer[0].subject if issuer else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
    )
    if issuer is None:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=None), True
        )
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(subject)]), False
        )
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


class Operator:
    """A CA, the directory a client trusts, and server certificates."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca = _certificate("test CA", self.ca_key, None)
        self.trust = directory / "trust"
        self.trust.mkdir()
        (self.trust / "ca.pem").write_bytes(
            self.ca.public_bytes(serialization.Encoding.PEM)
        )

    def server(
        self, name: str, *, expired: bool = False, untrusted: bool = False
    ) -> str:
        """A strports ``ssl:`` description serving a certificate for ``name``."""
        key = ec.generate_private_key(ec.SECP256R1())
        issuer = (self.ca, self.ca_key)
        if untrusted:
            other = ec.generate_private_key(ec.SECP256R1())
            issuer = (_certificate("another CA", other, None), other)
        certificate = _certificate(name, key, issuer, expired=expired)
        stem = (
            self.directory
            / f"{name}{'-expired' if expired else ''}{'-u' if untrusted else ''}"
        )
        key_path, cert_path = stem.with_suffix(".key"), stem.with_suffix(".pem")
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        return f"ssl:0:interface=127.0.0.1:privateKey={key_path}:certKey={cert_path}"


@pytest_twisted.ensureDeferred
async def test_operator_certificates(
    tmp_path: Path, alice: Identity, bob: Identity, make_node: MakeNode
) -> None:
    operator = Operator(tmp_path)
    a = make_node(alice, allow_plaintext=False)
    b = make_node(bob, allow_plaintext=False)
    port = await _tls_port(b, operator.server("localhost"))
    client = f"tls:localhost:{port}:trustRoots={operator.trust}"
    peer = await a.connect(client, peer_id=bob.peer_id)
    assert peer.peer_id == bob.peer_id
    protocol = a._peers[bob.peer_id]
    assert len(protocol._channel_binding()) == 32
    assert protocol.connection.handshake.channel_binding == protocol._channel_binding()


@pytest.mark.parametrize(
    ("server", "kind"),
    [
        ({"name": "other.test"}, "wrong hostname"),
        ({"name": "localhost", "untrusted": True}, "untrusted CA"),
        ({"name": "localhost", "expired": True}, "expired certificate"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_operator_certificates_that_must_fail(
    tmp_path: Path,
    alice: Identity,
    bob: Identity,
    server: dict[str, object],
    kind: str,
    make_node: MakeNode,
) -> None:
    operator = Operator(tmp_path)
    a, b = (
        make_node(alice, allow_plaintext=False),
        make_node(bob, allow_plaintext=False),
    )
    port = await _tls_port(b, operator.server(**server))  # type: ignore[arg-type]
    with pytest.raises(HandshakeError):
        await a.connect(f"tls:localhost:{port}:trustRoots={operator.trust}")
    assert a.peers == [] and b.peers == [], kind


@pytest_twisted.ensureDeferred
async def test_disconnecting_a_tls_peer_closes_both_ends(
    alice: Identity, bob: Identity, make_node: MakeNode
) -> None:
    """A connection is its transport's producer, and TLS waits for the
    producer to go before it closes: ``disconnect`` unregisters it first."""
    a, b = (
        make_node(alice, allow_plaintext=False),
        make_node(bob, allow_plaintext=False),
    )
    port = await _tls_port(b)
    await a.connect(f"p2ptls:127.0.0.1:{port}", peer_id=bob.peer_id)
    await a.disconnect(bob.peer_id)
    assert a.peers == []
    for _ in range(100):
        if not b._peers.open:
            break
        await deferLater(reactor, 0.01)
    assert not b._peers.open and b.peers == []
    await a.disconnect(bob.peer_id)  # no longer connected: nothing to do


# -- the handshake's TLS variant (docs/protocol.md, "Over TLS") ------------------


class _Relay(protocol.Protocol):
    """Mallory's half of a relay: what one TLS session delivers, she writes
    into the other."""

    def __init__(self, gone: list[_Relay]) -> None:
        self.other: Optional[_Relay] = None
        self.gone = gone

    def dataReceived(self, data: bytes) -> None:
        assert self.other is not None and self.other.transport is not None
        self.other.transport.write(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.gone.append(self)
        if self.other is not None and self.other.transport is not None:
            self.other.transport.loseConnection()


class _Mallory(_Relay):
    """Accepts a TLS session with her own certificate, opens her own to Bob."""

    def __init__(self, gone: list[_Relay], bob: IStreamClientEndpoint) -> None:
        super().__init__(gone)
        self.bob = bob

    def connectionMade(self) -> None:
        transport = self.transport
        assert transport is not None
        transport.pauseProducing()  # type: ignore[attr-defined]
        self.other = outbound = _Relay(self.gone)
        outbound.other = self
        connecting = self.bob.connect(protocol.Factory.forProtocol(lambda: outbound))

        def joined(_: object) -> None:
            transport.resumeProducing()  # type: ignore[attr-defined]

        connecting.addCallback(joined)


@pytest_twisted.ensureDeferred
async def test_the_tls_variant_runs_on_p2ptls(
    alice: Identity, bob: Identity, make_node: MakeNode
) -> None:
    """One Proof each way, bound to the exporter; ALPN ``blueprint/1``."""
    a, b = make_node(alice), make_node(bob)
    port = await _tls_port(b)
    await a.connect(f"p2ptls:127.0.0.1:{port}", peer_id=bob.peer_id)
    await until(lambda: b.peers)
    for node, other in ((a, bob), (b, alice)):
        protocol_ = node._peers[other.peer_id]
        handshake = protocol_.connection.handshake
        assert handshake.bound and handshake.certified_peer == other.peer_id
        assert handshake.peer_hello is None  # no Hello, no nonce
        assert protocol_.session_key == protocol_._channel_binding()
        assert protocol_.transport.negotiatedProtocol == ALPN  # type: ignore[union-attr]


@pytest_twisted.ensureDeferred
async def test_a_relay_between_two_tls_sessions_fails(
    alice: Identity, bob: Identity, carol: Identity, make_node: MakeNode
) -> None:
    """Mallory accepts Alice's TLS with her own certificate and forwards the
    bytes over her own TLS session to Bob: Alice's Proof names Mallory as
    its verifier and is bound to the other session's exporter."""
    mallory = carol
    a, b = make_node(alice), make_node(bob)
    bob_port = await _tls_port(b)
    gone: list[_Relay] = []
    to_bob = wrapClientTLS(
        PeerTLS(mallory, expected=bob.peer_id),
        TCP4ClientEndpoint(reactor, "127.0.0.1", bob_port),
    )
    relaying = TLSMemoryBIOFactory(
        PeerTLS(mallory),
        False,
        protocol.Factory.forProtocol(lambda: _Mallory(gone, to_bob)),
    )
    mallory_port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        relaying
    )
    try:
        with pytest.raises(HandshakeError):
            # No expected id: the TLS certificate alone does not stop Mallory.
            await a.connect(f"p2ptls:127.0.0.1:{mallory_port.getHost().port}")
        await until(lambda: len(gone) == 2)
    finally:
        await mallory_port.stopListening()
    assert a.peers == [] and b.peers == []
    assert b.counters["handshakes.ok"] == 0
    assert b.counters["handshakes.failed.WRONG_KEY"] == 1


@pytest_twisted.ensureDeferred
async def test_an_unexpected_peer_fails_in_the_blueprint_handshake(
    alice: Identity, bob: Identity, carol: Identity, make_node: MakeNode
) -> None:
    """TLS itself expects nobody here; the node expected Carol."""
    a, b = make_node(alice), make_node(bob)
    port = await _tls_port(b)
    anyone = wrapClientTLS(
        PeerTLS(alice), TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    )
    with pytest.raises(HandshakeError) as caught:
        await a.connect(anyone, peer_id=carol.peer_id)
    assert caught.value.reason.code is ErrorCode.UNEXPECTED_PEER  # type: ignore[union-attr]
    assert a.counters["handshakes.failed.UNEXPECTED_PEER"] == 1
    await until(lambda: b.counters["handshakes.failed.UNEXPECTED_PEER"] == 1)
    assert b.peers == []


@pytest_twisted.ensureDeferred
async def test_a_node_dialing_itself_over_tls(
    alice: Identity, make_node: MakeNode
) -> None:
    a = make_node(alice)
    port = await _tls_port(a)
    with pytest.raises(HandshakeError) as caught:
        await a.connect(f"p2ptls:127.0.0.1:{port}")
    assert caught.value.reason.code is ErrorCode.SELF_CONNECTION  # type: ignore[union-attr]
    await until(lambda: a.counters["handshakes.failed.SELF_CONNECTION"] == 2)
    assert a.peers == []


@pytest_twisted.ensureDeferred
async def test_simultaneous_tls_dials_keep_exactly_one_connection(
    alice: Identity, bob: Identity, make_node: MakeNode
) -> None:
    """Each dials the other at once: both ends keep the connection whose TLS
    exporter (its session key) is smaller, and close the other."""
    nodes = make_node(alice), make_node(bob)
    ports = [await _tls_port(node) for node in nodes]
    dials = [
        node.connect(f"p2ptls:127.0.0.1:{port}")
        for node, port in zip(nodes, reversed(ports))
    ]
    for outcome in await defer.DeferredList(dials, consumeErrors=True):
        assert outcome[0], outcome
    a, b = nodes

    def closed_one() -> int:
        return sum(
            node.counters["closed.DUPLICATE_CONNECTION"]
            + node.counters["handshakes.failed.DUPLICATE_CONNECTION"]
            for node in nodes
        )

    await until(lambda: len(a._peers.open) == len(b._peers.open) == 1)
    await until(lambda: closed_one() == 2)  # there were two; each end closed one
    [kept_a], [kept_b] = a._peers.protocols(), b._peers.protocols()
    assert kept_a.session_key == kept_b.session_key == kept_a._channel_binding()
    assert kept_a.connection.handshake.bound


def _select_nothing(connection: Any, offered: list[bytes]) -> Any:
    return SSL.NO_OVERLAPPING_PROTOCOLS


class _NoALPN(PeerTLS):
    """A peer's TLS without the ALPN id (an older or foreign implementation)."""

    def __init__(self, identity: Identity, expected: Optional[Identity] = None) -> None:
        super().__init__(identity, None if expected is None else expected.peer_id)
        self._context.set_alpn_protos([b"something/else"])
        self._context.set_alpn_select_callback(_select_nothing)

    def _verify(self, *args: object) -> bool:
        return True  # whatever the certificate or the ALPN


@pytest_twisted.ensureDeferred
async def test_a_client_without_the_alpn_id_fails_the_tls_handshake(
    alice: Identity, bob: Identity, make_node: MakeNode
) -> None:
    b = make_node(bob)
    port = await _tls_port(b)
    client = _NoALPN(alice, expected=bob)
    endpoint = wrapClientTLS(client, TCP4ClientEndpoint(reactor, "127.0.0.1", port))
    once = _Once()
    await endpoint.connect(protocol.Factory.forProtocol(lambda: once))
    await once.closed
    # (TLS 1.3: the client is done before the server checks its certificate.)
    assert once.received == b""
    # The server finds no blueprint/1 and refuses the client's certificate.
    assert once.reason is not None and isinstance(once.reason.value, SSL.Error)
    assert "alert" in str(once.reason.value)
    assert b.counters["handshakes.ok"] == 0


@pytest_twisted.ensureDeferred
async def test_a_server_without_the_alpn_id_fails_the_tls_handshake(
    alice: Identity, bob: Identity, make_node: MakeNode
) -> None:
    a = make_node(alice)
    accepted: list[_Once] = []

    def once() -> _Once:
        accepted.append(_Once())
        return accepted[-1]

    server = TLSMemoryBIOFactory(
        _NoALPN(bob), False, protocol.Factory.forProtocol(once)
    )
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(server)
    try:
        with pytest.raises(HandshakeError) as caught:
            await a.connect(f"p2ptls:127.0.0.1:{port.getHost().port}", bob.peer_id)
        # The client finds no blueprint/1 chosen and refuses the certificate.
        assert "certificate verify failed" in str(caught.value.reason)
        [refused] = accepted
        await refused.closed
        assert not refused.handshook and refused.received == b""
    finally:
        await port.stopListening()


@implementer(IHandshakeListener)
class _Once(protocol.Protocol):
    """Records whether TLS completed and what arrived, until closed."""

    def __init__(self) -> None:
        self.received = b""
        self.handshook = False
        self.reason: Optional[Failure] = None
        self.closed: defer.Deferred[None] = defer.Deferred()

    def handshakeCompleted(self) -> None:
        self.handshook = True

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.reason = reason
        self.closed.callback(None)


class _TLSStringTransport(StringTransport):
    """A TLS transport whose TLS handshake never completes by itself."""

    def __init__(self) -> None:
        super().__init__()
        directlyProvides(self, ISSLTransport)

    def setTcpNoDelay(self, enabled: bool) -> None:
        pass


def test_a_tls_handshake_that_outlasts_the_timeout() -> None:
    """The blueprint handshake waits for TLS; a TLS handshake still going at
    the deadline times out, and a completion after that changes nothing."""
    clock, host = Clock(), RecordingHost()
    factory = PeerFactory(
        host, Identity.generate(), clock, Settings(handshake_timeout=30), initiator=True
    )
    protocol_ = factory.buildProtocol(None)
    transport = _TLSStringTransport()
    protocol_.makeConnection(transport)
    protocol_.verified.addErrback(lambda failure: None)
    assert transport.value() == b""  # nothing before TLS completes
    clock.advance(30)
    [error] = decode_frames(transport.value())
    assert error == wire.Error(int(ErrorCode.HANDSHAKE_TIMEOUT), "handshake timed out")
    assert transport.disconnecting
    transport.clear()
    protocol_.handshakeCompleted()  # too late: ignored
    assert transport.value() == b""


class _Handle:
    def export_keying_material(self, label: bytes, size: int, context: bytes) -> bytes:
        return bytes(size)


def test_tls_completing_counts_as_the_peer_having_spoken() -> None:
    """After TLS the peer has the handshake timeout, not the first-frame one:
    on the TLS variant a dialer's next frame is the listener's decision."""
    clock, host = Clock(), RecordingHost()
    settings = Settings(handshake_timeout=30, first_frame_timeout=5)
    factory = PeerFactory(host, Identity.generate(), clock, settings, initiator=True)
    protocol_ = factory.buildProtocol(None)
    transport = _TLSStringTransport()
    transport.getHandle = _Handle  # type: ignore[attr-defined]
    protocol_.makeConnection(transport)
    protocol_.verified.addErrback(lambda failure: None)
    clock.advance(4)
    protocol_.handshakeCompleted()
    clock.advance(25.9)  # past the first-frame deadline, within the handshake's
    assert not transport.disconnecting
    clock.advance(0.1)
    assert transport.disconnecting
    assert host.failed[0].error.code is ErrorCode.HANDSHAKE_TIMEOUT


@pytest.mark.parametrize(("maximum", "bound"), [("TLSv1_2", False), ("TLSv1_3", True)])
@pytest_twisted.ensureDeferred
async def test_only_a_tls13_operator_link_charges_the_proven_id(
    tmp_path: Path,
    alice: Identity,
    bob: Identity,
    make_node: MakeNode,
    maximum: str,
    bound: bool,
) -> None:
    """TLS 1.2's exporter is not a unique channel binding without the
    extended master secret (RFC 9266): such a link counts as a plain one."""
    from twisted.internet.endpoints import SSL4ServerEndpoint
    from twisted.internet.ssl import CertificateOptions, PrivateCertificate, TLSVersion

    from blueprint_net._core.pubsub import Fault

    operator = Operator(tmp_path)
    fields = dict(f.split("=", 1) for f in operator.server("localhost").split(":")[2:])
    pem = Path(fields["certKey"]).read_bytes() + Path(fields["privateKey"]).read_bytes()
    own = PrivateCertificate.loadPEM(pem)
    options = CertificateOptions(
        privateKey=own.privateKey.original,
        certificate=own.original,
        lowerMaximumSecurityTo=getattr(TLSVersion, maximum),
    )
    a = make_node(alice, allow_plaintext=False)
    b = make_node(bob, allow_plaintext=False)
    port = await b.listen(
        SSL4ServerEndpoint(reactor, 0, options, interface="127.0.0.1")
    )
    client = f"tls:localhost:{port.getHost().port}:trustRoots={operator.trust}"  # type: ignore[attr-defined]
    await a.connect(client, peer_id=bob.peer_id)
    await until(lambda: alice.peer_id in b._peers)
    assert b._peers[alice.peer_id].channel_bound is bound
    b._charge_gossip(alice.peer_id, Fault.INVALID_SIGNATURE)
    assert (b.policy.score(alice.peer_id) > 0) is bound
    assert b.counters["misbehaviour"] == 1


def _tls_in_memory(client: SSL.Connection, server: SSL.Connection) -> None:
    """Run a TLS handshake between two memory-BIO connections."""
    for _ in range(10):
        for one, other in ((client, server), (server, client)):
            with contextlib.suppress(SSL.WantReadError):
                one.do_handshake()
            with contextlib.suppress(SSL.WantReadError):
                other.bio_write(one.bio_read(65536))


def test_the_peer_key_is_the_one_the_verify_callback_accepted(
    alice: Identity, bob: Identity
) -> None:
    """The TLS variant takes the peer's key from what ``PeerTLS``'s verify
    callback parsed on that connection, not from a second parse: it is the
    peer's certificate's key at each end, and on a connection not made by
    ``PeerTLS`` the certificate itself is read."""
    client = PeerTLS(alice, expected=bob.peer_id).clientConnectionForTLS(None)
    server = PeerTLS(bob).serverConnectionForTLS(None)
    server.set_accept_state()  # as Twisted's TLS layer does
    _tls_in_memory(client, server)
    for handle, peer in ((client, bob), (server, alice)):
        assert isinstance(handle.get_app_data(), _Certified)  # one parse
        assert peer_certificate_key(handle) == peer.public_key
        assert certificate_key(handle.get_peer_certificate()) == peer.public_key
        handle.set_app_data(None)  # as if another context had made it
        assert peer_certificate_key(handle) == peer.public_key
