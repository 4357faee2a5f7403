"""The registry's management API over real gRPC, on SQLite and PostgreSQL: every rpc,
authentication and authorisation refusals, named input refusals, and publication of the
signed global configuration over HTTP (after changes and periodically)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

import registry.publisher
import registry.server
from certs.ca import CertificateAuthority
from certs.keys import generate_private_key, load_certificate_chain
from certs.pkidir import PKIDirectory
from certs.profiles import Profile
from registry.codec import decode_configuration
from registry.model import GlobalConfiguration
from registry.publisher import PublicationLoop, Publisher
from registry.server import RegistryServer
from registry.signing import verify_signed_configuration
from registry.sqlstore import SqlRegistryStore
from registry.store import RegistryStore
from serai.errors import ERROR_METADATA_KEY
from serai.tokens import TokenIssuer, TokenVerifier
from serai_proto.globalconf.v1 import globalconf_pb2 as gpb
from serai_proto.registry.v1 import registry_pb2 as pb
from serai_proto.registry.v1 import registry_pb2_grpc as pb_grpc

AUDIENCE = "serai-registry:UZ"
TOKEN_KEY = ec.generate_private_key(ec.SECP256R1())
ISSUER = TokenIssuer(key=TOKEN_KEY, issuer="test")


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@dataclass
class PKI:
    directory: PKIDirectory
    ca: CertificateAuthority

    def authority(self, name: str = "dev-ca") -> gpb.CertificateAuthority:
        return gpb.CertificateAuthority(
            name=name,
            root_certificate=_der(self.directory.root_certificate()),
            intermediate_certificates=[_der(self.ca.certificate)],
            ocsp_responder_urls=["http://127.0.0.1:8890/"],
        )

    def tsa(self, name: str = "dev-tsa") -> gpb.TimestampingAuthority:
        chain = load_certificate_chain(self.directory.tsa_cert)
        return gpb.TimestampingAuthority(
            name=name, url="http://127.0.0.1:8891/", certificates=[_der(c) for c in chain]
        )

    def auth_cert(self, gateway_id: str) -> bytes:
        key = generate_private_key()
        return _der(self.ca.issue(Profile.AUTH, gateway_id, key.public_key()))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    directory = PKIDirectory.init(tmp_path_factory.mktemp("pki") / "pki", instance="UZ")
    return PKI(directory=directory, ca=directory.issuing_ca())


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def open_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[], RegistryStore]]:
    if request.param == "sqlite":
        path = tmp_path / "registry.db"
        yield lambda: SqlRegistryStore.open_sqlite(path, instance="UZ")
    else:
        dsn = request.getfixturevalue("postgres_dsn")
        yield lambda: SqlRegistryStore.open_postgres(dsn, instance="UZ")


@dataclass
class Running:
    server: RegistryServer
    publisher: Publisher
    channel: grpc.aio.Channel
    stub: Any
    http: aiohttp.ClientSession
    confsign: x509.Certificate

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.http_port}/globalconf/v1/current"

    async def fetch(self) -> GlobalConfiguration | None:
        """The published configuration, verified; None before the first publication."""
        async with self.http.get(self.url) as response:
            if response.status == 404:
                return None
            assert response.status == 200
            envelope = await response.read()
        data = verify_signed_configuration(envelope, signing_certificates=[_der(self.confsign)])
        return decode_configuration(data)

    async def until(
        self, check: Callable[[GlobalConfiguration], bool], what: str
    ) -> GlobalConfiguration:
        """The first fetched configuration for which ``check`` holds (no timing asserts:
        the bound is generous and only there so a broken publisher fails, not hangs)."""
        for _ in range(600):
            conf = await self.fetch()
            if conf is not None and check(conf):
                return conf
            await asyncio.sleep(0.05)
        raise AssertionError(f"no published configuration {what}")


async def _start(
    pki: PKI, open_store: Callable[[], RegistryStore], tmp_path: Path, *, interval_s: float
) -> AsyncIterator[Running]:
    loop = asyncio.get_running_loop()
    executor = concurrent.futures.ThreadPoolExecutor(1)
    store = await loop.run_in_executor(executor, open_store)
    key = generate_private_key()
    confsign = pki.ca.issue(Profile.CONFIGURATION_SIGNING, "UZ confsign test", key.public_key())
    publisher = Publisher(
        store=store, signing_key=key, signing_certificate=confsign, publish_dir=tmp_path / "pub"
    )
    server = RegistryServer(
        store=store,
        publisher=publisher,
        verifier=TokenVerifier(public_keys=[TOKEN_KEY.public_key()], audience=AUDIENCE),
        executor=executor,
        grpc_listen=("127.0.0.1", 0),
        http_listen=("127.0.0.1", 0),
        regeneration_interval_s=interval_s,
    )
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    http = aiohttp.ClientSession()
    try:
        yield Running(
            server=server,
            publisher=publisher,
            channel=channel,
            stub=pb_grpc.RegistryManagementStub(channel),
            http=http,
            confsign=confsign,
        )
    finally:
        await http.close()
        await channel.close(None)
        await server.stop(1)
        await loop.run_in_executor(executor, store.close)
        executor.shutdown()


@pytest.fixture
async def running(
    pki: PKI, open_store: Callable[[], RegistryStore], tmp_path: Path
) -> AsyncIterator[Running]:
    async for r in _start(pki, open_store, tmp_path, interval_s=60):
        yield r


def _token(roles: list[str], *, audience: str = AUDIENCE, lifetime_s: int = 86_400) -> str:
    # Issued at import: a day, so the tokens outlive a slow full run (600 s did not).
    return ISSUER.issue(subject="alice", roles=roles, audience=audience, lifetime_s=lifetime_s)


ADMIN = (("authorization", f"Bearer {_token(['registry-admin'])}"),)
OBSERVER = (("authorization", f"Bearer {_token(['observer'])}"),)


async def _refused(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str, str]:
    """Status, x-road-error value and details of a refused call."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    error = info.value
    trailing: Any = error.trailing_metadata() or ()
    trailer = next((v for k, v in trailing if k == ERROR_METADATA_KEY), "")
    assert "Traceback" not in (error.details() or "")
    return error.code(), str(trailer), error.details() or ""


# -- every rpc ------------------------------------------------------------------------------


async def test_every_rpc(running: Running, pki: PKI) -> None:
    s = running.stub
    r = await s.AddCertificateAuthority(
        pb.AddCertificateAuthorityRequest(authority=pki.authority()), metadata=ADMIN
    )
    first = r.receipt.audit_sequence
    assert first == 1
    await s.AddTimestampingAuthority(
        pb.AddTimestampingAuthorityRequest(authority=pki.tsa()), metadata=ADMIN
    )
    cas = await s.ListCertificateAuthorities(
        pb.ListCertificateAuthoritiesRequest(), metadata=OBSERVER
    )
    assert [c.name for c in cas.authorities] == ["dev-ca"]
    tsas = await s.ListTimestampingAuthorities(
        pb.ListTimestampingAuthoritiesRequest(), metadata=OBSERVER
    )
    assert [t.name for t in tsas.authorities] == ["dev-tsa"]

    await s.AddMember(
        pb.AddMemberRequest(member_id="UZ/GOV/STC", name="State Tax Committee"), metadata=ADMIN
    )
    await s.AddMember(pb.AddMemberRequest(member_id="UZ/GOV/CADASTRE", name="Cad"), metadata=ADMIN)
    await s.AddSubsystem(
        pb.AddSubsystemRequest(subsystem_id="UZ/GOV/STC/tax", name="Tax DB"), metadata=ADMIN
    )
    await s.AddSubsystem(pb.AddSubsystemRequest(subsystem_id="UZ/GOV/STC/vat"), metadata=ADMIN)
    members = await s.ListMembers(pb.ListMembersRequest(), metadata=OBSERVER)
    assert [m.id for m in members.members] == ["UZ/GOV/CADASTRE", "UZ/GOV/STC"]
    assert [(x.id, x.name) for x in members.members[1].subsystems] == [
        ("UZ/GOV/STC/tax", "Tax DB"),
        ("UZ/GOV/STC/vat", ""),
    ]
    only = await s.ListMembers(pb.ListMembersRequest(member_class="NGO"), metadata=OBSERVER)
    assert list(only.members) == []

    cert = pki.auth_cert("UZ/GOV/STC/gw:main")
    await s.AddGateway(
        pb.AddGatewayRequest(
            gateway_id="UZ/GOV/STC/gw:main",
            address="stc.example:5500",
            authentication_certificate=cert,
            subsystems=["UZ/GOV/STC/tax"],
        ),
        metadata=ADMIN,
    )
    await s.SetGatewaySubsystems(
        pb.SetGatewaySubsystemsRequest(
            gateway_id="UZ/GOV/STC/gw:main", subsystems=["UZ/GOV/STC/tax", "UZ/GOV/STC/vat"]
        ),
        metadata=ADMIN,
    )
    gateways = await s.ListGateways(pb.ListGatewaysRequest(), metadata=OBSERVER)
    (gw,) = gateways.gateways
    assert gw.gateway_id == "UZ/GOV/STC/gw:main"
    assert gw.authentication_certificate == cert
    assert list(gw.subsystems) == ["UZ/GOV/STC/tax", "UZ/GOV/STC/vat"]
    assert gw.registered_at.seconds > 0
    by_member = await s.ListGateways(
        pb.ListGatewaysRequest(member_id="UZ/GOV/CADASTRE"), metadata=OBSERVER
    )
    assert list(by_member.gateways) == []

    await s.AddGlobalGroup(
        pb.AddGlobalGroupRequest(group_id="UZ/group:tax-officials", description="Tax"),
        metadata=ADMIN,
    )
    for subject in ("UZ/GOV/STC/tax", "UZ/GOV/CADASTRE"):
        await s.AddGlobalGroupMember(
            pb.AddGlobalGroupMemberRequest(group_id="UZ/group:tax-officials", subject_id=subject),
            metadata=ADMIN,
        )
    await s.RemoveGlobalGroupMember(
        pb.RemoveGlobalGroupMemberRequest(
            group_id="UZ/group:tax-officials", subject_id="UZ/GOV/CADASTRE"
        ),
        metadata=ADMIN,
    )
    groups = await s.ListGlobalGroups(pb.ListGlobalGroupsRequest(), metadata=OBSERVER)
    assert [(g.id, list(g.members)) for g in groups.groups] == [
        ("UZ/group:tax-officials", ["UZ/GOV/STC/tax"])
    ]

    fds = descriptor_pb2.FileDescriptorSet()
    fds.file.add().ParseFromString(pb.DESCRIPTOR.serialized_pb)
    await s.SetServiceDescriptor(
        pb.SetServiceDescriptorRequest(
            provider_subsystem="UZ/GOV/STC/tax", file_descriptor_set=fds.SerializeToString()
        ),
        metadata=ADMIN,
    )
    conf = await running.until(lambda c: bool(c.federation.service_descriptors), "with descriptors")
    assert {str(g.id) for g in conf.federation.gateways} == {"UZ/GOV/STC/gw:main"}
    assert {g.id for g in conf.federation.global_groups} == {
        g.id for g in conf.federation.global_groups
    }

    current = await s.GetCurrentConfiguration(
        pb.GetCurrentConfigurationRequest(), metadata=OBSERVER
    )
    assert current.instance_id == "UZ"
    assert current.serial >= conf.serial
    assert len(current.configuration_sha256) == 32

    await s.RemoveGlobalGroup(
        pb.RemoveGlobalGroupRequest(group_id="UZ/group:tax-officials"), metadata=ADMIN
    )
    await s.RemoveGateway(pb.RemoveGatewayRequest(gateway_id="UZ/GOV/STC/gw:main"), metadata=ADMIN)
    await s.RemoveSubsystem(
        pb.RemoveSubsystemRequest(subsystem_id="UZ/GOV/STC/vat"), metadata=ADMIN
    )
    await s.RemoveMember(pb.RemoveMemberRequest(member_id="UZ/GOV/CADASTRE"), metadata=ADMIN)
    await s.RemoveTimestampingAuthority(
        pb.RemoveTimestampingAuthorityRequest(name="dev-tsa"), metadata=ADMIN
    )
    last = await s.RemoveCertificateAuthority(
        pb.RemoveCertificateAuthorityRequest(name="dev-ca"), metadata=ADMIN
    )

    audit = await s.GetAuditLog(pb.GetAuditLogRequest(), metadata=OBSERVER)
    assert audit.last_sequence == last.receipt.audit_sequence
    assert [e.sequence for e in audit.entries] == list(range(1, audit.last_sequence + 1))
    assert {e.actor for e in audit.entries} == {"alice"}
    actions = [e.action for e in audit.entries]
    assert actions[0] == "AddCertificateAuthority"
    assert actions[-1] == "RemoveCertificateAuthority"
    member_entry = next(e for e in audit.entries if e.action == "AddMember")
    assert member_entry.target == "UZ/GOV/STC"
    assert json.loads(member_entry.details) == {
        "member_id": "UZ/GOV/STC",
        "name": "State Tax Committee",
    }
    page = await s.GetAuditLog(pb.GetAuditLogRequest(after_sequence=2, limit=3), metadata=ADMIN)
    assert [e.sequence for e in page.entries] == [3, 4, 5]


# -- authentication and authorisation -------------------------------------------------------


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


OTHER_KEY = ec.generate_private_key(ec.SECP256R1())
AUTH_CASES: dict[str, tuple[tuple[tuple[str, str], ...], str, grpc.StatusCode]] = {
    "missing token": ((), "AddMember", grpc.StatusCode.UNAUTHENTICATED),
    "not bearer": (
        (("authorization", "Basic YTpi"),),
        "ListMembers",
        grpc.StatusCode.UNAUTHENTICATED,
    ),
    "garbage token": (_bearer("x.y.z"), "ListMembers", grpc.StatusCode.UNAUTHENTICATED),
    "expired": (
        _bearer(
            TokenIssuer(
                key=TOKEN_KEY,
                issuer="test",
                clock=lambda: dt.datetime.now(dt.UTC) - dt.timedelta(hours=2),
            ).issue(subject="alice", roles=["registry-admin"], audience=AUDIENCE)
        ),
        "AddMember",
        grpc.StatusCode.UNAUTHENTICATED,
    ),
    "wrong audience": (
        _bearer(_token(["registry-admin"], audience="serai-registry:KG")),
        "AddMember",
        grpc.StatusCode.UNAUTHENTICATED,
    ),
    "other signer": (
        _bearer(
            TokenIssuer(key=OTHER_KEY, issuer="evil").issue(
                subject="mallory", roles=["registry-admin"], audience=AUDIENCE
            )
        ),
        "AddMember",
        grpc.StatusCode.UNAUTHENTICATED,
    ),
    "observer writes": (OBSERVER, "AddMember", grpc.StatusCode.PERMISSION_DENIED),
    "no role reads": (_bearer(_token([])), "ListMembers", grpc.StatusCode.PERMISSION_DENIED),
}


@pytest.mark.parametrize("case", sorted(AUTH_CASES))
async def test_auth_refusals(running: Running, case: str) -> None:
    metadata, method, status = AUTH_CASES[case]
    request: Any = (
        pb.AddMemberRequest(member_id="UZ/GOV/STC", name="x")
        if method == "AddMember"
        else pb.ListMembersRequest()
    )
    code, trailer, _ = await _refused(getattr(running.stub, method)(request, metadata=metadata))
    assert code == status
    expected = "unauthenticated" if status == grpc.StatusCode.UNAUTHENTICATED else "permission"
    assert trailer.startswith(f"client:{expected}")
    # Nothing was changed by a refused call.
    members = await running.stub.ListMembers(pb.ListMembersRequest(), metadata=ADMIN)
    assert list(members.members) == []


# -- bad input ------------------------------------------------------------------------------


async def test_input_refusals_name_the_field(running: Running, pki: PKI) -> None:
    s = running.stub
    await s.AddCertificateAuthority(
        pb.AddCertificateAuthorityRequest(authority=pki.authority()), metadata=ADMIN
    )
    await s.AddMember(pb.AddMemberRequest(member_id="UZ/GOV/STC", name="STC"), metadata=ADMIN)
    await s.AddMember(pb.AddMemberRequest(member_id="UZ/GOV/CAD", name="CAD"), metadata=ADMIN)
    await s.AddSubsystem(pb.AddSubsystemRequest(subsystem_id="UZ/GOV/CAD/reg"), metadata=ADMIN)
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    cases: list[tuple[Awaitable[Any], grpc.StatusCode, str]] = [
        (
            s.AddMember(pb.AddMemberRequest(member_id="UZ/GOV/S@", name="x"), metadata=ADMIN),
            invalid,
            "member_id",
        ),
        (
            s.AddMember(pb.AddMemberRequest(member_id="KG/GOV/X", name="x"), metadata=ADMIN),
            invalid,
            "member_id",
        ),
        (
            s.AddMember(pb.AddMemberRequest(member_id="UZ/GOV/X", name=""), metadata=ADMIN),
            invalid,
            "name",
        ),
        (
            s.AddMember(pb.AddMemberRequest(member_id="UZ/GOV/STC", name="again"), metadata=ADMIN),
            grpc.StatusCode.ALREADY_EXISTS,
            "UZ/GOV/STC",
        ),
        (
            s.AddSubsystem(pb.AddSubsystemRequest(subsystem_id="UZ/GOV/NOPE/x"), metadata=ADMIN),
            grpc.StatusCode.FAILED_PRECONDITION,
            "UZ/GOV/NOPE",
        ),
        (
            s.RemoveMember(pb.RemoveMemberRequest(member_id="UZ/GOV/NOPE"), metadata=ADMIN),
            grpc.StatusCode.NOT_FOUND,
            "UZ/GOV/NOPE",
        ),
        (
            s.RemoveMember(pb.RemoveMemberRequest(member_id="UZ/GOV/CAD"), metadata=ADMIN),
            grpc.StatusCode.FAILED_PRECONDITION,
            "UZ/GOV/CAD",
        ),
        (
            s.AddGateway(
                pb.AddGatewayRequest(
                    gateway_id="UZ/GOV/STC/gw:main",
                    address="h:1",
                    authentication_certificate=pki.auth_cert("UZ/GOV/STC/gw:main"),
                    subsystems=["UZ/GOV/CAD/reg"],
                ),
                metadata=ADMIN,
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
            "UZ/GOV/CAD/reg",
        ),
        (
            s.AddGateway(
                pb.AddGatewayRequest(
                    gateway_id="UZ/GOV/STC/gw:main",
                    address="h:1",
                    authentication_certificate=b"not a certificate",
                ),
                metadata=ADMIN,
            ),
            invalid,
            "authentication_certificate",
        ),
        (
            s.AddGateway(
                pb.AddGatewayRequest(
                    gateway_id="UZ/GOV/STC/gw:main",
                    address="no-port",
                    authentication_certificate=pki.auth_cert("UZ/GOV/STC/gw:main"),
                ),
                metadata=ADMIN,
            ),
            invalid,
            "address",
        ),
        (
            s.SetGatewaySubsystems(
                pb.SetGatewaySubsystemsRequest(gateway_id="UZ/GOV/STC/gw:x", subsystems=["bad"]),
                metadata=ADMIN,
            ),
            invalid,
            "subsystems[0]",
        ),
        (
            s.AddGlobalGroupMember(
                pb.AddGlobalGroupMemberRequest(group_id="UZ/group:g", subject_id="UZ/GOV/STC"),
                metadata=ADMIN,
            ),
            grpc.StatusCode.NOT_FOUND,
            "UZ/group:g",
        ),
        (
            s.AddCertificateAuthority(pb.AddCertificateAuthorityRequest(), metadata=ADMIN),
            invalid,
            "authority",
        ),
        (
            s.RemoveTimestampingAuthority(
                pb.RemoveTimestampingAuthorityRequest(name=""), metadata=ADMIN
            ),
            invalid,
            "name",
        ),
    ]
    for call, status, fragment in cases:
        code, trailer, details = await _refused(call)
        assert code == status, details
        assert fragment in details
        origin, wire_code, message = trailer.split(":", 2)
        assert origin == "client", trailer
        assert wire_code
        assert message == details


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("", "name is empty"),
        ("\x00", "name contains a control character"),  # PostgreSQL cannot compare a NUL
        ("dev\ntsa", "name contains a control character"),
        ("x" * 256, "name is 256 characters; at most 255"),
    ],
    ids=["empty", "nul", "newline", "too-long"],
)
async def test_a_removal_by_a_name_no_authority_could_have_is_invalid_request(
    running: Running, name: str, fragment: str
) -> None:
    """Found by the slow registry fuzzing: a NUL in the name reached PostgreSQL, whose
    refusal came back as the registry's internal error."""
    s = running.stub
    for call in (
        s.RemoveTimestampingAuthority(
            pb.RemoveTimestampingAuthorityRequest(name=name), metadata=ADMIN
        ),
        s.RemoveCertificateAuthority(
            pb.RemoveCertificateAuthorityRequest(name=name), metadata=ADMIN
        ),
    ):
        code, trailer, details = await _refused(call)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, details
        assert trailer == f"client:invalid_request:{details}"
        assert fragment in details


# -- publication ----------------------------------------------------------------------------


async def test_publication_after_change_is_signed_served_and_serial_increases(
    running: Running,
) -> None:
    first = await running.until(lambda c: True, "at all")
    await running.stub.AddMember(
        pb.AddMemberRequest(member_id="UZ/GOV/STC", name="State Tax Committee"), metadata=ADMIN
    )
    conf = await running.until(lambda c: bool(c.federation.members), "with the new member")
    assert conf.serial > first.serial
    assert [str(m.id) for m in conf.federation.members] == ["UZ/GOV/STC"]
    assert conf.expires_at - conf.generated_at == dt.timedelta(seconds=600)
    async with running.http.get(running.url) as response:
        assert response.headers["Content-Type"] == "application/octet-stream"
        assert response.headers["Cache-Control"] == "no-cache"
    async with running.http.head(running.url) as response:
        assert response.status == 200
    history = running.url.replace("current", str(conf.serial))
    async with running.http.get(history) as response:
        assert response.status == 200
    async with running.http.get(running.url.replace("current", "../../x")) as response:
        assert response.status == 404

    serials = []
    for n in range(3):
        await running.stub.AddMember(
            pb.AddMemberRequest(member_id=f"UZ/GOV/M{n}", name="m"), metadata=ADMIN
        )
        later = await running.until(_lists(f"UZ/GOV/M{n}"), f"with M{n}")
        serials.append(later.serial)
    assert conf.serial < serials[0] < serials[1] < serials[2]


def _lists(member_id: str) -> Callable[[GlobalConfiguration], bool]:
    return lambda conf: member_id in {str(m.id) for m in conf.federation.members}


def _after(serial: int) -> Callable[[GlobalConfiguration], bool]:
    return lambda conf: conf.serial > serial


async def test_periodic_regeneration(
    pki: PKI, open_store: Callable[[], RegistryStore], tmp_path: Path
) -> None:
    async for running in _start(pki, open_store, tmp_path, interval_s=0.1):
        first = await running.until(lambda c: True, "at all")
        later = await running.until(_after(first.serial), "regenerated")
        assert later.generated_at >= first.generated_at


async def test_health_and_reflection(running: Running) -> None:
    health = health_pb2_grpc.HealthStub(running.channel)
    for service in ("", registry.server.SERVICE_NAME):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_current_configuration_answers_from_publisher(running: Running) -> None:
    await running.until(lambda c: True, "at all")
    published = running.publisher.current
    assert published is not None
    reply = await running.stub.GetCurrentConfiguration(
        pb.GetCurrentConfigurationRequest(), metadata=OBSERVER
    )
    assert reply.serial >= published.serial


def test_public_surface() -> None:
    assert set(registry.server.__all__) == {
        "ROLE_ADMIN",
        "ROLE_OBSERVER",
        "SERVICE_NAME",
        "RegistryManagementService",
        "RegistryServer",
    }


async def test_failed_publication_is_logged_and_retried(
    pki: PKI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = SqlRegistryStore.open_sqlite(tmp_path / "r.db", instance="UZ")
    calls = {"n": 0}
    real = store.federation

    def flaky() -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("database briefly unavailable")
        return real()

    store.federation = flaky  # type: ignore[method-assign]
    key = generate_private_key()
    cert = pki.ca.issue(Profile.CONFIGURATION_SIGNING, "UZ confsign flaky", key.public_key())
    publisher = Publisher(
        store=store, signing_key=key, signing_certificate=cert, publish_dir=tmp_path / "pub"
    )
    executor = concurrent.futures.ThreadPoolExecutor(1)
    loop = PublicationLoop(publisher, executor=executor, interval_s=0.05)
    loop.start()
    try:
        published = await asyncio.wait_for(loop.wait_for_serial(1), timeout=60)
    finally:
        await loop.stop()
        executor.shutdown()
        store.close()
    assert published.serial >= 1
    assert loop.failures == 1
    assert "globalconf_publish_failed" in capsys.readouterr().err


def test_publisher_public_surface() -> None:
    assert set(registry.publisher.__all__) == {
        "ConsistencyProvider",
        "PublicationLoop",
        "PublishedConfiguration",
        "Publisher",
        "create_http_app",
    }
