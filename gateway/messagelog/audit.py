"""Audits: the checks of :mod:`gateway.messagelog.verify` run over a whole evidence
bundle, offline, or over a live message log (DESIGN §6, ``serai log verify``).

:func:`verify_bundle` trusts only the trust anchor it is given: the configurations come
from the bundle and are checked against the anchor, and everything else against them.
Beyond the evidence checks it requires the bundle's structure (``bundle_structure``:
the entries are exactly those its manifest calls for, in the one order of
:mod:`gateway.messagelog.bundle`) and every file's size and digest (``bundle_file``).

:func:`verify_log` judges a live log by the configurations its gateway archived, reads
through the store's own read transactions (a gateway may keep appending meanwhile), and
adds ``stored_hash`` (a record's stored leaf hash is the hash of its stored bytes) and
``stored_columns`` (the columns records are looked up by, such as kind, message id,
client and service, are those the record's bytes give).
"""

from __future__ import annotations

import itertools
from pathlib import Path

from gateway.commit import LogRecord
from gateway.messagelog.bundle import (
    BundleError,
    BundleReader,
    configuration_path,
    consistency_path,
    covering_size,
    derived_certificates,
    head_path,
    inclusion_path,
    read_proof,
    record_path,
    token_path,
)
from gateway.messagelog.log import MAX_PAGE, MessageLog
from gateway.messagelog.store import StoredRecord, record_meta
from gateway.messagelog.timeline import ConfigurationTimeline
from gateway.messagelog.verify import EvidenceVerifier, Failure, VerificationReport, VerifiedHead
from registry.codec import TrustAnchor
from registry.errors import ConfigurationError
from serai.merkle import leaf_hash

__all__ = ["verify_bundle", "verify_log"]


def verify_bundle(
    path: Path, *, anchor: TrustAnchor, log_id: str | None = None
) -> VerificationReport:
    """Check the evidence bundle at ``path`` offline, trusting only ``anchor`` (see the
    module docstring and :mod:`gateway.messagelog.bundle`); with ``log_id``, the bundle
    must be of that gateway's log."""
    timeline = ConfigurationTimeline(anchor)
    try:
        with BundleReader.open(path) as bundle:
            report = _BundleCheck(bundle, timeline).run()
            if log_id is not None and bundle.manifest.log_id != log_id:
                report.failures.insert(
                    0,
                    Failure(
                        "bundle",
                        "bundle_structure",
                        f"the bundle is of log {bundle.manifest.log_id}, not {log_id}",
                    ),
                )
            return report
    except BundleError as exc:
        report = VerificationReport()
        report.failures.append(Failure("bundle", "bundle_structure", exc.message))
        return report


class _BundleCheck:
    def __init__(self, bundle: BundleReader, timeline: ConfigurationTimeline) -> None:
        self._bundle = bundle
        self._timeline = timeline
        self._manifest = bundle.manifest

    def _read(self, verifier: EvidenceVerifier, path: str) -> bytes | None:
        try:
            return self._bundle.read(path)
        except BundleError as exc:
            verifier.fail(path, "bundle_file", exc.message)
            return None

    def run(self) -> VerificationReport:
        manifest = self._manifest
        verifier = EvidenceVerifier(log_id=manifest.log_id, timeline=self._timeline)
        for problem in self._bundle.structure_problems():
            verifier.fail("bundle", "bundle_structure", problem)
        configurations = []
        for serial in manifest.configurations:
            data = self._read(verifier, configuration_path(serial))
            if data is not None:
                configurations.append((configuration_path(serial), data))
        for path, data in configurations:
            try:
                entry = self._timeline.add(data)
            except ConfigurationError as exc:
                verifier.fail(path, "configuration", f"{exc.code.value}: {exc.message}")
                continue
            if configuration_path(entry.serial) != path:
                verifier.fail(path, "configuration", f"the file holds serial {entry.serial}")
        verifier.report.configurations = len(self._timeline)
        for path, expected in derived_certificates(self._timeline.configurations).items():
            data = self._read(verifier, path)
            if data is not None and data != expected:
                verifier.fail(
                    path, "bundle_file", "differs from the certificates the configurations list"
                )
        heads = self._heads(verifier)
        self._consistency(verifier, heads)
        self._records(verifier, heads)
        return verifier.report

    def _heads(self, verifier: EvidenceVerifier) -> dict[int, VerifiedHead]:
        heads: dict[int, VerifiedHead] = {}
        for size in self._manifest.tree_heads:
            jws = self._read(verifier, head_path(size))
            token = self._read(verifier, token_path(size))
            if jws is None:
                continue
            if token is None:
                verifier.fail(f"tree head {size}", "head_timestamp", "its token is missing")
            checked = verifier.check_head(jws, token, subject=f"tree head {size}")
            if checked is None:
                continue
            if checked.tree_size != size:
                verifier.fail(
                    head_path(size), "head_format", f"holds a head of size {checked.tree_size}"
                )
                continue
            heads[size] = checked
        return heads

    def _consistency(self, verifier: EvidenceVerifier, heads: dict[int, VerifiedHead]) -> None:
        for old, new in itertools.pairwise(self._manifest.tree_heads):
            path = consistency_path(old, new)
            data = self._read(verifier, path)
            if data is None or old not in heads or new not in heads:
                continue
            try:
                proof = read_proof(data, path, old_size=old, new_size=new)
            except BundleError as exc:
                verifier.fail(f"tree heads {old} -> {new}", "consistency", exc.message)
                continue
            verifier.check_consistency(heads[old], heads[new], proof)

    def _records(self, verifier: EvidenceVerifier, heads: dict[int, VerifiedHead]) -> None:
        manifest = self._manifest
        for index in range(manifest.first_index, manifest.end_index):
            size = covering_size(index, manifest.tree_heads)
            assert size is not None  # Manifest.decode checks that the last head covers all
            leaf = self._read(verifier, record_path(index))
            data = self._read(verifier, inclusion_path(index))
            if leaf is None or data is None:
                verifier.report.records += 1
                continue
            proof: list[bytes] | None
            try:
                proof = read_proof(data, inclusion_path(index), index=index, tree_size=size)
            except BundleError as exc:
                verifier.fail(f"record {index}", "inclusion", exc.message)
                proof = None
            head = heads.get(size)
            if head is None:
                verifier.fail(f"record {index}", "inclusion", f"its tree head {size} is unusable")
                verifier.report.records += 1
                continue
            verifier.check_record(
                index,
                leaf,
                proof=proof,
                tree_size=size,
                root=head.root,
                covered_at=head.timestamped_at,
            )


async def verify_log(
    log: MessageLog,
    *,
    timeline: ConfigurationTimeline,
    start: int = 0,
    end: int | None = None,
) -> VerificationReport:
    """Check the live ``log`` (records ``start`` to ``end``, exclusive; all by default):
    every stored tree head and the consistency between them, and every record against
    the first time-stamped head that covers it (or, for the newest records, the first
    head, or the tree the stored nodes make). A record's stored leaf hash must be the
    hash of its bytes; a pruned record is checked by its hash only."""
    verifier = EvidenceVerifier(log_id=log.log_id, timeline=timeline)
    size, current_root = await log.tree_state()
    end = size if end is None else min(end, size)
    heads = await _live_heads(log, verifier)
    ordered = [heads[s] for s in sorted(heads)]
    for old, new in itertools.pairwise(ordered):
        verifier.check_consistency(
            old, new, await log.consistency_proof(old.tree_size, new.tree_size)
        )
    stamped = [h.tree_size for h in ordered if h.timestamped]
    signed = [h.tree_size for h in ordered]
    at = start
    while at < end:
        page = await log.records(start=at, end=end, limit=MAX_PAGE)
        if not page:
            verifier.fail(f"record {at}", "inclusion", "missing from the store")
            break
        for stored in page:
            covering = covering_size(stored.index, stamped)
            if covering is None:
                verifier.report.untimestamped += 1
                covering = covering_size(stored.index, signed)
            if covering is None:
                tree_size, root, covered_at = size, current_root, None
            else:
                head = heads[covering]
                tree_size, root, covered_at = covering, head.root, head.timestamped_at
            proof = await log.inclusion_proof(stored.index, tree_size)
            if stored.leaf is None:
                verifier.check_pruned(
                    stored.index, stored.leaf_hash, proof=proof, tree_size=tree_size, root=root
                )
                continue
            hashed = leaf_hash(stored.leaf)  # once: for stored_hash and for inclusion
            if hashed != stored.leaf_hash:
                verifier.fail(
                    f"record {stored.index}",
                    "stored_hash",
                    "the stored leaf hash is not the hash of the stored bytes",
                )
            record = verifier.check_record(
                stored.index,
                stored.leaf,
                proof=proof,
                tree_size=tree_size,
                root=root,
                covered_at=covered_at,
                hashed=hashed,
            )
            if record is not None:
                _check_columns(verifier, stored, record)
        at = page[-1].index + 1
    return verifier.report


def _check_columns(verifier: EvidenceVerifier, stored: StoredRecord, record: LogRecord) -> None:
    """The columns ``serai log show`` and exports by time select on are those the
    record's bytes give (``stored_columns``)."""
    meta = record_meta(record)
    columns = (
        ("kind", stored.kind, meta.kind),
        ("message_id", stored.message_id, meta.message_id),
        ("client", stored.client, meta.client),
        ("service", stored.service, meta.service),
        ("method", stored.method, meta.method),
        ("outcome", stored.outcome, meta.outcome),
    )
    differ = [name for name, kept, derived in columns if kept != derived]
    if differ:
        verifier.fail(
            f"record {stored.index}",
            "stored_columns",
            f"the stored {', '.join(differ)} differ from what the record's bytes say",
        )


async def _live_heads(log: MessageLog, verifier: EvidenceVerifier) -> dict[int, VerifiedHead]:
    """Every stored head checked; one per size (two roots for one size is a failure)."""
    heads: dict[int, VerifiedHead] = {}
    after = 0
    while True:
        page = await log.tree_heads(after_id=after, limit=MAX_PAGE)
        for stored in page:
            subject = f"tree head {stored.tree_size} (id {stored.head_id})"
            checked = verifier.check_head(
                stored.signed_head, stored.timestamp_token, subject=subject
            )
            if checked is None:
                continue
            if checked.tree_size != stored.tree_size or checked.root != stored.root:
                verifier.fail(
                    subject, "head_format", "the stored size or root differs from the signed head"
                )
            held = heads.get(checked.tree_size)
            if held is None:
                heads[checked.tree_size] = checked
            elif held.root != checked.root:
                verifier.fail(
                    subject,
                    "consistency",
                    f"two tree heads of size {checked.tree_size} have different roots",
                )
            elif not held.timestamped and checked.timestamped:
                heads[checked.tree_size] = checked
        if len(page) < MAX_PAGE:
            break
        after = page[-1].head_id
    return heads
