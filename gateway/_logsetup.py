"""How ``serai gateway serve`` puts the durable message log together (DESIGN §6).

:func:`open_gateway_log` opens, in this order, and registers each stop on the caller's
exit stack so they stop in reverse: the :class:`~gateway.messagelog.MessageLog` (SQLite
or PostgreSQL, from ``gateway.toml``), the
:class:`~gateway.messagelog.heads.TreeHeadScheduler` (signed heads with the log-signing
key, time-stamped by the approved TSAs of the configuration in force), and the archive
of global configurations. What the exchange sees is one
:class:`~gateway.commit.ExchangeLog`:

    MetadataModeLog  ->  _NotifyingLog  ->  MessageLog

so bodies of metadata-mode subsystems are dropped first, every commit reports the new
tree size to the scheduler (which makes a head after ``tree_head_max_records``), and
:meth:`GatewayLog.admission` refuses new exchanges with ``timestamping_overdue`` while
records wait longer than ``timestamping_overdue_s`` for a time-stamp.

Stopping: the runtime stops first (no new commits), then the scheduler (one last head
and time-stamp attempt), then the log (the writer commits what is queued).

**Configuration archive.** Every global configuration the gateway accepts is kept, as
the exact signed envelope, in ``<globalconf_cache_dir>/archive/<serial>.bin``
(temporary file, ``fsync``, rename), so that ``serai log export`` can put the
configuration in force into an evidence bundle. The envelope verifies against the trust
anchor on its own; the archive adds no trust, only availability.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiohttp

from gateway._assembly import run_in_background
from gateway.commit import ExchangeLog, LogIndex, LogRecord
from gateway.config import GatewayConfig
from gateway.logmodes import MetadataModeLog
from gateway.messagelog import MessageLog, MessageLogOptions, Synchronous
from gateway.messagelog.heads import TreeHeadScheduler, approved_tsa_timestamper
from gateway.workers import FollowingScheduler
from registry.client import GlobalConfigurationClient
from registry.snapshot import ConfigurationSnapshot
from serai.cliutil import log_event
from serai.errors import SeraiError
from serai.fileio import atomic_write
from serai.treehead import SignedTreeHead, TreeHeadSigner

__all__ = ["ARCHIVE_DIR_NAME", "GatewayLog", "archive_path", "open_gateway_log"]

#: Folder of ``globalconf_cache_dir`` where accepted configurations are kept.
ARCHIVE_DIR_NAME: Final = "archive"


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayLog:
    """The assembled message log of a running gateway."""

    #: What the exchange commits to.
    exchange_log: ExchangeLog
    #: The durable log underneath.
    store: MessageLog
    #: Signs and time-stamps heads; in a follower worker, follows the leader's instead.
    scheduler: TreeHeadScheduler | FollowingScheduler
    #: Sees every commit (times it, remembers whether the last one failed).
    commits: _NotifyingLog

    def admission(self) -> None:
        """Refuse new exchanges while time-stamps are overdue (``timestamping_overdue``)."""
        self.scheduler.check()

    def not_ready_reasons(self) -> tuple[str, ...]:
        """Why the log is not ready (empty when it is): time-stamps overdue, or the last
        commit failed (cleared by the next one that succeeds)."""
        reasons = []
        overdue = self.scheduler.overdue_reason()
        if overdue is not None:
            reasons.append(overdue)
        if self.commits.last_failure is not None:
            reasons.append(f"the message log cannot be written: {self.commits.last_failure}")
        return tuple(reasons)


def archive_path(config: GatewayConfig, serial: int) -> Path:
    """Where the configuration of ``serial`` is archived."""
    return config.globalconf_cache_dir / ARCHIVE_DIR_NAME / f"{serial}.bin"


async def open_gateway_log(
    *,
    config: GatewayConfig,
    signer: TreeHeadSigner,
    globalconf: GlobalConfigurationClient,
    stack: contextlib.AsyncExitStack,
    commit_observer: CommitObserver | None = None,
    sign_heads: bool = True,
) -> GatewayLog:
    """Open and start the message log ``config`` describes (module docstring);
    ``commit_observer`` is told the kind, duration and success of every commit.
    ``sign_heads=False`` (a follower worker, :mod:`gateway.workers`): another process
    of the same log signs and time-stamps its heads; this one only reads them."""
    location: str | Path = config.message_log_url or config.message_log
    store = await MessageLog.open(
        location,
        log_id=config.gateway_id,
        options=MessageLogOptions(
            synchronous=Synchronous(config.message_log_synchronous.value.upper())
        ),
    )
    stack.push_async_callback(store.close)
    last = await store.latest_tree_head()
    last_head = None
    if last is not None:
        last_head = SignedTreeHead(jws=last.signed_head, timestamp_token=last.timestamp_token)

    session = aiohttp.ClientSession()
    stack.push_async_callback(session.close)
    head_ids: dict[bytes, int] = {}

    async def persist_head(sth: SignedTreeHead) -> None:
        stored = await store.add_tree_head(
            tree_size=sth.head.tree_size, root=sth.head.root_hash, signed_head=sth.jws
        )
        head_ids[sth.jws] = stored.head_id
        log_event("log_tree_head", tree_size=sth.head.tree_size, head_id=stored.head_id)

    async def persist_timestamp(sth: SignedTreeHead, token: bytes) -> None:
        head_id = head_ids.pop(sth.jws, None)
        if head_id is None:  # a head stored before this process started
            stored = await store.latest_tree_head()
            if stored is None or stored.signed_head != sth.jws:
                return
            head_id = stored.head_id
        for stale in [jws for jws, i in head_ids.items() if i < head_id]:
            del head_ids[stale]  # older heads stay untimestamped: the newer token covers them
        await store.set_timestamp(head_id, token)
        log_event("log_tree_head_timestamped", tree_size=sth.head.tree_size, head_id=head_id)

    scheduler: TreeHeadScheduler | FollowingScheduler
    if not sign_heads:
        scheduler = FollowingScheduler(
            log_id=str(config.gateway_id),
            store=store,
            interval_s=config.tree_head_interval_s,
            overdue_after_s=config.timestamping_overdue_s,
        )
    else:
        scheduler = TreeHeadScheduler(
            log_id=str(config.gateway_id),
            current=store.tree_state,
            persist_head=persist_head,
            persist_timestamp=persist_timestamp,
            signer=signer,
            timestamper=approved_tsa_timestamper(_snapshot_or_none(globalconf), session=session),
            interval_s=config.tree_head_interval_s,
            max_records=config.tree_head_max_records,
            overdue_after_s=config.timestamping_overdue_s,
            last_head=last_head,
        )
    await scheduler.start()
    stack.push_async_callback(scheduler.stop)
    run_in_background(stack, _archive_configurations(config, globalconf), "globalconf-archive")
    log_event(
        "gateway_message_log",
        kind="postgresql" if config.message_log_url else "sqlite",
        location=_shown(location),
        size=store.size,
        synchronous=config.message_log_synchronous.value,
    )
    commits = _NotifyingLog(log=store, appended=scheduler.notify_appended, observer=commit_observer)
    exchange_log = MetadataModeLog(log=commits, modes=config.log_modes())
    return GatewayLog(exchange_log=exchange_log, store=store, scheduler=scheduler, commits=commits)


#: ``(record kind, seconds, ok)`` of one commit.
CommitObserver = Callable[[str, float, bool], None]


class _NotifyingLog:
    """Tells the scheduler the tree size after every commit; times every commit and
    keeps the last failure until a commit succeeds again."""

    def __init__(
        self,
        *,
        log: MessageLog,
        appended: Callable[[int], None],
        observer: CommitObserver | None = None,
    ) -> None:
        self._log = log
        self._appended = appended
        self._observer = observer
        #: Why the last commit failed, ``None`` once one succeeds.
        self.last_failure: str | None = None

    async def commit_request(self, record: LogRecord) -> LogIndex:
        return await self._commit(record, self._log.commit_request)

    async def commit_response(self, record: LogRecord) -> LogIndex:
        return await self._commit(record, self._log.commit_response)

    async def commit_admin_change(self, record: LogRecord) -> LogIndex:
        return await self._commit(record, self._log.commit_admin_change)

    async def _commit(
        self, record: LogRecord, commit: Callable[[LogRecord], Awaitable[LogIndex]]
    ) -> LogIndex:
        started = time.perf_counter()
        kind = record.kind.name.lower()
        try:
            index = await commit(record)
        except SeraiError as exc:
            if self.last_failure is None:
                log_event("message_log_unavailable", kind=kind, error=exc.message)
            self.last_failure = exc.message
            self._observe(kind, started, ok=False)
            raise
        if self.last_failure is not None:
            log_event("message_log_recovered", kind=kind)
            self.last_failure = None
        self._observe(kind, started, ok=True)
        self._appended(index + 1)
        return index

    def _observe(self, kind: str, started: float, *, ok: bool) -> None:
        if self._observer is not None:
            self._observer(kind, time.perf_counter() - started, ok)


def _snapshot_or_none(
    globalconf: GlobalConfigurationClient,
) -> Callable[[], ConfigurationSnapshot | None]:
    def current() -> ConfigurationSnapshot | None:
        try:
            return globalconf.current()
        except SeraiError:
            return None

    return current


async def _archive_configurations(
    config: GatewayConfig, globalconf: GlobalConfigurationClient
) -> None:
    """Keep every configuration the client accepts (module docstring)."""
    serial: int | None = None
    while True:
        try:
            snapshot = globalconf.current()
        except SeraiError:
            snapshot = None
        if snapshot is not None and snapshot.serial != serial:
            envelope = globalconf.current_envelope()
            target = archive_path(config, snapshot.serial)
            try:
                if not await asyncio.to_thread(target.exists):
                    await asyncio.to_thread(atomic_write, target, envelope)
                    log_event("globalconf_archived", serial=snapshot.serial, path=str(target))
                serial = snapshot.serial
            except OSError as exc:
                log_event("globalconf_archive_failed", serial=snapshot.serial, error=str(exc))
        try:
            await globalconf.wait_for_change(after_serial=serial)
        except SeraiError:
            await asyncio.sleep(1.0)


def _shown(location: str | Path) -> str:
    """A log location without any password (PostgreSQL URLs may carry one)."""
    text = str(location)
    if "://" in text and "@" in text:
        scheme, rest = text.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}@{host}"
    return text
