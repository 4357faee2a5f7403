"""The one boundary of the gateway with ``meta_pb2``: metaservice requests and answers.

Requests are decoded (their bodies are untrusted: a body that does not decode is
``invalid_request``); answers are encoded from plain values.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from gateway.errors import GatewayError
from serai.errors import ErrorCode, Origin
from serai_proto.meta.v1 import meta_pb2 as pb

__all__ = [
    "META_FILE",
    "decode_list_clients_request",
    "decode_provider_request",
    "encode_allowed_methods",
    "encode_list_clients",
    "encode_list_methods",
    "encode_service_descriptors",
]

_M = TypeVar("_M", bound=Message)

#: The serialized FileDescriptorProto of ``serai/meta/v1/meta.proto`` (for reflection).
META_FILE: bytes = pb.DESCRIPTOR.serialized_pb


def decode_list_clients_request(body: bytes) -> str:
    """The ``instance_id`` of a ListClientsRequest."""
    return _decode(pb.ListClientsRequest(), body).instance_id


def decode_provider_request(body: bytes) -> str:
    """The ``provider_subsystem`` of a ListMethods, AllowedMethods or GetServiceDescriptors
    request (the three have the same shape: field 1, a string)."""
    return _decode(pb.ListMethodsRequest(), body).provider_subsystem


def encode_list_clients(clients: Iterable[tuple[str, str]]) -> bytes:
    """A ListClientsResponse of (id, member name) pairs, in the order given."""
    return pb.ListClientsResponse(
        clients=[pb.Client(id=i, member_name=name) for i, name in clients]
    ).SerializeToString()


def encode_list_methods(methods: Iterable[str]) -> bytes:
    """A ListMethodsResponse."""
    return pb.ListMethodsResponse(methods=list(methods)).SerializeToString()


def encode_allowed_methods(methods: Iterable[str]) -> bytes:
    """An AllowedMethodsResponse."""
    return pb.AllowedMethodsResponse(methods=list(methods)).SerializeToString()


def encode_service_descriptors(file_descriptor_set: bytes) -> bytes:
    """A GetServiceDescriptorsResponse carrying the serialized FileDescriptorSet."""
    return pb.GetServiceDescriptorsResponse(
        file_descriptor_set=file_descriptor_set
    ).SerializeToString()


def _decode(message: _M, body: bytes) -> _M:
    try:
        message.ParseFromString(body)
    except DecodeError as exc:
        raise GatewayError(
            f"the request body is not a {message.DESCRIPTOR.name}: {exc}",
            code=ErrorCode.INVALID_REQUEST,
            origin=Origin.CLIENT,
        ) from exc
    return message
