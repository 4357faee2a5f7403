"""Message-log benchmark: durable appends/s through group commit, and append latency at a
paced rate, on SQLite (WAL, synchronous=FULL by default) and PostgreSQL.

    python tools/bench_msglog.py                       # both databases, 3 runs each
    python tools/bench_msglog.py --backend sqlite --synchronous NORMAL
    python tools/bench_msglog.py --postgres postgresql://postgres@127.0.0.1:5432/postgres

Throughput: ``--concurrency`` appenders each append in a loop for ``--duration`` seconds;
every append counts only once it returned, i.e. once its batch committed durably.
Latency: appends started open-loop at ``--rate`` per second for ``--duration`` seconds,
each timed from its scheduled start (so a stall is not hidden by the pacing).
Records are ~2 KiB request records (signed header, two-certificate chain, OCSP response,
body), 2,000 distinct ones built before the clock starts. Each run uses a fresh log (a new
SQLite file; a new PostgreSQL database, dropped after). Prints the median of ``--runs``;
``--json`` prints one JSON object instead.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import hashlib
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.commit import LogRecord, RecordKind, canonical_bytes
from gateway.headers import request_header_for
from gateway.messagelog import MessageLog, MessageLogOptions, Synchronous
from serai.identifiers import GatewayId, ServiceId, SubsystemId

LOG_ID = "UZ/GOV/CADASTRE/gw:bench"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


def _records(count: int) -> list[LogRecord]:
    client = SubsystemId.parse("UZ/GOV/MINJUST/property")
    service = ServiceId.parse("UZ/GOV/CADASTRE/registry/cadastre.v1.Cadastre/GetParcel")
    chain = (secrets.token_bytes(620), secrets.token_bytes(560))
    ocsp = secrets.token_bytes(310)
    out = []
    for n in range(count):
        body = secrets.token_bytes(420)
        message_id = f"bench-{n}-{secrets.token_hex(8)}"
        header = request_header_for(
            message_id=message_id,
            client=client,
            service=service,
            body=body,
            created_at=dt.datetime.now(dt.UTC),
        )
        jws = b".".join(
            base64.urlsafe_b64encode(part).rstrip(b"=")
            for part in (b'{"alg":"ES256","typ":"serai-request+jwt"}', header.encode(), b"s" * 64)
        )
        out.append(
            LogRecord(
                kind=RecordKind.REQUEST_RECEIVED,
                message_id=message_id,
                header_jws=jws,
                certificate_chain=chain,
                ocsp_response=ocsp,
                body=body,
                body_sha256=hashlib.sha256(body).digest(),
                peer_gateway=GatewayId.parse("UZ/GOV/MINJUST/gw:main"),
            )
        )
    return out


async def _throughput(
    log: MessageLog, records: list[LogRecord], concurrency: int, seconds: float
) -> float:
    deadline = time.perf_counter() + seconds

    async def appender(offset: int) -> int:
        done = 0
        while time.perf_counter() < deadline:
            await log.append(records[(offset + done * concurrency) % len(records)])
            done += 1
        return done

    before = log.size
    start = time.perf_counter()
    counts = await asyncio.gather(*(appender(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - start
    if log.size - before != sum(counts):
        raise SystemExit(f"{sum(counts)} appends acknowledged, {log.size - before} logged")
    return sum(counts) / elapsed


async def _latency(
    log: MessageLog, records: list[LogRecord], rate: float, seconds: float
) -> tuple[float, float, float]:
    latencies: list[float] = []

    async def one(record: LogRecord, scheduled: float) -> None:
        await log.append(record)
        latencies.append(time.perf_counter() - scheduled)

    tasks = []
    start = time.perf_counter()
    for n in range(int(rate * seconds)):
        scheduled = start + n / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(records[n % len(records)], scheduled)))
    await asyncio.gather(*tasks)
    cuts = statistics.quantiles(latencies, n=100)
    return cuts[49] * 1000, cuts[98] * 1000, max(latencies) * 1000


@asynccontextmanager
async def _fresh_sqlite() -> AsyncIterator[str]:
    with tempfile.TemporaryDirectory(prefix="bench-msglog-") as tmp:
        yield str(Path(tmp) / "messages.db")


@asynccontextmanager
async def _fresh_postgres(admin_url: str) -> AsyncIterator[str]:
    name = f"serai_bench_{secrets.token_hex(6)}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


async def _bench(
    fresh: Callable[[], AbstractAsyncContextManager[str]],
    options: MessageLogOptions,
    args: argparse.Namespace,
    records: list[LogRecord],
) -> dict[str, float]:
    runs: dict[str, list[float]] = {"appends_per_s": [], "p50_ms": [], "p99_ms": [], "max_ms": []}
    for _ in range(args.runs):
        async with fresh() as location:
            log = await MessageLog.open(location, log_id=LOG_ID, options=options)
            try:
                await log.append_all(records[:100])  # warm up: schema, connections
                runs["appends_per_s"].append(
                    await _throughput(log, records, args.concurrency, args.duration)
                )
            finally:
                await log.close()
        async with fresh() as location:
            log = await MessageLog.open(location, log_id=LOG_ID, options=options)
            try:
                await log.append_all(records[:100])
                p50, p99, worst = await _latency(log, records, args.rate, args.duration)
            finally:
                await log.close()
        runs["p50_ms"].append(p50)
        runs["p99_ms"].append(p99)
        runs["max_ms"].append(worst)
    return {name: statistics.median(values) for name, values in runs.items()}


async def _main(args: argparse.Namespace) -> dict[str, object]:
    records = _records(2000)
    size = statistics.mean(len(canonical_bytes(r)) for r in records)
    report: dict[str, object] = {
        "record_bytes": round(size),
        "concurrency": args.concurrency,
        "rate_per_s": args.rate,
        "duration_s": args.duration,
        "runs": args.runs,
        "cpus": os.cpu_count(),
    }
    if args.backend in ("sqlite", "both"):
        options = MessageLogOptions(synchronous=Synchronous(args.synchronous))
        report[f"sqlite_{args.synchronous.lower()}"] = await _bench(
            _fresh_sqlite, options, args, records
        )
    if args.backend in ("postgres", "both"):
        report["postgres"] = await _bench(
            lambda: _fresh_postgres(args.postgres), MessageLogOptions(), args, records
        )
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--synchronous", choices=[s.value for s in Synchronous], default="FULL")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="admin database URL")
    parser.add_argument("--concurrency", type=int, default=256, help="throughput appenders")
    parser.add_argument("--rate", type=float, default=1000.0, help="paced appends per second")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--runs", type=int, default=3, help="runs; the median is reported")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    report = asyncio.run(_main(args))
    if args.json:
        print(json.dumps(report))
        return 0
    print(
        f"~{report['record_bytes']} B records; {args.concurrency} appenders; "
        f"paced {args.rate:g}/s; {args.duration:g} s each; median of {args.runs}; "
        f"{report['cpus']} CPUs"
    )
    print(f"{'store':<16}{'appends/s':>12}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    for name, value in report.items():
        if isinstance(value, dict):
            print(
                f"{name:<16}{value['appends_per_s']:>12,.0f}{value['p50_ms']:>10.2f}"
                f"{value['p99_ms']:>10.2f}{value['max_ms']:>10.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
