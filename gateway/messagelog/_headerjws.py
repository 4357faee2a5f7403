"""An auditor's check of a signed header as the message log keeps it, written apart from
:mod:`gateway.signing` (which gateways use on the wire) so that the verifier of the
evidence does not share the signer's code path.

:func:`verify_header_jws` returns the payload and the signing certificate only if: the
JWS is ASCII, compact (three parts), each part canonical unpadded base64url; the
protected header is a JSON object with exactly ``alg``, ``typ`` and ``x5c``; ``typ`` is
the expected one; ``x5c`` is, element by element, the record's certificate chain (leaf
first); ``alg`` is the one the leaf's key makes (``ES256`` for P-256, ``EdDSA`` for
Ed25519, ``RS256`` for RSA of at least 2048 bits); and the signature verifies with that
key over the exact signing input. Certificate validity, revocation and membership are
the caller's checks (:mod:`gateway.messagelog.verify`).

With ``cache`` (a :class:`~gateway.messagelog._verifycache.ProtectedHeaders`), a
protected header accepted before with the same ``typ`` and the same chain, byte for
byte, is not decoded and checked again: every rule up to ``alg`` is a function of those
three alone, so its public key is taken from the cache. The payload, the signature and
its verification over the exact signing input are checked on every call, and the leaf
returned is parsed afresh. Only a header that passed every one of those rules is
remembered; the verdicts are the same with or without the cache.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import Final, NoReturn

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from certs.keys import parse_der_certificate
from gateway.messagelog._verifycache import ProtectedHeaders
from serai import jws as jose

__all__ = ["HeaderJwsError", "verify_header_jws"]

_HEADER_MEMBERS: Final = frozenset({"alg", "typ", "x5c"})
_B64URL_ALPHABET: Final = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
)


class HeaderJwsError(Exception):
    """A logged header JWS breaks a rule of the module docstring."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _refuse(message: str) -> NoReturn:
    raise HeaderJwsError(message)


def verify_header_jws(
    jws: bytes,
    *,
    typ: str,
    chain: Sequence[bytes],
    cache: ProtectedHeaders | None = None,
) -> tuple[bytes, x509.Certificate]:
    """The verified payload and the leaf certificate of a logged header JWS (module
    docstring); raises :class:`HeaderJwsError` saying which rule failed."""
    if not jws.isascii():
        _refuse("the signed header is not ASCII")
    parts = jws.decode("ascii").split(".")
    if len(parts) != 3:
        _refuse(f"the signed header is not a compact JWS ({len(parts)} parts, not 3)")
    protected, payload_part, signature_part = parts
    key = None if cache is None else cache.key_for(protected, typ, chain)
    if key is None:
        leaf, key = _check_protected(protected, typ=typ, chain=chain)
    else:
        leaf = _parse_leaf(chain[0])  # it parsed when the header was remembered
    payload = _b64url_decode(payload_part, "payload")
    signature = _b64url_decode(signature_part, "signature")
    if not jose.signature_verifies(
        key, signature, f"{protected}.{payload_part}".encode("ascii"), allow_rsa=True
    ):
        _refuse("the JWS signature does not verify with the signing certificate's key")
    if cache is not None:
        cache.remember(protected, typ, chain, key)
    return payload, leaf


def _check_protected(
    protected: str, *, typ: str, chain: Sequence[bytes]
) -> tuple[x509.Certificate, object]:
    """The rules about the protected header, ``x5c`` and the leaf's key: the leaf and
    its public key."""
    try:
        header = json.loads(_b64url_decode(protected, "protected header"))
    except (ValueError, RecursionError) as exc:
        _refuse(f"the JWS protected header is not JSON: {exc}")
    if not isinstance(header, dict) or header.keys() != _HEADER_MEMBERS:
        _refuse("the JWS protected header does not hold exactly alg, typ and x5c")
    if header["typ"] != typ:
        _refuse(f"JWS typ is {str(header['typ'])[:40]!a}, not {typ!r}")
    x5c = header["x5c"]
    if not isinstance(x5c, list) or len(x5c) != len(chain) or not chain:
        _refuse("JWS x5c is not the record's certificate chain")
    for position, (text, der) in enumerate(zip(x5c, chain, strict=True)):
        if not isinstance(text, str) or jose.b64_decode(text) != der:
            _refuse(f"JWS x5c[{position}] differs from the record's chain[{position}]")
    leaf = _parse_leaf(chain[0])
    try:
        key = leaf.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        _refuse(f"the signing certificate's key is unusable: {exc}")
    expected = jose.algorithm_for(key, allow_rsa=True)
    if header["alg"] != expected:
        _refuse(
            f"JWS alg {str(header['alg'])[:20]!a} is not the one the signing key makes "
            f"({expected or 'none'})",
        )
    return leaf, key


def _parse_leaf(der: bytes) -> x509.Certificate:
    try:
        return parse_der_certificate(der)
    except ValueError as exc:
        _refuse(f"the signing certificate does not parse: {exc}")


def _b64url_decode(part: str, what: str) -> bytes:
    if not _B64URL_ALPHABET.issuperset(part):
        _refuse(f"JWS {what} is not base64url")
    try:
        data = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError) as exc:
        _refuse(f"JWS {what} is not base64url: {exc}")
    if jose.b64url(data) != part:
        _refuse(f"JWS {what} is not canonical base64url")
    return data
