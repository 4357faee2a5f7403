"""Retention of the registry's configuration log: ``conflog_prune`` on SQLite and real
PostgreSQL, the rules of :mod:`registry._sqlconflog` (what is never pruned), the precise
refusal of a pruned entry, proofs checked afterwards with the gateways' own functions
(:func:`registry.conflog.verify_entry`, ``verify_head``, ``verify_timestamped``,
:mod:`serai.merkle`), the background :class:`registry._conflogprune.ConflogRetention`
with its gauge, ``registry.toml``'s ``conflog_keep_envelopes_days`` and
``serai registry conflog prune``.

Configurations are real signed envelopes from a :class:`registry.publisher.Publisher`
whose clock (and the store's) the test moves; tokens come from the development TSA.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client import CollectorRegistry, generate_latest

from certs.timestamp import build_query, new_nonce, verify_reply
from registry import _sqlconflog
from registry._conflogprune import PRUNE_ACTION, ConflogRetention
from registry._sqlconflog import _expires_at
from registry.config import load_config, render_config
from registry.conflog import ProofBundle, log_id_for, verify_entry, verify_head, verify_timestamped
from registry.errors import RegistryError
from registry.metrics import registry_metrics
from registry.publisher import PublicationLoop, PublishedConfiguration
from registry.server import RegistryServer
from registry.sqlstore import SqlRegistryStore
from registry.store import Change
from serai.cli import main
from serai.errors import ErrorCode, SeraiError
from serai.merkle import verify_consistency
from serai.tokens import TokenVerifier
from tests.conflogkit import Pki, approve, der, make_pki, publisher
from tests.messagelogharness import pg_url
from tests.pgutil import fresh_database

LOG_ID = log_id_for("UZ")
PRUNE = Change(actor="test", action=PRUNE_ACTION)
#: When the first configuration of a test is published (well in the past).
T0 = dt.datetime(2026, 1, 5, 9, 0, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki") / "pki")


class Clock:
    """The publisher's and the store's clock, moved by the test."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


Opener = Callable[[Clock], SqlRegistryStore]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    if request.param == "sqlite":
        yield lambda clock: SqlRegistryStore.open_sqlite(
            tmp_path / "registry.db", instance="UZ", clock=clock
        )
        return
    with fresh_database() as dsn:
        yield lambda clock: SqlRegistryStore.open_postgres(dsn, instance="UZ", clock=clock)


class Registry:
    """A store with the dev CA and TSA approved and one member, its publisher, and
    every configuration it published (the envelopes a gateway would have kept)."""

    def __init__(self, store: SqlRegistryStore, pki: Pki, root: Path, clock: Clock) -> None:
        self.store, self.pki, self.clock = store, pki, clock
        self.dir = root / "pub"
        self.publisher = publisher(store, pki, self.dir, clock=clock)
        self.published: list[PublishedConfiguration] = []

    def approve(self) -> Registry:
        approve(self.store, self.pki, "http://tsa.invalid/")
        return self

    def publish(self, count: int = 1, *, step: dt.timedelta = HOUR) -> None:
        for _ in range(count):
            self.published.append(self.publisher.publish())
            self.clock.now += step

    def stamp(self, tree_size: int) -> None:
        """Store a real token of the development TSA on the head of ``tree_size``."""
        jws = self.store.conflog_head(tree_size)
        nonce = new_nonce()
        reply = self.pki.tsa.respond(build_query(jws, nonce=nonce))
        token = verify_reply(
            reply, data=jws, nonce=nonce, trusted_roots=[self.pki.dir.root_certificate()]
        )
        assert self.store.conflog_add_timestamp(tree_size, token.token_der)

    def bundle(self, serial: int) -> ProofBundle:
        return ProofBundle.decode((self.dir / f"globalconf/v1/conflog/{serial}").read_bytes())

    def verify_everything(self) -> None:
        """What gateways and auditors check, over the whole log, from what the store and
        the publish directory still serve and the envelopes gateways kept."""
        anchor = [der(self.pki.conf_cert)]
        size = self.store.conflog_size()
        assert size == len(self.published)
        roots = {0: self.store.conflog_root(0)}
        for n in range(1, size + 1):
            head = verify_head(
                self.store.conflog_head(n), signing_certificates=anchor, log_id=LOG_ID
            )
            assert head.tree_size == n
            assert head.root_hash == self.store.conflog_root(n)
            roots[n] = head.root_hash
        for published in self.published:
            bundle = self.bundle(published.serial)
            head = verify_entry(
                published.envelope,
                bundle,
                serial=published.serial,
                signing_certificates=anchor,
                log_id=LOG_ID,
            )
            for old, proof in bundle.consistency.items():
                verify_consistency(old, head.tree_size, roots[old], head.root_hash, list(proof))
            assert published.snapshot is not None
            verify_timestamped(
                bundle,
                head,
                snapshot=published.snapshot,
                signing_certificates=anchor,
                log_id=LOG_ID,
            )
        for old in range(size + 1):
            for new in range(old, size + 1):
                steps = self.store.conflog_consistency(old, new)
                verify_consistency(old, new, roots[old], roots[new], list(steps))


@pytest.fixture
def registry(opener: Opener, pki: Pki, tmp_path: Path) -> Iterator[Registry]:
    clock = Clock(T0)
    store = opener(clock)
    try:
        yield Registry(store, pki, tmp_path, clock).approve()
    finally:
        store.close()


def _pruned(store: SqlRegistryStore) -> set[int]:
    pruned = set()
    for index in range(store.conflog_size()):
        refusal: RegistryError | None = None
        try:
            store.conflog_entry(index)
        except RegistryError as exc:
            refusal = exc
        if refusal is not None:
            assert refusal.code is ErrorCode.NOT_FOUND
            assert "pruned" in refusal.message
            pruned.add(index)
    return pruned


# -- the store ------------------------------------------------------------------------------


def test_pruning_keeps_every_proof_head_and_token_verifiable(registry: Registry) -> None:
    registry.publish(6)
    registry.stamp(4)
    registry.publish(2)  # their bundles carry the time-stamped head of size 4
    registry.clock.now += dt.timedelta(days=2)

    result = registry.store.conflog_prune(before=registry.clock.now, change=PRUNE)

    # indices 0..3 are covered by the time-stamped head; 4..7 are not (rule 2)
    assert (result.pruned, result.first_index, result.last_index) == (4, 0, 3)
    assert (result.protected, result.timestamped_size) == (4, 4)
    assert (result.kept_total, result.pruned_total) == (4, 4)
    assert _pruned(registry.store) == {0, 1, 2, 3}
    registry.verify_everything()
    assert registry.store.conflog_timestamped_head() is not None

    # the log keeps growing on top, and a later prune takes what a newer token covers
    registry.publish(2)
    registry.stamp(10)
    registry.publish(1)
    registry.clock.now += dt.timedelta(days=1)
    later = registry.store.conflog_prune(before=registry.clock.now, change=PRUNE)
    assert (later.pruned, later.first_index, later.last_index) == (6, 4, 9)
    assert (later.kept_total, later.pruned_total) == (1, 10)
    registry.verify_everything()
    assert registry.store.conflog_entry(10)[1] == registry.published[10].envelope


def test_a_pruned_entry_is_refused_as_not_found_saying_so(registry: Registry) -> None:
    registry.publish(3)
    registry.stamp(3)
    registry.publish(1)
    registry.clock.now += dt.timedelta(days=1)
    registry.store.conflog_prune(before=registry.clock.now, change=PRUNE)
    serial = registry.published[1].serial
    with pytest.raises(RegistryError) as info:
        registry.store.conflog_entry(1)
    assert info.value.code is ErrorCode.NOT_FOUND
    assert info.value.message == (
        f"the configuration log's entry 1 (serial {serial}) was pruned: retention dropped "
        "its envelope; its leaf hash remains, so its proofs still verify"
    )
    with pytest.raises(RegistryError) as absent:
        registry.store.conflog_entry(4)
    assert absent.value.code is ErrorCode.NOT_FOUND
    assert "pruned" not in absent.value.message
    assert registry.store.conflog_entry(3) == (
        registry.published[3].serial,
        registry.published[3].envelope,
    )


def test_what_is_never_pruned(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_sqlconflog, "_SCAN_ROWS", 2)  # the scan runs in several chunks
    store = registry.store
    registry.publish(3)
    registry.clock.now += dt.timedelta(days=1)
    # no time-stamped head yet: nothing is pruned, whatever the cut-off
    none = store.conflog_prune(before=registry.clock.now, change=PRUNE)
    assert (none.pruned, none.protected, none.timestamped_size) == (0, 3, 0)

    # the newest entry, even when the newest head is time-stamped
    registry.stamp(3)
    newest = store.conflog_prune(before=registry.clock.now, change=PRUNE)
    assert (newest.pruned, newest.last_index, newest.protected) == (2, 1, 1)
    assert _pruned(store) == {0, 1}

    # unexpired configurations: valid for a week, so still valid a day later
    registry.publisher.validity_s = 7 * 24 * 3600
    registry.publish(3)
    registry.stamp(6)
    registry.publish(1)
    registry.clock.now += dt.timedelta(days=1)
    valid = store.conflog_prune(before=registry.clock.now, change=PRUNE)
    assert (valid.pruned, valid.protected) == (1, 4)  # entry 2 (10 min) went
    assert _pruned(store) == {0, 1, 2}

    # entries appended at or after the cut-off stay, expired or not
    registry.clock.now += dt.timedelta(days=30)
    cut = T0 + 28 * HOUR + dt.timedelta(minutes=30)  # after entry 4, before entry 5
    early = store.conflog_prune(before=cut, change=PRUNE)
    assert (early.pruned, early.first_index, early.last_index, early.protected) == (2, 3, 4, 0)
    assert _pruned(store) == {0, 1, 2, 3, 4}
    registry.verify_everything()


def test_pruning_twice_is_harmless_and_audited_once(registry: Registry) -> None:
    registry.publish(4)
    registry.stamp(4)
    registry.publish(1)
    registry.clock.now += dt.timedelta(days=1)
    before_audit = registry.store.last_audit_sequence()
    first = registry.store.conflog_prune(before=registry.clock.now, change=PRUNE)
    second = registry.store.conflog_prune(before=registry.clock.now, change=PRUNE)
    assert first.pruned == 4
    assert (second.pruned, second.first_index, second.pruned_total) == (0, None, 4)
    entries = registry.store.audit_log(after_sequence=before_audit)
    assert [(e.actor, e.action, e.target) for e in entries] == [("test", PRUNE_ACTION, LOG_ID)]
    assert json.loads(entries[0].details) == {
        "before": registry.clock.now.isoformat(),
        "first_index": 0,
        "last_index": 3,
        "pruned": 4,
    }
    assert registry.store.conflog_pruned_count() == 4
    registry.verify_everything()


def test_a_cut_off_without_time_zone_is_refused(registry: Registry) -> None:
    with pytest.raises(RegistryError) as info:
        registry.store.conflog_prune(before=dt.datetime(2026, 1, 1), change=PRUNE)
    assert info.value.code is ErrorCode.INVALID_REQUEST


def test_an_empty_envelope_is_never_appended(registry: Registry) -> None:
    signer = registry.publisher._sign_head
    with pytest.raises(RegistryError) as info:
        registry.store.conflog_append(serial=999, envelope=b"", sign_head=signer)
    assert info.value.code is ErrorCode.INVALID_REQUEST
    assert registry.store.conflog_size() == 0


def test_pruning_while_another_process_publishes(
    registry: Registry, opener: Opener, pki: Pki, tmp_path: Path
) -> None:
    """A second store on the same database (another registry process, or the command
    line) prunes over and over while this one publishes: both commit, every proof
    verifies, and only entries the rules allow are pruned."""
    registry.publish(4)
    registry.stamp(4)
    pruner = opener(Clock(T0 + dt.timedelta(days=60)))
    failures: list[BaseException] = []
    done = threading.Event()

    def prune_until_done() -> None:
        try:
            while not done.is_set():
                pruner.conflog_prune(before=T0 + dt.timedelta(days=59), change=PRUNE)
                time.sleep(0.005)  # let the publisher's transactions in (SQLite)
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=prune_until_done)
    thread.start()
    try:
        for size in range(5, 17):
            registry.publish(1)
            if size % 4 == 0:
                registry.stamp(size)
    finally:
        done.set()
        thread.join()
    final = pruner.conflog_prune(before=T0 + dt.timedelta(days=59), change=PRUNE)
    pruner.close()
    assert not failures
    assert final.timestamped_size == 16
    assert final.pruned_total == 15  # all but the newest
    assert _pruned(registry.store) == set(range(15))
    registry.verify_everything()


def test_the_expiry_is_read_from_the_envelope_prefix(registry: Registry) -> None:
    registry.publish(1)
    published = registry.published[0]
    assert _expires_at(published.envelope[:512]) == published.expires_at
    assert _expires_at(published.envelope) == published.expires_at
    for unreadable in (b"", b"configuration 1", b"\x0a\x05\x0a\x02UZ", published.envelope[:20]):
        assert _expires_at(unreadable) is None


# -- the registry's own retention, and its gauge ----------------------------------------------


async def test_the_registry_prunes_by_itself_and_shows_it(registry: Registry) -> None:
    registry.publish(5)
    registry.stamp(5)
    registry.publish(1)
    executor = concurrent.futures.ThreadPoolExecutor(1)
    try:
        now = T0 + dt.timedelta(days=10)
        retention = ConflogRetention(
            store=registry.store, executor=executor, keep_days=7, clock=lambda: now
        )
        loop = PublicationLoop(registry.publisher, executor=executor, interval_s=60)
        metrics = CollectorRegistry()
        registry_metrics(metrics, loop, conflog_pruned=lambda: retention.pruned_total)
        assert b"serai_registry_conflog_envelopes{" not in generate_latest(metrics)

        result = await retention.check()
        assert result is not None
        assert (result.pruned, result.last_index) == (5, 4)
        text = generate_latest(metrics).decode()
        assert 'serai_registry_conflog_envelopes{state="kept"} 1.0' in text
        assert 'serai_registry_conflog_envelopes{state="pruned"} 5.0' in text
        audit = registry.store.audit_log(after_sequence=registry.store.last_audit_sequence() - 1)
        assert [(e.actor, e.action) for e in audit] == [("registry", PRUNE_ACTION)]

        # without a retention it only counts; with one, nothing newer than it goes
        counting = ConflogRetention(store=registry.store, executor=executor, keep_days=None)
        assert await counting.check() is None
        assert counting.pruned_total == 5
        recent = ConflogRetention(
            store=registry.store, executor=executor, keep_days=30, clock=lambda: now
        )
        nothing = await recent.check()
        assert nothing is not None
        assert nothing.pruned == 0
        registry.verify_everything()
    finally:
        executor.shutdown(wait=True)


async def test_a_running_registry_with_a_retention_prunes_at_start(
    registry: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    """``RegistryServer`` wires it: started with ``conflog_keep_envelopes_days``, it
    prunes at once (entries from T0, long before the real clock's week), logs
    ``conflog_pruned`` and keeps publishing on top of the pruned log."""
    registry.publish(6)
    registry.stamp(5)  # so 0..4 go whether the first publication or check runs first
    executor = concurrent.futures.ThreadPoolExecutor(1)
    server = RegistryServer(
        store=registry.store,
        publisher=registry.publisher,
        verifier=TokenVerifier(
            public_keys=[ec.generate_private_key(ec.SECP256R1()).public_key()],
            audience="serai-registry:UZ",
        ),
        executor=executor,
        grpc_listen=("127.0.0.1", 0),
        http_listen=("127.0.0.1", 0),
        regeneration_interval_s=600,
        conflog_keep_envelopes_days=7,
    )
    await server.start()
    try:
        for _ in range(2000):  # the first check runs at start, in the store's thread
            if server.retention.pruned_total is not None:
                break
            await asyncio.sleep(0.01)
        await server.publication.wait_for_serial(registry.published[-1].serial + 1)
    finally:
        await server.stop(0)
        executor.shutdown(wait=True)
    assert server.retention.pruned_total == 5
    assert _pruned(registry.store) == {0, 1, 2, 3, 4}
    pruned = [
        json.loads(line)
        for line in capsys.readouterr().err.splitlines()
        if '"conflog_pruned"' in line
    ]
    assert [(e["pruned"], e["first_index"], e["last_index"]) for e in pruned] == [(5, 0, 4)]
    current = registry.publisher.current
    assert current is not None
    assert current.bundle is not None
    assert current.bundle.leaf_index >= 6


async def test_a_failing_check_is_logged_and_survived(
    registry: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    executor = concurrent.futures.ThreadPoolExecutor(1)
    registry.store.close()  # every store call now fails with internal
    try:
        retention = ConflogRetention(
            store=registry.store, executor=executor, keep_days=7, check_interval_s=0.01
        )
        assert await retention.check() is None
        await retention.start()
        for _ in range(1000):  # the task retries after each failure (bounded wait)
            if retention.failures >= 3:
                break
            await asyncio.sleep(0.01)
        assert retention.failures >= 3
        await retention.stop()
        await retention.stop()
    finally:
        executor.shutdown(wait=True)
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    failed = [e for e in events if e.get("event") == "conflog_prune_failed"]
    assert failed
    assert failed[0]["code"] == "internal"
    assert "closed" in failed[0]["message"]


def test_retention_arguments_are_checked(registry: Registry) -> None:
    executor = concurrent.futures.ThreadPoolExecutor(1)
    try:
        for days, interval in ((0, 60.0), (-1, 60.0), (7, 0.0)):
            with pytest.raises(ValueError, match="must be positive"):
                ConflogRetention(
                    store=registry.store,
                    executor=executor,
                    keep_days=days,
                    check_interval_s=interval,
                )
    finally:
        executor.shutdown(wait=True)


# -- registry.toml and the command line -------------------------------------------------------

_SIGNING = '[[configuration_signing]]\nkey = "k"\ncertificate = "c"\n'
_BASE = 'instance = "UZ"\ntoken_public_keys = ["t.pem"]\n'


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("", None),
        ("conflog_keep_envelopes_days = 400\n", 400),
        ("conflog_keep_envelopes_days = 1\n", 1),
    ],
)
def test_config_reads_the_retention(line: str, expected: int | None, tmp_path: Path) -> None:
    path = tmp_path / "registry.toml"
    path.write_text(_BASE + line + _SIGNING)
    assert load_config(path).conflog_keep_envelopes_days == expected


@pytest.mark.parametrize("value", ["0", "-5", "1.5", '"400"', "true"])
def test_config_refuses_a_bad_retention(value: str, tmp_path: Path) -> None:
    path = tmp_path / "registry.toml"
    path.write_text(_BASE + f"conflog_keep_envelopes_days = {value}\n" + _SIGNING)
    with pytest.raises(SeraiError) as info:
        load_config(path)
    assert info.value.code is ErrorCode.INVALID_CONFIG
    assert "'conflog_keep_envelopes_days'" in info.value.message


def test_the_config_template_offers_the_retention_commented_out(tmp_path: Path) -> None:
    text = render_config(
        instance="UZ",
        signing=[("k", "c")],
        token_signing_key="t.key",
        token_public_key="t.pem",
    )
    assert "# conflog_keep_envelopes_days = 400\n" in text
    path = tmp_path / "registry.toml"
    path.write_text(text)
    assert load_config(path).conflog_keep_envelopes_days is None
    path.write_text(text.replace("# conflog_keep", "conflog_keep"))
    assert load_config(path).conflog_keep_envelopes_days == 400


@contextlib.contextmanager
def _database(kind: str) -> Iterator[str]:
    """A fresh PostgreSQL DSN for ``postgres``, ``""`` (SQLite) otherwise."""
    if kind != "postgres":
        yield ""
        return
    with fresh_database() as dsn:
        yield dsn


def _cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    """``serai ARGS`` in this process: exit status, stdout, stderr."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # argparse refusals and --help
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _serai(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "serai.cli", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_cli_prunes_and_says_what_it_kept(
    database: str, pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with _database(database) as dsn:
        init: list[str | Path] = ["registry", "init", "--dir", tmp_path / "reg"]
        init += ["--instance", "UZ", "--pki", pki.dir.root]
        if dsn:
            init += ["--database-url", pg_url(dsn)]
        assert _serai(*init).returncode == 0
        config_path = tmp_path / "reg" / "registry.toml"
        config = load_config(config_path)
        clock = Clock(dt.datetime.now(dt.UTC) - dt.timedelta(days=30))
        store = (
            SqlRegistryStore.open_postgres(dsn, instance="UZ", clock=clock)
            if dsn
            else SqlRegistryStore.open_sqlite(config.database, instance="UZ", clock=clock)
        )
        try:
            registry = Registry(store, pki, tmp_path, clock)
            registry.publish(5)
            registry.stamp(4)
            registry.publish(1)
        finally:
            store.close()

        prune = ("registry", "conflog", "prune", "--config", config_path, "--before")
        code, out, err = _cli(capsys, *prune, "40d")
        assert code == 0, err
        assert out.startswith("pruned nothing: no envelope appended before ")
        assert "entries: 6, kept whole: 6, pruned: 0" in out

        code, out, err = _cli(capsys, *prune, "7d")
        assert code == 0, err
        lines = out.splitlines()
        assert lines[0].startswith("pruned 4 envelopes of the configuration log appended before ")
        assert lines[0].endswith("(entries 0 to 3)")
        assert lines[1] == "  entries: 6, kept whole: 2, pruned: 4"
        assert lines[2].startswith("  kept although before the cut-off: 2 ")
        assert lines[2].endswith("size 4)")

        before = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).date().isoformat()
        code, out, err = _cli(capsys, *prune, before, "--json")
        assert code == 0, err
        result = json.loads(out)
        assert result["pruned"] == 0
        assert result["before"] == f"{before}T00:00:00+00:00"
        assert (result["kept_total"], result["pruned_total"]) == (2, 4)
        assert (result["protected"], result["timestamped_size"]) == (2, 4)

        reopened = (
            SqlRegistryStore.open_postgres(dsn, instance="UZ")
            if dsn
            else SqlRegistryStore.open_sqlite(config.database, instance="UZ")
        )
        try:
            audit = reopened.audit_log(after_sequence=reopened.last_audit_sequence() - 1)
            assert [(e.actor, e.action) for e in audit] == [("local", PRUNE_ACTION)]
            with pytest.raises(RegistryError, match="pruned"):
                reopened.conflog_entry(0)
            registry.store = reopened
            registry.verify_everything()
        finally:
            reopened.close()


def test_cli_refuses_a_bad_cut_off(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for bad in ("yesterday", "0", "0d", "2026-13-01", "100001d"):
        code, _, err = _cli(
            capsys, "registry", "conflog", "prune", "--config", tmp_path, "--before", bad
        )
        assert code == 2
        assert "argument --before" in err
    missing = _cli(
        capsys, "registry", "conflog", "prune", "--config", tmp_path / "x.toml", "--before", "1d"
    )
    assert missing[0] == 2
    assert missing[2].startswith("serai: error: invalid_config: ")
    help_text = _serai("registry", "conflog", "prune", "--help")
    assert help_text.returncode == 0
    assert "DATE|DAYS" in help_text.stdout
    assert "conflog" in _cli(capsys, "registry", "--help")[1]
