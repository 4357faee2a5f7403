"""registry.client: the rules of the trusted configuration, over HTTP and in memory, the
cache on disk, expiry, key rotation, the refresh loop, and random corruption."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from certs.keys import PrivateKey, generate_private_key
from certs.pkidir import PKIDirectory
from certs.profiles import Profile
from registry import client as client_module
from registry.client import (
    CACHE_FILE_NAME,
    AiohttpFetchTransport,
    FetchTransport,
    GlobalConfigurationClient,
    InMemoryFetchTransport,
    TrustedConfiguration,
    _retry_delay_s,
)
from registry.codec import TrustAnchor, encode_configuration
from registry.errors import ConfigurationError
from registry.model import Federation, Gateway, GlobalConfiguration, Member, Subsystem
from registry.signing import sign_configuration
from registry.snapshot import ConfigurationSnapshot
from serai.errors import ErrorCode
from serai.identifiers import MemberId

NOW = dt.datetime(2026, 11, 27, 10, 0, tzinfo=dt.UTC)
TTL = dt.timedelta(minutes=10)
URL_PATH = "/globalconf/v1/current"


# -- the registry side -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Signer:
    key: PrivateKey
    certificate: x509.Certificate

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)


@dataclasses.dataclass(frozen=True)
class Keys:
    old: Signer
    new: Signer
    stranger: Signer


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    pki = PKIDirectory.init(tmp_path_factory.mktemp("pki") / "pki", instance="UZ")
    ca = pki.issuing_ca()

    def signer(name: str) -> Signer:
        key = generate_private_key()
        return Signer(key, ca.issue(Profile.CONFIGURATION_SIGNING, name, key.public_key()))

    return Keys(old=signer("UZ registry 1"), new=signer("UZ registry 2"), stranger=signer("x"))


def configuration(
    serial: int,
    *,
    instance: str = "UZ",
    generated_at: dt.datetime = NOW,
    ttl: dt.timedelta = TTL,
    name: str = "State Tax Committee",
) -> GlobalConfiguration:
    member = MemberId(instance=instance, member_class="GOV", member_code="STC")
    tax = member.subsystem("tax")
    return GlobalConfiguration(
        federation=Federation(
            instance=instance,
            members=(Member(id=member, name=name),),
            subsystems=(Subsystem(id=tax),),
            gateways=(
                Gateway(
                    id=member.gateway("main"),
                    address="127.0.0.1:5500",
                    auth_certificate_sha256=hashlib.sha256(b"auth").digest(),
                    subsystems=frozenset({tax}),
                ),
            ),
        ),
        serial=serial,
        generated_at=generated_at,
        expires_at=generated_at + ttl,
    )


def signed(conf: GlobalConfiguration, signer: Signer) -> bytes:
    return sign_configuration(
        encode_configuration(conf), key=signer.key, certificate=signer.certificate
    )


def anchor_of(*signers: Signer, url: str = "http://registry.invalid" + URL_PATH) -> TrustAnchor:
    return TrustAnchor(
        instance="UZ",
        download_url=url,
        signing_certificates=tuple(s.der for s in signers),
        generated_at=NOW,
    )


class Clock:
    def __init__(self, now: dt.datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


# -- two ways to serve envelopes ----------------------------------------------------------------


@dataclasses.dataclass
class Feed:
    """Where the test publishes envelopes and how the client fetches them."""

    transport: FetchTransport
    url: str
    publish: Callable[[bytes], None]


@pytest.fixture
def memory_feed() -> Feed:
    transport = InMemoryFetchTransport()
    return Feed(
        transport=transport, url="http://registry.invalid" + URL_PATH, publish=transport.publish
    )


@pytest.fixture
async def http_feed() -> AsyncIterator[Feed]:
    served: dict[str, bytes] = {}

    async def current(_request: web.Request) -> web.Response:
        if "body" not in served:
            return web.Response(status=404, text="not published")
        return web.Response(body=served["body"], content_type="application/octet-stream")

    app = web.Application()
    app.router.add_get(URL_PATH, current)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    transport = AiohttpFetchTransport()
    try:
        yield Feed(
            transport=transport,
            url=f"http://127.0.0.1:{port}{URL_PATH}",
            publish=lambda body: served.__setitem__("body", body),
        )
    finally:
        await transport.aclose()
        await runner.cleanup()


@pytest.fixture(params=["memory", "http"])
def feed(request: pytest.FixtureRequest) -> Feed:
    result = request.getfixturevalue(f"{request.param}_feed")
    assert isinstance(result, Feed)
    return result


def make_client(
    feed: Feed, cache_dir: Path, *signers: Signer, clock: Clock, **kwargs: object
) -> GlobalConfigurationClient:
    return GlobalConfigurationClient(
        anchor=anchor_of(*signers, url=feed.url),
        cache_dir=cache_dir,
        transport=feed.transport,
        clock=clock,
        **kwargs,  # type: ignore[arg-type]
    )


def events(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    lines = capsys.readouterr().err.splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def refused(error: pytest.ExceptionInfo[ConfigurationError]) -> ErrorCode:
    return error.value.code


# -- surface and construction ---------------------------------------------------------------------


def test_public_surface() -> None:
    assert set(client_module.__all__) == {
        "CACHE_FILE_NAME",
        "DEFAULT_REFRESH_INTERVAL_S",
        "HEADS_FILE_NAME",
        "MAX_CLOCK_SKEW",
        "MAX_ENVELOPE_BYTES",
        "AiohttpFetchTransport",
        "ClientStatus",
        "FetchTransport",
        "GlobalConfigurationClient",
        "InMemoryFetchTransport",
        "TrustedConfiguration",
    }
    assert client_module.DEFAULT_REFRESH_INTERVAL_S == 60.0


@pytest.mark.parametrize(("interval_s", "timeout_s"), [(0.0, 1.0), (1.0, -1.0)])
def test_constructor_refuses_non_positive_durations(
    keys: Keys, tmp_path: Path, interval_s: float, timeout_s: float
) -> None:
    with pytest.raises(ValueError, match="positive"):
        GlobalConfigurationClient(
            anchor=anchor_of(keys.old),
            cache_dir=tmp_path,
            refresh_interval_s=interval_s,
            timeout_s=timeout_s,
        )


def test_nothing_held_is_unavailable(keys: Keys, memory_feed: Feed, tmp_path: Path) -> None:
    client = make_client(memory_feed, tmp_path, keys.old, clock=Clock())
    with pytest.raises(ConfigurationError) as info:
        client.current()
    assert refused(info) is ErrorCode.GLOBALCONF_UNAVAILABLE
    with pytest.raises(ConfigurationError):
        client.current_envelope()
    status = client.status()
    assert status.serial is None
    assert status.expired


# -- happy path ------------------------------------------------------------------------------------


async def test_happy_path(
    keys: Keys, feed: Feed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = Clock()
    client = make_client(feed, tmp_path, keys.old, clock=clock)
    with pytest.raises(ConfigurationError) as info:
        await client.refresh()  # nothing published yet
    assert refused(info) is ErrorCode.GLOBALCONF_UNAVAILABLE

    first = signed(configuration(1), keys.old)
    feed.publish(first)
    assert await client.refresh() is True
    snap = client.current()
    assert snap.serial == 1
    assert snap.has_subsystem(MemberId.parse("UZ/GOV/STC").subsystem("tax"))
    assert client.current_envelope() == first
    assert (tmp_path / CACHE_FILE_NAME).read_bytes() == first
    assert client.cache_path == tmp_path / CACHE_FILE_NAME
    assert await client.refresh() is False  # same bytes: nothing to do
    assert client.current() is snap

    clock.now += dt.timedelta(minutes=1)
    second = signed(configuration(2, generated_at=clock.now), keys.old)
    feed.publish(second)
    assert await client.refresh() is True
    assert client.current().serial == 2
    assert (tmp_path / CACHE_FILE_NAME).read_bytes() == second
    status = client.status()
    assert (status.serial, status.expired, status.last_error) == (2, False, None)
    assert status.last_success_at == clock.now
    updated = [e for e in events(capsys) if e["event"] == "globalconf_updated"]
    assert [(e["serial"], e["previous_serial"]) for e in updated] == [(1, None), (2, 1)]


async def test_resigned_copy_of_the_held_serial_is_a_no_op(
    keys: Keys, memory_feed: Feed, tmp_path: Path
) -> None:
    client = make_client(memory_feed, tmp_path, keys.old, clock=Clock())
    first = signed(configuration(1), keys.old)
    memory_feed.publish(first)
    await client.refresh()
    memory_feed.publish(signed(configuration(1), keys.old))  # ECDSA: new signature bytes
    assert await client.refresh() is False
    assert client.current_envelope() == first
    assert (tmp_path / CACHE_FILE_NAME).read_bytes() == first


# -- refusals ----------------------------------------------------------------------------------


def _tampered(keys: Keys) -> bytes:
    envelope = bytearray(signed(configuration(5), keys.old))
    index = envelope.index(b"State Tax Committee")
    envelope[index] ^= 0x20  # 'S' -> 's': still a valid configuration, not the signed one
    return bytes(envelope)


def _half(envelope: bytes) -> bytes:
    return envelope[: len(envelope) // 2]


BAD: dict[str, tuple[Callable[[Keys], bytes], ErrorCode]] = {
    "tampered": (_tampered, ErrorCode.GLOBALCONF_SIGNATURE_INVALID),
    "truncated": (
        lambda k: signed(configuration(5), k.old)[:-40],
        ErrorCode.GLOBALCONF_INVALID,
    ),
    "truncated to half": (
        lambda k: _half(signed(configuration(5), k.old)),
        ErrorCode.GLOBALCONF_INVALID,
    ),
    "rolled back": (lambda k: signed(configuration(1), k.old), ErrorCode.GLOBALCONF_ROLLBACK),
    "same serial, other content": (
        lambda k: signed(configuration(3, name="Other Committee"), k.old),
        ErrorCode.GLOBALCONF_EQUIVOCATION,
    ),
    "expired": (
        lambda k: signed(configuration(5, generated_at=NOW - 2 * TTL), k.old),
        ErrorCode.GLOBALCONF_EXPIRED,
    ),
    "expires exactly now": (
        lambda k: signed(configuration(5, generated_at=NOW - TTL), k.old),
        ErrorCode.GLOBALCONF_EXPIRED,
    ),
    "generated in the future": (
        lambda k: signed(configuration(5, generated_at=NOW + dt.timedelta(minutes=6)), k.old),
        ErrorCode.GLOBALCONF_INVALID,
    ),
    "wrong instance": (
        lambda k: signed(configuration(5, instance="KG"), k.old),
        ErrorCode.GLOBALCONF_WRONG_INSTANCE,
    ),
    "unknown signer": (
        lambda k: signed(configuration(5), k.stranger),
        ErrorCode.GLOBALCONF_UNKNOWN_SIGNER,
    ),
    "not an envelope": (lambda _k: b"<html>oops</html>", ErrorCode.GLOBALCONF_INVALID),
    "signed garbage": (
        lambda k: sign_configuration(b"\xff\xff", key=k.old.key, certificate=k.old.certificate),
        ErrorCode.GLOBALCONF_INVALID,
    ),
}


@pytest.mark.parametrize(("make", "code"), list(BAD.values()), ids=list(BAD))
async def test_bad_input_is_refused_and_the_last_good_copy_kept(
    keys: Keys,
    feed: Feed,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    make: Callable[[Keys], bytes],
    code: ErrorCode,
) -> None:
    client = make_client(feed, tmp_path, keys.old, clock=Clock())
    good = signed(configuration(3, generated_at=NOW - dt.timedelta(minutes=1)), keys.old)
    feed.publish(good)
    await client.refresh()
    held = client.current()

    feed.publish(make(keys))
    with pytest.raises(ConfigurationError) as info:
        await client.refresh()
    assert refused(info) is code
    assert client.current() is held
    assert client.current_envelope() == good
    assert (tmp_path / CACHE_FILE_NAME).read_bytes() == good
    assert os.listdir(tmp_path) == [CACHE_FILE_NAME]  # no temporary file left behind
    status = client.status()
    assert status.last_error is info.value
    assert status.serial == 3

    # The refresh loop logs the same refusal and goes on.
    class Stop(Exception):
        pass

    async def one_sleep(_delay: float) -> None:
        raise Stop

    capsys.readouterr()
    with pytest.raises(Stop):
        await client.run(sleep=one_sleep)
    (failed,) = [e for e in events(capsys) if e["event"] == "globalconf_refresh_failed"]
    assert failed["code"] == code.value
    assert failed["held_serial"] == 3
    assert failed["held_expired"] is False


async def test_http_errors_are_unavailable(keys: Keys, tmp_path: Path, http_feed: Feed) -> None:
    client = make_client(http_feed, tmp_path, keys.old, clock=Clock())
    with pytest.raises(ConfigurationError) as info:
        await client.refresh()
    assert refused(info) is ErrorCode.GLOBALCONF_UNAVAILABLE
    assert "404" in info.value.message
    transport = AiohttpFetchTransport()
    try:
        with pytest.raises(ConfigurationError) as info:
            await transport.fetch("http://127.0.0.1:1/", timeout_s=5, max_bytes=100)
        assert refused(info) is ErrorCode.GLOBALCONF_UNAVAILABLE
    finally:
        await transport.aclose()


async def test_oversized_download_is_refused(keys: Keys, http_feed: Feed) -> None:
    http_feed.publish(b"x" * 1000)
    transport = http_feed.transport
    with pytest.raises(ConfigurationError) as info:
        await transport.fetch(http_feed.url, timeout_s=5, max_bytes=999)
    assert refused(info) is ErrorCode.GLOBALCONF_INVALID
    assert await transport.fetch(http_feed.url, timeout_s=5, max_bytes=1000) == b"x" * 1000
    memory = InMemoryFetchTransport(b"x" * 1000)
    with pytest.raises(ConfigurationError) as info:
        await memory.fetch("mem:", timeout_s=5, max_bytes=999)
    assert refused(info) is ErrorCode.GLOBALCONF_INVALID


# -- the cache on disk -------------------------------------------------------------------------


async def test_restart_loads_the_cache_without_the_network(
    keys: Keys, memory_feed: Feed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    envelope = signed(configuration(4), keys.old)
    memory_feed.publish(envelope)
    await make_client(memory_feed, tmp_path, keys.old, clock=Clock()).refresh()

    down = InMemoryFetchTransport()
    down.fail()
    restarted = GlobalConfigurationClient(
        anchor=anchor_of(keys.old), cache_dir=tmp_path, transport=down, clock=Clock()
    )
    loaded = await restarted.load_cache()
    assert loaded is not None
    assert loaded.serial == 4
    assert restarted.current().serial == 4
    assert restarted.current_envelope() == envelope
    assert any(e["event"] == "globalconf_cache_loaded" for e in events(capsys))
    with pytest.raises(ConfigurationError) as info:
        await restarted.refresh()
    assert refused(info) is ErrorCode.GLOBALCONF_UNAVAILABLE
    assert restarted.current().serial == 4


async def test_missing_cache_is_fine(keys: Keys, memory_feed: Feed, tmp_path: Path) -> None:
    client = make_client(memory_feed, tmp_path / "not-yet", keys.old, clock=Clock())
    assert await client.load_cache() is None


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(lambda _e: b"", id="empty"),
        pytest.param(lambda e: e[: len(e) // 3], id="truncated"),
        pytest.param(lambda e: e[:-5] + b"\x00" * 5, id="zeroed-tail"),
        pytest.param(lambda _e: b"\x00" * 4096, id="zeros"),
    ],
)
async def test_corrupted_cache_is_ignored_and_replaced(
    keys: Keys,
    memory_feed: Feed,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    corrupt: Callable[[bytes], bytes],
) -> None:
    envelope = signed(configuration(4), keys.old)
    (tmp_path / CACHE_FILE_NAME).write_bytes(corrupt(envelope))
    client = make_client(memory_feed, tmp_path, keys.old, clock=Clock())
    assert await client.load_cache() is None
    (ignored,) = [e for e in events(capsys) if e["event"] == "globalconf_cache_ignored"]
    assert str(ignored["code"]).startswith("globalconf_")
    memory_feed.publish(envelope)
    assert await client.refresh() is True
    assert (tmp_path / CACHE_FILE_NAME).read_bytes() == envelope


async def test_unreadable_cache_is_ignored(
    keys: Keys, memory_feed: Feed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / CACHE_FILE_NAME).mkdir()  # a directory where the file should be
    client = make_client(memory_feed, tmp_path, keys.old, clock=Clock())
    assert await client.load_cache() is None
    assert [e["event"] for e in events(capsys)] == ["globalconf_cache_ignored"]


async def test_expired_cache_is_held_for_rollback_but_not_served(
    keys: Keys, memory_feed: Feed, tmp_path: Path
) -> None:
    (tmp_path / CACHE_FILE_NAME).write_bytes(signed(configuration(9), keys.old))
    clock = Clock(NOW + 2 * TTL)
    client = make_client(memory_feed, tmp_path, keys.old, clock=clock)
    loaded = await client.load_cache()
    assert loaded is not None
    assert loaded.serial == 9
    with pytest.raises(ConfigurationError) as info:
        client.current()
    assert refused(info) is ErrorCode.GLOBALCONF_EXPIRED
    memory_feed.publish(signed(configuration(8, generated_at=clock.now), keys.old))
    with pytest.raises(ConfigurationError) as info:
        await client.refresh()
    assert refused(info) is ErrorCode.GLOBALCONF_ROLLBACK
    memory_feed.publish(signed(configuration(10, generated_at=clock.now), keys.old))
    assert await client.refresh() is True
    assert client.current().serial == 10


async def test_cache_write_failure_still_serves_the_good_copy(
    keys: Keys, memory_feed: Feed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    client = make_client(memory_feed, blocker, keys.old, clock=Clock())
    memory_feed.publish(signed(configuration(1), keys.old))
    assert await client.refresh() is True
    assert client.current().serial == 1
    assert "globalconf_cache_write_failed" in [e["event"] for e in events(capsys)]


# -- expiry ------------------------------------------------------------------------------------


async def test_expiry_fails_closed_then_recovers(
    keys: Keys, feed: Feed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = Clock()
    client = make_client(feed, tmp_path, keys.old, clock=clock)
    feed.publish(signed(configuration(1), keys.old))
    await client.refresh()
    clock.now = NOW + TTL - dt.timedelta(microseconds=1)
    assert client.current().serial == 1  # served until the last instant

    clock.now = NOW + TTL
    with pytest.raises(ConfigurationError) as info:
        client.current()
    assert refused(info) is ErrorCode.GLOBALCONF_EXPIRED
    assert info.value.status.name == "UNAVAILABLE"
    assert client.status().expired
    assert await client.refresh() is False  # the registry is stuck on the same copy
    with pytest.raises(ConfigurationError):
        client.current()

    feed.publish(signed(configuration(2, generated_at=clock.now), keys.old))
    assert await client.refresh() is True
    assert client.current().serial == 2
    assert not client.status().expired


# -- key rotation ------------------------------------------------------------------------------


async def test_key_rotation_without_downtime(keys: Keys, feed: Feed, tmp_path: Path) -> None:
    clock = Clock()
    client = make_client(feed, tmp_path / "gw", keys.old, keys.new, clock=clock)
    serials: list[int] = []

    async def step(serial: int, signer: Signer) -> None:
        clock.now += dt.timedelta(minutes=1)
        feed.publish(signed(configuration(serial, generated_at=clock.now), signer))
        await client.refresh()
        serials.append(client.current().serial)  # never raises: no downtime

    await step(1, keys.old)  # before the rollover
    await step(2, keys.old)
    await step(3, keys.new)  # the registry switches to the new key
    await step(4, keys.new)
    assert serials == [1, 2, 3, 4]

    # The anchor is replaced by one with only the new certificate.
    only_new = make_client(feed, tmp_path / "gw", keys.new, clock=clock)
    loaded = await only_new.load_cache()  # the cache (serial 4) is signed by the new key
    assert loaded is not None
    assert loaded.serial == 4
    clock.now += dt.timedelta(minutes=1)
    feed.publish(signed(configuration(5, generated_at=clock.now), keys.old))
    with pytest.raises(ConfigurationError) as info:
        await only_new.refresh()
    assert refused(info) is ErrorCode.GLOBALCONF_UNKNOWN_SIGNER
    assert only_new.current().serial == 4
    feed.publish(signed(configuration(5, generated_at=clock.now), keys.new))
    assert await only_new.refresh() is True


async def test_old_key_cache_is_ignored_after_the_anchor_drops_it(
    keys: Keys, memory_feed: Feed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / CACHE_FILE_NAME).write_bytes(signed(configuration(2), keys.old))
    client = make_client(memory_feed, tmp_path, keys.new, clock=Clock())
    assert await client.load_cache() is None
    (ignored,) = [e for e in events(capsys) if e["event"] == "globalconf_cache_ignored"]
    assert ignored["code"] == ErrorCode.GLOBALCONF_UNKNOWN_SIGNER.value


# -- the refresh loop ------------------------------------------------------------------------


async def test_periodic_refresh_picks_up_a_new_serial(
    keys: Keys, feed: Feed, tmp_path: Path
) -> None:
    seen: list[int] = []
    client = make_client(
        feed,
        tmp_path,
        keys.old,
        clock=Clock(),
        refresh_interval_s=0.01,
        on_change=lambda snap: seen.append(snap.serial),
    )
    feed.publish(signed(configuration(1), keys.old))
    async with client:
        first = await asyncio.wait_for(client.wait_for_change(after_serial=None), 60)
        assert first.serial == 1
        feed.publish(signed(configuration(2), keys.old))
        second = await asyncio.wait_for(client.wait_for_change(after_serial=1), 60)
        assert second.serial == 2
        assert client.current().serial == 2
        with pytest.raises(RuntimeError, match="already started"):
            await client.start()
    assert seen == [1, 2]


async def test_start_loads_the_cache_first(keys: Keys, memory_feed: Feed, tmp_path: Path) -> None:
    (tmp_path / CACHE_FILE_NAME).write_bytes(signed(configuration(6), keys.old))
    memory_feed.transport.fail()  # type: ignore[attr-defined]
    client = make_client(memory_feed, tmp_path, keys.old, clock=Clock())
    await client.start()
    try:
        assert client.current().serial == 6  # served before any download succeeds
    finally:
        await client.stop()
    await client.stop()  # idempotent


async def test_loop_survives_failures_and_backs_off(
    keys: Keys, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    transport = InMemoryFetchTransport()
    transport.fail()
    client = GlobalConfigurationClient(
        anchor=anchor_of(keys.old),
        cache_dir=tmp_path,
        transport=transport,
        clock=Clock(),
        refresh_interval_s=60,
    )
    delays: list[float] = []

    class Stop(Exception):
        pass

    async def sleep(delay: float) -> None:
        delays.append(delay)
        if len(delays) == 3:
            transport.publish(b"junk")
        elif len(delays) == 4:
            transport.publish(signed(configuration(1), keys.old))
        elif len(delays) == 5:
            raise Stop

    with pytest.raises(Stop):
        await client.run(sleep=sleep)
    assert transport.fetches == 5
    assert 0.5 <= delays[0] <= 1.0
    assert 1.0 <= delays[1] <= 2.0
    assert 2.0 <= delays[2] <= 4.0
    assert 4.0 <= delays[3] <= 8.0  # the junk was refused: still backing off
    assert 54.0 <= delays[4] <= 60.0  # success: back to the interval
    assert client.current().serial == 1
    codes = [e["code"] for e in events(capsys) if e["event"] == "globalconf_refresh_failed"]
    assert codes == ["globalconf_unavailable"] * 3 + ["globalconf_invalid"]


async def test_loop_survives_an_unexpected_exception(
    keys: Keys, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    class Broken:
        async def fetch(self, url: str, *, timeout_s: float, max_bytes: int) -> bytes:
            raise KeyError("bug")

    client = GlobalConfigurationClient(
        anchor=anchor_of(keys.old), cache_dir=tmp_path, transport=Broken(), clock=Clock()
    )

    class Stop(Exception):
        pass

    calls = 0

    async def sleep(_delay: float) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise Stop

    with pytest.raises(Stop):
        await client.run(sleep=sleep)
    codes = [e["code"] for e in events(capsys) if e["event"] == "globalconf_refresh_failed"]
    assert codes == ["internal", "internal"]


async def test_failing_callback_does_not_stop_updates(
    keys: Keys, memory_feed: Feed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(_snap: ConfigurationSnapshot) -> None:
        raise RuntimeError("subscriber bug")

    client = make_client(memory_feed, tmp_path, keys.old, clock=Clock(), on_change=broken)
    memory_feed.publish(signed(configuration(1), keys.old))
    assert await client.refresh() is True
    assert client.current().serial == 1
    assert "globalconf_callback_failed" in [e["event"] for e in events(capsys)]


@pytest.mark.parametrize(
    ("failures", "low", "high"),
    [(1, 0.5, 1.0), (2, 1.0, 2.0), (5, 8.0, 16.0), (7, 30.0, 60.0), (10_000, 30.0, 60.0)],
)
def test_retry_delay_is_jittered_exponential_and_capped(
    failures: int, low: float, high: float
) -> None:
    assert _retry_delay_s(failures, max_s=60, rand=lambda: 0.0) == low
    assert _retry_delay_s(failures, max_s=60, rand=lambda: 1.0) == high


# -- the trusted state itself ----------------------------------------------------------------


def test_commit_refuses_a_stale_candidate(keys: Keys) -> None:
    state = TrustedConfiguration(anchor_of(keys.old))
    one = state.check(signed(configuration(1), keys.old), now=NOW)
    two = state.check(signed(configuration(2), keys.old), now=NOW)
    assert one is not None
    assert two is not None
    state.commit(two)
    with pytest.raises(ConfigurationError) as info:
        state.commit(one)  # checked against an older held copy
    assert refused(info) is ErrorCode.GLOBALCONF_ROLLBACK
    assert state.snapshot is not None
    assert state.snapshot.serial == 2


@pytest.fixture(scope="module")
def valid_envelope(keys: Keys) -> bytes:
    return signed(configuration(3), keys.old)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_random_corruption_never_yields_another_configuration(
    keys: Keys, valid_envelope: bytes, data: st.DataObject
) -> None:
    envelope = bytearray(valid_envelope)
    edits = data.draw(st.integers(min_value=1, max_value=4), label="edits")
    for _ in range(edits):
        kind = data.draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        at = data.draw(st.integers(min_value=0, max_value=max(0, len(envelope) - 1)))
        if kind == "flip" and envelope:
            envelope[at] ^= 1 << data.draw(st.integers(min_value=0, max_value=7))
        elif kind == "set" and envelope:
            envelope[at] = data.draw(st.integers(min_value=0, max_value=255))
        elif kind == "insert":
            envelope[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del envelope[at : at + data.draw(st.integers(min_value=1, max_value=8))]
        else:
            del envelope[at:]
    state = TrustedConfiguration(anchor_of(keys.old))
    try:
        candidate = state.check(bytes(envelope), now=NOW)
    except ConfigurationError:
        return  # refused: the only other acceptable outcome
    assert candidate is not None
    state.commit(candidate)
    assert state.snapshot is not None
    original = TrustedConfiguration(anchor_of(keys.old))
    expected = original.check(valid_envelope, now=NOW)
    assert expected is not None
    # If it verifies at all, it is the very configuration that was signed.
    assert encode_configuration(state.snapshot.configuration) == encode_configuration(
        expected.held.snapshot.configuration
    )
    assert state.snapshot.configuration == expected.held.snapshot.configuration
