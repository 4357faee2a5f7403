"""The message log in PostgreSQL: for production, and for several gateway nodes of one
agency sharing one log (DESIGN §6, Stores).

Each batch is one transaction whose first statement locks the ``meta`` row (``SELECT
... FOR UPDATE``): writers in other processes wait for it, and a writer that finds the
tree grown under it reloads its frontier before appending. Leaves and nodes go in with
``COPY``. ``synchronous_commit`` is left as the server has it (on by default): COMMIT
returns once the WAL is flushed. Readers use ``REPEATABLE READ READ ONLY`` transactions,
one snapshot per call. A connection that broke is replaced on its next transaction, so
the log resumes by itself once the server is back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

import psycopg
from psycopg import sql

from gateway.messagelog.store import Connection, Row

#: How long connecting may take before the log reports itself unavailable, in seconds.
DEFAULT_CONNECT_TIMEOUT_S: Final = 5
#: Lock key of the schema-creating transaction ("serai-ml").
_SCHEMA_LOCK_KEY: Final = 0x7365_7261_692D_6D6C


class PostgresBackend:
    """A log in the PostgreSQL database at ``dsn`` (see the module docstring)."""

    errors: tuple[type[Exception], ...] = (psycopg.Error,)

    def __init__(self, dsn: str, *, connect_timeout_s: int = DEFAULT_CONNECT_TIMEOUT_S) -> None:
        self._dsn = dsn
        self._connect_timeout_s = int(connect_timeout_s)
        self.description = "the PostgreSQL message log"

    def connect(self) -> Connection:
        return _PostgresConnection(self._dsn, self._connect_timeout_s)

    def schema(self) -> Sequence[str]:
        identity = "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
        return (
            "CREATE TABLE IF NOT EXISTS meta (singleton INTEGER PRIMARY KEY"
            " CHECK (singleton = 1), schema_version INTEGER NOT NULL, log_id TEXT NOT NULL,"
            " tree_size BIGINT NOT NULL, created_at BIGINT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS records (leaf_index BIGINT PRIMARY KEY, leaf BYTEA,"
            " leaf_hash BYTEA NOT NULL, appended_at BIGINT NOT NULL, kind SMALLINT NOT NULL,"
            " message_id TEXT NOT NULL, client TEXT, service TEXT, method TEXT,"
            " outcome TEXT NOT NULL)",
            "CREATE INDEX IF NOT EXISTS records_message_id ON records (message_id)",
            "CREATE INDEX IF NOT EXISTS records_client ON records (client, leaf_index)",
            "CREATE INDEX IF NOT EXISTS records_service ON records (service, leaf_index)",
            "CREATE INDEX IF NOT EXISTS records_appended_at ON records (appended_at)",
            "CREATE TABLE IF NOT EXISTS nodes (level SMALLINT NOT NULL,"
            " node_index BIGINT NOT NULL, hash BYTEA NOT NULL,"
            " PRIMARY KEY (level, node_index))",
            f"CREATE TABLE IF NOT EXISTS tree_heads (head_id {identity},"
            " tree_size BIGINT NOT NULL, root BYTEA NOT NULL, signed_head BYTEA NOT NULL,"
            " timestamp_token BYTEA, created_at BIGINT NOT NULL, timestamped_at BIGINT)",
            "CREATE INDEX IF NOT EXISTS tree_heads_size ON tree_heads (tree_size)",
            f"CREATE TABLE IF NOT EXISTS exports (export_id {identity},"
            " first_index BIGINT NOT NULL, end_index BIGINT NOT NULL,"
            " exported_at BIGINT NOT NULL, destination TEXT NOT NULL)",
        )

    def schema_lock(self) -> str | None:
        return f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK_KEY})"

    def lock_size(self) -> str:
        return "SELECT tree_size FROM meta FOR UPDATE"


class _PostgresConnection:
    """psycopg 3 in autocommit mode with explicit transactions; reconnects when broken."""

    def __init__(self, dsn: str, connect_timeout_s: int) -> None:
        self._dsn = dsn
        self._timeout = connect_timeout_s
        self._raw = self._connect()

    def _connect(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self._dsn, autocommit=True, connect_timeout=self._timeout)

    def begin(self, *, write: bool) -> None:
        if self._raw.closed or self._raw.broken:
            self._raw.close()
            self._raw = self._connect()
        self._raw.execute("BEGIN" if write else "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def commit(self) -> None:
        self._raw.execute("COMMIT")

    def rollback(self) -> None:
        if not self._raw.closed and not self._raw.broken:
            self._raw.execute("ROLLBACK")

    def execute(self, sql_text: str, params: Sequence[object] = ()) -> None:
        self._raw.execute(_pg(sql_text), params)

    def executemany(self, sql_text: str, rows: Iterable[Sequence[object]]) -> None:
        with self._raw.cursor() as cursor:
            cursor.executemany(_pg(sql_text), rows)

    def insert_rows(self, table: str, columns: Sequence[str], rows: Sequence[Row]) -> None:
        statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
        )
        with self._raw.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)

    def rows(self, sql_text: str, params: Sequence[object] = ()) -> list[Row]:
        return self._raw.execute(_pg(sql_text), params).fetchall()

    def close(self) -> None:
        self._raw.close()


def _pg(sql_text: str) -> str:
    """``?`` placeholders as psycopg's ``%s`` (the log's SQL has no other ``?`` or ``%``)."""
    return sql_text.replace("?", "%s")
