"""The one boundary of the exchange code with ``transport_pb2``'s Exchange messages.

:class:`ExchangeRequestMessage` and :class:`ExchangeResponseMessage` are what the
consumer and provider code handle; this module encodes and decodes them. Headers are
not decoded here: they stay the signed JWS text until :mod:`gateway.signing` verifies it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, TypeVar

from google.protobuf.message import DecodeError

from gateway.errors import GatewayError
from serai.errors import ErrorCode, Origin
from serai_proto.transport.v1 import transport_pb2 as pb

__all__ = [
    "EXCHANGE_METHOD",
    "TRANSPORT_SERVICE",
    "ExchangeRequestMessage",
    "ExchangeResponseMessage",
    "Receipt",
]

TRANSPORT_SERVICE: Final = "serai.transport.v1.Transport"
EXCHANGE_METHOD: Final = f"/{TRANSPORT_SERVICE}/Exchange"


@dataclass(frozen=True, slots=True, kw_only=True)
class Receipt:
    """Where the provider gateway logged an exchange (``LogReceipt``)."""

    gateway_id: str
    request_index: int
    response_index: int
    tree_size: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ExchangeRequestMessage:
    signed_header: str
    body: bytes
    certificate_chain: tuple[bytes, ...]
    ocsp_response: bytes
    #: Time left for the exchange when sent, seconds; None: no deadline.
    timeout_s: float | None

    def encode(self) -> bytes:
        message = pb.ExchangeRequest(
            signed_header=self.signed_header,
            body=self.body,
            certificate_chain=list(self.certificate_chain),
            ocsp_response=self.ocsp_response,
        )
        if self.timeout_s is not None:
            message.timeout.FromNanoseconds(max(0, int(self.timeout_s * 1e9)))
        return message.SerializeToString()

    @classmethod
    def decode(cls, data: bytes) -> ExchangeRequestMessage:
        message = _parse(pb.ExchangeRequest(), data, Origin.CLIENT)
        timeout = message.timeout.ToNanoseconds() / 1e9 if message.HasField("timeout") else None
        return cls(
            signed_header=message.signed_header,
            body=message.body,
            certificate_chain=tuple(message.certificate_chain),
            ocsp_response=message.ocsp_response,
            timeout_s=timeout,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ExchangeResponseMessage:
    signed_header: str
    body: bytes
    certificate_chain: tuple[bytes, ...]
    ocsp_response: bytes
    receipt: Receipt | None

    def encode(self) -> bytes:
        message = pb.ExchangeResponse(
            signed_header=self.signed_header,
            body=self.body,
            certificate_chain=list(self.certificate_chain),
            ocsp_response=self.ocsp_response,
        )
        if self.receipt is not None:
            message.receipt.CopyFrom(
                pb.LogReceipt(
                    gateway_id=self.receipt.gateway_id,
                    request_leaf_index=self.receipt.request_index,
                    response_leaf_index=self.receipt.response_index,
                    tree_size=self.receipt.tree_size,
                )
            )
        return message.SerializeToString()

    @classmethod
    def decode(cls, data: bytes) -> ExchangeResponseMessage:
        message = _parse(pb.ExchangeResponse(), data, Origin.PROVIDER)
        receipt = None
        if message.HasField("receipt"):
            receipt = Receipt(
                gateway_id=message.receipt.gateway_id,
                request_index=message.receipt.request_leaf_index,
                response_index=message.receipt.response_leaf_index,
                tree_size=message.receipt.tree_size,
            )
        return cls(
            signed_header=message.signed_header,
            body=message.body,
            certificate_chain=tuple(message.certificate_chain),
            ocsp_response=message.ocsp_response,
            receipt=receipt,
        )


_M = TypeVar("_M", pb.ExchangeRequest, pb.ExchangeResponse)


def _parse(message: _M, data: bytes, origin: Origin) -> _M:
    try:
        message.ParseFromString(data)
    except DecodeError as exc:
        raise GatewayError(
            f"not a serialized {type(message).__name__}: {exc}",
            code=ErrorCode.INVALID_REQUEST,
            origin=origin,
        ) from exc
    return message
