"""What a provider IS knows about a call: :class:`RequestContext`, read from the
``x-road-*`` metadata the provider gateway sends (DESIGN §4, hop 3).

Guarantees of :func:`request_context`:

- It returns only when ``x-road-client``, ``x-road-service`` and ``x-road-id`` are
  present and well formed; the identifiers are parsed :class:`~serai.identifiers.SubsystemId`
  values, never raw strings.
- A call without one of them did not come through a Serai gateway (someone called the
  IS port directly): :class:`~adapters.sdk.ProviderError` with code ``unauthenticated``
  (gRPC UNAUTHENTICATED) naming the missing key.
- A present but malformed value is :class:`~adapters.sdk.ProviderError` with gRPC
  INVALID_ARGUMENT naming the key: code ``invalid_identifier`` for ``x-road-client`` and
  ``x-road-service``, ``invalid_request`` for ``x-road-id`` (1 to 255 printable ASCII
  characters), ``x-road-user-id`` (at most 255) and ``x-road-issue`` (at most 1024).
  Messages quote input through :func:`ascii`, cut to 64 characters.

What it assumes: the provider IS is reachable only by its gateway (listen on loopback
or a network only the gateway reaches). The gateway has verified the client's signature
and access rights before it called; the metadata itself carries no proof, so an IS
reachable by others must not trust it.

``method`` is the full method path (``/tax.v1.Tax/GetTaxDebt``). gRPC's asyncio server
does not expose it on the context, so :class:`~adapters.sdk.ProviderServer` records it
for each call (a :mod:`contextvars` value); under another server it is ``""``.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import grpc

from adapters.sdk.errors import ProviderError
from serai.errors import ErrorCode, InvalidIdentifierError
from serai.identifiers import SubsystemId

__all__ = [
    "CLIENT_KEY",
    "ISSUE_KEY",
    "MESSAGE_ID_KEY",
    "REQUEST_HASH_KEY",
    "SERVICE_KEY",
    "USER_ID_KEY",
    "RequestContext",
    "context_from_metadata",
    "request_context",
]

CLIENT_KEY: Final = "x-road-client"
SERVICE_KEY: Final = "x-road-service"
MESSAGE_ID_KEY: Final = "x-road-id"
USER_ID_KEY: Final = "x-road-user-id"
ISSUE_KEY: Final = "x-road-issue"
REQUEST_HASH_KEY: Final = "x-road-request-hash"

#: Bounds of the signed request header's fields (gateway.headers), so a value the
#: gateway signed is never refused here.
_MAX_MESSAGE_ID_CHARS: Final = 255
_MAX_USER_ID_CHARS: Final = 255
_MAX_ISSUE_CHARS: Final = 1024
_MAX_REQUEST_HASH_CHARS: Final = 128
_SHOW_CHARS: Final = 64

#: The method path of the call being handled, set by ProviderServer for each call.
current_method: contextvars.ContextVar[str] = contextvars.ContextVar(
    "adapters_sdk_method", default=""
)


@dataclass(frozen=True)
class RequestContext:
    """The exchange as the provider gateway verified it (module docstring)."""

    #: ``x-road-client``: the consumer subsystem whose signature the gateway verified.
    client: SubsystemId
    #: ``x-road-service``: the provider subsystem (this IS).
    service: SubsystemId
    #: Full method path, e.g. ``/tax.v1.Tax/GetTaxDebt`` (``""`` outside ProviderServer).
    method: str
    #: ``x-road-id``: the exchange's message id, as in both gateways' message logs.
    message_id: str
    #: ``x-road-user-id``: the person on whose behalf the consumer asks (may be empty).
    user_id: str = ""
    #: ``x-road-issue``: the case or file number the consumer gives (may be empty).
    issue: str = ""
    #: ``x-road-request-hash``: SHA-256 (hex) of the signed request header (may be empty).
    request_hash: str = ""


def request_context(context: grpc.aio.ServicerContext[Any, Any]) -> RequestContext:
    """The call's :class:`RequestContext`; raises :class:`ProviderError` when the
    ``x-road-*`` metadata is missing or malformed (module docstring)."""
    return context_from_metadata(context.invocation_metadata() or (), method=current_method.get())


def context_from_metadata(
    metadata: Iterable[tuple[str, str | bytes]] | Mapping[str, str], *, method: str = ""
) -> RequestContext:
    """:func:`request_context` over plain metadata pairs (for tests and other servers)."""
    values = _first_values(metadata.items() if isinstance(metadata, Mapping) else metadata)
    return RequestContext(
        client=_subsystem(values, CLIENT_KEY),
        service=_subsystem(values, SERVICE_KEY),
        method=method,
        message_id=_text(values, MESSAGE_ID_KEY, _MAX_MESSAGE_ID_CHARS, required=True),
        user_id=_text(values, USER_ID_KEY, _MAX_USER_ID_CHARS),
        issue=_text(values, ISSUE_KEY, _MAX_ISSUE_CHARS),
        request_hash=_text(values, REQUEST_HASH_KEY, _MAX_REQUEST_HASH_CHARS),
    )


def _first_values(pairs: Iterable[tuple[Any, Any]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in pairs:
        if isinstance(key, str) and key.startswith("x-road-"):
            out.setdefault(key, value)
    return out


def _subsystem(values: dict[str, object], key: str) -> SubsystemId:
    text = _text(values, key, 2048, required=True, code=ErrorCode.INVALID_IDENTIFIER)
    try:
        return SubsystemId.parse(text)
    except InvalidIdentifierError as exc:
        raise ProviderError(
            f"metadata {key}: {exc.message}", code=ErrorCode.INVALID_IDENTIFIER, field=key
        ) from exc


def _text(
    values: dict[str, object],
    key: str,
    max_chars: int,
    *,
    required: bool = False,
    code: ErrorCode = ErrorCode.INVALID_REQUEST,
) -> str:
    value = values.get(key)
    if value is None or value == "":
        if required:
            raise ProviderError(
                f"metadata {key} is missing: the call did not come through a Serai gateway",
                code=ErrorCode.UNAUTHENTICATED,
                field=key,
            )
        return ""
    if not isinstance(value, str):
        raise ProviderError(f"metadata {key} must be text, not binary", code=code, field=key)
    if len(value) > max_chars:
        raise ProviderError(
            f"metadata {key} is {len(value)} characters, at most {max_chars} allowed",
            code=code,
            field=key,
        )
    for index, char in enumerate(value):
        if not (char.isascii() and char.isprintable()):
            raise ProviderError(
                f"metadata {key} has the character {char!a} at index {index} "
                f"(printable ASCII expected): {value[:_SHOW_CHARS]!a}",
                code=code,
                field=key,
            )
    return value
