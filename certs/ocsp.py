"""The OCSP responder core (RFC 6960), independent of any transport.

:class:`OCSPResponder` turns the DER bytes of an ``OCSPRequest`` into the DER bytes of
an ``OCSPResponse``. It answers from a :class:`StatusSource` (the CA's
:class:`~certs.ca.CertificateRecords` is one; :class:`InMemoryStatusSource` is another)
and signs with a delegated responder certificate (RFC 6960 §4.2.2.2) or with the
issuer's own key.

Guarantees (each has a test in ``tests/test_ocsp.py``):

* :meth:`OCSPResponder.respond` never raises on any input and always returns a DER
  ``OCSPResponse``. A failure of the status source is answered ``tryLater``; any other
  unexpected failure ``internalError`` (logged here, never described on the wire).
* Bytes that are not one DER ``OCSPRequest``, a request for more than one certificate
  (one signed answer per request keeps responses small and cacheable), a nonce outside
  1..32 octets (RFC 8954 §2.1), an unrecognised *critical* request extension
  (RFC 6960 §4.4) and a negative serial number are answered ``malformedRequest``.
* A CertID whose hash algorithm is not one of SHA-1, SHA-224, SHA-256, SHA-384 and
  SHA-512, or whose issuer name and key hashes do not match an issuer this responder is
  authoritative for, is answered ``unauthorized``: the responder cannot tell which CA
  the certificate belongs to, so it has no authority to say anything about it
  (RFC 6960 §2.3, RFC 5019 §2.2.3). Nothing is ever said ``good`` for a CA it does not
  serve.
* For an issuer it serves, the answer is ``good`` when the source records the serial
  as good, ``revoked`` with the recorded revocation time and reason when revoked, and
  ``unknown`` when the source has no record of that serial.
* The single response echoes the request's CertID exactly (same hash algorithm, name
  hash, key hash and serial), so a client's match never depends on re-hashing.
* ``thisUpdate`` is the time of signing (whole seconds); ``nextUpdate`` is
  ``thisUpdate + next_update_s``.
* A nonce present in the request is echoed, byte for byte, in the response extensions.
* Every successful response is signed by the responder key, identifies the responder by
  key hash (``ResponderID byKey``) and carries the responder certificate.
* Construction refuses a key that does not match the responder certificate, and a
  delegated responder certificate that lacks the OCSPSigning extended key usage or was
  not directly issued by every issuer the responder answers for.

Assumptions: the status source answers truthfully and quickly (a SQLite primary-key
lookup); the clock is right.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from asn1crypto import keys as asn1_keys
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, OCSPExtensionOID

from certs.ca import CertStatus
from certs.errors import OCSPError
from certs.keys import PrivateKey, signature_hash_for
from serai.errors import ErrorCode

__all__ = [
    "CERT_ID_HASHES",
    "MAX_NONCE_BYTES",
    "InMemoryStatusSource",
    "OCSPAnswer",
    "OCSPResponder",
    "StatusRecord",
    "StatusSource",
    "issuer_key_hash",
    "issuer_name_hash",
]

_log = logging.getLogger("serai.ocsp")

#: Hash algorithms accepted in a CertID (those ``cryptography`` can build responses with).
CERT_ID_HASHES: Final[Mapping[str, type[hashes.HashAlgorithm]]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}

#: RFC 8954 §2.1: a nonce is 1 to 32 octets.
MAX_NONCE_BYTES: Final = 32

#: The default validity of a response: nextUpdate - thisUpdate.
DEFAULT_NEXT_UPDATE_S: Final = 3600


class StatusRecord(Protocol):
    """What the responder needs to know about one certificate."""

    @property
    def status(self) -> CertStatus: ...

    @property
    def revoked_at(self) -> dt.datetime | None: ...

    @property
    def revocation_reason(self) -> x509.ReasonFlags | None: ...


class StatusSource(Protocol):
    """Where revocation status comes from; :class:`~certs.ca.CertificateRecords` fits."""

    def lookup(self, *, issuer_sha1: bytes, serial: int) -> StatusRecord | None:
        """The record of ``serial`` issued by the CA whose key SHA-1 is ``issuer_sha1``."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class _Record:
    status: CertStatus
    revoked_at: dt.datetime | None = None
    revocation_reason: x509.ReasonFlags | None = None


class InMemoryStatusSource:
    """A :class:`StatusSource` held in a dict, for tests and demos."""

    def __init__(self) -> None:
        self._records: dict[tuple[bytes, int], _Record] = {}

    def add_good(self, *, issuer_sha1: bytes, serial: int) -> None:
        """Record ``serial`` as issued and good."""
        self._records[(issuer_sha1, serial)] = _Record(status=CertStatus.GOOD)

    def revoke(
        self,
        *,
        issuer_sha1: bytes,
        serial: int,
        at: dt.datetime,
        reason: x509.ReasonFlags | None = x509.ReasonFlags.unspecified,
    ) -> None:
        """Record ``serial`` as revoked at ``at`` for ``reason``."""
        self._records[(issuer_sha1, serial)] = _Record(
            status=CertStatus.REVOKED, revoked_at=at, revocation_reason=reason
        )

    def lookup(self, *, issuer_sha1: bytes, serial: int) -> StatusRecord | None:
        return self._records.get((issuer_sha1, serial))


@dataclass(frozen=True, slots=True, kw_only=True)
class OCSPAnswer:
    """What :meth:`OCSPResponder.answer` produced: the DER and facts a transport needs."""

    der: bytes
    response_status: ocsp.OCSPResponseStatus
    #: Status of the certificate asked about (``None`` unless successful).
    cert_status: CertStatus | None = None
    this_update: dt.datetime | None = None
    next_update: dt.datetime | None = None
    #: Whether the request carried a nonce (the response is then unique, not cacheable).
    has_nonce: bool = False


def issuer_name_hash(issuer: x509.Certificate, algorithm: hashes.HashAlgorithm) -> bytes:
    """RFC 6960 ``issuerNameHash``: hash of the DER of the issuer's subject name."""
    return _digest(algorithm, issuer.subject.public_bytes())


def issuer_key_hash(issuer: x509.Certificate, algorithm: hashes.HashAlgorithm) -> bytes:
    """RFC 6960 ``issuerKeyHash``: hash of the issuer's subjectPublicKey BIT STRING value.
    Remembered per certificate (its DER identifies it) and hash: an OCSP client's cache
    lookup asks for it on every exchange, and the key's BIT STRING takes a DER parse."""
    return _issuer_key_hash(issuer, algorithm.name)


@functools.lru_cache(maxsize=1024)
def _issuer_key_hash(issuer: x509.Certificate, algorithm_name: str) -> bytes:
    bits = _subject_public_key_bits(issuer.public_key())
    return hashlib.new(algorithm_name, bits, usedforsecurity=False).digest()


class _MalformedError(Exception):
    pass


class _UnauthorizedError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class _Issuer:
    certificate: x509.Certificate
    key_sha1: bytes
    #: (hash name, name hash, key hash) for every accepted CertID hash.
    hashes: frozenset[tuple[str, bytes, bytes]]


class OCSPResponder:
    """Answers OCSP requests for the certificates of some issuers; see the module docs."""

    def __init__(
        self,
        *,
        key: PrivateKey,
        certificate: x509.Certificate,
        issuers: Sequence[x509.Certificate],
        source: StatusSource,
        next_update_s: int = DEFAULT_NEXT_UPDATE_S,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        if not issuers:
            raise OCSPError("an OCSP responder needs at least one issuer", code=ErrorCode.INTERNAL)
        if next_update_s <= 0:
            raise OCSPError("next_update_s must be positive", code=ErrorCode.INVALID_CONFIG)
        if _subject_public_key_bits(key.public_key()) != _subject_public_key_bits(
            certificate.public_key()
        ):
            raise OCSPError(
                "the responder key does not match the responder certificate",
                code=ErrorCode.INVALID_CONFIG,
            )
        for issuer in issuers:
            _check_authorised(certificate, issuer)
        self._key = key
        self._certificate = certificate
        self._source = source
        self._next_update = dt.timedelta(seconds=next_update_s)
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._hash = signature_hash_for(key)
        self._issuers = [_issuer_entry(i) for i in issuers]
        self._by_hash: dict[tuple[str, bytes, bytes], _Issuer] = {
            entry: issuer for issuer in self._issuers for entry in issuer.hashes
        }
        self._refusals: dict[ocsp.OCSPResponseStatus, bytes] = {
            status: ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(
                serialization.Encoding.DER
            )
            for status in ocsp.OCSPResponseStatus
            if status is not ocsp.OCSPResponseStatus.SUCCESSFUL
        }

    @property
    def certificate(self) -> x509.Certificate:
        """The certificate that signs responses."""
        return self._certificate

    def respond(self, der_request: bytes) -> bytes:
        """The DER ``OCSPResponse`` to ``der_request``. Never raises."""
        return self.answer(der_request).der

    def refusal(self, status: ocsp.OCSPResponseStatus) -> OCSPAnswer:
        """An unsuccessful response with ``status`` (for transports that refuse early)."""
        return OCSPAnswer(der=self._refusals[status], response_status=status)

    def answer(self, der_request: bytes) -> OCSPAnswer:
        """Like :meth:`respond`, with the facts an HTTP layer needs for its headers."""
        try:
            return self._answer(der_request)
        except _MalformedError as exc:
            _log.debug("malformed OCSP request: %s", exc)
            return self.refusal(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
        except _UnauthorizedError as exc:
            _log.debug("unauthorized OCSP request: %s", exc)
            return self.refusal(ocsp.OCSPResponseStatus.UNAUTHORIZED)
        except Exception:  # noqa: BLE001  (the guarantee: never raise, never leak a trace)
            _log.exception("OCSP responder failed on a request")
            return self.refusal(ocsp.OCSPResponseStatus.INTERNAL_ERROR)

    def _answer(self, der_request: bytes) -> OCSPAnswer:
        request = _parse_request(der_request)
        nonce = _nonce_of(request)
        try:
            algorithm = request.hash_algorithm
        except UnsupportedAlgorithm as exc:
            raise _UnauthorizedError(f"unsupported CertID hash: {exc}") from exc
        if algorithm.name not in CERT_ID_HASHES:
            raise _UnauthorizedError(f"unsupported CertID hash {algorithm.name}")
        name_hash, key_hash = request.issuer_name_hash, request.issuer_key_hash
        issuer = self._by_hash.get((algorithm.name, name_hash, key_hash))
        if issuer is None:
            raise _UnauthorizedError("not authoritative for the issuer in the CertID")
        serial = request.serial_number
        if serial < 0:  # DER allows it, RFC 5280 §4.1.2.2 does not; no response can carry it
            raise _MalformedError(f"negative serial number {serial}")
        try:
            record = self._source.lookup(issuer_sha1=issuer.key_sha1, serial=serial)
        except Exception:  # noqa: BLE001  (any store failure is "try later" to the client)
            _log.exception("OCSP status source failed")
            return self.refusal(ocsp.OCSPResponseStatus.TRY_LATER)

        now = self._clock().astimezone(dt.UTC).replace(microsecond=0)
        next_update = now + self._next_update
        revoked_at: dt.datetime | None = None
        reason: x509.ReasonFlags | None = None
        if record is None:
            status, cert_status = ocsp.OCSPCertStatus.UNKNOWN, CertStatus.UNKNOWN
        elif record.status is CertStatus.REVOKED and record.revoked_at is not None:
            status, cert_status = ocsp.OCSPCertStatus.REVOKED, CertStatus.REVOKED
            revoked_at = record.revoked_at.astimezone(dt.UTC).replace(microsecond=0)
            reason = record.revocation_reason
        elif record.status is CertStatus.GOOD:
            status, cert_status = ocsp.OCSPCertStatus.GOOD, CertStatus.GOOD
        else:
            status, cert_status = ocsp.OCSPCertStatus.UNKNOWN, CertStatus.UNKNOWN

        builder = (
            ocsp.OCSPResponseBuilder()
            .add_response_by_hash(
                issuer_name_hash=name_hash,
                issuer_key_hash=key_hash,
                serial_number=serial,
                algorithm=algorithm,
                cert_status=status,
                this_update=now,
                next_update=next_update,
                revocation_time=revoked_at,
                revocation_reason=reason,
            )
            .responder_id(ocsp.OCSPResponderEncoding.HASH, self._certificate)
            .certificates([self._certificate])
        )
        if nonce is not None:
            builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
        response = builder.sign(self._key, self._hash)
        return OCSPAnswer(
            der=response.public_bytes(serialization.Encoding.DER),
            response_status=ocsp.OCSPResponseStatus.SUCCESSFUL,
            cert_status=cert_status,
            this_update=now,
            next_update=next_update,
            has_nonce=nonce is not None,
        )


# -- helpers --------------------------------------------------------------------------------


def _parse_request(der: bytes) -> ocsp.OCSPRequest:
    if not der:
        raise _MalformedError("empty request")
    try:
        return ocsp.load_der_ocsp_request(bytes(der))
    except (ValueError, TypeError, NotImplementedError, UnsupportedAlgorithm) as exc:
        # NotImplementedError: cryptography's refusal of a request for several certificates.
        raise _MalformedError(f"not a single-certificate OCSPRequest: {exc}") from exc


def _nonce_of(request: ocsp.OCSPRequest) -> bytes | None:
    try:
        extensions: Iterable[x509.Extension[x509.ExtensionType]] = request.extensions
    except (ValueError, TypeError) as exc:
        raise _MalformedError(f"bad request extensions: {exc}") from exc
    nonce: bytes | None = None
    for ext in extensions:
        if ext.oid == OCSPExtensionOID.NONCE and isinstance(ext.value, x509.OCSPNonce):
            nonce = ext.value.nonce
            if not 1 <= len(nonce) <= MAX_NONCE_BYTES:
                raise _MalformedError(f"nonce of {len(nonce)} octets (allowed 1..32)")
        elif ext.critical:
            raise _MalformedError(
                f"unrecognised critical request extension {ext.oid.dotted_string}"
            )
    return nonce


def _issuer_entry(issuer: x509.Certificate) -> _Issuer:
    entries = frozenset(
        (name, issuer_name_hash(issuer, cls()), issuer_key_hash(issuer, cls()))
        for name, cls in CERT_ID_HASHES.items()
    )
    key_sha1 = issuer_key_hash(issuer, hashes.SHA1())  # noqa: S303  (RFC 6960 CertID)
    return _Issuer(certificate=issuer, key_sha1=key_sha1, hashes=entries)


def _check_authorised(responder: x509.Certificate, issuer: x509.Certificate) -> None:
    """Refuse a responder certificate that may not sign for ``issuer`` (RFC 6960 §4.2.2.2)."""
    if responder == issuer:
        return
    try:
        responder.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm) as exc:
        raise OCSPError(
            f"the responder certificate {responder.subject.rfc4514_string()} was not issued "
            f"by {issuer.subject.rfc4514_string()}: {exc}",
            code=ErrorCode.INVALID_CONFIG,
        ) from exc
    try:
        eku = responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        eku = x509.ExtendedKeyUsage([])
    if ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
        raise OCSPError(
            "the delegated responder certificate lacks the OCSPSigning extended key usage",
            code=ErrorCode.INVALID_CONFIG,
        )


def _subject_public_key_bits(public_key: CertificatePublicKeyTypes) -> bytes:
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    parsed = asn1_keys.PublicKeyInfo.load(spki)
    bits: bytes = parsed["public_key"].contents[1:]  # drop the unused-bits octet
    return bits


def _digest(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    return hashlib.new(algorithm.name, data, usedforsecurity=False).digest()
