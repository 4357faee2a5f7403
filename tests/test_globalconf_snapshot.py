"""registry.snapshot: every lookup, the group closure (nesting, cycles), and edge cases."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from certs.keys import generate_private_key
from certs.pkidir import PKIDirectory
from certs.profiles import Profile
from registry import snapshot as snapshot_module
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
from registry.snapshot import ConfigurationSnapshot
from serai.errors import ErrorCode
from serai.identifiers import GatewayId, GlobalGroupId, MemberId, Subject

NOW = dt.datetime(2026, 11, 27, 10, 0, tzinfo=dt.UTC)

STC = MemberId.parse("UZ/GOV/STC")
CADASTRE = MemberId.parse("UZ/GOV/CADASTRE")
MINJUST = MemberId.parse("UZ/GOV/MINJUST")
LONER = MemberId.parse("UZ/COM/LONER")
TAX = STC.subsystem("tax")
TAX_ARCHIVE = STC.subsystem("archive")
REGISTRY = CADASTRE.subsystem("registry")
PROPERTY = MINJUST.subsystem("property")
LONELY = LONER.subsystem("lonely")
GW_STC_A = STC.gateway("a")
GW_STC_B = STC.gateway("b")
GW_CADASTRE = CADASTRE.gateway("main")
GW_MINJUST = MINJUST.gateway("main")

G_TAX = GlobalGroupId.parse("UZ/group:tax")
G_STATE = GlobalGroupId.parse("UZ/group:state")
G_ALL = GlobalGroupId.parse("UZ/group:all")
G_PING = GlobalGroupId.parse("UZ/group:ping")
G_PONG = GlobalGroupId.parse("UZ/group:pong")
G_SELF = GlobalGroupId.parse("UZ/group:self")
G_EMPTY = GlobalGroupId.parse("UZ/group:empty")


def _hash(n: int) -> bytes:
    return hashlib.sha256(f"auth-{n}".encode()).digest()


@dataclasses.dataclass(frozen=True)
class Trust:
    root_der: bytes
    issuing_der: bytes
    tsa_der: bytes


@pytest.fixture(scope="module")
def trust(tmp_path_factory: pytest.TempPathFactory) -> Trust:
    pki = PKIDirectory.init(tmp_path_factory.mktemp("pki") / "pki", instance="UZ")
    der = serialization.Encoding.DER
    _, tsa_chain = pki.tsa_signer()
    return Trust(
        root_der=pki.root_certificate().public_bytes(der),
        issuing_der=pki.issuing_ca().certificate.public_bytes(der),
        tsa_der=tsa_chain[0].public_bytes(der),
    )


def _federation(trust: Trust, **changes: object) -> Federation:
    fed = Federation(
        instance="UZ",
        members=(
            Member(id=STC, name="State Tax Committee"),
            Member(id=CADASTRE, name="Cadastre Agency"),
            Member(id=MINJUST, name="Ministry of Justice"),
            Member(id=LONER, name="Lone Company"),
        ),
        subsystems=(
            Subsystem(id=TAX, name="tax database"),
            Subsystem(id=TAX_ARCHIVE),
            Subsystem(id=REGISTRY),
            Subsystem(id=PROPERTY),
            Subsystem(id=LONELY),
        ),
        gateways=(
            Gateway(
                id=GW_STC_B,
                address="10.0.0.2:5500",
                auth_certificate_sha256=_hash(2),
                subsystems=frozenset({TAX}),
            ),
            Gateway(
                id=GW_STC_A,
                address="10.0.0.1:5500",
                auth_certificate_sha256=_hash(1),
                subsystems=frozenset({TAX, TAX_ARCHIVE}),
            ),
            Gateway(
                id=GW_CADASTRE,
                address="10.0.0.3:5500",
                auth_certificate_sha256=_hash(3),
                subsystems=frozenset({REGISTRY}),
            ),
            Gateway(
                id=GW_MINJUST,
                address="10.0.0.4:5500",
                auth_certificate_sha256=_hash(4),
                subsystems=frozenset({PROPERTY}),
            ),
        ),
        certificate_authorities=(
            ApprovedCA(
                name="UZ Root",
                root_certificate=trust.root_der,
                intermediate_certificates=(trust.issuing_der,),
                ocsp_urls=("http://ocsp.uz.example/", "http://ocsp2.uz.example/"),
            ),
        ),
        timestamping_authorities=(
            ApprovedTSA(name="UZ TSA", url="http://tsa.uz.example/", certificates=(trust.tsa_der,)),
        ),
        global_groups=(
            # tax lists a subsystem; state lists members and nests tax; all nests state.
            GlobalGroup(id=G_TAX, members=frozenset({TAX})),
            GlobalGroup(id=G_STATE, members=frozenset({CADASTRE, MINJUST, G_TAX})),
            GlobalGroup(id=G_ALL, members=frozenset({G_STATE, LONELY})),
            # ping and pong nest each other; self nests itself.
            GlobalGroup(id=G_PING, members=frozenset({G_PONG, STC})),
            GlobalGroup(id=G_PONG, members=frozenset({G_PING, REGISTRY})),
            GlobalGroup(id=G_SELF, members=frozenset({G_SELF, PROPERTY})),
            GlobalGroup(id=G_EMPTY),
        ),
        service_descriptors=(
            ServiceDescriptor(provider=REGISTRY, file_descriptor_set=b"\x0a\x03abc"),
        ),
    )
    return dataclasses.replace(fed, **changes)  # type: ignore[arg-type]


def _configuration(fed: Federation, serial: int = 7) -> GlobalConfiguration:
    return GlobalConfiguration(
        federation=fed,
        serial=serial,
        generated_at=NOW,
        expires_at=NOW + dt.timedelta(minutes=10),
    )


@pytest.fixture(scope="module")
def snap(trust: Trust) -> ConfigurationSnapshot:
    return ConfigurationSnapshot(_configuration(_federation(trust)))


def test_public_surface() -> None:
    assert set(snapshot_module.__all__) == {"ConfigurationSnapshot"}


def test_header_fields(snap: ConfigurationSnapshot) -> None:
    assert snap.instance == "UZ"
    assert snap.serial == 7
    assert snap.generated_at == NOW
    assert snap.expires_at == NOW + dt.timedelta(minutes=10)
    assert snap.configuration.federation.instance == "UZ"
    assert "serial=7" in repr(snap)


def test_is_immutable(snap: ConfigurationSnapshot) -> None:
    with pytest.raises(AttributeError):
        snap._members = {}
    with pytest.raises(AttributeError):
        snap.anything = 1


def test_gateways_serving_sorted_and_empty_for_unknown(snap: ConfigurationSnapshot) -> None:
    assert [g.id for g in snap.gateways_serving(TAX)] == [GW_STC_A, GW_STC_B]
    assert [g.id for g in snap.gateways_serving(TAX_ARCHIVE)] == [GW_STC_A]
    assert [g.id for g in snap.gateways_serving(REGISTRY)] == [GW_CADASTRE]
    assert snap.gateways_serving(LONELY) == ()  # listed but served by nobody
    assert snap.gateways_serving(STC.subsystem("ghost")) == ()


def test_gateway_by_id_and_by_auth_hash(snap: ConfigurationSnapshot) -> None:
    gw = snap.gateway(GW_CADASTRE)
    assert gw is not None
    assert gw.address == "10.0.0.3:5500"
    assert snap.gateway(CADASTRE.gateway("other")) is None
    found = snap.gateway_by_auth_hash(_hash(2))
    assert found is not None
    assert found.id == GW_STC_B
    assert snap.gateway_by_auth_hash(_hash(99)) is None
    assert snap.gateway_by_auth_hash(b"") is None


def test_members_and_subsystems(snap: ConfigurationSnapshot) -> None:
    owner = snap.member_of(TAX)
    assert owner is not None
    assert owner.name == "State Tax Committee"
    assert snap.member_of(STC.subsystem("ghost")) is None  # listed member, unlisted subsystem
    assert snap.member_of(MemberId.parse("UZ/GOV/NOBODY").subsystem("x")) is None
    member = snap.member(MINJUST)
    assert member is not None
    assert member.name == "Ministry of Justice"
    assert snap.member(MemberId.parse("UZ/GOV/NOBODY")) is None
    sub = snap.subsystem(TAX)
    assert sub is not None
    assert sub.name == "tax database"
    assert snap.subsystem(STC.subsystem("ghost")) is None
    assert snap.has_subsystem(PROPERTY)
    assert not snap.has_subsystem(STC.subsystem("ghost"))
    assert snap.subsystems_of(STC) == (TAX_ARCHIVE, TAX)
    assert snap.subsystems_of(MemberId.parse("UZ/GOV/NOBODY")) == ()


def test_service_descriptor(snap: ConfigurationSnapshot) -> None:
    assert snap.service_descriptor(REGISTRY) == b"\x0a\x03abc"
    assert snap.service_descriptor(TAX) is None


def test_cas_trust_store_and_ocsp_urls(snap: ConfigurationSnapshot, trust: Trust) -> None:
    assert [c.name for c in snap.approved_cas] == ["UZ Root"]
    store = snap.trust_store
    assert [r.public_bytes(serialization.Encoding.DER) for r in store.roots] == [trust.root_der]
    assert [i.public_bytes(serialization.Encoding.DER) for i in store.intermediates] == [
        trust.issuing_der
    ]
    urls = ("http://ocsp.uz.example/", "http://ocsp2.uz.example/")
    assert snap.ocsp_urls_for(trust.issuing_der) == urls
    assert snap.ocsp_urls_for(store.intermediates[0]) == urls  # a Certificate works too
    assert snap.ocsp_urls_for(store.roots[0]) == urls
    assert snap.ocsp_urls_for(trust.tsa_der) == ()
    ca = snap.ca_for(trust.root_der)
    assert ca is not None
    assert ca.name == "UZ Root"
    assert snap.ca_for(b"not a certificate") is None


def test_tsas(snap: ConfigurationSnapshot, trust: Trust) -> None:
    assert [t.name for t in snap.approved_tsas] == ["UZ TSA"]
    tsa = snap.tsa_for(trust.tsa_der)
    assert tsa is not None
    assert tsa.url == "http://tsa.uz.example/"
    assert snap.tsa_for(trust.root_der) is None


GROUP_CASES: list[tuple[str, Subject, GlobalGroupId, bool]] = [
    ("subsystem listed directly", TAX, G_TAX, True),
    ("sibling subsystem not listed", TAX_ARCHIVE, G_TAX, False),
    ("subsystem via its member", REGISTRY, G_STATE, True),
    ("subsystem via nested group", TAX, G_STATE, True),
    ("subsystem via two levels of nesting", TAX, G_ALL, True),
    ("member via nesting", CADASTRE, G_ALL, True),
    ("member not in group because one subsystem is", STC, G_TAX, False),
    ("nested group is a member", G_TAX, G_ALL, True),
    ("outer group is not in inner", G_ALL, G_TAX, False),
    ("group not in itself without a cycle", G_TAX, G_TAX, False),
    ("cycle: member of ping in pong", STC, G_PONG, True),
    ("cycle: subsystem of pong in ping", REGISTRY, G_PING, True),
    ("cycle: subsystem via member through cycle", TAX_ARCHIVE, G_PONG, True),
    ("cycle: group in itself", G_PING, G_PING, True),
    ("self-nesting group", PROPERTY, G_SELF, True),
    ("unrelated subsystem", LONELY, G_STATE, False),
    ("unlisted subsystem of a listed member", CADASTRE.subsystem("ghost"), G_STATE, False),
    ("unknown group", TAX, GlobalGroupId.parse("UZ/group:nope"), False),
    ("empty group", TAX, G_EMPTY, False),
]


@pytest.mark.parametrize(
    ("subject", "group", "expected"),
    [pytest.param(s, g, e, id=name) for name, s, g, e in GROUP_CASES],
)
def test_is_member_of_group(
    snap: ConfigurationSnapshot, subject: Subject, group: GlobalGroupId, expected: bool
) -> None:
    assert snap.is_member_of_group(subject, group) is expected
    assert (group in snap.groups_of(subject)) is expected


def test_groups_of(snap: ConfigurationSnapshot) -> None:
    assert snap.groups_of(TAX) == {G_TAX, G_STATE, G_ALL, G_PING, G_PONG}
    assert snap.groups_of(TAX_ARCHIVE) == {G_PING, G_PONG}
    assert snap.groups_of(PROPERTY) == {G_STATE, G_ALL, G_SELF}
    assert snap.groups_of(LONELY) == {G_ALL}
    assert snap.groups_of(G_STATE) == {G_ALL}
    assert snap.groups_of(LONER) == frozenset()
    assert snap.groups_of(STC.subsystem("ghost")) == frozenset()


def test_group_and_closure(snap: ConfigurationSnapshot) -> None:
    group = snap.group(G_STATE)
    assert group is not None
    assert group.members == {CADASTRE, MINJUST, G_TAX}
    assert snap.group(GlobalGroupId.parse("UZ/group:nope")) is None
    assert snap.group_closure(G_ALL) == {G_STATE, LONELY, CADASTRE, MINJUST, G_TAX, TAX}
    assert snap.group_closure(G_PING) == {G_PING, G_PONG, STC, REGISTRY}
    assert snap.group_closure(G_EMPTY) == frozenset()


def test_long_nesting_chain_and_ring() -> None:
    """A chain of 200 nested groups closed into a ring: every group holds everything."""
    member = MemberId.parse("UZ/GOV/M")
    sub = member.subsystem("s")
    ids = [GlobalGroupId.parse(f"UZ/group:g{i}") for i in range(200)]
    groups = tuple(
        GlobalGroup(
            id=gid,
            members=frozenset({ids[(i + 1) % len(ids)]} | ({sub} if i == 199 else set())),
        )
        for i, gid in enumerate(ids)
    )
    fed = Federation(
        instance="UZ",
        members=(Member(id=member, name="M"),),
        subsystems=(Subsystem(id=sub),),
        global_groups=groups,
    )
    snap = ConfigurationSnapshot(_configuration(fed))
    assert snap.groups_of(sub) == frozenset(ids)
    assert all(snap.is_member_of_group(ids[0], gid) for gid in ids)


def test_empty_federation() -> None:
    snap = ConfigurationSnapshot(_configuration(Federation(instance="UZ")))
    assert snap.approved_cas == ()
    assert snap.approved_tsas == ()
    assert snap.trust_store.roots == ()
    assert snap.gateways_serving(TAX) == ()
    assert snap.gateway_by_auth_hash(_hash(1)) is None
    assert snap.gateway(GW_STC_A) is None
    assert snap.member_of(TAX) is None
    assert snap.member(STC) is None
    assert snap.subsystem(TAX) is None
    assert not snap.has_subsystem(TAX)
    assert snap.groups_of(TAX) == frozenset()
    assert not snap.is_member_of_group(TAX, G_TAX)
    assert snap.service_descriptor(TAX) is None
    assert snap.ocsp_urls_for(b"x") == ()
    assert snap.tsa_for(b"x") is None


def test_refuses_two_gateways_with_one_auth_certificate(trust: Trust) -> None:
    fed = _federation(trust)
    clash = dataclasses.replace(
        fed.gateways[0], id=STC.gateway("c"), auth_certificate_sha256=_hash(1)
    )
    # The federation itself refuses it (the snapshot checks again, as defence in depth).
    with pytest.raises(ConfigurationError) as info:
        ConfigurationSnapshot(_configuration(_federation(trust, gateways=(*fed.gateways, clash))))
    assert info.value.code is ErrorCode.ALREADY_EXISTS
    assert "authentication certificate" in info.value.message


@pytest.mark.parametrize(
    "ca",
    [
        pytest.param(ApprovedCA(name="junk", root_certificate=b"\x30\x03junk"), id="junk-root"),
        pytest.param("leaf-root", id="root-not-a-ca"),
        pytest.param("junk-intermediate", id="junk-intermediate"),
    ],
)
def test_refuses_unusable_approved_ca(trust: Trust, tmp_path: Path, ca: ApprovedCA | str) -> None:
    if ca == "leaf-root":
        pki = PKIDirectory.init(tmp_path / "pki", instance="UZ")
        leaf = pki.issuing_ca().issue(
            Profile.CONFIGURATION_SIGNING, "not a CA", generate_private_key().public_key()
        )
        ca = ApprovedCA(name="leaf", root_certificate=leaf.public_bytes(serialization.Encoding.DER))
    elif ca == "junk-intermediate":
        ca = ApprovedCA(
            name="junk", root_certificate=trust.root_der, intermediate_certificates=(b"junk",)
        )
    assert isinstance(ca, ApprovedCA)
    with pytest.raises(ConfigurationError) as info:
        ConfigurationSnapshot(_configuration(_federation(trust, certificate_authorities=(ca,))))
    assert info.value.code is ErrorCode.GLOBALCONF_INVALID


def test_lookups_by_parsed_ids(snap: ConfigurationSnapshot) -> None:
    """Ids parsed from text find the same entries as ids built in code."""
    assert snap.gateway(GatewayId.parse("UZ/GOV/STC/gw:a")) is not None
    assert snap.groups_of(MemberId.parse("UZ/GOV/STC")) == {G_PING, G_PONG}
