"""serai.jws: one test per invariant of its docstring."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

import serai.jws
from serai.jws import algorithm_for, b64_decode, b64url, signature_verifies, spki

DATA = b"header.payload"


def _es256(key: ec.EllipticCurvePrivateKey) -> bytes:
    r, s = decode_dss_signature(key.sign(DATA, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def test_b64url_is_unpadded_and_b64_decode_only_canonical() -> None:
    assert b64url(b"\xfb\xff") == "-_8"
    assert b64_decode(base64.b64encode(b"\xfb\xff").decode()) == b"\xfb\xff"
    assert b64_decode("+/8=") == b"\xfb\xff"
    assert b64_decode("+/9=") is None  # non-zero padding bits: not the canonical spelling
    assert b64_decode("+/8") is None  # padding missing
    assert b64_decode("-_8=") is None  # base64url is not standard base64


def test_es256_and_eddsa_verify_and_refuse_without_raising() -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    signature = _es256(ec_key)
    assert signature_verifies(ec_key.public_key(), signature, DATA)
    assert not signature_verifies(ec_key.public_key(), signature, DATA + b"!")
    assert not signature_verifies(ec_key.public_key(), signature[:-1], DATA)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    assert signature_verifies(ed_key.public_key(), ed_key.sign(DATA), DATA)
    assert not signature_verifies(ed_key.public_key(), bytes(64), DATA)
    assert not signature_verifies(object(), signature, DATA)


def test_rsa_only_when_allowed() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signature = key.sign(DATA, padding.PKCS1v15(), hashes.SHA256())
    assert not signature_verifies(key.public_key(), signature, DATA)
    assert signature_verifies(key.public_key(), signature, DATA, allow_rsa=True)
    assert algorithm_for(key.public_key()) is None
    assert algorithm_for(key.public_key(), allow_rsa=True) == "RS256"
    short = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    assert algorithm_for(short.public_key(), allow_rsa=True) is None


@pytest.mark.parametrize(
    ("key", "alg"),
    [
        (ec.generate_private_key(ec.SECP256R1()).public_key(), "ES256"),
        (ec.generate_private_key(ec.SECP384R1()).public_key(), None),
        (ed25519.Ed25519PrivateKey.generate().public_key(), "EdDSA"),
    ],
)
def test_algorithm_for(key: object, alg: str | None) -> None:
    assert algorithm_for(key) == alg


def test_spki() -> None:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    der = spki(key)
    assert der is not None
    assert der.startswith(b"\x30")
    assert spki(object()) is None


def test_public_surface() -> None:
    assert set(serai.jws.__all__) == {
        "MIN_RSA_BITS",
        "RAW_SIGNATURE_BYTES",
        "algorithm_for",
        "b64_decode",
        "b64url",
        "signature_verifies",
        "spki",
    }
