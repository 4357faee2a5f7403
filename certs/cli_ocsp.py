"""``serai pki ocsp serve``: run the development OCSP responder of a PKI directory.

``certs.cli`` calls :func:`register_ocsp` with the ``pki`` subparsers. The handler reads
the directory and passphrase file (this is the command-line edge), serves until SIGINT
or SIGTERM, then shuts down gracefully. At start it writes one JSON line to stderr::

    {"event": "ocsp_listening", "listen": "127.0.0.1:8890", "url": "http://127.0.0.1:8890/", ...}
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from certs.ocsp import DEFAULT_NEXT_UPDATE_S, OCSPResponder
from certs.ocsp_http import OCSPServer
from certs.pkidir import PKIDirectory
from serai.cliutil import (
    format_address,
    log_event,
    parse_listen,
    read_passphrase,
    termination_event,
)
from serai.errors import ConfigError

__all__ = ["DEFAULT_LISTEN", "register_ocsp", "serve_command"]

DEFAULT_LISTEN = "127.0.0.1:8890"


def register_ocsp(pki_subparsers: Any) -> None:
    """Add ``ocsp serve`` to the ``serai pki`` subcommands."""
    ocsp_parser = pki_subparsers.add_parser("ocsp", help="the development OCSP responder")
    commands = ocsp_parser.add_subparsers(dest="ocsp_command", metavar="COMMAND", required=True)
    serve = commands.add_parser(
        "serve",
        help="answer OCSP requests (RFC 6960) for the issuing CA of a PKI directory",
    )
    serve.add_argument("--dir", required=True, type=Path, help="the PKI directory")
    serve.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        help=f"HOST:PORT to listen on (default {DEFAULT_LISTEN}; port 0 picks a free one)",
    )
    serve.add_argument(
        "--passphrase-file",
        type=Path,
        help="file holding the passphrase of the OCSP responder key",
    )
    serve.add_argument(
        "--next-update-s",
        type=int,
        default=DEFAULT_NEXT_UPDATE_S,
        help=f"seconds from thisUpdate to nextUpdate (default {DEFAULT_NEXT_UPDATE_S})",
    )
    serve.set_defaults(handler=serve_command)


def serve_command(args: argparse.Namespace) -> int:
    """Handler of ``serai pki ocsp serve``; returns the exit status."""
    host, port = parse_listen(args.listen)
    passphrase = read_passphrase(args.passphrase_file)
    pki = PKIDirectory(args.dir)
    key, chain = pki.ocsp_signer(passphrase=passphrase)
    if len(chain) < 2:
        raise ConfigError(f"{pki.ocsp_cert}: expected the responder and issuing CA certificates")
    responder = OCSPResponder(
        key=key,
        certificate=chain[0],
        issuers=[chain[1]],
        source=pki.records(),
        next_update_s=args.next_update_s,
    )
    server = OCSPServer(responder=responder, host=host, port=port)
    asyncio.run(_serve(server, host))
    return 0


async def _serve(server: OCSPServer, host: str) -> None:
    with termination_event() as stop:
        await server.start()
        try:
            log_event(
                "ocsp_listening",
                listen=format_address(host, server.port),
                url=server.url,
                port=server.port,
            )
            await stop.wait()
        finally:
            await server.stop()
    log_event("ocsp_stopped")
