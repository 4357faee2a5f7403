"""gateway.messagelog under SIGKILL: a child process appends in a loop, printing each
index only after ``append`` returned, and is killed mid-stream (SQLite and PostgreSQL).

On reopen: every acknowledged record is present and intact at its index, nothing is torn
(every stored leaf hashes to its stored hash, indices are contiguous), the frontier is
consistent (the open checks it; the root equals the root of the stored leaves), and the
log keeps growing from where it stopped.

The child is this module run as ``python -m tests.test_messagelog_crash LOCATION PREFIX``.
"""

from __future__ import annotations

import asyncio
import os
import random
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.commit import LogRecord, canonical_bytes
from gateway.messagelog import MessageLog
from serai.merkle import leaf_hash, root_hash
from tests.pgutil import fresh_database
from tests.test_messagelog_store import LOG_ID, all_records, pg_url

ROOT = Path(__file__).resolve().parent.parent
CHILD_APPENDERS = 16


def crash_record(message_id: str) -> LogRecord:
    """The record the child appends under ``message_id`` (the parent rebuilds it)."""
    description = (message_id.encode() + b";") * (1024 // (len(message_id) + 1))
    return LogRecord.admin_change(change_id=message_id, description=description)


async def _child(location: str, prefix: str) -> None:
    log = await MessageLog.open(location, log_id=LOG_ID)

    async def appender(task: int) -> None:
        for n in range(10**9):
            message_id = f"{prefix}-{task}-{n}"
            index = await log.append(crash_record(message_id))
            sys.stdout.write(f"{index} {message_id}\n")
            sys.stdout.flush()

    await asyncio.gather(*(appender(task) for task in range(CHILD_APPENDERS)))


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "crash.db")
    else:
        with fresh_database() as dsn:
            yield pg_url(dsn)


def run_and_kill(location: str, prefix: str, acknowledged: int) -> dict[int, str]:
    """Start the child, SIGKILL it once it acknowledged at least ``acknowledged`` appends
    (plus a random moment), and return every index it acknowledged."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.test_messagelog_crash", location, prefix],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdout is not None
    acked: dict[int, str] = {}
    buffer = b""
    deadline = time.monotonic() + 60
    kill_after = acknowledged + random.randrange(acknowledged)
    try:
        while len(acked) < kill_after:
            assert time.monotonic() < deadline, "the child did not append in time"
            ready, _, _ = select.select([child.stdout], [], [], 1.0)
            if not ready:
                assert child.poll() is None, child.stderr.read() if child.stderr else ""
                continue
            chunk = os.read(child.stdout.fileno(), 65536)
            assert chunk, child.stderr.read() if child.stderr else "child ended"
            buffer = _take_lines(buffer + chunk, acked)
    finally:
        child.send_signal(signal.SIGKILL)
        rest, _ = child.communicate(timeout=30)
    # What the child wrote before it died was acknowledged too; a torn last line was not.
    _take_lines(buffer + rest, acked)
    assert child.returncode == -signal.SIGKILL
    return acked


def _take_lines(data: bytes, acked: dict[int, str]) -> bytes:
    *lines, partial = data.split(b"\n")
    for line in lines:
        index, message_id = line.decode().split(" ")
        assert int(index) not in acked, f"index {index} acknowledged twice"
        acked[int(index)] = message_id
    return partial


async def check_after_crash(location: str, acked: dict[int, str]) -> int:
    """The checks of the module docstring; the log's size after one more append."""
    log = await MessageLog.open(location, log_id=LOG_ID)  # checks the frontier
    try:
        stored = await all_records(log)
        assert [r.index for r in stored] == list(range(len(stored)))
        assert len(stored) == log.size
        for record in stored:
            assert record.leaf is not None
            assert leaf_hash(record.leaf) == record.leaf_hash
            assert record.leaf == canonical_bytes(crash_record(record.message_id))
        for index, message_id in acked.items():
            assert index < len(stored), f"acknowledged record {index} is lost"
            assert stored[index].message_id == message_id
        assert await log.tree_state() == (
            len(stored),
            root_hash([r.leaf_hash for r in stored]),
        )
        assert await log.append(crash_record("after-the-crash")) == len(stored)
        return log.size
    finally:
        await log.close()


async def test_sigkill_loses_no_acknowledged_append(location: str) -> None:
    acked = run_and_kill(location, "run", acknowledged=300)
    size = await check_after_crash(location, acked)
    assert size > 300


@pytest.mark.slow
async def test_repeated_sigkills_loses_no_acknowledged_append(location: str) -> None:
    everything: dict[int, str] = {}
    for cycle in range(8):
        acked = run_and_kill(location, f"cycle{cycle}", acknowledged=2_000)
        assert not acked.keys() & everything.keys()
        everything.update(acked)
        await check_after_crash(location, everything)


if __name__ == "__main__":
    asyncio.run(_child(sys.argv[1], sys.argv[2]))
