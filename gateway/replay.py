"""Replay protection on the provider gateway: unique message ids, bounded clock skew.

A :class:`ReplayGuard` accepts a request's ``(client, message id, created time)`` once
and refuses it afterwards (DESIGN §4, step 3). It is asked after the signature has been
verified, so the created time and message id are the client's signed values.

Guarantees (``now`` is the guard's clock when it is asked):

1. **Skew.** A created time outside ``[now - max_skew_s, now + max_skew_s]`` is refused
   with :class:`ClockSkewError` (code ``clock_skew``, origin ``client``); nothing is
   remembered for it.
2. **Uniqueness.** A ``(client, message id)`` accepted at ``t`` is refused with
   :class:`ReplayDetectedError` (code ``replay_detected``, origin ``client``) at every
   ``now <= t + window_s + max_skew_s`` (the end instant included). Ids are per
   client: two clients may use the same id.
3. **No replay ever passes (the invariant).** An accepted entry is remembered until
   ``t + window_s + max_skew_s`` inclusive; its created time ``c`` passed the skew
   check, so ``c <= t + max_skew_s``, and a replay of the same signed header passes the
   skew check only while ``now <= c + max_skew_s <= t + 2 * max_skew_s``. Because
   ``window_s >= max_skew_s`` is required, that instant is never after the entry
   expires: every replay of an accepted header is refused, with ``replay_detected``
   while remembered and ``clock_skew`` afterwards.
4. **Bounded memory, fail closed.** At most ``max_entries`` ids are remembered. When the
   guard is full (after dropping expired ids) it refuses the new message with
   :class:`ReplayCapacityError` (origin ``gateway``) rather than forget an id early,
   which would reopen the replay window. A message id longer than
   :data:`MAX_MESSAGE_ID_CHARS` is refused (``invalid_request``), so each entry is small.
5. **Cost.** Expired ids are dropped lazily from the front of a queue ordered by
   expiry time, so each call is O(1) amortised.

6. **Across restarts.** A guard starts empty; :func:`seed_from_log` fills it, before the
   gateway serves, with the ``REQUEST_RECEIVED`` records its message log committed
   within the last ``window_s + max_skew_s`` (by commit time, which is at or after the
   acceptance), so a request accepted just before a crash or restart is still refused
   after it. Several processes sharing one log (``--workers``) seed from it alike, but
   each remembers only what it accepted since.

7. **Across processes sharing a log.** A guard knows only what its own process
   accepted (and seeded). Where several processes append to one log (``serai gateway
   serve --workers N``, or gateway nodes sharing a PostgreSQL log), a
   :class:`SharedReplayCheck` makes the log itself the shared window: before the
   request is committed, a ``REQUEST_RECEIVED`` of the same client and message id
   committed within ``window_s + max_skew_s`` refuses it (``replay_detected``, nothing
   written); after its commit, one at a smaller index refuses it too. Of two copies
   racing through different processes, both commits finish before either second look,
   and the later copy's look sees the earlier: exactly one is served. The copy refused
   after its commit leaves its ``REQUEST_RECEIVED`` record, answered by none (the
   auditor sees the replay attempt). A log that cannot be read refuses
   (``log_unavailable``), never lets the request pass unchecked.

Assumptions: one event loop calls the guard (it is not thread-safe, and needs no lock
because it never awaits). The clock returns aware datetimes; if it steps backwards,
entries are only kept longer (and queue order may be lost, which keeps entries behind
a later-expiring one longer, never shorter); if it steps forwards, skew checks and
expiry move together, so guarantee 3 holds against the clock's own readings.
Several gateway nodes of one provider do not share a guard: each needs its own, and a
:class:`SharedReplayCheck` on a log they share (guarantee 7).
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Callable
from typing import Final

from gateway.commit import RecordKind
from gateway.errors import GatewayError
from gateway.messagelog.log import MAX_PAGE, MessageLog
from serai.errors import ConfigError, ErrorCode, InvalidIdentifierError, Origin
from serai.identifiers import SubsystemId

__all__ = [
    "DEFAULT_MAX_ENTRIES",
    "DEFAULT_MAX_SKEW_S",
    "DEFAULT_WINDOW_S",
    "MAX_MESSAGE_ID_CHARS",
    "ClockSkewError",
    "ReplayCapacityError",
    "ReplayDetectedError",
    "ReplayGuard",
    "SharedReplayCheck",
    "seed_from_log",
]

#: How long a message id stays unique per client, in seconds (DESIGN: 10 minutes).
DEFAULT_WINDOW_S: Final = 600.0
#: How far a created time may be from the gateway's clock, in seconds (±60 s).
DEFAULT_MAX_SKEW_S: Final = 60.0
#: Most ids remembered at once: about 200 bytes each, so some 200 MB when full;
#: enough for about 1,400 requests per second sustained over window + skew.
DEFAULT_MAX_ENTRIES: Final = 1_000_000
#: Longest message id accepted, in characters.
MAX_MESSAGE_ID_CHARS: Final = 255

Clock = Callable[[], dt.datetime]
_Key = tuple[SubsystemId, str]


class ClockSkewError(GatewayError):
    """A created time is too far from the gateway's clock (code ``clock_skew``)."""

    default_code = ErrorCode.CLOCK_SKEW
    default_origin = Origin.CLIENT


class ReplayDetectedError(GatewayError):
    """A client's message id was seen within the window (code ``replay_detected``)."""

    default_code = ErrorCode.REPLAY_DETECTED
    default_origin = Origin.CLIENT


class ReplayCapacityError(GatewayError):
    """The guard remembers ``max_entries`` ids and refuses more until some expire
    (``gateway_overloaded``, sent as RESOURCE_EXHAUSTED: the caller may retry later)."""

    default_code = ErrorCode.GATEWAY_OVERLOADED
    default_origin = Origin.GATEWAY


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class ReplayGuard:
    """Remembers each client's message ids for the replay window (module docstring)."""

    def __init__(
        self,
        *,
        window_s: float = DEFAULT_WINDOW_S,
        max_skew_s: float = DEFAULT_MAX_SKEW_S,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Clock | None = None,
    ) -> None:
        if not 0 < max_skew_s <= window_s:
            raise ConfigError(
                f"replay guard: need 0 < max_skew_s <= window_s (got max_skew_s={max_skew_s}, "
                f"window_s={window_s}); a window shorter than the skew would let a replay "
                "pass once its id is forgotten"
            )
        if max_entries < 1:
            raise ConfigError(f"replay guard: max_entries must be at least 1, not {max_entries}")
        self._window = dt.timedelta(seconds=window_s)
        self._skew = dt.timedelta(seconds=max_skew_s)
        self._keep = self._window + self._skew
        self._max_entries = max_entries
        self._clock: Clock = clock or _utc_now
        self._expiry: dict[_Key, dt.datetime] = {}
        self._queue: deque[tuple[dt.datetime, _Key]] = deque()

    def check_and_remember(
        self, client: SubsystemId, message_id: str, created_at: dt.datetime
    ) -> None:
        """Accept and remember ``message_id`` of ``client``, or raise (module docstring)."""
        given: object = message_id  # checked at run time: it comes off the wire
        if not isinstance(given, str) or not 0 < len(given) <= MAX_MESSAGE_ID_CHARS:
            raise GatewayError(
                f"message id of client {client} must be 1 to {MAX_MESSAGE_ID_CHARS} characters",
                code=ErrorCode.INVALID_REQUEST,
                origin=Origin.CLIENT,
            )
        if created_at.tzinfo is None or created_at.utcoffset() is None:
            raise GatewayError(
                f"created time of message {message_id!r} of client {client} has no time zone",
                code=ErrorCode.INVALID_REQUEST,
                origin=Origin.CLIENT,
            )
        now = self._now()
        if abs(created_at - now) > self._skew:
            raise ClockSkewError(
                f"message {message_id!r} of client {client} was created at "
                f"{created_at.astimezone(dt.UTC).isoformat()}, more than "
                f"{self._skew.total_seconds():g} s from this gateway's clock "
                f"({now.astimezone(dt.UTC).isoformat()})"
            )
        self._expire(now)
        key = (client, message_id)
        expiry = self._expiry.get(key)
        if expiry is not None and expiry >= now:
            raise ReplayDetectedError(
                f"message id {message_id!r} of client {client} was already used"
            )
        if expiry is None and len(self._expiry) >= self._max_entries:
            raise ReplayCapacityError(
                f"the replay guard holds {self._max_entries} message ids, its maximum; "
                f"refusing message {message_id!r} of client {client} until some expire"
            )
        expires = now + self._keep
        self._expiry[key] = expires
        self._queue.append((expires, key))

    def remember(self, client: SubsystemId, message_id: str, accepted_at: dt.datetime) -> None:
        """Remember an id accepted at ``accepted_at`` (by an earlier run of this gateway,
        read back from its message log): it is refused until ``accepted_at + window_s +
        max_skew_s``, as if this guard had accepted it then. Nothing is remembered for an
        id already expired; up to ``max_entries`` are kept, the newest last."""
        now = self._now()
        expires = accepted_at + self._keep
        if expires < now or len(self._expiry) >= self._max_entries:
            return
        key = (client, message_id)
        if self._expiry.get(key, expires) > expires:
            return
        self._expiry[key] = expires
        self._queue.append((expires, key))

    def __len__(self) -> int:
        """How many ids are remembered (expired ones may linger until the next call)."""
        return len(self._expiry)

    def _expire(self, now: dt.datetime) -> None:
        queue, expiry = self._queue, self._expiry
        while queue and queue[0][0] < now:
            expires, key = queue.popleft()
            # The key may have been accepted again after it expired (with the clock
            # stepped back, its old queue entry can sit behind the front): drop only
            # the mapping this queue entry made.
            if expiry.get(key) == expires:
                del expiry[key]

    def _now(self) -> dt.datetime:
        now = self._clock()
        if now.tzinfo is None or now.utcoffset() is None:
            raise GatewayError(
                "the replay guard's clock returned a time without a time zone",
                code=ErrorCode.INTERNAL,
                origin=Origin.GATEWAY,
            )
        return now


async def seed_from_log(guard: ReplayGuard, log: MessageLog, *, keep_s: float) -> int:
    """Fill ``guard`` with the requests ``log`` received in the last ``keep_s`` seconds
    (guarantee 6); returns how many ids it read."""
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=keep_s)
    start, seen = 0, 0
    while True:
        page = await log.records(
            kinds=(RecordKind.REQUEST_RECEIVED,), since=since, start=start, limit=MAX_PAGE
        )
        for stored in page:
            if stored.client is None:
                continue
            try:
                client = SubsystemId.parse(stored.client)
            except InvalidIdentifierError:
                continue  # a stored record was checked when committed; never expected
            guard.remember(client, stored.message_id, stored.appended_at)
            seen += 1
        if len(page) < MAX_PAGE:
            return seen
        start = int(page[-1].index) + 1


class SharedReplayCheck:
    """The log shared by several processes as their common replay window (guarantee 7).

    Asked after :meth:`ReplayGuard.check_and_remember` accepted the id in this process:
    :meth:`before_commit` with nothing written yet, :meth:`after_commit` with the index
    of the ``REQUEST_RECEIVED`` record just committed. Each is one indexed read of the
    log (by message id)."""

    def __init__(self, log: MessageLog, *, keep_s: float, clock: Clock | None = None) -> None:
        if keep_s <= 0:
            raise ConfigError(f"a replay window must be positive, not {keep_s!r} s")
        self._log = log
        self._keep = dt.timedelta(seconds=keep_s)
        self._clock: Clock = clock or (lambda: dt.datetime.now(dt.UTC))

    async def before_commit(self, client: SubsystemId, message_id: str) -> None:
        """Refuse a request another process already committed within the window."""
        await self._refuse_earlier(client, message_id, end=None)

    async def after_commit(self, client: SubsystemId, message_id: str, index: int) -> None:
        """Refuse a request committed at ``index`` when an earlier copy precedes it."""
        await self._refuse_earlier(client, message_id, end=index)

    async def _refuse_earlier(
        self, client: SubsystemId, message_id: str, *, end: int | None
    ) -> None:
        earlier = await self._log.records(
            message_id=message_id,
            client=client,
            kinds=(RecordKind.REQUEST_RECEIVED,),
            since=self._clock() - self._keep,
            end=end,
            limit=1,
        )
        if earlier:
            raise ReplayDetectedError(
                f"message id {message_id!r} of client {client} was already received "
                f"(message log record {int(earlier[0].index)})"
            )
