"""``serai gateway serve --config FILE``: one gateway process on one event loop.

:func:`run_gateway` starts, in order:

1. the files ``gateway.toml`` names (keys, certificates, anchor, the IS client CA with
   ``is_tls``), read in a thread;
2. the global configuration client (cache, then a refresh loop); the ports open only
   once a valid configuration is held, since the peer port trusts its approved CAs
   (``gateway_waiting_for_globalconf`` is logged meanwhile, and the wait is retried);
3. the access-rights store, in one worker thread shared with the admin API, and the
   policy the runtime reads (re-read after each admin change and every few seconds);
4. the message log (:mod:`gateway._logsetup`: the durable Merkle log, its tree-head
   scheduler and the configuration archive; ``gateway_message_log`` names it), then
   the exchange runtime (IS port, peer port) with the replay guard, the log
   and a stapled OCSP response for the member's signing certificate (responder from
   the certificate's AIA, else its approved CA's in the configuration); an OCSP
   responder that is down at start is retried;
5. the admin API (JWT bearer tokens).

The operations HTTP port (``metrics_listen``: ``/metrics``, ``/healthz``, ``/readyz``;
:mod:`serai.httpops`) opens right after the configuration client, so that ``/readyz``
says why the gateway is not ready while it waits; :mod:`gateway._health` then keeps the
gRPC health status of the IS and peer ports in step with readiness and logs the
significant events (ready / not ready, message log stuck / resumed, time-stamping
failing / recovered, certificates about to expire).

A message-log store that stops answering without failing (its process stopped, the
network black-holed) leaves a request (a batch, a tree-head write, a read) in flight:
past ``message_log_stuck_after_s`` the gateway is not ready (``/readyz`` names the log),
every new exchange is refused at once with ``log_unavailable`` (counted as a refusal)
instead of waiting for its deadline, and ``serai_gateway_log_in_flight_age_seconds``
shows how long the request has waited. When it ends (a batch committed, or failed
whole) all of it clears by itself.

Then ``gateway_listening`` is logged with the four addresses, and SIGINT or SIGTERM
stops everything gracefully (``gateway_stopped``). Every event is a JSON line on
stderr.

Known limits: the IS port's client CA is the one held at start.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from cryptography.x509 import load_pem_x509_certificate
from prometheus_client import CollectorRegistry

from certs.ocsp_client import OCSPClient
from gateway import _grpclog
from gateway._assembly import (
    AdminChangeSignal,
    FollowedPolicy,
    LoadedFiles,
    load_files,
    ocsp_url_for,
    run_in_background,
    settings_from_config,
)
from gateway._health import Readiness, watch_readiness
from gateway._logsetup import GatewayLog, open_gateway_log
from gateway._settings import GatewaySettings
from gateway.admin import AdminServer, RuntimeStatus
from gateway.cli import open_acl_store, token_verifier
from gateway.commit import ExchangeLog
from gateway.config import GatewayConfig, load_config
from gateway.metrics import CertificateInUse, GatewayMetrics, GatewayState, add_state_gauges
from gateway.replay import ReplayGuard, SharedReplayCheck, seed_from_log
from gateway.runtime import GatewayRuntime, StapledOCSP
from gateway.signing import HeaderSigner
from registry.client import GlobalConfigurationClient
from registry.snapshot import ConfigurationSnapshot
from serai.cliutil import format_address, log_event, termination_event
from serai.errors import ErrorCode, SeraiError
from serai.httpops import OpsServer
from serai.metrics import StateGauges
from serai.tlspolicy import tls12_accepted
from serai.treehead import TreeHeadSigner

__all__ = ["register_serve", "run_gateway"]

#: Seconds between checks for a valid global configuration before the ports open.
_GLOBALCONF_WAIT_S: Final = 1.0
#: Where to reach a port bound to every address.
_LOOPBACK_FOR: Final = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104
#: Seconds between attempts to start the runtime when OCSP cannot be had yet.
_START_RETRY_S: Final = 2.0


def register_serve(gateway_subparsers: Any) -> None:
    """Add ``serve --config FILE`` to the ``serai gateway`` subcommands."""
    serve = gateway_subparsers.add_parser(
        "serve",
        help="run the gateway: IS port, peer port and admin API",
        description="Run a gateway until SIGINT or SIGTERM (see docs/gateway.md).",
    )
    serve.add_argument("--config", required=True, type=Path, help="gateway.toml")
    serve.set_defaults(handler=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    _grpclog.install()  # count the TLS handshakes grpc refuses (gateway._grpclog)
    asyncio.run(run_gateway(config))
    return 0


async def run_gateway(
    config: GatewayConfig, *, leader: bool = True, shares_log: bool = False
) -> None:
    """Run the gateway ``config`` describes until SIGINT or SIGTERM (module docstring).

    ``leader=False`` runs a follower worker of ``serai gateway serve --workers N``
    (:mod:`gateway.workers`): no admin API, and tree heads are signed by the leader.
    ``shares_log`` says other processes append to the same message log (workers): the
    replay window is then read from the log too, as it is for a PostgreSQL log, which
    other gateway nodes may share (:class:`~gateway.replay.SharedReplayCheck`)."""
    with termination_event() as stop:
        async with contextlib.AsyncExitStack() as stack:
            if not await _serve(config, stop, stack, leader=leader, shares_log=shares_log):
                log_event("gateway_stopped", gateway_id=str(config.gateway_id), started=False)
                return
            await stop.wait()
            log_event("gateway_stopping", gateway_id=str(config.gateway_id))
    log_event("gateway_stopped", gateway_id=str(config.gateway_id), started=True)


async def _serve(
    config: GatewayConfig,
    stop: asyncio.Event,
    stack: contextlib.AsyncExitStack,
    *,
    leader: bool = True,
    shares_log: bool = False,
) -> bool:
    """Start every part, registering its stop on ``stack``; ``False`` when ``stop`` was
    set before the ports opened."""
    files = await asyncio.to_thread(load_files, config)
    settings = settings_from_config(config, is_client_ca_pem=files.is_client_ca_pem)

    globalconf = GlobalConfigurationClient(
        anchor=files.anchor,
        cache_dir=config.globalconf_cache_dir,
        refresh_interval_s=config.globalconf_refresh_interval_s,
    )
    await globalconf.start()
    stack.push_async_callback(globalconf.stop)
    registry = CollectorRegistry()
    registry.register(_grpclog.HandshakeFailureCollector())
    readiness = Readiness(
        globalconf=globalconf,
        max_ocsp_age_s=settings.max_ocsp_age_s,
        log_stuck_after_s=config.message_log_stuck_after_s,
    )
    ops = OpsServer(registry=registry, readiness=readiness.reasons, listen=config.metrics_listen)
    await ops.start()
    stack.push_async_callback(ops.stop)
    logged: set[str] = set()
    snapshot = await _until(
        stop, lambda: _valid_configuration(globalconf, logged), _GLOBALCONF_WAIT_S
    )
    if snapshot is None:
        return False

    executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="gateway-acl-store")
    stack.callback(executor.shutdown, wait=True)
    loop = asyncio.get_running_loop()
    store = await loop.run_in_executor(executor, open_acl_store, config)
    stack.callback(executor.submit, store.close)
    initial = await loop.run_in_executor(executor, store.policy)
    policy = FollowedPolicy(store=store, initial=initial, executor=executor)
    run_in_background(stack, policy.run(), "acl-policy")

    metrics = GatewayMetrics(
        registry=registry,
        settings=settings,
        configuration=globalconf,
        policies=policy,
        exchange_log_lines=config.exchange_log_lines,
    )
    gateway_log = await open_gateway_log(
        config=config,
        signer=TreeHeadSigner(key=files.log_signing_key, certificate_chain=files.log_signing_chain),
        globalconf=globalconf,
        stack=stack,
        commit_observer=lambda kind, seconds, ok: metrics.observe_commit(kind, seconds, ok=ok),
        sign_heads=leader,
    )
    readiness.gateway_log = gateway_log
    log = gateway_log.exchange_log
    ocsp_client = OCSPClient()
    stack.push_async_callback(ocsp_client.aclose)
    replay = ReplayGuard(
        window_s=float(config.replay_window_s), max_skew_s=float(config.max_skew_s)
    )
    remembered = await seed_from_log(
        replay,
        gateway_log.store,
        keep_s=float(config.replay_window_s) + float(config.max_skew_s),
    )
    log_event("gateway_replay_window_restored", message_ids=remembered)
    shared_replay = (
        SharedReplayCheck(
            gateway_log.store,
            keep_s=float(config.replay_window_s) + float(config.max_skew_s),
        )
        if shares_log or config.message_log_url is not None
        else None
    )
    runtime = await _start_runtime(
        config=config,
        files=files,
        snapshot=snapshot,
        globalconf=globalconf,
        policy=policy,
        log=log,
        replay=replay,
        shared_replay=shared_replay,
        admission=_admission(gateway_log, config.message_log_stuck_after_s),
        settings=settings,
        ocsp_client=ocsp_client,
        stop=stop,
        metrics=metrics,
        readiness=readiness,
    )
    if runtime is None:
        return False
    stack.push_async_callback(runtime.stop)
    await _require_tls13(config, runtime)
    readiness.runtime = runtime
    certificates = (
        CertificateInUse("auth", load_pem_x509_certificate(files.auth_chain_pem)),
        CertificateInUse("signing", files.signing_chain[0]),
        CertificateInUse("log_signing", files.log_signing_chain[0]),
    )
    readiness.certificates = {c.role: c.certificate.not_valid_after_utc for c in certificates}
    add_state_gauges(
        StateGauges(registry),
        GatewayState(
            globalconf_status=globalconf.status,
            log_records=lambda: gateway_log.store.size,
            scheduler=gateway_log.scheduler,
            overdue_after_s=config.timestamping_overdue_s,
            certificates=certificates,
            ocsp_this_update=readiness.ocsp_this_update,
            acl_generation=lambda: policy.policy().generation,
            ready=lambda: not readiness.reasons(),
            clock=_utc_now,
            peer_ocsp_this_update=_peer_ocsp(runtime),
            known_members=lambda: _known_members(globalconf),
            log_in_flight_age_s=lambda: _in_flight_age_s(gateway_log),
            log_stuck_after_s=config.message_log_stuck_after_s,
        ),
    )
    run_in_background(stack, watch_readiness(readiness), "readiness")

    admin_address = None
    if leader:
        admin = AdminServer(
            gateway_id=config.gateway_id,
            store=store,
            log=AdminChangeSignal(log=log, policy=policy),
            verifier=token_verifier(config),
            providers=[p.subsystem for p in config.providers],
            listen=config.admin_listen,
            status=lambda: _status(globalconf, gateway_log, config.message_log_stuck_after_s),
            executor=executor,
        )
        await admin.start()
        stack.push_async_callback(admin.stop)
        admin_address = format_address(config.admin_listen[0], admin.port)

    is_host, peer_host = config.is_listen[0], config.peer_listen[0]
    log_event(
        "gateway_listening",
        gateway_id=str(config.gateway_id),
        **{
            "is": format_address(is_host, runtime.is_port),
            "peer": format_address(peer_host, runtime.peer_port),
            "admin": admin_address,
            "metrics": format_address(config.metrics_listen[0], ops.port),
        },
        globalconf_serial=snapshot.serial,
        acl_generation=initial.generation,
    )
    return True


async def _start_runtime(
    *,
    config: GatewayConfig,
    files: LoadedFiles,
    snapshot: ConfigurationSnapshot,
    globalconf: GlobalConfigurationClient,
    policy: FollowedPolicy,
    log: ExchangeLog,
    replay: ReplayGuard,
    shared_replay: SharedReplayCheck | None,
    admission: Callable[[], None],
    settings: GatewaySettings,
    ocsp_client: OCSPClient,
    stop: asyncio.Event,
    metrics: GatewayMetrics,
    readiness: Readiness,
) -> GatewayRuntime | None:
    """Start the runtime, retrying while its first OCSP response cannot be had."""
    leaf, issuer = files.signing_chain[0], files.signing_chain[1]
    stapled = StapledOCSP(
        client=ocsp_client,
        certificate=leaf,
        issuer=issuer,
        url=ocsp_url_for(leaf, issuer, snapshot),
    )
    readiness.stapled = stapled
    signer = HeaderSigner(
        key=files.signing_key, certificate_chain=files.signing_chain, ocsp_response=stapled
    )
    while True:
        runtime = GatewayRuntime(
            gateway_id=config.gateway_id,
            auth_key_pem=files.auth_key_pem,
            auth_chain_pem=files.auth_chain_pem,
            signer=signer,
            configuration=globalconf,
            policies=policy,
            log=log,
            replay=replay,
            shared_replay=shared_replay,
            settings=settings,
            ocsp=stapled,
            admission=admission,
            observer=metrics,
        )
        try:
            await runtime.start()
        except SeraiError as exc:
            await runtime.stop(0)
            log_event(
                "gateway_start_retry",
                code=exc.code.value,
                message=exc.message,
                retry_in_s=_START_RETRY_S,
            )
        else:
            return runtime
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=_START_RETRY_S)
        if stop.is_set():
            return None


async def _require_tls13(config: GatewayConfig, runtime: GatewayRuntime) -> None:
    """Refuse to run when a TLS port of ours would speak TLS 1.2 (see
    :mod:`serai.tlspolicy`: the policy only holds when set before gRPC initialised)."""
    ports = [("peer", config.peer_listen[0], runtime.peer_port)]
    if config.is_tls:
        ports.append(("is", config.is_listen[0], runtime.is_port))
    for name, host, port in ports:
        probe_host = _LOOPBACK_FOR.get(host, host)
        if await tls12_accepted(probe_host, port):
            log_event("gateway_tls12_accepted", port=name, address=format_address(host, port))
            raise SeraiError(
                f"the {name} port {format_address(host, port)} accepts TLS 1.2, and Serai "
                "requires TLS 1.3: gRPC was initialised before Serai set its TLS policy "
                "(start the gateway with the serai command, or import serai before grpc)",
                code=ErrorCode.INTERNAL,
            )


def _valid_configuration(
    globalconf: GlobalConfigurationClient, logged: set[str]
) -> ConfigurationSnapshot | None:
    """The configuration in force, or ``None`` (logged once per refusal code)."""
    try:
        return globalconf.current()
    except SeraiError as exc:
        if exc.code.value not in logged:
            logged.add(exc.code.value)
            log_event("gateway_waiting_for_globalconf", code=exc.code.value, message=exc.message)
        return None


async def _until(
    stop: asyncio.Event,
    attempt: Callable[[], ConfigurationSnapshot | None],
    interval_s: float,
) -> ConfigurationSnapshot | None:
    """``attempt()`` until it returns a value, checking every ``interval_s``; ``None``
    once ``stop`` is set."""
    while not stop.is_set():
        value = attempt()
        if value is not None:
            return value
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
    return None


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _admission(log: GatewayLog, stuck_after_s: float) -> Callable[[], None]:
    """Refuse new exchanges while a log write is stuck (``log_unavailable``: waiting
    would only end at the deadline), then as the log says (``timestamping_overdue``)."""

    def admit() -> None:
        log.store.refuse_if_stuck(stuck_after_s)
        log.admission()

    return admit


def _in_flight_age_s(log: GatewayLog) -> float:
    work = log.store.oldest_in_flight()
    return 0.0 if work is None else work.age_s()


def _status(
    globalconf: GlobalConfigurationClient, log: GatewayLog, stuck_after_s: float
) -> RuntimeStatus:
    status = globalconf.status()
    stuck = log.store.stuck_reason(stuck_after_s)
    reasons = (
        (("no valid global configuration",) if status.expired else ())
        + (() if stuck is None else (stuck,))
        + log.not_ready_reasons()
    )
    return RuntimeStatus(
        globalconf_serial=status.serial or 0,
        globalconf_generated_at=status.generated_at,
        globalconf_expires_at=status.expires_at,
        log_size=log.store.size,
        timestamp_failures=log.scheduler.failures_total,
        ready=not reasons,
        not_ready_reasons=reasons,
    )


def _peer_ocsp(runtime: GatewayRuntime) -> Callable[[], dict[str, dt.datetime]]:
    cache = runtime.verification_cache
    return dict if cache is None else cache.newest_ocsp_this_update


def _known_members(globalconf: GlobalConfigurationClient) -> frozenset[str]:
    """Member ids of the configuration in force (none while there is none)."""
    try:
        snapshot = globalconf.current()
    except SeraiError:
        return frozenset()
    return frozenset(str(m.id) for m in snapshot.configuration.federation.members)
