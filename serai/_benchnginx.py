"""The nginx pair of ``serai bench``: the transport a user could set up instead of two
gateways, mutual TLS between two nginx servers doing nothing but ``grpc_pass``.

::

    bench client --h2c--> nginx "client" --TLS 1.3, client cert--> nginx "server" --h2c--> echo

Each nginx runs unprivileged from a configuration in the work directory, in the
foreground (``daemon off``) and as one process (``master_process off``), so the process
the bench starts is the process that does the work: its CPU time is read from
``/proc/PID/stat`` and stopping it stops everything. Logs, the pid file and the
temporary paths stay in the work directory. The certificates come from the bench's own
development PKI (``serai pki issue --profile auth``, TLS server and client); each side
accepts only the PKI's root.

Upstream connections are kept alive: nginx proxies each gRPC call over a connection of
its own (no multiplexing towards the upstream), so without ``keepalive`` every call
would pay a TLS handshake.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from serai.errors import ConfigError

__all__ = ["NginxPaths", "find_nginx", "render_client_config", "render_server_config"]

#: Where nginx lives when ``/usr/sbin`` is not on the caller's PATH (Debian, Ubuntu).
_FALLBACK_DIRS: Final = ("/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin")
#: Requests per connection before nginx closes it (default 1,000: a reconnect, and on
#: the TLS leg a handshake, every 1,000 calls would be measured as nginx's cost).
_REQUESTS_PER_CONNECTION: Final = 100_000_000
#: The name the upstream's certificate is checked against (``serai pki issue`` puts
#: ``localhost`` and ``127.0.0.1`` in auth certificates; nginx checks DNS names).
_UPSTREAM_NAME: Final = "localhost"


def find_nginx() -> Path | None:
    """The nginx executable: on PATH, else in the usual sbin folders; ``None`` if none."""
    found = shutil.which("nginx")
    if found is not None:
        return Path(found)
    for folder in _FALLBACK_DIRS:
        candidate = shutil.which("nginx", path=folder)
        if candidate is not None:
            return Path(candidate)
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class NginxPaths:
    """The files of one nginx of the pair, all under ``prefix``."""

    prefix: Path  # the folder of this nginx: configuration, logs, pid, temporary paths
    certificate: Path  # PEM: certificate, then the issuing CA
    key: Path  # PEM private key (unencrypted)
    trusted_ca: Path  # PEM root of the development PKI

    @property
    def config(self) -> Path:
        return self.prefix / "nginx.conf"

    @property
    def error_log(self) -> Path:
        return self.prefix / "error.log"


def render_client_config(
    paths: NginxPaths, *, listen_port: int, upstream: str, max_in_flight: int
) -> str:
    """The client-side nginx: plaintext HTTP/2 in on ``127.0.0.1:listen_port``, out over
    TLS 1.3 to ``upstream`` (``HOST:PORT``) presenting ``paths.certificate`` and
    verifying the server's against ``paths.trusted_ca``."""
    location = f"""\
            grpc_pass grpcs://peer;
            grpc_ssl_protocols TLSv1.3;
            grpc_ssl_certificate {_quoted(paths.certificate)};
            grpc_ssl_certificate_key {_quoted(paths.key)};
            grpc_ssl_trusted_certificate {_quoted(paths.trusted_ca)};
            grpc_ssl_verify on;
            grpc_ssl_verify_depth 2;
            grpc_ssl_name {_UPSTREAM_NAME};
            grpc_ssl_session_reuse on;"""
    return _render(
        paths,
        listen=f"listen 127.0.0.1:{listen_port} http2;",
        server_tls="",
        upstream=upstream,
        location=location,
        max_in_flight=max_in_flight,
    )


def render_server_config(
    paths: NginxPaths, *, listen_port: int, upstream: str, max_in_flight: int
) -> str:
    """The server-side nginx: TLS 1.3 in on ``127.0.0.1:listen_port``, a client
    certificate from ``paths.trusted_ca``'s PKI required, plaintext HTTP/2 out to the
    provider at ``upstream`` (``HOST:PORT``)."""
    server_tls = f"""\
        ssl_protocols TLSv1.3;
        ssl_certificate {_quoted(paths.certificate)};
        ssl_certificate_key {_quoted(paths.key)};
        ssl_client_certificate {_quoted(paths.trusted_ca)};
        ssl_verify_client on;
        ssl_verify_depth 2;
        ssl_session_cache shared:tls:1m;
"""
    return _render(
        paths,
        listen=f"listen 127.0.0.1:{listen_port} ssl http2;",
        server_tls=server_tls,
        upstream=upstream,
        location="            grpc_pass grpc://peer;",
        max_in_flight=max_in_flight,
    )


def _render(
    paths: NginxPaths,
    *,
    listen: str,
    server_tls: str,
    upstream: str,
    location: str,
    max_in_flight: int,
) -> str:
    prefix = paths.prefix
    # Every call in flight may hold an upstream connection of its own; keep them all.
    idle_upstream = max(16, max_in_flight)
    connections = 4 * max_in_flight + 64
    return f"""\
# Written by `serai bench --nginx`; nginx runs it with `nginx -p PREFIX -c nginx.conf`.
daemon off;
master_process off;
worker_processes 1;
pid {_quoted(prefix / "nginx.pid")};
error_log {_quoted(paths.error_log)} warn;

events {{
    worker_connections {connections};
}}

http {{
    access_log off;
    client_body_temp_path {_quoted(prefix / "tmp" / "body")};
    proxy_temp_path {_quoted(prefix / "tmp" / "proxy")};
    fastcgi_temp_path {_quoted(prefix / "tmp" / "fastcgi")};
    uwsgi_temp_path {_quoted(prefix / "tmp" / "uwsgi")};
    scgi_temp_path {_quoted(prefix / "tmp" / "scgi")};
    keepalive_requests {_REQUESTS_PER_CONNECTION};
    keepalive_timeout 300s;
    http2_max_concurrent_streams {max(128, max_in_flight)};

    upstream peer {{
        server {upstream};
        keepalive {idle_upstream};
        keepalive_requests {_REQUESTS_PER_CONNECTION};
        keepalive_timeout 300s;
    }}

    server {{
        {listen}
{server_tls}        location / {{
{location}
        }}
    }}
}}
"""


def _quoted(path: Path) -> str:
    """A path as an nginx string (double quotes; the bench's paths hold no quotes)."""
    text = str(path)
    if '"' in text or "\\" in text:
        raise ConfigError(f"nginx paths must not contain quotes or backslashes: {text!r}")
    return f'"{text}"'
