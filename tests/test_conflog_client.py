"""The gateway side of the configuration log (``registry.client`` rule 7 and
``registry.conflog``): growing logs, split views, forged heads, inclusion, restarts,
trust on first use, and the strict formats. Registries are real publishers on SQLite
stores; the client fetches their publish directories through a small transport."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certs.keys import PrivateKey, generate_private_key
from certs.pkidir import PKIDirectory
from certs.profiles import Profile
from registry.client import HEADS_FILE_NAME, GlobalConfigurationClient, InMemoryFetchTransport
from registry.codec import TrustAnchor
from registry.conflog import (
    MAX_SEEN_HEADS,
    ProofBundle,
    SeenHeads,
    encode_consistency,
)
from registry.errors import ConfigurationError, RegistryError
from registry.model import Member
from registry.publisher import Publisher
from registry.sqlstore import SqlRegistryStore
from registry.store import Change
from serai.errors import ErrorCode
from serai.identifiers import MemberId
from serai.merkle import MemoryTree
from serai.treehead import SignedTreeHead, TreeHead, sign_tree_head

NOW = dt.datetime(2026, 11, 27, 10, 0, tzinfo=dt.UTC)
BASE = "http://registry.invalid/"
URL = BASE + "globalconf/v1/current"
LOG_ID = "UZ/registry-conf"
_CONSISTENCY = re.compile(r"globalconf/v1/conflog/consistency/(\d+)/(\d+)")


@dataclasses.dataclass(frozen=True)
class Key:
    key: PrivateKey
    certificate: x509.Certificate

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Key, Key]:
    pki = PKIDirectory.init(tmp_path_factory.mktemp("pki") / "pki", instance="UZ")

    def key(name: str) -> Key:
        private = generate_private_key()
        return Key(
            private,
            pki.issuing_ca().issue(Profile.CONFIGURATION_SIGNING, name, private.public_key()),
        )

    return key("UZ registry"), key("stranger")


class Registry:
    """A publisher on its own SQLite store and publish directory."""

    def __init__(self, root: Path, key: Key, *, member: str = "STC") -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.store = SqlRegistryStore.open_sqlite(root / "registry.db", instance="UZ")
        self.store.add_member(
            Member(id=MemberId.parse(f"UZ/GOV/{member}"), name=member),
            Change(actor="test", action="AddMember"),
        )
        self.dir = root / "pub"
        self.publisher = Publisher(
            store=self.store,
            signing_key=key.key,
            signing_certificate=key.certificate,
            publish_dir=self.dir,
            clock=lambda: NOW,
        )

    def publish(self, times: int = 1) -> int:
        for _ in range(times):
            published = self.publisher.publish()
        return published.serial


class Transport:
    """Serves one registry's publish directory and consistency proofs; counts fetches."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.fetched: list[str] = []
        self.overrides: dict[str, bytes] = {}

    async def fetch(self, url: str, *, timeout_s: float, max_bytes: int) -> bytes:
        path = url.removeprefix(BASE)
        self.fetched.append(path)
        if path in self.overrides:
            return self.overrides[path]
        if match := _CONSISTENCY.fullmatch(path):
            old, new = int(match[1]), int(match[2])
            try:
                proof = self.registry.store.conflog_consistency(old, new)
            except RegistryError as exc:
                raise ConfigurationError(
                    exc.message, code=ErrorCode.GLOBALCONF_UNAVAILABLE
                ) from exc
            return encode_consistency(old, new, proof)
        file = self.registry.dir / path
        if not file.is_file():
            raise ConfigurationError(f"404 {path}", code=ErrorCode.GLOBALCONF_UNAVAILABLE)
        return file.read_bytes()


@pytest.fixture
def registry(tmp_path: Path, keys: tuple[Key, Key]) -> Iterator[Registry]:
    reg = Registry(tmp_path / "a", keys[0])
    yield reg
    reg.store.close()


def anchor(key: Key, *, log_id: str = LOG_ID) -> TrustAnchor:
    return TrustAnchor(
        instance="UZ",
        download_url=URL,
        signing_certificates=(key.der,),
        generated_at=NOW,
        configuration_log_id=log_id,
    )


def client(
    transport: object, cache: Path, key: Key, *, log_id: str = LOG_ID
) -> GlobalConfigurationClient:
    return GlobalConfigurationClient(
        anchor=anchor(key, log_id=log_id),
        cache_dir=cache,
        transport=transport,  # type: ignore[arg-type]
        clock=lambda: NOW + dt.timedelta(seconds=1),
    )


async def refused(gateway: GlobalConfigurationClient) -> ConfigurationError:
    held = gateway.status().serial
    with pytest.raises(ConfigurationError) as raised:
        await gateway.refresh()
    assert gateway.status().serial == held, "the configuration in force must stay"
    return raised.value


# -- following one log ------------------------------------------------------------------------


async def test_follows_a_growing_log(
    registry: Registry, keys: tuple[Key, Key], tmp_path: Path
) -> None:
    """Rule 7: each new configuration comes with a head that extends the last one; within
    the bundle's recent sizes no extra fetch is made, beyond them the proof resource."""
    transport = Transport(registry)
    gateway = client(transport, tmp_path / "gw", keys[0])
    for n in range(1, 5):
        registry.publish()
        assert await gateway.refresh()
        assert gateway.status().log_tree_size == n
    registry.publish(3)
    assert await gateway.refresh()
    assert not any("consistency" in p for p in transport.fetched)
    registry.publish(20)
    assert await gateway.refresh()
    assert "globalconf/v1/conflog/consistency/7/27" in transport.fetched
    assert gateway.status().log_tree_size == 27
    assert [h.head.tree_size for h in gateway.seen_heads] == [1, 2, 3, 4, 7, 27]
    assert not await gateway.refresh()  # nothing new: nothing checked again


async def test_split_view_is_refused(tmp_path: Path, keys: tuple[Key, Key]) -> None:
    """A registry keeping two logs (same key, same serials) is caught by a gateway that
    saw the other one; each log alone is acceptable."""
    honest, forked = (
        Registry(tmp_path / "a", keys[0]),
        Registry(tmp_path / "b", keys[0], member="MOF"),
    )
    try:
        transport = Transport(honest)
        gateway = client(transport, tmp_path / "gw", keys[0])
        honest.publish(3)
        assert await gateway.refresh()
        forked.publish(4)
        fresh = client(Transport(forked), tmp_path / "gw2", keys[0])
        assert await fresh.refresh()
        transport.registry = forked
        error = await refused(gateway)
        assert error.code is ErrorCode.GLOBALCONF_EQUIVOCATION
        assert "not consistent with the head of size 3" in error.message
        assert "split view" in error.message
        forked.publish(10)  # beyond the bundle's recent proofs: the proof resource lies too
        error = await refused(gateway)
        assert error.code is ErrorCode.GLOBALCONF_EQUIVOCATION
        assert "conflog/consistency/3/14" in transport.fetched[-1]
    finally:
        honest.store.close()
        forked.store.close()


async def test_restart_keeps_the_seen_heads(tmp_path: Path, keys: tuple[Key, Key]) -> None:
    honest, forked = (
        Registry(tmp_path / "a", keys[0]),
        Registry(tmp_path / "b", keys[0], member="MOF"),
    )
    try:
        transport = Transport(honest)
        honest.publish(2)
        first = client(transport, tmp_path / "gw", keys[0])
        assert await first.refresh()
        forked.publish(5)
        restarted = client(Transport(forked), tmp_path / "gw", keys[0])
        await restarted.load_cache()
        assert [h.jws for h in restarted.seen_heads] == [h.jws for h in first.seen_heads]
        assert (await refused(restarted)).code is ErrorCode.GLOBALCONF_EQUIVOCATION
    finally:
        honest.store.close()
        forked.store.close()


# -- forged heads and wrong inclusion ------------------------------------------------------------


def _bundle(registry: Registry, serial: int) -> ProofBundle:
    return ProofBundle.decode((registry.dir / f"globalconf/v1/conflog/{serial}").read_bytes())


def _flip_signature(jws: bytes) -> bytes:
    head, payload, signature = jws.split(b".")
    flipped = (b"A" if signature[:1] != b"A" else b"B") + signature[1:]
    return b".".join((head, payload, flipped))


def _other_head(bundle: ProofBundle, key: Key, **changes: object) -> bytes:
    head = dataclasses.replace(SignedTreeHead(bundle.sth).head, **changes)  # type: ignore[arg-type]
    return sign_tree_head(head, key.key, [key.certificate]).jws


@pytest.mark.parametrize(
    ("tamper", "fragment"),
    [
        pytest.param(
            lambda b, k: dataclasses.replace(b, sth=_flip_signature(b.sth)),
            "signature does not verify",
            id="forged-signature",
        ),
        pytest.param(
            lambda b, k: dataclasses.replace(b, sth=_other_head(b, k[1])),
            "trust anchor does not hold",
            id="stranger-key",
        ),
        pytest.param(
            lambda b, k: dataclasses.replace(b, sth=_other_head(b, k[0], log_id="UZ/other")),
            "not 'UZ/registry-conf'",
            id="other-log",
        ),
        pytest.param(
            lambda b, k: dataclasses.replace(b, inclusion=(b"\x00" * 32, *b.inclusion[1:])),
            "is not in its tree head",
            id="inclusion-mismatch",
        ),
        pytest.param(
            lambda b, k: dataclasses.replace(b, sth=_other_head(b, k[0], root_hash=b"\x01" * 32)),
            "is not in its tree head",
            id="head-without-the-configuration",
        ),
        pytest.param(
            lambda b, k: dataclasses.replace(b, serial=b.serial + 1),
            "proof bundle is of serial",
            id="bundle-of-another-serial",
        ),
        pytest.param(
            lambda b, k: dataclasses.replace(b, leaf_index=b.leaf_index + 1),
            "outside its head",
            id="index-outside-head",
        ),
    ],
)
async def test_a_bad_head_or_proof_is_refused(
    registry: Registry, keys: tuple[Key, Key], tmp_path: Path, tamper: object, fragment: str
) -> None:
    transport = Transport(registry)
    gateway = client(transport, tmp_path / "gw", keys[0])
    registry.publish(2)
    assert await gateway.refresh()
    serial = registry.publish()
    bad = tamper(_bundle(registry, serial), keys)  # type: ignore[operator]
    transport.overrides[f"globalconf/v1/conflog/{serial}"] = bad.encode()
    error = await refused(gateway)
    assert error.code is ErrorCode.GLOBALCONF_EQUIVOCATION
    assert fragment in error.message


async def test_a_lying_consistency_proof_is_refused(
    registry: Registry, keys: tuple[Key, Key], tmp_path: Path
) -> None:
    transport = Transport(registry)
    gateway = client(transport, tmp_path / "gw", keys[0])
    registry.publish()
    assert await gateway.refresh()
    registry.publish(12)
    transport.overrides["globalconf/v1/conflog/consistency/1/13"] = encode_consistency(
        1, 13, [b"\x02" * 32] * 4
    )
    assert (await refused(gateway)).code is ErrorCode.GLOBALCONF_EQUIVOCATION
    transport.overrides["globalconf/v1/conflog/consistency/1/13"] = encode_consistency(2, 13, [])
    assert "not from 1 to 13" in (await refused(gateway)).message


# -- trust on first use, and when a bundle is required -------------------------------------------


async def test_missing_bundle_is_refused_when_the_anchor_names_the_log(
    registry: Registry, keys: tuple[Key, Key], tmp_path: Path
) -> None:
    serial = registry.publish()
    (registry.dir / f"globalconf/v1/conflog/{serial}").unlink()
    gateway = client(Transport(registry), tmp_path / "gw", keys[0])
    error = await refused(gateway)
    assert error.code is ErrorCode.GLOBALCONF_UNAVAILABLE
    assert "outside the log is not accepted" in error.message


async def test_unlogged_only_until_the_first_head(
    registry: Registry, keys: tuple[Key, Key], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An anchor without a log id (older registries) accepts configurations without a
    bundle, but once a head was seen a bundle is always required (no downgrade)."""
    transport = Transport(registry)
    gateway = client(transport, tmp_path / "gw", keys[0], log_id="")
    first = registry.publish()
    (registry.dir / f"globalconf/v1/conflog/{first}").unlink()
    assert await gateway.refresh()
    assert gateway.status().log_tree_size is None
    assert '"event": "globalconf_unlogged"' in capsys.readouterr().err
    registry.publish()
    assert await gateway.refresh()
    assert gateway.status().log_tree_size == 2
    third = registry.publish()
    (registry.dir / f"globalconf/v1/conflog/{third}").unlink()
    assert (await refused(gateway)).code is ErrorCode.GLOBALCONF_UNAVAILABLE


async def test_an_old_cache_without_heads_trusts_the_first_head(
    registry: Registry, keys: tuple[Key, Key], tmp_path: Path
) -> None:
    registry.publish(3)
    envelope = (registry.dir / "globalconf/v1/current").read_bytes()
    cache = tmp_path / "gw"
    old = client(InMemoryFetchTransport(envelope), cache, keys[0], log_id="")
    assert await old.refresh()
    assert not (cache / HEADS_FILE_NAME).exists()
    registry.publish()
    upgraded = client(Transport(registry), cache, keys[0])
    await upgraded.load_cache()
    assert not upgraded.seen_heads
    assert await upgraded.refresh()
    assert upgraded.status().log_tree_size == 4
    assert (cache / HEADS_FILE_NAME).read_bytes() == upgraded.seen_heads[0].jws + b"\n"


async def test_a_corrupted_heads_file_is_ignored_and_logged(
    registry: Registry, keys: tuple[Key, Key], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "gw"
    cache.mkdir()
    (cache / HEADS_FILE_NAME).write_bytes(b"not a head\n")
    gateway = client(Transport(registry), cache, keys[0])
    await gateway.load_cache()
    assert gateway.seen_heads == ()
    assert "globalconf_heads_ignored" in capsys.readouterr().err


async def test_the_in_memory_transport_serves_log_files(
    keys: tuple[Key, Key], tmp_path: Path
) -> None:
    transport = InMemoryFetchTransport(b"envelope", files={"conflog/1": b"bundle"})
    assert await transport.fetch(URL, timeout_s=1, max_bytes=100) == b"envelope"
    assert (
        await transport.fetch(BASE + "globalconf/v1/conflog/1", timeout_s=1, max_bytes=100)
        == b"bundle"
    )
    with pytest.raises(ConfigurationError) as raised:
        await transport.fetch(BASE + "globalconf/v1/conflog/2", timeout_s=1, max_bytes=100)
    assert raised.value.code is ErrorCode.GLOBALCONF_UNAVAILABLE
    assert transport.fetches == 1


# -- SeenHeads: the prefix rule, on forked in-memory logs -----------------------------------------


def _heads(tree: MemoryTree, key: Key, *sizes: int) -> list[SignedTreeHead]:
    return [
        sign_tree_head(
            TreeHead(log_id=LOG_ID, tree_size=size, root_hash=tree.root(size), time=NOW),
            key.key,
            [key.certificate],
        )
        for size in sizes
    ]


def _trees(n: int, fork_at: int) -> tuple[MemoryTree, MemoryTree]:
    a, b = MemoryTree(), MemoryTree()
    for i in range(n):
        a.append(b"entry %d" % i)
        b.append(b"entry %d" % i if i < fork_at else b"forked %d" % i)
    return a, b


@pytest.mark.parametrize(
    ("seen", "offered", "from_fork", "ok"),
    [
        pytest.param(5, 8, False, True, id="larger-extends"),
        pytest.param(8, 5, False, True, id="smaller-is-a-prefix"),
        pytest.param(6, 6, False, True, id="same-size-same-root"),
        pytest.param(5, 8, True, False, id="larger-from-a-fork"),
        pytest.param(8, 5, True, False, id="smaller-from-a-fork"),
        pytest.param(6, 6, True, False, id="same-size-other-root"),
    ],
)
def test_seen_heads_prefix_rule(
    keys: tuple[Key, Key], seen: int, offered: int, from_fork: bool, ok: bool
) -> None:
    log, fork = _trees(10, fork_at=3)
    heads = SeenHeads(_heads(log, keys[0], 2, seen))
    head = _heads(fork if from_fork else log, keys[0], offered)[0].head
    needed = heads.proof_needed(head)
    source = fork if from_fork else log
    proof: list[bytes] = []
    if needed is not None:
        proof = source.consistency_proof(*needed)
    if ok:
        heads.check(head, proof)
        return
    with pytest.raises(ConfigurationError) as raised:
        heads.check(head, proof)
    assert raised.value.code is ErrorCode.GLOBALCONF_EQUIVOCATION


def test_seen_heads_keep_the_largest_and_round_trip(keys: tuple[Key, Key]) -> None:
    log, _ = _trees(MAX_SEEN_HEADS + 10, fork_at=0)
    sizes = range(1, MAX_SEEN_HEADS + 11)
    heads = SeenHeads()
    for sth in _heads(log, keys[0], *sizes):
        heads = heads.with_head(sth)
    assert len(heads.heads) == MAX_SEEN_HEADS
    assert heads.largest is not None
    assert heads.largest.tree_size == MAX_SEEN_HEADS + 10
    again = SeenHeads.decode(heads.encode(), log_id=LOG_ID)
    assert [h.jws for h in again.heads] == [h.jws for h in heads.heads]
    with pytest.raises(ConfigurationError) as raised:
        SeenHeads.decode(heads.encode(), log_id="KG/registry-conf")
    assert "not 'KG/registry-conf'" in raised.value.message


# -- strict formats --------------------------------------------------------------------------------


def _valid_bundle(keys: tuple[Key, Key]) -> bytes:
    log, _ = _trees(3, fork_at=0)
    sth = _heads(log, keys[0], 3)[0]
    return ProofBundle(
        serial=9,
        leaf_index=2,
        sth=sth.jws,
        inclusion=tuple(log.inclusion_proof(2)),
        consistency={2: tuple(log.consistency_proof(2))},
    ).encode()


def _edit(data: bytes, **members: object) -> bytes:
    obj = json.loads(data)
    obj.update(members)
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        pytest.param(lambda d: d + b" ", "not canonical", id="trailing-space"),
        pytest.param(lambda d: d.replace(b'{"', b'{ "', 1), "not canonical", id="whitespace"),
        pytest.param(lambda d: b"[]", "not a JSON object", id="array"),
        pytest.param(lambda d: b"\xff", "not JSON", id="not-utf8"),
        pytest.param(lambda d: _edit(d, v=2), "format version", id="version"),
        pytest.param(lambda d: _edit(d, extra=1), "has members", id="unknown-member"),
        pytest.param(lambda d: _edit(d, serial=-1), "serial is not an integer", id="negative"),
        pytest.param(lambda d: _edit(d, serial=True), "serial is not an integer", id="bool"),
        pytest.param(lambda d: _edit(d, inclusion=["AAAA"]), "inclusion[0]", id="short-hash"),
        pytest.param(lambda d: _edit(d, inclusion="x"), "not a list", id="inclusion-type"),
        pytest.param(lambda d: _edit(d, consistency={"02": []}), "not a decimal", id="size-key"),
        pytest.param(lambda d: _edit(d, sth=5), "sth is not", id="sth-type"),
    ],
)
def test_bundle_decoding_is_strict(keys: tuple[Key, Key], mutate: object, fragment: str) -> None:
    data = _valid_bundle(keys)
    assert ProofBundle.decode(data).encode() == data
    with pytest.raises(ConfigurationError) as raised:
        ProofBundle.decode(mutate(data))  # type: ignore[operator]
    assert raised.value.code is ErrorCode.GLOBALCONF_EQUIVOCATION
    assert fragment in raised.value.message
