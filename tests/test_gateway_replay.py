"""gateway.replay: the skew rule, the uniqueness rule, the no-replay invariant, expiry with
an injected clock, the memory bound, and a Hypothesis model of random traffic."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import replay as replay_module
from gateway.commit import LogRecord, LogUnavailableError, RecordKind
from gateway.errors import GatewayError
from gateway.headers import RequestHeader
from gateway.messagelog import MessageLog
from gateway.replay import (
    ClockSkewError,
    ReplayCapacityError,
    ReplayDetectedError,
    ReplayGuard,
    SharedReplayCheck,
)
from serai.errors import ConfigError, ErrorCode, Origin
from serai.identifiers import SubsystemId
from tests.gatewayharness import federation
from tests.test_messagelog_store import pg_url

T0 = dt.datetime(2026, 11, 27, 10, 0, tzinfo=dt.UTC)
TAX = SubsystemId.parse("UZ/GOV/STC/tax")
PROPERTY = SubsystemId.parse("UZ/GOV/MINJUST/property")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: dt.datetime = T0) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


def _s(seconds: float) -> dt.timedelta:
    return dt.timedelta(seconds=seconds)


def test_public_surface() -> None:
    assert set(replay_module.__all__) == {
        "DEFAULT_MAX_ENTRIES",
        "DEFAULT_MAX_SKEW_S",
        "DEFAULT_WINDOW_S",
        "MAX_MESSAGE_ID_CHARS",
        "ClockSkewError",
        "ReplayCapacityError",
        "ReplayDetectedError",
        "ReplayGuard",
        "SharedReplayCheck",
        "seed_from_log",
    }


def test_defaults_are_ten_minutes_and_sixty_seconds() -> None:
    assert replay_module.DEFAULT_WINDOW_S == 600
    assert replay_module.DEFAULT_MAX_SKEW_S == 60


@pytest.mark.parametrize(
    ("offset_s", "accepted"),
    [
        pytest.param(0, True, id="now"),
        pytest.param(60, True, id="ahead-at-bound"),
        pytest.param(-60, True, id="behind-at-bound"),
        pytest.param(60.001, False, id="ahead-past-bound"),
        pytest.param(-60.001, False, id="behind-past-bound"),
        pytest.param(-86400, False, id="a-day-old"),
    ],
)
def test_skew_rule(offset_s: float, accepted: bool) -> None:
    guard = ReplayGuard(clock=Clock())
    created = T0 + _s(offset_s)
    if accepted:
        guard.check_and_remember(TAX, "m", created)
        assert len(guard) == 1
        return
    with pytest.raises(ClockSkewError) as info:
        guard.check_and_remember(TAX, "m", created)
    err = info.value
    assert isinstance(err, GatewayError)
    assert (err.code, err.origin) == (ErrorCode.CLOCK_SKEW, Origin.CLIENT)
    assert str(TAX) in err.message
    assert len(guard) == 0  # nothing remembered for a refused message


def test_skew_is_configurable() -> None:
    guard = ReplayGuard(max_skew_s=5, window_s=30, clock=Clock())
    guard.check_and_remember(TAX, "a", T0 + _s(5))
    with pytest.raises(ClockSkewError):
        guard.check_and_remember(TAX, "b", T0 + _s(6))


def test_replay_rule_is_per_client() -> None:
    guard = ReplayGuard(clock=Clock())
    guard.check_and_remember(TAX, "m-1", T0)
    guard.check_and_remember(PROPERTY, "m-1", T0)  # another client may use the same id
    guard.check_and_remember(TAX, "m-2", T0)
    with pytest.raises(ReplayDetectedError) as info:
        guard.check_and_remember(TAX, "m-1", T0)
    err = info.value
    assert (err.code, err.origin) == (ErrorCode.REPLAY_DETECTED, Origin.CLIENT)
    assert "m-1" in err.message
    assert str(TAX) in err.message
    # A fresh created time does not launder a used id.
    with pytest.raises(ReplayDetectedError):
        guard.check_and_remember(TAX, "m-1", T0 + _s(30))


def test_window_expiry_with_injected_clock() -> None:
    clock = Clock()
    guard = ReplayGuard(window_s=600, max_skew_s=60, clock=clock)
    guard.check_and_remember(TAX, "m", T0)
    # Remembered for window + skew after it was accepted, the last instant included.
    clock.advance(660)
    with pytest.raises(ReplayDetectedError):
        guard.check_and_remember(TAX, "m", clock.now)
    clock.advance(0.001)
    guard.check_and_remember(TAX, "m", clock.now)  # forgotten; new created time accepted
    assert len(guard) == 1


def test_expired_ids_are_dropped() -> None:
    clock = Clock()
    guard = ReplayGuard(window_s=10, max_skew_s=1, clock=clock)
    for i in range(100):
        guard.check_and_remember(TAX, f"m-{i}", clock.now)
    assert len(guard) == 100
    clock.advance(12)
    guard.check_and_remember(TAX, "later", clock.now)
    assert len(guard) == 1


@pytest.mark.parametrize("skew_s", [1, 30, 60])
@pytest.mark.parametrize("created_offset_s", [-1.0, 0.0, 1.0], ids=["behind", "on", "ahead"])
def test_invariant_replay_never_passes(skew_s: float, created_offset_s: float) -> None:
    """A replay of an accepted header (same id, same created time) is refused at every
    later instant: replay_detected while remembered, clock_skew afterwards."""
    clock = Clock()
    guard = ReplayGuard(window_s=skew_s, max_skew_s=skew_s, clock=clock)  # tightest config
    created = T0 + _s(created_offset_s * skew_s)
    guard.check_and_remember(TAX, "m", created)
    step = skew_s / 50
    for _ in range(200):  # to four windows later, in small steps
        clock.advance(step)
        with pytest.raises((ReplayDetectedError, ClockSkewError)):
            guard.check_and_remember(TAX, "m", created)


@pytest.mark.parametrize(
    ("window_s", "max_skew_s", "max_entries"),
    [
        pytest.param(30, 60, 10, id="window-shorter-than-skew"),
        pytest.param(600, 0, 10, id="zero-skew"),
        pytest.param(600, -1, 10, id="negative-skew"),
        pytest.param(600, 60, 0, id="no-entries"),
    ],
)
def test_refuses_unsafe_configuration(window_s: float, max_skew_s: float, max_entries: int) -> None:
    with pytest.raises(ConfigError):
        ReplayGuard(window_s=window_s, max_skew_s=max_skew_s, max_entries=max_entries)


def test_bound_refuses_new_ids_rather_than_forgetting() -> None:
    clock = Clock()
    guard = ReplayGuard(window_s=10, max_skew_s=1, max_entries=3, clock=clock)
    for i in range(3):
        guard.check_and_remember(TAX, f"m-{i}", clock.now)
    with pytest.raises(ReplayCapacityError) as info:
        guard.check_and_remember(PROPERTY, "x", clock.now)
    err = info.value
    assert isinstance(err, GatewayError)
    assert err.origin is Origin.GATEWAY
    assert err.code is ErrorCode.GATEWAY_OVERLOADED
    assert "3 message ids" in err.message
    # The remembered ids are still refused as replays, not forgotten to make room.
    for i in range(3):
        with pytest.raises(ReplayDetectedError):
            guard.check_and_remember(TAX, f"m-{i}", clock.now)
    assert len(guard) == 3
    # Once they expire, there is room again.
    clock.advance(12)
    guard.check_and_remember(PROPERTY, "x", clock.now)
    assert len(guard) == 1


@pytest.mark.parametrize(
    ("message_id", "created_at"),
    [
        pytest.param("", T0, id="empty-id"),
        pytest.param("x" * 256, T0, id="long-id"),
        pytest.param(7, T0, id="not-str"),
        pytest.param("m", T0.replace(tzinfo=None), id="naive-created"),
    ],
)
def test_refuses_bad_input(message_id: object, created_at: dt.datetime) -> None:
    guard = ReplayGuard(clock=Clock())
    with pytest.raises(GatewayError) as info:
        guard.check_and_remember(TAX, message_id, created_at)  # type: ignore[arg-type]
    assert (info.value.code, info.value.origin) == (ErrorCode.INVALID_REQUEST, Origin.CLIENT)
    assert len(guard) == 0


def test_refuses_naive_clock() -> None:
    guard = ReplayGuard(clock=lambda: T0.replace(tzinfo=None))
    with pytest.raises(GatewayError) as info:
        guard.check_and_remember(TAX, "m", T0)
    assert info.value.code is ErrorCode.INTERNAL


def test_clock_stepping_back_keeps_entries_longer_never_shorter() -> None:
    clock = Clock()
    guard = ReplayGuard(window_s=10, max_skew_s=5, clock=clock)
    guard.check_and_remember(TAX, "early", clock.now)
    clock.advance(-8)
    guard.check_and_remember(TAX, "stepped-back", clock.now)  # expires before "early"
    clock.advance(8 + 16)  # both expired now
    guard.check_and_remember(TAX, "stepped-back", clock.now)
    guard.check_and_remember(TAX, "early", clock.now)
    with pytest.raises(ReplayDetectedError):
        guard.check_and_remember(TAX, "stepped-back", clock.now)
    clock.advance(16)
    guard.check_and_remember(TAX, "probe", clock.now)
    assert len(guard) == 1


_CLIENTS = [TAX, PROPERTY]
_WINDOW_S = 20.0
_SKEW_S = 5.0


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(_CLIENTS),
            st.sampled_from(["a", "b", "c"]),
            st.floats(0, 8),  # how far the clock moves first
            st.floats(-7, 7),  # created time relative to the clock
        ),
        max_size=60,
    ),
    st.integers(2, 6),
)
def test_model_never_accepts_a_duplicate_within_the_window(
    events: list[tuple[SubsystemId, str, float, float]], max_entries: int
) -> None:
    """Random traffic against a model: the guard accepts exactly what the rules allow
    (skew, uniqueness for window + skew, the bound), and in particular never accepts an
    id within the window of its last acceptance, nor the same header twice."""
    clock = Clock()
    guard = ReplayGuard(
        window_s=_WINDOW_S, max_skew_s=_SKEW_S, max_entries=max_entries, clock=clock
    )
    keep = _s(_WINDOW_S + _SKEW_S)
    accepted_at: dict[tuple[SubsystemId, str], dt.datetime] = {}
    headers_accepted: set[tuple[SubsystemId, str, dt.datetime]] = set()
    for client, message_id, advance_s, created_offset_s in events:
        clock.advance(advance_s)
        now = clock.now
        created = now + _s(created_offset_s)
        live = {k: t for k, t in accepted_at.items() if now <= t + keep}
        key = (client, message_id)
        try:
            guard.check_and_remember(client, message_id, created)
        except ClockSkewError:
            assert abs(created - now) > _s(_SKEW_S)
        except ReplayDetectedError:
            assert key in live
        except ReplayCapacityError:
            assert key not in live
            assert len(live) >= max_entries
        else:
            assert abs(created - now) <= _s(_SKEW_S)
            assert key not in live, "accepted a duplicate within the window"
            assert (client, message_id, created) not in headers_accepted
            accepted_at[key] = now
            headers_accepted.add((client, message_id, created))


# -- guarantee 6: across restarts --------------------------------------------------------


def test_a_remembered_id_is_refused_until_its_acceptance_plus_window_and_skew() -> None:
    clock = Clock(T0 + _s(100))
    guard = ReplayGuard(window_s=600, max_skew_s=60, clock=clock)
    guard.remember(TAX, "m-1", T0)  # accepted 100 s ago by the previous run
    guard.remember(TAX, "m-old", T0 - _s(700))  # expired before this run: not kept
    assert len(guard) == 1
    with pytest.raises(ReplayDetectedError):
        guard.check_and_remember(TAX, "m-1", clock.now)
    guard.check_and_remember(PROPERTY, "m-1", clock.now)  # per client
    guard.check_and_remember(TAX, "m-old", clock.now)
    clock.now = T0 + _s(660)  # the end instant is still refused (guarantee 2)
    with pytest.raises(ReplayDetectedError):
        guard.check_and_remember(TAX, "m-1", clock.now)
    clock.now = T0 + _s(661)
    guard.check_and_remember(TAX, "m-1", clock.now)


def test_remembering_never_shortens_and_respects_the_bound() -> None:
    clock = Clock(T0)
    guard = ReplayGuard(window_s=600, max_skew_s=60, max_entries=2, clock=clock)
    guard.remember(TAX, "m-1", T0)
    guard.remember(TAX, "m-1", T0 - _s(300))  # an older sighting keeps the later expiry
    clock.now = T0 + _s(500)
    with pytest.raises(ReplayDetectedError):
        guard.check_and_remember(TAX, "m-1", clock.now)
    guard.remember(TAX, "m-2", T0)
    guard.remember(TAX, "m-3", T0)  # full: the capacity rule still governs new ids
    assert len(guard) == 2


async def test_a_restarted_gateway_refuses_what_its_log_says_it_accepted(
    tmp_path: Path,
) -> None:
    async with federation(tmp_path / "fed") as fed:
        for body in (b"parcel 1", b"parcel 2"):
            assert (await fed.call(body=body)).body == body
        received = [r for r in fed.provider_log.records if r.kind is RecordKind.REQUEST_RECEIVED]
    assert len(received) == 2
    log = await MessageLog.open(tmp_path / "messagelog.db", log_id="UZ/GOV/CADASTRE/gw:main")
    try:
        await log.append_all(fed.provider_log.records)
        guard = ReplayGuard()
        assert await replay_module.seed_from_log(guard, log, keep_s=660) == 2
        now = dt.datetime.now(dt.UTC)
        for record in received:
            payload = record.header_jws.decode("ascii").split(".")[1]
            header = RequestHeader.decode(
                base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
            )
            with pytest.raises(ReplayDetectedError):
                guard.check_and_remember(header.client, header.message_id, now)
        fresh = ReplayGuard()
        assert await replay_module.seed_from_log(fresh, log, keep_s=0.001) == 0
    finally:
        await log.close()


# -- guarantee 7: across processes sharing a log ------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def shared_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "shared.db")
    return pg_url(str(request.getfixturevalue("postgres_dsn")))


async def _received(tmp_path: Path) -> list[LogRecord]:
    """Two REQUEST_RECEIVED records (messages of PROPERTY) as a provider gateway logs them."""
    async with federation(tmp_path / "fed") as fed:
        for body in (b"parcel 1", b"parcel 2"):
            assert (await fed.call(body=body)).body == body
        return [r for r in fed.provider_log.records if r.kind is RecordKind.REQUEST_RECEIVED]


def _id_of(record: LogRecord) -> str:
    payload = record.header_jws.decode("ascii").split(".")[1]
    header = RequestHeader.decode(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert header.client == PROPERTY
    return header.message_id


async def test_the_shared_log_refuses_what_another_process_received(
    tmp_path: Path, shared_location: str
) -> None:
    first, second = await _received(tmp_path)
    log = await MessageLog.open(shared_location, log_id="UZ/GOV/CADASTRE/gw:main")
    try:
        (index,) = await log.append_all([first])
        check = SharedReplayCheck(log, keep_s=660)
        # Before its commit: the copy another process received is found, nothing written.
        with pytest.raises(ReplayDetectedError) as info:
            await check.before_commit(PROPERTY, _id_of(first))
        assert (info.value.code, info.value.origin) == (ErrorCode.REPLAY_DETECTED, Origin.CLIENT)
        assert f"message log record {index}" in info.value.message
        assert log.size == 1
        # Another id, or the same id of another client, is new.
        await check.before_commit(PROPERTY, _id_of(second))
        await check.before_commit(TAX, _id_of(first))
        # After its commit: the earliest copy passes, a later one is refused.
        await check.after_commit(PROPERTY, _id_of(first), index)
        (again,) = await log.append_all([first])
        with pytest.raises(ReplayDetectedError):
            await check.after_commit(PROPERTY, _id_of(first), again)
        await check.after_commit(PROPERTY, _id_of(first), index)  # still the first
        # Past the window (its commit time + keep_s), the log no longer refuses it.
        later = SharedReplayCheck(log, keep_s=660, clock=lambda: dt.datetime.now(dt.UTC) + _s(661))
        await later.before_commit(PROPERTY, _id_of(first))
    finally:
        await log.close()


async def test_of_two_copies_racing_through_two_processes_exactly_one_passes(
    tmp_path: Path, shared_location: str
) -> None:
    """Two logs open on one database, as two workers hold it: both copies pass the check
    before their commits (neither is committed yet), both commit, and the check after
    the commit refuses exactly the later one, whichever process asks first."""
    (record, _) = await _received(tmp_path)
    message_id = _id_of(record)
    logs = [
        await MessageLog.open(shared_location, log_id="UZ/GOV/CADASTRE/gw:main") for _ in range(2)
    ]
    try:
        checks = [SharedReplayCheck(log, keep_s=660) for log in logs]
        for check in checks:
            await check.before_commit(PROPERTY, message_id)
        indices = [(await log.append_all([record]))[0] for log in logs]
        outcomes = await asyncio.gather(
            *(
                check.after_commit(PROPERTY, message_id, index)
                for check, index in zip(reversed(checks), reversed(indices), strict=True)
            ),
            return_exceptions=True,
        )
        assert outcomes[0].__class__ is ReplayDetectedError  # the later index
        assert outcomes[1] is None
    finally:
        for log in logs:
            await log.close()


async def test_a_log_that_cannot_be_read_refuses_rather_than_passes(tmp_path: Path) -> None:
    log = await MessageLog.open(tmp_path / "closed.db", log_id="UZ/GOV/CADASTRE/gw:main")
    await log.close()
    check = SharedReplayCheck(log, keep_s=660)
    with pytest.raises(LogUnavailableError) as info:
        await check.before_commit(PROPERTY, "m-1")
    assert info.value.code is ErrorCode.LOG_UNAVAILABLE


def test_a_shared_window_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        SharedReplayCheck(None, keep_s=0)  # type: ignore[arg-type]  # refused before use
