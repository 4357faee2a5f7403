"""The gateway's durable, tamper-evident message log (DESIGN §6).

:class:`MessageLog` is the :class:`~gateway.commit.ExchangeLog` the exchange commits to,
kept in SQLite or PostgreSQL (:mod:`gateway.messagelog.store` describes the tables): an
RFC 9162 Merkle tree whose leaves are the records' canonical bytes.

Guarantees (each has a test in ``tests/test_messagelog_store.py`` or
``tests/test_messagelog_crash.py``):

1. **Durable before acknowledged.** ``append`` and the ``commit_*`` methods return a
   record's index only once the transaction that holds it committed (group commit through
   the single writer of :mod:`gateway.messagelog.writer`); a process killed at any moment
   loses no acknowledged record.
2. **No partial record, contiguous indices.** A failed commit raises
   :class:`~gateway.commit.LogUnavailableError` (``log_unavailable``) and leaves nothing;
   indices run from 0 without gaps, across failures, closes and crashes.
3. **One tree.** The stored nodes are exactly the perfect subtrees of the stored leaves:
   every root, inclusion and consistency proof is computed from them, and reopening the
   log continues the same tree. At open, the stored frontier is checked against the
   stored leaf count; a mismatch is refused with
   :class:`~gateway.messagelog.errors.LogCorruptError`, never repaired silently.
4. **Unavailability is reported, and passes.** While the database cannot be written
   (gone, locked, PostgreSQL down), appends fail at once with ``log_unavailable``; the
   next batch reconnects, so the log resumes when the database is back. A database
   that stops answering without failing (its process stopped, the network black-holed)
   is seen too: the writer notes the write it is on and the reader the read it is on
   (:meth:`MessageLog.oldest_in_flight`), :meth:`MessageLog.stuck_reason` names one in
   flight longer than a bound, and :meth:`MessageLog.refuse_if_stuck` refuses with
   ``log_unavailable`` at once meanwhile; the write itself commits when the database
   answers, or fails whole.
5. **Nothing blocks the event loop.** Writes run in the writer thread, reads one at a
   time in the log's own reader thread, on a connection of their own: reads queued
   behind one the database does not answer wait there, holding none of the threads of
   the loop's default executor (``asyncio.to_thread``), which the rest of the gateway
   (the ``/metrics`` exposition among others) needs meanwhile.

Assumptions: nobody but Serai writes the tables; one process per log id per SQLite file
at a time is the usual case, though several (sharing PostgreSQL, or SQLite on one host)
serialise correctly on the database's lock.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeVar

from gateway.commit import (
    LogIndex,
    LogRecord,
    LogUnavailableError,
    RecordKind,
    _require_kind,
    canonical_bytes,
)
from gateway.errors import GatewayError
from gateway.messagelog.errors import LogCorruptError, MessageLogError
from gateway.messagelog.postgres import DEFAULT_CONNECT_TIMEOUT_S, PostgresBackend
from gateway.messagelog.sqlite import DEFAULT_BUSY_TIMEOUT_MS, SqliteBackend
from gateway.messagelog.store import (
    HEAD_COLUMNS,
    RECORD_COLUMNS,
    Backend,
    Connection,
    StoredExport,
    StoredRecord,
    StoredTreeHead,
    Synchronous,
    check_stored,
    create_or_check,
    from_us,
    node_getter,
    stored_head,
    stored_record,
    to_us,
)
from gateway.messagelog.writer import InFlight, Writer, WriterLimits
from serai.errors import ErrorCode
from serai.merkle import (
    HASH_SIZE,
    Frontier,
    NodeGetter,
    consistency_proof,
    inclusion_proof,
    root_at,
)

__all__ = ["MessageLog", "MessageLogOptions"]

#: Most records one :meth:`MessageLog.records` call returns.
MAX_PAGE: Final = 10_000
_T = TypeVar("_T")


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageLogOptions:
    """How a :class:`MessageLog` stores and batches (units in the names)."""

    #: SQLite only: what a commit waits for (see :class:`Synchronous`).
    synchronous: Synchronous = Synchronous.FULL
    #: SQLite only: how long to wait for another connection's write lock.
    busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS
    #: PostgreSQL only: how long connecting may take before the log is unavailable.
    connect_timeout_s: int = DEFAULT_CONNECT_TIMEOUT_S
    #: Batch and queue bounds of the writer.
    limits: WriterLimits = field(default_factory=WriterLimits)
    #: Dates records and tree heads (timezone-aware).
    clock: Callable[[], dt.datetime] = _utc_now

    def __post_init__(self) -> None:
        object.__setattr__(self, "synchronous", Synchronous(self.synchronous))
        limits = self.limits
        if min(limits.max_batch_records, limits.max_batch_bytes, limits.max_queued_records) < 1:
            raise MessageLogError("the message log's batch and queue bounds must be positive")
        if self.busy_timeout_ms < 0 or self.connect_timeout_s < 1:
            raise MessageLogError("the message log's timeouts must be positive")


class MessageLog:
    """A durable Merkle log of one gateway's records (see the module docstring).

    Open it with :meth:`open`; ``await close()`` when done (it commits what is queued).
    """

    def __init__(
        self, *, backend: Backend, log_id: str, writer: Writer, options: MessageLogOptions
    ) -> None:
        """Use :meth:`open` instead."""
        self._backend = backend
        self._log_id = log_id
        self._writer = writer
        self._options = options
        self._reader: Connection | None = None
        self._read_lock = threading.Lock()
        #: Runs every read, one at a time (guarantee 5).
        self._read_thread = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="messagelog-reader"
        )
        #: The read on the reader connection now (set and cleared under ``_read_lock``).
        self._reading: InFlight | None = None
        self._closed = False

    @classmethod
    async def open(
        cls,
        location: str | Path,
        *,
        log_id: object,
        options: MessageLogOptions | None = None,
    ) -> MessageLog:
        """Open (creating if absent) the log of gateway ``log_id`` at ``location``: a
        SQLite file path, or a ``postgresql://`` URL. Refuses a log of another gateway or
        schema version (``invalid_config``) and a corrupt one (``internal``); an
        unreachable database is ``log_unavailable``."""
        options = options or MessageLogOptions()
        backend = _backend_for(location, options)
        ident = str(log_id)
        if not ident:
            raise MessageLogError("a message log needs a log id (the gateway id)")
        connection, size_frontier = await asyncio.to_thread(
            _open_and_check, backend, ident, to_us(options.clock())
        )
        writer = Writer(
            backend=backend,
            connection=connection,
            frontier=size_frontier,
            limits=options.limits,
            clock=options.clock,
        )
        writer.start()
        return cls(backend=backend, log_id=ident, writer=writer, options=options)

    @property
    def log_id(self) -> str:
        """The gateway whose log this is."""
        return self._log_id

    @property
    def size(self) -> int:
        """Records committed by this process's writer, or found at open (another process
        sharing the log may have added more: :meth:`tree_state` reads the database)."""
        return self._writer.size

    async def close(self) -> None:
        """Commit what is queued, stop the writer and close the connections. Later calls
        are refused with ``log_unavailable``; closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        self._writer.stop()
        await asyncio.to_thread(self._writer.join)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._read_thread, self._close_reader)  # after queued reads
        self._read_thread.shutdown(wait=False)

    # -- a write in flight (guarantee 4) ------------------------------------------------------

    def write_in_flight(self) -> InFlight | None:
        """The batch or job the writer is on now, ``None`` while it is idle. Never waits."""
        return self._writer.in_flight()

    def oldest_in_flight(self) -> InFlight | None:
        """The older of the write the writer is on and the read the reader connection is
        on (reads wait for one another, so that one is the oldest read); ``None`` when
        neither is. Never waits."""
        pending = [w for w in (self._writer.in_flight(), self._reading) if w is not None]
        return min(pending, key=lambda work: work.started, default=None)

    def stuck_reason(self, after_s: float) -> str | None:
        """Why the log counts as stuck: one request to the database (a batch, a job or
        a read) has been in flight for longer than ``after_s`` seconds, neither answered
        nor failed; ``None`` otherwise. Reads state only, never waits: callable at every
        probe. The text stays the same while the same request waits."""
        work = self.oldest_in_flight()
        if work is None or work.age_s() <= after_s:
            return None
        since = work.started_at.isoformat(timespec="seconds")
        return (
            f"{self._backend.description} does not answer: a request to {work.what} has "
            f"waited since {since}, more than {after_s:g} s"
        )

    def refuse_if_stuck(self, after_s: float) -> None:
        """Refuse with ``log_unavailable`` while :meth:`stuck_reason` gives a reason (a
        new exchange would only wait for its deadline)."""
        work = self.oldest_in_flight()
        if work is not None and work.age_s() > after_s:
            raise LogUnavailableError(
                f"the message log does not answer: a request to it has waited "
                f"{work.age_s():.0f} s (more than {after_s:g} s); new exchanges are refused "
                "until it is answered"
            )

    # -- appending (gateway.commit.ExchangeLog) ---------------------------------------------

    async def commit_request(self, record: LogRecord) -> LogIndex:
        """Append a ``REQUEST_SENT`` or ``REQUEST_RECEIVED`` record."""
        _require_kind(
            record, "commit_request", RecordKind.REQUEST_SENT, RecordKind.REQUEST_RECEIVED
        )
        return await self.append(record)

    async def commit_response(self, record: LogRecord) -> LogIndex:
        """Append a ``RESPONSE_SENT`` or ``RESPONSE_RECEIVED`` record."""
        _require_kind(
            record, "commit_response", RecordKind.RESPONSE_SENT, RecordKind.RESPONSE_RECEIVED
        )
        return await self.append(record)

    async def commit_admin_change(self, record: LogRecord) -> LogIndex:
        """Append an ``ADMIN_CHANGE`` record."""
        _require_kind(record, "commit_admin_change", RecordKind.ADMIN_CHANGE)
        return await self.append(record)

    async def append(self, record: LogRecord) -> LogIndex:
        """Append one record of any kind; its index, once durable."""
        (index,) = await self.append_all([record])
        return index

    async def append_all(self, records: Sequence[LogRecord]) -> list[LogIndex]:
        """Append ``records`` atomically: all committed in one transaction, at contiguous
        indices (returned in order), or none."""
        if not records:
            raise MessageLogError("append_all takes a non-empty sequence of records")
        leaves = []
        for record in records:
            if not isinstance(record, LogRecord):
                raise MessageLogError(f"the log appends LogRecords, not {type(record).__name__}")
            leaves.append(canonical_bytes(record))
        if self._closed:
            raise LogUnavailableError("the message log is closed")
        return await self._writer.submit_records(tuple(records), leaves)

    # -- the tree -----------------------------------------------------------------------------

    async def tree_state(self) -> tuple[int, bytes]:
        """The committed tree size and its root, read from the database."""

        def read(db: Connection) -> tuple[int, bytes]:
            size = _stored_size(db)
            return size, self._merkle(db, lambda nodes: root_at(size, nodes))

        return await self._read("read the tree state", read)

    async def root_at(self, size: int) -> bytes:
        """The root of the tree of the first ``size`` records."""

        def read(db: Connection) -> bytes:
            self._check_size(db, size)
            return self._merkle(db, lambda nodes: root_at(size, nodes))

        return await self._read(f"compute the root at size {size}", read)

    async def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """The RFC 9162 inclusion proof of record ``index`` in the tree of ``size``."""

        def read(db: Connection) -> list[bytes]:
            self._check_size(db, size)
            if type(index) is not int or not 0 <= index < size:
                raise MessageLogError(f"index {index!r} is not in a tree of size {size}")
            return self._merkle(db, lambda nodes: inclusion_proof(index, size, nodes))

        return await self._read(f"prove the inclusion of record {index}", read)

    async def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """The RFC 9162 consistency proof from size ``old_size`` to ``new_size``."""

        def read(db: Connection) -> list[bytes]:
            self._check_size(db, new_size)
            if type(old_size) is not int or not 0 <= old_size <= new_size:
                raise MessageLogError(f"old size {old_size!r} is not in 0..{new_size}")
            return self._merkle(db, lambda nodes: consistency_proof(old_size, new_size, nodes))

        return await self._read(f"prove consistency from {old_size} to {new_size}", read)

    # -- records ------------------------------------------------------------------------------

    async def record(self, index: int) -> StoredRecord:
        """The stored record at ``index`` (``not_found`` beyond the log)."""

        def read(db: Connection) -> StoredRecord:
            rows = db.rows(
                f"SELECT {RECORD_COLUMNS} FROM records WHERE leaf_index = ?",  # noqa: S608
                (index,),
            )
            if not rows:
                raise MessageLogError(
                    f"the message log has no record {index}", code=ErrorCode.NOT_FOUND
                )
            return stored_record(rows[0])

        return await self._read(f"read record {index}", read)

    async def records(
        self,
        *,
        message_id: str | None = None,
        client: object = None,
        service: object = None,
        method: str | None = None,
        kinds: Iterable[RecordKind] | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        start: int = 0,
        end: int | None = None,
        limit: int = 1000,
    ) -> list[StoredRecord]:
        """Stored records matching every given filter, by index, at most ``limit``.

        ``client`` and ``service`` are subsystem ids (or their strings) and match request
        records only; ``since`` (inclusive) and ``until`` (exclusive) bound the time of
        commit; ``start`` (inclusive) and ``end`` (exclusive) the index. Page by passing
        the last index + 1 as the next ``start``.
        """
        if not 0 < limit <= MAX_PAGE:
            raise MessageLogError(f"a page of records holds 1 to {MAX_PAGE}, not {limit}")
        where = ["leaf_index >= ?"]
        params: list[object] = [start]
        for column, value in (
            ("message_id", message_id),
            ("client", client),
            ("service", service),
            ("method", method),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(str(value))
        if kinds is not None:
            codes = sorted({RecordKind(kind).value for kind in kinds})
            if not codes:
                return []
            where.append(f"kind IN ({', '.join('?' for _ in codes)})")
            params.extend(codes)
        for clause, bound in (("appended_at >= ?", since), ("appended_at < ?", until)):
            if bound is not None:
                where.append(clause)
                params.append(to_us(bound))
        if end is not None:
            where.append("leaf_index < ?")
            params.append(end)
        query = (
            f"SELECT {RECORD_COLUMNS} FROM records WHERE {' AND '.join(where)}"  # noqa: S608
            " ORDER BY leaf_index LIMIT ?"
        )
        params.append(limit)
        return await self._read(
            "search records", lambda db: [stored_record(row) for row in db.rows(query, params)]
        )

    # -- tree heads and exports (opaque bytes for gateway.messagelog.heads) -------------------

    async def add_tree_head(
        self, *, tree_size: int, root: bytes, signed_head: bytes
    ) -> StoredTreeHead:
        """Store a signed tree head after checking that ``root`` is this log's root at
        ``tree_size`` (``failed_precondition`` otherwise)."""
        if type(root) is not bytes or len(root) != HASH_SIZE or type(signed_head) is not bytes:
            raise MessageLogError("a tree head has a 32-byte root and signed bytes")
        created = to_us(self._options.clock())

        def write(db: Connection) -> StoredTreeHead:
            self._check_size(db, tree_size)
            if self._merkle(db, lambda nodes: root_at(tree_size, nodes)) != root:
                raise MessageLogError(
                    f"the tree head's root is not this log's root at size {tree_size}",
                    code=ErrorCode.FAILED_PRECONDITION,
                )
            rows = db.rows(
                "INSERT INTO tree_heads (tree_size, root, signed_head, created_at)"  # noqa: S608
                f" VALUES (?, ?, ?, ?) RETURNING {HEAD_COLUMNS}",
                (tree_size, root, signed_head, created),
            )
            return stored_head(rows[0])

        return await self._write(f"store the tree head of size {tree_size}", write)

    async def set_timestamp(self, head_id: int, token: bytes) -> StoredTreeHead:
        """Attach the timestamp token to tree head ``head_id``. Setting the same token
        again is harmless; another one is refused (``already_exists``)."""
        if type(token) is not bytes or not token:
            raise MessageLogError("a timestamp token is non-empty bytes")
        at = to_us(self._options.clock())

        def write(db: Connection) -> StoredTreeHead:
            rows = db.rows(
                f"SELECT {HEAD_COLUMNS} FROM tree_heads WHERE head_id = ?",  # noqa: S608
                (head_id,),
            )
            if not rows:
                raise MessageLogError(f"no tree head {head_id}", code=ErrorCode.NOT_FOUND)
            head = stored_head(rows[0])
            if head.timestamp_token is not None:
                if head.timestamp_token != token:
                    raise MessageLogError(
                        f"tree head {head_id} is already timestamped with another token",
                        code=ErrorCode.ALREADY_EXISTS,
                    )
                return head
            rows = db.rows(
                "UPDATE tree_heads SET timestamp_token = ?, timestamped_at = ?"  # noqa: S608
                f" WHERE head_id = ? RETURNING {HEAD_COLUMNS}",
                (token, at, head_id),
            )
            return stored_head(rows[0])

        return await self._write(f"timestamp tree head {head_id}", write)

    async def latest_tree_head(self, *, timestamped: bool | None = None) -> StoredTreeHead | None:
        """The most recently stored tree head (only those with, or without, a timestamp
        token if ``timestamped`` is given), or ``None``."""
        condition = _timestamped_clause(timestamped)
        query = (
            f"SELECT {HEAD_COLUMNS} FROM tree_heads WHERE {condition}"  # noqa: S608
            " ORDER BY head_id DESC LIMIT 1"
        )

        def read(db: Connection) -> StoredTreeHead | None:
            rows = db.rows(query)
            return stored_head(rows[0]) if rows else None

        return await self._read("read the latest tree head", read)

    async def tree_heads(
        self,
        *,
        min_size: int = 0,
        max_size: int | None = None,
        timestamped: bool | None = None,
        after_id: int = 0,
        limit: int = 1000,
    ) -> list[StoredTreeHead]:
        """Stored tree heads with ``min_size <= tree_size <= max_size`` and
        ``head_id > after_id``, oldest first, at most ``limit``."""
        if not 0 < limit <= MAX_PAGE:
            raise MessageLogError(f"a page of tree heads holds 1 to {MAX_PAGE}, not {limit}")
        query = (
            f"SELECT {HEAD_COLUMNS} FROM tree_heads WHERE tree_size >= ?"  # noqa: S608
            f" AND tree_size <= ? AND head_id > ? AND {_timestamped_clause(timestamped)}"
            " ORDER BY head_id LIMIT ?"
        )
        params = (min_size, 2**63 - 1 if max_size is None else max_size, after_id, limit)
        return await self._read(
            "read tree heads", lambda db: [stored_head(row) for row in db.rows(query, params)]
        )

    async def add_export(self, *, first_index: int, end_index: int, destination: str) -> int:
        """Record that records ``first_index`` to ``end_index`` (exclusive) were exported
        to ``destination``; the export's id."""
        at = to_us(self._options.clock())

        def write(db: Connection) -> int:
            self._check_size(db, end_index)
            if not 0 <= first_index < end_index:
                raise MessageLogError(f"export range {first_index}..{end_index} is empty")
            rows = db.rows(
                "INSERT INTO exports (first_index, end_index, exported_at, destination)"
                " VALUES (?, ?, ?, ?) RETURNING export_id",
                (first_index, end_index, at, destination),
            )
            return int(rows[0][0])

        return await self._write("record an export", write)

    async def exports(self) -> list[StoredExport]:
        """Every recorded export, oldest first."""

        def read(db: Connection) -> list[StoredExport]:
            rows = db.rows(
                "SELECT export_id, first_index, end_index, exported_at, destination"
                " FROM exports ORDER BY export_id"
            )
            return [
                StoredExport(
                    export_id=int(e),
                    first_index=int(f),
                    end_index=int(n),
                    exported_at=from_us(int(at)),
                    destination=str(d),
                )
                for e, f, n, at, d in rows
            ]

        return await self._read("read exports", read)

    # -- machinery ----------------------------------------------------------------------------

    async def _write(self, what: str, apply: Callable[[Connection], _T]) -> _T:
        if self._closed:
            raise LogUnavailableError(f"cannot {what}: the message log is closed")
        return await self._writer.submit_job(what, apply)

    async def _read(self, what: str, apply: Callable[[Connection], _T]) -> _T:
        if self._closed:
            raise LogUnavailableError(f"cannot {what}: the message log is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._read_thread, self._read_blocking, what, apply)

    def _read_blocking(self, what: str, apply: Callable[[Connection], _T]) -> _T:
        """One read transaction on the reader connection (reconnecting if it was lost)."""
        with self._read_lock, self._noting_read(what):
            try:
                if self._reader is None:
                    self._reader = self._backend.connect()
                db = self._reader
                db.begin(write=False)
                try:
                    result = apply(db)
                finally:
                    with contextlib.suppress(*self._backend.errors):
                        db.rollback()  # read-only: nothing to commit
            except GatewayError:
                raise
            except self._backend.errors as exc:
                self._close_reader_locked()
                raise LogUnavailableError(
                    f"the message log cannot {what}: {self._backend.description} failed: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            return result

    @contextlib.contextmanager
    def _noting_read(self, what: str) -> Iterator[None]:
        self._reading = InFlight(
            what=what, records=0, started=time.monotonic(), started_at=self._options.clock()
        )
        try:
            yield
        finally:
            self._reading = None

    def _close_reader(self) -> None:
        with self._read_lock:
            self._close_reader_locked()

    def _close_reader_locked(self) -> None:
        if self._reader is not None:
            with contextlib.suppress(*self._backend.errors):
                self._reader.close()
            self._reader = None

    def _check_size(self, db: Connection, size: object) -> None:
        stored = _stored_size(db)
        if type(size) is not int or not 0 <= size <= stored:
            raise MessageLogError(f"size {size!r} is not in 0..{stored}, the log's size")

    def _merkle(self, db: Connection, compute: Callable[[NodeGetter], _T]) -> _T:
        """``compute`` with ``db``'s stored nodes; a node missing from the store is
        corruption, not a bad request."""
        try:
            return compute(node_getter(db))
        except KeyError as exc:
            raise LogCorruptError(
                f"{self._backend.description}: Merkle node {exc.args[0]} is missing"
            ) from exc


def _stored_size(db: Connection) -> int:
    return int(db.rows("SELECT tree_size FROM meta")[0][0])


def _timestamped_clause(timestamped: bool | None) -> str:
    if timestamped is None:
        return "1 = 1"
    return "timestamp_token IS NOT NULL" if timestamped else "timestamp_token IS NULL"


def _backend_for(location: str | Path, options: MessageLogOptions) -> Backend:
    if isinstance(location, str) and location.startswith(("postgresql://", "postgres://")):
        return PostgresBackend(location, connect_timeout_s=options.connect_timeout_s)
    if isinstance(location, str) and ("://" in location or _LIBPQ_KEYWORD.search(location)):
        # Never guess: a DSN taken for a file name would silently log to a new file.
        raise MessageLogError(
            f"a message log location is a SQLite path or a postgresql:// URL, not {location!r}",
            code=ErrorCode.INVALID_CONFIG,
        )
    return SqliteBackend(
        Path(location), synchronous=options.synchronous, busy_timeout_ms=options.busy_timeout_ms
    )


#: A libpq keyword=value connection string (``host=... dbname=...``).
_LIBPQ_KEYWORD: Final = re.compile(r"(^|\s)(host|hostaddr|dbname|user|port|service)=")


def _open_and_check(backend: Backend, log_id: str, now_us: int) -> tuple[Connection, Frontier]:
    """Connect, create or check the schema, and check the stored tree (see
    :func:`gateway.messagelog.store.check_stored`); the writer's connection and frontier."""
    try:
        db = backend.connect()
    except backend.errors as exc:
        raise LogUnavailableError(
            f"cannot open {backend.description}: {type(exc).__name__}: {exc}"
        ) from exc
    try:
        db.begin(write=True)
        try:
            size = create_or_check(db, backend, log_id, now_us)
            frontier = check_stored(db, backend, size)
            db.commit()
        except BaseException:
            with contextlib.suppress(*backend.errors):
                db.rollback()
            raise
    except BaseException as exc:
        with contextlib.suppress(*backend.errors):
            db.close()
        if isinstance(exc, backend.errors):
            raise LogUnavailableError(
                f"cannot open {backend.description}: {type(exc).__name__}: {exc}"
            ) from exc
        raise
    return db, frontier
