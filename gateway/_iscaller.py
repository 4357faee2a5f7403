"""Who is calling on the IS port: the ``x-road-*`` metadata and the IS's authentication.

Shared by everything the IS port answers (the forwarded exchange of
:mod:`gateway.consumer`, the metaservices of :mod:`gateway.meta` and the reflection of
:mod:`gateway.reflection`), so an information system is known the same way whatever it
calls:

- ``x-road-client`` (and ``x-road-service`` where the call names a provider) is present
  and a valid subsystem id (``invalid_identifier``);
- this gateway serves that client subsystem in its settings (``unknown_client``), and
  the IS is that subsystem's (``client_not_authenticated``): the pinned SHA-256 of its
  TLS client certificate and/or its address allow-list, each when configured;
- the global configuration in force lists this gateway as serving the client
  (``unknown_client``).
"""

from __future__ import annotations

from typing import Any, Final

import grpc

from gateway._settings import ExchangeParts, GatewaySettings
from gateway.errors import GatewayError
from gateway.tlsconf import peer_certificate_sha256
from registry.snapshot import ConfigurationSnapshot
from serai.errors import ErrorCode, Origin
from serai.identifiers import SubsystemId

__all__ = [
    "CLIENT_KEY",
    "ISSUE_KEY",
    "SERVICE_KEY",
    "USER_ID_KEY",
    "authenticate_is",
    "check_registered_client",
    "required",
    "x_road_metadata",
]

CLIENT_KEY: Final = "x-road-client"
SERVICE_KEY: Final = "x-road-service"
USER_ID_KEY: Final = "x-road-user-id"
ISSUE_KEY: Final = "x-road-issue"

_Context = grpc.aio.ServicerContext[Any, Any]


def x_road_metadata(context: _Context) -> dict[str, str]:
    """The call's text ``x-road-*`` metadata (first value of each key)."""
    out: dict[str, str] = {}
    for key, value in context.invocation_metadata() or ():
        if key.startswith("x-road-") and not key.endswith("-bin"):
            out.setdefault(key, str(value))
    return out


def required(metadata: dict[str, str], key: str) -> str:
    """The value of ``key``; ``invalid_identifier`` when it is missing or empty."""
    value = metadata.get(key)
    if not value:
        raise GatewayError(
            f"metadata {key} is required",
            code=ErrorCode.INVALID_IDENTIFIER,
            origin=Origin.CLIENT,
        )
    return value


def authenticate_is(settings: GatewaySettings, client: SubsystemId, context: _Context) -> None:
    """Return if the calling IS may speak for ``client`` (module docstring); else raise."""
    served = settings.client(client)
    if served is None:
        raise GatewayError(
            f"this gateway does not serve client {client}",
            code=ErrorCode.UNKNOWN_CLIENT,
            origin=Origin.CLIENT,
        )
    peer = context.peer()
    if served.client_cert_sha256 is not None:
        presented = peer_certificate_sha256(context.auth_context())
        if presented != served.client_cert_sha256:
            raise GatewayError(
                f"the IS at {peer} did not present the client certificate of {client}",
                code=ErrorCode.CLIENT_NOT_AUTHENTICATED,
                origin=Origin.CLIENT,
            )
        if not served.allowed_addresses:
            return
    address = _peer_ip(peer)
    if address is None or not served.allows(address):
        raise GatewayError(
            f"an IS at {peer} may not call for {client}",
            code=ErrorCode.CLIENT_NOT_AUTHENTICATED,
            origin=Origin.CLIENT,
        )


def check_registered_client(
    parts: ExchangeParts, snapshot: ConfigurationSnapshot, client: SubsystemId
) -> None:
    """Return if the configuration lists this gateway as serving ``client``; else raise."""
    if parts.gateway_id not in {g.id for g in snapshot.gateways_serving(client)}:
        raise GatewayError(
            f"gateway {parts.gateway_id} is not registered as serving {client}",
            code=ErrorCode.UNKNOWN_CLIENT,
            origin=Origin.CLIENT,
        )


def _peer_ip(peer: str) -> str | None:
    """The IP of a gRPC peer string (``ipv4:1.2.3.4:5``, ``ipv6:[::1]:5``)."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]")
    return None
