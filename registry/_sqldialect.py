"""The two databases behind :class:`registry.sqlstore.SqlRegistryStore`.

The store speaks one SQL (``?`` placeholders) to a :class:`_Connection`; a
:class:`_Dialect` holds what else differs between SQLite and PostgreSQL (column types,
how timestamps are stored, the driver's errors, the schema-creation lock). The SQLite
adapter runs in WAL mode with ``synchronous=FULL`` and foreign keys on, and begins write
transactions with ``BEGIN IMMEDIATE``; the PostgreSQL adapter reads in ``REPEATABLE
READ`` and reconnects when its connection is broken.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import psycopg

#: How long a SQLite writer waits for another process's write lock, in milliseconds.
SQLITE_BUSY_TIMEOUT_MS: Final = 10_000

_Row = tuple[Any, ...]


class _Connection(Protocol):
    """What the store needs of a database connection (placeholders are ``?``)."""

    def begin(self, *, write: bool) -> None: ...
    def execute(self, sql: str, params: Sequence[object] = ()) -> None: ...
    def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None: ...
    def rows(self, sql: str, params: Sequence[object] = ()) -> list[_Row]: ...
    def exists(self, sql: str, params: Sequence[object] = ()) -> bool: ...
    def close(self) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class _Dialect:
    """What differs between the databases, beyond the connection adapter."""

    blob: str
    timestamp: str
    #: Taken first in the schema-creating transaction (PostgreSQL: concurrent creators).
    schema_lock: str | None
    #: Whether the driver stores aware datetimes natively (else ISO 8601 text, UTC).
    native_timestamps: bool
    errors: tuple[type[Exception], ...]

    def time_to_db(self, at: dt.datetime) -> object:
        utc = at.astimezone(dt.UTC)
        return utc if self.native_timestamps else utc.isoformat()

    def time_from_db(self, value: object) -> dt.datetime:
        if isinstance(value, dt.datetime):
            return value.astimezone(dt.UTC)
        return dt.datetime.fromisoformat(str(value)).astimezone(dt.UTC)


_SQLITE: Final = _Dialect(
    blob="BLOB",
    timestamp="TEXT",
    schema_lock=None,
    native_timestamps=False,
    errors=(sqlite3.Error,),
)
_POSTGRES: Final = _Dialect(
    blob="BYTEA",
    timestamp="TIMESTAMPTZ",
    schema_lock="SELECT pg_advisory_xact_lock(7262058433)",
    native_timestamps=True,
    errors=(psycopg.Error,),
)


class _SqliteConnection:
    """sqlite3 in autocommit mode with explicit transactions; WAL, synchronous=FULL."""

    def __init__(self, raw: sqlite3.Connection) -> None:
        self._raw = raw
        try:
            raw.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            mode = raw.execute("PRAGMA journal_mode = WAL").fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                raise sqlite3.OperationalError(f"cannot enable WAL mode (got {mode!r})")
            raw.execute("PRAGMA synchronous = FULL")
            raw.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            raw.close()
            raise

    def begin(self, *, write: bool) -> None:
        # IMMEDIATE takes the database's write lock now, so checks see the latest state.
        self._raw.execute("BEGIN IMMEDIATE" if write else "BEGIN")

    def execute(self, sql: str, params: Sequence[object] = ()) -> None:
        self._raw.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        self._raw.executemany(sql, rows)

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[_Row]:
        return self._raw.execute(sql, params).fetchall()

    def exists(self, sql: str, params: Sequence[object] = ()) -> bool:
        return self._raw.execute(sql, params).fetchone() is not None

    def close(self) -> None:
        self._raw.close()


class _PostgresConnection:
    """psycopg 3 in autocommit mode with explicit transactions; reconnects when broken."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._raw = psycopg.connect(dsn, autocommit=True)

    def begin(self, *, write: bool) -> None:
        if self._raw.closed:
            self._raw = psycopg.connect(self._dsn, autocommit=True)
        # Writers serialise on the audit counter row; readers see one snapshot.
        self._raw.execute("BEGIN" if write else "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def execute(self, sql: str, params: Sequence[object] = ()) -> None:
        self._raw.execute(_pg(sql), params)

    def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        with self._raw.cursor() as cursor:
            cursor.executemany(_pg(sql), rows)

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[_Row]:
        return self._raw.execute(_pg(sql), params).fetchall()

    def exists(self, sql: str, params: Sequence[object] = ()) -> bool:
        return self._raw.execute(_pg(sql), params).fetchone() is not None

    def close(self) -> None:
        self._raw.close()


def _pg(sql: str) -> str:
    """``?`` placeholders as psycopg's ``%s`` (the store's SQL has no other ``?`` or ``%``)."""
    return sql.replace("?", "%s")
