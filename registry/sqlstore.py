"""The registry's store on SQL: SQLite (embedded, the default) and PostgreSQL (production).

:class:`SqlRegistryStore` implements :class:`registry.store.RegistryStore`. One class
serves both databases; a small :class:`_Dialect` holds what differs (column types,
placeholders, how a transaction begins, how the connection is set up).

The class holds the operations; the rest lives in private modules beside it:
``_sqlcore`` (connection, lock, transactions, the audited change), ``_sqldialect``
(the SQLite and PostgreSQL adapters), ``_sqlschema`` (tables and version), ``_sqlchecks``
(certificates, CAs, TSAs, descriptors), ``_sqlread`` and ``_sqlwrite`` (row helpers),
``_sqlimport`` (:meth:`SqlRegistryStore.import_federation`) and ``_sqlerrors``.

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
* **Configuration log.** :meth:`SqlRegistryStore.conflog_append` stores a configuration's
  leaf, the nodes it completes and the signed head of the new size in one write
  transaction whose first statement increments the ``conflog`` counter (serialising
  appenders as the audit counter serialises changes); see :mod:`registry._sqlconflog`.
  :meth:`SqlRegistryStore.conflog_add_timestamp` attaches an RFC 3161 token to a stored
  head, at most once per head. :meth:`SqlRegistryStore.conflog_prune` drops the
  envelopes of old entries, keeping every hash, head and token, in one write
  transaction that first takes the ``conflog`` counter row; it is audited when it
  pruned anything.
* **One instance.** The database records its federation instance when created; opening
  it for another instance, or with another schema version, is refused.
* **Wrapped failures.** Driver errors (``sqlite3.Error``, ``psycopg.Error``) surface as
  ``RegistryError`` with code ``internal`` and origin ``gateway``, naming the operation.

Assumptions: the clock is right (it dates audit entries and decides certificate
validity at registration); revocation of gateway certificates is checked by gateways at
connection time (OCSP), not here; nobody writes to the database behind the store's back.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import psycopg

from registry._sqlchecks import (
    _check_ca,
    _check_descriptor,
    _check_gateway_certificate,
    _check_tsa,
    _TrustedCAs,
)
from registry._sqlconflog import (
    _add_timestamp,
    _append,
    _consistency,
    _entry,
    _head,
    _newest_head,
    _prune,
    _pruned_count,
    _root,
    _size,
    _timestamped,
)
from registry._sqlcore import Clock, _SqlStoreCore
from registry._sqldialect import (
    _POSTGRES,
    _SQLITE,
    _Connection,
    _Dialect,
    _PostgresConnection,
    _SqliteConnection,
)
from registry._sqlerrors import _as_refusal, _internal, _refuse, _refuse_if_used
from registry._sqlimport import _check_federation_import, _insert_federation
from registry._sqlread import (
    _cas,
    _column,
    _gateways,
    _groups,
    _groups_with,
    _members,
    _nested_groups,
    _SubjectParser,
    _subsystems,
    _tsas,
)
from registry._sqlwrite import (
    _check_served,
    _check_subject_exists,
    _insert_cas,
    _insert_group_members,
    _insert_served,
    _insert_tsas,
)
from registry.conflog import HeadSigner, ProofBundle, log_id_for
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
from registry.store import AuditEntry, Change, ConflogPruneResult
from serai.errors import ErrorCode, Origin
from serai.identifiers import (
    GatewayId,
    GlobalGroupId,
    MemberId,
    Subject,
    SubsystemId,
    parse_instance,
)
from serai.treehead import SignedTreeHead

__all__ = ["SqlRegistryStore"]

#: Most audit entries one :meth:`SqlRegistryStore.audit_log` call returns.
MAX_AUDIT_PAGE: Final = 10_000


class SqlRegistryStore(_SqlStoreCore):
    """The registry's state in SQLite or PostgreSQL (see the module docstring).

    Build it with :meth:`open_sqlite` or :meth:`open_postgres`; ``close`` it when done.
    """

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

    # -- the configuration log ---------------------------------------------------------------

    def conflog_append(self, *, serial: int, envelope: bytes, sign_head: HeadSigner) -> ProofBundle:
        """Append ``envelope`` (configuration ``serial``) to the configuration log, sign
        the new head with ``sign_head``, and return the entry's proof bundle."""
        with self._transaction("append to the configuration log", write=True) as db:
            return _append(
                db,
                self._dialect,
                serial=serial,
                envelope=envelope,
                sign_head=sign_head,
                now=self._now(),
            )

    def conflog_size(self) -> int:
        """Number of configurations in the log."""
        with self._transaction("read the configuration log size") as db:
            return _size(db)

    def conflog_root(self, size: int) -> bytes:
        """The root hash of the log's first ``size`` entries."""
        with self._transaction("read a configuration log root") as db:
            return _root(db, size)

    def conflog_consistency(self, old_size: int, new_size: int) -> Sequence[bytes]:
        """The consistency proof from ``old_size`` to ``new_size`` (``not_found`` when
        they are not ``0 <= old_size <= new_size <= conflog_size()``)."""
        with self._transaction("prove configuration log consistency") as db:
            return _consistency(db, old_size, new_size)

    def conflog_head(self, size: int) -> bytes:
        """The signed tree head (compact JWS) of size ``size``."""
        with self._transaction("read a configuration log head") as db:
            return _head(db, size)

    def conflog_entry(self, index: int) -> tuple[int, bytes]:
        """Serial and envelope bytes of the log's entry ``index``."""
        with self._transaction("read a configuration log entry") as db:
            return _entry(db, index)

    def conflog_add_timestamp(self, tree_size: int, token: bytes) -> bool:
        """Attach the RFC 3161 ``token`` (DER, verified by the caller) to the head of
        ``tree_size``; ``False`` when that head already had one (kept), ``not_found``
        when there is no such head."""
        with self._transaction("store a configuration log time-stamp", write=True) as db:
            return _add_timestamp(
                db, self._dialect, tree_size=tree_size, token=token, now=self._now()
            )

    def conflog_newest_head(self) -> SignedTreeHead | None:
        """The largest head of the log, with its token if it has one (``None``: empty)."""
        with self._transaction("read the newest configuration log head") as db:
            return _newest_head(db)

    def conflog_timestamped_head(self) -> SignedTreeHead | None:
        """The largest head that has a token, with it (``None`` before the first)."""
        with self._transaction("read the newest time-stamped configuration log head") as db:
            return _timestamped(db)

    def conflog_prune(self, *, before: dt.datetime, change: Change) -> ConflogPruneResult:
        """Drop the envelopes of the entries appended before ``before`` that retention
        may drop (:mod:`registry._sqlconflog`), in one transaction.

        When it pruned any, it appends one audit entry (``change``'s actor and action,
        the log id as target, details ``{"before", "first_index", "last_index",
        "pruned"}`` written here); a call that prunes nothing leaves no trace.
        """
        if before.tzinfo is None or before.utcoffset() is None:
            raise _refuse(ErrorCode.INVALID_REQUEST, "the prune cut-off has no time zone")
        with _as_refusal():
            check_name("actor of a change", change.actor)
            check_name("action of a change", change.action)
        with self._transaction("prune the configuration log", write=True) as db:
            now = self._now()
            result = _prune(db, self._dialect, before=before, now=now)
            if result.pruned:
                details = {
                    "before": before.astimezone(dt.UTC).isoformat(),
                    "first_index": result.first_index,
                    "last_index": result.last_index,
                    "pruned": result.pruned,
                }
                audited = Change(
                    actor=change.actor,
                    action=change.action,
                    details=json.dumps(details, sort_keys=True, separators=(",", ":")),
                )
                target = log_id_for(self._instance)
                self._audit_insert(db, self._audit_next(db, audited, target, now))
        return result

    def conflog_pruned_count(self) -> int:
        """How many entries of the log had their envelope pruned."""
        with self._transaction("count pruned configuration log entries") as db:
            return _pruned_count(db)
