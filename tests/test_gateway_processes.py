"""Two gateways as an operator runs them: every part a real process on loopback.

PKI and OCSP responder, registry, an echo provider IS (``tools/echo_provider.py``),
a consumer gateway (UZ/GOV/MINJUST, client ``property``) and a provider gateway
(UZ/GOV/CADASTRE, provider ``registry``), set up only with ``serai`` commands; a plain
grpcio client plays the consumer IS. No timing is asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

import gateway._assembly
import gateway._logsetup
import gateway.serve
from gateway._assembly import settings_from_config
from gateway.commit import RecordKind
from gateway.config import parse_config, render_config
from gateway.messagelog import MessageLog
from serai.errors import ConfigError
from serai.localprocs import (
    SERAI,
    Process,
    free_port,
    start,
    wait_until_published,
)
from serai.localprocs import serai_command as serai
from tests.opscheck import fetch, promtool_check, sample, scrape

ECHO = [sys.executable, str(Path(__file__).parent.parent / "tools" / "echo_provider.py")]
PROPERTY = "UZ/GOV/MINJUST/property"
REGISTRY = "UZ/GOV/CADASTRE/registry"
GET_PARCEL = "/cadastre.v1.Cadastre/GetParcel"


def gateway_serve() -> list[str]:
    """The command an operator runs: ``serai gateway serve``."""
    return [*SERAI, "gateway", "serve"]


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    try:
        yield started
    finally:
        for process in reversed(started):
            process.kill()


def call(
    address: str, method: str, body: bytes, *, metadata: tuple[tuple[str, str], ...] = ()
) -> tuple[grpc.StatusCode, bytes | None, str, dict[str, str]]:
    """Call ``method`` as a plain grpcio client: status, body, details, all metadata."""
    with grpc.insecure_channel(address) as channel:
        stub = channel.unary_unary(method, None, None)
        try:
            answer, state = stub.with_call(
                body,
                metadata=(("x-road-client", PROPERTY), ("x-road-service", REGISTRY), *metadata),
                timeout=60,
            )
        except grpc.RpcError as exc:
            failed: grpc.Call = exc  # type: ignore[assignment]  # a RpcError is also a Call
            found = text_metadata(failed.initial_metadata(), failed.trailing_metadata())
            return failed.code(), None, failed.details() or "", found
        found = text_metadata(state.initial_metadata(), state.trailing_metadata())
        return grpc.StatusCode.OK, answer, "", found


def openssl_handshake(address: str, version: str, keys: Path) -> str:
    """The protocol ``openssl s_client`` agreed with ``address`` presenting the auth
    certificate in ``keys``, or ``""`` when the handshake failed."""
    openssl = shutil.which("openssl")
    assert openssl is not None, "the openssl command is needed"
    result = subprocess.run(
        [openssl, "s_client", "-connect", address, version, "-alpn", "h2",
         "-cert", str(keys / "auth.pem"), "-key", str(keys / "auth.key")],
        check=False, input="", capture_output=True, text=True, errors="replace",
        timeout=20,
    )  # fmt: skip
    for line in result.stdout.splitlines():
        if line.startswith("New, ") and "Cipher is (NONE)" not in line:
            return line.split(",")[1].strip()
    return ""


def text_metadata(*groups: object) -> dict[str, str]:
    """Text metadata of every group as one dict."""
    found: dict[str, str] = {}
    for group in groups:
        for key, value in group or ():  # type: ignore[attr-defined]  # a metadata sequence
            if isinstance(value, str):
                found[key] = value
    return found


def test_two_gateway_processes_exchange(processes: list[Process], tmp_path: Path) -> None:
    ocsp_port, tsa_port = free_port(), free_port()
    pki = tmp_path / "pki"
    serai(
        "pki", "init", "--dir", pki, "--instance", "UZ",
        "--ocsp-url", f"http://127.0.0.1:{ocsp_port}/", "--tsa-url", f"http://127.0.0.1:{tsa_port}/",
    )  # fmt: skip
    ocsp = start(
        processes,
        [*SERAI, "pki", "ocsp", "serve", "--dir", str(pki), "--listen", f"127.0.0.1:{ocsp_port}"],
    )
    ocsp.wait_for("ocsp_listening")
    tsa = start(
        processes,
        [*SERAI, "pki", "tsa", "serve", "--dir", str(pki), "--listen", f"127.0.0.1:{tsa_port}"],
    )
    tsa.wait_for("tsa_listening")

    reg = tmp_path / "reg"
    serai(
        "registry", "init", "--dir", reg, "--instance", "UZ", "--pki", pki,
        "--grpc-listen", f"127.0.0.1:{free_port()}", "--http-listen", f"127.0.0.1:{free_port()}",
    )  # fmt: skip
    registry = start(
        processes, [*SERAI, "registry", "serve", "--config", str(reg / "registry.toml")]
    )
    listening = registry.wait_for("registry_listening")
    token = tmp_path / "registry.jwt"
    serai(
        "registry", "token", "issue", "--config", reg / "registry.toml",
        "--role", "registry-admin", "--subject", "alice", "--out", token,
    )  # fmt: skip
    env = {
        **os.environ,
        "SERAI_REGISTRY": str(listening["grpc"]),
        "SERAI_REGISTRY_TOKEN": token.read_text().strip(),
    }
    for member, name, subsystem in (
        ("UZ/GOV/MINJUST", "Ministry of Justice", PROPERTY),
        ("UZ/GOV/CADASTRE", "Cadastre Agency", REGISTRY),
    ):
        serai("registry", "member", "add", member, "--name", name, env=env)
        serai("registry", "subsystem", "add", subsystem, env=env)
    anchor = tmp_path / "anchor.bin"
    serai("registry", "anchor", "--config", reg / "registry.toml", "--out", anchor)

    echo = start(processes, [*ECHO, "--listen", "127.0.0.1:0"], events_on_stdout=True)
    echo_address = str(echo.wait_for("echo_listening")["listen"])

    gateways = {}
    for name, gateway_id, role in (
        ("consumer", "UZ/GOV/MINJUST/gw:main", ["--client", PROPERTY]),
        ("provider", "UZ/GOV/CADASTRE/gw:main", ["--provider", f"{REGISTRY}={echo_address}"]),
    ):
        out = serai(
            "gateway", "init", "--dir", tmp_path / name, "--gateway-id", gateway_id,
            "--pki", pki, "--anchor", anchor, "--peer-listen", f"127.0.0.1:{free_port()}",
            "--is-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", *role,
        )  # fmt: skip
        command = next(line for line in out.splitlines() if "serai registry gateway add" in line)
        serai(*shlex.split(command)[1:], env=env)  # what `gateway init` says to run
        gateways[name] = tmp_path / name / "gateway.toml"
    wait_until_published(anchor, {"UZ/GOV/MINJUST/gw:main", "UZ/GOV/CADASTRE/gw:main"})

    serve = gateway_serve()
    consumer = start(processes, [*serve, "--config", str(gateways["consumer"])])
    provider = start(processes, [*serve, "--config", str(gateways["provider"])])
    assert consumer.wait_for("gateway_message_log")["kind"] == "sqlite"
    consumer_at = consumer.wait_for("gateway_listening")
    provider_at = provider.wait_for("gateway_listening")

    # The peer port speaks TLS 1.3 only, even to a registered gateway's certificate.
    keys = tmp_path / "consumer" / "keys"
    peer_port = str(provider_at["peer"])
    assert openssl_handshake(peer_port, "-tls1_2", keys) == ""
    assert openssl_handshake(peer_port, "-tls1_3", keys) == "TLSv1.3"

    admin_token = tmp_path / "gateway.jwt"
    serai(
        "gateway", "token", "issue", "--config", gateways["provider"],
        "--role", "gateway-admin", "--subject", "alice", "--out", admin_token,
    )  # fmt: skip
    acl = ("--gateway", str(provider_at["admin"]), "--token-file", str(admin_token))
    serai("acl", "grant", REGISTRY, GET_PARCEL, PROPERTY, *acl)
    serai("acl", "grant", REGISTRY, "echo.v1.Echo", PROPERTY, *acl)
    assert GET_PARCEL in serai("acl", "list", REGISTRY, *acl)

    is_port = str(consumer_at["is"])
    body = os.urandom(1024)
    code, answer, _, metadata = call(is_port, GET_PARCEL, body)
    assert code is grpc.StatusCode.OK
    assert answer == body
    assert metadata["x-road-id"]
    assert len(bytes.fromhex(metadata["x-road-request-hash"])) == 32

    code, answer, _, metadata = call(is_port, "/cadastre.v1.Cadastre/DeleteParcel", body)
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert metadata["x-road-error"].startswith("client:access_denied:")

    code, answer, details, metadata = call(is_port, "/echo.v1.Echo/Fail", b"x")
    assert code is grpc.StatusCode.NOT_FOUND
    assert details == "echo: failing as asked"
    assert "x-road-error" not in metadata
    # Both logs time-stamp a tree head covering the exchanges (interval 1 s by default).
    consumer.wait_for("log_tree_head_timestamped")
    provider.wait_for("log_tree_head_timestamped")
    _check_operations(consumer, provider, consumer_at, provider_at, listening, tmp_path)

    for process, stopped in (
        (consumer, "gateway_stopped"),
        (provider, "gateway_stopped"),
        (echo, "echo_stopped"),
        (registry, "registry_stopped"),
        (ocsp, "ocsp_stopped"),
        (tsa, "tsa_stopped"),
    ):
        assert process.terminate() == 0, "".join(process.lines)
        process.wait_for(stopped)

    # The durable logs outlive the processes: the consumer logged request and response
    # of each of the three exchanges, the provider the two that reached it (the access
    # refusal never did) plus the two access-rights grants, under timestamped heads.
    consumer_kinds = asyncio.run(
        _logged(tmp_path / "consumer" / "messagelog.db", "UZ/GOV/MINJUST/gw:main")
    )
    provider_kinds = asyncio.run(
        _logged(tmp_path / "provider" / "messagelog.db", "UZ/GOV/CADASTRE/gw:main")
    )
    assert consumer_kinds.count(RecordKind.REQUEST_SENT) == 3
    assert consumer_kinds.count(RecordKind.RESPONSE_RECEIVED) == 2
    assert provider_kinds.count(RecordKind.ADMIN_CHANGE) == 2
    assert provider_kinds.count(RecordKind.REQUEST_RECEIVED) == 2
    assert provider_kinds.count(RecordKind.RESPONSE_SENT) == 2


def _check_operations(
    consumer: Process,
    provider: Process,
    consumer_at: dict[str, object],
    provider_at: dict[str, object],
    registry_at: dict[str, object],
    tmp_path: Path,
) -> None:
    """Metrics, health and exchange log lines of the live processes (docs/operations.md)."""
    consumer_text = scrape(str(consumer_at["metrics"]))
    provider_text = scrape(str(provider_at["metrics"]))
    registry_text = scrape(str(registry_at["metrics"]))
    for address in (consumer_at["metrics"], provider_at["metrics"], registry_at["metrics"]):
        assert fetch(str(address), "/readyz") == (200, "ready\n")
    # Outcomes by code; the consumer side names no method (no descriptor published),
    # the provider side names the method its access rule grants, and "other" for the
    # whole-service grant (any method name would do there).
    ok = {"side": "consumer", "client": PROPERTY, "service": REGISTRY, "code": "ok"}
    assert sample(consumer_text, "serai_gateway_exchanges_total", **ok, method="other") == 1
    denied = {"code": "access_denied", "status": "PERMISSION_DENIED"}
    assert sample(consumer_text, "serai_gateway_exchanges_total", **denied) == 1
    assert sample(provider_text, "serai_gateway_refusals_total", code="access_denied") == 1
    assert sample(provider_text, "serai_gateway_exchanges_total", method=GET_PARCEL, code="ok") == 1
    assert sample(provider_text, "serai_gateway_exchanges_total", code="provider_status") == 1
    assert sample(consumer_text, "serai_gateway_ready") == 1
    assert (sample(consumer_text, "serai_gateway_globalconf_serial") or 0) >= 1
    for role in ("auth", "signing", "log_signing"):
        left = sample(provider_text, "serai_gateway_certificate_expiry_seconds", role=role)
        assert left is not None
        assert left > 30 * 86400
    assert sample(provider_text, "serai_gateway_ocsp_response_age_seconds", role="signing")
    # The provider cached the consumer member's stapled OCSP answer while verifying.
    peer_age = sample(
        provider_text, "serai_gateway_peer_ocsp_response_age_seconds", member="UZ/GOV/MINJUST"
    )
    assert peer_age is not None
    assert peer_age >= 0
    assert (sample(provider_text, "serai_gateway_log_records") or 0) >= 6
    assert (sample(registry_text, "serai_registry_gateways") or 0) == 2
    assert (sample(registry_text, "serai_registry_api_calls_total", code="OK") or 0) > 0
    for text in (consumer_text, provider_text, registry_text):
        promtool_check(text, tmp_path)
    # One JSON line per exchange, with the message id and never the body.
    lines = [event for event in _events(consumer) if event.get("event") == "exchange"]
    assert len(lines) == 3
    assert {line["code"] for line in lines} == {"ok", "access_denied", "provider_status"}
    assert all(line["message_id"] and "body" not in line for line in lines)


def _events(process: Process) -> list[dict[str, object]]:
    events = []
    for line in process.lines:
        with contextlib.suppress(json.JSONDecodeError):
            event = json.loads(line)
            if isinstance(event, dict):
                events.append(event)
    return events


async def _logged(path: Path, gateway_id: str) -> list[RecordKind]:
    """The kinds of the records in a gateway's log, after checking that its newest
    timestamped tree head covers them all and verifies against the log's root."""
    log = await MessageLog.open(path, log_id=gateway_id)
    try:
        size, root = await log.tree_state()
        head = await log.latest_tree_head(timestamped=True)
        assert head is not None
        assert head.tree_size == size
        assert head.root == root
        return [r.kind for r in await log.records(limit=100)]
    finally:
        await log.close()


def test_serve_needs_the_is_client_ca_of_a_tls_is_port(tmp_path: Path) -> None:
    config = parse_config(
        tmp_path / "gateway.toml",
        render_config(gateway_id="UZ/GOV/STC/gw:main", peer_address="127.0.0.1:5501").replace(
            "is_tls = false", 'is_tls = true\nis_client_ca = "keys/is-ca.pem"'
        ),
    )
    with pytest.raises(ConfigError, match="'is_client_ca': the IS client CA was not loaded"):
        settings_from_config(config)
    assert settings_from_config(config, is_client_ca_pem=b"PEM").is_client_ca_pem == b"PEM"


def test_public_surface() -> None:
    assert set(gateway.serve.__all__) == {"register_serve", "run_gateway"}
    assert set(gateway._assembly.__all__) == {
        "DEFAULT_POLICY_POLL_S",
        "AdminChangeSignal",
        "FollowedPolicy",
        "LoadedFiles",
        "load_files",
        "ocsp_url_for",
        "run_in_background",
        "settings_from_config",
    }
    assert set(gateway._logsetup.__all__) == {
        "ARCHIVE_DIR_NAME",
        "GatewayLog",
        "archive_path",
        "open_gateway_log",
    }
