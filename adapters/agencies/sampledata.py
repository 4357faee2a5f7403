"""The example agencies' sample databases, cut from the seeded :class:`World`.

One seeded world (:mod:`adapters.agencies._world`) is the common ground of the three
databases, so the tax agency knows the cadastre's owners and the property register's
history names real parcels and people. Each agency's database holds only its own part
(:func:`populate_tax`: taxpayers, assessments, debts; :func:`populate_cadastre`:
parcels, owners, encumbrances; :func:`populate_property`: past transfer decisions with
their refusals and evidence), about a thousand rows each.

Determinism: the same seed gives the same rows in the same order, and a database file
written by :func:`create_sample_database` with the same SQLite library has the same
bytes. Dates are relative to the fixed snapshot day :data:`AS_OF`.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Final

from adapters.agencies._db import SCHEMA_VERSION, create_database
from adapters.agencies._world import (
    AS_OF,
    AS_OF_POSTING,
    CURRENCY,
    HISTORY_CLIENT,
    SEED,
    World,
    build_world,
)

__all__ = [
    "AGENCIES",
    "AS_OF",
    "PROPERTY_SCHEMA",
    "SEED",
    "World",
    "build_world",
    "create_sample_database",
    "populate_cadastre",
    "populate_property",
    "populate_tax",
    "row_count",
]

#: Daily late-payment penalty, in hundredths of a percent of the principal.
_PENALTY_BP_PER_DAY: Final = 4


def populate_tax(connection: sqlite3.Connection, world: World) -> None:
    """Create and fill the tax agency's tables (taxpayers, assessments, debts)."""
    connection.executescript(_TAX_SCHEMA)
    _write_meta(connection, "tax", world.seed)
    connection.executemany(
        "INSERT INTO taxpayers VALUES (?, ?, ?, ?, ?, ?)",
        [
            (p.id, p.name, p.kind, p.status, p.registered_on.isoformat(), p.address)
            for p in world.people
        ],
    )
    connection.executemany(
        "INSERT INTO assessments VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                a.id,
                a.taxpayer_id,
                a.tax_type,
                a.period,
                a.assessed_minor,
                a.paid_minor,
                CURRENCY,
                a.assessed_on.isoformat(),
                a.due_date.isoformat(),
            )
            for a in world.assessments
        ],
    )
    debts = []
    for a in world.assessments:
        principal = a.assessed_minor - a.paid_minor
        if principal <= 0 or a.due_date >= AS_OF:
            continue
        days = (AS_OF - a.due_date).days
        penalty = min(principal, principal * days * _PENALTY_BP_PER_DAY // 10_000)
        debts.append((a.id, a.taxpayer_id, principal, penalty, CURRENCY))
    connection.executemany("INSERT INTO debts VALUES (?, ?, ?, ?, ?)", debts)
    connection.execute("INSERT INTO meta VALUES ('as_of', ?)", (AS_OF_POSTING.isoformat(),))


def populate_cadastre(connection: sqlite3.Connection, world: World) -> None:
    """Create and fill the cadastre's tables (parcels, owners, encumbrances)."""
    connection.executescript(_CADASTRE_SCHEMA)
    _write_meta(connection, "cadastre", world.seed)
    connection.executemany(
        "INSERT INTO parcels VALUES (?, ?, ?, ?, ?)",
        [
            (p.cadastral_number, p.area_m2, p.address, p.land_use, p.registered_on.isoformat())
            for p in world.parcels
        ],
    )
    connection.executemany(
        "INSERT INTO owners VALUES (?, ?, ?, ?, ?, ?)",
        [
            (
                o.cadastral_number,
                o.owner_id,
                o.owner_name,
                o.numerator,
                o.denominator,
                o.registered_on.isoformat(),
            )
            for o in world.ownerships
        ],
    )
    connection.executemany(
        "INSERT INTO encumbrances VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                e.id,
                e.cadastral_number,
                e.type,
                e.holder_id,
                e.holder_name,
                e.registered_on.isoformat(),
                e.released_on.isoformat() if e.released_on else None,
                e.description,
            )
            for e in world.encumbrances
        ],
    )


def populate_property(connection: sqlite3.Connection, world: World) -> None:
    """Create the property register's tables and fill them with past decisions."""
    connection.executescript(PROPERTY_SCHEMA)
    _write_meta(connection, "property", world.seed)
    for t in world.transfers:
        connection.execute(
            "INSERT INTO transfers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                t.transfer_id,
                HISTORY_CLIENT,
                t.request_id,
                t.cadastral_number,
                t.seller_id,
                t.buyer_id,
                t.price_minor,
                CURRENCY,
                t.outcome,
                t.registration_number or None,
                int(t.decided_at.timestamp()) * 1_000_000,
                "",
            ),
        )
        connection.executemany(
            "INSERT INTO refusals VALUES (?, ?, ?, ?)",
            [(t.transfer_id, i, reason, detail) for i, (reason, detail) in enumerate(t.refusals)],
        )
        connection.executemany(
            "INSERT INTO evidence VALUES (?, ?, ?)",
            [(t.transfer_id, i, message_id) for i, message_id in enumerate(t.evidence)],
        )


#: Each agency's populate function, by the name ``serai adapter`` uses.
AGENCIES: Final = {
    "tax": populate_tax,
    "cadastre": populate_cadastre,
    "property": populate_property,
}


def row_count(connection: sqlite3.Connection) -> int:
    """Rows in every table of a sample database except ``meta``."""
    tables = [
        str(name)
        for (name,) in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name != 'meta' ORDER BY name"
        )
    ]
    return sum(
        int(connection.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])  # noqa: S608  (names from sqlite_master)
        for table in tables
    )


_TAX_SCHEMA: Final = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE taxpayers (
    taxpayer_id TEXT PRIMARY KEY, name TEXT NOT NULL, kind TEXT NOT NULL,
    status TEXT NOT NULL, registered_on TEXT NOT NULL, address TEXT NOT NULL);
CREATE TABLE assessments (
    assessment_id TEXT PRIMARY KEY,
    taxpayer_id TEXT NOT NULL REFERENCES taxpayers(taxpayer_id),
    tax_type TEXT NOT NULL, period TEXT NOT NULL,
    assessed_minor INTEGER NOT NULL CHECK (assessed_minor > 0),
    paid_minor INTEGER NOT NULL CHECK (paid_minor >= 0), currency TEXT NOT NULL,
    assessed_on TEXT NOT NULL, due_date TEXT NOT NULL);
CREATE INDEX assessments_by_taxpayer ON assessments (taxpayer_id, assessed_on);
CREATE TABLE debts (
    assessment_id TEXT PRIMARY KEY REFERENCES assessments(assessment_id),
    taxpayer_id TEXT NOT NULL REFERENCES taxpayers(taxpayer_id),
    principal_minor INTEGER NOT NULL CHECK (principal_minor > 0),
    penalty_minor INTEGER NOT NULL CHECK (penalty_minor >= 0), currency TEXT NOT NULL);
CREATE INDEX debts_by_taxpayer ON debts (taxpayer_id);
"""

_CADASTRE_SCHEMA: Final = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE parcels (
    cadastral_number TEXT PRIMARY KEY, area_m2 INTEGER NOT NULL CHECK (area_m2 > 0),
    address TEXT NOT NULL, land_use TEXT NOT NULL, registered_on TEXT NOT NULL);
CREATE TABLE owners (
    cadastral_number TEXT NOT NULL REFERENCES parcels(cadastral_number),
    owner_id TEXT NOT NULL, owner_name TEXT NOT NULL,
    share_numerator INTEGER NOT NULL CHECK (share_numerator > 0),
    share_denominator INTEGER NOT NULL CHECK (share_denominator >= share_numerator),
    registered_on TEXT NOT NULL,
    PRIMARY KEY (cadastral_number, owner_id));
CREATE INDEX owners_by_owner ON owners (owner_id);
CREATE TABLE encumbrances (
    encumbrance_id TEXT PRIMARY KEY,
    cadastral_number TEXT NOT NULL REFERENCES parcels(cadastral_number),
    type TEXT NOT NULL, holder_id TEXT NOT NULL, holder_name TEXT NOT NULL,
    registered_on TEXT NOT NULL, released_on TEXT, description TEXT NOT NULL);
CREATE INDEX encumbrances_by_parcel ON encumbrances (cadastral_number, registered_on);
"""

#: The property register's tables (also what a new, empty register starts from).
PROPERTY_SCHEMA: Final = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE transfers (
    transfer_id TEXT PRIMARY KEY, client TEXT NOT NULL, request_id TEXT NOT NULL,
    cadastral_number TEXT NOT NULL, seller_id TEXT NOT NULL, buyer_id TEXT NOT NULL,
    price_minor INTEGER, currency TEXT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('registered', 'refused')),
    registration_number TEXT UNIQUE, decided_at_us INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    UNIQUE (client, request_id),
    CHECK ((outcome = 'registered') = (registration_number IS NOT NULL)));
CREATE TABLE refusals (
    transfer_id TEXT NOT NULL REFERENCES transfers(transfer_id), position INTEGER NOT NULL,
    reason TEXT NOT NULL, detail TEXT NOT NULL, PRIMARY KEY (transfer_id, position));
CREATE TABLE evidence (
    transfer_id TEXT NOT NULL REFERENCES transfers(transfer_id), position INTEGER NOT NULL,
    message_id TEXT NOT NULL, PRIMARY KEY (transfer_id, position));
"""


def _write_meta(connection: sqlite3.Connection, agency: str, seed: int) -> None:
    connection.executemany(
        "INSERT INTO meta VALUES (?, ?)",
        [("agency", agency), ("schema_version", SCHEMA_VERSION), ("seed", str(seed))],
    )


def create_sample_database(agency: str, path: Path, *, seed: int = SEED) -> bool:
    """Create the sample database of ``agency`` (``tax``, ``cadastre`` or ``property``) at
    ``path`` from the world of ``seed`` unless the file exists; returns whether it did."""
    populate = AGENCIES[agency]
    return create_database(path, lambda connection: populate(connection, build_world(seed)))
