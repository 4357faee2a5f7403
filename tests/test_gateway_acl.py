"""gateway.acl and gateway.aclstore: decisions (default deny, every subject and target
kind, no leaks between providers), targets, and the store's changes, refusals, audit and
policy swap on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import acl as acl_module
from gateway import aclstore as aclstore_module
from gateway.acl import AccessDeniedError, AccessPolicy, AccessRule, AccessTarget
from gateway.aclstore import AclAction, AclChange, AclStoreError, SqlAclStore
from gateway.commit import RecordKind
from gateway.errors import GatewayError
from registry.model import Federation, GlobalConfiguration, GlobalGroup, Member, Subsystem
from registry.snapshot import ConfigurationSnapshot
from serai.errors import ErrorCode, InvalidIdentifierError, Origin
from serai.identifiers import GlobalGroupId, MemberId, ServiceId, Subject, SubsystemId

NOW = dt.datetime(2026, 11, 27, 10, 0, tzinfo=dt.UTC)

CADASTRE = MemberId.parse("UZ/GOV/CADASTRE")
STC = MemberId.parse("UZ/GOV/STC")
MINJUST = MemberId.parse("UZ/GOV/MINJUST")
BANK = MemberId.parse("UZ/COM/BANK")
REGISTRY = CADASTRE.subsystem("registry")  # provider
ARCHIVE = CADASTRE.subsystem("archive")  # another provider of the same member
TAX = STC.subsystem("tax")
TAX_AUDIT = STC.subsystem("audit")
PROPERTY = MINJUST.subsystem("property")
LOANS = BANK.subsystem("loans")
G_STATE = GlobalGroupId.parse("UZ/group:state")
G_OFFICIALS = GlobalGroupId.parse("UZ/group:officials")  # contains G_STATE (nested)

GET_PARCEL = "/cadastre.v1.Cadastre/GetParcel"
LIST_PARCELS = "/cadastre.v1.Cadastre/ListParcels"
GET_OWNER = "/cadastre.v1.Owners/GetOwner"


def _snapshot() -> ConfigurationSnapshot:
    fed = Federation(
        instance="UZ",
        members=tuple(Member(id=m, name=m.member_code) for m in (CADASTRE, STC, MINJUST, BANK)),
        subsystems=tuple(
            Subsystem(id=s) for s in (REGISTRY, ARCHIVE, TAX, TAX_AUDIT, PROPERTY, LOANS)
        ),
        global_groups=(
            GlobalGroup(id=G_STATE, members=frozenset({MINJUST})),
            GlobalGroup(id=G_OFFICIALS, members=frozenset({G_STATE})),
        ),
    )
    config = GlobalConfiguration(
        federation=fed, serial=1, generated_at=NOW, expires_at=NOW + dt.timedelta(minutes=10)
    )
    return ConfigurationSnapshot(config)


SNAP = _snapshot()


def _call(provider: SubsystemId, path: str) -> ServiceId:
    return ServiceId.for_method(subsystem=provider, method_path=path)


def _rule(subject: Subject, target: str, provider: SubsystemId = REGISTRY) -> AccessRule:
    return AccessRule(provider=provider, target=AccessTarget.parse(target), subject=subject)


# -- public surface -------------------------------------------------------------------------


def test_public_surface() -> None:
    assert set(acl_module.__all__) == {
        "AccessDeniedError",
        "AccessPolicy",
        "AccessRule",
        "AccessTarget",
        "GroupMembership",
    }
    assert set(aclstore_module.__all__) == {
        "AclAction",
        "AclChange",
        "AclStoreError",
        "SqlAclStore",
    }


# -- targets --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "service_name", "method_name"),
    [
        pytest.param(GET_PARCEL, "cadastre.v1.Cadastre", "GetParcel", id="method"),
        pytest.param("cadastre.v1.Cadastre", "cadastre.v1.Cadastre", None, id="whole-service"),
        pytest.param("Svc", "Svc", None, id="unqualified-service"),
        pytest.param("/_a._b/_c1", "_a._b", "_c1", id="underscores"),
    ],
)
def test_target_parses_and_prints(text: str, service_name: str, method_name: str | None) -> None:
    target = AccessTarget.parse(text)
    assert (target.service_name, target.method_name) == (service_name, method_name)
    assert target.is_whole_service is (method_name is None)
    assert str(target) == text


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("/", id="slash"),
        pytest.param("cadastre.v1.Cadastre/GetParcel", id="method-without-leading-slash"),
        pytest.param("/cadastre.v1.Cadastre", id="slash-service"),
        pytest.param("/cadastre.v1.Cadastre/GetParcel/x", id="three-names"),
        pytest.param("//GetParcel", id="empty-service"),
        pytest.param("/cadastre.v1.Cadastre/", id="empty-method"),
        pytest.param("cadastre..Cadastre", id="empty-segment"),
        pytest.param("cadastre.v1.*", id="wildcard"),
        pytest.param("1cadastre", id="leading-digit"),
        pytest.param("/a.B/Get-Parcel", id="dash-in-method"),
        pytest.param("a" * 256, id="service-too-long"),
        pytest.param("/a/" + "b" * 256, id="method-too-long"),
        pytest.param("x" * 10_000, id="huge"),
    ],
)
def test_target_refuses(text: str) -> None:
    with pytest.raises(InvalidIdentifierError) as info:
        AccessTarget.parse(text)
    assert info.value.code is ErrorCode.INVALID_IDENTIFIER
    assert len(info.value.message) < 300


def test_target_factories() -> None:
    assert AccessTarget.method(GET_PARCEL) == AccessTarget(
        service_name="cadastre.v1.Cadastre", method_name="GetParcel"
    )
    assert AccessTarget.service("cadastre.v1.Cadastre").is_whole_service
    assert AccessTarget.of(_call(REGISTRY, GET_PARCEL)) == AccessTarget.method(GET_PARCEL)
    with pytest.raises(InvalidIdentifierError, match="method path"):
        AccessTarget.method("cadastre.v1.Cadastre")
    with pytest.raises(InvalidIdentifierError):
        AccessTarget.service("/cadastre.v1.Cadastre/GetParcel")


@given(
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}(\.[A-Za-z_][A-Za-z0-9_]{0,8}){0,3}", fullmatch=True),
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True),
)
def test_target_agrees_with_service_id(service_name: str, method_name: str) -> None:
    """A method target round-trips and covers exactly the ServiceId of the same path."""
    path = f"/{service_name}/{method_name}"
    service = _call(REGISTRY, path)
    target = AccessTarget.parse(path)
    assert AccessTarget.parse(str(target)) == target
    assert target.covers(service)
    assert AccessTarget.service(service_name).covers(service)
    assert not AccessTarget.service(service_name + "x").covers(service)


def test_rule_refuses_wrong_types() -> None:
    target = AccessTarget.method(GET_PARCEL)
    with pytest.raises(InvalidIdentifierError, match="provider"):
        AccessRule(provider=STC, target=target, subject=TAX)  # type: ignore[arg-type]
    with pytest.raises(InvalidIdentifierError, match="target"):
        AccessRule(provider=REGISTRY, target=GET_PARCEL, subject=TAX)  # type: ignore[arg-type]
    with pytest.raises(InvalidIdentifierError, match="subject"):
        AccessRule(provider=REGISTRY, target=target, subject=STC.gateway("gw"))  # type: ignore[arg-type]


# -- decisions ------------------------------------------------------------------------------

#: One rule of each kind; each case asks whether ``client`` may call ``path`` of ``provider``.
RULES = (
    _rule(TAX, GET_PARCEL),  # a subsystem, one method
    _rule(MINJUST, "cadastre.v1.Owners"),  # a whole member, a whole service
    _rule(G_OFFICIALS, LIST_PARCELS),  # a global group (nested), one method
    _rule(LOANS, "cadastre.v1.Cadastre", provider=ARCHIVE),  # another provider's rule
)


@pytest.mark.parametrize(
    ("client", "provider", "path", "allowed"),
    [
        pytest.param(TAX, REGISTRY, GET_PARCEL, True, id="subsystem-exact-method"),
        pytest.param(TAX, REGISTRY, LIST_PARCELS, False, id="subsystem-other-method"),
        pytest.param(TAX_AUDIT, REGISTRY, GET_PARCEL, False, id="sibling-subsystem"),
        pytest.param(PROPERTY, REGISTRY, GET_OWNER, True, id="member-whole-service"),
        pytest.param(PROPERTY, REGISTRY, "/cadastre.v1.Owners/Other", True, id="member-any-method"),
        pytest.param(
            PROPERTY, REGISTRY, "/cadastre.v1.OwnersX/GetOwner", False, id="service-prefix"
        ),
        pytest.param(
            PROPERTY, REGISTRY, "/cadastre.v1.Owners.Sub/GetOwner", False, id="sub-service"
        ),
        pytest.param(PROPERTY, REGISTRY, LIST_PARCELS, True, id="nested-group"),
        pytest.param(PROPERTY, REGISTRY, GET_PARCEL, False, id="group-other-method"),
        pytest.param(TAX, REGISTRY, GET_OWNER, False, id="not-in-member"),
        pytest.param(LOANS, REGISTRY, GET_PARCEL, False, id="other-providers-rule-no-leak"),
        pytest.param(LOANS, ARCHIVE, GET_PARCEL, True, id="other-provider-own-rule"),
        pytest.param(TAX, ARCHIVE, GET_PARCEL, False, id="rule-of-registry-not-archive"),
        pytest.param(PROPERTY, ARCHIVE, GET_OWNER, False, id="member-rule-other-provider"),
    ],
)
def test_decisions(client: SubsystemId, provider: SubsystemId, path: str, allowed: bool) -> None:
    policy = AccessPolicy(RULES)
    service = _call(provider, path)
    assert policy.is_allowed(client, service, groups=SNAP) is allowed
    if allowed:
        policy.check(client, service, groups=SNAP)
    else:
        with pytest.raises(AccessDeniedError):
            policy.check(client, service, groups=SNAP)


def test_default_deny() -> None:
    policy = AccessPolicy()
    with pytest.raises(AccessDeniedError):
        policy.check(TAX, _call(REGISTRY, GET_PARCEL), groups=SNAP)


def test_refusal_names_client_and_method_only() -> None:
    policy = AccessPolicy(RULES)
    with pytest.raises(AccessDeniedError) as info:
        policy.check(TAX_AUDIT, _call(REGISTRY, GET_PARCEL), groups=SNAP)
    err = info.value
    assert isinstance(err, GatewayError)
    assert (err.code, err.origin) == (ErrorCode.ACCESS_DENIED, Origin.CLIENT)
    assert err.message == f"client {TAX_AUDIT} may not call {REGISTRY}{GET_PARCEL}"
    for secret in (str(TAX), str(MINJUST), str(G_OFFICIALS), "Owners"):
        assert secret not in err.message


def test_group_unknown_to_configuration_allows_nobody() -> None:
    """A rule for a group the configuration does not list opens nothing (fail closed)."""
    ghost = GlobalGroupId.parse("UZ/group:ghost")
    policy = AccessPolicy([_rule(ghost, "cadastre.v1.Cadastre")])
    for client in (TAX, PROPERTY, LOANS):
        assert not policy.is_allowed(client, _call(REGISTRY, GET_PARCEL), groups=SNAP)


def test_group_membership_is_asked_of_the_given_configuration() -> None:
    """With a configuration that drops the client from the group, the right is gone."""
    policy = AccessPolicy([_rule(G_STATE, GET_PARCEL)])
    service = _call(REGISTRY, GET_PARCEL)
    assert policy.is_allowed(PROPERTY, service, groups=SNAP)

    class NoGroups:
        def is_member_of_group(self, subject: Subject, group_id: GlobalGroupId) -> bool:
            return False

    assert not policy.is_allowed(PROPERTY, service, groups=NoGroups())


def test_allowed_methods() -> None:
    policy = AccessPolicy(RULES)
    known = [GET_PARCEL, LIST_PARCELS, GET_OWNER, "/cadastre.v1.Owners/Other"]
    assert policy.allowed_methods(TAX, REGISTRY, known, groups=SNAP) == (GET_PARCEL,)
    assert policy.allowed_methods(PROPERTY, REGISTRY, known, groups=SNAP) == (
        LIST_PARCELS,
        GET_OWNER,
        "/cadastre.v1.Owners/Other",
    )
    assert policy.allowed_methods(LOANS, REGISTRY, known, groups=SNAP) == ()
    with pytest.raises(InvalidIdentifierError):
        policy.allowed_methods(TAX, REGISTRY, ["not a path"], groups=SNAP)


def test_policy_views() -> None:
    policy = AccessPolicy([*RULES, RULES[0]], generation=7)
    assert len(policy) == 4
    assert policy.generation == 7
    assert policy.rules == tuple(sorted(RULES))
    assert list(policy) == list(policy.rules)
    assert policy.rules_for(ARCHIVE) == (RULES[3],)
    assert policy.rules_for(TAX) == ()
    assert "rules=4" in repr(policy)
    with pytest.raises(TypeError):
        AccessPolicy(["not a rule"])  # type: ignore[list-item]


# -- the store, on SQLite and PostgreSQL ------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> dt.datetime:
        self.now += dt.timedelta(seconds=1)
        return self.now


StoreFactory = Callable[[], SqlAclStore]


@pytest.fixture(
    params=[pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)]
)
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Opens stores on one database (several opens see the same rules)."""
    opened: list[SqlAclStore] = []
    clock = Clock()
    if request.param == "sqlite":

        def factory() -> SqlAclStore:
            opened.append(SqlAclStore.open_sqlite(tmp_path / "acl.db", clock=clock))
            return opened[-1]

        yield factory
    else:
        dsn = request.getfixturevalue("postgres_dsn")

        def factory() -> SqlAclStore:
            opened.append(SqlAclStore.open_postgres(dsn, clock=clock))
            return opened[-1]

        yield factory
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: StoreFactory) -> SqlAclStore:
    return open_store()


def test_store_grant_list_revoke(store: SqlAclStore) -> None:
    assert store.list_rules() == ()
    assert store.generation() == 0
    for rule in RULES:
        store.grant(rule, actor="admin")
    assert store.list_rules() == tuple(sorted(RULES))
    assert store.list_rules(ARCHIVE) == (RULES[3],)
    assert store.list_rules(TAX) == ()
    store.revoke(RULES[0], actor="admin")
    assert store.list_rules(REGISTRY) == tuple(sorted(RULES[1:3]))
    assert store.generation() == 5


def test_store_refusals_change_nothing(store: SqlAclStore) -> None:
    store.grant(RULES[0], actor="admin")
    with pytest.raises(AclStoreError) as info:
        store.grant(RULES[0], actor="admin")
    assert (info.value.code, info.value.origin) == (ErrorCode.ALREADY_EXISTS, Origin.CLIENT)
    assert str(RULES[0].subject) in info.value.message
    with pytest.raises(AclStoreError) as info:
        store.revoke(RULES[1], actor="admin")
    assert (info.value.code, info.value.origin) == (ErrorCode.NOT_FOUND, Origin.CLIENT)
    with pytest.raises(AclStoreError) as info:
        store.grant(RULES[1], actor="")
    assert info.value.code is ErrorCode.INVALID_REQUEST
    with pytest.raises(AclStoreError):
        store.grant(RULES[1], actor="bad\nactor")
    assert store.list_rules() == (RULES[0],)
    assert store.generation() == 1
    assert len(store.audit_log()) == 1


def test_store_audit_one_entry_per_change(store: SqlAclStore) -> None:
    granted = store.grant(RULES[1], actor="alice")
    revoked = store.revoke(RULES[1], actor="bob")
    regranted = store.grant(RULES[1], actor="alice")
    log = store.audit_log()
    assert log == (granted, revoked, regranted)
    assert [c.sequence for c in log] == [1, 2, 3]
    assert [(c.actor, c.action) for c in log] == [
        ("alice", AclAction.GRANT),
        ("bob", AclAction.REVOKE),
        ("alice", AclAction.GRANT),
    ]
    assert all(c.rule == RULES[1] for c in log)
    assert log[0].at < log[1].at < log[2].at
    assert all(c.at.tzinfo is not None for c in log)
    assert store.audit_log(after=1, limit=1) == (revoked,)
    with pytest.raises(AclStoreError):
        store.audit_log(limit=0)


def test_store_audit_entry_as_log_record(store: SqlAclStore) -> None:
    change = store.grant(RULES[2], actor="alice")
    record = change.log_record()
    assert record.kind is RecordKind.ADMIN_CHANGE
    assert record.message_id == "acl-change-1"
    assert record.body == change.canonical_json()
    assert json.loads(change.canonical_json()) == {
        "type": "acl_change",
        "sequence": 1,
        "at": change.at.isoformat(),
        "actor": "alice",
        "action": "grant",
        "provider": str(REGISTRY),
        "target": LIST_PARCELS,
        "subject": str(G_OFFICIALS),
    }
    # Deterministic: the same change gives the same bytes.
    assert AclChange(**{f: getattr(change, f) for f in change.__slots__}).canonical_json() == (
        change.canonical_json()
    )


def test_store_policy_and_swap(open_store: StoreFactory) -> None:
    """A second store on the same database (another gateway node) sees the change."""
    admin, node = open_store(), open_store()
    cached = node.policy()
    assert (len(cached), cached.generation) == (0, 0)
    assert node.policy_if_changed(cached) is None
    service = _call(REGISTRY, GET_PARCEL)
    assert not cached.is_allowed(TAX, service, groups=SNAP)

    admin.grant(RULES[0], actor="admin")
    swapped = node.policy_if_changed(cached)
    assert swapped is not None
    assert swapped.generation == 1
    assert swapped.is_allowed(TAX, service, groups=SNAP)
    assert not cached.is_allowed(TAX, service, groups=SNAP)  # the old one never changes
    assert node.policy_if_changed(swapped) is None

    admin.revoke(RULES[0], actor="admin")
    again = node.policy_if_changed(swapped)
    assert again is not None
    assert again.generation == 2
    assert not again.is_allowed(TAX, service, groups=SNAP)


def test_store_persists_across_reopen(open_store: StoreFactory) -> None:
    first = open_store()
    first.grant(RULES[1], actor="admin")
    first.close()
    second = open_store()
    assert second.list_rules() == (RULES[1],)
    assert second.generation() == 1


def test_store_closed_is_refused(store: SqlAclStore) -> None:
    store.close()
    store.close()
    with pytest.raises(AclStoreError) as info:
        store.list_rules()
    assert (info.value.code, info.value.origin) == (ErrorCode.INTERNAL, Origin.GATEWAY)


def test_store_context_manager(tmp_path: Path) -> None:
    with SqlAclStore.open_sqlite(tmp_path / "acl.db") as store:
        store.grant(RULES[0], actor="local")
    with pytest.raises(AclStoreError):
        store.generation()


def test_store_refuses_other_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "acl.db"
    SqlAclStore.open_sqlite(path).close()
    raw = sqlite3.connect(path)
    with raw:
        raw.execute("UPDATE acl_schema_version SET version = 99")
    raw.close()
    with pytest.raises(AclStoreError) as info:
        SqlAclStore.open_sqlite(path)
    assert info.value.code is ErrorCode.INVALID_CONFIG
    assert "99" in info.value.message


def test_store_wraps_driver_errors(tmp_path: Path) -> None:
    with pytest.raises(AclStoreError) as info:
        SqlAclStore.open_sqlite(tmp_path / "missing-dir" / "acl.db")
    assert (info.value.code, info.value.origin) == (ErrorCode.INTERNAL, Origin.GATEWAY)


def test_rules_of_mixed_targets_and_subject_kinds_have_a_total_order() -> None:
    provider = SubsystemId.parse("UZ/GOV/CADASTRE/registry")
    rules = [
        AccessRule(
            provider=provider,
            target=AccessTarget.parse("/cadastre.v1.Cadastre/GetParcel"),
            subject=SubsystemId.parse("UZ/GOV/MINJUST/property"),
        ),
        AccessRule(
            provider=provider,
            target=AccessTarget.parse("cadastre.v1.Cadastre"),
            subject=MemberId.parse("UZ/GOV/MINJUST"),
        ),
        AccessRule(
            provider=provider,
            target=AccessTarget.parse("cadastre.v1.Cadastre"),
            subject=GlobalGroupId.parse("UZ/group:registries"),
        ),
    ]
    ordered = sorted(rules)
    backwards = [rules[2], rules[1], rules[0]]
    assert sorted(backwards) == ordered
    assert [str(r.target) for r in ordered] == [
        "cadastre.v1.Cadastre",
        "cadastre.v1.Cadastre",
        "/cadastre.v1.Cadastre/GetParcel",
    ]
    assert len(AccessPolicy(rules).rules) == 3
