"""The registry's store on SQL: SQLite (embedded, the default) and PostgreSQL (production).

:class:`SqlRegistryStore` implements :class:`registry.store.RegistryStore`. One class
serves both databases; a small :class:`_Dialect` holds what differs (column types,
placeholders, how a transaction begins, how the connection is set up).

The registry decides whom the federation trusts, so this store is the gate in front of
that state. What it guarantees, for both databases:

* **Validated before stored.** Every change is checked against the state it applies to,
  inside the transaction that applies it: ids of this instance only; no dangling
  reference (a subsystem of an unknown member, a gateway serving a subsystem of another
  member, a group member that does not exist); nothing removed while something refers
  to it. A gateway is registered only with a whole DER authentication certificate that
  validates, at the store's clock, for both TLS roles (``auth`` profile, server and
  client) up to a currently approved CA root, whose subject serialNumber names the
  gateway's member, and whose SHA-256 no other gateway uses. A CA is approved only with
  a self-signed root that is a CA with keyCertSign and intermediates that chain up to it;
  it cannot be withdrawn while a registered gateway's certificate validates only through
  it. A TSA's own certificate must carry the timeStamping extended key usage; a service
  descriptor must parse as a ``FileDescriptorSet``.
* **Refusals.** A refused change raises :class:`~registry.errors.RegistryError` with
  ``invalid_request``, ``already_exists``, ``not_found`` or ``failed_precondition`` and a
  message naming the field or object, and changes nothing (no audit entry either).
* **Atomic, durable, audited.** Each accepted change is one transaction that also
  appends exactly one :class:`~registry.store.AuditEntry`; the audit sequence runs from 1
  without gaps, because it is a counter row incremented in the same transaction (a
  rolled-back change rolls it back too). SQLite runs in WAL mode with
  ``synchronous=FULL`` and foreign keys on; a change has reached the disk when the call
  returns.
* **Serialised writers.** In one process a lock serialises every use of the one
  connection (the store is safe to call from many threads). Across processes, a write
  transaction on SQLite begins with ``BEGIN IMMEDIATE`` (the database's write lock), and
  on PostgreSQL its first statement updates the audit counter row, whose row lock
  serialises writers until commit; every check therefore sees the latest committed state.
* **Snapshots.** :meth:`SqlRegistryStore.federation` reads every table once inside one
  read transaction (``REPEATABLE READ`` on PostgreSQL, a WAL snapshot on SQLite), so it
  returns one committed state, and builds a :class:`~registry.model.Federation`, whose
  invariants are checked again.
* **Serials.** :meth:`SqlRegistryStore.next_serial` increments a counter row in its own
  committed transaction: strictly increasing across restarts and processes.
* **One instance.** The database records its federation instance when created; opening
  it for another instance, or with another schema version, is refused.
* **Wrapped failures.** Driver errors (``sqlite3.Error``, ``psycopg.Error``) surface as
  ``RegistryError`` with code ``internal`` and origin ``gateway``, naming the operation.

Assumptions: the clock is right (it dates audit entries and decides certificate
validity at registration); revocation of gateway certificates is checked by gateways at
connection time (OCSP), not here; nobody writes to the database behind the store's back.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import sqlite3
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import psycopg
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID
from google.protobuf.descriptor_pb2 import FileDescriptorSet
from google.protobuf.message import DecodeError

from certs.errors import PKIError
from certs.profiles import Profile
from certs.validation import TlsRole, TrustStore, member_of, validate_path
from registry.errors import ConfigurationError, RegistryError
from registry.model import (
    ApprovedCA,
    ApprovedTSA,
    Federation,
    Gateway,
    GlobalGroup,
    Member,
    ServiceDescriptor,
    Subsystem,
    check_name,
)
from registry.store import AuditEntry, Change
from serai.errors import ErrorCode, Origin
from serai.identifiers import (
    GatewayId,
    GlobalGroupId,
    MemberId,
    Subject,
    SubsystemId,
    parse_instance,
    parse_subject,
)

__all__ = ["SqlRegistryStore"]

#: Version of the schema this code creates and understands.
SCHEMA_VERSION: Final = 1
#: Most audit entries one :meth:`SqlRegistryStore.audit_log` call returns.
MAX_AUDIT_PAGE: Final = 10_000
#: How long a SQLite writer waits for another process's write lock, in milliseconds.
SQLITE_BUSY_TIMEOUT_MS: Final = 10_000
#: Objects named in a refusal that lists what still refers to something.
_SHOW_AT_MOST: Final = 5

_Row = tuple[Any, ...]
Clock = Callable[[], dt.datetime]


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class SqlRegistryStore:
    """The registry's state in SQLite or PostgreSQL (see the module docstring).

    Build it with :meth:`open_sqlite` or :meth:`open_postgres`; ``close`` it when done.
    """

    def __init__(
        self, *, connection: _Connection, dialect: _Dialect, instance: str, clock: Clock | None
    ) -> None:
        """Use :meth:`open_sqlite` or :meth:`open_postgres` instead."""
        self._conn = connection
        self._dialect = dialect
        self._instance = instance
        self._clock: Clock = clock or _utc_now
        self._lock = threading.RLock()
        self._closed = False

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open_sqlite(
        cls, path: Path, *, instance: str, clock: Clock | None = None
    ) -> SqlRegistryStore:
        """Open (creating if absent) the SQLite store at ``path`` for ``instance``."""
        instance = parse_instance(instance)
        try:
            raw = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise _internal(f"open the SQLite registry database {path}", exc) from exc
        return cls._opened(_SqliteConnection(raw), _SQLITE, instance, clock, where=str(path))

    @classmethod
    def open_postgres(
        cls, dsn: str, *, instance: str, clock: Clock | None = None
    ) -> SqlRegistryStore:
        """Open (creating the schema if absent) the PostgreSQL store at ``dsn``."""
        instance = parse_instance(instance)
        try:
            conn = _PostgresConnection(dsn)
        except psycopg.Error as exc:
            raise _internal("connect to the PostgreSQL registry database", exc) from exc
        return cls._opened(conn, _POSTGRES, instance, clock, where="the PostgreSQL database")

    @classmethod
    def _opened(
        cls,
        connection: _Connection,
        dialect: _Dialect,
        instance: str,
        clock: Clock | None,
        *,
        where: str,
    ) -> SqlRegistryStore:
        store = cls(connection=connection, dialect=dialect, instance=instance, clock=clock)
        try:
            store._initialise(where)
        except BaseException:
            store.close()
            raise
        return store

    def _initialise(self, where: str) -> None:
        """Create the schema if absent; refuse another schema version or instance."""
        with self._transaction("open the registry store", write=True) as db:
            if self._dialect.schema_lock:
                db.execute(self._dialect.schema_lock)
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            versions = db.rows("SELECT version FROM schema_version")
            if versions and versions[0][0] != SCHEMA_VERSION:
                raise RegistryError(
                    f"{where} has registry schema version {versions[0][0]}; this Serai "
                    f"understands version {SCHEMA_VERSION}",
                    code=ErrorCode.INVALID_CONFIG,
                    origin=Origin.GATEWAY,
                )
            for statement in _schema(self._dialect):
                db.execute(statement)
            if not versions:
                db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            for counter in ("audit", "serial"):
                db.execute(
                    "INSERT INTO counters (name, value) VALUES (?, 0) "
                    "ON CONFLICT (name) DO NOTHING",
                    (counter,),
                )
            stored = db.rows("SELECT value FROM store_meta WHERE key = 'instance'")
            if not stored:
                db.execute(
                    "INSERT INTO store_meta (key, value) VALUES ('instance', ?)",
                    (self._instance,),
                )
            elif stored[0][0] != self._instance:
                raise RegistryError(
                    f"{where} holds the registry of instance {stored[0][0]!r}, not "
                    f"{self._instance!r}; refusing to open it",
                    code=ErrorCode.INVALID_CONFIG,
                    origin=Origin.GATEWAY,
                )

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

    # -- members and subsystems ---------------------------------------------------------------

    def add_member(self, member: Member, change: Change) -> AuditEntry:
        """Add ``member``; refuses another instance's member or a duplicate id."""
        key = str(member.id)

        def apply(db: _Connection, now: dt.datetime) -> None:
            self._check_instance(f"member {key}", member.id.instance)
            if db.exists("SELECT 1 FROM members WHERE id = ?", (key,)):
                raise _refuse(ErrorCode.ALREADY_EXISTS, f"member {key} already exists")
            db.execute("INSERT INTO members (id, name) VALUES (?, ?)", (key, member.name))

        return self._change(change, key, apply)

    def remove_member(self, member_id: MemberId, change: Change) -> AuditEntry:
        """Remove a member that has no subsystems or gateways and is in no group."""
        key = str(member_id)

        def apply(db: _Connection, now: dt.datetime) -> None:
            if not db.exists("SELECT 1 FROM members WHERE id = ?", (key,)):
                raise _refuse(ErrorCode.NOT_FOUND, f"member {key} does not exist")
            _refuse_if_used(
                f"member {key}",
                ("subsystems", _column(db, "SELECT id FROM subsystems WHERE member_id = ?", key)),
                ("gateways", _column(db, "SELECT id FROM gateways WHERE member_id = ?", key)),
                ("global groups", _groups_with(db, key)),
            )
            db.execute("DELETE FROM members WHERE id = ?", (key,))

        return self._change(change, key, apply)

    def list_members(self) -> Sequence[Member]:
        """Every member, sorted by id."""
        with self._transaction("list members") as db:
            return _members(db)

    def add_subsystem(self, subsystem_id: SubsystemId, name: str, change: Change) -> AuditEntry:
        """Add a subsystem of an existing member."""
        key = str(subsystem_id)
        with _as_refusal():
            subsystem = Subsystem(id=subsystem_id, name=name)

        def apply(db: _Connection, now: dt.datetime) -> None:
            member = str(subsystem_id.member)
            if not db.exists("SELECT 1 FROM members WHERE id = ?", (member,)):
                raise _refuse(
                    ErrorCode.FAILED_PRECONDITION,
                    f"subsystem {key} belongs to unknown member {member}",
                )
            if db.exists("SELECT 1 FROM subsystems WHERE id = ?", (key,)):
                raise _refuse(ErrorCode.ALREADY_EXISTS, f"subsystem {key} already exists")
            db.execute(
                "INSERT INTO subsystems (id, member_id, name) VALUES (?, ?, ?)",
                (key, member, subsystem.name),
            )

        return self._change(change, key, apply)

    def remove_subsystem(self, subsystem_id: SubsystemId, change: Change) -> AuditEntry:
        """Remove a subsystem no gateway serves, in no group, without a descriptor."""
        key = str(subsystem_id)

        def apply(db: _Connection, now: dt.datetime) -> None:
            if not db.exists("SELECT 1 FROM subsystems WHERE id = ?", (key,)):
                raise _refuse(ErrorCode.NOT_FOUND, f"subsystem {key} does not exist")
            _refuse_if_used(
                f"subsystem {key}",
                (
                    "gateways serving it",
                    _column(
                        db, "SELECT gateway_id FROM gateway_subsystems WHERE subsystem_id = ?", key
                    ),
                ),
                ("global groups", _groups_with(db, key)),
                (
                    "a service descriptor",
                    _column(db, "SELECT provider FROM service_descriptors WHERE provider = ?", key),
                ),
            )
            db.execute("DELETE FROM subsystems WHERE id = ?", (key,))

        return self._change(change, key, apply)

    # -- gateways --------------------------------------------------------------------------

    def add_gateway(self, gateway: Gateway, change: Change) -> AuditEntry:
        """Register ``gateway``: its certificate must validate against the approved CAs."""
        key = str(gateway.id)

        def apply(db: _Connection, now: dt.datetime) -> None:
            member = str(gateway.id.member)
            self._check_instance(f"gateway {key}", gateway.id.instance)
            if not db.exists("SELECT 1 FROM members WHERE id = ?", (member,)):
                raise _refuse(
                    ErrorCode.FAILED_PRECONDITION,
                    f"gateway {key} belongs to unknown member {member}",
                )
            if db.exists("SELECT 1 FROM gateways WHERE id = ?", (key,)):
                raise _refuse(ErrorCode.ALREADY_EXISTS, f"gateway {key} already exists")
            holders = _column(
                db,
                "SELECT id FROM gateways WHERE auth_certificate_sha256 = ?",
                gateway.auth_certificate_sha256,
            )
            if holders:
                raise _refuse(
                    ErrorCode.ALREADY_EXISTS,
                    f"authentication certificate of gateway {key} is already registered "
                    f"for gateway {holders[0]}",
                )
            _check_served(db, gateway.id, gateway.subsystems)
            _check_gateway_certificate(gateway, _TrustedCAs(_cas(db)), now)
            db.execute(
                "INSERT INTO gateways (id, member_id, address, auth_certificate_sha256, "
                "auth_certificate, registered_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    key,
                    member,
                    gateway.address,
                    gateway.auth_certificate_sha256,
                    gateway.auth_certificate,
                    self._dialect.time_to_db(now),
                ),
            )
            _insert_served(db, key, gateway.subsystems)

        return self._change(change, key, apply)

    def remove_gateway(self, gateway_id: GatewayId, change: Change) -> AuditEntry:
        """Deregister a gateway (and the list of subsystems it serves)."""
        key = str(gateway_id)

        def apply(db: _Connection, now: dt.datetime) -> None:
            if not db.exists("SELECT 1 FROM gateways WHERE id = ?", (key,)):
                raise _refuse(ErrorCode.NOT_FOUND, f"gateway {key} does not exist")
            db.execute("DELETE FROM gateway_subsystems WHERE gateway_id = ?", (key,))
            db.execute("DELETE FROM gateways WHERE id = ?", (key,))

        return self._change(change, key, apply)

    def set_gateway_subsystems(
        self, gateway_id: GatewayId, subsystems: frozenset[SubsystemId], change: Change
    ) -> AuditEntry:
        """Replace the set of subsystems ``gateway_id`` serves."""
        key = str(gateway_id)

        def apply(db: _Connection, now: dt.datetime) -> None:
            if not db.exists("SELECT 1 FROM gateways WHERE id = ?", (key,)):
                raise _refuse(ErrorCode.NOT_FOUND, f"gateway {key} does not exist")
            _check_served(db, gateway_id, subsystems)
            db.execute("DELETE FROM gateway_subsystems WHERE gateway_id = ?", (key,))
            _insert_served(db, key, subsystems)

        return self._change(change, key, apply)

    def list_gateways(self, member_id: MemberId | None = None) -> Sequence[Gateway]:
        """Gateways (of ``member_id``, or all), sorted by id, with their certificates."""
        with self._transaction("list gateways") as db:
            return _gateways(db, None if member_id is None else str(member_id))

    def gateway_registered_at(self, gateway_id: GatewayId) -> dt.datetime:
        """When ``gateway_id`` was registered (UTC)."""
        with self._transaction("read a gateway's registration time") as db:
            rows = db.rows("SELECT registered_at FROM gateways WHERE id = ?", (str(gateway_id),))
        if not rows:
            raise _refuse(ErrorCode.NOT_FOUND, f"gateway {gateway_id} does not exist")
        return self._dialect.time_from_db(rows[0][0])

    # -- global groups ----------------------------------------------------------------------

    def add_global_group(self, group: GlobalGroup, change: Change) -> AuditEntry:
        """Add a group; its initial members must exist and not include itself."""
        key = str(group.id)

        def apply(db: _Connection, now: dt.datetime) -> None:
            self._check_instance(f"global group {key}", group.id.instance)
            if db.exists("SELECT 1 FROM global_groups WHERE id = ?", (key,)):
                raise _refuse(ErrorCode.ALREADY_EXISTS, f"global group {key} already exists")
            for subject in sorted(group.members, key=str):
                if subject == group.id:
                    raise _refuse(
                        ErrorCode.INVALID_REQUEST, f"global group {key} cannot contain itself"
                    )
                _check_subject_exists(db, group.id, subject)
            db.execute(
                "INSERT INTO global_groups (id, description) VALUES (?, ?)",
                (key, group.description),
            )
            _insert_group_members(db, key, group.members)

        return self._change(change, key, apply)

    def remove_global_group(self, group_id: GlobalGroupId, change: Change) -> AuditEntry:
        """Remove a group (with its membership list) that no other group contains."""
        key = str(group_id)

        def apply(db: _Connection, now: dt.datetime) -> None:
            if not db.exists("SELECT 1 FROM global_groups WHERE id = ?", (key,)):
                raise _refuse(ErrorCode.NOT_FOUND, f"global group {key} does not exist")
            _refuse_if_used(f"global group {key}", ("global groups", _groups_with(db, key)))
            db.execute("DELETE FROM global_group_members WHERE group_id = ?", (key,))
            db.execute("DELETE FROM global_groups WHERE id = ?", (key,))

        return self._change(change, key, apply)

    def add_global_group_member(
        self, group_id: GlobalGroupId, subject: Subject, change: Change
    ) -> AuditEntry:
        """Add an existing subsystem, member or (acyclically) group to a group."""
        key = str(group_id)

        def apply(db: _Connection, now: dt.datetime) -> None:
            if not db.exists("SELECT 1 FROM global_groups WHERE id = ?", (key,)):
                raise _refuse(ErrorCode.NOT_FOUND, f"global group {key} does not exist")
            if subject == group_id:
                raise _refuse(
                    ErrorCode.INVALID_REQUEST, f"global group {key} cannot contain itself"
                )
            _check_subject_exists(db, group_id, subject)
            if db.exists(
                "SELECT 1 FROM global_group_members WHERE group_id = ? AND subject = ?",
                (key, str(subject)),
            ):
                raise _refuse(
                    ErrorCode.ALREADY_EXISTS, f"{subject} is already a member of global group {key}"
                )
            if isinstance(subject, GlobalGroupId) and key in _nested_groups(db, str(subject)):
                raise _refuse(
                    ErrorCode.INVALID_REQUEST,
                    f"global group {key} cannot contain {subject}, which contains it",
                )
            _insert_group_members(db, key, (subject,))

        return self._change(change, key, apply)

    def remove_global_group_member(
        self, group_id: GlobalGroupId, subject: Subject, change: Change
    ) -> AuditEntry:
        """Remove ``subject`` from a group."""
        key = str(group_id)

        def apply(db: _Connection, now: dt.datetime) -> None:
            if not db.exists("SELECT 1 FROM global_groups WHERE id = ?", (key,)):
                raise _refuse(ErrorCode.NOT_FOUND, f"global group {key} does not exist")
            params = (key, str(subject))
            if not db.exists(
                "SELECT 1 FROM global_group_members WHERE group_id = ? AND subject = ?", params
            ):
                raise _refuse(
                    ErrorCode.NOT_FOUND, f"{subject} is not a member of global group {key}"
                )
            db.execute(
                "DELETE FROM global_group_members WHERE group_id = ? AND subject = ?", params
            )

        return self._change(change, key, apply)

    def list_global_groups(self) -> Sequence[GlobalGroup]:
        """Every global group with its members, sorted by id."""
        with self._transaction("list global groups") as db:
            return _groups(db, _SubjectParser())

    # -- trust services ----------------------------------------------------------------------

    def add_certificate_authority(self, ca: ApprovedCA, change: Change) -> AuditEntry:
        """Approve a CA: a self-signed CA root and intermediates that chain up to it."""
        root = _check_ca(ca)

        def apply(db: _Connection, now: dt.datetime) -> None:
            if db.exists("SELECT 1 FROM certificate_authorities WHERE name = ?", (ca.name,)):
                raise _refuse(ErrorCode.ALREADY_EXISTS, f"CA {ca.name!r} already exists")
            same_root = _column(
                db, "SELECT name FROM certificate_authorities WHERE root_sha256 = ?", root
            )
            if same_root:
                raise _refuse(
                    ErrorCode.ALREADY_EXISTS,
                    f"root certificate of CA {ca.name!r} is already approved as CA "
                    f"{same_root[0]!r}",
                )
            _insert_cas(db, (ca,))

        return self._change(change, ca.name, apply)

    def remove_certificate_authority(self, name: str, change: Change) -> AuditEntry:
        """Withdraw a CA, unless some registered gateway's certificate validates only
        through it."""

        def apply(db: _Connection, now: dt.datetime) -> None:
            cas = _cas(db)
            if all(ca.name != name for ca in cas):
                raise _refuse(ErrorCode.NOT_FOUND, f"CA {name!r} does not exist")
            before = _TrustedCAs(cas)
            after = _TrustedCAs([ca for ca in cas if ca.name != name])
            stranded = [
                str(gateway.id)
                for gateway in _gateways(db, None)
                if not after.accepts(gateway, now) and before.accepts(gateway, now)
            ]
            _refuse_if_used(
                f"CA {name!r}", ("registered gateways whose certificates depend on it", stranded)
            )
            db.execute("DELETE FROM ca_intermediates WHERE ca_name = ?", (name,))
            db.execute("DELETE FROM certificate_authorities WHERE name = ?", (name,))

        return self._change(change, name, apply)

    def list_certificate_authorities(self) -> Sequence[ApprovedCA]:
        """Every approved CA, sorted by name."""
        with self._transaction("list certificate authorities") as db:
            return _cas(db)

    def add_timestamping_authority(self, tsa: ApprovedTSA, change: Change) -> AuditEntry:
        """Approve a TSA whose own certificate (the first) has the timeStamping EKU."""
        _check_tsa(tsa)

        def apply(db: _Connection, now: dt.datetime) -> None:
            if db.exists("SELECT 1 FROM timestamping_authorities WHERE name = ?", (tsa.name,)):
                raise _refuse(ErrorCode.ALREADY_EXISTS, f"TSA {tsa.name!r} already exists")
            _insert_tsas(db, (tsa,))

        return self._change(change, tsa.name, apply)

    def remove_timestamping_authority(self, name: str, change: Change) -> AuditEntry:
        """Withdraw a TSA."""

        def apply(db: _Connection, now: dt.datetime) -> None:
            if not db.exists("SELECT 1 FROM timestamping_authorities WHERE name = ?", (name,)):
                raise _refuse(ErrorCode.NOT_FOUND, f"TSA {name!r} does not exist")
            db.execute("DELETE FROM tsa_certificates WHERE tsa_name = ?", (name,))
            db.execute("DELETE FROM timestamping_authorities WHERE name = ?", (name,))

        return self._change(change, name, apply)

    def list_timestamping_authorities(self) -> Sequence[ApprovedTSA]:
        """Every approved TSA, sorted by name."""
        with self._transaction("list time-stamping authorities") as db:
            return _tsas(db)

    # -- service descriptors -------------------------------------------------------------------

    def set_service_descriptor(
        self, provider: SubsystemId, file_descriptor_set: bytes, change: Change
    ) -> AuditEntry:
        """Set the ``FileDescriptorSet`` of ``provider``'s services; empty bytes remove it."""
        key = str(provider)
        if file_descriptor_set:
            _check_descriptor(provider, file_descriptor_set)

        def apply(db: _Connection, now: dt.datetime) -> None:
            if not db.exists("SELECT 1 FROM subsystems WHERE id = ?", (key,)):
                raise _refuse(
                    ErrorCode.FAILED_PRECONDITION,
                    f"service descriptor names unknown subsystem {key}",
                )
            if file_descriptor_set:
                db.execute(
                    "INSERT INTO service_descriptors (provider, file_descriptor_set) "
                    "VALUES (?, ?) ON CONFLICT (provider) DO UPDATE "
                    "SET file_descriptor_set = excluded.file_descriptor_set",
                    (key, file_descriptor_set),
                )
            elif not db.exists("SELECT 1 FROM service_descriptors WHERE provider = ?", (key,)):
                raise _refuse(ErrorCode.NOT_FOUND, f"subsystem {key} has no service descriptor")
            else:
                db.execute("DELETE FROM service_descriptors WHERE provider = ?", (key,))

        return self._change(change, key, apply)

    # -- bulk ----------------------------------------------------------------------------------

    def import_federation(self, federation: Federation, change: Change) -> AuditEntry:
        """Load a whole federation into an empty store, as one change (one audit entry).

        Everything is checked as the single-object calls check it (certificates against
        the federation's own CAs at the store's clock); gateways must carry their whole
        certificates. Meant for restoring a backup or seeding a new registry.
        """

        def apply(db: _Connection, now: dt.datetime) -> None:
            self._check_instance("federation", federation.instance)
            for table in ("members", "certificate_authorities", "timestamping_authorities"):
                if db.exists(f"SELECT 1 FROM {table}"):  # noqa: S608  (fixed table names)
                    raise _refuse(
                        ErrorCode.FAILED_PRECONDITION,
                        f"the store is not empty ({table}); a federation is imported only "
                        "into an empty store",
                    )
            _check_federation_import(federation, now)
            _insert_federation(db, federation, self._dialect.time_to_db(now))

        return self._change(change, federation.instance, apply)

    # -- reading ------------------------------------------------------------------------------

    def federation(self) -> Federation:
        """A consistent snapshot of the whole federation, certificates included."""
        with self._transaction("read the federation") as db:
            subjects = _SubjectParser()
            members = _members(db, subjects)
            subsystems = _subsystems(db, subjects)
            gateways = _gateways(db, None, subjects)
            cas = _cas(db)
            tsas = _tsas(db)
            groups = _groups(db, subjects)
            descriptors = [
                ServiceDescriptor(provider=subjects.subsystem(p), file_descriptor_set=bytes(fds))
                for p, fds in db.rows(
                    "SELECT provider, file_descriptor_set FROM service_descriptors"
                )
            ]
        try:
            return Federation(
                instance=self._instance,
                members=tuple(members),
                subsystems=tuple(subsystems),
                gateways=tuple(gateways),
                certificate_authorities=tuple(cas),
                timestamping_authorities=tuple(tsas),
                global_groups=tuple(groups),
                service_descriptors=tuple(sorted(descriptors, key=lambda d: d.provider)),
            )
        except ConfigurationError as exc:
            raise RegistryError(
                f"read the federation: the stored state is inconsistent: {exc.message}",
                code=ErrorCode.INTERNAL,
                origin=Origin.GATEWAY,
            ) from exc

    def audit_log(self, *, after_sequence: int = 0, limit: int = 100) -> Sequence[AuditEntry]:
        """Up to ``limit`` audit entries with sequence above ``after_sequence``, in order."""
        if after_sequence < 0:
            raise _refuse(ErrorCode.INVALID_REQUEST, f"after_sequence {after_sequence} < 0")
        if not 1 <= limit <= MAX_AUDIT_PAGE:
            raise _refuse(
                ErrorCode.INVALID_REQUEST, f"limit {limit} is not from 1 to {MAX_AUDIT_PAGE}"
            )
        with self._transaction("read the audit log") as db:
            rows = db.rows(
                "SELECT sequence, at, actor, action, target, details FROM audit_log "
                "WHERE sequence > ? ORDER BY sequence LIMIT ?",
                (after_sequence, limit),
            )
        return [
            AuditEntry(
                sequence=int(sequence),
                at=self._dialect.time_from_db(at),
                actor=actor,
                action=action,
                target=target,
                details=details,
            )
            for sequence, at, actor, action, target, details in rows
        ]

    def last_audit_sequence(self) -> int:
        """The sequence of the latest audit entry (0 when there is none)."""
        with self._transaction("read the audit sequence") as db:
            return int(db.rows("SELECT value FROM counters WHERE name = 'audit'")[0][0])

    def next_serial(self) -> int:
        """A configuration serial greater than every one returned before (committed)."""
        with self._transaction("allocate a configuration serial", write=True) as db:
            rows = db.rows(
                "UPDATE counters SET value = value + 1 WHERE name = 'serial' RETURNING value"
            )
            return int(rows[0][0])

    # -- transactions -------------------------------------------------------------------------

    def _change(
        self, change: Change, target: str, apply: Callable[[_Connection, dt.datetime], None]
    ) -> AuditEntry:
        """Run ``apply`` and append its audit entry, in one write transaction."""
        with _as_refusal():
            check_name("actor of a change", change.actor)
            check_name("action of a change", change.action)
        with self._transaction(change.action, write=True) as db:
            # First statement: on PostgreSQL its row lock serialises writers (see docstring).
            sequence = int(
                db.rows(
                    "UPDATE counters SET value = value + 1 WHERE name = 'audit' RETURNING value"
                )[0][0]
            )
            now = self._now()
            apply(db, now)
            entry = AuditEntry(
                sequence=sequence,
                at=now,
                actor=change.actor,
                action=change.action,
                target=target,
                details=change.details,
            )
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
        return entry

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
            db = self._conn
            try:
                db.begin(write=write)
                try:
                    yield db
                except BaseException:
                    with contextlib.suppress(*self._dialect.errors):
                        db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            except self._dialect.errors as exc:
                with contextlib.suppress(*self._dialect.errors):
                    db.execute("ROLLBACK")
                raise _internal(operation, exc) from exc

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


# -- dialects and connections -----------------------------------------------------------------


class _Connection(Protocol):
    """What the store needs of a database connection (placeholders are ``?``)."""

    def begin(self, *, write: bool) -> None: ...
    def execute(self, sql: str, params: Sequence[object] = ()) -> None: ...
    def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None: ...
    def rows(self, sql: str, params: Sequence[object] = ()) -> list[_Row]: ...
    def exists(self, sql: str, params: Sequence[object] = ()) -> bool: ...
    def close(self) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class _Dialect:
    """What differs between the databases, beyond the connection adapter."""

    blob: str
    timestamp: str
    #: Taken first in the schema-creating transaction (PostgreSQL: concurrent creators).
    schema_lock: str | None
    #: Whether the driver stores aware datetimes natively (else ISO 8601 text, UTC).
    native_timestamps: bool
    errors: tuple[type[Exception], ...]

    def time_to_db(self, at: dt.datetime) -> object:
        utc = at.astimezone(dt.UTC)
        return utc if self.native_timestamps else utc.isoformat()

    def time_from_db(self, value: object) -> dt.datetime:
        if isinstance(value, dt.datetime):
            return value.astimezone(dt.UTC)
        return dt.datetime.fromisoformat(str(value)).astimezone(dt.UTC)


_SQLITE: Final = _Dialect(
    blob="BLOB",
    timestamp="TEXT",
    schema_lock=None,
    native_timestamps=False,
    errors=(sqlite3.Error,),
)
_POSTGRES: Final = _Dialect(
    blob="BYTEA",
    timestamp="TIMESTAMPTZ",
    schema_lock="SELECT pg_advisory_xact_lock(7262058433)",
    native_timestamps=True,
    errors=(psycopg.Error,),
)


class _SqliteConnection:
    """sqlite3 in autocommit mode with explicit transactions; WAL, synchronous=FULL."""

    def __init__(self, raw: sqlite3.Connection) -> None:
        self._raw = raw
        try:
            raw.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            mode = raw.execute("PRAGMA journal_mode = WAL").fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                raise sqlite3.OperationalError(f"cannot enable WAL mode (got {mode!r})")
            raw.execute("PRAGMA synchronous = FULL")
            raw.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            raw.close()
            raise

    def begin(self, *, write: bool) -> None:
        # IMMEDIATE takes the database's write lock now, so checks see the latest state.
        self._raw.execute("BEGIN IMMEDIATE" if write else "BEGIN")

    def execute(self, sql: str, params: Sequence[object] = ()) -> None:
        self._raw.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        self._raw.executemany(sql, rows)

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[_Row]:
        return self._raw.execute(sql, params).fetchall()

    def exists(self, sql: str, params: Sequence[object] = ()) -> bool:
        return self._raw.execute(sql, params).fetchone() is not None

    def close(self) -> None:
        self._raw.close()


class _PostgresConnection:
    """psycopg 3 in autocommit mode with explicit transactions; reconnects when broken."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._raw = psycopg.connect(dsn, autocommit=True)

    def begin(self, *, write: bool) -> None:
        if self._raw.closed:
            self._raw = psycopg.connect(self._dsn, autocommit=True)
        # Writers serialise on the audit counter row; readers see one snapshot.
        self._raw.execute("BEGIN" if write else "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def execute(self, sql: str, params: Sequence[object] = ()) -> None:
        self._raw.execute(_pg(sql), params)

    def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        with self._raw.cursor() as cursor:
            cursor.executemany(_pg(sql), rows)

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[_Row]:
        return self._raw.execute(_pg(sql), params).fetchall()

    def exists(self, sql: str, params: Sequence[object] = ()) -> bool:
        return self._raw.execute(_pg(sql), params).fetchone() is not None

    def close(self) -> None:
        self._raw.close()


def _pg(sql: str) -> str:
    """``?`` placeholders as psycopg's ``%s`` (the store's SQL has no other ``?`` or ``%``)."""
    return sql.replace("?", "%s")


def _schema(dialect: _Dialect) -> list[str]:
    blob, timestamp = dialect.blob, dialect.timestamp
    return [
        "CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS members (id TEXT PRIMARY KEY, name TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS subsystems (id TEXT PRIMARY KEY,"
        " member_id TEXT NOT NULL REFERENCES members (id), name TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS subsystems_member ON subsystems (member_id)",
        "CREATE TABLE IF NOT EXISTS gateways (id TEXT PRIMARY KEY,"
        " member_id TEXT NOT NULL REFERENCES members (id), address TEXT NOT NULL,"
        f" auth_certificate_sha256 {blob} NOT NULL UNIQUE, auth_certificate {blob} NOT NULL,"
        f" registered_at {timestamp} NOT NULL)",
        "CREATE INDEX IF NOT EXISTS gateways_member ON gateways (member_id)",
        "CREATE TABLE IF NOT EXISTS gateway_subsystems ("
        " gateway_id TEXT NOT NULL REFERENCES gateways (id),"
        " subsystem_id TEXT NOT NULL REFERENCES subsystems (id),"
        " PRIMARY KEY (gateway_id, subsystem_id))",
        "CREATE INDEX IF NOT EXISTS gateway_subsystems_subsystem"
        " ON gateway_subsystems (subsystem_id)",
        "CREATE TABLE IF NOT EXISTS global_groups (id TEXT PRIMARY KEY, description TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS global_group_members ("
        " group_id TEXT NOT NULL REFERENCES global_groups (id), subject TEXT NOT NULL,"
        " subject_kind TEXT NOT NULL, PRIMARY KEY (group_id, subject))",
        "CREATE INDEX IF NOT EXISTS global_group_members_subject ON global_group_members (subject)",
        "CREATE TABLE IF NOT EXISTS certificate_authorities (name TEXT PRIMARY KEY,"
        f" root_certificate {blob} NOT NULL, root_sha256 {blob} NOT NULL UNIQUE,"
        " ocsp_urls TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS ca_intermediates ("
        " ca_name TEXT NOT NULL REFERENCES certificate_authorities (name),"
        f" position INTEGER NOT NULL, certificate {blob} NOT NULL,"
        " PRIMARY KEY (ca_name, position))",
        "CREATE TABLE IF NOT EXISTS timestamping_authorities (name TEXT PRIMARY KEY,"
        " url TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS tsa_certificates ("
        " tsa_name TEXT NOT NULL REFERENCES timestamping_authorities (name),"
        f" position INTEGER NOT NULL, certificate {blob} NOT NULL,"
        " PRIMARY KEY (tsa_name, position))",
        "CREATE TABLE IF NOT EXISTS service_descriptors ("
        " provider TEXT PRIMARY KEY REFERENCES subsystems (id),"
        f" file_descriptor_set {blob} NOT NULL)",
        "CREATE TABLE IF NOT EXISTS audit_log (sequence BIGINT PRIMARY KEY,"
        f" at {timestamp} NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,"
        " target TEXT NOT NULL, details TEXT NOT NULL)",
    ]


# -- errors -------------------------------------------------------------------------------------


def _refuse(code: ErrorCode, message: str) -> RegistryError:
    return RegistryError(message, code=code, origin=Origin.CLIENT)


def _internal(operation: str, exc: Exception) -> RegistryError:
    """The one translation of a driver error (the caller raises it ``from exc``)."""
    return RegistryError(
        f"{operation}: the registry database failed: {type(exc).__name__}: {exc}",
        code=ErrorCode.INTERNAL,
        origin=Origin.GATEWAY,
    )


@contextlib.contextmanager
def _as_refusal() -> Iterator[None]:
    """A domain type's own refusal (:class:`ConfigurationError`) as a ``RegistryError``."""
    try:
        yield
    except ConfigurationError as exc:
        raise RegistryError(exc.message, code=exc.code, origin=Origin.CLIENT) from exc


def _refuse_if_used(what: str, *uses: tuple[str, Sequence[str]]) -> None:
    """Refuse (failed_precondition) when any of ``uses`` (description, ids) is non-empty."""
    for description, ids in uses:
        if ids:
            shown = ", ".join(sorted(ids)[:_SHOW_AT_MOST])
            more = f" and {len(ids) - _SHOW_AT_MOST} more" if len(ids) > _SHOW_AT_MOST else ""
            raise _refuse(
                ErrorCode.FAILED_PRECONDITION,
                f"{what} is still referred to by {description}: {shown}{more}",
            )


# -- reading helpers ----------------------------------------------------------------------------


class _SubjectParser:
    """Parses stored ids once per read (a snapshot names each subsystem several times)."""

    def __init__(self) -> None:
        self._members: dict[str, MemberId] = {}
        self._subsystems: dict[str, SubsystemId] = {}
        self._subjects: dict[str, Subject] = {}

    def member(self, text: str) -> MemberId:
        found = self._members.get(text)
        if found is None:
            found = self._members[text] = MemberId.parse(text)
        return found

    def subsystem(self, text: str) -> SubsystemId:
        found = self._subsystems.get(text)
        if found is None:
            found = self._subsystems[text] = SubsystemId.parse(text)
        return found

    def subject(self, text: str) -> Subject:
        known: Subject | None = self._subsystems.get(text) or self._members.get(text)
        if known is None:
            known = self._subjects.get(text)
        if known is None:
            known = self._subjects[text] = parse_subject(text)
        return known


def _column(db: _Connection, sql: str, param: object) -> list[str]:
    return [str(row[0]) for row in db.rows(sql, (param,))]


def _groups_with(db: _Connection, subject: str) -> list[str]:
    return _column(db, "SELECT group_id FROM global_group_members WHERE subject = ?", subject)


def _members(db: _Connection, ids: _SubjectParser | None = None) -> list[Member]:
    ids = ids or _SubjectParser()
    members = [Member(id=ids.member(i), name=n) for i, n in db.rows("SELECT id, name FROM members")]
    return sorted(members, key=lambda m: m.id)


def _subsystems(db: _Connection, ids: _SubjectParser) -> list[Subsystem]:
    subsystems = [
        Subsystem(id=ids.subsystem(i), name=n)
        for i, n in db.rows("SELECT id, name FROM subsystems")
    ]
    return sorted(subsystems, key=lambda s: s.id)


#: (served subsystems, gateways) queries, unfiltered and of one member.
_GATEWAY_QUERIES: Final = {
    False: (
        "SELECT gateway_id, subsystem_id FROM gateway_subsystems",
        "SELECT id, address, auth_certificate_sha256, auth_certificate FROM gateways",
    ),
    True: (
        "SELECT s.gateway_id, s.subsystem_id FROM gateway_subsystems s"
        " JOIN gateways g ON g.id = s.gateway_id WHERE g.member_id = ?",
        "SELECT id, address, auth_certificate_sha256, auth_certificate FROM gateways"
        " WHERE member_id = ?",
    ),
}


def _gateways(
    db: _Connection, member: str | None, ids: _SubjectParser | None = None
) -> list[Gateway]:
    """Gateways with their certificates and served subsystems, in two queries."""
    ids = ids or _SubjectParser()
    params: tuple[str, ...] = () if member is None else (member,)
    served_sql, gateways_sql = _GATEWAY_QUERIES[member is not None]
    served: defaultdict[str, list[SubsystemId]] = defaultdict(list)
    for gateway_id, subsystem_id in db.rows(served_sql, params):
        served[gateway_id].append(ids.subsystem(subsystem_id))
    gateways = [
        Gateway(
            id=GatewayId.parse(gateway_id),
            address=address,
            auth_certificate_sha256=bytes(sha256),
            auth_certificate=bytes(certificate),
            subsystems=frozenset(served[gateway_id]),
        )
        for gateway_id, address, sha256, certificate in db.rows(gateways_sql, params)
    ]
    return sorted(gateways, key=lambda g: g.id)


def _groups(db: _Connection, ids: _SubjectParser) -> list[GlobalGroup]:
    members: defaultdict[str, list[Subject]] = defaultdict(list)
    for group_id, subject in db.rows("SELECT group_id, subject FROM global_group_members"):
        members[group_id].append(ids.subject(subject))
    groups = [
        GlobalGroup(
            id=GlobalGroupId.parse(group_id),
            description=description,
            members=frozenset(members[group_id]),
        )
        for group_id, description in db.rows("SELECT id, description FROM global_groups")
    ]
    return sorted(groups, key=lambda g: g.id)


def _cas(db: _Connection) -> list[ApprovedCA]:
    intermediates: defaultdict[str, list[bytes]] = defaultdict(list)
    for name, certificate in db.rows(
        "SELECT ca_name, certificate FROM ca_intermediates ORDER BY ca_name, position"
    ):
        intermediates[name].append(bytes(certificate))
    cas = [
        ApprovedCA(
            name=name,
            root_certificate=bytes(root),
            intermediate_certificates=tuple(intermediates[name]),
            ocsp_urls=tuple(json.loads(urls)),
        )
        for name, root, urls in db.rows(
            "SELECT name, root_certificate, ocsp_urls FROM certificate_authorities"
        )
    ]
    return sorted(cas, key=lambda c: c.name)


def _tsas(db: _Connection) -> list[ApprovedTSA]:
    certificates: defaultdict[str, list[bytes]] = defaultdict(list)
    for name, certificate in db.rows(
        "SELECT tsa_name, certificate FROM tsa_certificates ORDER BY tsa_name, position"
    ):
        certificates[name].append(bytes(certificate))
    tsas = [
        ApprovedTSA(name=name, url=url, certificates=tuple(certificates[name]))
        for name, url in db.rows("SELECT name, url FROM timestamping_authorities")
    ]
    return sorted(tsas, key=lambda t: t.name)


def _nested_groups(db: _Connection, start: str) -> set[str]:
    """Every group reachable from ``start`` through group membership, ``start`` included."""
    edges: defaultdict[str, list[str]] = defaultdict(list)
    for group_id, subject in db.rows(
        "SELECT group_id, subject FROM global_group_members WHERE subject_kind = 'global_group'"
    ):
        edges[group_id].append(subject)
    return _reachable(edges, start)


def _reachable(edges: dict[str, list[str]], start: str) -> set[str]:
    seen = {start}
    pending = [start]
    while pending:
        for nested in edges.get(pending.pop(), ()):
            if nested not in seen:
                seen.add(nested)
                pending.append(nested)
    return seen


# -- writing helpers ----------------------------------------------------------------------------


def _check_served(
    db: _Connection, gateway_id: GatewayId, subsystems: Iterable[SubsystemId]
) -> None:
    for subsystem in sorted(subsystems):
        if subsystem.member != gateway_id.member:
            raise _refuse(
                ErrorCode.FAILED_PRECONDITION,
                f"gateway {gateway_id} cannot serve {subsystem}: a gateway serves only its own "
                "member's subsystems",
            )
        if not db.exists("SELECT 1 FROM subsystems WHERE id = ?", (str(subsystem),)):
            raise _refuse(
                ErrorCode.FAILED_PRECONDITION,
                f"gateway {gateway_id} serves unknown subsystem {subsystem}",
            )


def _insert_served(db: _Connection, gateway_id: str, subsystems: Iterable[SubsystemId]) -> None:
    db.executemany(
        "INSERT INTO gateway_subsystems (gateway_id, subsystem_id) VALUES (?, ?)",
        [(gateway_id, str(s)) for s in sorted(subsystems)],
    )


def _check_subject_exists(db: _Connection, group_id: GlobalGroupId, subject: Subject) -> None:
    table = {
        MemberId: "members",
        SubsystemId: "subsystems",
        GlobalGroupId: "global_groups",
    }[type(subject)]
    if not db.exists(f"SELECT 1 FROM {table} WHERE id = ?", (str(subject),)):  # noqa: S608
        raise _refuse(
            ErrorCode.FAILED_PRECONDITION,
            f"global group {group_id} cannot contain unknown {subject.kind.value} {subject}",
        )


def _insert_group_members(db: _Connection, group_id: str, subjects: Iterable[Subject]) -> None:
    db.executemany(
        "INSERT INTO global_group_members (group_id, subject, subject_kind) VALUES (?, ?, ?)",
        [(group_id, str(s), s.kind.value) for s in sorted(subjects, key=str)],
    )


def _insert_cas(db: _Connection, cas: Iterable[ApprovedCA]) -> None:
    cas = list(cas)
    db.executemany(
        "INSERT INTO certificate_authorities (name, root_certificate, root_sha256, ocsp_urls)"
        " VALUES (?, ?, ?, ?)",
        [
            (ca.name, ca.root_certificate, _sha256(ca.root_certificate), json.dumps(ca.ocsp_urls))
            for ca in cas
        ],
    )
    db.executemany(
        "INSERT INTO ca_intermediates (ca_name, position, certificate) VALUES (?, ?, ?)",
        [
            (ca.name, position, der)
            for ca in cas
            for position, der in enumerate(ca.intermediate_certificates)
        ],
    )


def _insert_tsas(db: _Connection, tsas: Iterable[ApprovedTSA]) -> None:
    tsas = list(tsas)
    db.executemany(
        "INSERT INTO timestamping_authorities (name, url) VALUES (?, ?)",
        [(tsa.name, tsa.url) for tsa in tsas],
    )
    db.executemany(
        "INSERT INTO tsa_certificates (tsa_name, position, certificate) VALUES (?, ?, ?)",
        [
            (tsa.name, position, der)
            for tsa in tsas
            for position, der in enumerate(tsa.certificates)
        ],
    )


def _insert_federation(db: _Connection, fed: Federation, registered_at: object) -> None:
    db.executemany(
        "INSERT INTO members (id, name) VALUES (?, ?)", [(str(m.id), m.name) for m in fed.members]
    )
    db.executemany(
        "INSERT INTO subsystems (id, member_id, name) VALUES (?, ?, ?)",
        [(str(s.id), str(s.id.member), s.name) for s in fed.subsystems],
    )
    _insert_cas(db, fed.certificate_authorities)
    _insert_tsas(db, fed.timestamping_authorities)
    db.executemany(
        "INSERT INTO gateways (id, member_id, address, auth_certificate_sha256,"
        " auth_certificate, registered_at) VALUES (?, ?, ?, ?, ?, ?)",
        [
            (
                str(g.id),
                str(g.id.member),
                g.address,
                g.auth_certificate_sha256,
                g.auth_certificate,
                registered_at,
            )
            for g in fed.gateways
        ],
    )
    db.executemany(
        "INSERT INTO gateway_subsystems (gateway_id, subsystem_id) VALUES (?, ?)",
        [(str(g.id), str(s)) for g in fed.gateways for s in sorted(g.subsystems)],
    )
    db.executemany(
        "INSERT INTO global_groups (id, description) VALUES (?, ?)",
        [(str(g.id), g.description) for g in fed.global_groups],
    )
    db.executemany(
        "INSERT INTO global_group_members (group_id, subject, subject_kind) VALUES (?, ?, ?)",
        [
            (str(g.id), str(s), s.kind.value)
            for g in fed.global_groups
            for s in sorted(g.members, key=str)
        ],
    )
    db.executemany(
        "INSERT INTO service_descriptors (provider, file_descriptor_set) VALUES (?, ?)",
        [(str(d.provider), d.file_descriptor_set) for d in fed.service_descriptors],
    )


def _check_federation_import(fed: Federation, now: dt.datetime) -> None:
    """What :class:`Federation` does not check itself but the single-object calls do."""
    roots = [_check_ca(ca) for ca in fed.certificate_authorities]
    if len(set(roots)) != len(roots):
        raise _refuse(ErrorCode.ALREADY_EXISTS, "two CAs of the federation share a root")
    for tsa in fed.timestamping_authorities:
        _check_tsa(tsa)
    trusted = _TrustedCAs(fed.certificate_authorities)
    holders: dict[bytes, GatewayId] = {}
    for gateway in fed.gateways:
        other = holders.setdefault(gateway.auth_certificate_sha256, gateway.id)
        if other != gateway.id:
            raise _refuse(
                ErrorCode.ALREADY_EXISTS,
                f"authentication certificate of gateway {gateway.id} is also that of {other}",
            )
        _check_gateway_certificate(gateway, trusted, now)
    edges: defaultdict[str, list[str]] = defaultdict(list)
    for group in fed.global_groups:
        edges[str(group.id)] = [str(s) for s in group.members if isinstance(s, GlobalGroupId)]
    for group in fed.global_groups:
        if any(str(group.id) in _reachable(edges, nested) for nested in edges[str(group.id)]):
            raise _refuse(ErrorCode.INVALID_REQUEST, f"global group {group.id} contains itself")
    for descriptor in fed.service_descriptors:
        _check_descriptor(descriptor.provider, descriptor.file_descriptor_set)


# -- certificates and descriptors ---------------------------------------------------------------


class _TrustedCAs:
    """The approved CAs as a trust store for gateway authentication certificates."""

    def __init__(self, cas: Sequence[ApprovedCA]) -> None:
        self.names = [ca.name for ca in cas]
        self.intermediates = [
            _parse_certificate(f"intermediate certificate of CA {ca.name!r}", der)
            for ca in cas
            for der in ca.intermediate_certificates
        ]
        try:
            self.trust = TrustStore(
                roots=[
                    _parse_certificate(f"root certificate of CA {ca.name!r}", ca.root_certificate)
                    for ca in cas
                ],
                intermediates=self.intermediates,
            )
        except PKIError as exc:
            raise RegistryError(
                f"the approved CAs do not make a trust store: {exc.message}",
                code=ErrorCode.INTERNAL,
                origin=Origin.GATEWAY,
            ) from exc

    def check(self, gateway: Gateway, cert: x509.Certificate, at: dt.datetime) -> None:
        """Refuse (failed_precondition) unless ``cert`` validates for both TLS roles."""
        if not self.names:
            raise _refuse(
                ErrorCode.FAILED_PRECONDITION,
                f"authentication certificate of gateway {gateway.id} cannot be checked: no "
                "certificate authority is approved",
            )
        for role in (TlsRole.SERVER, TlsRole.CLIENT):
            try:
                validate_path(
                    cert,
                    intermediates=self.intermediates,
                    trust=self.trust,
                    at=at,
                    purpose=Profile.AUTH,
                    tls_role=role,
                    revocation=None,
                )
            except PKIError as exc:
                raise _refuse(
                    ErrorCode.FAILED_PRECONDITION,
                    f"authentication certificate of gateway {gateway.id} is not valid as a TLS "
                    f"{role.value} certificate from an approved CA ({exc.code.value}): "
                    f"{exc.message}",
                ) from exc

    def accepts(self, gateway: Gateway, at: dt.datetime) -> bool:
        """Whether ``gateway``'s stored certificate validates against these CAs at ``at``."""
        try:
            cert = _parse_certificate("", gateway.auth_certificate)
            self.check(gateway, cert, at)
        except RegistryError:
            return False
        return True


def _check_gateway_certificate(gateway: Gateway, trusted: _TrustedCAs, at: dt.datetime) -> None:
    what = f"authentication certificate of gateway {gateway.id}"
    if not gateway.auth_certificate:
        raise _refuse(
            ErrorCode.INVALID_REQUEST,
            f"{what} is missing: the registry needs the whole DER certificate, not its hash",
        )
    cert = _parse_certificate(what, gateway.auth_certificate)
    trusted.check(gateway, cert, at)
    try:
        named = member_of(cert)
    except PKIError as exc:
        raise _refuse(ErrorCode.FAILED_PRECONDITION, f"{what}: {exc.message}") from exc
    if named != str(gateway.id.member):
        raise _refuse(
            ErrorCode.FAILED_PRECONDITION,
            f"{what} names member {named} in its subject, not {gateway.id.member}",
        )


def _check_ca(ca: ApprovedCA) -> bytes:
    """Check a CA's certificates; return the SHA-256 of its root."""
    what = f"root certificate of CA {ca.name!r}"
    root = _parse_certificate(what, ca.root_certificate)
    if not _issued_by(root, root):
        raise _refuse(ErrorCode.INVALID_REQUEST, f"{what} is not self-signed")
    if not _is_ca(root):
        raise _refuse(
            ErrorCode.INVALID_REQUEST,
            f"{what} is not a CA certificate (basicConstraints cA and keyUsage keyCertSign)",
        )
    try:
        TrustStore(roots=[root])
    except PKIError as exc:
        raise _refuse(ErrorCode.INVALID_REQUEST, f"{what}: {exc.message}") from exc
    pending = {
        index: _parse_certificate(f"intermediate certificate {index} of CA {ca.name!r}", der)
        for index, der in enumerate(ca.intermediate_certificates)
    }
    for index, cert in pending.items():
        if not _is_ca(cert):
            raise _refuse(
                ErrorCode.INVALID_REQUEST,
                f"intermediate certificate {index} of CA {ca.name!r} is not a CA certificate",
            )
    chained = [root]
    while pending:
        linked = [i for i, c in pending.items() if any(_issued_by(c, up) for up in chained)]
        if not linked:
            raise _refuse(
                ErrorCode.INVALID_REQUEST,
                f"intermediate certificate {min(pending)} of CA {ca.name!r} does not chain up "
                "to its root certificate",
            )
        chained.extend(pending.pop(i) for i in linked)
    return _sha256(ca.root_certificate)


def _check_tsa(tsa: ApprovedTSA) -> None:
    own = _parse_certificate(f"certificate of TSA {tsa.name!r}", tsa.certificates[0])
    for index, der in enumerate(tsa.certificates[1:], start=1):
        _parse_certificate(f"certificate {index} of TSA {tsa.name!r}", der)
    try:
        usages = own.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except (x509.ExtensionNotFound, ValueError):
        usages = x509.ExtendedKeyUsage([])
    if ExtendedKeyUsageOID.TIME_STAMPING not in usages:
        raise _refuse(
            ErrorCode.INVALID_REQUEST,
            f"certificate of TSA {tsa.name!r} lacks the timeStamping extended key usage",
        )


def _check_descriptor(provider: SubsystemId, data: bytes) -> None:
    what = f"service descriptor of {provider}"
    try:
        parsed = FileDescriptorSet.FromString(data)
    except (DecodeError, ValueError) as exc:
        raise _refuse(
            ErrorCode.INVALID_REQUEST, f"{what} is not a serialized FileDescriptorSet: {exc}"
        ) from exc
    if not parsed.file:
        raise _refuse(ErrorCode.INVALID_REQUEST, f"{what} describes no .proto file")


def _parse_certificate(what: str, der: bytes) -> x509.Certificate:
    try:
        cert = x509.load_der_x509_certificate(der)
        _ = (cert.subject, cert.issuer, cert.extensions)
    except ValueError as exc:
        raise _refuse(
            ErrorCode.INVALID_REQUEST, f"{what} is not a DER X.509 certificate: {exc}"
        ) from exc
    return cert


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except (x509.ExtensionNotFound, ValueError):
        return False
    return basic.ca and usage.key_cert_sign


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
