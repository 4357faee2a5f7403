"""The provider side: serve an information system's gRPC services to its gateway.

:class:`ProviderServer` is a ``grpc.aio`` server for the services you register with
:func:`service`. It guarantees:

- the gRPC health service (``grpc.health.v1.Health``) answers SERVING for the server
  (``""``) and for every registered service once :meth:`ProviderServer.start` returned,
  and NOT_SERVING from the moment :meth:`ProviderServer.stop` begins;
- gRPC server reflection lists the registered services (so ``grpcurl`` works);
- a :class:`~adapters.sdk.ProviderError` that escapes a unary handler (raised by
  :func:`~adapters.sdk.request_context`) is answered with its status and message plus
  rich details (``google.rpc.ErrorInfo`` with the code, ``google.rpc.BadRequest`` naming
  the metadata key); any other unexpected exception is logged (logger
  ``adapters.sdk``) and answered INTERNAL ``internal error``: a stack trace never
  reaches the wire;
- request and response bodies above ``max_message_bytes`` are refused by gRPC
  (RESOURCE_EXHAUSTED);
- :func:`~adapters.sdk.request_context` knows the method path of the call.

It listens in plaintext: the IS port should be reachable by its gateway only (loopback
or a private network), as the gateway calls it without TLS.

:func:`abort` and :func:`invalid_argument` end a call with a status whose rich details
(``grpc-status-details-bin``, a ``google.rpc.Status``) the provider gateway signs and
relays unchanged, so the consumer reads them with :func:`~adapters.sdk.rich_status`.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, NamedTuple, NoReturn

import grpc
from google.protobuf import any_pb2, message
from google.protobuf.descriptor import ServiceDescriptor
from google.rpc import (  # type: ignore[import-untyped]  # no stubs
    code_pb2,
    error_details_pb2,
    status_pb2,
)
from grpc_health.v1 import _async as health_aio  # health.aio, importable for mypy
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from adapters.sdk.context import current_method
from adapters.sdk.errors import ProviderError

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "ERROR_DOMAIN",
    "ProviderServer",
    "ServiceRegistration",
    "abort",
    "invalid_argument",
    "service",
]

#: Largest request or response body a ProviderServer accepts by default (4 MiB), as the
#: gateway's own default ``max_message_bytes``.
DEFAULT_MAX_MESSAGE_BYTES: Final = 4 * 1024 * 1024
#: ``google.rpc.ErrorInfo.domain`` of the errors the SDK answers.
ERROR_DOMAIN: Final = "serai"

_LOG = logging.getLogger("adapters.sdk")
_Context = grpc.aio.ServicerContext[Any, Any]
_AddServicer = Callable[[Any, grpc.aio.Server], None]


class ServiceRegistration(NamedTuple):
    """One gRPC service to serve: the generated ``add_XServicer_to_server`` function,
    the servicer instance, and the full service name (``cadastre.v1.Cadastre``)."""

    add_to_server: _AddServicer
    servicer: object
    name: str


def service(
    add_to_server: _AddServicer, servicer: object, descriptor: ServiceDescriptor | str
) -> ServiceRegistration:
    """A :class:`ServiceRegistration`; ``descriptor`` is the service's descriptor, e.g.
    ``cadastre_pb2.DESCRIPTOR.services_by_name["Cadastre"]``, or its full name."""
    name = descriptor if isinstance(descriptor, str) else descriptor.full_name
    if not name or name.startswith(".") or "/" in name:
        raise ValueError(f"not a full gRPC service name: {name!r}")
    return ServiceRegistration(add_to_server, servicer, name)


async def abort(
    context: _Context,
    code: grpc.StatusCode,
    message: str,
    *,
    field: str | None = None,
    details: Sequence[message.Message] = (),
) -> NoReturn:
    """End the call with ``code`` and ``message``, and a ``google.rpc.Status`` carrying
    ``details`` (each packed in an ``Any``) and, when ``field`` is given, a
    ``google.rpc.BadRequest`` whose field violation names it."""
    await context.abort(*_rich(code, message, field=field, details=details))


async def invalid_argument(context: _Context, field: str, message: str) -> NoReturn:
    """End the call with INVALID_ARGUMENT and a ``google.rpc.BadRequest`` naming
    ``field`` (a request field path such as ``cadastral_number``)."""
    await abort(context, grpc.StatusCode.INVALID_ARGUMENT, message, field=field)


class ProviderServer:
    """A gRPC server for an information system's services (module docstring)."""

    def __init__(
        self,
        *,
        listen: str,
        services: Sequence[ServiceRegistration],
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        if not services:
            raise ValueError("a ProviderServer needs at least one service")
        names = [s.name for s in services]
        if len(set(names)) != len(names):
            raise ValueError(f"a service is registered twice: {names}")
        if max_message_bytes < 1:
            raise ValueError(f"max_message_bytes must be positive, got {max_message_bytes}")
        self._listen = listen
        self._services = tuple(services)
        self._max_message_bytes = max_message_bytes
        self._server: grpc.aio.Server | None = None
        self._health: health_aio.HealthServicer | None = None
        self._port = 0

    @property
    def port(self) -> int:
        """The bound port (0 before :meth:`start`)."""
        return self._port

    @property
    def service_names(self) -> tuple[str, ...]:
        """Full names of the registered services."""
        return tuple(s.name for s in self._services)

    async def start(self) -> int:
        """Bind ``listen``, start serving, and return the bound port."""
        if self._server is not None:
            raise RuntimeError("ProviderServer already started")
        server = grpc.aio.server(
            interceptors=(_GuardInterceptor(),),
            options=[
                ("grpc.max_receive_message_length", self._max_message_bytes),
                ("grpc.max_send_message_length", self._max_message_bytes),
                ("grpc.so_reuseport", 0),
            ],
        )
        for registration in self._services:
            registration.add_to_server(registration.servicer, server)
        health_servicer = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            [*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
        )
        try:
            port = server.add_insecure_port(self._listen)
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {self._listen}: {exc}") from exc
        if port == 0:
            raise OSError(f"cannot listen on {self._listen}")
        await server.start()
        for name in ("", *self.service_names):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._server, self._health, self._port = server, health_servicer, port
        return port

    async def stop(self, grace_s: float = 5.0) -> None:
        """Report NOT_SERVING, then stop, letting calls in flight finish for ``grace_s``."""
        if self._server is None:
            return
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        await self._server.stop(grace_s)

    async def wait(self) -> None:
        """Return when the server has stopped."""
        if self._server is not None:
            await self._server.wait_for_termination()

    async def __aenter__(self) -> ProviderServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


class _GuardInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]  # generic stub
    """Records the method path and turns escaped exceptions into statuses."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        behaviour = handler.unary_unary
        method = handler_call_details.method

        async def guarded(request: Any, context: _Context) -> Any:
            current_method.set(method)
            try:
                answer = behaviour(request, context)
                return (await answer) if inspect.isawaitable(answer) else answer
            except ProviderError as exc:
                await context.abort(
                    *_rich(
                        exc.status,
                        exc.message,
                        field=exc.field,
                        details=(
                            error_details_pb2.ErrorInfo(
                                reason=exc.code.value,
                                domain=ERROR_DOMAIN,
                                metadata={"origin": exc.origin.value, "field": exc.field},
                            ),
                        ),
                    )
                )
            except grpc.aio.AbortError:
                raise
            except Exception:  # noqa: BLE001  (last line of defence: log, answer INTERNAL)
                _LOG.exception("%s: unexpected error in the provider IS", method)
                await context.abort(grpc.StatusCode.INTERNAL, "internal error")

        return grpc.unary_unary_rpc_method_handler(
            guarded,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _rich(
    code: grpc.StatusCode,
    text: str,
    *,
    field: str | None,
    details: Sequence[message.Message],
) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str | bytes], ...]]:
    """(code, message, trailers) of a status with a google.rpc.Status in its trailers."""
    packed: list[any_pb2.Any] = []
    for detail in details:
        holder = any_pb2.Any()
        holder.Pack(detail)
        packed.append(holder)
    if field is not None:
        holder = any_pb2.Any()
        holder.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=field, description=text)
                ]
            )
        )
        packed.append(holder)
    value = code.value[0] if code != grpc.StatusCode.OK else code_pb2.UNKNOWN
    status = rpc_status.to_status(status_pb2.Status(code=value, message=text, details=packed))
    return status.code, status.details, tuple(status.trailing_metadata)
