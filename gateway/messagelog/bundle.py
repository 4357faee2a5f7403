"""Evidence bundles: a self-contained, offline-verifiable extract of a message log
(DESIGN §6, Export).

A bundle is a ZIP file. Every file in it is listed, in order, with its size and SHA-256,
by ``manifest.json``, the last entry. The files, in this order:

``configurations/<serial>.bin``
    The global configuration envelopes in force over the range, exactly as the registry
    signed them (the auditor checks them against the trust anchor), by serial.
``certificates/ca-roots.pem``, ``certificates/ca-intermediates.pem``, ``certificates/tsa.pem``
    For tools such as ``openssl ts -verify``: the approved roots, the approved
    intermediates and the approved TSAs' certificates of those configurations. They add
    no trust (``serai log verify`` checks that they are what the configurations list).
``tree-heads/<size>.jws``, ``tree-heads/<size>.tsr``
    Each time-stamped tree head in the bundle, smallest first: the signed tree head (the
    compact JWS, ASCII) and its RFC 3161 token (DER), whose imprint is the SHA-256 of the
    ``.jws`` file's bytes. The heads are time-stamped heads of the log whose sizes fall
    inside the range (at most one per minute of time-stamps by default), and the first
    one that covers its end.
``consistency/<old>-<new>.json``
    A consistency proof between each two consecutive heads:
    ``{"old_size": n, "new_size": m, "proof": ["<hex>", ...]}``.
``records/<index>.rec``, ``inclusion/<index>.json``
    For each record of the range, by index: its canonical bytes exactly as committed
    (:mod:`gateway.commit`; they hold the signed header, the certificate chain, the OCSP
    response and the body or its digest), then its inclusion proof against the first
    head larger than its index: ``{"index": i, "tree_size": n, "proof": ["<hex>", ...]}``.
``manifest.json``
    ``{"format": "serai-evidence-bundle", "version": 1, "log_id": ..., "created_at": ...,
    "records": {"first_index": a, "end_index": b}, "tree_heads": [sizes...],
    "configurations": [serials...], "files": [{"path", "size", "sha256"}, ...]}``.

The manifest is a table of contents, not a signature: what makes a bundle evidence is
that each record hashes into a tree head signed by the gateway and time-stamped by an
approved TSA, under configurations signed by the registry. The file digests and the fixed
order make damage (a truncated, reordered, padded or edited bundle) fail loudly and by
name. :func:`expected_paths` gives the one order a manifest allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import hashlib
import io
import itertools
import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Final

from cryptography.hazmat.primitives import serialization

from certs.keys import parse_der_certificate
from gateway.messagelog.errors import MessageLogError
from gateway.messagelog.log import MAX_PAGE, MessageLog
from gateway.messagelog.store import StoredTreeHead
from gateway.messagelog.timeline import ArchivedConfiguration, ConfigurationTimeline
from serai.errors import ErrorCode

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_VERSION",
    "DEFAULT_HEAD_INTERVAL_S",
    "MANIFEST_NAME",
    "BundleError",
    "BundleReader",
    "ExportResult",
    "Manifest",
    "ManifestFile",
    "covering_size",
    "derived_certificates",
    "expected_paths",
    "export_bundle",
]

BUNDLE_FORMAT: Final = "serai-evidence-bundle"
BUNDLE_VERSION: Final = 1
MANIFEST_NAME: Final = "manifest.json"
#: Largest file read from a bundle (a record holds at most a few MiB of body).
MAX_ENTRY_BYTES: Final = 256 * 1024 * 1024
#: Largest manifest read (about 100 bytes per file listed).
MAX_MANIFEST_BYTES: Final = 1 << 30
#: Of the time-stamped heads inside an exported range, one per this many seconds is kept.
DEFAULT_HEAD_INTERVAL_S: Final = 60.0
#: Configurations valid this long before the first record or after the last time-stamp
#: are included too: clocks differ, and an extra configuration costs nothing.
CONFIGURATION_MARGIN: Final = dt.timedelta(minutes=10)

_CA_ROOTS: Final = "certificates/ca-roots.pem"
_CA_INTERMEDIATES: Final = "certificates/ca-intermediates.pem"
_TSA_CERTIFICATES: Final = "certificates/tsa.pem"
_ZIP_DATE: Final = (1980, 1, 1, 0, 0, 0)
_MANIFEST_KEYS: Final = frozenset(
    {
        "format",
        "version",
        "log_id",
        "created_at",
        "records",
        "tree_heads",
        "configurations",
        "files",
    }
)


class BundleError(MessageLogError):
    """A bundle cannot be written, or is not a well-formed bundle (the message says
    which file and what)."""

    default_code = ErrorCode.INVALID_REQUEST


@dataclasses.dataclass(frozen=True, slots=True)
class ManifestFile:
    path: str
    size: int
    sha256: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """The table of contents of a bundle (module docstring)."""

    log_id: str
    created_at: str
    first_index: int
    end_index: int
    tree_heads: tuple[int, ...]
    configurations: tuple[int, ...]
    files: tuple[ManifestFile, ...]

    def encode(self) -> bytes:
        return (
            json.dumps(
                {
                    "format": BUNDLE_FORMAT,
                    "version": BUNDLE_VERSION,
                    "log_id": self.log_id,
                    "created_at": self.created_at,
                    "records": {"first_index": self.first_index, "end_index": self.end_index},
                    "tree_heads": list(self.tree_heads),
                    "configurations": list(self.configurations),
                    "files": [
                        {"path": f.path, "size": f.size, "sha256": f.sha256} for f in self.files
                    ],
                },
                indent=1,
            ).encode("utf-8")
            + b"\n"
        )

    @classmethod
    def decode(cls, data: bytes) -> Manifest:
        """Parse strictly; raises :class:`BundleError` naming what is wrong."""
        try:
            obj = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise BundleError(f"{MANIFEST_NAME} is not JSON: {exc}") from exc
        if not isinstance(obj, dict) or obj.keys() != _MANIFEST_KEYS:
            raise BundleError(f"{MANIFEST_NAME} does not hold exactly {sorted(_MANIFEST_KEYS)}")
        version = obj["version"]
        if obj["format"] != BUNDLE_FORMAT or type(version) is not int or version != BUNDLE_VERSION:
            raise BundleError(
                f"not a {BUNDLE_FORMAT} of version {BUNDLE_VERSION} "
                f"({str(obj['format'])[:40]!a} version {str(obj['version'])[:10]!a})"
            )
        records = obj["records"]
        if not isinstance(records, dict) or records.keys() != {"first_index", "end_index"}:
            raise BundleError(f"{MANIFEST_NAME}: records must hold first_index and end_index")
        first, end = records["first_index"], records["end_index"]
        if not _ints([first, end]) or not 0 <= first < end:
            raise BundleError(f"{MANIFEST_NAME}: the record range is not 0 <= first < end")
        heads, serials = obj["tree_heads"], obj["configurations"]
        if not isinstance(heads, list) or not heads or not _ints(heads):
            raise BundleError(f"{MANIFEST_NAME}: tree_heads must be a non-empty list of sizes")
        if any(a >= b for a, b in itertools.pairwise(heads)) or heads[0] <= first:
            raise BundleError(f"{MANIFEST_NAME}: tree head sizes must increase, above first_index")
        if heads[-1] < end:
            raise BundleError(f"{MANIFEST_NAME}: no tree head covers the range's end {end}")
        if not isinstance(serials, list) or not _ints(serials) or serials != sorted(set(serials)):
            raise BundleError(f"{MANIFEST_NAME}: configurations must be increasing serials")
        files = obj["files"]
        if not isinstance(files, list):
            raise BundleError(f"{MANIFEST_NAME}: files must be a list")
        entries = []
        for entry in files:
            if (
                not isinstance(entry, dict)
                or entry.keys() != {"path", "size", "sha256"}
                or not isinstance(entry["path"], str)
                or not _ints([entry["size"]])
                or not isinstance(entry["sha256"], str)
            ):
                raise BundleError(f"{MANIFEST_NAME}: a files entry is not {{path, size, sha256}}")
            entries.append(ManifestFile(entry["path"], entry["size"], entry["sha256"]))
        if not isinstance(obj["log_id"], str) or not isinstance(obj["created_at"], str):
            raise BundleError(f"{MANIFEST_NAME}: log_id and created_at must be strings")
        return cls(
            log_id=obj["log_id"],
            created_at=obj["created_at"],
            first_index=first,
            end_index=end,
            tree_heads=tuple(heads),
            configurations=tuple(serials),
            files=tuple(entries),
        )


# -- paths and order ------------------------------------------------------------------------


def configuration_path(serial: int) -> str:
    return f"configurations/{serial}.bin"


def head_path(size: int) -> str:
    return f"tree-heads/{size}.jws"


def token_path(size: int) -> str:
    return f"tree-heads/{size}.tsr"


def consistency_path(old_size: int, new_size: int) -> str:
    return f"consistency/{old_size}-{new_size}.json"


def record_path(index: int) -> str:
    return f"records/{index}.rec"


def inclusion_path(index: int) -> str:
    return f"inclusion/{index}.json"


def expected_paths(
    *,
    first_index: int,
    end_index: int,
    tree_heads: Sequence[int],
    configurations: Sequence[int],
) -> Iterator[str]:
    """Every path a bundle of these contents holds, in the one allowed order (the
    manifest itself excluded; it comes last)."""
    for serial in configurations:
        yield configuration_path(serial)
    yield from (_CA_ROOTS, _CA_INTERMEDIATES, _TSA_CERTIFICATES)
    for size in tree_heads:
        yield head_path(size)
        yield token_path(size)
    for old, new in itertools.pairwise(tree_heads):
        yield consistency_path(old, new)
    for index in range(first_index, end_index):
        yield record_path(index)
        yield inclusion_path(index)


def covering_size(index: int, tree_heads: Sequence[int]) -> int | None:
    """The smallest of the (increasing) ``tree_heads`` larger than ``index``."""
    lo, hi = 0, len(tree_heads)
    while lo < hi:
        mid = (lo + hi) // 2
        if tree_heads[mid] > index:
            hi = mid
        else:
            lo = mid + 1
    return tree_heads[lo] if lo < len(tree_heads) else None


def derived_certificates(configurations: Sequence[ArchivedConfiguration]) -> dict[str, bytes]:
    """The ``certificates/`` files for these configurations (module docstring)."""
    roots: dict[bytes, None] = {}
    intermediates: dict[bytes, None] = {}
    tsas: dict[bytes, None] = {}
    for entry in configurations:
        for ca in entry.snapshot.approved_cas:
            roots.setdefault(ca.root_certificate)
            for der in ca.intermediate_certificates:
                intermediates.setdefault(der)
        for tsa in entry.snapshot.approved_tsas:
            for der in tsa.certificates:
                tsas.setdefault(der)
    return {
        _CA_ROOTS: _pem(roots),
        _CA_INTERMEDIATES: _pem(intermediates),
        _TSA_CERTIFICATES: _pem(tsas),
    }


def proof_json(**values: object) -> bytes:
    """A proof file: the values, with ``proof`` as a list of hex strings."""
    out = dict(values)
    proof = out.pop("proof")
    assert isinstance(proof, list)
    out["proof"] = [bytes(h).hex() for h in proof]
    return json.dumps(out, separators=(",", ":")).encode("ascii") + b"\n"


# -- writing --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ExportResult:
    """What :func:`export_bundle` wrote."""

    path: Path
    first_index: int
    end_index: int
    tree_heads: tuple[int, ...]
    configurations: tuple[int, ...]
    sha256: str

    @property
    def records(self) -> int:
        return self.end_index - self.first_index


async def export_bundle(
    log: MessageLog,
    *,
    timeline: ConfigurationTimeline,
    out: Path,
    first_index: int,
    end_index: int,
    head_interval_s: float = DEFAULT_HEAD_INTERVAL_S,
    now: dt.datetime | None = None,
) -> ExportResult:
    """Write the bundle of records ``first_index`` to ``end_index`` (exclusive) of
    ``log`` to ``out`` (atomically: a temporary file renamed into place).

    Of the time-stamped heads inside the range, one per ``head_interval_s`` of
    time-stamps is kept (0: every one), and always the first that covers the end: a
    gateway time-stamps every second, and each record only needs the first kept head
    after it, whose time-stamp bounds its time to within about the interval.

    Refused (:class:`BundleError`, nothing written) when the range is empty or beyond
    the log, a record of it was pruned, or no time-stamped tree head covers its end yet.
    Recording the export (``MessageLog.add_export``) is the caller's decision.
    """
    size, _ = await log.tree_state()
    if not 0 <= first_index < end_index <= size:
        raise BundleError(
            f"records {first_index}..{end_index - 1} are not a range of this log "
            f"(it holds records 0..{size - 1})"
        )
    heads = await _select_heads(log, first_index, end_index, head_interval_s)
    sizes = tuple(h.tree_size for h in heads)
    start_time = (await log.record(first_index)).appended_at - CONFIGURATION_MARGIN
    end_time = max(h.timestamped_at or h.created_at for h in heads) + CONFIGURATION_MARGIN
    configurations = timeline.overlapping(start_time, end_time)
    created = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)

    out, raw, tmp = await asyncio.to_thread(_temporary_beside, out)
    try:
        with raw:
            await _write_zip(
                raw,
                log=log,
                heads=heads,
                configurations=configurations,
                first_index=first_index,
                end_index=end_index,
                manifest=lambda listed: Manifest(
                    log_id=log.log_id,
                    created_at=created.isoformat().replace("+00:00", "Z"),
                    first_index=first_index,
                    end_index=end_index,
                    tree_heads=sizes,
                    configurations=tuple(c.serial for c in configurations),
                    files=listed,
                ),
            )
            digest = await asyncio.to_thread(_sync_and_digest, raw)
        await asyncio.to_thread(os.replace, tmp, out)
    except BaseException:
        await asyncio.to_thread(tmp.unlink, missing_ok=True)
        raise
    return ExportResult(
        path=out,
        first_index=first_index,
        end_index=end_index,
        tree_heads=sizes,
        configurations=tuple(c.serial for c in configurations),
        sha256=digest,
    )


def _temporary_beside(out: Path) -> tuple[Path, io.BufferedRandom, Path]:
    """``out`` made absolute, and a new temporary file in its directory (open, and its path)."""
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    return out, os.fdopen(fd, "w+b"), Path(tmp_name)


def _sync_and_digest(raw: io.BufferedRandom) -> str:
    raw.flush()
    os.fsync(raw.fileno())
    raw.seek(0)
    return hashlib.file_digest(raw, "sha256").hexdigest()


async def _select_heads(
    log: MessageLog, first: int, end: int, interval_s: float
) -> list[StoredTreeHead]:
    """The time-stamped heads with sizes in ``(first, end]``, at most one per
    ``interval_s`` of time-stamps, and the first at or above ``end``: one per size (the
    first stored), by size."""
    by_size: dict[int, StoredTreeHead] = {}
    interval = dt.timedelta(seconds=interval_s)
    last_kept: dt.datetime | None = None
    after = 0
    while True:
        page = await log.tree_heads(
            min_size=first + 1, max_size=end, timestamped=True, after_id=after, limit=MAX_PAGE
        )
        for head in page:
            stamped = head.timestamped_at or head.created_at
            if head.tree_size in by_size or (
                last_kept is not None and stamped < last_kept + interval
            ):
                continue
            by_size[head.tree_size] = head
            last_kept = stamped
        if len(page) < MAX_PAGE:
            break
        after = page[-1].head_id
    if end not in by_size:
        above = await log.tree_heads(min_size=end, timestamped=True, limit=1)
        if not above:
            latest = await log.latest_tree_head(timestamped=True)
            covered = f"up to record {latest.tree_size - 1}" if latest else "no record yet"
            raise BundleError(
                f"no time-stamped tree head covers record {end - 1} yet (time-stamps cover "
                f"{covered}); wait for the next time-stamp or export a shorter range",
                code=ErrorCode.FAILED_PRECONDITION,
            )
        by_size[above[0].tree_size] = above[0]
    return [by_size[s] for s in sorted(by_size)]


async def _write_zip(
    raw: IO[bytes],
    *,
    log: MessageLog,
    heads: Sequence[StoredTreeHead],
    configurations: Sequence[ArchivedConfiguration],
    first_index: int,
    end_index: int,
    manifest: Callable[[tuple[ManifestFile, ...]], Manifest],
) -> None:
    listed: list[ManifestFile] = []
    with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_DEFLATED) as archive:

        def put(path: str, data: bytes) -> None:
            info = zipfile.ZipInfo(path, date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
            listed.append(ManifestFile(path, len(data), hashlib.sha256(data).hexdigest()))

        for entry in configurations:
            put(configuration_path(entry.serial), entry.envelope)
        for path, data in derived_certificates(configurations).items():
            put(path, data)
        for head in heads:
            assert head.timestamp_token is not None  # only time-stamped heads are selected
            put(head_path(head.tree_size), head.signed_head)
            put(token_path(head.tree_size), head.timestamp_token)
        for old, new in itertools.pairwise(heads):
            proof = await log.consistency_proof(old.tree_size, new.tree_size)
            put(
                consistency_path(old.tree_size, new.tree_size),
                proof_json(old_size=old.tree_size, new_size=new.tree_size, proof=proof),
            )
        sizes = [h.tree_size for h in heads]
        start = first_index
        while start < end_index:
            page = await log.records(start=start, end=end_index, limit=MAX_PAGE)
            for stored in page:
                if stored.leaf is None:
                    raise BundleError(
                        f"record {stored.index} was pruned; its bytes are only in an earlier "
                        "bundle, so this range cannot be exported again",
                        code=ErrorCode.FAILED_PRECONDITION,
                    )
                tree_size = covering_size(stored.index, sizes)
                assert tree_size is not None  # the last head covers end_index
                proof = await log.inclusion_proof(stored.index, tree_size)
                put(record_path(stored.index), stored.leaf)
                put(
                    inclusion_path(stored.index),
                    proof_json(index=stored.index, tree_size=tree_size, proof=proof),
                )
            if not page:
                raise BundleError(f"record {start} is missing from the log")
            start = page[-1].index + 1
        built = manifest(tuple(listed))
        info = zipfile.ZipInfo(MANIFEST_NAME, date_time=_ZIP_DATE)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        archive.writestr(info, built.encode())


# -- reading --------------------------------------------------------------------------------


class BundleReader:
    """A bundle opened for verification: the manifest parsed, the ZIP's entries matched
    against it (names and order), every read checked against the listed size and digest.

    :meth:`open` raises :class:`BundleError` when the file is not a ZIP, has no manifest
    as its last entry, or the manifest does not parse; :meth:`structure_problems` lists
    the entries that differ from what the manifest allows; :meth:`read` raises
    :class:`BundleError` for a missing file or one whose bytes differ from the manifest.
    """

    def __init__(self, archive: zipfile.ZipFile, manifest: Manifest) -> None:
        self._archive = archive
        self.manifest = manifest
        self._listed = {f.path: f for f in manifest.files}

    @classmethod
    @contextlib.contextmanager
    def open(cls, path: Path) -> Iterator[BundleReader]:
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise BundleError(
                f"{path} is not a readable ZIP file (truncated or damaged?): {exc}"
            ) from exc
        with archive:
            infos = archive.infolist()
            if not infos or infos[-1].filename != MANIFEST_NAME:
                raise BundleError(f"the last entry of {path} is not {MANIFEST_NAME}")
            if infos[-1].file_size > MAX_MANIFEST_BYTES:
                raise BundleError(f"{MANIFEST_NAME} is larger than {MAX_MANIFEST_BYTES} bytes")
            try:
                data = archive.read(infos[-1])
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
                raise BundleError(f"{MANIFEST_NAME} cannot be read: {exc}") from exc
            yield cls(archive, Manifest.decode(data))

    def structure_problems(self) -> list[str]:
        """How the entries differ from the one order the manifest allows (empty: none)."""
        manifest = self.manifest
        expected = list(
            expected_paths(
                first_index=manifest.first_index,
                end_index=manifest.end_index,
                tree_heads=manifest.tree_heads,
                configurations=manifest.configurations,
            )
        )
        listed = [f.path for f in manifest.files]
        actual = [i.filename for i in self._archive.infolist()[:-1]]
        problems = []
        for what, names in (("the manifest's file list", listed), ("the ZIP's entries", actual)):
            if names == expected:
                continue
            missing = sorted(set(expected) - set(names))
            extra = sorted(set(names) - set(expected))
            if missing:
                problems.append(f"{what} lacks {_some(missing)}")
            if extra:
                problems.append(f"{what} has unexpected {_some(extra)}")
            if len(set(names)) != len(names):
                problems.append(f"{what} names a file twice")
            if not missing and not extra and len(set(names)) == len(names):
                at = next(i for i, (a, b) in enumerate(zip(names, expected, strict=True)) if a != b)
                problems.append(
                    f"{what} are out of order at position {at}: {names[at]} where {expected[at]} "
                    "belongs"
                )
        return problems

    def read(self, path: str) -> bytes:
        listed = self._listed.get(path)
        if listed is None:
            raise BundleError(f"{path} is not listed in the manifest")
        try:
            info = self._archive.getinfo(path)
        except KeyError:
            raise BundleError(f"{path} is missing from the bundle") from None
        if info.file_size != listed.size:
            raise BundleError(f"{path} is {info.file_size} bytes, the manifest says {listed.size}")
        if info.file_size > MAX_ENTRY_BYTES:
            raise BundleError(f"{path} is larger than {MAX_ENTRY_BYTES} bytes")
        try:
            data = self._archive.read(info)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise BundleError(f"{path} cannot be read (damaged?): {exc}") from exc
        if hashlib.sha256(data).hexdigest() != listed.sha256:
            raise BundleError(f"{path} differs from its SHA-256 in the manifest")
        return data


def read_proof(data: bytes, path: str, **expected: int) -> list[bytes]:
    """The hashes of a proof file, after checking its other members equal ``expected``."""
    try:
        obj = json.loads(data.decode("ascii"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BundleError(f"{path} is not JSON: {exc}") from exc
    if not isinstance(obj, dict) or obj.keys() != {*expected, "proof"}:
        raise BundleError(f"{path} does not hold exactly {sorted({*expected, 'proof'})}")
    for key, value in expected.items():
        if obj[key] != value or type(obj[key]) is not int:
            raise BundleError(f"{path}: {key} is {str(obj[key])[:20]!a}, not {value}")
    proof = obj["proof"]
    if not isinstance(proof, list) or not all(isinstance(h, str) for h in proof):
        raise BundleError(f"{path}: proof is not a list of hex strings")
    try:
        hashes = [bytes.fromhex(h) for h in proof]
    except ValueError as exc:
        raise BundleError(f"{path}: proof is not hex: {exc}") from exc
    if any(len(h) != 32 or h.hex() != s for h, s in zip(hashes, proof, strict=True)):
        raise BundleError(f"{path}: proof hashes must be 32 bytes in lowercase hex")
    if data != proof_json(**expected, proof=hashes):
        raise BundleError(f"{path} is not in the one encoding a proof file has")
    return hashes


def _pem(ders: dict[bytes, None]) -> bytes:
    out = b""
    for der in ders:
        try:
            out += parse_der_certificate(der).public_bytes(serialization.Encoding.PEM)
        except ValueError as exc:
            raise BundleError(f"a certificate of the configuration does not parse: {exc}") from exc
    return out


def _ints(values: Sequence[object]) -> bool:
    return all(type(v) is int and v >= 0 for v in values)


def _some(names: Sequence[str]) -> str:
    shown = ", ".join(names[:3])
    return shown + (f" and {len(names) - 3} more" if len(names) > 3 else "")
