"""Long-lived gRPC channels: one per peer gateway (pinned mTLS), one per provider IS.

:class:`PeerPool` opens a channel to a peer gateway the first time one is needed and
keeps it (HTTP/2 multiplexes every exchange over it). A channel is keyed by the
gateway's id, address and registered certificate hash, so a registry change of any of
them opens a new one. Before opening it, the pool probes the address and checks the
certificate there against the registered hash (see :mod:`gateway.tlsconf` for why, and
for what it guarantees); the channel then trusts only that certificate.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import Callable, Sequence
from typing import Final

import grpc

from gateway.errors import GatewayError
from gateway.tlsconf import (
    ProbeContext,
    fetch_peer_certificate,
    pinned_channel_credentials,
    target_name_of,
)
from registry.model import Gateway
from serai.errors import ErrorCode, Origin, SeraiError

__all__ = ["ENVELOPE_BYTES", "ChannelPool", "PeerPool", "PeerUnreachableError"]

_Key = tuple[str, str, bytes]
_KEEPALIVE: Final = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
)


class PeerUnreachableError(GatewayError):
    """A peer gateway could not be reached (the consumer fails over to the next)."""

    default_code = ErrorCode.PROVIDER_UNAVAILABLE
    default_origin = Origin.GATEWAY


class PeerPool:
    """Pinned mTLS channels to peer gateways, one per (id, address, certificate hash)."""

    def __init__(
        self,
        *,
        key_pem: bytes,
        chain_pem: bytes,
        roots_pem: bytes,
        max_message_bytes: int,
        probe_timeout_s: float = 5.0,
        roots_source: Callable[[], bytes] | None = None,
    ) -> None:
        self._key_pem = key_pem
        self._chain_pem = chain_pem
        #: The approved roots (PEM) now; when given, a new channel's probe follows them, so
        #: a CA the registry approves or withdraws counts from the next new channel on.
        self._roots_source = roots_source
        self._probe_roots = roots_pem
        self._probe = ProbeContext(key_pem=key_pem, chain_pem=chain_pem, roots_pem=roots_pem)
        self._probe_timeout_s = probe_timeout_s
        self._options: Sequence[tuple[str, int | str]] = (
            *_KEEPALIVE,
            # No receive limit: the consumer refuses an oversize response itself, with
            # message_too_large (gateway.consumer), where grpc's limit would give a bare
            # RESOURCE_EXHAUSTED; and grpc buffers a whole message before any limit.
            ("grpc.max_receive_message_length", -1),
            ("grpc.max_send_message_length", max_message_bytes + ENVELOPE_BYTES),
        )
        self._channels: dict[_Key, grpc.aio.Channel] = {}
        self._locks: dict[_Key, asyncio.Lock] = {}
        self._closing: set[asyncio.Task[None]] = set()

    async def channel_for(self, gateway: Gateway, *, timeout_s: float) -> grpc.aio.Channel:
        """The channel to ``gateway``; probes and pins on first use.

        Raises :class:`PeerUnreachableError` when the address does not answer a TLS
        handshake, ``peer_not_registered`` when it answers with another certificate.
        """
        key = (str(gateway.id), gateway.address, gateway.auth_certificate_sha256)
        channel = self._channels.get(key)
        if channel is not None:
            return channel
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            channel = self._channels.get(key)
            if channel is None:
                channel = await self._open(gateway, timeout_s=timeout_s)
                self._retire(gateway)
                self._channels[key] = channel
        return channel

    async def close(self) -> None:
        """Close every channel."""
        channels = list(self._channels.values())
        self._channels.clear()
        await asyncio.gather(*(c.close(None) for c in channels))

    def forget(self, gateway: Gateway) -> bool:
        """Drop the channel to ``gateway`` after it proved unreachable; the next use opens
        a new one (a new handshake, the certificate checked again) instead of waiting out
        the old channel's reconnect back-off. Returns whether there was one."""
        had = any(k[0] == str(gateway.id) for k in self._channels)
        self._retire(gateway)
        return had

    def _current_probe(self) -> ProbeContext:
        if self._roots_source is not None:
            try:
                roots = self._roots_source()
            except SeraiError:  # no configuration in force: keep the roots we have
                roots = self._probe_roots
            if roots != self._probe_roots:
                self._probe = ProbeContext(
                    key_pem=self._key_pem, chain_pem=self._chain_pem, roots_pem=roots
                )
                self._probe_roots = roots
        return self._probe

    async def _open(self, gateway: Gateway, *, timeout_s: float) -> grpc.aio.Channel:
        probe = self._current_probe()
        try:
            der = await fetch_peer_certificate(
                gateway.address, probe=probe, timeout_s=min(timeout_s, self._probe_timeout_s)
            )
        except ssl.SSLError as exc:
            raise GatewayError(
                f"gateway {gateway.id} at {gateway.address}: TLS handshake refused ({exc})",
                code=ErrorCode.PEER_NOT_REGISTERED,
                origin=Origin.PROVIDER,
            ) from exc
        except (OSError, TimeoutError) as exc:
            raise PeerUnreachableError(
                f"gateway {gateway.id} at {gateway.address} is unreachable: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if hashlib.sha256(der).digest() != gateway.auth_certificate_sha256:
            raise GatewayError(
                f"the server at {gateway.address} is not gateway {gateway.id}: its TLS "
                "certificate is not the registered authentication certificate",
                code=ErrorCode.PEER_NOT_REGISTERED,
                origin=Origin.PROVIDER,
            )
        credentials = pinned_channel_credentials(
            peer_certificate_der=der, key_pem=self._key_pem, chain_pem=self._chain_pem
        )
        options = (*self._options, ("grpc.ssl_target_name_override", target_name_of(der)))
        return grpc.aio.secure_channel(gateway.address, credentials, options=options)

    def _retire(self, gateway: Gateway) -> None:
        """Drop channels to an older address or certificate of the same gateway."""
        for key in [k for k in self._channels if k[0] == str(gateway.id)]:
            old = self._channels.pop(key)
            task = asyncio.get_running_loop().create_task(old.close(30.0))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)


#: Room for the signed header, certificate chain and OCSP response around a body in an
#: exchange message on the peer port (the gateways' send limit is the body's plus this).
ENVELOPE_BYTES: Final = 1024 * 1024


#: Longest wait between two connection attempts to an IS that cannot be reached. gRPC's
#: default back-off grows to 120 s, and meanwhile every call fails at once: after a few
#: minutes' outage, an IS that is back was refused for up to two more minutes.
_IS_MAX_RECONNECT_BACKOFF_MS: Final = 5_000


class ChannelPool:
    """Plaintext channels to information systems, one per ``host:port``."""

    def __init__(self, *, max_message_bytes: int) -> None:
        self._options: Sequence[tuple[str, int]] = (
            *_KEEPALIVE,
            ("grpc.max_reconnect_backoff_ms", _IS_MAX_RECONNECT_BACKOFF_MS),
            # No receive limit: the provider refuses an IS's oversize answer itself, with
            # message_too_large (gateway.provider), where grpc's limit would look like the
            # IS's own RESOURCE_EXHAUSTED and be signed as its answer.
            ("grpc.max_receive_message_length", -1),
            ("grpc.max_send_message_length", max_message_bytes),
        )
        self._channels: dict[str, grpc.aio.Channel] = {}

    def channel_for(self, address: str) -> grpc.aio.Channel:
        """The channel to ``address``."""
        channel = self._channels.get(address)
        if channel is None:
            channel = grpc.aio.insecure_channel(address, options=self._options)
            self._channels[address] = channel
        return channel

    async def close(self) -> None:
        """Close every channel."""
        channels = list(self._channels.values())
        self._channels.clear()
        await asyncio.gather(*(c.close(None) for c in channels))
