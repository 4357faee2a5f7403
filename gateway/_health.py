"""A running gateway's readiness, and the events it logs as readiness changes.

:class:`Readiness` answers ``/readyz`` (and the ``serai_gateway_ready`` gauge): the
gateway is ready when

1. its exchange ports are open (so its keys and certificates were loaded and a first
   OCSP response for the signing certificate was obtained);
2. it holds a valid (verified, unexpired) global configuration;
3. its message log can be written (the last commit did not fail), no request to it (a
   batch, a tree-head write, a read) has been in flight longer than
   ``message_log_stuck_after_s`` (a store that neither answers nor fails: its process
   stopped, the network black-holed), and no record has waited longer than
   ``timestamping_overdue_s`` for a time-stamp;
4. the OCSP response it staples to its signatures is younger than ``max_ocsp_age_s``
   (older, and peers refuse its messages with ``ocsp_stale``).

Each reason is one short line. :meth:`Readiness.reasons` reads state only (no I/O, no
waiting): it runs on the event loop at every probe and scrape.

:func:`watch_readiness` checks once a second: it sets the gRPC health status of the IS
and peer ports (NOT_SERVING while not ready) and writes a JSON line on stderr when
something significant changes: ``gateway_ready`` / ``gateway_not_ready`` (with the
reasons), ``message_log_stuck`` / ``message_log_resumed`` (a log request in flight past
``message_log_stuck_after_s``, and its end), ``timestamping_failing`` /
``timestamping_recovered`` (the TSA outage seen from the tree-head scheduler),
``certificate_expiring`` (a certificate in use expires within 30 days; repeated daily)
and ``ocsp_stale``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Final

from serai.cliutil import log_event

if TYPE_CHECKING:
    from gateway._logsetup import GatewayLog
    from gateway.runtime import GatewayRuntime, StapledOCSP
    from registry.client import GlobalConfigurationClient

__all__ = ["Readiness", "watch_readiness"]

#: Seconds between readiness checks.
_CHECK_S: Final = 1.0
#: A certificate that expires sooner than this is reported (and alerted on).
_EXPIRY_WARNING: Final = dt.timedelta(days=30)
#: How often an expiring certificate is reported again.
_EXPIRY_REPEAT: Final = dt.timedelta(days=1)


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Readiness:
    """Why the gateway is not ready (module docstring); parts are set as they start."""

    def __init__(
        self,
        *,
        globalconf: GlobalConfigurationClient,
        max_ocsp_age_s: float,
        log_stuck_after_s: float | None = None,
        clock: Callable[[], dt.datetime] = _utc_now,
    ) -> None:
        self.globalconf = globalconf
        self.max_ocsp_age_s = max_ocsp_age_s
        #: How long a message-log request may be in flight (``None``: not watched).
        self.log_stuck_after_s = log_stuck_after_s
        self.clock = clock
        self.gateway_log: GatewayLog | None = None
        self.stapled: StapledOCSP | None = None
        self.runtime: GatewayRuntime | None = None
        #: The notAfter of each certificate in use, by role (auth, signing, log_signing).
        self.certificates: Mapping[str, dt.datetime] = {}

    def reasons(self) -> tuple[str, ...]:
        """Why the gateway is not ready now; empty when it is."""
        reasons: list[str] = []
        status = self.globalconf.status()
        if status.expired:
            detail = f": {status.last_error.message}" if status.last_error is not None else ""
            reasons.append(f"no valid global configuration{detail}")
        if self.runtime is None:
            reasons.append("starting: the exchange ports are not open yet")
        if self.gateway_log is not None:
            stuck = self.log_stuck()
            if stuck is not None:
                reasons.append(stuck)
            reasons.extend(self.gateway_log.not_ready_reasons())
        stale = self.ocsp_stale()
        if stale is not None:
            reasons.append(stale)
        return tuple(reasons)

    def log_stuck(self) -> str | None:
        """A reason when a message-log request has been in flight too long (the store
        neither answers nor fails); it stays the same while the same request waits."""
        if self.gateway_log is None or self.log_stuck_after_s is None:
            return None
        return self.gateway_log.store.stuck_reason(self.log_stuck_after_s)

    def ocsp_this_update(self) -> Mapping[str, dt.datetime]:
        """The thisUpdate of each OCSP response held, by certificate role."""
        stapled = self.stapled
        if stapled is None or stapled.this_update is None:
            return {}
        return {"signing": stapled.this_update}

    def ocsp_stale(self) -> str | None:
        """A reason when the stapled OCSP response is too old for peers to accept."""
        stapled = self.stapled
        if stapled is None or stapled.this_update is None:
            return None
        age = (self.clock() - stapled.this_update).total_seconds()
        if age <= self.max_ocsp_age_s:
            return None
        return (
            f"the OCSP response for the signing certificate is {age:.0f} s old "
            f"(peers accept at most {self.max_ocsp_age_s:g} s)"
        )


async def watch_readiness(readiness: Readiness) -> None:
    """Keep the gRPC health status in step and log changes (module docstring); runs
    until cancelled."""
    last_reasons: tuple[str, ...] | None = None
    failing = False
    stale = False
    stuck_since: float | None = None
    expiring_reported: dict[str, dt.datetime] = {}
    while True:
        reasons = readiness.reasons()
        runtime = readiness.runtime
        if runtime is not None:
            await runtime.set_serving(not reasons)
        if reasons != last_reasons:
            if reasons:
                log_event("gateway_not_ready", reasons=list(reasons))
            elif last_reasons is not None:
                log_event("gateway_ready")
            last_reasons = reasons
        stuck_since = _report_stuck(readiness, stuck_since)
        gateway_log = readiness.gateway_log
        if gateway_log is not None:
            scheduler = gateway_log.scheduler
            now_failing = scheduler.consecutive_failures > 0
            if now_failing and not failing:
                error = scheduler.last_error
                log_event(
                    "timestamping_failing",
                    failures=scheduler.consecutive_failures,
                    error=None if error is None else error.message,
                )
            elif failing and not now_failing:
                log_event("timestamping_recovered")
            failing = now_failing
        stale_reason = readiness.ocsp_stale()
        if (stale_reason is not None) != stale:
            stale = stale_reason is not None
            log_event("ocsp_stale" if stale else "ocsp_fresh", reason=stale_reason)
        _report_expiring(readiness, expiring_reported)
        await asyncio.sleep(_CHECK_S)


def _report_stuck(readiness: Readiness, stuck_since: float | None) -> float | None:
    """Log ``message_log_stuck`` when a log request passes the bound and
    ``message_log_resumed`` once none does; the start (``time.monotonic()``) of the
    request reported stuck, or ``None``."""
    reason = readiness.log_stuck()
    if reason is not None and stuck_since is None:
        work = readiness.gateway_log.store.oldest_in_flight() if readiness.gateway_log else None
        started = work.started if work is not None else time.monotonic()
        log_event("message_log_stuck", reason=reason, after_s=readiness.log_stuck_after_s)
        return started
    if reason is None and stuck_since is not None:
        log_event("message_log_resumed", stuck_s=round(time.monotonic() - stuck_since, 1))
        return None
    return stuck_since


def _report_expiring(readiness: Readiness, reported: dict[str, dt.datetime]) -> None:
    now = readiness.clock()
    for role, not_after in readiness.certificates.items():
        if not_after - now > _EXPIRY_WARNING:
            continue
        last = reported.get(role)
        if last is not None and now - last < _EXPIRY_REPEAT:
            continue
        reported[role] = now
        log_event(
            "certificate_expiring",
            role=role,
            not_after=not_after.isoformat(),
            seconds_left=round((not_after - now).total_seconds()),
        )
