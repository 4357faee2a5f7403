"""The agencies' SQLite databases: created whole or not at all, opened off the event loop.

:func:`create_database` writes a new database into a temporary file beside the target,
syncs it and renames it into place, so a crash while generating never leaves a partial
database that a later run would take for a complete one. An existing file is never
overwritten.

:class:`Database` owns one connection and one worker thread; every statement runs on
that thread (:meth:`Database.run`), so the event loop never waits on the disk and the
connection is never used by two threads at once. Every database carries a ``meta``
table whose ``agency`` row says which agency's it is, checked when it is opened.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Final, TypeVar

from serai.errors import ConfigError

__all__ = ["Database", "create_database", "read_meta"]

_T = TypeVar("_T")

#: Version of the sample databases' schemas; a different one is refused when opened.
SCHEMA_VERSION: Final = "1"


def create_database(path: Path, populate: Callable[[sqlite3.Connection], None]) -> bool:
    """Create ``path`` with ``populate`` (which creates tables and fills them) unless it
    exists; returns whether it was created."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    try:
        connection = sqlite3.connect(temporary)
        try:
            # Inserts run in one implicit transaction; the rename below is what makes
            # the database appear whole.
            populate(connection)
            connection.commit()
        finally:
            connection.close()
        with temporary.open("rb") as handle:
            os.fsync(handle.fileno())
        if path.exists():  # another process created it meanwhile: keep theirs
            return False
        temporary.replace(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    return True


def read_meta(connection: sqlite3.Connection) -> dict[str, str]:
    """The ``meta`` table of a sample database as a dict (empty if it has none)."""
    try:
        rows = connection.execute("SELECT key, value FROM meta").fetchall()
    except sqlite3.DatabaseError:
        return {}
    return {str(key): str(value) for key, value in rows}


class Database:
    """One SQLite connection used from one worker thread (see the module docstring)."""

    def __init__(self, connection: sqlite3.Connection, executor: concurrent.futures.Executor):
        self._connection = connection
        self._executor = executor

    @classmethod
    def open(cls, path: Path, *, agency: str, writable: bool) -> Database:
        """Open the database of ``agency`` at ``path`` (read-only unless ``writable``);
        refuses a file that is missing, not SQLite, or another agency's."""
        executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"{agency}-db")
        try:
            connection = executor.submit(_connect, path, agency, writable).result()
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(connection, executor)

    async def run(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """``work(connection)`` on the database's thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, work, self._connection)

    def run_blocking(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """``work(connection)`` on the database's thread, waiting here (outside the loop)."""
        return self._executor.submit(work, self._connection).result()

    def close(self) -> None:
        """Close the connection and stop the thread."""
        with contextlib.suppress(RuntimeError):
            self._executor.submit(self._connection.close).result()
        self._executor.shutdown(wait=True)


def _connect(path: Path, agency: str, writable: bool) -> sqlite3.Connection:
    if not path.is_file():
        raise ConfigError(f"{path}: no such database")
    mode = "rw" if writable else "ro"
    try:
        connection = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode={mode}",
            uri=True,
            isolation_level=None,
            check_same_thread=False,
        )
    except sqlite3.Error as exc:
        raise ConfigError(f"{path}: cannot open the database: {exc}") from exc
    meta = read_meta(connection)
    if meta.get("agency") != agency or meta.get("schema_version") != SCHEMA_VERSION:
        connection.close()
        raise ConfigError(
            f"{path}: not a {agency} database of schema version {SCHEMA_VERSION} "
            f"(found agency {meta.get('agency')!r}, version {meta.get('schema_version')!r})"
        )
    if writable:
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = FULL")
    connection.execute("PRAGMA foreign_keys = ON")
    connection.execute("PRAGMA busy_timeout = 5000")
    return connection
