"""Signing and verifying the global configuration.

The registry signs the exact configuration bytes it ships: a JWS (RFC 7515) with a
detached payload (Appendix F), so any JOSE library can check it given the bytes. The
envelope (``SignedGlobalConfiguration``) carries the bytes, the compact JWS with an
empty middle part, and the SHA-256 of the signing certificate.

Guarantees of :func:`verify_signed_configuration` (it returns the configuration bytes
only if all hold):

1. The envelope parses, and its signing-certificate hash names one of the trust
   anchor's certificates; otherwise ``globalconf_unknown_signer``.
2. The JWS header's ``alg`` is the one that certificate's key makes (ES256 for P-256,
   ES384 for P-384, EdDSA for Ed25519, RS256 for RSA); ``none``, HMAC and any other
   value are refused, as is a header whose ``x5t#S256`` differs from the envelope's hash.
3. The signature verifies with that certificate's public key over exactly the shipped
   configuration bytes (the JWS payload part must be empty: detached); otherwise
   ``globalconf_signature_invalid``.

It does not parse the configuration: that, and instance, serial and expiry, are the
caller's next steps (:mod:`registry.client`). Verification does not check the signing
certificate's validity period: the anchor, distributed out of band, is what is trusted,
and rotating its certificates is how a key is replaced.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from google.protobuf.message import DecodeError

from certs.keys import PrivateKey, PublicKey, parse_der_certificate
from registry.errors import ConfigurationError
from serai.errors import ErrorCode
from serai_proto.globalconf.v1 import globalconf_pb2 as pb

__all__ = ["jws_algorithm_for", "sign_configuration", "verify_signed_configuration"]

_JWS = jwt.PyJWS()


def jws_algorithm_for(key: PrivateKey | PublicKey) -> str:
    """The JWS ``alg`` a key signs with."""
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        curves = {"secp256r1": "ES256", "secp384r1": "ES384"}
        if key.curve.name not in curves:
            raise ConfigurationError(f"EC curve {key.curve.name} is not supported for JWS")
        return curves[key.curve.name]
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "EdDSA"
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return "RS256"
    raise ConfigurationError(f"key type {type(key).__name__} is not supported for JWS")


def sign_configuration(
    configuration: bytes, *, key: PrivateKey, certificate: x509.Certificate
) -> bytes:
    """The serialized ``SignedGlobalConfiguration`` of ``configuration``."""
    cert_der = certificate.public_bytes(serialization.Encoding.DER)
    cert_sha256 = hashlib.sha256(cert_der).digest()
    signature = _JWS.encode(
        configuration,
        key,
        algorithm=jws_algorithm_for(key),
        headers={
            "x5c": [base64.b64encode(cert_der).decode("ascii")],
            "x5t#S256": _b64url(cert_sha256),
            "typ": "serai-globalconf+jws",
        },
        is_payload_detached=True,
    )
    return pb.SignedGlobalConfiguration(
        configuration=configuration,
        signature=signature,
        signing_certificate_sha256=cert_sha256,
    ).SerializeToString(deterministic=True)


def verify_signed_configuration(envelope: bytes, *, signing_certificates: Sequence[bytes]) -> bytes:
    """The configuration bytes of ``envelope`` if signed by one of the anchor's
    certificates (DER); raises :class:`ConfigurationError` (see module docstring)."""
    message = pb.SignedGlobalConfiguration()
    try:
        message.ParseFromString(envelope)
    except DecodeError as exc:
        raise ConfigurationError(f"not a SignedGlobalConfiguration: {exc}") from exc
    by_hash = {hashlib.sha256(der).digest(): der for der in signing_certificates}
    cert_der = by_hash.get(message.signing_certificate_sha256)
    if cert_der is None:
        raise ConfigurationError(
            "configuration is signed by a certificate the trust anchor does not hold "
            f"(SHA-256 {message.signing_certificate_sha256.hex()[:16]}...)",
            code=ErrorCode.GLOBALCONF_UNKNOWN_SIGNER,
        )
    try:
        public_key = parse_der_certificate(cert_der).public_key()
    except ValueError as exc:
        raise ConfigurationError(f"trust anchor certificate cannot be read: {exc}") from exc
    if not isinstance(
        public_key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey
    ):
        raise ConfigurationError("trust anchor certificate has an unsupported key type")
    algorithm = jws_algorithm_for(public_key)
    header = _header(message.signature)
    if header.get("alg") != algorithm:
        raise ConfigurationError(
            f"signature algorithm {str(header.get('alg'))[:20]!r} is not {algorithm}, "
            "the signing certificate's",
            code=ErrorCode.GLOBALCONF_SIGNATURE_INVALID,
        )
    if header.get("x5t#S256") not in (None, _b64url(message.signing_certificate_sha256)):
        raise ConfigurationError(
            "JWS x5t#S256 differs from the envelope's signing certificate",
            code=ErrorCode.GLOBALCONF_SIGNATURE_INVALID,
        )
    parts = message.signature.split(".")
    if len(parts) != 3 or parts[1] != "":
        raise ConfigurationError(
            "signature is not a compact JWS with a detached payload",
            code=ErrorCode.GLOBALCONF_SIGNATURE_INVALID,
        )
    try:
        _JWS.decode_complete(
            message.signature,
            key=public_key,
            algorithms=[algorithm],
            detached_payload=message.configuration,
        )
    except jwt.PyJWTError as exc:
        raise ConfigurationError(
            f"configuration signature does not verify: {exc}",
            code=ErrorCode.GLOBALCONF_SIGNATURE_INVALID,
        ) from exc
    return message.configuration


def _header(token: str) -> dict[str, Any]:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise ConfigurationError(
            f"signature is not a JWS: {exc}", code=ErrorCode.GLOBALCONF_SIGNATURE_INVALID
        ) from exc
    if not isinstance(header, dict):
        raise ConfigurationError(
            "JWS header is not an object", code=ErrorCode.GLOBALCONF_SIGNATURE_INVALID
        )
    return dict(header)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
