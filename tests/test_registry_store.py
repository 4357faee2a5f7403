"""registry.sqlstore: one suite, run against SQLite and PostgreSQL.

Every refusal rule has a named case (code and a fragment of the message); the happy
paths, the audit log, serials, reopening, concurrency and a federation at scale are
checked on both backends with a real development PKI.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.protobuf.descriptor_pb2 import FileDescriptorProto, FileDescriptorSet

from certs.ca import CertificateAuthority
from certs.keys import KeyAlgorithm, generate_private_key, load_certificate_chain
from certs.pkidir import PKIDirectory
from certs.profiles import Profile
from registry import sqlstore
from registry.errors import RegistryError
from registry.model import (
    ApprovedCA,
    ApprovedTSA,
    Federation,
    Gateway,
    GlobalGroup,
    Member,
    ServiceDescriptor,
    Subsystem,
)
from registry.sqlstore import SqlRegistryStore
from registry.store import AuditEntry, Change, RegistryStore
from serai.errors import ErrorCode
from serai.identifiers import GatewayId, GlobalGroupId, MemberId, Subject, SubsystemId
from tests.pgutil import fresh_database

DER = serialization.Encoding.DER
DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
CHANGE = Change(actor="alice", action="Test", details='{"k":1}')

STC = MemberId.parse("UZ/GOV/STC")
CADASTRE = MemberId.parse("UZ/GOV/CADASTRE")
ACME = MemberId.parse("UZ/COM/ACME")
MOF = MemberId.parse("UZ/GOV/MOF")
TAX = STC.subsystem("tax")
REPORTS = STC.subsystem("reports")
API = STC.subsystem("api")
REGISTRY = CADASTRE.subsystem("registry")
GW_MAIN = STC.gateway("main")
GW_ACME = ACME.gateway("1")
OFFICIALS = GlobalGroupId.parse("UZ/group:officials")
ALL = GlobalGroupId.parse("UZ/group:all")


def test_public_surface() -> None:
    assert sqlstore.__all__ == ["SqlRegistryStore"]


# -- PKI (module-scoped: issuing is cheap, but not free) ----------------------------------


@dataclass
class Pki:
    """A development PKI and certificates issued from it, plus an unapproved one."""

    directory: PKIDirectory
    ca: ApprovedCA
    tsa: ApprovedTSA
    issuing: CertificateAuthority
    other_ca: ApprovedCA
    other_issuing: CertificateAuthority
    certs: dict[str, bytes] = field(default_factory=dict)

    def auth(self, subject: str, *, issuing: CertificateAuthority | None = None) -> bytes:
        """A fresh DER auth certificate for gateway ``subject``."""
        key = generate_private_key(KeyAlgorithm.EC_P256)
        cert = (issuing or self.issuing).issue(Profile.AUTH, subject, key.public_key())
        return cert.public_bytes(DER)

    def cert(self, subject: str) -> bytes:
        """The (one, cached) auth certificate for gateway ``subject``."""
        if subject not in self.certs:
            self.certs[subject] = self.auth(subject)
        return self.certs[subject]


def _approved_ca(directory: PKIDirectory, name: str) -> ApprovedCA:
    return ApprovedCA(
        name=name,
        root_certificate=directory.root_certificate().public_bytes(DER),
        intermediate_certificates=(
            load_certificate_chain(directory.issuing_cert)[0].public_bytes(DER),
        ),
        ocsp_urls=(directory.settings().ocsp_url,),
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    base = tmp_path_factory.mktemp("pki")
    directory = PKIDirectory.init(base / "pki", instance="UZ")
    other = PKIDirectory.init(base / "other", instance="UZ")
    tsa_chain = load_certificate_chain(directory.tsa_cert)
    return Pki(
        directory=directory,
        ca=_approved_ca(directory, "dev"),
        tsa=ApprovedTSA(
            name="dev-tsa",
            url=directory.settings().tsa_url,
            certificates=tuple(c.public_bytes(DER) for c in tsa_chain),
        ),
        issuing=directory.issuing_ca(),
        other_ca=_approved_ca(other, "other"),
        other_issuing=other.issuing_ca(),
    )


# -- backends ----------------------------------------------------------------------------


class Clock:
    """A clock the test moves; starts at the real time (certificates are valid now)."""

    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC).replace(microsecond=0)

    def __call__(self) -> dt.datetime:
        self.now += dt.timedelta(seconds=1)
        return self.now


@dataclass
class Backend:
    name: str
    opener: Callable[[str, Callable[[], dt.datetime] | None], SqlRegistryStore]
    clock: Clock
    opened: list[SqlRegistryStore] = field(default_factory=list)

    def open(self, instance: str = "UZ") -> SqlRegistryStore:
        store = self.opener(instance, self.clock)
        self.opened.append(store)
        return store


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        path = tmp_path / "registry.db"

        def opener(instance: str, clock: Callable[[], dt.datetime] | None) -> SqlRegistryStore:
            return SqlRegistryStore.open_sqlite(path, instance=instance, clock=clock)

    else:
        dsn: str = request.getfixturevalue("postgres_dsn")

        def opener(instance: str, clock: Callable[[], dt.datetime] | None) -> SqlRegistryStore:
            return SqlRegistryStore.open_postgres(dsn, instance=instance, clock=clock)

    result = Backend(name=request.param, opener=opener, clock=Clock())
    yield result
    for store in result.opened:
        store.close()


@pytest.fixture
def store(backend: Backend) -> SqlRegistryStore:
    return backend.open()


def descriptor(name: str = "tax.proto") -> bytes:
    return FileDescriptorSet(
        file=[FileDescriptorProto(name=name, package="tax.v1")]
    ).SerializeToString()


def seed(store: SqlRegistryStore, pki: Pki) -> None:
    """The federation every refusal case starts from (see the module constants)."""
    store.add_certificate_authority(pki.ca, CHANGE)
    store.add_timestamping_authority(pki.tsa, CHANGE)
    for member in (STC, CADASTRE, ACME, MOF):
        store.add_member(Member(id=member, name=f"agency {member.member_code}"), CHANGE)
    for subsystem in (TAX, REPORTS, API, REGISTRY):
        store.add_subsystem(subsystem, f"system {subsystem.subsystem_code}", CHANGE)
    store.add_gateway(
        Gateway.with_certificate(
            id=GW_MAIN,
            address="stc.example:8443",
            auth_certificate=pki.cert(str(GW_MAIN)),
            subsystems=[TAX],
        ),
        CHANGE,
    )
    store.add_gateway(
        Gateway.with_certificate(
            id=GW_ACME, address="acme.example:8443", auth_certificate=pki.cert(str(GW_ACME))
        ),
        CHANGE,
    )
    store.add_global_group(
        GlobalGroup(id=OFFICIALS, description="tax officials", members=frozenset({REPORTS, MOF})),
        CHANGE,
    )
    store.add_global_group(GlobalGroup(id=ALL, members=frozenset({OFFICIALS})), CHANGE)
    store.set_service_descriptor(API, descriptor(), CHANGE)


SEED_CHANGES = 2 + 4 + 4 + 2 + 2 + 1


# -- refusals -----------------------------------------------------------------------------


def _gateway(
    pki: Pki, gateway_id: str, *, cert: bytes | None = None, serves: tuple[str, ...] = ()
) -> Gateway:
    return Gateway.with_certificate(
        id=GatewayId.parse(gateway_id),
        address="host.example:443",
        auth_certificate=pki.cert(gateway_id) if cert is None else cert,
        subsystems=[SubsystemId.parse(s) for s in serves],
    )


def _self_signed_leaf() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not a CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(DER)


Action = Callable[[SqlRegistryStore, Pki], object]


@dataclass(frozen=True)
class Refusal:
    name: str
    action: Action
    code: ErrorCode
    fragment: str


REFUSALS = [
    # members
    Refusal(
        "member duplicate",
        lambda s, p: s.add_member(Member(id=STC, name="again"), CHANGE),
        ErrorCode.ALREADY_EXISTS,
        "member UZ/GOV/STC already exists",
    ),
    Refusal(
        "member of another instance",
        lambda s, p: s.add_member(Member(id=MemberId.parse("KG/GOV/X"), name="x"), CHANGE),
        ErrorCode.INVALID_REQUEST,
        "member KG/GOV/X is not of instance UZ",
    ),
    Refusal(
        "remove absent member",
        lambda s, p: s.remove_member(MemberId.parse("UZ/GOV/NOPE"), CHANGE),
        ErrorCode.NOT_FOUND,
        "member UZ/GOV/NOPE does not exist",
    ),
    Refusal(
        "remove member with subsystems",
        lambda s, p: s.remove_member(CADASTRE, CHANGE),
        ErrorCode.FAILED_PRECONDITION,
        "member UZ/GOV/CADASTRE is still referred to by subsystems: UZ/GOV/CADASTRE/registry",
    ),
    Refusal(
        "remove member with gateways",
        lambda s, p: s.remove_member(ACME, CHANGE),
        ErrorCode.FAILED_PRECONDITION,
        "by gateways: UZ/COM/ACME/gw:1",
    ),
    Refusal(
        "remove member in a group",
        lambda s, p: s.remove_member(MOF, CHANGE),
        ErrorCode.FAILED_PRECONDITION,
        "by global groups: UZ/group:officials",
    ),
    # subsystems
    Refusal(
        "subsystem of unknown member",
        lambda s, p: s.add_subsystem(SubsystemId.parse("UZ/GOV/NOPE/x"), "", CHANGE),
        ErrorCode.FAILED_PRECONDITION,
        "belongs to unknown member UZ/GOV/NOPE",
    ),
    Refusal(
        "subsystem duplicate",
        lambda s, p: s.add_subsystem(TAX, "", CHANGE),
        ErrorCode.ALREADY_EXISTS,
        "subsystem UZ/GOV/STC/tax already exists",
    ),
    Refusal(
        "subsystem name with a control character",
        lambda s, p: s.add_subsystem(STC.subsystem("new"), "a\nb", CHANGE),
        ErrorCode.INVALID_REQUEST,
        "name of subsystem UZ/GOV/STC/new",
    ),
    Refusal(
        "remove absent subsystem",
        lambda s, p: s.remove_subsystem(STC.subsystem("nope"), CHANGE),
        ErrorCode.NOT_FOUND,
        "subsystem UZ/GOV/STC/nope does not exist",
    ),
    Refusal(
        "remove served subsystem",
        lambda s, p: s.remove_subsystem(TAX, CHANGE),
        ErrorCode.FAILED_PRECONDITION,
        "by gateways serving it: UZ/GOV/STC/gw:main",
    ),
    Refusal(
        "remove subsystem in a group",
        lambda s, p: s.remove_subsystem(REPORTS, CHANGE),
        ErrorCode.FAILED_PRECONDITION,
        "by global groups: UZ/group:officials",
    ),
    Refusal(
        "remove subsystem with a descriptor",
        lambda s, p: s.remove_subsystem(API, CHANGE),
        ErrorCode.FAILED_PRECONDITION,
        "by a service descriptor",
    ),
    # gateways
    Refusal(
        "gateway of unknown member",
        lambda s, p: s.add_gateway(_gateway(p, "UZ/GOV/NOPE/gw:x"), CHANGE),
        ErrorCode.FAILED_PRECONDITION,
        "gateway UZ/GOV/NOPE/gw:x belongs to unknown member",
    ),
    Refusal(
        "gateway of another instance",
        lambda s, p: s.add_gateway(_gateway(p, "KG/GOV/X/gw:x"), CHANGE),
        ErrorCode.INVALID_REQUEST,
        "gateway KG/GOV/X/gw:x is not of instance UZ",
    ),
    Refusal(
        "gateway duplicate id",
        lambda s, p: s.add_gateway(
            _gateway(p, str(GW_MAIN), cert=p.cert("UZ/GOV/STC/gw:fresh")), CHANGE
        ),
        ErrorCode.ALREADY_EXISTS,
        "gateway UZ/GOV/STC/gw:main already exists",
    ),
    Refusal(
        "gateway certificate already registered",
        lambda s, p: s.add_gateway(
            _gateway(p, "UZ/GOV/STC/gw:backup", cert=p.cert(str(GW_MAIN))), CHANGE
        ),
        ErrorCode.ALREADY_EXISTS,
        "already registered for gateway UZ/GOV/STC/gw:main",
    ),
    Refusal(
        "gateway serves unknown subsystem",
        lambda s, p: s.add_gateway(
            _gateway(p, "UZ/GOV/STC/gw:backup", serves=("UZ/GOV/STC/nope",)), CHANGE
        ),
        ErrorCode.FAILED_PRECONDITION,
        "serves unknown subsystem UZ/GOV/STC/nope",
    ),
    Refusal(
        "gateway certificate from an unapproved CA",
        lambda s, p: s.add_gateway(
            _gateway(
                p,
                "UZ/GOV/STC/gw:backup",
                cert=p.auth("UZ/GOV/STC/gw:backup", issuing=p.other_issuing),
            ),
            CHANGE,
        ),
        ErrorCode.FAILED_PRECONDITION,
        "from an approved CA (certificate_untrusted)",
    ),
    Refusal(
        "gateway certificate of the wrong purpose",
        lambda s, p: s.add_gateway(
            _gateway(
                p,
                "UZ/GOV/STC/gw:backup",
                cert=p.issuing.issue(
                    Profile.SIGN,
                    "UZ/GOV/STC",
                    generate_private_key(KeyAlgorithm.EC_P256).public_key(),
                ).public_bytes(DER),
            ),
            CHANGE,
        ),
        ErrorCode.FAILED_PRECONDITION,
        "(certificate_invalid)",
    ),
    Refusal(
        "gateway certificate expired",
        lambda s, p: s.add_gateway(
            _gateway(
                p,
                "UZ/GOV/STC/gw:backup",
                cert=p.issuing.issue(
                    Profile.AUTH,
                    "UZ/GOV/STC/gw:backup",
                    generate_private_key(KeyAlgorithm.EC_P256).public_key(),
                    validity=dt.timedelta(days=1),
                    now=dt.datetime.now(dt.UTC) - dt.timedelta(days=10),
                ).public_bytes(DER),
            ),
            CHANGE,
        ),
        ErrorCode.FAILED_PRECONDITION,
        "(certificate_expired)",
    ),
    Refusal(
        "gateway certificate names another member",
        lambda s, p: s.add_gateway(
            _gateway(p, "UZ/GOV/STC/gw:backup", cert=p.cert("UZ/GOV/CADASTRE/gw:main")), CHANGE
        ),
        ErrorCode.FAILED_PRECONDITION,
        "names member UZ/GOV/CADASTRE in its subject, not UZ/GOV/STC",
    ),
    Refusal(
        "gateway without its certificate",
        lambda s, p: s.add_gateway(
            Gateway(
                id=STC.gateway("bare"), address="h.example:1", auth_certificate_sha256=bytes(32)
            ),
            CHANGE,
        ),
        ErrorCode.INVALID_REQUEST,
        "the registry needs the whole DER certificate",
    ),
    Refusal(
        "gateway certificate not DER",
        lambda s, p: s.add_gateway(_gateway(p, "UZ/GOV/STC/gw:junk", cert=b"junk"), CHANGE),
        ErrorCode.INVALID_REQUEST,
        "authentication certificate of gateway UZ/GOV/STC/gw:junk is not a DER",
    ),
    Refusal(
        "remove absent gateway",
        lambda s, p: s.remove_gateway(STC.gateway("nope"), CHANGE),
        ErrorCode.NOT_FOUND,
        "gateway UZ/GOV/STC/gw:nope does not exist",
    ),
    Refusal(
        "set subsystems of absent gateway",
        lambda s, p: s.set_gateway_subsystems(STC.gateway("nope"), frozenset(), CHANGE),
        ErrorCode.NOT_FOUND,
        "gateway UZ/GOV/STC/gw:nope does not exist",
    ),
    Refusal(
        "set subsystems of another member",
        lambda s, p: s.set_gateway_subsystems(GW_MAIN, frozenset({REGISTRY}), CHANGE),
        ErrorCode.FAILED_PRECONDITION,
        "cannot serve UZ/GOV/CADASTRE/registry",
    ),
    Refusal(
        "set unknown subsystems",
        lambda s, p: s.set_gateway_subsystems(GW_MAIN, frozenset({STC.subsystem("nope")}), CHANGE),
        ErrorCode.FAILED_PRECONDITION,
        "serves unknown subsystem UZ/GOV/STC/nope",
    ),
    # global groups
    Refusal(
        "group duplicate",
        lambda s, p: s.add_global_group(GlobalGroup(id=OFFICIALS), CHANGE),
        ErrorCode.ALREADY_EXISTS,
        "global group UZ/group:officials already exists",
    ),
    Refusal(
        "group of another instance",
        lambda s, p: s.add_global_group(GlobalGroup(id=GlobalGroupId.parse("KG/group:x")), CHANGE),
        ErrorCode.INVALID_REQUEST,
        "global group KG/group:x is not of instance UZ",
    ),
    Refusal(
        "group with an unknown member",
        lambda s, p: s.add_global_group(
            GlobalGroup(
                id=GlobalGroupId.parse("UZ/group:new"), members=frozenset({STC.subsystem("nope")})
            ),
            CHANGE,
        ),
        ErrorCode.FAILED_PRECONDITION,
        "cannot contain unknown subsystem UZ/GOV/STC/nope",
    ),
    Refusal(
        "group containing itself when added",
        lambda s, p: s.add_global_group(
            GlobalGroup(
                id=GlobalGroupId.parse("UZ/group:new"),
                members=frozenset({GlobalGroupId.parse("UZ/group:new")}),
            ),
            CHANGE,
        ),
        ErrorCode.INVALID_REQUEST,
        "global group UZ/group:new cannot contain itself",
    ),
    Refusal(
        "remove absent group",
        lambda s, p: s.remove_global_group(GlobalGroupId.parse("UZ/group:nope"), CHANGE),
        ErrorCode.NOT_FOUND,
        "global group UZ/group:nope does not exist",
    ),
    Refusal(
        "remove group contained in another",
        lambda s, p: s.remove_global_group(OFFICIALS, CHANGE),
        ErrorCode.FAILED_PRECONDITION,
        "by global groups: UZ/group:all",
    ),
    Refusal(
        "add to absent group",
        lambda s, p: s.add_global_group_member(GlobalGroupId.parse("UZ/group:nope"), STC, CHANGE),
        ErrorCode.NOT_FOUND,
        "global group UZ/group:nope does not exist",
    ),
    Refusal(
        "add unknown member to group",
        lambda s, p: s.add_global_group_member(OFFICIALS, MemberId.parse("UZ/GOV/NOPE"), CHANGE),
        ErrorCode.FAILED_PRECONDITION,
        "cannot contain unknown member UZ/GOV/NOPE",
    ),
    Refusal(
        "add unknown group to group",
        lambda s, p: s.add_global_group_member(
            OFFICIALS, GlobalGroupId.parse("UZ/group:nope"), CHANGE
        ),
        ErrorCode.FAILED_PRECONDITION,
        "cannot contain unknown global_group UZ/group:nope",
    ),
    Refusal(
        "add group member twice",
        lambda s, p: s.add_global_group_member(OFFICIALS, MOF, CHANGE),
        ErrorCode.ALREADY_EXISTS,
        "UZ/GOV/MOF is already a member of global group UZ/group:officials",
    ),
    Refusal(
        "add group to itself",
        lambda s, p: s.add_global_group_member(OFFICIALS, OFFICIALS, CHANGE),
        ErrorCode.INVALID_REQUEST,
        "global group UZ/group:officials cannot contain itself",
    ),
    Refusal(
        "add group making a cycle",
        lambda s, p: s.add_global_group_member(OFFICIALS, ALL, CHANGE),
        ErrorCode.INVALID_REQUEST,
        "cannot contain UZ/group:all, which contains it",
    ),
    Refusal(
        "remove absent group member",
        lambda s, p: s.remove_global_group_member(OFFICIALS, TAX, CHANGE),
        ErrorCode.NOT_FOUND,
        "UZ/GOV/STC/tax is not a member of global group UZ/group:officials",
    ),
    Refusal(
        "remove member of absent group",
        lambda s, p: s.remove_global_group_member(
            GlobalGroupId.parse("UZ/group:nope"), TAX, CHANGE
        ),
        ErrorCode.NOT_FOUND,
        "global group UZ/group:nope does not exist",
    ),
    # certificate authorities
    Refusal(
        "CA duplicate name",
        lambda s, p: s.add_certificate_authority(
            ApprovedCA(name="dev", root_certificate=p.other_ca.root_certificate), CHANGE
        ),
        ErrorCode.ALREADY_EXISTS,
        "CA 'dev' already exists",
    ),
    Refusal(
        "CA root already approved",
        lambda s, p: s.add_certificate_authority(
            ApprovedCA(name="again", root_certificate=p.ca.root_certificate), CHANGE
        ),
        ErrorCode.ALREADY_EXISTS,
        "root certificate of CA 'again' is already approved as CA 'dev'",
    ),
    Refusal(
        "CA root not DER",
        lambda s, p: s.add_certificate_authority(
            ApprovedCA(name="x", root_certificate=b"junk"), CHANGE
        ),
        ErrorCode.INVALID_REQUEST,
        "root certificate of CA 'x' is not a DER X.509 certificate",
    ),
    Refusal(
        "CA root not self-signed",
        lambda s, p: s.add_certificate_authority(
            ApprovedCA(name="x", root_certificate=p.ca.intermediate_certificates[0]), CHANGE
        ),
        ErrorCode.INVALID_REQUEST,
        "root certificate of CA 'x' is not self-signed",
    ),
    Refusal(
        "CA root not a CA",
        lambda s, p: s.add_certificate_authority(
            ApprovedCA(name="x", root_certificate=_self_signed_leaf()), CHANGE
        ),
        ErrorCode.INVALID_REQUEST,
        "root certificate of CA 'x' is not a CA certificate",
    ),
    Refusal(
        "CA intermediate not chaining to its root",
        lambda s, p: s.add_certificate_authority(
            ApprovedCA(
                name="x",
                root_certificate=p.other_ca.root_certificate,
                intermediate_certificates=p.ca.intermediate_certificates,
            ),
            CHANGE,
        ),
        ErrorCode.INVALID_REQUEST,
        "intermediate certificate 0 of CA 'x' does not chain up to its root",
    ),
    Refusal(
        "CA intermediate not a CA",
        lambda s, p: s.add_certificate_authority(
            ApprovedCA(
                name="x",
                root_certificate=p.other_ca.root_certificate,
                intermediate_certificates=(p.cert(str(GW_MAIN)),),
            ),
            CHANGE,
        ),
        ErrorCode.INVALID_REQUEST,
        "intermediate certificate 0 of CA 'x' is not a CA certificate",
    ),
    Refusal(
        "remove absent CA",
        lambda s, p: s.remove_certificate_authority("nope", CHANGE),
        ErrorCode.NOT_FOUND,
        "CA 'nope' does not exist",
    ),
    Refusal(
        "remove CA that gateways depend on",
        lambda s, p: s.remove_certificate_authority("dev", CHANGE),
        ErrorCode.FAILED_PRECONDITION,
        "certificates depend on it: UZ/COM/ACME/gw:1, UZ/GOV/STC/gw:main",
    ),
    # time-stamping authorities
    Refusal(
        "TSA duplicate",
        lambda s, p: s.add_timestamping_authority(p.tsa, CHANGE),
        ErrorCode.ALREADY_EXISTS,
        "TSA 'dev-tsa' already exists",
    ),
    Refusal(
        "TSA certificate without timeStamping",
        lambda s, p: s.add_timestamping_authority(
            ApprovedTSA(name="x", url="http://tsa.example/", certificates=(p.cert(str(GW_MAIN)),)),
            CHANGE,
        ),
        ErrorCode.INVALID_REQUEST,
        "certificate of TSA 'x' lacks the timeStamping extended key usage",
    ),
    Refusal(
        "TSA certificate not DER",
        lambda s, p: s.add_timestamping_authority(
            ApprovedTSA(name="x", url="http://tsa.example/", certificates=(b"junk",)), CHANGE
        ),
        ErrorCode.INVALID_REQUEST,
        "certificate of TSA 'x' is not a DER",
    ),
    Refusal(
        "remove absent TSA",
        lambda s, p: s.remove_timestamping_authority("nope", CHANGE),
        ErrorCode.NOT_FOUND,
        "TSA 'nope' does not exist",
    ),
    # service descriptors
    Refusal(
        "descriptor of unknown subsystem",
        lambda s, p: s.set_service_descriptor(STC.subsystem("nope"), descriptor(), CHANGE),
        ErrorCode.FAILED_PRECONDITION,
        "service descriptor names unknown subsystem UZ/GOV/STC/nope",
    ),
    Refusal(
        "descriptor not a FileDescriptorSet",
        lambda s, p: s.set_service_descriptor(TAX, b"\xff\xff\xff", CHANGE),
        ErrorCode.INVALID_REQUEST,
        "service descriptor of UZ/GOV/STC/tax is not a serialized FileDescriptorSet",
    ),
    Refusal(
        "descriptor with no file",
        lambda s, p: s.set_service_descriptor(
            TAX, FileDescriptorSet().SerializeToString() + b"\x10\x01", CHANGE
        ),
        ErrorCode.INVALID_REQUEST,
        "describes no .proto file",
    ),
    Refusal(
        "remove absent descriptor",
        lambda s, p: s.set_service_descriptor(TAX, b"", CHANGE),
        ErrorCode.NOT_FOUND,
        "subsystem UZ/GOV/STC/tax has no service descriptor",
    ),
    # the change itself
    Refusal(
        "change without actor",
        lambda s, p: s.add_member(
            Member(id=MemberId.parse("UZ/GOV/NEW"), name="n"), Change(actor="", action="A")
        ),
        ErrorCode.INVALID_REQUEST,
        "actor of a change is empty",
    ),
]


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def seeded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, pki: Pki
) -> Iterator[SqlRegistryStore]:
    """One seeded store per backend for all refusal cases: a refusal changes nothing, and
    each case checks that, so sharing the store is sound (and saves a database per case)."""
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            path = tmp_path_factory.mktemp("seeded") / "registry.db"
            store = SqlRegistryStore.open_sqlite(path, instance="UZ")
        else:
            dsn = stack.enter_context(fresh_database())
            store = SqlRegistryStore.open_postgres(dsn, instance="UZ")
        stack.callback(store.close)
        seed(store, pki)
        yield store


@pytest.mark.parametrize("case", REFUSALS, ids=[c.name for c in REFUSALS])
def test_refusal(seeded: SqlRegistryStore, pki: Pki, case: Refusal) -> None:
    before = seeded.federation()
    with pytest.raises(RegistryError) as raised:
        case.action(seeded, pki)
    assert raised.value.code is case.code, raised.value.message
    assert case.fragment in raised.value.message
    assert seeded.last_audit_sequence() == SEED_CHANGES
    assert seeded.federation() == before


# -- happy paths --------------------------------------------------------------------------


def test_satisfies_the_protocol(store: SqlRegistryStore) -> None:
    contract: RegistryStore = store
    assert contract.instance == "UZ"


def test_seeded_federation(store: SqlRegistryStore, pki: Pki) -> None:
    seed(store, pki)
    fed = store.federation()
    assert fed.instance == "UZ"
    assert [m.id for m in fed.members] == sorted([STC, CADASTRE, ACME, MOF])
    assert [s.id for s in fed.subsystems] == sorted([TAX, REPORTS, API, REGISTRY])
    assert Subsystem(id=TAX, name="system tax") in fed.subsystems
    assert [g.id for g in fed.gateways] == [GW_ACME, GW_MAIN]
    main = fed.gateways[1]
    assert main.subsystems == frozenset({TAX})
    assert main.auth_certificate == pki.cert(str(GW_MAIN))
    assert fed.certificate_authorities == (pki.ca,)
    assert fed.timestamping_authorities == (pki.tsa,)
    assert fed.global_groups == (
        GlobalGroup(id=ALL, members=frozenset({OFFICIALS})),
        GlobalGroup(id=OFFICIALS, description="tax officials", members=frozenset({REPORTS, MOF})),
    )
    assert fed.service_descriptors == (
        ServiceDescriptor(provider=API, file_descriptor_set=descriptor()),
    )
    assert store.list_members() == list(fed.members)
    assert store.list_gateways() == list(fed.gateways)
    assert store.list_gateways(STC) == [main]
    assert store.list_gateways(MOF) == []
    assert store.list_global_groups() == list(fed.global_groups)
    assert store.list_certificate_authorities() == [pki.ca]
    assert store.list_timestamping_authorities() == [pki.tsa]


def test_gateway_changes(store: SqlRegistryStore, pki: Pki, backend: Backend) -> None:
    seed(store, pki)
    registered = store.gateway_registered_at(GW_MAIN)
    assert registered.tzinfo is not None
    assert registered <= backend.clock.now
    store.set_gateway_subsystems(GW_MAIN, frozenset({TAX, REPORTS}), CHANGE)
    assert store.list_gateways(STC)[0].subsystems == frozenset({TAX, REPORTS})
    store.set_gateway_subsystems(GW_MAIN, frozenset(), CHANGE)
    assert store.list_gateways(STC)[0].subsystems == frozenset()
    store.remove_subsystem(TAX, CHANGE)  # no longer served
    store.remove_gateway(GW_MAIN, CHANGE)
    assert [g.id for g in store.list_gateways()] == [GW_ACME]
    with pytest.raises(RegistryError) as raised:
        store.gateway_registered_at(GW_MAIN)
    assert raised.value.code is ErrorCode.NOT_FOUND


def test_groups_and_descriptors(store: SqlRegistryStore, pki: Pki) -> None:
    seed(store, pki)
    store.add_global_group_member(OFFICIALS, TAX, CHANGE)
    store.add_global_group_member(ALL, STC, CHANGE)
    groups = {g.id: g for g in store.list_global_groups()}
    assert groups[OFFICIALS].members == frozenset({REPORTS, MOF, TAX})
    assert groups[ALL].members == frozenset({OFFICIALS, STC})
    store.remove_global_group_member(OFFICIALS, MOF, CHANGE)
    store.remove_member(MOF, CHANGE)  # no longer in a group
    store.remove_global_group(ALL, CHANGE)
    store.remove_global_group(OFFICIALS, CHANGE)  # no longer contained
    assert store.list_global_groups() == []
    store.set_service_descriptor(API, descriptor("v2.proto"), CHANGE)  # replaces
    assert store.federation().service_descriptors[0].file_descriptor_set == descriptor("v2.proto")
    store.set_service_descriptor(API, b"", CHANGE)
    assert store.federation().service_descriptors == ()
    store.remove_subsystem(API, CHANGE)


def test_trust_services(store: SqlRegistryStore, pki: Pki) -> None:
    seed(store, pki)
    store.add_certificate_authority(pki.other_ca, CHANGE)
    assert [c.name for c in store.list_certificate_authorities()] == ["dev", "other"]
    backup = _gateway(
        pki,
        "UZ/GOV/STC/gw:backup",
        cert=pki.auth("UZ/GOV/STC/gw:backup", issuing=pki.other_issuing),
    )
    store.add_gateway(backup, CHANGE)  # now from an approved CA
    with pytest.raises(RegistryError) as raised:
        store.remove_certificate_authority("other", CHANGE)
    assert "UZ/GOV/STC/gw:backup" in raised.value.message
    store.remove_gateway(backup.id, CHANGE)
    store.remove_certificate_authority("other", CHANGE)
    assert store.list_certificate_authorities() == [pki.ca]
    store.remove_timestamping_authority("dev-tsa", CHANGE)
    assert store.list_timestamping_authorities() == []
    for gateway in (GW_MAIN, GW_ACME):
        store.remove_gateway(gateway, CHANGE)
    store.remove_certificate_authority("dev", CHANGE)  # nothing depends on it any more
    assert store.list_certificate_authorities() == []


def test_gateway_needs_an_approved_ca(store: SqlRegistryStore, pki: Pki) -> None:
    store.add_member(Member(id=STC, name="STC"), CHANGE)
    with pytest.raises(RegistryError) as raised:
        store.add_gateway(_gateway(pki, str(GW_MAIN)), CHANGE)
    assert raised.value.code is ErrorCode.FAILED_PRECONDITION
    assert "no certificate authority is approved" in raised.value.message


def test_everything_can_be_removed(store: SqlRegistryStore, pki: Pki) -> None:
    seed(store, pki)
    store.set_service_descriptor(API, b"", CHANGE)
    store.remove_global_group(ALL, CHANGE)
    store.remove_global_group(OFFICIALS, CHANGE)
    for gateway in (GW_MAIN, GW_ACME):
        store.remove_gateway(gateway, CHANGE)
    for subsystem in (TAX, REPORTS, API, REGISTRY):
        store.remove_subsystem(subsystem, CHANGE)
    for member in (STC, CADASTRE, ACME, MOF):
        store.remove_member(member, CHANGE)
    store.remove_certificate_authority("dev", CHANGE)
    store.remove_timestamping_authority("dev-tsa", CHANGE)
    assert store.federation() == Federation(instance="UZ")
    assert store.last_audit_sequence() == SEED_CHANGES + 1 + 2 + 2 + 4 + 4 + 2


# -- audit ------------------------------------------------------------------------------------


def test_audit_entries(store: SqlRegistryStore, backend: Backend) -> None:
    assert store.last_audit_sequence() == 0
    assert store.audit_log() == []
    entry = store.add_member(Member(id=STC, name="STC"), Change(actor="alice", action="AddMember"))
    assert entry == AuditEntry(
        sequence=1,
        at=backend.clock.now,
        actor="alice",
        action="AddMember",
        target="UZ/GOV/STC",
        details="{}",
    )
    with pytest.raises(RegistryError):
        store.add_member(Member(id=STC, name="STC"), CHANGE)
    second = store.add_subsystem(
        TAX, "tax", Change(actor="bob", action="AddSubsystem", details='{"x":2}')
    )
    assert second.sequence == 2
    assert second.target == "UZ/GOV/STC/tax"
    assert store.audit_log() == [entry, second]
    assert store.audit_log(after_sequence=1) == [second]
    assert store.audit_log(after_sequence=0, limit=1) == [entry]
    assert store.last_audit_sequence() == 2


@pytest.mark.parametrize(
    ("after", "limit", "fragment"),
    [(-1, 10, "after_sequence -1"), (0, 0, "limit 0"), (0, 10_001, "limit 10001")],
)
def test_audit_log_bounds(store: SqlRegistryStore, after: int, limit: int, fragment: str) -> None:
    with pytest.raises(RegistryError) as raised:
        store.audit_log(after_sequence=after, limit=limit)
    assert raised.value.code is ErrorCode.INVALID_REQUEST
    assert fragment in raised.value.message


def test_audit_targets_and_gap_free(store: SqlRegistryStore, pki: Pki) -> None:
    seed(store, pki)
    entries = store.audit_log(limit=1000)
    assert [e.sequence for e in entries] == list(range(1, SEED_CHANGES + 1))
    assert [e.target for e in entries[:3]] == ["dev", "dev-tsa", "UZ/GOV/STC"]
    assert {e.target for e in entries} >= {str(GW_MAIN), str(OFFICIALS), str(API)}
    assert all(e.at.tzinfo is not None for e in entries)
    assert [e.at for e in entries] == sorted(e.at for e in entries)


# -- serials, reopening, instance ---------------------------------------------------------------


def test_serial_strictly_increasing_across_reopen(backend: Backend) -> None:
    store = backend.open()
    first = [store.next_serial() for _ in range(3)]
    assert first == [1, 2, 3]
    store.close()
    again = backend.open()
    assert again.next_serial() == 4
    assert again.last_audit_sequence() == 0  # serials are not changes


def test_reopen_gives_the_same_federation(backend: Backend, pki: Pki) -> None:
    store = backend.open()
    seed(store, pki)
    before = store.federation()
    log = store.audit_log(limit=1000)
    store.close()
    again = backend.open()
    assert again.federation() == before
    assert again.audit_log(limit=1000) == log
    assert (
        again.add_member(Member(id=MemberId.parse("UZ/GOV/NEW"), name="n"), CHANGE).sequence
        == SEED_CHANGES + 1
    )


def test_instance_mismatch_on_reopen(backend: Backend) -> None:
    backend.open().close()
    with pytest.raises(RegistryError) as raised:
        backend.open(instance="KG")
    assert raised.value.code is ErrorCode.INVALID_CONFIG
    assert "holds the registry of instance 'UZ', not 'KG'" in raised.value.message


def test_closed_store_refuses(store: SqlRegistryStore) -> None:
    store.close()
    store.close()
    with pytest.raises(RegistryError) as raised:
        store.list_members()
    assert raised.value.code is ErrorCode.INTERNAL
    assert "closed" in raised.value.message


def test_unknown_schema_version_refused(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    SqlRegistryStore.open_sqlite(path, instance="UZ").close()
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE schema_version SET version = 99")
    raw.close()
    with pytest.raises(RegistryError) as raised:
        SqlRegistryStore.open_sqlite(path, instance="UZ")
    assert raised.value.code is ErrorCode.INVALID_CONFIG
    assert "schema version 99" in raised.value.message


def test_sqlite_settings(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    SqlRegistryStore.open_sqlite(path, instance="UZ").close()
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        raw.close()


def test_driver_errors_are_wrapped(tmp_path: Path) -> None:
    with pytest.raises(RegistryError) as raised:
        SqlRegistryStore.open_sqlite(tmp_path, instance="UZ")  # a directory
    assert raised.value.code is ErrorCode.INTERNAL
    assert isinstance(raised.value.__cause__, sqlite3.Error)


@pytest.mark.postgres
def test_postgres_connection_errors_are_wrapped() -> None:
    with pytest.raises(RegistryError) as raised:
        SqlRegistryStore.open_postgres(
            "postgresql://postgres@127.0.0.1:1/none?connect_timeout=2", instance="UZ"
        )
    assert raised.value.code is ErrorCode.INTERNAL
    assert "connect to the PostgreSQL registry database" in raised.value.message


# -- concurrency ------------------------------------------------------------------------------


def test_concurrent_writers(store: SqlRegistryStore) -> None:
    threads, per_thread = 8, 15
    errors: list[BaseException] = []
    serials: list[int] = []

    def work(worker: int) -> None:
        try:
            for i in range(per_thread):
                member = MemberId.parse(f"UZ/GOV/T{worker}x{i}")
                store.add_member(Member(id=member, name="m"), CHANGE)
                store.add_subsystem(member.subsystem("s"), "", CHANGE)
                serials.append(store.next_serial())
                if i % 5 == 0:  # interleave refusals: they must leave no gap
                    with pytest.raises(RegistryError):
                        store.add_member(Member(id=member, name="m"), CHANGE)
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    assert errors == []
    total = threads * per_thread
    assert len(store.list_members()) == total
    assert len(store.federation().subsystems) == total
    assert [e.sequence for e in store.audit_log(limit=10_000)] == list(range(1, 2 * total + 1))
    assert sorted(serials) == list(range(1, total + 1))


def test_two_stores_on_one_database(backend: Backend) -> None:
    """Two connections (as two processes would have) share counters without gaps."""
    first, second = backend.open(), backend.open()
    first.add_member(Member(id=STC, name="STC"), CHANGE)
    second.add_member(Member(id=CADASTRE, name="C"), CHANGE)
    assert [first.next_serial(), second.next_serial(), first.next_serial()] == [1, 2, 3]
    assert [e.sequence for e in first.audit_log()] == [1, 2]
    assert first.federation() == second.federation()


# -- scale ------------------------------------------------------------------------------------


def _large_federation(pki: Pki, members: int, subsystems_each: int) -> Federation:
    member_ids = [MemberId.parse(f"UZ/GOV/M{i:04d}") for i in range(members)]
    subsystems = [m.subsystem(f"s{j}") for m in member_ids for j in range(subsystems_each)]
    key = generate_private_key(KeyAlgorithm.EC_P256).public_key()
    gateways = [
        Gateway.with_certificate(
            id=m.gateway("main"),
            address=f"m{i}.example:8443",
            auth_certificate=pki.issuing.issue(
                Profile.AUTH, str(m.gateway("main")), key
            ).public_bytes(DER),
            subsystems=[m.subsystem(f"s{j}") for j in range(subsystems_each)],
        )
        for i, m in enumerate(member_ids)
    ]
    groups = [
        GlobalGroup(id=GlobalGroupId.parse("UZ/group:first"), members=frozenset(subsystems[:50])),
        GlobalGroup(
            id=GlobalGroupId.parse("UZ/group:nested"),
            members=frozenset({GlobalGroupId.parse("UZ/group:first"), member_ids[0]}),
        ),
    ]
    return Federation(
        instance="UZ",
        members=tuple(Member(id=m, name=f"member {m.member_code}") for m in member_ids),
        subsystems=tuple(Subsystem(id=s, name="") for s in subsystems),
        gateways=tuple(gateways),
        certificate_authorities=(pki.ca,),
        timestamping_authorities=(pki.tsa,),
        global_groups=tuple(groups),
        service_descriptors=(
            ServiceDescriptor(provider=subsystems[0], file_descriptor_set=descriptor()),
        ),
    )


def _check_scale(store: SqlRegistryStore, fed: Federation) -> None:
    # Correctness at scale only; its speed is measured by tools/bench_globalconf_generate.py.
    entry = store.import_federation(fed, Change(actor="local", action="ImportFederation"))
    assert entry.sequence == 1
    assert entry.target == "UZ"
    assert store.federation() == fed


def test_federation_at_small_scale(store: SqlRegistryStore, pki: Pki) -> None:
    _check_scale(store, _large_federation(pki, 100, 5))


@pytest.mark.slow
def test_federation_at_scale(store: SqlRegistryStore, pki: Pki) -> None:
    _check_scale(store, _large_federation(pki, 1000, 5))


def test_import_refuses_a_non_empty_store(store: SqlRegistryStore, pki: Pki) -> None:
    seed(store, pki)
    with pytest.raises(RegistryError) as raised:
        store.import_federation(Federation(instance="UZ"), CHANGE)
    assert raised.value.code is ErrorCode.FAILED_PRECONDITION
    assert "not empty" in raised.value.message


def test_import_checks_certificates(store: SqlRegistryStore, pki: Pki) -> None:
    fed = Federation(
        instance="UZ",
        members=(Member(id=STC, name="STC"),),
        gateways=(_gateway(pki, str(GW_MAIN)),),
    )
    with pytest.raises(RegistryError) as raised:
        store.import_federation(fed, CHANGE)
    assert raised.value.code is ErrorCode.FAILED_PRECONDITION
    assert "no certificate authority is approved" in raised.value.message
    assert store.last_audit_sequence() == 0
    assert store.federation() == Federation(instance="UZ")


def test_import_refuses_group_cycles(store: SqlRegistryStore) -> None:
    a, b = GlobalGroupId.parse("UZ/group:a"), GlobalGroupId.parse("UZ/group:b")
    members: tuple[frozenset[Subject], ...] = (frozenset({b}), frozenset({a}))
    fed = Federation(
        instance="UZ",
        global_groups=(
            GlobalGroup(id=a, members=members[0]),
            GlobalGroup(id=b, members=members[1]),
        ),
    )
    with pytest.raises(RegistryError) as raised:
        store.import_federation(fed, CHANGE)
    assert raised.value.code is ErrorCode.INVALID_REQUEST
    assert "contains itself" in raised.value.message
