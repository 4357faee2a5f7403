"""The one place where the gateway's refusals meet the wire (DESIGN §4, Errors).

Each port's handlers run inside :func:`refusing`: a :class:`~serai.errors.SeraiError`
becomes its gRPC status (from :func:`serai.errors.grpc_status_for`) with the trailing
metadata ``x-road-error: origin:code:message`` plus any exchange metadata already known
(``x-road-id``, ``x-road-request-hash``); a :class:`PassThrough` carries a status that
is not ours to map (a provider's own status, or a refusal of the peer gateway, with its
trailer) back unchanged; anything else is logged with its traceback and answered
``INTERNAL`` / ``internal error``, so no stack trace ever leaves the process.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any, Final

import grpc

from gateway._observe import ExchangeObservation
from serai.errors import ERROR_METADATA_KEY, ErrorCode, Origin, SeraiError
from serai.rpcerrors import error_trailer as trailer_for

__all__ = [
    "MESSAGE_ID_KEY",
    "REQUEST_HASH_KEY",
    "Metadata",
    "PassThrough",
    "error_trailer",
    "refusing",
    "status_code_of",
]

#: Metadata key of the exchange's message id.
MESSAGE_ID_KEY: Final = "x-road-id"
#: Metadata key of the hex SHA-256 of the signed request header bytes.
REQUEST_HASH_KEY: Final = "x-road-request-hash"

Metadata = tuple[tuple[str, str | bytes], ...]

_LOG = logging.getLogger("serai.gateway")
_BY_NUMBER: Final[dict[int, grpc.StatusCode]] = {code.value[0]: code for code in grpc.StatusCode}
#: Longest status message we send; gRPC carries it in an HTTP/2 trailer.
_MAX_DETAILS_CHARS: Final = 4096


class PassThrough(Exception):  # noqa: N818  (not an error of ours: a status to relay)
    """A status to send as it is: a provider's own, or a peer gateway's refusal."""

    def __init__(self, code: grpc.StatusCode, details: str, metadata: Metadata = ()) -> None:
        super().__init__(details)
        self.code = code
        self.details = details
        self.metadata = metadata


def status_code_of(number: int) -> grpc.StatusCode:
    """The :class:`grpc.StatusCode` with wire number ``number`` (UNKNOWN if none)."""
    return _BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)


@asynccontextmanager
async def refusing(
    context: grpc.aio.ServicerContext[Any, Any],
    *,
    side: str,
    exchange: list[tuple[str, str | bytes]] | None = None,
    outcome: ExchangeObservation | None = None,
) -> AsyncIterator[None]:
    """Run a handler body; turn what it raises into a status (module docstring).

    ``exchange`` is a list the handler fills with exchange metadata as it learns it
    (message id, request hash); it is added to every refusal's trailers. ``outcome``,
    when given, is told how the exchange ended (for metrics and the exchange log line).
    """
    try:
        yield
    except SeraiError as exc:
        trailers = (*(exchange or ()), *trailer_for(exc))
        _LOG.info("%s refused: %s", side, exc)
        if outcome is not None:
            outcome.refused(code=exc.code.value, origin=exc.origin.value, status=exc.status)
        await context.abort(exc.status, _ascii(exc.message), trailers)
    except PassThrough as exc:
        if outcome is not None:
            outcome.relayed(status=exc.code, trailer=error_trailer(exc.metadata))
        await context.abort(exc.code, exc.details, (*(exchange or ()), *exc.metadata))
    except grpc.aio.AbortError:
        raise
    except Exception:  # noqa: BLE001  (the last line of defence: log, answer INTERNAL)
        _LOG.exception("%s: unexpected error", side)
        error = SeraiError("internal error", code=ErrorCode.INTERNAL, origin=Origin.GATEWAY)
        if outcome is not None:
            outcome.refused(
                code=error.code.value, origin=error.origin.value, status=grpc.StatusCode.INTERNAL
            )
        trailers = (*(exchange or ()), *trailer_for(error))
        await context.abort(grpc.StatusCode.INTERNAL, "internal error", trailers)


def error_trailer(metadata: Iterable[Any] | None) -> str | None:
    """The ``x-road-error`` value in ``metadata``, if any."""
    for key, value in metadata or ():
        if key == ERROR_METADATA_KEY:
            return value if isinstance(value, str) else value.decode("ascii", "replace")
    return None


def _ascii(text: str) -> str:
    """Metadata values and status messages travel as ASCII; escape the rest."""
    text = text[:_MAX_DETAILS_CHARS]
    return text if text.isascii() and text.isprintable() else ascii(text)[1:-1]
