"""Settings and collaborators shared by the consumer and provider sides of a gateway.

Everything here is already loaded and validated (files are read at the command-line
edge, not here); :class:`GatewaySettings` carries units in its names.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol

from gateway._observe import NO_OBSERVER, ExchangeObserver
from gateway._verifycache import VerificationCache
from gateway.acl import AccessPolicy
from gateway.commit import ExchangeLog
from gateway.replay import ReplayGuard
from gateway.signing import DEFAULT_MAX_OCSP_AGE_S, HeaderSigner
from registry.snapshot import ConfigurationSnapshot
from serai.errors import ConfigError
from serai.identifiers import GatewayId, SubsystemId

__all__ = [
    "DEFAULT_DEADLINE_S",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "ClientSettings",
    "ConfigurationSource",
    "ExchangeParts",
    "GatewaySettings",
    "PolicySource",
    "ProviderSettings",
]

#: Largest request or response body, bytes (DESIGN: 4 MiB).
DEFAULT_MAX_MESSAGE_BYTES: Final = 4 * 1024 * 1024
#: Deadline of an exchange whose IS set none, seconds.
DEFAULT_DEADLINE_S: Final = 30.0

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigurationSource(Protocol):
    """The global configuration in force (e.g. ``registry.client.GlobalConfigurationClient``)."""

    def current(self) -> ConfigurationSnapshot:
        """The snapshot in force; raises ``globalconf_expired`` etc. when there is none."""
        ...


class PolicySource(Protocol):
    """The access rights in force (e.g. a store that reloads on change)."""

    def policy(self) -> AccessPolicy:
        """The policy in force."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientSettings:
    """A client subsystem whose IS may call this gateway's IS port, and how it is known.

    ``allowed_addresses`` are IP addresses or networks (``127.0.0.1``, ``10.0.0.0/8``);
    ``client_cert_sha256`` is the SHA-256 of the DER client certificate its IS presents
    on a TLS IS port. Each check applies when it is configured; with neither, no IS may
    speak for the subsystem.
    """

    subsystem: SubsystemId
    allowed_addresses: tuple[str, ...]
    client_cert_sha256: bytes | None = None
    networks: tuple[Network, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        try:
            nets = tuple(ipaddress.ip_network(a, strict=False) for a in self.allowed_addresses)
        except ValueError as exc:
            raise ConfigError(f"client {self.subsystem}: allowed address: {exc}") from exc
        if self.client_cert_sha256 is not None and len(self.client_cert_sha256) != 32:
            raise ConfigError(f"client {self.subsystem}: client_cert_sha256 must be 32 bytes")
        object.__setattr__(self, "networks", nets)

    def allows(self, address: str) -> bool:
        """Whether an IS at IP ``address`` may speak for this subsystem."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.networks)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderSettings:
    """A provider subsystem this gateway serves, and its IS (``host:port``, plaintext)."""

    subsystem: SubsystemId
    address: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewaySettings:
    """The transport settings of one gateway.

    ``is_client_ca_pem`` switches the IS port to TLS: the gateway's authentication key
    and certificate serve it, and every IS must present a client certificate chaining to
    these PEM roots (not the federation's approved CAs: IS certificates are internal to
    the member). ``None``, the default, is a plaintext IS port.
    """

    is_listen: str = "127.0.0.1:0"
    peer_listen: str = "127.0.0.1:0"
    clients: tuple[ClientSettings, ...] = ()
    providers: tuple[ProviderSettings, ...] = ()
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_skew_s: float = 60.0
    max_ocsp_age_s: float = DEFAULT_MAX_OCSP_AGE_S
    default_deadline_s: float = DEFAULT_DEADLINE_S
    peer_connect_timeout_s: float = 5.0
    stop_grace_s: float = 5.0
    is_client_ca_pem: bytes | None = None

    def __post_init__(self) -> None:
        if self.max_message_bytes < 1:
            raise ConfigError("max_message_bytes must be positive")
        if self.is_client_ca_pem is None:
            pinned = [str(c.subsystem) for c in self.clients if c.client_cert_sha256 is not None]
            if pinned:
                raise ConfigError(
                    f"client {pinned[0]}: a client certificate needs a TLS IS port "
                    "(is_client_ca_pem)"
                )
        if self.max_skew_s <= 0 or self.default_deadline_s <= 0:
            raise ConfigError("max_skew_s and default_deadline_s must be positive")

    def client(self, subsystem: SubsystemId) -> ClientSettings | None:
        """The settings of client ``subsystem``, if this gateway serves it."""
        return next((c for c in self.clients if c.subsystem == subsystem), None)

    def provider(self, subsystem: SubsystemId) -> ProviderSettings | None:
        """The settings of provider ``subsystem``, if this gateway serves it."""
        return next((p for p in self.providers if p.subsystem == subsystem), None)


PeerRevocationCheck = Callable[
    [Mapping[str, Iterable[bytes]], ConfigurationSnapshot], Awaitable[None]
]


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _admit_all() -> None:
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class ExchangeParts:
    """What both sides of the exchange use; built once by the runtime."""

    gateway_id: GatewayId
    settings: GatewaySettings
    configuration: ConfigurationSource
    policies: PolicySource
    log: ExchangeLog
    replay: ReplayGuard
    signer: HeaderSigner
    #: Accepted certificate paths and OCSP answers, reused while their time checks pass
    #: (gateway/_verifycache.py); every message-bound check still runs on every call.
    verification_cache: VerificationCache | None = None
    clock: Callable[[], dt.datetime] = _utc_now
    #: Called when an exchange starts, on both sides: raises a
    #: :class:`~serai.errors.SeraiError` to refuse every new exchange (the message log's
    #: ``timestamping_overdue``); returns ``None`` to let it go on.
    admission: Callable[[], None] = _admit_all
    #: Told of every exchange, on both sides (metrics and the exchange log line).
    observer: ExchangeObserver = NO_OBSERVER
    #: Checks, on the provider side, that the calling gateway's TLS certificate is not
    #: revoked (gateway/_peerauth.py): given the call's auth context and the
    #: configuration in force, raises a :class:`~serai.errors.SeraiError` to refuse.
    peer_revocation: PeerRevocationCheck | None = None
