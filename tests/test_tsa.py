"""Unit tests of the time-stamping authority (certs.tsa) and the verifier (certs.timestamp).

One test (or one named table case) per rule stated in the two modules' docstrings.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from asn1crypto import cms, core, tsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import certs.tsa as tsa_module
from certs.errors import PKIError, TimestampError
from certs.keys import KeyAlgorithm, PrivateKey, generate_private_key
from certs.pkidir import PKIDirectory
from certs.profiles import Profile
from certs.timestamp import (
    TIMESTAMP_QUERY,
    TIMESTAMP_REPLY,
    TimestampClient,
    TimeStampRespStructure,
    build_query,
    new_nonce,
    verify_reply,
    verify_token,
)
from certs.tsa import DEFAULT_POLICY, TimeStampAuthority, create_app
from serai.errors import ErrorCode

DATA = b"tree head 42"
NOW = dt.datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)


# -- fixtures -------------------------------------------------------------------------------


class Pki:
    def __init__(self, root: Path) -> None:
        self.dir = PKIDirectory.init(root, instance="UZ", now=NOW - dt.timedelta(days=1))
        self.key, self.chain = self.dir.tsa_signer()
        self.root = self.dir.root_certificate()
        self.ca = self.dir.issuing_ca()

    def authority(self, **kwargs: Any) -> TimeStampAuthority:
        kwargs.setdefault("key", self.key)
        kwargs.setdefault("chain", self.chain)
        kwargs.setdefault("clock", lambda: NOW)
        return TimeStampAuthority(**kwargs)

    def tsa_with(self, algorithm: KeyAlgorithm) -> TimeStampAuthority:
        key = generate_private_key(algorithm)
        cert = self.ca.issue(Profile.TSA, f"TSA {algorithm}", key.public_key(), now=NOW)
        return self.authority(key=key, chain=[cert, self.ca.certificate])


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("tsa") / "pki")


@pytest.fixture(scope="module")
def tsa(pki: Pki) -> TimeStampAuthority:
    return pki.authority()


def respond(tsa: TimeStampAuthority, **query: Any) -> Any:
    query.setdefault("nonce", 7)
    return TimeStampRespStructure.load(tsa.respond(build_query(DATA, **query)))


def status_of(reply: Any) -> tuple[str, set[str]]:
    return reply["status"]["status"].native, reply["status"]["fail_info"].native or set()


def granted_token(tsa: TimeStampAuthority, **query: Any) -> bytes:
    reply = respond(tsa, **query)
    assert status_of(reply) == ("granted", set())
    token: bytes = reply["time_stamp_token"].dump()
    return token


def verify(pki: Pki, token: bytes, **kwargs: Any) -> Any:
    kwargs.setdefault("data", DATA)
    kwargs.setdefault("trusted_roots", [pki.root])
    return verify_token(token, **kwargs)


# -- the authority ------------------------------------------------------------------------


def test_granted_token_carries_the_request(pki: Pki, tsa: TimeStampAuthority) -> None:
    reply = respond(tsa, nonce=123456789, hash_name="sha384")
    token = reply["time_stamp_token"]
    signed = token["content"]
    tst = signed["encap_content_info"]["content"].parsed
    assert signed["version"].native == "v3"
    assert signed["encap_content_info"]["content_type"].native == "tst_info"
    assert tst["policy"].dotted == DEFAULT_POLICY
    assert tst["message_imprint"]["hash_algorithm"]["algorithm"].native == "sha384"
    assert tst["message_imprint"]["hashed_message"].native == hashlib.sha384(DATA).digest()
    assert tst["nonce"].native == 123456789
    assert tst["gen_time"].native == NOW.replace(microsecond=123000)
    assert tst["accuracy"].native == {"seconds": 1, "millis": None, "micros": None}
    assert tst["ordering"].native is False
    assert tst["tsa"].chosen.native == {"common_name": "UZ Serai Time-Stamping Authority"}


def test_signed_attributes_are_exactly_the_three(tsa: TimeStampAuthority) -> None:
    signer = respond(tsa)["time_stamp_token"]["content"]["signer_infos"][0]
    names = sorted(a["type"].native for a in signer["signed_attrs"])
    assert names == ["content_type", "message_digest", "signing_certificate_v2"]
    assert signer["sid"].name == "issuer_and_serial_number"


def test_serials_are_random_and_unique(tsa: TimeStampAuthority) -> None:
    serials = set()
    for _ in range(50):
        tst = respond(tsa)["time_stamp_token"]["content"]["encap_content_info"]["content"]
        serials.add(tst.parsed["serial_number"].native)
    assert len(serials) == 50
    assert all(0 < s < 2**128 for s in serials)


@pytest.mark.parametrize(("cert_req", "count"), [(True, 2), (False, 0)])
def test_certificates_only_when_requested(
    tsa: TimeStampAuthority, cert_req: bool, count: int
) -> None:
    certs = respond(tsa, cert_req=cert_req)["time_stamp_token"]["content"]["certificates"]
    assert (0 if isinstance(certs, core.Void) else len(certs)) == count


def test_no_nonce_no_nonce(tsa: TimeStampAuthority) -> None:
    tst = respond(tsa, nonce=None)["time_stamp_token"]["content"]["encap_content_info"]
    assert tst["content"].parsed["nonce"].native is None


def _raw_query(**fields: Any) -> bytes:
    base: dict[str, Any] = {
        "version": "v1",
        "message_imprint": {
            "hash_algorithm": {"algorithm": "sha256"},
            "hashed_message": hashlib.sha256(DATA).digest(),
        },
    }
    base.update(fields)
    der: bytes = tsp.TimeStampReq(base).dump()
    return der


def _imprint(algorithm: str, digest: bytes, parameters: Any = None) -> dict[str, Any]:
    alg: dict[str, Any] = {"algorithm": algorithm}
    if parameters is not None:
        alg["parameters"] = parameters
    return {"hash_algorithm": alg, "hashed_message": digest}


class _LooseAlgorithm(core.Sequence):  # type: ignore[misc]
    _fields = [("algorithm", core.ObjectIdentifier), ("parameters", core.Any, {"optional": True})]  # noqa: RUF012


class _LooseImprint(core.Sequence):  # type: ignore[misc]
    _fields = [("hash_algorithm", _LooseAlgorithm), ("hashed_message", core.OctetString)]  # noqa: RUF012


class _LooseQuery(core.Sequence):  # type: ignore[misc]
    _fields = [("version", core.Integer), ("message_imprint", _LooseImprint)]  # noqa: RUF012


def _loose_query(parameters: Any) -> bytes:
    """A query whose SHA-256 identifier carries parameters asn1crypto would refuse to build."""
    algorithm = {"algorithm": "2.16.840.1.101.3.4.2.1", "parameters": parameters}
    imprint = {"hash_algorithm": algorithm, "hashed_message": bytes(32)}
    der: bytes = _LooseQuery({"version": 1, "message_imprint": imprint}).dump()
    return der


REJECTIONS: list[tuple[str, Callable[[], bytes], str]] = [
    ("empty", lambda: b"", "bad_data_format"),
    ("garbage", lambda: b"\x30\x03\x02\x01", "bad_data_format"),
    ("trailing bytes", lambda: _raw_query() + b"\x00", "bad_data_format"),
    ("not DER (long length)", lambda: b"\x30\x81" + _raw_query()[1:], "bad_data_format"),
    ("version 2", lambda: _raw_query(version=2), "bad_data_format"),
    (
        "sha1",
        lambda: _raw_query(message_imprint=_imprint("sha1", hashlib.sha1(DATA).digest())),
        "bad_alg",
    ),
    ("md5", lambda: _raw_query(message_imprint=_imprint("md5", bytes(16))), "bad_alg"),
    ("sha3", lambda: _raw_query(message_imprint=_imprint("sha3_256", bytes(32))), "bad_alg"),
    ("hash parameters not NULL", lambda: _loose_query(core.Integer(5)), "bad_data_format"),
    (
        "short digest",
        lambda: _raw_query(message_imprint=_imprint("sha256", bytes(20))),
        "bad_data_format",
    ),
    ("other policy", lambda: _raw_query(req_policy="1.2.3.4"), "unaccepted_policy"),
    (
        "extension",
        lambda: _raw_query(
            extensions=[{"extn_id": "1.2.3.4", "critical": False, "extn_value": b"x"}]
        ),
        "unaccepted_extensions",
    ),
]


@pytest.mark.parametrize(
    ("query", "failure"), [(q, f) for _, q, f in REJECTIONS], ids=[n for n, _, _ in REJECTIONS]
)
def test_rejections(tsa: TimeStampAuthority, query: Callable[[], bytes], failure: str) -> None:
    reply = TimeStampRespStructure.load(tsa.respond(query()), strict=True)
    assert status_of(reply) == ("rejection", {failure})
    assert isinstance(reply["time_stamp_token"], core.Void)
    assert reply["status"]["status_string"].native


def test_our_policy_and_nulled_or_absent_parameters_are_granted(tsa: TimeStampAuthority) -> None:
    for query in (
        _raw_query(req_policy=DEFAULT_POLICY),
        _raw_query(message_imprint=_imprint("sha256", bytes(32), core.Null())),
        _raw_query(extensions=[]),
    ):
        assert status_of(TimeStampRespStructure.load(tsa.respond(query)))[0] == "granted"


def test_imprint_is_echoed_byte_for_byte(tsa: TimeStampAuthority) -> None:
    query = _raw_query()  # parameters absent, as some clients send them
    reply = TimeStampRespStructure.load(tsa.respond(query))
    tst = reply["time_stamp_token"]["content"]["encap_content_info"]["content"].parsed
    assert tst["message_imprint"].dump() == tsp.TimeStampReq.load(query)["message_imprint"].dump()


def test_internal_failure_is_system_failure_without_detail(pki: Pki) -> None:
    def broken_clock() -> dt.datetime:
        raise RuntimeError("secret detail")

    tsa = pki.authority()
    tsa._clock = broken_clock
    der = tsa.respond(build_query(DATA, nonce=1))
    reply = TimeStampRespStructure.load(der)
    assert status_of(reply) == ("rejection", {"system_failure"})
    assert b"secret" not in der


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=300))
def test_fuzz_respond_never_raises(tsa: TimeStampAuthority, body: bytes) -> None:
    reply = TimeStampRespStructure.load(tsa.respond(body), strict=True)
    assert reply["status"]["status"].native in ("granted", "rejection")
    reply.native  # noqa: B018  (every field parses)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(position=st.integers(min_value=0), bit=st.integers(min_value=0, max_value=7))
def test_fuzz_mutated_queries_never_raise(tsa: TimeStampAuthority, position: int, bit: int) -> None:
    query = bytearray(build_query(DATA, nonce=99, policy=DEFAULT_POLICY))
    query[position % len(query)] ^= 1 << bit
    reply = TimeStampRespStructure.load(tsa.respond(bytes(query)), strict=True)
    reply.native  # noqa: B018


def test_constructor_refuses_wrong_material(pki: Pki) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(PKIError, match="does not belong"):
        pki.authority(key=other)
    with pytest.raises(PKIError, match="needs its certificate"):
        pki.authority(chain=[])
    sign_key = generate_private_key()
    sign_cert = pki.ca.issue(Profile.SIGN, "UZ/GOV/STC", sign_key.public_key(), now=NOW)
    with pytest.raises(PKIError, match="extended key usage"):
        pki.authority(key=sign_key, chain=[sign_cert])
    with pytest.raises(PKIError, match="accuracy"):
        pki.authority(accuracy=dt.timedelta(0))
    with pytest.raises(PKIError, match="dotted OID"):
        pki.authority(policy="not an oid")


def test_accuracy_in_millis(pki: Pki) -> None:
    tsa = pki.authority(accuracy=dt.timedelta(milliseconds=250))
    token = verify(pki, granted_token(tsa))
    assert token.accuracy == dt.timedelta(milliseconds=250)


# -- the verifier ---------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", list(KeyAlgorithm))
def test_round_trip_every_key_type(pki: Pki, algorithm: KeyAlgorithm) -> None:
    tsa = pki.tsa_with(algorithm)
    nonce = new_nonce()
    reply = tsa.respond(build_query(DATA, nonce=nonce))
    token = verify_reply(reply, data=DATA, nonce=nonce, trusted_roots=[pki.root])
    assert token.gen_time == NOW.replace(microsecond=123000)
    assert token.policy == DEFAULT_POLICY
    assert token.nonce == nonce
    assert token.tsa_certificate == tsa.certificate
    assert token.chain == (tsa.certificate, pki.ca.certificate, pki.root)
    assert verify_token(token.token_der, data=DATA, trusted_roots=[pki.root]) == token


@pytest.mark.parametrize("hash_name", ["sha256", "sha384", "sha512"])
def test_digest_instead_of_data(pki: Pki, tsa: TimeStampAuthority, hash_name: str) -> None:
    digest = hashlib.new(hash_name, DATA).digest()
    reply = tsa.respond(build_query(digest=digest, hash_name=hash_name, nonce=5))
    token = verify_reply(
        reply, digest=digest, hash_name=hash_name, nonce=5, trusted_roots=[pki.root]
    )
    assert token.message_digest == digest
    assert token.hash_name == hash_name


def test_rejection_reply_is_reported(pki: Pki, tsa: TimeStampAuthority) -> None:
    reply = tsa.respond(build_query(DATA, nonce=1, policy="1.2.3"))
    with pytest.raises(TimestampError, match="unaccepted_policy") as info:
        verify_reply(reply, data=DATA, nonce=1, trusted_roots=[pki.root])
    assert info.value.code is ErrorCode.TIMESTAMP_INVALID


def test_token_without_certificates_needs_them_given(pki: Pki, tsa: TimeStampAuthority) -> None:
    token = granted_token(tsa, cert_req=False)
    with pytest.raises(TimestampError, match="signer certificate is neither"):
        verify(pki, token)
    assert verify(pki, token, untrusted=pki.chain).tsa_certificate == pki.chain[0]


def _failure(pki: Pki, token: bytes, match: str, **kwargs: Any) -> None:
    with pytest.raises(TimestampError, match=match) as info:
        verify(pki, token, **kwargs)
    assert info.value.code is ErrorCode.TIMESTAMP_INVALID


@pytest.mark.parametrize("version", [0, 2, 3, 4, 5])
def test_signer_info_version_must_match_its_identifier(
    pki: Pki, tsa: TimeStampAuthority, version: int
) -> None:
    # The version is outside the signature: it is pinned so that no byte of a stored
    # token can change without verification failing (RFC 5652 §5.3).
    token = granted_token(tsa)
    info = cms.ContentInfo.load(token)["content"]["signer_infos"][0]
    original = info.dump()
    assert info["version"].native == "v1"
    position = token.index(original) + original.index(b"\x02\x01\x01")
    tampered = bytearray(token)
    tampered[position + 2] = version
    _failure(pki, bytes(tampered), "SignerInfo version")


def test_other_data_fails(pki: Pki, tsa: TimeStampAuthority) -> None:
    _failure(pki, granted_token(tsa), "imprint does not match", data=DATA + b"!")


def test_wrong_digest_algorithm_fails(pki: Pki, tsa: TimeStampAuthority) -> None:
    digest = hashlib.sha512(DATA).digest()
    _failure(
        pki, granted_token(tsa), "expected sha512", data=None, digest=digest, hash_name="sha512"
    )


def test_nonce_must_match(pki: Pki, tsa: TimeStampAuthority) -> None:
    _failure(pki, granted_token(tsa, nonce=1), "nonce differs", nonce=2)
    _failure(pki, granted_token(tsa, nonce=None), "has no nonce", nonce=2)


def test_policy_must_match_when_asked(pki: Pki, tsa: TimeStampAuthority) -> None:
    _failure(pki, granted_token(tsa), "policy", policy="1.2.3")


def test_untrusted_root_fails(pki: Pki, tsa: TimeStampAuthority, tmp_path: Path) -> None:
    other = PKIDirectory.init(tmp_path / "other", instance="KG", now=NOW - dt.timedelta(days=1))
    _failure(pki, granted_token(tsa), "no approved root", trusted_roots=[other.root_certificate()])


def test_validity_is_checked_at_gen_time(pki: Pki, tsa: TimeStampAuthority) -> None:
    token = granted_token(tsa)
    assert verify(pki, token).gen_time < pki.chain[0].not_valid_after_utc
    _failure(
        pki,
        token,
        "expired at|not valid before|not yet valid",
        at=NOW + dt.timedelta(days=40 * 365),
    )
    _failure(
        pki, token, "expired at|not valid before|not yet valid", at=NOW - dt.timedelta(days=30)
    )
    # A token made while the certificate was valid still verifies after it expired.
    expired_tsa = pki.authority(clock=lambda: NOW + dt.timedelta(days=6 * 365))
    _failure(pki, granted_token(expired_tsa), "expired at|not valid before|not yet valid")


def _issue_leaf(
    pki: Pki, *, eku: list[x509.ObjectIdentifier], critical: bool, key_usage: x509.KeyUsage | None
) -> tuple[PrivateKey, x509.Certificate]:
    """A certificate from the issuing CA with hand-picked usages (profiles would refuse)."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "odd TSA")]))
        .issuer_name(pki.ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=10))
        .add_extension(x509.ExtendedKeyUsage(eku), critical=critical)
    )
    if key_usage is not None:
        builder = builder.add_extension(key_usage, critical=True)
    return key, builder.sign(pki.ca.key, hashes.SHA256())


def _ku(**flags: bool) -> x509.KeyUsage:
    names = [
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
        "encipher_only",
        "decipher_only",
    ]
    return x509.KeyUsage(**{n: flags.get(n, False) for n in names})


def _unchecked_token(pki: Pki, key: PrivateKey, cert: x509.Certificate) -> bytes:
    original = tsa_module._check_tsa_certificate
    tsa_module._check_tsa_certificate = lambda certificate, key: None
    try:
        tsa = pki.authority(key=key, chain=[cert, pki.ca.certificate])
    finally:
        tsa_module._check_tsa_certificate = original
    return granted_token(tsa)


@pytest.mark.parametrize(
    ("eku", "critical", "key_usage", "match"),
    [
        (
            [ExtendedKeyUsageOID.TIME_STAMPING],
            False,
            _ku(digital_signature=True),
            "must be critical",
        ),
        (
            [ExtendedKeyUsageOID.TIME_STAMPING, ExtendedKeyUsageOID.CODE_SIGNING],
            True,
            _ku(digital_signature=True),
            "timeStamping only",
        ),
        (
            [ExtendedKeyUsageOID.CODE_SIGNING],
            True,
            _ku(digital_signature=True),
            "timeStamping only",
        ),
        (
            [ExtendedKeyUsageOID.TIME_STAMPING],
            True,
            _ku(digital_signature=True, key_encipherment=True),
            "key usage",
        ),
        ([ExtendedKeyUsageOID.TIME_STAMPING], True, _ku(key_agreement=True), "key usage"),
    ],
    ids=["eku-not-critical", "eku-extra", "eku-other", "ku-extra", "ku-wrong"],
)
def test_signer_usage_rules(
    pki: Pki,
    eku: list[x509.ObjectIdentifier],
    critical: bool,
    key_usage: x509.KeyUsage,
    match: str,
) -> None:
    key, cert = _issue_leaf(pki, eku=eku, critical=critical, key_usage=key_usage)
    _failure(pki, _unchecked_token(pki, key, cert), match)


def test_signer_without_key_usage_is_accepted(pki: Pki) -> None:
    key, cert = _issue_leaf(
        pki, eku=[ExtendedKeyUsageOID.TIME_STAMPING], critical=True, key_usage=None
    )
    assert verify(pki, _unchecked_token(pki, key, cert)).tsa_certificate == cert


def test_issuer_must_be_a_ca(pki: Pki, tmp_path: Path) -> None:
    # A TSA certificate "issued" by another TSA certificate: the link verifies, the role not.
    key, cert = pki.key, pki.chain[0]
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sub TSA")]))
        .issuer_name(cert.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=10))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
        .sign(key, hashes.SHA256())
    )
    tsa = pki.authority(key=leaf_key, chain=[leaf, cert, pki.ca.certificate])
    _failure(pki, granted_token(tsa), "not a CA|may not sign")


# -- structural tampering -----------------------------------------------------------------


def _rebuild(token: bytes, change: Callable[[Any], None]) -> bytes:
    """Parse ``token``, let ``change`` mutate its SignedData, re-encode."""
    info = cms.ContentInfo.load(token)
    signed = info["content"]
    change(signed)
    der: bytes = cms.ContentInfo({"content_type": "signed_data", "content": signed}).dump(
        force=True
    )
    return der


def _drop_attr(name: str) -> Callable[[Any], None]:
    def change(signed: Any) -> None:
        si = signed["signer_infos"][0]
        si["signed_attrs"] = [a for a in si["signed_attrs"] if a["type"].native != name]

    return change


def _swap_content_type(signed: Any) -> None:
    encap = signed["encap_content_info"]
    signed["encap_content_info"] = {"content_type": "data", "content": encap["content"].contents}


def _two_signers(signed: Any) -> None:
    si = signed["signer_infos"][0]
    signed["signer_infos"] = [si, si.copy()]


def _no_signed_attrs(signed: Any) -> None:
    signed["signer_infos"][0]["signed_attrs"] = None


TAMPERS: list[tuple[str, Callable[[Any], None], str]] = [
    ("no contentType", _drop_attr("content_type"), "content_type is missing"),
    ("no messageDigest", _drop_attr("message_digest"), "message_digest"),
    ("no ESS v2", _drop_attr("signing_certificate_v2"), "signingCertificateV2"),
    ("eContentType data", _swap_content_type, "not id-ct-TSTInfo"),
    ("two signers", _two_signers, "exactly one"),
    ("no signed attributes", _no_signed_attrs, "no signed attributes"),
]


@pytest.mark.parametrize(
    ("change", "match"), [(c, m) for _, c, m in TAMPERS], ids=[n for n, _, _ in TAMPERS]
)
def test_structural_tampering_fails(
    pki: Pki, tsa: TimeStampAuthority, change: Callable[[Any], None], match: str
) -> None:
    _failure(pki, _rebuild(granted_token(tsa), change), match)


def test_ess_hash_must_match_signer(pki: Pki, tsa: TimeStampAuthority) -> None:
    # Re-sign honestly, but name another certificate in ESSCertIDv2.
    tsa2 = pki.authority()
    tsa2._parts = dict(tsa2._parts)
    ess = tsp.ESSCertIDv2({"cert_hash": hashlib.sha256(b"another cert").digest()})
    tsa2._parts["ess_attribute"] = cms.CMSAttribute(
        {"type": "signing_certificate_v2", "values": [{"certs": [ess]}]}
    )
    _failure(pki, granted_token(tsa2), "ESSCertIDv2 hash")


@pytest.fixture(scope="module")
def token(tsa: TimeStampAuthority) -> bytes:
    return granted_token(tsa, cert_req=True)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(position=st.integers(min_value=0), bit=st.integers(min_value=0, max_value=7))
def test_any_bit_flip_fails(pki: Pki, token: bytes, position: int, bit: int) -> None:
    tampered = bytearray(token)
    tampered[position % len(token)] ^= 1 << bit
    with pytest.raises(TimestampError) as info:
        verify(pki, bytes(tampered))
    assert info.value.code is ErrorCode.TIMESTAMP_INVALID


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=400))
def test_fuzz_verify_reply_raises_only_timestamp_error(pki: Pki, body: bytes) -> None:
    with pytest.raises(TimestampError):
        verify_reply(body, data=DATA, nonce=None, trusted_roots=[pki.root])


def test_query_arguments_are_checked() -> None:
    with pytest.raises(TimestampError, match="exactly one"):
        build_query(DATA, digest=bytes(32), nonce=None)
    with pytest.raises(TimestampError, match="not one of"):
        build_query(DATA, hash_name="sha1", nonce=None)
    with pytest.raises(TimestampError, match="32 bytes"):
        build_query(digest=bytes(20), nonce=None)


# -- HTTP -----------------------------------------------------------------------------------


@pytest.fixture
async def http(tsa: TimeStampAuthority) -> Any:
    async with TestClient(TestServer(create_app(tsa, max_body_bytes=1024))) as client:
        yield client


async def test_http_grants(pki: Pki, http: Any) -> None:
    response = await http.post(
        "/", data=build_query(DATA, nonce=3), headers={"Content-Type": TIMESTAMP_QUERY}
    )
    assert response.status == 200
    assert response.content_type == TIMESTAMP_REPLY
    token = verify_reply(await response.read(), data=DATA, nonce=3, trusted_roots=[pki.root])
    assert token.nonce == 3


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ({"Content-Type": "application/octet-stream"}, b"x", 415),
        ({}, b"x", 415),
        ({"Content-Type": TIMESTAMP_QUERY}, b"x" * 2000, 413),
        ({"Content-Type": TIMESTAMP_QUERY}, b"\x30\x00", 200),
    ],
    ids=["wrong-type", "no-type", "too-large", "malformed"],
)
async def test_http_refusals_are_tsp_rejections(
    http: Any, headers: dict[str, str], body: bytes, status: int
) -> None:
    response = await http.post("/", data=body, headers=headers)
    assert response.status == status
    assert response.content_type == TIMESTAMP_REPLY
    reply = TimeStampRespStructure.load(await response.read(), strict=True)
    assert status_of(reply) == ("rejection", {"bad_data_format"})


async def test_http_chunked_oversize_body(http: Any) -> None:
    async def chunks() -> Any:
        for _ in range(10):
            yield b"y" * 500

    response = await http.post("/", data=chunks(), headers={"Content-Type": TIMESTAMP_QUERY})
    assert response.status == 413
    assert status_of(TimeStampRespStructure.load(await response.read()))[1] == {"bad_data_format"}


async def test_http_get_is_405(http: Any) -> None:
    response = await http.get("/")
    assert response.status == 405
    assert response.headers["Allow"] == "POST"


async def test_client_round_trip(pki: Pki, http: Any) -> None:
    url = str(http.make_url("/"))
    async with TimestampClient(url, trusted_roots=[pki.root], timeout_s=10) as client:
        token = await client.timestamp(DATA)
    assert token.message_digest == hashlib.sha256(DATA).digest()
    assert verify_token(token.token_der, data=DATA, trusted_roots=[pki.root]) == token


async def test_client_refused_policy_is_invalid(pki: Pki, http: Any) -> None:
    url = str(http.make_url("/"))
    async with TimestampClient(url, trusted_roots=[pki.root], policy="1.2.3") as client:
        with pytest.raises(TimestampError, match="unaccepted_policy") as info:
            await client.timestamp(DATA)
    assert info.value.code is ErrorCode.TIMESTAMP_INVALID


async def test_client_network_failure_is_unavailable(pki: Pki, unused_tcp_port: int) -> None:
    url = f"http://127.0.0.1:{unused_tcp_port}/"
    async with TimestampClient(url, trusted_roots=[pki.root], timeout_s=5) as client:
        with pytest.raises(TimestampError) as info:
            await client.timestamp(DATA)
    assert info.value.code is ErrorCode.TSA_UNAVAILABLE


async def test_client_oversize_reply_is_invalid(pki: Pki, http: Any) -> None:
    url = str(http.make_url("/"))
    async with TimestampClient(url, trusted_roots=[pki.root], max_reply_bytes=10) as client:
        with pytest.raises(TimestampError, match="exceeds") as info:
            await client.timestamp(DATA)
    assert info.value.code is ErrorCode.TIMESTAMP_INVALID


def _with_signer_info(token: bytes, signer_info: bytes) -> bytes:
    """``token`` with its SignerInfo replaced by these exact bytes (outer lengths redone,
    the SignerInfo's own bytes kept as they are)."""
    info = cms.ContentInfo.load(token)
    signed = info["content"]
    signed["signer_infos"] = cms.SignerInfos([cms.SignerInfo.load(signer_info)])
    rebuilt: bytes = cms.ContentInfo({"content_type": "signed_data", "content": signed}).dump()
    assert signer_info in rebuilt
    return rebuilt


def test_a_signer_info_in_ber_that_is_not_der_is_refused(pki: Pki, tsa: TimeStampAuthority) -> None:
    # The same SignerInfo with its length in a non-minimal long form: the same value,
    # another encoding, outside the signature. One encoding only is accepted.
    token = granted_token(tsa)
    original = cms.ContentInfo.load(token)["content"]["signer_infos"][0].dump()
    assert original[1] == 0x82  # a two-octet long-form length
    widened = b"\x30\x83\x00" + original[2:]
    assert verify(pki, _with_signer_info(token, original)).serial_number > 0
    _failure(pki, _with_signer_info(token, widened), "signer info is not DER-encoded")
