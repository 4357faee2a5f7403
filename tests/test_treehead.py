"""Tests of signed, time-stamped tree heads (serai.treehead): one test or named table case
per rule of the module docstring, Hypothesis for the round trip and for tampering, and
two independent checkers.

Independence: Serai signs with ``cryptography`` directly; the JWS is checked here with
pyjwt (a JOSE library Serai's signer does not use), and the time-stamp token with the real
``openssl ts -verify``.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import serai.treehead as treehead
from certs.ca import CertificateAuthority
from certs.keys import KeyAlgorithm, PrivateKey, generate_private_key, write_certificate_chain
from certs.pkidir import PKIDirectory
from certs.profiles import Profile
from certs.timestamp import build_query, new_nonce, verify_reply
from certs.tsa import TimeStampAuthority
from serai.errors import ErrorCode, SeraiError
from serai.treehead import (
    TREE_HEAD_JWS_TYPE,
    SignedTreeHead,
    TreeHead,
    TreeHeadError,
    TreeHeadSigner,
    parse_signed_tree_head,
    sign_tree_head,
    verify_signed_tree_head,
    verify_tree_head_timestamp,
)

NOW = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
LOG_ID = "UZ/GOV/STC/gw:main"
ROOT = hashlib.sha256(b"root").digest()
HEAD = TreeHead(log_id=LOG_ID, tree_size=42, root_hash=ROOT, time=NOW.replace(microsecond=5000))


# -- fixtures -------------------------------------------------------------------------------


@dataclass
class Pki:
    dir: PKIDirectory
    ca: CertificateAuthority
    root: x509.Certificate
    tsa: TimeStampAuthority

    def log_signer(
        self, subject: str = LOG_ID, algorithm: KeyAlgorithm = KeyAlgorithm.EC_P256
    ) -> tuple[PrivateKey, list[x509.Certificate]]:
        key = generate_private_key(algorithm)
        cert = self.ca.issue(Profile.LOG_SIGNING, subject, key.public_key(), now=NOW)
        return key, [cert, self.ca.certificate]

    def token(self, data: bytes) -> bytes:
        query = build_query(data, nonce=(nonce := new_nonce()))
        reply = self.tsa.respond(query)
        return verify_reply(reply, data=data, nonce=nonce, trusted_roots=[self.root]).token_der


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = PKIDirectory.init(
        tmp_path_factory.mktemp("treehead") / "pki", instance="UZ", now=NOW - dt.timedelta(days=1)
    )
    key, chain = directory.tsa_signer()
    return Pki(
        dir=directory,
        ca=directory.issuing_ca(),
        root=directory.root_certificate(),
        tsa=TimeStampAuthority(key=key, chain=chain, clock=lambda: NOW),
    )


@pytest.fixture(scope="module")
def es256(pki: Pki) -> TreeHeadSigner:
    key, chain = pki.log_signer()
    return TreeHeadSigner(key=key, certificate_chain=chain)


@pytest.fixture(scope="module")
def eddsa(pki: Pki) -> TreeHeadSigner:
    key, chain = pki.log_signer(algorithm=KeyAlgorithm.ED25519)
    return TreeHeadSigner(key=key, certificate_chain=chain)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _x5c(chain: list[x509.Certificate]) -> list[str]:
    return [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode() for c in chain]


def forge(
    key: PrivateKey,
    chain: list[x509.Certificate],
    *,
    payload: bytes = HEAD.encode(),
    header: bytes | dict[str, Any] | None = None,
) -> bytes:
    """A correctly signed compact JWS over any header and payload bytes."""
    if header is None:
        header = {"alg": "ES256", "typ": TREE_HEAD_JWS_TYPE, "x5c": _x5c(chain)}
    header_bytes = header if isinstance(header, bytes) else json.dumps(header).encode()
    signing_input = f"{_b64url(header_bytes)}.{_b64url(payload)}".encode()
    if isinstance(key, ed25519.Ed25519PrivateKey):
        signature = key.sign(signing_input)
    else:
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return signing_input + b"." + _b64url(signature).encode()


def verify(pki: Pki, sth: SignedTreeHead | bytes, **kwargs: Any) -> TreeHead:
    kwargs.setdefault("trusted_roots", [pki.root])
    kwargs.setdefault("at", NOW)
    return verify_signed_tree_head(sth, **kwargs)


@contextlib.contextmanager
def refused(
    code: ErrorCode = ErrorCode.SIGNATURE_INVALID, match: str | None = None
) -> Iterator[None]:
    """Expect a :class:`TreeHeadError` with ``code`` whose message matches ``match``."""
    with pytest.raises(TreeHeadError, match=match) as info:
        yield
    assert info.value.code is code, info.value


# -- the format -------------------------------------------------------------------------------


def test_public_surface() -> None:
    assert set(treehead.__all__) == {
        "MAX_CHAIN_CERTIFICATES",
        "MAX_JWS_BYTES",
        "TREE_HEAD_JWS_TYPE",
        "TREE_HEAD_VERSION",
        "SignedTreeHead",
        "TreeHead",
        "TreeHeadError",
        "TreeHeadSigner",
        "parse_signed_tree_head",
        "sign_tree_head",
        "verify_signed_tree_head",
        "verify_tree_head_timestamp",
    }
    assert issubclass(TreeHeadError, SeraiError)


def test_payload_is_the_canonical_json() -> None:
    assert HEAD.encode() == (
        b'{"log_id":"UZ/GOV/STC/gw:main",'
        b'"root_hash":"' + _b64url(ROOT).encode() + b'",'
        b'"time":"2026-03-01T12:00:00.005Z","tree_size":42,"v":1}'
    )


def test_non_ascii_log_id_is_escaped() -> None:
    head = TreeHead(log_id="реестр", tree_size=0, root_hash=ROOT, time=NOW)
    assert b'"log_id":"\\u0440\\u0435' in head.encode()
    assert head.encode().isascii()


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"log_id": ""}, "log_id"),
        ({"log_id": "a\nb"}, "printable"),
        ({"tree_size": -1}, "tree_size"),
        ({"tree_size": True}, "tree_size"),
        ({"tree_size": 2**63}, "tree_size"),
        ({"root_hash": bytes(31)}, "32 bytes"),
        ({"time": dt.datetime(2026, 3, 1)}, "timezone-aware UTC"),
        ({"time": NOW.astimezone(dt.timezone(dt.timedelta(hours=5)))}, "UTC"),
        ({"time": NOW.replace(microsecond=1)}, "millisecond"),
    ],
    ids=["empty-id", "control-char", "negative", "bool", "too-big", "short-root", "naive",
         "offset", "microseconds"],
)  # fmt: skip
def test_tree_head_refuses(fields: dict[str, Any], match: str) -> None:
    values: dict[str, Any] = {"log_id": LOG_ID, "tree_size": 1, "root_hash": ROOT, "time": NOW}
    with pytest.raises(TreeHeadError, match=match):
        TreeHead(**(values | fields))


@pytest.mark.parametrize("who", ["es256", "eddsa"])
def test_sign_and_verify(pki: Pki, who: str, request: pytest.FixtureRequest) -> None:
    signer: TreeHeadSigner = request.getfixturevalue(who)
    sth = signer.sign(HEAD)
    assert verify(pki, sth) == HEAD
    assert verify(pki, sth.jws, expected_log_id=LOG_ID) == HEAD
    head, chain = parse_signed_tree_head(sth.jws)
    assert head == sth.head == HEAD
    assert chain == sth.chain
    assert len(chain) == 2
    assert signer.algorithm == {"es256": "ES256", "eddsa": "EdDSA"}[who]


def test_sign_tree_head_function(pki: Pki) -> None:
    key, chain = pki.log_signer()
    assert verify(pki, sign_tree_head(HEAD, key, chain)) == HEAD


@pytest.mark.parametrize("who", ["es256", "eddsa"])
def test_pyjwt_verifies_the_signature(who: str, request: pytest.FixtureRequest) -> None:
    """An auditor's check with pyjwt only: the key from x5c, the JWS as stored."""
    sth: SignedTreeHead = request.getfixturevalue(who).sign(HEAD)
    token = sth.jws.decode("ascii")
    header = jwt.get_unverified_header(token)
    assert header["typ"] == TREE_HEAD_JWS_TYPE
    leaf = x509.load_der_x509_certificate(base64.b64decode(header["x5c"][0]))
    key = leaf.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey)
    decoded = jwt.PyJWS().decode_complete(token, key=key, algorithms=[header["alg"]])
    assert json.loads(decoded["payload"]) == {
        "log_id": LOG_ID,
        "root_hash": _b64url(ROOT),
        "time": "2026-03-01T12:00:00.005Z",
        "tree_size": 42,
        "v": 1,
    }


def test_signer_refuses_a_key_that_does_not_match(pki: Pki) -> None:
    _, chain = pki.log_signer()
    with refused(ErrorCode.INVALID_CONFIG, "does not match"):
        TreeHeadSigner(key=generate_private_key(), certificate_chain=chain)


@pytest.mark.parametrize("algorithm", [KeyAlgorithm.RSA_3072, "p384"])
def test_signer_refuses_other_keys(pki: Pki, algorithm: Any) -> None:
    key: PrivateKey = (
        ec.generate_private_key(ec.SECP384R1())
        if algorithm == "p384"
        else generate_private_key(algorithm)
    )
    cert = pki.ca.issue(Profile.LOG_SIGNING, LOG_ID, key.public_key(), now=NOW)
    with refused(ErrorCode.INVALID_CONFIG, "cannot sign tree heads"):
        TreeHeadSigner(key=key, certificate_chain=[cert])


def test_signer_refuses_an_empty_chain() -> None:
    with refused(ErrorCode.INVALID_CONFIG, "1 to 5"):
        TreeHeadSigner(key=generate_private_key(), certificate_chain=[])


# -- strict decoding ----------------------------------------------------------------------


def _payload(**changes: Any) -> bytes:
    obj: dict[str, Any] = json.loads(HEAD.encode())
    for name, value in changes.items():
        if value is ...:
            del obj[name]
        else:
            obj[name] = value
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


_CANONICAL = HEAD.encode()

PAYLOAD_CASES = {
    "duplicate-member": (_CANONICAL[:-1] + b',"v":1}', "duplicate member 'v'"),
    "unknown-member": (_payload(extra=1), "unknown members \\['extra'\\]"),
    "missing-member": (_payload(time=...), "lacks time"),
    "size-as-string": (_payload(tree_size="42"), "tree_size is not an integer"),
    "size-as-float": (_payload(tree_size=42.0), "tree_size is not an integer"),
    "size-negative": (_payload(tree_size=-1), "tree_size must be"),
    "version-bool": (_payload(v=True), "v is not an integer"),
    "version-2": (_payload(v=2), "version 2 is not supported"),
    "log-id-number": (_payload(log_id=7), "log_id is not a string"),
    "root-number": (_payload(root_hash=1), "root_hash is not a string"),
    "time-number": (_payload(time=1), "time is not a string"),
    "root-padded": (_payload(root_hash=_b64url(ROOT) + "="), "root_hash is not base64url"),
    "root-standard-b64": (_payload(root_hash="+" + _b64url(ROOT)[1:]), "not base64url"),
    "root-non-canonical": (_payload(root_hash=_b64url(ROOT)[:-1] + "B"), "not canonical"),
    "root-31-bytes": (_payload(root_hash=_b64url(ROOT[:31])), "31 bytes, not 32"),
    "time-seconds": (_payload(time="2026-03-01T12:00:00Z"), "RFC 3339 UTC with milli"),
    "time-offset": (_payload(time="2026-03-01T12:00:00.000+00:00"), "RFC 3339 UTC"),
    "time-impossible": (_payload(time="2026-02-30T12:00:00.000Z"), "not a valid date"),
    "whitespace": (_CANONICAL.replace(b",", b", "), "not in canonical form"),
    "unsorted": (b'{"v":1,' + _CANONICAL[1:-7] + b"}", "not in canonical form"),
    "nan": (_CANONICAL.replace(b'"tree_size":42', b'"tree_size":NaN'), "NaN"),
    "trailing-data": (_CANONICAL + b" {}", "trailing data"),
    "not-an-object": (b"[1]", "not a JSON object"),
    "not-json": (b"{", "not JSON"),
    "not-utf8": (b'{"log_id":"\xff"}', "not UTF-8"),
}


@pytest.mark.parametrize(("payload", "match"), PAYLOAD_CASES.values(), ids=PAYLOAD_CASES.keys())
def test_payload_refusals(pki: Pki, payload: bytes, match: str) -> None:
    key, chain = pki.log_signer()
    jws = forge(key, chain, payload=payload)
    with refused(match=match):
        parse_signed_tree_head(jws)
    with refused(match=match):
        verify(pki, jws)


def test_forged_canonical_payload_is_accepted(pki: Pki) -> None:
    """The forge helper itself is sound: with the canonical payload it verifies."""
    key, chain = pki.log_signer()
    assert verify(pki, forge(key, chain)) == HEAD


def _header(**changes: Any) -> dict[str, Any]:
    return {"alg": "ES256", "typ": TREE_HEAD_JWS_TYPE} | changes


HEADER_CASES = {
    "alg-none": (_header(alg="none"), "algorithm 'none' is not allowed"),
    "alg-hs256": (_header(alg="HS256"), "algorithm 'HS256' is not allowed"),
    "alg-rs256": (_header(alg="RS256"), "not allowed"),
    "typ-request": (_header(typ="serai-request+jws"), "typ is 'serai-request\\+jws'"),
    "extra-crit": (_header(crit=["b64"]), "exactly alg, typ and x5c"),
    "no-x5c": ({"alg": "ES256", "typ": TREE_HEAD_JWS_TYPE, "x5c": None}, "x5c is not a list"),
    "x5c-empty": (_header(x5c=[]), "x5c is not a list of 1 to 5"),
    "x5c-not-b64": (_header(x5c=["!!"]), "x5c\\[0\\] is not canonical base64"),
    "x5c-not-cert": (_header(x5c=["AAAA"]), "x5c\\[0\\] is not a certificate"),
}


@pytest.mark.parametrize(("header", "match"), HEADER_CASES.values(), ids=HEADER_CASES.keys())
def test_header_refusals(pki: Pki, header: dict[str, Any], match: str) -> None:
    key, chain = pki.log_signer()
    header = {"x5c": _x5c(chain)} | header
    code = ErrorCode.CERTIFICATE_INVALID if "not a certificate" in match else None
    with refused(code or ErrorCode.SIGNATURE_INVALID, match):
        parse_signed_tree_head(forge(key, chain, header=header))


def test_duplicate_header_member(pki: Pki) -> None:
    key, chain = pki.log_signer()
    raw = json.dumps(_header(x5c=_x5c(chain)))[:-1] + ', "alg": "ES256"}'
    with refused(match="duplicate member 'alg'"):
        parse_signed_tree_head(forge(key, chain, header=raw.encode()))


def test_x5c_too_long(pki: Pki) -> None:
    key, chain = pki.log_signer()
    with refused(match="1 to 5"):
        parse_signed_tree_head(forge(key, chain, header=_header(x5c=_x5c(chain * 3))))


JWS_CASES = {
    "two-parts": (lambda j: j.rsplit(b".", 1)[0], "2 parts, not 3"),
    "four-parts": (lambda j: j + b".x", "4 parts, not 3"),
    "trailing-newline": (lambda j: j + b"\n", "whitespace"),
    "leading-space": (lambda j: b" " + j, "whitespace"),
    "non-ascii": (lambda j: j + "é".encode(), "not ASCII"),
    "too-long": (lambda j: j + b"A" * 70_000, "exceeds"),
    "padded-signature": (lambda j: j + b"=", "signature is not base64url"),
    "signature-bits": (lambda j: j[:-1] + (b"B" if j[-1:] == b"A" else b"A"), "signature"),
}


@pytest.mark.parametrize(("change", "match"), JWS_CASES.values(), ids=JWS_CASES.keys())
def test_jws_form_refusals(es256: TreeHeadSigner, pki: Pki, change: Any, match: str) -> None:
    jws = change(es256.sign(HEAD).jws)
    with refused(match=match):
        verify(pki, jws)


def test_signed_tree_head_decodes_when_built() -> None:
    with refused(match="not a compact JWS"):
        SignedTreeHead(b"abc")


# -- verification ---------------------------------------------------------------------------


def test_signature_by_another_key(pki: Pki) -> None:
    _, chain = pki.log_signer()
    with refused(match="does not verify"):
        verify(pki, forge(generate_private_key(), chain))


def test_alg_must_match_the_key(pki: Pki) -> None:
    key, chain = pki.log_signer(algorithm=KeyAlgorithm.ED25519)
    jws = forge(key, chain, header=_header(alg="ES256", x5c=_x5c(chain)))
    with refused(match="does not match the signing certificate's key"):
        verify(pki, jws)


def test_untrusted_root(es256: TreeHeadSigner, tmp_path: Path) -> None:
    other = PKIDirectory.init(tmp_path / "other", instance="KG", now=NOW - dt.timedelta(days=1))
    with refused(ErrorCode.CERTIFICATE_UNTRUSTED, "log-signing certificate refused"):
        verify_signed_tree_head(es256.sign(HEAD), trusted_roots=[other.root_certificate()], at=NOW)


def test_expired_certificate(pki: Pki, es256: TreeHeadSigner) -> None:
    with refused(ErrorCode.CERTIFICATE_EXPIRED):
        verify(pki, es256.sign(HEAD), at=NOW + dt.timedelta(days=6 * 365))


def test_wrong_extended_key_usage(pki: Pki) -> None:
    key = generate_private_key()
    cert = pki.ca.issue(Profile.SIGN, "UZ/GOV/STC", key.public_key(), now=NOW)
    sth = sign_tree_head(HEAD, key, [cert, pki.ca.certificate])
    with refused(ErrorCode.CERTIFICATE_INVALID, "logsign"):
        verify(pki, sth)


def test_configuration_signing_purpose(pki: Pki) -> None:
    """The registry's log: a confsign certificate, no binding of the log name."""
    key = generate_private_key()
    cert = pki.ca.issue(Profile.CONFIGURATION_SIGNING, "UZ registry", key.public_key(), now=NOW)
    head = TreeHead(log_id="UZ", tree_size=1, root_hash=ROOT, time=NOW)
    sth = sign_tree_head(head, key, [cert, pki.ca.certificate])
    assert verify(pki, sth, purpose=Profile.CONFIGURATION_SIGNING) == head
    with refused(ErrorCode.CERTIFICATE_INVALID):
        verify(pki, sth)
    with pytest.raises(ValueError, match="does not sign logs"):
        verify(pki, sth, purpose=Profile.SIGN)


def test_log_signing_certificate_of_another_gateway(pki: Pki) -> None:
    key, chain = pki.log_signer("UZ/GOV/STC/gw:backup")
    with refused(ErrorCode.CERTIFICATE_INVALID, "speaks for"):
        verify(pki, sign_tree_head(HEAD, key, chain))


def test_expected_log_id(pki: Pki, es256: TreeHeadSigner) -> None:
    with refused(match="not 'UZ/GOV/STC/gw:other'"):
        verify(pki, es256.sign(HEAD), expected_log_id="UZ/GOV/STC/gw:other")


def test_naive_time_is_a_programming_error(pki: Pki, es256: TreeHeadSigner) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        verify(pki, es256.sign(HEAD), at=dt.datetime(2026, 3, 1))


# -- time-stamps ------------------------------------------------------------------------------


def test_timestamp_verifies(pki: Pki, es256: TreeHeadSigner) -> None:
    sth = es256.sign(HEAD)
    stamped = sth.with_timestamp(pki.token(sth.jws))
    assert stamped.jws == sth.jws
    assert stamped == SignedTreeHead(sth.jws, stamped.timestamp_token)
    gen_time = verify_tree_head_timestamp(stamped, tsa_trusted_roots=[pki.root])
    assert gen_time == NOW
    assert (
        verify_tree_head_timestamp(sth.jws, stamped.timestamp_token, tsa_trusted_roots=[pki.root])
        == NOW
    )
    tsa_der = pki.tsa.chain[0].public_bytes(serialization.Encoding.DER)
    assert (
        verify_tree_head_timestamp(
            stamped, tsa_trusted_roots=[pki.root], approved_tsa_certificates={tsa_der}
        )
        == NOW
    )
    assert hashlib.sha256(sth.jws).digest() == sth.sha256


def test_timestamp_of_another_head(pki: Pki, es256: TreeHeadSigner) -> None:
    one, two = es256.sign(HEAD), es256.sign(HEAD)
    with refused(ErrorCode.TIMESTAMP_INVALID, "imprint does not match"):
        verify_tree_head_timestamp(one, pki.token(two.jws), tsa_trusted_roots=[pki.root])


def test_timestamp_over_a_sha384_imprint(pki: Pki, es256: TreeHeadSigner) -> None:
    sth = es256.sign(HEAD)
    query = build_query(sth.jws, hash_name="sha384", nonce=None)
    token = verify_reply(
        pki.tsa.respond(query), data=sth.jws, nonce=None, trusted_roots=[pki.root]
    ).token_der
    with refused(ErrorCode.TIMESTAMP_INVALID, "sha384, expected sha256"):
        verify_tree_head_timestamp(sth, token, tsa_trusted_roots=[pki.root])


def test_timestamp_missing(pki: Pki, es256: TreeHeadSigner) -> None:
    with refused(ErrorCode.TIMESTAMP_INVALID, "no time-stamp token"):
        verify_tree_head_timestamp(es256.sign(HEAD), tsa_trusted_roots=[pki.root])


def test_timestamp_by_unapproved_tsa(pki: Pki, es256: TreeHeadSigner) -> None:
    sth = es256.sign(HEAD)
    with refused(ErrorCode.TIMESTAMP_INVALID, "not approved"):
        verify_tree_head_timestamp(
            sth, pki.token(sth.jws), tsa_trusted_roots=[pki.root], approved_tsa_certificates=()
        )


def test_timestamp_untrusted_tsa(pki: Pki, es256: TreeHeadSigner, tmp_path: Path) -> None:
    other = PKIDirectory.init(tmp_path / "other", instance="KG", now=NOW - dt.timedelta(days=1))
    sth = es256.sign(HEAD)
    with refused(ErrorCode.TIMESTAMP_INVALID, "TSA certificate"):
        verify_tree_head_timestamp(
            sth, pki.token(sth.jws), tsa_trusted_roots=[other.root_certificate()]
        )


# -- Hypothesis -------------------------------------------------------------------------------

heads = st.builds(
    TreeHead,
    log_id=st.text(
        st.characters(categories=["L", "N", "P", "S"], include_characters=" "),
        min_size=1,
        max_size=80,
    ),
    tree_size=st.integers(0, 2**63 - 1),
    root_hash=st.binary(min_size=32, max_size=32),
    time=st.datetimes(
        min_value=dt.datetime(1, 1, 1),
        max_value=dt.datetime(9999, 12, 31),
        timezones=st.just(dt.UTC),
    ).map(lambda t: t.replace(microsecond=t.microsecond // 1000 * 1000)),
)


@pytest.fixture(scope="module")
def confsign(pki: Pki) -> TreeHeadSigner:
    """A signer whose certificate does not bind the log name: any log_id verifies."""
    key = generate_private_key()
    cert = pki.ca.issue(Profile.CONFIGURATION_SIGNING, "UZ registry", key.public_key(), now=NOW)
    return TreeHeadSigner(key=key, certificate_chain=[cert, pki.ca.certificate])


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(head=heads)
def test_round_trip(confsign: TreeHeadSigner, pki: Pki, head: TreeHead) -> None:
    sth = confsign.sign(head)
    assert parse_signed_tree_head(sth.jws)[0] == head
    assert SignedTreeHead(sth.jws).head == head
    assert verify(pki, sth, purpose=Profile.CONFIGURATION_SIGNING) == head


@pytest.fixture(scope="module")
def stamped(pki: Pki, es256: TreeHeadSigner) -> SignedTreeHead:
    sth = es256.sign(HEAD)
    return sth.with_timestamp(pki.token(sth.jws))


def _flip(data: bytes, index: int, value: int) -> bytes:
    index %= len(data)
    new = (data[index] + 1 + value % 255) % 256  # never the same byte
    return data[:index] + bytes([new]) + data[index + 1 :]


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(index=st.integers(min_value=0), value=st.integers(0, 254))
def test_any_changed_jws_byte_fails(
    pki: Pki, stamped: SignedTreeHead, index: int, value: int
) -> None:
    jws = _flip(stamped.jws, index, value)
    with pytest.raises(TreeHeadError):
        verify(pki, jws)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(index=st.integers(min_value=0), value=st.integers(0, 254))
def test_any_changed_token_byte_fails(
    pki: Pki, stamped: SignedTreeHead, index: int, value: int
) -> None:
    assert stamped.timestamp_token is not None
    token = _flip(stamped.timestamp_token, index, value)
    with pytest.raises(TreeHeadError):
        verify_tree_head_timestamp(stamped, token, tsa_trusted_roots=[pki.root])


# -- openssl ----------------------------------------------------------------------------------


@pytest.mark.interop
def test_openssl_verifies_the_token(pki: Pki, stamped: SignedTreeHead, tmp_path: Path) -> None:
    exe = shutil.which("openssl")
    assert exe is not None, "the openssl command is needed for the interop tests"
    assert stamped.timestamp_token is not None
    (tmp_path / "sth.jws").write_bytes(stamped.jws)
    (tmp_path / "token.tst").write_bytes(stamped.timestamp_token)
    write_certificate_chain(tmp_path / "tsa.pem", pki.tsa.chain)

    def openssl_verify(data: str) -> str:
        args = [exe, "ts", "-verify", "-data", data, "-token_in", "-in", "token.tst"]
        args += ["-CAfile", str(pki.dir.root_cert), "-untrusted", "tsa.pem"]
        args += ["-attime", str(int(NOW.timestamp()))]
        result = subprocess.run(
            args, check=False, capture_output=True, text=True, timeout=60, cwd=tmp_path
        )
        return result.stdout + result.stderr

    assert "Verification: OK" in openssl_verify("sth.jws")
    (tmp_path / "other.jws").write_bytes(stamped.jws + b"\n")
    assert "Verification: OK" not in openssl_verify("other.jws")


def test_a_certificate_of_an_unknown_version_is_refused_not_raised(pki: Pki) -> None:
    """cryptography raises ``InvalidVersion`` (not a ValueError) for a certificate whose
    version field is out of range: found by the byte-flipping property above."""
    key, chain = pki.log_signer()
    der = bytearray(chain[0].public_bytes(serialization.Encoding.DER))
    at = der.index(b"\xa0\x03\x02\x01\x02")  # [0] EXPLICIT INTEGER 2: version v3
    der[at + 4] = 0x05
    x5c = [base64.b64encode(bytes(der)).decode(), *_x5c(chain[1:])]
    header = {"alg": "ES256", "typ": TREE_HEAD_JWS_TYPE, "x5c": x5c}
    with refused(ErrorCode.CERTIFICATE_INVALID, match=r"x5c\[0\] is not a certificate"):
        parse_signed_tree_head(forge(key, chain, header=header))
