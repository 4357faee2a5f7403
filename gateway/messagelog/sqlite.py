"""The message log in SQLite: embedded, the default (DESIGN §6, Stores).

Every connection runs in WAL mode with the configured ``synchronous`` level (``FULL``
by default: a commit returns only once the WAL is synced, so an acknowledged append
survives power loss) and a ``busy_timeout``. Write transactions begin with ``BEGIN
IMMEDIATE``, which takes the database's write lock at once, so a batch never fails
half-way for want of it; readers in WAL mode see a snapshot and never block the writer.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final

from gateway.messagelog.store import Connection, Row, Synchronous

#: How long a connection waits for another's write lock, in milliseconds.
DEFAULT_BUSY_TIMEOUT_MS: Final = 5_000


class SqliteBackend:
    """A log in the SQLite database file at ``path`` (see the module docstring)."""

    errors: tuple[type[Exception], ...] = (sqlite3.Error,)

    def __init__(
        self,
        path: Path,
        *,
        synchronous: Synchronous = Synchronous.FULL,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
    ) -> None:
        self._path = path
        self._synchronous = Synchronous(synchronous)
        self._busy_timeout_ms = int(busy_timeout_ms)
        self.description = f"the SQLite message log {path}"

    def connect(self) -> Connection:
        raw = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            raw.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            mode = raw.execute("PRAGMA journal_mode = WAL").fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                raise sqlite3.OperationalError(f"cannot enable WAL mode (got {mode!r})")
            raw.execute(f"PRAGMA synchronous = {self._synchronous.value}")
        except BaseException:
            raw.close()
            raise
        return _SqliteConnection(raw)

    def schema(self) -> Sequence[str]:
        return (
            "CREATE TABLE IF NOT EXISTS meta (singleton INTEGER PRIMARY KEY"
            " CHECK (singleton = 1), schema_version INTEGER NOT NULL, log_id TEXT NOT NULL,"
            " tree_size INTEGER NOT NULL, created_at INTEGER NOT NULL)",
            # INTEGER PRIMARY KEY: the leaf index is the rowid, no second index.
            "CREATE TABLE IF NOT EXISTS records (leaf_index INTEGER PRIMARY KEY, leaf BLOB,"
            " leaf_hash BLOB NOT NULL, appended_at INTEGER NOT NULL, kind INTEGER NOT NULL,"
            " message_id TEXT NOT NULL, client TEXT, service TEXT, method TEXT,"
            " outcome TEXT NOT NULL)",
            *_RECORD_INDEXES,
            "CREATE TABLE IF NOT EXISTS nodes (level INTEGER NOT NULL,"
            " node_index INTEGER NOT NULL, hash BLOB NOT NULL,"
            " PRIMARY KEY (level, node_index)) WITHOUT ROWID",
            "CREATE TABLE IF NOT EXISTS tree_heads (head_id INTEGER PRIMARY KEY,"
            " tree_size INTEGER NOT NULL, root BLOB NOT NULL, signed_head BLOB NOT NULL,"
            " timestamp_token BLOB, created_at INTEGER NOT NULL, timestamped_at INTEGER)",
            "CREATE INDEX IF NOT EXISTS tree_heads_size ON tree_heads (tree_size)",
            "CREATE TABLE IF NOT EXISTS exports (export_id INTEGER PRIMARY KEY,"
            " first_index INTEGER NOT NULL, end_index INTEGER NOT NULL,"
            " exported_at INTEGER NOT NULL, destination TEXT NOT NULL)",
        )

    def schema_lock(self) -> str | None:
        return None  # BEGIN IMMEDIATE already serialises creators

    def lock_size(self) -> str:
        return "SELECT tree_size FROM meta"  # BEGIN IMMEDIATE holds the write lock


_RECORD_INDEXES: Final = (
    "CREATE INDEX IF NOT EXISTS records_message_id ON records (message_id)",
    "CREATE INDEX IF NOT EXISTS records_client ON records (client, leaf_index)",
    "CREATE INDEX IF NOT EXISTS records_service ON records (service, leaf_index)",
    "CREATE INDEX IF NOT EXISTS records_appended_at ON records (appended_at)",
)


class _SqliteConnection:
    """sqlite3 in autocommit mode with explicit transactions."""

    def __init__(self, raw: sqlite3.Connection) -> None:
        self._raw = raw

    def begin(self, *, write: bool) -> None:
        self._raw.execute("BEGIN IMMEDIATE" if write else "BEGIN")

    def commit(self) -> None:
        self._raw.execute("COMMIT")

    def rollback(self) -> None:
        if self._raw.in_transaction:
            self._raw.execute("ROLLBACK")

    def execute(self, sql: str, params: Sequence[object] = ()) -> None:
        self._raw.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        self._raw.executemany(sql, rows)

    def insert_rows(self, table: str, columns: Sequence[str], rows: Sequence[Row]) -> None:
        marks = ", ".join("?" for _ in columns)
        self._raw.executemany(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",  # noqa: S608
            rows,
        )

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        return self._raw.execute(sql, params).fetchall()

    def close(self) -> None:
        self._raw.close()
