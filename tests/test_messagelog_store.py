"""gateway.messagelog: one suite over SQLite and the real PostgreSQL.

Each invariant stated in the docstrings of ``gateway/messagelog/log.py`` and
``writer.py`` has a test here: contiguous indices under concurrent appends, roots and
proofs from the stored nodes, reopening continues the tree, a failed batch leaves nothing
and no gap, unavailability fails fast and passes, close drains, corruption is refused.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import gateway.messagelog as messagelog
from gateway.commit import (
    ExchangeLog,
    LogIndex,
    LogRecord,
    LogUnavailableError,
    RecordKind,
    canonical_bytes,
)
from gateway.errors import GatewayError
from gateway.headers import request_header_for
from gateway.messagelog import (
    LogCorruptError,
    MessageLog,
    MessageLogError,
    MessageLogOptions,
    WriterLimits,
)
from gateway.messagelog.sqlite import SqliteBackend
from serai.errors import ErrorCode, Origin
from serai.identifiers import GatewayId, ServiceId, SubsystemId
from serai.merkle import (
    EMPTY_ROOT,
    leaf_hash,
    root_hash,
    verify_consistency,
    verify_inclusion,
)
from tests.pgutil import fresh_database

LOG_ID = "UZ/GOV/CADASTRE/gw:main"
CLIENT_A = SubsystemId.parse("UZ/GOV/MINJUST/property")
CLIENT_B = SubsystemId.parse("UZ/GOV/TAX/assess")
PARCELS = ServiceId.parse("UZ/GOV/CADASTRE/registry/cadastre.v1.Cadastre/GetParcel")
OWNERS = ServiceId.parse("UZ/GOV/CADASTRE/owners/cadastre.v1.Owners/GetOwner")
PEER = GatewayId.parse("UZ/GOV/MINJUST/gw:main")
T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


# -- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Where a fresh log lives: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield str(tmp_path / "messages.db")
    else:
        with fresh_database() as dsn:
            yield pg_url(dsn)


@pytest.fixture
async def log(location: str) -> AsyncIterator[MessageLog]:
    opened = await MessageLog.open(location, log_id=LOG_ID)
    yield opened
    await opened.close()


def is_postgres(location: str) -> bool:
    return location.startswith("postgresql://")


def pg_url(dsn: str) -> str:
    """A libpq keyword DSN (as ``tests.pgutil`` gives) as the URL the log takes."""
    params = conninfo_to_dict(dsn)
    auth = quote(str(params.get("user", "postgres")))
    if params.get("password"):
        auth += ":" + quote(str(params["password"]))
    host, port = params.get("host", "127.0.0.1"), params.get("port", 5432)
    return f"postgresql://{auth}@{host}:{port}/{quote(str(params['dbname']))}"


def raw_execute(location: str, *statements: str) -> list[tuple[object, ...]]:
    """Run ``statements`` on a connection of the test's own; the last one's rows."""
    rows: list[tuple[object, ...]] = []
    if is_postgres(location):
        with psycopg.connect(location, autocommit=True) as pg:
            for statement in statements:
                cursor = pg.execute(statement)
                rows = cursor.fetchall() if cursor.description else []
        return rows
    db = sqlite3.connect(location, isolation_level=None)
    try:
        for statement in statements:
            rows = db.execute(statement).fetchall()
    finally:
        db.close()
    return rows


def jws_for(payload: bytes) -> bytes:
    """A compact JWS shape around ``payload`` (the store reads only the payload)."""

    def part(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    return part(b'{"alg":"ES256"}') + b"." + part(payload) + b"." + part(b"signature")


def request(
    message_id: str,
    *,
    client: SubsystemId = CLIENT_A,
    service: ServiceId = PARCELS,
    kind: RecordKind = RecordKind.REQUEST_RECEIVED,
    body: bytes = b"parcel 17",
) -> LogRecord:
    header = request_header_for(
        message_id=message_id, client=client, service=service, body=body, created_at=T0
    )
    return LogRecord(
        kind=kind,
        message_id=message_id,
        header_jws=jws_for(header.encode()),
        certificate_chain=(b"leaf-der", b"ca-der"),
        ocsp_response=b"ocsp-der",
        body=body,
        body_sha256=hashlib.sha256(body).digest(),
        peer_gateway=PEER,
    )


def response(message_id: str, *, outcome: str = "ok") -> LogRecord:
    body = b"answer"
    return LogRecord(
        kind=RecordKind.RESPONSE_SENT,
        message_id=message_id,
        header_jws=jws_for(b"response header bytes"),
        body=body,
        body_sha256=hashlib.sha256(body).digest(),
        peer_gateway=PEER,
        outcome=outcome,
    )


def admin(change_id: str, size: int = 64) -> LogRecord:
    return LogRecord.admin_change(change_id=change_id, description=b"{" + b"x" * size + b"}")


async def all_records(log: MessageLog) -> list[messagelog.StoredRecord]:
    found: list[messagelog.StoredRecord] = []
    while True:
        page = await log.records(start=len(found), limit=10_000)
        if not page:
            return found
        found.extend(page)


async def check_tree(log: MessageLog, leaves: list[bytes]) -> None:
    """The stored log holds exactly ``leaves`` and its root is theirs."""
    stored = await all_records(log)
    assert [r.index for r in stored] == list(range(len(leaves)))
    assert [r.leaf for r in stored] == leaves
    assert [r.leaf_hash for r in stored] == [leaf_hash(leaf) for leaf in leaves]
    size, root = await log.tree_state()
    assert size == len(leaves) == log.size
    assert root == root_hash([leaf_hash(leaf) for leaf in leaves])


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


# -- public surface ---------------------------------------------------------------------------


def test_public_surface() -> None:
    assert set(messagelog.__all__) == {
        "LogCorruptError",
        "MessageLog",
        "MessageLogError",
        "MessageLogOptions",
        "StoredExport",
        "StoredRecord",
        "StoredTreeHead",
        "Synchronous",
        "WriterLimits",
    }


# -- appending --------------------------------------------------------------------------------


async def test_empty_log(log: MessageLog) -> None:
    assert log.size == 0
    assert await log.tree_state() == (0, EMPTY_ROOT)
    assert await log.records() == []
    with pytest.raises(MessageLogError) as info:
        await log.record(0)
    assert info.value.code is ErrorCode.NOT_FOUND


async def test_concurrent_appends_get_contiguous_indices_and_the_root_is_theirs(
    log: MessageLog,
) -> None:
    """Invariant: contiguous indices; the stored nodes give the leaves' root."""
    records = [admin(f"c-{i}", size=i % 300) for i in range(1500)]

    async def appender(chunk: list[LogRecord]) -> list[LogIndex]:
        return [await log.append(record) for record in chunk]

    results = await asyncio.gather(*(appender(records[i::50]) for i in range(50)))
    indices = sorted(index for result in results for index in result)
    assert indices == list(range(len(records)))
    by_index: dict[int, LogRecord] = {
        index: record
        for result, i in zip(results, range(50), strict=True)
        for index, record in zip(result, records[i::50], strict=True)
    }
    await check_tree(log, [canonical_bytes(by_index[i]) for i in range(len(records))])


async def test_exchange_log_commits_check_the_kind(log: MessageLog) -> None:
    exchange: ExchangeLog = log
    assert await exchange.commit_request(request("m-1")) == 0
    assert await exchange.commit_response(response("m-1")) == 1
    assert await exchange.commit_admin_change(admin("acl-change-1")) == 2
    for method, record in [
        ("commit_request", response("m-2")),
        ("commit_response", request("m-2")),
        ("commit_admin_change", request("m-2")),
    ]:
        with pytest.raises(GatewayError) as info:
            await getattr(log, method)(record)
        assert info.value.code is ErrorCode.INTERNAL
    assert log.size == 3


async def test_append_all_is_atomic_and_never_split(location: str) -> None:
    """A group larger than the batch bound still commits whole, at contiguous indices."""
    options = MessageLogOptions(limits=WriterLimits(max_batch_records=4))
    log = await MessageLog.open(location, log_id=LOG_ID, options=options)
    try:
        group = [admin(f"g-{i}") for i in range(10)]
        singles = [admin(f"s-{i}") for i in range(20)]
        results = await asyncio.gather(log.append_all(group), *(log.append(r) for r in singles))
        grouped = results[0]
        assert isinstance(grouped, list)
        assert grouped == list(range(grouped[0], grouped[0] + 10))
        assert sorted([*grouped, *results[1:]]) == list(range(30))
    finally:
        await log.close()


async def test_a_full_queue_refuses_at_once(location: str) -> None:
    options = MessageLogOptions(limits=WriterLimits(max_queued_records=5))
    log = await MessageLog.open(location, log_id=LOG_ID, options=options)
    try:
        with pytest.raises(LogUnavailableError) as info:
            await log.append_all([admin(f"q-{i}") for i in range(6)])
        assert (info.value.code, info.value.origin) == (ErrorCode.LOG_UNAVAILABLE, Origin.GATEWAY)
        assert await log.append(admin("after")) == 0
    finally:
        await log.close()


# -- proofs -------------------------------------------------------------------------------------


async def test_roots_and_proofs_verify_against_the_leaves(log: MessageLog) -> None:
    leaves = []
    for i in range(67):
        record = admin(f"p-{i}")
        await log.append(record)
        leaves.append(leaf_hash(canonical_bytes(record)))
    for size in (1, 2, 3, 7, 8, 9, 31, 32, 33, 64, 67):
        root = await log.root_at(size)
        assert root == root_hash(leaves[:size])
        for index in {0, size // 2, size - 1}:
            proof = await log.inclusion_proof(index, size)
            verify_inclusion(leaves[index], index, size, proof, root)
        for old in {0, 1, size // 3, size - 1, size}:
            proof = await log.consistency_proof(old, size)
            verify_consistency(old, size, root_hash(leaves[:old]), root, proof)
    assert await log.root_at(0) == EMPTY_ROOT


@pytest.mark.parametrize(
    ("call", "args"),
    [
        pytest.param("root_at", (68,), id="root-beyond-size"),
        pytest.param("inclusion_proof", (5, 68), id="inclusion-size-beyond"),
        pytest.param("inclusion_proof", (5, 5), id="inclusion-index-not-below-size"),
        pytest.param("inclusion_proof", (-1, 5), id="inclusion-negative-index"),
        pytest.param("consistency_proof", (6, 5), id="consistency-old-above-new"),
        pytest.param("consistency_proof", (1, 68), id="consistency-new-beyond-size"),
    ],
)
async def test_proof_requests_out_of_range_are_refused(
    log: MessageLog, call: str, args: tuple[int, ...]
) -> None:
    await log.append_all([admin(f"r-{i}") for i in range(10)])
    with pytest.raises(MessageLogError) as info:
        await getattr(log, call)(*args)
    assert info.value.code is ErrorCode.INVALID_REQUEST


# -- reopening, and more than one writer ------------------------------------------------------


async def test_reopening_continues_the_same_tree(location: str) -> None:
    leaves: list[bytes] = []
    for round_ in range(3):
        log = await MessageLog.open(location, log_id=LOG_ID)
        try:
            assert log.size == len(leaves)
            records = [admin(f"round-{round_}-{i}") for i in range(13)]
            indices = await asyncio.gather(*(log.append(r) for r in records))
            assert sorted(indices) == list(range(len(leaves), len(leaves) + 13))
            order = sorted(zip(indices, records, strict=True), key=lambda pair: pair[0])
            leaves.extend(canonical_bytes(record) for _, record in order)
            await check_tree(log, leaves)
        finally:
            await log.close()


async def test_two_writers_on_one_log_share_one_tree(location: str) -> None:
    """Single writer per process; across writers the database lock serialises batches
    and a writer that finds the tree grown reloads its frontier."""
    first = await MessageLog.open(location, log_id=LOG_ID)
    second = await MessageLog.open(location, log_id=LOG_ID)
    try:
        records = [admin(f"w-{i}") for i in range(200)]
        writers = [first if i % 2 else second for i in range(len(records))]
        indices = await asyncio.gather(
            *(w.append(r) for w, r in zip(writers, records, strict=True))
        )
        assert sorted(indices) == list(range(len(records)))
        by_index: dict[int, LogRecord] = dict(zip(indices, records, strict=True))
        await check_tree_of(first, [canonical_bytes(by_index[i]) for i in range(len(records))])
    finally:
        await first.close()
        await second.close()


async def check_tree_of(log: MessageLog, leaves: list[bytes]) -> None:
    stored = await all_records(log)
    assert [r.leaf for r in stored] == leaves
    assert await log.tree_state() == (len(leaves), root_hash([leaf_hash(x) for x in leaves]))


@pytest.mark.parametrize(
    "location",
    [
        pytest.param("host=127.0.0.1 dbname=serai", id="libpq-keywords"),
        pytest.param("mysql://db/serai", id="other-url"),
    ],
)
async def test_open_refuses_a_location_it_would_have_to_guess(
    location: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MessageLogError) as info:
        await MessageLog.open(location, log_id=LOG_ID)
    assert info.value.code is ErrorCode.INVALID_CONFIG
    assert not any(tmp_path.iterdir())  # noqa: ASYNC240  (a test's own temporary directory)


async def test_open_refuses_the_log_of_another_gateway(location: str) -> None:
    log = await MessageLog.open(location, log_id=LOG_ID)
    await log.close()
    with pytest.raises(MessageLogError) as info:
        await MessageLog.open(location, log_id="UZ/GOV/TAX/gw:main")
    assert info.value.code is ErrorCode.INVALID_CONFIG
    assert "UZ/GOV/CADASTRE/gw:main" in info.value.message


@pytest.mark.parametrize(
    ("damage", "complaint"),
    [
        pytest.param(
            "UPDATE meta SET tree_size = tree_size + 1", "tree size of 6", id="size-too-large"
        ),
        pytest.param("DELETE FROM records WHERE leaf_index = 4", "last record", id="lost-leaf"),
        pytest.param("DELETE FROM nodes WHERE level = 2", "level 2", id="lost-nodes"),
        pytest.param(
            "UPDATE records SET leaf_hash = (SELECT leaf_hash FROM records WHERE leaf_index = 0)"
            " WHERE leaf_index = 4",
            "hash differs",
            id="torn-leaf-hash",
        ),
        pytest.param(
            "UPDATE meta SET schema_version = 99", "schema version 99", id="schema-version"
        ),
    ],
)
async def test_open_refuses_a_corrupt_log(location: str, damage: str, complaint: str) -> None:
    log = await MessageLog.open(location, log_id=LOG_ID)
    await log.append_all([admin(f"d-{i}") for i in range(5)])
    await log.close()
    raw_execute(location, damage)
    with pytest.raises(MessageLogError) as info:
        await MessageLog.open(location, log_id=LOG_ID)
    assert complaint in info.value.message
    if "schema" not in complaint:
        assert isinstance(info.value, LogCorruptError)
        assert info.value.code is ErrorCode.INTERNAL


# -- failures -----------------------------------------------------------------------------------


def poison(location: str) -> None:
    """Make the database refuse any record whose message id is ``poison``."""
    if is_postgres(location):
        raw_execute(
            location,
            "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " IF NEW.message_id = 'poison' THEN RAISE EXCEPTION 'poisoned record'; END IF;"
            " RETURN NEW; END $$",
            "CREATE TRIGGER poison BEFORE INSERT ON records FOR EACH ROW EXECUTE FUNCTION poison()",
        )
    else:
        raw_execute(
            location,
            "CREATE TRIGGER poison BEFORE INSERT ON records WHEN NEW.message_id = 'poison'"
            " BEGIN SELECT RAISE(ABORT, 'poisoned record'); END",
        )


async def test_a_failing_batch_appends_nothing_and_leaves_no_gap(
    log: MessageLog, location: str
) -> None:
    """Invariant: a batch commits whole or not at all; the next starts where it would have."""
    before = [admin(f"b-{i}") for i in range(5)]
    await log.append_all(before)
    poison(location)
    with pytest.raises(LogUnavailableError) as info:
        await log.append_all([admin("ok-1"), admin("poison"), admin("ok-2")])
    assert (info.value.code, info.value.origin) == (ErrorCode.LOG_UNAVAILABLE, Origin.GATEWAY)
    assert "poisoned record" in info.value.message
    assert log.size == 5
    assert [r.message_id for r in await log.records()] == [f"b-{i}" for i in range(5)]
    # Concurrent appenders around a poisoned one: whatever shared its batch failed with it,
    # and what committed is contiguous.
    others = [admin(f"c-{i}") for i in range(30)]
    outcomes = await asyncio.gather(
        *(log.append(r) for r in [*others[:15], admin("poison"), *others[15:]]),
        return_exceptions=True,
    )
    committed = sorted(o for o in outcomes if isinstance(o, int))
    assert all(isinstance(o, int | LogUnavailableError) for o in outcomes)
    assert committed == list(range(5, 5 + len(committed)))
    after = await log.append(admin("after"))
    assert after == 5 + len(committed)
    stored = await all_records(log)
    assert "poison" not in {r.message_id for r in stored}
    assert await log.tree_state() == (
        after + 1,
        root_hash([r.leaf_hash for r in stored]),
    )


async def test_sqlite_locked_by_another_fails_fast_then_resumes(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    options = MessageLogOptions(busy_timeout_ms=50)
    log = await MessageLog.open(path, log_id=LOG_ID, options=options)
    try:
        assert await log.append(admin("before")) == 0
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        started = time.monotonic()
        with pytest.raises(LogUnavailableError) as info:
            await log.append(admin("while-locked"))
        assert time.monotonic() - started < 2
        assert "locked" in info.value.message
        holder.execute("ROLLBACK")
        holder.close()
        assert await log.append(admin("after")) == 1
        assert [r.message_id for r in await log.records()] == ["before", "after"]
    finally:
        await log.close()


@pytest.mark.postgres
async def test_postgres_down_fails_fast_then_resumes(postgres_dsn: str) -> None:
    """The server refuses connections to the log's database, and its sessions end: appends
    fail with log_unavailable; once it accepts again the next batch reconnects."""
    name = conninfo_to_dict(postgres_dsn)["dbname"]
    admin_dsn = make_conninfo(postgres_dsn, dbname="postgres")
    log = await MessageLog.open(pg_url(postgres_dsn), log_id=LOG_ID)
    try:
        assert await log.append(admin("before")) == 0
        with psycopg.connect(admin_dsn, autocommit=True) as pg:
            pg.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            pg.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
        started = time.monotonic()
        for attempt in range(3):
            with pytest.raises(LogUnavailableError) as info:
                await log.append(admin(f"down-{attempt}"))
            assert info.value.code is ErrorCode.LOG_UNAVAILABLE
        assert time.monotonic() - started < 5
        with pytest.raises(LogUnavailableError):
            await log.tree_state()
        with psycopg.connect(admin_dsn, autocommit=True) as pg:
            pg.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        assert await log.append(admin("after")) == 1
        assert [r.message_id for r in await log.records()] == ["before", "after"]
    finally:
        await log.close()


async def test_close_drains_the_queue_then_refuses(location: str) -> None:
    log = await MessageLog.open(location, log_id=LOG_ID)
    tasks = [asyncio.create_task(log.append(admin(f"q-{i}"))) for i in range(300)]
    await asyncio.sleep(0)  # every task has queued its record
    await log.close()
    assert sorted(await asyncio.gather(*tasks)) == list(range(300))
    for call in (log.append(admin("late")), log.tree_state(), log.record(0)):
        with pytest.raises(LogUnavailableError):
            await call
    await log.close()  # harmless
    reopened = await MessageLog.open(location, log_id=LOG_ID)
    assert reopened.size == 300
    await reopened.close()


# -- reading ------------------------------------------------------------------------------------


async def test_filters(location: str) -> None:
    clock = FakeClock()
    log = await MessageLog.open(location, log_id=LOG_ID, options=MessageLogOptions(clock=clock))
    try:
        await log.append(request("m-1", client=CLIENT_A, service=PARCELS))  # 0
        await log.append(response("m-1"))  # 1
        clock.now = T0 + dt.timedelta(minutes=1)
        await log.append(request("m-2", client=CLIENT_B, service=OWNERS))  # 2
        await log.append(response("m-2", outcome="access_denied"))  # 3
        clock.now = T0 + dt.timedelta(minutes=2)
        await log.append(admin("acl-change-1"))  # 4
        await log.append(
            request("m-3", client=CLIENT_A, service=OWNERS, kind=RecordKind.REQUEST_SENT)
        )

        async def indices(**filters: object) -> list[int]:
            return [r.index for r in await log.records(**filters)]  # type: ignore[arg-type]

        assert await indices(message_id="m-2") == [2, 3]
        assert await indices(client=CLIENT_A) == [0, 5]
        assert await indices(client=str(CLIENT_B)) == [2]
        assert await indices(service=PARCELS.subsystem) == [0]
        assert await indices(service=OWNERS.subsystem) == [2, 5]
        assert await indices(method=OWNERS.method_path) == [2, 5]
        assert await indices(kinds=[RecordKind.RESPONSE_SENT]) == [1, 3]
        assert await indices(kinds=[RecordKind.ADMIN_CHANGE, RecordKind.REQUEST_SENT]) == [4, 5]
        assert await indices(kinds=[]) == []
        assert await indices(since=T0 + dt.timedelta(minutes=1)) == [2, 3, 4, 5]
        assert await indices(until=T0 + dt.timedelta(minutes=1)) == [0, 1]
        assert await indices(start=1, end=4) == [1, 2, 3]
        assert await indices(client=CLIENT_A, start=1) == [5]
        assert await indices(limit=2, start=3) == [3, 4]

        first = await log.record(0)
        assert (first.client, first.service, first.method) == (
            str(CLIENT_A),
            str(PARCELS.subsystem),
            PARCELS.method_path,
        )
        assert first.appended_at == T0
        assert first.record() == request("m-1", client=CLIENT_A, service=PARCELS)
        denied = await log.record(3)
        assert (denied.kind, denied.outcome, denied.client) == (
            RecordKind.RESPONSE_SENT,
            "access_denied",
            None,
        )
        change = await log.record(4)
        assert (change.client, change.service, change.method) == (None, None, None)
        with pytest.raises(MessageLogError):
            await log.records(limit=0)
    finally:
        await log.close()


async def test_a_pruned_record_keeps_its_hash(log: MessageLog, location: str) -> None:
    await log.append(admin("to-prune"))
    raw_execute(location, "UPDATE records SET leaf = NULL WHERE leaf_index = 0")
    stored = await log.record(0)
    assert stored.leaf is None
    assert stored.leaf_hash == leaf_hash(canonical_bytes(admin("to-prune")))
    with pytest.raises(MessageLogError) as info:
        stored.record()
    assert info.value.code is ErrorCode.NOT_FOUND


# -- tree heads and exports ---------------------------------------------------------------------


async def test_tree_heads_round_trip(log: MessageLog) -> None:
    await log.append_all([admin(f"h-{i}") for i in range(5)])
    size, root = await log.tree_state()
    assert await log.latest_tree_head() is None
    first = await log.add_tree_head(tree_size=3, root=await log.root_at(3), signed_head=b"\x00sth3")
    second = await log.add_tree_head(tree_size=size, root=root, signed_head=b"\xffsth5")
    assert (second.tree_size, second.root, second.signed_head) == (5, root, b"\xffsth5")
    assert second.timestamp_token is None
    assert second.timestamped_at is None
    with pytest.raises(MessageLogError) as info:
        await log.add_tree_head(tree_size=4, root=root, signed_head=b"x")
    assert info.value.code is ErrorCode.FAILED_PRECONDITION
    with pytest.raises(MessageLogError):
        await log.add_tree_head(tree_size=6, root=root, signed_head=b"x")

    stamped = await log.set_timestamp(first.head_id, b"\x30\x82token")
    assert stamped.timestamp_token == b"\x30\x82token"
    assert stamped.timestamped_at is not None
    assert await log.set_timestamp(first.head_id, b"\x30\x82token") == stamped
    with pytest.raises(MessageLogError) as info:
        await log.set_timestamp(first.head_id, b"other")
    assert info.value.code is ErrorCode.ALREADY_EXISTS
    with pytest.raises(MessageLogError) as info:
        await log.set_timestamp(999, b"token")
    assert info.value.code is ErrorCode.NOT_FOUND

    assert await log.latest_tree_head() == second
    assert await log.latest_tree_head(timestamped=True) == stamped
    assert await log.latest_tree_head(timestamped=False) == second
    assert await log.tree_heads() == [stamped, second]
    assert await log.tree_heads(min_size=4) == [second]
    assert await log.tree_heads(max_size=4) == [stamped]
    assert await log.tree_heads(after_id=first.head_id) == [second]
    assert await log.tree_heads(timestamped=False) == [second]


async def test_exports_are_recorded(log: MessageLog) -> None:
    await log.append_all([admin(f"e-{i}") for i in range(4)])
    export_id = await log.add_export(first_index=0, end_index=4, destination="bundle-1.tar")
    (export,) = await log.exports()
    assert (export.export_id, export.first_index, export.end_index, export.destination) == (
        export_id,
        0,
        4,
        "bundle-1.tar",
    )
    with pytest.raises(MessageLogError):
        await log.add_export(first_index=0, end_index=5, destination="too-far")


# -- group commit and the event loop ------------------------------------------------------------


class CountingClock:
    """Counts its calls: the writer reads the clock once per batch."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> dt.datetime:
        self.calls += 1
        return dt.datetime.now(dt.UTC)


async def test_concurrent_appends_share_batches(location: str) -> None:
    clock = CountingClock()
    log = await MessageLog.open(location, log_id=LOG_ID, options=MessageLogOptions(clock=clock))
    try:
        opened_calls = clock.calls
        await asyncio.gather(*(log.append(admin(f"g-{i}")) for i in range(500)))
        batches = clock.calls - opened_calls
        assert 1 <= batches < 100
        stamps = {r.appended_at for r in await all_records(log)}
        assert len(stamps) == batches  # one commit time per batch
    finally:
        await log.close()


async def test_a_waiting_writer_does_not_block_the_event_loop(tmp_path: Path) -> None:
    """The writer waits 1 s for a lock held elsewhere; the loop keeps ticking."""
    path = tmp_path / "busy.db"
    log = await MessageLog.open(
        path, log_id=LOG_ID, options=MessageLogOptions(busy_timeout_ms=1000)
    )
    try:
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        append = asyncio.create_task(log.append(admin("waits")))
        worst = 0.0
        last = time.monotonic()
        while not append.done():
            await asyncio.sleep(0.005)
            now = time.monotonic()
            worst, last = max(worst, now - last), now
        holder.execute("ROLLBACK")
        holder.close()
        with pytest.raises(LogUnavailableError):
            await append
        assert worst < 0.25
    finally:
        await log.close()


@pytest.mark.parametrize("level", list(messagelog.Synchronous))
def test_sqlite_runs_in_wal_with_the_configured_synchronous_level(
    tmp_path: Path, level: messagelog.Synchronous
) -> None:
    connection = SqliteBackend(tmp_path / "s.db", synchronous=level, busy_timeout_ms=1234).connect()
    try:
        codes = {"NORMAL": 1, "FULL": 2, "EXTRA": 3}
        assert connection.rows("PRAGMA synchronous") == [(codes[level.value],)]
        assert connection.rows("PRAGMA journal_mode") == [("wal",)]
        assert connection.rows("PRAGMA busy_timeout") == [(1234,)]
    finally:
        connection.close()
