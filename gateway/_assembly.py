"""Parts of a running gateway built from a :class:`~gateway.config.GatewayConfig`.

:mod:`gateway.serve` wires these together; each is small enough to test alone:

- :func:`load_files` reads the keys, certificates and trust anchor (blocking file I/O:
  call it off the event loop, or before it starts);
- :func:`settings_from_config` maps ``gateway.toml`` onto the runtime's
  :class:`~gateway._settings.GatewaySettings`;
- :func:`ocsp_url_for` picks the responder for our signing certificate;
- :class:`FollowedPolicy` is the runtime's policy source, kept up to date from the
  access-rights store (never read on the event loop);
- :class:`AdminChangeSignal` wraps the exchange log so that an accepted admin change
  reloads :class:`FollowedPolicy` at once instead of at its next poll.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certs.keys import PrivateKey, load_certificate_chain, load_private_key
from certs.ocsp_client import ocsp_url_of
from gateway._settings import ClientSettings, GatewaySettings, ProviderSettings
from gateway.acl import AccessPolicy
from gateway.aclstore import SqlAclStore
from gateway.commit import ExchangeLog, LogIndex, LogRecord
from gateway.config import GatewayConfig
from registry.codec import TrustAnchor, decode_anchor
from registry.snapshot import ConfigurationSnapshot
from serai.cliutil import format_address, log_event, read_passphrase
from serai.errors import ConfigError, SeraiError

__all__ = [
    "DEFAULT_POLICY_POLL_S",
    "AdminChangeSignal",
    "FollowedPolicy",
    "LoadedFiles",
    "load_files",
    "ocsp_url_for",
    "run_in_background",
    "settings_from_config",
]

#: Seconds between reads of the access-rights change counter (changes made by another
#: gateway node sharing a PostgreSQL store arrive this way).
DEFAULT_POLICY_POLL_S: Final = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadedFiles:
    """What ``gateway.toml`` points at, read and checked."""

    auth_key_pem: bytes  # unencrypted PKCS#8, held in memory only
    auth_chain_pem: bytes
    signing_key: PrivateKey
    signing_chain: tuple[x509.Certificate, ...]  # leaf first, then its issuer(s)
    anchor: TrustAnchor
    log_signing_key: PrivateKey
    log_signing_chain: tuple[x509.Certificate, ...]  # leaf first, root excluded
    is_client_ca_pem: bytes | None = None  # with is_tls: the IS client CA(s), PEM


def load_files(config: GatewayConfig) -> LoadedFiles:
    """Read keys (with ``key_passphrase_file``), certificate chains, the anchor and, with
    ``is_tls``, the IS client CA (``is_client_ca``)."""
    passphrase = read_passphrase(config.key_passphrase_file)
    auth_key = load_private_key(config.auth_key, passphrase=passphrase)
    auth_chain = load_certificate_chain(config.auth_certificate)
    signing_key = load_private_key(config.signing_key, passphrase=passphrase)
    signing_chain = tuple(load_certificate_chain(config.signing_certificate))
    if len(signing_chain) < 2:
        raise ConfigError(
            f"{config.signing_certificate}: expected the signing certificate followed by "
            "its issuing CA (as `serai gateway init` writes it)"
        )
    log_signing_key = load_private_key(config.log_signing_key, passphrase=passphrase)
    log_signing_chain = tuple(load_certificate_chain(config.log_signing_certificate))
    try:
        anchor_bytes = config.anchor.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{config.path}: key 'anchor': cannot read {config.anchor}") from exc
    try:
        anchor = decode_anchor(anchor_bytes)
    except SeraiError as exc:
        raise ConfigError(f"{config.path}: key 'anchor': {exc.message}") from exc
    if anchor.instance != config.instance:
        raise ConfigError(
            f"{config.path}: key 'anchor': the anchor of instance {anchor.instance}, "
            f"not {config.instance}"
        )
    is_client_ca_pem = None
    if config.is_client_ca is not None:
        try:
            client_cas = load_certificate_chain(config.is_client_ca)
        except SeraiError as exc:
            raise ConfigError(f"{config.path}: key 'is_client_ca': {exc.message}") from exc
        is_client_ca_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in client_cas)
    return LoadedFiles(
        auth_key_pem=auth_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        auth_chain_pem=b"".join(c.public_bytes(serialization.Encoding.PEM) for c in auth_chain),
        signing_key=signing_key,
        signing_chain=signing_chain,
        anchor=anchor,
        log_signing_key=log_signing_key,
        log_signing_chain=log_signing_chain,
        is_client_ca_pem=is_client_ca_pem,
    )


def settings_from_config(
    config: GatewayConfig, *, is_client_ca_pem: bytes | None = None
) -> GatewaySettings:
    """The runtime's settings; with ``is_tls``, ``is_client_ca_pem`` is required (the
    file ``is_client_ca`` as :func:`load_files` read it)."""
    if config.is_tls and is_client_ca_pem is None:
        raise ConfigError(f"{config.path}: key 'is_client_ca': the IS client CA was not loaded")
    return GatewaySettings(
        is_listen=format_address(*config.is_listen),
        peer_listen=format_address(*config.peer_listen),
        clients=tuple(
            ClientSettings(
                subsystem=c.subsystem,
                allowed_addresses=tuple(str(n) for n in c.allow),
                client_cert_sha256=(
                    None if c.client_cert_sha256 is None else bytes.fromhex(c.client_cert_sha256)
                ),
            )
            for c in config.clients
        ),
        providers=tuple(
            ProviderSettings(subsystem=p.subsystem, address=format_address(*p.address))
            for p in config.providers
        ),
        max_message_bytes=config.max_message_bytes,
        max_skew_s=float(config.max_skew_s),
        default_deadline_s=config.default_timeout_s,
        is_client_ca_pem=is_client_ca_pem if config.is_tls else None,
    )


def ocsp_url_for(
    certificate: x509.Certificate, issuer: x509.Certificate, snapshot: ConfigurationSnapshot
) -> str | None:
    """The certificate's own AIA responder, else the first of its approved CA's."""
    own = ocsp_url_of(certificate)
    if own is not None:
        return own
    urls = snapshot.ocsp_urls_for(issuer)
    return urls[0] if urls else None


class FollowedPolicy:
    """The access policy in force, re-read from ``store`` when it changes.

    :meth:`policy` never touches the store (the runtime calls it per request on the
    event loop); :meth:`run` reads the change counter in ``executor`` every
    ``poll_s`` seconds (changes made by another node sharing the store), and at once
    when :meth:`changed` is called. A failed read is logged and the last policy stays
    in force.
    """

    def __init__(
        self,
        *,
        store: SqlAclStore,
        initial: AccessPolicy,
        executor: concurrent.futures.Executor,
        poll_s: float = DEFAULT_POLICY_POLL_S,
    ) -> None:
        self._store = store
        self._policy = initial
        self._executor = executor
        self._poll_s = poll_s
        self._wake = asyncio.Event()

    def policy(self) -> AccessPolicy:
        """The policy in force."""
        return self._policy

    def changed(self) -> None:
        """Ask for a re-read now (an admin change was accepted)."""
        self._wake.set()

    async def reload(self) -> None:
        """Read the store once; swap the policy in when its generation moved."""
        loop = asyncio.get_running_loop()
        new = await loop.run_in_executor(
            self._executor, self._store.policy_if_changed, self._policy
        )
        if new is not None:
            self._policy = new
            log_event("acl_policy_loaded", generation=new.generation)

    async def reload_now(self) -> None:
        """:meth:`reload`, logging a failure instead of raising it (the poll retries)."""
        try:
            await self.reload()
        except Exception as exc:  # noqa: BLE001  (keep the last policy; retry next poll)
            log_event("acl_policy_reload_failed", message=f"{type(exc).__name__}: {exc}")

    async def run(self) -> None:
        """Reload on every wake-up or poll until cancelled; never raises otherwise."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll_s)
            self._wake.clear()
            await self.reload_now()


class AdminChangeSignal:
    """An :class:`ExchangeLog` that tells :class:`FollowedPolicy` about admin changes.

    Every commit goes to ``log`` unchanged; after an ``ADMIN_CHANGE`` record is
    committed (the store change is then done), the policy is reloaded.
    """

    def __init__(self, *, log: ExchangeLog, policy: FollowedPolicy) -> None:
        self._log = log
        self._policy = policy

    async def commit_request(self, record: LogRecord) -> LogIndex:
        """See :meth:`ExchangeLog.commit_request`."""
        return await self._log.commit_request(record)

    async def commit_response(self, record: LogRecord) -> LogIndex:
        """See :meth:`ExchangeLog.commit_response`."""
        return await self._log.commit_response(record)

    async def commit_admin_change(self, record: LogRecord) -> LogIndex:
        """Commit, then reload the policy before the admin rpc answers, so a change is in
        force once ``serai acl`` returns (also when the commit fails: the store change
        was applied before the log was asked)."""
        try:
            return await self._log.commit_admin_change(record)
        finally:
            await self._policy.reload_now()


def run_in_background(stack: contextlib.AsyncExitStack, work: Awaitable[None], name: str) -> None:
    """Run ``work`` as a task named ``name``, cancelled (and awaited) when ``stack`` closes."""
    task: asyncio.Task[None] = asyncio.ensure_future(work)
    task.set_name(name)

    async def cancel() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    stack.push_async_callback(cancel)
