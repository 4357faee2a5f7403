"""What the auditor's verifier remembers between records (gateway.messagelog._verifycache):
one case per rule of that module, each showing that a remembered success is never taken
for a check it was not made for, and that the verdicts, failures and messages are those
of a verifier that remembers nothing (``EvidenceVerifier(remember=False)``).

Records are those a real consumer gateway committed (tests/messagelogharness.py), and
records re-signed here with a signing certificate of the same CA, its own OCSP response
from a real responder, and chosen ``created_at`` times.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
from collections.abc import Sequence

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp as x509_ocsp

from certs.keys import generate_private_key
from certs.ocsp import OCSPResponder
from certs.ocsp_client import DEFAULT_MAX_AGE_S, build_request
from certs.profiles import Profile
from certs.validation import member_of
from gateway.commit import LogRecord, RecordKind, canonical_bytes
from gateway.headers import RequestHeader
from gateway.messagelog._verifycache import (
    CertificateVerdicts,
    InForce,
    Members,
    ProtectedHeaders,
    time_cell,
)
from gateway.messagelog.timeline import ConfigurationTimeline
from gateway.messagelog.verify import EvidenceVerifier, Failure
from gateway.signing import HeaderSigner
from registry.codec import decode_configuration, encode_configuration
from registry.signing import sign_configuration, verify_signed_configuration
from tests.messagelogharness import LOG_ID, Source, exchange_records

_US = dt.timedelta(microseconds=1)
_T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    return exchange_records(tmp_path_factory.mktemp("federation"))


@dataclasses.dataclass(frozen=True)
class Signer:
    """A signing certificate of the federation's CA for the client member of record 0,
    its key, and a real OCSP response about it."""

    source: Source
    signer: HeaderSigner
    leaf: x509.Certificate
    issuing: x509.Certificate
    key: object
    ocsp: bytes
    this_update: dt.datetime

    def record(
        self,
        created_at: dt.datetime,
        *,
        chain: Sequence[x509.Certificate] | None = None,
        message_id: str = "logverify-cache-1",
    ) -> LogRecord:
        """Request record 0, its header made at ``created_at`` and signed again (with
        ``chain`` as x5c and the record's chain when given)."""
        original = self.source.records[0]
        part = original.header_jws.split(b".")[1]
        payload = base64.urlsafe_b64decode(part + b"=" * (-len(part) % 4))
        header = dataclasses.replace(
            RequestHeader.decode(payload), created_at=created_at, message_id=message_id
        )
        signer = self.signer
        if chain is not None:
            signer = HeaderSigner(
                key=self.key,  # type: ignore[arg-type]
                certificate_chain=list(chain),
                ocsp_response=lambda: self.ocsp,
            )
        signed = signer.sign(header)
        return dataclasses.replace(
            original,
            message_id=message_id,
            header_jws=signed.jws.encode("ascii"),
            certificate_chain=signed.certificate_chain,
            ocsp_response=self.ocsp,
        )


@pytest.fixture(scope="module")
def signer(source: Source) -> Signer:
    ca = source.pki.issuing_ca()
    member = member_of(x509.load_der_x509_certificate(source.records[0].certificate_chain[0]))
    key = generate_private_key()
    leaf = ca.issue(Profile.SIGN, member, key.public_key())
    ocsp_key, ocsp_chain = source.pki.ocsp_signer()
    responder = OCSPResponder(
        key=ocsp_key, certificate=ocsp_chain[0], issuers=[ca.certificate], source=ca.records
    )
    ocsp = responder.respond(build_request(leaf, ca.certificate))
    this_update = x509_ocsp.load_der_ocsp_response(ocsp).this_update_utc
    return Signer(
        source=source,
        signer=HeaderSigner(
            key=key, certificate_chain=[leaf, ca.certificate], ocsp_response=lambda: ocsp
        ),
        leaf=leaf,
        issuing=ca.certificate,
        key=key,
        ocsp=ocsp,
        this_update=this_update,
    )


def timeline(source: Source) -> ConfigurationTimeline:
    held = ConfigurationTimeline(source.anchor)
    held.add(source.envelope)
    return held


def verifier(
    source: Source, *, remember: bool = True, max_ocsp_age_s: float = DEFAULT_MAX_AGE_S
) -> EvidenceVerifier:
    return EvidenceVerifier(
        log_id=LOG_ID,
        timeline=timeline(source),
        remember=remember,
        max_ocsp_age_s=max_ocsp_age_s,
    )


def check(verifier: EvidenceVerifier, index: int, record: LogRecord) -> list[Failure]:
    """The failures checking ``record`` as record ``index`` adds (no proof: inclusion is
    not what is tested here)."""
    before = len(verifier.report.failures)
    verifier.check_record(
        index, canonical_bytes(record), proof=None, tree_size=0, root=b"", covered_at=None
    )
    return verifier.report.failures[before:]


def same_as_uncached(
    source: Source, records: Sequence[LogRecord], max_ocsp_age_s: float = DEFAULT_MAX_AGE_S
) -> list[list[Failure]]:
    """Check ``records`` in order with a remembering verifier and with one that remembers
    nothing; the failures of each record must be the same; they are returned."""
    warm = verifier(source, max_ocsp_age_s=max_ocsp_age_s)
    cold = verifier(source, remember=False, max_ocsp_age_s=max_ocsp_age_s)
    found = []
    for index, record in enumerate(records):
        failures = check(warm, index, record)
        assert failures == check(cold, index, record), index
        found.append(failures)
    assert warm.report.as_json() == cold.report.as_json()
    return found


def flip_last_byte(cert: x509.Certificate) -> x509.Certificate:
    der = cert.public_bytes(serialization.Encoding.DER)
    return x509.load_der_x509_certificate(der[:-1] + bytes([der[-1] ^ 0x01]))


# -- rules 1 to 3: certificate verdicts --------------------------------------------------------


def test_the_committed_records_verify_the_same_and_hit(source: Source) -> None:
    records = list(source.records) * 3
    assert same_as_uncached(source, records) == [[]] * len(records)
    warm = verifier(source)
    for index, record in enumerate(records):
        check(warm, index, record)
    assert warm._verdicts is not None
    assert warm._verdicts.hits > 0
    assert warm.report.ok


def test_a_chain_one_byte_away_from_a_remembered_one_is_checked_and_refused(
    signer: Signer,
) -> None:
    at = signer.this_update + dt.timedelta(seconds=5)
    good = signer.record(at)
    forged = signer.record(at, chain=[flip_last_byte(signer.leaf), signer.issuing])
    assert forged.certificate_chain[1:] == good.certificate_chain[1:]
    assert forged.certificate_chain[0] != good.certificate_chain[0]
    assert forged.ocsp_response == good.ocsp_response
    first, second, third = same_as_uncached(signer.source, [good, forged, good])
    assert first == []
    assert third == []
    assert [f.check for f in second] == ["header_certificate"]
    assert "certificate_invalid" in second[0].message


def test_a_remembered_chain_checked_outside_its_cell_is_refused(signer: Signer) -> None:
    """Accepted at thisUpdate + 5 s with a maximum OCSP age of 60 s; the same chain and
    response, signed at + 61 s, is stale; before notBefore, not yet valid."""
    early = signer.record(signer.this_update + dt.timedelta(seconds=5))
    late = signer.record(signer.this_update + dt.timedelta(seconds=61), message_id="late")
    before = signer.record(signer.leaf.not_valid_before_utc - _US, message_id="before")
    found = same_as_uncached(signer.source, [early, late, before, early], max_ocsp_age_s=60)
    assert found[0] == []
    assert found[3] == []
    assert [f.check for f in found[1]] == ["header_certificate"]
    assert "ocsp_stale" in found[1][0].message
    assert [f.check for f in found[2]] == ["header_certificate"]


def test_a_time_on_a_bound_is_its_own_cell(signer: Signer) -> None:
    """Exactly thisUpdate + the maximum age is still fresh, one microsecond later is not:
    a success on the bound is not taken for the instant after it."""
    bound = signer.this_update + dt.timedelta(seconds=60)
    on = signer.record(bound, message_id="on")
    after = signer.record(bound + _US, message_id="after")
    found = same_as_uncached(signer.source, [on, after, on], max_ocsp_age_s=60)
    assert found[0] == []
    assert found[2] == []
    assert "ocsp_stale" in found[1][0].message


def test_the_maximum_age_is_part_of_the_key(signer: Signer) -> None:
    record = signer.record(signer.this_update + dt.timedelta(seconds=30))
    verdicts = CertificateVerdicts()
    store = timeline(signer.source).configurations[0].snapshot.trust_store
    chain, at = record.certificate_chain, signer.this_update + dt.timedelta(seconds=30)
    verdicts.remember(
        chain, signer.ocsp, store, 60.0, at, leaf=signer.leaf, intermediates=[signer.issuing]
    )
    assert verdicts.accepted(chain, signer.ocsp, store, 60.0, at)
    assert not verdicts.accepted(chain, signer.ocsp, store, 10.0, at)
    assert not verdicts.accepted(chain, None, store, 60.0, at)
    assert not verdicts.accepted(chain, signer.ocsp[:-1] + b"\x00", store, 60.0, at)
    assert not verdicts.accepted(chain, signer.ocsp, store, 60.0, at.replace(tzinfo=None))


def test_cells_split_at_every_bound() -> None:
    t = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    bounds = (t, t + dt.timedelta(seconds=10))
    assert time_cell(bounds, t - _US) == (0, False)
    assert time_cell(bounds, t) == (0, True)
    assert time_cell(bounds, t + _US) == (1, False)
    assert time_cell(bounds, t + dt.timedelta(seconds=10)) == (1, True)
    assert time_cell(bounds, t + dt.timedelta(seconds=10) + _US) == (2, False)


# -- rule 4: protected headers -------------------------------------------------------------------


def test_a_remembered_protected_header_does_not_vouch_for_the_signature(
    signer: Signer,
) -> None:
    at = signer.this_update + dt.timedelta(seconds=5)
    good = signer.record(at)
    other = signer.record(at, message_id="another")
    protected, _, signature = good.header_jws.split(b".")
    swapped = dataclasses.replace(
        other,
        header_jws=b".".join((protected, other.header_jws.split(b".")[1], signature)),
    )
    found = same_as_uncached(signer.source, [good, swapped])
    assert found[0] == []
    assert [f.check for f in found[1]] == ["header_signature"]
    assert "does not verify" in found[1][0].message


def test_a_remembered_protected_header_is_not_taken_for_another_typ(signer: Signer) -> None:
    good = signer.record(signer.this_update + dt.timedelta(seconds=5))
    as_response = dataclasses.replace(good, kind=RecordKind.RESPONSE_RECEIVED)
    found = same_as_uncached(signer.source, [good, as_response])
    assert [f.check for f in found[1]] == ["header_signature"]
    assert "typ" in found[1][0].message


def test_protected_headers_are_keyed_by_chain() -> None:
    cache = ProtectedHeaders()
    cache.remember("eyJ", "t", [b"a", b"b"], "key")
    assert cache.key_for("eyJ", "t", [b"a", b"b"]) == "key"
    assert cache.key_for("eyJ", "t", [b"a", b"c"]) is None
    assert cache.key_for("eyJ", "u", [b"a", b"b"]) is None


# -- rule 5: members -----------------------------------------------------------------------------


def test_a_refused_member_is_not_remembered() -> None:
    members = Members()

    def refuse() -> str:
        raise ValueError("no member id")

    with pytest.raises(ValueError, match="no member id"):
        members.member(b"leaf", refuse)
    assert members.member(b"leaf", lambda: "UZ/GOV/A") == "UZ/GOV/A"
    assert members.member(b"leaf", refuse) == "UZ/GOV/A"


# -- rule 6: configurations in force -------------------------------------------------------------


def test_in_force_by_cell_is_the_timeline_answer(source: Source) -> None:
    held = timeline(source)
    snapshot = held.configurations[0].snapshot
    cells = InForce(held)
    for at in (
        snapshot.generated_at - _US,
        snapshot.generated_at,
        snapshot.generated_at + _US,
        snapshot.expires_at - _US,
        snapshot.expires_at,
        snapshot.expires_at + _US,
        snapshot.generated_at - _US,
    ):
        assert cells.at(at) == held.in_force(at), at
    assert cells.at(snapshot.expires_at) == []


def test_in_force_over_many_configurations_is_the_timeline_answer(source: Source) -> None:
    """Overlapping windows of different lengths, serials out of generation order and
    one long-lived configuration: at every bound, and a microsecond either side, the
    answer is in_force's, in its order, from cells seen before or not; a configuration
    added later is taken into account."""
    ca = source.pki.issuing_ca()
    key = generate_private_key()
    cert = ca.issue(Profile.CONFIGURATION_SIGNING, "UZ test registry", key.public_key())
    base = decode_configuration(
        verify_signed_configuration(
            source.envelope, signing_certificates=source.anchor.signing_certificates
        )
    )
    anchor = dataclasses.replace(
        source.anchor, signing_certificates=(cert.public_bytes(serialization.Encoding.DER),)
    )

    def sign(serial: int, start_min: int, minutes: int) -> bytes:
        generated = _T0 + dt.timedelta(minutes=start_min)
        configuration = dataclasses.replace(
            base,
            serial=serial,
            generated_at=generated,
            expires_at=generated + dt.timedelta(minutes=minutes),
        )
        return sign_configuration(encode_configuration(configuration), key=key, certificate=cert)

    held = ConfigurationTimeline(anchor)
    cells = InForce(held)
    windows = [(1, 0, 10), (2, 1, 10), (3, 5, 120), (4, 3, 2), (6, 20, 10), (5, 21, 1), (7, 40, 1)]
    for serial, start, minutes in windows:
        held.add(sign(serial, start, minutes))
    late = sign(8, 50, 5)
    for growth in (False, True):
        if growth:
            held.add(late)
        instants = sorted(
            {
                t + d
                for e in held.configurations
                for t in (e.snapshot.generated_at, e.snapshot.expires_at)
                for d in (-_US, dt.timedelta(0), _US)
            }
        )
        for at in [*instants, *reversed(instants)]:
            assert cells.at(at) == held.in_force(at), at
            assert InForce(held).at(at) == held.in_force(at), at  # no cell seen before
    assert [e.serial for e in cells.at(_T0 + dt.timedelta(minutes=52))] == [8, 3]


def test_in_force_is_recomputed_when_the_timeline_grows(source: Source) -> None:
    held = ConfigurationTimeline(source.anchor)
    cells = InForce(held)
    at = timeline(source).configurations[0].snapshot.generated_at
    assert cells.at(at) == []
    held.add(source.envelope)
    assert [e.serial for e in cells.at(at)] == [1]


# -- rule 7: bounds -------------------------------------------------------------------------------


def test_the_least_recently_used_key_is_dropped(signer: Signer) -> None:
    store = timeline(signer.source).configurations[0].snapshot.trust_store
    at = signer.this_update + dt.timedelta(seconds=1)
    verdicts = CertificateVerdicts(max_entries=1)
    first = signer.record(at).certificate_chain
    second = (first[0], first[1], first[1])
    for chain in (first, second):
        verdicts.remember(
            chain, signer.ocsp, store, 60.0, at, leaf=signer.leaf, intermediates=[signer.issuing]
        )
    assert verdicts.accepted(second, signer.ocsp, store, 60.0, at)
    assert not verdicts.accepted(first, signer.ocsp, store, 60.0, at)


def test_a_verifier_that_remembers_nothing_holds_no_cache(source: Source) -> None:
    cold = verifier(source, remember=False)
    for index, record in enumerate(source.records):
        check(cold, index, record)
    assert cold.report.ok
    assert cold._verdicts is None
    assert cold._protected is None
    assert cold._members is None
