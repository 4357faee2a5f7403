"""The one boundary between the registry's domain types and their protobuf form.

Encoding is deterministic: repeated fields are sorted by id or name and the message is
serialized with ``deterministic=True``, so the same federation state always yields the
same bytes. Decoding refuses anything that does not make a valid
:class:`~registry.model.GlobalConfiguration` with ``globalconf_invalid`` and a message
that names what is wrong; generated types never leave this module.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from registry.errors import ConfigurationError
from registry.model import (
    ApprovedCA,
    ApprovedTSA,
    Federation,
    Gateway,
    GlobalConfiguration,
    GlobalGroup,
    Member,
    ServiceDescriptor,
    Subsystem,
)
from serai.errors import ErrorCode, SeraiError
from serai.identifiers import (
    GatewayId,
    GlobalGroupId,
    MemberId,
    SubsystemId,
    parse_instance,
    parse_subject,
)
from serai_proto.globalconf.v1 import globalconf_pb2 as pb

__all__ = [
    "TrustAnchor",
    "ca_from_proto",
    "ca_to_proto",
    "decode_anchor",
    "decode_configuration",
    "encode_anchor",
    "encode_configuration",
    "tsa_from_proto",
    "tsa_to_proto",
]

#: Largest configuration accepted for decoding (a federation of thousands of members
#: with certificates and descriptors stays far below it).
MAX_CONFIGURATION_BYTES = 64 * 1024 * 1024

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True, kw_only=True)
class TrustAnchor:
    """What a gateway trusts the registry by, distributed out of band.

    ``signing_certificates`` are DER; more than one during a key rollover.
    ``configuration_log_id`` names the registry's configuration log
    (:mod:`registry.conflog`); empty when the registry keeps none (older anchors), and
    then gateways check a log's heads only once they have seen one.
    """

    instance: str
    download_url: str
    signing_certificates: tuple[bytes, ...]
    generated_at: dt.datetime
    configuration_log_id: str = ""

    def __post_init__(self) -> None:
        if not self.signing_certificates:
            raise ConfigurationError("trust anchor holds no configuration signing certificate")


# -- global configuration --------------------------------------------------------------


def encode_configuration(conf: GlobalConfiguration) -> bytes:
    """The deterministic protobuf bytes of ``conf`` (what is signed and shipped)."""
    fed = conf.federation
    by_member: dict[MemberId, list[Subsystem]] = {}
    for sub in fed.subsystems:
        by_member.setdefault(sub.id.member, []).append(sub)
    message = pb.GlobalConfiguration(
        instance_id=fed.instance,
        serial=conf.serial,
        generated_at=_timestamp(conf.generated_at),
        expires_at=_timestamp(conf.expires_at),
        members=[
            pb.Member(
                id=str(m.id),
                name=m.name,
                subsystems=[
                    pb.Subsystem(id=str(s.id), name=s.name)
                    for s in sorted(by_member.get(m.id, []), key=lambda s: str(s.id))
                ],
            )
            for m in sorted(fed.members, key=lambda m: str(m.id))
        ],
        gateways=[
            pb.Gateway(
                id=str(g.id),
                address=g.address,
                authentication_certificate_sha256=g.auth_certificate_sha256,
                subsystems=sorted(str(s) for s in g.subsystems),
            )
            for g in sorted(fed.gateways, key=lambda g: str(g.id))
        ],
        certificate_authorities=[
            ca_to_proto(c) for c in sorted(fed.certificate_authorities, key=lambda c: c.name)
        ],
        timestamping_authorities=[
            tsa_to_proto(t) for t in sorted(fed.timestamping_authorities, key=lambda t: t.name)
        ],
        global_groups=[
            pb.GlobalGroup(
                id=str(g.id),
                description=g.description,
                members=sorted(str(s) for s in g.members),
            )
            for g in sorted(fed.global_groups, key=lambda g: str(g.id))
        ],
        service_descriptors=[
            pb.ServiceDescriptor(
                provider_subsystem=str(d.provider), file_descriptor_set=d.file_descriptor_set
            )
            for d in sorted(fed.service_descriptors, key=lambda d: str(d.provider))
        ],
    )
    return message.SerializeToString(deterministic=True)


def decode_configuration(data: bytes) -> GlobalConfiguration:
    """Parse and check configuration bytes; raises :class:`ConfigurationError`."""
    if len(data) > MAX_CONFIGURATION_BYTES:
        raise ConfigurationError(
            f"configuration is {len(data)} bytes; at most {MAX_CONFIGURATION_BYTES}"
        )
    message = pb.GlobalConfiguration()
    try:
        message.ParseFromString(data)
    except DecodeError as exc:
        raise ConfigurationError(f"configuration is not a GlobalConfiguration: {exc}") from exc
    return _checked("configuration", lambda: _configuration_from_proto(message))


def _configuration_from_proto(m: pb.GlobalConfiguration) -> GlobalConfiguration:
    if not m.HasField("generated_at") or not m.HasField("expires_at"):
        raise ConfigurationError("configuration lacks generated_at or expires_at")
    members = []
    subsystems = []
    for member in m.members:
        member_id = MemberId.parse(member.id)
        members.append(Member(id=member_id, name=member.name))
        for sub in member.subsystems:
            sub_id = SubsystemId.parse(sub.id)
            if sub_id.member != member_id:
                raise ConfigurationError(f"subsystem {sub_id} is listed under member {member_id}")
            subsystems.append(Subsystem(id=sub_id, name=sub.name))
    federation = Federation(
        instance=parse_instance(m.instance_id),
        members=tuple(members),
        subsystems=tuple(subsystems),
        gateways=tuple(
            Gateway(
                id=GatewayId.parse(g.id),
                address=g.address,
                auth_certificate_sha256=g.authentication_certificate_sha256,
                subsystems=frozenset(SubsystemId.parse(s) for s in g.subsystems),
            )
            for g in m.gateways
        ),
        certificate_authorities=tuple(ca_from_proto(c) for c in m.certificate_authorities),
        timestamping_authorities=tuple(tsa_from_proto(t) for t in m.timestamping_authorities),
        global_groups=tuple(
            GlobalGroup(
                id=GlobalGroupId.parse(g.id),
                description=g.description,
                members=frozenset(parse_subject(s) for s in g.members),
            )
            for g in m.global_groups
        ),
        service_descriptors=tuple(
            ServiceDescriptor(
                provider=SubsystemId.parse(d.provider_subsystem),
                file_descriptor_set=d.file_descriptor_set,
            )
            for d in m.service_descriptors
        ),
    )
    return GlobalConfiguration(
        federation=federation,
        serial=m.serial,
        generated_at=_datetime(m.generated_at),
        expires_at=_datetime(m.expires_at),
    )


# -- approved CAs and TSAs (also used by the management API) ---------------------------


def ca_to_proto(ca: ApprovedCA) -> pb.CertificateAuthority:
    """The protobuf form of an approved CA."""
    return pb.CertificateAuthority(
        name=ca.name,
        root_certificate=ca.root_certificate,
        intermediate_certificates=list(ca.intermediate_certificates),
        ocsp_responder_urls=list(ca.ocsp_urls),
    )


def ca_from_proto(m: pb.CertificateAuthority) -> ApprovedCA:
    """An approved CA from its protobuf form."""
    return ApprovedCA(
        name=m.name,
        root_certificate=m.root_certificate,
        intermediate_certificates=tuple(m.intermediate_certificates),
        ocsp_urls=tuple(m.ocsp_responder_urls),
    )


def tsa_to_proto(tsa: ApprovedTSA) -> pb.TimestampingAuthority:
    """The protobuf form of an approved TSA."""
    return pb.TimestampingAuthority(name=tsa.name, url=tsa.url, certificates=list(tsa.certificates))


def tsa_from_proto(m: pb.TimestampingAuthority) -> ApprovedTSA:
    """An approved TSA from its protobuf form."""
    return ApprovedTSA(name=m.name, url=m.url, certificates=tuple(m.certificates))


# -- trust anchor ------------------------------------------------------------------------


def encode_anchor(anchor: TrustAnchor) -> bytes:
    """The deterministic protobuf bytes of a trust anchor file."""
    return pb.TrustAnchor(
        instance_id=anchor.instance,
        download_url=anchor.download_url,
        signing_certificates=list(anchor.signing_certificates),
        generated_at=_timestamp(anchor.generated_at),
        configuration_log_id=anchor.configuration_log_id,
    ).SerializeToString(deterministic=True)


def decode_anchor(data: bytes) -> TrustAnchor:
    """Parse a trust anchor file; raises :class:`ConfigurationError`."""
    message = pb.TrustAnchor()
    try:
        message.ParseFromString(data)
    except DecodeError as exc:
        raise ConfigurationError(f"trust anchor is not a TrustAnchor: {exc}") from exc

    def build() -> TrustAnchor:
        return TrustAnchor(
            instance=parse_instance(message.instance_id),
            download_url=message.download_url,
            signing_certificates=tuple(message.signing_certificates),
            generated_at=_datetime(message.generated_at),
            configuration_log_id=message.configuration_log_id,
        )

    return _checked("trust anchor", build)


# -- helpers -----------------------------------------------------------------------------


def _checked(what: str, build: Callable[[], _T]) -> _T:
    """Run ``build``; any refusal becomes ``globalconf_invalid`` naming ``what``."""
    try:
        return build()
    except ConfigurationError as exc:
        raise ConfigurationError(f"{what}: {exc.message}") from exc
    except SeraiError as exc:
        raise ConfigurationError(
            f"{what}: {exc.message}", code=ErrorCode.GLOBALCONF_INVALID
        ) from exc


def _timestamp(value: dt.datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value.astimezone(dt.UTC))
    return ts


def _datetime(ts: Timestamp) -> dt.datetime:
    try:
        return ts.ToDatetime(tzinfo=dt.UTC)
    except (ValueError, OverflowError) as exc:  # seconds or nanos out of Timestamp's range
        raise ConfigurationError(f"a time is out of range: {exc}") from exc
