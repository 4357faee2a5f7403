"""``serai pki tsa serve``: run the development time-stamping authority over HTTP.

This is a command-line edge: it reads the PKI directory, the passphrase file and the
arguments, builds a :class:`certs.tsa.TimeStampAuthority` and serves it until SIGINT or
SIGTERM, then stops gracefully (in-flight requests finish). At start it writes one JSON
line on stderr with the address it listens on (the real port when ``--listen`` names 0).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from aiohttp import web

from certs.pkidir import PKIDirectory
from certs.tsa import TimeStampAuthority, create_app
from serai.cliutil import (
    format_address,
    log_event,
    parse_listen,
    read_passphrase,
    termination_event,
)

__all__ = ["DEFAULT_LISTEN", "register_tsa", "run_tsa_serve"]

DEFAULT_LISTEN = "127.0.0.1:8891"
#: Seconds in-flight requests get to finish at shutdown.
_SHUTDOWN_GRACE_S = 5.0


def register_tsa(pki_subparsers: Any) -> None:
    """Add ``tsa serve`` to the ``serai pki`` subcommands."""
    tsa = pki_subparsers.add_parser("tsa", help="time-stamping authority (RFC 3161)")
    commands = tsa.add_subparsers(dest="tsa_command", metavar="COMMAND", required=True)
    serve = commands.add_parser(
        "serve",
        help="serve RFC 3161 time-stamps over HTTP",
        description="Serve application/timestamp-query POSTs with the PKI directory's TSA key.",
    )
    serve.add_argument("--dir", type=Path, required=True, help="PKI directory (serai pki init)")
    serve.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help=f"address to listen on (default {DEFAULT_LISTEN}; port 0 picks a free one)",
    )
    serve.add_argument(
        "--passphrase-file",
        type=Path,
        metavar="FILE",
        help="file holding the passphrase of the TSA key (first line)",
    )
    serve.set_defaults(handler=run_tsa_serve)


def run_tsa_serve(args: argparse.Namespace) -> int:
    """Handler of ``serai pki tsa serve``; returns the exit status."""
    passphrase = read_passphrase(args.passphrase_file)
    pki = PKIDirectory(args.dir)
    key, chain = pki.tsa_signer(passphrase=passphrase)
    authority = TimeStampAuthority(key=key, chain=chain)
    host, port = parse_listen(args.listen)
    asyncio.run(_serve(authority, host, port))
    return 0


async def _serve(authority: TimeStampAuthority, host: str, port: int) -> None:
    runner = web.AppRunner(
        create_app(authority), access_log=None, shutdown_timeout=_SHUTDOWN_GRACE_S
    )
    with termination_event() as stop:
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
            bound_host, bound_port = next(iter(runner.addresses))[:2]
            listen = format_address(bound_host, bound_port)
            log_event(
                "tsa_listening",
                listen=listen,
                url=f"http://{listen}/",
                port=bound_port,
                policy=authority.policy,
                tsa=authority.certificate.subject.rfc4514_string(),
            )
            await stop.wait()
        finally:
            await runner.cleanup()
    log_event("tsa_stopped")
