"""The demo's reading of the three gateways' message logs through ``serai log``:
``show --json`` for the trace of each step, ``verify`` of each live log once every
record is under a time-stamped tree head, and ``prove`` of one record."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serai._demofederation import Federation, GatewayProcess
from serai._demoprocs import must, run_serai_parallel
from serai._demoreport import Report

__all__ = ["LogIndex", "LogReader", "verify_logs"]


@dataclass(frozen=True)
class LogIndex:
    """One record of a gateway's message log, as ``serai log show --json`` lists it."""

    gateway: str
    index: int
    kind: str
    message_id: str
    client: str
    service: str
    method: str
    outcome: str
    appended_at: str


class LogReader:
    """Reads the records each gateway appended since the last read."""

    def __init__(self, gateways: Sequence[GatewayProcess]) -> None:
        self._gateways = list(gateways)
        self.next_index = {gw.agency.gateway_id: 0 for gw in gateways}

    def read_new(self) -> list[LogIndex]:
        commands: list[list[str | Path]] = [
            ["log", "show", "--config", gw.config, "--json", "--limit", "1000",
             "--start", str(self.next_index[gw.agency.gateway_id])]
            for gw in self._gateways
        ]  # fmt: skip
        found: list[LogIndex] = []
        for gw, result in zip(self._gateways, run_serai_parallel(commands), strict=True):
            gateway = gw.agency.gateway_id
            for line in must(result).splitlines():
                row = json.loads(line)
                found.append(
                    LogIndex(
                        gateway=gateway,
                        index=int(row["index"]),
                        kind=str(row["kind"]),
                        message_id=str(row["message_id"]),
                        client=str(row["client"] or ""),
                        service=str(row["service"] or ""),
                        method=str(row["method"] or ""),
                        outcome=str(row["outcome"]),
                        appended_at=str(row["appended_at"]),
                    )
                )
                self.next_index[gateway] = max(self.next_index[gateway], int(row["index"]) + 1)
        return found


def verify_logs(
    federation: Federation, reader: LogReader, report: Report, *, prove: LogIndex | None
) -> None:
    """Wait until each log's records are all under a time-stamped tree head, then run
    ``serai log verify --config`` on each and, beside them, ``serai log prove`` of the
    record ``prove`` (in the Ministry of Justice's log); print their results."""
    gateways = list(federation.gateways.values())
    for gw in gateways:
        assert gw.service is not None  # the gateways run
        size = reader.next_index[gw.agency.gateway_id]
        gw.service.wait_for("log_tree_head_timestamped", where=_covers(size))
    commands: list[list[str | Path]] = [["log", "verify", "--config", gw.config] for gw in gateways]
    minjust = federation.gateways["minjust"]
    if prove is not None:
        commands.append(["log", "prove", str(prove.index), "--config", minjust.config, "--json"])
    results = run_serai_parallel(commands)
    for gw, result in zip(gateways, results, strict=False):
        lines = (result.stdout.strip() or result.stderr.strip() or "no output").splitlines()
        report.check(
            result.returncode == 0 and lines[-1].startswith("OK:"),
            f"serai log verify --config gateways/{gw.agency.key}/gateway.toml: {lines[-1]}",
        )
        for failure in lines[:-1]:
            report.line(failure)
    if prove is not None:
        _proved(minjust, prove, results[-1], report)


def _covers(size: int) -> Callable[[dict[str, Any]], bool]:
    """Whether a tree-head event covers the first ``size`` records."""
    return lambda event: int(event["tree_size"]) >= size


def _proved(
    gateway: GatewayProcess,
    record: LogIndex,
    result: subprocess.CompletedProcess[str],
    report: Report,
) -> None:
    """Print the outcome of ``serai log prove`` of ``record``: its inclusion proof
    against the latest time-stamped tree head, checked."""
    if result.returncode not in (0, 1):
        must(result)
    proof = json.loads(result.stdout)
    report.check(
        bool(proof["verified"]),
        f"serai log prove {record.index} ({gateway.agency.gateway_id}, {record.kind} of "
        f"{record.message_id}): {len(proof['proof'])} hashes to the root of tree size "
        f"{proof['tree_size']}, time-stamped {proof['timestamp_time']}; "
        + ("verified" if proof["verified"] else f"FAILED: {proof.get('failures')}"),
    )
