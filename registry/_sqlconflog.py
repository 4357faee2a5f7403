"""The configuration log's tables: appending a configuration, and proofs from stored nodes.

Three tables (schema version 2, :mod:`registry._sqlschema`): ``conflog_entries`` (one row
per leaf: index, serial, the exact envelope bytes, when), ``conflog_nodes`` (every
perfect subtree completed so far, as :meth:`serai.merkle.Frontier.append` returns them;
level 0 is the leaf hashes) and ``conflog_heads`` (the signed tree head of every size).
The size of the log is the ``conflog`` counter row. A fourth (version 3),
``conflog_timestamps``, holds the RFC 3161 token of a head once one was obtained: at
most one per head, never changed (:func:`_add_timestamp`; a second token for the same
head, say from another registry process sharing the database, is ignored).

:func:`_append` runs inside one write transaction of the store: it increments the
counter first (on PostgreSQL its row lock serialises appenders across processes, as the
audit counter does for changes), rebuilds the right edge from ``popcount(size)`` stored
nodes, appends the leaf, writes the nodes it completes, signs the new head and stores
it, and builds the entry's :class:`~registry.conflog.ProofBundle` from the same state,
including the newest time-stamped head and the consistency proof from its size. So a
leaf, its nodes and its head are stored together or not at all. An empty envelope is
refused: zero bytes is how retention marks a pruned entry.

Retention (:func:`_prune`) sets the envelope of old entries to zero bytes and changes
nothing else: the leaf hash (level 0 of ``conflog_nodes``), every node, head and token
stay, so every root, inclusion and consistency proof, signed head and time-stamp is what
it was, and the log keeps growing on top. In one write transaction whose first
statement takes the ``conflog`` counter row (so an appender in another process waits,
and the size read is the committed one), it prunes each entry appended before the
cut-off except:

1. the newest entry (the configuration being served);
2. an entry at or beyond the size of the newest time-stamped head (no third party has
   vouched yet for when it existed; before the first token nothing is pruned);
3. an entry whose configuration has not expired at the store's clock, or whose expiry
   cannot be read from the first :data:`_PREFIX_BYTES` bytes of its envelope (kept:
   retention never guesses).

Already pruned entries are left as they are, so pruning twice is harmless. Reading a
pruned entry (:func:`_entry`) is ``not_found`` saying it was pruned.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from registry._sqldialect import _Connection, _Dialect
from registry._sqlerrors import _refuse
from registry.conflog import RECENT_PROOFS, HeadSigner, ProofBundle
from registry.store import ConflogPruneResult
from serai.errors import ErrorCode
from serai.merkle import Frontier, NodeKey, consistency_proof, inclusion_proof, leaf_hash, root_at
from serai.treehead import SignedTreeHead


def _append(
    db: _Connection,
    dialect: _Dialect,
    *,
    serial: int,
    envelope: bytes,
    sign_head: HeadSigner,
    now: dt.datetime,
) -> ProofBundle:
    size = int(
        db.rows("UPDATE counters SET value = value + 1 WHERE name = 'conflog' RETURNING value")[0][
            0
        ]
    )
    index = size - 1
    if not envelope:
        raise _refuse(ErrorCode.INVALID_REQUEST, "an empty envelope is not a configuration")
    if db.exists("SELECT 1 FROM conflog_entries WHERE serial = ?", (serial,)):
        raise _refuse(
            ErrorCode.ALREADY_EXISTS, f"serial {serial} is already in the configuration log"
        )
    nodes = _getter(db)
    frontier = Frontier.load(index, nodes)
    completed = frontier.append(leaf_hash(envelope))
    db.execute(
        "INSERT INTO conflog_entries (leaf_index, serial, envelope, appended_at) "
        "VALUES (?, ?, ?, ?)",
        (index, serial, envelope, dialect.time_to_db(now)),
    )
    db.executemany(
        "INSERT INTO conflog_nodes (level, node_index, hash) VALUES (?, ?, ?)",
        [(level, position, value) for (level, position), value in completed],
    )
    sth = sign_head(size, frontier.root())
    if sth.head.tree_size != size or sth.head.root_hash != frontier.root():
        raise _refuse(ErrorCode.INTERNAL, "the head signer signed another size or root")
    db.execute("INSERT INTO conflog_heads (tree_size, sth) VALUES (?, ?)", (size, sth.jws))
    stamped = _timestamped(db)
    olds = set(range(max(1, size - RECENT_PROOFS), size))
    if stamped is not None:
        olds.add(stamped.head.tree_size)  # below size: the new head has no token yet
    return ProofBundle(
        serial=serial,
        leaf_index=index,
        sth=sth.jws,
        inclusion=tuple(inclusion_proof(index, size, nodes)),
        consistency={old: tuple(consistency_proof(old, size, nodes)) for old in sorted(olds)},
        timestamped=stamped,
    )


def _add_timestamp(
    db: _Connection, dialect: _Dialect, *, tree_size: int, token: bytes, now: dt.datetime
) -> bool:
    """Store ``token`` for the head of ``tree_size``; ``False`` when it already had one."""
    if not db.exists("SELECT 1 FROM conflog_heads WHERE tree_size = ?", (tree_size,)):
        raise _refuse(ErrorCode.NOT_FOUND, f"the configuration log has no head of size {tree_size}")
    if db.exists("SELECT 1 FROM conflog_timestamps WHERE tree_size = ?", (tree_size,)):
        return False
    db.execute(
        "INSERT INTO conflog_timestamps (tree_size, token, obtained_at) VALUES (?, ?, ?) "
        "ON CONFLICT (tree_size) DO NOTHING",
        (tree_size, token, dialect.time_to_db(now)),
    )
    return True


def _newest_head(db: _Connection) -> SignedTreeHead | None:
    """The largest head, with its token when it has one."""
    rows = db.rows(
        "SELECT h.sth, t.token FROM conflog_heads h "
        "LEFT JOIN conflog_timestamps t ON t.tree_size = h.tree_size "
        "ORDER BY h.tree_size DESC LIMIT 1"
    )
    if not rows:
        return None
    jws, token = rows[0]
    return SignedTreeHead(bytes(jws), timestamp_token=None if token is None else bytes(token))


def _timestamped(db: _Connection) -> SignedTreeHead | None:
    """The largest head that has a token, with it."""
    rows = db.rows(
        "SELECT h.sth, t.token FROM conflog_timestamps t "
        "JOIN conflog_heads h ON h.tree_size = t.tree_size "
        "ORDER BY t.tree_size DESC LIMIT 1"
    )
    if not rows:
        return None
    return SignedTreeHead(bytes(rows[0][0]), timestamp_token=bytes(rows[0][1]))


def _size(db: _Connection) -> int:
    return int(db.rows("SELECT value FROM counters WHERE name = 'conflog'")[0][0])


def _consistency(db: _Connection, old_size: int, new_size: int) -> list[bytes]:
    _check_sizes(db, old_size, new_size)
    return consistency_proof(old_size, new_size, _getter(db))


def _root(db: _Connection, size: int) -> bytes:
    _check_sizes(db, 0, size)
    return root_at(size, _getter(db))


def _head(db: _Connection, size: int) -> bytes:
    rows = db.rows("SELECT sth FROM conflog_heads WHERE tree_size = ?", (size,))
    if not rows:
        raise _refuse(ErrorCode.NOT_FOUND, f"the configuration log has no head of size {size}")
    return bytes(rows[0][0])


def _entry(db: _Connection, index: int) -> tuple[int, bytes]:
    rows = db.rows("SELECT serial, envelope FROM conflog_entries WHERE leaf_index = ?", (index,))
    if not rows:
        raise _refuse(ErrorCode.NOT_FOUND, f"the configuration log has no entry {index}")
    serial, envelope = int(rows[0][0]), bytes(rows[0][1])
    if not envelope:
        raise _refuse(
            ErrorCode.NOT_FOUND,
            f"the configuration log's entry {index} (serial {serial}) was pruned: retention "
            "dropped its envelope; its leaf hash remains, so its proofs still verify",
        )
    return serial, envelope


# -- retention ------------------------------------------------------------------------------

#: Bytes of an envelope read to find its configuration's expiry (``expires_at`` is field
#: 4 of ``GlobalConfiguration``, after the instance, serial and ``generated_at``).
_PREFIX_BYTES: Final = 512
#: Entries read per query while pruning.
_SCAN_ROWS: Final = 5000
_PRUNED_COUNT: Final = "SELECT count(*) FROM conflog_entries WHERE length(envelope) = 0"


def _prune(
    db: _Connection, dialect: _Dialect, *, before: dt.datetime, now: dt.datetime
) -> ConflogPruneResult:
    """Drop the envelopes retention may drop (module docstring); the caller audits."""
    size = int(
        db.rows("UPDATE counters SET value = value WHERE name = 'conflog' RETURNING value")[0][0]
    )
    stamped = db.rows("SELECT max(tree_size) FROM conflog_timestamps")[0][0]
    stamped_size = 0 if stamped is None else int(stamped)
    limit = min(size - 1, stamped_size)  # rules 1 and 2: indices below it may go
    cut = dialect.time_to_db(before)
    beyond = int(
        db.rows(
            "SELECT count(*) FROM conflog_entries WHERE appended_at < ? "
            "AND length(envelope) > 0 AND leaf_index >= ?",
            (cut, limit),
        )[0][0]
    )
    doomed: list[int] = []
    candidates, start = 0, 0
    while rows := db.rows(  # in chunks, so a year's backlog is not read into memory at once
        f"SELECT leaf_index, substr(envelope, 1, {_PREFIX_BYTES}) FROM conflog_entries "  # noqa: S608
        "WHERE appended_at < ? AND length(envelope) > 0 AND leaf_index >= ? AND leaf_index < ? "
        f"ORDER BY leaf_index LIMIT {_SCAN_ROWS}",
        (cut, start, limit),
    ):
        candidates += len(rows)
        for index, prefix in rows:
            expires_at = _expires_at(bytes(prefix))
            if expires_at is not None and expires_at <= now:  # rule 3
                doomed.append(int(index))
        start = int(rows[-1][0]) + 1
    db.executemany(
        "UPDATE conflog_entries SET envelope = ? WHERE leaf_index >= ? AND leaf_index <= ?",
        [(b"", first, last) for first, last in _runs(doomed)],
    )
    pruned_total = int(db.rows(_PRUNED_COUNT)[0][0])
    return ConflogPruneResult(
        before=before,
        pruned=len(doomed),
        first_index=doomed[0] if doomed else None,
        last_index=doomed[-1] if doomed else None,
        protected=beyond + candidates - len(doomed),
        timestamped_size=stamped_size,
        kept_total=size - pruned_total,
        pruned_total=pruned_total,
    )


def _runs(indices: list[int]) -> list[tuple[int, int]]:
    """Sorted ``indices`` as runs of consecutive ones, ``(first, last)`` each (one
    statement per run: a backlog is usually a single run)."""
    runs: list[tuple[int, int]] = []
    for index in indices:
        if runs and runs[-1][1] == index - 1:
            runs[-1] = (runs[-1][0], index)
        else:
            runs.append((index, index))
    return runs


def _pruned_count(db: _Connection) -> int:
    return int(db.rows(_PRUNED_COUNT)[0][0])


def _expires_at(prefix: bytes) -> dt.datetime | None:
    """The ``expires_at`` of the configuration whose ``SignedGlobalConfiguration`` starts
    with ``prefix``, or ``None`` when these bytes do not show it.

    Protobuf writes fields in number order, so the envelope starts with its field 1 (the
    configuration bytes), which starts with fields 1 to 4 of ``GlobalConfiguration``.
    Anything else (another layout, a truncated field) gives ``None``: the entry is kept.
    """
    head = _field(prefix, 0, cut=True)
    if head is None or head[:2] != (1, 2):
        return None
    body = prefix[head[2] : head[3]]
    pos = 0
    while (found := _field(body, pos)) is not None:
        number, wire, start, end = found
        if number == 4 and wire == 2:
            try:
                stamp = Timestamp.FromString(body[start:end])
            except DecodeError:
                return None
            return stamp.ToDatetime(tzinfo=dt.UTC)
        if number > 4:
            return None
        pos = end
    return None


def _field(data: bytes, pos: int, *, cut: bool = False) -> tuple[int, int, int, int] | None:
    """Field number, wire type and the span of the value of the field at ``pos``;
    ``None`` at the end of ``data``, on bytes that are not a varint or length-delimited
    field, or on a value that runs past ``data`` (unless ``cut``: its span then ends
    there)."""
    tag = _varint(data, pos)
    if tag is None or tag[0] >> 3 == 0:
        return None
    number, wire = tag[0] >> 3, tag[0] & 7
    if wire == 0:
        value = _varint(data, tag[1])
        return None if value is None else (number, wire, tag[1], value[1])
    if wire != 2:
        return None
    length = _varint(data, tag[1])
    if length is None:
        return None
    start, end = length[1], length[1] + length[0]
    if end > len(data) and not cut:
        return None
    return number, wire, start, min(end, len(data))


def _varint(data: bytes, pos: int) -> tuple[int, int] | None:
    """The varint at ``pos`` and the position after it (``None``: absent or too long)."""
    value = shift = 0
    while pos < len(data) and shift < 64:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    return None


def _check_sizes(db: _Connection, old_size: int, new_size: int) -> None:
    size = _size(db)
    if not 0 <= old_size <= new_size <= size:
        raise _refuse(
            ErrorCode.NOT_FOUND,
            f"no proof from size {old_size} to {new_size}: the configuration log has {size} "
            "entries",
        )


def _getter(db: _Connection) -> Callable[[Sequence[NodeKey]], Mapping[NodeKey, bytes]]:
    """A :data:`serai.merkle.NodeGetter` reading ``conflog_nodes`` in one query."""

    def get(keys: Sequence[NodeKey]) -> Mapping[NodeKey, bytes]:
        wanted = sorted(set(keys))
        if not wanted:
            return {}
        where = " OR ".join("(level = ? AND node_index = ?)" for _ in wanted)
        params = [value for key in wanted for value in key]
        rows = db.rows(
            f"SELECT level, node_index, hash FROM conflog_nodes WHERE {where}",  # noqa: S608
            params,
        )
        return {(int(level), int(position)): bytes(value) for level, position, value in rows}

    return get
