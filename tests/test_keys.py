"""Private key files: one test per rule of certs.keys."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from certs.ca import self_signed_root
from certs.errors import KeyFileError
from certs.keys import (
    KeyAlgorithm,
    generate_private_key,
    load_certificate_chain,
    load_private_key,
    parse_der_certificate,
    write_private_key,
)
from serai.errors import ErrorCode


@pytest.mark.parametrize(
    ("algorithm", "kind"),
    [
        pytest.param(KeyAlgorithm.EC_P256, ec.EllipticCurvePrivateKey, id="ec-p256"),
        pytest.param(KeyAlgorithm.RSA_3072, rsa.RSAPrivateKey, id="rsa-3072"),
        pytest.param(KeyAlgorithm.ED25519, ed25519.Ed25519PrivateKey, id="ed25519"),
    ],
)
def test_round_trip_plain_and_encrypted(
    tmp_path: Path, algorithm: KeyAlgorithm, kind: type[object]
) -> None:
    key = generate_private_key(algorithm)
    assert isinstance(key, kind)
    for name, passphrase in (("plain", None), ("encrypted", b"correct horse")):
        path = tmp_path / f"{name}.key"
        write_private_key(path, key, passphrase=passphrase)
        loaded = load_private_key(path, passphrase=passphrase)
        assert loaded.public_key() == key.public_key()


def test_written_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    write_private_key(path, generate_private_key())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_encrypted_file_is_pkcs8_and_encrypted(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    write_private_key(path, generate_private_key(), passphrase=b"pin")
    assert path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_group_or_world_readable_key_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "k.key"
    write_private_key(path, generate_private_key())
    os.chmod(path, mode)
    with pytest.raises(KeyFileError) as info:
        load_private_key(path)
    assert info.value.code is ErrorCode.KEY_FILE_INSECURE
    assert f"{mode:04o}" in info.value.message
    assert "chmod 600" in info.value.message


def test_wrong_passphrase_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    write_private_key(path, generate_private_key(), passphrase=b"right")
    with pytest.raises(KeyFileError) as info:
        load_private_key(path, passphrase=b"wrong")
    assert info.value.code is ErrorCode.KEY_PASSPHRASE_INVALID
    assert "wrong passphrase" in info.value.message
    assert "right" not in info.value.message


def test_missing_passphrase_for_encrypted_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    write_private_key(path, generate_private_key(), passphrase=b"right")
    with pytest.raises(KeyFileError) as info:
        load_private_key(path)
    assert info.value.code is ErrorCode.KEY_PASSPHRASE_INVALID
    assert "passphrase is needed" in info.value.message


def test_garbage_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    path.write_bytes(b"not a key at all")
    path.chmod(0o600)
    with pytest.raises(KeyFileError) as info:
        load_private_key(path)
    assert info.value.code is ErrorCode.KEY_UNAVAILABLE


def test_missing_key_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError) as info:
        load_private_key(tmp_path / "absent.key")
    assert "cannot read key file" in info.value.message


def test_certificate_file_without_certificates_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.pem"
    path.write_text("hello")
    with pytest.raises(KeyFileError):
        load_certificate_chain(path)


def test_parse_der_certificate_refuses_every_malformed_certificate_as_value_error() -> None:
    key = generate_private_key()
    der = self_signed_root(key, name="T").public_bytes(serialization.Encoding.DER)
    assert parse_der_certificate(der).public_bytes(serialization.Encoding.DER) == der
    wrong_version = bytearray(der)
    at = wrong_version.index(b"\xa0\x03\x02\x01\x02")  # [0] EXPLICIT INTEGER 2: version v3
    wrong_version[at + 4] = 0x05  # cryptography raises InvalidVersion, not a ValueError
    for bad in (b"", b"\x30\x03\x02\x01\x01", bytes(wrong_version)):
        with pytest.raises(ValueError, match="certificate"):
            parse_der_certificate(bad)
