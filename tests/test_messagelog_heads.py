"""Tests of the tree-head scheduler (gateway.messagelog.heads): one test per rule of its
module docstring, driven step by step with a fake clock and a fake TSA, a few through the
real tasks, and one integration test with the dev TSA served on loopback, real
certificates from the project's CA, and ``openssl ts -verify`` on the token obtained.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hashlib
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import serialization

import gateway.messagelog.heads as heads_module
from certs.errors import TimestampError
from certs.keys import generate_private_key, write_certificate_chain
from certs.pkidir import PKIDirectory
from certs.profiles import Profile
from certs.timestamp import TimestampToken, build_query, new_nonce, verify_reply
from certs.tsa import TimeStampAuthority, create_app
from gateway.messagelog.heads import (
    TimestampingOverdueError,
    TreeHeadScheduler,
    approved_tsa_timestamper,
)
from registry.model import ApprovedCA, ApprovedTSA, Federation, GlobalConfiguration
from registry.snapshot import ConfigurationSnapshot
from serai.errors import ErrorCode, SeraiError
from serai.treehead import (
    SignedTreeHead,
    TreeHeadSigner,
    verify_signed_tree_head,
    verify_tree_head_timestamp,
)

LOG_ID = "UZ/GOV/STC/gw:main"
T0 = dt.datetime(2026, 3, 1, 12, 0, 0, 250_777, tzinfo=dt.UTC)
HOUR = 3600.0


# -- fakes ----------------------------------------------------------------------------------


class FakeClock:
    def __init__(self, start: dt.datetime = T0) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@dataclass
class FakeLog:
    """The store, in memory: its tree, the heads and tokens persisted."""

    size: int = 0
    heads: list[SignedTreeHead] = field(default_factory=list)
    stamps: list[tuple[int, bytes]] = field(default_factory=list)
    fail_persist: bool = False

    async def current(self) -> tuple[int, bytes]:
        return self.size, hashlib.sha256(str(self.size).encode()).digest()

    async def persist_head(self, sth: SignedTreeHead) -> None:
        if self.fail_persist:
            raise SeraiError("disk full", code=ErrorCode.LOG_UNAVAILABLE)
        self.heads.append(sth)

    async def persist_timestamp(self, sth: SignedTreeHead, token: bytes) -> None:
        self.stamps.append((sth.head.tree_size, token))


class FakeTSA:
    """Real tokens from an in-process TSA; ``fail`` makes it unreachable."""

    def __init__(self, tsa: TimeStampAuthority, root: x509.Certificate) -> None:
        self.tsa = tsa
        self.root = root
        self.fail = False
        self.calls: list[bytes] = []
        self.during: Callable[[], Awaitable[object]] | None = None

    async def __call__(self, data: bytes) -> TimestampToken:
        self.calls.append(data)
        if self.during is not None:
            await self.during()
        if self.fail:
            raise TimestampError("connection refused", code=ErrorCode.TSA_UNAVAILABLE)
        nonce = new_nonce()
        reply = self.tsa.respond(build_query(data, nonce=nonce))
        return verify_reply(reply, data=data, nonce=nonce, trusted_roots=[self.root])


@dataclass
class Pki:
    dir: PKIDirectory
    root: x509.Certificate
    signer: TreeHeadSigner
    tsa: TimeStampAuthority


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = PKIDirectory.init(tmp_path_factory.mktemp("heads") / "pki", instance="UZ")
    ca = directory.issuing_ca()
    key = generate_private_key()
    cert = ca.issue(Profile.LOG_SIGNING, LOG_ID, key.public_key())
    tsa_key, tsa_chain = directory.tsa_signer()
    return Pki(
        dir=directory,
        root=directory.root_certificate(),
        signer=TreeHeadSigner(key=key, certificate_chain=[cert, ca.certificate]),
        tsa=TimeStampAuthority(key=tsa_key, chain=tsa_chain),
    )


@dataclass
class Rig:
    log: FakeLog
    tsa: FakeTSA
    clock: FakeClock
    signer: TreeHeadSigner
    scheduler: TreeHeadScheduler


def make_rig(pki: Pki, **options: object) -> Rig:
    log, tsa, clock = FakeLog(), FakeTSA(pki.tsa, pki.root), FakeClock()
    kwargs: dict[str, object] = {
        "log_id": LOG_ID,
        "current": log.current,
        "persist_head": log.persist_head,
        "persist_timestamp": log.persist_timestamp,
        "signer": pki.signer,
        "timestamper": tsa,
        "clock": clock,
        "jitter": lambda: 1.0,
    }
    scheduler = TreeHeadScheduler(**(kwargs | options))  # type: ignore[arg-type]
    return Rig(log=log, tsa=tsa, clock=clock, signer=pki.signer, scheduler=scheduler)


@pytest.fixture
def rig(pki: Pki) -> Rig:
    return make_rig(pki)


async def eventually(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110  (polls state the fakes change)
            await asyncio.sleep(0.005)


def test_public_surface() -> None:
    assert set(heads_module.__all__) == {
        "DEFAULT_OVERDUE_AFTER_S",
        "Timestamper",
        "TimestampingOverdueError",
        "TreeHeadScheduler",
        "approved_tsa_timestamper",
        "overdue_reason",
    }


def test_overdue_reason_counts_from_the_oldest_waiting_record() -> None:
    since = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    at = functools.partial(
        heads_module.overdue_reason, log_id="L1", since=since, overdue_after_s=60.0
    )
    assert (
        heads_module.overdue_reason(log_id="L1", since=None, now=since, overdue_after_s=0.0) is None
    )
    assert at(now=since + dt.timedelta(seconds=60)) is None  # the bound itself is allowed
    assert at(now=since + dt.timedelta(seconds=61)) == (
        "records of log L1 have waited 61 s for a time-stamp (at most 60 s allowed)"
    )
    assert at(now=since + dt.timedelta(seconds=90), detail="last failure: tsa down") == (
        "records of log L1 have waited 90 s for a time-stamp (at most 60 s allowed); "
        "last failure: tsa down"
    )


# -- rule 1: heads --------------------------------------------------------------------------


async def test_head_only_when_the_tree_grew(rig: Rig, pki: Pki) -> None:
    assert await rig.scheduler.sign_head() is None  # empty log: nothing to sign
    rig.log.size = 3
    sth = await rig.scheduler.sign_head()
    assert sth is not None
    assert rig.log.heads == [sth]
    assert sth.head.tree_size == 3
    assert sth.head.root_hash == (await rig.log.current())[1]
    assert sth.head.time == T0.replace(microsecond=250_000)  # millisecond precision
    assert await rig.scheduler.sign_head() is None
    assert rig.scheduler.newest_head == sth
    now = dt.datetime.now(dt.UTC)
    assert verify_signed_tree_head(sth, trusted_roots=[pki.root], at=now).tree_size == 3


async def test_a_head_that_cannot_be_persisted_is_made_again(rig: Rig) -> None:
    rig.log.size, rig.log.fail_persist = 2, True
    with pytest.raises(SeraiError, match="disk full"):
        await rig.scheduler.sign_head()
    assert rig.scheduler.newest_head is None
    rig.log.fail_persist = False
    assert await rig.scheduler.sign_head() is not None
    assert [h.head.tree_size for h in rig.log.heads] == [2]


async def test_interval(pki: Pki) -> None:
    rig = make_rig(pki, interval_s=0.02)
    await rig.scheduler.start()
    try:
        rig.log.size = 5
        await eventually(lambda: [s for s, _ in rig.log.stamps] == [5])
        rig.log.size = 8
        await eventually(lambda: [s for s, _ in rig.log.stamps] == [5, 8])
        await asyncio.sleep(0.1)  # several intervals without growth: no more heads
    finally:
        await rig.scheduler.stop()
    assert [h.head.tree_size for h in rig.log.heads] == [5, 8]


async def test_max_records_triggers_a_head(pki: Pki) -> None:
    rig = make_rig(pki, interval_s=3600, max_records=5)
    await rig.scheduler.start()
    try:
        await asyncio.sleep(0.05)
        rig.log.size = 4
        rig.scheduler.notify_appended(4)
        await asyncio.sleep(0.05)
        assert rig.log.heads == []
        rig.log.size = 5
        rig.scheduler.notify_appended(5)
        await eventually(lambda: len(rig.log.heads) == 1)
        assert rig.log.heads[0].head.tree_size == 5
        rig.log.size = 9
        rig.scheduler.notify_appended(9)  # 4 since the last head: not yet
        await asyncio.sleep(0.05)
        assert len(rig.log.heads) == 1
    finally:
        await rig.scheduler.stop()
    assert [h.head.tree_size for h in rig.log.heads] == [5, 9]  # the last head on stop


async def test_notify_from_another_thread(pki: Pki) -> None:
    rig = make_rig(pki, interval_s=3600, max_records=1)
    await rig.scheduler.start()
    try:
        rig.log.size = 1
        await asyncio.to_thread(rig.scheduler.notify_appended, 1)
        await eventually(lambda: len(rig.log.heads) == 1)
    finally:
        await rig.scheduler.stop()


# -- rule 2: time-stamps, catch-up --------------------------------------------------------------


async def test_timestamp_covers_the_newest_head(rig: Rig, pki: Pki) -> None:
    rig.log.size = 4
    sth = await rig.scheduler.sign_head()
    assert sth is not None
    assert await rig.scheduler.timestamp_newest()
    assert rig.tsa.calls == [sth.jws]
    [(size, token)] = rig.log.stamps
    assert size == 4
    assert verify_tree_head_timestamp(sth, token, tsa_trusted_roots=[pki.root]) is not None
    assert rig.scheduler.timestamped_size == 4
    assert rig.scheduler.last_timestamped_at == T0
    assert await rig.scheduler.timestamp_newest()  # nothing left to do: no request
    assert len(rig.tsa.calls) == 1


async def test_catch_up_timestamps_only_the_newest_head(rig: Rig) -> None:
    rig.tsa.fail = True
    for size in (3, 5, 9):
        rig.log.size = size
        await rig.scheduler.sign_head()
        assert not await rig.scheduler.timestamp_newest()
    assert rig.log.stamps == []
    assert [h.head.tree_size for h in rig.log.heads] == [3, 5, 9]
    rig.tsa.fail = False
    assert await rig.scheduler.timestamp_newest()
    assert [s for s, _ in rig.log.stamps] == [9]
    assert rig.tsa.calls[-1] == rig.log.heads[-1].jws
    assert rig.scheduler.untimestamped_since is None


async def test_token_over_other_data_is_a_failure(rig: Rig) -> None:
    real = rig.tsa

    async def wrong(data: bytes) -> TimestampToken:
        return await real(data + b"!")

    rig.scheduler = make_rig_from(rig, timestamper=wrong)
    rig.log.size = 1
    await rig.scheduler.sign_head()
    assert not await rig.scheduler.timestamp_newest()
    assert rig.log.stamps == []
    assert isinstance(rig.scheduler.last_error, TimestampError)
    assert "not over this tree head" in str(rig.scheduler.last_error)


def make_rig_from(rig: Rig, **options: object) -> TreeHeadScheduler:
    kwargs: dict[str, object] = {
        "log_id": LOG_ID,
        "current": rig.log.current,
        "persist_head": rig.log.persist_head,
        "persist_timestamp": rig.log.persist_timestamp,
        "signer": rig.signer,
        "timestamper": rig.tsa,
        "clock": rig.clock,
        "jitter": lambda: 1.0,
    }
    return TreeHeadScheduler(**(kwargs | options))  # type: ignore[arg-type]


async def test_head_made_while_a_timestamp_is_out(rig: Rig) -> None:
    """A head signed during the request is not covered: it starts the next wait."""
    rig.log.size = 2
    await rig.scheduler.sign_head()

    async def meanwhile() -> None:
        rig.tsa.during = None
        rig.clock.advance(1)
        rig.log.size = 3
        await rig.scheduler.sign_head()

    rig.tsa.during = meanwhile
    assert await rig.scheduler.timestamp_newest()
    assert rig.scheduler.timestamped_size == 2
    assert rig.scheduler.untimestamped_since == rig.log.heads[-1].head.time
    assert await rig.scheduler.timestamp_newest()
    assert rig.scheduler.untimestamped_since is None


# -- rule 3: back-off -------------------------------------------------------------------------


async def test_backoff_doubles_to_the_maximum_and_resets(rig: Rig) -> None:
    rig.tsa.fail = True
    rig.log.size = 1
    await rig.scheduler.sign_head()
    assert rig.scheduler.retry_delay_s == 0
    delays = []
    for _ in range(9):
        assert not await rig.scheduler.timestamp_newest()
        delays.append(rig.scheduler.retry_delay_s)
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert rig.scheduler.consecutive_failures == 9
    assert rig.scheduler.last_error is not None
    assert rig.scheduler.last_error.code is ErrorCode.TSA_UNAVAILABLE
    rig.tsa.fail = False
    assert await rig.scheduler.timestamp_newest()
    assert rig.scheduler.consecutive_failures == 0
    assert rig.scheduler.retry_delay_s == 0
    assert rig.scheduler.last_error is None


async def test_loop_retries_with_jittered_backoff_and_keeps_signing(pki: Pki) -> None:
    waits: list[float] = []

    def jitter() -> float:
        waits.append(0.0)
        return 0.0  # half the back-off

    rig = make_rig(pki, interval_s=0.01, backoff_initial_s=0.02, backoff_max_s=0.04, jitter=jitter)
    rig.tsa.fail = True
    await rig.scheduler.start()
    try:
        rig.log.size = 1
        await eventually(lambda: rig.scheduler.consecutive_failures >= 3)
        rig.log.size = 2  # records keep flowing, heads keep being signed
        await eventually(lambda: rig.log.heads[-1].head.tree_size == 2)
        rig.tsa.fail = False
        await eventually(lambda: rig.scheduler.timestamped_size == 2)
    finally:
        await rig.scheduler.stop()
    assert len(waits) >= 3
    assert rig.scheduler.consecutive_failures == 0


# -- rule 4: overdue --------------------------------------------------------------------------


async def test_overdue_past_the_bound_and_not_after_success(rig: Rig) -> None:
    rig.tsa.fail = True
    rig.log.size = 1
    first = await rig.scheduler.sign_head()
    assert first is not None
    assert not await rig.scheduler.timestamp_newest()
    assert rig.scheduler.untimestamped_since == first.head.time
    rig.clock.advance(4 * HOUR - 1)
    rig.log.size = 2
    await rig.scheduler.sign_head()  # a newer head does not restart the wait
    assert not rig.scheduler.overdue()
    rig.scheduler.check()
    rig.clock.advance(2)
    assert rig.scheduler.overdue()
    reason = rig.scheduler.overdue_reason()
    assert reason is not None
    assert "waited 14401 s" in reason
    assert "connection refused" in reason
    with pytest.raises(TimestampingOverdueError) as info:
        rig.scheduler.check()
    assert info.value.code is ErrorCode.TIMESTAMPING_OVERDUE
    rig.tsa.fail = False
    assert await rig.scheduler.timestamp_newest()
    assert not rig.scheduler.overdue()
    assert rig.scheduler.overdue_reason() is None
    rig.scheduler.check()


async def test_an_idle_log_is_never_overdue(rig: Rig) -> None:
    rig.tsa.fail = True
    rig.clock.advance(30 * 24 * HOUR)
    assert not rig.scheduler.overdue()
    rig.log.size = 1
    await rig.scheduler.sign_head()
    assert not await rig.scheduler.timestamp_newest()
    assert not rig.scheduler.overdue()  # the wait starts now, not at some old success


async def test_overdue_when_heads_cannot_be_made(rig: Rig) -> None:
    """Fail closed: records reported but never signed into a head also wait."""
    rig.log.size, rig.log.fail_persist = 3, True
    rig.scheduler.notify_appended(3)
    with pytest.raises(SeraiError):
        await rig.scheduler.sign_head()
    assert rig.scheduler.untimestamped_since == T0
    rig.clock.advance(4 * HOUR + 1)
    assert rig.scheduler.overdue()


async def test_custom_bound(pki: Pki) -> None:
    rig = make_rig(pki, overdue_after_s=60)
    rig.tsa.fail = True
    rig.log.size = 1
    await rig.scheduler.sign_head()
    rig.clock.advance(61)
    assert rig.scheduler.overdue()


async def test_resume_from_an_untimestamped_head(pki: Pki) -> None:
    rig = make_rig(pki)
    rig.log.size = 4
    old = await rig.scheduler.sign_head()
    assert old is not None
    resumed = make_rig_from(rig, last_head=old)
    assert await resumed.sign_head() is None  # same size: no new head
    assert resumed.untimestamped_since == old.head.time
    assert await resumed.timestamp_newest()
    assert rig.log.stamps[-1][0] == 4
    stamped = make_rig_from(rig, last_head=old.with_timestamp(rig.log.stamps[-1][1]))
    assert stamped.timestamped_size == 4
    assert stamped.untimestamped_since is None


# -- rule 5: stop -----------------------------------------------------------------------------


async def test_stop_drains(pki: Pki) -> None:
    rig = make_rig(pki, interval_s=3600)
    await rig.scheduler.start()
    await asyncio.sleep(0.02)
    rig.log.size = 7
    await rig.scheduler.stop()
    assert [h.head.tree_size for h in rig.log.heads] == [7]
    assert [s for s, _ in rig.log.stamps] == [7]
    await rig.scheduler.stop()  # idempotent


async def test_stop_does_not_wait_out_a_backoff(pki: Pki) -> None:
    rig = make_rig(pki, interval_s=0.01, backoff_initial_s=600, backoff_max_s=600)
    rig.tsa.fail = True
    await rig.scheduler.start()
    rig.log.size = 1
    await eventually(lambda: rig.scheduler.consecutive_failures == 1)
    rig.log.size = 2
    async with asyncio.timeout(5):
        await rig.scheduler.stop()
    assert rig.log.heads[-1].head.tree_size == 2  # the last head is still made
    assert len(rig.tsa.calls) == 1


def test_bad_options(pki: Pki) -> None:
    with pytest.raises(ValueError, match="positive"):
        make_rig(pki, interval_s=0)
    with pytest.raises(ValueError, match="backoff"):
        make_rig(pki, backoff_initial_s=10, backoff_max_s=1)


# -- approved TSAs, end to end ------------------------------------------------------------------


def _snapshot(pki: Pki, *tsas: ApprovedTSA) -> ConfigurationSnapshot:
    der = serialization.Encoding.DER
    ca = pki.dir.issuing_ca()
    federation = Federation(
        instance="UZ",
        certificate_authorities=(
            ApprovedCA(
                name="UZ Root",
                root_certificate=pki.root.public_bytes(der),
                intermediate_certificates=(ca.certificate.public_bytes(der),),
            ),
        ),
        timestamping_authorities=tsas,
    )
    now = dt.datetime.now(dt.UTC)
    return ConfigurationSnapshot(
        GlobalConfiguration(
            federation=federation,
            serial=1,
            generated_at=now,
            expires_at=now + dt.timedelta(hours=1),
        )
    )


@pytest.fixture
async def tsa_url(pki: Pki) -> AsyncIterator[str]:
    server = TestServer(create_app(pki.tsa), host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("/"))
    finally:
        await server.close()


def _approved(pki: Pki, name: str, url: str) -> ApprovedTSA:
    return ApprovedTSA(
        name=name,
        url=url,
        certificates=tuple(c.public_bytes(serialization.Encoding.DER) for c in pki.tsa.chain),
    )


async def test_approved_tsa_timestamper_refusals(pki: Pki, unused_tcp_port: int) -> None:
    with pytest.raises(TimestampError, match="no global configuration") as info:
        await approved_tsa_timestamper(lambda: None)(b"x")
    assert info.value.code is ErrorCode.TSA_UNAVAILABLE
    with pytest.raises(TimestampError, match="approves no TSA"):
        await approved_tsa_timestamper(lambda: _snapshot(pki))(b"x")
    dead = _approved(pki, "dead", f"http://127.0.0.1:{unused_tcp_port}/")
    timestamper = approved_tsa_timestamper(lambda: _snapshot(pki, dead), timeout_s=5)
    with pytest.raises(TimestampError, match="dead: tsa_unavailable") as info:
        await timestamper(b"x")
    assert info.value.code is ErrorCode.TSA_UNAVAILABLE


async def test_approved_tsa_must_sign_with_its_listed_certificate(pki: Pki, tsa_url: str) -> None:
    other = ApprovedTSA(
        name="impostor",
        url=tsa_url,
        certificates=(pki.root.public_bytes(serialization.Encoding.DER),),
    )
    with pytest.raises(TimestampError, match="not listed with"):
        await approved_tsa_timestamper(lambda: _snapshot(pki, other))(b"x")


async def test_end_to_end_with_the_dev_tsa_and_openssl(
    pki: Pki, tsa_url: str, unused_tcp_port: int, tmp_path: Path
) -> None:
    """Real certificates, the dev TSA on loopback behind a dead one (first success wins),
    the scheduler's own tasks, and ``openssl ts -verify`` on the token it obtained."""
    dead = _approved(pki, "down", f"http://127.0.0.1:{unused_tcp_port}/")
    snapshot = _snapshot(pki, dead, _approved(pki, "up", tsa_url))
    log = FakeLog()
    scheduler = TreeHeadScheduler(
        log_id=LOG_ID,
        current=log.current,
        persist_head=log.persist_head,
        persist_timestamp=log.persist_timestamp,
        signer=pki.signer,
        timestamper=approved_tsa_timestamper(lambda: snapshot, timeout_s=5),
        interval_s=0.05,
    )
    await scheduler.start()
    try:
        log.size = 12
        await eventually(lambda: scheduler.timestamped_size == 12, timeout_s=30)
    finally:
        await scheduler.stop()
    [sth] = log.heads
    [(size, token)] = log.stamps
    assert size == 12
    now = dt.datetime.now(dt.UTC)
    assert verify_signed_tree_head(sth, trusted_roots=snapshot.trust_store, at=now).tree_size == 12
    gen_time = verify_tree_head_timestamp(
        sth,
        token,
        tsa_trusted_roots=[pki.root],
        approved_tsa_certificates={t.certificates[0] for t in snapshot.approved_tsas},
    )
    assert abs((gen_time - now).total_seconds()) < 60
    assert not scheduler.overdue()

    exe = shutil.which("openssl")
    assert exe is not None, "the openssl command is needed for the interop tests"
    (tmp_path / "sth.jws").write_bytes(sth.jws)
    (tmp_path / "token.tst").write_bytes(token)
    write_certificate_chain(tmp_path / "tsa.pem", pki.tsa.chain)
    result = await asyncio.to_thread(
        subprocess.run,
        [exe, "ts", "-verify", "-data", "sth.jws", "-token_in", "-in", "token.tst",
         "-CAfile", str(pki.dir.root_cert), "-untrusted", "tsa.pem"],
        check=False, capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert "Verification: OK" in result.stdout, result.stdout + result.stderr
