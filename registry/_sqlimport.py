"""Importing a whole :class:`~registry.model.Federation` into an empty store.

:func:`_check_federation_import` checks what :class:`Federation` does not check itself
but the single-object calls do (certificates against the federation's own CAs, distinct
roots and certificates, acyclic groups, descriptors); :func:`_insert_federation` writes
every table.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

from registry._sqlchecks import (
    _check_ca,
    _check_descriptor,
    _check_gateway_certificate,
    _check_tsa,
    _TrustedCAs,
)
from registry._sqldialect import _Connection
from registry._sqlerrors import _refuse
from registry._sqlread import _reachable
from registry._sqlwrite import _insert_cas, _insert_tsas
from registry.model import Federation
from serai.errors import ErrorCode
from serai.identifiers import GatewayId, GlobalGroupId


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
