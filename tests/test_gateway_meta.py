"""Metaservices ``serai.meta.v1.Meta`` through two real gateways (gateway/meta.py).

The consumer IS is a plain grpcio client of the consumer gateway's IS port
(tests/gatewayharness.py); the global configuration publishes the cadastre's service
descriptors. ListClients is answered by the consumer gateway; the three others travel
as signed, logged exchanges and are answered by the provider gateway itself, never by
the provider IS (the echo provider records every call it gets).
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2
from prometheus_client import CollectorRegistry

from gateway._observe import ExchangeObservation
from gateway.acl import AccessPolicy, AccessRule, AccessTarget
from gateway.commit import RecordKind
from gateway.headers import RequestHeader, request_header_for
from gateway.meta import (
    ALLOWED_METHODS,
    GET_SERVICE_DESCRIPTORS,
    LIST_CLIENTS,
    LIST_METHODS,
    META_METHODS,
)
from gateway.metrics import GatewayMetrics
from gateway.reflection import REFLECTION_METHODS
from gateway.runtime import GatewaySettings
from registry.snapshot import ConfigurationSnapshot
from serai.errors import ErrorCode, SeraiError
from serai.identifiers import GlobalGroupId, SubsystemId
from serai_proto.cadastre.v1 import cadastre_pb2
from serai_proto.meta.v1 import meta_pb2
from serai_proto.transport.v1 import transport_pb2
from tests.gatewayharness import (
    ARCHIVE,
    CADASTRE,
    GET_PARCEL,
    MINJUST,
    PROPERTY,
    REGISTRY,
    Harness,
    federation,
    trailers_of,
)

CADASTRE_METHODS = [
    "/cadastre.v1.Cadastre/GetParcel",
    "/cadastre.v1.Cadastre/ListEncumbrances",
    "/cadastre.v1.Cadastre/ListParcelsByOwner",
]


def cadastre_descriptor_set() -> bytes:
    """The cadastre's FileDescriptorSet, as ``serai registry descriptor set`` publishes it."""
    file = descriptor_pb2.FileDescriptorProto()
    cadastre_pb2.DESCRIPTOR.CopyToProto(file)  # type: ignore[no-untyped-call]
    return descriptor_pb2.FileDescriptorSet(file=[file]).SerializeToString()


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Harness]:
    async with federation(
        tmp_path,
        service_descriptors={REGISTRY: cadastre_descriptor_set()},
        archive_allow=("127.0.0.1",),
    ) as harness:
        yield harness


@pytest.fixture
async def bare(tmp_path: Path) -> AsyncIterator[Harness]:
    """No service descriptors published."""
    async with federation(tmp_path, archive_allow=("127.0.0.1",)) as harness:
        yield harness


def provider_request(provider: SubsystemId | str = REGISTRY) -> bytes:
    return meta_pb2.ListMethodsRequest(provider_subsystem=str(provider)).SerializeToString()


def rule(target: str, subject: object) -> AccessRule:
    return AccessRule(provider=REGISTRY, target=AccessTarget.parse(target), subject=subject)  # type: ignore[arg-type]


def signed_method(jws: bytes) -> str:
    """The method path inside a signed request header (the JWS payload)."""
    payload = jws.split(b".")[1]
    header = RequestHeader.decode(base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4)))
    return header.service.method_path


# --- ListClients: the consumer gateway answers from the global configuration ---------------


async def test_list_clients_is_answered_by_the_consumer_gateway(fed: Harness) -> None:
    result = await fed.call(LIST_CLIENTS, b"", service=None)
    assert result.code == grpc.StatusCode.OK, (result.details, result.trailers)
    assert result.body is not None
    clients = meta_pb2.ListClientsResponse.FromString(result.body).clients
    assert [(c.id, c.member_name) for c in clients] == [
        (str(CADASTRE), "Cadastre Agency"),
        (str(REGISTRY), "Cadastre Agency"),
        (str(MINJUST), "Ministry of Justice"),
        (str(ARCHIVE), "Ministry of Justice"),
        (str(PROPERTY), "Ministry of Justice"),
    ]
    assert fed.consumer_log.records == ()
    assert fed.provider_log.records == ()
    assert fed.echo.calls == []


@pytest.mark.parametrize(
    ("case", "body", "client", "expected"),
    [
        ("own instance by name", meta_pb2.ListClientsRequest(instance_id="UZ"), PROPERTY, "OK"),
        (
            "another instance",
            meta_pb2.ListClientsRequest(instance_id="EE"),
            PROPERTY,
            "NOT_FOUND client:not_found",
        ),
        ("body not a request", b"\xff\xff", PROPERTY, "INVALID_ARGUMENT client:invalid_request"),
        ("no x-road-client", b"", None, "INVALID_ARGUMENT client:invalid_identifier"),
        ("client not served here", b"", "UZ/GOV/STC/tax", "NOT_FOUND client:unknown_client"),
    ],
)
async def test_list_clients_refusals(
    fed: Harness, case: str, body: object, client: object, expected: str
) -> None:
    raw = body if isinstance(body, bytes) else body.SerializeToString()  # type: ignore[attr-defined]
    result = await fed.call(
        LIST_CLIENTS, raw, client=None if client is None else str(client), service=None
    )
    got = "OK" if result.code == grpc.StatusCode.OK else f"{result.code.name} {result.error}"
    assert got == expected, case


async def test_list_clients_authenticates_the_is(tmp_path: Path) -> None:
    async with federation(tmp_path) as fed:  # archive only from 10.1.2.3
        result = await fed.call(LIST_CLIENTS, b"", client=str(ARCHIVE), service=None)
    assert (result.code, result.error) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "client:client_not_authenticated",
    )


# --- provider-scoped metaservices: exchanges answered by the provider gateway -------------


async def test_list_methods_travels_signed_and_logged_and_never_reaches_the_provider_is(
    fed: Harness,
) -> None:
    result = await fed.call(LIST_METHODS, provider_request())
    assert result.code == grpc.StatusCode.OK, (result.details, result.trailers)
    assert result.body is not None
    assert list(meta_pb2.ListMethodsResponse.FromString(result.body).methods) == CADASTRE_METHODS
    message_id = result.trailers["x-road-id"]
    assert [r.kind for r in fed.consumer_log.records] == [
        RecordKind.REQUEST_SENT,
        RecordKind.RESPONSE_RECEIVED,
    ]
    assert [r.kind for r in fed.provider_log.records] == [
        RecordKind.REQUEST_RECEIVED,
        RecordKind.RESPONSE_SENT,
    ]
    for record in (*fed.consumer_log.records, *fed.provider_log.records):
        assert record.message_id == message_id
    assert signed_method(fed.provider_log.records[0].header_jws) == LIST_METHODS
    assert fed.consumer_log.records[1].body == result.body  # the signed answer is logged
    assert fed.echo.calls == []


async def test_get_service_descriptors_returns_the_published_bytes(fed: Harness) -> None:
    result = await fed.call(GET_SERVICE_DESCRIPTORS, provider_request())
    assert result.code == grpc.StatusCode.OK, (result.details, result.trailers)
    assert result.body is not None
    answer = meta_pb2.GetServiceDescriptorsResponse.FromString(result.body)
    assert answer.file_descriptor_set == cadastre_descriptor_set()
    assert len(fed.provider_log.records) == 2
    assert fed.echo.calls == []


async def test_metaservices_ignore_access_rights(fed: Harness) -> None:
    fed.provider_policy.replace(AccessPolicy())
    for method in (LIST_METHODS, GET_SERVICE_DESCRIPTORS, ALLOWED_METHODS):
        result = await fed.call(method, provider_request())
        assert result.code == grpc.StatusCode.OK, (method, result.details, result.trailers)
    assert fed.echo.calls == []


# --- AllowedMethods: only the signed caller's own rights -----------------------------------

GROUP = GlobalGroupId.parse("UZ/group:auditors")


@pytest.mark.parametrize(
    ("case", "rules", "client", "expected"),
    [
        (
            "whole service, expanded",
            [("cadastre.v1.Cadastre", PROPERTY)],
            PROPERTY,
            CADASTRE_METHODS,
        ),
        ("no rule for this client", [("cadastre.v1.Cadastre", PROPERTY)], ARCHIVE, []),
        (
            "one method",
            [("cadastre.v1.Cadastre", PROPERTY), (GET_PARCEL, ARCHIVE)],
            ARCHIVE,
            [GET_PARCEL],
        ),
        (
            "whole member",
            [("/cadastre.v1.Cadastre/ListEncumbrances", MINJUST)],
            ARCHIVE,
            ["/cadastre.v1.Cadastre/ListEncumbrances"],
        ),
        (
            "a method no descriptor lists is still callable",
            [("/cadastre.v1.Cadastre/Hidden", ARCHIVE), (GET_PARCEL, PROPERTY)],
            ARCHIVE,
            ["/cadastre.v1.Cadastre/Hidden"],
        ),
        (
            "another service's grant",
            [("tax.v1.Tax", ARCHIVE)],
            ARCHIVE,
            [],
        ),
        ("nothing granted at all", [], PROPERTY, []),
    ],
)
async def test_allowed_methods_per_client_and_grant(
    fed: Harness,
    case: str,
    rules: list[tuple[str, object]],
    client: SubsystemId,
    expected: list[str],
) -> None:
    fed.provider_policy.replace(AccessPolicy([rule(t, s) for t, s in rules]))
    result = await fed.call(ALLOWED_METHODS, provider_request(), client=str(client))
    assert result.code == grpc.StatusCode.OK, (case, result.details, result.trailers)
    assert result.body is not None
    answer = meta_pb2.AllowedMethodsResponse.FromString(result.body)
    assert list(answer.methods) == expected, case
    # the answer is method paths and nothing else: no subject, no rule
    assert result.body == meta_pb2.AllowedMethodsResponse(methods=expected).SerializeToString()
    assert fed.echo.calls == []


async def test_allowed_methods_never_shows_other_clients_rights(fed: Harness) -> None:
    fed.provider_policy.replace(
        AccessPolicy(
            [
                rule("cadastre.v1.Cadastre", PROPERTY),
                rule("/cadastre.v1.Cadastre/ListParcelsByOwner", ARCHIVE),
            ]
        )
    )
    property_view = await fed.call(ALLOWED_METHODS, provider_request(), client=str(PROPERTY))
    archive_view = await fed.call(ALLOWED_METHODS, provider_request(), client=str(ARCHIVE))
    assert property_view.body is not None
    assert archive_view.body is not None
    assert list(meta_pb2.AllowedMethodsResponse.FromString(property_view.body).methods) == (
        CADASTRE_METHODS
    )
    assert list(meta_pb2.AllowedMethodsResponse.FromString(archive_view.body).methods) == [
        "/cadastre.v1.Cadastre/ListParcelsByOwner"
    ]
    for view in (property_view, archive_view):
        assert str(PROPERTY).encode() not in view.body  # type: ignore[operator]
        assert str(ARCHIVE).encode() not in view.body  # type: ignore[operator]


async def test_allowed_methods_follows_global_groups(tmp_path: Path) -> None:
    # a group grant counts only for members of the group; the harness has no group, so
    # the archive (not in it) sees nothing
    async with federation(
        tmp_path,
        service_descriptors={REGISTRY: cadastre_descriptor_set()},
        archive_allow=("127.0.0.1",),
    ) as fed:
        fed.provider_policy.replace(AccessPolicy([rule("cadastre.v1.Cadastre", GROUP)]))
        result = await fed.call(ALLOWED_METHODS, provider_request(), client=str(ARCHIVE))
    assert result.body is not None
    assert list(meta_pb2.AllowedMethodsResponse.FromString(result.body).methods) == []


async def test_without_descriptors_allowed_methods_lists_individual_grants(bare: Harness) -> None:
    bare.provider_policy.replace(
        AccessPolicy([rule("cadastre.v1.Cadastre", PROPERTY), rule(GET_PARCEL, PROPERTY)])
    )
    result = await bare.call(ALLOWED_METHODS, provider_request())
    assert result.code == grpc.StatusCode.OK, (result.details, result.trailers)
    assert result.body is not None
    assert list(meta_pb2.AllowedMethodsResponse.FromString(result.body).methods) == [GET_PARCEL]


@pytest.mark.parametrize("method", [LIST_METHODS, GET_SERVICE_DESCRIPTORS])
async def test_without_descriptors_list_methods_is_unknown_service(
    bare: Harness, method: str
) -> None:
    result = await bare.call(method, provider_request())
    assert (result.code, result.error) == (grpc.StatusCode.NOT_FOUND, "provider:unknown_service")
    assert "published no service descriptors" in result.details
    # refused before the provider gateway committed anything
    assert bare.provider_log.records == ()
    assert [r.kind for r in bare.consumer_log.records] == [RecordKind.REQUEST_SENT]
    assert bare.echo.calls == []


async def test_unreadable_descriptors_are_unknown_service(tmp_path: Path) -> None:
    async with federation(tmp_path, service_descriptors={REGISTRY: b"\xff\xff\xff"}) as fed:
        result = await fed.call(LIST_METHODS, provider_request())
    assert (result.code, result.error) == (grpc.StatusCode.NOT_FOUND, "provider:unknown_service")
    assert "unusable" in result.details


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "method", "body", "service", "expected"),
    [
        (
            "no x-road-service",
            LIST_METHODS,
            provider_request(),
            None,
            "INVALID_ARGUMENT client:invalid_identifier",
        ),
        (
            "malformed x-road-service",
            ALLOWED_METHODS,
            provider_request(),
            "UZ/GOV/CADASTRE",
            "INVALID_ARGUMENT client:invalid_identifier",
        ),
        (
            "x-road-service no gateway serves",
            LIST_METHODS,
            provider_request("UZ/GOV/NOBODY/x"),
            "UZ/GOV/NOBODY/x",
            "NOT_FOUND client:unknown_service",
        ),
        (
            "body names another provider",
            GET_SERVICE_DESCRIPTORS,
            provider_request("UZ/GOV/MINJUST/property"),
            str(REGISTRY),
            "INVALID_ARGUMENT client:invalid_request",
        ),
        (
            "body names no provider",
            LIST_METHODS,
            b"",
            str(REGISTRY),
            "INVALID_ARGUMENT client:invalid_request",
        ),
        (
            "body is not a request",
            ALLOWED_METHODS,
            b"\x0a\xff",
            str(REGISTRY),
            "INVALID_ARGUMENT client:invalid_request",
        ),
        (
            "no such metaservice",
            "/serai.meta.v1.Meta/DropTables",
            provider_request(),
            str(REGISTRY),
            "INVALID_ARGUMENT client:invalid_request",
        ),
    ],
)
async def test_bad_metaservice_calls_are_refused_by_the_consumer_gateway(
    fed: Harness, case: str, method: str, body: bytes, service: str | None, expected: str
) -> None:
    result = await fed.call(method, body, service=service)
    assert f"{result.code.name} {result.error}" == expected, (case, result.details)
    assert fed.consumer_log.records == ()
    assert fed.provider_log.records == ()
    assert fed.echo.calls == []


async def _send_raw_meta(
    fed: Harness, method: str, body: bytes, *, message_id: str
) -> tuple[str, str]:
    """A registered consumer gateway that skips its own checks sends a metaservice
    exchange straight to the provider gateway's peer port: (status, x-road-error)."""
    signed = fed.consumer_signer.sign(
        request_header_for(
            message_id=message_id,
            client=PROPERTY,
            service=REGISTRY.service(method),
            body=body,
            created_at=dt.datetime.now(dt.UTC),
        )
    )
    key_pem, chain_pem = fed.consumer_tls
    credentials = grpc.ssl_channel_credentials(
        root_certificates=fed.root_pem, private_key=key_pem, certificate_chain=chain_pem
    )
    request = transport_pb2.ExchangeRequest(
        signed_header=signed.jws,
        body=body,
        certificate_chain=list(signed.certificate_chain),
        ocsp_response=signed.ocsp_response,
    )
    async with grpc.aio.secure_channel(
        f"127.0.0.1:{fed.provider.peer_port}",
        credentials,
        options=(("grpc.ssl_target_name_override", "localhost"),),
    ) as channel:
        exchange = channel.unary_unary("/serai.transport.v1.Transport/Exchange", None, None)
        try:
            await exchange(request.SerializeToString(), timeout=30)
        except grpc.aio.AioRpcError as exc:
            error = trailers_of(exc.trailing_metadata()).get("x-road-error", "")
            return exc.code().name, ":".join(error.split(":", 2)[:2])
    return "OK", ""


@pytest.mark.parametrize(
    ("case", "method", "body", "expected"),
    [
        ("well formed", LIST_METHODS, provider_request(), ("OK", "")),
        (
            "body names another provider",
            ALLOWED_METHODS,
            provider_request("UZ/GOV/MINJUST/property"),
            ("INVALID_ARGUMENT", "client:invalid_request"),
        ),
        ("ListClients", LIST_CLIENTS, b"", ("INVALID_ARGUMENT", "client:invalid_request")),
        (
            "no such metaservice",
            "/serai.meta.v1.Meta/Forward",
            provider_request(),
            ("INVALID_ARGUMENT", "client:invalid_request"),
        ),
    ],
)
async def test_provider_gateway_checks_metaservice_exchanges_itself(
    fed: Harness, case: str, method: str, body: bytes, expected: tuple[str, str]
) -> None:
    assert (
        await _send_raw_meta(fed, method, body, message_id="raw-" + case.replace(" ", "-"))
        == expected
    ), case
    assert len(fed.provider_log.records) == (2 if expected[0] == "OK" else 0)
    assert fed.echo.calls == []  # a metaservice path is never forwarded to the provider IS


async def test_metaservice_exchanges_are_replay_checked(fed: Harness) -> None:
    first = await _send_raw_meta(fed, LIST_METHODS, provider_request(), message_id="again")
    second = await _send_raw_meta(fed, LIST_METHODS, provider_request(), message_id="again")
    assert first == ("OK", "")
    assert second == ("ALREADY_EXISTS", "client:replay_detected")


# --- counted like any exchange --------------------------------------------------------------


class Recorder:
    """An ExchangeObserver that keeps every finished observation."""

    def __init__(self) -> None:
        self.finished: list[ExchangeObservation] = []

    def begin(self, side: str) -> ExchangeObservation:
        return ExchangeObservation(side)

    def finish(self, observation: ExchangeObservation) -> None:
        self.finished.append(observation)


async def test_metaservice_calls_are_observed_like_exchanges(tmp_path: Path) -> None:
    recorder = Recorder()
    async with federation(
        tmp_path, service_descriptors={REGISTRY: cadastre_descriptor_set()}, observer=recorder
    ) as fed:
        await fed.call(LIST_CLIENTS, b"", service=None)
        await fed.call(LIST_METHODS, provider_request())
        await fed.call(LIST_METHODS, provider_request("UZ/GOV/MINJUST/property"))
    seen = [(o.side, o.method, o.client, o.service, o.code) for o in recorder.finished]
    assert seen == [
        ("consumer", LIST_CLIENTS, PROPERTY, None, "ok"),
        ("provider", LIST_METHODS, PROPERTY, REGISTRY, "ok"),
        ("consumer", LIST_METHODS, PROPERTY, REGISTRY, "ok"),
        ("consumer", LIST_METHODS, PROPERTY, REGISTRY, "invalid_request"),
    ]


class _NoConfiguration:
    def current(self) -> ConfigurationSnapshot:
        raise SeraiError("none", code=ErrorCode.GLOBALCONF_EXPIRED)


class _NoRules:
    def policy(self) -> AccessPolicy:
        return AccessPolicy()


@pytest.mark.parametrize("method", sorted(META_METHODS | REFLECTION_METHODS))
def test_metrics_label_gateway_answered_methods_by_name(method: str) -> None:
    registry = CollectorRegistry()
    metrics = GatewayMetrics(
        registry=registry,
        settings=GatewaySettings(),
        configuration=_NoConfiguration(),
        policies=_NoRules(),
        exchange_log_lines=False,
    )
    observation = metrics.begin("consumer")
    observation.method = method
    metrics.finish(observation)
    labels = {"side": "consumer", "client": "other", "service": "other", "method": method}
    value = registry.get_sample_value(
        "serai_gateway_exchanges_total", {**labels, "code": "ok", "status": "OK"}
    )
    assert value == 1.0
