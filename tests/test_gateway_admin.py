"""The gateway admin API over real gRPC, on SQLite and PostgreSQL: access-rights changes
recorded in the store's audit and in the message log, authentication and role refusals,
refusals naming the field, a message log that cannot commit, and GetStatus."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from grpc_health.v1 import health_pb2, health_pb2_grpc

import gateway.admin
from gateway.acl import AccessRule, AccessTarget
from gateway.aclstore import AclAction, SqlAclStore
from gateway.admin import (
    ROLE_ADMIN,
    ROLE_OBSERVER,
    AdminServer,
    RuntimeStatus,
    rule_from_proto,
    rule_to_proto,
)
from gateway.commit import InMemoryExchangeLog, RecordKind
from serai.errors import ERROR_METADATA_KEY
from serai.identifiers import GatewayId, GlobalGroupId, MemberId, SubsystemId
from serai.tokens import TokenIssuer, TokenVerifier
from serai_proto.admin.v1 import admin_pb2 as pb
from serai_proto.admin.v1 import admin_pb2_grpc as pb_grpc

GATEWAY = GatewayId.parse("UZ/GOV/CADASTRE/gw:main")
AUDIENCE = f"serai-gateway:{GATEWAY}"
PROVIDER = "UZ/GOV/CADASTRE/registry"
OTHER_PROVIDER = "UZ/GOV/CADASTRE/archive"
TOKEN_KEY = ec.generate_private_key(ec.SECP256R1())
ISSUER = TokenIssuer(key=TOKEN_KEY, issuer="test")


def token(
    role: str | None = ROLE_ADMIN, *, subject: str = "alice", audience: str = AUDIENCE
) -> str:
    roles = [] if role is None else [role]
    return ISSUER.issue(subject=subject, roles=roles, audience=audience)


def auth(value: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {value}"),)


ADMIN = auth(token())
OBSERVER = auth(token(ROLE_OBSERVER, subject="olga"))


def rule(
    target: str = "/cadastre.v1.Cadastre/GetParcel",
    subject: str = "UZ/GOV/MINJUST/property",
    provider: str = PROVIDER,
) -> pb.AccessRule:
    message = pb.AccessRule(provider_subsystem=provider)
    if target.startswith("/"):
        message.method = target
    else:
        message.service = target
    kind = {2: "global_group", 3: "member", 4: "subsystem"}[len(subject.split("/"))]
    setattr(message.subject, kind, subject)
    return message


@dataclass
class Running:
    stub: Any  # the generated stub, typed for sync calls only
    channel: grpc.aio.Channel
    store: SqlAclStore
    log: InMemoryExchangeLog
    status: list[RuntimeStatus]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlAclStore]:
    if request.param == "sqlite":
        opened = SqlAclStore.open_sqlite(tmp_path / "acl.db")
    else:
        dsn: str = request.getfixturevalue("postgres_dsn")
        opened = SqlAclStore.open_postgres(dsn)
    with opened:
        yield opened


@pytest.fixture
async def running(store: SqlAclStore) -> AsyncIterator[Running]:
    log = InMemoryExchangeLog()
    status: list[RuntimeStatus] = []
    server = AdminServer(
        gateway_id=GATEWAY,
        store=store,
        log=log,
        verifier=TokenVerifier(public_keys=[TOKEN_KEY.public_key()], audience=AUDIENCE),
        providers=[SubsystemId.parse(PROVIDER), SubsystemId.parse(OTHER_PROVIDER)],
        listen=("127.0.0.1", 0),
        status=lambda: status[-1] if status else RuntimeStatus(),
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield Running(pb_grpc.GatewayAdminStub(channel), channel, store, log, status)
    finally:
        await server.stop(1)


async def refusal(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    error = info.value
    trailing: Any = error.trailing_metadata() or ()
    trailer = next((v for k, v in trailing if k == ERROR_METADATA_KEY), "")
    return error.code(), str(trailer)


async def test_grant_list_revoke_are_audited_and_logged(running: Running) -> None:
    stub = running.stub
    rules = [
        rule(),
        rule("cadastre.v1.Search", "UZ/GOV/MINJUST"),
        rule("/cadastre.v1.Cadastre/ListParcels", "UZ/group:notaries", provider=OTHER_PROVIDER),
    ]
    for index, message in enumerate(rules):
        response = await stub.GrantAccess(pb.GrantAccessRequest(rule=message), metadata=ADMIN)
        assert response.log_leaf_index == index

    listed = await stub.ListAccess(pb.ListAccessRequest(), metadata=OBSERVER)
    assert len(listed.rules) == 3
    domain = [rule_from_proto(entry.rule) for entry in listed.rules]
    assert domain == sorted(domain)
    assert {rule_to_proto(r).SerializeToString() for r in domain} == {
        m.SerializeToString() for m in rules
    }
    for entry in listed.rules:
        assert entry.granted_by == "alice"
        granted = entry.granted_at.ToDatetime(tzinfo=dt.UTC)
        assert abs(granted - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=5)

    only = await stub.ListAccess(
        pb.ListAccessRequest(provider_subsystem=OTHER_PROVIDER), metadata=ADMIN
    )
    assert [e.rule.provider_subsystem for e in only.rules] == [OTHER_PROVIDER]

    revoked = await stub.RevokeAccess(pb.RevokeAccessRequest(rule=rules[1]), metadata=ADMIN)
    assert revoked.log_leaf_index == 3
    after = await stub.ListAccess(pb.ListAccessRequest(), metadata=ADMIN)
    assert len(after.rules) == 2

    audit = running.store.audit_log()
    assert [(c.sequence, c.action, c.actor) for c in audit] == [
        (1, AclAction.GRANT, "alice"),
        (2, AclAction.GRANT, "alice"),
        (3, AclAction.GRANT, "alice"),
        (4, AclAction.REVOKE, "alice"),
    ]
    assert audit[1].rule == AccessRule(
        provider=SubsystemId.parse(PROVIDER),
        target=AccessTarget.service("cadastre.v1.Search"),
        subject=MemberId.parse("UZ/GOV/MINJUST"),
    )
    records = running.log.records
    assert [r.kind for r in records] == [RecordKind.ADMIN_CHANGE] * 4
    assert [r.message_id for r in records] == [f"acl-change-{n}" for n in (1, 2, 3, 4)]
    assert [r.body for r in records] == [c.canonical_json() for c in audit]


async def test_list_mixes_targets_and_subject_kinds_of_one_service(running: Running) -> None:
    stub = running.stub
    for message in (
        rule("/cadastre.v1.Cadastre/GetParcel", "UZ/GOV/MINJUST/property"),
        rule("cadastre.v1.Cadastre", "UZ/GOV/MINJUST/property"),
        rule("/cadastre.v1.Cadastre/GetParcel", "UZ/GOV/MINJUST"),
    ):
        await stub.GrantAccess(pb.GrantAccessRequest(rule=message), metadata=ADMIN)
    listed = await stub.ListAccess(pb.ListAccessRequest(), metadata=ADMIN)
    assert len(listed.rules) == 3


async def test_regrant_after_revoke_reports_the_latest_grant(running: Running) -> None:
    stub = running.stub
    await stub.GrantAccess(pb.GrantAccessRequest(rule=rule()), metadata=ADMIN)
    await stub.RevokeAccess(pb.RevokeAccessRequest(rule=rule()), metadata=ADMIN)
    bob = auth(token(subject="bob"))
    await stub.GrantAccess(pb.GrantAccessRequest(rule=rule()), metadata=bob)
    listed = await stub.ListAccess(pb.ListAccessRequest(), metadata=ADMIN)
    assert [e.granted_by for e in listed.rules] == ["bob"]


AUTH_CASES = {
    "no token": ((), grpc.StatusCode.UNAUTHENTICATED, "client:unauthenticated:"),
    "not bearer": (
        (("authorization", "Basic abc"),),
        grpc.StatusCode.UNAUTHENTICATED,
        "client:unauthenticated:authorization metadata",
    ),
    "garbage": (auth("x.y.z"), grpc.StatusCode.UNAUTHENTICATED, "client:unauthenticated:"),
    "other audience": (
        auth(token(audience="serai-registry:UZ")),
        grpc.StatusCode.UNAUTHENTICATED,
        "client:unauthenticated:bearer token is not for this service",
    ),
    "other key": (
        auth(
            TokenIssuer(key=ec.generate_private_key(ec.SECP256R1()), issuer="x").issue(
                subject="mallory", roles=[ROLE_ADMIN], audience=AUDIENCE
            )
        ),
        grpc.StatusCode.UNAUTHENTICATED,
        "client:unauthenticated:bearer token signature",
    ),
    "observer changes": (
        OBSERVER,
        grpc.StatusCode.PERMISSION_DENIED,
        "client:permission_denied:token of 'olga' has roles observer",
    ),
    "no role": (
        auth(token(None)),
        grpc.StatusCode.PERMISSION_DENIED,
        "client:permission_denied:",
    ),
}


@pytest.mark.parametrize("case", sorted(AUTH_CASES))
async def test_auth_refusals_change_nothing(running: Running, case: str) -> None:
    metadata, status, trailer = AUTH_CASES[case]
    code, got = await refusal(
        running.stub.GrantAccess(pb.GrantAccessRequest(rule=rule()), metadata=metadata)
    )
    assert code is status
    assert got.startswith(trailer)
    assert running.store.list_rules() == ()
    assert running.store.audit_log() == ()
    assert len(running.log) == 0


async def test_reads_need_a_role(running: Running) -> None:
    code, trailer = await refusal(
        running.stub.ListAccess(pb.ListAccessRequest(), metadata=auth(token(None)))
    )
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert "gateway-admin or observer" in trailer
    code, _ = await refusal(running.stub.GetStatus(pb.GetStatusRequest()))
    assert code is grpc.StatusCode.UNAUTHENTICATED


def _without_subject() -> pb.AccessRule:
    message = rule()
    message.ClearField("subject")
    return message


def _without_target() -> pb.AccessRule:
    message = rule()
    message.ClearField("method")
    return message


INPUT_CASES: dict[str, tuple[pb.GrantAccessRequest, str]] = {
    "no rule": (pb.GrantAccessRequest(), "client:invalid_request:rule: missing"),
    "bad provider": (
        pb.GrantAccessRequest(rule=rule(provider="UZ/GOV/CADASTRE")),
        "client:invalid_identifier:rule.provider_subsystem: ",
    ),
    "provider not served": (
        pb.GrantAccessRequest(rule=rule(provider="UZ/GOV/TAX/db")),
        "client:invalid_request:rule.provider_subsystem: UZ/GOV/TAX/db is not served",
    ),
    "no target": (
        pb.GrantAccessRequest(rule=_without_target()),
        "client:invalid_request:rule.target: give a method or a service",
    ),
    "bad method": (
        pb.GrantAccessRequest(rule=rule("/cadastre.v1.Cadastre")),
        "client:invalid_identifier:rule.method: ",
    ),
    "method as service": (
        pb.GrantAccessRequest(
            rule=pb.AccessRule(
                provider_subsystem=PROVIDER,
                service="/a.B/C",
                subject=pb.Subject(member="UZ/GOV/MINJUST"),
            )
        ),
        "client:invalid_request:rule.service: expected package.Service",
    ),
    "bad service": (
        pb.GrantAccessRequest(rule=rule("cadastre..Cadastre")),
        "client:invalid_identifier:rule.service: ",
    ),
    "no subject": (
        pb.GrantAccessRequest(rule=_without_subject()),
        "client:invalid_request:rule.subject: missing",
    ),
    "empty subject": (
        pb.GrantAccessRequest(
            rule=pb.AccessRule(provider_subsystem=PROVIDER, method="/a.B/C", subject=pb.Subject())
        ),
        "client:invalid_request:rule.subject: give a subsystem, a member or a global group",
    ),
    "member given as subsystem": (
        pb.GrantAccessRequest(
            rule=pb.AccessRule(
                provider_subsystem=PROVIDER,
                method="/a.B/C",
                subject=pb.Subject(subsystem="UZ/GOV/MINJUST"),
            )
        ),
        "client:invalid_identifier:rule.subject.subsystem: ",
    ),
    "bad group": (
        pb.GrantAccessRequest(
            rule=pb.AccessRule(
                provider_subsystem=PROVIDER,
                method="/a.B/C",
                subject=pb.Subject(global_group="UZ/notaries"),
            )
        ),
        "client:invalid_identifier:rule.subject.global_group: ",
    ),
}


@pytest.mark.parametrize("case", sorted(INPUT_CASES))
async def test_input_refusals_name_the_field(running: Running, case: str) -> None:
    request, trailer = INPUT_CASES[case]
    code, got = await refusal(running.stub.GrantAccess(request, metadata=ADMIN))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert got.startswith(trailer), got
    assert running.store.audit_log() == ()
    assert len(running.log) == 0


async def test_duplicate_grant_and_missing_revoke(running: Running) -> None:
    stub = running.stub
    await stub.GrantAccess(pb.GrantAccessRequest(rule=rule()), metadata=ADMIN)
    code, trailer = await refusal(
        stub.GrantAccess(pb.GrantAccessRequest(rule=rule()), metadata=ADMIN)
    )
    assert code is grpc.StatusCode.ALREADY_EXISTS
    assert trailer.startswith("client:already_exists:access rule already granted")
    code, trailer = await refusal(
        stub.RevokeAccess(pb.RevokeAccessRequest(rule=rule(subject="UZ/GOV/TAX")), metadata=ADMIN)
    )
    assert code is grpc.StatusCode.NOT_FOUND
    assert trailer.startswith("client:not_found:no such access rule to revoke")
    assert len(running.store.audit_log()) == 1
    assert len(running.log) == 1


async def test_revoke_of_a_provider_no_longer_served(running: Running, store: SqlAclStore) -> None:
    stale = AccessRule(
        provider=SubsystemId.parse("UZ/GOV/CADASTRE/old"),
        target=AccessTarget.service("a.B"),
        subject=GlobalGroupId.parse("UZ/group:all"),
    )
    store.grant(stale, actor="local")
    await running.stub.RevokeAccess(
        pb.RevokeAccessRequest(rule=rule_to_proto(stale)), metadata=ADMIN
    )
    assert store.list_rules() == ()


async def test_list_filter_is_checked(running: Running) -> None:
    code, trailer = await refusal(
        running.stub.ListAccess(pb.ListAccessRequest(provider_subsystem="nope"), metadata=ADMIN)
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert trailer.startswith("client:invalid_identifier:provider_subsystem: ")


async def test_log_unavailable_keeps_the_change_and_logs_it_with_the_next(
    running: Running,
) -> None:
    stub = running.stub
    running.log.set_unavailable("disk full")
    code, trailer = await refusal(
        stub.GrantAccess(pb.GrantAccessRequest(rule=rule()), metadata=ADMIN)
    )
    assert code is grpc.StatusCode.UNAVAILABLE
    assert trailer.startswith("gateway:log_unavailable:access-rights change #1")
    assert "was applied and audited" in trailer
    assert "disk full" in trailer
    assert len(running.store.list_rules()) == 1
    assert len(running.log) == 0
    status = await stub.GetStatus(pb.GetStatusRequest(), metadata=OBSERVER)
    assert not status.ready
    assert any("await the message log" in r for r in status.not_ready_reasons)

    running.log.set_unavailable(None)
    response = await stub.GrantAccess(
        pb.GrantAccessRequest(rule=rule(subject="UZ/GOV/TAX")), metadata=ADMIN
    )
    assert response.log_leaf_index == 1
    assert [r.message_id for r in running.log.records] == ["acl-change-1", "acl-change-2"]
    status = await stub.GetStatus(pb.GetStatusRequest(), metadata=OBSERVER)
    assert not any("await the message log" in r for r in status.not_ready_reasons)


async def test_status(running: Running) -> None:
    status = await running.stub.GetStatus(pb.GetStatusRequest(), metadata=OBSERVER)
    assert status.gateway_id == str(GATEWAY)
    assert not status.ready
    assert status.globalconf_serial == 0
    assert not status.HasField("globalconf_expires_at")
    assert [r for r in status.not_ready_reasons if "exchange runtime" in r]

    generated = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    running.status.append(
        RuntimeStatus(
            globalconf_serial=7,
            globalconf_generated_at=generated,
            globalconf_expires_at=generated + dt.timedelta(minutes=10),
            log_size=12,
            timestamp_failures=1,
            ready=True,
            not_ready_reasons=(),
        )
    )
    status = await running.stub.GetStatus(pb.GetStatusRequest(), metadata=ADMIN)
    assert status.ready
    assert status.globalconf_serial == 7
    assert status.log_size == 12
    assert status.timestamp_failures == 1
    assert status.globalconf_generated_at.ToDatetime(tzinfo=dt.UTC) == generated
    assert list(status.not_ready_reasons) == []


async def test_message_log_rpcs_are_unimplemented(running: Running) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await running.stub.GetTreeHead(pb.GetTreeHeadRequest(), metadata=ADMIN)
    assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED


async def test_health(running: Running) -> None:
    health = health_pb2_grpc.HealthStub(running.channel)
    answer = await health.Check(health_pb2.HealthCheckRequest(service=gateway.admin.SERVICE_NAME))
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_public_surface() -> None:
    assert set(gateway.admin.__all__) == {
        "ROLE_ADMIN",
        "ROLE_OBSERVER",
        "SERVICE_NAME",
        "AdminServer",
        "GatewayAdminService",
        "RuntimeStatus",
        "rule_from_proto",
        "rule_to_proto",
    }
