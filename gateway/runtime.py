"""One gateway's transport: the IS port and the peer port on one event loop (DESIGN §4).

:class:`GatewayRuntime` is built from already-loaded parts (the command-line edge reads
files and TOML; nothing here does) and serves:

- the **IS port**, where any unary method is forwarded as raw bytes by its path
  (:class:`gateway.consumer.ConsumerSide`): plaintext by default, IS authentication
  by address allow-list per client subsystem; or, when the settings carry
  ``is_client_ca_pem``, TLS with our authentication key and certificate, a client
  certificate required (chaining to that CA), and per client subsystem the pinned
  SHA-256 of its IS's certificate and/or its address allow-list;
- the **peer port**, TLS with client certificates required and verified against the
  approved roots of the configuration in force at each new handshake
  (:class:`gateway.tlsconf.PeerServerCredentials`: a CA the registry approves or
  withdraws takes effect on new connections once the configuration is refreshed;
  connections already open are not re-checked),
  serving ``serai.transport.v1.Transport/Exchange``
  (:class:`gateway.provider.ProviderSide`; ``ExchangeStream`` is UNIMPLEMENTED);
- on the IS port, the metaservices ``serai.meta.v1.Meta`` (:mod:`gateway.meta`:
  ListClients answered here, the others forwarded as exchanges to the provider's
  gateway, which answers them itself) and gRPC server reflection for the provider named
  by ``x-road-service`` (:mod:`gateway.reflection`);
- ``grpc.health.v1.Health`` on both: SERVING once bound, NOT_SERVING while the gateway
  is not ready (:meth:`GatewayRuntime.set_serving`, driven by ``serai gateway serve``).

Known limits: a peer connection established before its CA was withdrawn stays open
until it closes (only new handshakes see the new roots; see :mod:`gateway.tlsconf`);
likewise the consumer's probe of a provider gateway follows the approved roots from the
next new channel on; the IS port's client CA and certificate pins are fixed at start.
Both TLS ports speak TLS 1.3 only (:mod:`serai.tlspolicy`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import grpc
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer as AioHealthServicer  # health.aio, typed

from certs.ocsp_client import OCSPClient
from gateway._messages import TRANSPORT_SERVICE
from gateway._observe import ExchangeObserver
from gateway._peerauth import PeerAuthRevocation
from gateway._settings import (
    DEFAULT_DEADLINE_S,
    DEFAULT_MAX_MESSAGE_BYTES,
    ClientSettings,
    ConfigurationSource,
    ExchangeParts,
    GatewaySettings,
    PolicySource,
    ProviderSettings,
)
from gateway._verifycache import VerificationCache
from gateway.commit import ExchangeLog
from gateway.consumer import ConsumerSide
from gateway.meta import ConsumerMeta
from gateway.peers import ENVELOPE_BYTES, ChannelPool, PeerPool
from gateway.provider import ProviderSide
from gateway.reflection import REFLECTION_METHODS, ReflectionHandler
from gateway.replay import ReplayGuard, SharedReplayCheck
from gateway.signing import HeaderSigner
from gateway.tlsconf import PeerServerCredentials, certificates_pem, is_server_credentials
from serai.cliutil import log_event
from serai.identifiers import GatewayId

__all__ = [
    "DEFAULT_DEADLINE_S",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "ClientSettings",
    "ConfigurationSource",
    "GatewayRuntime",
    "GatewaySettings",
    "PolicySource",
    "ProviderSettings",
    "StapledOCSP",
]

_LOG = logging.getLogger("serai.gateway")
_HEALTH_PREFIX: Final = "/grpc.health.v1.Health/"
#: The shortest wait between two OCSP refreshes of the stapled answer (StapledOCSP).
_MIN_OCSP_WAIT_S: Final = 1.0


class StapledOCSP:
    """A fresh OCSP response for our signing certificate, for :class:`HeaderSigner`.

    Calling it returns the last validated response (never blocks); :meth:`refresh`
    asks :class:`~certs.ocsp_client.OCSPClient` (which caches, and fetches a new answer
    in the background once the one it holds nears its bounds). The runtime calls it at
    start, then :meth:`keep_fresh` calls it again after :meth:`next_refresh_in_s`:

    * after a success, a quarter of the held answer's remaining life (until its
      nextUpdate or the client's ``max_age_s``, whichever comes first), between 1 s and
      ``refresh_interval_s`` (60 s): a short-lived answer is replaced well before it
      lapses, since the poll that starts a background fetch is followed by the one that
      takes its result before that life is out;
    * after a failure, 1 s, then twice the previous wait, up to ``refresh_interval_s``:
      a gateway whose responder was away staples again within seconds of its return.

    Once the response held is past its nextUpdate or older than the client's
    ``max_age_s`` (the responder has been away that long), calling it returns ``b""``:
    peers would refuse a signature stapled with it (``ocsp_stale``, blaming the client),
    so :class:`HeaderSigner` refuses to sign with ``ocsp_unavailable``, this gateway's
    outage, until a fresh one.
    """

    def __init__(
        self,
        *,
        client: OCSPClient,
        certificate: x509.Certificate,
        issuer: x509.Certificate,
        url: str | None = None,
        refresh_interval_s: float = 60.0,
    ) -> None:
        self._client = client
        self._certificate = certificate
        self._issuer = issuer
        self._url = url
        self.refresh_interval_s = refresh_interval_s
        self._der = b""
        #: The thisUpdate of the response held (``None`` before the first).
        self.this_update: dt.datetime | None = None
        self._next_update: dt.datetime | None = None
        self._failure_wait_s = 0.0

    def __call__(self) -> bytes:
        bound = self._bound()
        if bound is not None and bound < dt.datetime.now(dt.UTC):
            return b""
        return self._der

    def _bound(self) -> dt.datetime | None:
        """When the response held stops being usable (``None``: none held)."""
        if self.this_update is None:
            return None
        bound = self.this_update + dt.timedelta(seconds=self._client.max_age_s)
        if self._next_update is not None:
            bound = min(bound, self._next_update)
        return bound

    def next_refresh_in_s(self, *, failed: bool = False, now: dt.datetime | None = None) -> float:
        """How long to wait before the next :meth:`refresh` (class docstring), after a
        refresh that succeeded or, with ``failed``, one that did not."""
        if failed:
            self._failure_wait_s = min(
                self.refresh_interval_s, max(_MIN_OCSP_WAIT_S, 2 * self._failure_wait_s)
            )
            return self._failure_wait_s
        self._failure_wait_s = 0.0
        bound = self._bound()
        if bound is None:
            return _MIN_OCSP_WAIT_S
        remaining_s = (bound - (now or dt.datetime.now(dt.UTC))).total_seconds()
        return min(self.refresh_interval_s, max(_MIN_OCSP_WAIT_S, remaining_s / 4))

    async def keep_fresh(self) -> None:
        """Refresh on :meth:`next_refresh_in_s`'s schedule until cancelled; a failure keeps
        the last good response and is logged (``ocsp_refresh_failed``)."""
        wait_s = self.next_refresh_in_s()
        while True:
            await asyncio.sleep(wait_s)
            try:
                await self.refresh()
            except Exception as exc:  # noqa: BLE001  (keep the last good response; retry)
                wait_s = self.next_refresh_in_s(failed=True)
                _LOG.debug("OCSP refresh failed", exc_info=True)
                log_event(
                    "ocsp_refresh_failed",
                    certificate="signing",
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in_s=wait_s,
                )
            else:
                wait_s = self.next_refresh_in_s()

    @property
    def client(self) -> OCSPClient:
        """The OCSP client (also asked about peers' authentication certificates)."""
        return self._client

    async def refresh(self) -> None:
        """Fetch (or take from the client's cache) a fresh, good response."""
        result = await self._client.status(self._certificate, self._issuer, url=self._url)
        result.require_good()
        self._der = result.der
        self.this_update = result.this_update
        self._next_update = result.next_update


class GatewayRuntime:
    """The IS port and the peer port of one gateway (module docstring)."""

    def __init__(
        self,
        *,
        gateway_id: GatewayId,
        auth_key_pem: bytes,
        auth_chain_pem: bytes,
        signer: HeaderSigner,
        configuration: ConfigurationSource,
        policies: PolicySource,
        log: ExchangeLog,
        replay: ReplayGuard,
        settings: GatewaySettings,
        shared_replay: SharedReplayCheck | None = None,
        ocsp: StapledOCSP | None = None,
        clock: Callable[[], dt.datetime] | None = None,
        admission: Callable[[], None] | None = None,
        observer: ExchangeObserver | None = None,
    ) -> None:
        self._auth_key_pem = auth_key_pem
        self._auth_chain_pem = auth_chain_pem
        self._settings = settings
        self._ocsp = ocsp
        self._shared_replay = shared_replay
        parts = ExchangeParts(
            gateway_id=gateway_id,
            settings=settings,
            configuration=configuration,
            policies=policies,
            log=log,
            replay=replay,
            signer=signer,
            verification_cache=VerificationCache(),
        )
        if clock is not None:
            parts = dataclasses.replace(parts, clock=clock)
        if admission is not None:
            parts = dataclasses.replace(parts, admission=admission)
        if observer is not None:
            parts = dataclasses.replace(parts, observer=observer)
        if ocsp is not None:
            revocation = PeerAuthRevocation(client=ocsp.client)
            parts = dataclasses.replace(parts, peer_revocation=revocation.check)
        self._parts = parts
        self._is_server: grpc.aio.Server | None = None
        self._peer_server: grpc.aio.Server | None = None
        self._peer_credentials: PeerServerCredentials | None = None
        self._peers: PeerPool | None = None
        self._providers = ChannelPool(max_message_bytes=settings.max_message_bytes)
        self._ocsp_task: asyncio.Task[None] | None = None
        self._health: list[AioHealthServicer] = []
        self._serving = True
        self._is_port = 0
        self._peer_port = 0

    @property
    def gateway_id(self) -> GatewayId:
        return self._parts.gateway_id

    @property
    def verification_cache(self) -> VerificationCache | None:
        """The cache of accepted certificate paths and OCSP answers of peers."""
        return self._parts.verification_cache

    @property
    def is_port(self) -> int:
        """The bound IS port (after :meth:`start`)."""
        return self._is_port

    @property
    def peer_port(self) -> int:
        """The bound peer port (after :meth:`start`)."""
        return self._peer_port

    async def start(self) -> None:
        """Bind both ports and serve; raises if the configuration or OCSP is not at hand."""
        settings = self._settings
        snapshot = self._parts.configuration.current()
        roots_pem = certificates_pem(snapshot.trust_store.roots)
        if self._ocsp is not None:
            await self._ocsp.refresh()
            self._ocsp_task = asyncio.create_task(self._ocsp.keep_fresh())
        self._peers = PeerPool(
            key_pem=self._auth_key_pem,
            chain_pem=self._auth_chain_pem,
            roots_pem=roots_pem,
            max_message_bytes=settings.max_message_bytes,
            probe_timeout_s=settings.peer_connect_timeout_s,
            roots_source=self._current_roots_pem,
        )
        consumer = ConsumerSide(parts=self._parts, peers=self._peers)
        provider = ProviderSide(
            parts=self._parts, providers=self._providers, shared_replay=self._shared_replay
        )
        # No gRPC receive limit on either port: the handlers refuse an oversize message
        # themselves, first, with message_too_large in x-road-error, counted. A gRPC limit
        # would answer a bare RESOURCE_EXHAUSTED the gateway never sees (no code, no
        # metric), and it bounds no memory: grpc buffers the whole message before applying
        # it (measured with grpcio 1.75.1: a 300 MB message to a server limited to 1 KB
        # raised its peak RSS by 295 MB). See SECURITY.md on memory exhaustion.
        options = (
            ("grpc.max_receive_message_length", -1),
            ("grpc.max_send_message_length", settings.max_message_bytes + ENVELOPE_BYTES),
        )

        is_server = grpc.aio.server(options=options)
        self._health.append(await _add_health(is_server))
        # Reflection and the metaservices the gateway answers itself come before the
        # catch-all forwarder (grpc asks generic handlers in the order they were added).
        is_server.add_generic_rpc_handlers(
            (
                ReflectionHandler(parts=self._parts),
                ConsumerMeta(parts=self._parts),
                _ForwardAny(consumer.handle),
            )
        )
        if settings.is_client_ca_pem is None:
            self._is_port = is_server.add_insecure_port(settings.is_listen)
        else:
            self._is_port = is_server.add_secure_port(
                settings.is_listen,
                is_server_credentials(
                    key_pem=self._auth_key_pem,
                    chain_pem=self._auth_chain_pem,
                    client_ca_pem=settings.is_client_ca_pem,
                ),
            )

        peer_server = grpc.aio.server(options=options)
        self._health.append(await _add_health(peer_server))
        peer_server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    TRANSPORT_SERVICE,
                    {"Exchange": grpc.unary_unary_rpc_method_handler(provider.exchange)},
                ),
            )
        )
        configuration = self._parts.configuration
        peer_credentials = PeerServerCredentials(
            key_pem=self._auth_key_pem,
            chain_pem=self._auth_chain_pem,
            # Called by grpc before each new handshake, in a grpc thread: current() only
            # reads the immutable snapshot in force and the clock.
            roots=lambda: configuration.current().trust_store.roots,
        )
        self._peer_port = peer_server.add_secure_port(
            settings.peer_listen, peer_credentials.credentials
        )
        await is_server.start()
        await peer_server.start()
        self._is_server, self._peer_server = is_server, peer_server
        self._peer_credentials = peer_credentials
        _LOG.info(
            "gateway %s serving: IS port %d (%s), peer port %d",
            self._parts.gateway_id,
            self._is_port,
            "plaintext" if settings.is_client_ca_pem is None else "TLS",
            self._peer_port,
        )

    async def set_serving(self, serving: bool) -> None:
        """Report SERVING or NOT_SERVING on the IS and peer ports' health services (the
        gateway's readiness, as ``/readyz`` sees it); cheap when nothing changes."""
        if serving == self._serving:
            return
        self._serving = serving
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for servicer in self._health:
            await servicer.set("", status)

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting calls, let running ones finish within ``grace`` seconds."""
        grace_s = self._settings.stop_grace_s if grace is None else grace
        servers = [s for s in (self._is_server, self._peer_server) if s is not None]
        await asyncio.gather(*(s.stop(grace_s) for s in servers))
        self._is_server = self._peer_server = None
        if self._ocsp_task is not None:
            self._ocsp_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ocsp_task
            self._ocsp_task = None
        if self._peers is not None:
            await self._peers.close()
        await self._providers.close()

    def _current_roots_pem(self) -> bytes:
        """The approved roots of the configuration in force, PEM (for new peer probes)."""
        return certificates_pem(self._parts.configuration.current().trust_store.roots)


_Handler = Callable[[str, bytes, Any], Awaitable[bytes]]


class _ForwardAny(grpc.GenericRpcHandler):  # type: ignore[type-arg]  # not subscriptable at run time
    """Every unary method but health and reflection, with raw bytes in and out (the
    metaservices a provider gateway answers travel as exchanges; ListClients is caught
    by :class:`~gateway.meta.ConsumerMeta` first)."""

    def __init__(self, handle: _Handler) -> None:
        self._handle = handle

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[bytes, bytes] | None:
        method = handler_call_details.method
        if method.startswith(_HEALTH_PREFIX) or method in REFLECTION_METHODS:
            return None
        handle = self._handle

        async def forward(body: bytes, context: Any) -> bytes:
            return await handle(method, body, context)

        return grpc.unary_unary_rpc_method_handler(
            forward, request_deserializer=None, response_serializer=None
        )


async def _add_health(server: grpc.aio.Server) -> AioHealthServicer:
    servicer = AioHealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    # SERVING once bound; serve.py turns it NOT_SERVING while the gateway is not ready.
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    return servicer
