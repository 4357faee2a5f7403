"""The gRPC server of a management port (the registry's management API, a gateway's
admin API): one place sets its options, the gRPC health service and server reflection,
so both ports behave alike for operators and tools such as ``grpcurl``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import grpc
from grpc_health.v1 import _async as health_aio  # health.aio, importable for mypy
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

__all__ = ["management_server", "mark_serving"]


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
