"""Peer ids and keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given
from hypothesis import strategies as st

from blueprint_net._core.identity import Identity, PeerId, b58decode, b58encode

# Cross-implementation vector (rust-libp2p keypair_protobuf_roundtrip_ed25519).
LIBP2P_SEED = bytes.fromhex(
    "7e0830617c4a7de83925dfb2694556b12936c477a0e1feb2e148ec9da60fee7d"
)
LIBP2P_PUBLIC = bytes.fromhex(
    "1ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e"
)
LIBP2P_PEER_ID = "12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3pq"


def test_peer_id_matches_libp2p() -> None:
    identity = Identity(LIBP2P_SEED)
    assert identity.public_key == LIBP2P_PUBLIC
    assert str(identity.peer_id) == LIBP2P_PEER_ID
    assert identity.peer_id.binary.hex() == "002408011220" + LIBP2P_PUBLIC.hex()
    assert PeerId.from_string(LIBP2P_PEER_ID) == identity.peer_id
    assert PeerId.from_string(LIBP2P_PEER_ID).public_key == LIBP2P_PUBLIC


@given(st.binary(max_size=64))
def test_base58_round_trip(data: bytes) -> None:
    assert b58decode(b58encode(data)) == data


def test_base58_known_values() -> None:
    assert b58encode(b"") == ""
    assert b58encode(b"\0\0\x01") == "112"
    assert b58encode(b"hello world") == "StV1DL6CwTryKyV"


@pytest.mark.parametrize(
    "text",
    ["", "0OIl", "12D3KooW", "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"],
)
def test_bad_peer_ids_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="invalid peer id"):
        PeerId.from_string(text)


def test_peer_ids_order_by_binary(alice: Identity, bob: Identity) -> None:
    low, high = sorted([alice.peer_id, bob.peer_id])
    assert low.binary < high.binary
    assert len({alice.peer_id, PeerId(alice.peer_id.binary)}) == 1


def test_pem_is_standard_pkcs8(tmp_path: Path) -> None:
    identity = Identity(LIBP2P_SEED)
    key = serialization.load_pem_private_key(identity.to_pem(), password=None)
    raw = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert raw == LIBP2P_PUBLIC


def test_bad_seed_length() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Identity(b"short")
