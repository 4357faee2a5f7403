"""The load of ``serai bench`` and what it measures.

The client is the bench process itself: one ``grpc.aio`` channel per target and ``N``
coroutines, each issuing one call after another, so ``N`` calls are in flight. Every
answer is checked to echo the body. A call that fails is never timed: it is counted
as a *refusal* when the gateway refused it (the ``x-road-error`` trailing metadata
names the code) and as an *error* otherwise (by gRPC status, or ``wrong_body``).

CPU time is read from ``/proc/PID/stat`` (user + system time of every thread of the
process) before and after each round, for every process the bench started and for
itself; the machine's busy time comes from ``/proc/stat``, so what other programs
took from the cores during a round is reported too.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import grpc

from serai.errors import ERROR_METADATA_KEY

__all__ = [
    "CpuSample",
    "Outcomes",
    "call_once",
    "cpu_sample",
    "drive",
    "open_channel",
    "percentile",
    "process_cpu_s",
]

#: A call slower than this is an error (``DEADLINE_EXCEEDED``), not a latency.
CALL_TIMEOUT_S: Final = 30.0
_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
_MAX_MESSAGE_BYTES: Final = 64 * 1024 * 1024


@dataclass(slots=True)
class Outcomes:
    """What one round of calls against one target gave."""

    latencies_s: list[float] = field(default_factory=list)  # answered and checked calls
    refusals: Counter[str] = field(default_factory=Counter)  # x-road-error code -> count
    errors: Counter[str] = field(default_factory=Counter)  # gRPC status or wrong_body -> count
    wall_s: float = 0.0


def open_channel(address: str) -> grpc.aio.Channel:
    """A plaintext channel to ``address`` that takes messages of any benchmark size."""
    return grpc.aio.insecure_channel(
        address,
        options=(
            ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
        ),
    )


async def drive(
    channel: grpc.aio.Channel,
    *,
    method: str,
    metadata: tuple[tuple[str, str], ...],
    body: bytes,
    in_flight: int,
    seconds: float,
) -> Outcomes:
    """``in_flight`` callers, back to back, for ``seconds``; no call starts after that."""
    call = channel.unary_unary(method, None, None)
    outcomes = Outcomes()
    stop_at = time.perf_counter() + seconds

    async def caller() -> None:
        while time.perf_counter() < stop_at:
            await _one_call(call, metadata, body, outcomes)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(in_flight)))
    outcomes.wall_s = time.perf_counter() - started
    return outcomes


async def call_once(
    channel: grpc.aio.Channel, *, method: str, metadata: tuple[tuple[str, str], ...], body: bytes
) -> Outcomes:
    """One call, counted like the calls of :func:`drive` (to prove a path works)."""
    outcomes = Outcomes()
    started = time.perf_counter()
    await _one_call(channel.unary_unary(method, None, None), metadata, body, outcomes)
    outcomes.wall_s = time.perf_counter() - started
    return outcomes


async def _one_call(
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes],
    metadata: tuple[tuple[str, str], ...],
    body: bytes,
    outcomes: Outcomes,
) -> None:
    began = time.perf_counter()
    try:
        answer = await call(body, metadata=metadata, timeout=CALL_TIMEOUT_S)
    except grpc.aio.AioRpcError as exc:
        _count_failure(exc, outcomes)
        return
    elapsed = time.perf_counter() - began
    if answer == body:
        outcomes.latencies_s.append(elapsed)
    else:
        outcomes.errors["wrong_body"] += 1


def _count_failure(exc: grpc.aio.AioRpcError, outcomes: Outcomes) -> None:
    trailers: Iterable[Any] = exc.trailing_metadata() or ()
    for key, value in trailers:
        if key == ERROR_METADATA_KEY and isinstance(value, str):
            # origin:code:message; the code is stable, the message is not.
            parts = value.split(":", 2)
            outcomes.refusals[parts[1] if len(parts) > 1 else value] += 1
            return
    outcomes.errors[exc.code().name] += 1


def percentile(sorted_values: list[float], q: float) -> float | None:
    """The nearest-rank ``q`` quantile (0 < q <= 1) of ascending values; None if empty."""
    if not sorted_values:
        return None
    # round() first: 0.9 * 10 is 9.000000000000002 in floating point, whose ceiling is 10.
    rank = math.ceil(round(q * len(sorted_values), 9))
    return sorted_values[min(max(rank, 1), len(sorted_values)) - 1]


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (all its threads); None once
    it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its end.
    fields = text[text.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime, stime


@dataclass(frozen=True, slots=True)
class CpuSample:
    """CPU seconds of each watched process, of this process, and of the whole machine."""

    processes: Mapping[str, float | None]
    machine_busy_s: float
    machine_total_s: float


def cpu_sample(pids: Mapping[str, int]) -> CpuSample:
    """Read the CPU counters now (``pids``: role -> pid; the client is this process)."""
    processes = {role: process_cpu_s(pid) for role, pid in pids.items()}
    processes["client"] = process_cpu_s(os.getpid())
    with open("/proc/stat", "rb") as stat:
        first = stat.readline().split()[1:]
    ticks = [int(value) for value in first[:8]]  # user nice system idle iowait irq softirq steal
    idle = ticks[3] + ticks[4]
    total = sum(ticks)
    return CpuSample(
        processes=processes,
        machine_busy_s=(total - idle) / _CLOCK_TICKS,
        machine_total_s=total / _CLOCK_TICKS,
    )
