"""The error tree and the one map from codes to gRPC statuses (DESIGN §4)."""

from __future__ import annotations

import re

import grpc
import pytest

from certs.errors import CertificateError, KeyFileError, OCSPError, PKIError, TimestampError
from serai import errors
from serai.errors import (
    ConfigError,
    ErrorCode,
    InvalidIdentifierError,
    Origin,
    SeraiError,
    grpc_status_for,
)


def test_every_code_has_a_status() -> None:
    for code in ErrorCode:
        assert isinstance(grpc_status_for(code), grpc.StatusCode)


def test_codes_are_stable_snake_case() -> None:
    for code in ErrorCode:
        assert re.fullmatch(r"[a-z]+(_[a-z0-9]+)*", code.value), code
        assert code.value == code.name.lower()


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (ErrorCode.INVALID_IDENTIFIER, grpc.StatusCode.INVALID_ARGUMENT),
        (ErrorCode.UNKNOWN_CLIENT, grpc.StatusCode.NOT_FOUND),
        (ErrorCode.UNKNOWN_SERVICE, grpc.StatusCode.NOT_FOUND),
        (ErrorCode.ACCESS_DENIED, grpc.StatusCode.PERMISSION_DENIED),
        (ErrorCode.SIGNATURE_INVALID, grpc.StatusCode.UNAUTHENTICATED),
        (ErrorCode.CERTIFICATE_REVOKED, grpc.StatusCode.UNAUTHENTICATED),
        (ErrorCode.PEER_NOT_REGISTERED, grpc.StatusCode.UNAUTHENTICATED),
        (ErrorCode.REPLAY_DETECTED, grpc.StatusCode.ALREADY_EXISTS),
        (ErrorCode.MESSAGE_TOO_LARGE, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (ErrorCode.GLOBALCONF_EXPIRED, grpc.StatusCode.UNAVAILABLE),
        (ErrorCode.TIMESTAMPING_OVERDUE, grpc.StatusCode.UNAVAILABLE),
        (ErrorCode.PROVIDER_UNAVAILABLE, grpc.StatusCode.UNAVAILABLE),
        (ErrorCode.LOG_UNAVAILABLE, grpc.StatusCode.UNAVAILABLE),
        (ErrorCode.DEADLINE_EXCEEDED, grpc.StatusCode.DEADLINE_EXCEEDED),
    ],
)
def test_design_mapping(code: ErrorCode, status: grpc.StatusCode) -> None:
    assert grpc_status_for(code) is status


def test_wire_value_names_origin_code_and_message() -> None:
    err = SeraiError("no such member", code=ErrorCode.UNKNOWN_MEMBER, origin=Origin.CLIENT)
    assert err.wire_value() == "client:unknown_member:no such member"
    assert err.status is grpc.StatusCode.NOT_FOUND
    assert str(err) == "unknown_member: no such member"


@pytest.mark.parametrize(
    ("cls", "code", "origin"),
    [
        (InvalidIdentifierError, ErrorCode.INVALID_IDENTIFIER, Origin.CLIENT),
        (ConfigError, ErrorCode.INVALID_CONFIG, Origin.GATEWAY),
        (KeyFileError, ErrorCode.KEY_UNAVAILABLE, Origin.GATEWAY),
        (CertificateError, ErrorCode.CERTIFICATE_INVALID, Origin.CLIENT),
        (OCSPError, ErrorCode.OCSP_INVALID, Origin.GATEWAY),
        (TimestampError, ErrorCode.TIMESTAMP_INVALID, Origin.GATEWAY),
    ],
)
def test_defaults_of_each_error(cls: type[SeraiError], code: ErrorCode, origin: Origin) -> None:
    err = cls("x")
    assert isinstance(err, SeraiError)
    assert err.code is code
    assert err.origin is origin


def test_pki_errors_share_one_root() -> None:
    for cls in (KeyFileError, CertificateError, OCSPError, TimestampError):
        assert issubclass(cls, PKIError)


def test_public_surface() -> None:
    assert sorted(errors.__all__) == sorted(
        [
            "ERROR_METADATA_KEY",
            "ConfigError",
            "ErrorCode",
            "InvalidIdentifierError",
            "Origin",
            "SeraiError",
            "grpc_status_for",
        ]
    )
    assert errors.ERROR_METADATA_KEY == "x-road-error"
