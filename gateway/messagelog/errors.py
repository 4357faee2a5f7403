"""Errors of the message-log store (:mod:`gateway.messagelog`).

Tree::

    GatewayError                      (gateway.errors)
    ├── commit.LogUnavailableError    the log cannot be written or read now
    │                                 (log_unavailable): database gone, unwritable,
    │                                 a batch failed, the log is closed
    └── MessageLogError               root of the store's own refusals
        ├── LogCorruptError           the stored log breaks an invariant (internal):
        │                             refused at open, never repaired silently
        └── (MessageLogError itself)  a caller's request is refused: index or size out
                                      of range (invalid_request, not_found), a tree head
                                      that does not match the log (failed_precondition)

Driver errors (``sqlite3.Error``, ``psycopg.Error``) are wrapped where they leave the
store, with ``raise ... from exc``; callers catch only :class:`GatewayError`.
"""

from __future__ import annotations

from gateway.errors import GatewayError
from serai.errors import ErrorCode, Origin

__all__ = ["LogCorruptError", "MessageLogError"]


class MessageLogError(GatewayError):
    """A request to the message-log store is refused (the code says why)."""

    default_code = ErrorCode.INVALID_REQUEST
    default_origin = Origin.GATEWAY


class LogCorruptError(MessageLogError):
    """The stored log is inconsistent (the message names the broken invariant)."""

    default_code = ErrorCode.INTERNAL
    default_origin = Origin.GATEWAY
