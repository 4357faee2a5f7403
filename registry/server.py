"""The registry's management API (gRPC) and publication endpoint (HTTP), on one loop.

:class:`RegistryManagementService` implements every rpc of
``serai.registry.v1.RegistryManagement`` over a :class:`~registry.store.RegistryStore`;
:class:`RegistryServer` runs it with the gRPC health and reflection services, the HTTP
app serving the publish directory (and the configuration log's consistency proofs, from
the store), the :class:`~registry.publisher.PublicationLoop`, and the background task
that has the configuration log's heads time-stamped by the federation's approved TSAs
(:class:`registry._conflogstamp.ConflogTimestamper`, woken by each publication), and the
one that prunes the log's old envelopes when ``conflog_keep_envelopes_days`` is set
(:class:`registry._conflogprune.ConflogRetention`).

Guarantees of every rpc:

1. Authentication first: the ``authorization: Bearer <jwt>`` metadata must verify
   (:class:`serai.tokens.TokenVerifier`), else UNAUTHENTICATED; changes need the role
   ``registry-admin``, reads ``observer`` or ``registry-admin``, else PERMISSION_DENIED.
   Nothing is parsed or read before that.
2. Refusals are sent in one place (:func:`serai.rpcerrors.abort_with`): the status
   comes from :func:`serai.errors.grpc_status_for`, the trailing metadata
   ``x-road-error`` carries ``origin:code:message``, and a message names the request
   field. An unexpected exception is logged and sent as INTERNAL ``internal error``:
   never a stack trace.
3. A change is recorded by the store with the token's ``sub`` as actor and the request
   as canonical JSON; a successful change triggers a publication (coalesced).
4. The store is called only from one dedicated thread, never on the event loop, so a
   store need not be thread-safe and the loop never blocks on the database.
"""

# The rpc methods carry the names the generated servicer gives them.
# ruff: noqa: N802

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import json
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar

import grpc
from aiohttp import web
from google.protobuf import json_format, message_factory
from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import CollectorRegistry

from certs.keys import parse_der_certificate
from registry._conflogprune import ConflogRetention
from registry._conflogstamp import ConflogTimestamper
from registry.codec import ca_from_proto, ca_to_proto, tsa_from_proto, tsa_to_proto
from registry.conflog import encode_consistency
from registry.errors import ConfigurationError, RegistryError
from registry.metrics import ApiCallCounter, readiness_reasons, registry_metrics
from registry.model import Gateway, GlobalGroup, Member, check_name
from registry.publisher import PublicationLoop, PublishedConfiguration, Publisher, create_http_app
from registry.store import AuditEntry, Change, RegistryStore
from serai.cliutil import log_event
from serai.errors import ErrorCode, SeraiError
from serai.httpops import OpsServer
from serai.identifiers import (
    GatewayId,
    GlobalGroupId,
    MemberId,
    Subject,
    SubsystemId,
    parse_subject,
)
from serai.rpcerrors import abort_with, internal_error
from serai.rpcserver import bind_management_port, management_server, mark_serving
from serai.tokens import TokenClaims, TokenVerifier, bearer_token
from serai_proto.globalconf.v1 import globalconf_pb2 as gpb
from serai_proto.registry.v1 import registry_pb2 as pb
from serai_proto.registry.v1 import registry_pb2_grpc as pb_grpc

__all__ = [
    "ROLE_ADMIN",
    "ROLE_OBSERVER",
    "SERVICE_NAME",
    "RegistryManagementService",
    "RegistryServer",
]

#: Role that may change the registry.
ROLE_ADMIN: Final = "registry-admin"
#: Role that may only read.
ROLE_OBSERVER: Final = "observer"
#: Full name of the management service (health and reflection report it).
SERVICE_NAME: Final = pb.DESCRIPTOR.services_by_name["RegistryManagement"].full_name

_WRITE: Final = frozenset({ROLE_ADMIN})
_READ: Final = frozenset({ROLE_ADMIN, ROLE_OBSERVER})
_DEFAULT_AUDIT_PAGE: Final = 100
_MAX_AUDIT_PAGE: Final = 1000
#: Largest request accepted, in bytes (service descriptors can be large).
_MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024

_T = TypeVar("_T")
Context = grpc.aio.ServicerContext[Any, Any]


class RegistryManagementService(pb_grpc.RegistryManagementServicer):
    """Every rpc of the management API (see the module docstring for the rules)."""

    def __init__(
        self,
        *,
        store: RegistryStore,
        verifier: TokenVerifier,
        executor: concurrent.futures.Executor,
        on_change: Callable[[], None] = lambda: None,
        current: Callable[[], PublishedConfiguration | None] = lambda: None,
    ) -> None:
        self._store = store
        self._verifier = verifier
        self._executor = executor
        self._on_change = on_change
        self._current = current
        self._instance = store.instance

    # -- members and subsystems --------------------------------------------------------

    async def AddMember(
        self, request: pb.AddMemberRequest, context: Context
    ) -> pb.AddMemberResponse:
        def apply(change: Change) -> AuditEntry:
            member = Member(id=self._member(request.member_id, "member_id"), name=request.name)
            return self._store.add_member(member, change)

        return pb.AddMemberResponse(receipt=await self._change(context, request, apply))

    async def RemoveMember(
        self, request: pb.RemoveMemberRequest, context: Context
    ) -> pb.RemoveMemberResponse:
        def apply(change: Change) -> AuditEntry:
            return self._store.remove_member(self._member(request.member_id, "member_id"), change)

        return pb.RemoveMemberResponse(receipt=await self._change(context, request, apply))

    async def ListMembers(
        self, request: pb.ListMembersRequest, context: Context
    ) -> pb.ListMembersResponse:
        def read() -> pb.ListMembersResponse:
            fed = self._store.federation()
            subsystems: dict[MemberId, list[gpb.Subsystem]] = {}
            for sub in sorted(fed.subsystems):
                subsystems.setdefault(sub.id.member, []).append(
                    gpb.Subsystem(id=str(sub.id), name=sub.name)
                )
            return pb.ListMembersResponse(
                members=[
                    gpb.Member(id=str(m.id), name=m.name, subsystems=subsystems.get(m.id, []))
                    for m in sorted(fed.members)
                    if not request.member_class or m.id.member_class == request.member_class
                ]
            )

        return await self._read(context, read)

    async def AddSubsystem(
        self, request: pb.AddSubsystemRequest, context: Context
    ) -> pb.AddSubsystemResponse:
        def apply(change: Change) -> AuditEntry:
            sub = self._subsystem(request.subsystem_id, "subsystem_id")
            return self._store.add_subsystem(sub, request.name, change)

        return pb.AddSubsystemResponse(receipt=await self._change(context, request, apply))

    async def RemoveSubsystem(
        self, request: pb.RemoveSubsystemRequest, context: Context
    ) -> pb.RemoveSubsystemResponse:
        def apply(change: Change) -> AuditEntry:
            sub = self._subsystem(request.subsystem_id, "subsystem_id")
            return self._store.remove_subsystem(sub, change)

        return pb.RemoveSubsystemResponse(receipt=await self._change(context, request, apply))

    # -- gateways ----------------------------------------------------------------------

    async def AddGateway(
        self, request: pb.AddGatewayRequest, context: Context
    ) -> pb.AddGatewayResponse:
        def apply(change: Change) -> AuditEntry:
            gateway_id = self._gateway(request.gateway_id, "gateway_id")
            cert = request.authentication_certificate
            _check_certificate("authentication_certificate", cert)
            gateway = Gateway.with_certificate(
                id=gateway_id,
                address=request.address,
                auth_certificate=cert,
                subsystems=self._subsystems(request.subsystems, "subsystems"),
            )
            return self._store.add_gateway(gateway, change)

        return pb.AddGatewayResponse(receipt=await self._change(context, request, apply))

    async def RemoveGateway(
        self, request: pb.RemoveGatewayRequest, context: Context
    ) -> pb.RemoveGatewayResponse:
        def apply(change: Change) -> AuditEntry:
            gateway_id = self._gateway(request.gateway_id, "gateway_id")
            return self._store.remove_gateway(gateway_id, change)

        return pb.RemoveGatewayResponse(receipt=await self._change(context, request, apply))

    async def ListGateways(
        self, request: pb.ListGatewaysRequest, context: Context
    ) -> pb.ListGatewaysResponse:
        def read() -> pb.ListGatewaysResponse:
            member = self._member(request.member_id, "member_id") if request.member_id else None
            gateways = sorted(self._store.list_gateways(member), key=lambda g: g.id)
            return pb.ListGatewaysResponse(
                gateways=[
                    pb.RegisteredGateway(
                        gateway_id=str(g.id),
                        address=g.address,
                        authentication_certificate=g.auth_certificate,
                        subsystems=sorted(str(s) for s in g.subsystems),
                        registered_at=_timestamp(self._store.gateway_registered_at(g.id)),
                    )
                    for g in gateways
                ]
            )

        return await self._read(context, read)

    async def SetGatewaySubsystems(
        self, request: pb.SetGatewaySubsystemsRequest, context: Context
    ) -> pb.SetGatewaySubsystemsResponse:
        def apply(change: Change) -> AuditEntry:
            gateway_id = self._gateway(request.gateway_id, "gateway_id")
            subs = frozenset(self._subsystems(request.subsystems, "subsystems"))
            return self._store.set_gateway_subsystems(gateway_id, subs, change)

        return pb.SetGatewaySubsystemsResponse(receipt=await self._change(context, request, apply))

    # -- global groups -----------------------------------------------------------------

    async def AddGlobalGroup(
        self, request: pb.AddGlobalGroupRequest, context: Context
    ) -> pb.AddGlobalGroupResponse:
        def apply(change: Change) -> AuditEntry:
            group = GlobalGroup(
                id=self._group(request.group_id, "group_id"), description=request.description
            )
            return self._store.add_global_group(group, change)

        return pb.AddGlobalGroupResponse(receipt=await self._change(context, request, apply))

    async def RemoveGlobalGroup(
        self, request: pb.RemoveGlobalGroupRequest, context: Context
    ) -> pb.RemoveGlobalGroupResponse:
        def apply(change: Change) -> AuditEntry:
            group_id = self._group(request.group_id, "group_id")
            return self._store.remove_global_group(group_id, change)

        return pb.RemoveGlobalGroupResponse(receipt=await self._change(context, request, apply))

    async def ListGlobalGroups(
        self, request: pb.ListGlobalGroupsRequest, context: Context
    ) -> pb.ListGlobalGroupsResponse:
        def read() -> pb.ListGlobalGroupsResponse:
            groups = sorted(self._store.list_global_groups(), key=lambda g: g.id)
            return pb.ListGlobalGroupsResponse(
                groups=[
                    gpb.GlobalGroup(
                        id=str(g.id),
                        description=g.description,
                        members=sorted(str(s) for s in g.members),
                    )
                    for g in groups
                ]
            )

        return await self._read(context, read)

    async def AddGlobalGroupMember(
        self, request: pb.AddGlobalGroupMemberRequest, context: Context
    ) -> pb.AddGlobalGroupMemberResponse:
        def apply(change: Change) -> AuditEntry:
            group_id = self._group(request.group_id, "group_id")
            subject = self._subject(request.subject_id, "subject_id")
            return self._store.add_global_group_member(group_id, subject, change)

        return pb.AddGlobalGroupMemberResponse(receipt=await self._change(context, request, apply))

    async def RemoveGlobalGroupMember(
        self, request: pb.RemoveGlobalGroupMemberRequest, context: Context
    ) -> pb.RemoveGlobalGroupMemberResponse:
        def apply(change: Change) -> AuditEntry:
            group_id = self._group(request.group_id, "group_id")
            subject = self._subject(request.subject_id, "subject_id")
            return self._store.remove_global_group_member(group_id, subject, change)

        receipt = await self._change(context, request, apply)
        return pb.RemoveGlobalGroupMemberResponse(receipt=receipt)

    # -- trust services ----------------------------------------------------------------

    async def AddCertificateAuthority(
        self, request: pb.AddCertificateAuthorityRequest, context: Context
    ) -> pb.AddCertificateAuthorityResponse:
        def apply(change: Change) -> AuditEntry:
            if not request.HasField("authority"):
                raise RegistryError("authority: missing", code=ErrorCode.INVALID_REQUEST)
            ca = _named("authority", lambda: ca_from_proto(request.authority))
            _check_certificate("authority.root_certificate", ca.root_certificate)
            for index, der in enumerate(ca.intermediate_certificates):
                _check_certificate(f"authority.intermediate_certificates[{index}]", der)
            return self._store.add_certificate_authority(ca, change)

        receipt = await self._change(context, request, apply)
        return pb.AddCertificateAuthorityResponse(receipt=receipt)

    async def RemoveCertificateAuthority(
        self, request: pb.RemoveCertificateAuthorityRequest, context: Context
    ) -> pb.RemoveCertificateAuthorityResponse:
        def apply(change: Change) -> AuditEntry:
            return self._store.remove_certificate_authority(
                _existing_name(request.name, "name"), change
            )

        receipt = await self._change(context, request, apply)
        return pb.RemoveCertificateAuthorityResponse(receipt=receipt)

    async def ListCertificateAuthorities(
        self, request: pb.ListCertificateAuthoritiesRequest, context: Context
    ) -> pb.ListCertificateAuthoritiesResponse:
        def read() -> pb.ListCertificateAuthoritiesResponse:
            cas = sorted(self._store.list_certificate_authorities(), key=lambda c: c.name)
            return pb.ListCertificateAuthoritiesResponse(authorities=[ca_to_proto(c) for c in cas])

        return await self._read(context, read)

    async def AddTimestampingAuthority(
        self, request: pb.AddTimestampingAuthorityRequest, context: Context
    ) -> pb.AddTimestampingAuthorityResponse:
        def apply(change: Change) -> AuditEntry:
            if not request.HasField("authority"):
                raise RegistryError("authority: missing", code=ErrorCode.INVALID_REQUEST)
            tsa = _named("authority", lambda: tsa_from_proto(request.authority))
            for index, der in enumerate(tsa.certificates):
                _check_certificate(f"authority.certificates[{index}]", der)
            return self._store.add_timestamping_authority(tsa, change)

        receipt = await self._change(context, request, apply)
        return pb.AddTimestampingAuthorityResponse(receipt=receipt)

    async def RemoveTimestampingAuthority(
        self, request: pb.RemoveTimestampingAuthorityRequest, context: Context
    ) -> pb.RemoveTimestampingAuthorityResponse:
        def apply(change: Change) -> AuditEntry:
            name = _existing_name(request.name, "name")
            return self._store.remove_timestamping_authority(name, change)

        receipt = await self._change(context, request, apply)
        return pb.RemoveTimestampingAuthorityResponse(receipt=receipt)

    async def ListTimestampingAuthorities(
        self, request: pb.ListTimestampingAuthoritiesRequest, context: Context
    ) -> pb.ListTimestampingAuthoritiesResponse:
        def read() -> pb.ListTimestampingAuthoritiesResponse:
            tsas = sorted(self._store.list_timestamping_authorities(), key=lambda t: t.name)
            return pb.ListTimestampingAuthoritiesResponse(
                authorities=[tsa_to_proto(t) for t in tsas]
            )

        return await self._read(context, read)

    # -- descriptors, audit, publication -----------------------------------------------

    async def SetServiceDescriptor(
        self, request: pb.SetServiceDescriptorRequest, context: Context
    ) -> pb.SetServiceDescriptorResponse:
        def apply(change: Change) -> AuditEntry:
            provider = self._subsystem(request.provider_subsystem, "provider_subsystem")
            return self._store.set_service_descriptor(provider, request.file_descriptor_set, change)

        receipt = await self._change(context, request, apply)
        return pb.SetServiceDescriptorResponse(receipt=receipt)

    async def GetAuditLog(
        self, request: pb.GetAuditLogRequest, context: Context
    ) -> pb.GetAuditLogResponse:
        def read() -> pb.GetAuditLogResponse:
            limit = min(request.limit or _DEFAULT_AUDIT_PAGE, _MAX_AUDIT_PAGE)
            entries = self._store.audit_log(after_sequence=request.after_sequence, limit=limit)
            return pb.GetAuditLogResponse(
                entries=[
                    pb.AuditEntry(
                        sequence=e.sequence,
                        at=_timestamp(e.at),
                        actor=e.actor,
                        action=e.action,
                        target=e.target,
                        details=e.details,
                    )
                    for e in entries
                ],
                last_sequence=self._store.last_audit_sequence(),
            )

        return await self._read(context, read)

    async def GetCurrentConfiguration(
        self, request: pb.GetCurrentConfigurationRequest, context: Context
    ) -> pb.GetCurrentConfigurationResponse:
        def read() -> pb.GetCurrentConfigurationResponse:
            current = self._current()
            if current is None:
                raise RegistryError(
                    "no configuration has been published yet",
                    code=ErrorCode.GLOBALCONF_UNAVAILABLE,
                )
            return pb.GetCurrentConfigurationResponse(
                instance_id=current.instance,
                serial=current.serial,
                generated_at=_timestamp(current.generated_at),
                expires_at=_timestamp(current.expires_at),
                configuration_sha256=current.configuration_sha256,
            )

        return await self._read(context, read)

    # -- the one path every rpc takes ----------------------------------------------------

    async def _change(
        self, context: Context, request: Message, apply: Callable[[Change], AuditEntry]
    ) -> pb.ChangeReceipt:
        action = type(request).__name__.removesuffix("Request")
        details = json.dumps(
            json_format.MessageToDict(request, preserving_proto_field_name=True),
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )

        def work(claims: TokenClaims) -> pb.ChangeReceipt:
            entry = apply(Change(actor=claims.subject, action=action, details=details))
            return pb.ChangeReceipt(audit_sequence=entry.sequence)

        receipt = await self._guarded(context, _WRITE, work)
        self._on_change()
        return receipt

    async def _read(self, context: Context, read: Callable[[], _T]) -> _T:
        return await self._guarded(context, _READ, lambda _claims: read())

    async def _guarded(  # noqa: RET503  (abort_with raises)
        self, context: Context, roles: frozenset[str], work: Callable[[TokenClaims], _T]
    ) -> _T:
        loop = asyncio.get_running_loop()
        error: SeraiError
        try:
            claims = self._authenticate(context, roles)
            return await loop.run_in_executor(self._executor, work, claims)
        except ConfigurationError as exc:
            # Raised by the domain types built from the request: the request is at fault.
            error = _request_error(exc)
        except SeraiError as exc:
            error = exc
        except Exception as exc:  # noqa: BLE001  (reported as INTERNAL, never on the wire)
            error = internal_error(exc, event="registry_internal_error")
        await abort_with(context, error)

    def _authenticate(self, context: Context, roles: frozenset[str]) -> TokenClaims:
        authorization = None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and isinstance(value, str):
                authorization = value
        claims = self._verifier.verify(bearer_token(authorization))
        claims.require_any_role(roles)
        return claims

    # -- request fields ------------------------------------------------------------------

    def _member(self, text: str, field: str) -> MemberId:
        return self._local(_parsed(MemberId.parse, text, field), field)

    def _subsystem(self, text: str, field: str) -> SubsystemId:
        return self._local(_parsed(SubsystemId.parse, text, field), field)

    def _subsystems(self, texts: Sequence[str], field: str) -> list[SubsystemId]:
        return [self._subsystem(t, f"{field}[{i}]") for i, t in enumerate(texts)]

    def _gateway(self, text: str, field: str) -> GatewayId:
        return self._local(_parsed(GatewayId.parse, text, field), field)

    def _group(self, text: str, field: str) -> GlobalGroupId:
        return self._local(_parsed(GlobalGroupId.parse, text, field), field)

    def _subject(self, text: str, field: str) -> Subject:
        return self._local(_parsed(parse_subject, text, field), field)

    def _local(self, value: _IdT, field: str) -> _IdT:
        if value.instance != self._instance:
            raise RegistryError(
                f"{field}: {value} is not of this registry's instance {self._instance}",
                code=ErrorCode.INVALID_REQUEST,
            )
        return value


_IdT = TypeVar("_IdT", MemberId, SubsystemId, GatewayId, GlobalGroupId, Subject)


class RegistryServer:
    """The management API, health, reflection, publication loop and HTTP endpoint."""

    def __init__(
        self,
        *,
        store: RegistryStore,
        publisher: Publisher,
        verifier: TokenVerifier,
        executor: concurrent.futures.Executor,
        grpc_listen: tuple[str, int],
        http_listen: tuple[str, int],
        regeneration_interval_s: float,
        metrics_listen: tuple[str, int] | None = None,
        conflog_keep_envelopes_days: int | None = None,
    ) -> None:
        #: Prunes the configuration log's old envelopes (when a retention is set).
        self.retention = ConflogRetention(
            store=store, executor=executor, keep_days=conflog_keep_envelopes_days
        )
        #: Has the configuration log's heads time-stamped, after each publication.
        self.timestamps = ConflogTimestamper(
            store=store,
            executor=executor,
            snapshot=lambda: None if (p := publisher.current) is None else p.snapshot,
        )
        self.publication = PublicationLoop(
            publisher,
            executor=executor,
            interval_s=regeneration_interval_s,
            on_published=self._published,
        )
        self.service = RegistryManagementService(
            store=store,
            verifier=verifier,
            executor=executor,
            on_change=self.publication.changed,
            current=lambda: publisher.current,
        )
        self._publish_dir = publisher.publish_dir
        self._store = store
        self._executor = executor
        self._grpc_listen = grpc_listen
        self._http_listen = http_listen
        self._grpc: grpc.aio.Server | None = None
        self._http: web.AppRunner | None = None
        self.grpc_port = 0
        self.http_port = 0
        #: The process's metrics (never the library's global registry).
        self.metrics = CollectorRegistry()
        registry_metrics(
            self.metrics,
            self.publication,
            conflog_timestamped=lambda: self.timestamps.timestamped_head,
            conflog_pruned=lambda: self.retention.pruned_total,
        )
        self._api_calls = ApiCallCounter(self.metrics, methods=_known_methods())
        self._ops = (
            None
            if metrics_listen is None
            else OpsServer(
                registry=self.metrics,
                readiness=lambda: readiness_reasons(self.publication),
                listen=metrics_listen,
            )
        )
        #: The bound metrics port (0 without one).
        self.metrics_port = 0

    async def start(self) -> None:
        """Bind both ports, publish a first configuration, and start serving."""
        server, health_servicer = management_server(
            service_name=SERVICE_NAME,
            add_servicer=lambda srv: _add_service(self.service, srv),
            max_receive_bytes=_MAX_MESSAGE_BYTES,
            interceptors=(self._api_calls,),
        )
        host, port = self._grpc_listen
        self.grpc_port = bind_management_port(
            server, host, port, what="the registry's management API"
        )
        self._grpc = server
        self._publish_dir.mkdir(parents=True, exist_ok=True)
        runner = web.AppRunner(
            create_http_app(self._publish_dir, consistency=self._consistency), access_log=None
        )
        await runner.setup()
        site = web.TCPSite(runner, self._http_listen[0], self._http_listen[1])
        await site.start()
        self._http = runner
        self.http_port = _bound_port(runner, self._http_listen[1])
        if self._ops is not None:
            await self._ops.start()
            self.metrics_port = self._ops.port
        await server.start()
        self.publication.start()
        await self.timestamps.start()
        await self.retention.start()
        await mark_serving(health_servicer, SERVICE_NAME)

    def _published(self, published: PublishedConfiguration) -> None:
        _log_publication(published)
        self.timestamps.published()

    async def _consistency(self, old_size: int, new_size: int) -> bytes | None:
        """The configuration log's consistency proof resource, from the store's thread."""

        def work() -> bytes | None:
            try:
                proof = self._store.conflog_consistency(old_size, new_size)
            except RegistryError as exc:
                if exc.code is ErrorCode.NOT_FOUND:
                    return None
                raise
            return encode_consistency(old_size, new_size, proof)

        return await asyncio.get_running_loop().run_in_executor(self._executor, work)

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop accepting calls, let calls in flight finish (up to ``grace_s``), stop."""
        if self._grpc is not None:
            await self._grpc.stop(grace_s)
            self._grpc = None
        await self.publication.stop()
        await self.timestamps.stop()
        await self.retention.stop()
        if self._http is not None:
            await self._http.cleanup()
            self._http = None
        if self._ops is not None:
            await self._ops.stop()


def _parsed(parse: Callable[[str], _T], text: str, field: str) -> _T:
    try:
        return parse(text)
    except SeraiError as exc:
        raise type(exc)(f"{field}: {exc.message}", code=exc.code, origin=exc.origin) from exc


def _named(field: str, build: Callable[[], _T]) -> _T:
    try:
        return build()
    except ConfigurationError as exc:
        raise _request_error(exc, field) from exc


def _request_error(exc: ConfigurationError, field: str = "") -> RegistryError:
    """A domain type's refusal of a request value, as the client's error."""
    code = exc.code if exc.code.value.startswith(("invalid", "already", "failed")) else None
    return RegistryError(f"{field}: {exc.message}" if field else exc.message, code=code)


def _existing_name(value: str, field: str) -> str:
    """The name of something to remove, held to what such a name may be
    (:func:`registry.model.check_name`): ``invalid_request`` for one that is empty, too
    long or has a control character (PostgreSQL cannot even compare a NUL), before any
    store is asked."""
    try:
        return check_name(field, value)
    except ConfigurationError as exc:
        raise _request_error(exc) from exc


def _check_certificate(field: str, der: bytes) -> None:
    if not der:
        raise RegistryError(f"{field}: missing", code=ErrorCode.INVALID_REQUEST)
    try:
        parse_der_certificate(der)
    except ValueError as exc:
        raise RegistryError(
            f"{field}: not a DER X.509 certificate", code=ErrorCode.INVALID_REQUEST
        ) from exc


def _timestamp(value: dt.datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value.astimezone(dt.UTC))
    return ts


def _bound_port(runner: web.AppRunner, requested: int) -> int:
    if requested:
        return requested
    for server in runner.sites:
        sockets = getattr(getattr(server, "_server", None), "sockets", None) or ()
        for sock in sockets:
            return int(sock.getsockname()[1])
    return requested


def _add_service(service: RegistryManagementService, server: grpc.aio.Server) -> None:
    """Register ``service`` as the generated code does, except that the request bytes are
    parsed here: bytes that are not the request message are refused (authentication
    first, then ``invalid_request``) instead of grpc answering UNKNOWN with the parser's
    exception."""
    handlers = {}
    for method in pb.DESCRIPTOR.services_by_name["RegistryManagement"].methods:
        request_type: Any = message_factory.GetMessageClass(method.input_type)
        response_type: Any = message_factory.GetMessageClass(method.output_type)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            _parsing(service, getattr(service, method.name), request_type),
            response_serializer=response_type.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))


def _parsing(
    service: RegistryManagementService,
    implementation: Callable[[Any, Context], Any],
    request_type: Any,
) -> Callable[[bytes, Context], Any]:
    async def handle(raw: bytes, context: Context) -> Any:
        try:
            request = request_type.FromString(raw)
        except DecodeError as exc:
            error: SeraiError = RegistryError(
                f"the request is not a serialized {request_type.DESCRIPTOR.name}: {exc}"
            )
            try:
                service._authenticate(context, _READ)
            except SeraiError as refusal:
                error = refusal
            await abort_with(context, error)
        return await implementation(request, context)

    return handle


def _known_methods() -> frozenset[str]:
    """The method paths of the management port: its service, health and reflection."""
    paths = {
        f"/{SERVICE_NAME}/{m.name}"
        for m in pb.DESCRIPTOR.services_by_name["RegistryManagement"].methods
    }
    paths |= {"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"}
    return frozenset(paths)


def _log_publication(published: PublishedConfiguration) -> None:
    log_event(
        "globalconf_published",
        serial=published.serial,
        expires_at=published.expires_at.isoformat(),
        bytes=len(published.envelope),
    )
