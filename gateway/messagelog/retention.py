"""Retention: removing old record bodies once they are safe in an evidence bundle.

Pruning sets a record's stored bytes (``records.leaf``) to NULL and keeps everything the
tree needs: its leaf hash, every Merkle node, every tree head. So the log keeps growing
consistently, every root and proof it computes stays the same, and the proofs in an
earlier bundle still verify against the heads the log keeps signing.

Rules (each has a test in ``tests/test_messagelog_cli.py``):

1. Only records appended before the cut-off are pruned, and only those inside the range of
   a recorded export (``MessageLog.add_export``, done by ``serai log export`` once its
   bundle verified): their bytes live on in that bundle.
2. If any record appended before the cut-off still has its bytes and is in no export,
   nothing at all is pruned and :class:`PruneRefusedError` names the first and last such
   index and how many there are. Pruning is all or nothing, in one transaction.
3. Pruning twice is harmless: already pruned records are left as they are.

The SQL runs as a job of the log's single writer (the same thread and transaction
discipline as appends), so a gateway appending to the same log meanwhile only waits for
the database's lock.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from gateway.messagelog.errors import MessageLogError
from gateway.messagelog.log import MessageLog
from gateway.messagelog.store import Connection, from_us, to_us
from serai.errors import ErrorCode

__all__ = ["PruneRefusedError", "PruneResult", "prune_exported"]

#: Records appended before the cut-off whose bytes are kept, and in no export.
_UNEXPORTED = (
    "SELECT count(*), min(leaf_index), max(leaf_index) FROM records r"
    " WHERE r.appended_at < ? AND r.leaf IS NOT NULL AND NOT EXISTS"
    " (SELECT 1 FROM exports e WHERE r.leaf_index >= e.first_index"
    " AND r.leaf_index < e.end_index)"
)
#: Records that will be pruned.
_PRUNABLE = (
    "SELECT count(*), min(leaf_index), max(leaf_index) FROM records"
    " WHERE appended_at < ? AND leaf IS NOT NULL"
)
_PRUNE = "UPDATE records SET leaf = NULL WHERE appended_at < ? AND leaf IS NOT NULL"
#: The newest record appended before the cut-off (to say what the cut-off reached).
_LAST_BEFORE = "SELECT max(appended_at) FROM records WHERE appended_at < ?"


class PruneRefusedError(MessageLogError):
    """Pruning would remove the only copy of records' bytes (rule 2); nothing was pruned."""

    default_code = ErrorCode.FAILED_PRECONDITION


@dataclass(frozen=True, slots=True, kw_only=True)
class PruneResult:
    """What :func:`prune_exported` removed: ``count`` record bodies, indices
    ``first_index`` to ``last_index`` (``None`` when there was nothing to prune)."""

    count: int
    first_index: int | None
    last_index: int | None
    newest_pruned_at: dt.datetime | None


async def prune_exported(log: MessageLog, *, before: dt.datetime) -> PruneResult:
    """Prune the bytes of the records appended before ``before`` (rules of the module
    docstring); raises :class:`PruneRefusedError` when some of them were never exported."""
    cutoff = to_us(before)

    def prune(db: Connection) -> PruneResult:
        count, first, last = db.rows(_UNEXPORTED, (cutoff,))[0]
        if int(count):
            raise PruneRefusedError(
                f"{count} records appended before {before.isoformat()} are in no export "
                f"(the first is {first}, the last {last}); export them first, e.g. "
                f"`serai log export --from {first} --to {int(last) + 1} --out BUNDLE.zip`; "
                "nothing was pruned"
            )
        count, first, last = db.rows(_PRUNABLE, (cutoff,))[0]
        if not int(count):
            return PruneResult(count=0, first_index=None, last_index=None, newest_pruned_at=None)
        (newest,) = db.rows(_LAST_BEFORE, (cutoff,))[0]
        db.execute(_PRUNE, (cutoff,))
        return PruneResult(
            count=int(count),
            first_index=int(first),
            last_index=int(last),
            newest_pruned_at=from_us(int(newest)),
        )

    # The writer's job queue is the one place this log is written (see the docstring).
    return await log._write(f"prune records appended before {before.isoformat()}", prune)
