"""The example agencies' sample data and the tax and cadastre services.

The services are called through their generated stubs on a local ProviderServer, with
the ``x-road-*`` metadata a provider gateway sends; the scenario's rows are checked
through the services, as ``serai demo`` will see them.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2  # type: ignore[import-untyped]  # no stubs
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from adapters.agencies import scenario
from adapters.agencies._db import Database
from adapters.agencies.cadastre import CadastreRegistry, cadastre_service
from adapters.agencies.sampledata import (
    SEED,
    build_world,
    create_sample_database,
    row_count,
)
from adapters.agencies.tax import TaxRegistry, tax_service
from adapters.sdk import ProviderServer, rich_status
from serai.errors import ConfigError
from serai_proto.cadastre.v1 import cadastre_pb2, cadastre_pb2_grpc
from serai_proto.tax.v1 import tax_pb2, tax_pb2_grpc

#: What the provider gateway sends with every call.
METADATA = (
    ("x-road-client", str(scenario.PROPERTY)),
    ("x-road-service", str(scenario.TAX)),
    ("x-road-id", "9f0c4a52-1d7e-4a3b-9c11-5d2e8e7f6a01"),
    ("x-road-user-id", "EE12345"),
)


def sample_database(directory: Path, agency: str, seed: int = SEED) -> Path:
    """The sample database of ``agency`` in ``directory`` (created once)."""
    path = directory / f"{agency}-{seed}.db"
    create_sample_database(agency, path, seed=seed)
    return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("agencies")


@pytest.fixture
def databases(data_dir: Path) -> Iterator[tuple[Database, Database]]:
    tax = Database.open(sample_database(data_dir, "tax"), agency="tax", writable=False)
    cadastre = Database.open(
        sample_database(data_dir, "cadastre"), agency="cadastre", writable=False
    )
    yield tax, cadastre
    tax.close()
    cadastre.close()


@pytest.fixture
async def channel(databases: tuple[Database, Database]) -> AsyncIterator[grpc.aio.Channel]:
    tax, cadastre = databases
    server = ProviderServer(
        listen="127.0.0.1:0",
        services=[
            tax_service(TaxRegistry(tax)),
            cadastre_service(CadastreRegistry(cadastre)),
        ],
    )
    port = await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
        yield chan
    await server.stop(0)


def field_of(exc: grpc.aio.AioRpcError) -> str:
    """The field a provider's INVALID_ARGUMENT (or NOT_FOUND) names in its BadRequest."""
    status = rich_status(exc)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            return str(bad.field_violations[0].field)
    raise AssertionError(f"no BadRequest in {status}")


# --- sample data ---------------------------------------------------------------------


@pytest.mark.parametrize("agency", ["tax", "cadastre", "property"])
def test_sample_data_is_deterministic_and_about_a_thousand_rows(
    tmp_path: Path, agency: str
) -> None:
    first, second = tmp_path / "a.db", tmp_path / "b.db"
    assert create_sample_database(agency, first)
    assert create_sample_database(agency, second)
    assert (
        hashlib.sha256(first.read_bytes()).digest() == hashlib.sha256(second.read_bytes()).digest()
    )
    with closing(sqlite3.connect(first)) as connection:
        assert 900 <= row_count(connection) <= 1300
    other = tmp_path / "other-seed.db"
    assert create_sample_database(agency, other, seed=SEED + 1)
    assert other.read_bytes() != first.read_bytes()


def test_the_world_is_the_same_for_the_same_seed_and_never_touches_the_scenario() -> None:
    assert build_world(7) == build_world(7)
    for seed in (SEED, 1, 2):
        world = build_world(seed)
        owned_by: dict[str, set[str]] = {}
        for ownership in world.ownerships:
            owned_by.setdefault(ownership.owner_id, set()).add(ownership.cadastral_number)
        assert owned_by[scenario.CLEAN_SELLER] == {scenario.CLEAN_PARCEL}
        assert owned_by[scenario.DEBTOR_SELLER] == {scenario.DEBTOR_PARCEL}
        assert owned_by[scenario.ENCUMBERED_SELLER] == {scenario.ENCUMBERED_PARCEL}
        assert scenario.BUYER not in owned_by
        burdened = {e.cadastral_number for e in world.encumbrances if e.released_on is None}
        assert scenario.ENCUMBERED_PARCEL in burdened
        assert not {scenario.CLEAN_PARCEL, scenario.DEBTOR_PARCEL} & burdened
        ids = [p.id for p in world.people]
        assert len(ids) == len(set(ids))
        numbers = [p.cadastral_number for p in world.parcels]
        assert len(numbers) == len(set(numbers))


def test_an_existing_database_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "tax.db"
    path.write_bytes(b"mine")
    assert not create_sample_database("tax", path)
    assert path.read_bytes() == b"mine"
    assert list(tmp_path.iterdir()) == [path]  # no temporary left behind


def test_a_database_of_another_agency_is_refused(tmp_path: Path) -> None:
    path = sample_database(tmp_path, "cadastre")
    with pytest.raises(ConfigError, match="not a tax database"):
        Database.open(path, agency="tax", writable=False)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(ConfigError, match="not a tax database"):
        Database.open(junk, agency="tax", writable=False)
    with pytest.raises(ConfigError, match="no such database"):
        Database.open(tmp_path / "absent.db", agency="tax", writable=False)


# --- tax -----------------------------------------------------------------------------


async def test_tax_debt_of_the_scenario(channel: grpc.aio.Channel) -> None:
    stub = tax_pb2_grpc.TaxStub(channel)
    clean = await stub.GetTaxDebt(
        tax_pb2.GetTaxDebtRequest(taxpayer_id=scenario.CLEAN_SELLER), metadata=METADATA
    )
    assert clean.total_debt.amount_minor == 0
    assert clean.total_debt.currency == "UZS"
    assert list(clean.debts) == []
    assert clean.as_of.seconds > 0
    debtor = await stub.GetTaxDebt(
        tax_pb2.GetTaxDebtRequest(taxpayer_id=scenario.DEBTOR_SELLER), metadata=METADATA
    )
    assert debtor.total_debt.amount_minor > 0
    assert [d.tax_type for d in debtor.debts] == [tax_pb2.TAX_TYPE_PROPERTY, tax_pb2.TAX_TYPE_LAND]
    assert sum(d.amount.amount_minor for d in debtor.debts) == debtor.total_debt.amount_minor
    assert [d.due_date for d in debtor.debts] == sorted(d.due_date for d in debtor.debts)
    for person in (scenario.ENCUMBERED_SELLER, scenario.BUYER):
        answer = await stub.GetTaxDebt(
            tax_pb2.GetTaxDebtRequest(taxpayer_id=person), metadata=METADATA
        )
        assert answer.total_debt.amount_minor == 0


async def test_taxpayer_and_assessments(channel: grpc.aio.Channel) -> None:
    stub = tax_pb2_grpc.TaxStub(channel)
    taxpayer = (
        await stub.GetTaxpayer(
            tax_pb2.GetTaxpayerRequest(taxpayer_id=scenario.CLEAN_SELLER), metadata=METADATA
        )
    ).taxpayer
    assert taxpayer.name == "Karimova Dilnoza Anvar qizi"
    assert taxpayer.kind == tax_pb2.TAXPAYER_KIND_INDIVIDUAL
    assert taxpayer.status == tax_pb2.TAXPAYER_STATUS_ACTIVE
    every = await stub.ListAssessments(
        tax_pb2.ListAssessmentsRequest(taxpayer_id=scenario.CLEAN_SELLER), metadata=METADATA
    )
    dates = [a.assessed_on for a in every.assessments]
    assert len(dates) == 3
    assert dates == sorted(dates, reverse=True)
    assert all(a.paid.amount_minor == a.assessed.amount_minor for a in every.assessments)
    only_2023 = await stub.ListAssessments(
        tax_pb2.ListAssessmentsRequest(taxpayer_id=scenario.CLEAN_SELLER, year=2023),
        metadata=METADATA,
    )
    assert [a.period for a in only_2023.assessments] == ["2023"]


@pytest.mark.parametrize(
    ("method", "request_message", "field"),
    [
        ("GetTaxDebt", tax_pb2.GetTaxDebtRequest(), "taxpayer_id"),
        ("GetTaxDebt", tax_pb2.GetTaxDebtRequest(taxpayer_id="12345"), "taxpayer_id"),
        ("GetTaxpayer", tax_pb2.GetTaxpayerRequest(taxpayer_id="4150786260012x"), "taxpayer_id"),
        ("ListAssessments", tax_pb2.ListAssessmentsRequest(taxpayer_id="1 2"), "taxpayer_id"),
        (
            "ListAssessments",
            tax_pb2.ListAssessmentsRequest(taxpayer_id=scenario.BUYER, year=24),
            "year",
        ),
    ],
)
async def test_tax_refuses_invalid_arguments_naming_the_field(
    channel: grpc.aio.Channel, method: str, request_message: Any, field: str
) -> None:
    call = getattr(tax_pb2_grpc.TaxStub(channel), method)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(request_message, metadata=METADATA)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith(f"{field}: ")
    assert field_of(caught.value) == field


@pytest.mark.parametrize("method", ["GetTaxDebt", "GetTaxpayer", "ListAssessments"])
async def test_tax_unknown_taxpayer_is_not_found(channel: grpc.aio.Channel, method: str) -> None:
    request_type = getattr(tax_pb2, f"{method}Request")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await getattr(tax_pb2_grpc.TaxStub(channel), method)(
            request_type(taxpayer_id="99999999999999"), metadata=METADATA
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "99999999999999" in (caught.value.details() or "")


async def test_a_call_without_gateway_metadata_is_refused(
    channel: grpc.aio.Channel, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await tax_pb2_grpc.TaxStub(channel).GetTaxDebt(
            tax_pb2.GetTaxDebtRequest(taxpayer_id=scenario.BUYER)
        )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "x-road-client" in (caught.value.details() or "")
    assert "Traceback" not in capsys.readouterr().err


async def test_each_call_is_logged_without_its_body(
    channel: grpc.aio.Channel, capsys: pytest.CaptureFixture[str]
) -> None:
    await tax_pb2_grpc.TaxStub(channel).GetTaxpayer(
        tax_pb2.GetTaxpayerRequest(taxpayer_id=scenario.BUYER), metadata=METADATA
    )
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if '"event": "request"' in x)
    assert '"method": "/tax.v1.Tax/GetTaxpayer"' in line
    assert f'"client": "{scenario.PROPERTY}"' in line
    assert '"message_id": "9f0c4a52-1d7e-4a3b-9c11-5d2e8e7f6a01"' in line
    assert scenario.BUYER not in err  # the body's taxpayer id is not logged


async def test_health_and_reflection_answer(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", "tax.v1.Tax", "cadastre.v1.Cadastre"):
        answer = await health.Check(health_pb2.HealthCheckRequest(service=name))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = reflection.ServerReflectionInfo()
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    await call.done_writing()
    names = set()
    async for response in call:
        names |= {s.name for s in response.list_services_response.service}
    assert {"tax.v1.Tax", "cadastre.v1.Cadastre"} <= names


# --- cadastre ------------------------------------------------------------------------


async def test_parcels_of_the_scenario(channel: grpc.aio.Channel) -> None:
    stub = cadastre_pb2_grpc.CadastreStub(channel)
    for parcel, owner, blocked in (
        (scenario.CLEAN_PARCEL, scenario.CLEAN_SELLER, False),
        (scenario.DEBTOR_PARCEL, scenario.DEBTOR_SELLER, False),
        (scenario.ENCUMBERED_PARCEL, scenario.ENCUMBERED_SELLER, True),
    ):
        answer = await stub.GetParcel(
            cadastre_pb2.GetParcelRequest(cadastral_number=parcel), metadata=METADATA
        )
        assert [o.owner_id for o in answer.parcel.owners] == [owner]
        assert answer.parcel.owners[0].share_numerator == answer.parcel.owners[0].share_denominator
        in_force = await stub.ListEncumbrances(
            cadastre_pb2.ListEncumbrancesRequest(cadastral_number=parcel), metadata=METADATA
        )
        assert bool(in_force.encumbrances) == blocked
        owned = await stub.ListParcelsByOwner(
            cadastre_pb2.ListParcelsByOwnerRequest(owner_id=owner), metadata=METADATA
        )
        assert [p.cadastral_number for p in owned.parcels] == [parcel]
    mortgage = (
        await stub.ListEncumbrances(
            cadastre_pb2.ListEncumbrancesRequest(cadastral_number=scenario.ENCUMBERED_PARCEL),
            metadata=METADATA,
        )
    ).encumbrances[0]
    assert mortgage.type == cadastre_pb2.ENCUMBRANCE_TYPE_MORTGAGE
    assert mortgage.released_on == ""
    released = await stub.ListEncumbrances(
        cadastre_pb2.ListEncumbrancesRequest(
            cadastral_number=scenario.CLEAN_PARCEL, include_released=True
        ),
        metadata=METADATA,
    )
    assert [e.released_on != "" for e in released.encumbrances] == [True]
    nothing = await stub.ListParcelsByOwner(
        cadastre_pb2.ListParcelsByOwnerRequest(owner_id=scenario.BUYER), metadata=METADATA
    )
    assert list(nothing.parcels) == []


@pytest.mark.parametrize(
    ("method", "request_message", "field"),
    [
        ("GetParcel", cadastre_pb2.GetParcelRequest(), "cadastral_number"),
        (
            "GetParcel",
            cadastre_pb2.GetParcelRequest(cadastral_number="10:09:02"),
            "cadastral_number",
        ),
        (
            "ListEncumbrances",
            cadastre_pb2.ListEncumbrancesRequest(cadastral_number="10-09-02-01-01-0012"),
            "cadastral_number",
        ),
        ("ListParcelsByOwner", cadastre_pb2.ListParcelsByOwnerRequest(owner_id="abc"), "owner_id"),
    ],
)
async def test_cadastre_refuses_invalid_arguments_naming_the_field(
    channel: grpc.aio.Channel, method: str, request_message: Any, field: str
) -> None:
    call = getattr(cadastre_pb2_grpc.CadastreStub(channel), method)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(request_message, metadata=METADATA)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_of(caught.value) == field


@pytest.mark.parametrize("method", ["GetParcel", "ListEncumbrances"])
async def test_cadastre_unknown_parcel_is_not_found(channel: grpc.aio.Channel, method: str) -> None:
    request_type = getattr(cadastre_pb2, f"{method}Request")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await getattr(cadastre_pb2_grpc.CadastreStub(channel), method)(
            request_type(cadastral_number="99:99:99:99:99:9999"), metadata=METADATA
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert field_of(caught.value) == "cadastral_number"
