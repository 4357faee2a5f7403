"""The federation as the registry holds it and as the global configuration publishes it.

Immutable value objects; each checks its own invariants when built, so a configuration
that decodes into these types is well-formed (references across objects are checked by
:class:`Federation`). The protobuf form lives in :mod:`registry.codec`, the one boundary
where generated types are touched.

Invariants of a :class:`Federation`:

* ids are unique within their kind (members, subsystems, gateways, groups), CA and TSA
  names are unique, and no two gateways share an authentication certificate;
* every subsystem belongs to a listed member, every gateway's member is listed, and a
  gateway serves only listed subsystems of its own member;
* every member of a global group is a listed subsystem, a listed member, or (for a
  nested group) a listed group; a service descriptor names a listed subsystem;
* everything is of the federation's instance.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from registry.errors import ConfigurationError
from serai.errors import ErrorCode
from serai.identifiers import GatewayId, GlobalGroupId, MemberId, Subject, SubsystemId

__all__ = [
    "ApprovedCA",
    "ApprovedTSA",
    "Federation",
    "Gateway",
    "GlobalConfiguration",
    "GlobalGroup",
    "Member",
    "ServiceDescriptor",
    "Subsystem",
    "check_address",
    "check_name",
]

#: Longest free-text name or description, in characters.
MAX_NAME_CHARS = 255


def check_name(what: str, value: str, *, allow_empty: bool = False) -> str:
    """``value`` as a display name: at most 255 characters, no control characters."""
    if not value and not allow_empty:
        raise ConfigurationError(f"{what} is empty", code=ErrorCode.INVALID_REQUEST)
    if len(value) > MAX_NAME_CHARS:
        raise ConfigurationError(
            f"{what} is {len(value)} characters; at most {MAX_NAME_CHARS}",
            code=ErrorCode.INVALID_REQUEST,
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ConfigurationError(
            f"{what} contains a control character", code=ErrorCode.INVALID_REQUEST
        )
    return value


def check_address(what: str, value: str) -> str:
    """``value`` as ``host:port`` (``[v6]:port``), port 1..65535."""
    host, sep, port = value.rpartition(":")
    if (
        not sep
        or not host
        or not port.isdigit()
        or not 0 < int(port) < 65536
        or len(value) > MAX_NAME_CHARS
        or any(c.isspace() for c in value)
    ):
        raise ConfigurationError(
            f"{what} must be host:port with a port from 1 to 65535, got {value[:80]!r}",
            code=ErrorCode.INVALID_REQUEST,
        )
    return value


@dataclass(frozen=True, slots=True, kw_only=True, order=True)
class Member:
    """A member (agency) and its display name."""

    id: MemberId
    name: str

    def __post_init__(self) -> None:
        check_name(f"name of member {self.id}", self.name)


@dataclass(frozen=True, slots=True, kw_only=True, order=True)
class Subsystem:
    """A subsystem (an information system of a member)."""

    id: SubsystemId
    name: str = ""

    def __post_init__(self) -> None:
        check_name(f"name of subsystem {self.id}", self.name, allow_empty=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class Gateway:
    """A gateway: its peer address, authentication certificate and served subsystems.

    The registry holds the whole certificate (``auth_certificate``, DER); the global
    configuration publishes only its SHA-256 (``auth_certificate_sha256``), so a gateway
    decoded from a configuration has ``auth_certificate`` empty.
    """

    id: GatewayId
    address: str
    auth_certificate_sha256: bytes
    subsystems: frozenset[SubsystemId] = frozenset()
    auth_certificate: bytes = b""

    def __post_init__(self) -> None:
        check_address(f"address of gateway {self.id}", self.address)
        if len(self.auth_certificate_sha256) != 32:
            raise ConfigurationError(
                f"authentication certificate hash of gateway {self.id} is "
                f"{len(self.auth_certificate_sha256)} bytes, not 32",
                code=ErrorCode.INVALID_REQUEST,
            )
        if (
            self.auth_certificate
            and hashlib.sha256(self.auth_certificate).digest() != self.auth_certificate_sha256
        ):
            raise ConfigurationError(
                f"authentication certificate hash of gateway {self.id} does not match it",
                code=ErrorCode.INVALID_REQUEST,
            )
        for sub in self.subsystems:
            if sub.member != self.id.member:
                raise ConfigurationError(
                    f"gateway {self.id} cannot serve {sub}: a gateway serves only its own "
                    f"member's subsystems",
                    code=ErrorCode.FAILED_PRECONDITION,
                )

    @classmethod
    def with_certificate(
        cls,
        *,
        id: GatewayId,
        address: str,
        auth_certificate: bytes,
        subsystems: Iterable[SubsystemId] = (),
    ) -> Gateway:
        """A gateway as registered, from its DER authentication certificate."""
        return cls(
            id=id,
            address=address,
            auth_certificate=auth_certificate,
            auth_certificate_sha256=hashlib.sha256(auth_certificate).digest(),
            subsystems=frozenset(subsystems),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class GlobalGroup:
    """A named set of subjects (subsystems, members, other groups), for access rights."""

    id: GlobalGroupId
    description: str = ""
    members: frozenset[Subject] = frozenset()

    def __post_init__(self) -> None:
        check_name(f"description of group {self.id}", self.description, allow_empty=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovedCA:
    """A certificate authority whose certificates the federation trusts.

    ``root_certificate`` and ``intermediate_certificates`` are DER; ``ocsp_urls`` are the
    responders gateways ask about certificates it issued.
    """

    name: str
    root_certificate: bytes
    intermediate_certificates: tuple[bytes, ...] = ()
    ocsp_urls: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_name("CA name", self.name)
        if not self.root_certificate:
            raise ConfigurationError(
                f"CA {self.name!r} has no root certificate", code=ErrorCode.INVALID_REQUEST
            )
        for url in self.ocsp_urls:
            _check_url(f"OCSP URL of CA {self.name!r}", url)


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovedTSA:
    """A time-stamping authority the federation trusts; ``certificates`` are DER, the
    TSA's own certificate first."""

    name: str
    url: str
    certificates: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        check_name("TSA name", self.name)
        _check_url(f"URL of TSA {self.name!r}", self.url)
        if not self.certificates:
            raise ConfigurationError(
                f"TSA {self.name!r} has no certificate", code=ErrorCode.INVALID_REQUEST
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceDescriptor:
    """The services a provider subsystem offers, as a serialized FileDescriptorSet."""

    provider: SubsystemId
    file_descriptor_set: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Federation:
    """Everything a global configuration publishes, consistent (see module docstring)."""

    instance: str
    members: tuple[Member, ...] = ()
    subsystems: tuple[Subsystem, ...] = ()
    gateways: tuple[Gateway, ...] = ()
    certificate_authorities: tuple[ApprovedCA, ...] = ()
    timestamping_authorities: tuple[ApprovedTSA, ...] = ()
    global_groups: tuple[GlobalGroup, ...] = ()
    service_descriptors: tuple[ServiceDescriptor, ...] = ()

    def __post_init__(self) -> None:
        _check_federation(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class GlobalConfiguration:
    """One published configuration: the federation at a serial, with its validity."""

    federation: Federation
    serial: int
    generated_at: dt.datetime
    expires_at: dt.datetime

    def __post_init__(self) -> None:
        if self.serial < 1:
            raise ConfigurationError(f"serial {self.serial} is not positive")
        for name, value in (("generated_at", self.generated_at), ("expires_at", self.expires_at)):
            if value.tzinfo is None:
                raise ConfigurationError(f"{name} has no time zone")
        if self.expires_at <= self.generated_at:
            raise ConfigurationError("expires_at is not after generated_at")

    @property
    def instance(self) -> str:
        return self.federation.instance


def _check_url(what: str, url: str) -> None:
    if not (url.startswith(("http://", "https://")) and len(url) <= 2048) or any(
        c.isspace() for c in url
    ):
        raise ConfigurationError(
            f"{what} must be an http(s) URL, got {url[:80]!r}", code=ErrorCode.INVALID_REQUEST
        )


def _unique(what: str, keys: Iterable[object]) -> set[object]:
    seen: set[object] = set()
    for key in keys:
        if key in seen:
            raise ConfigurationError(f"{what} {key} is listed twice", code=ErrorCode.ALREADY_EXISTS)
        seen.add(key)
    return seen


def _check_federation(fed: Federation) -> None:
    def dangling(text: str) -> ConfigurationError:
        return ConfigurationError(text, code=ErrorCode.FAILED_PRECONDITION)

    members = _unique("member", (m.id for m in fed.members))
    subsystems = _unique("subsystem", (s.id for s in fed.subsystems))
    _unique("gateway", (g.id for g in fed.gateways))
    _unique(
        "gateway authentication certificate SHA-256",
        (g.auth_certificate_sha256.hex() for g in fed.gateways),
    )
    groups = _unique("global group", (g.id for g in fed.global_groups))
    _unique("CA", (c.name for c in fed.certificate_authorities))
    _unique("TSA", (t.name for t in fed.timestamping_authorities))
    _unique("service descriptor of", (d.provider for d in fed.service_descriptors))
    for member_id in members:
        assert isinstance(member_id, MemberId)
        if member_id.instance != fed.instance:
            raise ConfigurationError(
                f"member {member_id} is not of instance {fed.instance}",
                code=ErrorCode.INVALID_REQUEST,
            )
    for sub in fed.subsystems:
        if sub.id.member not in members:
            raise dangling(f"subsystem {sub.id} belongs to unknown member {sub.id.member}")
    for gw in fed.gateways:
        if gw.id.member not in members:
            raise dangling(f"gateway {gw.id} belongs to unknown member {gw.id.member}")
        for served in gw.subsystems:
            if served not in subsystems:
                raise dangling(f"gateway {gw.id} serves unknown subsystem {served}")
    for group in fed.global_groups:
        if group.id.instance != fed.instance:
            raise ConfigurationError(
                f"global group {group.id} is not of instance {fed.instance}",
                code=ErrorCode.INVALID_REQUEST,
            )
        for subject in group.members:
            if subject not in members and subject not in subsystems and subject not in groups:
                raise dangling(f"global group {group.id} has unknown member {subject}")
    for desc in fed.service_descriptors:
        if desc.provider not in subsystems:
            raise dangling(f"service descriptor names unknown subsystem {desc.provider}")
