"""Tests of certs.validation: one named case per refusal rule, happy paths for every profile
with EC, RSA and Ed25519 PKIs, revocation (in memory and from the CA's records), and the
helpers.

Odd certificates that the CA toolkit refuses to make are built here directly with
``x509.CertificateBuilder`` (:func:`make`).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier
from hypothesis import given, settings
from hypothesis import strategies as st

import certs.validation
from certs.ca import CertificateAuthority
from certs.errors import CertificateError
from certs.keys import KeyAlgorithm, PrivateKey, generate_private_key, signature_hash_for
from certs.pkidir import PKIDirectory
from certs.profiles import EKU_CONFIGURATION_SIGNING, EKU_LOG_SIGNING, Profile
from certs.validation import (
    CertificateRecordsChecker,
    InMemoryRevocationChecker,
    TlsRole,
    TrustStore,
    ValidatedPath,
    auth_cert_sha256,
    member_of,
    validate_path,
)
from serai.errors import ErrorCode

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
AT = T0 + dt.timedelta(days=1)
HOUR = dt.timedelta(hours=1)
YEAR = dt.timedelta(days=365)

CA_KU = frozenset({"key_cert_sign", "crl_sign"})
SIGN_KU = frozenset({"digital_signature", "content_commitment"})
AUTH_KU = frozenset({"digital_signature"})
_KU_FLAGS = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
)
UNKNOWN_OID = ObjectIdentifier("1.3.6.1.4.1.55555.1")


# -- building odd certificates ------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: PrivateKey


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make(
    cn: str,
    *,
    issuer: Node | None = None,
    key: PrivateKey | None = None,
    ca: bool | None = False,
    bc_critical: bool = True,
    path_length: int | None = None,
    ku: Iterable[str] | None = SIGN_KU,
    eku: Sequence[ObjectIdentifier] | None = None,
    eku_critical: bool = False,
    not_before: dt.datetime = T0 - HOUR,
    not_after: dt.datetime = T0 + YEAR,
    extra: Sequence[tuple[x509.ExtensionType, bool]] = (),
    aki: bool = True,
    ski: bytes | None = None,
    sign_with: PrivateKey | None = None,
    digest: hashes.SHA224 | hashes.SHA256 | Literal["auto"] | None = "auto",
    pss: bool = False,
    subject: x509.Name | None = None,
) -> Node:
    """A certificate for ``cn``, issued by ``issuer`` (self-signed when ``None``).

    ``ca=None`` leaves basicConstraints out, ``ku=None`` keyUsage; ``ski`` overrides the
    subject key identifier; ``sign_with`` signs with another key than the issuer's.
    """
    key = key or ec.generate_private_key(ec.SECP256R1())
    issuer_name = issuer.cert.subject if issuer else (subject or name(cn))
    signer = sign_with or (issuer.key if issuer else key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject or name(cn))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.SubjectKeyIdentifier(ski)
            if ski is not None
            else x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
            critical=False,
        )
    )
    if ca is not None:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=ca, path_length=path_length if ca else None),
            critical=bc_critical,
        )
    if ku is not None:
        flags = set(ku)
        builder = builder.add_extension(
            x509.KeyUsage(
                **{flag: flag in flags for flag in _KU_FLAGS},
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=eku_critical)
    if aki and issuer is not None:
        issuer_ski = issuer.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski.value),
            critical=False,
        )
    for extension, critical in extra:
        builder = builder.add_extension(extension, critical=critical)
    algorithm = signature_hash_for(signer) if digest == "auto" else digest
    if pss:
        assert isinstance(signer, rsa.RSAPrivateKey)
        return Node(
            builder.sign(
                signer,
                algorithm,
                rsa_padding=padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
            ),
            key,
        )
    return Node(builder.sign(signer, algorithm), key)


def make_ca(cn: str, *, issuer: Node | None = None, **kwargs: object) -> Node:
    options: dict[str, object] = {"ca": True, "ku": CA_KU, **kwargs}
    return make(cn, issuer=issuer, **options)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Crafted:
    """A small hand-built PKI: root (pathLen 1) -> issuing CA (pathLen 0)."""

    root: Node
    issuing: Node

    @property
    def trust(self) -> TrustStore:
        return TrustStore(roots=[self.root.cert])


@functools.cache
def crafted() -> Crafted:
    root = make_ca("Test Root", path_length=1)
    return Crafted(root=root, issuing=make_ca("Test Issuing", issuer=root, path_length=0))


def sign_leaf(cn: str = "leaf", **kwargs: object) -> Node:
    options: dict[str, object] = {"issuer": crafted().issuing, **kwargs}
    return make(cn, **options)  # type: ignore[arg-type]


def validate(
    leaf: x509.Certificate,
    *,
    intermediates: Sequence[x509.Certificate] | None = None,
    trust: TrustStore | None = None,
    at: dt.datetime = AT,
    purpose: Profile = Profile.SIGN,
    tls_role: TlsRole | None = None,
    revocation: certs.validation.RevocationChecker | None = None,
    max_depth: int = certs.validation.DEFAULT_MAX_DEPTH,
) -> ValidatedPath:
    pki = crafted()
    return validate_path(
        leaf,
        intermediates=[pki.issuing.cert] if intermediates is None else intermediates,
        trust=trust or pki.trust,
        at=at,
        purpose=purpose,
        revocation=revocation,
        tls_role=tls_role,
        max_depth=max_depth,
    )


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def test_public_surface() -> None:
    assert set(certs.validation.__all__) == {
        "DEFAULT_MAX_DEPTH",
        "MAX_SIGNATURE_CHECKS",
        "CertificateRecordsChecker",
        "InMemoryRevocationChecker",
        "RevocationChecker",
        "TlsRole",
        "TrustStore",
        "ValidatedPath",
        "auth_cert_sha256",
        "member_of",
        "validate_path",
    }


def test_crafted_chain_validates() -> None:
    pki = crafted()
    leaf = sign_leaf()
    path = validate(leaf.cert)
    assert [der(c) for c in path.certificates] == [
        der(leaf.cert),
        der(pki.issuing.cert),
        der(pki.root.cert),
    ]
    assert path.leaf is leaf.cert
    assert [der(c) for c in path.intermediates] == [der(pki.issuing.cert)]
    assert der(path.root) == der(pki.root.cert)
    assert path.purpose is Profile.SIGN
    assert path.at == AT


# -- refusals: one named case per rule ----------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    """A refused validation: ``build`` returns the leaf and the keyword arguments."""

    build: Callable[[], tuple[x509.Certificate, dict[str, object]]]
    code: ErrorCode
    message: str


def _no_path_to_unknown_root() -> tuple[x509.Certificate, dict[str, object]]:
    other_root = make_ca("Other Root")
    other_issuing = make_ca("Other Issuing", issuer=other_root)
    leaf = make("leaf", issuer=other_issuing)
    return leaf.cert, {"intermediates": [other_issuing.cert, other_root.cert]}


def _missing_intermediate() -> tuple[x509.Certificate, dict[str, object]]:
    return sign_leaf().cert, {"intermediates": []}


def _fake_root_same_name() -> tuple[x509.Certificate, dict[str, object]]:
    # An attacker's root with the approved root's name, its own key, presented as intermediate.
    fake_root = make_ca("Test Root", path_length=1)
    fake_issuing = make_ca("Test Issuing", issuer=fake_root, path_length=0)
    leaf = make("leaf", issuer=fake_issuing)
    return leaf.cert, {"intermediates": [fake_issuing.cert, fake_root.cert]}


def _fake_root_same_name_and_key_id() -> tuple[x509.Certificate, dict[str, object]]:
    # The same, with the approved root's subject key identifier copied into the fake.
    real_ski = crafted().root.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    fake_root = make_ca("Test Root", path_length=1, ski=real_ski.value.digest)
    fake_issuing = make_ca("Test Issuing", issuer=fake_root, path_length=0)
    leaf = make("leaf", issuer=fake_issuing)
    return leaf.cert, {"intermediates": [fake_issuing.cert, fake_root.cert]}


def _approved_root_only_by_name() -> tuple[x509.Certificate, dict[str, object]]:
    # The store approves a root that shares the real root's name but not its key.
    pki = crafted()
    impostor = make_ca("Test Root", path_length=1)
    return sign_leaf().cert, {
        "intermediates": [pki.issuing.cert, pki.root.cert],
        "trust": TrustStore(roots=[impostor.cert]),
    }


def _forged_signature() -> tuple[x509.Certificate, dict[str, object]]:
    # Names the issuing CA (name and key id) but is signed with another key.
    return sign_leaf(sign_with=ec.generate_private_key(ec.SECP256R1())).cert, {}


def _expired_leaf() -> tuple[x509.Certificate, dict[str, object]]:
    return sign_leaf(not_after=AT - HOUR).cert, {}


def _not_yet_valid_leaf() -> tuple[x509.Certificate, dict[str, object]]:
    return sign_leaf(not_before=AT + HOUR).cert, {}


def _expired_intermediate() -> tuple[x509.Certificate, dict[str, object]]:
    root = crafted().root
    issuing = make_ca("Old Issuing", issuer=root, path_length=0, not_after=AT - HOUR)
    return make("leaf", issuer=issuing).cert, {"intermediates": [issuing.cert]}


def _expired_root() -> tuple[x509.Certificate, dict[str, object]]:
    root = make_ca("Old Root", not_after=AT - HOUR)
    issuing = make_ca("Issuing", issuer=root, path_length=0)
    leaf = make("leaf", issuer=issuing)
    return leaf.cert, {"intermediates": [issuing.cert], "trust": TrustStore(roots=[root.cert])}


def _wrong_key_usage() -> tuple[x509.Certificate, dict[str, object]]:
    return sign_leaf(ku=AUTH_KU).cert, {}  # no nonRepudiation: not a signing certificate


def _no_key_usage() -> tuple[x509.Certificate, dict[str, object]]:
    return sign_leaf(ku=None).cert, {}


def _ca_leaf() -> tuple[x509.Certificate, dict[str, object]]:
    return sign_leaf(ca=True, ku=SIGN_KU | CA_KU).cert, {}


def _leaf_with_key_cert_sign() -> tuple[x509.Certificate, dict[str, object]]:
    return sign_leaf(ku=SIGN_KU | {"key_cert_sign"}).cert, {}


def _intermediate(**kwargs: object) -> tuple[x509.Certificate, dict[str, object]]:
    options: dict[str, object] = {"issuer": crafted().root, "path_length": 0, **kwargs}
    issuing = make_ca("Odd Issuing", **options)  # type: ignore[arg-type]
    return make("leaf", issuer=issuing).cert, {"intermediates": [issuing.cert]}


def _intermediate_without_basic_constraints() -> tuple[x509.Certificate, dict[str, object]]:
    return _intermediate(ca=None)


def _intermediate_not_ca() -> tuple[x509.Certificate, dict[str, object]]:
    return _intermediate(ca=False, ku=CA_KU)


def _intermediate_non_critical_basic_constraints() -> tuple[x509.Certificate, dict[str, object]]:
    return _intermediate(bc_critical=False)


def _intermediate_without_key_cert_sign() -> tuple[x509.Certificate, dict[str, object]]:
    return _intermediate(ku={"crl_sign", "digital_signature"})


def _intermediate_unknown_critical_extension() -> tuple[x509.Certificate, dict[str, object]]:
    return _intermediate(extra=[(x509.UnrecognizedExtension(UNKNOWN_OID, b"\x05\x00"), True)])


def _path_length_exceeded() -> tuple[x509.Certificate, dict[str, object]]:
    # The issuing CA has pathLen 0, yet another CA sits below it.
    sub = make_ca("Sub Issuing", issuer=crafted().issuing)
    return make("leaf", issuer=sub).cert, {"intermediates": [sub.cert, crafted().issuing.cert]}


def _max_depth_exceeded() -> tuple[x509.Certificate, dict[str, object]]:
    root = make_ca("Deep Root")
    chain = [root]
    for i in range(3):
        chain.append(make_ca(f"Deep {i}", issuer=chain[-1]))
    leaf = make("leaf", issuer=chain[-1])
    return leaf.cert, {
        "intermediates": [n.cert for n in chain[1:]],
        "trust": TrustStore(roots=[root.cert]),
        "max_depth": 4,
    }


def _leaf_unknown_critical_extension() -> tuple[x509.Certificate, dict[str, object]]:
    return sign_leaf(extra=[(x509.UnrecognizedExtension(UNKNOWN_OID, b"\x05\x00"), True)]).cert, {}


def _leaf_critical_name_constraints() -> tuple[x509.Certificate, dict[str, object]]:
    # Known to cryptography but not processed here: refused when critical.
    constraints = x509.NameConstraints(
        permitted_subtrees=[x509.DNSName("gov.uz")], excluded_subtrees=None
    )
    return sign_leaf(extra=[(constraints, True)]).cert, {}


def _chain_loop() -> tuple[x509.Certificate, dict[str, object]]:
    # A and B each certify the other; neither leads to an approved root.
    key_a = ec.generate_private_key(ec.SECP256R1())
    key_b = ec.generate_private_key(ec.SECP256R1())
    stub_b = make_ca("Loop B", key=key_b)  # only to carry B's name and key id
    a = make_ca("Loop A", issuer=stub_b, key=key_a)
    b = make_ca("Loop B", issuer=a, key=key_b)
    leaf = make("leaf", issuer=a)
    return leaf.cert, {"intermediates": [a.cert, b.cert]}


def _signature_not_der() -> tuple[x509.Certificate, dict[str, object]]:
    # The BIT STRING's unused-bits octet set to 1: cryptography still verifies the signature.
    # (It loads only when the last bit, now unused, is zero: retry until it is.)
    leaf = sign_leaf().cert
    while leaf.signature[-1] & 1:
        leaf = sign_leaf().cert
    encoded = bytearray(der(leaf))
    encoded[-len(leaf.signature) - 1] = 1
    return x509.load_der_x509_certificate(bytes(encoded)), {}


def _weak_signature_hash() -> tuple[x509.Certificate, dict[str, object]]:
    return sign_leaf(digest=hashes.SHA224()).cert, {}


def _sign_with_eku() -> tuple[x509.Certificate, dict[str, object]]:
    return sign_leaf(eku=[EKU_LOG_SIGNING]).cert, {}


def _confsign_without_eku() -> tuple[x509.Certificate, dict[str, object]]:
    return sign_leaf().cert, {"purpose": Profile.CONFIGURATION_SIGNING}


def _logsign_with_confsign_eku() -> tuple[x509.Certificate, dict[str, object]]:
    return sign_leaf(eku=[EKU_CONFIGURATION_SIGNING]).cert, {"purpose": Profile.LOG_SIGNING}


def _tsa_eku_not_critical() -> tuple[x509.Certificate, dict[str, object]]:
    leaf = sign_leaf(eku=[ExtendedKeyUsageOID.TIME_STAMPING], eku_critical=False)
    return leaf.cert, {"purpose": Profile.TSA}


def _tsa_eku_not_only() -> tuple[x509.Certificate, dict[str, object]]:
    leaf = sign_leaf(
        eku=[ExtendedKeyUsageOID.TIME_STAMPING, ExtendedKeyUsageOID.CODE_SIGNING],
        eku_critical=True,
    )
    return leaf.cert, {"purpose": Profile.TSA}


def _ocsp_without_ocsp_signing() -> tuple[x509.Certificate, dict[str, object]]:
    leaf = sign_leaf(ku=AUTH_KU, eku=[ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE])
    return leaf.cert, {"purpose": Profile.OCSP}


def _auth_server_only_as_client() -> tuple[x509.Certificate, dict[str, object]]:
    leaf = sign_leaf(ku=AUTH_KU, eku=[ExtendedKeyUsageOID.SERVER_AUTH])
    return leaf.cert, {"purpose": Profile.AUTH, "tls_role": TlsRole.CLIENT}


def _auth_without_eku() -> tuple[x509.Certificate, dict[str, object]]:
    return sign_leaf(ku=AUTH_KU).cert, {"purpose": Profile.AUTH, "tls_role": TlsRole.SERVER}


REFUSALS: dict[str, Refusal] = {
    "unknown_root": Refusal(_no_path_to_unknown_root, ErrorCode.CERTIFICATE_UNTRUSTED, "no "),
    "missing_intermediate": Refusal(
        _missing_intermediate, ErrorCode.CERTIFICATE_UNTRUSTED, "no approved root"
    ),
    "fake_root_same_name_other_key": Refusal(
        _fake_root_same_name, ErrorCode.CERTIFICATE_UNTRUSTED, "no approved root"
    ),
    "fake_root_same_name_and_key_id": Refusal(
        _fake_root_same_name_and_key_id, ErrorCode.CERTIFICATE_UNTRUSTED, "no approved root"
    ),
    "approved_root_matches_only_by_name": Refusal(
        _approved_root_only_by_name, ErrorCode.CERTIFICATE_UNTRUSTED, "no approved root"
    ),
    "forged_signature": Refusal(
        _forged_signature, ErrorCode.CERTIFICATE_INVALID, "does not verify"
    ),
    "expired_leaf": Refusal(_expired_leaf, ErrorCode.CERTIFICATE_EXPIRED, "expired at"),
    "not_yet_valid_leaf": Refusal(
        _not_yet_valid_leaf, ErrorCode.CERTIFICATE_EXPIRED, "not valid before"
    ),
    "expired_intermediate": Refusal(
        _expired_intermediate, ErrorCode.CERTIFICATE_EXPIRED, "Old Issuing"
    ),
    "expired_root": Refusal(_expired_root, ErrorCode.CERTIFICATE_EXPIRED, "Old Root"),
    "wrong_key_usage": Refusal(
        _wrong_key_usage, ErrorCode.CERTIFICATE_INVALID, "lacks key usage content_commitment"
    ),
    "no_key_usage": Refusal(_no_key_usage, ErrorCode.CERTIFICATE_INVALID, "no key usage"),
    "ca_leaf": Refusal(_ca_leaf, ErrorCode.CERTIFICATE_INVALID, "is a CA"),
    "leaf_with_key_cert_sign": Refusal(
        _leaf_with_key_cert_sign, ErrorCode.CERTIFICATE_INVALID, "keyCertSign"
    ),
    "intermediate_without_basic_constraints": Refusal(
        _intermediate_without_basic_constraints, ErrorCode.CERTIFICATE_INVALID, "is not a CA"
    ),
    "intermediate_not_ca": Refusal(
        _intermediate_not_ca, ErrorCode.CERTIFICATE_INVALID, "is not a CA"
    ),
    "intermediate_non_critical_basic_constraints": Refusal(
        _intermediate_non_critical_basic_constraints,
        ErrorCode.CERTIFICATE_INVALID,
        "non-critical basicConstraints",
    ),
    "intermediate_without_key_cert_sign": Refusal(
        _intermediate_without_key_cert_sign, ErrorCode.CERTIFICATE_INVALID, "keyCertSign"
    ),
    "intermediate_unknown_critical_extension": Refusal(
        _intermediate_unknown_critical_extension,
        ErrorCode.CERTIFICATE_INVALID,
        "unrecognised critical extension",
    ),
    "path_length_exceeded": Refusal(
        _path_length_exceeded, ErrorCode.CERTIFICATE_INVALID, "allows 0 intermediate"
    ),
    "max_depth_exceeded": Refusal(
        _max_depth_exceeded, ErrorCode.CERTIFICATE_INVALID, "longer than 4"
    ),
    "leaf_unknown_critical_extension": Refusal(
        _leaf_unknown_critical_extension,
        ErrorCode.CERTIFICATE_INVALID,
        "unrecognised critical extension 1.3.6.1.4.1.55555.1",
    ),
    "leaf_critical_name_constraints": Refusal(
        _leaf_critical_name_constraints,
        ErrorCode.CERTIFICATE_INVALID,
        "unrecognised critical extension",
    ),
    "chain_loop": Refusal(_chain_loop, ErrorCode.CERTIFICATE_INVALID, "loop"),
    "signature_not_der": Refusal(
        _signature_not_der, ErrorCode.CERTIFICATE_INVALID, "not DER-encoded"
    ),
    "weak_signature_hash": Refusal(
        _weak_signature_hash, ErrorCode.CERTIFICATE_INVALID, "not accepted"
    ),
    "sign_with_eku": Refusal(
        _sign_with_eku, ErrorCode.CERTIFICATE_INVALID, "has an extended key usage"
    ),
    "confsign_without_eku": Refusal(
        _confsign_without_eku, ErrorCode.CERTIFICATE_INVALID, "no extended key usage"
    ),
    "logsign_with_confsign_eku": Refusal(
        _logsign_with_confsign_eku, ErrorCode.CERTIFICATE_INVALID, "lacks extended key usage"
    ),
    "tsa_eku_not_critical": Refusal(
        _tsa_eku_not_critical, ErrorCode.CERTIFICATE_INVALID, "critical extended key usage"
    ),
    "tsa_eku_not_only_time_stamping": Refusal(
        _tsa_eku_not_only, ErrorCode.CERTIFICATE_INVALID, "only"
    ),
    "ocsp_any_eku_not_honoured": Refusal(
        _ocsp_without_ocsp_signing, ErrorCode.CERTIFICATE_INVALID, "OCSPSigning"
    ),
    "auth_server_only_as_client": Refusal(
        _auth_server_only_as_client, ErrorCode.CERTIFICATE_INVALID, "as TLS client"
    ),
    "auth_without_eku": Refusal(
        _auth_without_eku, ErrorCode.CERTIFICATE_INVALID, "no extended key usage"
    ),
}


@pytest.mark.parametrize("case", REFUSALS.values(), ids=REFUSALS.keys())
def test_refusal(case: Refusal) -> None:
    leaf, kwargs = case.build()
    with pytest.raises(CertificateError) as info:
        validate(leaf, **kwargs)  # type: ignore[arg-type]
    assert info.value.code is case.code, str(info.value)
    assert case.message in info.value.message


def test_forged_root_key_id_without_fake_root_is_a_bad_signature() -> None:
    # An issuing CA naming the approved root's name and key id, signed by another key.
    real_ski = crafted().root.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    fake_root = make_ca("Test Root", path_length=1, ski=real_ski.value.digest)
    fake_issuing = make_ca("Test Issuing", issuer=fake_root, path_length=0)
    leaf = make("leaf", issuer=fake_issuing)
    with pytest.raises(CertificateError) as info:
        validate(leaf.cert, intermediates=[fake_issuing.cert])
    assert info.value.code is ErrorCode.CERTIFICATE_INVALID
    assert "does not verify" in info.value.message


def test_signature_check_budget_bounds_path_building() -> None:
    # Many same-named intermediates without key ids: each costs a signature check.
    decoys = [make_ca("Test Issuing", issuer=crafted().root, aki=False) for _ in range(3)]
    leaf = make("leaf", issuer=crafted().issuing, aki=False)
    many = [
        make_ca("Test Issuing", aki=False).cert
        for _ in range(certs.validation.MAX_SIGNATURE_CHECKS)
    ]
    with pytest.raises(CertificateError) as info:
        validate(
            leaf.cert, intermediates=[*(d.cert for d in decoys), *many, crafted().issuing.cert]
        )
    assert info.value.code is ErrorCode.CERTIFICATE_INVALID
    assert "gave up" in info.value.message


def test_misuse_is_a_programming_error() -> None:
    leaf = sign_leaf().cert
    with pytest.raises(ValueError, match="timezone-aware"):
        validate(leaf, at=AT.replace(tzinfo=None))
    with pytest.raises(ValueError, match="end-entity purpose"):
        validate(leaf, purpose=Profile.ISSUING_CA)
    with pytest.raises(ValueError, match="tls_role"):
        validate(leaf, purpose=Profile.AUTH)
    with pytest.raises(ValueError, match="tls_role"):
        validate(leaf, tls_role=TlsRole.SERVER)
    with pytest.raises(ValueError, match="max_depth"):
        validate(leaf, max_depth=1)


# -- path building ------------------------------------------------------------------------


def test_validity_bounds_are_inclusive() -> None:
    leaf = sign_leaf(not_before=AT - HOUR, not_after=AT + HOUR).cert
    validate(leaf, at=AT - HOUR)
    validate(leaf, at=AT + HOUR)
    with pytest.raises(CertificateError):
        validate(leaf, at=AT + HOUR + dt.timedelta(seconds=1))


def test_alternative_intermediates_sharing_a_name_and_key_are_tried() -> None:
    # The CA re-issued its certificate (same name, same key); the old one has expired.
    pki = crafted()
    expired = make_ca(
        "Test Issuing", issuer=pki.root, key=pki.issuing.key, path_length=0, not_after=AT - HOUR
    )
    leaf = sign_leaf()
    path = validate(leaf.cert, intermediates=[expired.cert, pki.issuing.cert])
    assert der(path.intermediates[0]) == der(pki.issuing.cert)


def test_alternative_intermediates_sharing_only_a_name_are_tried() -> None:
    # No key identifiers anywhere: only the signature tells the issuers apart.
    pki = crafted()
    other = make_ca("Test Issuing", issuer=pki.root, path_length=0, aki=False)
    leaf = sign_leaf(aki=False)
    path = validate(leaf.cert, intermediates=[other.cert, pki.issuing.cert])
    assert der(path.intermediates[0]) == der(pki.issuing.cert)


def test_known_intermediates_of_the_trust_store_build_paths() -> None:
    pki = crafted()
    trust = TrustStore(roots=[pki.root.cert], intermediates=[pki.issuing.cert])
    validate(sign_leaf().cert, intermediates=[], trust=trust)


def test_the_most_advanced_failure_is_reported() -> None:
    # One candidate issuer has expired; another is unrelated: the expiry is the news.
    pki = crafted()
    expired = make_ca(
        "Test Issuing", issuer=pki.root, key=pki.issuing.key, path_length=0, not_after=AT - HOUR
    )
    leaf = sign_leaf()
    with pytest.raises(CertificateError) as info:
        validate(leaf.cert, intermediates=[expired.cert])
    assert info.value.code is ErrorCode.CERTIFICATE_EXPIRED


def test_rsa_pss_signatures_are_accepted() -> None:
    root_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    root = make_ca("PSS Root", key=root_key, pss=True)
    leaf = make("leaf", issuer=root, pss=True)
    validate(leaf.cert, intermediates=[], trust=TrustStore(roots=[root.cert]))


def load_or_none(data: bytes) -> x509.Certificate | None:
    """``data`` as a certificate, or ``None`` when cryptography refuses (or deprecates) it."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", CryptographyDeprecationWarning)
        try:
            return x509.load_der_x509_certificate(data)
        except (ValueError, x509.InvalidVersion, CryptographyDeprecationWarning):
            return None


def test_every_single_bit_flip_in_the_leaf_is_refused() -> None:
    # Exhaustive over the leaf's DER: a flip either breaks decoding or is refused with a
    # CertificateError, never accepted and never an exception of cryptography.
    pki = crafted()
    original = der(sign_leaf().cert)
    for index in range(len(original)):
        for bit in range(8):
            tampered = bytearray(original)
            tampered[index] ^= 1 << bit
            leaf = load_or_none(bytes(tampered))
            if leaf is None or der(leaf) == original:
                continue  # an unused bit of an encoding
            with pytest.raises(CertificateError):
                validate(leaf, intermediates=[pki.issuing.cert], trust=pki.trust)


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=64), st.integers(min_value=0))
def test_garbage_spliced_into_an_intermediate_is_refused(garbage: bytes, offset: int) -> None:
    # Whatever a peer sends as intermediates, validation refuses or accepts; it never crashes.
    pki = crafted()
    issuing = der(pki.issuing.cert)
    at = offset % len(issuing)
    odd = load_or_none(issuing[:at] + garbage + issuing[at + len(garbage) :])
    if odd is None:
        return
    leaf = make("leaf", issuer=pki.issuing)
    try:
        validate(leaf.cert, intermediates=[odd])
    except CertificateError:
        return
    assert der(odd) == issuing  # accepted only through the genuine issuing CA


# -- trust store --------------------------------------------------------------------------


def test_trust_store_refuses_a_root_that_is_not_a_ca() -> None:
    leaf = make("not a CA")
    with pytest.raises(CertificateError) as info:
        TrustStore(roots=[leaf.cert])
    assert info.value.code is ErrorCode.CERTIFICATE_INVALID


def test_trust_store_is_immutable_and_deduplicates() -> None:
    pki = crafted()
    trust = TrustStore(roots=[pki.root.cert, pki.root.cert])
    assert len(trust.roots) == 1
    assert trust.is_approved_root(pki.root.cert)
    assert not trust.is_approved_root(pki.issuing.cert)
    with pytest.raises(AttributeError):
        trust._roots = ()


# -- revocation ---------------------------------------------------------------------------


class RecordingChecker:
    """Records every call, refuses nothing."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, bytes]] = []

    def check(self, cert: x509.Certificate, issuer: x509.Certificate, at: dt.datetime) -> None:
        self.calls.append((der(cert), der(issuer)))


def test_revocation_is_checked_top_down_and_never_for_the_root() -> None:
    pki = crafted()
    leaf = sign_leaf()
    checker = RecordingChecker()
    validate(leaf.cert, revocation=checker)
    assert checker.calls == [
        (der(pki.issuing.cert), der(pki.root.cert)),
        (der(leaf.cert), der(pki.issuing.cert)),
    ]


def test_revoked_leaf_is_refused() -> None:
    leaf = sign_leaf()
    checker = InMemoryRevocationChecker()
    checker.revoke(issuer=crafted().issuing.cert, serial=leaf.cert.serial_number, at=AT - HOUR)
    with pytest.raises(CertificateError) as info:
        validate(leaf.cert, revocation=checker)
    assert info.value.code is ErrorCode.CERTIFICATE_REVOKED


def test_revoked_intermediate_is_refused() -> None:
    root = crafted().root
    issuing = make_ca("Revoked Issuing", issuer=root, path_length=0)
    leaf = make("leaf", issuer=issuing)
    checker = InMemoryRevocationChecker()
    checker.revoke(issuer=root.cert, serial=issuing.cert.serial_number, at=AT - HOUR)
    with pytest.raises(CertificateError) as info:
        validate(leaf.cert, intermediates=[issuing.cert], revocation=checker)
    assert info.value.code is ErrorCode.CERTIFICATE_REVOKED
    assert "Revoked Issuing" in info.value.message


def test_revoked_intermediate_with_a_reissued_alternative_is_accepted() -> None:
    pki = crafted()
    old = make_ca("Test Issuing", issuer=pki.root, key=pki.issuing.key, path_length=0)
    checker = InMemoryRevocationChecker()
    checker.revoke(issuer=pki.root.cert, serial=old.cert.serial_number, at=AT - HOUR)
    path = validate(
        sign_leaf().cert, intermediates=[old.cert, pki.issuing.cert], revocation=checker
    )
    assert der(path.intermediates[0]) == der(pki.issuing.cert)


def test_revocation_after_the_validation_time_does_not_count() -> None:
    leaf = sign_leaf()
    checker = InMemoryRevocationChecker()
    checker.revoke(issuer=crafted().issuing.cert, serial=leaf.cert.serial_number, at=AT)
    validate(leaf.cert, revocation=checker, at=AT - dt.timedelta(seconds=1))
    with pytest.raises(CertificateError):
        validate(leaf.cert, revocation=checker, at=AT)  # revoked_at <= at


def test_revocation_keeps_the_earliest_time() -> None:
    leaf = sign_leaf()
    issuer = crafted().issuing.cert
    checker = InMemoryRevocationChecker()
    checker.revoke(issuer=issuer, serial=leaf.cert.serial_number, at=AT - HOUR)
    checker.revoke(issuer=issuer, serial=leaf.cert.serial_number, at=AT + HOUR)
    with pytest.raises(CertificateError):
        validate(leaf.cert, revocation=checker)


def test_revocation_is_keyed_by_the_issuer_key() -> None:
    # Same serial under another issuer's key: not this certificate.
    leaf = sign_leaf()
    checker = InMemoryRevocationChecker()
    checker.revoke(issuer=crafted().root.cert, serial=leaf.cert.serial_number, at=AT - HOUR)
    validate(leaf.cert, revocation=checker)


def _ocsp_responder(*, no_check: bool, eku: Sequence[ObjectIdentifier]) -> Node:
    extra: list[tuple[x509.ExtensionType, bool]] = [(x509.OCSPNoCheck(), False)] if no_check else []
    return sign_leaf("responder", ku=AUTH_KU, eku=eku, extra=extra)


def test_ocsp_no_check_responder_is_not_checked() -> None:
    responder = _ocsp_responder(no_check=True, eku=[ExtendedKeyUsageOID.OCSP_SIGNING])
    checker = RecordingChecker()
    validate(responder.cert, purpose=Profile.OCSP, revocation=checker)
    assert [cert for cert, _ in checker.calls] == [der(crafted().issuing.cert)]


@pytest.mark.parametrize(
    ("no_check", "eku"),
    [
        pytest.param(False, [ExtendedKeyUsageOID.OCSP_SIGNING], id="ocsp_signer_without_nocheck"),
        pytest.param(True, [ExtendedKeyUsageOID.SERVER_AUTH], id="nocheck_without_ocsp_signing"),
    ],
)
def test_ocsp_no_check_needs_both_the_extension_and_the_eku(
    no_check: bool, eku: list[ObjectIdentifier]
) -> None:
    responder = _ocsp_responder(no_check=no_check, eku=eku)
    checker = InMemoryRevocationChecker()
    checker.revoke(issuer=crafted().issuing.cert, serial=responder.cert.serial_number, at=AT - HOUR)
    purpose, role = (
        (Profile.OCSP, None)
        if eku[0] == ExtendedKeyUsageOID.OCSP_SIGNING
        else (Profile.AUTH, TlsRole.SERVER)
    )
    with pytest.raises(CertificateError) as info:
        validate(responder.cert, purpose=purpose, tls_role=role, revocation=checker)
    assert info.value.code is ErrorCode.CERTIFICATE_REVOKED


# -- the development PKI: every profile, every algorithm ----------------------------------


@dataclass(frozen=True)
class DevPKI:
    directory: PKIDirectory
    ca: CertificateAuthority
    trust: TrustStore
    leaves: dict[str, x509.Certificate]


MEMBER = "UZ/GOV/STC"
GATEWAY = "UZ/GOV/STC/gw:main"


def _dev_pki(root: Path, algorithm: KeyAlgorithm) -> DevPKI:
    directory = PKIDirectory.init(root, instance="UZ", algorithm=algorithm, now=T0)
    ca = directory.issuing_ca()

    def issue(profile: Profile, subject: str) -> x509.Certificate:
        key = generate_private_key(algorithm)
        return ca.issue(profile, subject, key.public_key(), now=T0)

    leaves = {
        "auth": issue(Profile.AUTH, GATEWAY),
        "sign": issue(Profile.SIGN, MEMBER),
        "confsign": issue(Profile.CONFIGURATION_SIGNING, "UZ registry configuration"),
        "logsign": issue(Profile.LOG_SIGNING, GATEWAY),
        "ocsp": directory.ocsp_signer()[1][0],
        "tsa": directory.tsa_signer()[1][0],
    }
    return DevPKI(
        directory=directory,
        ca=ca,
        trust=TrustStore(roots=[directory.root_certificate()]),
        leaves=leaves,
    )


@pytest.fixture(scope="module", params=list(KeyAlgorithm), ids=str)
def dev_pki(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> DevPKI:
    algorithm: KeyAlgorithm = request.param
    return _dev_pki(tmp_path_factory.mktemp(f"pki-{algorithm.value}"), algorithm)


USES: dict[str, tuple[Profile, TlsRole | None]] = {
    "auth_server": (Profile.AUTH, TlsRole.SERVER),
    "auth_client": (Profile.AUTH, TlsRole.CLIENT),
    "sign": (Profile.SIGN, None),
    "ocsp": (Profile.OCSP, None),
    "tsa": (Profile.TSA, None),
    "confsign": (Profile.CONFIGURATION_SIGNING, None),
    "logsign": (Profile.LOG_SIGNING, None),
}


@pytest.mark.parametrize("use", USES.keys())
def test_every_profile_validates(dev_pki: DevPKI, use: str) -> None:
    purpose, role = USES[use]
    leaf = dev_pki.leaves[purpose.value]
    path = validate_path(
        leaf,
        intermediates=[dev_pki.ca.certificate],
        trust=dev_pki.trust,
        at=AT,
        purpose=purpose,
        tls_role=role,
        revocation=CertificateRecordsChecker(dev_pki.directory.records()),
    )
    assert len(path.certificates) == 3
    assert der(path.root) == der(dev_pki.directory.root_certificate())


@pytest.mark.parametrize("use", USES.keys())
@pytest.mark.parametrize("holder", ["auth", "sign", "ocsp", "tsa", "confsign", "logsign"])
def test_no_certificate_serves_another_purpose(dev_pki: DevPKI, holder: str, use: str) -> None:
    purpose, role = USES[use]
    if purpose.value == holder:
        return
    with pytest.raises(CertificateError) as info:
        validate_path(
            dev_pki.leaves[holder],
            intermediates=[dev_pki.ca.certificate],
            trust=dev_pki.trust,
            at=AT,
            purpose=purpose,
            tls_role=role,
            revocation=None,
        )
    assert info.value.code is ErrorCode.CERTIFICATE_INVALID


def test_ca_records_revocation_at_a_past_time(tmp_path: Path) -> None:
    pki = _dev_pki(tmp_path, KeyAlgorithm.EC_P256)
    leaf = pki.leaves["sign"]
    revoked_at = AT + dt.timedelta(days=10)
    pki.ca.revoke(leaf.serial_number, at=revoked_at)
    checker = CertificateRecordsChecker(pki.directory.records())

    def check(at: dt.datetime) -> ValidatedPath:
        return validate_path(
            leaf,
            intermediates=[pki.ca.certificate],
            trust=pki.trust,
            at=at,
            purpose=Profile.SIGN,
            revocation=checker,
        )

    check(AT)  # before the revocation: accepted
    with pytest.raises(CertificateError) as info:
        check(revoked_at)
    assert info.value.code is ErrorCode.CERTIFICATE_REVOKED


def test_ca_records_revoked_intermediate(tmp_path: Path) -> None:
    pki = _dev_pki(tmp_path, KeyAlgorithm.EC_P256)
    pki.ca.revoke(pki.ca.certificate.serial_number, at=AT - HOUR)
    with pytest.raises(CertificateError) as info:
        validate_path(
            pki.leaves["auth"],
            intermediates=[pki.ca.certificate],
            trust=pki.trust,
            at=AT,
            purpose=Profile.AUTH,
            tls_role=TlsRole.CLIENT,
            revocation=CertificateRecordsChecker(pki.directory.records()),
        )
    assert info.value.code is ErrorCode.CERTIFICATE_REVOKED
    assert "Issuing CA" in info.value.message


def test_ca_records_refuse_a_certificate_the_ca_never_issued(tmp_path: Path) -> None:
    pki = _dev_pki(tmp_path, KeyAlgorithm.EC_P256)
    # Signed with the issuing CA's key but never recorded.
    rogue = make(
        "rogue",
        issuer=Node(pki.ca.certificate, pki.ca.key),
    )
    with pytest.raises(CertificateError) as info:
        validate_path(
            rogue.cert,
            intermediates=[pki.ca.certificate],
            trust=pki.trust,
            at=AT,
            purpose=Profile.SIGN,
            revocation=CertificateRecordsChecker(pki.directory.records()),
        )
    assert info.value.code is ErrorCode.CERTIFICATE_UNTRUSTED


# -- helpers ------------------------------------------------------------------------------


def test_member_of_reads_the_subject_serial_number(dev_pki: DevPKI) -> None:
    assert member_of(dev_pki.leaves["sign"]) == MEMBER
    assert member_of(dev_pki.leaves["auth"]) == MEMBER


@pytest.mark.parametrize(
    "subject",
    [
        pytest.param(name("UZ/GOV/STC"), id="absent"),
        pytest.param(
            x509.Name([x509.NameAttribute(NameOID.SERIAL_NUMBER, "UZ/GOV")]), id="not_a_member_id"
        ),
        pytest.param(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.SERIAL_NUMBER, "UZ/GOV/STC"),
                    x509.NameAttribute(NameOID.SERIAL_NUMBER, "UZ/GOV/CADASTRE"),
                ]
            ),
            id="ambiguous",
        ),
    ],
)
def test_member_of_refuses(subject: x509.Name) -> None:
    cert = make("x", issuer=crafted().issuing, subject=subject).cert
    with pytest.raises(CertificateError) as info:
        member_of(cert)
    assert info.value.code is ErrorCode.CERTIFICATE_INVALID


def test_auth_cert_sha256_hashes_the_der() -> None:
    cert = sign_leaf().cert
    assert auth_cert_sha256(cert) == hashlib.sha256(der(cert)).digest()
    assert auth_cert_sha256(cert) == cert.fingerprint(hashes.SHA256())
