"""``serai pki tsa serve``: run the development time-stamping authority over HTTP.

This is a command-line edge: it reads the PKI directory, the passphrase file and the
arguments, builds a :class:`certs.tsa.TimeStampAuthority` and serves it until SIGINT or
SIGTERM, then stops gracefully (in-flight requests finish). At start it writes one JSON
line on stderr with the address it listens on (the real port when ``--listen`` names 0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from certs.pkidir import PKIDirectory
from certs.tsa import TimeStampAuthority, create_app
from serai.errors import ConfigError

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
        type=parse_listen,
        default=parse_listen(DEFAULT_LISTEN),
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


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) as a (host, port) pair."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port_text)


def run_tsa_serve(args: argparse.Namespace) -> int:
    """Handler of ``serai pki tsa serve``; returns the exit status."""
    passphrase = _read_passphrase(args.passphrase_file)
    pki = PKIDirectory(args.dir)
    key, chain = pki.tsa_signer(passphrase=passphrase)
    authority = TimeStampAuthority(key=key, chain=chain)
    host, port = args.listen
    asyncio.run(_serve(authority, host, port))
    return 0


async def _serve(authority: TimeStampAuthority, host: str, port: int) -> None:
    runner = web.AppRunner(
        create_app(authority), access_log=None, shutdown_timeout=_SHUTDOWN_GRACE_S
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        bound = _bound_address(runner)
        _event(
            "tsa_listening",
            listen=bound,
            url=f"http://{bound}/",
            policy=authority.policy,
            tsa=authority.certificate.subject.rfc4514_string(),
        )
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await runner.cleanup()
        _event("tsa_stopped")


def _bound_address(runner: web.AppRunner) -> str:
    addresses: list[Any] = list(runner.addresses)
    host, port = addresses[0][0], addresses[0][1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _event(event: str, **fields: str) -> None:
    print(json.dumps({"event": event, **fields}), file=sys.stderr, flush=True)


def _read_passphrase(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read passphrase file: {exc.strerror}") from exc
    if not lines or not lines[0]:
        raise ConfigError(f"{path}: passphrase file is empty")
    return lines[0]


def _main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m certs.cli_tsa tsa serve ...``), for tools and tests."""
    from serai.errors import SeraiError  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="serai pki")
    register_tsa(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        status: int = args.handler(args)
    except SeraiError as exc:
        print(f"serai: error: {exc}", file=sys.stderr)
        return 2
    return status


if __name__ == "__main__":
    sys.exit(_main())
