"""The figures of ``serai bench``: one record per round, a summary per in-flight count
(rounds of a target pooled), the ratios between targets, and the text table.

Latency percentiles are nearest-rank over every answered call of the pooled rounds;
calls/s is answered calls over the rounds' wall time. Refused and failed calls are
never in either: they are counted per round, next to the figures they would distort.
CPU milliseconds per call are a process's CPU time during the rounds over the calls
answered in them.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from serai._benchload import CpuSample, Outcomes, percentile

__all__ = ["TARGET_PROCESSES", "RoundFigures", "render_text", "round_figures", "summarize"]

#: The processes whose CPU time each target's calls cost, besides the client's (the
#: bench itself). What every other started process spent is reported as ``others``.
TARGET_PROCESSES: Final[Mapping[str, tuple[str, ...]]] = {
    "direct": ("echo",),
    "gateways": ("gateway-consumer", "gateway-provider", "echo"),
    "nginx": ("nginx-client", "nginx-server", "echo"),
}
_QUANTILES: Final = (("p50_ms", 0.50), ("p90_ms", 0.90), ("p99_ms", 0.99))


@dataclass(frozen=True, slots=True)
class RoundFigures:
    """One round of one target: its JSON record, and its latencies for the summary."""

    record: dict[str, Any]
    latencies_s: list[float]
    cpu_s: dict[str, float]


def round_figures(
    *,
    target: str,
    in_flight: int,
    number: int,
    outcomes: Outcomes,
    before: CpuSample,
    after: CpuSample,
) -> RoundFigures:
    """The figures of one round from its outcomes and the CPU counters around it."""
    latencies = sorted(outcomes.latencies_s)
    calls = len(latencies)
    cpu_s = {
        role: round(end - start, 3)
        for role, end in after.processes.items()
        if end is not None and (start := before.processes.get(role)) is not None
    }
    ours = sum(cpu_s.values())
    busy = after.machine_busy_s - before.machine_busy_s
    total = after.machine_total_s - before.machine_total_s
    record: dict[str, Any] = {
        "in_flight": in_flight,
        "target": target,
        "round": number,
        "calls": calls,
        "refusals": dict(sorted(outcomes.refusals.items())),
        "errors": dict(sorted(outcomes.errors.items())),
        "seconds": round(outcomes.wall_s, 3),
        "calls_per_s": round(calls / outcomes.wall_s, 1) if outcomes.wall_s else 0.0,
        **{key: _ms(percentile(latencies, q)) for key, q in _QUANTILES},
        "cpu_ms_per_call": _per_call(target, cpu_s, calls),
        "machine_busy": round(busy / total, 3) if total > 0 else None,
        "foreign_cpu_s": round(max(0.0, busy - ours), 2),
    }
    return RoundFigures(record=record, latencies_s=latencies, cpu_s=cpu_s)


def summarize(rounds: Sequence[RoundFigures], targets: Sequence[str]) -> list[dict[str, Any]]:
    """One row per in-flight count: each target's pooled figures, and the ratios."""
    rows = []
    for in_flight in dict.fromkeys(r.record["in_flight"] for r in rounds):
        row: dict[str, Any] = {"in_flight": in_flight}
        for target in targets:
            mine = [
                r
                for r in rounds
                if r.record["in_flight"] == in_flight and r.record["target"] == target
            ]
            row[target] = _pooled(target, mine)
        row["ratios"] = _ratios(row, targets, in_flight, rounds)
        rows.append(row)
    return rows


def _pooled(target: str, rounds: Sequence[RoundFigures]) -> dict[str, Any]:
    latencies = sorted(v for r in rounds for v in r.latencies_s)
    wall = sum(r.record["seconds"] for r in rounds)
    refusals: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    cpu: Counter[str] = Counter()
    for r in rounds:
        refusals.update(r.record["refusals"])
        errors.update(r.record["errors"])
        cpu.update(r.cpu_s)
    per_round = [r.record["calls_per_s"] for r in rounds]
    return {
        "rounds": len(rounds),
        "calls": len(latencies),
        "refusals": dict(sorted(refusals.items())),
        "errors": dict(sorted(errors.items())),
        "calls_per_s": round(len(latencies) / wall, 1) if wall else 0.0,
        "calls_per_s_median_round": statistics.median(per_round) if per_round else None,
        **{key: _ms(percentile(latencies, q)) for key, q in _QUANTILES},
        "cpu_ms_per_call": _per_call(target, dict(cpu), len(latencies)),
    }


def _ratios(
    row: Mapping[str, Any], targets: Sequence[str], in_flight: int, rounds: Sequence[RoundFigures]
) -> dict[str, Any]:
    ratios: dict[str, Any] = {}
    pairs = [("gateways", "direct"), ("gateways", "nginx"), ("nginx", "direct")]
    for top, bottom in pairs:
        if top not in targets or bottom not in targets:
            continue
        name = f"{top}_over_{bottom}"
        ratios[name] = _ratio(row[top]["calls_per_s"], row[bottom]["calls_per_s"])
        # Rounds alternate, so the i-th round of each target ran side by side in time.
        tops = _rates(rounds, in_flight, top)
        bottoms = _rates(rounds, in_flight, bottom)
        ratios[f"{name}_per_round"] = [_ratio(a, b) for a, b in zip(tops, bottoms, strict=True)]
    for target in targets:
        if target == "direct" or "direct" not in targets:
            continue
        for key in ("p50_ms", "p99_ms"):
            mine, direct = row[target][key], row["direct"][key]
            added = None if mine is None or direct is None else round(mine - direct, 3)
            ratios[f"{target}_added_{key}"] = added
    return ratios


def _rates(rounds: Sequence[RoundFigures], in_flight: int, target: str) -> list[float]:
    return [
        r.record["calls_per_s"]
        for r in rounds
        if r.record["in_flight"] == in_flight and r.record["target"] == target
    ]


def _ratio(top: float, bottom: float) -> float | None:
    return round(top / bottom, 3) if bottom else None


def _per_call(target: str, cpu_s: Mapping[str, float], calls: int) -> dict[str, float | None]:
    charged = (*TARGET_PROCESSES[target], "client")
    figures: dict[str, float | None] = {
        role: _cpu_ms(cpu_s[role], calls) if role in cpu_s else None for role in charged
    }
    figures["others"] = _cpu_ms(
        sum(seconds for role, seconds in cpu_s.items() if role not in charged), calls
    )
    return figures


def _cpu_ms(seconds: float, calls: int) -> float | None:
    return round(seconds * 1e3 / calls, 3) if calls else None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e3, 3)


def render_text(report: Mapping[str, Any]) -> str:
    """The report as a table for people (``--json`` prints ``report`` itself)."""
    setup = report["setup"]
    targets: list[str] = setup["targets"]
    lines = [
        f"serai bench: {setup['payload_bytes']} B per call, {setup['rounds']} rounds of "
        f"{setup['duration_s']:g} s per target after {setup['warmup_s']:g} s of warm-up, "
        f"alternating {', '.join(targets)}",
        f"machine: {setup['cpus']} CPUs, load {setup['load_average_at_start']} at start; "
        f"Python {setup['python']}, grpcio {setup['grpcio']}; message logs "
        + ", ".join(
            f"{role} {s['kind']} synchronous={s['synchronous']}"
            for role, s in setup["message_logs"].items()
        ),
        "",
        f"{'in flight':>9}  {'target':<9}{'calls/s':>9}{'p50 ms':>9}{'p90 ms':>9}"
        f"{'p99 ms':>9}{'refused':>9}{'errors':>8}  CPU ms per call",
    ]
    for row in report["summary"]:
        for target in targets:
            cell = row[target]
            lines.append(
                f"{row['in_flight']:>9}  {target:<9}{cell['calls_per_s']:>9.1f}"
                f"{_cell(cell['p50_ms'])}{_cell(cell['p90_ms'])}{_cell(cell['p99_ms'])}"
                f"{sum(cell['refusals'].values()):>9}{sum(cell['errors'].values()):>8}  "
                + _cpu_text(cell["cpu_ms_per_call"])
            )
        lines.append(f"{'':>11}" + _ratios_text(row["ratios"]))
    lines += ["", "rounds (in order):"]
    for record in report["rounds"]:
        failed = {**record["refusals"], **record["errors"]}
        lines.append(
            f"  {record['in_flight']:>4} in flight  {record['target']:<9} "
            f"#{record['round']:<3}{record['calls_per_s']:>9.1f}/s"
            f"  p50 {_short(record['p50_ms'])}  p99 {_short(record['p99_ms'])} ms"
            f"  busy {record['machine_busy']:.0%}, other programs {record['foreign_cpu_s']} CPU s"
            + (f"  FAILED {failed}" if failed else "")
        )
    stamped = report["timestamped_tree_heads"]
    lines += [
        "",
        "time-stamped tree heads during the run: "
        + ", ".join(f"{role} {count}" for role, count in stamped.items()),
    ]
    return "\n".join(lines)


def _ratios_text(ratios: Mapping[str, Any]) -> str:
    parts = [
        f"{name.replace('_over_', '/')} {value}"
        for name, value in ratios.items()
        if "_over_" in name and not name.endswith("_per_round")
    ]
    parts += [
        f"{name.replace('_added_', ' adds ').replace('_ms', '')} {value} ms"
        for name, value in ratios.items()
        if "_added_" in name
    ]
    return "; ".join(parts)


def _cpu_text(figures: Mapping[str, float | None]) -> str:
    return ", ".join(f"{role} {_short(value)}" for role, value in figures.items())


def _cell(value: float | None) -> str:
    return f"{'-':>9}" if value is None else f"{value:>9.2f}"


def _short(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
