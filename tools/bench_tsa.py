"""Load-test a time-stamping authority: N concurrent aiohttp clients for D seconds.

    python tools/bench_tsa.py --url http://127.0.0.1:8891/ --concurrency 32 --duration 10

or, to start a fresh TSA in a child process on a free port (a throw-away PKI in a
temporary directory) and measure it:

    python tools/bench_tsa.py --concurrency 32 --duration 10

Each request is one of 2,000 distinct queries made before the clock starts (random data,
a random nonce, certReq set), so the TSA signs a new token every time while the client
spends its CPU on HTTP only; the reply's HTTP status and media type are checked (tokens
are not verified: that would measure the client).
Prints requests/s and latency percentiles; ``--json`` prints one JSON object instead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from certs.timestamp import TIMESTAMP_QUERY, TIMESTAMP_REPLY, build_query

#: Distinct queries made before the clock starts, so the client spends its CPU on HTTP.
_QUERIES = [build_query(secrets.token_bytes(32), nonce=secrets.randbits(63)) for _ in range(2000)]


async def _worker(
    session: aiohttp.ClientSession, url: str, deadline: float, latencies: list[float]
) -> int:
    errors = 0
    while time.perf_counter() < deadline:
        query = secrets.choice(_QUERIES)
        start = time.perf_counter()
        async with session.post(
            url, data=query, headers={"Content-Type": TIMESTAMP_QUERY}
        ) as response:
            await response.read()
            ok = response.status == 200 and response.content_type == TIMESTAMP_REPLY
        latencies.append(time.perf_counter() - start)
        errors += not ok
    return errors


async def _run(url: str, concurrency: int, duration_s: float) -> dict[str, float]:
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        # Warm up connections before the clock starts.
        await asyncio.gather(
            *(_worker(session, url, time.perf_counter() + 0.3, []) for _ in range(concurrency))
        )
        start = time.perf_counter()
        deadline = start + duration_s
        errors = await asyncio.gather(
            *(_worker(session, url, deadline, latencies) for _ in range(concurrency))
        )
        elapsed = time.perf_counter() - start
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    return {
        "concurrency": concurrency,
        "duration_s": round(elapsed, 2),
        "requests": len(latencies),
        "errors": sum(errors),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(pct(0.50), 2),
        "p99_ms": round(pct(0.99), 2),
    }


def _spawn(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    from certs.pkidir import PKIDirectory  # noqa: PLC0415

    PKIDirectory.init(workdir / "pki", instance="BENCH")
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "serai.cli",
            "pki",
            "tsa",
            "serve",
            "--dir",
            str(workdir / "pki"),
            "--listen",
            "127.0.0.1:0",
        ],
        cwd=root,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert proc.stderr is not None
    line = json.loads(proc.stderr.readline())
    return proc, str(line["url"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--url", help="an already running TSA (default: start one in a child process)"
    )
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc = None
        url = args.url
        if url is None:
            proc, url = _spawn(Path(tmp))
        try:
            result = asyncio.run(_run(url, args.concurrency, args.duration))
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=10)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['requests_per_s']} requests/s over {result['duration_s']} s "
            f"({result['requests']} requests, {result['errors']} errors, "
            f"concurrency {result['concurrency']}); "
            f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms"
        )
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
