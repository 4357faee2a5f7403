"""Fuzzing evidence bundles end to end (issue 9, point 4): a real bundle exported from a
message log in PostgreSQL, one of its files replaced by hostile content of its own kind
(the manifest rewritten to list it, so only the evidence checks can tell), must be
judged by :func:`gateway.messagelog.audit.verify_bundle` with a report naming failures,
never an exception; and ``serai log verify`` (a real process) must report such a bundle
with exit status 1 and no traceback.

What each kind of file is replaced with:

- ``tree-heads/*.jws``: a compact JWS whose protected header or payload is hostile JSON
  (nesting past the recursion limit, 4,301-digit integers, NaN, duplicate names...), or
  the valid JWS mutated;
- ``tree-heads/*.tsr``: random DER (deep and indefinite lengths) or the token mutated;
- ``consistency/*.json``, ``inclusion/*.json``: hostile JSON;
- ``records/*.rec``: random protobuf-like wire records or the record mutated;
- ``configurations/*.bin``: random protobuf wire records or the envelope mutated;
- ``certificates/*.pem``: random text.

The documented outcome (``gateway.messagelog.audit``): a :class:`VerificationReport`
that is not ``ok``. The default run tries a modest number of files; the ``slow`` one
thousands.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.messagelog import MessageLog
from gateway.messagelog.audit import verify_bundle
from gateway.messagelog.bundle import MANIFEST_NAME, Manifest, ManifestFile, export_bundle
from gateway.messagelog.timeline import ConfigurationTimeline
from tests import fuzzstrategies as fz
from tests.messagelogharness import LOG_ID, Built, Source, build_log, exchange_records, pg_url
from tests.pgutil import fresh_database

_HEALTH = [
    HealthCheck.function_scoped_fixture,
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
    HealthCheck.large_base_example,
]


@dataclasses.dataclass(frozen=True, repr=False)
class Exported:
    source: Source
    built: Built
    bundle: Path
    files: tuple[tuple[str, bytes], ...]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exported]:
    source = exchange_records(tmp_path_factory.mktemp("federation"))
    with fresh_database() as dsn:
        built = build_log(source, tmp_path_factory.mktemp("log"), dsn=pg_url(dsn))
        out = tmp_path_factory.mktemp("bundle") / "evidence.zip"

        async def export() -> Path:
            timeline = ConfigurationTimeline(source.anchor)
            timeline.add(source.envelope)
            log = await MessageLog.open(built.database, log_id=LOG_ID)
            try:
                result = await export_bundle(
                    log,
                    timeline=timeline,
                    out=out,
                    first_index=0,
                    end_index=built.size,
                    head_interval_s=0.0,
                )
            finally:
                await log.close()
            return result.path

        path = asyncio.run(export())
        with zipfile.ZipFile(path) as archive:
            files = tuple((info.filename, archive.read(info)) for info in archive.infolist())
        yield Exported(source=source, built=built, bundle=path, files=files)


def _write(path: Path, files: list[tuple[str, bytes]]) -> Path:
    """``files`` as a bundle, the manifest rewritten to list them (sizes and digests)."""
    body = [(n, d) for n, d in files if n != MANIFEST_NAME]
    manifest = Manifest.decode(dict(files)[MANIFEST_NAME])
    listed = tuple(ManifestFile(n, len(d), hashlib.sha256(d).hexdigest()) for n, d in body)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in [
            *body,
            (MANIFEST_NAME, dataclasses.replace(manifest, files=listed).encode()),
        ]:
            archive.writestr(name, data)
    return path


@dataclasses.dataclass(frozen=True)
class Hostile:
    """What to put in place of a file, by the file's kind; the test picks by path."""

    jws: str
    token: bytes
    json: bytes
    record: bytes
    pem: str
    mutation: fz.Mutation
    mutate: bool


_HOSTILE = st.builds(
    Hostile,
    jws=fz.compact_jws(fz.hostile_json(), fz.hostile_json()),
    token=fz.der_values() | st.binary(max_size=200),
    json=fz.hostile_json(),
    record=fz.protobuf_wire() | st.binary(max_size=300),
    pem=st.text(max_size=200),
    mutation=fz.mutations(),
    mutate=st.booleans(),
)


def _replacement(name: str, data: bytes, hostile: Hostile) -> bytes:
    if hostile.mutate and not name.endswith(".json"):
        return hostile.mutation(data)
    if name.endswith(".jws"):
        return hostile.jws.encode("ascii")
    if name.endswith(".tsr"):
        return hostile.token
    if name.endswith(".json"):
        return hostile.json
    if name.endswith(".pem"):
        return hostile.pem.encode("utf-8")
    return hostile.record  # records/*.rec and configurations/*.bin: protobuf-like


def _check(exported: Exported, which: int, hostile: Hostile) -> None:
    files = list(exported.files)
    position = which % (len(files) - 1)  # any file but the manifest
    name, data = files[position]
    replacement = _replacement(name, data, hostile)
    if replacement == data:
        return
    files[position] = (name, replacement)
    with tempfile.TemporaryDirectory() as tmp:
        report = verify_bundle(_write(Path(tmp) / "b.zip", files), anchor=exported.source.anchor)
    assert not report.ok, (name, "a replaced file went unnoticed")
    assert report.failures


@pytest.mark.parametrize(
    "examples",
    [80, pytest.param(fz.deep_examples(700), marks=[pytest.mark.slow, pytest.mark.timeout(3600)])],
)
def test_any_file_replaced_by_hostile_content_is_reported(
    exported: Exported, examples: int
) -> None:
    assert verify_bundle(exported.bundle, anchor=exported.source.anchor).ok

    @settings(max_examples=examples, deadline=None, suppress_health_check=_HEALTH)
    @given(which=st.integers(0, 2**16), hostile=_HOSTILE)
    def fire(which: int, hostile: Hostile) -> None:
        _check(exported, which, hostile)

    fire()


@pytest.mark.parametrize("kind", ["protected", "payload"])
def test_serai_log_verify_reports_a_deeply_nested_tree_head(
    exported: Exported, tmp_path: Path, kind: str
) -> None:
    """A real ``serai log verify`` process: exit 1 and a report, no traceback (before
    the fix in serai/treehead the RecursionError escaped)."""
    deep = b"[" * 6000 + b"]" * 6000
    files = list(exported.files)
    position = next(i for i, (n, _) in enumerate(files) if n.endswith(".jws"))
    name, valid = files[position]
    protected, payload, signature = valid.split(b".")
    if kind == "protected":
        protected = fz.b64url(deep).encode()
    else:
        payload = fz.b64url(deep).encode()
    files[position] = (name, b".".join((protected, payload, signature)))
    bundle = _write(tmp_path / "deep.zip", files)
    anchor = tmp_path / "anchor.bin"
    anchor.write_bytes(exported.built.anchor.read_bytes())
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "serai.cli",
            "log",
            "verify",
            "--bundle",
            str(bundle),
            "--anchor",
            str(anchor),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert done.returncode == 1, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])
    assert "Traceback" not in done.stderr
    assert name.removeprefix("tree-heads/").removesuffix(".jws") in done.stdout + done.stderr
