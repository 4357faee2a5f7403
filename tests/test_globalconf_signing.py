"""registry.signing: every guarantee of verify_signed_configuration, and that the detached
JWS checks with a JOSE library used directly (pyjwt), without Serai's verifier."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
from collections.abc import Callable

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from certs.keys import KeyAlgorithm, PrivateKey, generate_private_key
from certs.pkidir import PKIDirectory
from certs.profiles import Profile
from registry import signing
from registry.errors import ConfigurationError
from registry.signing import jws_algorithm_for, sign_configuration, verify_signed_configuration
from serai.errors import ErrorCode
from serai_proto.globalconf.v1 import globalconf_pb2 as pb

CONFIGURATION = b"\x0a\x02UZ\x10\x07 any bytes: the signer does not parse them"


@dataclasses.dataclass(frozen=True)
class Signer:
    key: PrivateKey
    certificate: x509.Certificate

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def sha256(self) -> bytes:
        return hashlib.sha256(self.der).digest()

    def sign(self, data: bytes = CONFIGURATION) -> bytes:
        return sign_configuration(data, key=self.key, certificate=self.certificate)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKIDirectory:
    return PKIDirectory.init(tmp_path_factory.mktemp("pki") / "pki", instance="UZ")


def _signer(pki: PKIDirectory, algorithm: KeyAlgorithm | str, name: str) -> Signer:
    key = (
        ec.generate_private_key(ec.SECP384R1())
        if algorithm == "ec-p384"
        else generate_private_key(KeyAlgorithm(algorithm))
    )
    cert = pki.issuing_ca().issue(Profile.CONFIGURATION_SIGNING, name, key.public_key())
    return Signer(key=key, certificate=cert)


@pytest.fixture(scope="module")
def es256(pki: PKIDirectory) -> Signer:
    return _signer(pki, KeyAlgorithm.EC_P256, "UZ registry")


@pytest.fixture(scope="module")
def other(pki: PKIDirectory) -> Signer:
    return _signer(pki, KeyAlgorithm.EC_P256, "UZ registry (other key)")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _parts(envelope: bytes) -> pb.SignedGlobalConfiguration:
    message = pb.SignedGlobalConfiguration()
    message.ParseFromString(envelope)
    return message


def _envelope(configuration: bytes, signature: str, cert_sha256: bytes) -> bytes:
    return pb.SignedGlobalConfiguration(
        configuration=configuration, signature=signature, signing_certificate_sha256=cert_sha256
    ).SerializeToString(deterministic=True)


def _jws(header: dict[str, object], signature: bytes) -> str:
    return f"{_b64url(json.dumps(header).encode())}..{_b64url(signature)}"


def _refused(envelope: bytes, certs: list[bytes]) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as info:
        verify_signed_configuration(envelope, signing_certificates=certs)
    return info.value


def test_public_surface() -> None:
    assert set(signing.__all__) == {
        "jws_algorithm_for",
        "sign_configuration",
        "verify_signed_configuration",
    }


# -- accepted -------------------------------------------------------------------------------------


def test_good_signature_returns_the_exact_bytes(es256: Signer) -> None:
    assert verify_signed_configuration(es256.sign(), signing_certificates=[es256.der]) == (
        CONFIGURATION
    )


def test_any_of_several_anchor_certificates(es256: Signer, other: Signer) -> None:
    anchor = [es256.der, other.der]
    assert verify_signed_configuration(es256.sign(), signing_certificates=anchor) == CONFIGURATION
    assert verify_signed_configuration(other.sign(), signing_certificates=anchor) == CONFIGURATION


def test_envelope_names_the_signer_and_header_is_as_documented(es256: Signer) -> None:
    message = _parts(es256.sign())
    assert message.configuration == CONFIGURATION
    assert message.signing_certificate_sha256 == es256.sha256
    header = jwt.get_unverified_header(message.signature)
    assert header["alg"] == "ES256"
    assert header["typ"] == "serai-globalconf+jws"
    assert header["x5t#S256"] == _b64url(es256.sha256)
    assert base64.b64decode(header["x5c"][0]) == es256.der
    assert message.signature.split(".")[1] == ""  # detached


@pytest.mark.parametrize(
    ("algorithm", "alg"),
    [
        (KeyAlgorithm.EC_P256, "ES256"),
        ("ec-p384", "ES384"),
        (KeyAlgorithm.ED25519, "EdDSA"),
        (KeyAlgorithm.RSA_3072, "RS256"),
    ],
)
def test_each_supported_key_type_signs_and_verifies(
    pki: PKIDirectory, algorithm: KeyAlgorithm | str, alg: str
) -> None:
    signer = _signer(pki, algorithm, f"UZ registry {alg}")
    envelope = signer.sign()
    assert jwt.get_unverified_header(_parts(envelope).signature)["alg"] == alg
    assert jws_algorithm_for(signer.key) == alg
    assert verify_signed_configuration(envelope, signing_certificates=[signer.der]) == (
        CONFIGURATION
    )


def test_empty_configuration_bytes_still_signed(es256: Signer) -> None:
    assert verify_signed_configuration(es256.sign(b""), signing_certificates=[es256.der]) == b""


@pytest.mark.parametrize("algorithm", [KeyAlgorithm.EC_P256, KeyAlgorithm.ED25519])
def test_independent_check_with_pyjwt(pki: PKIDirectory, algorithm: KeyAlgorithm) -> None:
    """An auditor's check: only pyjwt, the certificate from x5c and the shipped bytes."""
    signer = _signer(pki, algorithm, f"UZ registry {algorithm}")
    message = _parts(signer.sign())
    header = jwt.get_unverified_header(message.signature)
    cert = x509.load_der_x509_certificate(base64.b64decode(header["x5c"][0]))
    public_key = cert.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey)
    assert (
        _b64url(hashlib.sha256(base64.b64decode(header["x5c"][0])).digest()) == (header["x5t#S256"])
    )
    decoded = jwt.PyJWS().decode_complete(
        message.signature,
        key=public_key,
        algorithms=[header["alg"]],
        detached_payload=message.configuration,
    )
    assert decoded["payload"] == CONFIGURATION
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.PyJWS().decode_complete(
            message.signature,
            key=public_key,
            algorithms=[header["alg"]],
            detached_payload=message.configuration + b"!",
        )


# -- refused --------------------------------------------------------------------------------------


def test_unknown_signer(es256: Signer, other: Signer) -> None:
    error = _refused(es256.sign(), [other.der])
    assert error.code is ErrorCode.GLOBALCONF_UNKNOWN_SIGNER


def test_envelope_claiming_a_known_signer_but_signed_by_another(
    es256: Signer, other: Signer
) -> None:
    message = _parts(other.sign())
    forged = _envelope(message.configuration, message.signature, es256.sha256)
    error = _refused(forged, [es256.der])
    # other's x5t#S256 header contradicts the envelope's hash.
    assert error.code is ErrorCode.GLOBALCONF_SIGNATURE_INVALID


def test_signature_by_another_key_without_x5t(es256: Signer, other: Signer) -> None:
    header = {"alg": "ES256"}
    token = jwt.PyJWS().encode(CONFIGURATION, other.key, algorithm="ES256", headers=header)
    head, _, sig = token.split(".")
    forged = _envelope(CONFIGURATION, f"{head}..{sig}", es256.sha256)
    assert _refused(forged, [es256.der]).code is ErrorCode.GLOBALCONF_SIGNATURE_INVALID


def test_alg_none(es256: Signer) -> None:
    forged = _envelope(CONFIGURATION, _jws({"alg": "none"}, b""), es256.sha256)
    error = _refused(forged, [es256.der])
    assert error.code is ErrorCode.GLOBALCONF_SIGNATURE_INVALID
    assert "'none'" in error.message


def test_alg_hs256_with_the_public_key_as_secret(es256: Signer) -> None:
    """The classic algorithm confusion: HMAC keyed with the (public) certificate bytes."""
    header = {"alg": "HS256", "x5t#S256": _b64url(es256.sha256)}
    head = _b64url(json.dumps(header).encode())
    for secret in (
        es256.der,
        es256.certificate.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    ):
        mac = hmac.new(secret, f"{head}.{_b64url(CONFIGURATION)}".encode(), "sha256").digest()
        forged = _envelope(CONFIGURATION, f"{head}..{_b64url(mac)}", es256.sha256)
        assert _refused(forged, [es256.der]).code is ErrorCode.GLOBALCONF_SIGNATURE_INVALID


def test_alg_es384_against_a_p256_certificate(es256: Signer) -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    token = jwt.PyJWS().encode(
        CONFIGURATION, p384, algorithm="ES384", is_payload_detached=True, headers={}
    )
    forged = _envelope(CONFIGURATION, token, es256.sha256)
    error = _refused(forged, [es256.der])
    assert error.code is ErrorCode.GLOBALCONF_SIGNATURE_INVALID
    assert "ES256" in error.message


def test_alg_es256_against_an_ed25519_certificate(pki: PKIDirectory, es256: Signer) -> None:
    ed = _signer(pki, KeyAlgorithm.ED25519, "UZ registry ed")
    message = _parts(es256.sign())
    forged = _envelope(message.configuration, message.signature, ed.sha256)
    assert _refused(forged, [ed.der]).code is ErrorCode.GLOBALCONF_SIGNATURE_INVALID


def test_payload_not_detached(es256: Signer) -> None:
    headers = {"x5t#S256": _b64url(es256.sha256)}
    attached = jwt.PyJWS().encode(CONFIGURATION, es256.key, algorithm="ES256", headers=headers)
    forged = _envelope(CONFIGURATION, attached, es256.sha256)
    error = _refused(forged, [es256.der])
    assert error.code is ErrorCode.GLOBALCONF_SIGNATURE_INVALID
    assert "detached" in error.message


def test_attached_payload_of_other_bytes_does_not_help(es256: Signer) -> None:
    """A token whose own payload is A cannot vouch for shipped bytes B."""
    attached = jwt.PyJWS().encode(b"other", es256.key, algorithm="ES256")
    forged = _envelope(CONFIGURATION, attached, es256.sha256)
    assert _refused(forged, [es256.der]).code is ErrorCode.GLOBALCONF_SIGNATURE_INVALID


TAMPERS: dict[str, Callable[[bytes], bytes]] = {
    "flip first byte": lambda b: bytes([b[0] ^ 1]) + b[1:],
    "flip last byte": lambda b: b[:-1] + bytes([b[-1] ^ 0x80]),
    "append a byte": lambda b: b + b"\x00",
    "drop last byte": lambda b: b[:-1],
    "empty": lambda _b: b"",
}


@pytest.mark.parametrize("tamper", list(TAMPERS.values()), ids=list(TAMPERS))
def test_tampered_configuration_bytes(es256: Signer, tamper: Callable[[bytes], bytes]) -> None:
    message = _parts(es256.sign())
    forged = _envelope(tamper(message.configuration), message.signature, es256.sha256)
    assert _refused(forged, [es256.der]).code is ErrorCode.GLOBALCONF_SIGNATURE_INVALID


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda s: s[:-2] + ("A" if s[-2] != "A" else "B") + s[-1], id="sig-char"),
        pytest.param(lambda s: s[:-8], id="sig-truncated"),
        pytest.param(lambda s: s.rsplit(".", 1)[0] + ".", id="sig-empty"),
        pytest.param(lambda s: "garbage", id="not-a-jws"),
        pytest.param(lambda s: "", id="empty"),
        pytest.param(lambda s: "e30..", id="empty-header-object"),
        pytest.param(lambda s: "WzFd..AAAA", id="header-is-a-list"),
    ],
)
def test_tampered_signature(es256: Signer, tamper: Callable[[str], str]) -> None:
    message = _parts(es256.sign())
    forged = _envelope(message.configuration, tamper(message.signature), es256.sha256)
    assert _refused(forged, [es256.der]).code is ErrorCode.GLOBALCONF_SIGNATURE_INVALID


def test_x5t_mismatch(es256: Signer, other: Signer) -> None:
    headers = {"x5t#S256": _b64url(other.sha256)}
    token = jwt.PyJWS().encode(
        CONFIGURATION, es256.key, algorithm="ES256", headers=headers, is_payload_detached=True
    )
    forged = _envelope(CONFIGURATION, token, es256.sha256)
    error = _refused(forged, [es256.der])
    assert error.code is ErrorCode.GLOBALCONF_SIGNATURE_INVALID
    assert "x5t#S256" in error.message


def test_ed25519_signer_accepted_with_eddsa(pki: PKIDirectory) -> None:
    ed = _signer(pki, KeyAlgorithm.ED25519, "UZ registry ed25519")
    assert isinstance(ed.key, ed25519.Ed25519PrivateKey)
    envelope = ed.sign()
    assert jwt.get_unverified_header(_parts(envelope).signature)["alg"] == "EdDSA"
    assert verify_signed_configuration(envelope, signing_certificates=[ed.der]) == CONFIGURATION


@pytest.mark.parametrize(
    "envelope",
    [
        pytest.param(b"\xff\xff\xff", id="not-protobuf"),
        pytest.param(b"\x0a\x10short", id="truncated-field"),
    ],
)
def test_undecodable_envelope_is_invalid(es256: Signer, envelope: bytes) -> None:
    assert _refused(envelope, [es256.der]).code is ErrorCode.GLOBALCONF_INVALID


def test_empty_envelope_names_no_signer(es256: Signer) -> None:
    assert _refused(b"", [es256.der]).code is ErrorCode.GLOBALCONF_UNKNOWN_SIGNER


def test_unreadable_anchor_certificate(es256: Signer) -> None:
    junk = b"not a certificate"
    message = _parts(es256.sign())
    forged = _envelope(message.configuration, message.signature, hashlib.sha256(junk).digest())
    assert _refused(forged, [junk]).code is ErrorCode.GLOBALCONF_INVALID


def test_sign_rejects_unsupported_curve() -> None:
    with pytest.raises(ConfigurationError):
        jws_algorithm_for(ec.generate_private_key(ec.SECP521R1()))
