"""The property register: its decision logic with in-memory agencies, and its service
asking the real tax and cadastre services through a stand-in for its gateway that
relays calls or refuses them as a Serai gateway does (status plus ``x-road-error``).

Whatever the bus answers, the applicant gets a clear answer and the register never
holds a half-recorded transfer.
"""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from adapters.agencies import scenario
from adapters.agencies._db import Database
from adapters.agencies.cadastre import CadastreRegistry, cadastre_service
from adapters.agencies.decision import (
    Application,
    CheckUnavailableError,
    EncumbranceInForce,
    InMemoryAgencies,
    Inquiry,
    Reason,
    decide,
)
from adapters.agencies.property import GatewayAgencies, property_service
from adapters.agencies.sampledata import create_sample_database
from adapters.agencies.tax import TaxRegistry, tax_service
from adapters.agencies.transfers import TransferBook
from adapters.sdk import GatewayClient, ProviderServer
from serai_proto.property.v1 import property_pb2, property_pb2_grpc
from tests.test_adapters_agencies import field_of, sample_database

NOTARY = "UZ/GOV/MINJUST/notary"
CALLER = (
    ("x-road-client", NOTARY),
    ("x-road-service", str(scenario.PROPERTY)),
    ("x-road-id", "c0ffee00-0000-4000-8000-000000000001"),
    ("x-road-user-id", "UZ-notary-17"),
)
MORTGAGE = EncumbranceInForce(
    encumbrance_id="E-1", type="mortgage", holder_name="Bank", registered_on="2022-01-01"
)
EASEMENT = EncumbranceInForce(
    encumbrance_id="E-2", type="easement", holder_name="Gas", registered_on="2020-01-01"
)
PARCEL, SELLER, BUYER = "10:01:01:01:01:0001", "12345678901234", "98765432109876"


def application(**changes: Any) -> Application:
    values: dict[str, Any] = {
        "request_id": "r-1",
        "cadastral_number": PARCEL,
        "seller_id": SELLER,
        "buyer_id": BUYER,
        "price_minor": 50_000_000_00,
        "currency": "UZS",
    }
    values.update(changes)
    return Application(**values)


def agencies(**changes: Any) -> InMemoryAgencies:
    values: dict[str, Any] = {
        "debts": {SELLER: 0},
        "owners": {PARCEL: (SELLER, "55555555555555")},
        "burdens": {PARCEL: (EASEMENT,)},
    }
    values.update(changes)
    return InMemoryAgencies(**values)


# --- the decision, with in-memory agencies ------------------------------------------


@pytest.mark.parametrize(
    ("name", "the_application", "the_agencies", "registered", "reasons"),
    [
        ("clean", application(), agencies(), True, []),
        ("tax debt", application(), agencies(debts={SELLER: 1}), False, ["seller_has_tax_debt"]),
        (
            "encumbered",
            application(),
            agencies(burdens={PARCEL: (EASEMENT, MORTGAGE)}),
            False,
            ["parcel_encumbered"],
        ),
        (
            "not owner",
            application(),
            agencies(owners={PARCEL: (BUYER,)}),
            False,
            ["seller_not_owner"],
        ),
        ("no parcel", application(), agencies(owners={}), False, ["parcel_not_found"]),
        (
            "every reason",
            application(),
            agencies(debts={SELLER: 7}, owners={PARCEL: (BUYER,)}, burdens={PARCEL: (MORTGAGE,)}),
            False,
            ["seller_has_tax_debt", "seller_not_owner", "parcel_encumbered"],
        ),
    ],
)
async def test_decision(
    name: str,
    the_application: Application,
    the_agencies: InMemoryAgencies,
    registered: bool,
    reasons: list[str],
) -> None:
    decision = await decide(the_application, the_agencies, Inquiry(user_id="u", issue="i"))
    assert decision.registered is registered, name
    assert [r.reason.value for r in decision.refusals] == reasons
    assert decision.final
    assert decision.evidence == ("mem-1", "mem-2", "mem-3")
    assert {c[2] for c in the_agencies.calls} == {Inquiry(user_id="u", issue="i")}


@pytest.mark.parametrize(
    ("changes", "reasons"),
    [
        ({"buyer_id": SELLER}, ["buyer_is_seller"]),
        ({"price_minor": None}, ["invalid_price"]),
        ({"price_minor": 0}, ["invalid_price"]),
        ({"price_minor": -5}, ["invalid_price"]),
        ({"currency": "USD"}, ["invalid_price"]),
        ({"buyer_id": SELLER, "price_minor": 0}, ["buyer_is_seller", "invalid_price"]),
    ],
)
async def test_hopeless_applications_are_refused_without_asking_anyone(
    changes: dict[str, Any], reasons: list[str]
) -> None:
    the_agencies = agencies()
    decision = await decide(application(**changes), the_agencies, Inquiry())
    assert [r.reason.value for r in decision.refusals] == reasons
    assert decision.final
    assert decision.evidence == ()
    assert the_agencies.calls == []


@pytest.mark.parametrize("method", ["tax_debt", "parcel_owners", "encumbrances"])
async def test_an_agency_that_cannot_be_asked_makes_no_final_decision(method: str) -> None:
    failure = CheckUnavailableError("agency", "access_denied", message_id="m-9")
    decision = await decide(application(), agencies(failures={method: failure}), Inquiry())
    assert not decision.final
    assert not decision.registered
    assert [r.reason for r in decision.refusals] == [Reason.CHECK_UNAVAILABLE]
    assert "access_denied" in decision.refusals[0].detail
    assert "m-9" in decision.evidence


# --- the service, through a stand-in gateway ----------------------------------------


@dataclass
class StandInGateway:
    """Relays each call to ``provider`` as a gateway would (fresh ``x-road-id`` unless
    the caller gave one, returned in the trailers), or refuses calls to a subsystem in
    ``refusals`` with its status and ``x-road-error`` value."""

    provider: str
    refusals: dict[str, tuple[grpc.StatusCode, str]] = field(default_factory=dict)
    calls: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    port: int = 0
    _server: Any = None
    _channel: Any = None

    async def start(self) -> None:
        self._channel = grpc.aio.insecure_channel(self.provider)
        self._server = grpc.aio.server()
        self._server.add_generic_rpc_handlers((_Relay(self),))
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()

    async def stop(self) -> None:
        await self._server.stop(0)
        await self._channel.close()

    async def relay(self, method: str, body: bytes, context: Any) -> bytes:
        metadata = {k: v for k, v in context.invocation_metadata() if k.startswith("x-road-")}
        metadata.setdefault("x-road-id", str(uuid.uuid4()))
        self.calls.append((method, metadata))
        refusal = self.refusals.get(metadata.get("x-road-service", ""))
        if refusal is not None:
            status, value = refusal
            await context.abort(
                status,
                value.split(":", 2)[2],
                (("x-road-error", value), ("x-road-id", metadata["x-road-id"])),
            )
        call = self._channel.unary_unary(method)(body, metadata=tuple(metadata.items()))
        try:
            answer: bytes = await call
        except grpc.aio.AioRpcError as exc:
            await context.abort(
                exc.code(), exc.details() or "", tuple(exc.trailing_metadata() or ())
            )
        context.set_trailing_metadata((("x-road-id", metadata["x-road-id"]),))
        return answer


class _Relay(grpc.GenericRpcHandler):  # type: ignore[type-arg]  # not subscriptable
    def __init__(self, gateway: StandInGateway) -> None:
        self._gateway = gateway

    def service(self, details: grpc.HandlerCallDetails) -> Any:
        method = details.method

        async def handle(body: bytes, context: Any) -> bytes:
            return await self._gateway.relay(method, body, context)

        return grpc.unary_unary_rpc_method_handler(handle)


@dataclass
class Register:
    """The property register under test and what it talks to."""

    stub: property_pb2_grpc.PropertyRegistrationAsyncStub
    gateway: StandInGateway
    database: Path

    def transfers(self) -> int:
        with closing(sqlite3.connect(self.database)) as c:
            return int(c.execute("SELECT count(*) FROM transfers").fetchone()[0])

    def rows(self, transfer_id: str) -> tuple[int, int, int]:
        with closing(sqlite3.connect(self.database)) as c:
            return tuple(  # type: ignore[return-value]
                int(
                    c.execute(
                        f"SELECT count(*) FROM {t} WHERE transfer_id = ?", (transfer_id,)
                    ).fetchone()[0]
                )
                for t in ("transfers", "refusals", "evidence")
            )

    async def register(self, **fields: Any) -> property_pb2.Transfer:
        values: dict[str, Any] = {
            "request_id": str(uuid.uuid4()),
            "cadastral_number": scenario.CLEAN_PARCEL,
            "seller_id": scenario.CLEAN_SELLER,
            "buyer_id": scenario.BUYER,
            "price": property_pb2.Money(amount_minor=85_000_000_000, currency="UZS"),
        }
        values.update(fields)
        answer = await self.stub.RegisterTransfer(
            property_pb2.RegisterTransferRequest(**values), metadata=CALLER
        )
        return answer.transfer


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("agencies")


@pytest.fixture
def opened(data_dir: Path, tmp_path: Path) -> Iterator[tuple[Database, Database, Database, Path]]:
    tax = Database.open(sample_database(data_dir, "tax"), agency="tax", writable=False)
    cadastre = Database.open(
        sample_database(data_dir, "cadastre"), agency="cadastre", writable=False
    )
    path = tmp_path / "property.db"
    create_sample_database("property", path)
    book = Database.open(path, agency="property", writable=True)
    yield tax, cadastre, book, path
    for db in (tax, cadastre, book):
        db.close()


@pytest.fixture
async def register(
    opened: tuple[Database, Database, Database, Path],
) -> AsyncIterator[Register]:
    tax, cadastre, book, path = opened
    providers = ProviderServer(
        listen="127.0.0.1:0",
        services=[tax_service(TaxRegistry(tax)), cadastre_service(CadastreRegistry(cadastre))],
    )
    provider_port = await providers.start()
    gateway = StandInGateway(provider=f"127.0.0.1:{provider_port}")
    await gateway.start()
    client = GatewayClient(gateway=f"127.0.0.1:{gateway.port}", client=scenario.PROPERTY)
    bus = GatewayAgencies(client, tax=scenario.TAX, cadastre=scenario.CADASTRE)
    server = ProviderServer(
        listen="127.0.0.1:0",
        services=[
            property_service(
                TransferBook(book), bus, clock=lambda: dt.datetime(2025, 7, 1, 9, tzinfo=dt.UTC)
            )
        ],
    )
    port = await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield Register(property_pb2_grpc.PropertyRegistrationStub(channel), gateway, path)
    await server.stop(0)
    await client.close()
    await gateway.stop()
    await providers.stop(0)


async def test_the_clean_transfer_is_registered_with_its_evidence(register: Register) -> None:
    before = register.transfers()
    transfer = await register.register(request_id="first")
    assert transfer.outcome == property_pb2.OUTCOME_REGISTERED
    assert re.fullmatch(r"PR-2025-[0-9]{6}", transfer.registration_number)
    assert list(transfer.refusals) == []
    relayed = [m["x-road-id"] for _, m in register.gateway.calls]
    assert sorted(transfer.evidence_message_ids) == sorted(relayed)
    assert len(relayed) == 3
    assert {m["x-road-client"] for _, m in register.gateway.calls} == {str(scenario.PROPERTY)}
    assert {m["x-road-user-id"] for _, m in register.gateway.calls} == {"UZ-notary-17"}
    assert {m["x-road-issue"] for _, m in register.gateway.calls} == {"first"}
    assert register.transfers() == before + 1
    assert register.rows(transfer.transfer_id) == (1, 0, 3)
    again = await register.stub.GetTransfer(
        property_pb2.GetTransferRequest(transfer_id=transfer.transfer_id), metadata=CALLER
    )
    assert again.transfer == transfer
    second = await register.register(request_id="second")
    serial = int(transfer.registration_number.rsplit("-", 1)[1])
    assert second.registration_number == f"PR-2025-{serial + 1:06d}"


@pytest.mark.parametrize(
    ("parcel", "seller", "reasons"),
    [
        (
            scenario.DEBTOR_PARCEL,
            scenario.DEBTOR_SELLER,
            [property_pb2.REFUSAL_REASON_SELLER_HAS_TAX_DEBT],
        ),
        (
            scenario.ENCUMBERED_PARCEL,
            scenario.ENCUMBERED_SELLER,
            [property_pb2.REFUSAL_REASON_PARCEL_ENCUMBERED],
        ),
        (
            scenario.CLEAN_PARCEL,
            scenario.ENCUMBERED_SELLER,
            [property_pb2.REFUSAL_REASON_SELLER_NOT_OWNER],
        ),
        (
            "99:01:01:01:01:0001",
            scenario.CLEAN_SELLER,
            [property_pb2.REFUSAL_REASON_PARCEL_NOT_FOUND],
        ),
    ],
)
async def test_refused_transfers_are_recorded_with_their_reasons(
    register: Register, parcel: str, seller: str, reasons: list[int]
) -> None:
    transfer = await register.register(cadastral_number=parcel, seller_id=seller)
    assert transfer.outcome == property_pb2.OUTCOME_REFUSED
    assert [r.reason for r in transfer.refusals] == reasons
    assert transfer.registration_number == ""
    assert transfer.transfer_id
    assert len(transfer.evidence_message_ids) == 3
    assert register.rows(transfer.transfer_id) == (1, len(reasons), 3)


BUS_REFUSALS = [
    (grpc.StatusCode.PERMISSION_DENIED, "gateway:access_denied:no access right"),
    (grpc.StatusCode.UNAVAILABLE, "gateway:provider_unavailable:the provider IS is down"),
    (grpc.StatusCode.UNAVAILABLE, "gateway:timestamping_overdue:no timestamp for 4 h"),
    (grpc.StatusCode.UNAVAILABLE, "gateway:globalconf_expired:configuration expired"),
    (grpc.StatusCode.UNAVAILABLE, "gateway:log_unavailable:disk full"),
    (grpc.StatusCode.NOT_FOUND, "client:unknown_service:no gateway serves it"),
    (grpc.StatusCode.UNAUTHENTICATED, "gateway:signature_invalid:bad signature"),
    (grpc.StatusCode.ALREADY_EXISTS, "gateway:replay_detected:message id seen"),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, "client:message_too_large:too big"),
    (grpc.StatusCode.DEADLINE_EXCEEDED, "gateway:deadline_exceeded:too slow"),
]


@pytest.mark.parametrize("provider", [scenario.TAX, scenario.CADASTRE])
@pytest.mark.parametrize(("status", "error"), BUS_REFUSALS)
async def test_every_bus_refusal_is_a_clear_answer_and_nothing_is_recorded(
    register: Register, provider: Any, status: grpc.StatusCode, error: str
) -> None:
    register.gateway.refusals[str(provider)] = (status, error)
    before = register.transfers()
    transfer = await register.register(request_id="retry-me")
    assert transfer.outcome == property_pb2.OUTCOME_REFUSED
    assert transfer.transfer_id == ""
    assert [r.reason for r in transfer.refusals] == [property_pb2.REFUSAL_REASON_CHECK_UNAVAILABLE]
    code = error.split(":")[1]
    agency = "tax agency" if provider == scenario.TAX else "cadastre"
    assert transfer.refusals[0].detail.startswith(f"the {agency} could not be asked")
    assert code in transfer.refusals[0].detail
    assert register.transfers() == before
    # The applicant may try again with the same request id once the bus is back.
    register.gateway.refusals.clear()
    retried = await register.register(request_id="retry-me")
    assert retried.outcome == property_pb2.OUTCOME_REGISTERED
    assert register.transfers() == before + 1


async def test_a_provider_error_and_a_dead_gateway_are_clear_answers(
    register: Register, opened: tuple[Database, Database, Database, Path]
) -> None:
    before = register.transfers()
    unknown_seller = await register.register(seller_id="11111111111111")
    assert [r.reason for r in unknown_seller.refusals] == [
        property_pb2.REFUSAL_REASON_CHECK_UNAVAILABLE
    ]
    assert "NOT_FOUND" in unknown_seller.refusals[0].detail
    await register.gateway.stop()
    nobody = await register.register()
    assert [r.reason for r in nobody.refusals] == [
        property_pb2.REFUSAL_REASON_CHECK_UNAVAILABLE
    ] * 2
    assert "UNAVAILABLE" in nobody.refusals[0].detail
    assert register.transfers() == before
    await register.gateway.start()  # for the fixture's stop


async def test_a_repeated_request_returns_the_first_decision_without_asking_again(
    register: Register,
) -> None:
    first = await register.register(request_id="once")
    calls = len(register.gateway.calls)
    again = await register.register(request_id="once")
    assert again == first
    assert len(register.gateway.calls) == calls
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await register.register(request_id="once", buyer_id=scenario.DEBTOR_SELLER)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_of(caught.value) == "request_id"
    assert first.transfer_id in (caught.value.details() or "")


async def test_local_refusals_ask_no_one(register: Register) -> None:
    transfer = await register.register(buyer_id=scenario.CLEAN_SELLER, price=property_pb2.Money())
    assert [r.reason for r in transfer.refusals] == [
        property_pb2.REFUSAL_REASON_BUYER_IS_SELLER,
        property_pb2.REFUSAL_REASON_INVALID_PRICE,
    ]
    assert register.gateway.calls == []
    assert register.rows(transfer.transfer_id) == (1, 2, 0)


@pytest.mark.parametrize(
    ("fields", "field_name"),
    [
        ({"request_id": ""}, "request_id"),
        ({"request_id": "has space"}, "request_id"),
        ({"request_id": "x" * 129}, "request_id"),
        ({"request_id": "caf\u00e9"}, "request_id"),
        ({"cadastral_number": ""}, "cadastral_number"),
        ({"cadastral_number": "10:09:02:01:01:12"}, "cadastral_number"),
        ({"seller_id": "1234"}, "seller_id"),
        ({"buyer_id": "buyer"}, "buyer_id"),
    ],
)
async def test_invalid_applications_are_refused_naming_the_field(
    register: Register, fields: dict[str, Any], field_name: str
) -> None:
    before = register.transfers()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await register.register(**fields)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_of(caught.value) == field_name
    assert register.gateway.calls == []
    assert register.transfers() == before


async def test_get_transfer_refuses_bad_and_unknown_ids(register: Register) -> None:
    stub = register.stub
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stub.GetTransfer(property_pb2.GetTransferRequest(transfer_id="T-1"), metadata=CALLER)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_of(bad.value) == "transfer_id"
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await stub.GetTransfer(
            property_pb2.GetTransferRequest(transfer_id=str(uuid.uuid4())), metadata=CALLER
        )
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


async def test_history_from_the_sample_data_is_readable(register: Register) -> None:
    with closing(sqlite3.connect(register.database)) as c:
        (transfer_id,) = c.execute(
            "SELECT transfer_id FROM transfers WHERE outcome = 'refused' LIMIT 1"
        ).fetchone()
    answer = await register.stub.GetTransfer(
        property_pb2.GetTransferRequest(transfer_id=transfer_id), metadata=CALLER
    )
    assert answer.transfer.outcome == property_pb2.OUTCOME_REFUSED
    assert len(answer.transfer.refusals) == 1
    assert len(answer.transfer.evidence_message_ids) == 3


async def test_a_failed_write_records_nothing_and_answers_unavailable(
    register: Register, capsys: pytest.CaptureFixture[str]
) -> None:
    with closing(sqlite3.connect(register.database)) as c:
        c.execute(
            "CREATE TRIGGER full_disk BEFORE INSERT ON evidence"
            " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
        c.commit()
    before = register.transfers()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await register.register(request_id="doomed")
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "nothing was recorded" in (caught.value.details() or "")
    assert register.transfers() == before
    with closing(sqlite3.connect(register.database)) as c:
        assert (
            c.execute("SELECT count(*) FROM transfers WHERE request_id = 'doomed'").fetchone()[0]
            == 0
        )
        c.execute("DROP TRIGGER full_disk")
        c.commit()
    assert "Traceback" not in capsys.readouterr().err
    transfer = await register.register(request_id="doomed")
    assert transfer.outcome == property_pb2.OUTCOME_REGISTERED


def test_the_property_sample_data_holds_only_past_applications(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    create_sample_database("property", path)
    with closing(sqlite3.connect(path)) as c:
        clients = {row[0] for row in c.execute("SELECT DISTINCT client FROM transfers")}
    assert clients == {NOTARY}
