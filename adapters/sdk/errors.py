"""The SDK's errors: what a provider's context helpers raise, and what a consumer sees
when a gateway refuses an exchange.

Exception tree::

    serai.errors.SeraiError
    └── ProviderError       a call reached the provider IS without valid x-road-* metadata
    Exception
    └── ExchangeRefused     a gateway refused the exchange (status plus x-road-error)

:class:`ProviderError` is a :class:`~serai.errors.SeraiError`: it has a stable ``code``,
an ``origin`` (always ``client``) and the gRPC ``status`` it is answered with, plus the
metadata key (``field``) at fault. A servicer run by
:class:`adapters.sdk.ProviderServer` need not catch it: the server answers it with its
status, its message and rich details naming the key (never a stack trace).

:class:`ExchangeRefused` keeps the gateway's code as a plain string, so a code that a
newer gateway introduces is still delivered; compare it with
:class:`serai.errors.ErrorCode` values (a ``StrEnum``, so ``==`` works).
"""

from __future__ import annotations

import grpc

from serai.errors import ErrorCode, Origin, SeraiError

__all__ = ["ExchangeRefused", "ProviderError"]


class ProviderError(SeraiError):
    """The call's ``x-road-*`` metadata is missing or malformed (see module docstring).

    ``field`` names the metadata key, e.g. ``x-road-client``.
    """

    default_code = ErrorCode.INVALID_REQUEST
    default_origin = Origin.CLIENT

    def __init__(self, message: str, *, code: ErrorCode, field: str) -> None:
        super().__init__(message, code=code, origin=Origin.CLIENT)
        self.field = field


class ExchangeRefused(Exception):  # noqa: N818  (the name is the SDK's contract)
    """A gateway (the consumer's or the provider's) refused the exchange.

    ``code`` is the stable snake_case refusal code (``access_denied``, ...), ``origin``
    who is at fault (``client``, ``gateway`` or ``provider``), ``message`` the gateway's
    explanation, ``status`` the gRPC status it came with, ``message_id`` the exchange's
    ``x-road-id`` and ``request_hash`` its ``x-road-request-hash`` when the gateway got
    that far (``None`` otherwise).
    """

    def __init__(
        self,
        *,
        code: str,
        origin: str,
        message: str,
        status: grpc.StatusCode,
        message_id: str | None = None,
        request_hash: str | None = None,
    ) -> None:
        super().__init__(f"{origin}:{code}: {message}")
        self.code = code
        self.origin = origin
        self.message = message
        self.status = status
        self.message_id = message_id
        self.request_hash = request_hash

    def __repr__(self) -> str:
        return (
            f"ExchangeRefused(code={self.code!r}, origin={self.origin!r}, "
            f"message={self.message!r}, status={self.status.name}, "
            f"message_id={self.message_id!r})"
        )
