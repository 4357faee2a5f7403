"""The gateway's global configuration client: download, verify, keep the last good copy.

:class:`GlobalConfigurationClient` fetches the signed configuration from the trust
anchor's ``download_url`` every ``refresh_interval_s`` (60 s by default, DESIGN §3),
keeps the last good copy in memory and on disk, and hands out an immutable
:class:`~registry.snapshot.ConfigurationSnapshot` through
:meth:`GlobalConfigurationClient.current`.

All trusted state lives in :class:`TrustedConfiguration`, which verifies before it
stores. A candidate envelope replaces the held copy only if, in this order:

1. its signature verifies against one of the anchor's signing certificates
   (:func:`registry.signing.verify_signed_configuration`: ``globalconf_unknown_signer``,
   ``globalconf_signature_invalid``, ``globalconf_invalid``);
2. its configuration bytes decode into a valid :class:`~registry.model.GlobalConfiguration`
   (``globalconf_invalid``);
3. its instance is the anchor's (``globalconf_wrong_instance``);
4. its serial moves forward: lower than the held one is ``globalconf_rollback``; equal
   with the same configuration bytes is a no-op (a re-signed copy changes nothing);
   equal with different bytes is also ``globalconf_rollback`` (two configurations under
   one serial: the registry equivocated, and neither may silently win);
5. it is not expired at ``now`` (``now >= expires_at`` is ``globalconf_expired``) and was
   not generated more than :data:`MAX_CLOCK_SKEW` in the future (``globalconf_invalid``);
6. it can be indexed into a snapshot (``globalconf_invalid``; see
   :mod:`registry.snapshot`);
7. it is in the registry's configuration log (:mod:`registry.conflog`): its proof bundle
   (``conflog/<serial>`` beside the configuration) holds a tree head signed with one of
   the anchor's certificates, of the anchor's log, that includes the exact envelope
   bytes, and that head is consistent with the largest head the client has seen (the
   bundle's proofs from recent sizes, else ``conflog/consistency/<old>/<new>``). A
   failed check is ``globalconf_equivocation`` (a split view, a forged head, a
   configuration outside its head); a bundle or proof that cannot be fetched is
   ``globalconf_unavailable``. Either way the held copy stays in force. When the bundle
   carries a time-stamped head (:func:`registry.conflog.verify_timestamped`), that head
   must pass the same head checks and be a prefix of the bundle's head
   (``globalconf_equivocation``), and its RFC 3161 token must verify against the
   approved TSAs of the configuration being installed: ``timestamp_invalid`` otherwise,
   the code for a token that does not verify everywhere in Serai. It is neither an
   equivocation (the head itself verified and is consistent: nothing says the registry
   split the view, and that alarm must stay reserved for a split view) nor an outage
   (retrying will not help while the bytes are wrong): it is tampered or misattributed
   evidence, refused like a tampered signature. A bundle without a token is accepted
   (the TSA was down, or the federation approves none).

Invariants:

* The held copy only ever changes to one that passed every rule above; a refusal, a
  network failure or a disk failure leaves it, in memory and on disk, as it was.
* Its serial never decreases for the life of the process, nor across restarts as long
  as the cache file survives: the cache is written (temporary file, ``fsync``, rename,
  directory ``fsync``) before the new copy is served, with the exact envelope bytes
  downloaded, so what is served is what is stored, and a crash leaves either the old or
  the new file, never a torn one.
* At start the cache goes through the same rules except expiry: an expired cached copy
  is held (so its serial still guards against rollback) but never served. A cache file
  that does not verify (corrupted, other instance, signer no longer in the anchor) is
  ignored with a ``globalconf_cache_ignored`` event; it is overwritten by the next good
  download.
* The heads of the configuration log the client accepted (the largest always, and the
  :data:`~registry.conflog.MAX_SEEN_HEADS` newest, and the newest time-stamped one with
  its token) are kept in ``cache_dir`` (:data:`HEADS_FILE_NAME`, written before the
  configuration they admit), so a restart does not forget them; every one is a prefix
  of the largest. Trust on first use: a
  client with no head yet (a new gateway, or a cache from before the log) accepts the
  first head whose signature and inclusion verify, and checks every later one against
  it. When the anchor names no configuration log (anchors of registries that keep
  none), a configuration without a proof bundle is accepted (``globalconf_unlogged``)
  only until the first head was seen; after that, and always when the anchor names the
  log, a bundle is required.
* :meth:`GlobalConfigurationClient.current` never returns an expired configuration: past
  ``expires_at`` it raises ``globalconf_expired`` (fail closed), and before any good copy
  ``globalconf_unavailable``. Recovery is automatic when a fresh copy arrives.
* The refresh loop never dies on an error: failures are logged and retried with a
  jittered exponential back-off capped at the refresh interval.

Verification and decoding run in a worker thread (a large federation takes a few hundred
milliseconds to decode), so the event loop that serves requests is not blocked.

Assumptions: the anchor was obtained out of band and is authentic; the clock is roughly
right (expiry is judged by it); only this client writes ``cache_dir``; one client per
event loop (``refresh`` calls are serialised by a lock, not across processes).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol
from urllib.parse import urljoin

import aiohttp

from registry.codec import MAX_CONFIGURATION_BYTES, TrustAnchor, decode_configuration
from registry.conflog import (
    BUNDLE_DIR,
    MAX_BUNDLE_BYTES,
    ProofBundle,
    SeenHeads,
    bundle_path,
    consistency_path,
    decode_consistency,
    log_id_for,
    verify_entry,
    verify_timestamped,
)
from registry.errors import ConfigurationError
from registry.signing import verify_signed_configuration
from registry.snapshot import ConfigurationSnapshot
from serai._tasks import cancel_and_wait
from serai.cliutil import log_event
from serai.errors import ErrorCode
from serai.fileio import atomic_write
from serai.treehead import SignedTreeHead

__all__ = [
    "CACHE_FILE_NAME",
    "DEFAULT_REFRESH_INTERVAL_S",
    "HEADS_FILE_NAME",
    "MAX_CLOCK_SKEW",
    "MAX_ENVELOPE_BYTES",
    "AiohttpFetchTransport",
    "ClientStatus",
    "FetchTransport",
    "GlobalConfigurationClient",
    "InMemoryFetchTransport",
    "TrustedConfiguration",
]

#: How often a gateway downloads the configuration (DESIGN §3).
DEFAULT_REFRESH_INTERVAL_S: Final = 60.0
#: How far in the future ``generated_at`` may be before the copy is refused.
MAX_CLOCK_SKEW: Final = dt.timedelta(minutes=5)
#: Largest envelope downloaded: the largest configuration plus room for the signature.
MAX_ENVELOPE_BYTES: Final = MAX_CONFIGURATION_BYTES + 64 * 1024
#: Name of the last good envelope inside ``cache_dir``.
CACHE_FILE_NAME: Final = "globalconf.signed"
#: Name of the configuration log heads seen, inside ``cache_dir``.
HEADS_FILE_NAME: Final = "conflog.heads"
#: First retry delay after a failed refresh; doubles per failure up to the interval.
RETRY_INITIAL_S: Final = 1.0

Clock = Callable[[], dt.datetime]
ChangeCallback = Callable[[ConfigurationSnapshot], object]


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# -- trusted state ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Held:
    envelope: bytes
    configuration_bytes: bytes
    snapshot: ConfigurationSnapshot


@dataclass(frozen=True, slots=True)
class _Candidate:
    """An envelope that passed every rule against the copy held when it was checked."""

    held: _Held
    replaces: _Held | None


class TrustedConfiguration:
    """The one holder of the trusted configuration; see the module docstring for the rules.

    Pure and synchronous (no I/O, no clock of its own): :meth:`check` tells whether an
    envelope may replace the held copy, :meth:`commit` makes it the held copy.
    """

    def __init__(self, anchor: TrustAnchor) -> None:
        self._anchor = anchor
        self._held: _Held | None = None

    @property
    def snapshot(self) -> ConfigurationSnapshot | None:
        """The held configuration, expired or not; ``None`` before the first good copy."""
        return self._held.snapshot if self._held is not None else None

    @property
    def envelope(self) -> bytes | None:
        """The exact envelope bytes of the held copy."""
        return self._held.envelope if self._held is not None else None

    def check(
        self, envelope: bytes, *, now: dt.datetime, allow_expired: bool = False
    ) -> _Candidate | None:
        """The verified candidate, ``None`` when it would change nothing; raises
        :class:`ConfigurationError` with the rule's code when it is refused."""
        held = self._held
        if held is not None and envelope == held.envelope:
            return None
        configuration_bytes = verify_signed_configuration(
            envelope, signing_certificates=self._anchor.signing_certificates
        )
        configuration = decode_configuration(configuration_bytes)
        if configuration.instance != self._anchor.instance:
            raise ConfigurationError(
                f"configuration is of instance {configuration.instance!r}, the trust "
                f"anchor's is {self._anchor.instance!r}",
                code=ErrorCode.GLOBALCONF_WRONG_INSTANCE,
            )
        if held is not None:
            held_serial = held.snapshot.serial
            if configuration.serial < held_serial:
                raise ConfigurationError(
                    f"configuration serial {configuration.serial} is lower than the held "
                    f"{held_serial}",
                    code=ErrorCode.GLOBALCONF_ROLLBACK,
                )
            if configuration.serial == held_serial:
                if configuration_bytes == held.configuration_bytes:
                    return None
                # Two configurations under one serial: the registry equivocates (or its
                # state was restored from a backup). Refused, and named for what it is.
                raise ConfigurationError(
                    f"configuration serial {held_serial} is held with different content; "
                    "a serial names one configuration",
                    code=ErrorCode.GLOBALCONF_EQUIVOCATION,
                )
        if not allow_expired and now >= configuration.expires_at:
            raise ConfigurationError(
                f"configuration serial {configuration.serial} expired at "
                f"{configuration.expires_at.isoformat()}",
                code=ErrorCode.GLOBALCONF_EXPIRED,
            )
        if configuration.generated_at > now + MAX_CLOCK_SKEW:
            raise ConfigurationError(
                f"configuration serial {configuration.serial} was generated at "
                f"{configuration.generated_at.isoformat()}, more than "
                f"{MAX_CLOCK_SKEW.total_seconds():.0f} s in the future (clock skew?)",
                code=ErrorCode.GLOBALCONF_INVALID,
            )
        snapshot = ConfigurationSnapshot(configuration)
        return _Candidate(
            held=_Held(
                envelope=envelope, configuration_bytes=configuration_bytes, snapshot=snapshot
            ),
            replaces=held,
        )

    def commit(self, candidate: _Candidate) -> ConfigurationSnapshot:
        """Make a checked candidate the held copy; refuses one checked against another."""
        if candidate.replaces is not self._held:
            raise ConfigurationError(
                "the held configuration changed while a candidate was being stored",
                code=ErrorCode.GLOBALCONF_ROLLBACK,
            )
        self._held = candidate.held
        return candidate.held.snapshot


# -- transports -------------------------------------------------------------------------------


class FetchTransport(Protocol):
    """Downloads the envelope from a URL."""

    async def fetch(self, url: str, *, timeout_s: float, max_bytes: int) -> bytes:
        """The response body; raises :class:`ConfigurationError` with
        ``globalconf_unavailable`` when there is none, ``globalconf_invalid`` when it is
        over ``max_bytes``."""
        ...


class AiohttpFetchTransport:
    """HTTP ``GET`` with aiohttp; owns its session unless given one."""

    def __init__(self, *, session: aiohttp.ClientSession | None = None) -> None:
        self._session = session
        self._owns_session = session is None

    async def fetch(self, url: str, *, timeout_s: float, max_bytes: int) -> bytes:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.get(
                url, timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as reply:
                if reply.status != 200:
                    raise ConfigurationError(
                        f"{url} answered HTTP {reply.status}",
                        code=ErrorCode.GLOBALCONF_UNAVAILABLE,
                    )
                body = await reply.content.read(max_bytes + 1)
                if len(body) > max_bytes or not reply.content.at_eof():
                    raise ConfigurationError(f"{url} sent more than {max_bytes} bytes")
                return body
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ConfigurationError(
                f"{url} cannot be reached: {type(exc).__name__} {exc}",
                code=ErrorCode.GLOBALCONF_UNAVAILABLE,
            ) from exc

    async def aclose(self) -> None:
        """Close the session if this transport created it."""
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None


class InMemoryFetchTransport:
    """Serves whatever was last :meth:`publish`-ed, for tests and demos.

    The envelope answers every URL except the configuration log's (``…/conflog/…``),
    which are answered from ``files`` (keyed by their path relative to the
    configuration's directory, e.g. ``conflog/7``) or not found.
    """

    def __init__(
        self, envelope: bytes | None = None, *, files: Mapping[str, bytes] | None = None
    ) -> None:
        self._envelope = envelope
        self._files: dict[str, bytes] = dict(files or {})
        self._failure: ConfigurationError | None = None
        #: Number of configuration fetches (log resources aside), so tests can observe
        #: the refresh loop.
        self.fetches = 0

    def publish(self, envelope: bytes, *, files: Mapping[str, bytes] | None = None) -> None:
        """Serve ``envelope`` (and ``files`` too) from now on, and stop failing."""
        self._envelope = envelope
        self._files.update(files or {})
        self._failure = None

    def fail(self, error: ConfigurationError | None = None) -> None:
        """Fail every fetch with ``error`` (default: ``globalconf_unavailable``)."""
        self._failure = error or ConfigurationError(
            "in-memory registry is down", code=ErrorCode.GLOBALCONF_UNAVAILABLE
        )

    async def fetch(self, url: str, *, timeout_s: float, max_bytes: int) -> bytes:
        log_resource = f"/{BUNDLE_DIR}/" in url
        self.fetches += not log_resource
        if self._failure is not None:
            raise self._failure
        body = self._envelope
        if log_resource:
            body = next((b for k, b in self._files.items() if url.endswith(f"/{k}")), None)
        if body is None:
            raise ConfigurationError(
                f"nothing published at {url}", code=ErrorCode.GLOBALCONF_UNAVAILABLE
            )
        if len(body) > max_bytes:
            raise ConfigurationError(f"{url} sent more than {max_bytes} bytes")
        return body


# -- the client -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientStatus:
    """What the client knows, for health checks and metrics."""

    serial: int | None
    generated_at: dt.datetime | None
    expires_at: dt.datetime | None
    expired: bool
    last_success_at: dt.datetime | None
    last_error: ConfigurationError | None
    #: Size of the largest configuration log head seen (``None`` before the first).
    log_tree_size: int | None = None
    #: Size of the largest head seen with a verified time-stamp (``None``: none yet).
    log_timestamped_size: int | None = None
    #: Refreshes refused or failed since the client started, by error code (a
    #: rollback, an expired or forged configuration, an unreachable registry...).
    refresh_failures: Mapping[str, int] = field(default_factory=dict)


class GlobalConfigurationClient:
    """Keeps a verified global configuration for a gateway (see the module docstring)."""

    def __init__(
        self,
        *,
        anchor: TrustAnchor,
        cache_dir: Path,
        refresh_interval_s: float = DEFAULT_REFRESH_INTERVAL_S,
        timeout_s: float = 10.0,
        transport: FetchTransport | None = None,
        clock: Clock = _utc_now,
        on_change: ChangeCallback | None = None,
    ) -> None:
        if refresh_interval_s <= 0 or timeout_s <= 0:
            raise ValueError("refresh_interval_s and timeout_s must be positive")
        self._anchor = anchor
        self._cache_path = cache_dir / CACHE_FILE_NAME
        self._heads_path = cache_dir / HEADS_FILE_NAME
        self._log_id = anchor.configuration_log_id or log_id_for(anchor.instance)
        self._heads = SeenHeads()
        self._refresh_interval_s = refresh_interval_s
        self._timeout_s = timeout_s
        self._transport: FetchTransport = transport or AiohttpFetchTransport()
        self._owns_transport = transport is None
        self._clock = clock
        self._on_change = on_change
        self._trusted = TrustedConfiguration(anchor)
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_success_at: dt.datetime | None = None
        self._last_error: ConfigurationError | None = None
        self._refresh_failures: dict[str, int] = {}

    @property
    def anchor(self) -> TrustAnchor:
        """The trust anchor configurations are verified against."""
        return self._anchor

    @property
    def cache_path(self) -> Path:
        """Where the last good envelope is kept."""
        return self._cache_path

    @property
    def seen_heads(self) -> tuple[SignedTreeHead, ...]:
        """The configuration log heads accepted, smallest first (evidence)."""
        return self._heads.heads

    @property
    def timestamped_head(self) -> SignedTreeHead | None:
        """The largest accepted head whose RFC 3161 token verified, with the token: an
        auditor's proof of when every configuration up to its size existed."""
        return self._heads.timestamped

    # -- reading ------------------------------------------------------------------------------

    def current(self) -> ConfigurationSnapshot:
        """The configuration in force; raises ``globalconf_expired`` past its expiry and
        ``globalconf_unavailable`` before any good copy was obtained."""
        snapshot = self._trusted.snapshot
        if snapshot is None:
            raise ConfigurationError(
                "no valid global configuration has been obtained yet",
                code=ErrorCode.GLOBALCONF_UNAVAILABLE,
            )
        if self._clock() >= snapshot.expires_at:
            raise ConfigurationError(
                f"global configuration serial {snapshot.serial} expired at "
                f"{snapshot.expires_at.isoformat()} and no fresh copy has arrived",
                code=ErrorCode.GLOBALCONF_EXPIRED,
            )
        return snapshot

    def current_envelope(self) -> bytes:
        """The exact signed bytes of :meth:`current` (evidence for the message log)."""
        self.current()
        envelope = self._trusted.envelope
        assert envelope is not None  # current() returned, so a copy is held
        return envelope

    def status(self) -> ClientStatus:
        """Serial, validity and the last refresh outcome."""
        snapshot = self._trusted.snapshot
        return ClientStatus(
            serial=snapshot.serial if snapshot else None,
            generated_at=snapshot.generated_at if snapshot else None,
            expires_at=snapshot.expires_at if snapshot else None,
            expired=snapshot is None or self._clock() >= snapshot.expires_at,
            last_success_at=self._last_success_at,
            last_error=self._last_error,
            log_tree_size=largest.tree_size if (largest := self._heads.largest) else None,
            log_timestamped_size=(
                stamped.head.tree_size if (stamped := self._heads.timestamped) else None
            ),
            refresh_failures=dict(self._refresh_failures),
        )

    async def wait_for_change(self, *, after_serial: int | None) -> ConfigurationSnapshot:
        """Wait until a copy with a serial above ``after_serial`` (any, for ``None``) is
        held, and return it (expired or not)."""
        while True:
            snapshot = self._trusted.snapshot
            if snapshot is not None and (after_serial is None or snapshot.serial > after_serial):
                return snapshot
            self._changed.clear()
            await self._changed.wait()

    # -- updating -----------------------------------------------------------------------------

    async def load_cache(self) -> ConfigurationSnapshot | None:
        """Load the cached copy through the same rules (an expired one is held but not
        served); a cache that does not verify is ignored and logged. Returns what is held.
        The configuration log heads seen are loaded too."""
        await self._load_heads()
        try:
            envelope = await asyncio.to_thread(self._cache_path.read_bytes)
        except FileNotFoundError:
            return self._trusted.snapshot
        except OSError as exc:
            log_event(
                "globalconf_cache_ignored",
                path=str(self._cache_path),
                code=ErrorCode.GLOBALCONF_INVALID.value,
                message=f"cannot be read: {exc.strerror}",
            )
            return self._trusted.snapshot
        async with self._lock:
            try:
                candidate = await asyncio.to_thread(
                    self._trusted.check, envelope, now=self._clock(), allow_expired=True
                )
            except ConfigurationError as exc:
                log_event(
                    "globalconf_cache_ignored",
                    path=str(self._cache_path),
                    code=exc.code.value,
                    message=exc.message,
                )
                return self._trusted.snapshot
            if candidate is not None:
                snapshot = self._trusted.commit(candidate)
                log_event(
                    "globalconf_cache_loaded",
                    path=str(self._cache_path),
                    serial=snapshot.serial,
                    expires_at=snapshot.expires_at.isoformat(),
                    expired=self._clock() >= snapshot.expires_at,
                )
                self._notify(snapshot)
        return self._trusted.snapshot

    async def _load_heads(self) -> None:
        try:
            data = await asyncio.to_thread(self._heads_path.read_bytes)
        except FileNotFoundError:
            return
        except OSError as exc:
            self._heads_ignored(f"cannot be read: {exc.strerror}")
            return
        try:
            heads = SeenHeads.decode(data, log_id=self._log_id)
        except ConfigurationError as exc:
            self._heads_ignored(exc.message)
            return
        async with self._lock:
            if heads.largest is not None:
                self._heads = heads

    def _heads_ignored(self, message: str) -> None:
        log_event(
            "globalconf_heads_ignored",
            path=str(self._heads_path),
            code=ErrorCode.GLOBALCONF_INVALID.value,
            message=message,
        )

    async def refresh(self) -> bool:
        """Download and verify once; ``True`` when a new copy replaced the held one.

        Raises :class:`ConfigurationError` with the refusal's code; the held copy is then
        untouched, in memory and on disk.
        """
        try:
            changed = await self._refresh()
        except ConfigurationError as exc:
            self._last_error = exc
            code = exc.code.value
            self._refresh_failures[code] = self._refresh_failures.get(code, 0) + 1
            raise
        self._last_error = None
        self._last_success_at = self._clock()
        return changed

    async def _refresh(self) -> bool:
        envelope = await self._transport.fetch(
            self._anchor.download_url, timeout_s=self._timeout_s, max_bytes=MAX_ENVELOPE_BYTES
        )
        async with self._lock:
            # Decoding a large federation takes a few hundred ms: off the event loop. The
            # lock keeps the held copy fixed until the candidate is committed.
            candidate = await asyncio.to_thread(self._trusted.check, envelope, now=self._clock())
            if candidate is None:
                return False
            logged = await self._logged_heads(envelope, candidate.held.snapshot)
            heads = logged if logged is not None else self._heads
            previous = self._trusted.snapshot
            try:
                if logged is not None:
                    await asyncio.to_thread(atomic_write, self._heads_path, heads.encode())
                await asyncio.to_thread(atomic_write, self._cache_path, envelope)
            except OSError as exc:
                # The copy is good: serve it, but say the disk no longer guards rollback.
                log_event(
                    "globalconf_cache_write_failed",
                    path=str(self._cache_path),
                    message=f"{type(exc).__name__}: {exc}",
                )
            snapshot = self._trusted.commit(candidate)
            self._heads = heads
        log_event(
            "globalconf_updated",
            serial=snapshot.serial,
            previous_serial=previous.serial if previous else None,
            generated_at=snapshot.generated_at.isoformat(),
            expires_at=snapshot.expires_at.isoformat(),
        )
        self._notify(snapshot)
        return True

    async def _logged_heads(
        self, envelope: bytes, snapshot: ConfigurationSnapshot
    ) -> SeenHeads | None:
        """The heads seen with the one admitting ``envelope`` into the log (and the
        bundle's time-stamped head) added (rule 7), ``None`` when an unlogged
        configuration is still acceptable; raises the rule's refusal."""
        serial = snapshot.serial
        try:
            data = await self._fetch_log(bundle_path(serial))
        except ConfigurationError as exc:
            if self._anchor.configuration_log_id or self._heads.largest is not None:
                raise ConfigurationError(
                    f"configuration serial {serial}: its proof bundle cannot be fetched, and "
                    f"a configuration outside the log is not accepted: {exc.message}",
                    code=exc.code,
                ) from exc
            log_event("globalconf_unlogged", serial=serial, message=exc.message)
            return None
        bundle = ProofBundle.decode(data)
        head = verify_entry(
            envelope,
            bundle,
            serial=serial,
            signing_certificates=self._anchor.signing_certificates,
            log_id=self._log_id,
        )
        needed = self._heads.proof_needed(head)
        proof: tuple[bytes, ...] = ()
        if needed is not None:
            old, new = needed
            if new == head.tree_size and old in bundle.consistency:
                proof = bundle.consistency[old]
            else:
                proof = decode_consistency(
                    await self._fetch_log(consistency_path(old, new)), old, new
                )
        self._heads.check(head, proof)
        heads = self._heads.with_head(SignedTreeHead(bundle.sth))
        stamped = verify_timestamped(
            bundle,
            head,
            snapshot=snapshot,
            signing_certificates=self._anchor.signing_certificates,
            log_id=self._log_id,
        )
        return heads if stamped is None else heads.with_head(stamped)

    async def _fetch_log(self, path: str) -> bytes:
        """A configuration log resource beside the configuration (``unavailable`` when
        it cannot be fetched)."""
        url = urljoin(self._anchor.download_url, path)
        try:
            return await self._transport.fetch(
                url, timeout_s=self._timeout_s, max_bytes=MAX_BUNDLE_BYTES
            )
        except ConfigurationError as exc:
            raise ConfigurationError(exc.message, code=ErrorCode.GLOBALCONF_UNAVAILABLE) from exc

    def _notify(self, snapshot: ConfigurationSnapshot) -> None:
        self._changed.set()
        if self._on_change is None:
            return
        try:
            self._on_change(snapshot)
        except Exception as exc:  # noqa: BLE001  (a subscriber's bug must not stop refreshes)
            log_event(
                "globalconf_callback_failed",
                serial=snapshot.serial,
                message=f"{type(exc).__name__}: {exc}",
            )

    # -- the refresh loop ---------------------------------------------------------------------

    async def run(self, *, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        """Refresh now and then every ``refresh_interval_s`` until cancelled; never raises
        on a refresh failure (it is logged, then retried with back-off)."""
        failures = 0
        while True:
            try:
                await self.refresh()
            except ConfigurationError as exc:
                failures += 1
                delay = _retry_delay_s(failures, max_s=self._refresh_interval_s)
                self._log_failure(exc.code.value, exc.message, delay)
            except Exception as exc:  # noqa: BLE001  (the loop must outlive any bug)
                failures += 1
                delay = _retry_delay_s(failures, max_s=self._refresh_interval_s)
                self._log_failure(ErrorCode.INTERNAL.value, f"{type(exc).__name__}: {exc}", delay)
            else:
                failures = 0
                delay = self._refresh_interval_s * random.uniform(0.9, 1.0)  # noqa: S311
            await sleep(delay)

    def _log_failure(self, code: str, message: str, retry_in_s: float) -> None:
        snapshot = self._trusted.snapshot
        log_event(
            "globalconf_refresh_failed",
            url=self._anchor.download_url,
            code=code,
            message=message,
            retry_in_s=round(retry_in_s, 3),
            held_serial=snapshot.serial if snapshot else None,
            held_expired=snapshot is None or self._clock() >= snapshot.expires_at,
        )

    async def start(self) -> None:
        """Load the cache, then run the refresh loop in the background."""
        if self._task is not None:
            raise RuntimeError("GlobalConfigurationClient is already started")
        await self.load_cache()
        self._task = asyncio.create_task(self.run(), name="globalconf-refresh")

    async def stop(self) -> None:
        """Stop the refresh loop and close the transport if the client made it."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        if self._owns_transport and isinstance(self._transport, AiohttpFetchTransport):
            await self._transport.aclose()

    async def __aenter__(self) -> GlobalConfigurationClient:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


# -- helpers ----------------------------------------------------------------------------------


def _retry_delay_s(
    failures: int, *, max_s: float, rand: Callable[[], float] = random.random
) -> float:
    """Exponential back-off from :data:`RETRY_INITIAL_S`, capped at ``max_s``, with
    jitter in [50 %, 100 %] so a fleet of gateways does not retry in step."""
    base = min(max_s, RETRY_INITIAL_S * float(2 ** min(failures - 1, 30)))
    return base * (0.5 + 0.5 * rand())
