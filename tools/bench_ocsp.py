"""Benchmark of the OCSP responder: requests per second and latency under concurrency.

By default it creates a throw-away PKI, starts ``serai pki ocsp serve`` on a free
loopback port as a separate process, and drives it from this process with an aiohttp
client: ``--concurrency`` workers POST requests back to back for ``--duration`` seconds.
Each request carries its own nonce (pre-built, so the client spends its CPU on HTTP,
not on building requests), so every answer is freshly looked up and signed.

    .venv/bin/python tools/bench_ocsp.py --concurrency 32 --duration 10
    .venv/bin/python tools/bench_ocsp.py --url http://127.0.0.1:8890/ --dir PKI_DIR

Prints requests/s, p50/p99 latency and error counts (``--json`` for one JSON line).
Every answer is checked to be a successful OCSP response with status good; a sample is
fully validated with :func:`certs.ocsp_client.validate_response`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from cryptography import x509
from cryptography.x509 import ocsp

from certs.ca import CertStatus
from certs.keys import generate_private_key
from certs.ocsp_client import build_request, validate_response
from certs.pkidir import PKIDirectory
from certs.profiles import Profile


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent workers")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    parser.add_argument("--url", help="an already running responder (needs --dir)")
    parser.add_argument("--dir", type=Path, help="the PKI directory the responder serves")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args()
    if args.url and not args.dir:
        parser.error("--url needs --dir (to issue a certificate to ask about)")

    with tempfile.TemporaryDirectory(prefix="bench-ocsp-") as tmp:
        pki = PKIDirectory(args.dir) if args.dir else PKIDirectory.init(Path(tmp), instance="UZ")
        ca = pki.issuing_ca()
        cert = ca.issue(Profile.TSA, "bench-leaf", generate_private_key().public_key())
        server = None if args.url else _start_server(pki.root)
        try:
            url = args.url or _wait_listening(server)
            stats = asyncio.run(_run(url, cert, ca.certificate, args))
        finally:
            if server is not None:
                server.terminate()
                server.wait(timeout=15)
                if server.stderr is not None:
                    server.stderr.close()
    if args.json:
        print(json.dumps(stats))
    else:
        print(
            f"{stats['requests']} requests in {stats['seconds']:.1f} s with concurrency "
            f"{stats['concurrency']}: {stats['requests_per_s']:.0f} requests/s, "
            f"p50 {stats['p50_ms']:.2f} ms, p99 {stats['p99_ms']:.2f} ms, "
            f"errors {stats['errors']}"
        )
    return 0 if stats["errors"] == 0 else 1


def _start_server(root: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "serai.cli", "pki", "ocsp", "serve"]
    command += ["--dir", str(root), "--listen", "127.0.0.1:0"]
    return subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)


def _wait_listening(server: subprocess.Popen[bytes] | None) -> str:
    assert server is not None
    assert server.stderr is not None
    line = server.stderr.readline()
    if not line:
        raise SystemExit("the OCSP server exited before listening")
    url: str = json.loads(line)["url"]
    return url


async def _run(
    url: str, cert: x509.Certificate, issuer: x509.Certificate, args: argparse.Namespace
) -> dict[str, float]:
    pool = [build_request(cert, issuer, nonce=secrets.token_bytes(16)) for _ in range(2048)]
    latencies: list[float] = []
    errors = 0
    measuring = False
    stop = False
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    headers = {"Content-Type": "application/ocsp-request"}

    async with aiohttp.ClientSession(connector=connector) as session:
        sample_nonce = secrets.token_bytes(16)
        async with session.post(
            url, data=build_request(cert, issuer, nonce=sample_nonce), headers=headers
        ) as reply:
            sample = await reply.read()
        result = validate_response(
            sample, cert=cert, issuer=issuer, now=dt.datetime.now(dt.UTC), nonce=sample_nonce
        )
        if result.status is not CertStatus.GOOD:
            raise SystemExit(f"unexpected status {result.status}")

        async def worker(offset: int) -> None:
            nonlocal errors
            i = offset
            while not stop:
                body = pool[i % len(pool)]
                i += args.concurrency
                start = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers=headers) as reply:
                        der = await reply.read()
                        ok = reply.status == 200
                except aiohttp.ClientError:
                    ok, der = False, b""
                elapsed = time.perf_counter() - start
                if ok:
                    response = ocsp.load_der_ocsp_response(der)
                    ok = response.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
                if measuring:
                    latencies.append(elapsed)
                    errors += 0 if ok else 1

        tasks = [asyncio.create_task(worker(n)) for n in range(args.concurrency)]
        await asyncio.sleep(args.warmup)
        measuring = True
        began = time.perf_counter()
        await asyncio.sleep(args.duration)
        measuring = False
        seconds = time.perf_counter() - began
        stop = True
        await asyncio.gather(*tasks)

    latencies.sort()
    count = len(latencies)

    def pct(p: float) -> float:
        return latencies[min(count - 1, int(p * count))] * 1000 if count else 0.0

    return {
        "requests": count,
        "seconds": seconds,
        "concurrency": args.concurrency,
        "requests_per_s": count / seconds,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "errors": errors,
    }


if __name__ == "__main__":
    sys.exit(main())
