"""The issuing CA and the PKI directory: profiles, records, revocation."""

from __future__ import annotations

import datetime as dt
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from certs.ca import CertStatus, issuer_key_sha1
from certs.errors import PKIError
from certs.keys import KeyAlgorithm, generate_private_key, load_certificate_chain
from certs.pkidir import PKIDirectory
from certs.profiles import EKU_CONFIGURATION_SIGNING, EKU_LOG_SIGNING, Profile
from serai.errors import ErrorCode, InvalidIdentifierError


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKIDirectory:
    return PKIDirectory.init(tmp_path_factory.mktemp("pki") / "pki", instance="UZ")


def _ext(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> x509.Extension[x509.ExtensionType]:
    return cert.extensions.get_extension_for_oid(oid)


def test_layout_is_complete(pki: PKIDirectory) -> None:
    for path in (
        pki.root_cert,
        pki.issuing_cert,
        pki.ocsp_cert,
        pki.tsa_cert,
        pki.db,
        pki.root_key,
        pki.issuing_key,
        pki.ocsp_key,
        pki.tsa_key,
        pki.settings_path,
    ):
        assert path.exists(), path
    for key in (pki.root_key, pki.issuing_key, pki.ocsp_key, pki.tsa_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    settings = pki.settings()
    assert settings.instance == "UZ"
    assert settings.algorithm is KeyAlgorithm.EC_P256


def test_tsa_pem_is_tsa_then_issuing_chain(pki: PKIDirectory) -> None:
    tsa, issuing = load_certificate_chain(pki.tsa_cert)
    assert issuing == load_certificate_chain(pki.issuing_cert)[0]
    tsa.verify_directly_issued_by(issuing)
    issuing.verify_directly_issued_by(pki.root_certificate())
    eku = _ext(tsa, ExtensionOID.EXTENDED_KEY_USAGE)
    assert eku.critical
    assert list(eku.value) == [ExtendedKeyUsageOID.TIME_STAMPING]  # type: ignore[call-overload]


def test_openssl_verifies_every_service_certificate(pki: PKIDirectory) -> None:
    for path, purpose in ((pki.tsa_cert, "timestampsign"), (pki.ocsp_cert, "ocsphelper")):
        result = subprocess.run(
            [
                "openssl",
                "verify",
                "-purpose",
                purpose,
                "-CAfile",
                str(pki.root_cert),
                "-untrusted",
                str(pki.issuing_cert),
                str(path),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().endswith("OK")


def test_ca_certificates_have_constraints(pki: PKIDirectory) -> None:
    root = pki.root_certificate()
    issuing = load_certificate_chain(pki.issuing_cert)[0]
    for cert, path_len in ((root, 1), (issuing, 0)):
        bc = _ext(cert, ExtensionOID.BASIC_CONSTRAINTS)
        assert bc.critical
        assert bc.value == x509.BasicConstraints(ca=True, path_length=path_len)
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        assert ku.key_cert_sign
        assert ku.crl_sign


@pytest.mark.parametrize(
    ("profile", "subject", "eku"),
    [
        pytest.param(
            Profile.AUTH,
            "UZ/GOV/STC/gw:main",
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
            id="auth",
        ),
        pytest.param(Profile.SIGN, "UZ/GOV/STC", None, id="sign"),
        pytest.param(Profile.OCSP, "Second OCSP", [ExtendedKeyUsageOID.OCSP_SIGNING], id="ocsp"),
        pytest.param(Profile.TSA, "Second TSA", [ExtendedKeyUsageOID.TIME_STAMPING], id="tsa"),
        pytest.param(
            Profile.CONFIGURATION_SIGNING, "UZ registry", [EKU_CONFIGURATION_SIGNING], id="confsign"
        ),
        pytest.param(Profile.LOG_SIGNING, "UZ/GOV/STC/gw:main", [EKU_LOG_SIGNING], id="logsign"),
    ],
)
def test_profiles(
    pki: PKIDirectory, profile: Profile, subject: str, eku: list[x509.ObjectIdentifier] | None
) -> None:
    ca = pki.issuing_ca()
    key = generate_private_key()
    cert = ca.issue(profile, subject, key.public_key())
    cert.verify_directly_issued_by(ca.certificate)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == subject
    bc = _ext(cert, ExtensionOID.BASIC_CONSTRAINTS)
    assert bc.critical
    assert bc.value == x509.BasicConstraints(ca=False, path_length=None)
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature
    assert not ku.key_cert_sign
    assert ku.content_commitment == (
        profile in {Profile.SIGN, Profile.TSA, Profile.CONFIGURATION_SIGNING, Profile.LOG_SIGNING}
    )
    if eku is None:
        with pytest.raises(x509.ExtensionNotFound):
            cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    else:
        assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == eku
    record = ca.records.get(cert.serial_number)
    assert record is not None
    assert record.certificate == cert
    assert record.status is CertStatus.GOOD
    assert record.profile is profile


def test_member_bound_subjects_carry_the_member_id(pki: PKIDirectory) -> None:
    ca = pki.issuing_ca()
    gw = ca.issue(Profile.AUTH, "UZ/GOV/STC/gw:main", generate_private_key().public_key())
    assert gw.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == "UZ/GOV/STC"
    san = gw.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    ocsp_urls = [
        d.access_location.value
        for d in gw.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    ]
    assert ocsp_urls == [pki.settings().ocsp_url]


@pytest.mark.parametrize(
    ("profile", "subject"),
    [
        pytest.param(Profile.SIGN, "UZ/GOV/STC/tax", id="sign-needs-member-not-subsystem"),
        pytest.param(Profile.AUTH, "UZ/GOV/STC", id="auth-needs-gateway"),
        pytest.param(Profile.SIGN, "UZ/GOV/ST C", id="bad-character"),
    ],
)
def test_member_bound_profiles_refuse_wrong_subjects(
    pki: PKIDirectory, profile: Profile, subject: str
) -> None:
    with pytest.raises(InvalidIdentifierError):
        pki.issuing_ca().issue(profile, subject, generate_private_key().public_key())


def test_auth_names_given_hosts(pki: PKIDirectory) -> None:
    cert = pki.issuing_ca().issue(
        Profile.AUTH,
        "UZ/GOV/STC/gw:b",
        generate_private_key().public_key(),
        dns_names=["gw.stc.example"],
        ip_addresses=["10.0.0.7", "::1"],
    )
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["gw.stc.example"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.7", "::1"]


def test_bad_ip_is_refused(pki: PKIDirectory) -> None:
    with pytest.raises(PKIError) as info:
        pki.issuing_ca().issue(
            Profile.AUTH,
            "UZ/GOV/STC/gw:c",
            generate_private_key().public_key(),
            ip_addresses=["300.1.1.1"],
        )
    assert info.value.code is ErrorCode.INVALID_REQUEST


def test_validity_never_exceeds_the_issuer(pki: PKIDirectory) -> None:
    ca = pki.issuing_ca()
    cert = ca.issue(
        Profile.TSA,
        "long TSA",
        generate_private_key().public_key(),
        validity=dt.timedelta(days=365 * 50),
    )
    assert cert.not_valid_after_utc == ca.certificate.not_valid_after_utc


def test_serials_are_random_positive_and_at_most_20_octets(pki: PKIDirectory) -> None:
    ca = pki.issuing_ca()
    serials = {
        ca.issue(Profile.TSA, f"tsa {i}", generate_private_key().public_key()).serial_number
        for i in range(20)
    }
    assert len(serials) == 20
    assert all(0 < s < 2**159 for s in serials)


def test_revocation_is_recorded_and_permanent(pki: PKIDirectory) -> None:
    ca = pki.issuing_ca()
    cert = ca.issue(Profile.SIGN, "UZ/GOV/CADASTRE", generate_private_key().public_key())
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    record = ca.revoke(cert.serial_number, reason=x509.ReasonFlags.key_compromise, at=when)
    assert record.status is CertStatus.REVOKED
    assert record.revoked_at == when
    assert record.revocation_reason is x509.ReasonFlags.key_compromise
    found = ca.records.lookup(
        issuer_sha1=issuer_key_sha1(ca.certificate), serial=cert.serial_number
    )
    assert found is not None
    assert found.status is CertStatus.REVOKED
    with pytest.raises(PKIError) as info:
        ca.revoke(cert.serial_number)
    assert info.value.code is ErrorCode.CERTIFICATE_REVOKED
    again = ca.records.get(cert.serial_number)
    assert again is not None
    assert again.revoked_at == when


def test_revoking_unknown_serial_is_refused(pki: PKIDirectory) -> None:
    with pytest.raises(PKIError) as info:
        pki.issuing_ca().revoke(12345)
    assert "no certificate with serial" in info.value.message


def test_lookup_is_per_issuer(pki: PKIDirectory) -> None:
    ca = pki.issuing_ca()
    cert = ca.issue(Profile.TSA, "per issuer", generate_private_key().public_key())
    assert ca.records.lookup(issuer_sha1=b"\x00" * 20, serial=cert.serial_number) is None


def test_issuer_key_hash_matches_openssl(pki: PKIDirectory) -> None:
    # openssl ocsp prints the issuerKeyHash of a request it builds: an independent check.
    issuing = load_certificate_chain(pki.issuing_cert)[0]
    leaf = pki.tsa_cert
    result = subprocess.run(
        [
            "openssl",
            "ocsp",
            "-issuer",
            str(pki.issuing_cert),
            "-cert",
            str(leaf),
            "-req_text",
            "-reqout",
            "/dev/null",
            "-no_nonce",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(x for x in result.stdout.splitlines() if "Issuer Key Hash" in x)
    assert line.split(":", 1)[1].strip().lower() == issuer_key_sha1(issuing).hex()


@pytest.mark.parametrize(
    ("algorithm", "kind"),
    [
        pytest.param(KeyAlgorithm.RSA_3072, rsa.RSAPublicKey, id="rsa"),
        pytest.param(KeyAlgorithm.ED25519, ed25519.Ed25519PublicKey, id="ed25519"),
        pytest.param(KeyAlgorithm.EC_P256, ec.EllipticCurvePublicKey, id="ec"),
    ],
)
def test_other_algorithms(tmp_path: Path, algorithm: KeyAlgorithm, kind: type[object]) -> None:
    pki = PKIDirectory.init(tmp_path / "pki", instance="UZ", algorithm=algorithm)
    assert isinstance(pki.root_certificate().public_key(), kind)
    cert = pki.issuing_ca().issue(Profile.SIGN, "UZ/GOV/STC", generate_private_key().public_key())
    cert.verify_directly_issued_by(load_certificate_chain(pki.issuing_cert)[0])


def test_init_refuses_an_existing_pki(pki: PKIDirectory) -> None:
    with pytest.raises(PKIError) as info:
        PKIDirectory.init(pki.root, instance="UZ")
    assert "already holds a PKI" in info.value.message


def test_encrypted_pki_needs_its_passphrase(tmp_path: Path) -> None:
    pki = PKIDirectory.init(tmp_path / "pki", instance="UZ", passphrase=b"s3cret")
    assert pki.issuing_key.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY")
    with pytest.raises(PKIError) as info:
        pki.issuing_ca()
    assert info.value.code is ErrorCode.KEY_PASSPHRASE_INVALID
    pki.issuing_ca(passphrase=b"s3cret")
