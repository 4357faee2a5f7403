"""The property register's book of transfer decisions, in its own SQLite database.

Invariants:

- A decision is recorded whole or not at all: its transfer row, its refusals and the
  message ids of its evidence are written in one transaction (``BEGIN IMMEDIATE`` on
  the database's single thread), so a failure at any point leaves no trace of it.
- Only final decisions are recorded (:class:`~adapters.agencies.decision.Decision`);
  one whose checks could not be made is answered and forgotten.
- An application is identified by its client subsystem and request id: the book holds
  at most one decision per pair (a unique constraint), and :meth:`TransferBook.record`
  returns the decision already recorded for the pair, if any, instead of a second one.
- A registered transfer has a registration number ``PR-<year>-<serial>``, serials
  counting up from 1 in each year of decision; a refused one has none.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import uuid
from dataclasses import dataclass
from typing import Final

from adapters.agencies._db import Database
from adapters.agencies.decision import Application, Decision, Reason, Refusal

__all__ = ["Transfer", "TransferBook"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Transfer:
    """A recorded decision on a transfer application."""

    transfer_id: str
    #: The client subsystem that applied, and the message id of its application.
    client: str
    message_id: str
    application: Application
    registered: bool
    registration_number: str  # "" when refused
    refusals: tuple[Refusal, ...]
    decided_at: dt.datetime
    evidence: tuple[str, ...]


class TransferBook:
    """Reads and records transfer decisions (module docstring); every method runs on the
    database's thread."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def get(self, transfer_id: str) -> Transfer | None:
        """The transfer ``transfer_id``, or None."""
        return await self._db.run(lambda c: _load(c, _BY_ID, (transfer_id,)))

    async def find(self, client: str, request_id: str) -> Transfer | None:
        """The decision recorded for ``request_id`` of ``client``, or None."""
        return await self._db.run(lambda c: _load(c, _BY_REQUEST, (client, request_id)))

    async def record(
        self,
        *,
        client: str,
        message_id: str,
        application: Application,
        decision: Decision,
        decided_at: dt.datetime,
    ) -> Transfer:
        """Record the final ``decision`` on ``application`` and return it as stored, or
        return the decision already recorded for the same client and request id."""
        if not decision.final:
            raise ValueError("only final decisions are recorded")

        def write(c: sqlite3.Connection) -> Transfer:
            c.execute("BEGIN IMMEDIATE")
            try:
                existing = _load(c, _BY_REQUEST, (client, application.request_id))
                if existing is not None:
                    c.execute("ROLLBACK")
                    return existing
                transfer = Transfer(
                    transfer_id=str(uuid.uuid4()),
                    client=client,
                    message_id=message_id,
                    application=application,
                    registered=decision.registered,
                    registration_number=(
                        _next_registration_number(c, decided_at.year) if decision.registered else ""
                    ),
                    refusals=decision.refusals,
                    decided_at=decided_at,
                    evidence=decision.evidence,
                )
                _insert(c, transfer)
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
            return transfer

        return await self._db.run(write)


def _next_registration_number(c: sqlite3.Connection, year: int) -> str:
    prefix = f"PR-{year}-"
    (last,) = c.execute(
        "SELECT max(registration_number) FROM transfers WHERE registration_number LIKE ?",
        (prefix + "%",),
    ).fetchone()
    serial = 1 if last is None else int(str(last).removeprefix(prefix)) + 1
    return f"{prefix}{serial:06d}"


def _insert(c: sqlite3.Connection, t: Transfer) -> None:
    a = t.application
    c.execute(
        "INSERT INTO transfers (transfer_id, client, request_id, cadastral_number, seller_id,"
        " buyer_id, price_minor, currency, outcome, registration_number, decided_at_us,"
        " message_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            t.transfer_id,
            t.client,
            a.request_id,
            a.cadastral_number,
            a.seller_id,
            a.buyer_id,
            a.price_minor,
            a.currency,
            "registered" if t.registered else "refused",
            t.registration_number or None,
            _microseconds(t.decided_at),
            t.message_id,
        ),
    )
    c.executemany(
        "INSERT INTO refusals (transfer_id, position, reason, detail) VALUES (?, ?, ?, ?)",
        [(t.transfer_id, i, r.reason.value, r.detail) for i, r in enumerate(t.refusals)],
    )
    c.executemany(
        "INSERT INTO evidence (transfer_id, position, message_id) VALUES (?, ?, ?)",
        [(t.transfer_id, i, mid) for i, mid in enumerate(t.evidence)],
    )


_SELECT: Final = (
    "SELECT transfer_id, client, request_id, cadastral_number, seller_id, buyer_id,"
    " price_minor, currency, outcome, registration_number, decided_at_us, message_id"
    " FROM transfers"
)
_BY_ID: Final = _SELECT + " WHERE transfer_id = ?"
_BY_REQUEST: Final = _SELECT + " WHERE client = ? AND request_id = ?"


def _load(c: sqlite3.Connection, query: str, args: tuple[str, ...]) -> Transfer | None:
    row = c.execute(query, args).fetchone()
    if row is None:
        return None
    transfer_id = row[0]
    refusals = tuple(
        Refusal(Reason(reason), detail)
        for reason, detail in c.execute(
            "SELECT reason, detail FROM refusals WHERE transfer_id = ? ORDER BY position",
            (transfer_id,),
        )
    )
    evidence = tuple(
        str(mid)
        for (mid,) in c.execute(
            "SELECT message_id FROM evidence WHERE transfer_id = ? ORDER BY position",
            (transfer_id,),
        )
    )
    return Transfer(
        transfer_id=transfer_id,
        client=row[1],
        message_id=row[11],
        application=Application(
            request_id=row[2],
            cadastral_number=row[3],
            seller_id=row[4],
            buyer_id=row[5],
            price_minor=row[6],
            currency=row[7],
        ),
        registered=row[8] == "registered",
        registration_number=row[9] or "",
        refusals=refusals,
        decided_at=dt.datetime.fromtimestamp(row[10] / 1_000_000, tz=dt.UTC),
        evidence=evidence,
    )


def _microseconds(moment: dt.datetime) -> int:
    delta = moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return delta // dt.timedelta(microseconds=1)
