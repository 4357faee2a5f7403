"""gateway.signing: happy paths (EC P-256, Ed25519, RSA members), one named case per
refusal rule of the module docstring, one-bit flips of every signed input, and an
independent check of our JWS by plain pyjwt. OCSP responses come from the real responder
core (certs.ocsp) of a PKI built per module; no network, no event loop."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import functools
import hashlib
import hmac
import importlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from certs.ca import CertificateAuthority
from certs.keys import KeyAlgorithm, PrivateKey, generate_private_key, load_certificate_chain
from certs.ocsp import OCSPResponder
from certs.ocsp_client import build_request
from certs.pkidir import PKIDirectory
from certs.profiles import Profile
from certs.validation import TrustStore
from gateway.errors import GatewayError, SigningError, VerificationError
from gateway.headers import RequestHeader, ResponseHeader, request_header_for, response_header_for
from gateway.signing import (
    HeaderSigner,
    SignedHeader,
    VerifiedRequest,
    VerifiedResponse,
    verify_request,
    verify_response,
)
from serai.errors import ErrorCode, Origin
from serai.identifiers import SubsystemId

STC = SubsystemId.parse("UZ/GOV/STC/tax")
CADASTRE = SubsystemId.parse("UZ/GOV/CADASTRE/registry")
SERVICE = CADASTRE.service("/cadastre.v1.Cadastre/GetParcel")
BODY = bytes(range(256)) * 4  # 1 KiB


@dataclass(frozen=True)
class Member:
    key: PrivateKey
    chain: list[x509.Certificate]
    ocsp: bytes

    @property
    def signer(self) -> HeaderSigner:
        return HeaderSigner(key=self.key, certificate_chain=self.chain, ocsp_response=self.supply)

    def supply(self) -> bytes:
        return self.ocsp


@dataclass(frozen=True)
class PKI:
    ca: CertificateAuthority
    issuing: x509.Certificate
    trust: TrustStore
    responder: OCSPResponder

    def ocsp_for(self, cert: x509.Certificate) -> bytes:
        return self.responder.respond(build_request(cert, self.issuing))

    def member(
        self,
        member: str,
        algorithm: KeyAlgorithm = KeyAlgorithm.EC_P256,
        profile: Profile = Profile.SIGN,
    ) -> Member:
        key = generate_private_key(algorithm)
        cert = self.ca.issue(profile, member, key.public_key())
        return Member(key, [cert, self.issuing], self.ocsp_for(cert))


def _pki(root: Path) -> PKI:
    pki = PKIDirectory.init(root, instance="UZ")
    ca = pki.issuing_ca()
    ocsp_key, ocsp_chain = pki.ocsp_signer()
    responder = OCSPResponder(
        key=ocsp_key, certificate=ocsp_chain[0], issuers=[ca.certificate], source=ca.records
    )
    return PKI(
        ca=ca,
        issuing=load_certificate_chain(pki.issuing_cert)[0],
        trust=TrustStore(roots=[pki.root_certificate()]),
        responder=responder,
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return _pki(tmp_path_factory.mktemp("gateway-signing") / "pki")


@pytest.fixture(scope="module")
def stc(pki: PKI) -> Member:
    return pki.member("UZ/GOV/STC")


@pytest.fixture(scope="module")
def cadastre(pki: PKI) -> Member:
    return pki.member("UZ/GOV/CADASTRE", KeyAlgorithm.ED25519)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _header(body: bytes = BODY, **changes: Any) -> RequestHeader:
    header = request_header_for(
        message_id="m-1", client=STC, service=SERVICE, body=body, created_at=_now()
    )
    return dataclasses.replace(header, **changes)


def _verify(
    pki: PKI,
    signed: SignedHeader,
    *,
    jws: str | None = None,
    chain: list[bytes] | None = None,
    ocsp: bytes | None = None,
    body: bytes = BODY,
    now: dt.datetime | None = None,
    **options: Any,
) -> VerifiedRequest:
    return verify_request(
        signed.jws if jws is None else jws,
        chain=list(signed.certificate_chain) if chain is None else chain,
        ocsp_response=signed.ocsp_response if ocsp is None else ocsp,
        body=body,
        trust=pki.trust,
        now=now or _now(),
        **options,
    )


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _x5c(member: Member) -> list[str]:
    return [
        base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode() for c in member.chain
    ]


def _forge(
    header: dict[str, Any], payload: bytes, sign: Callable[[bytes], bytes] | None = None
) -> str:
    """A compact JWS with any protected header, signed by ``sign`` (empty if none)."""
    protected = _b64url(json.dumps(header).encode())
    signing_input = f"{protected}.{_b64url(payload)}"
    signature = sign(signing_input.encode()) if sign else b""
    return f"{signing_input}.{_b64url(signature)}"


def _es256(key: PrivateKey) -> Callable[[bytes], bytes]:
    """Sign as ES256 through pyjwt's own algorithm (independent of gateway.signing)."""
    algorithm = jwt.get_algorithm_by_name("ES256")
    return lambda data: algorithm.sign(data, key)


def _raises(code: ErrorCode, match: str, call: Callable[[], object]) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        call()
    assert info.value.code is code, info.value
    assert match in info.value.message, info.value.message
    return info.value


# --- surface -----------------------------------------------------------------------------


def test_public_surface() -> None:
    assert set(importlib.import_module("gateway.signing").__all__) == {
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
    }


# --- happy paths -------------------------------------------------------------------------


def test_ec_member_request_verifies(pki: PKI, stc: Member) -> None:
    header = _header()
    signed = stc.signer.sign(header)
    verified = _verify(pki, signed)
    assert verified.header == header
    assert verified.header_bytes == header.encode() == signed.header_bytes
    assert verified.header_sha256 == hashlib.sha256(signed.header_bytes).digest()
    assert verified.header_sha256 == signed.header_sha256
    assert verified.certificate == stc.chain[0]
    assert stc.signer.algorithm == "ES256"


def test_ed25519_member_request_verifies(pki: PKI, cadastre: Member) -> None:
    header = _header(client=CADASTRE)
    signed = cadastre.signer.sign(header)
    assert jwt.get_unverified_header(signed.jws)["alg"] == "EdDSA"
    assert _verify(pki, signed).header == header


def test_rsa_member_request_verifies(pki: PKI) -> None:
    member = pki.member("UZ/GOV/STC", KeyAlgorithm.RSA_3072)
    signed = member.signer.sign(_header())
    assert jwt.get_unverified_header(signed.jws)["alg"] == "RS256"
    assert _verify(pki, signed).header.client == STC


def _response_for(request: SignedHeader, **changes: Any) -> ResponseHeader:
    header = response_header_for(
        message_id="m-1",
        request_header_sha256=request.header_sha256,
        body=b"parcel",
        created_at=_now(),
    )
    return dataclasses.replace(header, **changes)


def _verify_response(
    pki: PKI, request: SignedHeader, signed: SignedHeader, **changes: Any
) -> VerifiedResponse:
    arguments: dict[str, Any] = {
        "chain": list(signed.certificate_chain),
        "ocsp_response": signed.ocsp_response,
        "body": b"parcel",
        "trust": pki.trust,
        "now": _now(),
        "expected_request_sha256": request.header_sha256,
        "expected_message_id": "m-1",
        "provider": CADASTRE,
    }
    arguments.update(changes)
    return verify_response(signed.jws, **arguments)


def test_response_verifies_and_binds_to_the_request(
    pki: PKI, stc: Member, cadastre: Member
) -> None:
    request = stc.signer.sign(_header())
    header = _response_for(request)
    signed = cadastre.signer.sign(header)
    verified = _verify_response(pki, request, signed)
    assert verified.header == header
    assert verified.certificate == cadastre.chain[0]
    assert jwt.get_unverified_header(signed.jws)["typ"] == "serai-response+jws"


def test_signed_header_carries_what_travels(stc: Member) -> None:
    signed = stc.signer.sign(_header())
    assert signed.certificate_chain == tuple(
        c.public_bytes(serialization.Encoding.DER) for c in stc.chain
    )
    assert signed.ocsp_response == stc.ocsp
    assert jwt.get_unverified_header(signed.jws) == {
        "alg": "ES256",
        "typ": "serai-request+jws",
        "x5c": _x5c(stc),
    }


@pytest.mark.parametrize("who", ["stc", "cadastre"])
def test_plain_pyjwt_verifies_our_jws(who: str, request: pytest.FixtureRequest) -> None:
    member: Member = request.getfixturevalue(who)
    signed = member.signer.sign(_header())
    header = jwt.get_unverified_header(signed.jws)
    leaf = x509.load_der_x509_certificate(base64.b64decode(header["x5c"][0]))
    key = leaf.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey)
    decoded = jwt.PyJWS().decode_complete(signed.jws, key=key, algorithms=[header["alg"]])
    assert decoded["payload"] == signed.header_bytes


# --- signer refusals ---------------------------------------------------------------------


def test_signer_refuses_a_key_that_does_not_match(stc: Member, cadastre: Member) -> None:
    with pytest.raises(SigningError, match="does not match"):
        HeaderSigner(key=cadastre.key, certificate_chain=stc.chain, ocsp_response=stc.supply)


def test_signer_refuses_an_empty_chain(stc: Member) -> None:
    with pytest.raises(SigningError, match="at least the leaf"):
        HeaderSigner(key=stc.key, certificate_chain=[], ocsp_response=stc.supply)


def test_signer_refuses_p384(pki: PKI) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    cert = pki.ca.issue(Profile.SIGN, "UZ/GOV/STC", key.public_key())
    with pytest.raises(SigningError, match="cannot sign headers"):
        HeaderSigner(key=key, certificate_chain=[cert], ocsp_response=lambda: b"x")


def test_signer_refuses_without_ocsp(stc: Member) -> None:
    signer = HeaderSigner(key=stc.key, certificate_chain=stc.chain, ocsp_response=lambda: b"")
    with pytest.raises(SigningError) as info:
        signer.sign(_header())
    assert (info.value.code, info.value.origin) == (ErrorCode.OCSP_UNAVAILABLE, Origin.GATEWAY)


# --- rule 1: JWS form --------------------------------------------------------------------


def _jws_form_cases(stc: Member) -> Iterator[tuple[str, str, str]]:
    jws = stc.signer.sign(_header()).jws
    protected, payload, signature = jws.split(".")
    good = json.loads(base64.urlsafe_b64decode(protected + "=" * (-len(protected) % 4)))
    yield "two_parts", f"{protected}.{payload}", "not a compact JWS"
    yield "four_parts", f"{jws}.", "not a compact JWS"
    yield "non_ascii", jws + "é", "ASCII string"
    yield "padding", f"{protected}.{payload}.{signature}==", "not base64url"
    yield "standard_base64", jws.replace("-", "+").replace("_", "/"), "not base64url"
    # The last character of a 64-byte signature carries 4 unused bits.
    last = signature[-1]
    other = "AQgw"["AQgw".index(last) ^ 1] if last in "AQgw" else chr(ord(last) ^ 1)
    yield "non_canonical_base64", f"{protected}.{payload}.{signature[:-1]}{other}", ""
    yield "header_not_json", f"{_b64url(b'{nope')}.{payload}.{signature}", "not JSON"
    yield "header_not_object", f"{_b64url(b'[1]')}.{payload}.{signature}", "not a JSON object"
    duplicate = b'{"alg":"ES256","alg":"ES256","typ":"serai-request+jws","x5c":[]}'
    yield "duplicate_member", f"{_b64url(duplicate)}.{payload}.{signature}", "duplicate"
    extras: list[dict[str, Any]] = [{"crit": ["b64"], "b64": False}, {"kid": "1"}, {"jwk": {}}]
    for extra in extras:
        header = good | extra
        yield f"extra_{next(iter(extra))}", _forge(header, b"", None), "exactly alg, typ and x5c"
    missing = {k: v for k, v in good.items() if k != "x5c"}
    yield "no_x5c", _forge(missing, b"", None), "exactly alg, typ and x5c"
    yield "too_long", "a" * (256 * 1024 + 1), "at most"


def test_jws_form_refusals(pki: PKI, stc: Member) -> None:
    signed = stc.signer.sign(_header())
    cases = list(_jws_form_cases(stc))
    assert len(cases) == 14
    for name, jws, match in cases:
        error = _raises(
            ErrorCode.SIGNATURE_INVALID, match, functools.partial(_verify, pki, signed, jws=jws)
        )
        assert error.origin is Origin.CLIENT, name


# --- rule 2: algorithm -------------------------------------------------------------------


def test_alg_none_is_refused(pki: PKI, stc: Member) -> None:
    signed = stc.signer.sign(_header())
    header = {"alg": "none", "typ": "serai-request+jws", "x5c": _x5c(stc)}
    jws = _forge(header, signed.header_bytes)
    _raises(
        ErrorCode.SIGNATURE_INVALID, "'none' is not allowed", lambda: _verify(pki, signed, jws=jws)
    )


def test_hmac_with_the_public_key_is_refused(pki: PKI, stc: Member) -> None:
    # The classic confusion: HS256 keyed with the (public) certificate key.
    signed = stc.signer.sign(_header())
    secret = (
        stc.chain[0]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    header = {"alg": "HS256", "typ": "serai-request+jws", "x5c": _x5c(stc)}
    jws = _forge(header, signed.header_bytes, lambda d: hmac.digest(secret, d, "sha256"))
    _raises(
        ErrorCode.SIGNATURE_INVALID, "'HS256' is not allowed", lambda: _verify(pki, signed, jws=jws)
    )


def test_es384_is_refused(pki: PKI, stc: Member) -> None:
    signed = stc.signer.sign(_header())
    header = {"alg": "ES384", "typ": "serai-request+jws", "x5c": _x5c(stc)}
    jws = _forge(header, signed.header_bytes, _es256(stc.key))
    _raises(ErrorCode.SIGNATURE_INVALID, "not allowed", lambda: _verify(pki, signed, jws=jws))


def test_alg_that_does_not_match_the_key_is_refused(pki: PKI, stc: Member) -> None:
    signed = stc.signer.sign(_header())
    header = {"alg": "EdDSA", "typ": "serai-request+jws", "x5c": _x5c(stc)}
    jws = _forge(header, signed.header_bytes, _es256(stc.key))
    _raises(
        ErrorCode.SIGNATURE_INVALID,
        "does not match the signing certificate's key",
        lambda: _verify(pki, signed, jws=jws),
    )


def test_response_jws_is_not_a_request(pki: PKI, stc: Member) -> None:
    request = stc.signer.sign(_header())
    response = stc.signer.sign(_response_for(request))
    _raises(
        ErrorCode.SIGNATURE_INVALID,
        "typ is 'serai-response+jws'",
        lambda: _verify(pki, response, body=b"parcel"),
    )


# --- rule 3: chain field -----------------------------------------------------------------


def test_chain_field_must_equal_x5c(pki: PKI, stc: Member, cadastre: Member) -> None:
    signed = stc.signer.sign(_header())
    other = [
        cadastre.chain[0].public_bytes(serialization.Encoding.DER),
        signed.certificate_chain[1],
    ]
    _raises(
        ErrorCode.SIGNATURE_INVALID,
        "x5c[0] differs from certificate_chain[0]",
        lambda: _verify(pki, signed, chain=other),
    )


def test_chain_field_must_have_x5c_length(pki: PKI, stc: Member) -> None:
    signed = stc.signer.sign(_header())
    _raises(
        ErrorCode.SIGNATURE_INVALID,
        "x5c has 2 certificates, the certificate_chain field 1",
        lambda: _verify(pki, signed, chain=[signed.certificate_chain[0]]),
    )


def test_x5c_must_be_strict_base64(pki: PKI, stc: Member) -> None:
    signed = stc.signer.sign(_header())
    x5c = _x5c(stc)
    x5c[0] = x5c[0].replace("+", "-").replace("/", "_")
    header = {"alg": "ES256", "typ": "serai-request+jws", "x5c": x5c}
    jws = _forge(header, signed.header_bytes, _es256(stc.key))
    _raises(ErrorCode.SIGNATURE_INVALID, "x5c[0] differs", lambda: _verify(pki, signed, jws=jws))


def test_unparsable_leaf_is_certificate_invalid(pki: PKI, stc: Member) -> None:
    signed = stc.signer.sign(_header())
    header = {"alg": "ES256", "typ": "serai-request+jws", "x5c": ["AAAA"]}
    jws = _forge(header, signed.header_bytes, _es256(stc.key))
    _raises(
        ErrorCode.CERTIFICATE_INVALID,
        "signing certificate cannot be parsed",
        lambda: _verify(pki, signed, jws=jws, chain=[b"\x00\x00\x00"]),
    )


# --- rule 4: signature -------------------------------------------------------------------


def test_signature_by_another_key_is_refused(pki: PKI, stc: Member) -> None:
    signed = stc.signer.sign(_header())
    header = {"alg": "ES256", "typ": "serai-request+jws", "x5c": _x5c(stc)}
    jws = _forge(header, signed.header_bytes, _es256(generate_private_key()))
    _raises(ErrorCode.SIGNATURE_INVALID, "does not verify", lambda: _verify(pki, signed, jws=jws))


def test_signature_of_another_payload_is_refused(pki: PKI, stc: Member) -> None:
    signed = stc.signer.sign(_header())
    other = stc.signer.sign(_header(message_id="m-2"))
    protected, _, signature = signed.jws.split(".")
    jws = f"{protected}.{other.jws.split('.')[1]}.{signature}"
    _raises(ErrorCode.SIGNATURE_INVALID, "does not verify", lambda: _verify(pki, signed, jws=jws))


def test_der_signature_is_refused(pki: PKI, stc: Member) -> None:
    signed = stc.signer.sign(_header())
    header = {"alg": "ES256", "typ": "serai-request+jws", "x5c": _x5c(stc)}
    der = lambda data: stc_key_sign(stc, data)  # noqa: E731
    jws = _forge(header, signed.header_bytes, der)
    _raises(ErrorCode.SIGNATURE_INVALID, "does not verify", lambda: _verify(pki, signed, jws=jws))


def stc_key_sign(member: Member, data: bytes) -> bytes:
    assert isinstance(member.key, ec.EllipticCurvePrivateKey)
    return member.key.sign(data, ec.ECDSA(hashes.SHA256()))


# --- rules 5 and 6: certificate and revocation -------------------------------------------


def test_untrusted_chain_is_refused(tmp_path: Path, pki: PKI) -> None:
    foreign = _pki(tmp_path / "foreign").member("UZ/GOV/STC")
    signed = foreign.signer.sign(_header())
    _raises(
        ErrorCode.CERTIFICATE_UNTRUSTED, "signing certificate refused", lambda: _verify(pki, signed)
    )


def test_expired_certificate_is_refused(pki: PKI, stc: Member) -> None:
    later = _now() + dt.timedelta(days=3 * 365)
    signed = stc.signer.sign(_header(created_at=later))
    _raises(ErrorCode.CERTIFICATE_EXPIRED, "expired", lambda: _verify(pki, signed, now=later))


def test_certificate_for_another_purpose_is_refused(pki: PKI) -> None:
    key = generate_private_key()
    cert = pki.ca.issue(Profile.AUTH, "UZ/GOV/STC/gw:main", key.public_key())
    signer = HeaderSigner(
        key=key, certificate_chain=[cert, pki.issuing], ocsp_response=lambda: pki.ocsp_for(cert)
    )
    signed = signer.sign(_header())
    _raises(ErrorCode.CERTIFICATE_INVALID, "needed for 'sign'", lambda: _verify(pki, signed))


def test_revoked_certificate_is_refused(pki: PKI) -> None:
    member = pki.member("UZ/GOV/STC")
    pki.ca.revoke(member.chain[0].serial_number, reason=x509.ReasonFlags.key_compromise)
    revoked = dataclasses.replace(member, ocsp=pki.ocsp_for(member.chain[0]))
    signed = revoked.signer.sign(_header())
    error = _raises(ErrorCode.CERTIFICATE_REVOKED, "revoked", lambda: _verify(pki, signed))
    assert error.origin is Origin.CLIENT


def test_stale_ocsp_is_refused(pki: PKI, stc: Member) -> None:
    later = _now() + dt.timedelta(seconds=30)
    signed = stc.signer.sign(_header(created_at=later))
    _raises(ErrorCode.OCSP_STALE, "old", lambda: _verify(pki, signed, now=later, max_ocsp_age_s=10))


def test_ocsp_about_another_certificate_is_refused(pki: PKI, stc: Member, cadastre: Member) -> None:
    signed = stc.signer.sign(_header())
    _raises(
        ErrorCode.OCSP_INVALID, "no valid OCSP", lambda: _verify(pki, signed, ocsp=cadastre.ocsp)
    )


def test_missing_ocsp_is_unavailable(pki: PKI, stc: Member) -> None:
    signed = stc.signer.sign(_header())
    _raises(ErrorCode.OCSP_UNAVAILABLE, "no valid OCSP", lambda: _verify(pki, signed, ocsp=b""))


def test_garbage_ocsp_is_invalid(pki: PKI, stc: Member) -> None:
    signed = stc.signer.sign(_header())
    _raises(ErrorCode.OCSP_INVALID, "DER", lambda: _verify(pki, signed, ocsp=b"\x30\x00"))


# --- rule 7: payload ---------------------------------------------------------------------


def test_payload_that_is_not_a_header_is_refused(pki: PKI, stc: Member) -> None:
    signed = stc.signer.sign(_header())
    header = {"alg": "ES256", "typ": "serai-request+jws", "x5c": _x5c(stc)}
    jws = _forge(header, b"\xff\xff", _es256(stc.key))
    error = _raises(
        ErrorCode.INVALID_REQUEST, "not a serialized header", lambda: _verify(pki, signed, jws=jws)
    )
    assert error.origin is Origin.CLIENT


def test_payload_of_an_unknown_version_is_refused(pki: PKI, stc: Member) -> None:
    signed = stc.signer.sign(_header())
    header = {"alg": "ES256", "typ": "serai-request+jws", "x5c": _x5c(stc)}
    payload = b"\x08\x02" + signed.header_bytes[2:]
    jws = _forge(header, payload, _es256(stc.key))
    _raises(ErrorCode.INVALID_REQUEST, "protocol version 2", lambda: _verify(pki, signed, jws=jws))


# --- rule 8: member ----------------------------------------------------------------------


def test_certificate_of_another_member_is_refused(pki: PKI, cadastre: Member) -> None:
    signed = cadastre.signer.sign(_header())  # client is UZ/GOV/STC/tax
    error = _raises(
        ErrorCode.CERTIFICATE_INVALID,
        "belongs to member UZ/GOV/CADASTRE, not to UZ/GOV/STC",
        lambda: _verify(pki, signed),
    )
    assert error.origin is Origin.CLIENT


# --- rule 9: body ------------------------------------------------------------------------


def test_other_body_is_refused(pki: PKI, stc: Member) -> None:
    signed = stc.signer.sign(_header())
    _raises(
        ErrorCode.SIGNATURE_INVALID,
        "body does not match the signed digest",
        lambda: _verify(pki, signed, body=BODY[:-1] + b"?"),
    )


def test_body_size_must_match(pki: PKI, stc: Member) -> None:
    signed = stc.signer.sign(_header(body_size=len(BODY) + 1))
    _raises(
        ErrorCode.SIGNATURE_INVALID,
        "body does not match the signed digest",
        lambda: _verify(pki, signed),
    )


# --- rule 10: time -----------------------------------------------------------------------


@pytest.mark.parametrize("offset_s", [-61, 61])
def test_clock_skew_is_refused(pki: PKI, stc: Member, offset_s: int) -> None:
    now = _now()
    signed = stc.signer.sign(_header(created_at=now + dt.timedelta(seconds=offset_s)))
    _raises(ErrorCode.CLOCK_SKEW, "60 s allowed", lambda: _verify(pki, signed, now=now))
    _verify(pki, signed, now=now, max_skew_s=62)


def test_naive_now_is_a_programming_error(pki: PKI, stc: Member) -> None:
    signed = stc.signer.sign(_header())
    with pytest.raises(ValueError, match="timezone-aware"):
        _verify(pki, signed, now=dt.datetime(2026, 1, 1))


# --- rule 11 and origins of responses ----------------------------------------------------


def test_response_refusals_are_the_providers(pki: PKI, stc: Member, cadastre: Member) -> None:
    request = stc.signer.sign(_header())
    signed = cadastre.signer.sign(_response_for(request))
    cases: list[tuple[str, ErrorCode, str, dict[str, Any]]] = [
        (
            "other_request",
            ErrorCode.SIGNATURE_INVALID,
            "bound to another request",
            {"expected_request_sha256": hashlib.sha256(b"other").digest()},
        ),
        (
            "other_message_id",
            ErrorCode.SIGNATURE_INVALID,
            "answers message 'm-1'",
            {"expected_message_id": "m-2"},
        ),
        ("other_provider", ErrorCode.CERTIFICATE_INVALID, "not to UZ/GOV/STC", {"provider": STC}),
        ("other_body", ErrorCode.SIGNATURE_INVALID, "body does not match", {"body": b"parcels"}),
        ("no_ocsp", ErrorCode.OCSP_UNAVAILABLE, "OCSP", {"ocsp_response": b""}),
        ("skew", ErrorCode.CLOCK_SKEW, "allowed", {"now": _now() + dt.timedelta(minutes=5)}),
    ]
    for name, code, match, changes in cases:
        error = _raises(
            code, match, functools.partial(_verify_response, pki, request, signed, **changes)
        )
        assert error.origin is Origin.PROVIDER, name


def test_request_jws_is_not_a_response(pki: PKI, stc: Member) -> None:
    request = stc.signer.sign(_header())
    error = _raises(
        ErrorCode.SIGNATURE_INVALID,
        "typ is 'serai-request+jws'",
        lambda: _verify_response(pki, request, request, body=BODY, provider=STC),
    )
    assert isinstance(error, VerificationError)


# --- one-bit flips -----------------------------------------------------------------------


def _flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def test_every_bit_flip_of_the_jws_is_refused(pki: PKI, stc: Member) -> None:
    signed = stc.signer.sign(_header())
    text = signed.jws.encode("ascii")
    for index in range(len(text)):
        flipped = _flip(text, index * 8 + index % 8).decode("latin-1")
        with pytest.raises(GatewayError):
            _verify(pki, signed, jws=flipped)


def test_every_bit_flip_of_the_header_bytes_is_refused(pki: PKI, stc: Member) -> None:
    signed = stc.signer.sign(_header())
    protected, _, signature = signed.jws.split(".")
    for bit in range(len(signed.header_bytes) * 8):
        jws = f"{protected}.{_b64url(_flip(signed.header_bytes, bit))}.{signature}"
        with pytest.raises(GatewayError):
            _verify(pki, signed, jws=jws)


def test_bit_flips_of_the_body_are_refused(pki: PKI, stc: Member) -> None:
    signed = stc.signer.sign(_header())
    for bit in range(0, len(BODY) * 8, 61):
        _raises(
            ErrorCode.SIGNATURE_INVALID,
            "body does not match",
            functools.partial(_verify, pki, signed, body=_flip(BODY, bit)),
        )


def test_bit_flips_of_the_chain_are_refused(pki: PKI, stc: Member) -> None:
    signed = stc.signer.sign(_header())
    for position, der in enumerate(signed.certificate_chain):
        for bit in range(0, len(der) * 8, 13):
            chain = list(signed.certificate_chain)
            chain[position] = _flip(der, bit)
            _raises(
                ErrorCode.SIGNATURE_INVALID,
                "differs",
                functools.partial(_verify, pki, signed, chain=chain),
            )


def test_every_byte_of_the_ocsp_response_matters(pki: PKI, stc: Member) -> None:
    signed = stc.signer.sign(_header())
    now = _now()
    for index in range(len(signed.ocsp_response)):
        ocsp = _flip(signed.ocsp_response, index * 8 + index % 8)
        with pytest.raises(GatewayError) as info:
            _verify(pki, signed, ocsp=ocsp, now=now)
        assert info.value.code.value.startswith(("ocsp_", "certificate_")), (index, info.value)
