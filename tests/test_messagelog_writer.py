"""gateway.messagelog.writer: a write that neither answers nor fails (invariant 5).

The store is the real SQLite one, wrapped so that COMMIT (or a query) waits on a
:class:`threading.Event` the test sets, as a PostgreSQL server whose processes are
stopped would make it wait: the writer notes the batch in flight and since when (the log
its reads too), the log names it as stuck past a bound and refuses with
``log_unavailable`` meanwhile, and the batch then commits whole (its appenders get their
indices, a cancelled appender's record is kept) or fails whole (nothing of it stored,
the next batch at the same index).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.commit import LogRecord, LogUnavailableError
from gateway.messagelog import MessageLog, MessageLogOptions, WriterLimits
from gateway.messagelog.log import _open_and_check
from gateway.messagelog.sqlite import SqliteBackend
from gateway.messagelog.store import Connection, Row, to_us
from gateway.messagelog.writer import Writer
from serai.errors import ErrorCode, Origin
from serai.merkle import leaf_hash, root_hash

LOG_ID = "UZ/GOV/CADASTRE/gw:main"
T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
#: Bound on waiting for the writer thread to reach a point (never a speed claim).
WAIT_S = 30.0


class Gate:
    """Holds every COMMIT while closed; ``fail`` makes the held ones fail when opened."""

    def __init__(self) -> None:
        self.closed = False
        self.fail = False
        self.hold_reads = False  # hold queries too, not only COMMIT
        self.waiting = threading.Event()
        self._open = threading.Event()

    def close(self) -> None:
        self.closed = True
        self._open.clear()
        self.waiting.clear()

    def open(self) -> None:
        self.closed = False
        self._open.set()

    def pass_through(self) -> None:
        if not self.closed:
            return
        self.waiting.set()
        assert self._open.wait(WAIT_S), "the test never opened the gate"
        if self.fail:
            raise sqlite3.OperationalError("the connection broke during COMMIT")


@dataclass
class GatedConnection:
    raw: Connection
    gate: Gate

    def begin(self, *, write: bool) -> None:
        self.raw.begin(write=write)

    def commit(self) -> None:
        self.gate.pass_through()
        self.raw.commit()

    def rollback(self) -> None:
        self.raw.rollback()

    def execute(self, sql: str, params: Sequence[object] = ()) -> None:
        self.raw.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        self.raw.executemany(sql, rows)

    def insert_rows(self, table: str, columns: Sequence[str], rows: Sequence[Row]) -> None:
        self.raw.insert_rows(table, columns, rows)

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        if self.gate.hold_reads:
            self.gate.pass_through()
        return self.raw.rows(sql, params)

    def close(self) -> None:
        self.raw.close()


class GatedBackend:
    """The SQLite backend, every connection's COMMIT through ``gate``."""

    errors: tuple[type[Exception], ...] = (sqlite3.Error,)

    def __init__(self, path: Path, gate: Gate) -> None:
        self._inner = SqliteBackend(path)
        self.gate = gate
        self.description = self._inner.description

    def connect(self) -> Connection:
        return GatedConnection(self._inner.connect(), self.gate)

    def schema(self) -> Sequence[str]:
        return self._inner.schema()

    def schema_lock(self) -> str | None:
        return self._inner.schema_lock()

    def lock_size(self) -> str:
        return self._inner.lock_size()


@pytest.fixture
def gate() -> Gate:
    return Gate()


@pytest.fixture
async def log(tmp_path: Path, gate: Gate) -> AsyncIterator[MessageLog]:
    """A log whose writer commits through ``gate`` (built as MessageLog.open does)."""
    backend = GatedBackend(tmp_path / "messages.db", gate)
    options = MessageLogOptions(clock=lambda: T0)
    connection, frontier = await asyncio.to_thread(_open_and_check, backend, LOG_ID, to_us(T0))
    writer = Writer(
        backend=backend,
        connection=connection,
        frontier=frontier,
        limits=WriterLimits(),
        clock=options.clock,
    )
    writer.start()
    opened = MessageLog(backend=backend, log_id=LOG_ID, writer=writer, options=options)
    try:
        yield opened
    finally:
        gate.open()
        await opened.close()


def admin(change_id: str) -> LogRecord:
    return LogRecord.admin_change(change_id=change_id, description=b'{"change": 1}')


async def held(gate: Gate) -> None:
    """Until the writer waits at the gate."""
    assert await asyncio.to_thread(gate.waiting.wait, WAIT_S), "no COMMIT reached the gate"


async def idle(log: MessageLog) -> None:
    """Until the writer has finished its write (it clears the note after settling)."""
    deadline = time.monotonic() + WAIT_S
    while log.write_in_flight() is not None:
        assert time.monotonic() < deadline, f"still in flight: {log.write_in_flight()}"
        await asyncio.sleep(0.01)


async def stored_ids(log: MessageLog) -> list[str]:
    return [r.message_id for r in await log.records()]


async def test_a_held_batch_is_noted_named_stuck_then_commits_whole(
    log: MessageLog, gate: Gate
) -> None:
    assert await log.append(admin("before")) == 0
    await idle(log)
    assert log.write_in_flight() is None
    assert log.stuck_reason(0.0) is None
    log.refuse_if_stuck(0.0)  # nothing in flight: nothing to refuse

    gate.close()
    first = asyncio.create_task(log.append_all([admin("a-0"), admin("a-1"), admin("a-2")]))
    await held(gate)
    second = asyncio.create_task(log.append(admin("b")))  # queued behind the held batch
    work = log.write_in_flight()
    assert work is not None
    assert (work.what, work.records, work.started_at) == ("commit 3 record(s)", 3, T0)
    await asyncio.sleep(0.05)  # the write ages while the event loop runs on
    assert work.age_s() > 0
    assert log.stuck_reason(3600.0) is None  # not past the bound
    log.refuse_if_stuck(3600.0)
    reason = log.stuck_reason(0.0)
    assert reason is not None
    assert reason.startswith("the SQLite message log ")
    assert "commit 3 record(s)" in reason
    assert T0.isoformat(timespec="seconds") in reason
    assert log.stuck_reason(0.0) == reason  # the same text while the same write waits
    with pytest.raises(LogUnavailableError) as refused:
        log.refuse_if_stuck(0.0)
    assert (refused.value.code, refused.value.origin) == (ErrorCode.LOG_UNAVAILABLE, Origin.GATEWAY)
    assert "does not answer" in refused.value.message
    assert not first.done()
    assert not second.done()
    assert await stored_ids(log) == ["before"]  # readers see nothing of the held batch

    gate.open()
    assert await first == [1, 2, 3]
    assert await second == 4
    await idle(log)
    assert log.stuck_reason(0.0) is None
    log.refuse_if_stuck(0.0)
    assert await stored_ids(log) == ["before", "a-0", "a-1", "a-2", "b"]
    stored = await log.records()
    assert await log.tree_state() == (5, root_hash([r.leaf_hash for r in stored]))


async def test_a_held_batch_that_fails_leaves_nothing_and_no_gap(
    log: MessageLog, gate: Gate
) -> None:
    assert await log.append(admin("before")) == 0
    gate.close()
    gate.fail = True
    appending = asyncio.create_task(log.append_all([admin("x-0"), admin("x-1")]))
    await held(gate)
    assert log.stuck_reason(0.0) is not None
    gate.open()
    with pytest.raises(LogUnavailableError) as failed:
        await appending
    assert failed.value.code is ErrorCode.LOG_UNAVAILABLE
    assert "broke during COMMIT" in failed.value.message
    await idle(log)
    assert log.stuck_reason(0.0) is None
    gate.fail = False
    assert await log.append(admin("after")) == 1  # the same index the failed batch had
    assert await stored_ids(log) == ["before", "after"]


async def test_an_appender_that_gave_up_still_has_its_record_committed(
    log: MessageLog, gate: Gate
) -> None:
    """A caller whose deadline passed while the store was stuck stops waiting; the batch
    holding its record still commits when the store answers, whole."""
    gate.close()
    gave_up = asyncio.create_task(log.append(admin("gave-up")))
    await held(gate)
    waiting = asyncio.create_task(log.append(admin("waits")))
    gave_up.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gave_up
    gate.open()
    assert await waiting == 1
    await idle(log)
    records = await log.records()
    assert [r.message_id for r in records] == ["gave-up", "waits"]
    assert [r.leaf_hash for r in records] == [leaf_hash(r.leaf or b"") for r in records]


async def test_a_held_job_is_noted_too(log: MessageLog, gate: Gate) -> None:
    """Tree heads and exports are written by the same thread: one that hangs blocks the
    records queued behind it, so it is seen the same way."""
    assert await log.append(admin("r")) == 0
    gate.close()
    export = asyncio.create_task(log.add_export(first_index=0, end_index=1, destination="archive"))
    await held(gate)
    work = log.write_in_flight()
    assert work is not None
    assert (work.what, work.records) == ("record an export", 0)
    reason = log.stuck_reason(0.0)
    assert reason is not None
    assert "record an export" in reason
    gate.open()
    assert await export == 1
    await idle(log)
    assert log.stuck_reason(0.0) is None


async def test_a_held_read_is_noted_too(log: MessageLog, gate: Gate) -> None:
    """A read waits as long as a write on a store that does not answer (and the provider
    reads the log before it commits a request, gateway.replay): it is seen the same way."""
    assert await log.append(admin("r")) == 0
    await idle(log)
    gate.close()
    gate.hold_reads = True
    reading = asyncio.create_task(log.tree_state())
    await held(gate)
    assert log.write_in_flight() is None
    work = log.oldest_in_flight()
    assert work is not None
    assert (work.what, work.started_at) == ("read the tree state", T0)
    reason = log.stuck_reason(0.0)
    assert reason is not None
    assert "a request to read the tree state has waited since" in reason
    with pytest.raises(LogUnavailableError):
        log.refuse_if_stuck(0.0)
    gate.open()
    size, _root = await reading
    assert size == 1
    assert log.oldest_in_flight() is None  # cleared before the read returned
    assert log.stuck_reason(0.0) is None


async def test_reads_waiting_on_a_stuck_store_hold_no_thread_of_the_loop(
    log: MessageLog, gate: Gate
) -> None:
    """Reads that queue behind one the store does not answer wait in the log's own reader
    thread, not in the event loop's default executor: ``asyncio.to_thread`` (the
    ``/metrics`` exposition, the other parts of the gateway) still runs meanwhile."""
    gate.close()
    gate.hold_reads = True
    loop = asyncio.get_running_loop()
    workers = getattr(loop, "_default_executor", None)
    many = 2 * (getattr(workers, "_max_workers", 0) or 32) + 1  # more than it has threads
    reads = [asyncio.create_task(log.tree_state()) for _ in range(many)]
    await held(gate)
    await asyncio.sleep(0.1)  # every read has been handed to a thread, if it is to be
    assert await asyncio.wait_for(asyncio.to_thread(lambda: "ran"), WAIT_S) == "ran"
    gate.open()
    assert {size for size, _root in await asyncio.gather(*reads)} == {0}
