"""What the three agencies' servicers share: reading and logging the caller, and the
checks of the ids their requests carry.

Each call is logged as one JSON line on stderr (``{"event": "request", ...}``) with the
agency, the method, the client and service subsystems, the message id and the user id:
enough to find the exchange in the gateways' message logs, never a body.

The field checks return ``None`` for a good value and otherwise the message of the
INVALID_ARGUMENT answer, which names the field.
"""

from __future__ import annotations

import re
from typing import Any, Final

import grpc

from adapters.sdk import RequestContext, request_context
from serai.cliutil import log_event

__all__ = [
    "Context",
    "begin",
    "cadastral_number_problem",
    "person_id_problem",
]

Context = grpc.aio.ServicerContext[Any, Any]

_PERSON_ID: Final = re.compile(r"[0-9]{9}|[0-9]{14}")
_CADASTRAL_NUMBER: Final = re.compile(r"[0-9]{2}(:[0-9]{2}){4}:[0-9]{4}")
_SHOW_CHARS: Final = 40


def begin(agency: str, context: Context) -> RequestContext:
    """The call's :class:`RequestContext`, logged (see the module docstring)."""
    request = request_context(context)
    log_event(
        "request",
        agency=agency,
        method=request.method,
        client=str(request.client),
        service=str(request.service),
        message_id=request.message_id,
        user_id=request.user_id,
    )
    return request


def person_id_problem(field: str, value: str) -> str | None:
    """Why ``value`` is not a taxpayer id (9-digit TIN of an entity or 14-digit PINFL of
    a person), or None."""
    if _PERSON_ID.fullmatch(value):
        return None
    return (
        f"{field}: expected a 9-digit taxpayer identification number or a 14-digit "
        f"personal identification number, got {_shown(value)}"
    )


def cadastral_number_problem(field: str, value: str) -> str | None:
    """Why ``value`` is not a cadastral number ``RR:DD:MM:QQ:BB:NNNN``, or None."""
    if _CADASTRAL_NUMBER.fullmatch(value):
        return None
    return f"{field}: expected a cadastral number like 10:09:02:01:01:0012, got {_shown(value)}"


def _shown(value: str) -> str:
    return "nothing" if not value else ascii(value[:_SHOW_CHARS])
