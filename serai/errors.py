"""The error tree shared by every Serai package, and the one map from codes to gRPC statuses.

Every refusal Serai makes carries a stable snake_case :class:`ErrorCode` and an
:class:`Origin` (who is at fault: the client, a gateway, or the provider). On the wire
it becomes a gRPC status plus the trailing metadata key ``x-road-error``; this module is
the only place that maps a code to a status (DESIGN §4).

Exception tree::

    SeraiError                      root of everything Serai raises on purpose
    ├── InvalidIdentifierError      serai.identifiers: malformed member/subsystem/... id
    ├── ConfigError                 a configuration file or option is wrong
    └── certs.errors.PKIError       certs: keys, certificates, OCSP, time-stamping
        ├── KeyFileError            a private key file cannot be used (mode, passphrase)
        ├── CertificateError        path validation refused a certificate
        ├── OCSPError               an OCSP response is missing, bad or stale
        └── TimestampError          an RFC 3161 reply or token does not verify

Foreign exceptions (``cryptography``, ``asn1crypto``, OS errors) are wrapped where they
enter, with ``raise ... from exc``, so callers only ever catch :class:`SeraiError`.
"""

from __future__ import annotations

import enum
from typing import Final

import grpc

__all__ = [
    "ERROR_METADATA_KEY",
    "ConfigError",
    "ErrorCode",
    "InvalidIdentifierError",
    "Origin",
    "SeraiError",
    "grpc_status_for",
]

#: Trailing metadata key that carries ``origin:code:message`` of a refusal.
ERROR_METADATA_KEY: Final = "x-road-error"


class Origin(enum.StrEnum):
    """Who caused a refusal."""

    CLIENT = "client"
    GATEWAY = "gateway"
    PROVIDER = "provider"


class ErrorCode(enum.StrEnum):
    """Stable codes of every refusal. Values never change once released."""

    # Input and identity
    INVALID_IDENTIFIER = "invalid_identifier"
    INVALID_REQUEST = "invalid_request"
    INVALID_CONFIG = "invalid_config"
    UNKNOWN_CLIENT = "unknown_client"
    UNKNOWN_SERVICE = "unknown_service"
    UNKNOWN_MEMBER = "unknown_member"
    NOT_FOUND = "not_found"
    ALREADY_EXISTS = "already_exists"
    FAILED_PRECONDITION = "failed_precondition"
    MESSAGE_TOO_LARGE = "message_too_large"
    # Authorisation and authentication
    ACCESS_DENIED = "access_denied"
    CLIENT_NOT_AUTHENTICATED = "client_not_authenticated"
    PEER_NOT_REGISTERED = "peer_not_registered"
    SIGNATURE_INVALID = "signature_invalid"
    CERTIFICATE_INVALID = "certificate_invalid"
    CERTIFICATE_EXPIRED = "certificate_expired"
    CERTIFICATE_REVOKED = "certificate_revoked"
    CERTIFICATE_UNTRUSTED = "certificate_untrusted"
    OCSP_INVALID = "ocsp_invalid"
    OCSP_STALE = "ocsp_stale"
    OCSP_UNAVAILABLE = "ocsp_unavailable"
    TIMESTAMP_INVALID = "timestamp_invalid"
    REPLAY_DETECTED = "replay_detected"
    CLOCK_SKEW = "clock_skew"
    # Keys
    KEY_FILE_INSECURE = "key_file_insecure"
    KEY_PASSPHRASE_INVALID = "key_passphrase_invalid"  # noqa: S105  (a code, not a secret)
    KEY_UNAVAILABLE = "key_unavailable"
    # Availability
    GLOBALCONF_EXPIRED = "globalconf_expired"
    GLOBALCONF_INVALID = "globalconf_invalid"
    GLOBALCONF_SIGNATURE_INVALID = "globalconf_signature_invalid"
    GLOBALCONF_UNKNOWN_SIGNER = "globalconf_unknown_signer"
    GLOBALCONF_ROLLBACK = "globalconf_rollback"
    GLOBALCONF_EQUIVOCATION = "globalconf_equivocation"
    GLOBALCONF_WRONG_INSTANCE = "globalconf_wrong_instance"
    GLOBALCONF_UNAVAILABLE = "globalconf_unavailable"
    UNAUTHENTICATED = "unauthenticated"
    PERMISSION_DENIED = "permission_denied"
    TIMESTAMPING_OVERDUE = "timestamping_overdue"
    TSA_UNAVAILABLE = "tsa_unavailable"
    PROVIDER_UNAVAILABLE = "provider_unavailable"
    GATEWAY_OVERLOADED = "gateway_overloaded"
    LOG_UNAVAILABLE = "log_unavailable"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    INTERNAL = "internal"


_STATUS: Final[dict[ErrorCode, grpc.StatusCode]] = {
    ErrorCode.INVALID_IDENTIFIER: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.INVALID_REQUEST: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.INVALID_CONFIG: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.UNKNOWN_CLIENT: grpc.StatusCode.NOT_FOUND,
    ErrorCode.UNKNOWN_SERVICE: grpc.StatusCode.NOT_FOUND,
    ErrorCode.UNKNOWN_MEMBER: grpc.StatusCode.NOT_FOUND,
    ErrorCode.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    ErrorCode.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.MESSAGE_TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.ACCESS_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    ErrorCode.CLIENT_NOT_AUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorCode.PEER_NOT_REGISTERED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorCode.SIGNATURE_INVALID: grpc.StatusCode.UNAUTHENTICATED,
    ErrorCode.CERTIFICATE_INVALID: grpc.StatusCode.UNAUTHENTICATED,
    ErrorCode.CERTIFICATE_EXPIRED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorCode.CERTIFICATE_REVOKED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorCode.CERTIFICATE_UNTRUSTED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorCode.OCSP_INVALID: grpc.StatusCode.UNAUTHENTICATED,
    ErrorCode.OCSP_STALE: grpc.StatusCode.UNAUTHENTICATED,
    ErrorCode.OCSP_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.TIMESTAMP_INVALID: grpc.StatusCode.UNAUTHENTICATED,
    ErrorCode.REPLAY_DETECTED: grpc.StatusCode.ALREADY_EXISTS,
    ErrorCode.CLOCK_SKEW: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.KEY_FILE_INSECURE: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.KEY_PASSPHRASE_INVALID: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.KEY_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.GLOBALCONF_EXPIRED: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.GLOBALCONF_INVALID: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.GLOBALCONF_SIGNATURE_INVALID: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.GLOBALCONF_UNKNOWN_SIGNER: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.GLOBALCONF_ROLLBACK: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.GLOBALCONF_EQUIVOCATION: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.GLOBALCONF_WRONG_INSTANCE: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.GLOBALCONF_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorCode.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    ErrorCode.TIMESTAMPING_OVERDUE: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.TSA_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.PROVIDER_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.GATEWAY_OVERLOADED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.LOG_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorCode.INTERNAL: grpc.StatusCode.INTERNAL,
}


def grpc_status_for(code: ErrorCode) -> grpc.StatusCode:
    """Return the gRPC status a refusal with ``code`` is sent as."""
    return _STATUS[code]


class SeraiError(Exception):
    """Root of every error Serai raises on purpose.

    ``code`` is the stable wire code, ``origin`` who is at fault, and the message says
    precisely what is wrong, never including secrets or bodies.
    """

    default_code: ErrorCode = ErrorCode.INTERNAL
    default_origin: Origin = Origin.GATEWAY

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode | None = None,
        origin: Origin | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code: ErrorCode = code if code is not None else self.default_code
        self.origin: Origin = origin if origin is not None else self.default_origin

    @property
    def status(self) -> grpc.StatusCode:
        """The gRPC status this error is sent as."""
        return grpc_status_for(self.code)

    def wire_value(self) -> str:
        """The ``x-road-error`` metadata value: ``origin:code:message``."""
        return f"{self.origin.value}:{self.code.value}:{self.message}"

    def __str__(self) -> str:
        return f"{self.code.value}: {self.message}"


class InvalidIdentifierError(SeraiError):
    """An identifier (member, subsystem, gateway, service) is malformed."""

    default_code = ErrorCode.INVALID_IDENTIFIER
    default_origin = Origin.CLIENT


class ConfigError(SeraiError):
    """A configuration file or command-line option is wrong; the message names where."""

    default_code = ErrorCode.INVALID_CONFIG
    default_origin = Origin.GATEWAY
