"""The small pieces of JWS (RFC 7515) that Serai's signers and verifiers share.

Serai signs compact JWS with ES256 (P-256), EdDSA (Ed25519) and, for request and
response headers only, RS256 (RSA of at least 2048 bits). These helpers encode and
check the raw pieces; the callers own the protected header's rules.

Invariants:

1. :func:`b64url` writes unpadded base64url; :func:`b64_decode` accepts only the one
   canonical standard-base64 spelling of the bytes (as ``x5c`` requires), so a value
   decodes to bytes that encode back to exactly it.
2. :func:`signature_verifies` checks a raw JWS signature (``r || s`` of 32 bytes each for
   ES256, 64 bytes for EdDSA, the modulus size for RS256) and returns ``False``, never
   raises, for a wrong length, a bad signature or a key type not allowed.
3. :func:`algorithm_for` names the ``alg`` of a key, or ``None`` for a key that may not
   sign (other curves, short RSA keys, RSA unless ``allow_rsa``).
"""

from __future__ import annotations

import base64
import binascii
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

__all__ = [
    "MIN_RSA_BITS",
    "RAW_SIGNATURE_BYTES",
    "algorithm_for",
    "b64_decode",
    "b64url",
    "signature_verifies",
    "spki",
]

#: Length of an ES256 (``r || s``) or EdDSA signature.
RAW_SIGNATURE_BYTES: Final = 64
#: Smallest RSA key that may sign (RS256).
MIN_RSA_BITS: Final = 2048
_P256_COORDINATE_BYTES: Final = 32


def b64url(data: bytes) -> str:
    """Unpadded base64url (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64_decode(text: str) -> bytes | None:
    """Strict, canonical standard base64 (RFC 7515 §4.1.6 ``x5c``), or ``None``."""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return data if base64.b64encode(data).decode("ascii") == text else None


def algorithm_for(key: object, *, allow_rsa: bool = False) -> str | None:
    """The JWS ``alg`` ``key`` signs with, or ``None`` if it may not sign."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "ES256" if isinstance(key.curve, ec.SECP256R1) else None
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "EdDSA"
    if allow_rsa and isinstance(key, rsa.RSAPublicKey):
        return "RS256" if key.key_size >= MIN_RSA_BITS else None
    return None


def signature_verifies(
    key: object, signature: bytes, data: bytes, *, allow_rsa: bool = False
) -> bool:
    """Whether ``signature`` is a valid raw JWS signature of ``data`` by ``key``."""
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            if len(signature) != RAW_SIGNATURE_BYTES:
                return False
            r = int.from_bytes(signature[:_P256_COORDINATE_BYTES], "big")
            s = int.from_bytes(signature[_P256_COORDINATE_BYTES:], "big")
            key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, ed25519.Ed25519PublicKey):
            if len(signature) != RAW_SIGNATURE_BYTES:
                return False
            key.verify(signature, data)
        elif allow_rsa and isinstance(key, rsa.RSAPublicKey):
            if len(signature) != (key.key_size + 7) // 8:
                return False
            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        else:
            return False
    except (InvalidSignature, ValueError):
        return False
    return True


def spki(key: object) -> bytes | None:
    """The DER SubjectPublicKeyInfo of an EC, Ed25519 or RSA public key, else ``None``."""
    if not isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey):
        return None
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
