"""Group commit: the one thread that writes a log (DESIGN §6, Durability).

Appenders on the event loop put their records on the writer's queue and await a future.
The writer thread owns the write connection; it takes everything queued, up to a batch
bound (records and bytes), and commits it in ONE transaction: the leaf rows, the Merkle
nodes the new leaves complete (computed on a copy of the frontier) and the new tree size.

Invariants (each has a test in ``tests/test_messagelog_store.py``):

1. **Single writer.** Only the writer thread writes records and nodes, on its own
   connection; every other write of the log (tree heads, exports) is a job run by the same
   thread between batches. Across processes sharing a PostgreSQL log, each batch first
   locks the ``meta`` row, and a writer that finds the tree grown reloads its frontier.
2. **Durability.** A future is resolved only after the COMMIT of the batch holding its
   records returned: at SQLite's ``synchronous`` level (``FULL``: synced), or
   PostgreSQL's ``synchronous_commit``.
3. **No partial record, contiguous indices.** A batch commits whole or not at all. On any
   failure the writer rolls back, keeps its old frontier, drops its connection (the next
   batch reconnects) and fails every future of the batch with
   :class:`~gateway.commit.LogUnavailableError`; the next batch starts at the same index,
   so indices run from 0 without gaps. Records appended together
   (:meth:`Writer.submit_records` with several) are never split across batches.
4. **Nothing blocks the event loop.** Submitting takes a short lock and never waits for
   the database; futures are resolved with ``call_soon_threadsafe``.
5. **A stuck write is visible.** The thread notes the batch or job it is writing and when
   it began (:meth:`Writer.in_flight`, read from any thread without waiting), so a
   database that stops answering without failing (its process stopped, the network
   black-holed: no error comes, the write just waits) is seen while it waits; the gateway
   then refuses new exchanges and reports itself not ready (``message_log_stuck_after_s``,
   :mod:`gateway.serve`). The write itself is never abandoned: it commits once the
   database answers (appenders still waiting get their indices) or fails whole as in 3.

When a COMMIT's outcome is unknown (the connection broke during it), the batch is
reported failed although it may have committed: the exchange fails, which is safe, and
the next batch sees the stored size and reloads its frontier from the stored nodes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from gateway.commit import LogIndex, LogRecord, LogUnavailableError
from gateway.errors import GatewayError
from gateway.messagelog.store import Backend, Connection, load_frontier, record_meta, to_us
from serai.merkle import Frontier, leaf_hash

_T = TypeVar("_T")
_log = logging.getLogger(__name__)

_RECORD_COLUMNS: Final = (
    "leaf_index",
    "leaf",
    "leaf_hash",
    "appended_at",
    "kind",
    "message_id",
    "client",
    "service",
    "method",
    "outcome",
)
_NODE_COLUMNS: Final = ("level", "node_index", "hash")


@dataclass(frozen=True, slots=True, kw_only=True)
class WriterLimits:
    """Bounds of the writer's batches and queue."""

    #: Most records one batch transaction holds.
    max_batch_records: int = 2_000
    #: Most canonical-record bytes one batch holds (a larger group gets a batch alone).
    max_batch_bytes: int = 8 * 1024 * 1024
    #: Most records waiting; beyond, appends fail at once with ``log_unavailable``.
    max_queued_records: int = 100_000


@dataclass(frozen=True, slots=True, kw_only=True)
class InFlight:
    """A request to the store in flight: the writer's batch of records or job, or the
    read on the log's reader connection (``MessageLog.oldest_in_flight``)."""

    #: What it does, for an operator (``commit 3 record(s)``, ``read the tree state``).
    what: str
    #: Records in the batch (0 for a job).
    records: int
    #: When the thread began it, by ``time.monotonic()``.
    started: float
    #: The same moment by the writer's clock (timezone-aware), to show.
    started_at: dt.datetime

    def age_s(self, now: float | None = None) -> float:
        """Seconds since it began (``now`` by ``time.monotonic()``)."""
        return max(0.0, (time.monotonic() if now is None else now) - self.started)


@dataclass(slots=True)
class _Records:
    """Records appended together, and the future their indices resolve."""

    records: Sequence[LogRecord]
    leaves: Sequence[bytes]
    size_bytes: int
    future: asyncio.Future[list[LogIndex]]
    loop: asyncio.AbstractEventLoop


@dataclass(slots=True)
class _Job(Generic[_T]):
    """Another write of the log, run by the writer in its own transaction."""

    what: str
    apply: Callable[[Connection], _T]
    future: asyncio.Future[_T]
    loop: asyncio.AbstractEventLoop


class Writer:
    """The single writer of one log (see the module docstring).

    Built by :class:`gateway.messagelog.MessageLog` with the connection it opened and the
    frontier it checked; :meth:`start` it, and :meth:`stop` then :meth:`join` to drain.
    """

    def __init__(
        self,
        *,
        backend: Backend,
        connection: Connection,
        frontier: Frontier,
        limits: WriterLimits,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self._backend = backend
        self._conn: Connection | None = connection
        self._frontier = frontier
        self._limits = limits
        self._clock = clock
        self._queue: collections.deque[_Records | _Job[Any]] = collections.deque()
        self._queued_records = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._size = frontier.size
        #: Set by the thread only, replaced whole (one reference: safe to read anywhere).
        self._in_flight: InFlight | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"messagelog-writer {backend.description}", daemon=True
        )

    @property
    def size(self) -> int:
        """The tree size of this writer's last committed batch (or of the opened log)."""
        return self._size

    def start(self) -> None:
        """Start the writer thread."""
        self._thread.start()

    def in_flight(self) -> InFlight | None:
        """The batch or job the thread is writing now, ``None`` while it waits for work
        (invariant 5). Never waits; callable from any thread."""
        return self._in_flight

    def submit_records(
        self, records: Sequence[LogRecord], leaves: Sequence[bytes]
    ) -> asyncio.Future[list[LogIndex]]:
        """Queue ``records`` (whose canonical bytes are ``leaves``) to be committed
        together; the future resolves with their indices. Call from the event loop."""
        loop = asyncio.get_running_loop()
        item = _Records(
            records=records,
            leaves=leaves,
            size_bytes=sum(map(len, leaves)),
            future=loop.create_future(),
            loop=loop,
        )
        with self._cond:
            self._refuse_if_stopping(f"append {len(records)} record(s)")
            if self._queued_records + len(records) > self._limits.max_queued_records:
                raise LogUnavailableError(
                    f"the message log's queue is full ({self._queued_records} records "
                    "waiting): the database does not keep up"
                )
            self._queue.append(item)
            self._queued_records += len(records)
            self._cond.notify()
        return item.future

    def submit_job(self, what: str, apply: Callable[[Connection], _T]) -> asyncio.Future[_T]:
        """Queue ``apply`` to run in its own write transaction; the future resolves with
        its result. Call from the event loop."""
        loop = asyncio.get_running_loop()
        job = _Job(what=what, apply=apply, future=loop.create_future(), loop=loop)
        with self._cond:
            self._refuse_if_stopping(what)
            self._queue.append(job)
            self._cond.notify()
        return job.future

    def stop(self) -> None:
        """Refuse new work; the thread commits what is queued, then ends."""
        with self._cond:
            self._stopping = True
            self._cond.notify()

    def join(self) -> None:
        """Wait for the thread to end (blocking: run it in a worker thread)."""
        if self._thread.is_alive():
            self._thread.join()

    # -- the thread ------------------------------------------------------------------------

    def _refuse_if_stopping(self, what: str) -> None:
        if self._stopping:
            raise LogUnavailableError(f"cannot {what}: the message log is closed")

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._queue and not self._stopping:
                        self._cond.wait()
                    if not self._queue:
                        return
                    work = self._take()
                self._in_flight = noted = self._noted(work)
                try:
                    if isinstance(work, _Job):
                        self._run_job(work)
                    else:
                        self._commit_batch(work, noted.started_at)
                finally:
                    self._in_flight = None
        finally:
            self._drop_connection()

    def _noted(self, work: _Job[Any] | list[_Records]) -> InFlight:
        started = time.monotonic()
        if isinstance(work, _Job):
            return InFlight(what=work.what, records=0, started=started, started_at=self._clock())
        count = sum(len(item.records) for item in work)
        return InFlight(
            what=f"commit {count} record(s)",
            records=count,
            started=started,
            started_at=self._clock(),
        )

    def _take(self) -> _Job[Any] | list[_Records]:
        """The next job alone, or as many record groups as the batch bounds allow (the
        first group always, however large)."""
        head = self._queue[0]
        if isinstance(head, _Job):
            self._queue.popleft()
            return head
        batch: list[_Records] = []
        count = size = 0
        while self._queue:
            item = self._queue[0]
            if isinstance(item, _Job):
                break
            if batch and (
                count + len(item.records) > self._limits.max_batch_records
                or size + item.size_bytes > self._limits.max_batch_bytes
            ):
                break
            self._queue.popleft()
            batch.append(item)
            count += len(item.records)
            size += item.size_bytes
        self._queued_records -= count
        return batch

    def _commit_batch(self, batch: list[_Records], now: dt.datetime) -> None:
        try:
            frontier, indices = self._write_batch(batch, now)
        except Exception as exc:  # noqa: BLE001  (the thread outlives it; appenders hear of it)
            error = self._unavailable(f"commit {sum(len(i.records) for i in batch)} record(s)", exc)
            _settle_batch([(item.loop, item.future, error) for item in batch])
            return
        self._frontier = frontier
        self._size = frontier.size
        _settle_batch(
            [
                (item.loop, item.future, item_indices)
                for item, item_indices in zip(batch, indices, strict=True)
            ]
        )

    def _write_batch(
        self, batch: list[_Records], now: dt.datetime
    ) -> tuple[Frontier, list[list[LogIndex]]]:
        """One transaction holding every record of ``batch``, dated ``now`` (the clock is
        read once per batch); the new frontier and each group's indices. Raises whatever
        failed, after rolling back."""
        now_us = to_us(now)
        try:
            db = self._connection()
            db.begin(write=True)
            stored = int(db.rows(self._backend.lock_size())[0][0])
            base = self._frontier
            if stored != base.size:  # another process appended, or an unknown COMMIT won
                base = load_frontier(db, self._backend, stored)
            work = base.copy()
            records: list[tuple[object, ...]] = []
            nodes: list[tuple[object, ...]] = []
            indices: list[list[LogIndex]] = []
            for item in batch:
                group: list[LogIndex] = []
                for record, leaf in zip(item.records, item.leaves, strict=True):
                    digest = leaf_hash(leaf)
                    completed = work.append(digest)
                    index = completed[0][0][1]
                    meta = record_meta(record)
                    records.append(
                        (
                            index,
                            leaf,
                            digest,
                            now_us,
                            meta.kind.value,
                            meta.message_id,
                            meta.client,
                            meta.service,
                            meta.method,
                            meta.outcome,
                        )
                    )
                    nodes.extend((level, node, value) for (level, node), value in completed)
                    group.append(LogIndex(index))
                indices.append(group)
            db.insert_rows("records", _RECORD_COLUMNS, records)
            db.insert_rows("nodes", _NODE_COLUMNS, nodes)
            db.execute("UPDATE meta SET tree_size = ?", (work.size,))
            db.commit()
        except BaseException:
            self._rollback_and_drop()
            raise
        return work, indices

    def _run_job(self, job: _Job[Any]) -> None:
        try:
            db = self._connection()
            db.begin(write=True)
            try:
                result = job.apply(db)
                db.commit()
            except GatewayError:
                self._rollback()  # a refusal: the connection is fine
                raise
            except BaseException:
                self._rollback_and_drop()
                raise
        except GatewayError as exc:
            _settle(job.loop, job.future, exc)
        except Exception as exc:  # noqa: BLE001  (the thread outlives it; the caller hears of it)
            _settle(job.loop, job.future, self._unavailable(job.what, exc))
        else:
            _settle(job.loop, job.future, result)

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = self._backend.connect()
        return self._conn

    def _rollback(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(*self._backend.errors):
                self._conn.rollback()

    def _rollback_and_drop(self) -> None:
        self._rollback()
        self._drop_connection()

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(*self._backend.errors):
                self._conn.close()
            self._conn = None

    def _unavailable(self, what: str, exc: Exception) -> LogUnavailableError:
        if isinstance(exc, LogUnavailableError):
            return exc
        if not isinstance(exc, self._backend.errors):
            _log.error("message log writer: unexpected failure", exc_info=exc)
        error = LogUnavailableError(
            f"the message log cannot {what}: {self._backend.description} failed: "
            f"{type(exc).__name__}: {exc}"
        )
        error.__cause__ = exc
        return error


def _settle(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], outcome: object) -> None:
    """Resolve ``future`` on its loop with ``outcome`` (an exception fails it)."""
    _settle_batch([(loop, future, outcome)])


def _settle_batch(
    settlements: Sequence[tuple[asyncio.AbstractEventLoop, asyncio.Future[Any], object]],
) -> None:
    """Resolve each future on its loop with its outcome (an exception fails it): one
    wake-up per loop for the whole batch, not one per future."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], object]]] = {}
    for loop, future, outcome in settlements:
        by_loop.setdefault(loop, []).append((future, outcome))
    for loop, pending in by_loop.items():

        def apply(pending: list[tuple[asyncio.Future[Any], object]] = pending) -> None:
            for future, outcome in pending:
                if future.done():  # the appender was cancelled; its records are committed
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            loop.call_soon_threadsafe(apply)
