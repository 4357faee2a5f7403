"""Errors of the gateway package. All derive from :class:`GatewayError`, itself a
:class:`serai.errors.SeraiError` (see that module for the whole tree and the one map from
codes to gRPC statuses).

Subtree (later gateway modules add their own subclasses here)::

    GatewayError               root of everything the gateway raises on purpose
    ├── HeaderError            a request or response header is malformed
    │                          (invalid_request, invalid_identifier)
    ├── SigningError           this gateway cannot sign: key and certificate do not
    │                          match, unsupported key, no OCSP response at hand
    │                          (invalid_config, ocsp_unavailable; origin gateway)
    ├── VerificationError      a peer's signed header is refused (signature_invalid,
    │                          certificate_*, ocsp_*, clock_skew)
    ├── acl.AccessDeniedError  no access right lets this client call this method
    │                          (access_denied)
    ├── aclstore.AclStoreError an access-rights change is refused (already_exists,
    │                          not_found, internal)
    ├── _descriptors.DescriptorSetError  a provider published no usable service
    │                          descriptors (unknown_service; origin provider)
    ├── replay.ClockSkewError  created time outside the allowed skew (clock_skew)
    ├── replay.ReplayDetectedError   message id seen within the window (replay_detected)
    ├── replay.ReplayCapacityError   the replay guard is full (gateway_overloaded)
    ├── commit.LogUnavailableError   the message log cannot commit (log_unavailable)
    ├── commit.LogRecordFormatError  a log record's canonical bytes do not decode
    ├── messagelog.MessageLogError   a request to the log store is refused (the code
    │   │                            says why: invalid_request, failed_precondition...)
    │   └── messagelog.LogCorruptError   the stored log breaks an invariant (internal)
    └── messagelog.heads.TimestampingOverdueError   records have waited too long for a
                                     time-stamp; new exchanges are refused
                                     (timestamping_overdue)

Shared with the registry: :class:`serai.treehead.TreeHeadError` (a signed tree head or
its time-stamp does not verify) and :class:`serai.merkle.ProofError`.

The origin says whose fault a refusal is: a header or signature refused by the provider
gateway is the client's, one refused by the consumer gateway the provider's.
"""

from __future__ import annotations

from serai.errors import ErrorCode, Origin, SeraiError

__all__ = ["GatewayError", "HeaderError", "SigningError", "VerificationError"]


class GatewayError(SeraiError):
    """Root of the gateway package's errors."""

    default_code = ErrorCode.INTERNAL
    default_origin = Origin.GATEWAY


class HeaderError(GatewayError):
    """A request or response header cannot be built or decoded; the message names the field."""

    default_code = ErrorCode.INVALID_REQUEST
    default_origin = Origin.CLIENT


class SigningError(GatewayError):
    """This gateway cannot sign a header (its own configuration or state is at fault)."""

    default_code = ErrorCode.INVALID_CONFIG
    default_origin = Origin.GATEWAY


class VerificationError(GatewayError):
    """A signed header from a peer is refused; the code says which rule it broke."""

    default_code = ErrorCode.SIGNATURE_INVALID
    default_origin = Origin.CLIENT
