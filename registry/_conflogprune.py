"""Retention of the configuration log, run by the registry itself.

With ``conflog_keep_envelopes_days`` set in ``registry.toml``, :class:`ConflogRetention`
prunes (:meth:`RegistryStore.conflog_prune`) the envelopes of the entries appended more
than that many days ago, once at start and then every :data:`CHECK_INTERVAL_S`. Without
it (the default) nothing is pruned by the registry; ``serai registry conflog prune``
does it on demand. Either way the store's rules decide what may go (the newest entry,
unexpired configurations and entries no time-stamped head covers stay;
:mod:`registry._sqlconflog`), and proofs, heads and tokens are never touched.

Behaviour.

1. **Never in the way.** It runs as its own task; the store call runs in the store's
   executor, so it queues with publications instead of racing them. A failure is
   logged (``conflog_prune_failed``: code, message) and retried at the next check,
   never raised.
2. **Signals.** A run that pruned writes ``conflog_pruned`` (count, first and last
   index, cut-off, entries protected); every run refreshes :attr:`pruned_total`, the
   count of pruned entries behind the ``serai_registry_conflog_envelopes`` gauge (so a
   prune made by the command line shows within one check).
3. **Audited.** Each run that prunes leaves one audit entry, actor ``registry``,
   action ``ConflogPrune``.

Assumptions: the store is called only from ``executor``; the clock is right.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
from collections.abc import Callable
from typing import Final

from registry.store import Change, ConflogPruneResult, RegistryStore
from serai._tasks import cancel_and_wait
from serai.cliutil import log_event
from serai.errors import ErrorCode

__all__ = ["CHECK_INTERVAL_S", "PRUNE_ACTION", "ConflogRetention"]

#: Seconds between two checks (pruning is by the day; once an hour is plenty).
CHECK_INTERVAL_S: Final = 3600.0
#: The audit action of a prune (by the registry or ``serai registry conflog prune``).
PRUNE_ACTION: Final = "ConflogPrune"


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class ConflogRetention:
    """Prunes the configuration log's old envelopes every check (module docstring).

    ``keep_days`` ``None`` only counts (for the gauge). Drive it with :meth:`start` /
    :meth:`stop`, or one check at a time with :meth:`check` (tests).
    """

    def __init__(
        self,
        *,
        store: RegistryStore,
        executor: concurrent.futures.Executor,
        keep_days: int | None,
        check_interval_s: float = CHECK_INTERVAL_S,
        clock: Callable[[], dt.datetime] = _utc_now,
    ) -> None:
        if keep_days is not None and keep_days <= 0:
            raise ValueError("keep_days must be positive (or None: never prune)")
        if check_interval_s <= 0:
            raise ValueError("check_interval_s must be positive")
        self._store = store
        self._executor = executor
        self.keep_days = keep_days
        self._interval_s = check_interval_s
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        #: Entries whose envelope is pruned, as last read (``None`` before the first).
        self.pruned_total: int | None = None
        #: Checks that failed since start.
        self.failures = 0

    async def start(self) -> None:
        """Check at once, then every interval, in the background."""
        if self._task is not None:
            raise RuntimeError("ConflogRetention already started")
        self._task = asyncio.create_task(self._run(), name="conflog retention")

    async def stop(self) -> None:
        """Stop (a store call in flight completes in its thread). Idempotent."""
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def check(self) -> ConflogPruneResult | None:
        """One check: prune when ``keep_days`` is set, then read the pruned count.
        Returns what was pruned (``None`` without ``keep_days``); failures are logged
        and counted, never raised (rule 1)."""
        loop = asyncio.get_running_loop()
        try:
            result = None
            if self.keep_days is not None:
                before = self._clock() - dt.timedelta(days=self.keep_days)
                result = await loop.run_in_executor(self._executor, self._prune, before)
                if result.pruned:
                    log_event(
                        "conflog_pruned",
                        pruned=result.pruned,
                        first_index=result.first_index,
                        last_index=result.last_index,
                        before=before.isoformat(),
                        protected=result.protected,
                    )
                self.pruned_total = result.pruned_total
            else:
                self.pruned_total = await loop.run_in_executor(
                    self._executor, self._store.conflog_pruned_count
                )
        except Exception as exc:  # noqa: BLE001  (the task must outlive any failure)
            self.failures += 1
            code = getattr(exc, "code", ErrorCode.INTERNAL)
            log_event(
                "conflog_prune_failed",
                code=code.value if isinstance(code, ErrorCode) else ErrorCode.INTERNAL.value,
                message=getattr(exc, "message", f"{type(exc).__name__}: {exc}"),
                retry_in_s=self._interval_s,
            )
            return None
        return result

    def _prune(self, before: dt.datetime) -> ConflogPruneResult:
        return self._store.conflog_prune(
            before=before, change=Change(actor="registry", action=PRUNE_ACTION)
        )

    async def _run(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self._interval_s)
