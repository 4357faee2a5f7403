"""gateway.headers: round trips (examples and Hypothesis), every constructor and decode
refusal by name, origins, and the public surface of gateway.headers and gateway.errors."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import importlib
import string
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import GatewayError, HeaderError
from gateway.headers import (
    MAX_HEADER_BYTES,
    RequestHeader,
    ResponseHeader,
    request_header_for,
    response_header_for,
)
from serai.errors import ErrorCode, Origin, SeraiError
from serai.identifiers import ServiceId, SubsystemId
from serai_proto.transport.v1 import transport_pb2 as pb

CLIENT = SubsystemId.parse("UZ/GOV/MINJUST/property")
SERVICE = ServiceId.parse("UZ/GOV/CADASTRE/registry/cadastre.v1.Cadastre/GetParcel")
NOW = dt.datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=dt.UTC)
DIGEST = hashlib.sha256(b"body").digest()


def _request(**changes: Any) -> RequestHeader:
    fields: dict[str, Any] = {
        "message_id": "6f1c2d3e-0000-4000-8000-000000000001",
        "client": CLIENT,
        "service": SERVICE,
        "user_id": "EE38001085718",
        "issue": "case 2026/17",
        "created_at": NOW,
        "body_sha256": DIGEST,
        "body_size": 4,
    }
    fields.update(changes)
    return RequestHeader(**fields)


def _response(**changes: Any) -> ResponseHeader:
    fields: dict[str, Any] = {
        "message_id": "6f1c2d3e-0000-4000-8000-000000000001",
        "request_header_sha256": hashlib.sha256(b"request").digest(),
        "status_code": 5,
        "status_message": "parcel not found",
        "status_details": b"\x08\x05",
        "created_at": NOW,
        "body_sha256": hashlib.sha256(b"").digest(),
        "body_size": 0,
    }
    fields.update(changes)
    return ResponseHeader(**fields)


def _request_pb(**changes: Any) -> pb.RequestHeader:
    message = pb.RequestHeader()
    message.ParseFromString(_request().encode())
    for name, value in changes.items():
        setattr(message, name, value)
    return message


# --- surface -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "names"),
    [
        ("gateway.errors", {"GatewayError", "HeaderError", "SigningError", "VerificationError"}),
        (
            "gateway.headers",
            {
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
            },
        ),
    ],
)
def test_public_surface(module: str, names: set[str]) -> None:
    assert set(importlib.import_module(module).__all__) == names


def test_errors_form_one_tree() -> None:
    assert issubclass(GatewayError, SeraiError)
    assert issubclass(HeaderError, GatewayError)


# --- round trips -------------------------------------------------------------------------


def test_request_round_trip() -> None:
    header = _request()
    data = header.encode()
    assert RequestHeader.decode(data) == header
    message = pb.RequestHeader.FromString(data)
    assert message.client == "UZ/GOV/MINJUST/property"
    assert message.service == "UZ/GOV/CADASTRE/registry"
    assert message.method == "/cadastre.v1.Cadastre/GetParcel"
    assert message.protocol_version == 1


def test_response_round_trip() -> None:
    header = _response()
    assert ResponseHeader.decode(header.encode()) == header


def test_encoding_is_deterministic() -> None:
    assert _request().encode() == _request().encode()


def test_created_at_is_stored_in_utc() -> None:
    tashkent = dt.timezone(dt.timedelta(hours=5))
    header = _request(created_at=NOW.astimezone(tashkent))
    assert header.created_at.tzinfo is dt.UTC
    assert header.created_at == NOW
    assert header.encode() == _request().encode()


def test_request_header_for_computes_the_digest() -> None:
    header = request_header_for(
        message_id="m", client=CLIENT, service=SERVICE, body=b"body", created_at=NOW
    )
    assert (header.body_sha256, header.body_size) == (DIGEST, 4)
    assert (header.user_id, header.issue) == ("", "")


def test_response_header_for_computes_the_digest() -> None:
    header = response_header_for(
        message_id="m", request_header_sha256=DIGEST, body=b"body", created_at=NOW
    )
    assert (header.body_sha256, header.body_size, header.status_code) == (DIGEST, 4, 0)


_PART = st.text(string.ascii_letters + string.digits + "'()+,-.=?", min_size=1, max_size=12)
_IDENT = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True)
_SUBSYSTEMS = st.builds(
    lambda i, c, m, s: SubsystemId(instance=i, member_class=c, member_code=m, subsystem_code=s),
    _PART,
    _PART,
    _PART,
    _PART,
)
_SERVICES = st.builds(
    lambda sub, pkg, name, method: ServiceId(
        subsystem=sub, service_name=".".join([*pkg, name]), method_name=method
    ),
    _SUBSYSTEMS,
    st.lists(_IDENT, max_size=3),
    _IDENT,
    _IDENT,
)
_MESSAGE_IDS = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1)
_FREE_TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=40)
_TIMES = st.datetimes(timezones=st.just(dt.UTC))
_DIGESTS = st.binary(min_size=32, max_size=32)
_SIZES = st.integers(min_value=0, max_value=2**64 - 1)


@given(
    message_id=_MESSAGE_IDS,
    client=_SUBSYSTEMS,
    service=_SERVICES,
    user_id=_FREE_TEXT,
    issue=_FREE_TEXT,
    created_at=_TIMES,
    body_sha256=_DIGESTS,
    body_size=_SIZES,
)
def test_request_round_trip_property(**fields: Any) -> None:
    header = RequestHeader(**fields)
    data = header.encode()
    assert RequestHeader.decode(data) == header
    assert RequestHeader.decode(data).encode() == data


@given(
    message_id=_MESSAGE_IDS,
    request_header_sha256=_DIGESTS,
    status_code=st.integers(min_value=0, max_value=16),
    status_message=st.text(st.characters(codec="utf-8"), max_size=40),
    status_details=st.binary(max_size=40),
    created_at=_TIMES,
    body_sha256=_DIGESTS,
    body_size=_SIZES,
)
def test_response_round_trip_property(**fields: Any) -> None:
    header = ResponseHeader(**fields)
    data = header.encode()
    assert ResponseHeader.decode(data) == header
    assert ResponseHeader.decode(data).encode() == data


@given(st.binary(max_size=300))
def test_decoders_refuse_junk_only_with_header_error(data: bytes) -> None:
    for kind in (RequestHeader, ResponseHeader):
        code = None
        try:
            kind.decode(data)
        except HeaderError as exc:
            code = exc.code
        assert code in (None, ErrorCode.INVALID_REQUEST, ErrorCode.INVALID_IDENTIFIER)


# --- constructor refusals ----------------------------------------------------------------

_NAIVE = dt.datetime(2026, 3, 1, 12, 0)

REQUEST_REFUSALS: list[tuple[str, dict[str, Any], str]] = [
    ("version_2", {"protocol_version": 2}, "protocol version 2"),
    ("empty_message_id", {"message_id": ""}, "message_id must be 1 to 255"),
    ("long_message_id", {"message_id": "m" * 256}, "message_id must be 1 to 255"),
    ("space_in_message_id", {"message_id": "a b"}, "only visible ASCII"),
    ("non_ascii_message_id", {"message_id": "идентификатор"}, "only visible ASCII"),
    ("client_as_text", {"client": "UZ/GOV/MINJUST/property"}, "client must be a SubsystemId"),
    ("service_as_subsystem", {"service": CLIENT}, "service must be a ServiceId"),
    ("long_user_id", {"user_id": "u" * 256}, "user_id is 256 characters"),
    ("control_in_user_id", {"user_id": "a\nb"}, "user_id has '\\n' at index 1"),
    ("long_issue", {"issue": "i" * 1025}, "issue is 1025 characters"),
    ("control_in_issue", {"issue": "x\x00"}, "issue has '\\x00'"),
    ("surrogate_in_issue", {"issue": "x\ud800"}, "lone surrogates"),
    ("naive_created_at", {"created_at": _NAIVE}, "timezone-aware"),
    ("short_digest", {"body_sha256": b"\x00" * 31}, "32 bytes, got 31"),
    ("digest_as_text", {"body_sha256": "00" * 32}, "got str"),
    ("negative_size", {"body_size": -1}, "body_size must be an integer"),
    ("huge_size", {"body_size": 2**64}, "body_size must be an integer"),
]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [pytest.param(c, e, id=name) for name, c, e in REQUEST_REFUSALS],
)
def test_request_constructor_refuses(changes: dict[str, Any], expected: str) -> None:
    with pytest.raises(HeaderError, match="request header") as info:
        _request(**changes)
    assert expected in info.value.message
    assert (info.value.code, info.value.origin) == (ErrorCode.INVALID_REQUEST, Origin.CLIENT)


RESPONSE_REFUSALS: list[tuple[str, dict[str, Any], str]] = [
    ("version_0", {"protocol_version": 0}, "protocol version 0"),
    ("empty_message_id", {"message_id": ""}, "message_id"),
    ("short_request_hash", {"request_header_sha256": b""}, "request_header_sha256"),
    ("status_17", {"status_code": 17}, "status_code"),
    ("negative_status", {"status_code": -1}, "status_code"),
    ("long_status_message", {"status_message": "s" * 4097}, "status_message is 4097"),
    ("surrogate_status_message", {"status_message": "\udfff"}, "lone surrogates"),
    ("long_details", {"status_details": b"d" * (16 * 1024 + 1)}, "status_details is"),
    ("details_as_text", {"status_details": "d"}, "status_details must be bytes"),
    ("naive_created_at", {"created_at": _NAIVE}, "timezone-aware"),
    ("long_digest", {"body_sha256": b"\x00" * 33}, "got 33"),
]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [pytest.param(c, e, id=name) for name, c, e in RESPONSE_REFUSALS],
)
def test_response_constructor_refuses(changes: dict[str, Any], expected: str) -> None:
    with pytest.raises(HeaderError, match="response header") as info:
        _response(**changes)
    assert expected in info.value.message
    assert (info.value.code, info.value.origin) == (ErrorCode.INVALID_REQUEST, Origin.PROVIDER)


def test_status_message_passes_control_characters_through() -> None:
    header = _response(status_message="line 1\nline 2\ttab")
    assert ResponseHeader.decode(header.encode()) == header


def test_headers_are_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        _request().message_id = "other"  # type: ignore[misc]


# --- decode refusals ---------------------------------------------------------------------


def _bytes(message: pb.RequestHeader) -> bytes:
    return message.SerializeToString(deterministic=True)


def _unset_created_at() -> bytes:
    message = _request_pb()
    message.ClearField("created_at")
    return _bytes(message)


def _nanos(nanos: int) -> bytes:
    message = _request_pb()
    message.created_at.nanos = nanos
    return _bytes(message)


def _out_of_range_time() -> bytes:
    message = _request_pb()
    message.created_at.seconds = 2**40
    return _bytes(message)


_CANONICAL = _request().encode()

DECODE_REFUSALS: list[tuple[str, object, ErrorCode, str]] = [
    ("not_bytes", "text", ErrorCode.INVALID_REQUEST, "must be bytes"),
    ("bytearray", bytearray(_CANONICAL), ErrorCode.INVALID_REQUEST, "must be bytes"),
    ("too_long", b"\x00" * (MAX_HEADER_BYTES + 1), ErrorCode.INVALID_REQUEST, "at most"),
    ("not_protobuf", b"\xff\xff\xff", ErrorCode.INVALID_REQUEST, "not a serialized header"),
    ("empty", b"", ErrorCode.INVALID_REQUEST, "protocol version 0"),
    (
        "version_2",
        _bytes(_request_pb(protocol_version=2)),
        ErrorCode.INVALID_REQUEST,
        "protocol version 2 is not implemented",
    ),
    ("unknown_field", _CANONICAL + b"\x58\x01", ErrorCode.INVALID_REQUEST, "unknown"),
    (
        "repeated_field",
        _CANONICAL + _bytes(pb.RequestHeader(message_id="m")),
        ErrorCode.INVALID_REQUEST,
        "canonical",
    ),
    (
        "fields_out_of_order",
        _bytes(pb.RequestHeader(body_size=4)) + _CANONICAL.replace(b"\x50\x04", b""),
        ErrorCode.INVALID_REQUEST,
        "canonical",
    ),
    ("wrong_wire_type", _CANONICAL + b"\x30\x00", ErrorCode.INVALID_REQUEST, "unknown"),
    ("no_created_at", _unset_created_at(), ErrorCode.INVALID_REQUEST, "created_at is missing"),
    ("nanoseconds", _nanos(1), ErrorCode.INVALID_REQUEST, "sub-microsecond"),
    ("time_out_of_range", _out_of_range_time(), ErrorCode.INVALID_REQUEST, "out of range"),
    (
        "bad_message_id",
        _bytes(_request_pb(message_id="a\tb")),
        ErrorCode.INVALID_REQUEST,
        "visible ASCII",
    ),
    (
        "short_digest",
        _bytes(_request_pb(body_sha256=b"\x01")),
        ErrorCode.INVALID_REQUEST,
        "body_sha256",
    ),
    (
        "bad_client",
        _bytes(_request_pb(client="UZ/GOV/MINJUST")),
        ErrorCode.INVALID_IDENTIFIER,
        "subsystem id",
    ),
    (
        "bad_service_subsystem",
        _bytes(_request_pb(service="UZ/GOV/CADASTRE/reg istry")),
        ErrorCode.INVALID_IDENTIFIER,
        "subsystem id",
    ),
    (
        "bad_method",
        _bytes(_request_pb(method="cadastre.v1.Cadastre/GetParcel")),
        ErrorCode.INVALID_IDENTIFIER,
        "method path",
    ),
    (
        "response_bytes",
        _response().encode(),
        ErrorCode.INVALID_REQUEST,
        "",
    ),
]


@pytest.mark.parametrize(
    ("data", "code", "expected"),
    [pytest.param(d, c, e, id=name) for name, d, c, e in DECODE_REFUSALS],
)
def test_request_decode_refuses(data: Any, code: ErrorCode, expected: str) -> None:
    with pytest.raises(HeaderError) as info:
        RequestHeader.decode(data)
    assert expected in info.value.message
    assert (info.value.code, info.value.origin) == (code, Origin.CLIENT)


def test_request_fixture_is_canonical() -> None:
    # The byte patterns above rely on this.
    assert b"\x50\x04" in _CANONICAL
    assert RequestHeader.decode(_CANONICAL) == _request()


def _response_pb(**changes: Any) -> bytes:
    message = pb.ResponseHeader.FromString(_response().encode())
    for name, value in changes.items():
        setattr(message, name, value)
    return message.SerializeToString(deterministic=True)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(_response_pb(protocol_version=3), "protocol version 3", id="version_3"),
        pytest.param(_response_pb(status_code=99), "status_code", id="status_99"),
        pytest.param(_response_pb(request_header_sha256=b""), "request_header", id="no_binding"),
        pytest.param(_response().encode() + b"\x60\x01", "unknown", id="unknown_field"),
        pytest.param(_request().encode(), "", id="request_bytes"),
    ],
)
def test_response_decode_refuses(data: bytes, expected: str) -> None:
    with pytest.raises(HeaderError) as info:
        ResponseHeader.decode(data)
    assert expected in info.value.message
    assert (info.value.code, info.value.origin) == (ErrorCode.INVALID_REQUEST, Origin.PROVIDER)
