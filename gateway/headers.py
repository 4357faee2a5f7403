"""The request and response headers gateways sign (DESIGN §4, ``serai.transport.v1``).

:class:`RequestHeader` and :class:`ResponseHeader` are immutable domain values; this
module is the one place that turns them into ``transport_pb2`` header messages and back.
The encoded bytes are what a gateway signs (the JWS payload), logs and hashes; a
receiver decodes the header from the exact bytes whose signature it verified and never
re-serialises it.

Invariants of a header that exists (its keyword-only constructor checks them, so a
decoded header satisfies them too):

- ``protocol_version`` is :data:`PROTOCOL_VERSION` (1), the only version implemented.
- ``message_id`` is 1 to 255 characters of visible ASCII (``!`` to ``~``: no space, no
  control character), as it travels in the ``x-road-id`` metadata.
- ``client`` is a :class:`~serai.identifiers.SubsystemId`, ``service`` a
  :class:`~serai.identifiers.ServiceId` (provider subsystem plus gRPC method path).
- ``user_id`` (at most 255 characters) and ``issue`` (at most 1024) contain no control
  character (Unicode category Cc) and no lone surrogate; both may be empty.
- ``status_code`` is a gRPC status code, 0 to 16; ``status_message`` is at most 4096
  characters of any text but lone surrogates (a provider's message passes through
  unchanged); ``status_details`` at most 16 KiB.
- ``created_at`` is timezone-aware and stored in UTC, with microsecond precision.
- ``body_sha256`` and ``request_header_sha256`` are 32 bytes; ``body_size`` is
  0 to 2**64 - 1.

Guarantees of ``decode`` (each refusal has a test); input is untrusted and may be of any
type and length:

- It returns a header only if the input is, byte for byte, the canonical encoding of
  that header: ``decode(b).encode() == b``. Hence one header has one encoding, and
  the SHA-256 of its bytes names it (the response binds to that hash).
- Refusals raise :class:`~gateway.errors.HeaderError`: input that is not bytes, longer
  than :data:`MAX_HEADER_BYTES`, not a protobuf message of the type, carrying unknown
  fields, of a protocol version other than 1, not canonical (fields out of order,
  repeated, defaults written out, nanoseconds finer than microseconds), without
  ``created_at``, or breaking an invariant above, all with code ``invalid_request``;
  a malformed client, service subsystem or method path with ``invalid_identifier``.
- Errors about a request header have origin ``client``, about a response header
  ``provider``: the side that built the header is at fault.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final, NoReturn, Self, TypeVar

from google.protobuf.message import DecodeError
from google.protobuf.message import Message as _ProtoMessage
from google.protobuf.timestamp_pb2 import Timestamp

from gateway.errors import HeaderError
from serai.errors import ErrorCode, InvalidIdentifierError, Origin
from serai.identifiers import ServiceId, SubsystemId
from serai_proto.transport.v1 import transport_pb2 as pb

__all__ = [
    "MAX_HEADER_BYTES",
    "MAX_ISSUE_CHARS",
    "MAX_MESSAGE_ID_CHARS",
    "MAX_STATUS_DETAILS_BYTES",
    "MAX_STATUS_MESSAGE_CHARS",
    "MAX_USER_ID_CHARS",
    "PROTOCOL_VERSION",
    "RequestHeader",
    "ResponseHeader",
    "request_header_for",
    "response_header_for",
]

#: The transport protocol version this module implements (``serai.transport.v1``).
PROTOCOL_VERSION: Final = 1
MAX_MESSAGE_ID_CHARS: Final = 255
MAX_USER_ID_CHARS: Final = 255
MAX_ISSUE_CHARS: Final = 1024
MAX_STATUS_MESSAGE_CHARS: Final = 4096
MAX_STATUS_DETAILS_BYTES: Final = 16 * 1024
#: Longest encoded header ``decode`` reads; above every valid header.
MAX_HEADER_BYTES: Final = 64 * 1024
#: Highest gRPC status code (UNAUTHENTICATED).
MAX_STATUS_CODE: Final = 16

_SHA256_BYTES: Final = 32
_MAX_UINT64: Final = 2**64 - 1
_SHOW_MAX_CHARS: Final = 64

_M = TypeVar("_M", bound=_ProtoMessage)


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestHeader:
    """What a consumer gateway signs for one request (``serai.transport.v1.RequestHeader``)."""

    message_id: str
    client: SubsystemId
    service: ServiceId
    created_at: dt.datetime
    body_sha256: bytes
    body_size: int
    user_id: str = ""
    issue: str = ""
    protocol_version: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        check = _Checker(what="request header", origin=Origin.CLIENT)
        check.version(self.protocol_version)
        check.message_id(self.message_id)
        check.instance("client", self.client, SubsystemId)
        check.instance("service", self.service, ServiceId)
        check.text("user_id", self.user_id, MAX_USER_ID_CHARS, controls=False)
        check.text("issue", self.issue, MAX_ISSUE_CHARS, controls=False)
        object.__setattr__(self, "created_at", check.utc("created_at", self.created_at))
        check.digest("body_sha256", self.body_sha256)
        check.uint64("body_size", self.body_size)

    def encode(self) -> bytes:
        """The canonical protobuf encoding: the bytes that are signed, logged and hashed."""
        return pb.RequestHeader(
            protocol_version=self.protocol_version,
            message_id=self.message_id,
            client=str(self.client),
            service=str(self.service.subsystem),
            method=self.service.method_path,
            user_id=self.user_id,
            issue=self.issue,
            created_at=_timestamp(self.created_at),
            body_sha256=self.body_sha256,
            body_size=self.body_size,
        ).SerializeToString(deterministic=True)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """The header ``data`` encodes; raises :class:`HeaderError` (see module docstring)."""
        check = _Checker(what="request header", origin=Origin.CLIENT)
        message = check.parse(data, pb.RequestHeader)
        created_at = check.created_at(message)
        with check.identifiers():
            client = SubsystemId.parse(message.client)
            service = ServiceId.for_method(
                subsystem=SubsystemId.parse(message.service), method_path=message.method
            )
        return cls(
            protocol_version=message.protocol_version,
            message_id=message.message_id,
            client=client,
            service=service,
            user_id=message.user_id,
            issue=message.issue,
            created_at=created_at,
            body_sha256=message.body_sha256,
            body_size=message.body_size,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseHeader:
    """What a provider gateway signs for one response (``serai.transport.v1.ResponseHeader``)."""

    message_id: str
    request_header_sha256: bytes
    created_at: dt.datetime
    body_sha256: bytes
    body_size: int
    status_code: int = 0
    status_message: str = ""
    status_details: bytes = b""
    protocol_version: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        check = _Checker(what="response header", origin=Origin.PROVIDER)
        check.version(self.protocol_version)
        check.message_id(self.message_id)
        check.digest("request_header_sha256", self.request_header_sha256)
        if type(self.status_code) is not int or not 0 <= self.status_code <= MAX_STATUS_CODE:
            check.fail(f"status_code must be a gRPC status code 0..16, not {self.status_code!r}")
        check.text("status_message", self.status_message, MAX_STATUS_MESSAGE_CHARS, controls=True)
        if type(self.status_details) is not bytes:
            check.fail("status_details must be bytes")
        if len(self.status_details) > MAX_STATUS_DETAILS_BYTES:
            check.fail(
                f"status_details is {len(self.status_details)} bytes, "
                f"at most {MAX_STATUS_DETAILS_BYTES} allowed"
            )
        object.__setattr__(self, "created_at", check.utc("created_at", self.created_at))
        check.digest("body_sha256", self.body_sha256)
        check.uint64("body_size", self.body_size)

    def encode(self) -> bytes:
        """The canonical protobuf encoding: the bytes that are signed, logged and hashed."""
        return pb.ResponseHeader(
            protocol_version=self.protocol_version,
            message_id=self.message_id,
            request_header_sha256=self.request_header_sha256,
            status_code=self.status_code,
            status_message=self.status_message,
            status_details=self.status_details,
            created_at=_timestamp(self.created_at),
            body_sha256=self.body_sha256,
            body_size=self.body_size,
        ).SerializeToString(deterministic=True)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """The header ``data`` encodes; raises :class:`HeaderError` (see module docstring)."""
        check = _Checker(what="response header", origin=Origin.PROVIDER)
        message = check.parse(data, pb.ResponseHeader)
        return cls(
            protocol_version=message.protocol_version,
            message_id=message.message_id,
            request_header_sha256=message.request_header_sha256,
            status_code=message.status_code,
            status_message=message.status_message,
            status_details=message.status_details,
            created_at=check.created_at(message),
            body_sha256=message.body_sha256,
            body_size=message.body_size,
        )


def request_header_for(
    *,
    message_id: str,
    client: SubsystemId,
    service: ServiceId,
    body: bytes,
    created_at: dt.datetime,
    user_id: str = "",
    issue: str = "",
) -> RequestHeader:
    """The request header for sending ``body``: its SHA-256 and size computed here."""
    return RequestHeader(
        message_id=message_id,
        client=client,
        service=service,
        user_id=user_id,
        issue=issue,
        created_at=created_at,
        body_sha256=hashlib.sha256(body).digest(),
        body_size=len(body),
    )


def response_header_for(
    *,
    message_id: str,
    request_header_sha256: bytes,
    body: bytes,
    created_at: dt.datetime,
    status_code: int = 0,
    status_message: str = "",
    status_details: bytes = b"",
) -> ResponseHeader:
    """The response header for returning ``body`` (empty when the provider failed) to the
    request whose header bytes hash to ``request_header_sha256``."""
    return ResponseHeader(
        message_id=message_id,
        request_header_sha256=request_header_sha256,
        status_code=status_code,
        status_message=status_message,
        status_details=status_details,
        created_at=created_at,
        body_sha256=hashlib.sha256(body).digest(),
        body_size=len(body),
    )


# --- helpers ---------------------------------------------------------------------------


class _Checker:
    """Field checks that raise :class:`HeaderError` naming the header and its origin."""

    __slots__ = ("_origin", "_what")

    def __init__(self, *, what: str, origin: Origin) -> None:
        self._what = what
        self._origin = origin

    def fail(self, detail: str, code: ErrorCode = ErrorCode.INVALID_REQUEST) -> NoReturn:
        raise HeaderError(f"{self._what}: {detail}", code=code, origin=self._origin)

    def version(self, version: object) -> None:
        if version != PROTOCOL_VERSION or type(version) is not int:
            self.fail(
                f"protocol version {_show(version)} is not implemented "
                f"(this gateway speaks {PROTOCOL_VERSION})"
            )

    def message_id(self, value: object) -> None:
        if type(value) is not str or not 1 <= len(value) <= MAX_MESSAGE_ID_CHARS:
            self.fail(
                f"message_id must be 1 to {MAX_MESSAGE_ID_CHARS} characters, got {_show(value)}"
            )
        for index, char in enumerate(value):
            if not "!" <= char <= "~":
                self.fail(
                    f"message_id has {char!a} at index {index}; only visible ASCII "
                    "('!' to '~') is allowed"
                )

    def instance(self, field: str, value: object, kind: type) -> None:
        if not isinstance(value, kind):
            self.fail(f"{field} must be a {kind.__name__}, not {type(value).__name__}")

    def text(self, field: str, value: object, max_chars: int, *, controls: bool) -> None:
        if type(value) is not str:
            self.fail(f"{field} must be a str, not {type(value).__name__}")
        if len(value) > max_chars:
            self.fail(f"{field} is {len(value)} characters, at most {max_chars} allowed")
        if value.isprintable() or (controls and value.isascii()):
            return
        for index, char in enumerate(value):
            category = unicodedata.category(char)
            if category == "Cs" or (category == "Cc" and not controls):
                self.fail(
                    f"{field} has {char!a} at index {index}; control characters and "
                    "lone surrogates are not allowed"
                )

    def utc(self, field: str, value: object) -> dt.datetime:
        if not isinstance(value, dt.datetime) or value.utcoffset() is None:
            self.fail(f"{field} must be a timezone-aware datetime, got {_show(value)}")
        return value.astimezone(dt.UTC)

    def digest(self, field: str, value: object) -> None:
        if type(value) is not bytes or len(value) != _SHA256_BYTES:
            size = len(value) if isinstance(value, bytes) else type(value).__name__
            self.fail(f"{field} must be a SHA-256 digest of 32 bytes, got {size}")

    def uint64(self, field: str, value: object) -> None:
        if type(value) is not int or not 0 <= value <= _MAX_UINT64:
            self.fail(f"{field} must be an integer 0..2**64-1, got {_show(value)}")

    def parse(self, data: object, kind: Callable[[], _M]) -> _M:
        if type(data) is not bytes:
            self.fail(f"must be bytes, not {type(data).__name__}")
        if len(data) > MAX_HEADER_BYTES:
            self.fail(f"is {len(data)} bytes, at most {MAX_HEADER_BYTES} allowed")
        message = kind()
        try:
            message.ParseFromString(data)
        except DecodeError as exc:
            self.fail(f"is not a serialized header: {exc}")
        size = message.ByteSize()
        message.DiscardUnknownFields()  # type: ignore[attr-defined]  # not in types-protobuf
        if message.ByteSize() != size:
            self.fail("has fields unknown to protocol version 1")
        self.version(getattr(message, "protocol_version", None))
        if message.SerializeToString(deterministic=True) != data:
            self.fail(
                "is not in canonical encoding (fields out of order or repeated, "
                "or default values written out)"
            )
        return message

    def created_at(self, message: pb.RequestHeader | pb.ResponseHeader) -> dt.datetime:
        if not message.HasField("created_at"):
            self.fail("created_at is missing")
        stamp = message.created_at
        if stamp.nanos % 1000 != 0:
            self.fail("created_at has sub-microsecond precision")
        try:
            return stamp.ToDatetime(tzinfo=dt.UTC)
        except (ValueError, OverflowError) as exc:
            raise HeaderError(
                f"{self._what}: created_at is out of range: {exc}", origin=self._origin
            ) from exc

    @contextlib.contextmanager
    def identifiers(self) -> Iterator[None]:
        """Turn an :class:`InvalidIdentifierError` into a :class:`HeaderError` of the side."""
        try:
            yield
        except InvalidIdentifierError as exc:
            raise HeaderError(
                f"{self._what}: {exc.message}",
                code=ErrorCode.INVALID_IDENTIFIER,
                origin=self._origin,
            ) from exc


def _timestamp(value: dt.datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _show(value: object) -> str:
    text = ascii(value)
    if len(text) <= _SHOW_MAX_CHARS:
        return text
    return f"{text[:_SHOW_MAX_CHARS]}... ({len(text)} characters)"
