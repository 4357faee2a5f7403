"""Reading the registry's tables back into :mod:`registry.model` objects.

Each reader runs inside a transaction the store opened; a :class:`_SubjectParser` shared
across the readers of one snapshot parses each stored id once.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Final

from registry._sqldialect import _Connection
from registry.model import ApprovedCA, ApprovedTSA, Gateway, GlobalGroup, Member, Subsystem
from serai.identifiers import (
    GatewayId,
    GlobalGroupId,
    MemberId,
    Subject,
    SubsystemId,
    parse_subject,
)


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
