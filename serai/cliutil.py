"""Helpers for the command-line edge shared by every ``serai`` service command:
listen addresses, passphrase and bearer-token files, issuing tokens and reading their
public keys, start/stop event lines, and waiting for a termination signal."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from serai.errors import ConfigError
from serai.tokens import TokenIssuer

__all__ = [
    "format_address",
    "issue_token",
    "load_token_public_key",
    "log_event",
    "parse_listen",
    "read_bearer_token",
    "read_passphrase",
    "termination_event",
]


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) as a (host, port) pair; port 0 means any."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"--listen: expected HOST:PORT, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port_text)


def format_address(host: str, port: int) -> str:
    """The ``HOST:PORT`` text of an address (IPv6 hosts in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def read_passphrase(path: Path | None) -> bytes | None:
    """Read a passphrase file: its first line, without the line ending."""
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read passphrase file {path}: {exc.strerror}") from exc
    lines = data.splitlines()
    if not lines or not lines[0]:
        raise ConfigError(f"passphrase file {path} is empty")
    return lines[0]


def read_bearer_token(path: Path | None, *, env_var: str) -> str:
    """The bearer token a client command sends: the ``--token-file`` ``path`` when given,
    else the environment variable ``env_var`` (surrounding whitespace dropped)."""
    if path is not None:
        try:
            token = path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--token-file: cannot read {path}: {exc}") from exc
    else:
        token = os.environ.get(env_var, "").strip()
    if not token:
        raise ConfigError(f"no bearer token: give --token-file or set {env_var}")
    return token


def load_token_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    """A PEM public key that verifies bearer tokens (EC P-256, as the issuers use)."""
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read a PEM public key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ConfigError(f"{path}: token public keys must be EC P-256")
    return key


def issue_token(
    key: object,
    *,
    key_path: Path,
    issuer: str,
    audience: str,
    subject: str,
    role: str,
    lifetime_s: int,
    out: Path | None,
) -> None:
    """``serai … token issue``: mint a token for ``subject`` with ``role`` signed by
    ``key`` (read from ``key_path``; must be EC P-256), and print it, or write it to
    ``out`` (mode 0600) and say so."""
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{key_path}: token keys must be EC P-256")
    token = TokenIssuer(key=key, issuer=issuer).issue(
        subject=subject, roles=[role], audience=audience, lifetime_s=lifetime_s
    )
    if out is None:
        print(token)
        return
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(token + "\n")
    print(f"wrote {role} token for {subject!r} to {out} (valid {lifetime_s} s)")


def log_event(event: str, **fields: object) -> None:
    """Write one JSON line ``{"event": ..., ...}`` to stderr."""
    print(json.dumps({"event": event, **fields}), file=sys.stderr, flush=True)


@contextlib.contextmanager
def termination_event() -> Iterator[asyncio.Event]:
    """An event set when the process receives SIGINT or SIGTERM (inside the block).

    Enter it before starting a server, so a signal during start-up is not lost.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        yield stop
    finally:
        for signum in signals:
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(signum)
