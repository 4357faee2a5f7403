"""The consumer side: call other agencies' services through your own gateway.

:class:`GatewayClient` holds one long-lived ``grpc.aio`` channel to the local gateway's
IS port (plaintext by default, TLS when given ``channel_credentials``).
:meth:`GatewayClient.stub` returns an ordinary generated stub bound to one provider
subsystem. The SDK guarantees, for every call made through such a stub:

- it carries ``x-road-client``, ``x-road-service``, and ``x-road-user-id`` and
  ``x-road-issue`` when set (metadata the caller passes itself wins, e.g. an explicit
  ``x-road-id``), and the client's default deadline when the call sets none;
- a refusal by a gateway (a status with the ``x-road-error`` trailer) is raised as
  :class:`~adapters.sdk.ExchangeRefused` with its code, origin, message, status and
  message id, when the call is awaited (the stub's calls are wrapped; the call object
  still answers ``code()``, ``details()`` and ``trailing_metadata()``);
- a provider's own error status passes through unchanged as
  ``grpc.aio.AioRpcError`` (code, message, rich details: read them with
  :func:`rich_status`), because the provider gateway signs and relays it as is;
- the exchange's ``x-road-id`` and ``x-road-request-hash`` (the evidence that names the
  exchange in both gateways' message logs) are available with :func:`call_with_receipt`.

Construct a GatewayClient inside a running event loop (``grpc.aio`` needs one) and close
it (``async with``) when done; :meth:`GatewayClient.with_user` shares the channel.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from typing import Any, Final, TypeVar, cast

import grpc
from google.rpc import status_pb2  # type: ignore[import-untyped]  # no stubs
from grpc_status import rpc_status

from adapters.sdk.context import (
    CLIENT_KEY,
    ISSUE_KEY,
    MESSAGE_ID_KEY,
    REQUEST_HASH_KEY,
    SERVICE_KEY,
    USER_ID_KEY,
)
from adapters.sdk.errors import ExchangeRefused
from serai.errors import ERROR_METADATA_KEY
from serai.identifiers import SubsystemId

__all__ = [
    "ExchangeRefused",
    "GatewayClient",
    "Receipt",
    "call_with_receipt",
    "parse_refusal",
    "refusal_from_trailer",
    "rich_status",
]

T = TypeVar("T")
Req = TypeVar("Req")
Resp = TypeVar("Resp")

_MAX_USER_ID_CHARS: Final = 255
_MAX_ISSUE_CHARS: Final = 1024
_Metadata = tuple[tuple[str, str | bytes], ...]


@dataclass(frozen=True)
class Receipt:
    """What names an exchange in both gateways' message logs."""

    #: ``x-road-id``: the message id (the one you gave, or the one the gateway chose).
    message_id: str
    #: ``x-road-request-hash``: SHA-256 (hex) of the signed request header.
    request_hash: str


class GatewayClient:
    """A consumer IS's connection to its own gateway (module docstring).

    ``gateway`` is the IS port's ``HOST:PORT``; ``client`` the consumer subsystem this IS
    is (``UZ/GOV/MINJUST/property``); ``user_id`` and ``issue`` go with every call
    (printable ASCII, at most 255 and 1024 characters); ``timeout_s`` is the deadline of
    a call that sets none.
    """

    def __init__(
        self,
        *,
        gateway: str,
        client: SubsystemId | str,
        user_id: str = "",
        issue: str = "",
        channel_credentials: grpc.ChannelCredentials | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self._client = _subsystem(client)
        self._user_id = _header_text("user_id", user_id, _MAX_USER_ID_CHARS)
        self._issue = _header_text("issue", issue, _MAX_ISSUE_CHARS)
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self._timeout_s = timeout_s
        self._gateway = gateway
        if channel_credentials is None:
            self._channel = grpc.aio.insecure_channel(gateway)
        else:
            self._channel = grpc.aio.secure_channel(gateway, channel_credentials)
        self._owns_channel = True

    @property
    def client(self) -> SubsystemId:
        """The consumer subsystem every call is made as."""
        return self._client

    @property
    def user_id(self) -> str:
        """The ``x-road-user-id`` every call carries (``""``: none)."""
        return self._user_id

    @property
    def issue(self) -> str:
        """The ``x-road-issue`` every call carries (``""``: none)."""
        return self._issue

    def stub(self, stub_class: Callable[[grpc.aio.Channel], T], service: SubsystemId | str) -> T:
        """A generated stub (``CadastreStub``) whose calls go to provider ``service``."""
        metadata: list[tuple[str, str | bytes]] = [
            (CLIENT_KEY, str(self._client)),
            (SERVICE_KEY, str(_subsystem(service))),
        ]
        if self._user_id:
            metadata.append((USER_ID_KEY, self._user_id))
        if self._issue:
            metadata.append((ISSUE_KEY, self._issue))
        return stub_class(_BoundChannel(self._channel, tuple(metadata), self._timeout_s))

    def with_user(self, user_id: str, issue: str = "") -> GatewayClient:
        """The same client on the same channel, calling for another user and issue.

        Closing the returned client does nothing; close the original one."""
        other = object.__new__(GatewayClient)
        other._client = self._client
        other._user_id = _header_text("user_id", user_id, _MAX_USER_ID_CHARS)
        other._issue = _header_text("issue", issue, _MAX_ISSUE_CHARS)
        other._timeout_s = self._timeout_s
        other._gateway = self._gateway
        other._channel = self._channel
        other._owns_channel = False
        return other

    async def close(self) -> None:
        """Close the channel (calls in flight are cancelled)."""
        if self._owns_channel:
            await self._channel.close(None)

    async def __aenter__(self) -> GatewayClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"GatewayClient(gateway={self._gateway!r}, client={str(self._client)!r})"


async def call_with_receipt(
    method: grpc.aio.UnaryUnaryMultiCallable[Req, Resp],
    request: Req,
    *,
    message_id: str | None = None,
    timeout_s: float | None = None,
) -> tuple[Resp, Receipt]:
    """Call ``method`` of a stub from :meth:`GatewayClient.stub`; return the response and
    the exchange's :class:`Receipt`. ``message_id`` sets ``x-road-id`` (the gateway
    generates one otherwise); ``timeout_s`` overrides the client's default deadline."""
    metadata = ((MESSAGE_ID_KEY, message_id),) if message_id is not None else None
    call = method(request, timeout=timeout_s, metadata=metadata)
    response = await call
    trailers = _text_metadata(await call.trailing_metadata())
    return response, Receipt(
        message_id=trailers.get(MESSAGE_ID_KEY, ""),
        request_hash=trailers.get(REQUEST_HASH_KEY, ""),
    )


def parse_refusal(exc: grpc.aio.AioRpcError) -> ExchangeRefused | None:
    """The gateway refusal in ``exc``, or ``None`` when it carries no ``x-road-error``
    trailer (a provider's own status, or a failure of the channel itself)."""
    trailers = _text_metadata(exc.trailing_metadata())
    value = trailers.get(ERROR_METADATA_KEY)
    if value is None:
        return None
    return refusal_from_trailer(
        value,
        status=exc.code(),
        message_id=trailers.get(MESSAGE_ID_KEY),
        request_hash=trailers.get(REQUEST_HASH_KEY),
    )


def refusal_from_trailer(
    value: str,
    *,
    status: grpc.StatusCode,
    message_id: str | None = None,
    request_hash: str | None = None,
) -> ExchangeRefused:
    """An ``x-road-error`` value ``origin:code:message`` as :class:`ExchangeRefused`.

    A value not of that form (no two colons, an origin other than ``client``,
    ``gateway``, ``provider``, or a code that is not snake_case) is kept whole as the
    message, with origin ``gateway`` and code ``unknown``."""
    origin, _, rest = value.partition(":")
    code, separator, message = rest.partition(":")
    if not separator or origin not in _ORIGINS or not _is_code(code):
        origin, code, message = "gateway", "unknown", value
    return ExchangeRefused(
        code=code,
        origin=origin,
        message=message,
        status=status,
        message_id=message_id,
        request_hash=request_hash,
    )


def rich_status(exc: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    """The ``google.rpc.Status`` a provider sent with its error (``grpc-status-details-bin``),
    or ``None``; unpack its ``details`` with ``Any.Unpack`` (e.g. into ``BadRequest``)."""
    try:
        status: status_pb2.Status | None = rpc_status.from_call(cast("Any", exc))
    except ValueError:  # details that contradict the status: not the provider's
        return None
    return status


_ORIGINS: Final = frozenset({"client", "gateway", "provider"})


def _is_code(code: str) -> bool:
    return (
        bool(code)
        and all(c.islower() or c.isdigit() or c == "_" for c in code)
        and (code.isascii() and code[0].isalpha())
    )


def _subsystem(value: SubsystemId | str) -> SubsystemId:
    return value if isinstance(value, SubsystemId) else SubsystemId.parse(value)


def _header_text(name: str, value: str, max_chars: int) -> str:
    if len(value) > max_chars:
        raise ValueError(f"{name} must be text of at most {max_chars} characters")
    if not all(c.isascii() and c.isprintable() for c in value):
        raise ValueError(f"{name} must be printable ASCII (gRPC metadata): {value[:64]!a}")
    return value


def _text_metadata(metadata: Iterable[Any] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in metadata or ():
        if isinstance(value, str):
            out.setdefault(key, value)
    return out


def _merged(defaults: _Metadata, given: Any) -> _Metadata:
    """The caller's metadata, plus each default whose key it does not set."""
    extra: _Metadata = tuple((k, v) for k, v in (given or ()))
    keys = {k for k, _ in extra}
    return (*extra, *((k, v) for k, v in defaults if k not in keys))


class _RefusingCall(grpc.aio.UnaryUnaryCall):  # type: ignore[type-arg]  # generic stub
    """A unary call whose await raises ExchangeRefused for a status with ``x-road-error``.

    A wrapper, not a client interceptor: grpc.aio's intercepted calls cannot carry an
    exception that is not an AioRpcError (their finaliser re-raises it)."""

    def __init__(self, call: Any) -> None:
        self._call = call

    def __await__(self) -> Generator[Any, None, Any]:
        try:
            response = yield from self._call.__await__()
        except grpc.aio.AioRpcError as exc:
            refused = parse_refusal(exc)
            if refused is not None:
                raise refused from exc
            raise
        return response

    def cancel(self) -> bool:
        return bool(self._call.cancel())

    def cancelled(self) -> bool:
        return bool(self._call.cancelled())

    def done(self) -> bool:
        return bool(self._call.done())

    def add_done_callback(self, callback: Any) -> None:
        self._call.add_done_callback(callback)

    def time_remaining(self) -> float | None:
        remaining: float | None = self._call.time_remaining()
        return remaining

    async def initial_metadata(self) -> Any:
        return await self._call.initial_metadata()

    async def trailing_metadata(self) -> Any:
        return await self._call.trailing_metadata()

    async def code(self) -> grpc.StatusCode:
        code: grpc.StatusCode = await self._call.code()
        return code

    async def details(self) -> str:
        details: str = await self._call.details()
        return details

    async def wait_for_connection(self) -> None:
        await self._call.wait_for_connection()


class _BoundUnaryUnary(grpc.aio.UnaryUnaryMultiCallable):  # type: ignore[type-arg]
    """A multi-callable that adds a stub's x-road metadata and default deadline."""

    def __init__(self, inner: Any, metadata: _Metadata, timeout_s: float) -> None:
        self._inner = inner
        self._metadata = metadata
        self._timeout_s = timeout_s

    def __call__(  # noqa: PLR0917  (grpc's multi-callable signature)
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        return _RefusingCall(
            self._inner(
                request,
                timeout=self._timeout_s if timeout is None else timeout,
                metadata=_merged(self._metadata, metadata),
                credentials=credentials,
                wait_for_ready=wait_for_ready,
                compression=compression,
            )
        )


class _BoundChannel(grpc.aio.Channel):
    """What a stub from :meth:`GatewayClient.stub` is built on: the shared channel, with
    one provider subsystem's metadata on every unary call. The gateway forwards unary
    calls only; streaming multi-callables are the channel's own."""

    def __init__(self, channel: grpc.aio.Channel, metadata: _Metadata, timeout_s: float) -> None:
        self._channel = channel
        self._metadata = metadata
        self._timeout_s = timeout_s

    def unary_unary(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool | None = False,
    ) -> Any:
        inner = self._channel.unary_unary(method, request_serializer, response_deserializer)
        return _BoundUnaryUnary(inner, self._metadata, self._timeout_s)

    def unary_stream(
        self, method: str, request_serializer: Any = None, response_deserializer: Any = None
    ) -> Any:
        return self._channel.unary_stream(method, request_serializer, response_deserializer)

    def stream_unary(
        self, method: str, request_serializer: Any = None, response_deserializer: Any = None
    ) -> Any:
        return self._channel.stream_unary(method, request_serializer, response_deserializer)

    def stream_stream(
        self, method: str, request_serializer: Any = None, response_deserializer: Any = None
    ) -> Any:
        return self._channel.stream_stream(method, request_serializer, response_deserializer)

    async def close(self, grace: float | None = None) -> None:
        """Does nothing: the channel is the GatewayClient's."""

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self._channel.get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self._channel.wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self._channel.channel_ready()

    async def __aenter__(self) -> _BoundChannel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None
