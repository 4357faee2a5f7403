"""The tree-head scheduler: signs the message log's tree heads and has them time-stamped
(DESIGN §6).

:class:`TreeHeadScheduler` knows the log only through callables, so it runs against any
store (and an in-memory one in tests):

* ``current()`` gives the size and root hash of the committed tree;
* ``persist_head(sth)`` stores a signed head (not yet time-stamped);
* ``persist_timestamp(sth, token_der)`` attaches a token to a stored head;
* ``timestamper(data)`` returns a verified RFC 3161 token over ``data`` (see
  :func:`approved_tsa_timestamper`) or raises a :class:`~serai.errors.SeraiError`.

Behaviour.

1. **Heads.** Every ``interval_s``, and as soon as :meth:`TreeHeadScheduler.notify_appended`
   reports ``max_records`` records since the last head, the scheduler signs a head for
   the current tree if it grew, and persists it. A head that cannot be persisted is
   dropped and made again next time; its records stay in the log.
2. **Time-stamps.** A separate task time-stamps the newest head not yet covered: one
   token covers every record up to that head's size, so after an outage one request
   catches up. A head is only time-stamped after it was persisted, and a token counts
   only once it is persisted too. Heads keep being signed while the TSA is down.
3. **Back-off.** After ``n`` consecutive failures the next attempt waits
   ``min(backoff_max_s, backoff_initial_s * 2**(n-1))``, scaled by a random factor in
   [0.5, 1] (so gateways do not retry in step); a success resets it.
4. **Overdue.** :meth:`TreeHeadScheduler.overdue` is true when a record has waited more
   than ``overdue_after_s`` for a time-stamp: measured from the time of the first head
   that included it, or, for a record no head covers yet, from when the log reported
   it (``notify_appended``), so a scheduler that cannot sign heads fails closed too. This
   is X-Road's acceptable-timestamp-failure-period seen from the records: an idle log is
   never overdue, and the period of one outage starts when a time-stamp is first needed,
   not at the last success (which may be long before, if the log was idle). The gateway
   refuses new exchanges while overdue (:meth:`TreeHeadScheduler.check`,
   ``timestamping_overdue``); the first success clears it.
5. **Stop.** :meth:`TreeHeadScheduler.stop` lets a head being made finish, makes a last
   head for the records committed so far, and makes one last time-stamp attempt unless
   the TSA is failing (shutdown never waits out a back-off).

Assumptions: the callables run on the scheduler's event loop and raise only
:class:`~serai.errors.SeraiError` on failure (anything else is a bug and stops the task,
after which :meth:`~TreeHeadScheduler.overdue` soon turns true); signing a head is cheap
(one ECDSA or Ed25519 signature) and runs on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hmac
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Final

import aiohttp

from certs.errors import TimestampError
from certs.timestamp import TimestampToken
from gateway.errors import GatewayError
from registry.snapshot import ConfigurationSnapshot
from registry.timestamping import backoff_delay_s, jittered_s, timestamp_from_approved_tsas
from serai.errors import ErrorCode, SeraiError
from serai.treehead import SignedTreeHead, TreeHead, TreeHeadSigner

__all__ = [
    "DEFAULT_OVERDUE_AFTER_S",
    "Timestamper",
    "TimestampingOverdueError",
    "TreeHeadScheduler",
    "approved_tsa_timestamper",
    "overdue_reason",
]

#: X-Road's default acceptable time-stamping failure period.
DEFAULT_OVERDUE_AFTER_S: Final = 4 * 3600.0

Timestamper = Callable[[bytes], Awaitable[TimestampToken]]

_LOG = logging.getLogger("serai.gateway.messagelog")
_RANDOM = random.SystemRandom()


class TimestampingOverdueError(GatewayError):
    """Records have waited longer than the allowed period for a time-stamp."""

    default_code = ErrorCode.TIMESTAMPING_OVERDUE


def overdue_reason(
    *,
    log_id: str,
    since: dt.datetime | None,
    now: dt.datetime,
    overdue_after_s: float,
    detail: str | None = None,
) -> str | None:
    """Why records of ``log_id`` waiting for a time-stamp since ``since`` are overdue at
    ``now`` (waited more than ``overdue_after_s``), with ``detail`` appended; ``None``
    while they are not (or nothing waits). The one wording for the refusal's details and
    the operator, whichever process keeps the time."""
    if since is None:
        return None
    waited = (now - since).total_seconds()
    if waited <= overdue_after_s:
        return None
    reason = (
        f"records of log {log_id} have waited {waited:.0f} s for a time-stamp "
        f"(at most {overdue_after_s:g} s allowed)"
    )
    return reason if detail is None else f"{reason}; {detail}"


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class TreeHeadScheduler:
    """Signs tree heads of one log and has them time-stamped (module docstring).

    Use :meth:`start` and :meth:`stop` on the event loop that runs the log, or drive it
    step by step with :meth:`sign_head` and :meth:`timestamp_newest` (tests, tools).
    """

    def __init__(
        self,
        *,
        log_id: str,
        current: Callable[[], Awaitable[tuple[int, bytes]]],
        persist_head: Callable[[SignedTreeHead], Awaitable[None]],
        persist_timestamp: Callable[[SignedTreeHead, bytes], Awaitable[None]],
        signer: TreeHeadSigner,
        timestamper: Timestamper,
        interval_s: float = 1.0,
        max_records: int = 10_000,
        overdue_after_s: float = DEFAULT_OVERDUE_AFTER_S,
        clock: Callable[[], dt.datetime] = _utcnow,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 60.0,
        jitter: Callable[[], float] = _RANDOM.random,
        last_head: SignedTreeHead | None = None,
    ) -> None:
        if interval_s <= 0 or max_records < 1 or overdue_after_s <= 0:
            raise ValueError("interval_s and overdue_after_s must be positive, max_records >= 1")
        if not 0 < backoff_initial_s <= backoff_max_s:
            raise ValueError("need 0 < backoff_initial_s <= backoff_max_s")
        self._log_id = log_id
        self._current = current
        self._persist_head = persist_head
        self._persist_timestamp = persist_timestamp
        self._signer = signer
        self._timestamper = timestamper
        self._interval_s = interval_s
        self._max_records = max_records
        self._overdue_after_s = overdue_after_s
        self._clock = clock
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._jitter = jitter

        #: The newest persisted head, and the size up to which a token covers the log.
        self._newest: SignedTreeHead | None = last_head
        self._stamped_size = -1
        #: Time of the oldest head no token covers yet.
        self._unstamped_head_since: dt.datetime | None = None
        #: When the log first reported a record that no head covers yet.
        self._unheaded_since: dt.datetime | None = None
        self._notified_size = -1
        #: While a time-stamp request is out: the time of the first head made meanwhile.
        self._attempting = False
        self._head_during_attempt: dt.datetime | None = None
        self._last_timestamped_at: dt.datetime | None = None
        self._consecutive_failures = 0
        self._failures_total = 0
        self._last_error: SeraiError | None = None
        if last_head is not None:
            if last_head.timestamp_token is not None:
                self._stamped_size = last_head.head.tree_size
            else:
                self._unstamped_head_since = last_head.head.time
            self._notified_size = last_head.head.tree_size

        self._loop: asyncio.AbstractEventLoop | None = None
        self._head_wake = asyncio.Event()
        self._stamp_wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._head_task: asyncio.Task[None] | None = None
        self._stamp_task: asyncio.Task[None] | None = None
        self._head_lock = asyncio.Lock()

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the head and time-stamp tasks on the running loop."""
        if self._head_task is not None:
            raise RuntimeError("TreeHeadScheduler already started")
        self._loop = asyncio.get_running_loop()
        self._head_task = asyncio.create_task(self._head_loop(), name=f"tree heads {self._log_id}")
        self._stamp_task = asyncio.create_task(
            self._stamp_loop(), name=f"tree head time-stamps {self._log_id}"
        )

    async def stop(self) -> None:
        """Stop cleanly: finish the head in progress, sign a last head, try one last
        time-stamp unless the TSA is failing. Idempotent."""
        self._stopping.set()
        self._head_wake.set()
        self._stamp_wake.set()
        for task in (self._head_task, self._stamp_task):
            if task is not None:
                await task

    # -- what the log and the gateway call --------------------------------------------------

    def notify_appended(self, size: int) -> None:
        """The log committed records up to ``size``; wakes the head task once
        ``max_records`` records have accumulated since the last head. Cheap; call it
        after every commit, on the scheduler's loop or from another thread."""
        if size <= self._notified_size:
            return
        self._notified_size = size
        if size > self._head_size and self._unheaded_since is None:
            self._unheaded_since = self._clock()
        if size - max(self._head_size, 0) >= self._max_records:
            self._wake(self._head_wake)

    def overdue(self) -> bool:
        """Whether a record has waited more than ``overdue_after_s`` for a time-stamp."""
        return self.overdue_reason() is not None

    def overdue_reason(self) -> str | None:
        """Why the log is overdue (for the refusal and the operator), or ``None``."""
        return overdue_reason(
            log_id=self._log_id,
            since=self.untimestamped_since,
            now=self._clock(),
            overdue_after_s=self._overdue_after_s,
            detail=None if self._last_error is None else f"last failure: {self._last_error}",
        )

    def check(self) -> None:
        """Refuse new exchanges while overdue: raises :class:`TimestampingOverdueError`."""
        reason = self.overdue_reason()
        if reason is not None:
            raise TimestampingOverdueError(reason)

    @property
    def untimestamped_since(self) -> dt.datetime | None:
        """When the oldest record without a time-stamp started waiting (rule 4), or ``None``."""
        times = [t for t in (self._unstamped_head_since, self._unheaded_since) if t is not None]
        return min(times) if times else None

    @property
    def last_timestamped_at(self) -> dt.datetime | None:
        """When a token was last obtained and persisted (this process), or ``None``."""
        return self._last_timestamped_at

    @property
    def consecutive_failures(self) -> int:
        """Time-stamp attempts failed since the last success."""
        return self._consecutive_failures

    @property
    def failures_total(self) -> int:
        """Time-stamp attempts failed since this scheduler was made (for metrics)."""
        return self._failures_total

    @property
    def last_error(self) -> SeraiError | None:
        """The most recent failure (head or time-stamp), kept until the next success."""
        return self._last_error

    @property
    def newest_head(self) -> SignedTreeHead | None:
        """The newest persisted head."""
        return self._newest

    @property
    def timestamped_size(self) -> int:
        """The tree size up to which a persisted token covers the log (-1: none yet)."""
        return self._stamped_size

    @property
    def retry_delay_s(self) -> float:
        """The un-jittered wait before the next attempt (0 after a success); rule 3."""
        return backoff_delay_s(
            self._consecutive_failures, initial_s=self._backoff_initial_s, max_s=self._backoff_max_s
        )

    # -- steps --------------------------------------------------------------------------------

    async def sign_head(self) -> SignedTreeHead | None:
        """Sign and persist a head for the current tree if it grew since the last head;
        return it, or ``None`` if the tree did not grow. Raises what the callables raise."""
        async with self._head_lock:
            started = self._clock()
            size, root = await self._current()
            if size <= max(self._head_size, 0):  # an empty log has nothing to sign
                return None
            head = TreeHead(
                log_id=self._log_id, tree_size=size, root_hash=root, time=_to_millis(started)
            )
            sth = self._signer.sign(head)
            await self._persist_head(sth)
            self._newest = sth
            if self._unstamped_head_since is None:
                self._unstamped_head_since = head.time
            if self._attempting and self._head_during_attempt is None:
                self._head_during_attempt = head.time
            # Records committed after current() was read wait from (at most) then.
            self._unheaded_since = started if self._notified_size > size else None
        self._stamp_wake.set()
        return sth

    async def timestamp_newest(self) -> bool:
        """One attempt to time-stamp the newest head no token covers; ``True`` on success
        or when there is nothing to do, ``False`` on failure (counted, and logged)."""
        sth = self._newest
        if sth is None or sth.head.tree_size <= self._stamped_size:
            return True
        self._attempting = True
        self._head_during_attempt = None
        try:
            token = await self._timestamper(sth.jws)
            if token.hash_name != "sha256" or not hmac.compare_digest(
                token.message_digest, sth.sha256
            ):
                raise TimestampError("the TSA's token is not over this tree head")
            await self._persist_timestamp(sth, token.token_der)
        except SeraiError as exc:
            self._consecutive_failures += 1
            self._failures_total += 1
            self._last_error = exc
            _LOG.warning(
                "time-stamping tree head %d of %s failed (%d in a row): %s",
                sth.head.tree_size,
                self._log_id,
                self._consecutive_failures,
                exc,
            )
            return False
        finally:
            self._attempting = False
        self._stamped_size = max(self._stamped_size, sth.head.tree_size)
        self._unstamped_head_since = self._head_during_attempt
        self._last_timestamped_at = self._clock()
        self._consecutive_failures = 0
        self._last_error = None
        return True

    # -- tasks --------------------------------------------------------------------------------

    async def _head_loop(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._head_wake.wait(), timeout=self._interval_s)
            self._head_wake.clear()
            await self._head_round()
        await self._head_round()  # the records committed before stop() get a head

    async def _head_round(self) -> None:
        try:
            await self.sign_head()
        except SeraiError as exc:
            self._last_error = exc
            _LOG.warning("signing a tree head of %s failed: %s", self._log_id, exc)

    async def _stamp_loop(self) -> None:
        while not self._stopping.is_set():
            self._stamp_wake.clear()
            if not self._needs_timestamp():
                await self._stamp_wake.wait()
            elif not await self.timestamp_newest():
                delay = jittered_s(self.retry_delay_s, self._jitter)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=delay)
        if self._head_task is not None:
            await self._head_task  # its last head comes first
        if self._needs_timestamp() and self._consecutive_failures == 0:
            await self.timestamp_newest()

    # -- helpers ------------------------------------------------------------------------------

    @property
    def _head_size(self) -> int:
        return self._newest.head.tree_size if self._newest is not None else -1

    def _needs_timestamp(self) -> bool:
        return self._newest is not None and self._newest.head.tree_size > self._stamped_size

    def _wake(self, event: asyncio.Event) -> None:
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or running is loop:
            event.set()
        else:
            loop.call_soon_threadsafe(event.set)


def approved_tsa_timestamper(
    snapshot_provider: Callable[[], ConfigurationSnapshot | None],
    *,
    session: aiohttp.ClientSession | None = None,
    timeout_s: float = 10.0,
) -> Timestamper:
    """A timestamper that asks the approved TSAs of the configuration in force, in the
    order listed, and returns the first verified token.

    A token counts only if it verifies (SHA-256 imprint of the data, fresh nonce, TSA
    certificate chaining to an approved root now) and is signed by the certificate the
    configuration lists for that TSA. Raises :class:`~certs.errors.TimestampError`:
    ``tsa_unavailable`` when no configuration is in force, none lists a TSA, or every TSA
    failed (the message names each failure).
    """

    async def timestamp(data: bytes) -> TimestampToken:
        snapshot = snapshot_provider()
        if snapshot is None:
            raise TimestampError(
                "no global configuration is in force", code=ErrorCode.TSA_UNAVAILABLE
            )
        token, _ = await timestamp_from_approved_tsas(
            data, snapshot, what="the tree head", session=session, timeout_s=timeout_s
        )
        return token

    return timestamp


def _to_millis(when: dt.datetime) -> dt.datetime:
    return when.astimezone(dt.UTC).replace(microsecond=when.microsecond // 1000 * 1000)
