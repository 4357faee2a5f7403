"""A time-stamping authority (RFC 3161, with the ESS signing certificate of RFC 5816).

:class:`TimeStampAuthority` turns a DER ``TimeStampReq`` into a DER ``TimeStampResp``;
:func:`create_app` puts it behind HTTP (RFC 3161 §3.4). The core knows nothing of
HTTP, files or the clock beyond the ``clock`` it is given.

Invariants of :meth:`TimeStampAuthority.respond` (each has a test in
``tests/test_tsa.py``):

* It never raises and always returns a well-formed DER ``TimeStampResp``. Input that is
  not a DER ``TimeStampReq`` (malformed, BER, trailing bytes, wrong version, wrong
  digest length) is refused with ``rejection`` / ``badDataFormat``; an unexpected
  internal failure with ``rejection`` / ``systemFailure`` and a fixed text (no detail of
  the failure leaves the process).
* A token is issued only for a message imprint hashed with SHA-256, SHA-384 or SHA-512
  with absent or NULL parameters; any other algorithm (SHA-1, MD5, ...) is refused with
  ``badAlg``.
* A request naming a policy other than ours is refused with ``unacceptedPolicy``; a
  request carrying any extension with ``unacceptedExtension`` (we implement none).
* A granted token is a CMS ``SignedData`` (version 3) whose encapsulated content is a
  ``TSTInfo`` (``id-ct-TSTInfo``), signed by one signer identified by issuer and serial
  number, with exactly the signed attributes contentType, messageDigest (of the
  encapsulated ``TSTInfo`` octets) and signingCertificateV2 (an ``ESSCertIDv2`` with the
  SHA-256 of the TSA certificate and its issuer and serial). The signature is over the
  DER of those attributes as a ``SET OF``.
* The ``TSTInfo`` echoes the request's message imprint and nonce, names our policy,
  carries ``genTime`` from the clock (UTC, millisecond resolution), our ``accuracy``,
  ``ordering`` false (omitted, its default) and the TSA's name.
* ``serialNumber`` is 128 bits from the operating system's CSPRNG. Unique with
  overwhelming probability (a collision is expected only after about 2**64 tokens),
  it needs no persisted counter, so restarts, clock changes and several replicas of one
  TSA never reuse a serial.
* The certificates field holds the TSA certificate and its issuing chain (never the
  root) exactly when the request's ``certReq`` is true.

Assumptions: the key and certificate chain given to the constructor belong together and
the certificate is a TSA certificate (both checked at construction); the clock is right.

HTTP (RFC 3161 §3.4 fixes the media types but not the handling of wrong ones; we decide):

* Only ``POST`` is a time-stamp exchange; any other method gets HTTP 405 with
  ``Allow: POST`` and no TSP body.
* A ``POST`` whose ``Content-Type`` is not ``application/timestamp-query`` gets HTTP 415,
  and one whose body exceeds ``max_body_bytes`` gets HTTP 413; both carry a
  ``TimeStampResp`` rejection with ``badDataFormat`` as an ``application/timestamp-reply``
  body, so a client that reads only the HTTP status and one that parses only the TSP
  message both learn precisely why.
* Every other ``POST`` gets HTTP 200 and the ``TimeStampResp`` of :meth:`respond`,
  granted or rejected.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Callable, Sequence
from typing import Any, Final

from aiohttp import web
from asn1crypto import algos, cms, core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from certs.errors import PKIError
from certs.keys import PrivateKey
from certs.profiles import SERAI_OID_ARC
from certs.timestamp import (
    IMPRINT_HASHES,
    TIMESTAMP_QUERY,
    TIMESTAMP_REPLY,
    TimeStampRespStructure,
)
from serai.errors import ErrorCode

__all__ = [
    "DEFAULT_ACCURACY",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_POLICY",
    "TimeStampAuthority",
    "create_app",
]

#: Serai's default time-stamping policy.
DEFAULT_POLICY: Final = SERAI_OID_ARC + ".2.1"
#: Accuracy claimed for ``genTime`` unless told otherwise.
DEFAULT_ACCURACY: Final = dt.timedelta(seconds=1)
#: Largest request body the HTTP endpoint reads (a query is about 60 bytes).
DEFAULT_MAX_BODY_BYTES: Final = 64 * 1024

_INTERNAL_ERROR_TEXT: Final = "internal error"


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class _RefusalError(Exception):
    """A request the TSA refuses: ``failure`` is a PKIFailureInfo bit name."""

    def __init__(self, failure: str, text: str) -> None:
        super().__init__(text)
        self.failure = failure
        self.text = text


class TimeStampAuthority:
    """Issues RFC 3161 time-stamp tokens; see the module docstring for the guarantees.

    ``chain`` is the TSA certificate followed by its issuing CA certificates (the root
    may be left out). ``clock`` returns the current time (aware); tests pass a fixed one.
    Thread-safe: :meth:`respond` keeps no per-request state on the instance.
    """

    def __init__(
        self,
        *,
        key: PrivateKey,
        chain: Sequence[x509.Certificate],
        policy: str = DEFAULT_POLICY,
        accuracy: dt.timedelta = DEFAULT_ACCURACY,
        clock: Callable[[], dt.datetime] = _utc_now,
    ) -> None:
        if not chain:
            raise PKIError("a TSA needs its certificate", code=ErrorCode.INVALID_CONFIG)
        certificate = chain[0]
        _check_tsa_certificate(certificate, key)
        try:
            core.ObjectIdentifier(policy)
        except ValueError as exc:
            raise PKIError(
                f"TSA policy {policy!r} is not a dotted OID", code=ErrorCode.INVALID_CONFIG
            ) from exc
        if accuracy <= dt.timedelta(0) or accuracy >= dt.timedelta(days=1):
            raise PKIError(
                "TSA accuracy must be positive and under a day", code=ErrorCode.INVALID_CONFIG
            )
        self.policy = policy
        self.accuracy = accuracy
        self.certificate = certificate
        self.chain = list(chain)
        self._key = key
        self._clock = clock
        self._digest_name, self._sign = _signer_for(key)
        # Constant parts of every token, first built, then replaced by their parsed form.
        self._parts = _fresh_parts(
            key, chain, digest_name=self._digest_name, policy=policy, accuracy=accuracy
        )
        self._parts = self._parsed_parts()
        # Sent when even building a rejection fails; built once, here, where it can fail loudly.
        self._system_failure = _rejection("system_failure", _INTERNAL_ERROR_TEXT)

    def _parsed_parts(self) -> dict[str, Any]:
        """The constant parts taken from a token built once and parsed back.

        A parsed asn1crypto value dumps its cached bytes, while a built one re-encodes
        itself, certificates and all, on every dump: reusing parsed parts makes a
        response several times cheaper.
        """
        imprint = tsp.MessageImprint(
            {"hash_algorithm": {"algorithm": "sha256"}, "hashed_message": bytes(32)}
        )
        der = self._build(imprint, nonce=1, cert_req=True, gen_time=self._clock())
        signed_data = TimeStampRespStructure.load(der)["time_stamp_token"]["content"]
        signer_info = signed_data["signer_infos"][0]
        attrs = {a["type"].native: a for a in signer_info["signed_attrs"]}
        tst_info = signed_data["encap_content_info"]["content"].parsed
        return {
            "certificates": signed_data["certificates"],
            "digest_algorithms": signed_data["digest_algorithms"],
            "sid": signer_info["sid"],
            "digest_algorithm": signer_info["digest_algorithm"],
            "signature_algorithm": signer_info["signature_algorithm"],
            "content_type_attribute": attrs["content_type"],
            "ess_attribute": attrs["signing_certificate_v2"],
            "policy": tst_info["policy"],
            "accuracy": tst_info["accuracy"],
            "tsa": tst_info["tsa"],
            "granted": TimeStampRespStructure.load(der)["status"],
        }

    def respond(self, der_query: bytes) -> bytes:
        """Answer one DER ``TimeStampReq`` with a DER ``TimeStampResp``. Never raises."""
        try:
            try:
                imprint, nonce, cert_req = self._parse(der_query)
                return self._grant(imprint, nonce, cert_req)
            except _RefusalError as refusal:
                return _rejection(refusal.failure, refusal.text)
            except Exception:  # noqa: BLE001  (the wire gets a fixed text, never a trace)
                return _rejection("system_failure", _INTERNAL_ERROR_TEXT)
        except Exception:  # noqa: BLE001
            return self._system_failure

    def rejection(self, failure: str, text: str) -> bytes:
        """A DER ``TimeStampResp`` refusing with PKIFailureInfo ``failure`` and ``text``."""
        try:
            return _rejection(failure, text)
        except Exception:  # noqa: BLE001
            return self._system_failure

    # -- request --------------------------------------------------------------------------

    def _parse(self, der: bytes) -> tuple[Any, int | None, bool]:
        try:
            request = tsp.TimeStampReq.load(der, strict=True)
            version = request["version"].native
            imprint = request["message_imprint"]
            algorithm = imprint["hash_algorithm"]
            hash_name = algorithm["algorithm"].native
            parameters = algorithm["parameters"]
            digest = imprint["hashed_message"].native
            req_policy = request["req_policy"]
            policy = None if isinstance(req_policy, core.Void) else req_policy.dotted
            nonce = request["nonce"].native
            cert_req = bool(request["cert_req"].native)
            extensions = request["extensions"]
            has_extensions = not isinstance(extensions, core.Void) and len(extensions) > 0
            is_der = request.dump(force=True) == der
        except Exception as exc:
            raise _RefusalError("bad_data_format", "request is not a DER TimeStampReq") from exc
        if not is_der:
            raise _RefusalError("bad_data_format", "request is not DER-encoded")
        if version != "v1":
            raise _RefusalError("bad_data_format", f"unsupported TimeStampReq version {version}")
        if hash_name not in IMPRINT_HASHES:
            raise _RefusalError(
                "bad_alg",
                f"message imprint hash {hash_name} is not accepted "
                f"(use one of {', '.join(IMPRINT_HASHES)})",
            )
        if not isinstance(parameters, core.Void | core.Null):
            raise _RefusalError("bad_alg", f"message imprint hash {hash_name} has parameters")
        if len(digest) != IMPRINT_HASHES[hash_name]:
            raise _RefusalError(
                "bad_data_format",
                f"message imprint is {len(digest)} bytes, {hash_name} gives "
                f"{IMPRINT_HASHES[hash_name]}",
            )
        if policy is not None and policy != self.policy:
            raise _RefusalError("unaccepted_policy", f"policy {policy} is not served here")
        if has_extensions:
            raise _RefusalError("unaccepted_extensions", "request extensions are not supported")
        # Echoed as parsed: the token's imprint is the request's, byte for byte (§2.4.2).
        return imprint, nonce, cert_req

    # -- token ----------------------------------------------------------------------------

    def _grant(self, imprint: Any, nonce: int | None, cert_req: bool) -> bytes:
        return self._build(imprint, nonce=nonce, cert_req=cert_req, gen_time=self._clock())

    def _build(
        self, imprint: Any, *, nonce: int | None, cert_req: bool, gen_time: dt.datetime
    ) -> bytes:
        parts = self._parts
        gen_time = gen_time.astimezone(dt.UTC)
        gen_time = gen_time.replace(microsecond=gen_time.microsecond // 1000 * 1000)
        tst_fields: dict[str, Any] = {
            "version": "v1",
            "policy": parts["policy"],
            "message_imprint": imprint,
            "serial_number": secrets.randbits(128) or 1,
            "gen_time": core.GeneralizedTime(gen_time),
            "accuracy": parts["accuracy"],
            "tsa": parts["tsa"],
        }
        if nonce is not None:
            tst_fields["nonce"] = nonce
        tst_info_der = tsp.TSTInfo(tst_fields).dump()
        message_digest = hashlib.new(self._digest_name, tst_info_der).digest()
        signed_attrs = cms.CMSAttributes(
            [
                parts["content_type_attribute"],
                cms.CMSAttribute({"type": "message_digest", "values": [message_digest]}),
                parts["ess_attribute"],
            ]
        )
        # The signature covers the attributes' DER with the universal SET tag (RFC 5652 §5.4).
        signature = self._sign(b"\x31" + signed_attrs.dump()[1:])
        signer_info = cms.SignerInfo(
            {
                "version": "v1",
                "sid": parts["sid"],
                "digest_algorithm": parts["digest_algorithm"],
                "signed_attrs": signed_attrs,
                "signature_algorithm": parts["signature_algorithm"],
                "signature": signature,
            }
        )
        signed_data: dict[str, Any] = {
            "version": "v3",
            "digest_algorithms": parts["digest_algorithms"],
            "encap_content_info": {
                "content_type": "tst_info",
                "content": core.ParsableOctetString(tst_info_der),
            },
            "signer_infos": [signer_info],
        }
        if cert_req:
            signed_data["certificates"] = parts["certificates"]
        response = TimeStampRespStructure(
            {
                "status": parts["granted"],
                "time_stamp_token": {
                    "content_type": "signed_data",
                    "content": cms.SignedData(signed_data),
                },
            }
        )
        der: bytes = response.dump()
        return der


def _fresh_parts(
    key: PrivateKey,
    chain: Sequence[x509.Certificate],
    *,
    digest_name: str,
    policy: str,
    accuracy: dt.timedelta,
) -> dict[str, Any]:
    """The constant parts of every token, built from the key, chain and settings."""
    certificate = chain[0]
    ders = [c.public_bytes(serialization.Encoding.DER) for c in chain]
    issuer = asn1_x509.Name.load(certificate.issuer.public_bytes())
    ess = tsp.ESSCertIDv2(
        {
            "cert_hash": hashlib.sha256(ders[0]).digest(),
            "issuer_serial": {
                "issuer": [asn1_x509.GeneralName(name="directory_name", value=issuer)],
                "serial_number": certificate.serial_number,
            },
        }
    )
    digest_algorithm = algos.DigestAlgorithm({"algorithm": digest_name})
    return {
        "certificates": cms.CertificateSet(
            [
                cms.CertificateChoices(name="certificate", value=asn1_x509.Certificate.load(d))
                for d in ders
            ]
        ),
        "digest_algorithms": [digest_algorithm],
        "sid": cms.SignerIdentifier(
            name="issuer_and_serial_number",
            value={"issuer": issuer, "serial_number": certificate.serial_number},
        ),
        "digest_algorithm": digest_algorithm,
        "signature_algorithm": algos.SignedDigestAlgorithm(
            {"algorithm": _signature_algorithm_name(key, digest_name)}
        ),
        "content_type_attribute": cms.CMSAttribute(
            {"type": "content_type", "values": ["tst_info"]}
        ),
        "ess_attribute": cms.CMSAttribute(
            {"type": "signing_certificate_v2", "values": [{"certs": [ess]}]}
        ),
        "policy": core.ObjectIdentifier(policy),
        "accuracy": _accuracy_value(accuracy),
        "tsa": tsp.GeneralName(
            name="directory_name", value=asn1_x509.Name.load(certificate.subject.public_bytes())
        ),
        "granted": tsp.PKIStatusInfo({"status": "granted"}),
    }


def _rejection(failure: str, text: str) -> bytes:
    response = TimeStampRespStructure(
        {
            "status": {
                "status": "rejection",
                "status_string": [text],
                "fail_info": tsp.PKIFailureInfo({failure}),
            }
        }
    )
    der: bytes = response.dump()
    return der


def _accuracy_value(accuracy: dt.timedelta) -> Any:
    micros_total = accuracy // dt.timedelta(microseconds=1)
    seconds, rest = divmod(micros_total, 1_000_000)
    millis, micros = divmod(rest, 1000)
    value: dict[str, int] = {}
    if seconds:
        value["seconds"] = seconds
    if millis:
        value["millis"] = millis
    if micros:
        value["micros"] = micros
    return tsp.Accuracy(value)


def _signer_for(key: PrivateKey) -> tuple[str, Callable[[bytes], bytes]]:
    """The CMS digest algorithm for ``key`` and a function signing bytes with it."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        ec_key = key

        def sign_ec(data: bytes) -> bytes:
            return ec_key.sign(data, ec.ECDSA(hashes.SHA256()))

        return "sha256", sign_ec
    if isinstance(key, rsa.RSAPrivateKey):
        rsa_key = key

        def sign_rsa(data: bytes) -> bytes:
            return rsa_key.sign(data, padding.PKCS1v15(), hashes.SHA256())

        return "sha256", sign_rsa
    ed_key: ed25519.Ed25519PrivateKey = key
    # RFC 8419 §3: with signed attributes, Ed25519 goes with SHA-512 for messageDigest.
    return "sha512", ed_key.sign


def _signature_algorithm_name(key: PrivateKey, digest_name: str) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return f"{digest_name}_ecdsa"
    if isinstance(key, rsa.RSAPrivateKey):
        return f"{digest_name}_rsa"
    return "ed25519"


def _check_tsa_certificate(certificate: x509.Certificate, key: PrivateKey) -> None:
    """Refuse a key/certificate pair whose tokens no verifier would accept."""
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if certificate.public_key().public_bytes(
        serialization.Encoding.DER, spki
    ) != key.public_key().public_bytes(serialization.Encoding.DER, spki):
        raise PKIError(
            "the TSA key does not belong to the TSA certificate", code=ErrorCode.INVALID_CONFIG
        )
    try:
        eku = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound as exc:
        raise PKIError(
            "the TSA certificate has no extended key usage", code=ErrorCode.INVALID_CONFIG
        ) from exc
    if not eku.critical or list(eku.value) != [ExtendedKeyUsageOID.TIME_STAMPING]:
        raise PKIError(
            "the TSA certificate must have a critical extended key usage of timeStamping only",
            code=ErrorCode.INVALID_CONFIG,
        )


# -- HTTP ---------------------------------------------------------------------------------


def create_app(
    authority: TimeStampAuthority, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
) -> web.Application:
    """An aiohttp application serving ``authority`` on every path (RFC 3161 §3.4)."""
    app = web.Application(client_max_size=max_body_bytes)
    app.router.add_route("*", "/{tail:.*}", _Handler(authority, max_body_bytes).handle)
    return app


class _Handler:
    def __init__(self, authority: TimeStampAuthority, max_body_bytes: int) -> None:
        self._authority = authority
        self._max_body_bytes = max_body_bytes

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.method != "POST":
            return web.Response(status=405, headers={"Allow": "POST"}, text="POST only\n")
        if request.content_type != TIMESTAMP_QUERY:
            return self._refuse(415, f"Content-Type must be {TIMESTAMP_QUERY}")
        length = request.content_length
        if length is not None and length > self._max_body_bytes:
            return self._refuse(413, f"request larger than {self._max_body_bytes} bytes")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._refuse(413, f"request larger than {self._max_body_bytes} bytes")
        # Signing one token takes well under a millisecond of CPU (measured with
        # tools/bench_tsa.py); handing it to a thread would cost more than it saves.
        reply = self._authority.respond(body)
        return web.Response(body=reply, content_type=TIMESTAMP_REPLY)

    def _refuse(self, status: int, text: str) -> web.Response:
        return web.Response(
            status=status,
            body=self._authority.rejection("bad_data_format", text),
            content_type=TIMESTAMP_REPLY,
        )
