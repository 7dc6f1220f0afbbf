"""Key files: created private, refused when unsafe or not an Ed25519 key."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from blueprint_net._core.errors import KeyFileError
from blueprint_net._core.identity import Identity
from blueprint_net._ops.keyfiles import load_identity, load_or_create_identity


def test_key_file_is_created_private_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    created = load_or_create_identity(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert load_or_create_identity(path).peer_id == created.peer_id
    assert load_identity(path).peer_id == created.peer_id


def _write(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="no such key file"):
        load_identity(tmp_path / "absent.key")


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        load_or_create_identity(tmp_path / "nowhere" / "node.key")


def test_directory_instead_of_key(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="is a directory"):
        load_identity(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_key_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "node.key", Identity.generate().to_pem(), 0o000)
    with pytest.raises(KeyFileError, match="cannot read"):
        load_identity(path)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_group_or_world_readable_key_is_refused(tmp_path: Path, mode: int) -> None:
    path = _write(tmp_path / "node.key", Identity.generate().to_pem(), mode)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_identity(path)


@pytest.mark.parametrize(
    "data", [b"", b"garbage", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END"]
)
def test_corrupt_key_file(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(KeyFileError, match="not a PEM private key"):
        load_identity(_write(tmp_path / "node.key", data))


def test_wrong_key_type(tmp_path: Path) -> None:
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(KeyFileError, match="not an Ed25519 key"):
        load_identity(_write(tmp_path / "node.key", pem))


def test_encrypted_key_file(tmp_path: Path) -> None:
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    with pytest.raises(KeyFileError, match="encrypted"):
        load_identity(_write(tmp_path / "node.key", pem))
