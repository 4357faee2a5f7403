"""``serai demo``: the reference scenario, end to end, every part a real process.

On loopback, the demo creates a development PKI for instance ``UZ`` and starts its OCSP
responder and time-stamping authority (a revoked key is refused through a live OCSP
answer; a time-stamp token is checked by Serai and by ``openssl ts -verify``); starts
the registry and registers the three agencies through its management API; starts the
three agencies' adapters (tax, cadastre, property registration), each with its own
SQLite database; sets up a gateway per agency with ``serai gateway init``, registers it,
waits until the registry publishes it (a tampered configuration is refused), and starts
it with ``serai gateway serve``; grants the scenario's access rights with ``serai acl
grant``. Then, as a notary office's information system, it applies three times for a
property transfer through the Ministry of Justice's gateway (one registered, one
refused for the seller's tax debt, one for an encumbered parcel), and the property
registration asks for a tax method it was not granted (refused). Each step prints its
hops with the message ids and the index of every record each gateway's message log
holds of it; then each log is verified with ``serai log verify``, and everything is
stopped with SIGTERM. The exit status is 1 if anything did not turn out as it should.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from certs.pkidir import PKIDirectory
from serai._demoadapters import adapter_addresses, start_adapters
from serai._demofederation import Federation
from serai._demologs import LogReader, verify_logs
from serai._demoops import check_operations
from serai._demoprocs import SERAI, stop_all
from serai._demoreport import Report
from serai._demoscenario import run_scenario
from serai._demotrust import check_revocation, check_tampered_configuration, check_timestamp
from serai._demousage import print_usage
from serai.errors import ErrorCode, SeraiError
from serai.localprocs import free_port

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add ``serai demo`` to the top-level parser."""
    demo = subparsers.add_parser(
        "demo",
        help="run the reference scenario on a whole federation of local processes",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    demo.add_argument(
        "--workdir",
        type=Path,
        help="keep every file here (must not exist or be empty; default: a temporary "
        "directory, removed at the end)",
    )
    demo.add_argument(
        "--keep-running",
        action="store_true",
        help="leave the federation running after the scenario, and print how to call "
        "it; Ctrl-C stops it",
    )
    demo.set_defaults(handler=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.workdir is not None:
        workdir: Path = args.workdir
        if workdir.exists() and any(workdir.iterdir()):
            raise SeraiError(f"--workdir {workdir} is not empty", code=ErrorCode.INVALID_REQUEST)
        workdir.mkdir(parents=True, exist_ok=True)
        return _run(workdir.resolve(), keep_running=args.keep_running)
    tmp = Path(tempfile.mkdtemp(prefix="serai-demo-"))
    try:
        return _run(tmp, keep_running=args.keep_running)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(workdir: Path, *, keep_running: bool) -> int:
    began = time.monotonic()
    report = Report()
    federation = Federation(workdir, report)
    print(f"Serai demo in {workdir}", flush=True)
    # SIGTERM (and SIGINT, even where a shell started the demo with it ignored) stops the
    # demo through the same clean shutdown as the end of the scenario.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        _scenario(federation, report, keep_running=keep_running)
    except KeyboardInterrupt:
        print()
        report.check(False, "interrupted before the scenario finished")
    finally:
        _shut_down(federation, report)
    print()
    if report.failures:
        print(f"demo: {len(report.failures)} of {report.checks} checks FAILED:")
        for failure in report.failures:
            print(f"  {failure}")
        return 1
    print(f"demo: all {report.checks} checks passed in {time.monotonic() - began:.0f} s")
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _scenario(federation: Federation, report: Report, *, keep_running: bool) -> None:
    workdir = federation.workdir
    report.section("A development PKI for instance UZ, its OCSP responder and TSA")
    ocsp_port, tsa_port = free_port(), free_port()
    pki = PKIDirectory.init(
        workdir / "pki",
        instance="UZ",
        ocsp_url=f"http://127.0.0.1:{ocsp_port}/",
        tsa_url=f"http://127.0.0.1:{tsa_port}/",
    )
    services = {
        kind: federation.start(
            kind,
            [*SERAI, "pki", kind, "serve", "--dir", str(pki.root),
             "--listen", f"127.0.0.1:{port}"],
            stopped_event=f"{kind}_stopped",
        )
        for kind, port in (("ocsp", ocsp_port), ("tsa", tsa_port))
    }  # fmt: skip
    # The adapters build their sample databases, and the registry starts, meanwhile.
    adapters = start_adapters(federation)
    registry = federation.launch_registry(pki.root)
    for kind, service in services.items():
        event = service.wait_for(f"{kind}_listening")
        report.note(f"{kind.upper()} pid {service.pid} on {event['listen']}")
    asyncio.run(check_revocation(pki, report))
    asyncio.run(check_timestamp(pki, workdir, report))

    report.section("The registry; the agencies registered through its management API")
    federation.registry_ready(registry)
    federation.register_agencies()

    report.section("The agencies' information systems: one adapter each, own SQLite database")
    addresses = adapter_addresses(adapters, report)

    report.section("A gateway per agency: serai gateway init, registered, serai gateway serve")
    federation.init_gateways(pki.root, addresses)
    waited = federation.wait_published()
    report.check(True, f"the registry published a configuration listing all three ({waited:.1f} s)")
    asyncio.run(check_tampered_configuration(workdir, report))
    federation.serve_gateways()

    report.section("Access rights, granted through each gateway's admin API (serai acl grant)")
    federation.grant_access()

    reader = LogReader(list(federation.gateways.values()))
    first = run_scenario(federation, reader, report)

    report.section("The three message logs, verified (serai log verify, serai log prove)")
    verify_logs(federation, reader, report, prove=first)

    report.section("Operations: readiness and the refusals counted in the metrics")
    check_operations(federation, report)

    if keep_running and not report.failures:
        print_usage(federation, addresses)
        try:
            while all(s.running() for s in federation.services):
                time.sleep(0.5)
        except KeyboardInterrupt:
            print()
            return
        stopped = [s.name for s in federation.services if not s.running()]
        report.check(False, f"a process of the federation stopped by itself: {', '.join(stopped)}")


def _shut_down(federation: Federation, report: Report) -> None:
    """SIGTERM the adapters, then the gateways, then registry, TSA and OCSP responder;
    each must report it stopped and exit 0."""
    if not federation.services:
        return
    report.section("Shutting down: SIGTERM, each process reports it stopped")
    adapters = [s for s in federation.services if s.name.startswith("adapter")]
    gateways = [s for s in federation.services if s.name.startswith("gateway")]
    others = [s for s in federation.services if s not in adapters and s not in gateways]
    for tier in (adapters, gateways, others):
        if not tier:
            continue
        stopped = stop_all(tier)
        report.check(
            all(status == 0 and said for _, status, said in stopped),
            ", ".join(
                f"{s.name} {s.stopped_event if said else 'did not report stopping'}"
                + ("" if status == 0 else f" (exit {status})")
                for s, status, said in stopped
            ),
        )
