"""The processes ``serai bench`` measures, brought up on loopback with ``serai`` commands
as an operator would (and as ``tests/test_gateway_processes.py`` does).

A development PKI with its OCSP responder and time-stamping authority; the registry,
with two members; the echo provider IS (``tools/echo_provider.py``); a consumer gateway
(``UZ/GOV/MINJUST/gw:main``, client ``property``) and a provider gateway
(``UZ/GOV/CADASTRE/gw:main``, provider ``registry`` at the echo provider), each made by
``serai gateway init`` with its defaults (SQLite message log with
``synchronous=FULL``, a signed tree head every second, time-stamped by the TSA), and an
access right for the benchmark method granted with ``serai acl grant``. With nginx,
the pair of :mod:`serai._benchnginx` in front of the same echo provider.

Every process writes its output to a file in the work directory; each is added to the
caller's list the moment it starts, so the caller can stop all of them whatever happens.

The test kits bring up the same federation with an operator's changes: ``edit_registry``
edits ``registry.toml`` before the registry starts, ``gateway_options`` adds options to a
gateway's ``serai gateway init``, and ``prepare`` runs once both gateways' directories
are made, before they are registered and started (it may edit each ``gateway.toml`` and
register more with the registry). Without them, what :func:`bring_up` does is the bench's.
Tests that need only its first steps use :func:`start_pki` and :func:`start_registry`
(or, starting nothing, :func:`init_pki` and :func:`init_registry`).
"""

from __future__ import annotations

import os
import shlex
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import serai
from serai._benchnginx import (
    NginxPaths,
    render_client_config,
    render_server_config,
)
from serai._demoprocs import SERAI, Service, interrupts_deferred, must, run_serai
from serai.errors import SeraiError
from serai.localprocs import free_port, wait_until_published

__all__ = [
    "BENCH_METHOD",
    "CONSUMER",
    "ECHO_PROVIDER",
    "PROVIDER",
    "Federation",
    "Setup",
    "Spawn",
    "bring_up",
    "init_pki",
    "init_registry",
    "start_nginx_pair",
    "start_pki",
    "start_registry",
]

CONSUMER: Final = "UZ/GOV/MINJUST/property"
PROVIDER: Final = "UZ/GOV/CADASTRE/registry"
#: The method the bench calls; the echo provider answers any unary method with its body.
BENCH_METHOD: Final = "/bench.v1.Bench/Echo"
_GATEWAYS: Final = ("UZ/GOV/MINJUST/gw:main", "UZ/GOV/CADASTRE/gw:main")
#: The echo provider, beside the ``serai`` package in a source checkout.
ECHO_PROVIDER: Final = Path(serai.__file__).resolve().parent.parent / "tools" / "echo_provider.py"
_NGINX_READY_S: Final = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Setup:
    """What :func:`bring_up` has made when it calls ``prepare``: the registry runs, the
    gateways' directories exist, and no gateway is registered or started yet."""

    workdir: Path
    pki: Path  # the development PKI's directory
    ocsp_listen: str  # HOST:PORT of the OCSP responder (the PKI's OCSP URL)
    tsa_listen: str  # HOST:PORT of the TSA (the PKI's TSA URL)
    registry_config: Path  # registry.toml
    registry_env: dict[str, str]  # the environment of a registry-admin `serai registry`
    anchor: Path  # the trust anchor
    echo: str  # the echo provider IS
    gateway_configs: dict[str, Path]  # gateway role ("consumer", "provider") -> gateway.toml


@dataclass(frozen=True, slots=True, kw_only=True)
class Federation:
    """Where the bench sends its calls, and the processes it charges CPU time to."""

    direct: str  # the echo provider
    gateways: str  # the consumer gateway's IS port
    nginx: str | None  # the client-side nginx, when there is a pair
    pids: dict[str, int]  # role -> pid of every long-running process started
    log_settings: dict[str, dict[str, object]]  # gateway role -> its gateway_message_log
    setup: Setup  # directories, configuration files and registry access
    listening: dict[str, dict[str, object]]  # gateway role -> its gateway_listening event
    admin_token: Path  # a gateway-admin token of the provider gateway


def bring_up(
    workdir: Path,
    services: list[Service],
    *,
    nginx: Path | None = None,
    max_in_flight: int = 1,
    say: Callable[[str], None] = lambda _: None,
    gateway_workers: int = 1,
    ocsp_next_update_s: int | None = None,
    edit_registry: Callable[[Path], None] | None = None,
    gateway_options: Mapping[str, Sequence[str]] | None = None,
    prepare: Callable[[Setup], None] | None = None,
) -> Federation:
    """Start everything under ``workdir``, appending each process to ``services``; each
    gateway with ``gateway_workers`` worker processes (``serai gateway serve --workers``);
    with ``nginx``, the nginx pair sized for ``max_in_flight`` calls; ``say`` tells the
    progress (by default to no one).

    For the test kits (module docstring): ``ocsp_next_update_s`` is the responder's
    ``--next-update-s``; ``edit_registry`` gets ``registry.toml`` before the registry
    starts; ``gateway_options`` maps a gateway role (``"consumer"``, ``"provider"``) to
    more ``serai gateway init`` options; ``prepare`` gets the :class:`Setup` once both
    gateways' directories are made, before either is registered or started."""
    if not ECHO_PROVIDER.is_file():
        raise SeraiError(f"the echo provider is missing: {ECHO_PROVIDER} (a source checkout)")
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    def spawn(name: str, argv: list[str], stopped_event: str) -> Service:
        with interrupts_deferred():  # recorded before an interruption can strike
            service = Service.start(
                name, argv, log=logs / f"{name}.log", stopped_event=stopped_event
            )
            services.append(service)
        say(f"started {name} (pid {service.pid})")
        return service

    pki, reg = workdir / "pki", workdir / "registry"
    say("creating the development PKI")
    ocsp_listen, tsa_listen = start_pki(pki, spawn, ocsp_next_update_s=ocsp_next_update_s)
    env = start_registry(
        reg,
        spawn,
        pki=pki,
        token=workdir / "registry.jwt",
        subject="bench",
        edit_registry=edit_registry,
    )
    say("registering the members and subsystems")
    for member, name, subsystem in (
        ("UZ/GOV/MINJUST", "Ministry of Justice", CONSUMER),
        ("UZ/GOV/CADASTRE", "Cadastre Agency", PROVIDER),
    ):
        must(run_serai("registry", "member", "add", member, "--name", name, env=env))
        must(run_serai("registry", "subsystem", "add", subsystem, env=env))
    anchor = workdir / "anchor.bin"
    must(run_serai("registry", "anchor", "--config", reg / "registry.toml", "--out", anchor))

    echo = spawn(
        "echo", [sys.executable, str(ECHO_PROVIDER), "--listen", "127.0.0.1:0"], "echo_stopped"
    )
    echo_address = str(echo.wait_for("echo_listening")["listen"])

    say("setting up the two gateways")
    configs: dict[str, Path] = {}
    registrations: list[str] = []
    for role, gateway_id, options in (
        ("consumer", _GATEWAYS[0], ["--client", CONSUMER]),
        ("provider", _GATEWAYS[1], ["--provider", f"{PROVIDER}={echo_address}"]),
    ):
        more = (gateway_options or {}).get(role, ())
        out = must(
            run_serai(
                "gateway", "init", "--dir", workdir / role, "--gateway-id", gateway_id,
                "--pki", pki, "--anchor", anchor, "--peer-listen", f"127.0.0.1:{free_port()}",
                "--is-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", *options, *more,
            )
        )  # fmt: skip
        registrations.append(
            next(line for line in out.splitlines() if "serai registry gateway add" in line)
        )
        configs[role] = workdir / role / "gateway.toml"
    setup = Setup(
        workdir=workdir,
        pki=pki,
        ocsp_listen=ocsp_listen,
        tsa_listen=tsa_listen,
        registry_config=reg / "registry.toml",
        registry_env=env,
        anchor=anchor,
        echo=echo_address,
        gateway_configs=configs,
    )
    if prepare is not None:
        prepare(setup)
    for command in registrations:
        must(run_serai(*shlex.split(command)[1:], env=env))  # what `gateway init` says to run
    wait_until_published(anchor, set(_GATEWAYS))
    workers = ["--workers", str(gateway_workers)] if gateway_workers > 1 else []
    gateways = {
        role: spawn(
            f"gateway-{role}",
            [*SERAI, "gateway", "serve", "--config", str(configs[role]), *workers],
            "gateway_stopped",
        )
        for role in ("consumer", "provider")
    }
    at = {role: gateway.wait_for("gateway_listening") for role, gateway in gateways.items()}
    log_settings = {
        role: {
            k: v
            for k, v in gateway.wait_for("gateway_message_log").items()
            if k in {"kind", "synchronous"}
        }
        for role, gateway in gateways.items()
    }
    admin_token = workdir / "gateway.jwt"
    must(
        run_serai(
            "gateway", "token", "issue", "--config", configs["provider"],
            "--role", "gateway-admin", "--subject", "bench", "--out", admin_token,
        )
    )  # fmt: skip
    must(
        run_serai(
            "acl", "grant", PROVIDER, BENCH_METHOD, CONSUMER,
            "--gateway", str(at["provider"]["admin"]), "--token-file", admin_token,
        )
    )  # fmt: skip

    nginx_address = None
    if nginx is not None:
        say(f"starting the nginx pair ({nginx})")
        nginx_address = start_nginx_pair(
            workdir,
            services,
            nginx=nginx,
            pki=pki,
            echo=echo_address,
            max_in_flight=max_in_flight,
            say=say,
        )
    return Federation(
        direct=echo_address,
        gateways=str(at["consumer"]["is"]),
        nginx=nginx_address,
        pids={service.name: service.pid for service in services},
        log_settings=log_settings,
        setup=setup,
        listening=at,
        admin_token=admin_token,
    )


#: Starts a long-running process: ``spawn(name, argv, stopped_event)``.
Spawn = Callable[[str, list[str], str], Service]


def init_pki(pki: Path, *, ocsp_listen: str, tsa_listen: str) -> None:
    """``serai pki init``: the development PKI (instance ``UZ``) in ``pki``, its
    certificates naming the OCSP responder and the TSA at ``ocsp_listen`` and
    ``tsa_listen`` (HOST:PORT)."""
    must(
        run_serai(
            "pki", "init", "--dir", pki, "--instance", "UZ",
            "--ocsp-url", f"http://{ocsp_listen}/", "--tsa-url", f"http://{tsa_listen}/",
        )
    )  # fmt: skip


def start_pki(pki: Path, spawn: Spawn, *, ocsp_next_update_s: int | None = None) -> tuple[str, str]:
    """Create the development PKI in ``pki`` (:func:`init_pki`, on free loopback ports)
    and start its OCSP responder (``--next-update-s`` when given) and TSA with ``spawn``;
    once both listen, their HOST:PORTs."""
    ocsp_listen, tsa_listen = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    init_pki(pki, ocsp_listen=ocsp_listen, tsa_listen=tsa_listen)
    next_update = [] if ocsp_next_update_s is None else ["--next-update-s", str(ocsp_next_update_s)]
    ocsp = spawn(
        "ocsp",
        [*SERAI, "pki", "ocsp", "serve", "--dir", str(pki), "--listen", ocsp_listen, *next_update],
        "ocsp_stopped",
    )
    tsa = spawn(
        "tsa",
        [*SERAI, "pki", "tsa", "serve", "--dir", str(pki), "--listen", tsa_listen],
        "tsa_stopped",
    )
    ocsp.wait_for("ocsp_listening")
    tsa.wait_for("tsa_listening")
    return ocsp_listen, tsa_listen


def init_registry(reg: Path, *, pki: Path) -> Path:
    """``serai registry init`` in ``reg`` with the PKI in ``pki``, its gRPC and HTTP
    ports free loopback ones; its ``registry.toml``."""
    must(
        run_serai(
            "registry", "init", "--dir", reg, "--instance", "UZ", "--pki", pki,
            "--grpc-listen", f"127.0.0.1:{free_port()}",
            "--http-listen", f"127.0.0.1:{free_port()}",
        )
    )  # fmt: skip
    return reg / "registry.toml"


def start_registry(
    reg: Path,
    spawn: Spawn,
    *,
    pki: Path,
    token: Path,
    subject: str,
    edit_registry: Callable[[Path], None] | None = None,
) -> dict[str, str]:
    """Make the registry in ``reg`` (:func:`init_registry`; ``edit_registry`` gets its
    ``registry.toml`` first) and start it with ``spawn``; once it listens, write a
    ``registry-admin`` token for ``subject`` to ``token`` and return the environment of a
    ``serai registry`` command that uses them (``SERAI_REGISTRY``, ``SERAI_REGISTRY_TOKEN``)."""
    config = init_registry(reg, pki=pki)
    if edit_registry is not None:
        edit_registry(config)
    registry = spawn(
        "registry", [*SERAI, "registry", "serve", "--config", str(config)], "registry_stopped"
    )
    listening = registry.wait_for("registry_listening")
    must(
        run_serai(
            "registry", "token", "issue", "--config", config,
            "--role", "registry-admin", "--subject", subject, "--out", token,
        )
    )  # fmt: skip
    return {
        **os.environ,
        "SERAI_REGISTRY": str(listening["grpc"]),
        "SERAI_REGISTRY_TOKEN": token.read_text().strip(),
    }


def start_nginx_pair(
    workdir: Path,
    services: list[Service],
    *,
    nginx: Path,
    pki: Path,
    echo: str,
    max_in_flight: int,
    say: Callable[[str], None],
) -> str:
    """Start the server-side nginx (towards the provider at ``echo``), then the
    client-side one, with certificates from the PKI in ``pki``; the client side's
    address. Each nginx is appended to ``services`` as it starts."""
    server_port, client_port = free_port(), free_port()
    sides = {
        "server": (server_port, echo, render_server_config),
        "client": (client_port, f"127.0.0.1:{server_port}", render_client_config),
    }
    for side, (port, upstream, render) in sides.items():
        prefix = workdir / f"nginx-{side}"
        (prefix / "tmp").mkdir(parents=True, exist_ok=True)
        keys = workdir / "nginx-keys" / side
        keys.parent.mkdir(exist_ok=True)
        must(
            run_serai(
                "pki", "issue", "--dir", pki, "--profile", "auth",
                "--subject", f"UZ/GOV/BENCH/gw:nginx-{side}", "--out", keys,
            )
        )  # fmt: skip
        paths = NginxPaths(
            prefix=prefix,
            certificate=keys.with_suffix(".pem"),
            key=keys.with_suffix(".key"),
            trusted_ca=pki / "ca.pem",
        )
        paths.config.write_text(
            render(paths, listen_port=port, upstream=upstream, max_in_flight=max_in_flight)
        )
        with interrupts_deferred():
            process = Service.start(
                f"nginx-{side}",
                [
                    str(nginx),
                    "-p",
                    str(prefix),
                    "-e",
                    str(paths.error_log),
                    "-c",
                    str(paths.config),
                ],
                log=prefix / "stderr.log",
                stopped_event="nginx_stopped",  # nginx writes no event lines; never found
            )
            services.append(process)
        say(f"started {process.name} (pid {process.pid})")
        _wait_accepting(process, port, paths.error_log)
    return f"127.0.0.1:{client_port}"


def _wait_accepting(process: Service, port: int, error_log: Path) -> None:
    deadline = time.monotonic() + _NGINX_READY_S
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            pass
        if not process.running() or time.monotonic() > deadline:
            text = error_log.read_text(errors="replace") if error_log.exists() else ""
            tail = process.log.read_text(errors="replace")
            raise SeraiError(f"{process.name} did not start: {(text + tail).strip()[-800:]}")
        time.sleep(0.05)
