"""The consumer side of an exchange: the IS port (DESIGN §4, hops 1, 2 and 6).

:class:`ConsumerSide` handles any unary method an information system calls on the
gateway's IS port, with the body as raw bytes (it never parses bodies). In order:

1. The body is at most ``max_message_bytes`` (``message_too_large``), before any work
   (the IS port sets no gRPC receive limit, so this check refuses every oversize body);
   the gateway admits new exchanges (``timestamping_overdue`` while the message log's
   records wait too long for a time-stamp: :attr:`ExchangeParts.admission`).
2. ``x-road-client`` and ``x-road-service`` are present and valid identifiers
   (``invalid_identifier``); the method path is the call's own.
3. This gateway serves the client subsystem in its settings (``unknown_client``); the
   IS is that subsystem's (``client_not_authenticated``): on a TLS IS port whose
   settings pin a client certificate for the subsystem, the SHA-256 of the DER
   certificate the handshake verified must be the pinned one, and when the subsystem
   has an address allow-list the IS's address must be on it (both, when both are
   configured); and the global configuration in force lists this gateway as serving
   it (``unknown_client``).
4. A metaservice call (``/serai.meta.v1.Meta/…``) names the call's provider in its body
   (``invalid_request``, :func:`gateway.meta.check_provider_meta_request`); the provider
   subsystem has registered gateways (``unknown_service``).
5. The request header is built and signed with the client member's key; the
   ``REQUEST_SENT`` record is committed *while* the request travels (DESIGN §6), and
   awaited before anything is returned.
6. The request goes to the provider's gateways in the configuration's order over one
   long-lived pinned channel each (:mod:`gateway.peers`), with the remaining deadline
   in the ``timeout`` field and as the gRPC deadline. The next gateway is tried only
   when one cannot be reached (no TLS handshake, or UNAVAILABLE without an
   ``x-road-error`` trailer): a refusal by a reachable gateway is final, so a request
   that a provider gateway refused is never sent twice. A gateway whose channel answers
   UNAVAILABLE is first tried once more on a new channel (new handshake, certificate
   checked again), so a restarted peer is used at once rather than after the old
   channel's reconnect back-off. Residual risk: grpcio cannot tell a connection that
   failed before the request left from one that dropped after it arrived; in the
   second case the retry or the next gateway may see the same message id again (the
   same gateway refuses it as a replay, another gateway serves it), and the logs show
   it.
7. The answer is at most ``max_message_bytes`` plus the envelope allowance, checked
   before it is decoded, and its body at most ``max_message_bytes``
   (``message_too_large``, origin ``provider``: the peer channels set no gRPC receive
   limit, whose refusal would carry no code). The signed response is verified
   (signature, chain, OCSP, provider member, body,
   skew, binding to our request hash and message id); the ``RESPONSE_RECEIVED`` record
   with the peer's receipt is committed; then body and status go back to the IS: a
   provider's own status unchanged, with ``x-road-id`` and ``x-road-request-hash``.

A refusal of the provider gateway (status plus ``x-road-error``) is passed to the IS as
it came. Verification (~1 ms) runs on the event loop; the benchmark will tell whether
it must move to a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Final, cast

import grpc

from gateway._iscaller import (
    CLIENT_KEY,
    ISSUE_KEY,
    SERVICE_KEY,
    USER_ID_KEY,
    authenticate_is,
    check_registered_client,
    required,
    x_road_metadata,
)
from gateway._messages import EXCHANGE_METHOD, ExchangeRequestMessage, ExchangeResponseMessage
from gateway._observe import ExchangeObservation
from gateway._settings import ExchangeParts
from gateway.commit import LogIndex, LogRecord, PeerReceipt, RecordKind
from gateway.errors import GatewayError
from gateway.headers import request_header_for
from gateway.meta import check_provider_meta_request
from gateway.peers import ENVELOPE_BYTES, PeerPool, PeerUnreachableError
from gateway.signing import SignedHeader, verify_response
from gateway.wire import (
    MESSAGE_ID_KEY,
    REQUEST_HASH_KEY,
    PassThrough,
    error_trailer,
    refusing,
    status_code_of,
)
from registry.model import Gateway
from serai.errors import ErrorCode, Origin
from serai.identifiers import ServiceId, SubsystemId

__all__ = ["ConsumerSide"]

_DETAILS_KEY: Final = "grpc-status-details-bin"

_Context = grpc.aio.ServicerContext[bytes, bytes]


class ConsumerSide:
    """Handles the IS port's calls (module docstring)."""

    def __init__(self, *, parts: ExchangeParts, peers: PeerPool) -> None:
        self._parts = parts
        self._peers = peers
        self._settings = parts.settings

    async def handle(self, method: str, body: bytes, context: _Context) -> bytes:
        """Forward one call of ``method``; returns the provider's body or aborts."""
        exchange: list[tuple[str, str | bytes]] = []
        observer = self._parts.observer
        observation = observer.begin("consumer")
        try:
            async with refusing(context, side="consumer", exchange=exchange, outcome=observation):
                return await self._exchange(method, body, context, exchange, observation)
        finally:
            observer.finish(observation)
        raise AssertionError("unreachable: refusing() aborts")  # pragma: no cover

    async def _exchange(
        self,
        method: str,
        body: bytes,
        context: _Context,
        exchange: list[tuple[str, str | bytes]],
        observation: ExchangeObservation,
    ) -> bytes:
        settings = self._settings
        if len(body) > settings.max_message_bytes:
            raise GatewayError(
                f"request body is {len(body)} bytes, at most {settings.max_message_bytes} allowed",
                code=ErrorCode.MESSAGE_TOO_LARGE,
                origin=Origin.CLIENT,
            )
        self._parts.admission()
        deadline = time.monotonic() + _budget_s(context, settings.default_deadline_s)
        metadata = x_road_metadata(context)
        observation.method = method
        client = SubsystemId.parse(required(metadata, CLIENT_KEY))
        observation.client = client
        provider = SubsystemId.parse(required(metadata, SERVICE_KEY))
        observation.service = provider
        service = ServiceId.for_method(subsystem=provider, method_path=method)
        message_id = metadata.get(MESSAGE_ID_KEY) or str(uuid.uuid4())
        observation.message_id = message_id
        exchange.append((MESSAGE_ID_KEY, _ascii_only(message_id)))
        authenticate_is(settings, client, context)
        snapshot = self._parts.configuration.current()
        check_registered_client(self._parts, snapshot, client)
        check_provider_meta_request(method, body, provider)
        gateways = snapshot.gateways_serving(provider)
        if not gateways:
            raise GatewayError(
                f"no gateway serves {provider}",
                code=ErrorCode.UNKNOWN_SERVICE,
                origin=Origin.CLIENT,
            )
        header = request_header_for(
            message_id=message_id,
            client=client,
            service=service,
            body=body,
            created_at=self._parts.clock(),
            user_id=metadata.get(USER_ID_KEY, ""),
            issue=metadata.get(ISSUE_KEY, ""),
        )
        started = time.perf_counter()
        signed = self._parts.signer.sign(header)
        observation.add("signing", started)
        exchange.append((REQUEST_HASH_KEY, signed.header_sha256.hex()))
        committing = asyncio.ensure_future(
            self._parts.log.commit_request(_request_record(message_id, signed, body))
        )
        started = time.perf_counter()
        try:
            gateway, response = await self._send(gateways, signed, body, deadline)
        except BaseException:
            await _settle(committing)
            raise
        finally:
            observation.add("peer", started)
        await committing
        started = time.perf_counter()
        verified = verify_response(
            response.signed_header,
            chain=response.certificate_chain,
            ocsp_response=response.ocsp_response,
            body=response.body,
            trust=snapshot.trust_store,
            now=self._parts.clock(),
            expected_request_sha256=signed.header_sha256,
            expected_message_id=message_id,
            provider=provider,
            max_ocsp_age_s=settings.max_ocsp_age_s,
            max_skew_s=settings.max_skew_s,
            cache=self._parts.verification_cache,
        )
        observation.add("verification", started)
        await self._parts.log.commit_response(
            LogRecord(
                kind=RecordKind.RESPONSE_RECEIVED,
                message_id=message_id,
                header_jws=response.signed_header.encode("ascii"),
                certificate_chain=response.certificate_chain,
                ocsp_response=response.ocsp_response,
                body=response.body,
                body_sha256=verified.header.body_sha256,
                peer_gateway=gateway.id,
                peer_receipt=_receipt(response),
            )
        )
        status = verified.header
        if status.status_code != 0:
            trailers: list[tuple[str, str | bytes]] = []
            if status.status_details:
                trailers.append((_DETAILS_KEY, status.status_details))
            raise PassThrough(
                status_code_of(status.status_code), status.status_message, tuple(trailers)
            )
        context.set_trailing_metadata(tuple(exchange))
        return response.body

    def _decode_response(self, gateway: Gateway, raw: bytes) -> ExchangeResponseMessage:
        """The peer's answer, refused (``message_too_large``) beyond the sizes a provider
        gateway may send: checked before decoding, as the peer port checks a request."""
        limit = self._settings.max_message_bytes
        if len(raw) > limit + ENVELOPE_BYTES:
            raise _too_large(gateway, "an exchange message", len(raw), limit + ENVELOPE_BYTES)
        response = ExchangeResponseMessage.decode(raw)
        if len(response.body) > limit:
            raise _too_large(gateway, "a body", len(response.body), limit)
        return response

    async def _send(
        self,
        gateways: Sequence[Gateway],
        signed: SignedHeader,
        body: bytes,
        deadline: float,
    ) -> tuple[Gateway, ExchangeResponseMessage]:
        """Send to the first gateway that can be reached (module docstring, step 6)."""
        failure: GatewayError | None = None
        # A gateway whose cached channel answers UNAVAILABLE is tried once more on a new
        # channel: a restarted peer is then used at once, not after the old channel's
        # reconnect back-off (which would also send the call to the next gateway).
        attempts = [(gateway, retry) for gateway in gateways for retry in (False, True)]
        retried: set[str] = set()
        for gateway, retry in attempts:
            if retry and str(gateway.id) not in retried:
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                channel = await self._peers.channel_for(gateway, timeout_s=remaining)
            except GatewayError as exc:  # unreachable, or not the registered gateway
                failure = exc
                continue
            remaining = deadline - time.monotonic()
            request = ExchangeRequestMessage(
                signed_header=signed.jws,
                body=body,
                certificate_chain=signed.certificate_chain,
                ocsp_response=signed.ocsp_response,
                timeout_s=remaining,
            )
            call = channel.unary_unary(
                EXCHANGE_METHOD, request_serializer=None, response_deserializer=None
            )
            try:
                raw = await call(request.encode(), timeout=remaining)
            except grpc.aio.AioRpcError as exc:
                trailers = exc.trailing_metadata()
                if error_trailer(trailers) is not None:
                    raise PassThrough(exc.code(), exc.details() or "", _relayed(trailers)) from exc
                if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise _deadline_error() from exc
                if exc.code() == grpc.StatusCode.UNAVAILABLE:
                    failure = PeerUnreachableError(
                        f"gateway {gateway.id} at {gateway.address}: {exc.details()}"
                    )
                    if not retry and self._peers.forget(gateway):
                        retried.add(str(gateway.id))
                    continue
                raise GatewayError(
                    f"gateway {gateway.id} failed: {exc.code().name} {exc.details()}",
                    code=ErrorCode.PROVIDER_UNAVAILABLE,
                    origin=Origin.GATEWAY,
                ) from exc
            return gateway, self._decode_response(gateway, raw)
        if failure is None:
            raise _deadline_error()
        raise failure


def _too_large(gateway: Gateway, what: str, size: int, limit: int) -> GatewayError:
    return GatewayError(
        f"gateway {gateway.id} answered with {what} of {size} bytes, at most {limit} allowed",
        code=ErrorCode.MESSAGE_TOO_LARGE,
        origin=Origin.PROVIDER,
    )


def _request_record(message_id: str, signed: SignedHeader, body: bytes) -> LogRecord:
    return LogRecord(
        kind=RecordKind.REQUEST_SENT,
        message_id=message_id,
        header_jws=signed.jws.encode("ascii"),
        certificate_chain=signed.certificate_chain,
        ocsp_response=signed.ocsp_response,
        body=body,
        body_sha256=hashlib.sha256(body).digest(),
    )


def _receipt(response: ExchangeResponseMessage) -> PeerReceipt | None:
    if response.receipt is None:
        return None
    return PeerReceipt(
        request_index=response.receipt.request_index,
        response_index=response.receipt.response_index,
    )


async def _settle(task: asyncio.Future[LogIndex]) -> None:
    """Wait for a commit whose exchange failed; its own failure is not the news."""
    with contextlib.suppress(Exception):
        await task


def _deadline_error() -> GatewayError:
    return GatewayError(
        "the exchange's deadline passed", code=ErrorCode.DEADLINE_EXCEEDED, origin=Origin.GATEWAY
    )


def _budget_s(context: _Context, default_s: float) -> float:
    # grpc-stubs says float; grpc.aio returns None when the caller set no deadline
    remaining = cast("float | None", context.time_remaining())
    return default_s if remaining is None else min(remaining, default_s)


def _relayed(trailers: Iterable[Any] | None) -> tuple[tuple[str, str | bytes], ...]:
    keep = ("x-road-error", _DETAILS_KEY)
    return tuple((k, v) for k, v in (trailers or ()) if k in keep)


def _ascii_only(text: str) -> str:
    return text if text.isascii() and text.isprintable() else ascii(text)[1:-1]
