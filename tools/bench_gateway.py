"""Benchmark of the exchange: calls/s and latency through two gateways versus direct.

Brings up, as separate processes on loopback and only with ``serai`` commands (as an
operator would, and as tests/test_gateway_processes.py does): a PKI with its OCSP
responder and TSA, the registry, the echo provider IS (``tools/echo_provider.py``), a consumer
gateway (UZ/GOV/MINJUST, client ``property``) and a provider gateway (UZ/GOV/CADASTRE,
provider ``registry``) via ``serai gateway serve``, and grants ``property`` the
benchmark method with ``serai acl grant``. Then, for each in-flight count of
``--concurrency``, it drives unary calls of ``--payload`` random bytes for
``--duration`` seconds, alternating ``direct`` (to the echo provider) and ``gateway``
(to the consumer gateway's IS port, through both gateways), ``--rounds`` times each
(a, b, a, b, ...), after ``--warmup`` seconds of each target.

    .venv/bin/python tools/bench_gateway.py --duration 5
    .venv/bin/python tools/bench_gateway.py --concurrency 1,64 --duration 10 --json

The client is this process: one grpc.aio channel per target, ``N`` coroutines each
issuing one call after another (so ``N`` calls in flight). Every answer is checked to
echo the body; failures are counted, not timed. Prints calls/s, p50/p90/p99 latency per
target and the ratio gateway/direct (``--json``: one JSON document). The gateways keep
their durable message log in SQLite with ``synchronous=FULL`` (the default of ``serai
gateway init``) and time-stamp tree heads every second with the PKI's TSA, also started
here. All processes are killed on exit; every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc

from serai.localprocs import SERAI, Process, free_port, start, wait_until_published
from serai.localprocs import serai_command as serai

ECHO = [sys.executable, str(Path(__file__).resolve().parent / "echo_provider.py")]
PROPERTY = "UZ/GOV/MINJUST/property"
REGISTRY = "UZ/GOV/CADASTRE/registry"
METHOD = "/bench.v1.Bench/Echo"
_CALL_TIMEOUT_S = 30.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per round")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    parser.add_argument("--payload", type=int, default=1024, help="request body bytes")
    parser.add_argument(
        "--concurrency", default="1,64", help="comma-separated calls in flight (default 1,64)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="rounds per target (a,b,a,b)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    levels = [int(part) for part in str(args.concurrency).split(",") if part.strip()]
    if not levels or min(levels) < 1 or args.rounds < 1 or args.duration <= 0:
        parser.error("need --concurrency >= 1, --rounds >= 1 and --duration > 0")

    processes: list[Process] = []

    def on_signal(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        try:
            _say(args, "starting the federation (PKI, OCSP, registry, echo, two gateways)")
            direct, through = bring_up(Path(tmp), processes)
            _say(args, f"direct: {direct}; gateway IS port: {through}")
            report = asyncio.run(run_all(direct, through, levels, args))
        finally:
            for process in reversed(processes):
                process.stop()
    report["setup"] = {
        "payload_bytes": args.payload,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "grpcio": grpc.__version__,
        "message_log": "in-memory",
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0


# --- bring-up: real processes, serai commands ---------------------------------------


def bring_up(tmp: Path, processes: list[Process]) -> tuple[str, str]:
    """Start everything; return (echo provider address, consumer gateway IS address)."""
    ocsp_port, tsa_port = free_port(), free_port()
    pki = tmp / "pki"
    serai(
        "pki", "init", "--dir", pki, "--instance", "UZ",
        "--ocsp-url", f"http://127.0.0.1:{ocsp_port}/", "--tsa-url", f"http://127.0.0.1:{tsa_port}/",
    )  # fmt: skip
    ocsp = start(
        processes,
        [*SERAI, "pki", "ocsp", "serve", "--dir", str(pki), "--listen", f"127.0.0.1:{ocsp_port}"],
    )
    ocsp.wait_for("ocsp_listening")
    tsa = start(  # the gateways' tree heads are time-stamped during the run
        processes,
        [*SERAI, "pki", "tsa", "serve", "--dir", str(pki), "--listen", f"127.0.0.1:{tsa_port}"],
    )
    tsa.wait_for("tsa_listening")

    reg = tmp / "reg"
    serai(
        "registry", "init", "--dir", reg, "--instance", "UZ", "--pki", pki,
        "--grpc-listen", f"127.0.0.1:{free_port()}", "--http-listen", f"127.0.0.1:{free_port()}",
    )  # fmt: skip
    registry = start(
        processes, [*SERAI, "registry", "serve", "--config", str(reg / "registry.toml")]
    )
    listening = registry.wait_for("registry_listening")
    token = tmp / "registry.jwt"
    serai(
        "registry", "token", "issue", "--config", reg / "registry.toml",
        "--role", "registry-admin", "--subject", "bench", "--out", token,
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
    anchor = tmp / "anchor.bin"
    serai("registry", "anchor", "--config", reg / "registry.toml", "--out", anchor)

    echo = start(processes, [*ECHO, "--listen", "127.0.0.1:0"], events_on_stdout=True)
    echo_address = str(echo.wait_for("echo_listening")["listen"])

    configs: dict[str, Path] = {}
    for name, gateway_id, role in (
        ("consumer", "UZ/GOV/MINJUST/gw:main", ["--client", PROPERTY]),
        ("provider", "UZ/GOV/CADASTRE/gw:main", ["--provider", f"{REGISTRY}={echo_address}"]),
    ):
        out = serai(
            "gateway", "init", "--dir", tmp / name, "--gateway-id", gateway_id,
            "--pki", pki, "--anchor", anchor, "--peer-listen", f"127.0.0.1:{free_port()}",
            "--is-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", *role,
        )  # fmt: skip
        command = next(line for line in out.splitlines() if "serai registry gateway add" in line)
        serai(*shlex.split(command)[1:], env=env)  # what `gateway init` says to run
        configs[name] = tmp / name / "gateway.toml"
    wait_until_published(anchor, {"UZ/GOV/MINJUST/gw:main", "UZ/GOV/CADASTRE/gw:main"})

    consumer = start(processes, [*SERAI, "gateway", "serve", "--config", str(configs["consumer"])])
    provider = start(processes, [*SERAI, "gateway", "serve", "--config", str(configs["provider"])])
    consumer_at = consumer.wait_for("gateway_listening")
    provider_at = provider.wait_for("gateway_listening")

    admin_token = tmp / "gateway.jwt"
    serai(
        "gateway", "token", "issue", "--config", configs["provider"],
        "--role", "gateway-admin", "--subject", "bench", "--out", admin_token,
    )  # fmt: skip
    serai(
        "acl", "grant", REGISTRY, METHOD, PROPERTY,
        "--gateway", str(provider_at["admin"]), "--token-file", str(admin_token),
    )  # fmt: skip
    return echo_address, str(consumer_at["is"])


# --- load -----------------------------------------------------------------------------


@dataclass
class Round:
    target: str
    in_flight: int
    number: int
    calls: int
    errors: int
    seconds: float
    calls_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values)) - 1))
    return sorted_values[index]


async def drive(
    channel: grpc.aio.Channel,
    metadata: tuple[tuple[str, str], ...],
    body: bytes,
    in_flight: int,
    seconds: float,
) -> tuple[list[float], int, float]:
    """``in_flight`` workers calling back to back for ``seconds``: (latencies, errors, wall)."""
    call = channel.unary_unary(METHOD, None, None)
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter() < stop_at:
            began = time.perf_counter()
            try:
                answer = await call(body, metadata=metadata, timeout=_CALL_TIMEOUT_S)
            except grpc.aio.AioRpcError:
                errors += 1
                continue
            elapsed = time.perf_counter() - began
            if answer == body:
                latencies.append(elapsed)
            else:
                errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return latencies, errors, time.perf_counter() - started


async def run_all(
    direct: str, through: str, levels: list[int], args: argparse.Namespace
) -> dict[str, Any]:
    body = os.urandom(args.payload)
    targets = {
        "direct": (direct, ()),
        "gateway": (through, (("x-road-client", PROPERTY), ("x-road-service", REGISTRY))),
    }
    rounds: list[Round] = []
    summary: list[dict[str, Any]] = []
    channels = {name: grpc.aio.insecure_channel(address) for name, (address, _) in targets.items()}
    try:
        for name, channel in channels.items():  # connect, and prove the path works
            answer = await channel.unary_unary(METHOD, None, None)(
                body, metadata=targets[name][1], timeout=_CALL_TIMEOUT_S
            )
            if answer != body:
                raise RuntimeError(f"{name}: the echo did not return the body")
        for in_flight in levels:
            for name, channel in channels.items():
                await drive(channel, targets[name][1], body, in_flight, args.warmup)
            samples: dict[str, list[float]] = {name: [] for name in targets}
            calls_of = dict.fromkeys(targets, 0)
            errors_of = dict.fromkeys(targets, 0)
            wall_of = dict.fromkeys(targets, 0.0)
            for number in range(args.rounds):
                for name, channel in channels.items():  # a, b, a, b, ...
                    latencies, errors, wall = await drive(
                        channel, targets[name][1], body, in_flight, args.duration
                    )
                    latencies.sort()
                    rounds.append(
                        Round(
                            target=name,
                            in_flight=in_flight,
                            number=number + 1,
                            calls=len(latencies),
                            errors=errors,
                            seconds=round(wall, 3),
                            calls_per_s=round(len(latencies) / wall, 1),
                            p50_ms=round(percentile(latencies, 0.50) * 1e3, 3),
                            p90_ms=round(percentile(latencies, 0.90) * 1e3, 3),
                            p99_ms=round(percentile(latencies, 0.99) * 1e3, 3),
                        )
                    )
                    _say(args, str(rounds[-1]))
                    samples[name].extend(latencies)
                    calls_of[name] += len(latencies)
                    errors_of[name] += errors
                    wall_of[name] += wall
            row: dict[str, Any] = {"in_flight": in_flight}
            for name in targets:
                values = sorted(samples[name])
                row[name] = {
                    "calls": calls_of[name],
                    "errors": errors_of[name],
                    "calls_per_s": round(calls_of[name] / wall_of[name], 1),
                    "p50_ms": round(percentile(values, 0.50) * 1e3, 3),
                    "p90_ms": round(percentile(values, 0.90) * 1e3, 3),
                    "p99_ms": round(percentile(values, 0.99) * 1e3, 3),
                    "mean_ms": round(statistics.fmean(values) * 1e3, 3) if values else None,
                }
            direct_row, gateway_row = row["direct"], row["gateway"]
            row["ratio_gateway_over_direct"] = {
                key: round(gateway_row[key] / direct_row[key], 2) if direct_row[key] else None
                for key in ("calls_per_s", "p50_ms", "p90_ms", "p99_ms")
            }
            summary.append(row)
    finally:
        for channel in channels.values():
            await channel.close(None)
    return {"summary": summary, "rounds": [asdict(r) for r in rounds]}


def print_table(report: dict[str, Any]) -> None:
    setup = report["setup"]
    print(
        f"payload {setup['payload_bytes']} B, {setup['rounds']} rounds x "
        f"{setup['duration_s']:g} s per target, alternating direct/gateway; "
        f"{setup['cpus']} CPUs, Python {setup['python']}, grpcio {setup['grpcio']}"
    )
    header = f"{'in flight':>9} {'target':>8} {'calls/s':>9} {'p50 ms':>8} {'p90 ms':>8}"
    print(f"{header} {'p99 ms':>8} {'errors':>6}")
    for row in report["summary"]:
        for name in ("direct", "gateway"):
            cell = row[name]
            print(
                f"{row['in_flight']:>9} {name:>8} {cell['calls_per_s']:>9.1f} "
                f"{cell['p50_ms']:>8.2f} {cell['p90_ms']:>8.2f} {cell['p99_ms']:>8.2f} "
                f"{cell['errors']:>6}"
            )
        ratio = row["ratio_gateway_over_direct"]
        print(
            f"{row['in_flight']:>9} {'b/a':>8} {ratio['calls_per_s']:>9} "
            f"{ratio['p50_ms']:>8} {ratio['p90_ms']:>8} {ratio['p99_ms']:>8}"
        )


def _say(args: argparse.Namespace, text: str) -> None:
    if not args.json:
        print(text, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
