"""The auditor's verifier (gateway.messagelog.verify) on live logs, and the configuration
timeline it judges by (gateway.messagelog.timeline).

The logs hold what a real consumer gateway committed (tests/messagelogharness.py: two
gateway runtimes, real PKI and OCSP), with tree heads signed by a log-signing certificate
and time-stamped by the development TSA. Each check of the verify module's docstring has
a case here that breaks exactly it and expects the failure to name the record or head;
Hypothesis flips arbitrary bytes of stored records, heads and tokens.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import json
import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gateway.messagelog.audit as audit_module
import gateway.messagelog.timeline as timeline_module
import gateway.messagelog.verify as verify_module
from certs.keys import generate_private_key
from certs.profiles import Profile
from certs.tsa import TimeStampAuthority
from gateway.commit import LogRecord, RecordKind, canonical_bytes
from gateway.messagelog import LogCorruptError, MessageLog
from gateway.messagelog.audit import verify_log
from gateway.messagelog.timeline import ConfigurationTimeline, read_archive
from gateway.messagelog.verify import EvidenceVerifier, VerificationReport
from registry.codec import (
    TrustAnchor,
    decode_anchor,
    decode_configuration,
    encode_configuration,
)
from registry.errors import ConfigurationError
from registry.signing import sign_configuration, verify_signed_configuration
from serai.errors import ErrorCode
from serai.merkle import leaf_hash
from serai.treehead import TreeHead, TreeHeadSigner
from tests.messagelogharness import LOG_ID, Built, Source, build_log, exchange_records

# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    return exchange_records(tmp_path_factory.mktemp("federation"))


@pytest.fixture(scope="module")
def pristine(source: Source, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """A log of 10 records with time-stamped heads at sizes 3, 7 and 10 (not modified)."""
    return build_log(source, tmp_path_factory.mktemp("pristine"))


def timeline_for(built: Built, anchor: TrustAnchor | None = None) -> ConfigurationTimeline:
    timeline = ConfigurationTimeline(anchor or decode_anchor(built.anchor.read_bytes()))
    for _, envelope in read_archive(built.dir / "globalconf"):
        timeline.add(envelope)
    return timeline


def live_report(
    built: Built, database: Path | None = None, timeline: ConfigurationTimeline | None = None
) -> VerificationReport:
    async def run() -> VerificationReport:
        log = await MessageLog.open(database or built.database, log_id=LOG_ID)
        try:
            return await verify_log(
                log, timeline=timeline if timeline is not None else timeline_for(built)
            )
        finally:
            await log.close()

    return asyncio.run(run())


def copy_db(built: Built, directory: Path) -> Path:
    assert isinstance(built.database, Path)
    target = directory / "copy.db"
    shutil.copyfile(built.database, target)
    return target


def update(database: Path, sql: str, *params: object) -> None:
    with sqlite3.connect(database) as db:
        db.execute(sql, params)


def subjects(report: VerificationReport) -> set[str]:
    return {f.subject for f in report.failures}


def checks(report: VerificationReport) -> set[tuple[str, str]]:
    return {(f.subject, f.check) for f in report.failures}


def flip(data: bytes, position: int, mask: int) -> bytes:
    return data[:position] + bytes([data[position] ^ mask]) + data[position + 1 :]


# -- the untouched log ----------------------------------------------------------------------


def test_public_surface() -> None:
    assert set(verify_module.__all__) == {
        "DEFAULT_MAX_SKEW_S",
        "EvidenceVerifier",
        "Failure",
        "VerificationReport",
        "VerifiedHead",
    }
    assert set(audit_module.__all__) == {"verify_bundle", "verify_log"}
    assert set(timeline_module.__all__) == {
        "ARCHIVE_DIR_NAME",
        "ArchivedConfiguration",
        "ConfigurationTimeline",
        "add_all",
        "read_archive",
    }


def test_a_real_log_verifies(pristine: Built) -> None:
    report = live_report(pristine)
    assert report.ok, report.failures
    assert report.records == 10
    assert (report.heads, report.timestamped_heads, report.consistency_proofs) == (3, 3, 2)
    assert (report.configurations, report.pruned, report.unpaired_responses) == (1, 0, 0)
    assert report.summary().startswith(f"OK: log {LOG_ID}: 10 records, 3 tree heads (3 time-")


def test_records_past_the_last_time_stamp_are_counted_not_failed(
    source: Source, tmp_path: Path
) -> None:
    built = build_log(source, tmp_path, heads_after=(3, 7), timestamp=(True, False))
    report = live_report(built)
    assert report.ok, report.failures
    assert (report.heads, report.timestamped_heads, report.untimestamped) == (2, 1, 7)


# -- tampering with the stored log ----------------------------------------------------------


#: Which record or head, which byte, which bits: drawn independently and reduced modulo
#: the sizes, so that what is drawn never depends on what was drawn before.
FLIPS = st.tuples(st.integers(0, 2**24), st.integers(0, 2**24), st.integers(1, 255))


def record_flip_case(pristine: Built, choice: tuple[int, int, int]) -> None:
    """Flip one byte of one stored record: verify names that record (or, for the last
    record, the store refuses to open, naming it)."""
    which, where, mask = choice
    index = which % pristine.size
    leaf = canonical_bytes(pristine.records[index])
    position = where % len(leaf)
    with tempfile.TemporaryDirectory() as tmp:
        database = copy_db(pristine, Path(tmp))
        update(
            database,
            "UPDATE records SET leaf = ? WHERE leaf_index = ?",
            flip(leaf, position, mask),
            index,
        )
        if index == pristine.size - 1:
            # The store checks its last record at open, and refuses a log that fails.
            with pytest.raises(LogCorruptError, match=f"record {index}'s bytes do not match"):
                live_report(pristine, database)
            return
        report = live_report(pristine, database)
    assert not report.ok
    assert (f"record {index}", "inclusion") in checks(report)
    assert subjects(report) == {f"record {index}"}


def head_flip_case(pristine: Built, choice: tuple[int, int, int]) -> None:
    """Flip one byte of one stored signed head or time-stamp token: verify names it."""
    which, where, mask = choice
    column = ("signed_head", "timestamp_token")[which % 2]
    head_id = which // 2 % 3 + 1
    with sqlite3.connect(pristine.database) as db:
        value, size = db.execute(
            f"SELECT {column}, tree_size FROM tree_heads WHERE head_id = ?",
            (head_id,),
        ).fetchone()
    position = where % len(value)
    with tempfile.TemporaryDirectory() as tmp:
        database = copy_db(pristine, Path(tmp))
        update(
            database,
            f"UPDATE tree_heads SET {column} = ? WHERE head_id = ?",
            flip(value, position, mask),
            head_id,
        )
        report = live_report(pristine, database)
    assert not report.ok
    assert any(s.startswith(f"tree head {size} (id {head_id})") for s in subjects(report)), (
        report.failures
    )


_FEW = settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
_MANY = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@_FEW
@given(choice=FLIPS)
def test_any_flipped_byte_of_a_stored_record_is_named(
    pristine: Built, choice: tuple[int, int, int]
) -> None:
    record_flip_case(pristine, choice)


@_FEW
@given(choice=FLIPS)
def test_any_flipped_byte_of_a_stored_head_or_token_is_named(
    pristine: Built, choice: tuple[int, int, int]
) -> None:
    head_flip_case(pristine, choice)


@pytest.mark.slow
@pytest.mark.timeout(1200)
@_MANY
@given(choice=FLIPS)
def test_many_flipped_bytes_of_stored_records(
    pristine: Built, choice: tuple[int, int, int]
) -> None:
    record_flip_case(pristine, choice)


@pytest.mark.slow
@pytest.mark.timeout(1200)
@_MANY
@given(choice=FLIPS)
def test_many_flipped_bytes_of_stored_heads_and_tokens(
    pristine: Built, choice: tuple[int, int, int]
) -> None:
    head_flip_case(pristine, choice)


@pytest.mark.parametrize(
    ("name", "sql", "params", "expected"),
    [
        (
            "stored leaf hash",
            "UPDATE records SET leaf_hash = ? WHERE leaf_index = 4",
            (b"\x00" * 32,),
            {("record 4", "stored_hash")},
        ),
        (
            # Record 4's own proof starts from its bytes; the stored node is the sibling
            # in record 5's proof, so that is the record named.
            "a leaf node",
            "UPDATE nodes SET hash = ? WHERE level = 0 AND node_index = 4",
            (b"\x00" * 32,),
            {("record 5", "inclusion")},
        ),
        (
            "the message id column",
            "UPDATE records SET message_id = ? WHERE leaf_index = 2",
            ("someone-else",),
            {("record 2", "stored_columns")},
        ),
        (
            "the client column",
            "UPDATE records SET client = ? WHERE leaf_index = 2",
            ("UZ/GOV/STC/tax",),
            {("record 2", "stored_columns")},
        ),
        (
            "the stored root of a head",
            "UPDATE tree_heads SET root = ? WHERE head_id = 2",
            (b"\x00" * 32,),
            {("tree head 7 (id 2)", "head_format")},
        ),
    ],
)
def test_stored_columns_that_disagree_are_named(
    pristine: Built,
    tmp_path: Path,
    name: str,
    sql: str,
    params: tuple[object, ...],
    expected: set[tuple[str, str]],
) -> None:
    database = copy_db(pristine, tmp_path)
    update(database, sql, *params)
    report = live_report(pristine, database)
    assert expected <= checks(report), (name, report.failures)


def test_a_changed_interior_node_breaks_inclusion_and_consistency(
    pristine: Built, tmp_path: Path
) -> None:
    database = copy_db(pristine, tmp_path)
    update(database, "UPDATE nodes SET hash = ? WHERE level = 1 AND node_index = 0", b"\x01" * 32)
    report = live_report(pristine, database)
    # Node (1, 0) hashes records 0 and 1: it is the sibling in the proofs of 2 and 3.
    assert {("record 2", "inclusion"), ("record 3", "inclusion")} <= checks(report)
    assert ("tree heads 3 -> 7", "consistency") in checks(report)


def test_two_heads_of_one_size_with_different_roots_are_equivocation(
    pristine: Built, source: Source, tmp_path: Path
) -> None:
    """A head the store would refuse (its root is not the log's), written behind its
    back and signed with the real log-signing key: the verifier catches the fork."""
    database = copy_db(pristine, tmp_path)
    signer = TreeHeadSigner(key=source.log_key, certificate_chain=source.log_chain)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    forged = signer.sign(TreeHead(log_id=LOG_ID, tree_size=7, root_hash=b"\x07" * 32, time=now))
    update(
        database,
        "INSERT INTO tree_heads (tree_size, root, signed_head, created_at) VALUES (7, ?, ?, 0)",
        b"\x07" * 32,
        forged.jws,
    )
    report = live_report(pristine, database)
    assert ("tree head 7 (id 4)", "consistency") in checks(report)
    assert "different roots" in str(report.failures)


# -- checks that need other evidence --------------------------------------------------------


def replace_record(source: Source, tmp_path: Path, index: int, **changes: object) -> Built:
    """A log whose record ``index`` is committed with ``changes`` (heads sign it)."""
    built_source = dataclasses.replace(
        source,
        records=tuple(
            dataclasses.replace(r, **changes) if i == index else r  # type: ignore[arg-type]
            for i, r in enumerate(source.records)
        ),
    )
    return build_log(built_source, tmp_path)


def test_record_without_ocsp_response(source: Source, tmp_path: Path) -> None:
    report = live_report(replace_record(source, tmp_path, 2, ocsp_response=b""))
    assert checks(report) == {("record 2", "header_certificate")}
    assert "ocsp_unavailable" in report.failures[0].message


def test_record_with_the_ocsp_response_of_another_certificate(
    source: Source, tmp_path: Path
) -> None:
    other = source.records[1].ocsp_response  # the provider's, in a response record
    report = live_report(replace_record(source, tmp_path, 2, ocsp_response=other))
    assert checks(report) == {("record 2", "header_certificate")}


def test_record_whose_message_id_is_not_the_signed_one(source: Source, tmp_path: Path) -> None:
    report = live_report(replace_record(source, tmp_path, 4, message_id="not-the-signed-id"))
    assert checks(report) == {("record 4", "header_signature")}


def test_record_whose_digest_is_not_the_signed_one(source: Source, tmp_path: Path) -> None:
    report = live_report(replace_record(source, tmp_path, 4, body=None, body_sha256=b"\x05" * 32))
    assert checks(report) == {("record 4", "body_digest")}


def test_record_with_a_chain_other_than_x5c(source: Source, tmp_path: Path) -> None:
    chain = source.records[2].certificate_chain[:1]
    report = live_report(replace_record(source, tmp_path, 2, certificate_chain=chain))
    assert checks(report) == {("record 2", "header_signature")}


def test_request_header_logged_as_a_response(source: Source, tmp_path: Path) -> None:
    report = live_report(
        replace_record(source, tmp_path, 1, header_jws=source.records[0].header_jws)
    )
    assert ("record 1", "header_signature") in checks(report)


def test_response_bound_to_another_request_is_named(source: Source, tmp_path: Path) -> None:
    """Record 3 (response to request 2) with the signed header of response 1: its request
    (record 0) is in the log, but the message id of the record is not the signed one."""
    response = source.records[1]
    report = live_report(
        replace_record(
            source,
            tmp_path,
            3,
            header_jws=response.header_jws,
            certificate_chain=response.certificate_chain,
            ocsp_response=response.ocsp_response,
            body=response.body,
            body_sha256=response.body_sha256,
        )
    )
    assert checks(report) == {("record 3", "header_signature")}


def test_response_without_its_request_is_counted_as_unpaired(
    source: Source, tmp_path: Path, pristine: Built
) -> None:
    async def run() -> VerificationReport:
        log = await MessageLog.open(pristine.database, log_id=LOG_ID)
        try:
            return await verify_log(log, timeline=timeline_for(pristine), start=1, end=4)
        finally:
            await log.close()

    report = asyncio.run(run())
    assert report.ok, report.failures
    assert (report.records, report.unpaired_responses) == (3, 1)


def test_record_signed_after_the_time_stamp_that_covers_it(source: Source, pristine: Built) -> None:
    verifier = EvidenceVerifier(log_id=LOG_ID, timeline=timeline_for(pristine))
    record = source.records[0]
    leaf = canonical_bytes(record)
    verifier.check_record(
        0,
        leaf,
        proof=[],
        tree_size=1,
        root=leaf_hash(leaf),
        covered_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5),
    )
    assert checks(verifier.report) == {("record 0", "record_time")}


def test_admin_change_records_need_no_signature(source: Source, pristine: Built) -> None:
    record = LogRecord.admin_change(change_id="acl-9", description=b"revoke")
    assert record.kind is RecordKind.ADMIN_CHANGE
    verifier = EvidenceVerifier(log_id=LOG_ID, timeline=timeline_for(pristine))
    leaf = canonical_bytes(record)
    verifier.check_record(0, leaf, proof=[], tree_size=1, root=leaf_hash(leaf), covered_at=None)
    assert verifier.report.ok


def test_without_configurations_nothing_can_be_judged(pristine: Built) -> None:
    empty = ConfigurationTimeline(decode_anchor(pristine.anchor.read_bytes()))
    report = live_report(pristine, timeline=empty)
    found = checks(report)
    assert ("tree head 3 (id 1)", "head_signature") in found
    assert ("record 0", "header_certificate") in found
    assert "no global configuration in the evidence was in force" in str(report.failures)


def test_a_malformed_certificate_fails_whatever_the_warning_filters(
    source: Source, pristine: Built
) -> None:
    """A serial number that is not positive only makes ``cryptography`` warn (pytest
    turns warnings into errors here, production does not): the head fails either way."""
    parsed = asn1_x509.Certificate.load(
        source.log_chain[0].public_bytes(serialization.Encoding.DER)
    )
    parsed["tbs_certificate"]["serial_number"] = -parsed.serial_number
    der = parsed.dump(force=True)
    header = {"alg": "ES256", "typ": "serai-sth+jws", "x5c": [base64.b64encode(der).decode()]}
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    payload = TreeHead(log_id=LOG_ID, tree_size=1, root_hash=b"\x01" * 32, time=now).encode()
    jws = b".".join(
        base64.urlsafe_b64encode(part).rstrip(b"=")
        for part in (
            json.dumps(header, sort_keys=True, separators=(",", ":")).encode(),
            payload,
            b"\x00" * 64,
        )
    )
    verifier = EvidenceVerifier(log_id=LOG_ID, timeline=timeline_for(pristine))
    assert verifier.check_head(jws, None) is None
    assert checks(verifier.report) == {("tree head", "head_format")}
    assert "x5c[0] is not a certificate" in verifier.report.failures[0].message


def test_head_signed_for_another_log(pristine: Built, source: Source, tmp_path: Path) -> None:
    ca = source.pki.issuing_ca()
    key = generate_private_key()
    cert = ca.issue(Profile.LOG_SIGNING, "UZ/GOV/OTHER/gw:main", key.public_key())
    other = dataclasses.replace(source, log_key=key, log_chain=(cert, ca.certificate))
    report = live_report(build_log(other, tmp_path))
    assert {s for s, c in checks(report)} == {
        "tree head 3 (id 1)",
        "tree head 7 (id 2)",
        "tree head 10 (id 3)",
    }
    assert {c for s, c in checks(report)} == {"head_signature"}


def test_head_time_stamped_by_an_unapproved_tsa(source: Source, tmp_path: Path) -> None:
    ca = source.pki.issuing_ca()
    key = generate_private_key()
    cert = ca.issue(Profile.TSA, "Unapproved TSA", key.public_key())
    rogue = dataclasses.replace(
        source, tsa=TimeStampAuthority(key=key, chain=[cert, ca.certificate])
    )
    report = live_report(build_log(rogue, tmp_path))
    assert {c for s, c in checks(report)} == {"head_timestamp"}
    assert "a TSA they do not approve" in report.failures[0].message


# -- the configuration timeline -------------------------------------------------------------


@dataclasses.dataclass
class Registry:
    anchor: TrustAnchor
    sign: Callable[..., bytes]


@pytest.fixture(scope="module")
def registry(source: Source) -> Registry:
    """A configuration signer of our own, over the federation's configuration."""
    ca = source.pki.issuing_ca()
    key = generate_private_key()
    cert = ca.issue(Profile.CONFIGURATION_SIGNING, "UZ test registry", key.public_key())
    der = cert.public_bytes(serialization.Encoding.DER)
    base = decode_configuration(
        verify_signed_configuration(
            source.envelope, signing_certificates=source.anchor.signing_certificates
        )
    )

    def sign(**changes: object) -> bytes:
        federation_changes = {k: changes.pop(k) for k in list(changes) if k == "instance"}
        fed = dataclasses.replace(base.federation, **federation_changes)  # type: ignore[arg-type]
        configuration = dataclasses.replace(base, federation=fed, **changes)  # type: ignore[arg-type]
        return sign_configuration(encode_configuration(configuration), key=key, certificate=cert)

    anchor = dataclasses.replace(source.anchor, signing_certificates=(der,))
    return Registry(anchor=anchor, sign=sign)


T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def test_timeline_in_force_windows(registry: Registry) -> None:
    timeline = ConfigurationTimeline(registry.anchor)
    minute = dt.timedelta(minutes=1)
    for serial in (1, 2, 3):
        generated = T0 + serial * 5 * minute
        timeline.add(
            registry.sign(serial=serial, generated_at=generated, expires_at=generated + 10 * minute)
        )
    assert len(timeline) == 3
    assert [e.serial for e in timeline.in_force(T0)] == []
    assert [e.serial for e in timeline.in_force(T0 + 5 * minute)] == [1]
    assert [e.serial for e in timeline.in_force(T0 + 12 * minute)] == [2, 1]
    assert [e.serial for e in timeline.in_force(T0 + 15 * minute)] == [3, 2]
    assert [e.serial for e in timeline.in_force(T0 + 25 * minute)] == []
    assert [e.serial for e in timeline.overlapping(T0, T0 + 6 * minute)] == [1]


def test_timeline_holds_one_copy_per_serial_and_refuses_equivocation(registry: Registry) -> None:
    timeline = ConfigurationTimeline(registry.anchor)
    one = registry.sign(serial=5, generated_at=T0, expires_at=T0 + dt.timedelta(minutes=10))
    assert timeline.add(one) is timeline.add(one)
    other = registry.sign(serial=5, generated_at=T0, expires_at=T0 + dt.timedelta(minutes=9))
    with pytest.raises(ConfigurationError) as caught:
        timeline.add(other)
    assert caught.value.code is ErrorCode.GLOBALCONF_EQUIVOCATION


def test_timeline_refuses_another_instance_and_unknown_signers(
    registry: Registry, source: Source
) -> None:
    timeline = ConfigurationTimeline(dataclasses.replace(registry.anchor, instance="KG"))
    with pytest.raises(ConfigurationError) as caught:
        timeline.add(registry.sign(serial=2))
    assert caught.value.code is ErrorCode.GLOBALCONF_WRONG_INSTANCE
    with pytest.raises(ConfigurationError) as caught:
        ConfigurationTimeline(registry.anchor).add(source.envelope)
    assert caught.value.code is ErrorCode.GLOBALCONF_UNKNOWN_SIGNER


def test_read_archive_takes_archive_files_then_the_cache(tmp_path: Path) -> None:
    (tmp_path / "archive").mkdir()
    (tmp_path / "archive" / "2.bin").write_bytes(b"two")
    (tmp_path / "archive" / "1.bin").write_bytes(b"one")
    (tmp_path / "archive" / "notes.txt").write_bytes(b"ignored")
    (tmp_path / "globalconf.signed").write_bytes(b"cache")
    assert [data for _, data in read_archive(tmp_path)] == [b"one", b"two", b"cache"]
    assert read_archive(tmp_path / "absent") == []
