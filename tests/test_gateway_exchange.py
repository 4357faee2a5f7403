"""The unary exchange end to end (DESIGN §4): a plain grpcio client as the consumer IS,
two gateway runtimes with real mutual TLS on loopback, an OCSP responder over HTTP, a
signed global configuration through registry.client, and an echo provider IS (see
tests/gatewayharness.py). Codes are asserted through the gRPC status and the
``x-road-error`` trailer. No timing asserts; generous deadlines except where a deadline
is the subject."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from certs.keys import generate_private_key
from certs.profiles import Profile
from gateway._settings import DEFAULT_MAX_MESSAGE_BYTES
from gateway.commit import RecordKind
from gateway.headers import request_header_for
from gateway.runtime import StapledOCSP
from gateway.signing import SignedHeader
from gateway.tlsconf import certificates_pem
from serai.identifiers import SubsystemId
from serai_proto.transport.v1 import transport_pb2
from tests.gatewayharness import (
    ARCHIVE,
    CONSUMER_GW,
    FAIL,
    FAIL_DETAILS,
    FAIL_MESSAGE,
    GET_PARCEL,
    PROPERTY,
    PROVIDER_GW,
    REGISTRY,
    SLOW,
    Harness,
    federation,
    pem_key,
    trailers_of,
)

EXCHANGE_METHOD = "/serai.transport.v1.Transport/Exchange"


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Harness]:
    async with federation(tmp_path) as harness:
        yield harness


async def test_happy_path_echoes_and_logs_on_both_sides(fed: Harness) -> None:
    body = bytes(range(256)) * 4
    result = await fed.call(GET_PARCEL, body, extra=[("x-road-user-id", "EE12345")])
    assert result.code == grpc.StatusCode.OK, (result.details, result.trailers)
    assert result.body == body
    message_id = result.trailers["x-road-id"]
    request_hash = bytes.fromhex(result.trailers["x-road-request-hash"])
    assert len(request_hash) == 32
    assert [r.kind for r in fed.consumer_log.records] == [
        RecordKind.REQUEST_SENT,
        RecordKind.RESPONSE_RECEIVED,
    ]
    assert [r.kind for r in fed.provider_log.records] == [
        RecordKind.REQUEST_RECEIVED,
        RecordKind.RESPONSE_SENT,
    ]
    for record in (*fed.consumer_log.records, *fed.provider_log.records):
        assert record.message_id == message_id
    sent, received = fed.consumer_log.records
    assert received.peer_gateway == PROVIDER_GW
    assert received.peer_receipt is not None
    assert (received.peer_receipt.request_index, received.peer_receipt.response_index) == (0, 1)
    assert fed.provider_log.records[0].peer_gateway == CONSUMER_GW
    # the request hash names the signed header bytes, whose JWS both logs hold
    assert sent.header_jws == fed.provider_log.records[0].header_jws
    assert sent.body == body
    method, metadata = fed.echo.calls[-1]
    assert method == GET_PARCEL
    assert metadata["x-road-client"] == str(PROPERTY)
    assert metadata["x-road-service"] == str(REGISTRY)
    assert metadata["x-road-id"] == message_id
    assert metadata["x-road-user-id"] == "EE12345"
    assert metadata["x-road-request-hash"] == request_hash.hex()
    assert hashlib.sha256(body).digest() == sent.body_sha256


async def test_provider_error_status_passes_through_signed_and_logged(fed: Harness) -> None:
    result = await fed.call(FAIL)
    assert result.code == grpc.StatusCode.NOT_FOUND
    assert result.details == FAIL_MESSAGE
    assert "x-road-error" not in result.trailers  # the provider's own status, not a refusal
    assert result.binary_trailers["grpc-status-details-bin"] == FAIL_DETAILS
    assert [r.kind for r in fed.provider_log.records] == [
        RecordKind.REQUEST_RECEIVED,
        RecordKind.RESPONSE_SENT,
    ]
    assert [r.kind for r in fed.consumer_log.records] == [
        RecordKind.REQUEST_SENT,
        RecordKind.RESPONSE_RECEIVED,
    ]
    assert fed.consumer_log.records[1].body == b""


async def test_deadline_propagates_to_the_provider(fed: Harness) -> None:
    warm = await fed.call()  # channels and handshakes out of the way of the deadline
    assert warm.code == grpc.StatusCode.OK
    result = await fed.call(SLOW, deadline_s=2.0)
    assert result.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert fed.echo.calls[-1][0] == SLOW  # it reached the provider, with a deadline
    assert [r.kind for r in fed.provider_log.records][2:] == [RecordKind.REQUEST_RECEIVED]


@pytest.mark.parametrize(
    ("case", "kwargs", "status", "error"),
    [
        (
            "access_denied",
            {"method": "/cadastre.v1.Secrets/GetOwner"},
            grpc.StatusCode.PERMISSION_DENIED,
            "client:access_denied",
        ),
        (
            "unknown_service",
            {"service": "UZ/GOV/NOBODY/registry"},
            grpc.StatusCode.NOT_FOUND,
            "client:unknown_service",
        ),
        (
            "invalid_identifier",
            {"service": "UZ/GOV/CADASTRE"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "client:invalid_identifier",
        ),
        (
            "missing_client",
            {"client": None},
            grpc.StatusCode.INVALID_ARGUMENT,
            "client:invalid_identifier",
        ),
        (
            "unknown_client",
            {"client": "UZ/GOV/STC/tax"},
            grpc.StatusCode.NOT_FOUND,
            "client:unknown_client",
        ),
        (
            "client_not_authenticated",
            {"client": str(ARCHIVE)},
            grpc.StatusCode.UNAUTHENTICATED,
            "client:client_not_authenticated",
        ),
        (
            "message_too_large",
            {"body": b"x" * (64 * 1024 + 1)},
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "client:message_too_large",
        ),
    ],
)
async def test_refusals(
    fed: Harness, case: str, kwargs: dict[str, object], status: grpc.StatusCode, error: str
) -> None:
    result = await fed.call(**kwargs)  # type: ignore[arg-type]
    assert (result.code, result.error) == (status, error), (case, result.details)
    assert fed.echo.calls == []
    # a refusal before signing leaves no record; access_denied is refused after the
    # consumer logged what it sent, and the provider logs nothing
    assert fed.provider_log.records == ()


async def test_replayed_message_id_is_refused(fed: Harness) -> None:
    first = await fed.call(message_id="exchange-1")
    assert first.code == grpc.StatusCode.OK
    again = await fed.call(message_id="exchange-1")
    assert (again.code, again.error) == (grpc.StatusCode.ALREADY_EXISTS, "client:replay_detected")
    assert again.trailers["x-road-id"] == "exchange-1"
    assert len(fed.echo.calls) == 1


async def test_provider_log_unavailable_refuses_before_the_provider_is_called(
    fed: Harness,
) -> None:
    fed.provider_log.set_unavailable("disk full")
    result = await fed.call()
    assert (result.code, result.error) == (grpc.StatusCode.UNAVAILABLE, "gateway:log_unavailable")
    assert fed.echo.calls == []
    assert fed.provider_log.records == ()


async def test_consumer_log_unavailable_fails_the_exchange(fed: Harness) -> None:
    fed.consumer_log.set_unavailable("disk full")
    result = await fed.call()
    assert (result.code, result.error) == (grpc.StatusCode.UNAVAILABLE, "gateway:log_unavailable")
    assert result.body is None
    assert fed.consumer_log.records == ()


async def test_provider_unreachable_is_provider_unavailable(fed: Harness) -> None:
    await fed.echo.stop()
    result = await fed.call()
    assert (result.code, result.error) == (
        grpc.StatusCode.UNAVAILABLE,
        "provider:provider_unavailable",
    )


async def test_failover_to_the_next_gateway(tmp_path: Path) -> None:
    async with federation(tmp_path, down_gateway=True) as fed:
        result = await fed.call()
        assert result.code == grpc.StatusCode.OK, (result.details, result.trailers)
        assert fed.consumer_log.records[1].peer_gateway == PROVIDER_GW


async def test_unregistered_gateway_is_refused_by_the_provider(fed: Harness) -> None:
    key = generate_private_key()
    cert = fed.ca.issue(Profile.AUTH, "UZ/GOV/MINJUST/gw:rogue", key.public_key())
    credentials = grpc.ssl_channel_credentials(
        root_certificates=fed.root_pem,
        private_key=pem_key(key),
        certificate_chain=certificates_pem([cert, fed.ca.certificate]),
    )
    async with grpc.aio.secure_channel(
        f"127.0.0.1:{fed.provider.peer_port}",
        credentials,
        options=(("grpc.ssl_target_name_override", "localhost"),),
    ) as channel:
        exchange = channel.unary_unary(EXCHANGE_METHOD, None, None)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await exchange(b"", timeout=30)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    trailers = trailers_of(info.value.trailing_metadata())
    assert trailers["x-road-error"].startswith("client:peer_not_registered:")
    assert fed.provider_log.records == ()


async def test_consumer_refuses_a_server_that_is_not_the_registered_gateway(
    tmp_path: Path,
) -> None:
    """The provider's peer address answered by a server with another (valid) certificate."""
    async with federation(tmp_path, impostor=True) as fed:
        result = await fed.call()
        assert (result.code, result.error) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "provider:peer_not_registered",
        )
        assert fed.echo.calls == []


async def test_health_on_both_ports(fed: Harness) -> None:
    check = fed.channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        health_pb2.HealthCheckRequest.SerializeToString,
        health_pb2.HealthCheckResponse.FromString,
    )
    answer = await check(health_pb2.HealthCheckRequest(), timeout=30)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    key = generate_private_key()
    cert = fed.ca.issue(Profile.AUTH, "UZ/GOV/MINJUST/gw:probe", key.public_key())
    credentials = grpc.ssl_channel_credentials(
        root_certificates=fed.root_pem,
        private_key=pem_key(key),
        certificate_chain=certificates_pem([cert, fed.ca.certificate]),
    )
    async with grpc.aio.secure_channel(
        f"127.0.0.1:{fed.provider.peer_port}",
        credentials,
        options=(("grpc.ssl_target_name_override", "localhost"),),
    ) as channel:
        peer_check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            health_pb2.HealthCheckRequest.SerializeToString,
            health_pb2.HealthCheckResponse.FromString,
        )
        answer = await peer_check(health_pb2.HealthCheckRequest(), timeout=30)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_unexpected_error_is_internal_without_details(fed: Harness) -> None:
    fed.provider_policy.failure = RuntimeError("secret internals /etc/passwd")
    result = await fed.call()
    assert (result.code, result.error) == (grpc.StatusCode.INTERNAL, "gateway:internal")
    assert result.details == "internal error"
    assert "passwd" not in str(result.trailers)
    assert fed.echo.calls == []


async def test_expired_configuration_fails_closed(fed: Harness) -> None:
    fed.configuration_clock.offset = dt.timedelta(minutes=11)
    result = await fed.call()
    assert (result.code, result.error) == (
        grpc.StatusCode.UNAVAILABLE,
        "gateway:globalconf_expired",
    )
    assert fed.echo.calls == []


# --- a registered consumer gateway that misbehaves, speaking to the peer port directly ---


def _signed_request(
    fed: Harness,
    *,
    body: bytes = b"parcel 42",
    client: SubsystemId = PROPERTY,
    created_at: dt.datetime | None = None,
    message_id: str = "raw-1",
) -> tuple[SignedHeader, bytes]:
    header = request_header_for(
        message_id=message_id,
        client=client,
        service=REGISTRY.service(GET_PARCEL),
        body=body,
        created_at=created_at or dt.datetime.now(dt.UTC),
    )
    return fed.consumer_signer.sign(header), body


async def _send_raw(fed: Harness, signed: SignedHeader, body: bytes) -> tuple[str, str]:
    """Send an ExchangeRequest as the registered consumer gateway; (status, x-road-error)."""
    key_pem, chain_pem = fed.consumer_tls
    credentials = grpc.ssl_channel_credentials(
        root_certificates=fed.root_pem, private_key=key_pem, certificate_chain=chain_pem
    )
    request = transport_pb2.ExchangeRequest(
        signed_header=signed.jws,
        body=body,
        certificate_chain=list(signed.certificate_chain),
        ocsp_response=signed.ocsp_response,
    )
    async with grpc.aio.secure_channel(
        f"127.0.0.1:{fed.provider.peer_port}",
        credentials,
        options=(("grpc.ssl_target_name_override", "localhost"),),
    ) as channel:
        exchange = channel.unary_unary(EXCHANGE_METHOD, None, None)
        try:
            await exchange(request.SerializeToString(), timeout=30)
        except grpc.aio.AioRpcError as exc:
            error = trailers_of(exc.trailing_metadata()).get("x-road-error", "")
            return exc.code().name, ":".join(error.split(":", 2)[:2])
    return "OK", ""


async def test_raw_peer_with_a_good_request_is_served(fed: Harness) -> None:
    signed, body = _signed_request(fed)
    assert await _send_raw(fed, signed, body) == ("OK", "")
    assert len(fed.echo.calls) == 1


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("tampered_body", ("UNAUTHENTICATED", "client:signature_invalid")),
        ("tampered_signature", ("UNAUTHENTICATED", "client:signature_invalid")),
        ("old_header", ("INVALID_ARGUMENT", "client:clock_skew")),
        ("client_not_served_by_the_peer", ("UNAUTHENTICATED", "client:peer_not_registered")),
    ],
)
async def test_provider_refuses_a_bad_request_from_a_registered_peer(
    fed: Harness, case: str, expected: tuple[str, str]
) -> None:
    if case == "tampered_body":
        signed, _ = _signed_request(fed)
        outcome = await _send_raw(fed, signed, b"parcel 43")
    elif case == "tampered_signature":
        signed, body = _signed_request(fed)
        head, _, signature = signed.jws.rpartition(".")
        flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
        outcome = await _send_raw(fed, replace(signed, jws=f"{head}.{flipped}"), body)
    elif case == "old_header":
        old = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        outcome = await _send_raw(fed, *_signed_request(fed, created_at=old))
    else:
        stranger = PROPERTY.member.subsystem("elsewhere")
        outcome = await _send_raw(fed, *_signed_request(fed, client=stranger))
    assert outcome == expected, case
    assert fed.echo.calls == []
    assert fed.provider_log.records == ()


async def test_provider_without_a_fresh_ocsp_response_refuses_before_the_provider_is_called(
    fed: Harness,
) -> None:
    # Its response could not be signed: the IS must not act on the request first.
    stapled = fed.provider._parts.signer._ocsp_response  # the harness StapledOCSP
    assert isinstance(stapled, StapledOCSP)
    held = stapled._der
    stapled._der = b""  # as when the held answer is past its bound
    try:
        result = await fed.call()
    finally:
        stapled._der = held
    assert (result.code, result.error) == (grpc.StatusCode.UNAVAILABLE, "gateway:ocsp_unavailable")
    assert fed.echo.calls == []
    assert fed.provider_log.records == ()
    assert (await fed.call()).code == grpc.StatusCode.OK


class _OversizeIS(grpc.GenericRpcHandler):  # type: ignore[type-arg]  # not subscriptable
    """A provider IS answering every call with one byte more than a gateway may carry."""

    def __init__(self) -> None:
        self.calls = 0

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[bytes, bytes]:
        async def answer(body: bytes, context: object) -> bytes:
            self.calls += 1
            return b"x" * (DEFAULT_MAX_MESSAGE_BYTES + 1)

        return grpc.unary_unary_rpc_method_handler(answer)


async def test_an_is_answer_over_the_size_limit_is_refused_not_signed(tmp_path: Path) -> None:
    """The provider gateway refuses to carry it (message_too_large, origin provider),
    where grpc's receive limit looked like the IS's own RESOURCE_EXHAUSTED and was signed
    and logged as its answer. The request record stays; no response is logged."""
    oversize = _OversizeIS()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((oversize,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with federation(tmp_path, provider_address=f"127.0.0.1:{port}") as fed:
            result = await fed.call(GET_PARCEL, b"parcel 42")
            assert result.code == grpc.StatusCode.RESOURCE_EXHAUSTED, result.details
            assert result.error == "provider:message_too_large"
            assert "answered 4194305 bytes, at most 4194304 allowed" in result.details
            assert oversize.calls == 1
            kinds = [record.kind for record in fed.provider_log.records]
            assert kinds == [RecordKind.REQUEST_RECEIVED]
            assert [r.kind for r in fed.consumer_log.records] == [RecordKind.REQUEST_SENT]
    finally:
        await server.stop(None)
