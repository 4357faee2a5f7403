"""``serai gateway`` and ``serai acl`` as an operator runs them: real processes for the
commands (PKI, registry anchor, gateway init, tokens, acl) against an admin API served
in-process on a real port."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

import gateway.cli
from certs.keys import load_certificate_chain
from gateway.admin import AdminServer
from gateway.cli import open_acl_store, token_verifier
from gateway.commit import InMemoryExchangeLog, RecordKind
from gateway.config import load_config
from registry.codec import decode_anchor

SERAI = [sys.executable, "-m", "serai.cli"]
GATEWAY_ID = "UZ/GOV/STC/gw:main"


def serai(
    *args: str | Path, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*SERAI, *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env=env,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"serai {args} failed: {result.stderr}")
    return result


async def aserai(*args: str | Path, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run ``serai`` without blocking the loop that serves the admin API."""
    process = await asyncio.create_subprocess_exec(
        *SERAI,
        *map(str, args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@dataclass(frozen=True)
class Federation:
    pki: Path
    anchor: Path


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    root = tmp_path_factory.mktemp("federation")
    serai("pki", "init", "--dir", root / "pki", "--instance", "UZ")
    serai("registry", "init", "--dir", root / "registry", "--instance", "UZ", "--pki", root / "pki")
    anchor = root / "anchor.bin"
    serai("registry", "anchor", "--config", root / "registry/registry.toml", "--out", anchor)
    return Federation(pki=root / "pki", anchor=anchor)


def init(federation: Federation, directory: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return serai(
        "gateway",
        "init",
        "--dir",
        directory,
        "--gateway-id",
        GATEWAY_ID,
        "--pki",
        federation.pki,
        "--anchor",
        federation.anchor,
        *extra,
        check=False,
    )


def test_init_writes_a_ready_gateway(federation: Federation, tmp_path: Path) -> None:
    directory = tmp_path / "gw"
    result = init(
        federation,
        directory,
        "--client",
        "UZ/GOV/STC/tax",
        "--provider",
        "UZ/GOV/STC/tax=127.0.0.1:7000",
        "--provider",
        "UZ/GOV/STC/archive=[::1]:7001",
        "--admin-listen",
        "127.0.0.1:0",
    )
    assert result.returncode == 0, result.stderr
    config = load_config(directory / "gateway.toml")
    assert str(config.gateway_id) == GATEWAY_ID
    assert config.admin_listen == ("127.0.0.1", 0)
    assert config.peer_address == ("127.0.0.1", 5501)
    assert [str(c.subsystem) for c in config.clients] == ["UZ/GOV/STC/tax"]
    assert [(str(p.subsystem), p.address) for p in config.providers] == [
        ("UZ/GOV/STC/tax", ("127.0.0.1", 7000)),
        ("UZ/GOV/STC/archive", ("::1", 7001)),
    ]
    for key in (config.auth_key, config.signing_key, config.token_signing_key):
        assert key is not None
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert config.anchor.read_bytes() == federation.anchor.read_bytes()
    assert decode_anchor(config.anchor.read_bytes()).instance == "UZ"
    assert config.globalconf_cache_dir.is_dir()

    auth = load_certificate_chain(config.auth_certificate)
    assert len(auth) == 2
    assert auth[0].subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == GATEWAY_ID
    san = auth[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    signing = load_certificate_chain(config.signing_certificate)[0]
    assert signing.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "UZ/GOV/STC"

    assert f"--cert {config.auth_certificate}" in result.stdout
    assert "serai registry gateway add UZ/GOV/STC/gw:main --address 127.0.0.1:5501" in (
        result.stdout
    )
    assert "--subsystem UZ/GOV/STC/archive --subsystem UZ/GOV/STC/tax" in result.stdout

    again = init(federation, directory)
    assert again.returncode == 2
    assert "already exists" in again.stderr


def test_init_names_the_peer_host_in_the_certificate(
    federation: Federation, tmp_path: Path
) -> None:
    directory = tmp_path / "gw"
    result = init(
        federation,
        directory,
        "--peer-listen",
        "0.0.0.0:5601",
        "--peer-address",
        "gw.stc.example:443",
        "--acl-database-url",
        "postgresql://serai@db.example/acl",
    )
    assert result.returncode == 0, result.stderr
    config = load_config(directory / "gateway.toml")
    assert config.peer_address == ("gw.stc.example", 443)
    assert config.acl_database_url == "postgresql://serai@db.example/acl"
    auth = load_certificate_chain(config.auth_certificate)[0]
    san = auth.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["gw.stc.example"]


INIT_REFUSALS = {
    "bad gateway id": (["--gateway-id", "UZ/GOV/STC/main"], "--gateway-id: "),
    "client of another member": (["--client", "UZ/GOV/TAX/db"], "--client: UZ/GOV/TAX/db is not"),
    "bad client": (["--client", "UZ/GOV"], "--client: "),
    "provider without address": (["--provider", "UZ/GOV/STC/tax"], "SUBSYSTEM=HOST:PORT"),
    "provider bad address": (["--provider", "UZ/GOV/STC/tax=host"], "--provider: expected"),
    "provider of another member": (
        ["--provider", "UZ/GOV/TAX/db=h:1"],
        "one member per gateway",
    ),
    "bad listen": (["--is-listen", "5500"], "--is-listen: expected HOST:PORT"),
    "wildcard peer listen": (["--peer-listen", "0.0.0.0:5501"], "--peer-address: needed"),
    "peer address port 0": (["--peer-address", "gw:0"], "--peer-address: expected"),
    "anchor missing": (["--anchor", "/nonexistent/anchor.bin"], "--anchor: cannot read"),
    "pki missing": (["--pki", "/nonexistent/pki"], "pki"),
    "passphrase missing": (
        ["--key-passphrase-file", "/nonexistent/pass"],
        "cannot read passphrase file",
    ),
}


@pytest.mark.parametrize("case", sorted(INIT_REFUSALS))
def test_init_checks_before_writing(federation: Federation, tmp_path: Path, case: str) -> None:
    extra, words = INIT_REFUSALS[case]
    directory = tmp_path / "gw"
    result = init(federation, directory, *extra)
    assert result.returncode == 2
    assert result.stderr.startswith("serai: error: ")
    assert words in result.stderr
    assert not directory.exists()


def test_init_refuses_an_anchor_that_is_not_one(federation: Federation, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.bin"
    bogus.write_bytes(b"not an anchor")
    result = init(federation, tmp_path / "gw", "--anchor", str(bogus))
    assert result.returncode == 2
    assert f"--anchor: {bogus}" in result.stderr
    assert not (tmp_path / "gw").exists()


def test_init_refuses_a_pki_of_another_instance(tmp_path: Path, federation: Federation) -> None:
    serai("pki", "init", "--dir", tmp_path / "kg", "--instance", "KG")
    result = init(federation, tmp_path / "gw", "--pki", str(tmp_path / "kg"))
    assert result.returncode == 2
    assert "is a PKI of instance KG, not UZ" in result.stderr


@pytest.fixture(scope="module")
def gateway_dir(federation: Federation, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("gateway") / "gw"
    result = init(
        federation,
        directory,
        "--provider",
        "UZ/GOV/STC/tax=127.0.0.1:7000",
        "--admin-listen",
        "127.0.0.1:0",
    )
    assert result.returncode == 0, result.stderr
    return directory


def test_token_issue(gateway_dir: Path, tmp_path: Path) -> None:
    config_path = gateway_dir / "gateway.toml"
    config = load_config(config_path)
    verifier = token_verifier(config)
    printed = serai(
        "gateway", "token", "issue", "--config", config_path, "--role", "observer", "--subject", "o"
    ).stdout.strip()
    claims = verifier.verify(printed)
    assert claims.subject == "o"
    assert claims.roles == {"observer"}
    assert claims.issuer == f"serai-gateway:{GATEWAY_ID}"

    out = tmp_path / "admin.token"
    result = serai(
        "gateway", "token", "issue", "--config", config_path, "--role", "gateway-admin",
        "--subject", "alice", "--ttl", "60", "--out", out,
    )  # fmt: skip
    assert "wrote gateway-admin token for 'alice'" in result.stdout
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    claims = verifier.verify(out.read_text(encoding="ascii").strip())
    assert claims.roles == {"gateway-admin"}
    assert (claims.expires_at - claims.issued_at).total_seconds() == 60

    bad = serai(
        "gateway", "token", "issue", "--config", gateway_dir / "absent.toml",
        "--role", "observer", "--subject", "o", check=False,
    )  # fmt: skip
    assert bad.returncode == 2
    assert "no such file" in bad.stderr


@dataclass
class Admin:
    address: str
    log: InMemoryExchangeLog
    admin_token: Path
    observer_token: Path


@pytest.fixture
async def admin(gateway_dir: Path, tmp_path: Path) -> AsyncIterator[Admin]:
    config_path = gateway_dir / "gateway.toml"
    # A fresh access-rights database per test, opened as the gateway opens its own.
    config = dataclasses.replace(load_config(config_path), acl_database=tmp_path / "acl.db")
    tokens = {}
    for role in ("gateway-admin", "observer"):
        tokens[role] = tmp_path / f"{role}.token"
        serai(
            "gateway", "token", "issue", "--config", config_path, "--role", role,
            "--subject", f"{role}-user", "--out", tokens[role],
        )  # fmt: skip
    log = InMemoryExchangeLog()
    with open_acl_store(config) as store:
        server = AdminServer(
            gateway_id=config.gateway_id,
            store=store,
            log=log,
            verifier=token_verifier(config),
            providers=[p.subsystem for p in config.providers],
            listen=config.admin_listen,
        )
        await server.start()
        try:
            yield Admin(
                address=f"127.0.0.1:{server.port}",
                log=log,
                admin_token=tokens["gateway-admin"],
                observer_token=tokens["observer"],
            )
        finally:
            await server.stop(1)


async def test_acl_commands(admin: Admin) -> None:
    common = ["--gateway", admin.address, "--token-file", str(admin.admin_token)]
    provider = "UZ/GOV/STC/tax"
    code, out, err = await aserai(
        "acl", "grant", provider, "/tax.v1.Tax/GetDebt", "UZ/GOV/MINJUST/property", *common
    )
    assert code == 0, err
    assert out.startswith("granted: UZ/GOV/MINJUST/property may call /tax.v1.Tax/GetDebt")
    code, out, err = await aserai(
        "acl", "grant", provider, "tax.v1.Reports", "UZ/group:auditors", *common, "--json"
    )
    assert code == 0, err
    assert json.loads(out) == {"log_leaf_index": 1}

    env = {**os.environ, "SERAI_GATEWAY_ADMIN": admin.address}
    env["SERAI_GATEWAY_TOKEN"] = admin.observer_token.read_text(encoding="ascii").strip()
    code, out, err = await aserai("acl", "list", "--json", env=env)
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["target"], r["subject"], r["granted_by"]) for r in rows] == [
        ("tax.v1.Reports", "UZ/group:auditors", "gateway-admin-user"),
        ("/tax.v1.Tax/GetDebt", "UZ/GOV/MINJUST/property", "gateway-admin-user"),
    ]
    assert all(r["provider"] == provider and r["granted_at"] for r in rows)
    code, out, err = await aserai("acl", "list", provider, env=env)
    assert code == 0, err
    assert out.splitlines()[1].startswith(
        f"{provider}  /tax.v1.Tax/GetDebt  UZ/GOV/MINJUST/property  granted "
    )
    code, out, err = await aserai("acl", "list", "UZ/GOV/STC/other", env=env)
    assert (code, out) == (0, "")

    code, out, err = await aserai(
        "acl", "revoke", provider, "tax.v1.Reports", "UZ/group:auditors", *common
    )
    assert code == 0, err
    assert out.startswith("revoked: UZ/group:auditors may call tax.v1.Reports")
    records = admin.log.records
    assert [r.kind for r in records] == [RecordKind.ADMIN_CHANGE] * 3
    assert [r.message_id for r in records] == ["acl-change-1", "acl-change-2", "acl-change-3"]


async def test_acl_refusals(admin: Admin, tmp_path: Path) -> None:
    provider = "UZ/GOV/STC/tax"
    common = ["--gateway", admin.address, "--token-file", str(admin.admin_token)]
    rule = [provider, "/tax.v1.Tax/GetDebt", "UZ/GOV/MINJUST"]
    code, _, err = await aserai("acl", "grant", *rule, *common)
    assert code == 0, err
    cases: list[tuple[list[str], str]] = [
        (["grant", *rule, *common], "serai: error: already_exists: access rule already granted"),
        (
            ["revoke", provider, "tax.v1.Tax", "UZ/GOV/MINJUST", *common],
            "serai: error: not_found: no such access rule to revoke",
        ),
        (
            ["grant", "UZ/GOV/STC/other", "tax.v1.Tax", "UZ/GOV/MINJUST", *common],
            "serai: error: invalid_request: rule.provider_subsystem: UZ/GOV/STC/other is not",
        ),
        (
            ["grant", *rule, "--gateway", admin.address, "--token-file", str(admin.observer_token)],
            "serai: error: permission_denied: token of 'observer-user'",
        ),
        (["grant", provider, "tax.v1.Tax", "UZ/GOV/STC/gw:main", *common], "SUBJECT: "),
        (["grant", provider, "tax/v1", "UZ/GOV/MINJUST", *common], "TARGET: "),
        (["list", "UZ/GOV", *common], "PROVIDER_SUBSYSTEM: "),
    ]
    wrong = tmp_path / "wrong.token"
    wrong.write_text("not-a-token\n", encoding="ascii")
    cases.append(
        (
            ["list", "--gateway", admin.address, "--token-file", str(wrong)],
            "serai: error: unauthenticated: ",
        )
    )
    env = {k: v for k, v in os.environ.items() if k != "SERAI_GATEWAY_TOKEN"}
    for args, words in cases:
        code, out, err = await aserai("acl", *args, env=env)
        assert code == 2, (args, out, err)
        assert words in err, (args, err)
    code, _, err = await aserai("acl", "list", "--gateway", admin.address, env=env)
    assert code == 2
    assert "no bearer token" in err
    assert len(admin.log) == 1


async def test_acl_unreachable_gateway(admin: Admin) -> None:
    code, _, err = await aserai(
        "acl", "list", "--gateway", "127.0.0.1:1", "--token-file", str(admin.admin_token)
    )
    assert code == 2
    assert "cannot reach the gateway admin API at 127.0.0.1:1" in err


def test_public_surface() -> None:
    assert set(gateway.cli.__all__) == {
        "DEFAULT_GATEWAY_ADMIN",
        "open_acl_store",
        "register",
        "token_verifier",
    }
