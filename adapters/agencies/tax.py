"""The State Tax Committee's adapter (``UZ/GOV/STC/tax``): ``tax.v1.Tax`` over its own
SQLite database of taxpayers, assessments and debts.

:class:`TaxRegistry` reads the database (on its own thread, read-only) into the domain
types of this module; :class:`TaxService` is the one place that turns them into
``tax.v1`` messages. An unknown taxpayer is NOT_FOUND for every method; a taxpayer id
that is neither a 9-digit TIN nor a 14-digit PINFL, or a year outside 1990-2100, is
INVALID_ARGUMENT naming the field.
"""

# The rpc methods carry the names the generated servicer gives them.
# ruff: noqa: N802

from __future__ import annotations

import datetime as dt
import sqlite3
from dataclasses import dataclass
from typing import Final, NoReturn

import grpc
from google.protobuf import timestamp_pb2

from adapters.agencies._db import Database, read_meta
from adapters.agencies._service import Context, begin, person_id_problem
from adapters.sdk import ServiceRegistration, abort, invalid_argument, service
from serai_proto.tax.v1 import tax_pb2, tax_pb2_grpc

__all__ = [
    "AGENCY",
    "Assessment",
    "Debt",
    "TaxRegistry",
    "TaxService",
    "Taxpayer",
    "tax_service",
]

#: The name of this agency in databases, logs and ``serai adapter run``.
AGENCY: Final = "tax"
_FIRST_YEAR: Final = 1990
_LAST_YEAR: Final = 2100


@dataclass(frozen=True, slots=True, kw_only=True)
class Taxpayer:
    """A registered taxpayer."""

    taxpayer_id: str
    name: str
    kind: str  # "individual" or "legal_entity"
    status: str  # "active", "suspended" or "deregistered"
    registered_on: str
    address: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Assessment:
    """A decision that an amount is owed for a period, and what has been paid."""

    assessment_id: str
    tax_type: str  # "personal_income", "profit", "vat", "property", "land" or "other"
    period: str
    assessed_minor: int
    paid_minor: int
    currency: str
    assessed_on: str
    due_date: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Debt:
    """An overdue unpaid amount: principal and penalties of one assessment."""

    assessment_id: str
    tax_type: str
    period: str
    amount_minor: int
    currency: str
    due_date: str


class TaxRegistry:
    """Read access to the tax database; every method runs on the database's thread."""

    def __init__(self, database: Database) -> None:
        self._db = database
        meta = database.run_blocking(read_meta)
        self.as_of = dt.datetime.fromisoformat(meta["as_of"])
        self.currency = "UZS"

    async def taxpayer(self, taxpayer_id: str) -> Taxpayer | None:
        """The taxpayer, or None if unknown."""
        return await self._db.run(lambda c: _taxpayer(c, taxpayer_id))

    async def debts(self, taxpayer_id: str) -> list[Debt] | None:
        """The taxpayer's debts, oldest due date first; None if the taxpayer is unknown."""

        def query(c: sqlite3.Connection) -> list[Debt] | None:
            if _taxpayer(c, taxpayer_id) is None:
                return None
            rows = c.execute(
                "SELECT d.assessment_id, a.tax_type, a.period,"
                " d.principal_minor + d.penalty_minor, d.currency, a.due_date"
                " FROM debts d JOIN assessments a USING (assessment_id)"
                " WHERE d.taxpayer_id = ? ORDER BY a.due_date, d.assessment_id",
                (taxpayer_id,),
            ).fetchall()
            return [
                Debt(
                    assessment_id=r[0],
                    tax_type=r[1],
                    period=r[2],
                    amount_minor=r[3],
                    currency=r[4],
                    due_date=r[5],
                )
                for r in rows
            ]

        return await self._db.run(query)

    async def assessments(self, taxpayer_id: str, year: int) -> list[Assessment] | None:
        """The taxpayer's assessments for periods of ``year`` (0: all), newest first;
        None if the taxpayer is unknown."""

        def query(c: sqlite3.Connection) -> list[Assessment] | None:
            if _taxpayer(c, taxpayer_id) is None:
                return None
            rows = c.execute(
                "SELECT assessment_id, tax_type, period, assessed_minor, paid_minor, currency,"
                " assessed_on, due_date FROM assessments"
                " WHERE taxpayer_id = ? AND (? = 0 OR substr(period, 1, 4) = ?)"
                " ORDER BY assessed_on DESC, assessment_id DESC",
                (taxpayer_id, year, f"{year:04d}"),
            ).fetchall()
            return [
                Assessment(
                    assessment_id=r[0],
                    tax_type=r[1],
                    period=r[2],
                    assessed_minor=r[3],
                    paid_minor=r[4],
                    currency=r[5],
                    assessed_on=r[6],
                    due_date=r[7],
                )
                for r in rows
            ]

        return await self._db.run(query)


def tax_service(registry: TaxRegistry) -> ServiceRegistration:
    """The ``tax.v1.Tax`` registration for a :class:`~adapters.sdk.ProviderServer`."""
    return service(
        tax_pb2_grpc.add_TaxServicer_to_server,
        TaxService(registry),
        tax_pb2.DESCRIPTOR.services_by_name["Tax"],
    )


class TaxService(tax_pb2_grpc.TaxServicer):
    """``tax.v1.Tax`` over a :class:`TaxRegistry` (module docstring)."""

    def __init__(self, registry: TaxRegistry) -> None:
        self._registry = registry

    async def GetTaxDebt(
        self, request: tax_pb2.GetTaxDebtRequest, context: Context
    ) -> tax_pb2.GetTaxDebtResponse:
        begin(AGENCY, context)
        await _check_taxpayer_id(context, request.taxpayer_id)
        debts = await self._registry.debts(request.taxpayer_id)
        if debts is None:
            await _unknown(context, request.taxpayer_id)
        as_of = timestamp_pb2.Timestamp()
        as_of.FromDatetime(self._registry.as_of)
        return tax_pb2.GetTaxDebtResponse(
            taxpayer_id=request.taxpayer_id,
            total_debt=_money(sum(d.amount_minor for d in debts), self._registry.currency),
            debts=[
                tax_pb2.TaxDebt(
                    tax_type=_tax_type(d.tax_type),
                    period=d.period,
                    amount=_money(d.amount_minor, d.currency),
                    due_date=d.due_date,
                    assessment_id=d.assessment_id,
                )
                for d in debts
            ],
            as_of=as_of,
        )

    async def GetTaxpayer(
        self, request: tax_pb2.GetTaxpayerRequest, context: Context
    ) -> tax_pb2.GetTaxpayerResponse:
        begin(AGENCY, context)
        await _check_taxpayer_id(context, request.taxpayer_id)
        taxpayer = await self._registry.taxpayer(request.taxpayer_id)
        if taxpayer is None:
            await _unknown(context, request.taxpayer_id)
        return tax_pb2.GetTaxpayerResponse(
            taxpayer=tax_pb2.Taxpayer(
                taxpayer_id=taxpayer.taxpayer_id,
                name=taxpayer.name,
                kind=tax_pb2.TaxpayerKind.Value(f"TAXPAYER_KIND_{taxpayer.kind.upper()}"),
                status=tax_pb2.TaxpayerStatus.Value(f"TAXPAYER_STATUS_{taxpayer.status.upper()}"),
                registered_on=taxpayer.registered_on,
                address=taxpayer.address,
            )
        )

    async def ListAssessments(
        self, request: tax_pb2.ListAssessmentsRequest, context: Context
    ) -> tax_pb2.ListAssessmentsResponse:
        begin(AGENCY, context)
        await _check_taxpayer_id(context, request.taxpayer_id)
        if request.year != 0 and not _FIRST_YEAR <= request.year <= _LAST_YEAR:
            await invalid_argument(
                context,
                "year",
                f"year: expected 0 (all years) or a year from {_FIRST_YEAR} to {_LAST_YEAR},"
                f" got {request.year}",
            )
        assessments = await self._registry.assessments(request.taxpayer_id, request.year)
        if assessments is None:
            await _unknown(context, request.taxpayer_id)
        return tax_pb2.ListAssessmentsResponse(
            assessments=[
                tax_pb2.Assessment(
                    assessment_id=a.assessment_id,
                    tax_type=_tax_type(a.tax_type),
                    period=a.period,
                    assessed=_money(a.assessed_minor, a.currency),
                    paid=_money(a.paid_minor, a.currency),
                    assessed_on=a.assessed_on,
                    due_date=a.due_date,
                )
                for a in assessments
            ]
        )


def _taxpayer(c: sqlite3.Connection, taxpayer_id: str) -> Taxpayer | None:
    row = c.execute(
        "SELECT taxpayer_id, name, kind, status, registered_on, address"
        " FROM taxpayers WHERE taxpayer_id = ?",
        (taxpayer_id,),
    ).fetchone()
    if row is None:
        return None
    return Taxpayer(
        taxpayer_id=row[0],
        name=row[1],
        kind=row[2],
        status=row[3],
        registered_on=row[4],
        address=row[5],
    )


async def _check_taxpayer_id(context: Context, taxpayer_id: str) -> None:
    problem = person_id_problem("taxpayer_id", taxpayer_id)
    if problem is not None:
        await invalid_argument(context, "taxpayer_id", problem)


async def _unknown(context: Context, taxpayer_id: str) -> NoReturn:
    await abort(
        context,
        grpc.StatusCode.NOT_FOUND,
        f"no taxpayer {taxpayer_id} is registered",
        field="taxpayer_id",
    )


def _money(amount_minor: int, currency: str) -> tax_pb2.Money:
    return tax_pb2.Money(amount_minor=amount_minor, currency=currency)


def _tax_type(name: str) -> tax_pb2.TaxType.ValueType:
    return tax_pb2.TaxType.Value(f"TAX_TYPE_{name.upper()}")
