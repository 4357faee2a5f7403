"""gRPC server reflection on the IS port, for the provider a call names (DESIGN §7).

Reflection is a bidirectional stream, which the exchange does not carry, so the consumer
gateway answers it itself: ``grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo``
and its identical twin ``grpc.reflection.v1.ServerReflection/ServerReflectionInfo`` (the
two protocols differ only in their package name; grpcio-reflection ships the v1alpha
messages, which the v1 path reuses byte for byte). Reflection-based tools (grpcurl,
grpcui, Postman, grpcio-reflection's ``ProtoReflectionDescriptorDatabase``) then discover
a remote service and build its messages, given the two usual headers::

    grpcurl -plaintext -H 'x-road-client: UZ/GOV/MINJUST/property' \\
        -H 'x-road-service: UZ/GOV/CADASTRE/registry' localhost:5500 list

The stream is opened like any IS-port call (:mod:`gateway._iscaller`): ``x-road-client``
authenticated as for an exchange, ``x-road-service`` a valid subsystem id
(``invalid_identifier``, ``unknown_client``, ``client_not_authenticated``). It answers
from the FileDescriptorSet the registry published for that provider in the global
configuration in force (indexed once per configuration serial,
:class:`gateway._descriptors.DescriptorCache`), with ``serai.meta.v1.Meta`` added, since
the IS port serves it too. A provider without published descriptors, or with unreadable
ones, is refused when the stream opens: ``unknown_service`` (NOT_FOUND). Within the
stream, a file or symbol the descriptors do not hold is an ``error_response`` NOT_FOUND,
as any gRPC server answers, and the stream goes on.

Nothing crosses the bus: the descriptors are the ones every gateway of the federation
holds, so reflection answers exactly what ``GetServiceDescriptors`` would, without a
signed exchange per lookup. Access rights do not apply (as for the metaservices); a
client learns what the provider offers, not what it may call (``AllowedMethods``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Final

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2 as rpb

from gateway import _metamessages
from gateway._descriptors import DescriptorCache, DescriptorIndex
from gateway._iscaller import (
    CLIENT_KEY,
    SERVICE_KEY,
    authenticate_is,
    check_registered_client,
    required,
    x_road_metadata,
)
from gateway._settings import ExchangeParts
from gateway.meta import META_SERVICE
from gateway.wire import refusing
from serai.identifiers import SubsystemId

__all__ = ["REFLECTION_METHODS", "ReflectionHandler"]

#: The reflection method paths the IS port answers (v1alpha and v1).
REFLECTION_METHODS: Final = frozenset(
    {
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    }
)
_NOT_FOUND: Final = grpc.StatusCode.NOT_FOUND.value[0]
_INVALID_ARGUMENT: Final = grpc.StatusCode.INVALID_ARGUMENT.value[0]


class ReflectionHandler(grpc.GenericRpcHandler):  # type: ignore[type-arg]  # not subscriptable at run time
    """Serves :data:`REFLECTION_METHODS` on the IS port (module docstring)."""

    def __init__(self, *, parts: ExchangeParts) -> None:
        self._parts = parts
        meta_file = descriptor_pb2.FileDescriptorProto.FromString(_metamessages.META_FILE)
        self._descriptors = DescriptorCache(extra=(meta_file,))

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = handler_call_details.method
        if method not in REFLECTION_METHODS:
            return None
        serve = self._serve

        async def stream(requests: AsyncIterator[Any], context: Any) -> None:
            await serve(method, requests, context)

        return grpc.stream_stream_rpc_method_handler(
            stream,
            request_deserializer=rpb.ServerReflectionRequest.FromString,
            response_serializer=rpb.ServerReflectionResponse.SerializeToString,
        )

    async def _serve(
        self,
        method: str,
        requests: AsyncIterator[Any],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        observer = self._parts.observer
        observation = observer.begin("consumer")
        observation.method = method
        try:
            async with refusing(context, side="consumer", outcome=observation):
                metadata = x_road_metadata(context)
                client = SubsystemId.parse(required(metadata, CLIENT_KEY))
                observation.client = client
                provider = SubsystemId.parse(required(metadata, SERVICE_KEY))
                observation.service = provider
                authenticate_is(self._parts.settings, client, context)
                snapshot = self._parts.configuration.current()
                check_registered_client(self._parts, snapshot, client)
                index = self._descriptors.index(snapshot, provider)
                async for request in requests:
                    await context.write(_answer(index, request))
        finally:
            observer.finish(observation)


def _answer(index: DescriptorIndex, request: Any) -> Any:
    """The response to one ServerReflectionRequest."""
    kind = request.WhichOneof("message_request")
    files: tuple[bytes, ...] | None = None
    if kind == "list_services":
        services = sorted({*index.services, META_SERVICE})
        return rpb.ServerReflectionResponse(
            valid_host=request.host,
            original_request=request,
            list_services_response=rpb.ListServiceResponse(
                service=[rpb.ServiceResponse(name=name) for name in services]
            ),
        )
    if kind == "file_by_filename":
        files = index.file_by_name(request.file_by_filename)
        what = f"file {request.file_by_filename!a}"
    elif kind == "file_containing_symbol":
        files = index.file_containing_symbol(request.file_containing_symbol)
        what = f"symbol {request.file_containing_symbol!a}"
    elif kind == "file_containing_extension":
        extension = request.file_containing_extension
        files = index.file_containing_extension(
            extension.containing_type, extension.extension_number
        )
        what = f"extension {extension.extension_number} of {extension.containing_type!a}"
    elif kind == "all_extension_numbers_of_type":
        numbers = index.extension_numbers(request.all_extension_numbers_of_type)
        if numbers is not None:
            return rpb.ServerReflectionResponse(
                valid_host=request.host,
                original_request=request,
                all_extension_numbers_response=rpb.ExtensionNumberResponse(
                    base_type_name=request.all_extension_numbers_of_type,
                    extension_number=list(numbers),
                ),
            )
        what = f"message type {request.all_extension_numbers_of_type!a}"
    else:
        return _error(request, _INVALID_ARGUMENT, "no request in ServerReflectionRequest")
    if files is None:
        return _error(request, _NOT_FOUND, f"{what[:300]} is not in the service descriptors")
    return rpb.ServerReflectionResponse(
        valid_host=request.host,
        original_request=request,
        file_descriptor_response=rpb.FileDescriptorResponse(file_descriptor_proto=list(files)),
    )


def _error(request: Any, code: int, message: str) -> Any:
    return rpb.ServerReflectionResponse(
        valid_host=request.host,
        original_request=request,
        error_response=rpb.ErrorResponse(error_code=code, error_message=message),
    )
