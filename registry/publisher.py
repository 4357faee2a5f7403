"""Generating, signing and publishing the global configuration (DESIGN §3).

:class:`Publisher` turns the store's current state into a signed configuration and
writes it into a publish directory that any web server can serve as static files::

    <publish_dir>/globalconf/v1/current           the serialized SignedGlobalConfiguration
    <publish_dir>/globalconf/v1/<serial>          the same bytes, kept for the last N serials
    <publish_dir>/globalconf/v1/conflog/<serial>  its proof bundle (registry.conflog)

Guarantees:

1. Every publication has a serial from :meth:`RegistryStore.next_serial`, so serials
   strictly increase across publications, restarts and processes sharing a database.
2. The signature covers exactly the configuration bytes inside the envelope, and the
   envelope bytes written are the bytes served: nothing is re-serialized after signing.
3. Files are replaced atomically (temporary file, ``fsync``, ``rename``): a reader sees
   the previous configuration or the new one, never a torn file. The history file of a
   serial is written before ``current`` points at it.
4. :attr:`Publisher.current` changes only after the files are in place.
5. Every configuration served is in the configuration log: the envelope is appended to
   the store's log (:meth:`RegistryStore.conflog_append`, one transaction with its nodes
   and the signed head of the new size) before any file of it is written, and its proof
   bundle is written before the configuration itself. A failure after the append leaves
   a logged configuration that was never served, which is harmless; the reverse cannot
   happen. Heads are signed with the configuration signing key (EC P-256 or Ed25519:
   a :class:`Publisher` refuses another key with ``invalid_config``) and its
   certificate alone as ``x5c``, the one gateways hold in their trust anchor.
6. Publication never waits for a TSA. The bundle carries the newest head the store
   holds a token for (obtained in the background by
   :class:`registry._conflogstamp.ConflogTimestamper`), and only if that token verifies
   against the approved TSAs of the configuration published with it
   (:func:`registry.conflog.verify_head_timestamp`, what gateways check); otherwise the
   bundle goes without a token (event ``conflog_timestamp_withheld``), never refused.

:class:`PublicationLoop` drives it on the asyncio loop: once at start, after every
change (bursts coalesce into one publication), and every interval; the blocking work
runs in the store's executor, and a failure is logged and retried, never raised.
:func:`create_http_app` serves the publish directory over HTTP.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import hashlib
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aiohttp import web
from cryptography import x509

from certs.keys import PrivateKey
from registry.codec import encode_configuration
from registry.config import CURRENT_PATH, DEFAULT_HISTORY_KEEP, DEFAULT_VALIDITY_S
from registry.conflog import BUNDLE_DIR, ProofBundle, log_id_for, verify_head_timestamp
from registry.model import GlobalConfiguration
from registry.signing import sign_configuration
from registry.snapshot import ConfigurationSnapshot
from registry.store import RegistryStore
from serai.cliutil import log_event
from serai.errors import ErrorCode, SeraiError
from serai.fileio import atomic_write
from serai.treehead import SignedTreeHead, TreeHead, TreeHeadSigner

__all__ = [
    "ConsistencyProvider",
    "PublicationLoop",
    "PublishedConfiguration",
    "Publisher",
    "create_http_app",
]

_HISTORY_DIR: Final = Path(CURRENT_PATH).parent
#: Seconds before retrying after a failed publication (capped by the interval).
_RETRY_S: Final = 5.0
_IMMUTABLE: Final = "public, max-age=31536000, immutable"

#: The consistency proof resource between two sizes (canonical JSON), ``None`` when the
#: log does not have them (:func:`create_http_app`).
ConsistencyProvider = Callable[[int, int], Awaitable[bytes | None]]


@dataclass(frozen=True, slots=True, kw_only=True)
class PublishedConfiguration:
    """What was last published."""

    instance: str
    serial: int
    generated_at: dt.datetime
    expires_at: dt.datetime
    configuration_sha256: bytes
    envelope: bytes
    #: Its entry in the configuration log, once appended (``None`` from ``generate``).
    bundle: ProofBundle | None = None
    #: How many members, subsystems and gateways it lists (for metrics).
    members: int = 0
    subsystems: int = 0
    gateways: int = 0
    #: The configuration indexed as gateways index it, once published (its approved
    #: TSAs time-stamp the configuration log's heads).
    snapshot: ConfigurationSnapshot | None = dataclasses.field(
        default=None, compare=False, repr=False
    )


class Publisher:
    """Generates, signs and writes configurations (blocking; see the module docstring)."""

    def __init__(
        self,
        *,
        store: RegistryStore,
        signing_key: PrivateKey,
        signing_certificate: x509.Certificate,
        publish_dir: Path,
        validity_s: int = DEFAULT_VALIDITY_S,
        history_keep: int = DEFAULT_HISTORY_KEEP,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self._store = store
        self._key = signing_key
        self._certificate = signing_certificate
        self.publish_dir = publish_dir
        self.validity_s = validity_s
        self.history_keep = max(1, history_keep)
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._lock = threading.Lock()
        self._current: PublishedConfiguration | None = None
        self._head_signer = TreeHeadSigner(key=signing_key, certificate_chain=[signing_certificate])
        self._log_id = log_id_for(store.instance)

    @property
    def log_id(self) -> str:
        """The configuration log's id (``<instance>/registry-conf``)."""
        return self._log_id

    @property
    def current(self) -> PublishedConfiguration | None:
        """The configuration last published by this publisher, if any."""
        return self._current

    def generate(self) -> PublishedConfiguration:
        """A freshly signed configuration of the store's current state (not written)."""
        return self._generate()[0]

    def _generate(self) -> tuple[PublishedConfiguration, GlobalConfiguration]:
        federation = self._store.federation()
        serial = self._store.next_serial()
        generated_at = self._clock().replace(microsecond=0)
        conf = GlobalConfiguration(
            federation=federation,
            serial=serial,
            generated_at=generated_at,
            expires_at=generated_at + dt.timedelta(seconds=self.validity_s),
        )
        data = encode_configuration(conf)
        envelope = sign_configuration(data, key=self._key, certificate=self._certificate)
        published = PublishedConfiguration(
            instance=federation.instance,
            serial=serial,
            generated_at=conf.generated_at,
            expires_at=conf.expires_at,
            configuration_sha256=hashlib.sha256(data).digest(),
            envelope=envelope,
            members=len(federation.members),
            subsystems=len(federation.subsystems),
            gateways=len(federation.gateways),
        )
        return published, conf

    def publish(self) -> PublishedConfiguration:
        """Generate a configuration, append it to the configuration log, and write it
        and its proof bundle atomically into the publish directory."""
        with self._lock:
            generated, conf = self._generate()
            snapshot = _snapshot(conf)
            bundle = self._store.conflog_append(
                serial=generated.serial, envelope=generated.envelope, sign_head=self._sign_head
            )
            bundle = _checked_timestamp(bundle, snapshot)
            published = dataclasses.replace(generated, bundle=bundle, snapshot=snapshot)
            history = self.publish_dir / _HISTORY_DIR
            (history / BUNDLE_DIR).mkdir(parents=True, exist_ok=True)
            atomic_write(history / BUNDLE_DIR / str(published.serial), bundle.encode(), mode=0o644)
            atomic_write(history / str(published.serial), published.envelope, mode=0o644)
            atomic_write(self.publish_dir / CURRENT_PATH, published.envelope, mode=0o644)
            self._current = published
            self._prune(history)
            return published

    def _sign_head(self, tree_size: int, root_hash: bytes) -> SignedTreeHead:
        now = self._clock().astimezone(dt.UTC)
        head = TreeHead(
            log_id=self._log_id,
            tree_size=tree_size,
            root_hash=root_hash,
            time=now.replace(microsecond=now.microsecond // 1000 * 1000),
        )
        return self._head_signer.sign(head)

    def _prune(self, history: Path) -> None:
        serials = sorted(int(p.name) for p in history.iterdir() if p.name.isdigit())
        for serial in serials[: -self.history_keep]:
            (history / BUNDLE_DIR / str(serial)).unlink(missing_ok=True)
            (history / str(serial)).unlink(missing_ok=True)


def _snapshot(conf: GlobalConfiguration) -> ConfigurationSnapshot | None:
    """``conf`` indexed, or ``None`` when it cannot be (gateways will refuse it with
    ``globalconf_invalid``; the time-stamping is not what should report that)."""
    try:
        return ConfigurationSnapshot(conf)
    except SeraiError:
        return None


def _checked_timestamp(bundle: ProofBundle, snapshot: ConfigurationSnapshot | None) -> ProofBundle:
    """``bundle``, without its time-stamped head unless the token verifies against the
    configuration published with it (guarantee 6)."""
    stamped = bundle.timestamped
    if stamped is None:
        return bundle
    try:
        if snapshot is None:
            raise SeraiError("the configuration cannot be indexed", code=ErrorCode.INTERNAL)
        verify_head_timestamp(stamped, snapshot)
    except SeraiError as exc:
        log_event(
            "conflog_timestamp_withheld",
            serial=bundle.serial,
            tree_size=stamped.head.tree_size,
            code=exc.code.value,
            message=exc.message,
        )
        return bundle.without_timestamp()
    return bundle


class PublicationLoop:
    """Runs :meth:`Publisher.publish` at start, after changes and every interval."""

    def __init__(
        self,
        publisher: Publisher,
        *,
        executor: concurrent.futures.Executor,
        interval_s: float,
        on_published: Callable[[PublishedConfiguration], None] | None = None,
    ) -> None:
        self.publisher = publisher
        #: Publications made and failed since start (for metrics and readiness).
        self.publications = 0
        #: Whether the last attempt failed.
        self.last_failed = False
        self._executor = executor
        self.interval_s = interval_s
        self._on_published = on_published
        self._dirty = asyncio.Event()
        self._published = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self.failures = 0

    def start(self) -> None:
        """Start publishing (the first publication happens at once)."""
        self._dirty.set()
        self._task = asyncio.get_running_loop().create_task(self._run())

    def changed(self) -> None:
        """Note a change; a publication follows soon (coalesced with others)."""
        self._dirty.set()

    async def wait_for_serial(self, serial: int) -> PublishedConfiguration:
        """Wait until a configuration with at least ``serial`` is published (tests)."""
        async with self._published:
            await self._published.wait_for(
                lambda: (c := self.publisher.current) is not None and c.serial >= serial
            )
        current = self.publisher.current
        assert current is not None
        return current

    async def stop(self) -> None:
        """Stop publishing; a publication in progress completes in its thread."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), timeout=self.interval_s)
            self._dirty.clear()
            try:
                published = await loop.run_in_executor(self._executor, self.publisher.publish)
            except Exception as exc:  # noqa: BLE001  (logged and retried, never fatal)
                self.failures += 1
                self.last_failed = True
                log_event(
                    "globalconf_publish_failed",
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in_s=min(_RETRY_S, self.interval_s),
                )
                await asyncio.sleep(min(_RETRY_S, self.interval_s))
                self._dirty.set()
                continue
            self.publications += 1
            self.last_failed = False
            if self._on_published is not None:
                self._on_published(published)
            async with self._published:
                self._published.notify_all()


def create_http_app(
    publish_dir: Path, *, consistency: ConsistencyProvider | None = None
) -> web.Application:
    """An aiohttp app serving ``publish_dir`` as static files (GET and HEAD).

    Every file is ``application/octet-stream`` (the configuration log's, under
    ``conflog/``, ``application/json``); ``current`` is ``Cache-Control: no-cache`` (it
    changes), numbered history files and proof bundles are immutable. With
    ``consistency`` (the store's proofs, run off the loop), it also answers
    ``globalconf/v1/conflog/consistency/<old>/<new>`` (immutable too; 404 for sizes the
    log does not have).
    """
    root = publish_dir.resolve()

    async def serve(request: web.Request) -> web.StreamResponse:
        tail = request.match_info["tail"]
        parts = [p for p in tail.split("/") if p]
        if not parts or any(p in (".", "..") or p.startswith(".") for p in parts):
            raise web.HTTPNotFound
        path = root.joinpath(*parts)
        try:
            found = path.is_file()
        except OSError:  # a name longer than the file system allows (ENAMETOOLONG)
            found = False
        if not found:
            raise web.HTTPNotFound
        cache = "no-cache" if parts[-1] == "current" else _IMMUTABLE
        kind = "application/json" if BUNDLE_DIR in parts[:-1] else "application/octet-stream"
        return web.FileResponse(path, headers={"Content-Type": kind, "Cache-Control": cache})

    async def prove(request: web.Request) -> web.Response:
        assert consistency is not None
        old, new = _decimal(request.match_info["old"]), _decimal(request.match_info["new"])
        if old is None or new is None:
            raise web.HTTPNotFound
        body = await consistency(old, new)
        if body is None:
            raise web.HTTPNotFound
        return web.Response(
            body=body,
            headers={"Content-Type": "application/json", "Cache-Control": _IMMUTABLE},
        )

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    if consistency is not None:
        route = f"/{_HISTORY_DIR.as_posix()}/{BUNDLE_DIR}/consistency/{{old}}/{{new}}"
        app.router.add_get(route, prove)
    app.router.add_get("/{tail:.*}", serve)
    return app


def _decimal(text: str) -> int | None:
    if not text.isdecimal() or str(int(text)) != text or int(text) >= 2**63:
        return None
    return int(text)
