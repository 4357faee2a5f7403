"""The adapter SDK (adapters/sdk): context parsing and refusal parsing as tables; a
ProviderServer called directly (no gateway); and the whole path through the real
two-gateway federation of tests/gatewayharness.py, with the ProviderServer as the
provider IS and a GatewayClient as the consumer IS."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2  # type: ignore[import-untyped]  # no stubs
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from adapters.sdk import (
    ExchangeRefused,
    GatewayClient,
    ProviderError,
    ProviderServer,
    RequestContext,
    abort,
    call_with_receipt,
    context_from_metadata,
    invalid_argument,
    parse_refusal,
    refusal_from_trailer,
    request_context,
    rich_status,
    service,
)
from serai.errors import ErrorCode, InvalidIdentifierError
from serai.identifiers import SubsystemId
from serai.localprocs import free_port
from serai_proto.cadastre.v1 import cadastre_pb2, cadastre_pb2_grpc
from serai_proto.tax.v1 import tax_pb2, tax_pb2_grpc
from tests.gatewayharness import PROPERTY, REGISTRY, Harness, federation

_Context = grpc.aio.ServicerContext[Any, Any]
PARCEL = "10:01:01:01:01:0001"
GOOD = {
    "x-road-client": "UZ/GOV/MINJUST/property",
    "x-road-service": "UZ/GOV/CADASTRE/registry",
    "x-road-id": "6a1c0b1e-0000-4000-8000-000000000001",
}

# --- context parsing -------------------------------------------------------------------


@dataclass(frozen=True)
class ContextCase:
    name: str
    metadata: dict[str, Any]
    code: ErrorCode | None = None  # None: accepted
    status: grpc.StatusCode | None = None
    field: str = ""


CONTEXT_CASES = [
    ContextCase("minimal", dict(GOOD)),
    ContextCase(
        "all fields",
        {**GOOD, "x-road-user-id": "EE38001085718", "x-road-issue": "case 7/2024: sale"},
    ),
    ContextCase("empty optional fields", {**GOOD, "x-road-user-id": "", "x-road-issue": ""}),
    ContextCase("foreign keys ignored", {**GOOD, "authorization": "x", "user-agent": "grpc"}),
    *(
        ContextCase(
            f"missing {key}",
            {k: v for k, v in GOOD.items() if k != key},
            ErrorCode.UNAUTHENTICATED,
            grpc.StatusCode.UNAUTHENTICATED,
            key,
        )
        for key in GOOD
    ),
    ContextCase(
        "empty client",
        {**GOOD, "x-road-client": ""},
        ErrorCode.UNAUTHENTICATED,
        grpc.StatusCode.UNAUTHENTICATED,
        "x-road-client",
    ),
    ContextCase(
        "client is a member",
        {**GOOD, "x-road-client": "UZ/GOV/MINJUST"},
        ErrorCode.INVALID_IDENTIFIER,
        grpc.StatusCode.INVALID_ARGUMENT,
        "x-road-client",
    ),
    ContextCase(
        "client with a bad character",
        {**GOOD, "x-road-client": "UZ/GOV/MINJUST/prop erty"},
        ErrorCode.INVALID_IDENTIFIER,
        grpc.StatusCode.INVALID_ARGUMENT,
        "x-road-client",
    ),
    ContextCase(
        "service is a gateway",
        {**GOOD, "x-road-service": "UZ/GOV/CADASTRE/gw:main"},
        ErrorCode.INVALID_IDENTIFIER,
        grpc.StatusCode.INVALID_ARGUMENT,
        "x-road-service",
    ),
    ContextCase(
        "service far too long",
        {**GOOD, "x-road-service": "UZ/GOV/CADASTRE/" + "r" * 5000},
        ErrorCode.INVALID_IDENTIFIER,
        grpc.StatusCode.INVALID_ARGUMENT,
        "x-road-service",
    ),
    ContextCase(
        "client as binary",
        {**GOOD, "x-road-client": b"UZ/GOV/MINJUST/property"},
        ErrorCode.INVALID_IDENTIFIER,
        grpc.StatusCode.INVALID_ARGUMENT,
        "x-road-client",
    ),
    ContextCase(
        "message id too long",
        {**GOOD, "x-road-id": "m" * 256},
        ErrorCode.INVALID_REQUEST,
        grpc.StatusCode.INVALID_ARGUMENT,
        "x-road-id",
    ),
    ContextCase(
        "message id with a control character",
        {**GOOD, "x-road-id": "abc\x00def"},
        ErrorCode.INVALID_REQUEST,
        grpc.StatusCode.INVALID_ARGUMENT,
        "x-road-id",
    ),
    ContextCase(
        "user id not ASCII",
        {**GOOD, "x-road-user-id": "Дилноза"},
        ErrorCode.INVALID_REQUEST,
        grpc.StatusCode.INVALID_ARGUMENT,
        "x-road-user-id",
    ),
    ContextCase(
        "issue too long",
        {**GOOD, "x-road-issue": "i" * 1025},
        ErrorCode.INVALID_REQUEST,
        grpc.StatusCode.INVALID_ARGUMENT,
        "x-road-issue",
    ),
]


@pytest.mark.parametrize("case", CONTEXT_CASES, ids=lambda c: c.name)
def test_context_from_metadata(case: ContextCase) -> None:
    if case.code is None:
        context = context_from_metadata(list(case.metadata.items()), method="/a.B/C")
        assert context == RequestContext(
            client=SubsystemId.parse(GOOD["x-road-client"]),
            service=SubsystemId.parse(GOOD["x-road-service"]),
            method="/a.B/C",
            message_id=GOOD["x-road-id"],
            user_id=case.metadata.get("x-road-user-id", ""),
            issue=case.metadata.get("x-road-issue", ""),
        )
        return
    with pytest.raises(ProviderError) as caught:
        context_from_metadata(list(case.metadata.items()))
    error = caught.value
    assert (error.code, error.status, error.field) == (case.code, case.status, case.field)
    assert case.field in error.message
    assert error.message.isascii()
    assert len(error.message) < 400


def test_context_takes_the_first_value_of_a_repeated_key() -> None:
    pairs = [*GOOD.items(), ("x-road-client", "UZ/GOV/OTHER/x")]
    assert str(context_from_metadata(pairs).client) == GOOD["x-road-client"]


# --- refusal parsing -------------------------------------------------------------------


@dataclass(frozen=True)
class RefusalCase:
    name: str
    trailer: str
    origin: str
    code: str
    message: str


REFUSAL_CASES = [
    RefusalCase(
        "access denied",
        "client:access_denied:UZ/GOV/X/y may not call /a.B/C",
        "client",
        "access_denied",
        "UZ/GOV/X/y may not call /a.B/C",
    ),
    RefusalCase("colons in the message", "gateway:internal:a:b:c", "gateway", "internal", "a:b:c"),
    RefusalCase(
        "empty message",
        "provider:provider_unavailable:",
        "provider",
        "provider_unavailable",
        "",
    ),
    RefusalCase(
        "a code newer than this SDK",
        "gateway:quota_exceeded2:slow down",
        "gateway",
        "quota_exceeded2",
        "slow down",
    ),
    RefusalCase("no separators", "garbage", "gateway", "unknown", "garbage"),
    RefusalCase(
        "one separator", "client:access_denied", "gateway", "unknown", "client:access_denied"
    ),
    RefusalCase(
        "unknown origin", "martian:access_denied:x", "gateway", "unknown", "martian:access_denied:x"
    ),
    RefusalCase(
        "code not snake_case",
        "client:Access-Denied:x",
        "gateway",
        "unknown",
        "client:Access-Denied:x",
    ),
    RefusalCase("empty code", "client::x", "gateway", "unknown", "client::x"),
]


@pytest.mark.parametrize("case", REFUSAL_CASES, ids=lambda c: c.name)
def test_refusal_from_trailer(case: RefusalCase) -> None:
    refused = refusal_from_trailer(
        case.trailer, status=grpc.StatusCode.PERMISSION_DENIED, message_id="m-1"
    )
    assert (refused.origin, refused.code, refused.message) == (
        case.origin,
        case.code,
        case.message,
    )
    assert refused.status == grpc.StatusCode.PERMISSION_DENIED
    assert refused.message_id == "m-1"
    assert refused.request_hash is None


def _rpc_error(code: grpc.StatusCode, trailers: Sequence[tuple[str, str | bytes]]) -> Any:
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailers), "details", None
    )


def test_parse_refusal_reads_the_exchange_ids() -> None:
    exc = _rpc_error(
        grpc.StatusCode.PERMISSION_DENIED,
        [
            ("x-road-id", "m-2"),
            ("x-road-request-hash", "ab" * 32),
            ("x-road-error", "client:access_denied:no"),
        ],
    )
    refused = parse_refusal(exc)
    assert refused is not None
    assert (refused.code, refused.origin, refused.message) == ("access_denied", "client", "no")
    assert (refused.message_id, refused.request_hash) == ("m-2", "ab" * 32)
    assert refused.code == ErrorCode.ACCESS_DENIED
    assert "access_denied" in str(refused)
    assert "ExchangeRefused(code='access_denied'" in repr(refused)


def test_parse_refusal_without_trailer_is_none() -> None:
    assert parse_refusal(_rpc_error(grpc.StatusCode.NOT_FOUND, [("x-road-id", "m")])) is None
    assert rich_status(_rpc_error(grpc.StatusCode.NOT_FOUND, [])) is None


# --- constructors ----------------------------------------------------------------------


def test_service_registration_names() -> None:
    descriptor = cadastre_pb2.DESCRIPTOR.services_by_name["Cadastre"]
    add = cadastre_pb2_grpc.add_CadastreServicer_to_server
    assert service(add, object(), descriptor).name == "cadastre.v1.Cadastre"
    assert service(add, object(), "cadastre.v1.Cadastre").name == "cadastre.v1.Cadastre"
    for bad in ("", ".cadastre.v1.Cadastre", "/cadastre.v1.Cadastre/GetParcel"):
        with pytest.raises(ValueError, match="service name"):
            service(add, object(), bad)


def test_provider_server_refuses_bad_settings() -> None:
    cadastre = _cadastre_registration(CadastreIS())
    with pytest.raises(ValueError, match="at least one"):
        ProviderServer(listen="127.0.0.1:0", services=[])
    with pytest.raises(ValueError, match="twice"):
        ProviderServer(listen="127.0.0.1:0", services=[cadastre, cadastre])
    with pytest.raises(ValueError, match="max_message_bytes"):
        ProviderServer(listen="127.0.0.1:0", services=[cadastre], max_message_bytes=0)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"client": "UZ/GOV/MINJUST"}, InvalidIdentifierError),
        ({"user_id": "Дилноза"}, ValueError),
        ({"user_id": "u" * 256}, ValueError),
        ({"issue": "a\nb"}, ValueError),
        ({"timeout_s": 0}, ValueError),
    ],
    ids=["member as client", "user id not ASCII", "user id too long", "issue newline", "timeout"],
)
async def test_gateway_client_refuses_bad_settings(
    kwargs: dict[str, Any], error: type[Exception]
) -> None:
    settings: dict[str, Any] = {"gateway": "127.0.0.1:1", "client": str(PROPERTY), **kwargs}
    with pytest.raises(error):
        GatewayClient(**settings)


async def test_gateway_client_refuses_a_bad_service_and_user() -> None:
    async with GatewayClient(gateway="127.0.0.1:1", client=PROPERTY) as bus:
        with pytest.raises(InvalidIdentifierError):
            bus.stub(cadastre_pb2_grpc.CadastreStub, "UZ/GOV/CADASTRE")
        with pytest.raises(ValueError, match="printable ASCII"):
            bus.with_user("a\x00b")
        other = bus.with_user("u-2", "i-2")
        assert (other.client, other.user_id, other.issue) == (PROPERTY, "u-2", "i-2")
        await other.close()  # a no-op: the channel is bus's


# --- in-memory provider ISs ------------------------------------------------------------


@dataclass
class CadastreIS(cadastre_pb2_grpc.CadastreServicer):
    """A cadastre with one parcel; records the context of every call."""

    seen: list[RequestContext] = field(default_factory=list)

    async def GetParcel(
        self, request: cadastre_pb2.GetParcelRequest, context: _Context
    ) -> cadastre_pb2.GetParcelResponse:
        self.seen.append(request_context(context))
        if not request.cadastral_number:
            await invalid_argument(context, "cadastral_number", "a cadastral number is required")
        if request.cadastral_number == "boom":
            raise RuntimeError("secret database password in the traceback")
        if request.cadastral_number != PARCEL:
            await abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"parcel {request.cadastral_number} is not in the cadastre",
                details=[error_details_pb2.ResourceInfo(resource_name=request.cadastral_number)],
            )
        return cadastre_pb2.GetParcelResponse(
            parcel=cadastre_pb2.Parcel(
                cadastral_number=PARCEL,
                area_m2=600,
                owners=[cadastre_pb2.Owner(owner_id="31507761230012", name="Dilnoza Karimova")],
            )
        )

    async def ListEncumbrances(
        self, request: cadastre_pb2.ListEncumbrancesRequest, context: _Context
    ) -> cadastre_pb2.ListEncumbrancesResponse:
        request_context(context)
        return cadastre_pb2.ListEncumbrancesResponse()

    async def ListParcelsByOwner(
        self, request: cadastre_pb2.ListParcelsByOwnerRequest, context: _Context
    ) -> cadastre_pb2.ListParcelsByOwnerResponse:
        request_context(context)
        return cadastre_pb2.ListParcelsByOwnerResponse()


@dataclass
class TaxIS(tax_pb2_grpc.TaxServicer):
    """Served by the same IS but granted to nobody in the harness."""

    calls: int = 0

    async def GetTaxDebt(
        self, request: tax_pb2.GetTaxDebtRequest, context: _Context
    ) -> tax_pb2.GetTaxDebtResponse:
        self.calls += 1
        return tax_pb2.GetTaxDebtResponse(taxpayer_id=request.taxpayer_id)

    async def GetTaxpayer(
        self, request: tax_pb2.GetTaxpayerRequest, context: _Context
    ) -> tax_pb2.GetTaxpayerResponse:
        self.calls += 1
        return tax_pb2.GetTaxpayerResponse()

    async def ListAssessments(
        self, request: tax_pb2.ListAssessmentsRequest, context: _Context
    ) -> tax_pb2.ListAssessmentsResponse:
        self.calls += 1
        return tax_pb2.ListAssessmentsResponse()


def _cadastre_registration(servicer: CadastreIS) -> Any:
    return service(
        cadastre_pb2_grpc.add_CadastreServicer_to_server,
        servicer,
        cadastre_pb2.DESCRIPTOR.services_by_name["Cadastre"],
    )


@dataclass
class Agencies:
    harness: Harness
    server: ProviderServer
    cadastre: CadastreIS
    tax: TaxIS
    bus: GatewayClient


@pytest.fixture
async def agencies(tmp_path: Path) -> AsyncIterator[Agencies]:
    cadastre, tax = CadastreIS(), TaxIS()
    server = ProviderServer(
        listen=f"127.0.0.1:{free_port()}",
        services=[
            _cadastre_registration(cadastre),
            service(
                tax_pb2_grpc.add_TaxServicer_to_server,
                tax,
                tax_pb2.DESCRIPTOR.services_by_name["Tax"],
            ),
        ],
    )
    port = await server.start()
    try:
        async with federation(tmp_path, provider_address=f"127.0.0.1:{port}") as harness:
            bus = GatewayClient(
                gateway=f"127.0.0.1:{harness.consumer.is_port}",
                client=str(PROPERTY),
                user_id="31507761230012",
                issue="sale-2024-117",
            )
            async with bus:
                yield Agencies(harness, server, cadastre, tax, bus)
    finally:
        await server.stop(0)


# --- a ProviderServer called directly (not through a gateway) --------------------------


async def test_direct_call_without_metadata_is_unauthenticated(agencies: Agencies) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{agencies.server.port}") as channel:
        stub = cadastre_pb2_grpc.CadastreStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetParcel(cadastre_pb2.GetParcelRequest(cadastral_number=PARCEL))
    exc = caught.value
    assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "x-road-client is missing" in (exc.details() or "")
    status = rich_status(exc)
    assert status is not None
    info = _unpack(status.details, error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain, info.metadata["field"]) == (
        "unauthenticated",
        "serai",
        "x-road-client",
    )
    bad = _unpack(status.details, error_details_pb2.BadRequest)
    assert bad.field_violations[0].field == "x-road-client"


async def test_direct_call_with_malformed_client_names_the_key(agencies: Agencies) -> None:
    metadata = tuple({**GOOD, "x-road-client": "UZ/GOV/MINJUST"}.items())
    async with grpc.aio.insecure_channel(f"127.0.0.1:{agencies.server.port}") as channel:
        stub = cadastre_pb2_grpc.CadastreStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetParcel(cadastre_pb2.GetParcelRequest(), metadata=metadata)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "x-road-client" in (caught.value.details() or "")
    status = rich_status(caught.value)
    assert status is not None
    assert _unpack(status.details, error_details_pb2.ErrorInfo).reason == "invalid_identifier"


async def test_unexpected_exception_is_internal_without_a_trace(
    agencies: Agencies, caplog: pytest.LogCaptureFixture
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{agencies.server.port}") as channel:
        stub = cadastre_pb2_grpc.CadastreStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetParcel(
                cadastre_pb2.GetParcelRequest(cadastral_number="boom"),
                metadata=tuple(GOOD.items()),
            )
    exc = caught.value
    assert (exc.code(), exc.details()) == (grpc.StatusCode.INTERNAL, "internal error")
    assert "secret" not in repr(exc.trailing_metadata())
    assert "secret database password" in caplog.text


async def test_health_and_reflection(agencies: Agencies) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{agencies.server.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", "cadastre.v1.Cadastre", "tax.v1.Tax"):
            answer = await health.Check(health_pb2.HealthCheckRequest(service=name))
            assert answer.status == health_pb2.HealthCheckResponse.SERVING, name
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await health.Check(health_pb2.HealthCheckRequest(service="nope.v1.Nope"))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = [reflection_pb2.ServerReflectionRequest(list_services="")]
        responses = [r async for r in reflection.ServerReflectionInfo(iter(requests))]
    names = {s.name for s in responses[0].list_services_response.service}
    assert {"cadastre.v1.Cadastre", "tax.v1.Tax", "grpc.health.v1.Health"} <= names


async def test_start_stop_wait() -> None:
    server = ProviderServer(listen="127.0.0.1:0", services=[_cadastre_registration(CadastreIS())])
    port = await server.start()
    assert port == server.port != 0
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        await server.stop(1.0)
        await server.wait()
        with pytest.raises(grpc.aio.AioRpcError):
            await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)


# --- through both gateways -------------------------------------------------------------


async def test_typed_answer_and_context_through_both_gateways(agencies: Agencies) -> None:
    cadastre = agencies.bus.stub(cadastre_pb2_grpc.CadastreStub, REGISTRY)
    answer, receipt = await call_with_receipt(
        cadastre.GetParcel, cadastre_pb2.GetParcelRequest(cadastral_number=PARCEL)
    )
    assert isinstance(answer, cadastre_pb2.GetParcelResponse)
    assert answer.parcel.owners[0].name == "Dilnoza Karimova"
    assert len(receipt.message_id) == 36
    assert len(receipt.request_hash) == 64
    [seen] = agencies.cadastre.seen
    assert seen == RequestContext(
        client=PROPERTY,
        service=REGISTRY,
        method="/cadastre.v1.Cadastre/GetParcel",
        message_id=receipt.message_id,
        user_id="31507761230012",
        issue="sale-2024-117",
        request_hash=receipt.request_hash,
    )
    # the plain stub call works too, without a receipt
    plain = await cadastre.GetParcel(cadastre_pb2.GetParcelRequest(cadastral_number=PARCEL))
    assert plain == answer


async def test_own_message_id_and_other_user(agencies: Agencies) -> None:
    clerk = agencies.bus.with_user("clerk-7")
    cadastre = clerk.stub(cadastre_pb2_grpc.CadastreStub, str(REGISTRY))
    request = cadastre_pb2.GetParcelRequest(cadastral_number=PARCEL)
    _, receipt = await call_with_receipt(cadastre.GetParcel, request, message_id="tx-0001")
    assert receipt.message_id == "tx-0001"
    seen = agencies.cadastre.seen[-1]
    assert (seen.message_id, seen.user_id, seen.issue) == ("tx-0001", "clerk-7", "")
    with pytest.raises(ExchangeRefused) as caught:
        await call_with_receipt(cadastre.GetParcel, request, message_id="tx-0001")
    assert (caught.value.code, caught.value.status) == (
        "replay_detected",
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert caught.value.message_id == "tx-0001"
    assert len(agencies.cadastre.seen) == 1


async def test_provider_errors_pass_through_with_details(agencies: Agencies) -> None:
    cadastre = agencies.bus.stub(cadastre_pb2_grpc.CadastreStub, REGISTRY)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await cadastre.GetParcel(cadastre_pb2.GetParcelRequest(cadastral_number="99"))
    exc = caught.value
    assert parse_refusal(exc) is None
    assert exc.code() == grpc.StatusCode.NOT_FOUND
    assert exc.details() == "parcel 99 is not in the cadastre"
    status = rich_status(exc)
    assert status is not None
    assert _unpack(status.details, error_details_pb2.ResourceInfo).resource_name == "99"

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await cadastre.GetParcel(cadastre_pb2.GetParcelRequest())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rich_status(caught.value)
    assert status is not None
    violation = _unpack(status.details, error_details_pb2.BadRequest).field_violations[0]
    assert (violation.field, violation.description) == (
        "cadastral_number",
        "a cadastral number is required",
    )


async def test_access_denied_is_exchange_refused(agencies: Agencies) -> None:
    tax = agencies.bus.stub(tax_pb2_grpc.TaxStub, REGISTRY)
    with pytest.raises(ExchangeRefused) as caught:
        await tax.GetTaxDebt(tax_pb2.GetTaxDebtRequest(taxpayer_id="123456789"))
    refused = caught.value
    assert (refused.code, refused.origin, refused.status) == (
        "access_denied",
        "client",
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert "tax.v1.Tax/GetTaxDebt" in refused.message
    assert refused.message_id
    assert agencies.tax.calls == 0


async def test_consumer_gateway_refusal_is_exchange_refused(agencies: Agencies) -> None:
    cadastre = agencies.bus.stub(cadastre_pb2_grpc.CadastreStub, "UZ/GOV/NOBODY/nothing")
    with pytest.raises(ExchangeRefused) as caught:
        await call_with_receipt(
            cadastre.GetParcel, cadastre_pb2.GetParcelRequest(cadastral_number=PARCEL)
        )
    assert (caught.value.code, caught.value.origin, caught.value.status) == (
        "unknown_service",
        "client",
        grpc.StatusCode.NOT_FOUND,
    )
    outsider = GatewayClient(
        gateway=f"127.0.0.1:{agencies.harness.consumer.is_port}", client="UZ/GOV/MINJUST/other"
    )
    async with outsider:
        stub = outsider.stub(cadastre_pb2_grpc.CadastreStub, REGISTRY)
        with pytest.raises(ExchangeRefused) as caught:
            await stub.GetParcel(cadastre_pb2.GetParcelRequest(cadastral_number=PARCEL))
    assert caught.value.code == "unknown_client"
    assert agencies.cadastre.seen == []


async def test_deadline_of_the_client_applies(agencies: Agencies) -> None:
    cadastre = agencies.bus.stub(cadastre_pb2_grpc.CadastreStub, REGISTRY)
    answer, _ = await call_with_receipt(
        cadastre.GetParcel, cadastre_pb2.GetParcelRequest(cadastral_number=PARCEL), timeout_s=20
    )
    assert answer.parcel.cadastral_number == PARCEL


def _unpack(details: Any, kind: Any) -> Any:
    for holder in details:
        assert isinstance(holder, any_pb2.Any)
        if holder.Is(kind.DESCRIPTOR):
            out = kind()
            holder.Unpack(out)
            return out
    raise AssertionError(f"no {kind.DESCRIPTOR.full_name} in the details")


# --- public surface --------------------------------------------------------------------

SURFACE = {
    "adapters.sdk": {
        "ExchangeRefused",
        "GatewayClient",
        "ProviderError",
        "ProviderServer",
        "Receipt",
        "RequestContext",
        "ServiceRegistration",
        "abort",
        "call_with_receipt",
        "context_from_metadata",
        "invalid_argument",
        "parse_refusal",
        "refusal_from_trailer",
        "request_context",
        "rich_status",
        "service",
    },
    "adapters.sdk.consumer": {
        "ExchangeRefused",
        "GatewayClient",
        "Receipt",
        "call_with_receipt",
        "parse_refusal",
        "refusal_from_trailer",
        "rich_status",
    },
    "adapters.sdk.context": {
        "CLIENT_KEY",
        "ISSUE_KEY",
        "MESSAGE_ID_KEY",
        "REQUEST_HASH_KEY",
        "SERVICE_KEY",
        "USER_ID_KEY",
        "RequestContext",
        "context_from_metadata",
        "request_context",
    },
    "adapters.sdk.errors": {"ExchangeRefused", "ProviderError"},
    "adapters.sdk.provider": {
        "DEFAULT_MAX_MESSAGE_BYTES",
        "ERROR_DOMAIN",
        "ProviderServer",
        "ServiceRegistration",
        "abort",
        "invalid_argument",
        "service",
    },
}


@pytest.mark.parametrize("module", sorted(SURFACE))
def test_public_surface(module: str) -> None:
    imported = importlib.import_module(module)
    assert set(imported.__all__) == SURFACE[module]
    for name in imported.__all__:
        assert name.isupper() or getattr(imported, name).__module__.startswith("adapters.sdk")
