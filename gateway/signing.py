"""Signing request and response headers, and verifying a peer's (DESIGN §4, hops 2 and 5).

A header is signed as bytes: the canonical encoding of a :class:`~gateway.headers.RequestHeader`
or :class:`~gateway.headers.ResponseHeader` is the payload of a compact JWS (RFC 7515
§7.1, payload attached) whose protected header is exactly
``{"alg": ALG, "typ": TYP, "x5c": [leaf, intermediates...]}``: ``alg`` is ``ES256``
(EC P-256 keys, the default), ``EdDSA`` (Ed25519) or ``RS256`` (RSA of at least 2048
bits); ``typ`` is ``serai-request+jws`` or ``serai-response+jws``; ``x5c`` the signing
certificate chain, standard base64 DER, leaf first, root excluded. Any JOSE library
checks it without Serai.

:class:`HeaderSigner` signs with a member's key; it does no I/O (the OCSP response comes
from a supplier that returns one already fetched). :func:`verify_request` and
:func:`verify_response` return a verified value only if every rule below holds, and
raise a :class:`~gateway.errors.GatewayError` otherwise, whose code is given with each
rule. Failures of a request have origin ``client`` (the provider gateway blames the
consumer side), failures of a response origin ``provider``. In order:

1. **JWS form** (``signature_invalid``). ``signed_header`` is an ASCII string of at most
   :data:`MAX_JWS_CHARS`, three parts, each canonical unpadded base64url (a flipped
   bit never decodes to the same bytes); the protected header is a JSON object without
   duplicate names and with exactly the members ``alg``, ``typ`` and ``x5c`` (so no
   ``crit``, ``b64``, ``jku``, ``jwk``...).
2. **Algorithm** (``signature_invalid``). ``alg`` is ``ES256``, ``EdDSA`` or ``RS256``
   (``none``, HMAC and everything else refused) and is the one the leaf certificate's
   key makes; ``typ`` is that of the expected kind, so a response header cannot be
   passed off as a request.
3. **Chain field** (``signature_invalid``). ``x5c`` is a non-empty list of at most
   :data:`MAX_CHAIN_CERTIFICATES` canonical base64 strings whose DER values equal the
   transport's ``certificate_chain`` field, element by element. The leaf and every
   intermediate parse as X.509 (``certificate_invalid`` otherwise).
4. **Signature** (``signature_invalid``). The signature verifies with the leaf's public
   key over the exact signing input (protected header and payload as sent); ES256 and
   EdDSA signatures are exactly 64 bytes, RS256 the key's size.
5. **Certificate** (codes of :func:`certs.validation.validate_path`:
   ``certificate_untrusted``, ``certificate_expired``, ``certificate_invalid``). The leaf
   chains through the sent intermediates to an approved root of ``trust``, every
   certificate valid at ``now``, the leaf fit for signing (profile ``sign``).
6. **Revocation** (``certificate_revoked``, ``ocsp_invalid``, ``ocsp_stale``,
   ``ocsp_unavailable`` from :class:`certs.revocation.OCSPResponsesChecker`). The attached
   OCSP response is about the leaf, signed by its issuer or the issuer's delegated
   responder, at most ``max_ocsp_age_s`` old at ``now``, and says good. An empty
   response field is ``ocsp_unavailable``. Intermediates are not checked for
   revocation (the federation's policy: an approved CA is withdrawn by the registry).
7. **Payload** (``invalid_request``, ``invalid_identifier``). The verified payload
   decodes as a header of the expected kind under :mod:`gateway.headers`' strict rules
   (canonical encoding, protocol version 1). It is decoded from the verified bytes only.
8. **Member** (``certificate_invalid``). The leaf's member (``member_of``, its subject
   serialNumber) is the member of the request's client subsystem, or for a response
   the member of the provider subsystem the consumer called. A certificate that
   verifies but speaks for another member is a certificate used where it does not
   belong, as X-Road reports it, not a broken signature.
9. **Body** (``signature_invalid``, "body does not match the signed digest"). The
   SHA-256 and the length of the received body equal the header's.
10. **Time** (``clock_skew``). ``created_at`` is within ``max_skew_s`` of ``now``, either
    way.
11. **Binding, responses only** (``signature_invalid``). ``request_header_sha256`` is the
    SHA-256 of the request header bytes this gateway sent, and ``message_id`` is that
    request's.

Assumptions. ``trust`` is the approved roots of the global configuration in force, and
``now`` the receiving gateway's clock (timezone-aware; anything else is a
``ValueError``, a programming error). Replay (repeated message ids) and access rights
are the caller's next checks. The binding value is the SHA-256 of the header *bytes*,
not of the JWS text, so the malleability of an ECDSA signature (``s`` or ``n - s``)
changes nothing that is bound or logged as evidence of content. Nothing is cached
between calls unless the caller passes a :class:`~gateway._verifycache.VerificationCache`
as ``cache=``: then accepted certificate paths and validated OCSP answers (rules 5 and 6)
are remembered by the exact bytes they were accepted for and re-checked for time at
``now`` (see that module for its rules), with the same outcome as without it; rules 1 to
4 and 7 to 11 are checked on every call either way.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, NoReturn, TypeAlias

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
)

from certs.errors import PKIError
from certs.keys import PrivateKey, parse_der_certificate
from certs.profiles import Profile
from certs.revocation import OCSPResponsesChecker
from certs.validation import TrustStore, member_of, validate_path
from gateway._verifycache import ParsedCertificate, VerificationCache
from gateway.errors import SigningError, VerificationError
from gateway.headers import RequestHeader, ResponseHeader
from serai import jws
from serai.errors import ErrorCode, Origin
from serai.identifiers import SubsystemId

__all__ = [
    "DEFAULT_MAX_OCSP_AGE_S",
    "DEFAULT_MAX_SKEW_S",
    "MAX_CHAIN_CERTIFICATES",
    "MAX_JWS_CHARS",
    "REQUEST_JWS_TYPE",
    "RESPONSE_JWS_TYPE",
    "HeaderSigner",
    "SignedHeader",
    "VerifiedRequest",
    "VerifiedResponse",
    "verify_request",
    "verify_response",
]

#: ``typ`` of a signed request header.
REQUEST_JWS_TYPE: Final = "serai-request+jws"
#: ``typ`` of a signed response header.
RESPONSE_JWS_TYPE: Final = "serai-response+jws"
#: Oldest attached OCSP response accepted, seconds since its thisUpdate (X-Road's default).
DEFAULT_MAX_OCSP_AGE_S: Final = 3600.0
#: Largest accepted difference between a header's created_at and the receiver's clock.
DEFAULT_MAX_SKEW_S: Final = 60.0
#: Longest compact JWS read (the chain dominates: a few KiB per certificate).
MAX_JWS_CHARS: Final = 256 * 1024
#: Most certificates a chain may carry (leaf and intermediates; the root is not sent).
MAX_CHAIN_CERTIFICATES: Final = 5

_P256_COORDINATE_BYTES: Final = 32
_HEADER_MEMBERS: Final = frozenset({"alg", "typ", "x5c"})
_B64URL: Final = re.compile(r"[A-Za-z0-9_-]*")

Header: TypeAlias = RequestHeader | ResponseHeader


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedHeader:
    """A signed header as it travels and is logged: the ``signed_header``,
    ``certificate_chain`` and ``ocsp_response`` fields of an exchange message."""

    #: The compact JWS; its payload is ``header_bytes``.
    jws: str
    #: The encoded header that was signed.
    header_bytes: bytes
    #: SHA-256 of ``header_bytes``: what a response binds to.
    header_sha256: bytes
    #: DER certificates, leaf first (the JWS ``x5c``).
    certificate_chain: tuple[bytes, ...]
    #: DER OCSP response for the leaf.
    ocsp_response: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedRequest:
    """A request header that :func:`verify_request` accepted."""

    header: RequestHeader
    #: The verified JWS payload, from which ``header`` was decoded.
    header_bytes: bytes
    #: SHA-256 of ``header_bytes``; the provider's response binds to it.
    header_sha256: bytes
    #: The signing certificate.
    certificate: x509.Certificate


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedResponse:
    """A response header that :func:`verify_response` accepted."""

    header: ResponseHeader
    header_bytes: bytes
    header_sha256: bytes
    certificate: x509.Certificate


class HeaderSigner:
    """Signs headers with one member's signing key.

    ``certificate_chain`` is the signing certificate followed by its intermediate CAs
    (root excluded); ``ocsp_response`` returns the DER of a fresh OCSP response for the
    leaf, already fetched and validated (e.g. from :meth:`certs.ocsp_client.OCSPClient.cached`);
    it is called once per signature and must not block. Immutable and thread-safe.
    """

    __slots__ = ("_alg", "_chain_der", "_key", "_ocsp_response", "_protected")

    def __init__(
        self,
        *,
        key: PrivateKey,
        certificate_chain: Sequence[x509.Certificate],
        ocsp_response: Callable[[], bytes],
    ) -> None:
        if not certificate_chain:
            raise SigningError("a signing certificate chain needs at least the leaf")
        if len(certificate_chain) > MAX_CHAIN_CERTIFICATES:
            raise SigningError(
                f"a signing certificate chain holds at most {MAX_CHAIN_CERTIFICATES} certificates"
            )
        leaf = certificate_chain[0]
        if _spki(leaf.public_key()) != _spki(key.public_key()):
            raise SigningError("the signing key does not match the signing certificate")
        alg = jws.algorithm_for(key.public_key(), allow_rsa=True)
        if alg is None:
            raise SigningError(
                f"a {type(key).__name__} cannot sign headers (EC P-256, Ed25519 or RSA >= 2048)"
            )
        self._key = key
        self._alg = alg
        self._ocsp_response = ocsp_response
        self._chain_der = tuple(
            c.public_bytes(serialization.Encoding.DER) for c in certificate_chain
        )
        x5c = [base64.b64encode(der).decode("ascii") for der in self._chain_der]
        self._protected = {
            typ: jws.b64url(
                json.dumps({"alg": alg, "typ": typ, "x5c": x5c}, separators=(",", ":")).encode()
            )
            for typ in (REQUEST_JWS_TYPE, RESPONSE_JWS_TYPE)
        }

    @property
    def algorithm(self) -> str:
        """The JWS ``alg`` this signer uses."""
        return self._alg

    @property
    def certificate_chain(self) -> tuple[bytes, ...]:
        """The DER chain attached to every signature, leaf first."""
        return self._chain_der

    def check_can_sign(self) -> None:
        """Raise what :meth:`sign` would raise for want of an OCSP response, without
        signing: the provider side asks before its information system acts on a request
        whose response could not be signed."""
        if not self._ocsp_response():
            raise _no_ocsp_response()

    def sign(self, header: Header) -> SignedHeader:
        """Encode ``header`` and sign the bytes; ``typ`` follows the header's kind.

        Raises :class:`SigningError` (``ocsp_unavailable``) when the supplier has no
        OCSP response: a signature without one would be refused by every receiver.
        """
        ocsp_response = self._ocsp_response()
        if not ocsp_response:
            raise _no_ocsp_response()
        typ = REQUEST_JWS_TYPE if isinstance(header, RequestHeader) else RESPONSE_JWS_TYPE
        header_bytes = header.encode()
        signing_input = f"{self._protected[typ]}.{jws.b64url(header_bytes)}"
        signature = self._signature(signing_input.encode("ascii"))
        return SignedHeader(
            jws=f"{signing_input}.{jws.b64url(signature)}",
            header_bytes=header_bytes,
            header_sha256=hashlib.sha256(header_bytes).digest(),
            certificate_chain=self._chain_der,
            ocsp_response=bytes(ocsp_response),
        )

    def _signature(self, data: bytes) -> bytes:
        key = self._key
        if isinstance(key, ec.EllipticCurvePrivateKey):
            r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
            return r.to_bytes(_P256_COORDINATE_BYTES, "big") + s.to_bytes(
                _P256_COORDINATE_BYTES, "big"
            )
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key.sign(data)
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def verify_request(
    signed_header: str,
    *,
    chain: Sequence[bytes],
    ocsp_response: bytes,
    body: bytes,
    trust: TrustStore,
    now: dt.datetime,
    max_ocsp_age_s: float = DEFAULT_MAX_OCSP_AGE_S,
    max_skew_s: float = DEFAULT_MAX_SKEW_S,
    cache: VerificationCache | None = None,
) -> VerifiedRequest:
    """Verify a consumer gateway's signed request header (rules 1 to 10 of the module
    docstring); raises :class:`~gateway.errors.GatewayError` with origin ``client``.
    ``cache`` (optional) remembers the certificate work of rules 5 and 6 between calls."""
    check = _Verifier(origin=Origin.CLIENT, typ=REQUEST_JWS_TYPE, now=now)
    payload, leaf = check.signature(signed_header, chain, cache)
    check.certificate(
        leaf.certificate,
        chain,
        ocsp_response,
        trust=trust,
        max_ocsp_age_s=max_ocsp_age_s,
        cache=cache,
    )
    header = RequestHeader.decode(payload)
    check.member(leaf, chain[0], header.client, "the request's client", cache)
    check.body(body, header.body_sha256, header.body_size)
    check.time(header.created_at, max_skew_s)
    return VerifiedRequest(
        header=header,
        header_bytes=payload,
        header_sha256=hashlib.sha256(payload).digest(),
        certificate=leaf.certificate,
    )


def verify_response(
    signed_header: str,
    *,
    chain: Sequence[bytes],
    ocsp_response: bytes,
    body: bytes,
    trust: TrustStore,
    now: dt.datetime,
    expected_request_sha256: bytes,
    expected_message_id: str,
    provider: SubsystemId,
    max_ocsp_age_s: float = DEFAULT_MAX_OCSP_AGE_S,
    max_skew_s: float = DEFAULT_MAX_SKEW_S,
    cache: VerificationCache | None = None,
) -> VerifiedResponse:
    """Verify a provider gateway's signed response header to the request whose header
    bytes hash to ``expected_request_sha256`` (rules 1 to 11 of the module docstring);
    raises :class:`~gateway.errors.GatewayError` with origin ``provider``. ``cache`` as
    for :func:`verify_request`."""
    check = _Verifier(origin=Origin.PROVIDER, typ=RESPONSE_JWS_TYPE, now=now)
    payload, leaf = check.signature(signed_header, chain, cache)
    check.certificate(
        leaf.certificate,
        chain,
        ocsp_response,
        trust=trust,
        max_ocsp_age_s=max_ocsp_age_s,
        cache=cache,
    )
    header = ResponseHeader.decode(payload)
    check.member(leaf, chain[0], provider, "the provider", cache)
    check.body(body, header.body_sha256, header.body_size)
    check.time(header.created_at, max_skew_s)
    if not hmac.compare_digest(header.request_header_sha256, expected_request_sha256):
        check.fail("response is bound to another request (request_header_sha256 differs)")
    if header.message_id != expected_message_id:
        check.fail(
            f"response answers message {header.message_id[:64]!a}, not {expected_message_id[:64]!a}"
        )
    return VerifiedResponse(
        header=header,
        header_bytes=payload,
        header_sha256=hashlib.sha256(payload).digest(),
        certificate=leaf.certificate,
    )


# --- verification steps ----------------------------------------------------------------


class _Verifier:
    """The rules of the module docstring for one side; each raises on failure."""

    __slots__ = ("_now", "_origin", "_typ")

    def __init__(self, *, origin: Origin, typ: str, now: dt.datetime) -> None:
        if now.utcoffset() is None:
            raise ValueError("verification needs a timezone-aware 'now'")
        self._origin = origin
        self._typ = typ
        self._now = now.astimezone(dt.UTC)

    def fail(self, message: str, code: ErrorCode = ErrorCode.SIGNATURE_INVALID) -> NoReturn:
        raise VerificationError(message, code=code, origin=self._origin)

    def signature(
        self, token: object, chain: Sequence[bytes], cache: VerificationCache | None
    ) -> tuple[bytes, ParsedCertificate]:
        """Rules 1 to 4: the verified payload and the leaf certificate."""
        if type(token) is not str or not token.isascii() or len(token) > MAX_JWS_CHARS:
            self.fail(f"signed header is not an ASCII string of at most {MAX_JWS_CHARS} characters")
        parts = token.split(".")
        if len(parts) != 3:
            self.fail(f"signed header is not a compact JWS (found {len(parts)} parts, not 3)")
        protected, payload_part, signature_part = parts
        header = self._protected_header(protected)
        alg, typ, x5c = header["alg"], header["typ"], header["x5c"]
        if alg not in ("ES256", "EdDSA", "RS256"):
            self.fail(f"JWS algorithm {_show(alg)} is not allowed (ES256, EdDSA or RS256)")
        if typ != self._typ:
            self.fail(f"JWS typ is {_show(typ)}, not {self._typ!r}")
        self._chain_field(x5c, chain)
        leaf = (
            self._parse_leaf(chain[0])
            if cache is None
            else cache.certificate(chain[0], self._parse_leaf)
        )
        key = leaf.public_key
        expected = jws.algorithm_for(key, allow_rsa=True)
        if alg != expected:
            self.fail(
                f"JWS algorithm {alg} does not match the signing certificate's key "
                f"({type(key).__name__}, which signs with {expected or 'no accepted algorithm'})"
            )
        payload = self._b64url_decode(payload_part, "payload")
        signature = self._b64url_decode(signature_part, "signature")
        signing_input = f"{protected}.{payload_part}".encode("ascii")
        if not jws.signature_verifies(key, signature, signing_input, allow_rsa=True):
            self.fail("JWS signature does not verify with the signing certificate's key")
        return payload, leaf

    def certificate(
        self,
        leaf: x509.Certificate,
        chain: Sequence[bytes],
        ocsp_response: bytes,
        *,
        trust: TrustStore,
        max_ocsp_age_s: float,
        cache: VerificationCache | None,
    ) -> None:
        """Rules 5 and 6."""
        intermediates = [self._load(der, "intermediate certificate") for der in chain[1:]]
        responses = [ocsp_response] if ocsp_response else []
        try:
            if cache is not None:
                cache.validate_sign_path(
                    leaf,
                    chain=chain,
                    intermediates=intermediates,
                    ocsp_responses=responses,
                    trust=trust,
                    at=self._now,
                    max_ocsp_age_s=max_ocsp_age_s,
                )
                return
            validate_path(
                leaf,
                intermediates=intermediates,
                trust=trust,
                at=self._now,
                purpose=Profile.SIGN,
                revocation=OCSPResponsesChecker(responses, leaf=leaf, max_age_s=max_ocsp_age_s),
            )
        except PKIError as exc:
            raise VerificationError(
                f"signing certificate refused: {exc.message}", code=exc.code, origin=self._origin
            ) from exc

    def member(
        self,
        leaf: ParsedCertificate,
        der: bytes,
        subsystem: SubsystemId,
        whose: str,
        cache: VerificationCache | None,
    ) -> None:
        """Rule 8."""
        try:
            signer = member_of(leaf.certificate) if cache is None else cache.member(leaf, der)
        except PKIError as exc:
            raise VerificationError(
                exc.message, code=ErrorCode.CERTIFICATE_INVALID, origin=self._origin
            ) from exc
        claimed = str(subsystem.member)
        if signer != claimed:
            self.fail(
                f"signing certificate belongs to member {signer}, not to {claimed}, "
                f"the member of {whose}",
                ErrorCode.CERTIFICATE_INVALID,
            )

    def body(self, body: bytes, sha256: bytes, size: int) -> None:
        """Rule 9."""
        if len(body) != size or not hmac.compare_digest(hashlib.sha256(body).digest(), sha256):
            self.fail(
                f"body does not match the signed digest ({len(body)} bytes received, {size} signed)"
            )

    def time(self, created_at: dt.datetime, max_skew_s: float) -> None:
        """Rule 10."""
        skew = (created_at - self._now).total_seconds()
        if abs(skew) > max_skew_s:
            self.fail(
                f"header created at {created_at.isoformat()}, {skew:+.0f} s from this "
                f"gateway's clock ({max_skew_s:g} s allowed)",
                ErrorCode.CLOCK_SKEW,
            )

    def _protected_header(self, part: str) -> dict[str, object]:
        raw = self._b64url_decode(part, "protected header")
        try:
            header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            self.fail(f"JWS protected header is not JSON: {exc}")
        if not isinstance(header, dict):
            self.fail("JWS protected header is not a JSON object")
        if header.keys() != _HEADER_MEMBERS:
            self.fail(
                "JWS protected header must have exactly alg, typ and x5c; it has "
                f"{_show(sorted(header))}"
            )
        return header

    def _chain_field(self, x5c: object, chain: Sequence[bytes]) -> None:
        if not isinstance(x5c, list) or not 1 <= len(x5c) <= MAX_CHAIN_CERTIFICATES:
            self.fail(f"JWS x5c is not a list of 1 to {MAX_CHAIN_CERTIFICATES} certificates")
        if len(x5c) != len(chain):
            self.fail(
                f"JWS x5c has {len(x5c)} certificates, the certificate_chain field {len(chain)}"
            )
        for index, (text, der) in enumerate(zip(x5c, chain, strict=True)):
            if not isinstance(text, str) or jws.b64_decode(text) != der:
                self.fail(f"JWS x5c[{index}] differs from certificate_chain[{index}]")

    def _parse_leaf(self, der: bytes) -> ParsedCertificate:
        leaf = self._load(der, "signing certificate")
        try:
            key = leaf.public_key()
        except (ValueError, UnsupportedAlgorithm) as exc:
            self.fail(
                f"signing certificate's key is unusable: {exc}", ErrorCode.CERTIFICATE_INVALID
            )
        return ParsedCertificate(certificate=leaf, public_key=key)

    def _load(self, der: bytes, what: str) -> x509.Certificate:
        try:
            return parse_der_certificate(der)
        except ValueError as exc:
            self.fail(f"{what} cannot be parsed: {exc}", ErrorCode.CERTIFICATE_INVALID)

    def _b64url_decode(self, part: str, what: str) -> bytes:
        if not _B64URL.fullmatch(part):
            self.fail(f"JWS {what} is not base64url")
        try:
            data = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        except binascii.Error as exc:
            self.fail(f"JWS {what} is not base64url: {exc}")
        if jws.b64url(data) != part:
            self.fail(f"JWS {what} is not canonical base64url")
        return data


def _no_ocsp_response() -> SigningError:
    return SigningError(
        "no OCSP response for the signing certificate is at hand",
        code=ErrorCode.OCSP_UNAVAILABLE,
    )


def _spki(key: object) -> bytes:
    der = jws.spki(key)
    if der is None:
        raise SigningError(f"unsupported key type {type(key).__name__}")
    return der


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate member names")
    return result


def _show(value: object) -> str:
    text = ascii(value)
    return text if len(text) <= 64 else f"{text[:64]}..."
