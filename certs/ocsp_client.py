"""OCSP client and validator (RFC 6960), and a cache of validated responses.

:func:`validate_response` is the one place that decides whether an OCSP response may be
trusted; it is pure (bytes, certificates and a time in, a result or an error out), so a
gateway re-validates a response a peer attached to a message with it, exactly as the
client validates one it fetched.

Guarantees of :func:`validate_response` (each refusal has a test):

* The response is a DER ``OCSPResponse`` with status ``successful``; ``tryLater`` and
  ``internalError`` are ``ocsp_unavailable`` (the responder is having trouble), every
  other status and any parse failure is ``ocsp_invalid``.
* Every signature in a successful response, its own and those of the certificates it
  carries, is a BIT STRING with no unused bits (a signature value is whole octets);
  otherwise ``ocsp_invalid``. The response is kept as evidence, so no byte of it may
  change while it still validates: cryptography's parser already refuses any encoding
  that is not DER, but a signature's unused-bit count is outside what the signature
  covers, and a count of 1 over a last octet that happens to be even is valid DER.
* It contains a single response whose CertID matches the certificate asked about: same
  serial, and issuer name and key hashes equal to those of ``issuer`` under the CertID's
  own hash algorithm (SHA-1/224/256/384/512). No match is ``ocsp_invalid``.
* The signer is identified by the ResponderID (by key hash or by name) and is either
  ``issuer`` itself or a certificate carried in the response that ``issuer`` directly
  issued (signature verified), with the OCSPSigning extended key usage, the
  digitalSignature key usage when key usage is present, and valid at ``now``
  (RFC 6960 §4.2.2.2). The delegated responder's own revocation is not checked
  (id-pkix-ocsp-nocheck, as Serai's CA issues it). Otherwise ``ocsp_invalid``.
* The signature over the exact ``tbsResponseData`` bytes verifies with the signer's key
  (ECDSA, RSA PKCS#1 v1.5, Ed25519). Otherwise ``ocsp_invalid``.
* If a nonce is expected, the response echoes exactly that nonce; a missing nonce is
  ``ocsp_invalid`` unless ``require_nonce=False``, a different one always is.
* ``thisUpdate`` is not later than ``now + clock_skew_s`` (``ocsp_invalid``);
  ``now - thisUpdate <= max_age_s`` (default 3600 s, X-Road's ``ocspFreshnessSeconds``)
  and ``nextUpdate``, when present, is not before ``now`` (``ocsp_stale``).
* ``good``, ``revoked`` and ``unknown`` are all *valid answers* and are returned as an
  :class:`OCSPResult`, not raised: a caller that needs a good certificate calls
  :meth:`OCSPResult.require_good`, which raises ``certificate_revoked`` for revoked and
  ``certificate_invalid`` for unknown (the CA does not know the certificate).

Cache policy of :class:`OCSPClient` (:meth:`OCSPClient.status`), keyed by (SHA-1 of the
issuer key, serial):

* A cached result younger than ``refresh_after_s`` (default half of ``max_age_s``) and
  whose ``nextUpdate`` is more than ``refresh_after_s`` away is returned as is.
* An older result that still validates in time (age within ``max_age_s``, ``nextUpdate``
  not passed) is returned at once and a refresh starts in the background; a failed
  background refresh is logged and the cached result stays until it ages out.
* With no usable cached result the caller waits for a fetch. Concurrent callers for the
  same certificate share one fetch. Only validated results are ever cached.
* The cache belongs to one event loop; its table is guarded by a lock so that
  :meth:`OCSPClient.cached` may be read from other threads.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

import aiohttp
from asn1crypto import ocsp as asn1_ocsp
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from certs.ca import CertStatus
from certs.errors import OCSPError
from certs.ocsp import CERT_ID_HASHES, OCSPResponder, issuer_key_hash, issuer_name_hash
from serai.errors import ErrorCode

__all__ = [
    "DEFAULT_CLOCK_SKEW_S",
    "DEFAULT_MAX_AGE_S",
    "AiohttpTransport",
    "OCSPClient",
    "OCSPResult",
    "OCSPTransport",
    "ResponderTransport",
    "build_request",
    "ocsp_url_of",
    "validate_response",
]

_log = logging.getLogger("serai.ocsp.client")

#: X-Road's ``ocspFreshnessSeconds`` default.
DEFAULT_MAX_AGE_S: Final = 3600
#: Tolerated difference between our clock and the responder's (as OpenSSL's default).
DEFAULT_CLOCK_SKEW_S: Final = 300
#: RFC 8954 recommends 32-octet nonces.
NONCE_BYTES: Final = 32
#: Largest response body read from a responder.
MAX_RESPONSE_BYTES: Final = 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class OCSPResult:
    """A validated OCSP answer about one certificate."""

    status: CertStatus
    serial: int
    revocation_time: dt.datetime | None
    revocation_reason: x509.ReasonFlags | None
    this_update: dt.datetime
    next_update: dt.datetime | None
    produced_at: dt.datetime
    #: The response exactly as received, for attaching to messages and logs.
    der: bytes

    def require_good(self) -> None:
        """Raise unless the certificate is good (``certificate_revoked`` / ``_invalid``)."""
        if self.status is CertStatus.REVOKED:
            when = self.revocation_time.isoformat() if self.revocation_time else "?"
            reason = self.revocation_reason.value if self.revocation_reason else "unspecified"
            raise OCSPError(
                f"certificate {self.serial:x} is revoked since {when} ({reason})",
                code=ErrorCode.CERTIFICATE_REVOKED,
            )
        if self.status is CertStatus.UNKNOWN:
            raise OCSPError(
                f"the OCSP responder does not know certificate {self.serial:x}",
                code=ErrorCode.CERTIFICATE_INVALID,
            )

    def age(self, now: dt.datetime) -> dt.timedelta:
        """How long ago the responder vouched for the status (``now - thisUpdate``)."""
        return now - self.this_update


def build_request(
    cert: x509.Certificate,
    issuer: x509.Certificate,
    *,
    nonce: bytes | None = None,
    algorithm: hashes.HashAlgorithm | None = None,
) -> bytes:
    """The DER ``OCSPRequest`` for ``cert`` issued by ``issuer`` (CertID hash SHA-1 by
    default, for the widest interoperability), with ``nonce`` when given."""
    builder = ocsp.OCSPRequestBuilder().add_certificate(
        cert,
        issuer,
        algorithm or hashes.SHA1(),  # noqa: S303  (RFC 6960 CertID, not a signature)
    )
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def ocsp_url_of(cert: x509.Certificate) -> str | None:
    """The first OCSP responder URL of ``cert``'s Authority Information Access, if any."""
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return None
    for description in aia:
        if description.access_method == AuthorityInformationAccessOID.OCSP and isinstance(
            description.access_location, x509.UniformResourceIdentifier
        ):
            return description.access_location.value
    return None


def validate_response(
    der: bytes,
    *,
    cert: x509.Certificate,
    issuer: x509.Certificate,
    now: dt.datetime,
    max_age_s: float = DEFAULT_MAX_AGE_S,
    nonce: bytes | None = None,
    require_nonce: bool = True,
    clock_skew_s: float = DEFAULT_CLOCK_SKEW_S,
) -> OCSPResult:
    """Validate ``der`` as the answer about ``cert``; see the module docs for the rules."""
    try:
        response = ocsp.load_der_ocsp_response(der)
    except ValueError as exc:
        raise OCSPError(f"OCSP response is not valid DER: {exc}") from exc
    status = response.response_status
    if status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        code = (
            ErrorCode.OCSP_UNAVAILABLE
            if status in (ocsp.OCSPResponseStatus.TRY_LATER, ocsp.OCSPResponseStatus.INTERNAL_ERROR)
            else ErrorCode.OCSP_INVALID
        )
        raise OCSPError(f"OCSP responder answered {status.name.lower()}", code=code)
    _check_encoding(der)
    try:
        single = _matching_single(response, cert, issuer)
        signer = _signer(response, issuer, now)
        _verify_signature(response, signer)
        _check_nonce(response, nonce, require_nonce=require_nonce)
        this_update = single.this_update_utc
        next_update = single.next_update_utc
        revocation_time = single.revocation_time_utc
        revocation_reason = single.revocation_reason
        produced_at = response.produced_at_utc
        cert_status = single.certificate_status
    except (ValueError, TypeError, UnsupportedAlgorithm, x509.InvalidVersion) as exc:
        raise OCSPError(f"OCSP response cannot be read: {exc}") from exc
    skew = dt.timedelta(seconds=clock_skew_s)
    if this_update > now + skew:
        raise OCSPError(f"OCSP thisUpdate {this_update.isoformat()} is in the future")
    if now - this_update > dt.timedelta(seconds=max_age_s):
        raise OCSPError(
            f"OCSP response is {int((now - this_update).total_seconds())} s old "
            f"(at most {max_age_s:g} s allowed)",
            code=ErrorCode.OCSP_STALE,
        )
    if next_update is not None and next_update < now:
        raise OCSPError(
            f"OCSP nextUpdate {next_update.isoformat()} has passed", code=ErrorCode.OCSP_STALE
        )
    return OCSPResult(
        status={
            ocsp.OCSPCertStatus.GOOD: CertStatus.GOOD,
            ocsp.OCSPCertStatus.REVOKED: CertStatus.REVOKED,
            ocsp.OCSPCertStatus.UNKNOWN: CertStatus.UNKNOWN,
        }[cert_status],
        serial=cert.serial_number,
        revocation_time=revocation_time,
        revocation_reason=revocation_reason,
        this_update=this_update,
        next_update=next_update,
        produced_at=produced_at,
        der=bytes(der),
    )


# -- transports -----------------------------------------------------------------------------


class OCSPTransport(Protocol):
    """Sends a DER request to a responder URL and returns the DER response body."""

    async def post(self, url: str, der_request: bytes, *, timeout_s: float) -> bytes:
        """Raise :class:`OCSPError` (``ocsp_unavailable``) when no answer comes back."""
        ...


class AiohttpTransport:
    """HTTP ``POST`` (RFC 6960 A.1) with aiohttp; owns its session unless given one."""

    def __init__(self, *, session: aiohttp.ClientSession | None = None) -> None:
        self._session = session
        self._owns_session = session is None

    async def post(self, url: str, der_request: bytes, *, timeout_s: float) -> bytes:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.post(
                url,
                data=der_request,
                headers={"Content-Type": "application/ocsp-request"},
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as reply:
                if reply.status != 200:
                    raise OCSPError(
                        f"OCSP responder {url} answered HTTP {reply.status}",
                        code=ErrorCode.OCSP_UNAVAILABLE,
                    )
                body = await reply.content.read(MAX_RESPONSE_BYTES + 1)
                if len(body) > MAX_RESPONSE_BYTES or not reply.content.at_eof():
                    raise OCSPError(
                        f"OCSP response from {url} is over {MAX_RESPONSE_BYTES} bytes",
                        code=ErrorCode.OCSP_INVALID,
                    )
                return body
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise OCSPError(
                f"OCSP responder {url} cannot be reached: {type(exc).__name__} {exc}",
                code=ErrorCode.OCSP_UNAVAILABLE,
            ) from exc

    async def aclose(self) -> None:
        """Close the session if this transport created it."""
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None


class ResponderTransport:
    """An in-memory transport that asks an :class:`OCSPResponder` directly (tests, demos)."""

    def __init__(self, responder: OCSPResponder) -> None:
        self.responder = responder
        #: Number of requests sent, so tests can observe caching.
        self.requests = 0

    async def post(self, url: str, der_request: bytes, *, timeout_s: float) -> bytes:
        self.requests += 1
        return self.responder.respond(der_request)


# -- client and cache -------------------------------------------------------------------------


_Key = tuple[bytes, int]


class OCSPClient:
    """Fetches, validates and caches OCSP responses; see the module docs for the policy."""

    def __init__(
        self,
        *,
        transport: OCSPTransport | None = None,
        timeout_s: float = 5.0,
        max_age_s: float = DEFAULT_MAX_AGE_S,
        refresh_after_s: float | None = None,
        clock_skew_s: float = DEFAULT_CLOCK_SKEW_S,
        send_nonce: bool = True,
        require_nonce: bool = True,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self._transport: OCSPTransport = transport or AiohttpTransport()
        self._owns_transport = transport is None
        self._timeout_s = timeout_s
        self._max_age_s = max_age_s
        self._refresh_after = dt.timedelta(
            seconds=refresh_after_s if refresh_after_s is not None else max_age_s / 2
        )
        self._clock_skew_s = clock_skew_s
        self._send_nonce = send_nonce
        self._require_nonce = require_nonce and send_nonce
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._lock = threading.Lock()
        self._cache: dict[_Key, OCSPResult] = {}
        self._inflight: dict[_Key, asyncio.Task[OCSPResult]] = {}

    @property
    def max_age_s(self) -> float:
        """The oldest response, in seconds since its thisUpdate, that this client accepts."""
        return self._max_age_s

    async def fetch(
        self, cert: x509.Certificate, issuer: x509.Certificate, *, url: str | None = None
    ) -> OCSPResult:
        """Ask the responder now (``url``, else the certificate's AIA) and validate."""
        target = url or ocsp_url_of(cert)
        if target is None:
            raise OCSPError(
                f"certificate {cert.serial_number:x} names no OCSP responder",
                code=ErrorCode.OCSP_UNAVAILABLE,
            )
        nonce = secrets.token_bytes(NONCE_BYTES) if self._send_nonce else None
        der = await self._transport.post(
            target, build_request(cert, issuer, nonce=nonce), timeout_s=self._timeout_s
        )
        return validate_response(
            der,
            cert=cert,
            issuer=issuer,
            now=self._clock(),
            max_age_s=self._max_age_s,
            nonce=nonce,
            require_nonce=self._require_nonce,
            clock_skew_s=self._clock_skew_s,
        )

    async def status(
        self, cert: x509.Certificate, issuer: x509.Certificate, *, url: str | None = None
    ) -> OCSPResult:
        """A validated, fresh result for ``cert``, from the cache when possible."""
        key = (issuer_key_hash(issuer, hashes.SHA1()), cert.serial_number)  # noqa: S303
        now = self._clock()
        cached = self.cached(cert, issuer)
        if cached is not None and self._usable(cached, now):
            if self._due(cached, now):
                self._start_fetch(key, cert, issuer, url)
            return cached
        return await asyncio.shield(self._start_fetch(key, cert, issuer, url))

    def cached(self, cert: x509.Certificate, issuer: x509.Certificate) -> OCSPResult | None:
        """The cached result for ``cert``, if any (it may be too old to use)."""
        key = (issuer_key_hash(issuer, hashes.SHA1()), cert.serial_number)  # noqa: S303
        with self._lock:
            return self._cache.get(key)

    async def aclose(self) -> None:
        """Cancel background refreshes and close the transport if this client made it."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._owns_transport and isinstance(self._transport, AiohttpTransport):
            await self._transport.aclose()

    async def __aenter__(self) -> OCSPClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _usable(self, result: OCSPResult, now: dt.datetime) -> bool:
        if now - result.this_update > dt.timedelta(seconds=self._max_age_s):
            return False
        return result.next_update is None or result.next_update >= now

    def _due(self, result: OCSPResult, now: dt.datetime) -> bool:
        if now - result.this_update >= self._refresh_after:
            return True
        return result.next_update is not None and result.next_update - now <= self._refresh_after

    def _start_fetch(
        self, key: _Key, cert: x509.Certificate, issuer: x509.Certificate, url: str | None
    ) -> asyncio.Task[OCSPResult]:
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(
                self._fetch_and_store(key, cert, issuer, url)
            )
            self._inflight[key] = task
            task.add_done_callback(lambda t: self._fetch_done(key, t))
        return task

    async def _fetch_and_store(
        self, key: _Key, cert: x509.Certificate, issuer: x509.Certificate, url: str | None
    ) -> OCSPResult:
        result = await self.fetch(cert, issuer, url=url)
        with self._lock:
            self._cache[key] = result
        return result

    def _fetch_done(self, key: _Key, task: asyncio.Task[OCSPResult]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if task.cancelled():
            return
        exc = task.exception()  # retrieved here, so a background failure is never "unseen"
        if exc is not None:
            _log.warning("OCSP refresh of serial %x failed: %s", key[1], exc)


# -- validation helpers -----------------------------------------------------------------------


def _check_encoding(der: bytes) -> None:
    """Whole-octet signatures (module docstring); ``der`` is a successful response that
    cryptography has already parsed as DER."""
    try:
        basic = asn1_ocsp.OCSPResponse.load(der)["response_bytes"]["response"].parsed
        signatures = [("the response's signature", basic["signature"])]
        for index, cert in enumerate(basic["certs"] or ()):
            signatures.append((f"the signature of certificate {index}", cert["signature_value"]))
        for name, value in signatures:
            if value.contents[:1] != b"\x00":
                raise ValueError(f"{name} is not a whole number of octets")
    except (ValueError, TypeError, KeyError) as exc:
        raise OCSPError(f"OCSP response is malformed: {exc}") from exc


def _matching_single(
    response: ocsp.OCSPResponse, cert: x509.Certificate, issuer: x509.Certificate
) -> ocsp.OCSPSingleResponse:
    for single in response.responses:
        if single.serial_number != cert.serial_number:
            continue
        try:
            algorithm = single.hash_algorithm
        except UnsupportedAlgorithm:
            continue
        if algorithm.name not in CERT_ID_HASHES:
            continue
        if single.issuer_name_hash == issuer_name_hash(
            issuer, algorithm
        ) and single.issuer_key_hash == issuer_key_hash(issuer, algorithm):
            return single
    raise OCSPError(
        f"OCSP response has no answer about certificate {cert.serial_number:x} "
        f"of {issuer.subject.rfc4514_string()}"
    )


def _signer(
    response: ocsp.OCSPResponse, issuer: x509.Certificate, now: dt.datetime
) -> x509.Certificate:
    if _is_responder(response, issuer):
        return issuer
    for candidate in response.certificates:
        if not _is_responder(response, candidate):
            continue
        _check_delegation(candidate, issuer, now)
        return candidate
    raise OCSPError("OCSP response is signed neither by the issuer nor by a certificate it carries")


def _is_responder(response: ocsp.OCSPResponse, cert: x509.Certificate) -> bool:
    key_hash = response.responder_key_hash
    if key_hash is not None:
        return key_hash == issuer_key_hash(cert, hashes.SHA1())  # noqa: S303  (RFC 6960 KeyHash)
    return response.responder_name == cert.subject


def _check_delegation(signer: x509.Certificate, issuer: x509.Certificate, now: dt.datetime) -> None:
    try:
        signer.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm) as exc:
        raise OCSPError(
            f"OCSP responder certificate {signer.subject.rfc4514_string()} was not issued "
            f"by {issuer.subject.rfc4514_string()}"
        ) from exc
    try:
        eku = signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        eku = x509.ExtendedKeyUsage([])
    if ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
        raise OCSPError("OCSP responder certificate lacks the OCSPSigning extended key usage")
    try:
        usage = signer.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None and not usage.digital_signature:
        raise OCSPError("OCSP responder certificate may not make digital signatures")
    if not signer.not_valid_before_utc <= now <= signer.not_valid_after_utc:
        raise OCSPError(
            f"OCSP responder certificate is not valid at {now.isoformat()} "
            f"({signer.not_valid_before_utc.isoformat()} to "
            f"{signer.not_valid_after_utc.isoformat()})"
        )


def _verify_signature(response: ocsp.OCSPResponse, signer: x509.Certificate) -> None:
    key = signer.public_key()
    data, signature = response.tbs_response_bytes, response.signature
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(_hash_of(response)))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), _hash_of(response))
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            if response.signature_hash_algorithm is not None:
                raise OCSPError("OCSP signature algorithm does not match the responder key")
            key.verify(signature, data)
        else:
            raise OCSPError(f"OCSP responder key type {type(key).__name__} is not supported")
    except InvalidSignature as exc:
        raise OCSPError("OCSP response signature does not verify") from exc


def _hash_of(response: ocsp.OCSPResponse) -> hashes.HashAlgorithm:
    algorithm = response.signature_hash_algorithm
    if algorithm is None:
        raise OCSPError("OCSP signature algorithm does not match the responder key")
    return algorithm


def _check_nonce(
    response: ocsp.OCSPResponse, expected: bytes | None, *, require_nonce: bool
) -> None:
    if expected is None:
        return
    try:
        echoed = response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        if require_nonce:
            raise OCSPError("OCSP response does not echo the request nonce") from None
        return
    if echoed != expected:
        raise OCSPError("OCSP response nonce differs from the request nonce")
