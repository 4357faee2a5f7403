"""The wire contracts in proto/: generated code is fresh, and the contracts keep their rules.

The rules: every package is versioned (``….v1``) and lives at
``serai_proto/<area>/v1/<area>.proto``; every message, field, oneof, enum, enum value,
service and rpc has a leading comment; enums follow the ``TYPE_NAME_VALUE`` style with an
``…_UNSPECIFIED`` zero; no field is a float (amounts are integer minor units); and each
service offers the methods the rest of the system relies on.
"""

from __future__ import annotations

import importlib.resources
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import descriptor, descriptor_pb2

from serai.errors import Origin
from serai_proto.admin.v1 import admin_pb2
from serai_proto.cadastre.v1 import cadastre_pb2
from serai_proto.meta.v1 import meta_pb2
from serai_proto.property.v1 import property_pb2
from serai_proto.registry.v1 import registry_pb2
from serai_proto.tax.v1 import tax_pb2
from serai_proto.transport.v1 import transport_pb2

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"

_File = descriptor_pb2.FileDescriptorProto
_Message = descriptor_pb2.DescriptorProto
_Enum = descriptor_pb2.EnumDescriptorProto
_Service = descriptor_pb2.ServiceDescriptorProto
_Field = descriptor_pb2.FieldDescriptorProto

EXPECTED_FILES = {
    "serai_proto/admin/v1/admin.proto": "serai.admin.v1",
    "serai_proto/cadastre/v1/cadastre.proto": "cadastre.v1",
    "serai_proto/globalconf/v1/globalconf.proto": "serai.globalconf.v1",
    "serai_proto/meta/v1/meta.proto": "serai.meta.v1",
    "serai_proto/property/v1/property.proto": "property.v1",
    "serai_proto/registry/v1/registry.proto": "serai.registry.v1",
    "serai_proto/tax/v1/tax.proto": "tax.v1",
    "serai_proto/transport/v1/transport.proto": "serai.transport.v1",
}


def test_generated_code_is_fresh() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "genproto.py"), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[_File]:
    """Our .proto files compiled with their comments (SourceCodeInfo)."""
    out = tmp_path_factory.mktemp("descriptors") / "set.binpb"
    wkt = Path(str(importlib.resources.files("grpc_tools") / "_proto"))
    sources = sorted(str(p) for p in PROTO_DIR.rglob("*.proto"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"--proto_path={PROTO_DIR}",
            f"--proto_path={wkt}",
            "--include_source_info",
            f"--descriptor_set_out={out}",
            *sources,
        ],
        check=True,
        capture_output=True,
    )
    descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    return list(descriptor_set.file)


def test_every_expected_file_and_no_other(files: list[_File]) -> None:
    assert {f.name: f.package for f in files} == EXPECTED_FILES


def test_packages_are_versioned_and_match_their_path(files: list[_File]) -> None:
    for f in files:
        assert re.fullmatch(r"[a-z]+(\.[a-z]+)*\.v1", f.package), f.name
        area = f.package.split(".")[-2]
        assert f.name == f"serai_proto/{area}/v1/{area}.proto"
        assert f.syntax == "proto3", f.name


def _elements(f: _File) -> Iterator[tuple[tuple[int, ...], str]]:
    """(SourceCodeInfo path, full name) of every commentable element of a file."""
    for i, message in enumerate(f.message_type):
        yield from _message_elements(message, (_File.MESSAGE_TYPE_FIELD_NUMBER, i), f.package)
    for i, enum in enumerate(f.enum_type):
        yield from _enum_elements(enum, (_File.ENUM_TYPE_FIELD_NUMBER, i), f.package)
    for i, service in enumerate(f.service):
        path = (_File.SERVICE_FIELD_NUMBER, i)
        name = f"{f.package}.{service.name}"
        yield path, name
        for j, method in enumerate(service.method):
            yield (*path, _Service.METHOD_FIELD_NUMBER, j), f"{name}.{method.name}"


def _message_elements(
    message: _Message, path: tuple[int, ...], scope: str
) -> Iterator[tuple[tuple[int, ...], str]]:
    name = f"{scope}.{message.name}"
    yield path, name
    for i, field in enumerate(message.field):
        yield (*path, _Message.FIELD_FIELD_NUMBER, i), f"{name}.{field.name}"
    for i, oneof in enumerate(message.oneof_decl):
        # proto3 `optional` fields sit in synthetic oneofs that have no source of their own.
        if not oneof.name.startswith("_"):
            yield (*path, _Message.ONEOF_DECL_FIELD_NUMBER, i), f"{name}.{oneof.name}"
    for i, nested in enumerate(message.nested_type):
        yield from _message_elements(nested, (*path, _Message.NESTED_TYPE_FIELD_NUMBER, i), name)
    for i, enum in enumerate(message.enum_type):
        yield from _enum_elements(enum, (*path, _Message.ENUM_TYPE_FIELD_NUMBER, i), name)


def _enum_elements(
    enum: _Enum, path: tuple[int, ...], scope: str
) -> Iterator[tuple[tuple[int, ...], str]]:
    name = f"{scope}.{enum.name}"
    yield path, name
    for i, value in enumerate(enum.value):
        yield (*path, _Enum.VALUE_FIELD_NUMBER, i), f"{name}.{value.name}"


def test_every_element_has_a_leading_comment(files: list[_File]) -> None:
    uncommented: list[str] = []
    for f in files:
        comments = {
            tuple(location.path): location.leading_comments.strip()
            for location in f.source_code_info.location
        }
        uncommented.extend(name for path, name in _elements(f) if not comments.get(path))
    assert uncommented == []


def test_the_comment_check_sees_every_kind_of_element(files: list[_File]) -> None:
    # Guards the test above against walking too little: each kind occurs somewhere.
    paths = [path for f in files for path, _ in _elements(f)]
    assert any(p[0] == _File.SERVICE_FIELD_NUMBER and len(p) == 4 for p in paths)  # rpc
    assert any(p[0] == _File.ENUM_TYPE_FIELD_NUMBER and len(p) == 4 for p in paths)  # value
    assert any(len(p) == 4 and p[2] == _Message.FIELD_FIELD_NUMBER for p in paths)
    assert any(len(p) == 4 and p[2] == _Message.ONEOF_DECL_FIELD_NUMBER for p in paths)


def test_enums_are_prefixed_and_start_unspecified(files: list[_File]) -> None:
    for f in files:
        for enum in _all_enums(f):
            prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"
            assert enum.value[0].number == 0
            assert enum.value[0].name == prefix + "UNSPECIFIED"
            for value in enum.value:
                assert value.name.startswith(prefix), value.name


def _all_enums(f: _File) -> Iterator[_Enum]:
    yield from f.enum_type
    stack = list(f.message_type)
    while stack:
        message = stack.pop()
        yield from message.enum_type
        stack.extend(message.nested_type)


def test_no_floating_point_fields(files: list[_File]) -> None:
    floating = {_Field.TYPE_FLOAT, _Field.TYPE_DOUBLE}
    found = [
        f"{f.package}.{message.name}.{field.name}"
        for f in files
        for message in f.message_type
        for field in message.field
        if field.type in floating
    ]
    assert found == []


SERVICES = [
    pytest.param(
        transport_pb2.DESCRIPTOR, "Transport", {"Exchange", "ExchangeStream"}, id="transport"
    ),
    pytest.param(
        meta_pb2.DESCRIPTOR,
        "Meta",
        {"ListClients", "ListMethods", "AllowedMethods", "GetServiceDescriptors"},
        id="meta",
    ),
    pytest.param(
        admin_pb2.DESCRIPTOR,
        "GatewayAdmin",
        {
            "GrantAccess",
            "RevokeAccess",
            "ListAccess",
            "GetSubsystemSettings",
            "SetSubsystemSettings",
            "GetStatus",
            "GetTreeHead",
            "FindRecords",
            "GetInclusionProof",
            "GetConsistencyProof",
            "ExportEvidence",
        },
        id="admin",
    ),
    pytest.param(
        registry_pb2.DESCRIPTOR,
        "RegistryManagement",
        {
            "AddMember",
            "RemoveMember",
            "ListMembers",
            "AddSubsystem",
            "RemoveSubsystem",
            "AddGateway",
            "RemoveGateway",
            "ListGateways",
            "SetGatewaySubsystems",
            "AddGlobalGroup",
            "RemoveGlobalGroup",
            "ListGlobalGroups",
            "AddGlobalGroupMember",
            "RemoveGlobalGroupMember",
            "AddCertificateAuthority",
            "RemoveCertificateAuthority",
            "ListCertificateAuthorities",
            "AddTimestampingAuthority",
            "RemoveTimestampingAuthority",
            "ListTimestampingAuthorities",
            "SetServiceDescriptor",
            "GetAuditLog",
            "GetCurrentConfiguration",
        },
        id="registry",
    ),
    pytest.param(
        tax_pb2.DESCRIPTOR, "Tax", {"GetTaxDebt", "GetTaxpayer", "ListAssessments"}, id="tax"
    ),
    pytest.param(
        cadastre_pb2.DESCRIPTOR,
        "Cadastre",
        {"GetParcel", "ListEncumbrances", "ListParcelsByOwner"},
        id="cadastre",
    ),
    pytest.param(
        property_pb2.DESCRIPTOR,
        "PropertyRegistration",
        {"RegisterTransfer", "GetTransfer"},
        id="property",
    ),
]


@pytest.mark.parametrize(("file", "service", "methods"), SERVICES)
def test_services_offer_their_methods(
    file: descriptor.FileDescriptor, service: str, methods: set[str]
) -> None:
    assert {m.name for m in file.services_by_name[service].methods} == methods


def test_agency_method_paths_match_design() -> None:
    method = cadastre_pb2.DESCRIPTOR.services_by_name["Cadastre"].methods_by_name["GetParcel"]
    assert f"/{method.containing_service.full_name}/{method.name}" == (
        "/cadastre.v1.Cadastre/GetParcel"
    )
    assert tax_pb2.DESCRIPTOR.services_by_name["Tax"].full_name == "tax.v1.Tax"
    registration = property_pb2.DESCRIPTOR.services_by_name["PropertyRegistration"]
    assert registration.full_name == "property.v1.PropertyRegistration"


def test_exchange_stream_is_bidirectional_and_export_streams() -> None:
    stream = transport_pb2.DESCRIPTOR.services_by_name["Transport"].methods_by_name[
        "ExchangeStream"
    ]
    assert (stream.client_streaming, stream.server_streaming) == (True, True)
    export = admin_pb2.DESCRIPTOR.services_by_name["GatewayAdmin"].methods_by_name["ExportEvidence"]
    assert (export.client_streaming, export.server_streaming) == (False, True)


def test_error_origins_match_the_error_module() -> None:
    origins = {
        value.name.removeprefix("ERROR_ORIGIN_").lower()
        for value in transport_pb2.ErrorOrigin.DESCRIPTOR.values
        if value.number != 0
    }
    assert origins == {origin.value for origin in Origin}
