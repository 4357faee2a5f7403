"""Failover and deadline propagation with every part a real process on loopback.

PKI and OCSP responder, registry, an echo provider IS (``tools/echo_provider.py``), a
consumer gateway (UZ/GOV/MINJUST/gw:main, client ``property``) and TWO provider
gateways (UZ/GOV/CADASTRE/gw:a and gw:b, both serving ``registry``, both pointing at
the echo provider, each with its own authentication certificate and access rights),
set up once for the module with ``serai`` commands; a plain grpcio client plays the
consumer IS. Gateways are stopped with SIGKILL. No timing is asserted.

A provider error passing through is covered by ``tests/test_gateway_processes.py``.
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from serai.localprocs import SERAI, Process, free_port, wait_until_published
from serai.localprocs import serai_command as serai
from tests.test_gateway_processes import (
    ECHO,
    GET_PARCEL,
    PROPERTY,
    REGISTRY,
    gateway_serve,
    text_metadata,
)

pytestmark = pytest.mark.timeout(600)

CONSUMER = "UZ/GOV/MINJUST/gw:main"
PROVIDERS = {"a": "UZ/GOV/CADASTRE/gw:a", "b": "UZ/GOV/CADASTRE/gw:b"}
SLOW = "/echo.v1.Echo/Slow"  # the echo provider sleeps 5 s before answering
_RECOVER_S = 180.0


@dataclass
class Federation:
    """The running processes and how to restart a provider gateway."""

    processes: list[Process]
    configs: dict[str, Path]
    gateways: dict[str, Process] = field(default_factory=dict)
    consumer_is: str = ""

    def start_gateway(self, name: str) -> Process:
        process = Process([*gateway_serve(), "--config", str(self.configs[name])])
        self.processes.append(process)
        self.gateways[name] = process
        return process

    def kill_gateway(self, name: str) -> None:
        """SIGKILL, no graceful stop."""
        self.gateways[name].kill()

    def alive(self) -> bool:
        return all(p.process.poll() is None for p in self.gateways.values())


Outcome = tuple[grpc.StatusCode, bytes | None, dict[str, str]]


def call(address: str, method: str, body: bytes, *, timeout_s: float = 60.0) -> Outcome:
    """Call ``method`` as a plain grpcio client with a deadline: status, body, metadata."""
    with grpc.insecure_channel(address) as channel:
        stub = channel.unary_unary(method, None, None)
        try:
            answer, state = stub.with_call(
                body,
                metadata=(("x-road-client", PROPERTY), ("x-road-service", REGISTRY)),
                timeout=timeout_s,
            )
        except grpc.RpcError as exc:
            failed: grpc.Call = exc  # type: ignore[assignment]  # a RpcError is also a Call
            found = text_metadata(failed.initial_metadata(), failed.trailing_metadata())
            return failed.code(), None, found
        return grpc.StatusCode.OK, answer, text_metadata(state.trailing_metadata())


def assert_echoes(address: str, times: int = 3) -> None:
    """``times`` calls in a row succeed and echo the body."""
    for _ in range(times):
        body = os.urandom(256)
        code, answer, metadata = call(address, GET_PARCEL, body)
        assert (code, metadata.get("x-road-error")) == (grpc.StatusCode.OK, None)
        assert answer == body
        assert metadata["x-road-id"]


def echoes_eventually(address: str) -> int:
    """Calls until one succeeds; how many failed before it (a reconnecting channel)."""
    failed = 0
    deadline = time.monotonic() + _RECOVER_S
    while True:
        body = os.urandom(64)
        code, answer, metadata = call(address, GET_PARCEL, body)
        if code is grpc.StatusCode.OK:
            assert answer == body
            return failed
        failed += 1
        assert time.monotonic() < deadline, f"no call succeeded: {code} {metadata}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    tmp_path = tmp_path_factory.mktemp("resilience")
    processes: list[Process] = []
    try:
        yield _bring_up(tmp_path, processes)
    finally:
        for process in reversed(processes):
            process.kill()


def _bring_up(tmp_path: Path, processes: list[Process]) -> Federation:
    def start(argv: list[str], **kwargs: bool) -> Process:
        process = Process(argv, **kwargs)
        processes.append(process)
        return process

    ocsp_port = free_port()
    pki = tmp_path / "pki"
    serai(
        "pki", "init", "--dir", pki, "--instance", "UZ",
        "--ocsp-url", f"http://127.0.0.1:{ocsp_port}/",
    )  # fmt: skip
    ocsp = start(
        [*SERAI, "pki", "ocsp", "serve", "--dir", str(pki), "--listen", f"127.0.0.1:{ocsp_port}"]
    )
    ocsp.wait_for("ocsp_listening")

    reg = tmp_path / "reg"
    serai(
        "registry", "init", "--dir", reg, "--instance", "UZ", "--pki", pki,
        "--grpc-listen", f"127.0.0.1:{free_port()}", "--http-listen", f"127.0.0.1:{free_port()}",
    )  # fmt: skip
    registry = start([*SERAI, "registry", "serve", "--config", str(reg / "registry.toml")])
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

    echo = start([*ECHO, "--listen", "127.0.0.1:0"], events_on_stdout=True)
    echo_address = str(echo.wait_for("echo_listening")["listen"])

    configs = {}
    for name, gateway_id, role in (
        ("consumer", CONSUMER, ["--client", PROPERTY]),
        *(
            (name, gateway_id, ["--provider", f"{REGISTRY}={echo_address}"])
            for name, gateway_id in PROVIDERS.items()
        ),
    ):
        out = serai(
            "gateway", "init", "--dir", tmp_path / name, "--gateway-id", gateway_id,
            "--pki", pki, "--anchor", anchor, "--peer-listen", f"127.0.0.1:{free_port()}",
            "--is-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", *role,
        )  # fmt: skip
        command = next(line for line in out.splitlines() if "serai registry gateway add" in line)
        serai(*shlex.split(command)[1:], env=env)  # what `gateway init` says to run
        configs[name] = tmp_path / name / "gateway.toml"
    wait_until_published(anchor, {CONSUMER, *PROVIDERS.values()})

    fed = Federation(processes=processes, configs=configs)
    consumer = fed.start_gateway("consumer")
    providers = {name: fed.start_gateway(name) for name in PROVIDERS}
    fed.consumer_is = str(consumer.wait_for("gateway_listening")["is"])
    for name, provider in providers.items():
        admin = str(provider.wait_for("gateway_listening")["admin"])
        admin_token = tmp_path / f"{name}.jwt"
        serai(
            "gateway", "token", "issue", "--config", configs[name],
            "--role", "gateway-admin", "--subject", "alice", "--out", admin_token,
        )  # fmt: skip
        acl = ("--gateway", admin, "--token-file", str(admin_token))
        serai("acl", "grant", REGISTRY, GET_PARCEL, PROPERTY, *acl)
        serai("acl", "grant", REGISTRY, "echo.v1.Echo", PROPERTY, *acl)
        assert GET_PARCEL in serai("acl", "list", REGISTRY, *acl)
    return fed


def test_calls_fail_over_to_the_provider_gateway_still_running(fed: Federation) -> None:
    assert_echoes(fed.consumer_is)

    first, second = PROVIDERS  # whichever the consumer prefers, each is killed once
    fed.kill_gateway(first)
    assert_echoes(fed.consumer_is)  # no failed call: the consumer moves on at once

    fed.start_gateway(first).wait_for("gateway_listening")
    fed.kill_gateway(second)
    # The consumer's old channel to the restarted gateway is backing off its reconnection;
    # the consumer drops it and opens a new one, so no call fails.
    assert_echoes(fed.consumer_is)

    fed.start_gateway(second).wait_for("gateway_listening")
    assert_echoes(fed.consumer_is)
    assert fed.alive()


def test_a_client_deadline_reaches_the_slow_provider(fed: Federation) -> None:
    echoes_eventually(fed.consumer_is)  # channels and handshakes out of the way

    code, answer, _ = call(fed.consumer_is, SLOW, b"slow", timeout_s=1.0)
    assert (code, answer) == (grpc.StatusCode.DEADLINE_EXCEEDED, None)

    assert_echoes(fed.consumer_is)  # the gateways keep serving
    assert fed.alive()
