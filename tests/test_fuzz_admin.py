"""Fuzzing the gateway's admin API (``gateway.admin``) over the admin port of a running
``serai gateway serve`` process.

The module brings up, with ``serai`` commands as an operator would, the development PKI
with its OCSP responder and TSA, the registry, and one provider gateway
(``UZ/GOV/CADASTRE/gw:main`` serving ``UZ/GOV/CADASTRE/registry``). Hypothesis then
calls every rpc of ``serai.admin.v1.GatewayAdmin`` on the gateway's admin port with

- arbitrary request bytes (random, protobuf wire records, mutations of a valid request);
- well-formed requests whose fields hold hostile values: identifier-like text, huge
  strings (up to 250,000 characters), the empty string, control characters, non-ASCII
  and look-alike characters, extreme and "negative" (two's complement) integers,
  unknown enum values, oneofs left unset;
- hostile credentials: no ``authorization`` metadata, other schemes, mutated tokens,
  tokens signed by another key, for another audience, expired, without a role, with an
  unknown role, an observer's token for a change, and tokens whose subject is hostile
  text (control characters, non-ASCII; at most 300 characters, so that the token stays
  under the 8 KiB of request metadata grpc core accepts before any handler runs).

The property of every answer (DESIGN §4, ``gateway.admin`` guarantees 1-3): it is OK,
or a refusal whose status is :func:`serai.errors.grpc_status_for` of the code in its
``x-road-error`` trailer, one of the codes the admin API documents; never UNKNOWN or
INTERNAL, never a Python exception or stack trace in the details. A caller without a
valid token gets UNAUTHENTICATED (``client:unauthenticated``) from every rpc, whatever
the bytes, and one without the role PERMISSION_DENIED (``client:permission_denied``);
after that, bytes that do not parse are ``invalid_request`` and a request over 1 MiB
``message_too_large``. Only the message-log rpcs the gateway does not implement yet
answer UNIMPLEMENTED, and only to an authenticated caller with the role and a request
that parses (there is no ``x-road-error`` code for it). A refused change writes
nothing: the access rules (ListAccess) and the message log's size (GetStatus) are
unchanged; an accepted one adds exactly its rule (or removes it) and one log record.
After the fuzzing the gateway process is still running and still answers.

The default run fires 100 inputs per fuzz test; the ``slow`` twins 500 (times
``SERAI_FUZZ_DEEP``). The regression tests pin each defect the fuzzing found; the one
about an exception outside the guarded path runs an in-process ``AdminServer`` (a
running gateway cannot be made to fail there).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf import message_factory
from google.protobuf.message import DecodeError
from hypothesis import given
from hypothesis import strategies as st

from certs.keys import load_private_key
from gateway.aclstore import SqlAclStore
from gateway.admin import (
    ROLE_ADMIN,
    ROLE_OBSERVER,
    AdminServer,
    RuntimeStatus,
    rule_from_proto,
    rule_to_proto,
)
from gateway.commit import InMemoryExchangeLog
from gateway.config import load_config
from serai._benchfed import start_pki, start_registry
from serai._demoprocs import SERAI, Service, must, run_serai, stop_all
from serai.cliutil import read_passphrase
from serai.errors import ERROR_METADATA_KEY, ErrorCode, grpc_status_for
from serai.identifiers import GatewayId, SubsystemId
from serai.localprocs import free_port, wait_until_published
from serai.tokens import TokenIssuer, TokenVerifier
from serai_proto.admin.v1 import admin_pb2 as pb
from tests import fuzzstrategies as fz

GATEWAY: Final = "UZ/GOV/CADASTRE/gw:main"
PROVIDER: Final = "UZ/GOV/CADASTRE/registry"
#: A registered subsystem of the same member that this gateway does not serve.
NOT_SERVED: Final = "UZ/GOV/CADASTRE/archive"
GET_PARCEL: Final = "/cadastre.v1.Cadastre/GetParcel"

_SERVICE: Final = pb.DESCRIPTOR.services_by_name["GatewayAdmin"]
_METHODS: Final = sorted(_SERVICE.methods_by_name)
#: The generated request class of each method (looked up once: building classes while
#: Hypothesis traces draws trips a CPython 3.11 tracing bug).
_REQUEST_TYPES: Final[dict[str, Any]] = {
    name: message_factory.GetMessageClass(_SERVICE.methods_by_name[name].input_type)
    for name in _METHODS
}
#: Largest request the admin API takes.
_MAX_REQUEST_BYTES: Final = 1024 * 1024
_STREAMING: Final = frozenset(m.name for m in _SERVICE.methods if m.server_streaming)
_CHANGES: Final = frozenset({"GrantAccess", "RevokeAccess", "SetSubsystemSettings"})
_IMPLEMENTED: Final = frozenset({"GrantAccess", "RevokeAccess", "ListAccess", "GetStatus"})
#: The codes the admin API documents for a refused call (never ``internal``).
ADMIN_CODES: Final = {
    ErrorCode.INVALID_REQUEST,
    ErrorCode.INVALID_IDENTIFIER,
    ErrorCode.ALREADY_EXISTS,
    ErrorCode.NOT_FOUND,
    ErrorCode.UNAUTHENTICATED,
    ErrorCode.PERMISSION_DENIED,
    ErrorCode.MESSAGE_TOO_LARGE,
}


# -- the running gateway ----------------------------------------------------------------------


@dataclass
class Answer:
    code: grpc.StatusCode
    details: str
    error: str | None


@dataclass
class Admin:
    """The provider gateway's process, a channel to its admin port, and token minters."""

    gateway: Service
    channel: grpc.Channel
    issuer: TokenIssuer  # the gateway's own token key (``serai gateway token issue``)
    audience: str
    admin_token: str
    observer_token: str

    def __repr__(self) -> str:
        return "Admin(...)"

    def call(self, method: str, raw: bytes, authorization: str | None) -> Answer:
        """One raw call of ``method`` with the ``authorization`` value (none if None)."""
        path = f"/{_SERVICE.full_name}/{method}"
        metadata = () if authorization is None else (("authorization", authorization),)
        try:
            if method in _STREAMING:
                for _ in self.channel.unary_stream(path, None, None)(
                    raw, metadata=metadata, timeout=60
                ):
                    pass
            else:
                self.channel.unary_unary(path, None, None)(raw, metadata=metadata, timeout=60)
        except grpc.RpcError as exc:
            failed: Any = exc
            error = None
            for key, value in failed.trailing_metadata() or ():
                if key == ERROR_METADATA_KEY:
                    error = value
            return Answer(failed.code(), failed.details() or "", error)
        return Answer(grpc.StatusCode.OK, "", None)

    def state(self) -> tuple[tuple[bytes, ...], int]:
        """The access rules (serialized, sorted) and the message log's size."""
        rules = pb.ListAccessResponse.FromString(
            self.channel.unary_unary(f"/{_SERVICE.full_name}/ListAccess", None, None)(
                b"", metadata=_bearer(self.admin_token), timeout=60
            )
        )
        status = pb.GetStatusResponse.FromString(
            self.channel.unary_unary(f"/{_SERVICE.full_name}/GetStatus", None, None)(
                b"", metadata=_bearer(self.observer_token), timeout=60
            )
        )
        entries = tuple(sorted(e.rule.SerializeToString(deterministic=True) for e in rules.rules))
        return entries, status.log_size


def _bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture(scope="module")
def admin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Admin]:
    workdir = tmp_path_factory.mktemp("fuzz-admin")
    services: list[Service] = []
    try:
        yield _bring_up(workdir, services)
    finally:
        stopped = stop_all(services)
        assert all(status == 0 and reported for _, status, reported in stopped), [
            (s.name, status, reported) for s, status, reported in stopped
        ]


def _bring_up(workdir: Path, services: list[Service]) -> Admin:
    logs = workdir / "logs"
    logs.mkdir()

    def spawn(name: str, argv: list[str], stopped_event: str) -> Service:
        service = Service.start(name, argv, log=logs / f"{name}.log", stopped_event=stopped_event)
        services.append(service)
        return service

    pki, reg = workdir / "pki", workdir / "registry"
    start_pki(pki, spawn)
    env = start_registry(reg, spawn, pki=pki, token=workdir / "registry.jwt", subject="fuzz")
    anchor = workdir / "anchor.bin"
    must(run_serai("registry", "anchor", "--config", reg / "registry.toml", "--out", anchor))
    must(run_serai("registry", "member", "add", "UZ/GOV/CADASTRE", "--name", "Cadastre", env=env))
    for subsystem in (PROVIDER, NOT_SERVED):
        must(run_serai("registry", "subsystem", "add", subsystem, env=env))
    out = must(
        run_serai(
            "gateway", "init", "--dir", workdir / "provider", "--gateway-id", GATEWAY,
            "--pki", pki, "--anchor", anchor, "--peer-listen", f"127.0.0.1:{free_port()}",
            "--is-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
            "--provider", f"{PROVIDER}=127.0.0.1:{free_port()}",
        )
    )  # fmt: skip
    command = next(line for line in out.splitlines() if "serai registry gateway add" in line)
    must(run_serai(*shlex.split(command)[1:], env=env))  # what `gateway init` says to run
    wait_until_published(anchor, {GATEWAY})
    config_path = workdir / "provider" / "gateway.toml"
    gateway = spawn(
        "gateway", [*SERAI, "gateway", "serve", "--config", str(config_path)], "gateway_stopped"
    )
    address = str(gateway.wait_for("gateway_listening")["admin"])

    config = load_config(config_path)
    assert config.token_signing_key is not None
    key: Any = load_private_key(
        config.token_signing_key, passphrase=read_passphrase(config.key_passphrase_file)
    )
    issuer = TokenIssuer(key=key, issuer=f"serai-gateway:{GATEWAY}", lifetime_s=7200)
    audience = config.token_audience
    return Admin(
        gateway=gateway,
        channel=grpc.insecure_channel(address),
        issuer=issuer,
        audience=audience,
        admin_token=issuer.issue(subject="fuzz", roles=[ROLE_ADMIN], audience=audience),
        observer_token=issuer.issue(subject="olga", roles=[ROLE_OBSERVER], audience=audience),
    )


# -- what is sent ---------------------------------------------------------------------------------

_VALID_IDS = [
    PROVIDER,
    NOT_SERVED,
    "UZ/GOV/MINJUST/property",
    "UZ/GOV/MINJUST",
    "UZ/group:officials",
]
_TEXTS = fz.hostile_texts(_VALID_IDS)
#: Hostile text for a token's claims, at most 300 characters: a token then stays under
#: the 8 KiB of request metadata grpc core accepts (above it grpc refuses the call
#: itself, RESOURCE_EXHAUSTED without an ``x-road-error``, before any handler runs).
_SHORT_TEXTS = _TEXTS.filter(bool).map(lambda text: text[:300])


@st.composite
def _rules(draw: st.DrawFn) -> pb.AccessRule:
    """Access rules from a small valid pool (so that grants, duplicate grants and revokes
    meet), or with one or every field hostile; targets and subjects of every kind, or
    none."""
    hostile = draw(st.sampled_from(["none"] * 4 + ["provider", "target", "subject", "all"]))

    def text(field: str, valid: list[str]) -> str:
        if hostile in (field, "all"):
            return draw(_TEXTS)
        return draw(st.sampled_from(valid))

    rule = pb.AccessRule(provider_subsystem=text("provider", [PROVIDER] * 3 + [NOT_SERVED]))
    target = draw(st.sampled_from(["method", "method", "service", "service", "none"]))
    if target == "method":
        rule.method = text("target", [GET_PARCEL])
    elif target == "service":
        rule.service = text("target", ["cadastre.v1.Cadastre"] * 3 + [GET_PARCEL])
    subject = draw(st.sampled_from(["subsystem"] * 3 + ["member", "global_group", "empty", "none"]))
    valid = {
        "subsystem": ["UZ/GOV/MINJUST/property"],
        "member": ["UZ/GOV/MINJUST"],
        "global_group": ["UZ/group:officials"],
    }
    if subject in valid:
        setattr(rule.subject, subject, text("subject", valid[subject]))
    elif subject == "empty":
        rule.subject.SetInParent()
    return rule


@st.composite
def _typed_request(draw: st.DrawFn, method: str) -> bytes:
    """A well-formed request of ``method`` with hostile field values."""
    message = _REQUEST_TYPES[method]()
    if method in ("GrantAccess", "RevokeAccess"):
        if draw(st.sampled_from([True] * 9 + [False])):  # else the rule is missing
            message.rule.CopyFrom(draw(_rules()))
    elif method == "ListAccess" and draw(st.booleans()):
        message.provider_subsystem = draw(st.sampled_from(["", PROVIDER, NOT_SERVED]))
    else:
        _fill(draw, message, depth=0)
    raw = bytes(message.SerializeToString())
    if draw(st.sampled_from([False] * 7 + [True])):  # unknown fields after it: ignored
        raw += draw(fz.protobuf_wire(max_records=3))
    return raw


_UNSIGNED = st.sampled_from([0, 1, 2**31 - 1, 2**32, 2**63 - 1, 2**64 - 1])  # 2**64-1 is -1
_ENUMS = st.sampled_from([0, 1, 2, 3, 7, 2**31 - 1, -1, -(2**31)])


def _fill(draw: st.DrawFn, message: Any, depth: int) -> None:
    """Every field of ``message`` (one level of nesting) hostile, or left unset."""
    for field in message.DESCRIPTOR.fields:
        if not draw(st.sampled_from([True] * 4 + [False])):
            continue  # left unset
        repeated = bool(field.is_repeated)
        values: list[Any]
        if field.type == field.TYPE_STRING:
            values = draw(st.lists(_TEXTS, min_size=1, max_size=3 if repeated else 1))
        elif field.type == field.TYPE_MESSAGE and depth == 0 and not repeated:
            _fill(draw, getattr(message, field.name), depth + 1)
            getattr(message, field.name).SetInParent()
            continue
        elif field.type == field.TYPE_ENUM:
            values = [draw(_ENUMS)]
        elif field.type in (field.TYPE_UINT64, field.TYPE_UINT32):
            value = draw(_UNSIGNED)
            values = [value if field.type == field.TYPE_UINT64 else value % 2**32]
        else:
            continue
        fz.set_field(message, field, values)


def _parses(method: str, raw: bytes) -> bool:
    try:
        _REQUEST_TYPES[method].FromString(raw)
    except DecodeError:
        return False
    return True


# -- the property -------------------------------------------------------------------------------


def _check(method: str, raw: bytes, answer: Answer, *, authenticated: bool, role: str) -> None:
    """The answer is OK or a documented refusal (module docstring)."""
    assert "Traceback" not in answer.details, answer
    assert "Unexpected <class" not in answer.details, answer
    assert answer.code not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), answer
    allowed = role == ROLE_ADMIN or (role == ROLE_OBSERVER and method not in _CHANGES)
    if answer.code is grpc.StatusCode.UNIMPLEMENTED:
        assert method not in _IMPLEMENTED, answer
        assert authenticated, answer
        assert allowed, answer
        assert _parses(method, raw), answer
        assert answer.error is None, answer
        assert answer.details == f"{method} is not implemented by this gateway's admin API yet"
        return
    if answer.code is grpc.StatusCode.OK:
        assert method in _IMPLEMENTED, answer
        assert authenticated, answer
        assert allowed, answer
        assert _parses(method, raw), answer
        return
    assert answer.error is not None, answer
    origin, name, message = answer.error.split(":", 2)
    assert origin == "client", answer
    assert ErrorCode(name) in ADMIN_CODES, answer
    assert answer.code is grpc_status_for(ErrorCode(name)), answer
    if not authenticated:
        assert name == "unauthenticated", answer
    elif not allowed:
        assert name == "permission_denied", answer
    elif len(raw) > _MAX_REQUEST_BYTES:
        assert name == "message_too_large", answer
    elif not _parses(method, raw):
        assert name == "invalid_request", answer
        assert message.startswith("the request is not a serialized "), answer


def _fire(admin: Admin, method: str, raw: bytes, authorization: str | None, **who: Any) -> Answer:
    """Call, check the answer, and check what a change wrote."""
    before = admin.state() if method in _CHANGES else None
    answer = admin.call(method, raw, authorization)
    _check(method, raw, answer, **who)
    if before is not None:
        rules, size = admin.state()
        if answer.code is grpc.StatusCode.OK:
            request = _REQUEST_TYPES[method].FromString(raw)
            rule = rule_to_proto(rule_from_proto(request.rule)).SerializeToString(
                deterministic=True
            )
            grown = set(rules) ^ set(before[0])
            assert grown == {rule}, (method, answer)
            assert (rule in rules) is (method == "GrantAccess")
            assert size == before[1] + 1, (method, size, before)
        else:
            assert (rules, size) == before, ("a refused change wrote something", method, answer)
    assert admin.gateway.running(), "the gateway process died"
    return answer


def _still_serves(admin: Admin) -> None:
    """Still up: a grant and its revoke are accepted and logged."""
    request = pb.GrantAccessRequest(rule=pb.AccessRule(provider_subsystem=PROVIDER))
    request.rule.method = "/after.v1.Fuzz/Call"
    request.rule.subject.subsystem = "UZ/GOV/MINJUST/property"
    raw = request.SerializeToString()
    who = {"authenticated": True, "role": ROLE_ADMIN}
    _fire(admin, "GrantAccess", raw, f"Bearer {admin.admin_token}", **who)
    _fire(admin, "RevokeAccess", raw, f"Bearer {admin.admin_token}", **who)
    assert admin.gateway.running()


# -- the tests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("examples", fz.SERVER_EXAMPLES)
def test_admin_api_requests(admin: Admin, examples: int) -> None:
    """Arbitrary request bytes and hostile field values, as admin or observer."""

    @fz.server_settings(examples)
    @given(
        # the access-rights changes more often: they have the most to get wrong
        method=st.sampled_from(_METHODS + ["GrantAccess", "RevokeAccess"] * 4),
        data=st.data(),
        how=st.sampled_from(["typed"] * 4 + ["raw"]),
        role=st.sampled_from([ROLE_ADMIN] * 4 + [ROLE_OBSERVER]),
    )
    def fire(method: str, data: st.DataObject, how: str, role: str) -> None:
        raw = data.draw(_typed_request(method))
        if how == "raw":
            raw = fz.resolve(data.draw(fz.inputs(fz.raw_bytes(), fz.protobuf_wire())), raw)
        token = admin.admin_token if role == ROLE_ADMIN else admin.observer_token
        _fire(admin, method, raw, f"Bearer {token}", authenticated=True, role=role)

    fire()
    _still_serves(admin)


@pytest.mark.parametrize("examples", fz.SERVER_EXAMPLES)
def test_admin_api_credentials(admin: Admin, examples: int) -> None:
    """Hostile credentials: refused with the precise code before anything is read."""
    other = TokenIssuer(key=ec.generate_private_key(ec.SECP256R1()), issuer="intruder")
    past = TokenIssuer(
        key=admin.issuer._key,
        issuer=admin.issuer.issuer,
        clock=lambda: dt.datetime.now(dt.UTC) - dt.timedelta(hours=3),
    )

    @fz.server_settings(examples)
    @given(
        method=st.sampled_from(_METHODS),
        data=st.data(),
        how=st.sampled_from(
            ["none", "scheme", "mutated", "other-key", "audience", "expired", "roles", "subject"]
        ),
        mutation=fz.mutations(),
    )
    def fire(method: str, data: st.DataObject, how: str, mutation: fz.Mutation) -> None:
        raw = data.draw(_typed_request(method) | fz.raw_bytes())
        authenticated, role = False, ""
        if how == "none":
            authorization = data.draw(st.sampled_from([None, "", " ", "Bearer", "Bearer  "]))
        elif how == "scheme":
            scheme = data.draw(st.sampled_from(["Basic", "Token", "JWT", "Bearer:", "Bearerx"]))
            authorization = f"{scheme} {admin.admin_token}"
        elif how == "mutated":
            token = mutation.text(admin.admin_token)
            # gRPC metadata carries printable ASCII only; anything else is sent as none.
            printable = token.isascii() and token.isprintable() and token == token.strip()
            authorization = f"Bearer {token}" if printable else None
            authenticated, role = token == admin.admin_token, ROLE_ADMIN
        elif how == "other-key":
            token = other.issue(subject="fuzz", roles=[ROLE_ADMIN], audience=admin.audience)
            authorization = f"Bearer {token}"
        elif how == "audience":
            audience = data.draw(
                st.sampled_from(["serai-gateway:UZ/GOV/MINJUST/gw:main", "serai-registry:UZ"])
                | _SHORT_TEXTS
            )
            token = admin.issuer.issue(subject="fuzz", roles=[ROLE_ADMIN], audience=audience)
            authorization = f"Bearer {token}"
            authenticated, role = audience == admin.audience, ROLE_ADMIN
        elif how == "expired":
            token = past.issue(
                subject="fuzz", roles=[ROLE_ADMIN], audience=admin.audience, lifetime_s=3600
            )
            authorization = f"Bearer {token}"
        elif how == "roles":
            roles = data.draw(
                st.lists(
                    st.sampled_from(["", "admin", "Gateway-Admin", "registry-admin", ROLE_OBSERVER])
                    | st.text(max_size=20),
                    max_size=3,
                )
            )
            token = admin.issuer.issue(subject="fuzz", roles=roles, audience=admin.audience)
            authorization = f"Bearer {token}"
            authenticated = True
            role = ROLE_OBSERVER if ROLE_OBSERVER in roles else "none"
        else:
            subject = data.draw(_SHORT_TEXTS)
            role = data.draw(st.sampled_from([ROLE_ADMIN, ROLE_OBSERVER]))
            token = admin.issuer.issue(subject=subject, roles=[role], audience=admin.audience)
            authorization, authenticated = f"Bearer {token}", True
        _fire(admin, method, raw, authorization, authenticated=authenticated, role=role)

    fire()
    _still_serves(admin)


def test_request_bytes_that_do_not_parse_are_refused_after_authentication(admin: Admin) -> None:
    """Regression (fixed in gateway/admin): grpc answered every rpc's unparsable request
    UNKNOWN ``Unexpected <class 'google.protobuf.message.DecodeError'>``, with no
    ``x-road-error``, and to callers without a token too."""
    for method in _METHODS:
        answer = admin.call(method, b"\xff", f"Bearer {admin.admin_token}")
        assert answer.code is grpc.StatusCode.INVALID_ARGUMENT, (method, answer)
        assert answer.error is not None
        expected = f"client:invalid_request:the request is not a serialized {method}Request"
        assert answer.error.startswith(expected), answer
        answer = admin.call(method, b"\xff", None)
        assert answer.code is grpc.StatusCode.UNAUTHENTICATED, (method, answer)
        assert answer.error == (
            "client:unauthenticated:missing authorization metadata (Bearer token)"
        )
    # a string field that is not UTF-8 (field 1 of the rule: provider_subsystem)
    raw = fz.field(1, fz.field(1, b"\xff"))
    answer = admin.call("GrantAccess", raw, f"Bearer {admin.admin_token}")
    assert answer.code is grpc.StatusCode.INVALID_ARGUMENT, answer
    _still_serves(admin)


def test_unimplemented_rpcs_authenticate_first(admin: Admin) -> None:
    """Regression (fixed in gateway/admin): the message-log rpcs answered UNIMPLEMENTED
    ``Unexpected <class 'NotImplementedError'>: Method not implemented!`` to anyone, a
    caller without a token included."""
    for method in sorted(set(_METHODS) - _IMPLEMENTED):
        answer = admin.call(method, b"", None)
        assert answer.code is grpc.StatusCode.UNAUTHENTICATED, (method, answer)
        assert answer.error is not None
        assert answer.error.startswith("client:unauthenticated:"), answer
        answer = admin.call(method, b"", "Bearer not.a.token")
        assert answer.code is grpc.StatusCode.UNAUTHENTICATED, (method, answer)
        answer = admin.call(method, b"", f"Bearer {admin.observer_token}")
        if method in _CHANGES:
            assert answer.code is grpc.StatusCode.PERMISSION_DENIED, (method, answer)
            assert answer.error is not None
            assert answer.error.startswith("client:permission_denied:"), answer
        else:
            assert answer.code is grpc.StatusCode.UNIMPLEMENTED, (method, answer)
            assert answer.details == f"{method} is not implemented by this gateway's admin API yet"
        answer = admin.call(method, b"", f"Bearer {admin.admin_token}")
        assert answer.code is grpc.StatusCode.UNIMPLEMENTED, (method, answer)
        assert answer.error is None
    assert admin.gateway.running()


def test_an_exception_outside_the_guarded_work_is_internal_not_unknown(tmp_path: Path) -> None:
    """Regression (fixed in gateway/admin): GetStatus read the runtime's status outside
    the guarded path, so an exception there (a closed store, a failed configuration read)
    reached grpc, which answered UNKNOWN with the exception's type and text."""

    def failing_status() -> RuntimeStatus:
        raise RuntimeError("/var/lib/serai/secret.db is locked")

    async def call() -> Answer:
        key = ec.generate_private_key(ec.SECP256R1())
        audience = f"serai-gateway:{GATEWAY}"
        token = TokenIssuer(key=key, issuer="test").issue(
            subject="olga", roles=[ROLE_OBSERVER], audience=audience
        )
        with SqlAclStore.open_sqlite(tmp_path / "acl.db") as store:
            server = AdminServer(
                gateway_id=GatewayId.parse(GATEWAY),
                store=store,
                log=InMemoryExchangeLog(),
                verifier=TokenVerifier(public_keys=[key.public_key()], audience=audience),
                providers=[SubsystemId.parse(PROVIDER)],
                listen=("127.0.0.1", 0),
                status=failing_status,
            )
            await server.start()
            try:
                async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                    stub = channel.unary_unary(f"/{_SERVICE.full_name}/GetStatus", None, None)
                    try:
                        await stub(b"", metadata=_bearer(token), timeout=60)
                    except grpc.aio.AioRpcError as exc:
                        found: Any = exc.trailing_metadata() or ()
                        error = next((v for k, v in found if k == ERROR_METADATA_KEY), None)
                        return Answer(exc.code(), exc.details() or "", error)
                    return Answer(grpc.StatusCode.OK, "", None)
            finally:
                await server.stop(1)

    answer = asyncio.run(call())
    assert answer.code is grpc.StatusCode.INTERNAL, answer
    assert answer.details == "internal error", answer
    assert answer.error == "gateway:internal:internal error", answer


def test_a_request_over_one_mib_is_refused_with_its_code_after_authentication(
    admin: Admin,
) -> None:
    """Regression (fixed in gateway/admin): the port's gRPC receive limit answered a
    request over 1 MiB with a bare RESOURCE_EXHAUSTED, no ``x-road-error``, to callers
    without a token too."""
    request = pb.ListAccessRequest(provider_subsystem="a" * _MAX_REQUEST_BYTES)
    raw = request.SerializeToString()
    answer = admin.call("ListAccess", raw, f"Bearer {admin.observer_token}")
    assert answer.code is grpc.StatusCode.RESOURCE_EXHAUSTED, answer
    assert answer.error is not None
    assert answer.error.startswith(
        f"client:message_too_large:the request is {len(raw)} bytes; the admin API takes at "
        f"most {_MAX_REQUEST_BYTES} bytes"
    ), answer
    before = admin.state()
    grant = pb.GrantAccessRequest(rule=pb.AccessRule(provider_subsystem=PROVIDER))
    grant.rule.method = GET_PARCEL
    grant.rule.subject.subsystem = "UZ/GOV/MINJUST/property"
    raw = grant.SerializeToString() + fz.field(15, b"x" * _MAX_REQUEST_BYTES)  # unknown field
    answer = admin.call("GrantAccess", raw, f"Bearer {admin.admin_token}")
    assert answer.code is grpc.StatusCode.RESOURCE_EXHAUSTED, answer
    assert admin.state() == before
    answer = admin.call("GrantAccess", raw, None)
    assert answer.code is grpc.StatusCode.UNAUTHENTICATED, answer
    assert answer.error == "client:unauthenticated:missing authorization metadata (Bearer token)"
    _still_serves(admin)
