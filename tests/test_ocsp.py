"""Unit tests of the OCSP responder (certs.ocsp), its HTTP edge (certs.ocsp_http) and the
client/validator (certs.ocsp_client): one test per guarantee in those modules' docs."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import importlib
import urllib.parse
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from asn1crypto import ocsp as asn1_ocsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from certs.ca import CertificateAuthority, CertStatus, issuer_key_sha1, self_signed_root
from certs.errors import OCSPError
from certs.keys import KeyAlgorithm, PrivateKey, generate_private_key, signature_hash_for
from certs.ocsp import (
    InMemoryStatusSource,
    OCSPResponder,
    StatusRecord,
    issuer_key_hash,
    issuer_name_hash,
)
from certs.ocsp_client import (
    OCSPClient,
    ResponderTransport,
    build_request,
    validate_response,
)
from certs.ocsp_http import OCSPServer
from certs.pkidir import PKIDirectory
from certs.profiles import Profile
from serai.errors import ErrorCode

#: Tests that go through real HTTP use the real clock, so "now" is real too.
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
DER = serialization.Encoding.DER
S = ocsp.OCSPResponseStatus


# -- fixtures ----------------------------------------------------------------------------------


@dataclass
class PKI:
    pki: PKIDirectory
    ca: CertificateAuthority
    ocsp_key: PrivateKey
    ocsp_cert: x509.Certificate
    good: x509.Certificate
    revoked: x509.Certificate
    unknown: x509.Certificate  # issued by the CA's key but never recorded
    revoked_at: dt.datetime

    @property
    def issuer(self) -> x509.Certificate:
        return self.ca.certificate

    def responder(self, **kwargs: object) -> OCSPResponder:
        return OCSPResponder(
            key=self.ocsp_key,
            certificate=self.ocsp_cert,
            issuers=[self.issuer],
            source=self.ca.records,
            clock=lambda: NOW,
            **kwargs,  # type: ignore[arg-type]
        )


def _leaf(ca: CertificateAuthority, name: str) -> x509.Certificate:
    return ca.issue(Profile.TSA, name, generate_private_key().public_key(), now=NOW)


def _make_pki(root: Path, algorithm: KeyAlgorithm = KeyAlgorithm.EC_P256) -> PKI:
    start = NOW - dt.timedelta(days=1)
    pki = PKIDirectory.init(root, instance="UZ", algorithm=algorithm, now=start)
    ca = pki.issuing_ca()
    key, chain = pki.ocsp_signer()
    good = _leaf(ca, "leaf-good")
    revoked = _leaf(ca, "leaf-revoked")
    revoked_at = NOW - dt.timedelta(hours=2)
    ca.revoke(revoked.serial_number, reason=x509.ReasonFlags.key_compromise, at=revoked_at)
    unknown = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stray")]))
        .issuer_name(ca.certificate.subject)
        .public_key(generate_private_key().public_key())
        .serial_number(4242)
        .not_valid_before(start)
        .not_valid_after(NOW + dt.timedelta(days=30))
        .sign(ca.key, signature_hash_for(ca.key))
    )
    return PKI(pki, ca, key, chain[0], good, revoked, unknown, revoked_at)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return _make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    """A second, unrelated PKI."""
    return _make_pki(tmp_path_factory.mktemp("other"))


def _parse(der: bytes) -> ocsp.OCSPResponse:
    return ocsp.load_der_ocsp_response(der)


def _req(
    env: PKI, cert: x509.Certificate | None = None, *, nonce: bytes | None = None, **kw: object
) -> bytes:
    return build_request(cert or env.good, env.issuer, nonce=nonce, **kw)  # type: ignore[arg-type]


def _asn1_request(items: list[dict[str, object]], extensions: object = None) -> bytes:
    tbs: dict[str, object] = {"request_list": [{"req_cert": item} for item in items]}
    if extensions is not None:
        tbs["request_extensions"] = extensions
    dumped: bytes = asn1_ocsp.OCSPRequest({"tbs_request": tbs}).dump()
    return dumped


def _cert_id(env: PKI, algorithm: str, serial: int) -> dict[str, object]:
    cls = {"sha1": hashes.SHA1, "sha256": hashes.SHA256}.get(algorithm, hashes.SHA256)
    return {
        "hash_algorithm": {"algorithm": algorithm},
        "issuer_name_hash": issuer_name_hash(env.issuer, cls()),
        "issuer_key_hash": issuer_key_hash(env.issuer, cls()),
        "serial_number": serial,
    }


# -- responder: answers ------------------------------------------------------------------------


def test_good_certificate_is_answered_good(env: PKI) -> None:
    response = _parse(env.responder().respond(_req(env)))
    assert response.response_status is S.SUCCESSFUL
    assert response.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert response.serial_number == env.good.serial_number


def test_revoked_certificate_is_answered_with_time_and_reason(env: PKI) -> None:
    response = _parse(env.responder().respond(_req(env, env.revoked)))
    assert response.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert response.revocation_time_utc == env.revoked_at
    assert response.revocation_reason is x509.ReasonFlags.key_compromise


def test_unrecorded_serial_is_answered_unknown(env: PKI) -> None:
    response = _parse(env.responder().respond(_req(env, env.unknown)))
    assert response.response_status is S.SUCCESSFUL
    assert response.certificate_status is ocsp.OCSPCertStatus.UNKNOWN


def test_in_memory_source_serves_the_same_rules(env: PKI) -> None:
    source = InMemoryStatusSource()
    sha1 = issuer_key_sha1(env.issuer)
    source.add_good(issuer_sha1=sha1, serial=env.good.serial_number)
    source.revoke(issuer_sha1=sha1, serial=env.revoked.serial_number, at=env.revoked_at)
    responder = OCSPResponder(
        key=env.ocsp_key, certificate=env.ocsp_cert, issuers=[env.issuer], source=source
    )
    statuses = [
        _parse(responder.respond(_req(env, c))).certificate_status
        for c in (env.good, env.revoked, env.unknown)
    ]
    assert statuses == [
        ocsp.OCSPCertStatus.GOOD,
        ocsp.OCSPCertStatus.REVOKED,
        ocsp.OCSPCertStatus.UNKNOWN,
    ]


def test_response_echoes_cert_id_with_the_requests_hash(env: PKI) -> None:
    der = _req(env, algorithm=hashes.SHA256())
    request = ocsp.load_der_ocsp_request(der)
    response = _parse(env.responder().respond(der))
    assert isinstance(response.hash_algorithm, hashes.SHA256)
    assert response.issuer_name_hash == request.issuer_name_hash
    assert response.issuer_key_hash == request.issuer_key_hash
    assert response.certificate_status is ocsp.OCSPCertStatus.GOOD


def test_times_are_signing_time_and_next_update_interval(env: PKI) -> None:
    response = _parse(env.responder(next_update_s=600).respond(_req(env)))
    assert response.this_update_utc == NOW
    assert response.next_update_utc == NOW + dt.timedelta(seconds=600)


def test_nonce_is_echoed(env: PKI) -> None:
    nonce = b"\x01" * 32
    response = _parse(env.responder().respond(_req(env, nonce=nonce)))
    assert response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce


def test_no_nonce_in_request_means_none_in_response(env: PKI) -> None:
    response = _parse(env.responder().respond(_req(env)))
    with pytest.raises(x509.ExtensionNotFound):
        response.extensions.get_extension_for_class(x509.OCSPNonce)


def test_response_is_signed_by_delegated_cert_identified_by_key_hash(env: PKI) -> None:
    response = _parse(env.responder().respond(_req(env)))
    assert response.certificates == [env.ocsp_cert]
    assert response.responder_key_hash == issuer_key_sha1(env.ocsp_cert)
    assert response.responder_name is None
    public_key = env.ocsp_cert.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    public_key.verify(response.signature, response.tbs_response_bytes, ec.ECDSA(hashes.SHA256()))


# -- responder: refusals -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x30\x00", id="empty-sequence"),
        pytest.param(b"\x30\x82\xff\xff", id="truncated"),
        pytest.param(b"GET / HTTP/1.1\r\n", id="text"),
        pytest.param(b"\x04\x03abc", id="octet-string"),
    ],
)
def test_malformed_der_is_malformed_request(env: PKI, body: bytes) -> None:
    assert _parse(env.responder().respond(body)).response_status is S.MALFORMED_REQUEST


def test_request_for_several_certificates_is_malformed_request(env: PKI) -> None:
    der = _asn1_request([_cert_id(env, "sha1", env.good.serial_number), _cert_id(env, "sha1", 7)])
    assert _parse(env.responder().respond(der)).response_status is S.MALFORMED_REQUEST


@pytest.mark.parametrize("size", [0, 33, 128])
def test_nonce_outside_1_to_32_octets_is_malformed_request(env: PKI, size: int) -> None:
    ext = [{"extn_id": "nonce", "critical": False, "extn_value": b"\x00" * size}]
    der = _asn1_request([_cert_id(env, "sha1", env.good.serial_number)], ext)
    assert _parse(env.responder().respond(der)).response_status is S.MALFORMED_REQUEST


def test_unknown_critical_extension_is_malformed_request(env: PKI) -> None:
    ext = [{"extn_id": "1.2.3.4.5", "critical": True, "extn_value": b"\x05\x00"}]
    der = _asn1_request([_cert_id(env, "sha1", env.good.serial_number)], ext)
    assert _parse(env.responder().respond(der)).response_status is S.MALFORMED_REQUEST


def test_unknown_non_critical_extension_is_ignored(env: PKI) -> None:
    ext = [{"extn_id": "1.2.3.4.5", "critical": False, "extn_value": b"\x05\x00"}]
    der = _asn1_request([_cert_id(env, "sha1", env.good.serial_number)], ext)
    response = _parse(env.responder().respond(der))
    assert response.certificate_status is ocsp.OCSPCertStatus.GOOD


@pytest.mark.parametrize("algorithm", ["md5", "1.2.3.4", "sha3_256"])
def test_unsupported_cert_id_hash_is_unauthorized(env: PKI, algorithm: str) -> None:
    item = {
        "hash_algorithm": {"algorithm": algorithm},
        "issuer_name_hash": b"\x00" * 16,
        "issuer_key_hash": b"\x00" * 16,
        "serial_number": env.good.serial_number,
    }
    response = _parse(env.responder().respond(_asn1_request([item])))
    assert response.response_status is S.UNAUTHORIZED


def test_foreign_issuer_is_unauthorized(env: PKI, other: PKI) -> None:
    der = build_request(other.good, other.issuer)
    assert _parse(env.responder().respond(der)).response_status is S.UNAUTHORIZED


def test_issuer_key_hash_must_match_not_just_name(env: PKI) -> None:
    item = _cert_id(env, "sha1", env.good.serial_number)
    item["issuer_key_hash"] = b"\x11" * 20
    response = _parse(env.responder().respond(_asn1_request([item])))
    assert response.response_status is S.UNAUTHORIZED


def test_failing_status_source_is_try_later(env: PKI) -> None:
    class Broken:
        def lookup(self, *, issuer_sha1: bytes, serial: int) -> StatusRecord | None:
            raise OSError("disk gone")

    responder = OCSPResponder(
        key=env.ocsp_key, certificate=env.ocsp_cert, issuers=[env.issuer], source=Broken()
    )
    assert _parse(responder.respond(_req(env))).response_status is S.TRY_LATER


def test_unexpected_failure_is_internal_error(env: PKI) -> None:
    class Weird:
        def lookup(self, *, issuer_sha1: bytes, serial: int) -> StatusRecord | None:
            return object()  # type: ignore[return-value]

    responder = OCSPResponder(
        key=env.ocsp_key, certificate=env.ocsp_cert, issuers=[env.issuer], source=Weird()
    )
    assert _parse(responder.respond(_req(env))).response_status is S.INTERNAL_ERROR


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=600))
def test_fuzz_random_bytes_never_raise(env: PKI, body: bytes) -> None:
    response = _parse(env.responder().respond(body))
    assert response.response_status is not S.SUCCESSFUL or body.startswith(b"\x30")


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_mutated_requests_never_raise(env: PKI, data: st.DataObject) -> None:
    base = bytearray(_req(env, nonce=b"n" * 16))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(base) - 1))
        base[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(base)))
    _parse(env.responder().respond(bytes(base[:cut])))  # parseable, whatever it says


# -- responder: construction -------------------------------------------------------------------


def test_key_must_match_responder_certificate(env: PKI) -> None:
    with pytest.raises(OCSPError, match="does not match"):
        OCSPResponder(
            key=generate_private_key(),
            certificate=env.ocsp_cert,
            issuers=[env.issuer],
            source=InMemoryStatusSource(),
        )


def test_delegated_cert_must_be_issued_by_each_issuer(env: PKI, other: PKI) -> None:
    with pytest.raises(OCSPError, match="was not issued"):
        OCSPResponder(
            key=env.ocsp_key,
            certificate=env.ocsp_cert,
            issuers=[other.issuer],
            source=InMemoryStatusSource(),
        )


def test_delegated_cert_must_have_ocsp_signing_eku(env: PKI) -> None:
    key = generate_private_key()
    cert = _leaf_with_key(env.ca, "no-eku", key, Profile.TSA)
    with pytest.raises(OCSPError, match="OCSPSigning"):
        OCSPResponder(
            key=key, certificate=cert, issuers=[env.issuer], source=InMemoryStatusSource()
        )


def test_issuer_may_sign_its_own_responses(env: PKI) -> None:
    responder = OCSPResponder(
        key=env.ca.key, certificate=env.issuer, issuers=[env.issuer], source=env.ca.records
    )
    result = validate_response(
        responder.respond(_req(env)), cert=env.good, issuer=env.issuer, now=_now()
    )
    assert result.status is CertStatus.GOOD


def _leaf_with_key(
    ca: CertificateAuthority, name: str, key: PrivateKey, profile: Profile
) -> x509.Certificate:
    return ca.issue(profile, name, key.public_key(), now=NOW)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# -- validator ---------------------------------------------------------------------------------


def _validate(env: PKI, der: bytes, **kw: object) -> object:
    args: dict[str, object] = {"cert": env.good, "issuer": env.issuer, "now": NOW}
    args.update(kw)
    return validate_response(der, **args)  # type: ignore[arg-type]


def _build(
    env: PKI,
    *,
    cert: x509.Certificate | None = None,
    signer_key: PrivateKey | None = None,
    signer_cert: x509.Certificate | None = None,
    this_update: dt.datetime = NOW,
    next_update: dt.datetime | None = NOW + dt.timedelta(hours=1),
    nonce: bytes | None = None,
    encoding: ocsp.OCSPResponderEncoding = ocsp.OCSPResponderEncoding.HASH,
    include: list[x509.Certificate] | None = None,
) -> bytes:
    signer_cert = signer_cert or env.ocsp_cert
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response(
            cert=cert or env.good,
            issuer=env.issuer,
            algorithm=hashes.SHA1(),
            cert_status=ocsp.OCSPCertStatus.GOOD,
            this_update=this_update,
            next_update=next_update,
            revocation_time=None,
            revocation_reason=None,
        )
        .responder_id(encoding, signer_cert)
    )
    if include != []:
        builder = builder.certificates(include or [signer_cert])
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.sign(signer_key or env.ocsp_key, hashes.SHA256()).public_bytes(DER)


def test_validator_accepts_a_good_response(env: PKI) -> None:
    der = env.responder().respond(_req(env, nonce=b"abc"))
    result = validate_response(der, cert=env.good, issuer=env.issuer, now=NOW, nonce=b"abc")
    assert result.status is CertStatus.GOOD
    assert result.this_update == NOW
    assert result.next_update == NOW + dt.timedelta(hours=1)
    assert result.produced_at <= _now()
    assert result.der == der
    result.require_good()


def test_validator_reports_revoked_and_require_good_refuses(env: PKI) -> None:
    der = env.responder().respond(_req(env, env.revoked))
    result = validate_response(der, cert=env.revoked, issuer=env.issuer, now=NOW)
    assert result.status is CertStatus.REVOKED
    assert result.revocation_time == env.revoked_at
    assert result.revocation_reason is x509.ReasonFlags.key_compromise
    with pytest.raises(OCSPError) as info:
        result.require_good()
    assert info.value.code is ErrorCode.CERTIFICATE_REVOKED


def test_validator_reports_unknown_and_require_good_refuses(env: PKI) -> None:
    der = env.responder().respond(_req(env, env.unknown))
    result = validate_response(der, cert=env.unknown, issuer=env.issuer, now=NOW)
    assert result.status is CertStatus.UNKNOWN
    with pytest.raises(OCSPError) as info:
        result.require_good()
    assert info.value.code is ErrorCode.CERTIFICATE_INVALID


def test_validator_accepts_responder_id_by_name(env: PKI) -> None:
    der = _build(env, encoding=ocsp.OCSPResponderEncoding.NAME)
    assert _validate(env, der).status is CertStatus.GOOD  # type: ignore[attr-defined]


def test_validator_accepts_response_without_next_update(env: PKI) -> None:
    der = _build(env, next_update=None)
    assert _validate(env, der).next_update is None  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Rejection:
    name: str
    make: Callable[[PKI, PKI], bytes]
    code: ErrorCode
    kwargs: dict[str, object]


def _expired_responder(env: PKI, _other: PKI) -> bytes:
    key = generate_private_key()
    cert = env.ca.issue(
        Profile.OCSP,
        "expired-ocsp",
        key.public_key(),
        now=NOW - dt.timedelta(days=30),
        validity=dt.timedelta(days=2),
    )
    return _build(env, signer_key=key, signer_cert=cert)


def _no_eku_responder(env: PKI, _other: PKI) -> bytes:
    key = generate_private_key()
    cert = _leaf_with_key(env.ca, "tsa-as-ocsp", key, Profile.TSA)
    return _build(env, signer_key=key, signer_cert=cert)


def _foreign_responder(env: PKI, other: PKI) -> bytes:
    return _build(env, signer_key=other.ocsp_key, signer_cert=other.ocsp_cert)


def _self_signed_responder(env: PKI, _other: PKI) -> bytes:
    key = generate_private_key()
    cert = self_signed_root(key, name=env.issuer.subject.rfc4514_string(), now=NOW)
    return _build(env, signer_key=key, signer_cert=cert)


def _responder_cert_missing(env: PKI, _other: PKI) -> bytes:
    return _build(env, include=[])


def _bad_signature(env: PKI, _other: PKI) -> bytes:
    der = _build(env)
    signature = _parse(der).signature
    forged = bytearray(signature)
    forged[-1] ^= 0x01
    return der.replace(signature, bytes(forged))


def _wrong_key_signature(env: PKI, _other: PKI) -> bytes:
    der = _build(env)
    response = _parse(der)
    while True:  # an ECDSA signature of the same DER length, so only its value differs
        key = ec.generate_private_key(ec.SECP256R1())
        forged = key.sign(response.tbs_response_bytes, ec.ECDSA(hashes.SHA256()))
        if len(forged) == len(response.signature):
            return der.replace(response.signature, forged)


def _unused_bit(der: bytes, signature: bytes) -> bytes:
    """``der`` with the BIT STRING around ``signature`` claiming one unused bit: still DER
    when the signature's last octet is even, and covered by no signature."""
    assert not signature[-1] & 1
    whole = b"\x03" + bytes([len(signature) + 1]) + b"\x00" + signature
    assert der.count(whole) == 1
    return der.replace(whole, whole[:2] + b"\x01" + signature)


def _response_signature_unused_bit(env: PKI, _other: PKI) -> bytes:
    while True:  # ECDSA signatures are random: wait for one whose last octet is even
        der = _build(env)
        signature = _parse(der).signature
        if not signature[-1] & 1:
            return _unused_bit(der, signature)


def _responder_signature_unused_bit(env: PKI, _other: PKI) -> bytes:
    while True:
        key = generate_private_key()
        cert = _leaf_with_key(env.ca, "ocsp-even", key, Profile.OCSP)
        if not cert.signature[-1] & 1:
            return _unused_bit(_build(env, signer_key=key, signer_cert=cert), cert.signature)


def _unsuccessful(status: ocsp.OCSPResponseStatus) -> Callable[[PKI, PKI], bytes]:
    return lambda _e, _o: ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(DER)


REJECTIONS = [
    Rejection("not-der", lambda _e, _o: b"\x30\x03\x0a\x01", ErrorCode.OCSP_INVALID, {}),
    Rejection("garbage", lambda _e, _o: b"hello", ErrorCode.OCSP_INVALID, {}),
    Rejection("malformed", _unsuccessful(S.MALFORMED_REQUEST), ErrorCode.OCSP_INVALID, {}),
    Rejection("unauthorized", _unsuccessful(S.UNAUTHORIZED), ErrorCode.OCSP_INVALID, {}),
    Rejection("sig-required", _unsuccessful(S.SIG_REQUIRED), ErrorCode.OCSP_INVALID, {}),
    Rejection("try-later", _unsuccessful(S.TRY_LATER), ErrorCode.OCSP_UNAVAILABLE, {}),
    Rejection("internal", _unsuccessful(S.INTERNAL_ERROR), ErrorCode.OCSP_UNAVAILABLE, {}),
    Rejection("other-serial", lambda e, _o: _build(e, cert=e.revoked), ErrorCode.OCSP_INVALID, {}),
    Rejection(
        "other-issuer",
        lambda e, _o: _build(e),
        ErrorCode.OCSP_INVALID,
        {"issuer": "OTHER_ISSUER"},
    ),
    Rejection("foreign-responder", _foreign_responder, ErrorCode.OCSP_INVALID, {}),
    Rejection("self-signed-responder", _self_signed_responder, ErrorCode.OCSP_INVALID, {}),
    Rejection("responder-without-eku", _no_eku_responder, ErrorCode.OCSP_INVALID, {}),
    Rejection("expired-responder", _expired_responder, ErrorCode.OCSP_INVALID, {}),
    Rejection("responder-cert-missing", _responder_cert_missing, ErrorCode.OCSP_INVALID, {}),
    Rejection("bad-signature", _bad_signature, ErrorCode.OCSP_INVALID, {}),
    Rejection("wrong-key-signature", _wrong_key_signature, ErrorCode.OCSP_INVALID, {}),
    Rejection("signature-unused-bit", _response_signature_unused_bit, ErrorCode.OCSP_INVALID, {}),
    Rejection(
        "responder-signature-unused-bit",
        _responder_signature_unused_bit,
        ErrorCode.OCSP_INVALID,
        {},
    ),
    Rejection("nonce-missing", lambda e, _o: _build(e), ErrorCode.OCSP_INVALID, {"nonce": b"n1"}),
    Rejection(
        "nonce-differs",
        lambda e, _o: _build(e, nonce=b"n2"),
        ErrorCode.OCSP_INVALID,
        {"nonce": b"n1", "require_nonce": False},
    ),
    Rejection(
        "this-update-in-future",
        lambda e, _o: _build(e, this_update=NOW + dt.timedelta(minutes=6)),
        ErrorCode.OCSP_INVALID,
        {},
    ),
    Rejection(
        "too-old",
        lambda e, _o: _build(e, this_update=NOW - dt.timedelta(seconds=3601), next_update=None),
        ErrorCode.OCSP_STALE,
        {},
    ),
    Rejection(
        "older-than-max-age",
        lambda e, _o: _build(e, this_update=NOW - dt.timedelta(seconds=61)),
        ErrorCode.OCSP_STALE,
        {"max_age_s": 60},
    ),
    Rejection(
        "next-update-passed",
        lambda e, _o: _build(
            e,
            this_update=NOW - dt.timedelta(minutes=10),
            next_update=NOW - dt.timedelta(seconds=1),
        ),
        ErrorCode.OCSP_STALE,
        {},
    ),
]


@pytest.mark.parametrize("case", REJECTIONS, ids=[r.name for r in REJECTIONS])
def test_validator_rejects(env: PKI, other: PKI, case: Rejection) -> None:
    der = case.make(env, other)
    kwargs = dict(case.kwargs)
    if kwargs.get("issuer") == "OTHER_ISSUER":
        kwargs["issuer"] = other.issuer
    with pytest.raises(OCSPError) as info:
        _validate(env, der, **kwargs)
    assert info.value.code is case.code, info.value
    if case.name.endswith("unused-bit"):
        assert _parse(der).certificates  # cryptography reads it: only the new rule refuses it
        assert "whole number of octets" in str(info.value)


def test_validator_tolerates_small_skew_and_missing_nonce_when_allowed(env: PKI) -> None:
    der = _build(env, this_update=NOW + dt.timedelta(minutes=4))
    result = _validate(env, der, nonce=b"n1", require_nonce=False)
    assert result.status is CertStatus.GOOD  # type: ignore[attr-defined]


@pytest.mark.parametrize("algorithm", [KeyAlgorithm.RSA_3072, KeyAlgorithm.ED25519])
def test_validator_verifies_rsa_and_ed25519_responders(
    tmp_path: Path, algorithm: KeyAlgorithm
) -> None:
    pki = _make_pki(tmp_path, algorithm)
    der = pki.responder().respond(_req(pki, nonce=b"x"))
    result = validate_response(der, cert=pki.good, issuer=pki.issuer, now=NOW, nonce=b"x")
    assert result.status is CertStatus.GOOD


# -- client and cache --------------------------------------------------------------------------


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


class MovingResponder:
    """A responder whose clock follows the test's clock."""

    def __init__(self, env: PKI, clock: Clock) -> None:
        self.responder = OCSPResponder(
            key=env.ocsp_key,
            certificate=env.ocsp_cert,
            issuers=[env.issuer],
            source=env.ca.records,
            clock=clock,
        )


async def test_client_fetches_via_aia_and_caches(env: PKI) -> None:
    clock = Clock(NOW)
    transport = ResponderTransport(MovingResponder(env, clock).responder)
    async with OCSPClient(transport=transport, clock=clock) as client:
        first = await client.status(env.good, env.issuer)
        second = await client.status(env.good, env.issuer)
        assert first is second
        assert transport.requests == 1
        revoked = await client.status(env.revoked, env.issuer)
        assert revoked.status is CertStatus.REVOKED
        assert transport.requests == 2


async def test_client_refreshes_in_background_after_refresh_after(env: PKI) -> None:
    clock = Clock(NOW)
    transport = ResponderTransport(MovingResponder(env, clock).responder)
    async with OCSPClient(transport=transport, clock=clock, refresh_after_s=600) as client:
        first = await client.status(env.good, env.issuer)
        clock.now = NOW + dt.timedelta(seconds=601)
        served = await client.status(env.good, env.issuer)
        assert served is first  # still valid: served at once
        for _ in range(100):
            if client.cached(env.good, env.issuer) is not first:
                break
            await asyncio.sleep(0)
        refreshed = client.cached(env.good, env.issuer)
        assert refreshed is not None
        assert refreshed.this_update == clock.now.replace(microsecond=0)
        assert transport.requests == 2


async def test_client_waits_for_a_fetch_when_cache_aged_out(env: PKI) -> None:
    clock = Clock(NOW)
    transport = ResponderTransport(MovingResponder(env, clock).responder)
    async with OCSPClient(transport=transport, clock=clock) as client:
        await client.status(env.good, env.issuer)
        clock.now = NOW + dt.timedelta(seconds=3601)
        result = await client.status(env.good, env.issuer)
        assert result.this_update == clock.now
        assert transport.requests == 2


async def test_concurrent_callers_share_one_fetch(env: PKI) -> None:
    clock = Clock(NOW)
    responder = MovingResponder(env, clock).responder
    gate = asyncio.Event()

    class Slow(ResponderTransport):
        async def post(self, url: str, der_request: bytes, *, timeout_s: float) -> bytes:
            self.requests += 1
            await gate.wait()
            return self.responder.respond(der_request)

    transport = Slow(responder)
    async with OCSPClient(transport=transport, clock=clock) as client:
        waiters = [asyncio.create_task(client.status(env.good, env.issuer)) for _ in range(20)]
        await asyncio.sleep(0)
        gate.set()
        results = await asyncio.gather(*waiters)
        assert transport.requests == 1
        assert all(r is results[0] for r in results)


async def test_client_does_not_cache_failures(env: PKI, other: PKI) -> None:
    clock = Clock(NOW)
    transport = ResponderTransport(MovingResponder(other, clock).responder)
    async with OCSPClient(transport=transport, clock=clock) as client:
        for _ in range(2):
            with pytest.raises(OCSPError) as info:
                await client.status(env.good, env.issuer)
            assert info.value.code is ErrorCode.OCSP_INVALID  # unauthorized
        assert client.cached(env.good, env.issuer) is None
        assert transport.requests == 2


async def test_client_without_url_is_unavailable(env: PKI) -> None:
    transport = ResponderTransport(env.responder())
    async with OCSPClient(transport=transport) as client:
        with pytest.raises(OCSPError) as info:
            await client.fetch(env.ocsp_cert, env.issuer)  # the OCSP cert has no AIA
        assert info.value.code is ErrorCode.OCSP_UNAVAILABLE


# -- HTTP --------------------------------------------------------------------------------------


@pytest.fixture
async def server(env: PKI) -> AsyncIterator[OCSPServer]:
    responder = OCSPResponder(
        key=env.ocsp_key, certificate=env.ocsp_cert, issuers=[env.issuer], source=env.ca.records
    )
    async with OCSPServer(responder=responder, port=0, max_request_bytes=4096) as srv:
        yield srv


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _post(
    http: aiohttp.ClientSession, url: str, body: bytes, ctype: str = "application/ocsp-request"
) -> tuple[int, dict[str, str], bytes]:
    async with http.post(url, data=body, headers={"Content-Type": ctype}) as reply:
        return reply.status, dict(reply.headers), await reply.read()


async def test_http_post_answers_with_ocsp_response(
    env: PKI, server: OCSPServer, http: aiohttp.ClientSession
) -> None:
    status, headers, body = await _post(http, server.url, _req(env, nonce=b"zz"))
    assert status == 200
    assert headers["Content-Type"] == "application/ocsp-response"
    assert headers["Cache-Control"] == "no-store"
    result = validate_response(body, cert=env.good, issuer=env.issuer, now=_now(), nonce=b"zz")
    assert result.status is CertStatus.GOOD


async def test_http_get_with_url_encoded_base64_is_cacheable(
    env: PKI, server: OCSPServer, http: aiohttp.ClientSession
) -> None:
    encoded = urllib.parse.quote(base64.b64encode(_req(env, env.revoked)).decode(), safe="")
    async with http.get(server.url + encoded) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"] == "application/ocsp-response"
        assert "max-age=" in reply.headers["Cache-Control"]
        assert "Expires" in reply.headers
        body = await reply.read()
    result = validate_response(body, cert=env.revoked, issuer=env.issuer, now=_now())
    assert result.status is CertStatus.REVOKED


@pytest.mark.parametrize("path", ["not-base64!", "", "AAAA"])
async def test_http_get_of_garbage_is_malformed_request(
    server: OCSPServer, http: aiohttp.ClientSession, path: str
) -> None:
    async with http.get(server.url + path) as reply:
        assert reply.status == 200
        assert _parse(await reply.read()).response_status is S.MALFORMED_REQUEST


@pytest.mark.parametrize("ctype", ["text/plain", "application/json", "application/octet-stream"])
async def test_http_wrong_content_type_is_415_without_trace(
    env: PKI, server: OCSPServer, http: aiohttp.ClientSession, ctype: str
) -> None:
    status, _headers, body = await _post(http, server.url, _req(env), ctype)
    assert status == 415
    assert b"Traceback" not in body
    assert len(body) < 100


async def test_http_oversize_body_is_malformed_request(
    server: OCSPServer, http: aiohttp.ClientSession
) -> None:
    status, _headers, body = await _post(http, server.url, b"\x30" * 5000)
    assert status == 200
    assert _parse(body).response_status is S.MALFORMED_REQUEST


async def test_http_oversize_chunked_body_is_malformed_request(
    server: OCSPServer, http: aiohttp.ClientSession
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"\x30" * 1000

    async with http.post(
        server.url, data=chunks(), headers={"Content-Type": "application/ocsp-request"}
    ) as reply:
        assert reply.status == 200
        assert _parse(await reply.read()).response_status is S.MALFORMED_REQUEST


async def test_http_malformed_der_is_malformed_request(
    server: OCSPServer, http: aiohttp.ClientSession
) -> None:
    status, _headers, body = await _post(http, server.url, b"\x30\x03garbage")
    assert status == 200
    assert _parse(body).response_status is S.MALFORMED_REQUEST


async def test_http_other_method_is_405(server: OCSPServer, http: aiohttp.ClientSession) -> None:
    async with http.put(server.url, data=b"x") as reply:
        assert reply.status == 405


async def test_client_over_http(env: PKI, server: OCSPServer) -> None:
    async with OCSPClient() as client:
        good = await client.fetch(env.good, env.issuer, url=server.url)
        revoked = await client.fetch(env.revoked, env.issuer, url=server.url)
    assert good.status is CertStatus.GOOD
    assert revoked.status is CertStatus.REVOKED


async def test_client_http_error_status_is_unavailable(env: PKI) -> None:
    async def busy(_request: web.Request) -> web.Response:
        return web.Response(status=503, text="busy")

    app = web.Application()
    app.router.add_post("/", busy)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        async with OCSPClient() as client:
            with pytest.raises(OCSPError) as info:
                await client.fetch(env.good, env.issuer, url=f"http://127.0.0.1:{port}/")
        assert info.value.code is ErrorCode.OCSP_UNAVAILABLE
        assert "503" in info.value.message
    finally:
        await runner.cleanup()


async def test_client_unreachable_responder_is_unavailable(env: PKI) -> None:
    async with OCSPClient(timeout_s=2) as client:
        with pytest.raises(OCSPError) as info:
            await client.fetch(env.good, env.issuer, url="http://127.0.0.1:1/")
        assert info.value.code is ErrorCode.OCSP_UNAVAILABLE


def test_eku_constant_is_what_pki_issues(env: PKI) -> None:
    eku = env.ocsp_cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.OCSP_SIGNING in eku


# -- public surface and command line ---------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "names"),
    [
        (
            "certs.ocsp",
            {
                "CERT_ID_HASHES",
                "MAX_NONCE_BYTES",
                "InMemoryStatusSource",
                "OCSPAnswer",
                "OCSPResponder",
                "StatusRecord",
                "StatusSource",
                "issuer_key_hash",
                "issuer_name_hash",
            },
        ),
        (
            "certs.ocsp_http",
            {
                "MAX_REQUEST_BYTES",
                "OCSP_REQUEST_TYPE",
                "OCSP_RESPONSE_TYPE",
                "OCSPServer",
                "create_app",
            },
        ),
        (
            "certs.ocsp_client",
            {
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
            },
        ),
        ("certs.cli_ocsp", {"DEFAULT_LISTEN", "register_ocsp", "serve_command"}),
    ],
)
def test_public_surface_is_pinned(module: str, names: set[str]) -> None:
    imported = importlib.import_module(module)
    assert set(imported.__all__) == names
    assert all(hasattr(imported, name) for name in names)
