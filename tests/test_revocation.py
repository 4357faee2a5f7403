"""OCSP-backed revocation checking for path validation: one test per guarantee of
certs.revocation, against the real responder core and the real validator."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from certs.ca import CertificateAuthority
from certs.errors import CertificateError
from certs.keys import generate_private_key, load_certificate_chain
from certs.ocsp import OCSPResponder
from certs.ocsp_client import OCSPClient, ResponderTransport
from certs.pkidir import PKIDirectory
from certs.profiles import Profile
from certs.revocation import OCSPResponsesChecker, fetch_for_chain
from certs.validation import TrustStore, validate_path
from serai.errors import ErrorCode


@dataclass
class Env:
    pki: PKIDirectory
    ca: CertificateAuthority
    client: OCSPClient
    trust: TrustStore
    issuing: x509.Certificate


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    pki = PKIDirectory.init(tmp_path / "pki", instance="UZ")
    ca = pki.issuing_ca()
    key, chain = pki.ocsp_signer()
    responder = OCSPResponder(
        key=key, certificate=chain[0], issuers=[ca.certificate], source=ca.records
    )
    client = OCSPClient(transport=ResponderTransport(responder))
    trust = TrustStore(roots=[pki.root_certificate()])
    yield Env(pki, ca, client, trust, load_certificate_chain(pki.issuing_cert)[0])
    await client.aclose()


def _sign_cert(env: Env, member: str = "UZ/GOV/STC") -> x509.Certificate:
    return env.ca.issue(Profile.SIGN, member, generate_private_key().public_key())


async def test_good_leaf_validates(env: Env) -> None:
    leaf = _sign_cert(env)
    checker = await fetch_for_chain(env.client, [leaf, env.issuing])
    path = validate_path(
        leaf,
        intermediates=[env.issuing],
        trust=env.trust,
        at=dt.datetime.now(dt.UTC),
        purpose=Profile.SIGN,
        revocation=checker,
    )
    assert path.leaf == leaf
    assert len(checker.responses) == 1


async def test_revoked_leaf_is_refused(env: Env) -> None:
    leaf = _sign_cert(env)
    env.ca.revoke(leaf.serial_number, reason=x509.ReasonFlags.key_compromise)
    checker = await fetch_for_chain(env.client, [leaf, env.issuing])
    with pytest.raises(CertificateError) as info:
        validate_path(
            leaf,
            intermediates=[env.issuing],
            trust=env.trust,
            at=dt.datetime.now(dt.UTC),
            purpose=Profile.SIGN,
            revocation=checker,
        )
    assert info.value.code is ErrorCode.CERTIFICATE_REVOKED


async def test_missing_response_is_ocsp_unavailable(env: Env) -> None:
    leaf = _sign_cert(env)
    with pytest.raises(CertificateError) as info:
        OCSPResponsesChecker([]).check(leaf, env.issuing, dt.datetime.now(dt.UTC))
    assert info.value.code is ErrorCode.OCSP_UNAVAILABLE


async def test_response_about_another_certificate_does_not_count(env: Env) -> None:
    mine, other = _sign_cert(env), _sign_cert(env, "UZ/GOV/CADASTRE")
    checker = await fetch_for_chain(env.client, [other, env.issuing])
    with pytest.raises(CertificateError) as info:
        OCSPResponsesChecker(checker.responses).check(mine, env.issuing, dt.datetime.now(dt.UTC))
    assert info.value.code is ErrorCode.OCSP_INVALID


async def test_stale_response_is_refused(env: Env) -> None:
    leaf = _sign_cert(env)
    checker = await fetch_for_chain(env.client, [leaf, env.issuing])
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1800)
    strict = OCSPResponsesChecker(checker.responses, max_age_s=600)
    with pytest.raises(CertificateError) as info:
        strict.check(leaf, env.issuing, later)
    assert info.value.code is ErrorCode.OCSP_STALE


async def test_unknown_status_is_refused(env: Env) -> None:
    # The responder answers "unknown" for a serial its CA has no record of.
    leaf = _sign_cert(env)
    with env.ca.records._connect() as conn:
        conn.execute(
            "DELETE FROM certificates WHERE serial = ?", (format(leaf.serial_number, "x"),)
        )
    result = await env.client.fetch(leaf, env.issuing)
    with pytest.raises(CertificateError) as info:
        OCSPResponsesChecker([result.der]).check(leaf, env.issuing, dt.datetime.now(dt.UTC))
    assert info.value.code is ErrorCode.CERTIFICATE_INVALID
    assert "does not know" in info.value.message


async def test_leaf_only_checker_passes_intermediates(env: Env) -> None:
    leaf = _sign_cert(env)
    checker = await fetch_for_chain(env.client, [leaf, env.issuing, env.pki.root_certificate()])
    now = dt.datetime.now(dt.UTC)
    checker.check(env.issuing, env.pki.root_certificate(), now)
    with pytest.raises(CertificateError):
        OCSPResponsesChecker(checker.responses).check(env.issuing, env.pki.root_certificate(), now)


async def test_fetch_needs_an_issuer(env: Env) -> None:
    with pytest.raises(ValueError, match="at least the leaf and its issuer"):
        await fetch_for_chain(env.client, [_sign_cert(env)])
