"""The provider gateway's access rules, persistent, with an audit trail (DESIGN §5).

:class:`SqlAclStore` keeps :class:`~gateway.acl.AccessRule` rows in SQLite (embedded,
the default) or PostgreSQL (several gateway nodes of one agency sharing their rules),
through the same SQL and connection adapters and transaction handling as the registry's
store (:mod:`registry._sqldialect`, :func:`registry._sqlcore._transaction_on`).

Guarantees, for both databases:

1. **Refusals.** Granting a rule that exists is refused with ``already_exists``;
   revoking one that does not is refused with ``not_found`` (both origin ``client``). A
   refused change changes nothing and records nothing.
2. **Atomic, durable, audited.** Each accepted change is one transaction that changes
   the rule and appends exactly one :class:`AclChange` (who, what, when, which rule) to
   the audit table. The change counter (:meth:`SqlAclStore.generation`) is the audit
   sequence: it runs from 1 without gaps, because it is a counter row incremented first
   in the same transaction (on PostgreSQL its row lock serialises writers across
   processes; on SQLite ``BEGIN IMMEDIATE`` does).
3. **Consistent policies.** :meth:`SqlAclStore.policy` reads the rules and the counter
   in one read transaction, so the returned :class:`~gateway.acl.AccessPolicy`'s
   ``generation`` names exactly the state it holds. The gateway keeps a policy and swaps
   in a new one (one reference assignment on the event loop) when
   :meth:`SqlAclStore.policy_if_changed` returns one.
4. **Wrapped failures.** Driver errors surface as a
   :class:`~gateway.errors.GatewayError` of code ``internal``, naming the operation.

Each :class:`AclChange` must also reach the message log: its :meth:`AclChange.log_record`
is the ``ADMIN_CHANGE`` record to hand to
:meth:`gateway.commit.ExchangeLog.commit_admin_change` once the change has returned.

Calls block on the database: from the event loop run them in a worker thread
(``asyncio.to_thread``). One lock serialises every use of the store's one connection.
Assumptions: nobody writes to the tables behind the store's back; the clock is right
(it only dates audit entries).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Self

import psycopg

from gateway.acl import AccessPolicy, AccessRule, AccessTarget
from gateway.commit import LogRecord
from gateway.errors import GatewayError
from registry._sqlcore import _transaction_on
from registry._sqldialect import (
    _POSTGRES,
    _SQLITE,
    _Connection,
    _Dialect,
    _PostgresConnection,
    _SqliteConnection,
)
from serai.errors import ErrorCode, InvalidIdentifierError, Origin
from serai.identifiers import SubsystemId, parse_subject

__all__ = ["AclAction", "AclChange", "AclStoreError", "SqlAclStore"]

#: Version of the tables this code creates and understands.
SCHEMA_VERSION: Final = 1
#: Most audit entries one :meth:`SqlAclStore.audit_log` call returns.
MAX_AUDIT_PAGE: Final = 10_000
_MAX_ACTOR_CHARS: Final = 255

Clock = Callable[[], dt.datetime]


class AclStoreError(GatewayError):
    """An access-rights change is refused, or the store failed (the code says which)."""

    default_code = ErrorCode.INVALID_REQUEST
    default_origin = Origin.CLIENT


class AclAction(enum.StrEnum):
    """What a change did."""

    GRANT = "grant"
    REVOKE = "revoke"


@dataclass(frozen=True, slots=True, kw_only=True)
class AclChange:
    """One recorded change of the access rules. ``sequence`` runs from 1 without gaps."""

    sequence: int
    at: dt.datetime
    actor: str
    action: AclAction
    rule: AccessRule

    def canonical_json(self) -> bytes:
        """A deterministic description (sorted keys, no spaces, UTF-8), for the log."""
        document = {
            "type": "acl_change",
            "sequence": self.sequence,
            "at": self.at.astimezone(dt.UTC).isoformat(),
            "actor": self.actor,
            "action": self.action.value,
            "provider": str(self.rule.provider),
            "target": str(self.rule.target),
            "subject": str(self.rule.subject),
        }
        return json.dumps(document, sort_keys=True, separators=(",", ":")).encode("utf-8")

    def log_record(self) -> LogRecord:
        """The ``ADMIN_CHANGE`` record of this change (id ``acl-change-SEQUENCE``)."""
        return LogRecord.admin_change(
            change_id=f"acl-change-{self.sequence}", description=self.canonical_json()
        )


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class SqlAclStore:
    """Access rules in SQLite or PostgreSQL (see the module docstring).

    Build it with :meth:`open_sqlite` or :meth:`open_postgres`; ``close`` it when done
    (or use it as a context manager).
    """

    def __init__(
        self, *, connection: _Connection, dialect: _Dialect, clock: Clock | None = None
    ) -> None:
        """Use :meth:`open_sqlite` or :meth:`open_postgres` instead."""
        self._conn = connection
        self._dialect = dialect
        self._clock: Clock = clock or _utc_now
        self._lock = threading.RLock()
        self._closed = False

    @classmethod
    def open_sqlite(cls, path: Path, *, clock: Clock | None = None) -> SqlAclStore:
        """Open (creating if absent) the SQLite store at ``path``."""
        try:
            raw = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            connection = _SqliteConnection(raw)  # closes raw if it cannot set it up
        except sqlite3.Error as exc:
            raise _internal(f"open the SQLite access-rights database {path}", exc) from exc
        return cls._opened(connection, _SQLITE, clock, where=str(path))

    @classmethod
    def open_postgres(cls, dsn: str, *, clock: Clock | None = None) -> SqlAclStore:
        """Open (creating the tables if absent) the PostgreSQL store at ``dsn``."""
        try:
            conn = _PostgresConnection(dsn)
        except psycopg.Error as exc:
            raise _internal("connect to the PostgreSQL access-rights database", exc) from exc
        return cls._opened(conn, _POSTGRES, clock, where="the PostgreSQL database")

    @classmethod
    def _opened(
        cls, connection: _Connection, dialect: _Dialect, clock: Clock | None, *, where: str
    ) -> SqlAclStore:
        store = cls(connection=connection, dialect=dialect, clock=clock)
        try:
            with store._transaction("open the access-rights store", write=True) as db:
                _create_or_check(db, dialect, where)
        except BaseException:
            store.close()
            raise
        return store

    def close(self) -> None:
        """Close the connection; later calls are refused. Closing twice is harmless."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(*self._dialect.errors):
                self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- changes ----------------------------------------------------------------------------

    def grant(self, rule: AccessRule, *, actor: str) -> AclChange:
        """Add ``rule``; refuses (``already_exists``) a rule that is already granted."""
        row = _row(rule)

        def apply(db: _Connection) -> None:
            if db.exists(
                "SELECT 1 FROM acl_rules WHERE provider = ? AND target = ? AND subject = ?", row
            ):
                raise AclStoreError(
                    f"access rule already granted: {rule}", code=ErrorCode.ALREADY_EXISTS
                )
            db.execute("INSERT INTO acl_rules (provider, target, subject) VALUES (?, ?, ?)", row)

        return self._change(AclAction.GRANT, rule, actor, apply)

    def revoke(self, rule: AccessRule, *, actor: str) -> AclChange:
        """Remove ``rule``; refuses (``not_found``) a rule that is not granted."""
        row = _row(rule)

        def apply(db: _Connection) -> None:
            if not db.exists(
                "SELECT 1 FROM acl_rules WHERE provider = ? AND target = ? AND subject = ?", row
            ):
                raise AclStoreError(
                    f"no such access rule to revoke: {rule}", code=ErrorCode.NOT_FOUND
                )
            db.execute(
                "DELETE FROM acl_rules WHERE provider = ? AND target = ? AND subject = ?", row
            )

        return self._change(AclAction.REVOKE, rule, actor, apply)

    # -- reads ------------------------------------------------------------------------------

    def list_rules(self, provider: SubsystemId | None = None) -> tuple[AccessRule, ...]:
        """Every rule, or those of ``provider``, sorted."""
        with self._transaction("list access rules") as db:
            if provider is None:
                rows = db.rows("SELECT provider, target, subject FROM acl_rules")
            else:
                rows = db.rows(
                    "SELECT provider, target, subject FROM acl_rules WHERE provider = ?",
                    (str(provider),),
                )
        return tuple(sorted(_rule(row) for row in rows))

    def generation(self) -> int:
        """The change counter: the sequence of the latest change (0 before any)."""
        with self._transaction("read the access-rights change counter") as db:
            return _generation(db)

    def policy(self) -> AccessPolicy:
        """The current rules as an :class:`AccessPolicy` whose ``generation`` is theirs."""
        with self._transaction("read the access policy") as db:
            generation = _generation(db)
            rows = db.rows("SELECT provider, target, subject FROM acl_rules")
        return AccessPolicy((_rule(row) for row in rows), generation=generation)

    def policy_if_changed(self, current: AccessPolicy) -> AccessPolicy | None:
        """A new policy if the rules changed since ``current`` was read, else ``None``."""
        if self.generation() == current.generation:
            return None
        return self.policy()

    def audit_log(self, *, after: int = 0, limit: int = 1000) -> tuple[AclChange, ...]:
        """Recorded changes with ``sequence > after``, oldest first, at most ``limit``."""
        if not 0 < limit <= MAX_AUDIT_PAGE:
            raise AclStoreError(f"audit page limit must be 1 to {MAX_AUDIT_PAGE}, not {limit}")
        with self._transaction("read the access-rights audit log") as db:
            rows = db.rows(
                "SELECT sequence, at, actor, action, provider, target, subject FROM acl_audit"
                " WHERE sequence > ? ORDER BY sequence LIMIT ?",
                (after, limit),
            )
        return tuple(
            AclChange(
                sequence=int(seq),
                at=self._dialect.time_from_db(at),
                actor=str(actor),
                action=AclAction(action),
                rule=_rule((provider, target, subject)),
            )
            for seq, at, actor, action, provider, target, subject in rows
        )

    # -- machinery --------------------------------------------------------------------------

    def _change(
        self,
        action: AclAction,
        rule: AccessRule,
        actor: str,
        apply: Callable[[_Connection], None],
    ) -> AclChange:
        """Run ``apply`` and append its audit entry, in one write transaction."""
        _check_actor(actor)
        with self._transaction(f"{action.value} an access rule", write=True) as db:
            # First statement: on PostgreSQL its row lock serialises writers.
            sequence = int(
                db.rows(
                    "UPDATE acl_counters SET value = value + 1 WHERE name = 'changes'"
                    " RETURNING value"
                )[0][0]
            )
            now = self._now()
            apply(db)
            change = AclChange(sequence=sequence, at=now, actor=actor, action=action, rule=rule)
            db.execute(
                "INSERT INTO acl_audit (sequence, at, actor, action, provider, target, subject)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (sequence, self._dialect.time_to_db(now), actor, action.value, *_row(rule)),
            )
        return change

    @contextlib.contextmanager
    def _transaction(self, operation: str, *, write: bool = False) -> Iterator[_Connection]:
        """One transaction under the store's lock; driver errors become ``internal``."""
        with self._lock:
            if self._closed:
                raise AclStoreError(
                    f"{operation}: the access-rights store is closed",
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
            raise AclStoreError(
                "the access-rights store's clock returned a time without a time zone",
                code=ErrorCode.INTERNAL,
                origin=Origin.GATEWAY,
            )
        return now


# -- helpers -------------------------------------------------------------------------------


def _create_or_check(db: _Connection, dialect: _Dialect, where: str) -> None:
    """Create the tables if absent; refuse another schema version."""
    if dialect.schema_lock:
        db.execute(dialect.schema_lock)
    db.execute("CREATE TABLE IF NOT EXISTS acl_schema_version (version INTEGER NOT NULL)")
    versions = db.rows("SELECT version FROM acl_schema_version")
    if versions and versions[0][0] != SCHEMA_VERSION:
        raise AclStoreError(
            f"{where} has access-rights schema version {versions[0][0]}; this Serai "
            f"understands version {SCHEMA_VERSION}",
            code=ErrorCode.INVALID_CONFIG,
            origin=Origin.GATEWAY,
        )
    for statement in (
        "CREATE TABLE IF NOT EXISTS acl_counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS acl_rules (provider TEXT NOT NULL, target TEXT NOT NULL,"
        " subject TEXT NOT NULL, PRIMARY KEY (provider, target, subject))",
        "CREATE TABLE IF NOT EXISTS acl_audit (sequence BIGINT PRIMARY KEY,"
        f" at {dialect.timestamp} NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,"
        " provider TEXT NOT NULL, target TEXT NOT NULL, subject TEXT NOT NULL)",
    ):
        db.execute(statement)
    if not versions:
        db.execute("INSERT INTO acl_schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
    db.execute(
        "INSERT INTO acl_counters (name, value) VALUES ('changes', 0) ON CONFLICT (name) DO NOTHING"
    )


def _generation(db: _Connection) -> int:
    return int(db.rows("SELECT value FROM acl_counters WHERE name = 'changes'")[0][0])


def _row(rule: AccessRule) -> tuple[str, str, str]:
    if not isinstance(rule, AccessRule):
        raise AclStoreError(f"expected an AccessRule, not {type(rule).__name__}")
    return (str(rule.provider), str(rule.target), str(rule.subject))


def _rule(row: tuple[object, ...]) -> AccessRule:
    """A stored row as a rule; a row that does not parse is the store's fault."""
    provider, target, subject = row
    try:
        return AccessRule(
            provider=SubsystemId.parse(str(provider)),
            target=AccessTarget.parse(str(target)),
            subject=parse_subject(str(subject)),
        )
    except InvalidIdentifierError as exc:
        raise AclStoreError(
            f"a stored access rule does not parse: {exc.message}",
            code=ErrorCode.INTERNAL,
            origin=Origin.GATEWAY,
        ) from exc


def _check_actor(actor: object) -> None:
    if (
        not isinstance(actor, str)
        or not 0 < len(actor) <= _MAX_ACTOR_CHARS
        or not actor.isprintable()
    ):
        raise AclStoreError(
            f"the actor of an access-rights change must be 1 to {_MAX_ACTOR_CHARS} "
            "printable characters"
        )


def _internal(operation: str, exc: Exception) -> AclStoreError:
    """The one translation of a driver error (the caller raises it ``from exc``)."""
    return AclStoreError(
        f"{operation}: the access-rights database failed: {type(exc).__name__}: {exc}",
        code=ErrorCode.INTERNAL,
        origin=Origin.GATEWAY,
    )
