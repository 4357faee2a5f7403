"""The registry side of the configuration log: the store (SQLite and PostgreSQL), the
schema migration, the publisher's files and the HTTP consistency resource.

Every rule of ``registry._sqlconflog`` / ``registry.publisher`` guarantee 5 has a test;
proofs are checked with :mod:`serai.merkle` against an independent in-memory tree.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import psycopg
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization

from certs.keys import KeyAlgorithm, PrivateKey, generate_private_key
from certs.pkidir import PKIDirectory
from certs.profiles import Profile
from registry import conflog
from registry.client import GlobalConfigurationClient
from registry.codec import TrustAnchor
from registry.conflog import ProofBundle, decode_consistency, log_id_for, verify_head
from registry.errors import RegistryError
from registry.publisher import Publisher, create_http_app
from registry.sqlstore import SqlRegistryStore
from serai.errors import ErrorCode
from serai.merkle import (
    MemoryTree,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from serai.treehead import SignedTreeHead, TreeHead, TreeHeadError, sign_tree_head
from tests.pgutil import fresh_database

_DER = serialization.Encoding.DER
NOW = dt.datetime(2026, 11, 27, 10, 0, 0, 123456, tzinfo=dt.UTC)


class Signer:
    def __init__(self, key: PrivateKey, pki: PKIDirectory, name: str) -> None:
        self.key = key
        self.certificate = pki.issuing_ca().issue(
            Profile.CONFIGURATION_SIGNING, name, key.public_key()
        )

    def head(self, log_id: str = "UZ/registry-conf") -> Callable[[int, bytes], SignedTreeHead]:
        def sign(size: int, root: bytes) -> SignedTreeHead:
            head = TreeHead(
                log_id=log_id, tree_size=size, root_hash=root, time=NOW.replace(microsecond=123000)
            )
            return sign_tree_head(head, self.key, [self.certificate])

        return sign


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKIDirectory:
    return PKIDirectory.init(tmp_path_factory.mktemp("pki") / "pki", instance="UZ")


@pytest.fixture(scope="module")
def signer(pki: PKIDirectory) -> Signer:
    return Signer(generate_private_key(), pki, "UZ registry conflog")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def opener(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[], SqlRegistryStore]]:
    if request.param == "sqlite":
        yield lambda: SqlRegistryStore.open_sqlite(tmp_path / "registry.db", instance="UZ")
        return
    with fresh_database() as dsn:
        yield lambda: SqlRegistryStore.open_postgres(dsn, instance="UZ")


@pytest.fixture
def store(opener: Callable[[], SqlRegistryStore]) -> Iterator[SqlRegistryStore]:
    opened = opener()
    yield opened
    opened.close()


def envelope(n: int) -> bytes:
    return f"configuration {n}".encode() * (n % 3 + 1)


def test_public_surface() -> None:
    assert set(conflog.__all__) == {
        "BUNDLE_DIR",
        "HeadSigner",
        "LOG_ID_SUFFIX",
        "MAX_BUNDLE_BYTES",
        "MAX_SEEN_HEADS",
        "RECENT_PROOFS",
        "ProofBundle",
        "SeenHeads",
        "bundle_path",
        "consistency_path",
        "decode_consistency",
        "encode_consistency",
        "log_id_for",
        "verify_entry",
        "verify_head",
        "verify_head_timestamp",
        "verify_timestamped",
    }
    assert log_id_for("UZ") == "UZ/registry-conf"


# -- the store ------------------------------------------------------------------------------


def test_appends_grow_the_log_and_every_proof_verifies(
    store: SqlRegistryStore, signer: Signer
) -> None:
    """Rule: each append stores the leaf, its nodes and a head of the new size; inclusion
    and consistency proofs between any two sizes verify against an independent tree."""
    mirror = MemoryTree()
    bundles = []
    for n in range(1, 20):
        bundle = store.conflog_append(serial=n * 2, envelope=envelope(n), sign_head=signer.head())
        mirror.append(envelope(n))
        bundles.append(bundle)
        head = SignedTreeHead(bundle.sth).head
        assert (bundle.serial, bundle.leaf_index, head.tree_size) == (n * 2, n - 1, n)
        assert head.root_hash == mirror.root() == store.conflog_root(n)
        verify_inclusion(leaf_hash(envelope(n)), n - 1, n, bundle.inclusion, head.root_hash)
        assert sorted(bundle.consistency) == list(range(max(1, n - 8), n))
        for old, proof in bundle.consistency.items():
            verify_consistency(old, n, mirror.root(old), head.root_hash, proof)
        assert store.conflog_head(n) == bundle.sth
        assert store.conflog_entry(n - 1) == (n * 2, envelope(n))
    assert store.conflog_size() == 19
    for old in range(20):
        for new in range(old, 20):
            verify_consistency(
                old, new, mirror.root(old), mirror.root(new), store.conflog_consistency(old, new)
            )


def test_a_serial_is_appended_once(store: SqlRegistryStore, signer: Signer) -> None:
    """Rule: a serial names one leaf; a second append of it changes nothing."""
    store.conflog_append(serial=7, envelope=b"a", sign_head=signer.head())
    with pytest.raises(RegistryError) as raised:
        store.conflog_append(serial=7, envelope=b"b", sign_head=signer.head())
    assert raised.value.code is ErrorCode.ALREADY_EXISTS
    assert store.conflog_size() == 1


def test_a_failed_head_signature_appends_nothing(store: SqlRegistryStore, signer: Signer) -> None:
    """Rule: leaf, nodes and head are stored together or not at all."""

    def broken(size: int, root: bytes) -> SignedTreeHead:
        raise TreeHeadError("HSM unavailable")

    store.conflog_append(serial=1, envelope=b"a", sign_head=signer.head())
    with pytest.raises(TreeHeadError):
        store.conflog_append(serial=2, envelope=b"b", sign_head=broken)

    def liar(size: int, root: bytes) -> SignedTreeHead:
        return signer.head()(size + 1, root)

    with pytest.raises(RegistryError) as raised:
        store.conflog_append(serial=3, envelope=b"c", sign_head=liar)
    assert raised.value.code is ErrorCode.INTERNAL
    assert store.conflog_size() == 1
    bundle = store.conflog_append(serial=2, envelope=b"b", sign_head=signer.head())
    assert bundle.leaf_index == 1


@pytest.mark.parametrize(
    ("old", "new"), [(0, 4), (3, 2), (2, 4)], ids=["beyond", "backwards", "new-beyond"]
)
def test_proofs_beyond_the_log_are_not_found(
    store: SqlRegistryStore, signer: Signer, old: int, new: int
) -> None:
    for n in range(3):
        store.conflog_append(serial=n + 1, envelope=envelope(n), sign_head=signer.head())
    with pytest.raises(RegistryError) as raised:
        store.conflog_consistency(old, new)
    assert raised.value.code is ErrorCode.NOT_FOUND
    for missing in (lambda: store.conflog_head(4), lambda: store.conflog_entry(3)):
        with pytest.raises(RegistryError) as raised:
            missing()
        assert raised.value.code is ErrorCode.NOT_FOUND


def test_the_log_survives_reopening_and_two_stores_share_it(
    opener: Callable[[], SqlRegistryStore], signer: Signer
) -> None:
    """Rule: the log is durable, and appenders sharing one database extend one log."""
    first, second = opener(), opener()
    try:
        mirror = MemoryTree()
        for n in range(6):
            (first if n % 2 else second).conflog_append(
                serial=n + 1, envelope=envelope(n), sign_head=signer.head()
            )
            mirror.append(envelope(n))
    finally:
        first.close()
        second.close()
    reopened = opener()
    try:
        assert reopened.conflog_size() == 6
        assert reopened.conflog_root(6) == mirror.root()
    finally:
        reopened.close()


# -- the migration ----------------------------------------------------------------------------

#: The configuration log's tables, dependents first (a version 1 database has none).
_LOG_TABLES = ("conflog_timestamps", "conflog_entries", "conflog_nodes", "conflog_heads")


def _version_1_database(path: Path) -> None:
    """A registry database as schema version 1 left it: no conflog tables or counter."""
    SqlRegistryStore.open_sqlite(path, instance="UZ").close()
    raw = sqlite3.connect(path)
    with raw:
        for table in _LOG_TABLES:
            raw.execute(f"DROP TABLE {table}")
        raw.execute("DELETE FROM counters WHERE name = 'conflog'")
        raw.execute("UPDATE counters SET value = 41 WHERE name = 'serial'")
        raw.execute("UPDATE schema_version SET version = 1")
    raw.close()


def test_a_version_1_database_is_upgraded(tmp_path: Path, signer: Signer) -> None:
    """Rule: opening a version 1 database adds the empty log (and its time-stamps) and
    records the current version, keeping what was there (the serial counter)."""
    path = tmp_path / "registry.db"
    _version_1_database(path)
    store = SqlRegistryStore.open_sqlite(path, instance="UZ")
    try:
        assert store.conflog_size() == 0
        assert store.next_serial() == 42
        bundle = store.conflog_append(serial=42, envelope=b"x", sign_head=signer.head())
        assert bundle.leaf_index == 0
    finally:
        store.close()
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("SELECT version FROM schema_version").fetchall() == [(3,)]
    finally:
        raw.close()


@pytest.mark.postgres
def test_a_version_1_postgres_database_is_upgraded(signer: Signer) -> None:
    with fresh_database() as dsn:
        SqlRegistryStore.open_postgres(dsn, instance="UZ").close()
        with psycopg.connect(dsn, autocommit=True) as raw:
            for table in _LOG_TABLES:
                raw.execute(f"DROP TABLE {table}")
            raw.execute("DELETE FROM counters WHERE name = 'conflog'")
            raw.execute("UPDATE schema_version SET version = 1")
        store = SqlRegistryStore.open_postgres(dsn, instance="UZ")
        try:
            assert store.conflog_size() == 0
            store.conflog_append(serial=1, envelope=b"x", sign_head=signer.head())
            assert store.conflog_size() == 1
        finally:
            store.close()
        with psycopg.connect(dsn) as raw:
            assert raw.execute("SELECT version FROM schema_version").fetchall() == [(3,)]


def test_a_newer_schema_is_still_refused(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    SqlRegistryStore.open_sqlite(path, instance="UZ").close()
    raw = sqlite3.connect(path)
    with raw:
        raw.execute("UPDATE schema_version SET version = 4")
    raw.close()
    with pytest.raises(RegistryError) as raised:
        SqlRegistryStore.open_sqlite(path, instance="UZ")
    assert raised.value.code is ErrorCode.INVALID_CONFIG
    assert "schema version 4" in raised.value.message


# -- the publisher and the HTTP resources ------------------------------------------------------


def _publisher(store: SqlRegistryStore, signer: Signer, publish_dir: Path) -> Publisher:
    return Publisher(
        store=store,
        signing_key=signer.key,
        signing_certificate=signer.certificate,
        publish_dir=publish_dir,
        history_keep=3,
        clock=lambda: NOW,
    )


def test_every_published_configuration_is_in_the_log(
    store: SqlRegistryStore, signer: Signer, tmp_path: Path
) -> None:
    """Rule (publisher guarantee 5): what is served is the log's leaf, with its bundle
    beside it; pruning removes a bundle with its configuration."""
    publisher = _publisher(store, signer, tmp_path / "pub")
    root = tmp_path / "pub" / "globalconf" / "v1"
    sizes = []
    for _ in range(5):
        published = publisher.publish()
        bundle = ProofBundle.decode((root / "conflog" / str(published.serial)).read_bytes())
        assert bundle == published.bundle
        served = (root / "current").read_bytes()
        assert served == published.envelope == store.conflog_entry(bundle.leaf_index)[1]
        head = verify_head(
            bundle.sth,
            signing_certificates=[signer.certificate.public_bytes(_DER)],
            log_id="UZ/registry-conf",
        )
        verify_inclusion(
            leaf_hash(served), bundle.leaf_index, head.tree_size, bundle.inclusion, head.root_hash
        )
        assert head.time == NOW.replace(microsecond=123000)
        sizes.append(head.tree_size)
    assert sizes == [1, 2, 3, 4, 5]
    assert sorted(p.name for p in (root / "conflog").iterdir()) == ["3", "4", "5"]
    assert publisher.log_id == "UZ/registry-conf"


def test_a_failed_append_publishes_nothing(
    store: SqlRegistryStore, signer: Signer, tmp_path: Path
) -> None:
    publisher = _publisher(store, signer, tmp_path / "pub")
    first = publisher.publish()
    store.close()
    with pytest.raises(RegistryError):
        publisher.publish()
    root = tmp_path / "pub" / "globalconf" / "v1"
    assert (root / "current").read_bytes() == first.envelope
    assert publisher.current == first


def test_a_publisher_refuses_a_key_that_cannot_sign_heads(
    store: SqlRegistryStore, pki: PKIDirectory, tmp_path: Path
) -> None:
    rsa = Signer(generate_private_key(KeyAlgorithm.RSA_3072), pki, "UZ registry rsa")
    with pytest.raises(TreeHeadError) as raised:
        _publisher(store, rsa, tmp_path / "pub")
    assert raised.value.code is ErrorCode.INVALID_CONFIG


async def test_http_serves_bundles_and_consistency_proofs(signer: Signer, tmp_path: Path) -> None:
    store = SqlRegistryStore.open_sqlite(tmp_path / "r.db", instance="UZ")
    publisher = _publisher(store, signer, tmp_path / "pub")
    for _ in range(4):
        publisher.publish()

    async def consistency(old: int, new: int) -> bytes | None:
        try:
            proof = store.conflog_consistency(old, new)
        except RegistryError:
            return None
        return conflog.encode_consistency(old, new, proof)

    runner = web.AppRunner(create_http_app(tmp_path / "pub", consistency=consistency))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}/globalconf/v1/conflog"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/4") as reply:
                assert reply.status == 200
                assert reply.headers["Content-Type"] == "application/json"
                assert "immutable" in reply.headers["Cache-Control"]
                assert ProofBundle.decode(await reply.read()).leaf_index == 3
            async with http.get(f"{base}/consistency/1/4") as reply:
                assert reply.status == 200
                assert "immutable" in reply.headers["Cache-Control"]
                proof = decode_consistency(await reply.read(), 1, 4)
            verify_consistency(1, 4, store.conflog_root(1), store.conflog_root(4), proof)
            for bad in ("1/5", "3/1", "01/4", "x/4"):
                async with http.get(f"{base}/consistency/{bad}") as reply:
                    assert reply.status == 404, bad
        # A gateway over HTTP: the log's resources are found beside the download URL.
        anchor = TrustAnchor(
            instance="UZ",
            download_url=base.removesuffix("conflog") + "current",
            signing_certificates=(signer.certificate.public_bytes(_DER),),
            generated_at=NOW,
            configuration_log_id="UZ/registry-conf",
        )
        gateway = GlobalConfigurationClient(
            anchor=anchor, cache_dir=tmp_path / "gw", clock=lambda: NOW
        )
        try:
            await gateway.refresh()
            for _ in range(10):
                publisher.publish()
            assert await gateway.refresh()
            assert gateway.status().log_tree_size == 14
        finally:
            await gateway.stop()
    finally:
        await runner.cleanup()
        store.close()
