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
leaf, its nodes and its head are stored together or not at all.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence

from registry._sqldialect import _Connection, _Dialect
from registry._sqlerrors import _refuse
from registry.conflog import RECENT_PROOFS, HeadSigner, ProofBundle
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
    return int(rows[0][0]), bytes(rows[0][1])


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
