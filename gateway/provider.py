"""The provider side of an exchange: the peer port's Transport service (DESIGN §4, hops 3-5).

:class:`ProviderSide` answers ``serai.transport.v1.Transport/Exchange``. It checks, in
order, and refuses with the code given (status plus ``x-road-error``), before the
provider IS sees anything:

0. The gateway admits new exchanges (``timestamping_overdue`` while the message log's
   records wait too long for a time-stamp: ``ExchangeParts.admission``).
1. The TLS client certificate (verified by the handshake against the approved roots)
   is the registered authentication certificate of some gateway
   (``peer_not_registered``), and not revoked (``certificate_revoked``, OCSP codes:
   :mod:`gateway._peerauth`, when the runtime has an OCSP client).
2. The exchange message is at most ``max_message_bytes`` plus the envelope allowance
   (``ENVELOPE_BYTES``), checked before it is decoded, and its body at most
   ``max_message_bytes`` (``message_too_large``). The peer port sets no gRPC receive
   limit, so this check, not grpc's, refuses every oversize message, with its code.
3. :func:`gateway.signing.verify_request`: signature, chain, OCSP, client member, body
   digest, skew (``signature_invalid``, ``certificate_*``, ``ocsp_*``, ``clock_skew``).
4. The calling gateway is registered as serving the request's client subsystem
   (``peer_not_registered``); this gateway serves the provider subsystem
   (``unknown_service``).
5. The message id is new for that client and the created time within the skew
   (``replay_detected``, ``clock_skew``); where processes share the log, the log is
   asked too, before step 8 and again after it (:class:`~gateway.replay.SharedReplayCheck`).
6. The access rights allow the client to call the method (``access_denied``); for a
   metaservice (``/serai.meta.v1.Meta/…``), which access rights do not cover, the
   answer is prepared instead (:func:`gateway.meta.answer_provider_meta`:
   ``invalid_request``, ``unknown_service``).
7. This gateway can sign the response: it holds a fresh OCSP response for its signing
   certificate (``ocsp_unavailable``, origin gateway), so the provider IS never acts on
   a request whose answer could not be signed.
8. The ``REQUEST_RECEIVED`` record is committed (``log_unavailable``).

A metaservice is answered by this gateway itself, signed and logged like any response;
the provider IS is never called with a metaservice method path.

Then the provider IS is called over one long-lived channel per IS address, with the
original method path, the raw body, the ``x-road-*`` metadata and the remaining
deadline (the smaller of the request's ``timeout`` and this call's deadline). An
answer larger than ``max_message_bytes`` is refused (``message_too_large``, origin
``provider``; the IS channels set no gRPC receive limit, whose refusal would pass for
the IS's own status). Its answer, success or its own gRPC status, is signed with the
provider member's key, committed as ``RESPONSE_SENT`` and returned with the receipt.
An IS that cannot be reached is ``provider_unavailable``; an exchange whose deadline
passes while the IS works is ``deadline_exceeded`` (the request record stays, no
response is signed).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from typing import Any, Final, cast

import grpc

from gateway._descriptors import DescriptorCache
from gateway._messages import ExchangeRequestMessage, ExchangeResponseMessage, Receipt
from gateway._observe import CODE_PROVIDER_STATUS, ExchangeObservation
from gateway._settings import ExchangeParts
from gateway.commit import LogRecord, RecordKind
from gateway.errors import GatewayError
from gateway.headers import MAX_STATUS_DETAILS_BYTES, MAX_STATUS_MESSAGE_CHARS, response_header_for
from gateway.meta import answer_provider_meta, is_meta_method
from gateway.peers import ENVELOPE_BYTES, ChannelPool
from gateway.replay import SharedReplayCheck
from gateway.signing import VerifiedRequest, verify_request
from gateway.tlsconf import peer_certificate_sha256
from gateway.wire import MESSAGE_ID_KEY, REQUEST_HASH_KEY, refusing, status_code_of
from serai.errors import ErrorCode, Origin

__all__ = ["ProviderSide"]

_DETAILS_KEY: Final = "grpc-status-details-bin"
_Context = grpc.aio.ServicerContext[bytes, bytes]


class ProviderSide:
    """Handles ``Transport/Exchange`` on the peer port (module docstring)."""

    def __init__(
        self,
        *,
        parts: ExchangeParts,
        providers: ChannelPool,
        shared_replay: SharedReplayCheck | None = None,
    ) -> None:
        self._parts = parts
        self._providers = providers
        self._shared_replay = shared_replay
        self._settings = parts.settings
        self._descriptors = DescriptorCache()

    async def exchange(self, raw: bytes, context: _Context) -> bytes:
        """One exchange: the serialized ExchangeRequest in, ExchangeResponse out."""
        exchange: list[tuple[str, str | bytes]] = []
        observer = self._parts.observer
        observation = observer.begin("provider")
        try:
            async with refusing(context, side="provider", exchange=exchange, outcome=observation):
                return await self._exchange(raw, context, exchange, observation)
        finally:
            observer.finish(observation)
        raise AssertionError("unreachable: refusing() aborts")  # pragma: no cover

    async def _exchange(
        self,
        raw: bytes,
        context: _Context,
        exchange: list[tuple[str, str | bytes]],
        observation: ExchangeObservation,
    ) -> bytes:
        started = time.monotonic()
        parts, settings = self._parts, self._settings
        parts.admission()
        snapshot = parts.configuration.current()
        auth_hash = peer_certificate_sha256(cast("dict[str, list[bytes]]", context.auth_context()))
        peer = snapshot.gateway_by_auth_hash(auth_hash) if auth_hash is not None else None
        if peer is None:
            raise GatewayError(
                "the calling gateway's TLS certificate is not registered",
                code=ErrorCode.PEER_NOT_REGISTERED,
                origin=Origin.CLIENT,
            )
        if parts.peer_revocation is not None:
            await parts.peer_revocation(
                cast("dict[str, list[bytes]]", context.auth_context()), snapshot
            )
        if len(raw) > settings.max_message_bytes + ENVELOPE_BYTES:
            # Refused before decoding: the peer port sets no gRPC receive limit (runtime.py).
            raise GatewayError(
                f"exchange message is {len(raw)} bytes, at most "
                f"{settings.max_message_bytes + ENVELOPE_BYTES} allowed "
                f"({settings.max_message_bytes} for the body and {ENVELOPE_BYTES} around it)",
                code=ErrorCode.MESSAGE_TOO_LARGE,
                origin=Origin.CLIENT,
            )
        request = ExchangeRequestMessage.decode(raw)
        if len(request.body) > settings.max_message_bytes:
            raise GatewayError(
                f"request body is {len(request.body)} bytes, "
                f"at most {settings.max_message_bytes} allowed",
                code=ErrorCode.MESSAGE_TOO_LARGE,
                origin=Origin.CLIENT,
            )
        verifying = time.perf_counter()
        verified = verify_request(
            request.signed_header,
            chain=request.certificate_chain,
            ocsp_response=request.ocsp_response,
            body=request.body,
            trust=snapshot.trust_store,
            now=parts.clock(),
            max_ocsp_age_s=settings.max_ocsp_age_s,
            max_skew_s=settings.max_skew_s,
            cache=parts.verification_cache,
        )
        observation.add("verification", verifying)
        header = verified.header
        observation.client = header.client
        observation.service = header.service.subsystem
        observation.method = header.service.method_path
        observation.message_id = header.message_id
        exchange.append((MESSAGE_ID_KEY, header.message_id))
        exchange.append((REQUEST_HASH_KEY, verified.header_sha256.hex()))
        if header.client not in peer.subsystems:
            raise GatewayError(
                f"gateway {peer.id} is not registered as serving {header.client}",
                code=ErrorCode.PEER_NOT_REGISTERED,
                origin=Origin.CLIENT,
            )
        provider = settings.provider(header.service.subsystem)
        if provider is None:
            raise GatewayError(
                f"this gateway does not serve {header.service.subsystem}",
                code=ErrorCode.UNKNOWN_SERVICE,
                origin=Origin.CLIENT,
            )
        parts.replay.check_and_remember(header.client, header.message_id, header.created_at)
        shared_replay = self._shared_replay
        if shared_replay is not None:
            await shared_replay.before_commit(header.client, header.message_id)
        policy = parts.policies.policy()
        meta_answer: bytes | None = None
        if is_meta_method(header.service.method_path):
            meta_answer = answer_provider_meta(
                method_path=header.service.method_path,
                body=request.body,
                client=header.client,
                provider=header.service.subsystem,
                snapshot=snapshot,
                policy=policy,
                descriptors=self._descriptors,
            )
        else:
            policy.check(header.client, header.service, groups=snapshot)
        # A response this gateway could not sign must not follow an IS that acted.
        parts.signer.check_can_sign()
        request_index = await parts.log.commit_request(
            LogRecord(
                kind=RecordKind.REQUEST_RECEIVED,
                message_id=header.message_id,
                header_jws=request.signed_header.encode("ascii"),
                certificate_chain=request.certificate_chain,
                ocsp_response=request.ocsp_response,
                body=request.body,
                body_sha256=header.body_sha256,
                peer_gateway=peer.id,
            )
        )
        if shared_replay is not None:
            await shared_replay.after_commit(header.client, header.message_id, request_index)
        if meta_answer is not None:
            body, code, message, details = meta_answer, 0, "", b""
        else:
            budget = _budget_s(context, request.timeout_s, settings.default_deadline_s)
            remaining = budget - (time.monotonic() - started)
            calling = time.perf_counter()
            try:
                body, code, message, details = await self._call_provider(
                    provider.address, verified, request.body, remaining
                )
            finally:
                observation.add("provider", calling)
        if code != 0:
            observation.status = status_code_of(code).name
            observation.code = CODE_PROVIDER_STATUS
            observation.origin = "provider"
        signing = time.perf_counter()
        signed = parts.signer.sign(
            response_header_for(
                message_id=header.message_id,
                request_header_sha256=verified.header_sha256,
                body=body,
                created_at=parts.clock(),
                status_code=code,
                status_message=message,
                status_details=details,
            )
        )
        observation.add("signing", signing)
        response_index = await parts.log.commit_response(
            LogRecord(
                kind=RecordKind.RESPONSE_SENT,
                message_id=header.message_id,
                header_jws=signed.jws.encode("ascii"),
                certificate_chain=signed.certificate_chain,
                ocsp_response=signed.ocsp_response,
                body=body,
                body_sha256=hashlib.sha256(body).digest(),
                peer_gateway=peer.id,
            )
        )
        return ExchangeResponseMessage(
            signed_header=signed.jws,
            body=body,
            certificate_chain=signed.certificate_chain,
            ocsp_response=signed.ocsp_response,
            receipt=Receipt(
                gateway_id=str(parts.gateway_id),
                request_index=request_index,
                response_index=response_index,
                tree_size=response_index + 1,
            ),
        ).encode()

    async def _call_provider(
        self, address: str, verified: VerifiedRequest, body: bytes, timeout_s: float
    ) -> tuple[bytes, int, str, bytes]:
        """Call the provider IS: (body, status code, message, details)."""
        if timeout_s <= 0:
            raise _deadline_error()
        header = verified.header
        metadata: list[tuple[str, str]] = [
            ("x-road-client", str(header.client)),
            ("x-road-service", str(header.service.subsystem)),
            (MESSAGE_ID_KEY, header.message_id),
            (REQUEST_HASH_KEY, verified.header_sha256.hex()),
        ]
        if header.user_id:
            metadata.append(("x-road-user-id", header.user_id))
        if header.issue:
            metadata.append(("x-road-issue", header.issue))
        call = self._providers.channel_for(address).unary_unary(
            header.service.method_path, request_serializer=None, response_deserializer=None
        )
        try:
            answer = await call(body, timeout=timeout_s, metadata=tuple(metadata))
        except grpc.aio.AioRpcError as exc:
            return _failure(exc, address)
        limit = self._settings.max_message_bytes
        if len(answer) > limit:
            raise GatewayError(
                f"the provider IS at {address} answered {len(answer)} bytes, "
                f"at most {limit} allowed",
                code=ErrorCode.MESSAGE_TOO_LARGE,
                origin=Origin.PROVIDER,
            )
        return bytes(answer), 0, "", b""


def _failure(exc: grpc.aio.AioRpcError, address: str) -> tuple[bytes, int, str, bytes]:
    """A provider's own status, or the refusal that the IS is unreachable or too slow."""
    code = exc.code()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        raise _deadline_error() from exc
    if code == grpc.StatusCode.UNAVAILABLE and _is_connect_failure(exc):
        raise GatewayError(
            f"the provider IS at {address} is unreachable",
            code=ErrorCode.PROVIDER_UNAVAILABLE,
            origin=Origin.PROVIDER,
        ) from exc
    details = b""
    trailers: Iterable[Any] = exc.trailing_metadata() or ()
    for key, value in trailers:
        if key == _DETAILS_KEY and isinstance(value, bytes):
            details = value[:MAX_STATUS_DETAILS_BYTES]
    message = (exc.details() or "")[:MAX_STATUS_MESSAGE_CHARS]
    return b"", code.value[0], message, details


def _is_connect_failure(exc: grpc.aio.AioRpcError) -> bool:
    """UNAVAILABLE made by the channel (no connection), not sent by the provider IS."""
    text = f"{exc.details()} {exc.debug_error_string()}".lower()
    return any(
        marker in text
        for marker in ("failed to connect", "connection refused", "socket closed", "connect failed")
    )


def _budget_s(context: _Context, timeout_s: float | None, default_s: float) -> float:
    limits: list[float] = [default_s]
    remaining: Any = context.time_remaining()
    if remaining is not None:
        limits.append(float(remaining))
    if timeout_s is not None:
        limits.append(timeout_s)
    return min(limits)


def _deadline_error() -> GatewayError:
    return GatewayError(
        "the exchange's deadline passed before the provider IS answered",
        code=ErrorCode.DEADLINE_EXCEEDED,
        origin=Origin.PROVIDER,
    )
