"""The gateway's admin API (``serai.admin.v1.GatewayAdmin``): access rights and status.

:class:`GatewayAdminService` implements GrantAccess, RevokeAccess, ListAccess and
GetStatus over a :class:`~gateway.aclstore.SqlAclStore` and an
:class:`~gateway.commit.ExchangeLog`; :class:`AdminServer` runs it on its own port with
the gRPC health and reflection services. The other rpcs of the service (subsystem
settings, tree heads, proofs, evidence export) belong to the message log and are
answered UNIMPLEMENTED, after authentication, until it lands (there is no
``x-road-error`` code for UNIMPLEMENTED, so that answer carries none).

The port parses the request bytes itself (:func:`_add_service`), not grpc's generated
deserializer: bytes that are not the rpc's request message are refused with
``invalid_request`` after authentication, instead of grpc's UNKNOWN naming the
parser's exception. Likewise the port sets no gRPC receive limit: a request over
1 MiB is refused by the rpc, after authentication, with ``message_too_large``, not by
grpc with a bare RESOURCE_EXHAUSTED (grpc's limit bounds no memory anyway: it reads the
whole message first; see SECURITY.md).

Guarantees of every rpc:

1. Authentication first: the ``authorization: Bearer <jwt>`` metadata must verify
   (:class:`serai.tokens.TokenVerifier`, audience ``serai-gateway:<gateway id>``), else
   UNAUTHENTICATED; changes need the role ``gateway-admin``, reads ``observer`` or
   ``gateway-admin``, else PERMISSION_DENIED. Nothing is parsed or read before that,
   not even the request bytes, and the unimplemented rpcs check it too.
2. Refusals are sent in one place (:func:`serai.rpcerrors.abort_with`): the status
   comes from :func:`serai.errors.grpc_status_for`, the trailing metadata
   ``x-road-error`` carries ``origin:code:message``, and the message names the request
   field. An unexpected exception, wherever it is raised in an rpc, is logged and sent
   as INTERNAL ``internal error``: never a stack trace, never grpc's UNKNOWN.
3. Every accepted change is recorded twice, in this order: by the store, in the same
   transaction as the change (its audit entry, actor = the token's ``sub``), and then in
   the message log as the change's ``ADMIN_CHANGE`` record
   (:meth:`gateway.aclstore.AclChange.log_record`). Changes are serialised so that the
   log holds them in audit order. If the log cannot take a record, the rpc fails with
   ``log_unavailable`` saying that the change was applied; the record is kept and
   committed, still in order, before the next change's record (and GetStatus reports it
   meanwhile). A gateway restart loses that pending record: the store's audit keeps it.
4. A rule can be granted only for a provider subsystem this gateway serves; any rule
   that exists can be revoked.
5. The store is called only from one worker thread, never on the event loop.
"""

# The rpc methods carry the names the generated servicer gives them.
# ruff: noqa: N802

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import grpc
from google.protobuf import message_factory
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from gateway.acl import AccessRule, AccessTarget
from gateway.aclstore import MAX_AUDIT_PAGE, AclAction, AclChange, SqlAclStore
from gateway.commit import ExchangeLog, LogIndex
from gateway.errors import GatewayError
from serai.cliutil import format_address, log_event
from serai.errors import ErrorCode, Origin, SeraiError
from serai.identifiers import (
    GatewayId,
    GlobalGroupId,
    MemberId,
    Subject,
    SubsystemId,
)
from serai.rpcerrors import abort_with, internal_error
from serai.rpcserver import bind_management_port, management_server, mark_serving
from serai.tokens import TokenClaims, TokenVerifier, bearer_token
from serai_proto.admin.v1 import admin_pb2 as pb
from serai_proto.admin.v1 import admin_pb2_grpc as pb_grpc

__all__ = [
    "ROLE_ADMIN",
    "ROLE_OBSERVER",
    "SERVICE_NAME",
    "AdminServer",
    "GatewayAdminService",
    "RuntimeStatus",
    "rule_from_proto",
    "rule_to_proto",
]

#: Role that may change access rights.
ROLE_ADMIN: Final = "gateway-admin"
#: Role that may only read.
ROLE_OBSERVER: Final = "observer"
#: Full name of the admin service (health and reflection report it).
SERVICE_NAME: Final = pb.DESCRIPTOR.services_by_name["GatewayAdmin"].full_name

_WRITE: Final = frozenset({ROLE_ADMIN})
_READ: Final = frozenset({ROLE_ADMIN, ROLE_OBSERVER})
#: The rpcs that change something (role ``gateway-admin``); every other one reads.
_CHANGES: Final = frozenset({"GrantAccess", "RevokeAccess", "SetSubsystemSettings"})
#: The rpcs :class:`GatewayAdminService` implements; the others answer UNIMPLEMENTED.
_IMPLEMENTED: Final = frozenset({"GrantAccess", "RevokeAccess", "ListAccess", "GetStatus"})
#: Largest request an rpc takes (its own check: the port sets no gRPC receive limit).
_MAX_MESSAGE_BYTES: Final = 1024 * 1024
_NO_RUNTIME: Final = "the exchange runtime does not report to this admin API (not running)"

_T = TypeVar("_T")
Context = grpc.aio.ServicerContext[Any, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class RuntimeStatus:
    """What the exchange runtime reports for GetStatus (its source is injected)."""

    globalconf_serial: int = 0
    globalconf_generated_at: dt.datetime | None = None
    globalconf_expires_at: dt.datetime | None = None
    log_size: int = 0
    timestamp_failures: int = 0
    ready: bool = False
    not_ready_reasons: tuple[str, ...] = field(default=(_NO_RUNTIME,))


def rule_to_proto(rule: AccessRule) -> pb.AccessRule:
    """``rule`` as its wire message."""
    message = pb.AccessRule(provider_subsystem=str(rule.provider))
    if rule.target.is_whole_service:
        message.service = rule.target.service_name
    else:
        message.method = str(rule.target)
    subject = rule.subject
    if isinstance(subject, SubsystemId):
        message.subject.subsystem = str(subject)
    elif isinstance(subject, MemberId):
        message.subject.member = str(subject)
    else:
        message.subject.global_group = str(subject)
    return message


def rule_from_proto(message: pb.AccessRule, where: str = "rule") -> AccessRule:
    """The rule a wire message names; refusals (``invalid_request`` or
    ``invalid_identifier``) name the field, below ``where``."""
    provider = _parsed(SubsystemId.parse, message.provider_subsystem, f"{where}.provider_subsystem")
    kind = message.WhichOneof("target")
    if kind is None:
        raise _invalid(f"{where}.target: give a method or a service")
    if kind == "method":
        target = _parsed(AccessTarget.method, message.method, f"{where}.method")
    else:
        text = message.service
        if text.startswith("/"):
            raise _invalid(f"{where}.service: expected package.Service, got a method path")
        target = _parsed(AccessTarget.service, text, f"{where}.service")
    if not message.HasField("subject"):
        raise _invalid(f"{where}.subject: missing")
    subject_kind = message.subject.WhichOneof("kind")
    subject: Subject
    if subject_kind == "subsystem":
        subject = _parsed(
            SubsystemId.parse, message.subject.subsystem, f"{where}.subject.subsystem"
        )
    elif subject_kind == "member":
        subject = _parsed(MemberId.parse, message.subject.member, f"{where}.subject.member")
    elif subject_kind == "global_group":
        subject = _parsed(
            GlobalGroupId.parse, message.subject.global_group, f"{where}.subject.global_group"
        )
    else:
        raise _invalid(f"{where}.subject: give a subsystem, a member or a global group")
    return AccessRule(provider=provider, target=target, subject=subject)


class GatewayAdminService(pb_grpc.GatewayAdminServicer):
    """The access-rights rpcs and GetStatus (see the module docstring for the rules)."""

    def __init__(
        self,
        *,
        gateway_id: GatewayId,
        store: SqlAclStore,
        log: ExchangeLog,
        verifier: TokenVerifier,
        providers: Iterable[SubsystemId],
        executor: concurrent.futures.Executor,
        status: Callable[[], RuntimeStatus] | None = None,
    ) -> None:
        self.gateway_id = gateway_id
        self._store = store
        self._log = log
        self._verifier = verifier
        self._providers = frozenset(providers)
        self._executor = executor
        self._status = status
        self._changes = asyncio.Lock()
        #: Changes applied and audited whose log record is not committed yet, in order.
        self._unlogged: list[AclChange] = []

    # -- access rights ------------------------------------------------------------------

    async def GrantAccess(
        self, request: pb.GrantAccessRequest, context: Context
    ) -> pb.GrantAccessResponse:
        def apply(claims: TokenClaims) -> AclChange:
            rule = self._rule(request, served=True)
            return self._store.grant(rule, actor=claims.subject)

        index = await self._change(context, apply)
        return pb.GrantAccessResponse(log_leaf_index=index)

    async def RevokeAccess(
        self, request: pb.RevokeAccessRequest, context: Context
    ) -> pb.RevokeAccessResponse:
        def apply(claims: TokenClaims) -> AclChange:
            rule = self._rule(request, served=False)
            return self._store.revoke(rule, actor=claims.subject)

        index = await self._change(context, apply)
        return pb.RevokeAccessResponse(log_leaf_index=index)

    async def ListAccess(
        self, request: pb.ListAccessRequest, context: Context
    ) -> pb.ListAccessResponse:
        def read(_claims: TokenClaims) -> pb.ListAccessResponse:
            provider = None
            if request.provider_subsystem:
                provider = _parsed(
                    SubsystemId.parse, request.provider_subsystem, "provider_subsystem"
                )
            rules = self._store.list_rules(provider)
            grants = self._latest_grants()
            entries = []
            for rule in rules:
                entry = pb.AccessRuleEntry(rule=rule_to_proto(rule))
                grant = grants.get(rule)
                if grant is not None:
                    entry.granted_at.CopyFrom(_timestamp(grant.at))
                    entry.granted_by = grant.actor
                entries.append(entry)
            return pb.ListAccessResponse(rules=entries)

        return await self._guarded(context, _READ, read)

    # -- status -------------------------------------------------------------------------

    async def GetStatus(
        self, request: pb.GetStatusRequest, context: Context
    ) -> pb.GetStatusResponse:
        await self._guarded(context, _READ, lambda _claims: None)
        runtime = self._status() if self._status is not None else RuntimeStatus()
        reasons = list(runtime.not_ready_reasons)
        if self._unlogged:
            reasons.append(
                f"{len(self._unlogged)} access-rights change(s) await the message log "
                f"(audit #{self._unlogged[0].sequence} onwards)"
            )
        response = pb.GetStatusResponse(
            gateway_id=str(self.gateway_id),
            globalconf_serial=runtime.globalconf_serial,
            log_size=runtime.log_size,
            timestamp_failures=runtime.timestamp_failures,
            ready=runtime.ready and not self._unlogged,
            not_ready_reasons=reasons,
        )
        if runtime.globalconf_generated_at is not None:
            response.globalconf_generated_at.CopyFrom(_timestamp(runtime.globalconf_generated_at))
        if runtime.globalconf_expires_at is not None:
            response.globalconf_expires_at.CopyFrom(_timestamp(runtime.globalconf_expires_at))
        return response

    # -- the paths every rpc takes ------------------------------------------------------

    async def _change(  # noqa: RET503  (abort_with raises)
        self, context: Context, apply: Callable[[TokenClaims], AclChange]
    ) -> LogIndex:
        async with self._changes:
            change = await self._guarded(context, _WRITE, apply)
            try:
                return await self._commit(change)
            except SeraiError as exc:
                error = exc
            except Exception as exc:  # noqa: BLE001  (reported as INTERNAL, never on the wire)
                error = internal_error(exc, event="gateway_admin_internal_error")
        await abort_with(context, error)

    async def _commit(self, change: AclChange) -> LogIndex:
        """Commit the pending records, then ``change``'s, to the message log, in order."""
        self._unlogged.append(change)
        index = LogIndex(0)
        try:
            while self._unlogged:
                index = await self._log.commit_admin_change(self._unlogged[0].log_record())
                self._unlogged.pop(0)
        except SeraiError as exc:
            log_event(
                "acl_change_not_logged",
                sequence=change.sequence,
                pending=len(self._unlogged),
                error=str(exc),
            )
            raise GatewayError(
                f"access-rights change #{change.sequence} ({change.action.value} "
                f"{change.rule}) was applied and audited, but the message log cannot record "
                f"it yet; it is retried with the next change: {exc.message}",
                code=ErrorCode.LOG_UNAVAILABLE,
                origin=Origin.GATEWAY,
            ) from exc
        return index

    async def _guarded(  # noqa: RET503  (abort_with raises)
        self, context: Context, roles: frozenset[str], work: Callable[[TokenClaims], _T]
    ) -> _T:
        loop = asyncio.get_running_loop()
        error: SeraiError
        try:
            claims = self._authenticate(context, roles)
            return await loop.run_in_executor(self._executor, work, claims)
        except SeraiError as exc:
            error = exc
        except Exception as exc:  # noqa: BLE001  (reported as INTERNAL, never on the wire)
            error = internal_error(exc, event="gateway_admin_internal_error")
        await abort_with(context, error)

    def _authenticate(self, context: Context, roles: frozenset[str]) -> TokenClaims:
        authorization = None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and isinstance(value, str):
                authorization = value
        claims = self._verifier.verify(bearer_token(authorization))
        claims.require_any_role(roles)
        return claims

    def _rule(
        self, request: pb.GrantAccessRequest | pb.RevokeAccessRequest, *, served: bool
    ) -> AccessRule:
        if not request.HasField("rule"):
            raise _invalid("rule: missing")
        rule = rule_from_proto(request.rule)
        if served and rule.provider not in self._providers:
            raise _invalid(
                f"rule.provider_subsystem: {rule.provider} is not served by this gateway "
                f"{self.gateway_id} (a [[provider]] of its gateway.toml)"
            )
        return rule

    def _latest_grants(self) -> dict[AccessRule, AclChange]:
        """The latest grant of each rule, from the store's audit (runs in the worker)."""
        grants: dict[AccessRule, AclChange] = {}
        after = 0
        while True:
            page = self._store.audit_log(after=after, limit=MAX_AUDIT_PAGE)
            for change in page:
                if change.action is AclAction.GRANT:
                    grants[change.rule] = change
            if len(page) < MAX_AUDIT_PAGE:
                return grants
            after = page[-1].sequence


class AdminServer:
    """The admin API with the gRPC health and reflection services, on one port.

    Store calls run in ``executor`` (one worker thread of its own when none is given).
    """

    def __init__(
        self,
        *,
        gateway_id: GatewayId,
        store: SqlAclStore,
        log: ExchangeLog,
        verifier: TokenVerifier,
        providers: Iterable[SubsystemId],
        listen: tuple[str, int],
        status: Callable[[], RuntimeStatus] | None = None,
        executor: concurrent.futures.Executor | None = None,
    ) -> None:
        self._own_executor = executor is None
        self._executor = executor or concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="gateway-acl-store"
        )
        # The message-log rpcs stay the generated servicer's UNIMPLEMENTED answers.
        self.service = GatewayAdminService(  # type: ignore[abstract]
            gateway_id=gateway_id,
            store=store,
            log=log,
            verifier=verifier,
            providers=providers,
            executor=self._executor,
            status=status,
        )
        self._listen = listen
        self._server: grpc.aio.Server | None = None
        #: The bound port (the chosen one when ``listen`` asks for port 0).
        self.port = 0

    async def start(self) -> None:
        """Bind the port and start serving."""
        server, health_servicer = management_server(
            service_name=SERVICE_NAME,
            add_servicer=lambda srv: _add_service(self.service, srv),
            max_receive_bytes=-1,  # each rpc checks _MAX_MESSAGE_BYTES (module docstring)
        )
        host, port = self._listen
        try:
            self.port = bind_management_port(server, host, port, what="the gateway's admin API")
        except RuntimeError as exc:
            raise GatewayError(
                f"cannot listen on {format_address(host, port)} for the admin API: {exc}",
                code=ErrorCode.INVALID_CONFIG,
            ) from exc
        self._server = server
        await server.start()
        await mark_serving(health_servicer, SERVICE_NAME)

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop accepting calls, let calls in flight finish (up to ``grace_s``), stop."""
        if self._server is not None:
            await self._server.stop(grace_s)
            self._server = None
        if self._own_executor:
            self._executor.shutdown(wait=True)


def _add_service(service: GatewayAdminService, server: grpc.aio.Server) -> None:
    """Register ``service`` as the generated code does, except that each rpc first
    authenticates the caller, then parses the request bytes itself (see the module
    docstring), and that no exception of an rpc reaches grpc (which would answer UNKNOWN
    with its text)."""
    handlers = {}
    for method in pb.DESCRIPTOR.services_by_name["GatewayAdmin"].methods:
        request_type: Any = message_factory.GetMessageClass(method.input_type)
        response_type: Any = message_factory.GetMessageClass(method.output_type)
        roles = _WRITE if method.name in _CHANGES else _READ
        implementation = getattr(service, method.name) if method.name in _IMPLEMENTED else None
        handle = _parsing(service, method.name, implementation, request_type, roles)
        if method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                handle, response_serializer=response_type.SerializeToString
            )
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                handle, response_serializer=response_type.SerializeToString
            )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))


def _parsing(
    service: GatewayAdminService,
    name: str,
    implementation: Callable[[Any, Context], Any] | None,
    request_type: Any,
    roles: frozenset[str],
) -> Callable[[bytes, Context], Any]:
    async def handle(raw: bytes, context: Context) -> Any:  # noqa: RET503  (abort_with raises)
        error: SeraiError
        try:
            service._authenticate(context, roles)
            if len(raw) > _MAX_MESSAGE_BYTES:
                raise GatewayError(
                    f"the request is {len(raw)} bytes; the admin API takes at most "
                    f"{_MAX_MESSAGE_BYTES} bytes",
                    code=ErrorCode.MESSAGE_TOO_LARGE,
                    origin=Origin.CLIENT,
                )
            try:
                request = request_type.FromString(raw)
            except DecodeError as exc:
                raise _invalid(
                    f"the request is not a serialized {request_type.DESCRIPTOR.name}: {exc}"
                ) from exc
            if implementation is None:
                await context.abort(
                    grpc.StatusCode.UNIMPLEMENTED,
                    f"{name} is not implemented by this gateway's admin API yet",
                )
            return await implementation(request, context)
        except grpc.aio.AbortError:
            raise  # the rpc ended with its answer (abort_with or the abort above)
        except SeraiError as exc:
            error = exc
        except Exception as exc:  # noqa: BLE001  (reported as INTERNAL, never on the wire)
            error = internal_error(exc, event="gateway_admin_internal_error")
        await abort_with(context, error)

    return handle


def _parsed(parse: Callable[[str], _T], text: str, where: str) -> _T:
    try:
        return parse(text)
    except SeraiError as exc:
        raise type(exc)(f"{where}: {exc.message}", code=exc.code, origin=exc.origin) from exc


def _invalid(message: str) -> GatewayError:
    return GatewayError(message, code=ErrorCode.INVALID_REQUEST, origin=Origin.CLIENT)


def _timestamp(value: dt.datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value.astimezone(dt.UTC))
    return ts
