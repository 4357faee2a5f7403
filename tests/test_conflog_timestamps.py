"""RFC 3161 time-stamps on the configuration log's heads: the registry side
(``registry._conflogstamp``, the store's ``conflog_timestamps``, publisher guarantee 6,
the schema 3 migration, the age gauge) and the gateway side (``registry.client`` rule 7,
``registry.conflog`` rule 5, the seen heads keeping the newest time-stamped head).

The TSA is the development TSA (``certs.tsa``) served on loopback behind a switch that
takes it down; stores are SQLite and real PostgreSQL; tokens are also checked with
``openssl ts -verify``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import datetime as dt
import json
import shutil
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client import CollectorRegistry, generate_latest

from certs.keys import write_certificate_chain
from certs.pkidir import PKIDirectory
from certs.timestamp import TIMESTAMP_REPLY, build_query, verify_reply
from certs.tsa import TimeStampAuthority
from registry._conflogstamp import ConflogTimestamper
from registry.client import HEADS_FILE_NAME, GlobalConfigurationClient
from registry.codec import TrustAnchor
from registry.conflog import MAX_SEEN_HEADS, RECENT_PROOFS, ProofBundle, SeenHeads
from registry.errors import ConfigurationError, RegistryError
from registry.metrics import registry_metrics
from registry.publisher import PublicationLoop, PublishedConfiguration, Publisher
from registry.server import RegistryServer
from registry.sqlstore import SqlRegistryStore
from serai.errors import ErrorCode
from serai.merkle import MemoryTree
from serai.tokens import TokenVerifier
from serai.treehead import (
    SignedTreeHead,
    TreeHead,
    sign_tree_head,
    verify_tree_head_timestamp,
)
from tests.conflogkit import CHANGE, Pki, approve, der, make_pki, publisher
from tests.pgutil import fresh_database

BASE = "http://registry.invalid/"
LOG_ID = "UZ/registry-conf"


# -- fixtures: a PKI, a switchable TSA, a registry --------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki") / "pki")


class SwitchableTSA:
    """The dev TSA over HTTP; ``down`` makes it answer 503 like a TSA in maintenance."""

    def __init__(self, tsa: TimeStampAuthority) -> None:
        self.tsa = tsa
        self.down = False
        self.requests = 0
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.down:
            return web.Response(status=503, text="down for maintenance\n")
        return web.Response(
            body=self.tsa.respond(await request.read()), content_type=TIMESTAMP_REPLY
        )


@pytest.fixture
async def tsa(pki: Pki) -> AsyncIterator[SwitchableTSA]:
    switch = SwitchableTSA(pki.tsa)
    app = web.Application()
    app.router.add_post("/", switch.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    switch.url = str(server.make_url("/"))
    try:
        yield switch
    finally:
        await server.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def opener(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[], SqlRegistryStore]]:
    if request.param == "sqlite":
        yield lambda: SqlRegistryStore.open_sqlite(tmp_path / "registry.db", instance="UZ")
        return
    with fresh_database() as dsn:
        yield lambda: SqlRegistryStore.open_postgres(dsn, instance="UZ")


class Registry:
    """A store with the dev CA and TSA approved, its publisher and its timestamper."""

    def __init__(self, store: SqlRegistryStore, pki: Pki, tsa_url: str, root: Path) -> None:
        self.store = store
        approve(store, pki, tsa_url)
        self.dir = root / "pub"
        self.publisher = publisher(store, pki, self.dir)
        self.executor = concurrent.futures.ThreadPoolExecutor(1)
        self.stamper = ConflogTimestamper(
            store=store,
            executor=self.executor,
            snapshot=lambda: None if (p := self.publisher.current) is None else p.snapshot,
            timeout_s=5,
            backoff_initial_s=0.02,
            backoff_max_s=0.1,
            jitter=lambda: 1.0,
        )

    async def publish(self) -> PublishedConfiguration:
        loop = asyncio.get_running_loop()
        published = await loop.run_in_executor(self.executor, self.publisher.publish)
        self.stamper.published()
        return published

    def bundle(self, serial: int) -> ProofBundle:
        return ProofBundle.decode((self.dir / f"globalconf/v1/conflog/{serial}").read_bytes())

    async def close(self) -> None:
        await self.stamper.stop()
        self.executor.shutdown(wait=True)
        self.store.close()


@pytest.fixture
async def registry(
    opener: Callable[[], SqlRegistryStore], pki: Pki, tsa: SwitchableTSA, tmp_path: Path
) -> AsyncIterator[Registry]:
    reg = Registry(opener(), pki, tsa.url, tmp_path)
    try:
        yield reg
    finally:
        await reg.close()


async def eventually(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def events(capsys: pytest.CaptureFixture[str], name: str) -> list[dict[str, object]]:
    found = []
    for line in capsys.readouterr().err.splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == name:
                found.append(event)
    return found


def openssl_verifies(pki: Pki, sth: SignedTreeHead, tmp_path: Path) -> str:
    exe = shutil.which("openssl")
    assert exe is not None, "the openssl command is needed for the interop tests"
    assert sth.timestamp_token is not None
    (tmp_path / "sth.jws").write_bytes(sth.jws)
    (tmp_path / "token.tst").write_bytes(sth.timestamp_token)
    write_certificate_chain(tmp_path / "tsa.pem", list(pki.tsa_chain))
    result = subprocess.run(
        [exe, "ts", "-verify", "-data", "sth.jws", "-token_in", "-in", "token.tst",
         "-CAfile", str(pki.dir.root_cert), "-untrusted", "tsa.pem"],
        check=False, capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    return result.stdout + result.stderr


# -- the registry: obtaining, storing and shipping tokens ---------------------------------------


async def test_a_publication_gets_a_token_that_verifies(
    registry: Registry,
    pki: Pki,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With the dev TSA up, the head of a publication gets a token over its JWS bytes; it
    verifies with Serai and with ``openssl ts -verify``, and the next bundle carries it."""
    first = await registry.publish()
    assert first.bundle is not None
    assert first.bundle.timestamped is None
    assert await registry.stamper.timestamp_newest()
    sth = registry.store.conflog_newest_head()
    assert sth is not None
    assert sth.timestamp_token is not None
    assert sth.jws == first.bundle.sth
    gen_time = verify_tree_head_timestamp(
        sth, tsa_trusted_roots=[pki.root], approved_tsa_certificates={der(pki.tsa_chain[0])}
    )
    assert abs((gen_time - dt.datetime.now(dt.UTC)).total_seconds()) < 60
    assert "Verification: OK" in await asyncio.to_thread(openssl_verifies, pki, sth, tmp_path)
    [event] = events(capsys, "conflog_timestamped")
    assert event["tree_size"] == 1
    assert event["tsa"] == "dev-tsa"
    assert registry.stamper.timestamped_head == sth

    second = await registry.publish()
    assert second.bundle is not None
    assert second.bundle.timestamped == sth
    assert registry.bundle(second.serial) == second.bundle  # what was written, exactly
    assert registry.store.conflog_timestamped_head() == sth


async def test_tsa_down_publishes_without_token_then_catches_up(
    registry: Registry, tsa: SwitchableTSA, capsys: pytest.CaptureFixture[str]
) -> None:
    """Publication never waits for the TSA: heads published while it is down ship
    without a token, the background task retries with back-off, and once the TSA is
    back the newest head (covering every earlier leaf) gets the token a later bundle
    carries."""
    tsa.down = True
    await registry.stamper.start()
    for _ in range(2):
        published = await registry.publish()
        assert published.bundle is not None
        assert published.bundle.timestamped is None
    await eventually(lambda: registry.stamper.consecutive_failures >= 3)
    assert registry.stamper.retry_delay_s > 0.02  # backing off
    failed = events(capsys, "conflog_timestamp_failed")
    assert failed
    assert all(e["code"] == "tsa_unavailable" for e in failed)
    assert "HTTP 503" in str(failed[0]["message"])
    assert registry.store.conflog_timestamped_head() is None

    tsa.down = False
    await eventually(lambda: registry.stamper.timestamped_head is not None)
    stamped = registry.stamper.timestamped_head
    assert stamped is not None
    assert stamped.head.tree_size == 2
    assert registry.stamper.consecutive_failures == 0
    assert [e["tree_size"] for e in events(capsys, "conflog_timestamped")] == [2]
    third = await registry.publish()
    assert third.bundle is not None
    assert third.bundle.timestamped == stamped
    await eventually(
        lambda: (h := registry.stamper.timestamped_head) is not None and h.head.tree_size == 3
    )


async def test_publication_does_not_wait_for_a_hanging_tsa(
    opener: Callable[[], SqlRegistryStore], pki: Pki, tmp_path: Path
) -> None:
    """A TSA that accepts the connection and never answers holds up only the
    timestamper; publications go on."""
    hang = asyncio.Event()

    async def never(request: web.Request) -> web.Response:
        await hang.wait()
        return web.Response(status=503)

    app = web.Application()
    app.router.add_post("/", never)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    reg = Registry(opener(), pki, str(server.make_url("/")), tmp_path)
    try:
        await reg.stamper.start()
        for size in (1, 2, 3):
            published = await asyncio.wait_for(reg.publish(), timeout=10)
            assert published.bundle is not None
            assert published.bundle.leaf_index + 1 == size
        assert reg.stamper.timestamped_head is None
    finally:
        await reg.close()
        hang.set()
        await server.close()


async def test_a_token_from_a_withdrawn_tsa_is_withheld(
    registry: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    """The registry ships a token only if the configuration beside it approves its TSA
    (what gateways check): withdrawing the TSA withholds it instead of breaking every
    gateway's refresh."""
    await registry.publish()
    assert await registry.stamper.timestamp_newest()
    registry.store.remove_timestamping_authority("dev-tsa", CHANGE)
    published = await registry.publish()
    assert published.bundle is not None
    assert published.bundle.timestamped is None
    [event] = events(capsys, "conflog_timestamp_withheld")
    assert event["code"] == "timestamp_invalid"
    assert event["tree_size"] == 1
    assert not await registry.stamper.timestamp_newest()
    [failed] = events(capsys, "conflog_timestamp_failed")
    assert "approves no TSA" in str(failed["message"])


async def test_an_old_token_brings_its_consistency_proof(registry: Registry) -> None:
    """A time-stamped head older than the bundle's recent sizes comes with the proof
    from its size, so a gateway can check it without a further fetch."""
    await registry.publish()
    assert await registry.stamper.timestamp_newest()
    for _ in range(RECENT_PROOFS + 3):
        published = await registry.publish()
    assert published.bundle is not None
    assert published.bundle.timestamped is not None
    assert published.bundle.timestamped.head.tree_size == 1
    assert 1 in published.bundle.consistency
    assert min(k for k in published.bundle.consistency if k > 1) == 4


# -- the store -----------------------------------------------------------------------------------


async def test_store_keeps_one_token_per_head(registry: Registry) -> None:
    await registry.publish()
    with pytest.raises(RegistryError) as raised:
        registry.store.conflog_add_timestamp(2, b"token")
    assert raised.value.code is ErrorCode.NOT_FOUND
    assert registry.store.conflog_add_timestamp(1, b"first")
    assert not registry.store.conflog_add_timestamp(1, b"second")
    newest = registry.store.conflog_newest_head()
    assert newest is not None
    assert newest.timestamp_token == b"first"


# -- the migration from schema version 2 ---------------------------------------------------------


async def test_a_version_2_sqlite_database_is_upgraded(
    pki: Pki, tsa: SwitchableTSA, tmp_path: Path
) -> None:
    """Opening a version 2 database (a log, no time-stamps) adds ``conflog_timestamps``
    and records version 3, keeping the log; its old heads then get tokens as usual."""
    path = tmp_path / "registry.db"
    reg = Registry(SqlRegistryStore.open_sqlite(path, instance="UZ"), pki, tsa.url, tmp_path)
    await reg.publish()
    await reg.publish()
    await reg.close()
    raw = sqlite3.connect(path)
    with raw:
        raw.execute("DROP TABLE conflog_timestamps")
        raw.execute("UPDATE schema_version SET version = 2")
    raw.close()
    store = SqlRegistryStore.open_sqlite(path, instance="UZ")
    try:
        assert store.conflog_size() == 2
        newest = store.conflog_newest_head()
        assert newest is not None
        assert newest.timestamp_token is None
        assert store.conflog_timestamped_head() is None
        assert store.conflog_add_timestamp(2, b"token")
    finally:
        store.close()
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("SELECT version FROM schema_version").fetchall() == [(3,)]
    finally:
        raw.close()


@pytest.mark.postgres
async def test_a_version_2_postgres_database_is_upgraded(
    pki: Pki, tsa: SwitchableTSA, tmp_path: Path
) -> None:
    with fresh_database() as dsn:
        reg = Registry(SqlRegistryStore.open_postgres(dsn, instance="UZ"), pki, tsa.url, tmp_path)
        await reg.publish()
        await reg.close()
        with psycopg.connect(dsn, autocommit=True) as raw:
            raw.execute("DROP TABLE conflog_timestamps")
            raw.execute("UPDATE schema_version SET version = 2")
        store = SqlRegistryStore.open_postgres(dsn, instance="UZ")
        try:
            assert store.conflog_size() == 1
            assert store.conflog_timestamped_head() is None
            assert store.conflog_add_timestamp(1, b"token")
            newest = store.conflog_newest_head()
            assert newest is not None
            assert newest.timestamp_token == b"token"
        finally:
            store.close()
        with psycopg.connect(dsn) as raw:
            assert raw.execute("SELECT version FROM schema_version").fetchall() == [(3,)]


# -- the age gauge -------------------------------------------------------------------------------


async def test_the_age_gauge_follows_the_newest_timestamped_head(registry: Registry) -> None:
    metrics = CollectorRegistry()
    loop = PublicationLoop(registry.publisher, executor=registry.executor, interval_s=60)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=90)
    registry_metrics(
        metrics,
        loop,
        clock=lambda: later,
        conflog_timestamped=lambda: registry.stamper.timestamped_head,
    )
    name = "serai_registry_conflog_timestamp_age_seconds"
    assert f"\n{name} " not in generate_latest(metrics).decode()  # no token yet: no sample
    await registry.publish()
    assert await registry.stamper.timestamp_newest()
    stamped = registry.stamper.timestamped_head
    assert stamped is not None
    line = next(
        text for text in generate_latest(metrics).decode().splitlines() if text.startswith(name)
    )
    assert float(line.split()[1]) == pytest.approx((later - stamped.head.time).total_seconds())


# -- the gateway ---------------------------------------------------------------------------------


class Transport:
    """Serves a registry's publish directory (and proofs from its store); ``overrides``
    replace a file's bytes, like a tampering mirror."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.overrides: dict[str, bytes] = {}

    async def fetch(self, url: str, *, timeout_s: float, max_bytes: int) -> bytes:
        path = url.removeprefix(BASE)
        if path in self.overrides:
            return self.overrides[path]
        file = self.registry.dir / path
        if not file.is_file():
            raise ConfigurationError(f"404 {path}", code=ErrorCode.GLOBALCONF_UNAVAILABLE)
        return file.read_bytes()


def gateway(transport: Transport, pki: Pki, cache: Path) -> GlobalConfigurationClient:
    return GlobalConfigurationClient(
        anchor=TrustAnchor(
            instance="UZ",
            download_url=BASE + "globalconf/v1/current",
            signing_certificates=(der(pki.conf_cert),),
            generated_at=dt.datetime.now(dt.UTC),
            configuration_log_id=LOG_ID,
        ),
        cache_dir=cache,
        transport=transport,
    )


async def stamped_registry(registry: Registry) -> int:
    """Two publications, the first head time-stamped: the serial whose bundle carries it."""
    await registry.publish()
    assert await registry.stamper.timestamp_newest()
    return (await registry.publish()).serial


async def test_the_gateway_accepts_and_keeps_a_timestamped_head(
    registry: Registry, pki: Pki, tmp_path: Path
) -> None:
    transport = Transport(registry)
    client = gateway(transport, pki, tmp_path / "gw")
    await registry.publish()
    assert await client.refresh()
    assert client.status().log_timestamped_size is None  # no token yet: accepted all the same
    assert await registry.stamper.timestamp_newest()
    await registry.publish()
    assert await client.refresh()
    stamped = client.timestamped_head
    assert stamped is not None
    assert stamped.head.tree_size == 1
    assert stamped == registry.store.conflog_timestamped_head()
    assert client.status().log_timestamped_size == 1
    assert client.status().log_tree_size == 2
    # A restart remembers the token with its head.
    restarted = gateway(transport, pki, tmp_path / "gw")
    await restarted.load_cache()
    assert restarted.timestamped_head == stamped
    assert b" " in (tmp_path / "gw" / HEADS_FILE_NAME).read_bytes()


def _flip_token(bundle: ProofBundle) -> ProofBundle:
    assert bundle.timestamped is not None
    assert bundle.timestamped.timestamp_token is not None
    token = bytearray(bundle.timestamped.timestamp_token)
    token[-40] ^= 0x01  # inside the signature
    return dataclasses.replace(bundle, timestamped=bundle.timestamped.with_timestamp(bytes(token)))


def _other_tsa_token(bundle: ProofBundle, tmp_path: Path) -> ProofBundle:
    other = PKIDirectory.init(tmp_path / "other-pki", instance="UZ")
    key, chain = other.tsa_signer()
    stranger = TimeStampAuthority(key=key, chain=chain)
    assert bundle.timestamped is not None
    query = build_query(bundle.timestamped.jws, nonce=None)
    token = verify_reply(
        stranger.respond(query),
        data=bundle.timestamped.jws,
        nonce=None,
        trusted_roots=[other.root_certificate()],
    ).token_der
    return dataclasses.replace(bundle, timestamped=bundle.timestamped.with_timestamp(token))


def _token_of_another_head(bundle: ProofBundle) -> ProofBundle:
    assert bundle.timestamped is not None
    assert bundle.timestamped.timestamp_token is not None
    other = SignedTreeHead(bundle.sth, timestamp_token=bundle.timestamped.timestamp_token)
    return dataclasses.replace(bundle, timestamped=other)


@pytest.mark.parametrize(
    ("tamper", "fragment"),
    [
        pytest.param(lambda b, p: _flip_token(b), "time-stamp", id="flipped-token-byte"),
        pytest.param(_other_tsa_token, "TSA certificate", id="tsa-not-approved"),
        pytest.param(lambda b, p: _token_of_another_head(b), "imprint", id="token-of-other-head"),
    ],
)
async def test_a_bad_token_is_refused_as_timestamp_invalid(
    registry: Registry, pki: Pki, tmp_path: Path, tamper: object, fragment: str
) -> None:
    """A token that does not verify against the configuration's approved TSAs refuses
    the configuration with ``timestamp_invalid``; the held copy stays."""
    transport = Transport(registry)
    client = gateway(transport, pki, tmp_path / "gw")
    await registry.publish()
    assert await client.refresh()
    serial = await stamped_registry(registry)
    bad = tamper(registry.bundle(serial), tmp_path)  # type: ignore[operator]
    transport.overrides[f"globalconf/v1/conflog/{serial}"] = bad.encode()
    held = client.status().serial
    with pytest.raises(ConfigurationError) as raised:
        await client.refresh()
    assert raised.value.code is ErrorCode.TIMESTAMP_INVALID
    assert fragment in raised.value.message
    assert client.status().serial == held
    assert client.timestamped_head is None
    del transport.overrides[f"globalconf/v1/conflog/{serial}"]
    assert await client.refresh()  # the genuine bundle is accepted
    assert client.timestamped_head is not None


def _forged_head(bundle: ProofBundle, pki: Pki, **changes: object) -> ProofBundle:
    assert bundle.timestamped is not None
    assert bundle.timestamped.timestamp_token is not None
    head = dataclasses.replace(bundle.timestamped.head, **changes)  # type: ignore[arg-type]
    sth = sign_tree_head(head, pki.conf_key, [pki.conf_cert])
    return dataclasses.replace(
        bundle, timestamped=sth.with_timestamp(bundle.timestamped.timestamp_token)
    )


def _flipped_head_signature(bundle: ProofBundle) -> ProofBundle:
    assert bundle.timestamped is not None
    assert bundle.timestamped.timestamp_token is not None
    header, payload, signature = bundle.timestamped.jws.split(b".")
    flipped = (b"A" if signature[:1] != b"A" else b"B") + signature[1:]
    sth = SignedTreeHead(b".".join((header, payload, flipped)))
    return dataclasses.replace(
        bundle, timestamped=sth.with_timestamp(bundle.timestamped.timestamp_token)
    )


@pytest.mark.parametrize(
    ("tamper", "fragment"),
    [
        pytest.param(
            lambda b, p: _flipped_head_signature(b), "signature does not verify", id="forged"
        ),
        pytest.param(
            lambda b, p: _forged_head(b, p, root_hash=b"\x07" * 32),
            "not consistent with the bundle's head",
            id="fork",
        ),
        pytest.param(
            lambda b, p: _forged_head(b, p, tree_size=9), "larger than the bundle's", id="larger"
        ),
        pytest.param(
            lambda b, p: dataclasses.replace(b, consistency={}),
            "lacks the consistency proof",
            id="no-proof",
        ),
    ],
)
async def test_a_bad_timestamped_head_is_equivocation(
    registry: Registry, pki: Pki, tmp_path: Path, tamper: object, fragment: str
) -> None:
    transport = Transport(registry)
    client = gateway(transport, pki, tmp_path / "gw")
    serial = await stamped_registry(registry)
    transport.overrides[f"globalconf/v1/conflog/{serial}"] = tamper(  # type: ignore[operator]
        registry.bundle(serial), pki
    ).encode()
    with pytest.raises(ConfigurationError) as raised:
        await client.refresh()
    assert raised.value.code is ErrorCode.GLOBALCONF_EQUIVOCATION
    assert fragment in raised.value.message


# -- formats and the seen heads ------------------------------------------------------------------


def _heads(pki: Pki, *sizes: int) -> list[SignedTreeHead]:
    tree = MemoryTree()
    for i in range(max(sizes)):
        tree.append(b"entry %d" % i)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    return [
        sign_tree_head(
            TreeHead(log_id=LOG_ID, tree_size=size, root_hash=tree.root(size), time=now),
            pki.conf_key,
            [pki.conf_cert],
        )
        for size in sizes
    ]


def test_seen_heads_keep_the_newest_timestamped_head(pki: Pki) -> None:
    heads = _heads(pki, *range(1, MAX_SEEN_HEADS + 11))
    seen = SeenHeads([heads[0].with_timestamp(b"token one"), heads[1]])
    assert seen.timestamped is not None
    assert seen.timestamped.head.tree_size == 1
    seen = seen.with_head(heads[0])  # the same head without its token does not win
    assert seen.timestamped is not None
    assert seen.timestamped.head.tree_size == 1
    for sth in heads[2:]:
        seen = seen.with_head(sth)
    assert len(seen.heads) == MAX_SEEN_HEADS + 1
    assert seen.heads[0].timestamp_token == b"token one"
    assert seen.largest is not None
    assert seen.largest.tree_size == MAX_SEEN_HEADS + 10
    seen = seen.with_head(heads[5].with_timestamp(b"token six"))
    assert len(seen.heads) == MAX_SEEN_HEADS + 1
    assert seen.timestamped is not None
    assert seen.timestamped.timestamp_token == b"token six"
    again = SeenHeads.decode(seen.encode(), log_id=LOG_ID)
    assert again.heads == seen.heads
    with pytest.raises(ConfigurationError) as raised:
        SeenHeads.decode(heads[0].jws + b" not*base64url\n", log_id=LOG_ID)
    assert "token is not base64url" in raised.value.message


def _bundle_with_token(pki: Pki) -> bytes:
    one, two = _heads(pki, 1, 2)
    return ProofBundle(
        serial=2,
        leaf_index=1,
        sth=two.jws,
        inclusion=(b"\x01" * 32,),
        consistency={1: (b"\x02" * 32,)},
        timestamped=one.with_timestamp(b"\x30\x03\x02\x01\x01"),
    ).encode()


def _edit_timestamped(data: bytes, value: object) -> bytes:
    obj = json.loads(data)
    obj["timestamped"] = value
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        pytest.param([], "timestamped is not an object", id="not-object"),
        pytest.param({"sth": "x"}, "has members", id="no-token"),
        pytest.param({"sth": "x", "token": "AA", "extra": 1}, "has members", id="extra"),
        pytest.param({"sth": "x", "token": "A+/="}, "not a base64url", id="token-encoding"),
        pytest.param({"sth": "x", "token": ""}, "not a base64url", id="empty-token"),
        pytest.param({"sth": 5, "token": "AA"}, "timestamped.sth", id="sth-type"),
        pytest.param({"sth": "a.b.c", "token": "AA"}, "time-stamped head", id="sth-garbage"),
    ],
)
def test_bundle_timestamped_member_is_strict(pki: Pki, value: object, fragment: str) -> None:
    data = _bundle_with_token(pki)
    decoded = ProofBundle.decode(data)
    assert decoded.encode() == data
    assert decoded.timestamped is not None
    assert decoded.without_timestamp().encode() != data
    with pytest.raises(ConfigurationError) as raised:
        ProofBundle.decode(_edit_timestamped(data, value))
    assert raised.value.code is ErrorCode.GLOBALCONF_EQUIVOCATION
    assert fragment in raised.value.message


def test_a_bundle_cannot_hold_a_timestamped_head_without_token(pki: Pki) -> None:
    with pytest.raises(ValueError, match="must carry"):
        ProofBundle(serial=1, leaf_index=0, sth=b"", inclusion=(), timestamped=_heads(pki, 1)[0])


# -- the running registry --------------------------------------------------------------------------


async def test_a_running_registry_timestamps_its_heads(
    opener: Callable[[], SqlRegistryStore],
    pki: Pki,
    tsa: SwitchableTSA,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The server wires it together: each publication wakes the timestamper, later
    bundles carry the newest token, and ``/metrics`` shows its age."""
    token_key = ec.generate_private_key(ec.SECP256R1())
    executor = concurrent.futures.ThreadPoolExecutor(1)
    store = opener()
    approve(store, pki, tsa.url)
    publisher = Publisher(
        store=store,
        signing_key=pki.conf_key,
        signing_certificate=pki.conf_cert,
        publish_dir=tmp_path / "pub",
    )
    server = RegistryServer(
        store=store,
        publisher=publisher,
        verifier=TokenVerifier(public_keys=[token_key.public_key()], audience="serai-registry:UZ"),
        executor=executor,
        grpc_listen=("127.0.0.1", 0),
        http_listen=("127.0.0.1", 0),
        regeneration_interval_s=0.2,
    )
    await server.start()
    try:

        def carried() -> bool:
            current = publisher.current
            return (
                current is not None
                and current.bundle is not None
                and current.bundle.timestamped is not None
            )

        await eventually(carried)
        current = publisher.current
        assert current is not None
        assert current.bundle is not None
        stamped = current.bundle.timestamped
        assert stamped is not None
        assert stamped.head.tree_size < current.bundle.leaf_index + 1
        text = generate_latest(server.metrics).decode()
        assert "serai_registry_conflog_timestamp_age_seconds " in text
    finally:
        await server.stop(1)
        await asyncio.get_running_loop().run_in_executor(executor, store.close)
        executor.shutdown()
    assert events(capsys, "conflog_timestamped")
