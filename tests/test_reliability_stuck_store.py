"""A PostgreSQL message-log store that stops answering without failing (DESIGN §6 and §9,
Reliability): every process of a private cluster (``tests/pgcluster.py``) SIGSTOPped, so
connections stay open, nothing answers and nothing fails, as across a network partition.

Checked with real parts:

- the message log alone (default run): a batch sent to the frozen server is noted in
  flight, named stuck past the bound (``stuck_reason``), refused at once
  (``refuse_if_stuck``, ``log_unavailable``), and once the server resumes it commits
  whole and its appender gets its indices;
- the federation of ``tests/test_reliability_tsa_postgres.py`` with both gateways' logs
  in the cluster (slow): past ``message_log_stuck_after_s`` each gateway's ``/readyz``
  is not ready with a reason naming the PostgreSQL message log, a new exchange is refused
  with ``log_unavailable`` (UNAVAILABLE, origin gateway) well before its deadline and
  counted in ``serai_gateway_refusals_total``, ``serai_gateway_log_in_flight_age_seconds``
  shows the wait, ``message_log_stuck`` is logged; after SIGCONT the exchange that
  waited across the freeze is answered and in both logs, both gateways are ready again
  without a restart (``message_log_resumed``), and ``serai log verify`` passes.

Waits are bounded generously (a shared 2-core machine): bounds against hangs, not speed
claims. "Well before its deadline" is half of a 30-second deadline against a refusal
that needs no I/O.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Final, TypeVar

import grpc
import psycopg
import pytest

from gateway.commit import LogRecord, LogUnavailableError
from gateway.config import DEFAULT_MESSAGE_LOG_STUCK_AFTER_S, parse_config, render_config
from gateway.messagelog import MessageLog
from serai.errors import ConfigError, ErrorCode, Origin
from serai.merkle import leaf_hash, root_hash
from tests.pgcluster import PrivateCluster, private_cluster
from tests.test_reliability_tsa_postgres import (
    call,
    federation,
    log_verify,
    metric,
    readyz,
    wait_for_timestamped,
)

pytestmark = pytest.mark.timeout(900)

LOG_ID: Final = "UZ/GOV/CADASTRE/gw:main"
#: The bound the tests set (``message_log_stuck_after_s``); the default is 10 s.
STUCK_AFTER_S: Final = 2.0
#: Bound on waiting for something to happen (never a speed claim).
WAIT_S: Final = 120.0
#: Deadline of the exchange refused while the store is stuck.
REFUSED_DEADLINE_S: Final = 30.0
#: Deadline of the exchange that waits across the freeze: longer than the freeze.
WAITING_DEADLINE_S: Final = 240.0

_T = TypeVar("_T")


def admin(change_id: str) -> LogRecord:
    return LogRecord.admin_change(change_id=change_id, description=b'{"change": 1}')


async def until(what: str, check: Callable[[], _T | None]) -> _T:
    """``check()`` until it gives a value (bounded by :data:`WAIT_S`)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        value = check()
        if value is not None:
            return value
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateCluster]:
    with private_cluster() as running:
        yield running


@pytest.fixture
async def pg_log(cluster: PrivateCluster) -> AsyncIterator[tuple[MessageLog, str]]:
    dsn = cluster.create_database(f"stuck_{uuid.uuid4().hex[:12]}")
    log = await MessageLog.open(dsn, log_id=LOG_ID)
    try:
        yield log, dsn
    finally:
        await log.close()


def test_the_bound_is_a_setting(tmp_path: Path) -> None:
    text = render_config(gateway_id=LOG_ID, peer_address="127.0.0.1:5501")
    assert f"message_log_stuck_after_s = {int(DEFAULT_MESSAGE_LOG_STUCK_AFTER_S)}" in text
    path = tmp_path / "gateway.toml"
    assert parse_config(path, text).message_log_stuck_after_s == 10.0
    changed = text.replace("message_log_stuck_after_s = 10", "message_log_stuck_after_s = 2.5")
    assert parse_config(path, changed).message_log_stuck_after_s == 2.5
    with pytest.raises(ConfigError, match="message_log_stuck_after_s"):
        parse_config(path, text.replace("stuck_after_s = 10", "stuck_after_s = 0"))


async def test_a_batch_sent_to_a_frozen_server_is_seen_stuck_then_commits_whole(
    cluster: PrivateCluster, pg_log: tuple[MessageLog, str]
) -> None:
    log, dsn = pg_log
    assert await log.append(admin("before")) == 0
    # The writer clears its note just after settling the appender.
    await until("the writer is idle", lambda: log.oldest_in_flight() is None or None)
    assert log.stuck_reason(0.0) is None
    with cluster.frozen():
        appending = asyncio.create_task(log.append_all([admin("f-0"), admin("f-1")]))
        reason = await until(
            "the log names the batch stuck", lambda: log.stuck_reason(STUCK_AFTER_S)
        )
        assert reason.startswith(
            "the PostgreSQL message log does not answer: a request to commit 2 record(s) "
            "has waited since "
        ), reason
        work = log.oldest_in_flight()
        assert work is not None
        assert work.age_s() > STUCK_AFTER_S
        with pytest.raises(LogUnavailableError) as refused:
            log.refuse_if_stuck(STUCK_AFTER_S)
        assert (refused.value.code, refused.value.origin) == (
            ErrorCode.LOG_UNAVAILABLE,
            Origin.GATEWAY,
        )
        assert not appending.done()
    # Resumed: the batch that waited commits whole and its appender gets its indices.
    assert await asyncio.wait_for(appending, WAIT_S) == [1, 2]
    await until("the writer is idle", lambda: log.oldest_in_flight() is None or None)
    assert log.stuck_reason(STUCK_AFTER_S) is None
    log.refuse_if_stuck(STUCK_AFTER_S)
    with psycopg.connect(dsn, connect_timeout=30) as conn:
        rows = conn.execute(
            "SELECT leaf_index, message_id, leaf, leaf_hash FROM records ORDER BY leaf_index"
        ).fetchall()
        (tree_size,) = conn.execute("SELECT tree_size FROM meta").fetchone() or (None,)
    assert [(i, m) for i, m, _, _ in rows] == [(0, "before"), (1, "f-0"), (2, "f-1")]
    assert all(leaf_hash(bytes(leaf)) == bytes(digest) for _, _, leaf, digest in rows)
    assert tree_size == 3
    assert await log.tree_state() == (3, root_hash([bytes(r[3]) for r in rows]))


# -- the federation ------------------------------------------------------------------------


def _kinds(dsn: str, message_id: str) -> set[int]:
    with psycopg.connect(dsn, connect_timeout=30) as conn:
        rows = conn.execute("SELECT kind FROM records WHERE message_id = %s", (message_id,))
        return {int(kind) for (kind,) in rows}


def _until(what: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.2)


@pytest.mark.slow
def test_gateways_on_a_frozen_store_refuse_at_once_and_recover(
    cluster: PrivateCluster, tmp_path: Path
) -> None:
    dsns = {role: cluster.create_database(f"fed_{role}") for role in ("consumer", "provider")}
    bound = {"message_log_stuck_after_s": f"{STUCK_AFTER_S:g}"}
    settings = {"consumer": bound, "provider": bound}
    pool = concurrent.futures.ThreadPoolExecutor(1)
    with (
        federation(tmp_path, settings=settings, log_urls=dsns) as fed,
        grpc.insecure_channel(fed.consumer_is) as channel,
    ):
        addresses = fed.metrics
        _until("an exchange is answered", lambda: call(channel, REFUSED_DEADLINE_S).ok)
        for role in fed.gateways:
            assert metric(addresses[role], "serai_gateway_log_stuck_after_seconds") == 2.0
        refused_before = metric(
            addresses["consumer"], "serai_gateway_refusals_total", code="log_unavailable"
        )
        figures: dict[str, float] = {}
        with cluster.frozen():
            frozen = time.monotonic()
            waiting = pool.submit(call, channel, WAITING_DEADLINE_S)
            texts: dict[str, str] = {}
            for role in fed.gateways:

                def not_ready(role: str = role) -> bool:
                    status, text = readyz(addresses[role])
                    texts[role] = text
                    return status == 503 and "message log does not answer" in text

                _until(f"the {role} gateway reports the stuck log", not_ready)
                figures[f"{role}_not_ready_after_freeze_s"] = time.monotonic() - frozen
                assert "the PostgreSQL message log does not answer: a request to " in texts[role]
                age = metric(addresses[role], "serai_gateway_log_in_flight_age_seconds")
                assert age > STUCK_AFTER_S, (role, age)
                fed.gateways[role].wait_for("message_log_stuck", timeout_s=WAIT_S)
            refused = call(channel, REFUSED_DEADLINE_S)
            assert refused.status == "UNAVAILABLE", refused
            assert refused.error is not None, refused
            assert refused.error.startswith("gateway:log_unavailable:"), refused
            assert "does not answer" in refused.error, refused
            assert refused.elapsed_s < REFUSED_DEADLINE_S / 2, refused  # not the deadline
            # Counted by the gateway once its handler ends, which may be just after the
            # client has the status.
            _until(
                "the refusal is counted",
                lambda: (
                    metric(
                        addresses["consumer"],
                        "serai_gateway_refusals_total",
                        code="log_unavailable",
                    )
                    >= refused_before + 1
                ),
            )
            assert not waiting.done()
        # Resumed: the exchange that waited across the freeze is answered, and logged.
        resumed = time.monotonic()
        figures["frozen_s"] = resumed - frozen
        figures["refused_in_s"] = refused.elapsed_s
        answered = waiting.result(timeout=WAITING_DEADLINE_S + 60)
        figures["waiting_call_answered_in_s"] = answered.elapsed_s
        figures["waiting_call_answered_after_resume_s"] = time.monotonic() - resumed
        assert answered.ok, answered
        assert _kinds(dsns["consumer"], answered.message_id) == {1, 4}
        assert _kinds(dsns["provider"], answered.message_id) == {2, 3}
        for role in fed.gateways:

            def ready(role: str = role) -> bool:
                return readyz(addresses[role])[0] == 200

            _until(f"the {role} gateway is ready", ready)
            figures[f"{role}_ready_after_resume_s"] = time.monotonic() - resumed
            fed.gateways[role].wait_for("message_log_resumed", timeout_s=WAIT_S)
        assert call(channel, REFUSED_DEADLINE_S).ok
        print("figures:", json.dumps({k: round(v, 3) for k, v in figures.items()}))
        fed.assert_gateways_never_restarted()
        for role in fed.gateways:
            size = int(metric(addresses[role], "serai_gateway_log_records"))
            wait_for_timestamped(fed, role, size)
            report = log_verify(fed.configs[role], "--to", str(size))
            assert report["records"] == size, report
    pool.shutdown(wait=False)
