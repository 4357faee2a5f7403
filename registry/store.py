"""The registry's store: the federation's state, its audit log, and the serial counter.

This module defines the contract (:class:`RegistryStore`); ``registry.sqlstore``
implements it for SQLite (the default, embedded) and PostgreSQL (production), with one
test suite for both.

Contract, for every implementation:

* Each change is one transaction: it validates against the current state, applies the
  change, and appends one :class:`AuditEntry` (who, what, when, target, details); either
  all of it is durable when the call returns or none of it happened.
* Validation refuses with :class:`registry.errors.RegistryError` whose code says why and
  whose message names the field: ``invalid_request`` (bad value), ``already_exists``
  (duplicate id or name), ``not_found`` (removing or changing something absent),
  ``failed_precondition`` (a dangling reference: a subsystem of an unknown member, a
  gateway serving another member's subsystem, removing a member that still has
  subsystems or gateways, a gateway certificate that is not from an approved CA, ...).
* :meth:`RegistryStore.federation` returns a consistent snapshot
  (:class:`registry.model.Federation`, whose invariants hold) of one committed state.
* :meth:`RegistryStore.next_serial` returns a value strictly greater than every value it
  returned before, across restarts and across processes sharing the database.
* :meth:`RegistryStore.conflog_append` appends a configuration to the configuration log
  (:mod:`registry.conflog`) in one transaction: the leaf, every perfect-subtree node it
  completes and the signed head of the new size are stored together or not at all,
  appenders are serialised across processes, and a serial is appended at most once.
  Leaves, nodes and heads are never changed afterwards; proofs between any two sizes up
  to :meth:`RegistryStore.conflog_size` come from the stored nodes (``not_found``
  beyond it). A head gets at most one RFC 3161 token
  (:meth:`RegistryStore.conflog_add_timestamp`), never changed once stored; every
  bundle appended carries the largest head that had one at the time, with its token and
  the consistency proof from its size.
* :meth:`RegistryStore.conflog_prune` (retention) drops the envelope bytes of old
  entries and nothing else: leaf hashes, nodes, heads and tokens stay, so every root,
  proof, head and token is unchanged. The newest entry, an entry whose configuration
  has not expired, and an entry no time-stamped head covers are never pruned; reading
  a pruned entry is ``not_found`` saying so (:mod:`registry._sqlconflog`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from registry.conflog import HeadSigner, ProofBundle
from registry.model import ApprovedCA, ApprovedTSA, Federation, Gateway, GlobalGroup, Member
from serai.identifiers import GatewayId, GlobalGroupId, MemberId, Subject, SubsystemId
from serai.treehead import SignedTreeHead

__all__ = ["AuditEntry", "Change", "ConflogPruneResult", "RegistryStore"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEntry:
    """One recorded change. ``sequence`` increases from 1 without gaps."""

    sequence: int
    at: dt.datetime
    actor: str
    action: str
    target: str
    details: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """Who makes a change and why it is recorded: passed to every mutating call.

    ``actor`` is the authenticated caller (a bearer token's ``sub``, or ``local`` for
    the command line on the registry host); ``action`` the operation (``AddMember``);
    ``details`` a canonical JSON text of the request, enough to replay it.
    """

    actor: str
    action: str
    details: str = "{}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ConflogPruneResult:
    """What one :meth:`RegistryStore.conflog_prune` did.

    ``pruned`` envelopes were dropped now, leaf indices ``first_index`` to
    ``last_index`` (``None`` when none). ``protected`` entries appended before the
    cut-off keep their envelope because a rule protects them (the newest entry, an
    unexpired configuration, or no time-stamped head covers them yet, which
    ``timestamped_size``, 0 before the first token, bounds). ``kept_total`` and
    ``pruned_total`` count the whole log's entries after this call.
    """

    before: dt.datetime
    pruned: int
    first_index: int | None
    last_index: int | None
    protected: int
    timestamped_size: int
    kept_total: int
    pruned_total: int


class RegistryStore(Protocol):
    """The registry's persistent state (see the module docstring for the contract)."""

    @property
    def instance(self) -> str:
        """The federation instance the store belongs to (fixed at creation)."""
        ...

    # members and subsystems
    def add_member(self, member: Member, change: Change) -> AuditEntry: ...
    def remove_member(self, member_id: MemberId, change: Change) -> AuditEntry: ...
    def list_members(self) -> Sequence[Member]: ...
    def add_subsystem(self, subsystem_id: SubsystemId, name: str, change: Change) -> AuditEntry: ...
    def remove_subsystem(self, subsystem_id: SubsystemId, change: Change) -> AuditEntry: ...

    # gateways (the store checks the certificate against the approved CAs)
    def add_gateway(self, gateway: Gateway, change: Change) -> AuditEntry: ...
    def remove_gateway(self, gateway_id: GatewayId, change: Change) -> AuditEntry: ...
    def set_gateway_subsystems(
        self, gateway_id: GatewayId, subsystems: frozenset[SubsystemId], change: Change
    ) -> AuditEntry: ...
    def list_gateways(self, member_id: MemberId | None = None) -> Sequence[Gateway]: ...
    def gateway_registered_at(self, gateway_id: GatewayId) -> dt.datetime: ...

    # global groups
    def add_global_group(self, group: GlobalGroup, change: Change) -> AuditEntry: ...
    def remove_global_group(self, group_id: GlobalGroupId, change: Change) -> AuditEntry: ...
    def add_global_group_member(
        self, group_id: GlobalGroupId, subject: Subject, change: Change
    ) -> AuditEntry: ...
    def remove_global_group_member(
        self, group_id: GlobalGroupId, subject: Subject, change: Change
    ) -> AuditEntry: ...
    def list_global_groups(self) -> Sequence[GlobalGroup]: ...

    # trust services
    def add_certificate_authority(self, ca: ApprovedCA, change: Change) -> AuditEntry: ...
    def remove_certificate_authority(self, name: str, change: Change) -> AuditEntry: ...
    def list_certificate_authorities(self) -> Sequence[ApprovedCA]: ...
    def add_timestamping_authority(self, tsa: ApprovedTSA, change: Change) -> AuditEntry: ...
    def remove_timestamping_authority(self, name: str, change: Change) -> AuditEntry: ...
    def list_timestamping_authorities(self) -> Sequence[ApprovedTSA]: ...

    # service descriptors (empty bytes withdraw them)
    def set_service_descriptor(
        self, provider: SubsystemId, file_descriptor_set: bytes, change: Change
    ) -> AuditEntry: ...

    # reading
    def federation(self) -> Federation: ...
    def audit_log(self, *, after_sequence: int = 0, limit: int = 100) -> Sequence[AuditEntry]: ...
    def last_audit_sequence(self) -> int: ...
    def next_serial(self) -> int: ...

    # the configuration log
    def conflog_append(
        self, *, serial: int, envelope: bytes, sign_head: HeadSigner
    ) -> ProofBundle: ...
    def conflog_size(self) -> int: ...
    def conflog_root(self, size: int) -> bytes: ...
    def conflog_consistency(self, old_size: int, new_size: int) -> Sequence[bytes]: ...
    def conflog_head(self, size: int) -> bytes: ...
    def conflog_entry(self, index: int) -> tuple[int, bytes]: ...
    def conflog_add_timestamp(self, tree_size: int, token: bytes) -> bool: ...
    def conflog_newest_head(self) -> SignedTreeHead | None: ...
    def conflog_timestamped_head(self) -> SignedTreeHead | None: ...
    def conflog_prune(self, *, before: dt.datetime, change: Change) -> ConflogPruneResult: ...
    def conflog_pruned_count(self) -> int: ...

    def close(self) -> None: ...
