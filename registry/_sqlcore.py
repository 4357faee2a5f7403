"""The transaction machinery under :class:`registry.sqlstore.SqlRegistryStore`.

:class:`_SqlStoreCore` owns the one connection and the lock that serialises its use,
opens (and on opening sets up) the database, and runs each change as one write
transaction that first increments the audit counter row (on PostgreSQL its row lock
serialises writers), then applies the change, then appends its audit entry. Driver
errors become ``internal`` refusals naming the operation; a rolled-back change leaves
no trace, audit counter included. :func:`_transaction_on`, the transaction itself, is
shared with the gateway's access-rights store (:mod:`gateway.aclstore`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from collections.abc import Callable, Iterator

from registry._sqldialect import _Connection, _Dialect
from registry._sqlerrors import _as_refusal, _internal, _refuse
from registry._sqlschema import _create_or_check
from registry.errors import RegistryError
from registry.model import check_name
from registry.store import AuditEntry, Change
from serai.errors import ErrorCode, Origin, SeraiError

Clock = Callable[[], dt.datetime]


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class _SqlStoreCore:
    """Connection, lock, opening and transactions of the store (its operations are in
    :class:`registry.sqlstore.SqlRegistryStore`)."""

    def __init__(
        self, *, connection: _Connection, dialect: _Dialect, instance: str, clock: Clock | None
    ) -> None:
        """Use :meth:`SqlRegistryStore.open_sqlite` or ``open_postgres`` instead."""
        self._conn = connection
        self._dialect = dialect
        self._instance = instance
        self._clock: Clock = clock or _utc_now
        self._lock = threading.RLock()
        self._closed = False

    def _initialise(self, where: str) -> None:
        """Create the schema if absent; refuse another schema version or instance."""
        with self._transaction("open the registry store", write=True) as db:
            _create_or_check(db, self._dialect, self._instance, where)

    @property
    def instance(self) -> str:
        """The federation instance the store belongs to (fixed at creation)."""
        return self._instance

    def close(self) -> None:
        """Close the connection; later calls are refused. Closing twice is harmless."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(*self._dialect.errors):
                self._conn.close()

    def _change(
        self, change: Change, target: str, apply: Callable[[_Connection, dt.datetime], None]
    ) -> AuditEntry:
        """Run ``apply`` and append its audit entry, in one write transaction."""
        with _as_refusal():
            check_name("actor of a change", change.actor)
            check_name("action of a change", change.action)
        with self._transaction(change.action, write=True) as db:
            # First statement: on PostgreSQL its row lock serialises writers (see docstring).
            now = self._now()
            entry = self._audit_next(db, change, target, now)
            apply(db, now)
            self._audit_insert(db, entry)
        return entry

    @staticmethod
    def _audit_next(db: _Connection, change: Change, target: str, now: dt.datetime) -> AuditEntry:
        """The next audit entry of ``change`` (its sequence taken from the counter row)."""
        sequence = int(
            db.rows("UPDATE counters SET value = value + 1 WHERE name = 'audit' RETURNING value")[
                0
            ][0]
        )
        return AuditEntry(
            sequence=sequence,
            at=now,
            actor=change.actor,
            action=change.action,
            target=target,
            details=change.details,
        )

    def _audit_insert(self, db: _Connection, entry: AuditEntry) -> None:
        db.execute(
            "INSERT INTO audit_log (sequence, at, actor, action, target, details) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                entry.sequence,
                self._dialect.time_to_db(entry.at),
                entry.actor,
                entry.action,
                entry.target,
                entry.details,
            ),
        )

    @contextlib.contextmanager
    def _transaction(self, operation: str, *, write: bool = False) -> Iterator[_Connection]:
        """One transaction under the store's lock; driver errors become ``internal``."""
        with self._lock:
            if self._closed:
                raise RegistryError(
                    f"{operation}: the registry store is closed",
                    code=ErrorCode.INTERNAL,
                    origin=Origin.GATEWAY,
                )
            with _transaction_on(
                self._conn, self._dialect, operation, write=write, internal=_internal
            ) as db:
                yield db

    def _now(self) -> dt.datetime:
        now = self._clock()
        if now.tzinfo is None or now.utcoffset() is None:
            raise RegistryError(
                "the registry store's clock returned a time without a time zone",
                code=ErrorCode.INTERNAL,
                origin=Origin.GATEWAY,
            )
        return now

    def _check_instance(self, what: str, instance: str) -> None:
        if instance != self._instance:
            raise _refuse(ErrorCode.INVALID_REQUEST, f"{what} is not of instance {self._instance}")


@contextlib.contextmanager
def _transaction_on(
    db: _Connection,
    dialect: _Dialect,
    operation: str,
    *,
    write: bool,
    internal: Callable[[str, Exception], SeraiError],
) -> Iterator[_Connection]:
    """One transaction on ``db``: committed when the block ends, rolled back when it
    raises. A driver error, in the block or at BEGIN or COMMIT, becomes
    ``internal(operation, exc)``. The caller holds the lock that serialises ``db``'s use
    (also used by :class:`gateway.aclstore.SqlAclStore`)."""
    try:
        db.begin(write=write)
        try:
            yield db
        except BaseException:
            with contextlib.suppress(*dialect.errors):
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    except dialect.errors as exc:
        with contextlib.suppress(*dialect.errors):
            db.execute("ROLLBACK")
        raise internal(operation, exc) from exc
