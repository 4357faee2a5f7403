"""A two-agency federation in one process, on loopback, with real TLS (for gateway tests).

:func:`federation` builds a development PKI with an OCSP responder over HTTP, a signed
global configuration served in memory through ``registry.client``, an echo provider IS,
and two :class:`gateway.runtime.GatewayRuntime` instances:

- consumer ``UZ/GOV/MINJUST/gw:main`` serving ``UZ/GOV/MINJUST/property`` (IS allowed
  from 127.0.0.1) and ``UZ/GOV/MINJUST/archive`` (allowed only from 10.1.2.3);
- provider ``UZ/GOV/CADASTRE/gw:main`` serving ``UZ/GOV/CADASTRE/registry``, whose
  access rights allow ``property`` the whole ``cadastre.v1.Cadastre`` service.

With ``impostor=True`` the provider gateway serves with a valid certificate of the CA
that is not its registered one. With ``down_gateway=True`` the configuration also
registers ``UZ/GOV/CADASTRE/gw:a-down`` for the registry, first in order, at an
address where nothing listens.

With ``approve_tsa=True`` the configuration also approves the development PKI's TSA
(``PKIDirectory(tmp_path / "pki").tsa_signer()``), for tests that time-stamp logs.
``Harness.anchor`` and ``Harness.envelope`` are the trust anchor and the signed
configuration both gateways hold.

With ``is_client_ca_pem`` the consumer's IS port is TLS (client certificates of that
CA required) and ``property_cert_sha256`` pins the certificate of ``property``'s IS
(``property_allow`` replaces its address allow-list); ``Harness.channel`` is then
plaintext and refused, so callers pass their own TLS channel to :meth:`Harness.call`.

With ``service_descriptors`` (subsystem → serialized FileDescriptorSet) the
configuration publishes those service descriptors (``serai registry descriptor set``).
``archive_allow`` replaces ``archive``'s address allow-list (``("127.0.0.1",)`` lets the
tests call as a second client). ``observer`` is told of both gateways' exchanges.

With ``provider_address`` (``HOST:PORT``) the provider gateway sends ``registry``'s
calls to that IS instead of the echo provider (which still runs, uncalled).

The echo provider answers every method with the request body, except
``/cadastre.v1.Cadastre/Fail`` (aborts with NOT_FOUND, a message and rich details) and
``/cadastre.v1.Cadastre/Slow`` (sleeps ``SLOW_S`` first). It records every call.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from google.rpc import status_pb2  # type: ignore[import-untyped]  # no stubs

from certs.ca import CertificateAuthority
from certs.keys import PrivateKey, generate_private_key, load_certificate_chain
from certs.ocsp import OCSPResponder
from certs.ocsp_client import OCSPClient
from certs.ocsp_http import OCSPServer
from certs.pkidir import PKIDirectory
from certs.profiles import Profile
from gateway._observe import ExchangeObserver
from gateway.acl import AccessPolicy, AccessRule, AccessTarget
from gateway.commit import InMemoryExchangeLog
from gateway.replay import ReplayGuard
from gateway.runtime import (
    ClientSettings,
    GatewayRuntime,
    GatewaySettings,
    ProviderSettings,
    StapledOCSP,
)
from gateway.signing import HeaderSigner
from gateway.tlsconf import certificates_pem
from registry.client import GlobalConfigurationClient, InMemoryFetchTransport
from registry.codec import TrustAnchor, encode_configuration
from registry.model import (
    ApprovedCA,
    ApprovedTSA,
    Federation,
    Gateway,
    GlobalConfiguration,
    Member,
    ServiceDescriptor,
    Subsystem,
)
from registry.signing import sign_configuration
from serai.errors import SeraiError
from serai.identifiers import GatewayId, MemberId, SubsystemId
from serai.localprocs import free_port

MINJUST = MemberId.parse("UZ/GOV/MINJUST")
CADASTRE = MemberId.parse("UZ/GOV/CADASTRE")
PROPERTY = MINJUST.subsystem("property")
ARCHIVE = MINJUST.subsystem("archive")
REGISTRY = CADASTRE.subsystem("registry")
CONSUMER_GW = MINJUST.gateway("main")
PROVIDER_GW = CADASTRE.gateway("main")
DOWN_GW = CADASTRE.gateway("a-down")
GET_PARCEL = "/cadastre.v1.Cadastre/GetParcel"
FAIL = "/cadastre.v1.Cadastre/Fail"
SLOW = "/cadastre.v1.Cadastre/Slow"
SLOW_S = 20.0
FAIL_MESSAGE = "parcel 42 is not in the cadastre"
#: A serialized google.rpc.Status (code 5, the message): the provider's rich details.
FAIL_DETAILS = status_pb2.Status(code=5, message=FAIL_MESSAGE).SerializeToString()


def pem_key(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@dataclass
class EchoProvider:
    """The provider IS: echoes bodies; records (method, metadata) of every call."""

    calls: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    server: grpc.aio.Server | None = None
    port: int = 0

    async def start(self) -> None:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((_EchoHandler(self),))
        self.port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self.server = server

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(0)


class _EchoHandler(grpc.GenericRpcHandler):  # type: ignore[type-arg]  # not subscriptable
    def __init__(self, echo: EchoProvider) -> None:
        self._echo = echo

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[bytes, bytes] | None:
        method = handler_call_details.method
        calls = self._echo.calls

        async def answer(body: bytes, context: Any) -> bytes:
            metadata = {k: v for k, v in context.invocation_metadata() if k.startswith("x-road")}
            calls.append((method, metadata))
            if method == FAIL:
                await context.abort(
                    grpc.StatusCode.NOT_FOUND,
                    FAIL_MESSAGE,
                    (("grpc-status-details-bin", FAIL_DETAILS),),
                )
            if method == SLOW:
                await asyncio.sleep(SLOW_S)
            return body

        return grpc.unary_unary_rpc_method_handler(answer)


class StaticPolicy:
    """A fixed policy; set ``failure`` to make :meth:`policy` raise it (a broken store),
    or :meth:`replace` it (an operator's ``serai acl`` change)."""

    def __init__(self, policy: AccessPolicy) -> None:
        self._policy = policy
        self.failure: Exception | None = None

    def replace(self, policy: AccessPolicy) -> None:
        """Put ``policy`` in force for the next calls."""
        self._policy = policy

    def policy(self) -> AccessPolicy:
        if self.failure is not None:
            raise self.failure
        return self._policy


class Clock:
    """Wall-clock time plus an adjustable offset (to expire the configuration)."""

    def __init__(self) -> None:
        self.offset = dt.timedelta()

    def __call__(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.offset


@dataclass
class Result:
    """What the consumer IS saw."""

    code: grpc.StatusCode
    body: bytes | None
    details: str
    trailers: dict[str, str]
    binary_trailers: dict[str, bytes]

    @property
    def error(self) -> str | None:
        """``origin:code`` of the x-road-error trailer."""
        value = self.trailers.get("x-road-error")
        return None if value is None else ":".join(value.split(":", 2)[:2])


@dataclass
class Admission:
    """A gateway's admission check (``ExchangeParts.admission``): raises ``refusal``
    while it is set, as the message log does while time-stamps are overdue."""

    refusal: SeraiError | None = None

    def __call__(self) -> None:
        if self.refusal is not None:
            raise self.refusal


@dataclass
class Harness:
    consumer: GatewayRuntime
    provider: GatewayRuntime
    consumer_log: InMemoryExchangeLog
    provider_log: InMemoryExchangeLog
    echo: EchoProvider
    provider_policy: StaticPolicy
    #: The clock of both gateways' configuration clients.
    configuration_clock: Clock
    #: The consumer gateway's TLS key and chain (PEM) and its member's header signer.
    consumer_tls: tuple[bytes, bytes]
    consumer_signer: HeaderSigner
    channel: grpc.aio.Channel
    ca: CertificateAuthority
    root_pem: bytes
    consumer_admission: Admission = field(default_factory=Admission)
    provider_admission: Admission = field(default_factory=Admission)
    anchor: TrustAnchor | None = None
    envelope: bytes = b""

    async def call(
        self,
        method: str = GET_PARCEL,
        body: bytes = b"parcel 42",
        *,
        client: str | None = str(PROPERTY),
        service: str | None = str(REGISTRY),
        message_id: str | None = None,
        deadline_s: float = 30.0,
        extra: Sequence[tuple[str, str]] = (),
        channel: grpc.aio.Channel | None = None,
    ) -> Result:
        """Call ``method`` on the consumer gateway's IS port as a plain grpcio client."""
        metadata = list(extra)
        if client is not None:
            metadata.append(("x-road-client", client))
        if service is not None:
            metadata.append(("x-road-service", service))
        if message_id is not None:
            metadata.append(("x-road-id", message_id))
        call = (channel or self.channel).unary_unary(method, None, None)
        invocation = call(body, metadata=tuple(metadata), timeout=deadline_s)
        try:
            answer: bytes = await invocation
        except grpc.aio.AioRpcError as exc:
            trailers = exc.trailing_metadata()
            return Result(
                exc.code(),
                None,
                exc.details() or "",
                trailers_of(trailers),
                binary_trailers_of(trailers),
            )
        final = await invocation.trailing_metadata()
        return Result(grpc.StatusCode.OK, answer, "", trailers_of(final), binary_trailers_of(final))


def binary_trailers_of(metadata: Any) -> dict[str, bytes]:
    """Binary (``-bin``) metadata as a dict."""
    return {k: v for k, v in (metadata or ()) if isinstance(v, bytes)}


def trailers_of(metadata: Any) -> dict[str, str]:
    """Text metadata as a dict (first value of each key)."""
    return {k: v for k, v in (metadata or ()) if isinstance(v, str)}


@asynccontextmanager
async def federation(
    tmp_path: Path,
    *,
    down_gateway: bool = False,
    impostor: bool = False,
    is_client_ca_pem: bytes | None = None,
    property_cert_sha256: bytes | None = None,
    property_allow: tuple[str, ...] = ("127.0.0.1",),
    approve_tsa: bool = False,
    provider_address: str | None = None,
    service_descriptors: Mapping[SubsystemId, bytes] | None = None,
    archive_allow: tuple[str, ...] = ("10.1.2.3",),
    observer: ExchangeObserver | None = None,
) -> AsyncIterator[Harness]:
    """The whole federation, started; stopped on exit (module docstring)."""
    async with AsyncExitStack() as stack:
        pki = PKIDirectory.init(tmp_path / "pki", instance="UZ")
        ca = pki.issuing_ca()
        issuing = load_certificate_chain(pki.issuing_cert)[0]
        root = pki.root_certificate()
        ocsp_key, ocsp_chain = pki.ocsp_signer()
        responder = OCSPResponder(
            key=ocsp_key, certificate=ocsp_chain[0], issuers=[ca.certificate], source=ca.records
        )
        ocsp_server = OCSPServer(responder=responder, port=0)
        await ocsp_server.start()
        stack.push_async_callback(ocsp_server.stop)
        ocsp_client = OCSPClient()
        stack.push_async_callback(ocsp_client.aclose)

        def auth(gateway: GatewayId) -> tuple[PrivateKey, x509.Certificate]:
            key = generate_private_key()
            return key, ca.issue(Profile.AUTH, str(gateway), key.public_key())

        consumer_auth, provider_auth, down_auth = (
            auth(CONSUMER_GW),
            auth(PROVIDER_GW),
            auth(DOWN_GW),
        )
        consumer_port, provider_port, down_port = free_port(), free_port(), free_port()
        gateways = [
            Gateway.with_certificate(
                id=CONSUMER_GW,
                address=f"127.0.0.1:{consumer_port}",
                auth_certificate=der(consumer_auth[1]),
                subsystems=(PROPERTY, ARCHIVE),
            ),
            Gateway.with_certificate(
                id=PROVIDER_GW,
                address=f"127.0.0.1:{provider_port}",
                auth_certificate=der(provider_auth[1]),
                subsystems=(REGISTRY,),
            ),
        ]
        if down_gateway:
            gateways.append(
                Gateway.with_certificate(
                    id=DOWN_GW,
                    address=f"127.0.0.1:{down_port}",
                    auth_certificate=der(down_auth[1]),
                    subsystems=(REGISTRY,),
                )
            )
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        tsas: tuple[ApprovedTSA, ...] = ()
        if approve_tsa:
            tsa_chain = pki.tsa_signer()[1]
            tsas = (
                ApprovedTSA(
                    name="UZ development TSA",
                    url="http://tsa.invalid/",
                    certificates=tuple(der(c) for c in tsa_chain),
                ),
            )
        configuration = GlobalConfiguration(
            federation=Federation(
                instance="UZ",
                members=(
                    Member(id=MINJUST, name="Ministry of Justice"),
                    Member(id=CADASTRE, name="Cadastre Agency"),
                ),
                subsystems=(Subsystem(id=PROPERTY), Subsystem(id=ARCHIVE), Subsystem(id=REGISTRY)),
                gateways=tuple(gateways),
                certificate_authorities=(
                    ApprovedCA(
                        name="UZ development CA",
                        root_certificate=der(root),
                        intermediate_certificates=(der(issuing),),
                        ocsp_urls=(ocsp_server.url,),
                    ),
                ),
                timestamping_authorities=tsas,
                service_descriptors=tuple(
                    ServiceDescriptor(provider=provider, file_descriptor_set=data)
                    for provider, data in (service_descriptors or {}).items()
                ),
            ),
            serial=1,
            generated_at=now,
            expires_at=now + dt.timedelta(minutes=10),
        )
        conf_key = generate_private_key()
        conf_cert = ca.issue(Profile.CONFIGURATION_SIGNING, "UZ registry", conf_key.public_key())
        envelope = sign_configuration(
            encode_configuration(configuration), key=conf_key, certificate=conf_cert
        )
        anchor = TrustAnchor(
            instance="UZ",
            download_url="http://registry.invalid/globalconf/v1/current",
            signing_certificates=(der(conf_cert),),
            generated_at=now,
        )

        configuration_clock = Clock()
        signers: dict[GatewayId, HeaderSigner] = {}
        echo = EchoProvider()
        await echo.start()
        stack.push_async_callback(echo.stop)

        async def runtime(
            gateway: GatewayId,
            member: MemberId,
            auth_pair: tuple[PrivateKey, x509.Certificate],
            peer_port: int,
            settings: dict[str, Any],
            log: InMemoryExchangeLog,
            policies: StaticPolicy,
            admission: Admission,
        ) -> GatewayRuntime:
            conf_client = GlobalConfigurationClient(
                anchor=anchor,
                cache_dir=tmp_path / f"globalconf-{gateway.gateway_code}-{member.member_code}",
                transport=InMemoryFetchTransport(envelope),
                clock=configuration_clock,
            )
            await conf_client.refresh()
            sign_key = generate_private_key()
            sign_cert = ca.issue(Profile.SIGN, str(member), sign_key.public_key())
            stapled = StapledOCSP(
                client=ocsp_client, certificate=sign_cert, issuer=issuing, url=ocsp_server.url
            )
            signers[gateway] = HeaderSigner(
                key=sign_key, certificate_chain=[sign_cert, issuing], ocsp_response=stapled
            )
            gw = GatewayRuntime(
                gateway_id=gateway,
                auth_key_pem=pem_key(auth_pair[0]),
                auth_chain_pem=certificates_pem([auth_pair[1], issuing]),
                signer=signers[gateway],
                configuration=conf_client,
                policies=policies,
                log=log,
                replay=ReplayGuard(),
                settings=GatewaySettings(
                    is_listen="127.0.0.1:0", peer_listen=f"127.0.0.1:{peer_port}", **settings
                ),
                ocsp=stapled,
                admission=admission,
                observer=observer,
            )
            await gw.start()
            stack.push_async_callback(gw.stop, 0)
            return gw

        consumer_log, provider_log = InMemoryExchangeLog(), InMemoryExchangeLog()
        policy = StaticPolicy(
            AccessPolicy(
                [
                    AccessRule(
                        provider=REGISTRY,
                        target=AccessTarget.service("cadastre.v1.Cadastre"),
                        subject=PROPERTY,
                    )
                ]
            )
        )
        provider_policy = StaticPolicy(policy.policy())
        consumer_admission, provider_admission = Admission(), Admission()
        consumer = await runtime(
            CONSUMER_GW,
            MINJUST,
            consumer_auth,
            consumer_port,
            {
                "clients": (
                    ClientSettings(
                        subsystem=PROPERTY,
                        allowed_addresses=property_allow,
                        client_cert_sha256=property_cert_sha256,
                    ),
                    ClientSettings(subsystem=ARCHIVE, allowed_addresses=archive_allow),
                ),
                "max_message_bytes": 64 * 1024,
                "is_client_ca_pem": is_client_ca_pem,
            },
            consumer_log,
            policy,
            consumer_admission,
        )
        provider = await runtime(
            PROVIDER_GW,
            CADASTRE,
            down_auth if impostor else provider_auth,
            provider_port,
            {
                "providers": (
                    ProviderSettings(
                        subsystem=REGISTRY, address=provider_address or f"127.0.0.1:{echo.port}"
                    ),
                )
            },
            provider_log,
            provider_policy,
            provider_admission,
        )
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{consumer.is_port}")
        stack.push_async_callback(channel.close, None)
        yield Harness(
            consumer=consumer,
            provider=provider,
            consumer_log=consumer_log,
            provider_log=provider_log,
            echo=echo,
            provider_policy=provider_policy,
            configuration_clock=configuration_clock,
            consumer_tls=(
                pem_key(consumer_auth[0]),
                certificates_pem([consumer_auth[1], issuing]),
            ),
            consumer_signer=signers[CONSUMER_GW],
            channel=channel,
            ca=ca,
            root_pem=certificates_pem([root]),
            consumer_admission=consumer_admission,
            provider_admission=provider_admission,
            anchor=anchor,
            envelope=envelope,
        )


def auth_hash(cert: x509.Certificate) -> bytes:
    return hashlib.sha256(der(cert)).digest()
