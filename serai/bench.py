"""``serai bench``: what the gateways cost, measured against direct calls and against an
nginx pair doing mutual TLS only, in the same run on the same machine.

The bench brings up, as processes on loopback and with ``serai`` commands, a PKI with
its OCSP responder and time-stamping authority, the registry, an echo provider and two
gateways with everything on (signing, verification, OCSP, access rights, the SQLite
message log with synchronous=FULL, tree heads time-stamped every second); with
``--nginx``, also a pair of nginx servers that only pass gRPC over mutual TLS. For
each in-flight count of ``--concurrency`` it warms each target up, then drives unary
calls of ``--payload`` random bytes for ``--duration`` seconds, round after round
alternating the targets (direct, gateways, nginx, direct, ...) so that drift hits all
of them alike. It reports calls/s, p50/p90/p99 latency, the ratios gateways/direct and
gateways/nginx, the latency the hops add, the CPU milliseconds per call of each
process, and every refused or failed call per round. Every process it started is
stopped at the end, also on an error, Ctrl-C or SIGTERM. The exit status is 1 when a
call failed or was refused (the figures count only answered calls).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import grpc
from prometheus_client.parser import text_string_to_metric_families

from serai._benchfed import BENCH_METHOD, CONSUMER, PROVIDER, Federation, bring_up
from serai._benchload import CpuSample, Outcomes, call_once, cpu_sample, drive, open_channel
from serai._benchnginx import find_nginx
from serai._benchreport import RoundFigures, render_text, round_figures, summarize
from serai._demoprocs import Service, count_event, stop_services, termination_as_exit
from serai.errors import ConfigError, SeraiError

__all__ = ["BenchSettings", "parse_settings", "register", "run_bench"]

#: Bounds that keep a run meaningful: one client process cannot keep more calls in
#: flight usefully, and the gateways refuse bodies above 4 MiB by default.
MAX_IN_FLIGHT: Final = 1024
MAX_PAYLOAD_BYTES: Final = 4 * 1024 * 1024
MAX_DURATION_S: Final = 3600.0
MAX_ROUNDS: Final = 100
MAX_GATEWAY_WORKERS: Final = 16
#: Client connections per target with ``--gateway-workers``: the kernel spreads
#: connections over a gateway's workers (SO_REUSEPORT), never the calls of one.
WORKER_RUN_CONNECTIONS: Final = 8


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchSettings:
    """A validated ``serai bench`` run."""

    concurrency: tuple[int, ...]  # calls in flight, one level after the other
    payload_bytes: int
    duration_s: float  # of each round of each target
    warmup_s: float  # of each target, before the rounds of each level
    rounds: int  # per target and level
    nginx: Path | None  # the nginx executable, when the nginx pair is measured too
    workdir: Path | None  # keep every file here; None: a temporary folder, removed
    #: Worker processes of each gateway (``serai gateway serve --workers``); when given,
    #: the client spreads its calls to every target over WORKER_RUN_CONNECTIONS.
    gateway_workers: int | None = None


def register(subparsers: Any) -> None:
    """Add ``serai bench`` to the top-level parser."""
    bench = subparsers.add_parser(
        "bench",
        help="measure calls/s and latency through two gateways against direct and nginx",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    bench.add_argument(
        "--concurrency",
        default="1,64",
        metavar="N[,N...]",
        help=f"calls in flight, each level in turn (1..{MAX_IN_FLIGHT}; default %(default)s)",
    )
    bench.add_argument(
        "--payload", default="1024", metavar="BYTES", help="request body (default %(default)s)"
    )
    bench.add_argument(
        "--duration", default="10", metavar="S", help="seconds per round (default %(default)s)"
    )
    bench.add_argument(
        "--warmup",
        default="2",
        metavar="S",
        help="seconds of calls to each target before each level's rounds (default %(default)s)",
    )
    bench.add_argument(
        "--rounds", default="3", metavar="N", help="rounds per target (default %(default)s)"
    )
    bench.add_argument(
        "--nginx",
        action="store_true",
        help="also measure a pair of nginx servers doing mutual-TLS grpc_pass only "
        "(needs nginx installed)",
    )
    bench.add_argument(
        "--workdir",
        type=Path,
        metavar="DIR",
        help="keep every file and process log here (must not exist or be empty; default: "
        "a temporary folder, removed at the end)",
    )
    bench.add_argument(
        "--gateway-workers",
        metavar="N",
        help=f"run each gateway with N worker processes (1..{MAX_GATEWAY_WORKERS}); the "
        f"client then spreads its calls to every target over {WORKER_RUN_CONNECTIONS} "
        "connections (the kernel balances connections over workers, not calls)",
    )
    bench.add_argument("--json", action="store_true", help="print one JSON document")
    bench.set_defaults(handler=_cmd_bench)


def parse_settings(args: argparse.Namespace) -> BenchSettings:
    """The settings of ``args``; :class:`ConfigError` naming the option when one is wrong."""
    levels = []
    for part in str(args.concurrency).split(","):
        level = _whole("--concurrency", part.strip(), low=1, high=MAX_IN_FLIGHT)
        if level in levels:
            raise ConfigError(f"--concurrency: {level} is given twice")
        levels.append(level)
    nginx = None
    if args.nginx:
        nginx = find_nginx()
        if nginx is None:
            raise ConfigError("--nginx: no nginx executable on PATH or in /usr/sbin")
    workdir: Path | None = args.workdir
    if workdir is not None:
        if workdir.exists() and (not workdir.is_dir() or any(workdir.iterdir())):
            raise ConfigError(f"--workdir {workdir}: must not exist or be an empty folder")
        if any(c in str(workdir.resolve()) for c in '"\\\n'):
            raise ConfigError(f"--workdir {workdir}: quotes and backslashes are not supported")
    return BenchSettings(
        concurrency=tuple(levels),
        payload_bytes=_whole("--payload", str(args.payload), low=0, high=MAX_PAYLOAD_BYTES),
        duration_s=_seconds("--duration", str(args.duration), low=0.1),
        warmup_s=_seconds("--warmup", str(args.warmup), low=0.0),
        rounds=_whole("--rounds", str(args.rounds), low=1, high=MAX_ROUNDS),
        nginx=nginx,
        workdir=workdir,
        gateway_workers=None
        if args.gateway_workers is None
        else _whole(
            "--gateway-workers", str(args.gateway_workers), low=1, high=MAX_GATEWAY_WORKERS
        ),
    )


def _whole(option: str, text: str, *, low: int, high: int) -> int:
    if not text.isdigit() or not low <= int(text) <= high:
        raise ConfigError(f"{option}: expected a whole number from {low} to {high}, got {text!r}")
    return int(text)


def _seconds(option: str, text: str, *, low: float) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not low <= value <= MAX_DURATION_S:
        raise ConfigError(
            f"{option}: expected seconds from {low:g} to {MAX_DURATION_S:g}, got {text!r}"
        )
    return value


def _cmd_bench(args: argparse.Namespace) -> int:
    settings = parse_settings(args)
    with termination_as_exit():
        report = run_bench(settings, say=_say)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render_text(report))
    failed = sum(sum(r["refusals"].values()) + sum(r["errors"].values()) for r in report["rounds"])
    if failed:
        print(
            f"serai: error: {failed} calls were refused or failed (see the rounds); "
            "the figures count only answered calls",
            file=sys.stderr,
        )
        return 1
    return 0


def run_bench(settings: BenchSettings, *, say: Callable[[str], None]) -> dict[str, Any]:
    """Bring everything up, measure, stop everything; the report (``--json``'s document)."""
    load_at_start = round(os.getloadavg()[0], 2)
    if settings.workdir is not None:
        settings.workdir.mkdir(parents=True, exist_ok=True)
        workdir = settings.workdir.resolve()
    else:
        workdir = Path(tempfile.mkdtemp(prefix="serai-bench-"))
    services: list[Service] = []
    try:
        federation = bring_up(
            workdir,
            services,
            nginx=settings.nginx,
            max_in_flight=max(settings.concurrency),
            say=say,
            gateway_workers=settings.gateway_workers or 1,
        )
        targets = {"direct": federation.direct, "gateways": federation.gateways}
        if federation.nginx is not None:
            targets["nginx"] = federation.nginx
        rounds = asyncio.run(_measure(settings, federation, targets, services, say))
        stamped = {
            role: count_event(service, "log_tree_head_timestamped")
            for role, service in ((s.name, s) for s in services)
            if role.startswith("gateway-")
        }
    finally:
        stop_services(services, say)
        if settings.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return {
        "setup": {
            "targets": list(targets),
            "concurrency": list(settings.concurrency),
            "payload_bytes": settings.payload_bytes,
            "duration_s": settings.duration_s,
            "warmup_s": settings.warmup_s,
            "rounds": settings.rounds,
            "cpus": os.cpu_count(),
            "load_average_at_start": load_at_start,
            "machine": platform.machine(),
            "python": platform.python_version(),
            "grpcio": grpc.__version__,
            "nginx": str(settings.nginx) if settings.nginx else None,
            "message_logs": federation.log_settings,
            "workdir": str(workdir) if settings.workdir is not None else None,
            "gateway_workers": settings.gateway_workers,
            "connections_per_target": _connections(settings),
        },
        "processes": federation.pids,
        "summary": summarize(rounds, list(targets)),
        "rounds": [r.record for r in rounds],
        "timestamped_tree_heads": stamped,
    }


async def _measure(
    settings: BenchSettings,
    federation: Federation,
    targets: dict[str, str],
    services: list[Service],
    say: Callable[[str], None],
) -> list[RoundFigures]:
    body = os.urandom(settings.payload_bytes)
    headers = {
        "direct": (),
        "nginx": (),
        "gateways": (("x-road-client", CONSUMER), ("x-road-service", PROVIDER)),
    }
    count = _connections(settings)
    spread = {name: _open_channels(address, count) for name, address in targets.items()}
    channels = {name: opened[0] for name, opened in spread.items()}
    pids = _with_workers(federation.pids, services, settings.gateway_workers or 0)
    if (settings.gateway_workers or 1) > 1:
        await asyncio.to_thread(_until_rights_everywhere, services)
    rounds: list[RoundFigures] = []
    try:
        for name, channel in channels.items():  # connect, and prove that each path works
            proof = await call_once(channel, method=BENCH_METHOD, metadata=headers[name], body=body)
            if not proof.latencies_s:
                failed = {**proof.refusals, **proof.errors}
                raise SeraiError(f"{name} ({targets[name]}): the first call failed: {failed}")
        for in_flight in settings.concurrency:
            say(f"{in_flight} in flight: warming up each target for {settings.warmup_s:g} s")
            for name in channels:
                await _drive_spread(
                    spread[name], method=BENCH_METHOD, metadata=headers[name], body=body,
                    in_flight=in_flight, seconds=settings.warmup_s,
                )  # fmt: skip
            for number in range(1, settings.rounds + 1):
                for name in channels:  # a, b, c, a, b, c, ...
                    before = _cpu_sample(pids)
                    outcomes = await _drive_spread(
                        spread[name], method=BENCH_METHOD, metadata=headers[name], body=body,
                        in_flight=in_flight, seconds=settings.duration_s,
                    )  # fmt: skip
                    after = _cpu_sample(pids)
                    figures = round_figures(
                        target=name, in_flight=in_flight, number=number,
                        outcomes=outcomes, before=before, after=after,
                    )  # fmt: skip
                    rounds.append(figures)
                    say(_round_line(figures.record))
                    _check_running(services)
    finally:
        for opened in spread.values():
            for channel in opened:
                await channel.close(None)
    return rounds


# -- --gateway-workers -------------------------------------------------------------------


def _connections(settings: BenchSettings) -> int:
    return 1 if settings.gateway_workers is None else WORKER_RUN_CONNECTIONS


def _open_channels(address: str, count: int) -> list[grpc.aio.Channel]:
    """``count`` channels to ``address``, each on its own TCP connection when more than
    one (grpc shares one connection between a process's channels unless told not to)."""
    if count == 1:
        return [open_channel(address)]
    options = (
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ("grpc.use_local_subchannel_pool", 1),
    )
    return [grpc.aio.insecure_channel(address, options=options) for _ in range(count)]


async def _drive_spread(
    channels: list[grpc.aio.Channel],
    *,
    method: str,
    metadata: tuple[tuple[str, str], ...],
    body: bytes,
    in_flight: int,
    seconds: float,
) -> Outcomes:
    """:func:`drive` with the ``in_flight`` callers shared out over ``channels``."""
    shares = [
        in_flight // len(channels) + (i < in_flight % len(channels)) for i in range(len(channels))
    ]
    results = await asyncio.gather(
        *(
            drive(c, method=method, metadata=metadata, body=body, in_flight=n, seconds=seconds)
            for c, n in zip(channels, shares, strict=True)
            if n > 0
        )
    )
    if len(results) == 1:
        return results[0]
    merged = Outcomes()
    for result in results:
        merged.latencies_s.extend(result.latencies_s)
        merged.refusals.update(result.refusals)
        merged.errors.update(result.errors)
        merged.wall_s = max(merged.wall_s, result.wall_s)
    return merged


def _of_worker(index: int) -> Callable[[dict[str, Any]], bool]:
    return lambda event: bool(event["worker"] == index)


def _until_rights_everywhere(services: list[Service]) -> None:
    """Wait until every worker of each gateway holds the access rights granted through
    the leader's admin API (followers re-read them every few seconds): their
    ``serai_gateway_acl_generation`` on the gateway's aggregated /metrics agree."""
    for service in services:
        if not service.name.startswith("gateway-"):
            continue
        metrics = str(service.wait_for("gateway_listening")["metrics"])
        generations: set[float] = set()
        for _ in range(600):
            with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=30) as reply:
                text = reply.read().decode()
            generations = {
                sample.value
                for family in text_string_to_metric_families(text)
                if family.name == "serai_gateway_acl_generation"
                for sample in family.samples
            }
            if len(generations) == 1:
                break
            time.sleep(0.1)
        else:
            raise SeraiError(f"{service.name}: workers hold access rights {generations}")


def _cpu_sample(pids: dict[str, int]) -> CpuSample:
    """:func:`cpu_sample`, with each gateway worker's CPU time added to its gateway's
    (``gateway-consumer worker 1`` to ``gateway-consumer``): the report charges roles."""
    sample = cpu_sample(pids)
    folded: dict[str, float | None] = {}
    for role, seconds in sample.processes.items():
        gateway = role.split(" worker ", 1)[0]
        if gateway in folded and seconds is not None and folded[gateway] is not None:
            folded[gateway] = (folded[gateway] or 0.0) + seconds
        elif gateway not in folded:
            folded[gateway] = seconds
        else:
            folded[gateway] = None  # a process gone: the round's figure is unknown
    return dataclasses.replace(sample, processes=folded)


def _with_workers(pids: dict[str, int], services: list[Service], workers: int) -> dict[str, int]:
    """``pids`` and the worker processes of ``--workers`` gateways (``gateway-consumer
    worker 0``, ...): their CPU time is not in their supervisor's."""
    found = dict(pids)
    for service in services:
        for index in range(workers if service.name.startswith("gateway-") else 0):
            event = service.find("gateway_worker_started", where=_of_worker(index))
            if event is not None:
                found[f"{service.name} worker {index}"] = int(event["pid"])
    return found


def _round_line(record: dict[str, Any]) -> str:
    failed = {**record["refusals"], **record["errors"]}
    return (
        f"{record['in_flight']} in flight, {record['target']} round {record['round']}: "
        f"{record['calls_per_s']} calls/s, p50 {record['p50_ms']} ms, p99 {record['p99_ms']} ms"
        + (f"; FAILED {failed}" if failed else "")
    )


def _check_running(services: list[Service]) -> None:
    for service in services:
        if not service.running():
            tail = service.log.read_text(errors="replace").strip()[-800:]
            raise SeraiError(
                f"{service.name} exited with {service.process.returncode} during the run; "
                f"{service.log}:\n{tail}"
            )


def _say(text: str) -> None:
    print(f"serai bench: {text}", file=sys.stderr, flush=True)
