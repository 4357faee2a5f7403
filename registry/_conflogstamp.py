"""RFC 3161 time-stamps on the configuration log's heads, obtained in the background.

The registry's configuration log (:mod:`registry.conflog`) is a log of the same kind as
a gateway's message log, and like it gets its heads time-stamped by an approved TSA:
:class:`ConflogTimestamper` asks the approved TSAs of the configuration last published
(in the order listed; the first verified token wins) for a token over the newest head,
whose imprint is the SHA-256 of the head's JWS bytes (:mod:`serai.treehead`), and
stores it with the head (:meth:`RegistryStore.conflog_add_timestamp`). The next
publication's proof bundle carries it (:mod:`registry._sqlconflog`).

Behaviour.

1. **Never in the way.** Publication does not wait for the TSA and cannot fail because
   of it: this runs as its own task, woken by each publication
   (:meth:`ConflogTimestamper.published`); a head published while the TSA is down is
   shipped without a token.
2. **Newest head only.** Each attempt reads the newest head from the store; one token
   covers every leaf up to its size, so after an outage one request catches up, and a
   head that already has a token (from this or another registry process sharing the
   database) is left alone.
3. **Verified before stored.** A token counts only if it verifies as gateways will
   check it (:func:`registry.conflog.verify_head_timestamp` against the configuration
   whose TSAs made it): a TSA that answers with a bad token is a failed attempt.
4. **Back-off.** After ``n`` consecutive failures the next attempt waits
   ``min(backoff_max_s, backoff_initial_s * 2**(n-1))`` scaled by a random factor in
   [0.5, 1]; a success resets it. Publications during the wait do not shorten it.
5. **Signals.** Each success writes a ``conflog_timestamped`` event (tree size, TSA,
   genTime), each failure ``conflog_timestamp_failed`` (tree size, code, message,
   failures in a row, the wait before the next attempt);
   :attr:`ConflogTimestamper.timestamped_head` feeds the registry's age gauge.

Assumptions: the store is called only from ``executor`` (the registry's store thread);
the event loop is the registry's one loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import random
from collections.abc import Callable
from typing import Final, TypeVar

import aiohttp

from certs.timestamp import TimestampToken
from registry.conflog import verify_head_timestamp
from registry.model import ApprovedTSA
from registry.snapshot import ConfigurationSnapshot
from registry.store import RegistryStore
from registry.timestamping import backoff_delay_s, jittered_s, timestamp_from_approved_tsas
from serai._tasks import cancel_and_wait
from serai.cliutil import log_event
from serai.errors import ErrorCode, SeraiError
from serai.treehead import SignedTreeHead

__all__ = ["ConflogTimestamper"]

_RANDOM: Final = random.SystemRandom()
_T = TypeVar("_T")


class ConflogTimestamper:
    """Time-stamps the configuration log's newest head (module docstring).

    ``snapshot`` returns the configuration last published (``None`` before the first);
    its approved TSAs are asked. Drive it with :meth:`start` / :meth:`stop`, or one
    attempt at a time with :meth:`timestamp_newest` (tests).
    """

    def __init__(
        self,
        *,
        store: RegistryStore,
        executor: concurrent.futures.Executor,
        snapshot: Callable[[], ConfigurationSnapshot | None],
        timeout_s: float = 10.0,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 300.0,
        jitter: Callable[[], float] = _RANDOM.random,
    ) -> None:
        if timeout_s <= 0 or not 0 < backoff_initial_s <= backoff_max_s:
            raise ValueError("need timeout_s > 0 and 0 < backoff_initial_s <= backoff_max_s")
        self._store = store
        self._executor = executor
        self._snapshot = snapshot
        self._timeout_s = timeout_s
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._jitter = jitter
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._timestamped: SignedTreeHead | None = None
        self._consecutive_failures = 0
        self._failures_total = 0

    @property
    def timestamped_head(self) -> SignedTreeHead | None:
        """The largest head known to have a token (read at start, then obtained here)."""
        return self._timestamped

    @property
    def consecutive_failures(self) -> int:
        """Attempts failed since the last success."""
        return self._consecutive_failures

    @property
    def failures_total(self) -> int:
        """Attempts failed since this timestamper was made."""
        return self._failures_total

    @property
    def retry_delay_s(self) -> float:
        """The un-jittered wait before the next attempt (0 after a success); rule 4."""
        return backoff_delay_s(
            self._consecutive_failures, initial_s=self._backoff_initial_s, max_s=self._backoff_max_s
        )

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Read the newest time-stamped head, then run in the background (a first
        attempt follows at once, for a head left without a token by a previous run)."""
        if self._task is not None:
            raise RuntimeError("ConflogTimestamper already started")
        with contextlib.suppress(SeraiError):  # the gauge waits for the first success
            self._timestamped = await self._in_store(self._store.conflog_timestamped_head)
        self._session = aiohttp.ClientSession()
        self._wake.set()
        self._task = asyncio.create_task(self._run(), name="conflog time-stamps")

    def published(self) -> None:
        """A configuration was published: its head wants a token."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop at once (an attempt in flight is abandoned; its head stays without a
        token until the next start). Idempotent."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- one attempt ----------------------------------------------------------------------

    async def timestamp_newest(self) -> bool:
        """One attempt on the newest head: ``True`` when it now has a token or there is
        nothing to do, ``False`` on failure (counted and logged)."""
        snapshot = self._snapshot()
        if snapshot is None:
            return True  # nothing published yet: the first publication wakes us
        size: int | None = None
        try:
            sth = await self._in_store(self._store.conflog_newest_head)
            if sth is None or sth.timestamp_token is not None:
                if sth is not None:
                    self._note(sth)
                return True
            size = sth.head.tree_size
            stamped, tsa, gen_time = await self._request(sth, snapshot)
            await self._in_store(
                self._store.conflog_add_timestamp, size, stamped.timestamp_token or b""
            )
        except SeraiError as exc:
            self._consecutive_failures += 1
            self._failures_total += 1
            log_event(
                "conflog_timestamp_failed",
                tree_size=size,
                code=exc.code.value,
                message=exc.message,
                consecutive_failures=self._consecutive_failures,
                retry_in_s=round(self.retry_delay_s, 3),
            )
            return False
        self._consecutive_failures = 0
        self._note(stamped)
        log_event("conflog_timestamped", tree_size=size, tsa=tsa, gen_time=gen_time.isoformat())
        return True

    async def _request(
        self, sth: SignedTreeHead, snapshot: ConfigurationSnapshot
    ) -> tuple[SignedTreeHead, str, dt.datetime]:
        """``sth`` with a verified token from the first approved TSA that gives one, that
        TSA's name and the token's genTime; raises ``tsa_unavailable`` naming every
        failure."""
        checked: list[tuple[SignedTreeHead, dt.datetime]] = []

        def accept(token: TimestampToken, _: ApprovedTSA) -> None:
            stamped = sth.with_timestamp(token.token_der)
            checked.append((stamped, verify_head_timestamp(stamped, snapshot)))

        _, tsa = await timestamp_from_approved_tsas(
            sth.jws,
            snapshot,
            what="the configuration log head",
            session=self._session,
            timeout_s=self._timeout_s,
            accept=accept,
        )
        stamped, gen_time = checked[-1]
        return stamped, tsa.name, gen_time

    # -- the task -------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while not await self._attempt():
                delay = jittered_s(self.retry_delay_s, self._jitter)
                await asyncio.sleep(delay)

    async def _attempt(self) -> bool:
        try:
            return await self.timestamp_newest()
        except Exception as exc:  # noqa: BLE001  (the task must outlive any bug)
            self._consecutive_failures += 1
            self._failures_total += 1
            log_event(
                "conflog_timestamp_failed",
                tree_size=None,
                code=ErrorCode.INTERNAL.value,
                message=f"{type(exc).__name__}: {exc}",
                consecutive_failures=self._consecutive_failures,
                retry_in_s=round(self.retry_delay_s, 3),
            )
            return False

    # -- helpers --------------------------------------------------------------------------

    def _note(self, sth: SignedTreeHead) -> None:
        known = self._timestamped
        if known is None or sth.head.tree_size >= known.head.tree_size:
            self._timestamped = sth

    async def _in_store(self, call: Callable[..., _T], *args: object) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, call, *args)
