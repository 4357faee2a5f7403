"""Evidence bundles (gateway.messagelog.bundle) and their offline verification
(gateway.messagelog.verify.verify_bundle), with the trust anchor as the only input
trusted.

Bundles are exported from a log of real records (tests/messagelogharness.py). Every kind
of file is damaged in turn, with and without the manifest rewritten to match, and the
verifier must name what was damaged; truncated, reordered, padded and shuffled bundles
fail. Interoperability: each time-stamp token verifies with ``openssl ts -verify``, and
each signed header and tree head with PyJWT, a JOSE library Serai's signers do not use
(gateway/signing.py and serai/treehead.py sign with ``cryptography`` directly).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import json
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gateway.messagelog.bundle as bundle_module
from gateway.commit import RecordKind, canonical_bytes, decode_canonical
from gateway.headers import RequestHeader, ResponseHeader
from gateway.messagelog import MessageLog
from gateway.messagelog.audit import verify_bundle
from gateway.messagelog.bundle import (
    MANIFEST_NAME,
    BundleError,
    ExportResult,
    Manifest,
    covering_size,
    expected_paths,
    export_bundle,
)
from gateway.messagelog.timeline import ConfigurationTimeline
from gateway.messagelog.verify import VerificationReport
from serai.errors import ErrorCode
from tests.messagelogharness import LOG_ID, Built, Source, build_log, exchange_records

# -- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    return exchange_records(tmp_path_factory.mktemp("federation"))


@pytest.fixture(scope="module")
def built(source: Source, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """10 records, time-stamped heads at sizes 3, 7 and 10."""
    return build_log(source, tmp_path_factory.mktemp("log"))


def export(
    built: Built,
    source: Source,
    out: Path,
    first: int = 0,
    end: int | None = None,
    head_interval_s: float = 0.0,
) -> ExportResult:
    async def run() -> ExportResult:
        timeline = ConfigurationTimeline(source.anchor)
        timeline.add(source.envelope)
        log = await MessageLog.open(built.database, log_id=LOG_ID)
        try:
            return await export_bundle(
                log,
                timeline=timeline,
                out=out,
                first_index=first,
                end_index=built.size if end is None else end,
                head_interval_s=head_interval_s,
            )
        finally:
            await log.close()

    return asyncio.run(run())


@pytest.fixture(scope="module")
def bundle(built: Built, source: Source, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole log as a bundle (never modified)."""
    return export(built, source, tmp_path_factory.mktemp("bundle") / "evidence.zip").path


def entries(path: Path) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(path) as archive:
        return [(info.filename, archive.read(info)) for info in archive.infolist()]


def write(path: Path, files: list[tuple[str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files:
            archive.writestr(name, data)
    return path


def relist(files: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """The same files with the manifest rewritten to list them, in their order."""
    body = [(n, d) for n, d in files if n != MANIFEST_NAME]
    manifest = Manifest.decode(dict(files)[MANIFEST_NAME])
    listed = tuple(
        bundle_module.ManifestFile(n, len(d), hashlib.sha256(d).hexdigest()) for n, d in body
    )
    return [*body, (MANIFEST_NAME, dataclasses.replace(manifest, files=listed).encode())]


BASE64URL = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def flip(data: bytes, position: int, mask: int) -> bytes:
    return data[:position] + bytes([data[position] ^ mask]) + data[position + 1 :]


def checks(report: VerificationReport) -> set[tuple[str, str]]:
    return {(f.subject, f.check) for f in report.failures}


def subjects(report: VerificationReport) -> set[str]:
    return {f.subject for f in report.failures}


# -- the layout -----------------------------------------------------------------------------


def test_public_surface() -> None:
    assert set(bundle_module.__all__) == {
        "BUNDLE_FORMAT",
        "BUNDLE_VERSION",
        "MANIFEST_NAME",
        "BundleError",
        "BundleReader",
        "DEFAULT_HEAD_INTERVAL_S",
        "ExportResult",
        "Manifest",
        "ManifestFile",
        "covering_size",
        "derived_certificates",
        "expected_paths",
        "export_bundle",
    }


def test_export_writes_the_documented_layout(bundle: Path, built: Built) -> None:
    files = entries(bundle)
    assert files[-1][0] == MANIFEST_NAME
    manifest = json.loads(files[-1][1])
    assert manifest["format"] == "serai-evidence-bundle"
    assert manifest["version"] == 1
    assert manifest["log_id"] == LOG_ID
    assert manifest["records"] == {"first_index": 0, "end_index": 10}
    assert manifest["tree_heads"] == [3, 7, 10]
    assert manifest["configurations"] == [1]
    order = list(
        expected_paths(first_index=0, end_index=10, tree_heads=[3, 7, 10], configurations=[1])
    )
    assert [name for name, _ in files[:-1]] == order
    assert order[:4] == [
        "configurations/1.bin",
        "certificates/ca-roots.pem",
        "certificates/ca-intermediates.pem",
        "certificates/tsa.pem",
    ]
    assert [f["path"] for f in manifest["files"]] == order
    for listed, (_, data) in zip(manifest["files"], files, strict=False):
        assert listed["size"] == len(data)
        assert listed["sha256"] == hashlib.sha256(data).hexdigest()
    by_name = dict(files)
    for index, record in enumerate(built.records):
        assert by_name[f"records/{index}.rec"] == canonical_bytes(record)
        proof = json.loads(by_name[f"inclusion/{index}.json"])
        assert proof["index"] == index
        assert proof["tree_size"] == covering_size(index, [3, 7, 10])


def test_a_bundle_verifies_offline_with_only_the_anchor(bundle: Path, source: Source) -> None:
    report = verify_bundle(bundle, anchor=source.anchor)
    assert report.ok, report.failures
    assert report.records == 10
    assert (report.heads, report.timestamped_heads, report.consistency_proofs) == (3, 3, 2)
    assert report.configurations == 1


@pytest.mark.parametrize(
    ("first", "end", "heads", "unpaired"),
    [(4, 7, [7], 0), (1, 4, [3, 7], 1), (8, 10, [10], 0), (0, 3, [3], 0)],
)
def test_a_range_takes_the_heads_inside_it_and_the_first_that_covers_it(
    built: Built,
    source: Source,
    tmp_path: Path,
    first: int,
    end: int,
    heads: list[int],
    unpaired: int,
) -> None:
    result = export(built, source, tmp_path / "part.zip", first, end)
    assert list(result.tree_heads) == heads
    report = verify_bundle(result.path, anchor=source.anchor)
    assert report.ok, report.failures
    assert (report.records, report.unpaired_responses) == (end - first, unpaired)


@pytest.mark.parametrize(
    ("interval_s", "first", "heads"),
    [(0.0, 0, [3, 7, 10]), (60.0, 0, [3, 10]), (60.0, 3, [7, 10]), (3600.0, 8, [10])],
)
def test_heads_are_thinned_to_one_per_interval(
    built: Built, source: Source, tmp_path: Path, interval_s: float, first: int, heads: list[int]
) -> None:
    """The test log's heads are milliseconds apart: one per minute keeps the first inside
    the range and the one that covers its end."""
    result = export(built, source, tmp_path / "b.zip", first, head_interval_s=interval_s)
    assert list(result.tree_heads) == heads
    report = verify_bundle(result.path, anchor=source.anchor)
    assert report.ok, report.failures
    assert report.consistency_proofs == len(heads) - 1


def test_export_refuses_a_range_no_time_stamp_covers(source: Source, tmp_path: Path) -> None:
    log = build_log(source, tmp_path, heads_after=(3, 7), timestamp=(True, False))
    with pytest.raises(BundleError) as caught:
        export(log, source, tmp_path / "b.zip", 0, 5)
    assert caught.value.code is ErrorCode.FAILED_PRECONDITION
    assert "no time-stamped tree head covers record 4" in caught.value.message
    assert not (tmp_path / "b.zip").exists()
    assert export(log, source, tmp_path / "ok.zip", 0, 3).tree_heads == (3,)


def test_export_refuses_a_range_beyond_the_log(
    built: Built, source: Source, tmp_path: Path
) -> None:
    with pytest.raises(BundleError, match="not a range of this log"):
        export(built, source, tmp_path / "b.zip", 5, 11)


# -- damage ---------------------------------------------------------------------------------


def expected_subjects(path: str) -> set[str]:
    """Who a damaged file may be blamed on."""
    stem = path.rsplit("/", 1)[-1].split(".", maxsplit=1)[0]
    if path.startswith(("records/", "inclusion/")):
        return {f"record {stem}"}
    if path.startswith("tree-heads/"):
        return {f"tree head {stem}"}
    if path.startswith("consistency/"):
        old, new = stem.split("-")
        return {path, f"tree heads {old} -> {new}"}
    return {path}


#: Which file, which byte, which bits: drawn independently and reduced modulo the sizes,
#: so that what is drawn never depends on what was drawn before.
FLIPS = st.tuples(st.integers(0, 2**24), st.integers(0, 2**24), st.integers(1, 255))


def damaged_case(bundle: Path, source: Source, choice: tuple[int, int, int]) -> None:
    which, where, mask = choice
    files = entries(bundle)
    position_in_zip = which % (len(files) - 1)  # any file but the manifest
    name, content = files[position_in_zip]
    files[position_in_zip] = (name, flip(content, where % len(content), mask))
    with tempfile.TemporaryDirectory() as tmp:
        report = verify_bundle(write(Path(tmp) / "b.zip", relist(files)), anchor=source.anchor)
    assert not report.ok
    assert subjects(report) & expected_subjects(name), (name, report.failures)


_FEW = settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@_FEW
@given(choice=FLIPS)
def test_any_changed_byte_of_any_file_is_named(
    bundle: Path, source: Source, choice: tuple[int, int, int]
) -> None:
    """The manifest is rewritten to match, so only the evidence itself can tell."""
    damaged_case(bundle, source, choice)


@pytest.mark.slow
@pytest.mark.timeout(1200)
@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(choice=FLIPS)
def test_many_changed_bytes_of_any_file_are_named(
    bundle: Path, source: Source, choice: tuple[int, int, int]
) -> None:
    damaged_case(bundle, source, choice)


@pytest.mark.parametrize(
    ("name", "subject", "check"),
    [
        ("records/4.rec", "record 4", "inclusion"),
        ("inclusion/4.json", "record 4", "inclusion"),
        ("tree-heads/7.jws", "tree head 7", "head_signature"),
        ("tree-heads/7.tsr", "tree head 7", "head_timestamp"),
        ("consistency/3-7.json", "tree heads 3 -> 7", "consistency"),
        ("configurations/1.bin", "configurations/1.bin", "configuration"),
        ("certificates/tsa.pem", "certificates/tsa.pem", "bundle_file"),
    ],
)
def test_each_kind_of_file_is_checked(
    bundle: Path, source: Source, tmp_path: Path, name: str, subject: str, check: str
) -> None:
    files = entries(bundle)
    at = [n for n, _ in files].index(name)
    content = files[at][1]
    if name.endswith(".jws"):  # another signature, still base64url (else: head_format)
        files[at] = (name, next_base64url(content, len(content) - 10))
    else:
        files[at] = (name, flip(content, len(content) - 10, 0x01))
    report = verify_bundle(write(tmp_path / "b.zip", relist(files)), anchor=source.anchor)
    assert (subject, check) in checks(report), report.failures


def next_base64url(data: bytes, position: int) -> bytes:
    """``data`` with the base64url character at ``position`` replaced by the next one."""
    index = BASE64URL.index(data[position])
    return (
        data[:position] + BASE64URL[(index + 1) % 64 : (index + 1) % 64 + 1] + data[position + 1 :]
    )


def test_a_tree_head_whose_signature_is_not_base64url_is_malformed(
    bundle: Path, source: Source, tmp_path: Path
) -> None:
    files = entries(bundle)
    at = [n for n, _ in files].index("tree-heads/7.jws")
    content = files[at][1]
    position = len(content) - 10
    assert content[position] in BASE64URL
    files[at] = ("tree-heads/7.jws", content[:position] + b"@" + content[position + 1 :])
    report = verify_bundle(write(tmp_path / "b.zip", relist(files)), anchor=source.anchor)
    assert ("tree head 7", "head_format") in checks(report), report.failures


def test_a_changed_file_under_the_old_manifest_fails_its_digest(
    bundle: Path, source: Source, tmp_path: Path
) -> None:
    files = entries(bundle)
    at = [n for n, _ in files].index("records/5.rec")
    files[at] = ("records/5.rec", flip(files[at][1], 100, 0x40))
    report = verify_bundle(write(tmp_path / "b.zip", files), anchor=source.anchor)
    assert ("records/5.rec", "bundle_file") in checks(report)
    assert "differs from its SHA-256 in the manifest" in str(report.failures)


def test_swapped_records_are_named(bundle: Path, source: Source, tmp_path: Path) -> None:
    files = entries(bundle)
    names = [n for n, _ in files]
    four, six = names.index("records/4.rec"), names.index("records/6.rec")
    files[four], files[six] = ("records/4.rec", files[six][1]), ("records/6.rec", files[four][1])
    report = verify_bundle(write(tmp_path / "b.zip", relist(files)), anchor=source.anchor)
    assert {("record 4", "inclusion"), ("record 6", "inclusion")} <= checks(report)


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.99])
def test_a_truncated_bundle_fails(bundle: Path, source: Source, tmp_path: Path, cut: float) -> None:
    data = bundle.read_bytes()
    (tmp_path / "b.zip").write_bytes(data[: int(len(data) * cut)])
    report = verify_bundle(tmp_path / "b.zip", anchor=source.anchor)
    assert checks(report) == {("bundle", "bundle_structure")}
    assert "not a readable ZIP file" in report.failures[0].message


def test_a_bundle_missing_a_record_fails(bundle: Path, source: Source, tmp_path: Path) -> None:
    files = [f for f in entries(bundle) if f[0] != "records/5.rec"]
    report = verify_bundle(write(tmp_path / "b.zip", relist(files)), anchor=source.anchor)
    assert ("bundle", "bundle_structure") in checks(report)
    assert "lacks records/5.rec" in str(report.failures)
    assert ("records/5.rec", "bundle_file") in checks(report)


def test_a_reordered_bundle_fails(bundle: Path, source: Source, tmp_path: Path) -> None:
    files = entries(bundle)
    files[10], files[12] = files[12], files[10]
    report = verify_bundle(write(tmp_path / "b.zip", files), anchor=source.anchor)
    assert "the ZIP's entries are out of order at position 10" in str(report.failures)
    relisted = verify_bundle(write(tmp_path / "c.zip", relist(files)), anchor=source.anchor)
    assert "the manifest's file list are out of order at position 10" in str(relisted.failures)


def test_an_extra_file_fails(bundle: Path, source: Source, tmp_path: Path) -> None:
    files = entries(bundle)
    files.insert(-1, ("records/10.rec", b"smuggled"))
    report = verify_bundle(write(tmp_path / "b.zip", relist(files)), anchor=source.anchor)
    assert "has unexpected records/10.rec" in str(report.failures)


def test_the_manifest_must_come_last(bundle: Path, source: Source, tmp_path: Path) -> None:
    files = entries(bundle)
    files.insert(0, files.pop())
    report = verify_bundle(write(tmp_path / "b.zip", files), anchor=source.anchor)
    assert checks(report) == {("bundle", "bundle_structure")}
    assert "the last entry" in report.failures[0].message


def test_another_registry_anchor_trusts_nothing_in_the_bundle(bundle: Path, source: Source) -> None:
    stranger = dataclasses.replace(
        source.anchor, signing_certificates=(source.log_chain[0].public_bytes(Encoding.DER),)
    )
    report = verify_bundle(bundle, anchor=stranger)
    assert ("configurations/1.bin", "configuration") in checks(report)
    assert "globalconf_unknown_signer" in str(report.failures)
    assert ("record 0", "header_certificate") in checks(report)


# -- decoders at the trust boundary -----------------------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 2**64) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)


def test_the_manifest_version_is_an_integer(bundle: Path) -> None:
    manifest = json.loads(entries(bundle)[-1][1])
    manifest["version"] = True  # == 1 in Python, not in the format
    with pytest.raises(BundleError, match="not a serai-evidence-bundle of version 1"):
        Manifest.decode(json.dumps(manifest).encode())


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300) | _JSON.map(lambda v: json.dumps(v).encode()))
def test_manifest_decoding_refuses_with_bundle_error_only(data: bytes) -> None:
    with contextlib.suppress(BundleError):
        Manifest.decode(data)


@settings(max_examples=100, deadline=None)
@given(
    key=st.sampled_from(["format", "version", "log_id", "records", "tree_heads", "files"]),
    value=_JSON,
)
def test_a_manifest_with_any_value_changed_is_refused_or_checked(
    bundle: Path, source: Source, key: str, value: object
) -> None:
    files = entries(bundle)
    manifest = json.loads(files[-1][1])
    manifest[key] = value
    files[-1] = (MANIFEST_NAME, json.dumps(manifest).encode())
    with tempfile.TemporaryDirectory() as tmp:
        report = verify_bundle(write(Path(tmp) / "b.zip", files), anchor=source.anchor)
    assert not report.ok or manifest == json.loads(entries(bundle)[-1][1])


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=200) | _JSON.map(lambda v: json.dumps(v).encode()))
def test_proof_files_are_refused_with_bundle_error_only(data: bytes) -> None:
    with contextlib.suppress(BundleError):
        bundle_module.read_proof(data, "inclusion/1.json", index=1, tree_size=2)


@settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=2000))
def test_any_bytes_as_a_bundle_fail_cleanly(source: Source, data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "b.zip").write_bytes(data)
        report = verify_bundle(Path(tmp) / "b.zip", anchor=source.anchor)
    assert checks(report) == {("bundle", "bundle_structure")}


# -- interoperability -----------------------------------------------------------------------


@pytest.mark.interop
def test_openssl_verifies_every_time_stamp_token(bundle: Path, tmp_path: Path) -> None:
    exe = shutil.which("openssl")
    assert exe is not None, "the openssl command is needed for the interop tests"
    with zipfile.ZipFile(bundle) as archive:
        archive.extractall(tmp_path)
    for size in (3, 7, 10):
        args = [exe, "ts", "-verify", "-data", f"tree-heads/{size}.jws", "-in"]
        args += [f"tree-heads/{size}.tsr", "-token_in", "-CAfile", "certificates/ca-roots.pem"]
        args += ["-untrusted", "certificates/tsa.pem"]
        result = subprocess.run(
            args, check=False, capture_output=True, text=True, timeout=60, cwd=tmp_path
        )
        assert "Verification: OK" in result.stdout + result.stderr, result.stderr
    other = [exe, "ts", "-verify", "-data", "tree-heads/3.jws", "-in", "tree-heads/7.tsr"]
    other += ["-token_in", "-CAfile", "certificates/ca-roots.pem"]
    result = subprocess.run(
        [*other, "-untrusted", "certificates/tsa.pem"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert "Verification: OK" not in result.stdout + result.stderr


def ec_key(cert: x509.Certificate) -> ec.EllipticCurvePublicKey:
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)  # the harness issues P-256 keys
    return key


@pytest.mark.interop
def test_pyjwt_verifies_every_signed_header_and_tree_head(bundle: Path) -> None:
    """PyJWT's PyJWS, with the key of the x5c leaf: not the code that signed them."""
    files = dict(entries(bundle))
    kinds = set()
    for index in range(10):
        record = decode_canonical(files[f"records/{index}.rec"])
        if record.kind is RecordKind.ADMIN_CHANGE:
            continue
        token = record.header_jws.decode("ascii")
        header = jwt.get_unverified_header(token)
        leaf = x509.load_der_x509_certificate(base64.b64decode(header["x5c"][0]))
        assert leaf.public_bytes(Encoding.DER) == record.certificate_chain[0]
        decoded = jwt.PyJWS().decode_complete(token, key=ec_key(leaf), algorithms=[header["alg"]])
        payload = decoded["payload"]
        kind = RequestHeader if record.kind.is_request else ResponseHeader
        assert kind.decode(payload).message_id == record.message_id
        kinds.add((record.kind, header["typ"]))
        tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
        with pytest.raises(jwt.InvalidSignatureError):
            jwt.PyJWS().decode_complete(tampered, key=ec_key(leaf), algorithms=[header["alg"]])
    assert kinds == {
        (RecordKind.REQUEST_SENT, "serai-request+jws"),
        (RecordKind.RESPONSE_RECEIVED, "serai-response+jws"),
    }
    for size in (3, 7, 10):
        token = files[f"tree-heads/{size}.jws"].decode("ascii")
        header = jwt.get_unverified_header(token)
        leaf = x509.load_der_x509_certificate(base64.b64decode(header["x5c"][0]))
        decoded = jwt.PyJWS().decode_complete(token, key=ec_key(leaf), algorithms=[header["alg"]])
        assert json.loads(decoded["payload"])["tree_size"] == size
