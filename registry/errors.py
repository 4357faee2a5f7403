"""Errors of the registry and of the global configuration it publishes.

All derive from :class:`RegistryError` (a :class:`serai.errors.SeraiError`). Refusals of
management calls carry the codes that the gRPC layer maps to INVALID_ARGUMENT,
ALREADY_EXISTS, NOT_FOUND and FAILED_PRECONDITION; refusals of a downloaded
configuration carry ``globalconf_invalid`` (or a more precise code) and
``globalconf_expired``.
"""

from __future__ import annotations

from serai.errors import ErrorCode, Origin, SeraiError

__all__ = ["ConfigurationError", "RegistryError"]


class RegistryError(SeraiError):
    """A registry operation is refused; the message names the field or object."""

    default_code = ErrorCode.INVALID_REQUEST
    default_origin = Origin.CLIENT


class ConfigurationError(SeraiError):
    """A global configuration (or trust anchor) is refused, or none valid is at hand."""

    default_code = ErrorCode.GLOBALCONF_INVALID
    default_origin = Origin.GATEWAY
