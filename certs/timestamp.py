"""RFC 3161 time-stamp client and verifier.

:func:`build_query` makes a ``TimeStampReq``; :class:`TimestampClient` sends one over
HTTP and verifies the reply; :func:`verify_reply` checks a ``TimeStampResp`` just
received and :func:`verify_token` a stored token (for an auditor, years later).

What a successful verification guarantees (each rule has a test in ``tests/test_tsa.py``;
any failure raises :class:`~certs.errors.TimestampError` with code ``timestamp_invalid``
and a message naming the rule):

* The reply's status is granted or grantedWithMods and it carries a token.
* The token is a CMS ``ContentInfo`` holding a version 3 ``SignedData`` with exactly one
  signer (whose ``SignerInfo`` is DER: re-encoding it gives the same bytes, and whose
  identifier matches the certificate's issuer name byte for byte),
  whose encapsulated content type is ``id-ct-TSTInfo`` and whose content is present.
* The signer has signed attributes, each attribute type at most once; contentType is
  ``id-ct-TSTInfo``; messageDigest equals the hash, with the signer's digest algorithm
  (SHA-256/384/512), of the exact encapsulated ``TSTInfo`` octets.
* The signer certificate is found among the token's certificates and the given untrusted
  ones by its signer identifier (issuer and serial number, or subject key identifier),
  and the first ``ESSCertIDv2`` of the signingCertificateV2 attribute (RFC 5816) carries
  its hash (and, when present, its issuer and serial). The older signingCertificate
  (SHA-1) attribute alone is not enough.
* The signature over the signed attributes, exactly as received, verifies with that
  certificate's key: ECDSA or RSA PKCS#1 v1.5 with the digest algorithm, or Ed25519
  (then the digest algorithm must be SHA-512, RFC 8419).
* The signer certificate has a critical extended key usage of timeStamping and nothing
  else (RFC 3161 §2.3); its key usage, if present, is digitalSignature and/or
  nonRepudiation only (as ``openssl ts -verify`` requires).
* Each certificate of the path from the signer to a trusted root is signed by the next
  (``verify_directly_issued_by``), every issuer is a CA (basicConstraints, keyCertSign,
  path length), and every certificate, the root included, is valid at the verification
  time: the token's ``genTime`` unless ``at`` is given.
* The ``TSTInfo`` is version 1, its message imprint uses SHA-256/384/512 and equals the
  hash of the caller's data (or the caller's digest); its nonce equals the caller's when
  the caller sent one; its policy equals the caller's when the caller asks for one.

Not checked here: revocation of the TSA certificate (OCSP is the caller's, through
``certs.validation``), and the freshness of ``genTime`` (the nonce binds a reply to its
request).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

import aiohttp
from asn1crypto import cms, core, tsp
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import ExtendedKeyUsageOID

from certs.der import check_der
from certs.errors import CertificateError, TimestampError
from certs.profiles import Profile
from certs.validation import TrustStore, ValidatedPath, validate_path
from serai.errors import ErrorCode

__all__ = [
    "IMPRINT_HASHES",
    "TIMESTAMP_QUERY",
    "TIMESTAMP_REPLY",
    "TimeStampRespStructure",
    "TimestampClient",
    "TimestampToken",
    "build_query",
    "new_nonce",
    "verify_reply",
    "verify_token",
]

#: Media type of a request (RFC 3161 §3.4).
TIMESTAMP_QUERY: Final = "application/timestamp-query"
#: Media type of a response (RFC 3161 §3.4).
TIMESTAMP_REPLY: Final = "application/timestamp-reply"
#: Hash algorithms accepted for message imprints and CMS digests, with digest sizes.
IMPRINT_HASHES: Final[dict[str, int]] = {"sha256": 32, "sha384": 48, "sha512": 64}
#: Longest certification path accepted, trust anchor included.
_MAX_PATH: Final = 6
#: What asn1crypto and cryptography raise on malformed input (cryptography parses
#: certificate extensions lazily, so a malformed one surfaces on use).
_FOREIGN_ERRORS: Final = (
    ValueError,
    TypeError,
    KeyError,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
    UnsupportedAlgorithm,
)
_CRYPTO_HASHES: Final[dict[str, type[hashes.HashAlgorithm]]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


class TimeStampRespStructure(tsp.TimeStampResp):  # type: ignore[misc]
    """``TimeStampResp`` as RFC 3161 §2.4.2 defines it: the token is OPTIONAL.

    (asn1crypto 1.5 declares it mandatory, so it can neither build nor parse a rejection.)
    """

    _fields = [  # noqa: RUF012  (asn1crypto's class-level schema)
        ("status", tsp.PKIStatusInfo),
        ("time_stamp_token", cms.ContentInfo, {"optional": True}),
    ]


@dataclass(frozen=True, slots=True, kw_only=True)
class TimestampToken:
    """A verified time-stamp token and what it attests.

    ``token_der`` is the ``ContentInfo`` exactly as received: store these bytes, they are
    what :func:`verify_token` and ``openssl ts -verify -token_in`` check.
    """

    token_der: bytes
    gen_time: dt.datetime
    serial_number: int
    policy: str
    hash_name: str
    message_digest: bytes
    nonce: int | None
    accuracy: dt.timedelta | None
    tsa_certificate: x509.Certificate
    #: The validated path: the TSA certificate, its issuers, and the trusted root.
    chain: tuple[x509.Certificate, ...]


def new_nonce() -> int:
    """A fresh random 64-bit nonce (positive), as ``openssl ts -query`` makes."""
    return secrets.randbits(63) | 1 << 62


def build_query(
    data: bytes | None = None,
    *,
    digest: bytes | None = None,
    hash_name: str = "sha256",
    nonce: int | None,
    cert_req: bool = True,
    policy: str | None = None,
) -> bytes:
    """A DER ``TimeStampReq`` for ``data`` (hashed here) or a precomputed ``digest``.

    Exactly one of ``data`` and ``digest`` is given; ``hash_name`` is sha256, sha384 or
    sha512. Pass ``nonce=new_nonce()`` unless there is a reason not to.
    """
    imprint = _imprint(data, digest, hash_name)
    fields: dict[str, Any] = {
        "version": "v1",
        "message_imprint": {"hash_algorithm": {"algorithm": hash_name}, "hashed_message": imprint},
        "cert_req": cert_req,
    }
    if policy is not None:
        fields["req_policy"] = policy
    if nonce is not None:
        fields["nonce"] = nonce
    der: bytes = tsp.TimeStampReq(fields).dump()
    return der


def verify_reply(
    reply_der: bytes,
    *,
    data: bytes | None = None,
    digest: bytes | None = None,
    hash_name: str | None = None,
    nonce: int | None,
    trusted_roots: Sequence[x509.Certificate],
    untrusted: Sequence[x509.Certificate] = (),
    policy: str | None = None,
    at: dt.datetime | None = None,
) -> TimestampToken:
    """Verify a DER ``TimeStampResp`` for ``data`` (or ``digest`` made with ``hash_name``).

    ``nonce`` is the one sent in the query (``None`` if none was). Certificates are
    checked at ``at``, by default the token's ``genTime``. Raises :class:`TimestampError`.
    """
    try:
        response = TimeStampRespStructure.load(reply_der, strict=True)
        status = response["status"]["status"].native
        status_text = response["status"]["status_string"].native
        fail_info = response["status"]["fail_info"].native
        token = response["time_stamp_token"]
        has_token = not isinstance(token, core.Void)
        token_der: bytes = token.dump() if has_token else b""
    except (ValueError, TypeError, KeyError) as exc:
        raise _invalid("reply is not a DER TimeStampResp") from exc
    if status not in ("granted", "granted_with_mods"):
        detail = "; ".join(status_text or [])
        failures = ", ".join(sorted(fail_info or []))
        raise _invalid(
            f"TSA refused: status {status}"
            + (f", failInfo {failures}" if failures else "")
            + (f": {detail}" if detail else "")
        )
    if not has_token:
        raise _invalid(f"reply has status {status} but no token")
    return verify_token(
        token_der,
        data=data,
        digest=digest,
        hash_name=hash_name,
        nonce=nonce,
        trusted_roots=trusted_roots,
        untrusted=untrusted,
        policy=policy,
        at=at,
    )


def verify_token(
    token_der: bytes,
    *,
    data: bytes | None = None,
    digest: bytes | None = None,
    hash_name: str | None = None,
    nonce: int | None = None,
    trusted_roots: Sequence[x509.Certificate] | TrustStore,
    untrusted: Sequence[x509.Certificate] = (),
    policy: str | None = None,
    at: dt.datetime | None = None,
    validate: Callable[..., ValidatedPath] = validate_path,
) -> TimestampToken:
    """Verify a stored DER time-stamp token (a CMS ``ContentInfo``).

    Certificates are checked at the token's ``genTime`` unless ``at`` is given, so a
    token stays verifiable after its TSA certificate expires. See the module docstring
    for every rule. ``trusted_roots`` may be a :class:`~certs.validation.TrustStore` of
    them (its intermediates help build the path); ``validate`` is called as
    :func:`~certs.validation.validate_path` is, and must answer as it does (a caller's
    cache of it). Raises :class:`TimestampError`.
    """
    if (data is None) == (digest is None):
        raise TimestampError("give exactly one of data and digest", code=ErrorCode.INVALID_REQUEST)
    if digest is not None and hash_name is None:
        raise TimestampError("a digest needs its hash_name", code=ErrorCode.INVALID_REQUEST)
    try:
        return _verify_token(
            token_der,
            data=data,
            digest=digest,
            hash_name=hash_name,
            nonce=nonce,
            trusted_roots=trusted_roots,
            untrusted=untrusted,
            policy=policy,
            at=at,
            validate=validate,
        )
    except _FOREIGN_ERRORS as exc:
        # cryptography parses certificate fields lazily: a malformed one surfaces on use.
        raise _invalid(f"token holds a malformed structure or certificate: {exc}") from exc


def _verify_token(
    token_der: bytes,
    *,
    data: bytes | None,
    digest: bytes | None,
    hash_name: str | None,
    nonce: int | None,
    trusted_roots: Sequence[x509.Certificate] | TrustStore,
    untrusted: Sequence[x509.Certificate],
    policy: str | None,
    at: dt.datetime | None,
    validate: Callable[..., ValidatedPath],
) -> TimestampToken:
    parsed = _parse_token(token_der)
    tst = parsed.tst_info
    if tst.hash_name not in IMPRINT_HASHES:
        raise _invalid(f"message imprint uses {tst.hash_name}, not SHA-256/384/512")
    if digest is not None:
        if hash_name != tst.hash_name:
            raise _invalid(f"message imprint uses {tst.hash_name}, expected {hash_name}")
        expected = digest
    else:
        assert data is not None  # exactly one of them, checked above
        expected = hashlib.new(tst.hash_name, data).digest()
    if not hmac.compare_digest(expected, tst.message_digest):
        raise _invalid("message imprint does not match the data")
    if nonce is not None and tst.nonce != nonce:
        raise _invalid(
            "token has no nonce" if tst.nonce is None else "token nonce differs from ours"
        )
    if policy is not None and tst.policy != policy:
        raise _invalid(f"token policy {tst.policy} is not the requested {policy}")

    signer = _find_signer(parsed.signer_info, [*parsed.certificates, *untrusted])
    _check_ess(parsed.signed_attrs, signer)
    _check_signature(parsed.signer_info, parsed.signed_attrs_der, signer)
    _check_tsa_usage(signer)
    when = at if at is not None else tst.gen_time
    chain = _validate_path(
        signer, [*parsed.certificates, *untrusted], trusted_roots, when, validate
    )
    return TimestampToken(
        token_der=token_der,
        gen_time=tst.gen_time,
        serial_number=tst.serial_number,
        policy=tst.policy,
        hash_name=tst.hash_name,
        message_digest=tst.message_digest,
        nonce=tst.nonce,
        accuracy=tst.accuracy,
        tsa_certificate=signer,
        chain=tuple(chain),
    )


class TimestampClient:
    """Obtains verified time-stamp tokens from a TSA over HTTP (RFC 3161 §3.4).

    Network failures, timeouts and HTTP errors raise :class:`TimestampError` with code
    ``tsa_unavailable``; a reply that does not verify, ``timestamp_invalid``. Use as an
    async context manager or call :meth:`aclose`; pass ``session`` to share one.
    """

    def __init__(
        self,
        url: str,
        *,
        trusted_roots: Sequence[x509.Certificate],
        untrusted: Sequence[x509.Certificate] = (),
        timeout_s: float = 10.0,
        hash_name: str = "sha256",
        policy: str | None = None,
        max_reply_bytes: int = 1024 * 1024,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if hash_name not in IMPRINT_HASHES:
            raise TimestampError(
                f"hash {hash_name} is not one of {', '.join(IMPRINT_HASHES)}",
                code=ErrorCode.INVALID_CONFIG,
            )
        self.url = url
        self._trusted_roots = list(trusted_roots)
        self._untrusted = list(untrusted)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._hash_name = hash_name
        self._policy = policy
        self._max_reply_bytes = max_reply_bytes
        self._session = session
        self._owns_session = session is None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP session if this client opened it."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def timestamp(self, data: bytes) -> TimestampToken:
        """A verified token over ``data`` (hashed here with the client's hash)."""
        digest = hashlib.new(self._hash_name, data).digest()
        return await self.timestamp_digest(digest)

    async def timestamp_digest(self, digest: bytes) -> TimestampToken:
        """A verified token over a digest already made with the client's hash."""
        nonce = new_nonce()
        query = build_query(
            digest=digest, hash_name=self._hash_name, nonce=nonce, policy=self._policy
        )
        reply = await self._post(query)
        return verify_reply(
            reply,
            digest=digest,
            hash_name=self._hash_name,
            nonce=nonce,
            trusted_roots=self._trusted_roots,
            untrusted=self._untrusted,
            policy=self._policy,
        )

    async def _post(self, query: bytes) -> bytes:
        """POST ``query``; the one place network errors become ``tsa_unavailable``."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.post(
                self.url,
                data=query,
                headers={"Content-Type": TIMESTAMP_QUERY, "Accept": TIMESTAMP_REPLY},
                timeout=self._timeout,
            ) as response:
                if response.status != 200:
                    raise _unavailable(f"TSA {self.url} answered HTTP {response.status}")
                if response.content_type != TIMESTAMP_REPLY:
                    raise _invalid(
                        f"TSA {self.url} answered Content-Type {response.content_type!r}, "
                        f"not {TIMESTAMP_REPLY}"
                    )
                body = await response.content.read(self._max_reply_bytes + 1)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise _unavailable(f"TSA {self.url} cannot be reached: {exc!r}") from exc
        if len(body) > self._max_reply_bytes:
            raise _invalid(f"TSA reply exceeds {self._max_reply_bytes} bytes")
        return body


# -- parsing --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _TSTInfo:
    policy: str
    hash_name: str
    message_digest: bytes
    serial_number: int
    gen_time: dt.datetime
    accuracy: dt.timedelta | None
    nonce: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class _ParsedToken:
    tst_info: _TSTInfo
    certificates: list[x509.Certificate]
    signer_info: Any
    signed_attrs: dict[str, Any]
    signed_attrs_der: bytes


def _parse_token(token_der: bytes) -> _ParsedToken:
    try:
        content_info = cms.ContentInfo.load(token_der, strict=True)
        content_type = content_info["content_type"].native
    except (ValueError, TypeError, KeyError) as exc:
        raise _invalid("token is not a DER ContentInfo") from exc
    if content_type != "signed_data":
        raise _invalid(f"token content type is {content_type}, not signedData")
    try:
        signed_data = content_info["content"]
        version = signed_data["version"].native
        # Parsed in full: these fields are outside the signature, so nothing in them may
        # pass unchecked.
        digest_algorithms = [a["algorithm"] for a in signed_data["digest_algorithms"].native]
        encap = signed_data["encap_content_info"]
        econtent_type = encap["content_type"].dotted
        econtent = encap["content"]
        signer_infos = signed_data["signer_infos"]
        n_signers = len(signer_infos)
        raw_certs = signed_data["certificates"]
        cert_ders = (
            []
            if isinstance(raw_certs, core.Void)
            else [c.chosen.dump() for c in raw_certs if c.name == "certificate"]
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise _invalid("token is not a well-formed SignedData") from exc
    if version != "v3":
        raise _invalid(f"SignedData version is {version}, expected v3 (RFC 5652 §5.1)")
    if econtent_type != _TST_INFO_OID:
        raise _invalid(f"encapsulated content type is {econtent_type}, not id-ct-TSTInfo")
    if isinstance(econtent, core.Void):
        raise _invalid("token has no encapsulated TSTInfo")
    if n_signers != 1:
        raise _invalid(f"token has {n_signers} signers, expected exactly one")
    try:
        with warnings.catch_warnings():
            # cryptography only warns about some RFC 5280 violations (a serial <= 0);
            # a certificate in a token we are to trust gets no such leniency.
            warnings.simplefilter("error", CryptographyDeprecationWarning)
            certificates = [x509.load_der_x509_certificate(d) for d in cert_ders]
    except (ValueError, x509.InvalidVersion, CryptographyDeprecationWarning) as exc:
        raise _invalid("token carries a malformed certificate") from exc
    econtent_bytes: bytes = econtent.contents
    signer_info = signer_infos[0]
    signer_der = signer_info.dump()  # as received: nothing of it has been parsed yet
    _check_signer_info_encoding(signer_der)
    try:
        # The rest is parsed where it is used; unsigned attributes, which nothing else
        # reads, are parsed here in full so nothing malformed in them passes.
        signer_info["unsigned_attrs"].native  # noqa: B018
    except (ValueError, TypeError, KeyError) as exc:
        raise _invalid("token signer info is malformed") from exc
    signed_attrs, signed_attrs_der = _parse_signed_attrs(cms.SignerInfo.load(signer_der))
    digest_name = _digest_name(signer_info)
    if digest_name not in digest_algorithms:
        raise _invalid(f"SignedData digestAlgorithms does not list the signer's {digest_name}")
    expected = hashlib.new(digest_name, econtent_bytes).digest()
    if not hmac.compare_digest(signed_attrs["message_digest"], expected):
        raise _invalid("messageDigest does not match the encapsulated TSTInfo")
    return _ParsedToken(
        tst_info=_parse_tst_info(econtent_bytes),
        certificates=certificates,
        signer_info=signer_info,
        signed_attrs=signed_attrs,
        signed_attrs_der=signed_attrs_der,
    )


_TST_INFO_OID: Final = "1.2.840.113549.1.9.16.1.4"
#: A SignerInfo's [0] IMPLICIT signed and [1] IMPLICIT unsigned attributes: SETs OF.
_SIGNER_INFO_SET_OF_TAGS: Final = (0xA0, 0xA1)


#: The SignerInfo's fields outside the signature whose schema is re-encoded to compare.
_SIGNER_INFO_PLAIN_FIELDS: Final = (
    "version",
    "sid",
    "digest_algorithm",
    "signature_algorithm",
    "signature",
)


def _check_signer_info_encoding(signer_der: bytes) -> None:
    """One encoding only for the SignerInfo, whose bytes the signature mostly does not
    cover, so no byte of a stored token can change while it still verifies:

    - strict DER throughout (:func:`certs.der.check_der`, linear in the input);
    - the fields outside the signature that have no attributes (version, signer
      identifier, algorithms, signature value) re-encode to the same bytes under their
      schema, so a lenient parse (a field read as another) is caught too;
    - the signed attributes need no more: the signature covers their bytes. The
      unsigned attributes are parsed in full by the caller.

    Re-encoding the whole SignerInfo with asn1crypto, as before, took 60 to 170 ms per
    token: its forced re-encoding costs time exponential in the schema's depth, and the
    ESS signing-certificate attribute is deep."""
    try:
        check_der(signer_der, set_of_tags=_SIGNER_INFO_SET_OF_TAGS)
    except ValueError as exc:
        raise _invalid(f"token signer info is not DER-encoded: {exc}") from exc
    try:
        copy = cms.SignerInfo.load(signer_der, strict=True)
        for name in _SIGNER_INFO_PLAIN_FIELDS:
            part = copy[name]
            raw = part.dump()
            if type(part).load(raw, strict=True).dump(force=True) != raw:
                raise _invalid(f"token signer info's {name} is not in its one encoding")
    except (ValueError, TypeError, KeyError) as exc:
        if isinstance(exc, TimestampError):
            raise
        raise _invalid("token signer info is malformed") from exc


def _parse_signed_attrs(signer_info: Any) -> tuple[dict[str, Any], bytes]:
    """The signed attributes by name, and their DER as the signature covers it."""
    try:
        attrs = signer_info["signed_attrs"]
        if isinstance(attrs, core.Void) or len(attrs) == 0:
            raise _invalid("token signer has no signed attributes")
        # RFC 5652 §5.4: the signature is over the DER with an explicit SET OF tag.
        der = b"\x31" + attrs.dump()[1:]
        by_type: dict[str, Any] = {}
        for attr in attrs:
            name = attr["type"].native
            if name in by_type:
                raise _invalid(f"signed attribute {name} appears more than once")
            by_type[name] = attr["values"]
        result: dict[str, Any] = {}
        for name in ("content_type", "message_digest"):
            values = by_type.get(name)
            if values is None:
                raise _invalid(f"signed attribute {name} is missing")
            if len(values) != 1:
                raise _invalid(f"signed attribute {name} must have exactly one value")
        if by_type["content_type"][0].dotted != _TST_INFO_OID:
            raise _invalid("signed contentType is not id-ct-TSTInfo")
        result["message_digest"] = by_type["message_digest"][0].native
        result["signing_certificate_v2"] = by_type.get("signing_certificate_v2")
    except (ValueError, TypeError, KeyError) as exc:
        raise _invalid("token signed attributes are malformed") from exc
    return result, der


def _digest_name(signer_info: Any) -> str:
    try:
        name: str = signer_info["digest_algorithm"]["algorithm"].native
    except (ValueError, TypeError, KeyError) as exc:
        raise _invalid("signer digest algorithm is malformed") from exc
    if name not in IMPRINT_HASHES:
        raise _invalid(f"signer digest algorithm {name} is not SHA-256/384/512")
    return name


def _parse_tst_info(der: bytes) -> _TSTInfo:
    try:
        tst = tsp.TSTInfo.load(der, strict=True)
        version = tst["version"].native
        imprint = tst["message_imprint"]
        hash_name = imprint["hash_algorithm"]["algorithm"].native
        params = imprint["hash_algorithm"]["parameters"]
        message_digest = imprint["hashed_message"].native
        gen_time = tst["gen_time"].native
        accuracy = tst["accuracy"]
        nonce = tst["nonce"].native
        result = _TSTInfo(
            policy=tst["policy"].dotted,
            hash_name=hash_name,
            message_digest=message_digest,
            serial_number=tst["serial_number"].native,
            gen_time=gen_time,
            accuracy=None if isinstance(accuracy, core.Void) else _accuracy(accuracy),
            nonce=nonce,
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise _invalid("encapsulated content is not a DER TSTInfo") from exc
    if version != "v1":
        raise _invalid(f"TSTInfo version is {version}, expected v1")
    if not isinstance(params, core.Void | core.Null):
        raise _invalid("message imprint hash algorithm has parameters")
    if not isinstance(gen_time, dt.datetime) or gen_time.tzinfo is None:
        raise _invalid("TSTInfo genTime is not a usable UTC time")
    return result


def _accuracy(value: Any) -> dt.timedelta:
    return dt.timedelta(
        seconds=value["seconds"].native or 0,
        milliseconds=value["millis"].native or 0,
        microseconds=value["micros"].native or 0,
    )


# -- signer ---------------------------------------------------------------------------------


def _find_signer(signer_info: Any, candidates: Sequence[x509.Certificate]) -> x509.Certificate:
    try:
        sid = signer_info["sid"]
        # RFC 5652 §5.3: version 1 with issuerAndSerialNumber, 3 with subjectKeyIdentifier.
        # The version is outside the signature; pinning it leaves no byte of a stored
        # token that can change without verification failing.
        expected_version = "v1" if sid.name == "issuer_and_serial_number" else "v3"
        if signer_info["version"].native != expected_version:
            raise _invalid(
                f"SignerInfo version is {signer_info['version'].native}, "
                f"RFC 5652 requires {expected_version} for this signer identifier"
            )
        if sid.name == "issuer_and_serial_number":
            if sid.chosen.tag != 16:  # asn1crypto would read a SET here as the SEQUENCE
                raise _invalid("signer identifier is not a SEQUENCE")
            issuer = sid.chosen["issuer"]
            serial = sid.chosen["serial_number"].native
            for cert in candidates:
                # Exact bytes, not RFC 5280 name matching: the identifier is outside the
                # signature, so it must not be alterable in any way that still matches.
                if cert.serial_number == serial and issuer.dump() == cert.issuer.public_bytes():
                    return cert
        else:
            ski = sid.chosen.native
            for cert in candidates:
                try:
                    ext = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
                except x509.ExtensionNotFound:
                    continue
                if ext.value.digest == ski:
                    return cert
    except (ValueError, TypeError, KeyError) as exc:
        raise _invalid("signer identifier is malformed") from exc
    raise _invalid("the signer certificate is neither in the token nor among the given ones")


def _check_ess(signed_attrs: dict[str, Any], signer: x509.Certificate) -> None:
    values = signed_attrs["signing_certificate_v2"]
    if values is None:
        raise _invalid("signed attribute signingCertificateV2 (RFC 5816) is missing")
    try:
        if len(values) != 1:
            raise _invalid("signingCertificateV2 must have exactly one value")
        certs = values[0]["certs"]
        if len(certs) == 0:
            raise _invalid("signingCertificateV2 names no certificate")
        first = certs[0]
        hash_name = first["hash_algorithm"]["algorithm"].native
        cert_hash = first["cert_hash"].native
        issuer_serial = first["issuer_serial"]
        if hash_name not in IMPRINT_HASHES:
            raise _invalid(f"ESSCertIDv2 uses {hash_name}, not SHA-256/384/512")
        der = signer.public_bytes(serialization.Encoding.DER)
        if not hmac.compare_digest(hashlib.new(hash_name, der).digest(), cert_hash):
            raise _invalid("ESSCertIDv2 hash does not match the signer certificate")
        if not isinstance(issuer_serial, core.Void):
            issuer = signer.issuer.public_bytes()
            names = [g.chosen for g in issuer_serial["issuer"] if g.name == "directory_name"]
            if issuer_serial["serial_number"].native != signer.serial_number or not any(
                n.chosen.dump() == issuer
                for n in names  # the RDNSequence, untagged
            ):
                raise _invalid("ESSCertIDv2 issuer and serial do not match the signer certificate")
    except (ValueError, TypeError, KeyError) as exc:
        raise _invalid("signingCertificateV2 is malformed") from exc


def _check_signature(signer_info: Any, signed_attrs_der: bytes, signer: x509.Certificate) -> None:
    digest_name = _digest_name(signer_info)
    try:
        algorithm = signer_info["signature_algorithm"]
        sig_algo = algorithm.signature_algo
        try:
            sig_hash: str | None = algorithm.hash_algo
        except ValueError:
            sig_hash = None
        signature: bytes = signer_info["signature"].native
    except (ValueError, TypeError, KeyError) as exc:
        raise _invalid("signer signature algorithm is malformed or unsupported") from exc
    public_key = signer.public_key()
    hash_algorithm = _CRYPTO_HASHES[digest_name]()
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey) and sig_algo == "ecdsa":
            _same_hash(sig_hash, digest_name)
            public_key.verify(signature, signed_attrs_der, ec.ECDSA(hash_algorithm))
        elif isinstance(public_key, rsa.RSAPublicKey) and sig_algo == "rsassa_pkcs1v15":
            _same_hash(sig_hash, digest_name)
            public_key.verify(signature, signed_attrs_der, padding.PKCS1v15(), hash_algorithm)
        elif isinstance(public_key, ed25519.Ed25519PublicKey) and sig_algo == "ed25519":
            if digest_name != "sha512":
                raise _invalid("an Ed25519 signer must use SHA-512 (RFC 8419)")
            public_key.verify(signature, signed_attrs_der)
        else:
            raise _invalid(
                f"signature algorithm {sig_algo} does not fit the signer's "
                f"{type(public_key).__name__} key (supported: ECDSA, RSA PKCS#1 v1.5, Ed25519)"
            )
    except InvalidSignature as exc:
        raise _invalid("token signature does not verify with the signer certificate") from exc


def _same_hash(sig_hash: str | None, digest_name: str) -> None:
    if sig_hash is not None and sig_hash != digest_name:
        raise _invalid(
            f"signature algorithm hashes with {sig_hash} but the digest algorithm is {digest_name}"
        )


def _check_tsa_usage(cert: x509.Certificate) -> None:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound as exc:
        raise _invalid("signer certificate has no extended key usage") from exc
    if list(eku.value) != [ExtendedKeyUsageOID.TIME_STAMPING]:
        raise _invalid("signer certificate extended key usage must be timeStamping only")
    if not eku.critical:
        raise _invalid("signer certificate extended key usage must be critical")
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    allowed = ku.digital_signature or ku.content_commitment
    others = (
        ku.key_encipherment
        or ku.data_encipherment
        or ku.key_agreement
        or ku.key_cert_sign
        or ku.crl_sign
    )
    if not allowed or others:
        raise _invalid(
            "signer certificate key usage must be digitalSignature and/or nonRepudiation only"
        )


def _validate_path(
    leaf: x509.Certificate,
    pool: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate] | TrustStore,
    when: dt.datetime,
    validate: Callable[..., ValidatedPath],
) -> list[x509.Certificate]:
    """The path from ``leaf`` to a trusted root, by the rules of :mod:`certs.validation`
    for a time-stamping certificate, at ``when``."""
    try:
        path = validate(
            leaf,
            intermediates=pool,
            trust=roots if isinstance(roots, TrustStore) else TrustStore(roots=roots),
            at=when,
            purpose=Profile.TSA,
            revocation=None,
        )
    except CertificateError as exc:
        raise _invalid(f"TSA certificate: {exc.message}") from exc
    return list(path.certificates)


def _check_validity(cert: x509.Certificate, when: dt.datetime) -> None:
    if not cert.not_valid_before_utc <= when <= cert.not_valid_after_utc:
        raise _invalid(
            f"certificate {cert.subject.rfc4514_string()!r} is not valid at "
            f"{when.isoformat()} (valid {cert.not_valid_before_utc.isoformat()} to "
            f"{cert.not_valid_after_utc.isoformat()})"
        )


# -- helpers --------------------------------------------------------------------------------


def _imprint(data: bytes | None, digest: bytes | None, hash_name: str) -> bytes:
    if hash_name not in IMPRINT_HASHES:
        raise TimestampError(
            f"hash {hash_name} is not one of {', '.join(IMPRINT_HASHES)}",
            code=ErrorCode.INVALID_REQUEST,
        )
    if (data is None) == (digest is None):
        raise TimestampError("give exactly one of data and digest", code=ErrorCode.INVALID_REQUEST)
    if digest is None:
        assert data is not None
        return hashlib.new(hash_name, data).digest()
    if len(digest) != IMPRINT_HASHES[hash_name]:
        raise TimestampError(
            f"a {hash_name} digest is {IMPRINT_HASHES[hash_name]} bytes, got {len(digest)}",
            code=ErrorCode.INVALID_REQUEST,
        )
    return digest


def _invalid(message: str) -> TimestampError:
    return TimestampError(message, code=ErrorCode.TIMESTAMP_INVALID)


def _unavailable(message: str) -> TimestampError:
    return TimestampError(message, code=ErrorCode.TSA_UNAVAILABLE)
