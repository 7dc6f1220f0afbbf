"""TLS on loopback: peer-to-peer certificates from node keys, and operator
certificates with hostname verification."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Optional

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.task import deferLater

from blueprint_net._adapters.node import Node
from blueprint_net._adapters.tls import PeerTLS
from blueprint_net._core.errors import ErrorCode, HandshakeError
from blueprint_net._core.identity import Identity
from blueprint_net._policy.settings import Settings

from .helpers import MakeNode

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
