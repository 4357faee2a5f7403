"""The registry's domain model and its protobuf codec: round trips, determinism, and a
named refusal for every malformed configuration."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from registry.codec import (
    TrustAnchor,
    decode_anchor,
    decode_configuration,
    encode_anchor,
    encode_configuration,
)
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
from serai.errors import ErrorCode
from serai.identifiers import GatewayId, GlobalGroupId, MemberId, SubsystemId
from serai_proto.globalconf.v1 import globalconf_pb2 as pb

NOW = dt.datetime(2026, 11, 27, 10, 0, tzinfo=dt.UTC)
STC = MemberId.parse("UZ/GOV/STC")
CAD = MemberId.parse("UZ/GOV/CADASTRE")
TAX = SubsystemId.parse("UZ/GOV/STC/tax")
REG = SubsystemId.parse("UZ/GOV/CADASTRE/registry")
GW = GatewayId.parse("UZ/GOV/STC/gw:main")
GROUP = GlobalGroupId.parse("UZ/group:tax-officials")


def federation() -> Federation:
    return Federation(
        instance="UZ",
        members=(Member(id=STC, name="State Tax Committee"), Member(id=CAD, name="Cadastre")),
        subsystems=(Subsystem(id=TAX, name="Tax"), Subsystem(id=REG)),
        gateways=(
            Gateway.with_certificate(
                id=GW, address="gw.stc.uz:5500", auth_certificate=b"cert", subsystems=[TAX]
            ),
        ),
        certificate_authorities=(
            ApprovedCA(name="UZ CA", root_certificate=b"root", ocsp_urls=("http://ocsp/",)),
        ),
        timestamping_authorities=(
            ApprovedTSA(name="UZ TSA", url="http://tsa/", certificates=(b"tsa",)),
        ),
        global_groups=(GlobalGroup(id=GROUP, description="Officials", members=frozenset({TAX})),),
        service_descriptors=(ServiceDescriptor(provider=REG, file_descriptor_set=b"\x0a\x00"),),
    )


def configuration(serial: int = 7) -> GlobalConfiguration:
    return GlobalConfiguration(
        federation=federation(),
        serial=serial,
        generated_at=NOW,
        expires_at=NOW + dt.timedelta(minutes=10),
    )


def test_round_trip() -> None:
    conf = configuration()
    decoded = decode_configuration(encode_configuration(conf))
    assert decoded.serial == 7
    assert decoded.generated_at == NOW
    fed = decoded.federation
    assert fed.members == tuple(sorted(conf.federation.members, key=lambda m: str(m.id)))
    assert {s.id for s in fed.subsystems} == {TAX, REG}
    (gw,) = fed.gateways
    assert gw.auth_certificate_sha256 == hashlib.sha256(b"cert").digest()
    assert gw.auth_certificate == b""  # the configuration publishes only the hash
    assert gw.subsystems == frozenset({TAX})
    assert fed.global_groups == conf.federation.global_groups
    assert fed.certificate_authorities == conf.federation.certificate_authorities
    assert fed.timestamping_authorities == conf.federation.timestamping_authorities
    assert fed.service_descriptors == conf.federation.service_descriptors


def test_encoding_is_deterministic_whatever_the_order() -> None:
    fed = federation()
    shuffled = Federation(
        instance="UZ",
        members=tuple(reversed(fed.members)),
        subsystems=tuple(reversed(fed.subsystems)),
        gateways=fed.gateways,
        certificate_authorities=fed.certificate_authorities,
        timestamping_authorities=fed.timestamping_authorities,
        global_groups=fed.global_groups,
        service_descriptors=fed.service_descriptors,
    )
    a = encode_configuration(configuration())
    b = encode_configuration(
        GlobalConfiguration(
            federation=shuffled,
            serial=7,
            generated_at=NOW,
            expires_at=NOW + dt.timedelta(minutes=10),
        )
    )
    assert a == b
    assert encode_configuration(decode_configuration(a)) == a


Edit = Callable[[pb.GlobalConfiguration], object]


def _mutated(edit: Edit) -> bytes:
    message = pb.GlobalConfiguration()
    message.ParseFromString(encode_configuration(configuration()))
    edit(message)
    return message.SerializeToString()


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        pytest.param(lambda m: setattr(m, "instance_id", "U Z"), "instance", id="bad-instance"),
        pytest.param(lambda m: setattr(m.members[0], "id", "UZ/GOV"), "member id", id="bad-id"),
        pytest.param(
            lambda m: setattr(m.members[0].subsystems[0], "id", "UZ/GOV/STC/tax"),
            "listed under member",
            id="subsystem-under-wrong-member",
        ),
        pytest.param(
            lambda m: m.gateways[0].subsystems.append("UZ/GOV/STC/ghost"),
            "unknown subsystem",
            id="gateway-serves-unknown",
        ),
        pytest.param(
            lambda m: setattr(m.gateways[0], "authentication_certificate_sha256", b"x"),
            "not 32",
            id="short-hash",
        ),
        pytest.param(
            lambda m: setattr(m.gateways[0], "address", "no-port"), "host:port", id="address"
        ),
        pytest.param(
            lambda m: m.global_groups[0].members.append("UZ/GOV/NOBODY"),
            "unknown member",
            id="group-dangling",
        ),
        pytest.param(lambda m: m.members.append(m.members[0]), "listed twice", id="duplicate"),
        pytest.param(lambda m: m.ClearField("expires_at"), "expires_at", id="no-expiry"),
        pytest.param(
            lambda m: setattr(m.expires_at, "seconds", m.generated_at.seconds - 1),
            "not after generated_at",
            id="expires-before-generated",
        ),
        pytest.param(lambda m: setattr(m, "serial", 0), "serial", id="zero-serial"),
        pytest.param(
            lambda m: setattr(m.timestamping_authorities[0], "url", "ftp://x"),
            "http(s) URL",
            id="tsa-url",
        ),
    ],
)
def test_decode_refuses(edit: Edit, fragment: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        decode_configuration(_mutated(edit))
    assert info.value.code is ErrorCode.GLOBALCONF_INVALID
    assert fragment in info.value.message


def test_decode_refuses_garbage() -> None:
    with pytest.raises(ConfigurationError) as info:
        decode_configuration(b"\xff\xff\xff")
    assert info.value.code is ErrorCode.GLOBALCONF_INVALID


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300))
def test_decode_never_raises_anything_else(data: bytes) -> None:
    try:
        decode_configuration(data)
    except ConfigurationError as exc:
        code = exc.code
    else:
        return
    assert code is ErrorCode.GLOBALCONF_INVALID


def test_gateway_serves_only_its_member() -> None:
    with pytest.raises(ConfigurationError) as info:
        Gateway.with_certificate(id=GW, address="h:1", auth_certificate=b"c", subsystems=[REG])
    assert info.value.code is ErrorCode.FAILED_PRECONDITION


def test_anchor_round_trip() -> None:
    anchor = TrustAnchor(
        instance="UZ",
        download_url="http://registry/globalconf/v1/current",
        signing_certificates=(b"a", b"b"),
        generated_at=NOW,
    )
    assert decode_anchor(encode_anchor(anchor)) == anchor


def test_anchor_needs_a_certificate() -> None:
    bare = pb.TrustAnchor(instance_id="UZ", download_url="http://x/").SerializeToString()
    with pytest.raises(ConfigurationError, match="no configuration signing certificate"):
        decode_anchor(bare)


def test_two_gateways_may_not_share_a_certificate() -> None:
    fed = federation()
    twin = Gateway.with_certificate(
        id=GatewayId.parse("UZ/GOV/STC/gw:twin"), address="h:2", auth_certificate=b"cert"
    )
    with pytest.raises(ConfigurationError) as info:
        Federation(
            instance="UZ",
            members=fed.members,
            subsystems=fed.subsystems,
            gateways=(*fed.gateways, twin),
        )
    assert info.value.code is ErrorCode.ALREADY_EXISTS
    assert "authentication certificate" in info.value.message
