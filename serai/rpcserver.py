"""The gRPC server of a management port (the registry's management API, a gateway's
admin API): one place sets its options, the gRPC health service and server reflection,
so both ports behave alike for operators and tools such as ``grpcurl``.

A management port speaks plain gRPC (HTTP/2 without TLS) and authenticates each call by
its bearer token. Bound to loopback (the default of both ports) the token never leaves
the host; :func:`bind_management_port` logs a warning naming the port when it is bound
anywhere else, because there a network observer could read a token and replay it until
it expires. Put such a port behind a TLS-terminating proxy or an SSH tunnel.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Sequence

import grpc
from grpc_health.v1 import _async as health_aio  # health.aio, importable for mypy
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

__all__ = ["bind_management_port", "is_loopback", "management_server", "mark_serving"]

_log = logging.getLogger(__name__)


def management_server(
    *,
    service_name: str,
    add_servicer: Callable[[grpc.aio.Server], None],
    max_receive_bytes: int,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),  # type: ignore[type-arg]
) -> tuple[grpc.aio.Server, health_aio.HealthServicer]:
    """A new (not yet bound) server with the service ``add_servicer`` adds, health and
    reflection; mark it serving with :func:`mark_serving` once it has started.
    ``interceptors`` see every call (the registry counts its API calls with one)."""
    server = grpc.aio.server(
        interceptors=tuple(interceptors),
        options=[
            ("grpc.max_receive_message_length", max_receive_bytes),
            ("grpc.so_reuseport", 0),
        ],
    )
    add_servicer(server)
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [service_name, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    return server, health_servicer


async def mark_serving(health_servicer: health_aio.HealthServicer, service_name: str) -> None:
    """Report the server (``""``) and ``service_name`` as SERVING."""
    for name in ("", service_name):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) only reaches this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def bind_management_port(server: grpc.aio.Server, host: str, port: int, *, what: str) -> int:
    """Bind ``server`` to ``host``:``port`` without TLS and return the bound port; warn
    when the address is not loopback (module docstring). ``what`` names the API in the
    warning, e.g. ``"the gateway's admin API"``. Raises :class:`RuntimeError` as grpc
    does when the address cannot be bound."""
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"  # as cliutil's
    bound: int = server.add_insecure_port(address)
    if not is_loopback(host):
        _log.warning(
            "%s listens on %s without TLS: its bearer tokens cross the network in clear; "
            "bind it to a loopback address, or serve it through a TLS-terminating proxy "
            "or an SSH tunnel",
            what,
            address,
        )
    return bound
