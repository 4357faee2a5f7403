"""Errors of the PKI package. All derive from :class:`PKIError`, itself a
:class:`serai.errors.SeraiError`; see that module's docstring for the whole tree."""

from __future__ import annotations

from serai.errors import ErrorCode, Origin, SeraiError

__all__ = [
    "CertificateError",
    "KeyFileError",
    "OCSPError",
    "PKIError",
    "TimestampError",
]


class PKIError(SeraiError):
    """Root of the PKI package's errors."""

    default_code = ErrorCode.CERTIFICATE_INVALID
    default_origin = Origin.GATEWAY


class KeyFileError(PKIError):
    """A private key file cannot be used: wrong permissions, wrong or missing passphrase,
    unreadable or not a key."""

    default_code = ErrorCode.KEY_UNAVAILABLE


class CertificateError(PKIError):
    """Path validation refused a certificate (untrusted, expired, revoked, wrong use)."""

    default_code = ErrorCode.CERTIFICATE_INVALID
    default_origin = Origin.CLIENT


class OCSPError(PKIError):
    """An OCSP response is missing, malformed, wrongly signed, or not fresh."""

    default_code = ErrorCode.OCSP_INVALID


class TimestampError(PKIError):
    """An RFC 3161 time-stamp reply or token does not verify, or the TSA cannot be reached."""

    default_code = ErrorCode.TIMESTAMP_INVALID
