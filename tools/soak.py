"""Soak: a steady open-loop rate of calls through two gateways for a long time, watching
every process's memory and counting every failed call.

    python tools/soak.py                                  # 100 calls/s for 30 minutes
    python tools/soak.py --rate 50 --duration 30 --json   # what the test suite runs
    python tools/soak.py --duration 1800 --json > soak.json

It brings up, as real processes on loopback and with ``serai`` commands (the federation
of ``serai bench``, :func:`serai._benchfed.bring_up`): a development PKI with its OCSP
responder and time-stamping authority, the registry, the echo provider IS and two
gateways with everything on (signed headers, mutual TLS, OCSP, access rights, the SQLite
message log with synchronous=FULL, tree heads time-stamped every second).

Load: open loop. Call ``i`` is due at ``start + i / rate`` and starts then, whether or
not earlier calls have answered (a stalled gateway does not slow the offered load
down, it piles calls up); at most ``--max-in-flight`` calls are outstanding, and a
call that would exceed that is not sent and counted as the error ``client_backlog``.
Each call sends ``--payload`` random bytes to ``/bench.v1.Bench/Echo`` as
``UZ/GOV/MINJUST/property`` and must get the same bytes back. Latency is timed from the
call's due time (so a late start is not hidden). A failed call is counted by its
``x-road-error`` code when a gateway refused it, else by its gRPC status
(or ``wrong_body``, ``client_backlog``).

Memory: every ``--sample`` seconds, VmRSS from ``/proc/PID/status`` of each process
started (both gateways, registry, OCSP, TSA, echo provider) and of this client. The
first ``--warmup`` seconds of load are warm-up (caches, thread pools, the SQLite page
cache, the allocator's arenas fill): for each process the report gives RSS at the end
of warm-up (``start``), at the end, the maximum, the largest growth above ``start``
after warm-up, and the least-squares slope of RSS over time after warm-up and over the
second half of the run, in MiB/hour. Also CPU seconds of each process over the run.

Exit status: 0 when every call was answered with its body, every process kept running
and no gateway's RSS grew by more than ``--bound-mib`` after warm-up; 1 otherwise (the
report says why); 2 for nonsensical options. Every process started is stopped at the
end, also on an error, Ctrl-C, SIGTERM or SIGHUP (exit 130, 143, 129).

The default bound and what the gateways legitimately keep in memory (the replay
guard remembers each message id for its window, 660 s by default) are explained with
measured figures in docs/reliability.md, "Soak".
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import grpc

from serai._benchfed import BENCH_METHOD, CONSUMER, PROVIDER, bring_up
from serai._benchload import open_channel, percentile, process_cpu_s
from serai._demoprocs import Service, count_event, stop_services, termination_as_exit
from serai.errors import ERROR_METADATA_KEY, SeraiError

__all__ = [
    "DEFAULT_BOUND_MIB",
    "SoakSettings",
    "memory_figures",
    "parse_settings",
    "rss_kib",
    "run_soak",
    "slope_per_hour",
    "verdict",
]

#: Largest RSS growth of a gateway after warm-up that passes, by default (MiB). See
#: docs/reliability.md "Soak" for the measurement it comes from.
DEFAULT_BOUND_MIB: Final = 64.0
#: The processes whose growth is bounded: the two gateways. The others are reported.
BOUNDED_ROLES: Final = ("gateway-consumer", "gateway-provider")
MAX_RATE: Final = 2000.0
MAX_DURATION_S: Final = 24 * 3600.0
#: Above the gateways' default limit (4 MiB), so that refusals can be provoked.
MAX_PAYLOAD_BYTES: Final = 16 * 1024 * 1024
#: A call slower than this is an error (``DEADLINE_EXCEEDED``).
CALL_TIMEOUT_S: Final = 30.0
_KIB_PER_MIB: Final = 1024.0
_EXAMPLES: Final = 5  # failed calls kept per code, with their details


@dataclass(frozen=True, slots=True, kw_only=True)
class SoakSettings:
    """A validated soak run."""

    rate: float  # calls started per second
    duration_s: float  # of load, warm-up included
    warmup_s: float
    sample_s: float
    payload_bytes: int
    bound_mib: float
    max_in_flight: int
    workdir: Path | None  # keep every file here; None: a temporary folder, removed


def build_parser() -> argparse.ArgumentParser:
    """The command line (``--help`` shows the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="tools/soak.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--rate", default="100", metavar="CALLS_PER_S", help="calls started per second "
        f"(open loop; up to {MAX_RATE:g}; default %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--duration", default="1800", metavar="S",
        help="seconds of load, warm-up included (default %(default)s: 30 minutes)",
    )  # fmt: skip
    parser.add_argument(
        "--warmup", default=None, metavar="S",
        help="seconds of load before the memory baseline is taken "
        "(default: 10%% of the duration, at least 60 s, at most half the duration)",
    )  # fmt: skip
    parser.add_argument(
        "--sample", default=None, metavar="S",
        help="seconds between memory samples (default: 5, or duration/30 if shorter)",
    )  # fmt: skip
    parser.add_argument(
        "--payload", default="1024", metavar="BYTES", help="request body (default %(default)s)"
    )
    parser.add_argument(
        "--bound-mib", default=str(DEFAULT_BOUND_MIB), metavar="MIB",
        help="largest RSS growth of either gateway after warm-up that passes "
        "(default %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--max-in-flight", default="1000", metavar="N",
        help="outstanding calls at most; a call beyond is not sent and counts as an error "
        "(default %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--workdir", type=Path, metavar="DIR",
        help="keep every file and process log here (must not exist or be empty; default: "
        "a temporary folder, removed at the end)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    return parser


class OptionError(ValueError):
    """An option that makes no sense; the message names it."""


def parse_settings(args: argparse.Namespace) -> SoakSettings:
    """The settings of ``args``; :class:`OptionError` naming the option when one is wrong."""
    rate = _number("--rate", args.rate, low=0.1, high=MAX_RATE)
    duration = _number("--duration", args.duration, low=1.0, high=MAX_DURATION_S)
    if args.warmup is None:
        warmup = min(max(duration / 10, 60.0), duration / 2)
    else:
        warmup = _number("--warmup", args.warmup, low=0.0, high=duration)
        if warmup >= duration:
            raise OptionError(f"--warmup: must be shorter than --duration ({duration:g} s)")
    if args.sample is None:
        sample = min(5.0, duration / 30)
    else:
        sample = _number("--sample", args.sample, low=0.1, high=duration)
    payload = _number("--payload", args.payload, low=0, high=MAX_PAYLOAD_BYTES, whole=True)
    bound = _number("--bound-mib", args.bound_mib, low=0.0, high=1e6)
    in_flight = _number("--max-in-flight", args.max_in_flight, low=1, high=100_000, whole=True)
    workdir: Path | None = args.workdir
    if (
        workdir is not None
        and workdir.exists()
        and (not workdir.is_dir() or any(workdir.iterdir()))
    ):
        raise OptionError(f"--workdir {workdir}: must not exist or be an empty folder")
    return SoakSettings(
        rate=rate,
        duration_s=duration,
        warmup_s=warmup,
        sample_s=sample,
        payload_bytes=int(payload),
        bound_mib=bound,
        max_in_flight=int(in_flight),
        workdir=workdir,
    )


def _number(option: str, text: object, *, low: float, high: float, whole: bool = False) -> float:
    raw = str(text).strip()
    try:
        value = float(int(raw)) if whole else float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not low <= value <= high:
        kind = "a whole number" if whole else "a number"
        raise OptionError(
            f"{option}: expected {kind} from {_plain(low)} to {_plain(high)}, got {raw!r}"
        )
    return value


def _plain(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


# -- memory ------------------------------------------------------------------------------


def rss_kib(pid: int) -> int | None:
    """VmRSS of process ``pid`` in KiB, from ``/proc/PID/status``; None once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])  # "VmRSS:    123456 kB"
    except (OSError, ValueError, IndexError):
        return None
    return None  # a zombie has no VmRSS line


def slope_per_hour(points: Sequence[tuple[float, float]]) -> float | None:
    """The least-squares slope of ``(seconds, value)`` points, per hour; None for fewer
    than two distinct times."""
    if len(points) < 2:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread == 0:
        return None
    covariance = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return covariance / spread * 3600.0


def memory_figures(
    samples: Sequence[tuple[float, int | None]], *, warmup_s: float, duration_s: float
) -> dict[str, float | None]:
    """RSS figures in MiB of one process from ``(seconds since the load began, KiB)``
    samples (module docstring); the baseline is the first sample at or after warm-up."""
    known = [(t, kib / _KIB_PER_MIB) for t, kib in samples if kib is not None]
    after = [(t, mib) for t, mib in known if t >= warmup_s]
    if not after:
        return dict.fromkeys(
            ("before_load_mib", "start_mib", "end_mib", "max_mib", "max_growth_mib",
             "slope_mib_per_h", "slope_second_half_mib_per_h"),
        )  # fmt: skip
    start = after[0][1]
    second_half = [(t, mib) for t, mib in after if t >= duration_s / 2]
    return {
        "before_load_mib": _r(known[0][1]) if known[0][0] <= 0 else None,
        "start_mib": _r(start),
        "end_mib": _r(after[-1][1]),
        "max_mib": _r(max(mib for _, mib in after)),
        "max_growth_mib": _r(max(mib for _, mib in after) - start),
        "slope_mib_per_h": _r(slope_per_hour(after)),
        "slope_second_half_mib_per_h": _r(slope_per_hour(second_half)),
    }


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


# -- load --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Tally:
    """What the calls gave so far."""

    latencies_s: list[float] = field(default_factory=list)  # answered after warm-up
    answered: int = 0
    failures: Counter[str] = field(default_factory=Counter)  # code or status -> count
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # first few
    started: int = 0
    max_start_lag_s: float = 0.0  # how late a call started after its due time, at most
    in_flight: int = 0
    max_in_flight_seen: int = 0
    last_answer_s: float = 0.0  # since the load began


def _failure_code(exc: grpc.aio.AioRpcError) -> str:
    trailers: Iterable[Any] = exc.trailing_metadata() or ()
    for key, value in trailers:
        if key == ERROR_METADATA_KEY and isinstance(value, str):
            parts = value.split(":", 2)  # origin:code:message; the code is stable
            return parts[1] if len(parts) > 1 else value
    return exc.code().name


def _fail(tally: _Tally, code: str, due_s: float, exc: grpc.aio.AioRpcError | None) -> None:
    """Count a failed call; keep the first few of each code with what they said."""
    tally.failures[code] += 1
    examples = tally.examples.setdefault(code, [])
    if len(examples) < _EXAMPLES:
        example: dict[str, Any] = {"due_s": round(due_s, 3)}
        if exc is not None:
            example["status"] = exc.code().name
            example["details"] = (exc.details() or "")[:500]
            trailers: Iterable[Any] = exc.trailing_metadata() or ()
            example["trailers"] = [f"{key}: {value}"[:500] for key, value in trailers]
        examples.append(example)


async def _load(
    settings: SoakSettings,
    channel: grpc.aio.Channel,
    tally: _Tally,
    began: float,
    say: Callable[[str], None],
) -> None:
    call = channel.unary_unary(BENCH_METHOD, None, None)
    metadata = (("x-road-client", CONSUMER), ("x-road-service", PROVIDER))
    body = os.urandom(settings.payload_bytes)
    total = math.floor(settings.rate * settings.duration_s)
    running: set[asyncio.Task[None]] = set()

    async def one(due: float) -> None:
        tally.in_flight += 1
        tally.max_in_flight_seen = max(tally.max_in_flight_seen, tally.in_flight)
        try:
            answer = await call(body, metadata=metadata, timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            _fail(tally, _failure_code(exc), due - began, exc)
            return
        finally:
            tally.in_flight -= 1
        now = time.perf_counter()
        if answer != body:
            _fail(tally, "wrong_body", due - began, None)
            return
        tally.answered += 1
        tally.last_answer_s = now - began
        if due - began >= settings.warmup_s:
            tally.latencies_s.append(now - due)

    for index in range(total):
        due = began + index / settings.rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tally.max_start_lag_s = max(tally.max_start_lag_s, time.perf_counter() - due)
        if tally.in_flight >= settings.max_in_flight:
            _fail(tally, "client_backlog", due - began, None)
            continue
        tally.started += 1
        task = asyncio.create_task(one(due))
        running.add(task)
        task.add_done_callback(running.discard)
    if running:
        say(f"all {total} calls started; waiting for {len(running)} answers")
        await asyncio.gather(*running)


async def _sample(
    settings: SoakSettings,
    *,
    pids: dict[str, int],
    services: list[Service],
    tally: _Tally,
    began: float,
    timeline: list[dict[str, Any]],
    say: Callable[[str], None],
) -> None:
    """Sample RSS at 0, every ``sample_s``, at the end of warm-up and at the end of the
    load; raise :class:`SeraiError` if a process has exited."""
    ticks = {0.0, settings.warmup_s, settings.duration_s}
    ticks.update(
        k * settings.sample_s for k in range(1, math.ceil(settings.duration_s / settings.sample_s))
    )
    next_say = 0.0
    told: set[str] = set()
    for tick in sorted(t for t in ticks if t <= settings.duration_s):
        delay = began + tick - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        rss = {role: rss_kib(pid) for role, pid in pids.items()}
        timeline.append(
            {
                "t_s": round(tick, 3),  # when due; "at_s": when taken (a busy machine lags)
                "at_s": round(time.perf_counter() - began, 3),
                "answered": tally.answered,
                "failed": sum(tally.failures.values()),
                "in_flight": tally.in_flight,
                "rss_kib": rss,
            }
        )
        for service in services:
            if not service.running():
                tail = service.log.read_text(errors="replace").strip()[-800:]
                raise SeraiError(
                    f"{service.name} exited with {service.process.returncode} during the "
                    f"soak; {service.log}:\n{tail}"
                )
        for code, examples in list(tally.examples.items()):
            if code not in told:
                told.add(code)
                say(f"first failed call with {code}: {json.dumps(examples[0])}")
        if tick >= next_say:
            gateways = ", ".join(
                f"{role} {_mib(rss.get(role))} MiB" for role in BOUNDED_ROLES if role in rss
            )
            say(
                f"{tick:.0f} s: {tally.answered} answered, {sum(tally.failures.values())} "
                f"failed {dict(tally.failures) or ''}, {tally.in_flight} in flight; "
                f"RSS {gateways}"
            )
            next_say = tick + max(60.0, settings.sample_s)


def _mib(kib: int | None) -> str:
    return "?" if kib is None else f"{kib / _KIB_PER_MIB:.1f}"


async def _soak(
    settings: SoakSettings, pids: dict[str, int], services: list[Service], gateways: str,
    say: Callable[[str], None],
) -> tuple[_Tally, list[dict[str, Any]], float, dict[str, float | None]]:  # fmt: skip
    channel = open_channel(gateways)
    tally = _Tally()
    timeline: list[dict[str, Any]] = []
    try:
        # Prove the path before the clock starts (and connect).
        probe = channel.unary_unary(BENCH_METHOD, None, None)
        headers = (("x-road-client", CONSUMER), ("x-road-service", PROVIDER))
        try:
            answer = await probe(b"soak", metadata=headers, timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            raise SeraiError(f"the first call failed: {_failure_code(exc)}") from exc
        if answer != b"soak":
            raise SeraiError("the first call was answered with another body")
        say(
            f"load: {settings.rate:g} calls/s for {settings.duration_s:g} s "
            f"(warm-up {settings.warmup_s:g} s), RSS every {settings.sample_s:g} s"
        )
        cpu_before = {role: process_cpu_s(pid) for role, pid in pids.items()}
        began = time.perf_counter()
        load = asyncio.create_task(_load(settings, channel, tally, began, say))
        sampler = asyncio.create_task(
            _sample(
                settings,
                pids=pids,
                services=services,
                tally=tally,
                began=began,
                timeline=timeline,
                say=say,
            )
        )
        try:
            done, _ = await asyncio.wait({load, sampler}, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # a process that exited, or a bug: raise it
            await asyncio.gather(load, sampler)
        finally:
            for task in (load, sampler):
                task.cancel()
            await asyncio.gather(load, sampler, return_exceptions=True)
        wall = max(time.perf_counter() - began, 1e-9)
        cpu = {
            role: _cpu_delta(cpu_before.get(role), process_cpu_s(pid)) for role, pid in pids.items()
        }
    finally:
        await channel.close(None)
    return tally, timeline, wall, cpu


def _cpu_delta(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else round(after - before, 2)


def run_soak(settings: SoakSettings, *, say: Callable[[str], None]) -> dict[str, Any]:
    """Bring everything up, soak, stop everything; the report (``--json``'s document)."""
    load_at_start = round(os.getloadavg()[0], 2)
    started_at = dt.datetime.now(dt.UTC)
    if settings.workdir is not None:
        settings.workdir.mkdir(parents=True, exist_ok=True)
        workdir = settings.workdir.resolve()
    else:
        workdir = Path(tempfile.mkdtemp(prefix="serai-soak-"))
    services: list[Service] = []
    try:
        federation = bring_up(
            workdir, services, nginx=None, max_in_flight=settings.max_in_flight, say=say
        )
        pids = dict(federation.pids)
        pids["client"] = os.getpid()
        tally, timeline, wall, cpu = asyncio.run(
            _soak(settings, pids, services, federation.gateways, say)
        )
        stamped = {
            s.name: count_event(s, "log_tree_head_timestamped")
            for s in services
            if s.name.startswith("gateway-")
        }
    finally:
        stop_services(services, say)
        if settings.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return _report(
        settings,
        tally=tally,
        timeline=timeline,
        wall=wall,
        cpu=cpu,
        pids=pids,
        stamped=stamped,
        started_at=started_at,
        load_at_start=load_at_start,
        log_settings=federation.log_settings,
        workdir=workdir if settings.workdir is not None else None,
    )


def _report(
    settings: SoakSettings,
    *,
    tally: _Tally,
    timeline: list[dict[str, Any]],
    wall: float,
    cpu: dict[str, float | None],
    pids: dict[str, int],
    stamped: dict[str, int],
    started_at: dt.datetime,
    load_at_start: float,
    log_settings: dict[str, dict[str, object]],
    workdir: Path | None,
) -> dict[str, Any]:
    latencies = sorted(tally.latencies_s)
    memory = {
        role: memory_figures(
            [(s["t_s"], s["rss_kib"].get(role)) for s in timeline],
            warmup_s=settings.warmup_s,
            duration_s=settings.duration_s,
        )
        for role in pids
    }
    # The rate over the measured part: calls answered between the samples at warm-up
    # end and at the end of the load, over the time between them.
    marks = {s["t_s"]: (s["at_s"], s["answered"]) for s in timeline}
    warm, end = marks.get(round(settings.warmup_s, 3)), marks.get(round(settings.duration_s, 3))
    measured_rate = (
        (end[1] - warm[1]) / (end[0] - warm[0])
        if warm is not None and end is not None and end[0] > warm[0]
        else None
    )
    failed = sum(tally.failures.values())
    problems = verdict(tally.failures, memory, bound_mib=settings.bound_mib)
    per_call = {
        role: (round(seconds * 1000 / tally.answered, 3) if seconds and tally.answered else None)
        for role, seconds in cpu.items()
    }
    return {
        "setup": {
            "started_at": started_at.isoformat(timespec="seconds"),
            "rate": settings.rate,
            "duration_s": settings.duration_s,
            "warmup_s": settings.warmup_s,
            "sample_s": settings.sample_s,
            "payload_bytes": settings.payload_bytes,
            "bound_mib": settings.bound_mib,
            "max_in_flight": settings.max_in_flight,
            "cpus": os.cpu_count(),
            "load_average_at_start": load_at_start,
            "load_average_at_end": round(os.getloadavg()[0], 2),
            "machine": platform.machine(),
            "python": platform.python_version(),
            "grpcio": grpc.__version__,
            "message_logs": log_settings,
            "workdir": str(workdir) if workdir is not None else None,
        },
        "processes": pids,
        "calls": {
            "due": math.floor(settings.rate * settings.duration_s),
            "started": tally.started,
            "answered": tally.answered,
            "failed": failed,
            "failures": dict(tally.failures),
            "failure_examples": tally.examples,
            "wall_s": round(wall, 3),
            "achieved_rate": round(tally.answered / wall, 2),
            "measured_rate": None if measured_rate is None else round(measured_rate, 2),
            "p50_ms": _ms(percentile(latencies, 0.50)),
            "p90_ms": _ms(percentile(latencies, 0.90)),
            "p99_ms": _ms(percentile(latencies, 0.99)),
            "max_ms": _ms(latencies[-1] if latencies else None),
            "max_start_lag_ms": round(tally.max_start_lag_s * 1000, 2),
            "max_in_flight": tally.max_in_flight_seen,
        },
        "memory": memory,
        "cpu_s": cpu,
        "cpu_ms_per_call": per_call,
        "timestamped_tree_heads": stamped,
        "timeline": timeline,
        "problems": problems,
        "passed": not problems,
    }


def verdict(
    failures: Mapping[str, int],
    memory: Mapping[str, Mapping[str, float | None]],
    *,
    bound_mib: float,
) -> list[str]:
    """Why a run fails (empty: it passed): any failed call, and any gateway without an
    RSS sample after warm-up or whose RSS grew by more than ``bound_mib`` after it."""
    problems = []
    failed = sum(failures.values())
    if failed:
        problems.append(f"{failed} calls failed: {dict(failures)}")
    for role in BOUNDED_ROLES:
        growth = memory.get(role, {}).get("max_growth_mib")
        if growth is None:
            problems.append(f"{role}: no RSS sample after warm-up")
        elif growth > bound_mib:
            problems.append(
                f"{role}: RSS grew by {growth:.2f} MiB after warm-up (bound {bound_mib:g} MiB)"
            )
    return problems


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def render_text(report: dict[str, Any]) -> str:
    """The report as a few lines and a table."""
    setup, calls = report["setup"], report["calls"]
    lines = [
        f"soak {setup['started_at']}: {setup['rate']:g} calls/s offered for "
        f"{setup['duration_s']:g} s (warm-up {setup['warmup_s']:g} s), payload "
        f"{setup['payload_bytes']} B, {setup['cpus']} CPUs, load average "
        f"{setup['load_average_at_start']} -> {setup['load_average_at_end']}",
        f"calls: {calls['answered']} answered of {calls['due']} due, {calls['failed']} failed "
        f"{calls['failures'] or ''}; {calls['achieved_rate']} calls/s overall, "
        f"{calls['measured_rate']} after warm-up; p50 {calls['p50_ms']} ms, p90 "
        f"{calls['p90_ms']} ms, p99 {calls['p99_ms']} ms, max {calls['max_ms']} ms; "
        f"latest start {calls['max_start_lag_ms']} ms; at most {calls['max_in_flight']} in "
        "flight",
        f"tree heads time-stamped: {report['timestamped_tree_heads']}",
        "",
        "RSS MiB           before  start    end    max  growth  MiB/h  MiB/h(2nd half)  "
        "CPU ms/call",
    ]
    for role, m in report["memory"].items():
        cells = [
            m["before_load_mib"], m["start_mib"], m["end_mib"], m["max_mib"],
            m["max_growth_mib"], m["slope_mib_per_h"], m["slope_second_half_mib_per_h"],
            report["cpu_ms_per_call"].get(role),
        ]  # fmt: skip
        widths = (6, 6, 6, 6, 7, 6, 16, 12)
        lines.append(
            f"{role:<16}"
            + "".join(
                f" {'-' if c is None else c:>{w}}" for c, w in zip(cells, widths, strict=True)
            )
        )
    lines.append("")
    lines.append(
        "PASSED"
        if report["passed"]
        else "FAILED: " + "; ".join(report["problems"])
    )  # fmt: skip
    return "\n".join(lines)


def _say(text: str) -> None:
    stamp = dt.datetime.now(dt.UTC).strftime("%H:%M:%S")
    print(f"soak {stamp}: {text}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the soak; the exit status (module docstring)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = parse_settings(args)
    except OptionError as exc:
        parser.error(str(exc))  # exits 2
    try:
        with termination_as_exit():
            report = run_soak(settings, say=_say)
    except KeyboardInterrupt:
        _say("interrupted")
        return 130
    except SeraiError as exc:
        _say(f"error: {exc}")
        return 1
    print(json.dumps(report, indent=2) if args.json else render_text(report), flush=True)
    if not report["passed"]:
        _say("FAILED: " + "; ".join(report["problems"]))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
