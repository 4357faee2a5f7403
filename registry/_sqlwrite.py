"""Writing helpers for the store's single-object changes: reference checks and inserts.

They run inside the store's write transaction, after the change's own checks.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from registry._sqlchecks import _sha256
from registry._sqldialect import _Connection
from registry._sqlerrors import _refuse
from registry.model import ApprovedCA, ApprovedTSA
from serai.errors import ErrorCode
from serai.identifiers import GatewayId, GlobalGroupId, MemberId, Subject, SubsystemId


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
