"""The one place that puts a SeraiError on the wire (status from
:func:`serai.errors.grpc_status_for`, ``x-road-error`` trailer ``origin:code:message``,
ASCII-safe, bounded length) and reads one back.

Servers answer a refusal with :func:`abort_with`; an unexpected exception becomes
:func:`internal_error` first, so a stack trace never reaches the wire. Clients turn a
failed call into a :class:`~serai.errors.SeraiError` with :func:`error_from_rpc`: the
trailer's code, origin and message when the peer sent a well-formed one, else a code
derived from the gRPC status and a message naming the peer.
"""

from __future__ import annotations

from typing import Any, Final, NoReturn

import grpc

from serai.cliutil import log_event
from serai.errors import ERROR_METADATA_KEY, ErrorCode, Origin, SeraiError

__all__ = ["MAX_TRAILER_CHARS", "abort_with", "error_from_rpc", "error_trailer", "internal_error"]

#: Longest ``x-road-error`` value sent, in characters (ASCII, so also in bytes).
MAX_TRAILER_CHARS: Final = 4096

_CONTROL_ESCAPES: Final = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)}

# The codes a status without a trailer is read back as; any other status is INTERNAL.
_STATUS_CODES: Final = {
    grpc.StatusCode.UNAUTHENTICATED: ErrorCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED: ErrorCode.PERMISSION_DENIED,
    grpc.StatusCode.INVALID_ARGUMENT: ErrorCode.INVALID_REQUEST,
    grpc.StatusCode.NOT_FOUND: ErrorCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS: ErrorCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION: ErrorCode.FAILED_PRECONDITION,
    grpc.StatusCode.DEADLINE_EXCEEDED: ErrorCode.DEADLINE_EXCEEDED,
}


def error_trailer(error: SeraiError) -> tuple[tuple[str, str]]:
    """The trailing metadata carrying ``error``: its ``x-road-error`` value with
    non-ASCII and control characters backslash-escaped, cut to :data:`MAX_TRAILER_CHARS`.

    gRPC refuses a metadata value with a control character: the trailer and the status
    are then never sent and the caller waits for its deadline.
    """
    value = error.wire_value()
    if not value.isascii():
        value = value.encode("ascii", "backslashreplace").decode("ascii")
    value = value.translate(_CONTROL_ESCAPES)
    return ((ERROR_METADATA_KEY, value[:MAX_TRAILER_CHARS]),)


async def abort_with(context: grpc.aio.ServicerContext[Any, Any], error: SeraiError) -> NoReturn:
    """End the rpc with ``error``'s status, message and ``x-road-error`` trailer (raises)."""
    context.set_trailing_metadata(error_trailer(error))
    await context.abort(error.status, error.message)


def internal_error(exc: BaseException, *, event: str) -> SeraiError:
    """Log an unexpected ``exc`` as the JSON line ``event`` and return the INTERNAL
    ``internal error`` that is sent instead (the details stay in the log)."""
    log_event(event, error=f"{type(exc).__name__}: {exc}")
    return SeraiError("internal error", code=ErrorCode.INTERNAL)


def error_from_rpc(exc: grpc.RpcError, *, what: str) -> SeraiError:
    """The peer's refusal in ``exc`` as a SeraiError.

    ``what`` names the peer for messages without a trailer, e.g. ``"registry at
    HOST:PORT"``: ``cannot reach the <what>: …`` when it is UNAVAILABLE, else ``<what>
    answered <STATUS>: …``.
    """
    call: Any = exc
    for key, value in call.trailing_metadata() or ():
        if key == ERROR_METADATA_KEY and isinstance(value, str):
            origin, _, rest = value.partition(":")
            code, _, message = rest.partition(":")
            try:
                return SeraiError(message, code=ErrorCode(code), origin=Origin(origin))
            except ValueError:
                break
    status: grpc.StatusCode = call.code()
    if status is grpc.StatusCode.UNAVAILABLE:
        return SeraiError(f"cannot reach the {what}: {call.details()}")
    return SeraiError(
        f"{what} answered {status.name}: {call.details()}",
        code=_STATUS_CODES.get(status, ErrorCode.INTERNAL),
    )
