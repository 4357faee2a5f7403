"""The cadastre agency's adapter (``UZ/GOV/CADASTRE/registry``): ``cadastre.v1.Cadastre``
over its own SQLite database of parcels, owners and encumbrances.

:class:`CadastreRegistry` reads the database (on its own thread, read-only) into the
domain types of this module; :class:`CadastreService` is the one place that turns them
into ``cadastre.v1`` messages. An unknown parcel is NOT_FOUND (GetParcel,
ListEncumbrances); an owner without parcels has an empty list. A cadastral number not of
the form ``RR:DD:MM:QQ:BB:NNNN`` or an owner id that is neither a 9-digit TIN nor a
14-digit PINFL is INVALID_ARGUMENT naming the field.
"""

# The rpc methods carry the names the generated servicer gives them.
# ruff: noqa: N802

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, NoReturn

import grpc

from adapters.agencies._db import Database
from adapters.agencies._service import (
    Context,
    begin,
    cadastral_number_problem,
    person_id_problem,
)
from adapters.sdk import ServiceRegistration, abort, invalid_argument, service
from serai_proto.cadastre.v1 import cadastre_pb2, cadastre_pb2_grpc

__all__ = [
    "AGENCY",
    "CadastreRegistry",
    "CadastreService",
    "Encumbrance",
    "Owner",
    "Parcel",
    "cadastre_service",
]

#: The name of this agency in databases, logs and ``serai adapter run``.
AGENCY: Final = "cadastre"


@dataclass(frozen=True, slots=True, kw_only=True)
class Owner:
    """A holder of a share of a parcel."""

    owner_id: str
    name: str
    share_numerator: int
    share_denominator: int
    registered_on: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Parcel:
    """A land parcel with its current owners, largest share first."""

    cadastral_number: str
    area_m2: int
    address: str
    land_use: str  # "residential", "agricultural", ... (cadastre.v1.LandUse, lowercase)
    registered_on: str
    owners: tuple[Owner, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Encumbrance:
    """A right or restriction registered against a parcel."""

    encumbrance_id: str
    cadastral_number: str
    type: str  # "mortgage", "lien", "arrest", "easement" or "lease"
    holder_id: str
    holder_name: str
    registered_on: str
    released_on: str  # "" while in force
    description: str


class CadastreRegistry:
    """Read access to the cadastre database; every method runs on the database's thread."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def parcel(self, cadastral_number: str) -> Parcel | None:
        """The parcel with its owners, or None if unknown."""
        return await self._db.run(lambda c: _parcel(c, cadastral_number))

    async def encumbrances(
        self, cadastral_number: str, *, include_released: bool
    ) -> list[Encumbrance] | None:
        """The parcel's encumbrances, oldest first (only those in force unless
        ``include_released``); None if the parcel is unknown."""

        def query(c: sqlite3.Connection) -> list[Encumbrance] | None:
            known = c.execute(
                "SELECT 1 FROM parcels WHERE cadastral_number = ?", (cadastral_number,)
            ).fetchone()
            if known is None:
                return None
            rows = c.execute(
                "SELECT encumbrance_id, cadastral_number, type, holder_id, holder_name,"
                " registered_on, released_on, description FROM encumbrances"
                " WHERE cadastral_number = ? AND (? OR released_on IS NULL)"
                " ORDER BY registered_on, encumbrance_id",
                (cadastral_number, include_released),
            ).fetchall()
            return [
                Encumbrance(
                    encumbrance_id=r[0],
                    cadastral_number=r[1],
                    type=r[2],
                    holder_id=r[3],
                    holder_name=r[4],
                    registered_on=r[5],
                    released_on=r[6] or "",
                    description=r[7],
                )
                for r in rows
            ]

        return await self._db.run(query)

    async def parcels_of(self, owner_id: str) -> list[Parcel]:
        """The parcels ``owner_id`` holds a share of, by cadastral number."""

        def query(c: sqlite3.Connection) -> list[Parcel]:
            numbers = c.execute(
                "SELECT cadastral_number FROM owners WHERE owner_id = ? ORDER BY cadastral_number",
                (owner_id,),
            ).fetchall()
            parcels = (_parcel(c, number) for (number,) in numbers)
            return [p for p in parcels if p is not None]

        return await self._db.run(query)


def cadastre_service(registry: CadastreRegistry) -> ServiceRegistration:
    """The ``cadastre.v1.Cadastre`` registration for a :class:`~adapters.sdk.ProviderServer`."""
    return service(
        cadastre_pb2_grpc.add_CadastreServicer_to_server,
        CadastreService(registry),
        cadastre_pb2.DESCRIPTOR.services_by_name["Cadastre"],
    )


class CadastreService(cadastre_pb2_grpc.CadastreServicer):
    """``cadastre.v1.Cadastre`` over a :class:`CadastreRegistry` (module docstring)."""

    def __init__(self, registry: CadastreRegistry) -> None:
        self._registry = registry

    async def GetParcel(
        self, request: cadastre_pb2.GetParcelRequest, context: Context
    ) -> cadastre_pb2.GetParcelResponse:
        begin(AGENCY, context)
        await _check_cadastral_number(context, request.cadastral_number)
        parcel = await self._registry.parcel(request.cadastral_number)
        if parcel is None:
            await _unknown(context, request.cadastral_number)
        return cadastre_pb2.GetParcelResponse(parcel=_parcel_message(parcel))

    async def ListEncumbrances(
        self, request: cadastre_pb2.ListEncumbrancesRequest, context: Context
    ) -> cadastre_pb2.ListEncumbrancesResponse:
        begin(AGENCY, context)
        await _check_cadastral_number(context, request.cadastral_number)
        encumbrances = await self._registry.encumbrances(
            request.cadastral_number, include_released=request.include_released
        )
        if encumbrances is None:
            await _unknown(context, request.cadastral_number)
        return cadastre_pb2.ListEncumbrancesResponse(
            encumbrances=[
                cadastre_pb2.Encumbrance(
                    encumbrance_id=e.encumbrance_id,
                    cadastral_number=e.cadastral_number,
                    type=cadastre_pb2.EncumbranceType.Value(f"ENCUMBRANCE_TYPE_{e.type.upper()}"),
                    holder_id=e.holder_id,
                    holder_name=e.holder_name,
                    registered_on=e.registered_on,
                    released_on=e.released_on,
                    description=e.description,
                )
                for e in encumbrances
            ]
        )

    async def ListParcelsByOwner(
        self, request: cadastre_pb2.ListParcelsByOwnerRequest, context: Context
    ) -> cadastre_pb2.ListParcelsByOwnerResponse:
        begin(AGENCY, context)
        problem = person_id_problem("owner_id", request.owner_id)
        if problem is not None:
            await invalid_argument(context, "owner_id", problem)
        parcels = await self._registry.parcels_of(request.owner_id)
        return cadastre_pb2.ListParcelsByOwnerResponse(
            parcels=[_parcel_message(p) for p in parcels]
        )


def _parcel(c: sqlite3.Connection, cadastral_number: str) -> Parcel | None:
    row = c.execute(
        "SELECT cadastral_number, area_m2, address, land_use, registered_on"
        " FROM parcels WHERE cadastral_number = ?",
        (cadastral_number,),
    ).fetchone()
    if row is None:
        return None
    owners = c.execute(
        "SELECT owner_id, owner_name, share_numerator, share_denominator, registered_on"
        " FROM owners WHERE cadastral_number = ?"
        " ORDER BY CAST(share_numerator AS REAL) / share_denominator DESC, owner_id",
        (cadastral_number,),
    ).fetchall()
    return Parcel(
        cadastral_number=row[0],
        area_m2=row[1],
        address=row[2],
        land_use=row[3],
        registered_on=row[4],
        owners=_owners(owners),
    )


def _owners(rows: Sequence[tuple[str, str, int, int, str]]) -> tuple[Owner, ...]:
    return tuple(
        Owner(
            owner_id=r[0],
            name=r[1],
            share_numerator=r[2],
            share_denominator=r[3],
            registered_on=r[4],
        )
        for r in rows
    )


def _parcel_message(parcel: Parcel) -> cadastre_pb2.Parcel:
    return cadastre_pb2.Parcel(
        cadastral_number=parcel.cadastral_number,
        area_m2=parcel.area_m2,
        address=parcel.address,
        land_use=cadastre_pb2.LandUse.Value(f"LAND_USE_{parcel.land_use.upper()}"),
        owners=[
            cadastre_pb2.Owner(
                owner_id=o.owner_id,
                name=o.name,
                share_numerator=o.share_numerator,
                share_denominator=o.share_denominator,
                registered_on=o.registered_on,
            )
            for o in parcel.owners
        ],
        registered_on=parcel.registered_on,
    )


async def _check_cadastral_number(context: Context, cadastral_number: str) -> None:
    problem = cadastral_number_problem("cadastral_number", cadastral_number)
    if problem is not None:
        await invalid_argument(context, "cadastral_number", problem)


async def _unknown(context: Context, cadastral_number: str) -> NoReturn:
    await abort(
        context,
        grpc.StatusCode.NOT_FOUND,
        f"no parcel {cadastral_number} is registered",
        field="cadastral_number",
    )
