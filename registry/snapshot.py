"""An immutable, indexed view of one verified global configuration, for gateways.

A :class:`ConfigurationSnapshot` is built once from a :class:`GlobalConfiguration` that
has already been verified (:mod:`registry.client` does that), and answers the questions
a gateway asks on every request with a dictionary or set lookup: which gateways serve a
subsystem, which gateway presents an authentication certificate, which member owns a
subsystem, which CAs and TSAs are approved, which global groups a subject is in.

Guarantees:

1. Immutable: every index is computed in the constructor; attributes cannot be set
   afterwards, and lookups return tuples, frozensets and value objects.
2. Fail closed: a subject the configuration does not list is served by no gateway, owned
   by no member and in no global group (a listed member in a group does not pull in an
   unlisted subsystem id that merely names it).
3. Group membership is the transitive closure: a subsystem is in a group when the group
   lists it or its member, directly or through nested groups, however deep; cycles of
   nested groups are harmless (every group on the cycle holds the union).
4. A configuration that cannot be indexed is refused with ``globalconf_invalid``: two
   gateways with the same authentication certificate (a peer would be ambiguous), or an
   approved CA whose certificates do not parse or whose root is not a CA certificate.

Assumptions: the configuration's own invariants hold (:class:`registry.model.Federation`
checks them when it is built), and its signature, instance, serial and expiry were
checked by the caller.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certs.errors import PKIError
from certs.keys import parse_der_certificate
from certs.validation import TrustStore
from registry.errors import ConfigurationError
from registry.model import (
    ApprovedCA,
    ApprovedTSA,
    Gateway,
    GlobalConfiguration,
    GlobalGroup,
    Member,
    Subsystem,
)
from serai.errors import ErrorCode
from serai.identifiers import GatewayId, GlobalGroupId, MemberId, Subject, SubsystemId

__all__ = ["ConfigurationSnapshot"]

_NO_GROUPS: frozenset[GlobalGroupId] = frozenset()


class ConfigurationSnapshot:
    """The lookups a gateway needs, precomputed from one verified configuration."""

    __slots__ = (
        "_by_auth_hash",
        "_ca_by_der",
        "_configuration",
        "_descriptors",
        "_gateways",
        "_group_closure",
        "_groups",
        "_groups_of",
        "_member_of",
        "_members",
        "_serving",
        "_subsystems",
        "_subsystems_of",
        "_trust_store",
        "_tsa_by_der",
    )

    def __init__(self, configuration: GlobalConfiguration) -> None:
        fed = configuration.federation
        self._configuration = configuration
        self._members: dict[MemberId, Member] = {m.id: m for m in fed.members}
        self._subsystems: dict[SubsystemId, Subsystem] = {s.id: s for s in fed.subsystems}
        self._member_of = _owners(self._members.values(), self._subsystems)
        subsystems_of: dict[MemberId, list[SubsystemId]] = {}
        for sub_id in sorted(self._subsystems):
            subsystems_of.setdefault(self._member_of[sub_id].id, []).append(sub_id)
        self._subsystems_of = {k: tuple(v) for k, v in subsystems_of.items()}
        self._gateways: dict[GatewayId, Gateway] = {g.id: g for g in fed.gateways}
        self._by_auth_hash = _index_auth_hashes(fed.gateways)
        serving: dict[SubsystemId, list[Gateway]] = {}
        for gw in sorted(fed.gateways, key=lambda g: g.id):
            for sub_id in gw.subsystems:
                serving.setdefault(sub_id, []).append(gw)
        self._serving = {k: tuple(v) for k, v in serving.items()}
        self._descriptors = {d.provider: d.file_descriptor_set for d in fed.service_descriptors}
        self._trust_store, self._ca_by_der = _index_cas(fed.certificate_authorities)
        self._tsa_by_der = {t.certificates[0]: t for t in fed.timestamping_authorities}
        self._groups: dict[GlobalGroupId, GlobalGroup] = {g.id: g for g in fed.global_groups}
        self._group_closure = _group_closure(self._groups)
        self._groups_of = _groups_by_subject(self._group_closure, member_of=self._member_of)

    def __setattr__(self, name: str, value: object) -> None:
        if hasattr(self, name):
            raise AttributeError(f"ConfigurationSnapshot is immutable; cannot set {name!r}")
        object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        return (
            f"ConfigurationSnapshot(instance={self.instance!r}, serial={self.serial}, "
            f"members={len(self._members)}, subsystems={len(self._subsystems)}, "
            f"gateways={len(self._gateways)}, groups={len(self._groups)})"
        )

    # -- the configuration itself ---------------------------------------------------------

    @property
    def configuration(self) -> GlobalConfiguration:
        """The configuration this snapshot indexes."""
        return self._configuration

    @property
    def instance(self) -> str:
        """The federation instance, e.g. ``UZ``."""
        return self._configuration.federation.instance

    @property
    def serial(self) -> int:
        """The configuration's serial number."""
        return self._configuration.serial

    @property
    def generated_at(self) -> dt.datetime:
        """When the registry generated the configuration."""
        return self._configuration.generated_at

    @property
    def expires_at(self) -> dt.datetime:
        """After this instant the configuration must not be relied on."""
        return self._configuration.expires_at

    # -- members, subsystems, gateways ------------------------------------------------------

    def member(self, member_id: MemberId) -> Member | None:
        """The listed member ``member_id``, or ``None``."""
        return self._members.get(member_id)

    def subsystem(self, subsystem_id: SubsystemId) -> Subsystem | None:
        """The listed subsystem ``subsystem_id``, or ``None``."""
        return self._subsystems.get(subsystem_id)

    def has_subsystem(self, subsystem_id: SubsystemId) -> bool:
        """Whether ``subsystem_id`` is listed."""
        return subsystem_id in self._subsystems

    def member_of(self, subsystem_id: SubsystemId) -> Member | None:
        """The member owning ``subsystem_id``, or ``None`` when the subsystem is not listed."""
        return self._member_of.get(subsystem_id)

    def subsystems_of(self, member_id: MemberId) -> tuple[SubsystemId, ...]:
        """The listed subsystems of ``member_id``, sorted."""
        return self._subsystems_of.get(member_id, ())

    def gateway(self, gateway_id: GatewayId) -> Gateway | None:
        """The registered gateway ``gateway_id``, or ``None``."""
        return self._gateways.get(gateway_id)

    def gateways_serving(self, subsystem_id: SubsystemId) -> tuple[Gateway, ...]:
        """The gateways serving ``subsystem_id``, sorted by id; empty when none is."""
        return self._serving.get(subsystem_id, ())

    def gateway_by_auth_hash(self, sha256: bytes) -> Gateway | None:
        """The gateway whose authentication certificate has this SHA-256 (of its DER)."""
        return self._by_auth_hash.get(sha256)

    def service_descriptor(self, subsystem_id: SubsystemId) -> bytes | None:
        """The serialized FileDescriptorSet ``subsystem_id`` published, or ``None``."""
        return self._descriptors.get(subsystem_id)

    # -- trust services ---------------------------------------------------------------------

    @property
    def approved_cas(self) -> tuple[ApprovedCA, ...]:
        """The approved certificate authorities."""
        return self._configuration.federation.certificate_authorities

    @property
    def trust_store(self) -> TrustStore:
        """A trust store of every approved root, with the approved intermediates as hints."""
        return self._trust_store

    def ca_for(self, certificate: x509.Certificate | bytes) -> ApprovedCA | None:
        """The approved CA whose root or intermediate is ``certificate`` (DER-exact)."""
        return self._ca_by_der.get(_der(certificate))

    def ocsp_urls_for(self, issuer: x509.Certificate | bytes) -> tuple[str, ...]:
        """The OCSP responder URLs of the approved CA that ``issuer`` (a root or an
        intermediate listed in the configuration) belongs to; empty when none."""
        ca = self._ca_by_der.get(_der(issuer))
        return ca.ocsp_urls if ca is not None else ()

    @property
    def approved_tsas(self) -> tuple[ApprovedTSA, ...]:
        """The approved time-stamping authorities."""
        return self._configuration.federation.timestamping_authorities

    def tsa_for(self, certificate: x509.Certificate | bytes) -> ApprovedTSA | None:
        """The approved TSA whose signing certificate (its first) is ``certificate``."""
        return self._tsa_by_der.get(_der(certificate))

    # -- global groups ----------------------------------------------------------------------

    def group(self, group_id: GlobalGroupId) -> GlobalGroup | None:
        """The global group ``group_id`` as listed, or ``None``."""
        return self._groups.get(group_id)

    def group_closure(self, group_id: GlobalGroupId) -> frozenset[Subject]:
        """Every subject in ``group_id``: listed directly or through nested groups."""
        return self._group_closure.get(group_id, frozenset())

    def groups_of(self, subject: Subject) -> frozenset[GlobalGroupId]:
        """The global groups ``subject`` is in (see the module docstring for the rules)."""
        return self._groups_of.get(subject, _NO_GROUPS)

    def is_member_of_group(self, subject: Subject, group_id: GlobalGroupId) -> bool:
        """Whether ``subject`` is in the global group ``group_id``."""
        return group_id in self._groups_of.get(subject, _NO_GROUPS)


# -- index builders ---------------------------------------------------------------------------


def _index_auth_hashes(gateways: Iterable[Gateway]) -> dict[bytes, Gateway]:
    index: dict[bytes, Gateway] = {}
    for gw in gateways:
        other = index.setdefault(gw.auth_certificate_sha256, gw)
        if other is not gw:
            raise ConfigurationError(
                f"gateways {other.id} and {gw.id} have the same authentication certificate "
                f"(SHA-256 {gw.auth_certificate_sha256.hex()[:16]}...)",
                code=ErrorCode.GLOBALCONF_INVALID,
            )
    return index


def _index_cas(cas: Iterable[ApprovedCA]) -> tuple[TrustStore, dict[bytes, ApprovedCA]]:
    roots: list[x509.Certificate] = []
    intermediates: list[x509.Certificate] = []
    by_der: dict[bytes, ApprovedCA] = {}
    for ca in cas:
        roots.append(_load(ca, ca.root_certificate))
        intermediates.extend(_load(ca, der) for der in ca.intermediate_certificates)
        for der in (ca.root_certificate, *ca.intermediate_certificates):
            by_der.setdefault(der, ca)
    try:
        store = TrustStore(roots=roots, intermediates=intermediates)
    except PKIError as exc:
        raise ConfigurationError(
            f"approved CAs: {exc.message}", code=ErrorCode.GLOBALCONF_INVALID
        ) from exc
    return store, by_der


def _load(ca: ApprovedCA, der: bytes) -> x509.Certificate:
    try:
        return parse_der_certificate(der)
    except ValueError as exc:
        raise ConfigurationError(
            f"a certificate of approved CA {ca.name!r} cannot be parsed: {exc}",
            code=ErrorCode.GLOBALCONF_INVALID,
        ) from exc


def _owners(
    members: Iterable[Member], subsystems: Iterable[SubsystemId]
) -> dict[SubsystemId, Member]:
    """Each listed subsystem's member, matched by parts (``SubsystemId.member`` builds and
    validates a new id on every call, too slow for thousands)."""
    by_parts = {(m.id.instance, m.id.member_class, m.id.member_code): m for m in members}
    return {
        s: by_parts[(s.instance, s.member_class, s.member_code)]
        for s in subsystems  # Federation guarantees every subsystem's member is listed
    }


def _group_closure(
    groups: Mapping[GlobalGroupId, GlobalGroup],
) -> dict[GlobalGroupId, frozenset[Subject]]:
    """Each group's subjects, with nested groups expanded (the nested group ids included).

    A depth-first walk from every group with a visited set: each walk ends whatever the
    cycles, in O(groups + memberships); fine for the tens to hundreds of groups a
    federation has.
    """
    closure: dict[GlobalGroupId, frozenset[Subject]] = {}
    for start in groups:
        seen: set[GlobalGroupId] = {start}
        stack = [start]
        subjects: set[Subject] = set()
        while stack:
            for subject in groups[stack.pop()].members:
                subjects.add(subject)
                if isinstance(subject, GlobalGroupId) and subject not in seen:
                    seen.add(subject)
                    stack.append(subject)
        closure[start] = frozenset(subjects)
    return closure


def _groups_by_subject(
    closure: Mapping[GlobalGroupId, frozenset[Subject]],
    *,
    member_of: Mapping[SubsystemId, Member],
) -> dict[Subject, frozenset[GlobalGroupId]]:
    """The inverted closure: for every listed subject, the groups it is in."""
    direct: dict[Subject, set[GlobalGroupId]] = {}
    for group_id, subjects in closure.items():
        for subject in subjects:
            direct.setdefault(subject, set()).add(group_id)
    # Members and groups named in a group are listed ones (a Federation invariant); a
    # subsystem is in its own groups and in those of its member.
    result: dict[Subject, frozenset[GlobalGroupId]] = {
        subject: frozenset(groups)
        for subject, groups in direct.items()
        if not isinstance(subject, SubsystemId)
    }
    empty: set[GlobalGroupId] = set()
    for sub_id, member in member_of.items():
        own = direct.get(sub_id, empty)
        via_member = direct.get(member.id, empty)
        if own or via_member:
            result[sub_id] = frozenset(own | via_member)
    return result


def _der(certificate: x509.Certificate | bytes) -> bytes:
    if isinstance(certificate, bytes):
        return certificate
    return certificate.public_bytes(serialization.Encoding.DER)
