"""gateway._verifycache: the opt-in VerificationCache of gateway.signing.

Every test of tests/test_gateway_signing.py runs again here with the cache off and with
one cache shared by all of them (so entries warmed by one case are seen by the next);
then one test per rule of the cache's module docstring. Refusals with and without the
cache are compared by code, origin and message."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import functools
import inspect
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp

import tests.test_gateway_signing as signing_tests
from certs.ca import CertStatus
from certs.errors import OCSPError
from certs.ocsp_client import DEFAULT_CLOCK_SKEW_S, validate_response
from certs.validation import TrustStore
from gateway import signing
from gateway._verifycache import VerificationCache
from gateway.errors import GatewayError
from gateway.signing import HeaderSigner, SignedHeader
from serai.errors import ErrorCode
from tests.test_gateway_signing import (
    BODY,
    PKI,
    Member,
    _flip,
    _header,
    _now,
    _pki,
    cadastre,
    pki,
    stc,
)

__all__ = ["cadastre", "pki", "stc"]  # module fixtures, shared with the imported tests

_SHARED = VerificationCache()

# --- the whole signing suite, cache off and on ----------------------------------------------

for _name, _test in inspect.getmembers(signing_tests, inspect.isfunction):
    if _name.startswith("test_") and _test.__module__ == signing_tests.__name__:
        globals()[f"{_name}__suite"] = _test


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.function.__module__ == signing_tests.__name__:
        metafunc.parametrize("cache_mode", ["cache_off", "cache_on"], indirect=True)


@pytest.fixture(autouse=True)
def cache_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """For the imported suite with ``cache_on``: its verify calls use the shared cache."""
    if getattr(request, "param", "cache_off") == "cache_on":
        monkeypatch.setattr(
            signing_tests,
            "verify_request",
            functools.partial(signing.verify_request, cache=_SHARED),
        )
        monkeypatch.setattr(
            signing_tests,
            "verify_response",
            functools.partial(signing.verify_response, cache=_SHARED),
        )


# --- helpers ----------------------------------------------------------------------------------


def _verify(
    pki: PKI,
    signed: SignedHeader,
    *,
    cache: VerificationCache | None,
    now: dt.datetime | None = None,
    chain: list[bytes] | None = None,
    ocsp: bytes | None = None,
    trust: TrustStore | None = None,
    body: bytes = BODY,
    **options: Any,
) -> object:
    return signing.verify_request(
        signed.jws,
        chain=list(signed.certificate_chain) if chain is None else chain,
        ocsp_response=signed.ocsp_response if ocsp is None else ocsp,
        body=body,
        trust=pki.trust if trust is None else trust,
        now=now or _now(),
        cache=cache,
        **options,
    )


def _outcome(call: Callable[[], object]) -> tuple[str, str, str] | str:
    try:
        call()
    except GatewayError as exc:
        return (exc.code.value, exc.origin.value, exc.message)
    return "accepted"


def _same_with_and_without(
    cache: VerificationCache, call: Callable[..., object]
) -> tuple[str, str, str] | str:
    """The outcome of ``call(cache=...)`` with ``cache`` and with none; they must agree."""
    with_cache = _outcome(functools.partial(call, cache=cache))
    assert with_cache == _outcome(functools.partial(call, cache=None))
    return with_cache


def _code(outcome: tuple[str, str, str] | str) -> str:
    return outcome if isinstance(outcome, str) else outcome[0]


# --- rule 1: paths --------------------------------------------------------------------------


def test_second_verification_hits_both_tables(pki: PKI, stc: Member) -> None:
    cache = VerificationCache()
    signed = stc.signer.sign(_header())
    _verify(pki, signed, cache=cache)
    assert cache.stats == {"path_hits": 0, "path_misses": 1, "ocsp_hits": 0, "ocsp_misses": 1}
    _verify(pki, stc.signer.sign(_header()), cache=cache)
    assert cache.stats == {"path_hits": 1, "path_misses": 1, "ocsp_hits": 1, "ocsp_misses": 1}
    assert cache.sizes == (1, 1)


def test_newest_ocsp_answer_per_subject_for_operators(pki: PKI, stc: Member) -> None:
    cache = VerificationCache()
    assert cache.newest_ocsp_this_update() == {}
    signed = stc.signer.sign(_header())
    _verify(pki, signed, cache=cache)
    this_update = ocsp.load_der_ocsp_response(signed.ocsp_response).this_update_utc
    assert cache.newest_ocsp_this_update() == {str(signing_tests.STC.member): this_update}


def test_another_chain_misses(pki: PKI, stc: Member, cadastre: Member) -> None:
    cache = VerificationCache()
    _verify(pki, stc.signer.sign(_header()), cache=cache)
    request = stc.signer.sign(_header())
    signed = cadastre.signer.sign(signing_tests._response_for(request))
    signing.verify_response(
        signed.jws,
        chain=list(signed.certificate_chain),
        ocsp_response=signed.ocsp_response,
        body=b"parcel",
        trust=pki.trust,
        now=_now(),
        expected_request_sha256=request.header_sha256,
        expected_message_id="m-1",
        provider=signing_tests.CADASTRE,
        cache=cache,
    )
    assert cache.stats["path_misses"] == 2
    assert cache.sizes == (2, 2)


def test_cached_path_is_refused_after_not_after(pki: PKI, stc: Member) -> None:
    cache = VerificationCache()
    _verify(pki, stc.signer.sign(_header()), cache=cache)
    later = stc.chain[0].not_valid_after_utc + dt.timedelta(seconds=1)
    signed = stc.signer.sign(_header(created_at=later))
    outcome = _same_with_and_without(cache, functools.partial(_verify, pki, signed, now=later))
    assert _code(outcome) == ErrorCode.CERTIFICATE_EXPIRED.value
    assert cache.stats["path_hits"] == 0


def test_cached_path_is_refused_before_not_before(pki: PKI, stc: Member) -> None:
    cache = VerificationCache()
    _verify(pki, stc.signer.sign(_header()), cache=cache)
    earlier = stc.chain[0].not_valid_before_utc - dt.timedelta(seconds=1)
    signed = stc.signer.sign(_header(created_at=earlier))
    outcome = _same_with_and_without(cache, functools.partial(_verify, pki, signed, now=earlier))
    assert _code(outcome) == ErrorCode.CERTIFICATE_EXPIRED.value
    assert cache.stats["path_hits"] == 0


def test_a_trust_store_without_the_ca_misses_and_refuses(
    tmp_path: Path, pki: PKI, stc: Member
) -> None:
    cache = VerificationCache()
    signed = stc.signer.sign(_header())
    _verify(pki, signed, cache=cache)
    withdrawn = TrustStore(roots=_pki(tmp_path / "other").trust.roots)
    outcome = _same_with_and_without(
        cache, functools.partial(_verify, pki, signed, trust=withdrawn)
    )
    assert _code(outcome) == ErrorCode.CERTIFICATE_UNTRUSTED.value
    assert cache.stats["path_hits"] == 0
    # An equal store built anew has the same digest: it hits.
    _verify(pki, signed, cache=cache, trust=TrustStore(roots=pki.trust.roots))
    assert cache.stats["path_hits"] == 1


def test_one_bit_of_an_intermediate_misses(pki: PKI, stc: Member) -> None:
    cache = VerificationCache()
    _verify(pki, stc.signer.sign(_header()), cache=cache)
    issuing = stc.chain[1].public_bytes(serialization.Encoding.DER)
    flipped = x509.load_der_x509_certificate(_flip(issuing, (len(issuing) - 1) * 8))
    signer = HeaderSigner(
        key=stc.key, certificate_chain=[stc.chain[0], flipped], ocsp_response=stc.supply
    )
    signed = signer.sign(_header())
    outcome = _same_with_and_without(cache, functools.partial(_verify, pki, signed))
    assert _code(outcome).startswith("certificate_")
    assert cache.stats["path_hits"] == 0


def test_failures_are_not_cached(tmp_path: Path, pki: PKI) -> None:
    cache = VerificationCache()
    foreign = _pki(tmp_path / "foreign").member("UZ/GOV/STC")
    signed = foreign.signer.sign(_header())
    for _ in range(2):
        assert _code(_outcome(lambda: _verify(pki, signed, cache=cache))) == (
            ErrorCode.CERTIFICATE_UNTRUSTED.value
        )
    assert cache.sizes[0] == 0


# --- rule 4: parsed certificates ---------------------------------------------------------


def test_a_signing_certificate_is_parsed_once(
    pki: PKI, stc: Member, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = VerificationCache()
    leaf = stc.chain[0].public_bytes(serialization.Encoding.DER)
    parsed: list[bytes] = []

    def counting(der: bytes) -> x509.Certificate:
        parsed.append(bytes(der))
        return x509.load_der_x509_certificate(der)

    monkeypatch.setattr(signing, "parse_der_certificate", counting)
    for _ in range(3):
        assert _verify(pki, stc.signer.sign(_header()), cache=cache) is not None
    assert parsed.count(leaf) == 1
    assert cache.certificates_held == 1
    parsed.clear()
    for _ in range(2):
        _verify(pki, stc.signer.sign(_header()), cache=None)
    assert parsed.count(leaf) == 2  # without a cache, every time


def test_a_certificate_that_fails_to_parse_is_not_remembered(pki: PKI, stc: Member) -> None:
    cache = VerificationCache()
    signed = stc.signer.sign(_header())
    damaged = bytearray(signed.certificate_chain[0])
    damaged[len(damaged) // 2] ^= 0xFF
    chain = [bytes(damaged), *signed.certificate_chain[1:]]
    payload = signed.jws.split(".")[1]
    forged = signing_tests._forge(
        {
            "alg": "ES256",
            "typ": signing.REQUEST_JWS_TYPE,
            "x5c": [base64.b64encode(der).decode() for der in chain],
        },
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)),
        signing_tests._es256(stc.key),
    )
    for _ in range(2):
        outcome = _same_with_and_without(
            cache,
            functools.partial(_verify, pki, dataclasses.replace(signed, jws=forged), chain=chain),
        )
        assert _code(outcome) == ErrorCode.CERTIFICATE_INVALID.value, outcome
    assert cache.certificates_held == 0


# --- rule 2: OCSP answers -------------------------------------------------------------------


def test_stale_ocsp_hit_is_refused_later(pki: PKI, stc: Member) -> None:
    cache = VerificationCache()
    now = _now()
    _verify(pki, stc.signer.sign(_header(created_at=now)), cache=cache, now=now)
    later = now + dt.timedelta(seconds=30)
    signed = stc.signer.sign(_header(created_at=later))
    outcome = _same_with_and_without(
        cache, functools.partial(_verify, pki, signed, now=later, max_ocsp_age_s=10)
    )
    assert _code(outcome) == ErrorCode.OCSP_STALE.value
    # The default maximum age, an hour and a bit later, refuses too.
    much_later = now + dt.timedelta(seconds=signing.DEFAULT_MAX_OCSP_AGE_S + 60)
    signed = stc.signer.sign(_header(created_at=much_later))
    outcome = _same_with_and_without(cache, functools.partial(_verify, pki, signed, now=much_later))
    assert _code(outcome) == ErrorCode.OCSP_STALE.value
    # And the same response is still good at the time it was cached for.
    _verify(pki, stc.signer.sign(_header(created_at=now)), cache=cache, now=now)


def test_ocsp_from_the_future_is_refused_even_when_cached(pki: PKI, stc: Member) -> None:
    # (The certificate itself is too new for a message this early; ask the table directly.)
    cache = VerificationCache()
    leaf, issuer = stc.chain
    result = cache.ocsp_result(stc.ocsp, cert=leaf, issuer=issuer, at=_now(), max_age_s=3600)
    assert result is not None
    assert result.status is CertStatus.GOOD
    early = result.this_update - dt.timedelta(seconds=DEFAULT_CLOCK_SKEW_S + 1)
    assert cache.ocsp_result(stc.ocsp, cert=leaf, issuer=issuer, at=early, max_age_s=3600) is None
    with pytest.raises(OCSPError) as info:  # the responder's certificate, or thisUpdate
        validate_response(
            stc.ocsp, cert=leaf, issuer=issuer, now=early, max_age_s=3600, require_nonce=False
        )
    assert info.value.code is ErrorCode.OCSP_INVALID
    assert cache.stats["ocsp_hits"] == 0


def test_revoked_stays_refused(pki: PKI) -> None:
    cache = VerificationCache()
    member = pki.member("UZ/GOV/STC")
    pki.ca.revoke(member.chain[0].serial_number, reason=x509.ReasonFlags.key_compromise)
    revoked = dataclasses.replace(member, ocsp=pki.ocsp_for(member.chain[0]))
    for _ in range(3):
        signed = revoked.signer.sign(_header())
        outcome = _same_with_and_without(cache, functools.partial(_verify, pki, signed))
        assert _code(outcome) == ErrorCode.CERTIFICATE_REVOKED.value
    assert cache.sizes == (0, 1)
    [entry] = cache._ocsp._data.values()
    assert entry.result.status is CertStatus.REVOKED
    assert cache.stats["ocsp_hits"] >= 2


def test_one_bit_of_the_ocsp_response_misses(pki: PKI, stc: Member) -> None:
    cache = VerificationCache()
    signed = stc.signer.sign(_header())
    _verify(pki, signed, cache=cache)
    misses = cache.stats["ocsp_misses"]
    for bit in (len(signed.ocsp_response) * 8 - 1, len(signed.ocsp_response) * 4):
        ocsp = _flip(signed.ocsp_response, bit)
        outcome = _same_with_and_without(cache, functools.partial(_verify, pki, signed, ocsp=ocsp))
        assert _code(outcome).startswith(("ocsp_", "certificate_"))
    assert cache.stats["ocsp_misses"] > misses
    assert cache.sizes == (1, 1)


def test_ocsp_about_another_leaf_misses(pki: PKI, stc: Member, cadastre: Member) -> None:
    cache = VerificationCache()
    _verify(pki, stc.signer.sign(_header()), cache=cache)
    _verify(pki, stc.signer.sign(_header()), cache=cache)
    signed = stc.signer.sign(_header())
    outcome = _same_with_and_without(
        cache, functools.partial(_verify, pki, signed, ocsp=cadastre.ocsp)
    )
    assert _code(outcome) == ErrorCode.OCSP_INVALID.value


# --- rule 3: the message is checked every time ----------------------------------------------


def test_message_bound_rules_are_checked_on_a_warm_cache(
    pki: PKI, stc: Member, cadastre: Member
) -> None:
    cache = VerificationCache()
    signed = stc.signer.sign(_header())
    _verify(pki, signed, cache=cache)
    cases: list[tuple[ErrorCode, Callable[..., object]]] = [
        (ErrorCode.SIGNATURE_INVALID, functools.partial(_verify, pki, signed, body=_flip(BODY, 3))),
        (
            ErrorCode.SIGNATURE_INVALID,
            functools.partial(
                _verify, pki, dataclasses.replace(signed, jws=signed.jws[:-2] + "AA")
            ),
        ),
        (
            ErrorCode.SIGNATURE_INVALID,
            functools.partial(_verify, pki, signed, chain=list(cadastre.signer.certificate_chain)),
        ),
        (
            ErrorCode.CLOCK_SKEW,
            functools.partial(_verify, pki, signed, now=_now() + dt.timedelta(seconds=120)),
        ),
    ]
    for code, call in cases:
        assert _code(_same_with_and_without(cache, call)) == code.value
    other = pki.member("UZ/GOV/CADASTRE")
    wrong_member = other.signer.sign(_header())
    outcome = _same_with_and_without(cache, functools.partial(_verify, pki, wrong_member))
    assert _code(outcome) == ErrorCode.CERTIFICATE_INVALID.value
    assert cache.stats["path_hits"] >= 1


# --- rule 4: bounds and threads -------------------------------------------------------------


def test_tables_are_bounded(pki: PKI, stc: Member) -> None:
    cache = VerificationCache(max_entries=1)
    other = pki.member("UZ/GOV/STC")
    for member in (stc, other, stc, other):
        _verify(pki, member.signer.sign(_header()), cache=cache)
        assert cache.sizes == (1, 1)
    assert cache.stats["path_hits"] == 0
    with pytest.raises(ValueError, match="at least one"):
        VerificationCache(max_entries=0)


def test_concurrent_verifications_share_the_cache(pki: PKI, stc: Member) -> None:
    cache = VerificationCache(max_entries=2)
    members = [stc, pki.member("UZ/GOV/STC"), pki.member("UZ/GOV/STC")]
    signed = [m.signer.sign(_header()) for m in members]
    barrier = threading.Barrier(8)

    def work(index: int) -> None:
        barrier.wait()
        for round_ in range(20):
            _verify(pki, signed[(index + round_) % len(signed)], cache=cache)

    with ThreadPoolExecutor(8) as pool:
        for future in [pool.submit(work, i) for i in range(8)]:
            future.result()
    stats = cache.stats
    assert stats["path_hits"] + stats["path_misses"] == 160
    assert cache.sizes[0] <= 2
