"""What the auditor's verifier remembers between tree heads (rule 8 of
gateway.messagelog._verifycache, PathVerdicts): the certification paths of the
log-signing and TSA certificates, by exact bytes and cell of time.

Each rule has a case showing that a remembered path is never taken for a validation it
was not made for (another certificate, trust store, purpose, a time in another cell or
outside a validity, a revocation checker), that a refusal is never remembered, and, over
real signed and time-stamped heads, that a verifier that remembers gives the verdicts,
failures and messages of one that remembers nothing (``remember=False``) whatever token
or certificate a head carries.

Certificates, tokens and heads are real: the development PKI and TSA of a federation
that ran four exchanges (tests/messagelogharness.py).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections.abc import Callable, Sequence

import pytest
from asn1crypto import tsp
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certs.ca import self_signed_root
from certs.errors import PKIError
from certs.keys import generate_private_key
from certs.profiles import Profile
from certs.timestamp import build_query, new_nonce, verify_token
from certs.tsa import TimeStampAuthority
from certs.validation import (
    InMemoryRevocationChecker,
    TlsRole,
    TrustStore,
    ValidatedPath,
    validate_path,
)
from gateway.messagelog._verifycache import PathVerdicts
from gateway.messagelog.timeline import ConfigurationTimeline
from gateway.messagelog.verify import EvidenceVerifier, Failure
from serai.treehead import TreeHead, TreeHeadSigner
from tests.messagelogharness import LOG_ID, Source, exchange_records

_US = dt.timedelta(microseconds=1)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    return exchange_records(tmp_path_factory.mktemp("federation"))


def timeline(source: Source) -> ConfigurationTimeline:
    held = ConfigurationTimeline(source.anchor)
    held.add(source.envelope)
    return held


def trust(source: Source) -> TrustStore:
    return timeline(source).configurations[0].snapshot.trust_store


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def outcome(run: Callable[[], ValidatedPath]) -> tuple[object, ...]:
    """What a validation gave: the path (DER, purpose, time), or the refusal's type,
    code and message."""
    try:
        path = run()
    except (PKIError, ValueError) as exc:
        code = getattr(exc, "code", None)
        return ("refused", type(exc).__name__, code, str(exc))
    return ("accepted", tuple(der(c) for c in path.certificates), path.purpose, path.at)


def same_as_validate_path(
    paths: PathVerdicts, leaf: x509.Certificate, **kwargs: object
) -> tuple[object, ...]:
    """``paths.validate`` gives what ``validate_path`` gives for the same arguments."""
    remembered = outcome(lambda: paths.validate(leaf, **kwargs))
    fresh = outcome(lambda: validate_path(leaf, **kwargs))  # type: ignore[arg-type]
    assert remembered == fresh
    return remembered


def inside(cert: x509.Certificate) -> dt.datetime:
    return cert.not_valid_before_utc + (cert.not_valid_after_utc - cert.not_valid_before_utc) / 2


@pytest.fixture(scope="module")
def store(source: Source) -> TrustStore:
    return trust(source)


def verdict(
    paths: PathVerdicts,
    source: Source,
    store: TrustStore,
    at: dt.datetime,
    *,
    leaf: x509.Certificate | None = None,
    **extra: object,
) -> tuple[object, ...]:
    """Validate ``leaf`` (the log-signing certificate by default) as the tree-head check
    does (its CA sent, ``store``, ``logsign``, no revocation), with ``extra`` arguments
    changed or added; the outcome is the same as ``validate_path``'s."""
    arguments: dict[str, object] = {
        "intermediates": list(source.log_chain[1:]),
        "trust": store,
        "at": at,
        "purpose": Profile.LOG_SIGNING,
        "revocation": None,
        **extra,
    }
    return same_as_validate_path(paths, leaf or source.log_chain[0], **arguments)


def accepted_once(
    source: Source, store: TrustStore
) -> tuple[PathVerdicts, x509.Certificate, dt.datetime]:
    """A table that accepted the log-signing certificate's path at a time well inside its
    validity; the certificate and that time."""
    paths, leaf = PathVerdicts(), source.log_chain[0]
    at = inside(leaf)
    assert verdict(paths, source, store, at)[0] == "accepted"
    return paths, leaf, at


# -- rule 8, PathVerdicts directly ----------------------------------------------------------


def test_a_path_accepted_once_is_accepted_again_in_its_cell_with_this_time(
    source: Source, store: TrustStore
) -> None:
    paths = PathVerdicts()
    at = inside(source.log_chain[0])
    assert verdict(paths, source, store, at)[0] == "accepted"
    later = at + dt.timedelta(seconds=1)
    again = verdict(paths, source, store, later)
    assert again[0] == "accepted"
    assert again[3] == later  # the path's time is the caller's, not the remembered one
    assert (paths.hits, paths.misses) == (1, 1)


def test_a_time_outside_the_validity_is_refused_after_a_success(
    source: Source, store: TrustStore
) -> None:
    paths, leaf = PathVerdicts(), source.log_chain[0]
    assert verdict(paths, source, store, inside(leaf))[0] == "accepted"
    for at in (
        leaf.not_valid_before_utc - _US,
        leaf.not_valid_after_utc + _US,
        source.root.not_valid_after_utc + dt.timedelta(days=1),
    ):
        refused = verdict(paths, source, store, at)
        assert refused[:2] == ("refused", "CertificateError")
        assert "certificate_expired" in str(refused[2])
    assert paths.hits == 0


def test_a_time_on_a_validity_bound_is_its_own_cell(source: Source, store: TrustStore) -> None:
    """notBefore is valid, one microsecond before is not: the bound itself is a cell."""
    paths, start = PathVerdicts(), source.log_chain[0].not_valid_before_utc
    found = [verdict(paths, source, store, at)[0] for at in (start, start - _US, start + _US)]
    assert found == ["accepted", "refused", "accepted"]
    assert paths.hits == 0  # three cells: on the bound, before it, after it
    assert verdict(paths, source, store, start)[0] == "accepted"
    assert paths.hits == 1


def test_another_certificate_is_a_miss_and_is_judged_on_its_own(
    source: Source, store: TrustStore
) -> None:
    paths, leaf, at = accepted_once(source, store)
    ca = source.pki.issuing_ca()
    other = ca.issue(Profile.LOG_SIGNING, LOG_ID, generate_private_key().public_key())
    signing = ca.issue(Profile.SIGN, "UZ/GOV/123", generate_private_key().public_key())
    flipped = der(leaf)[:-1] + bytes([der(leaf)[-1] ^ 0x01])
    forged = x509.load_der_x509_certificate(flipped)
    found = [verdict(paths, source, store, at, leaf=c)[0] for c in (other, signing, forged)]
    assert found == ["accepted", "refused", "refused"]
    assert paths.hits == 0


def test_other_intermediates_another_store_or_purpose_are_misses(
    source: Source, store: TrustStore
) -> None:
    paths, _, at = accepted_once(source, store)
    # No intermediate sent (the store knows the CA), or the CA sent twice: other keys.
    for sent in ([], [source.log_chain[1]] * 2):
        assert verdict(paths, source, store, at, intermediates=sent)[0] == "accepted"
    # A store that approves another root only: the same chain leads nowhere.
    unrelated = self_signed_root(generate_private_key(), name="Elsewhere Root CA")
    refused = verdict(paths, source, TrustStore(roots=[unrelated]), at)
    assert refused[0] == "refused"
    assert "certificate_untrusted" in str(refused[2])
    # Another purpose: the log-signing certificate is no TSA.
    assert verdict(paths, source, store, at, purpose=Profile.TSA)[0] == "refused"
    assert paths.hits == 0


def test_a_refusal_is_never_remembered(source: Source, store: TrustStore) -> None:
    paths = PathVerdicts()
    at = source.log_chain[0].not_valid_after_utc + _US
    for _ in range(2):
        assert verdict(paths, source, store, at)[0] == "refused"
    assert (paths.hits, paths.misses) == (0, 2)


def test_revocation_a_tls_role_a_depth_or_a_naive_time_are_never_answered_from_memory(
    source: Source, store: TrustStore
) -> None:
    paths, leaf, at = accepted_once(source, store)
    revoked = InMemoryRevocationChecker()
    revoked.revoke(
        issuer=source.log_chain[1], serial=leaf.serial_number, at=at - dt.timedelta(days=1)
    )
    refused = verdict(paths, source, store, at, revocation=revoked)
    assert refused[0] == "refused"
    assert "certificate_revoked" in str(refused[2])
    assert verdict(paths, source, store, at, tls_role=TlsRole.SERVER)[:2] == (
        "refused",
        "ValueError",
    )
    assert verdict(paths, source, store, at, max_depth=2)[0] == "refused"
    assert verdict(paths, source, store, at.replace(tzinfo=None))[:2] == ("refused", "ValueError")
    assert (paths.hits, paths.misses) == (0, 1)


def test_the_least_recently_used_key_is_dropped(source: Source, store: TrustStore) -> None:
    paths = PathVerdicts(max_entries=1)
    at = inside(source.log_chain[0])
    verdict(paths, source, store, at)
    verdict(paths, source, store, at, intermediates=[])
    verdict(paths, source, store, at)
    assert (paths.hits, paths.misses) == (0, 3)


def test_a_token_verifies_the_same_with_a_trust_store_and_remembered_paths(
    source: Source,
) -> None:
    """certs.timestamp.verify_token with a TrustStore and PathVerdicts.validate gives what
    it gives with a list of roots and validate_path."""
    data = b"tree head"
    token = source.token(data)
    paths = PathVerdicts()
    digest = hashlib.sha256(data).digest()
    for _ in range(2):
        remembered = verify_token(
            token,
            digest=digest,
            hash_name="sha256",
            trusted_roots=TrustStore(roots=[source.root]),
            validate=paths.validate,
        )
        plain = verify_token(token, digest=digest, hash_name="sha256", trusted_roots=[source.root])
        assert remembered == plain
    assert paths.hits == 1


# -- heads: a verifier that remembers judges every head as one that does not ---------------


@dataclasses.dataclass(frozen=True)
class Head:
    jws: bytes
    token: bytes | None


def sign(
    source: Source,
    *,
    size: int = 3,
    chain: Sequence[x509.Certificate] | None = None,
    key: object = None,
    time: dt.datetime | None = None,
) -> bytes:
    now = time or dt.datetime.now(dt.UTC)
    head = TreeHead(
        log_id=LOG_ID,
        tree_size=size,
        root_hash=hashlib.sha256(b"root %d" % size).digest(),
        time=now.replace(microsecond=now.microsecond // 1000 * 1000),
    )
    signer = TreeHeadSigner(
        key=key or source.log_key,  # type: ignore[arg-type]
        certificate_chain=list(chain or source.log_chain),
    )
    return signer.sign(head).jws


def stamp_at(source: Source, data: bytes, when: dt.datetime) -> bytes:
    """A token of the approved TSA whose clock says ``when``."""
    tsa_key, tsa_chain = source.pki.tsa_signer()
    tsa = TimeStampAuthority(key=tsa_key, chain=tsa_chain, clock=lambda: when)
    reply = tsa.respond(build_query(data, nonce=new_nonce()))
    token: bytes = tsp.TimeStampResp.load(reply)["time_stamp_token"].dump()
    return token


def same_as_uncached(source: Source, heads: Sequence[Head]) -> list[list[Failure]]:
    """Check ``heads`` in order with a remembering verifier and one that remembers
    nothing; the failures of each head are the same, and returned."""
    warm = EvidenceVerifier(log_id=LOG_ID, timeline=timeline(source))
    cold = EvidenceVerifier(log_id=LOG_ID, timeline=timeline(source), remember=False)
    found = []
    for position, head in enumerate(heads):
        before = (len(warm.report.failures), len(cold.report.failures))
        warm.check_head(head.jws, head.token)
        cold.check_head(head.jws, head.token)
        failures = warm.report.failures[before[0] :]
        assert failures == cold.report.failures[before[1] :], position
        found.append(failures)
    assert warm.report.as_json() == cold.report.as_json()
    return found


def good(source: Source, size: int = 3) -> Head:
    jws = sign(source, size=size)
    return Head(jws, source.token(jws))


def test_good_heads_verify_the_same_and_hit(source: Source) -> None:
    heads = [good(source, size) for size in (3, 4, 5, 5)]
    assert same_as_uncached(source, heads) == [[]] * 4
    warm = EvidenceVerifier(log_id=LOG_ID, timeline=timeline(source))
    for head in heads:
        warm.check_head(head.jws, head.token)
    assert warm.report.ok
    paths = warm._validate.__self__  # type: ignore[attr-defined]
    assert isinstance(paths, PathVerdicts)
    assert paths.misses == 2  # the log-signing path and the TSA's, each once
    assert paths.hits == 2 * (len(heads) - 1)


def test_another_heads_token_is_refused_after_its_own_was_accepted(source: Source) -> None:
    first, second = good(source, 3), good(source, 4)
    swapped = Head(second.jws, first.token)
    found = same_as_uncached(source, [first, second, swapped, first])
    assert found[0] == found[1] == found[3] == []
    assert [f.check for f in found[2]] == ["head_timestamp"]
    assert "imprint" in found[2][0].message


def test_a_token_from_outside_the_tsa_validity_is_refused_after_good_ones(
    source: Source,
) -> None:
    """The same TSA certificate, the same path, a genTime after its notAfter or before
    its notBefore: another cell, validated in full and refused."""
    tsa_certificate = source.pki.tsa_signer()[1][0]
    jws = sign(source, size=4)
    late = Head(
        jws, stamp_at(source, jws, tsa_certificate.not_valid_after_utc + dt.timedelta(days=1))
    )
    early = Head(
        jws, stamp_at(source, jws, tsa_certificate.not_valid_before_utc - dt.timedelta(days=1))
    )
    found = same_as_uncached(source, [good(source, 3), late, early, good(source, 5)])
    assert found[0] == found[3] == []
    for failures in (found[1], found[2]):
        assert [f.check for f in failures] == ["head_timestamp"]
        assert failures[0].message.startswith("TSA certificate: ")


def test_a_head_signed_by_another_certificate_is_judged_on_its_own(source: Source) -> None:
    """After good heads: a head signed by another log-signing certificate of the CA
    (valid: accepted), by a signing certificate (not for logs: refused), and by a key the
    x5c leaf does not hold (refused)."""
    ca = source.pki.issuing_ca()
    other_key = generate_private_key()
    other = ca.issue(Profile.LOG_SIGNING, LOG_ID, other_key.public_key())
    sign_key = generate_private_key()
    signing = ca.issue(Profile.SIGN, "UZ/GOV/123", sign_key.public_key())
    heads = [good(source, 3)]
    for chain, key in (((other, ca.certificate), other_key), ((signing, ca.certificate), sign_key)):
        jws = sign(source, size=4, chain=chain, key=key)
        heads.append(Head(jws, source.token(jws)))
    heads.append(good(source, 5))
    found = same_as_uncached(source, heads)
    assert found[0] == found[1] == found[3] == []
    assert [f.check for f in found[2]] == ["head_signature"]


def test_a_head_without_a_token_is_checked_at_its_own_time(source: Source) -> None:
    """Untimestamped heads are checked at their claimed time: one after the log-signing
    certificate's notAfter is refused although the same chain was accepted before (here
    already because no configuration of the evidence was in force then)."""
    leaf = source.log_chain[0]
    expired = Head(sign(source, size=4, time=leaf.not_valid_after_utc + dt.timedelta(days=1)), None)
    found = same_as_uncached(source, [good(source, 3), Head(sign(source, size=3), None), expired])
    assert found[0] == found[1] == []
    assert [f.check for f in found[2]] == ["head_signature"]
