"""gRPC server reflection on the consumer gateway's IS port (gateway/reflection.py), and the
descriptor index behind it (gateway/_descriptors.py).

The end-to-end test is what reflection-based tooling does: grpcio-reflection's
``ProtoReflectionDescriptorDatabase`` (the Python counterpart of ``grpcurl list`` /
``describe``) discovers ``cadastre.v1.Cadastre`` behind the gateways with only the two
``x-road-*`` headers, then calls it through both gateways with messages built from the
reflected descriptors alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, cast

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_reflection.v1alpha import reflection_pb2 as rpb
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from gateway._descriptors import DescriptorCache, DescriptorIndex, DescriptorSetError
from gateway.commit import RecordKind
from registry.snapshot import ConfigurationSnapshot
from serai.identifiers import SubsystemId
from serai_proto.cadastre.v1 import cadastre_pb2, cadastre_pb2_grpc
from tests.gatewayharness import ARCHIVE, PROPERTY, REGISTRY, Harness, federation, trailers_of
from tests.test_gateway_meta import cadastre_descriptor_set

V1ALPHA = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
V1 = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
CADASTRE_FILE = "serai_proto/cadastre/v1/cadastre.proto"
META_FILE = "serai_proto/meta/v1/meta.proto"
PARCEL = "10:01:01:01:01:0001"
HEADERS = (("x-road-client", str(PROPERTY)), ("x-road-service", str(REGISTRY)))


class Cadastre(cadastre_pb2_grpc.CadastreServicer):
    """The provider IS, written with the generated code as an agency would."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def GetParcel(
        self, request: cadastre_pb2.GetParcelRequest, context: Any
    ) -> cadastre_pb2.GetParcelResponse:
        self.calls.append(request.cadastral_number)
        return cadastre_pb2.GetParcelResponse(
            parcel=cadastre_pb2.Parcel(
                cadastral_number=request.cadastral_number,
                area_m2=600,
                land_use=cadastre_pb2.LAND_USE_RESIDENTIAL,
                owners=[cadastre_pb2.Owner(owner_id="31507761230012", name="Dilnoza Karimova")],
            )
        )

    async def ListEncumbrances(
        self, request: cadastre_pb2.ListEncumbrancesRequest, context: Any
    ) -> cadastre_pb2.ListEncumbrancesResponse:
        return cadastre_pb2.ListEncumbrancesResponse()

    async def ListParcelsByOwner(
        self, request: cadastre_pb2.ListParcelsByOwnerRequest, context: Any
    ) -> cadastre_pb2.ListParcelsByOwnerResponse:
        return cadastre_pb2.ListParcelsByOwnerResponse()


@pytest.fixture
async def cadastre() -> AsyncIterator[tuple[Cadastre, int]]:
    servicer = Cadastre()
    server = grpc.aio.server()
    cadastre_pb2_grpc.add_CadastreServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer, port
    await server.stop(0)


@pytest.fixture
async def fed(tmp_path: Path, cadastre: tuple[Cadastre, int]) -> AsyncIterator[Harness]:
    async with federation(
        tmp_path,
        service_descriptors={REGISTRY: cadastre_descriptor_set()},
        provider_address=f"127.0.0.1:{cadastre[1]}",
    ) as harness:
        yield harness


# --- reflection-based tooling, end to end ---------------------------------------------------


class _CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Sequence[tuple[str, str]] | None
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


class _XRoadHeaders(grpc.StreamStreamClientInterceptor):  # type: ignore[type-arg]  # not subscriptable at run time
    """Adds the x-road-* headers to every stream, as ``grpcurl -H`` does."""

    def __init__(self, headers: Sequence[tuple[str, str]]) -> None:
        self._headers = tuple(headers)

    def intercept_stream_stream(
        self, continuation: Callable[..., Any], details: Any, request_iterator: Any
    ) -> Any:
        metadata = (*(details.metadata or ()), *self._headers)
        new = _CallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )
        return continuation(new, request_iterator)


def _discover(port: int) -> tuple[list[str], descriptor_pool.DescriptorPool]:
    """What a reflection client learns (blocking: runs in a thread)."""
    channel = grpc.intercept_channel(
        grpc.insecure_channel(f"127.0.0.1:{port}"), _XRoadHeaders(HEADERS)
    )
    database = ProtoReflectionDescriptorDatabase(channel)
    services = list(database.get_services())
    pool = descriptor_pool.DescriptorPool(database)
    pool.FindServiceByName("cadastre.v1.Cadastre")  # type: ignore[no-untyped-call]  # resolves the file and its dependencies
    return services, pool


async def test_reflection_tooling_discovers_and_calls_cadastre_through_the_gateways(
    fed: Harness, cadastre: tuple[Cadastre, int]
) -> None:
    services, pool = await asyncio.to_thread(_discover, fed.consumer.is_port)
    assert services == ["cadastre.v1.Cadastre", "serai.meta.v1.Meta"]
    # discovery travels nowhere: no exchange, no record
    assert [r.kind for r in (*fed.consumer_log.records, *fed.provider_log.records)] == []

    service = pool.FindServiceByName("cadastre.v1.Cadastre")  # type: ignore[no-untyped-call]
    assert [m.name for m in service.methods] == [
        "GetParcel",
        "ListEncumbrances",
        "ListParcelsByOwner",
    ]
    method = service.methods_by_name["GetParcel"]
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    assert request_class is not cadastre_pb2.GetParcelRequest  # built from reflection only
    call = fed.channel.unary_unary(
        f"/{service.full_name}/{method.name}",
        request_serializer=request_class.SerializeToString,
        response_deserializer=response_class.FromString,
    )
    answer = await call(request_class(cadastral_number=PARCEL), metadata=HEADERS, timeout=30)
    assert answer.parcel.cadastral_number == PARCEL
    assert [o.name for o in answer.parcel.owners] == ["Dilnoza Karimova"]
    land_use = method.output_type.fields_by_name["parcel"].message_type.fields_by_name["land_use"]
    assert land_use.enum_type.values_by_number[answer.parcel.land_use].name == (
        "LAND_USE_RESIDENTIAL"
    )
    assert cadastre[0].calls == [PARCEL]
    kinds = [record.kind for record in fed.provider_log.records]
    assert kinds == [RecordKind.REQUEST_RECEIVED, RecordKind.RESPONSE_SENT]


# --- the protocol, request by request -------------------------------------------------------


async def reflect(
    fed: Harness,
    requests: Sequence[rpb.ServerReflectionRequest],
    *,
    path: str = V1ALPHA,
    metadata: Sequence[tuple[str, str]] = HEADERS,
) -> list[rpb.ServerReflectionResponse]:
    stream = fed.channel.stream_stream(
        path,
        request_serializer=rpb.ServerReflectionRequest.SerializeToString,
        response_deserializer=rpb.ServerReflectionResponse.FromString,
    )
    call = stream(iter(requests), metadata=tuple(metadata), timeout=30)
    return [response async for response in call]


def file_names(response: rpb.ServerReflectionResponse) -> list[str]:
    return [
        descriptor_pb2.FileDescriptorProto.FromString(data).name
        for data in response.file_descriptor_response.file_descriptor_proto
    ]


def outcome(response: rpb.ServerReflectionResponse) -> object:
    kind = response.WhichOneof("message_response")
    if kind == "file_descriptor_response":
        return file_names(response)
    if kind == "list_services_response":
        return [s.name for s in response.list_services_response.service]
    if kind == "all_extension_numbers_response":
        return list(response.all_extension_numbers_response.extension_number)
    codes = {code.value[0]: code.name for code in grpc.StatusCode}
    return codes[response.error_response.error_code]


def by_symbol(symbol: str) -> rpb.ServerReflectionRequest:
    return rpb.ServerReflectionRequest(file_containing_symbol=symbol)


def extension(containing_type: str, number: int) -> rpb.ServerReflectionRequest:
    return rpb.ServerReflectionRequest(
        file_containing_extension=rpb.ExtensionRequest(
            containing_type=containing_type, extension_number=number
        )
    )


Request = rpb.ServerReflectionRequest
LOOKUPS = [
    ("list", Request(list_services=""), ["cadastre.v1.Cadastre", "serai.meta.v1.Meta"]),
    ("file", Request(file_by_filename=CADASTRE_FILE), [CADASTRE_FILE]),
    ("unknown file", Request(file_by_filename="nope.proto"), "NOT_FOUND"),
    ("service", by_symbol("cadastre.v1.Cadastre"), [CADASTRE_FILE]),
    ("method", by_symbol("cadastre.v1.Cadastre.GetParcel"), [CADASTRE_FILE]),
    ("message", by_symbol("cadastre.v1.Parcel"), [CADASTRE_FILE]),
    ("field", by_symbol("cadastre.v1.Parcel.owners"), [CADASTRE_FILE]),
    ("enum value", by_symbol("cadastre.v1.LAND_USE_FOREST"), [CADASTRE_FILE]),
    ("metaservices", by_symbol("serai.meta.v1.Meta"), [META_FILE]),
    ("unknown symbol", by_symbol("tax.v1.Tax"), "NOT_FOUND"),
    ("extension numbers", Request(all_extension_numbers_of_type="cadastre.v1.Parcel"), []),
    ("extensions of an unknown type", Request(all_extension_numbers_of_type="x.Y"), "NOT_FOUND"),
    ("unknown extension", extension("cadastre.v1.Parcel", 100), "NOT_FOUND"),
    ("empty request", Request(), grpc.StatusCode.INVALID_ARGUMENT.name),
]


@pytest.mark.parametrize("path", [V1ALPHA, V1])
async def test_each_lookup_is_answered_and_the_stream_goes_on_after_errors(
    fed: Harness, path: str
) -> None:
    responses = await reflect(fed, [request for _, request, _ in LOOKUPS], path=path)
    assert len(responses) == len(LOOKUPS)
    for (case, request, expected), response in zip(LOOKUPS, responses, strict=True):
        assert outcome(response) == expected, case
        assert response.original_request == request, case
    assert fed.consumer_log.records == ()
    assert fed.provider_log.records == ()


@pytest.mark.parametrize(
    ("case", "metadata", "expected"),
    [
        (
            "no x-road-service",
            [("x-road-client", str(PROPERTY))],
            "INVALID_ARGUMENT client:invalid_identifier",
        ),
        (
            "no x-road-client",
            [("x-road-service", str(REGISTRY))],
            "INVALID_ARGUMENT client:invalid_identifier",
        ),
        (
            "malformed x-road-service",
            [("x-road-client", str(PROPERTY)), ("x-road-service", "UZ/GOV/CADASTRE/re gistry")],
            "INVALID_ARGUMENT client:invalid_identifier",
        ),
        (
            "a client this gateway does not serve",
            [("x-road-client", "UZ/GOV/STC/tax"), ("x-road-service", str(REGISTRY))],
            "NOT_FOUND client:unknown_client",
        ),
        (
            "an IS that may not speak for the client",
            [("x-road-client", str(ARCHIVE)), ("x-road-service", str(REGISTRY))],
            "UNAUTHENTICATED client:client_not_authenticated",
        ),
        (
            "a provider without descriptors",
            [("x-road-client", str(PROPERTY)), ("x-road-service", str(PROPERTY))],
            "NOT_FOUND provider:unknown_service",
        ),
        (
            "a subsystem the federation does not list",
            [("x-road-client", str(PROPERTY)), ("x-road-service", "UZ/GOV/NOBODY/x")],
            "NOT_FOUND provider:unknown_service",
        ),
    ],
)
async def test_a_bad_stream_is_refused_with_the_usual_codes(
    fed: Harness, case: str, metadata: list[tuple[str, str]], expected: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await reflect(fed, [rpb.ServerReflectionRequest(list_services="")], metadata=metadata)
    error = trailers_of(caught.value.trailing_metadata()).get("x-road-error", "")
    assert f"{caught.value.code().name} {':'.join(error.split(':', 2)[:2])}" == expected, case


# --- the index -----------------------------------------------------------------------------


def _file(
    name: str, package: str, *, deps: Sequence[str] = (), messages: Sequence[str] = ()
) -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(name=name, package=package, dependency=list(deps))
    for message in messages:
        file.message_type.add(name=message)
    return file


def _set(*files: descriptor_pb2.FileDescriptorProto) -> bytes:
    return descriptor_pb2.FileDescriptorSet(file=list(files)).SerializeToString()


def _names(files: tuple[bytes, ...] | None) -> list[str] | None:
    if files is None:
        return None
    return [descriptor_pb2.FileDescriptorProto.FromString(f).name for f in files]


def test_index_serves_a_file_with_its_dependencies_and_well_known_types() -> None:
    api = _file("a/api.proto", "a", deps=["a/types.proto", "google/protobuf/timestamp.proto"])
    api.service.add(name="Api").method.add(name="Get", input_type=".a.T", output_type=".a.T")
    nested = api.message_type.add(name="Outer")
    nested.nested_type.add(name="Inner")
    nested.enum_type.add(name="Kind").value.add(name="KIND_A", number=0)
    ext = api.extension.add(name="note", number=100, extendee=".a.T")
    ext.type = descriptor_pb2.FieldDescriptorProto.TYPE_STRING
    index = DescriptorIndex.decode(_set(api, _file("a/types.proto", "a", messages=["T"])))
    assert index.services == ("a.Api",)
    assert index.method_paths == ("/a.Api/Get",)
    assert _names(index.file_by_name("a/api.proto")) == [
        "a/api.proto",
        "a/types.proto",
        "google/protobuf/timestamp.proto",
    ]
    assert _names(index.file_by_name("google/protobuf/timestamp.proto")) == [
        "google/protobuf/timestamp.proto"
    ]
    for symbol in ("a.Api.Get", ".a.Outer.Inner", "a.Outer.Kind", "a.Outer.KIND_A", "a.note"):
        assert _names(index.file_containing_symbol(symbol)) is not None, symbol
    assert _names(index.file_containing_symbol("a.T")) == ["a/types.proto"]
    assert _names(index.file_containing_extension("a.T", 100)) == [
        "a/api.proto",
        "a/types.proto",
        "google/protobuf/timestamp.proto",
    ]
    assert index.extension_numbers("a.T") == (100,)
    assert index.extension_numbers("a.Nope") is None


def test_index_leaves_out_a_missing_dependency() -> None:
    index = DescriptorIndex.decode(_set(_file("b.proto", "b", deps=["missing.proto"])))
    assert _names(index.file_by_name("b.proto")) == ["b.proto"]
    assert index.file_by_name("missing.proto") is None


@pytest.mark.parametrize(
    ("case", "data"),
    [
        ("not a FileDescriptorSet", b"\xff\xff\xff"),
        ("two files of one name", _set(_file("c.proto", "c"), _file("c.proto", "d"))),
        ("a file without a name", _set(_file("", "c"))),
    ],
)
def test_index_refuses_unusable_sets(case: str, data: bytes) -> None:
    with pytest.raises(ValueError, match=r"\w") as caught:
        DescriptorIndex.decode(data)
    assert str(caught.value), case


class _Snapshot:
    def __init__(self, serial: int, descriptors: dict[SubsystemId, bytes]) -> None:
        self.serial = serial
        self._descriptors = descriptors

    def service_descriptor(self, subsystem: SubsystemId) -> bytes | None:
        return self._descriptors.get(subsystem)


def test_cache_follows_the_configuration_serial() -> None:
    cache = DescriptorCache()
    first = cast("ConfigurationSnapshot", _Snapshot(1, {REGISTRY: _set(_file("e.proto", "e"))}))
    index = cache.index(first, REGISTRY)
    assert cache.index(first, REGISTRY) is index
    with pytest.raises(DescriptorSetError, match="published no service descriptors"):
        cache.index(first, PROPERTY)
    withdrawn = cast("ConfigurationSnapshot", _Snapshot(2, {}))
    with pytest.raises(DescriptorSetError) as caught:
        cache.index(withdrawn, REGISTRY)
    assert caught.value.code.value == "unknown_service"
    assert caught.value.origin.value == "provider"
