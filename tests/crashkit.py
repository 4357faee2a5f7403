"""What ``tests/test_reliability_crash.py`` needs around a federation whose gateways are
killed under load: a load that remembers every call, a snapshot of a crashed gateway's
log, and the checks run on the two logs afterwards.

:class:`Load` drives ``in_flight`` concurrent callers against a consumer gateway's IS
port with ``grpc.aio``. Every call carries a unique body and its own ``x-road-id``
(which the gateway uses as the message id), so each exchange can be found in both logs.
Every call is recorded (:class:`Call`): when it started and ended (``time.monotonic``),
and its outcome: ``ok`` (the body echoed and the message id returned), the code of the
``x-road-error`` trailer the gateway refused it with, or ``grpc:<STATUS>`` when nobody
named a code (the IS port could not be reached). The target address can change while
the load runs (a restarted consumer gateway listens on a new IS port).

The checks read the logs through :class:`gateway.messagelog.MessageLog` (which checks
the stored frontier when it opens a log) and judge them independently of the code
under test where they can: leaf hashes and roots are recomputed with
:mod:`serai.merkle`, tree heads are verified with :mod:`serai.treehead` against the
development CA, and consistency proofs with :func:`serai.merkle.verify_consistency`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import itertools
import shutil
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final

import grpc
from cryptography import x509

from gateway.commit import LogRecord, RecordKind, decode_canonical
from gateway.messagelog import MessageLog
from gateway.messagelog.store import StoredRecord, StoredTreeHead
from serai._benchfed import BENCH_METHOD, CONSUMER, PROVIDER
from serai._benchload import CpuSample, cpu_sample, open_channel
from serai._demoprocs import SERAI
from serai.errors import ERROR_METADATA_KEY
from serai.merkle import leaf_hash, root_hash, verify_consistency
from serai.treehead import TreeHead, verify_signed_tree_head, verify_tree_head_timestamp

__all__ = [
    "OK",
    "Call",
    "Load",
    "LogContents",
    "Window",
    "check_exchanges",
    "check_growth",
    "check_intact",
    "check_only_calls",
    "check_prefix",
    "check_recorded",
    "consistency_proofs",
    "growth_pairs",
    "measure",
    "read_log",
    "serai_log_verify",
    "snapshot_log",
]

OK: Final = "ok"
_PAGE: Final = 10_000
#: How long a window may wait for its answered calls before the test gives up.
_MAX_WINDOW_S: Final = 300.0


@dataclasses.dataclass(frozen=True, slots=True)
class Call:
    """One finished call of the load (times from ``time.monotonic``)."""

    message_id: str
    body: bytes
    started: float
    ended: float
    outcome: str  # OK, an x-road-error code, or "grpc:<STATUS>" when none was given
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome == OK


class Load:
    """``in_flight`` callers calling the consumer gateway back to back (module
    docstring); ``run()`` until ``stop()``, then ``await close()``."""

    def __init__(
        self,
        address: str,
        *,
        in_flight: int,
        deadline_s: float,
        body_bytes: int = 256,
        pause_after_failure_s: float = 0.1,
    ) -> None:
        self.in_flight = in_flight
        self.deadline_s = deadline_s
        self.calls: list[Call] = []
        self._body_bytes = body_bytes
        self._pause_s = pause_after_failure_s
        self._counter = itertools.count()
        self._channels: list[grpc.aio.Channel] = []
        self._method: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] | None = None
        self._stopping = asyncio.Event()
        self._changed = asyncio.Event()
        self.retarget(address)

    def retarget(self, address: str) -> None:
        """Send the calls started from now on to ``address``."""
        channel = open_channel(address)
        self._channels.append(channel)
        self._method = channel.unary_unary(BENCH_METHOD, None, None)

    def stop(self) -> None:
        """No call starts after this; ``run()`` returns once the calls in flight ended."""
        self._stopping.set()

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close(None)

    async def run(self) -> None:
        await asyncio.gather(*(self._caller() for _ in range(self.in_flight)))

    async def _caller(self) -> None:
        while not self._stopping.is_set():
            if not await self._one_call():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self._pause_s)

    async def _one_call(self) -> bool:
        seq = next(self._counter)
        message_id = f"crash-{seq}-{uuid.uuid4()}"
        body = f"{seq}:{message_id}:".encode().ljust(self._body_bytes, b".")
        metadata = (("x-road-client", CONSUMER), ("x-road-service", PROVIDER))
        method = self._method
        assert method is not None
        started = time.monotonic()
        outcome, detail = OK, ""
        try:
            call = method(
                body, metadata=(*metadata, ("x-road-id", message_id)), timeout=self.deadline_s
            )
            answer = await call
            trailers = _text(await call.trailing_metadata())
            if answer != body or trailers.get("x-road-id") != message_id:
                outcome, detail = "wrong_answer", f"{answer[:40]!r} {trailers}"
        except grpc.aio.AioRpcError as exc:
            code = _text(exc.trailing_metadata()).get(ERROR_METADATA_KEY)
            # origin:code:message; the code is stable, the message is not.
            outcome = code.split(":", 2)[1] if code else f"grpc:{exc.code().name}"
            detail = exc.details() or ""
        self.calls.append(Call(message_id, body, started, time.monotonic(), outcome, detail))
        self._changed.set()
        return outcome == OK

    # -- what the calls say ---------------------------------------------------------------

    def acknowledged(self) -> list[Call]:
        """The calls whose response reached the consumer."""
        return [c for c in self.calls if c.ok]

    def ok_between(self, start: float, end: float) -> int:
        """Answered calls that ended in ``[start, end)``."""
        return sum(1 for c in self.calls if c.ok and start <= c.ended < end)

    def in_flight_at(self, moment: float) -> list[Call]:
        """The (finished) calls that had started and not yet ended at ``moment``."""
        return [c for c in self.calls if c.started <= moment < c.ended]

    async def wait_answered(self, since: float, count: int, *, timeout_s: float) -> None:
        """Wait until ``count`` calls that ended at or after ``since`` were answered."""
        give_up = time.monotonic() + timeout_s
        seen = answered = 0
        while True:
            answered += sum(1 for c in self.calls[seen:] if c.ok and c.ended >= since)
            seen = len(self.calls)
            if answered >= count:
                return
            if time.monotonic() > give_up:
                outcomes = Counter(c.outcome for c in self.calls if c.ended >= since)
                raise AssertionError(f"{answered} of {count} calls answered: {outcomes}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), 1.0)

    async def wait_ok_after(self, moment: float, *, timeout_s: float) -> Call:
        """The first answered call that started after ``moment``, waiting for it."""
        give_up = time.monotonic() + timeout_s
        seen = 0
        while True:
            for call in self.calls[seen:]:
                if call.ok and call.started > moment:
                    return call
            seen = len(self.calls)
            left = give_up - time.monotonic()
            if left <= 0:
                outcomes = Counter(c.outcome for c in self.calls if c.started > moment)
                raise AssertionError(f"no call answered within {timeout_s} s: {outcomes}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 1.0))


@dataclasses.dataclass(frozen=True, slots=True)
class Window:
    """A stretch of the load: answered calls, and where the machine's CPU time went."""

    start: float
    end: float
    answered: int  # calls answered that ended in the window
    ours_cpu_s: float  # CPU time of the federation's processes and of this one
    others_cpu_s: float  # the machine's busy time that none of those account for
    machine_cpu_s: float  # what the machine's cores could have given (idle included)

    @property
    def rate(self) -> float:
        return self.answered / (self.end - self.start)

    def describe(self) -> str:
        return (
            f"{self.rate:.0f} calls/s over {self.end - self.start:.1f} s; CPU: ours "
            f"{self.ours_cpu_s:.1f} s, other programs {self.others_cpu_s:.1f} s, of "
            f"{self.machine_cpu_s:.1f} s ({self.answered / max(self.ours_cpu_s, 0.01):.0f} calls "
            "per CPU second of ours)"
        )


async def measure(
    load: Load, pids: dict[str, int], seconds: float, *, min_answered: int = 0
) -> Window:
    """Let the load run for ``seconds``, and on until at least ``min_answered`` calls
    were answered in the window (a machine busy with other programs answers fewer), and
    measure the window (``pids``: name -> pid of the processes started for the
    federation; the client is this process)."""
    before, start = cpu_sample(pids), time.monotonic()
    await asyncio.sleep(seconds)
    await load.wait_answered(start, min_answered, timeout_s=_MAX_WINDOW_S)
    after, end = cpu_sample(pids), time.monotonic()
    ours = _spent(before, after)
    busy = after.machine_busy_s - before.machine_busy_s
    return Window(
        start=start,
        end=end,
        answered=load.ok_between(start, end),
        ours_cpu_s=ours,
        others_cpu_s=max(busy - ours, 0.0),
        machine_cpu_s=after.machine_total_s - before.machine_total_s,
    )


def _spent(before: CpuSample, after: CpuSample) -> float:
    total = 0.0
    for name, then in before.processes.items():
        now = after.processes.get(name)
        if then is not None and now is not None:
            total += now - then
    return total


def _text(metadata: Iterable[Any] | None) -> dict[str, str]:
    return {k: v for k, v in metadata or () if isinstance(v, str)}


# -- logs ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class LogContents:
    """Everything stored in one log, read once."""

    log_id: str
    size: int
    records: list[StoredRecord]
    decoded: list[LogRecord]
    heads: list[StoredTreeHead]

    def find(self, kind: RecordKind, message_id: str) -> list[int]:
        """The indices of the records of ``kind`` for ``message_id``."""
        return [r.index for r in self.records if r.kind is kind and r.message_id == message_id]

    def by_key(self) -> dict[tuple[RecordKind, str], list[int]]:
        found: dict[tuple[RecordKind, str], list[int]] = {}
        for record in self.records:
            found.setdefault((record.kind, record.message_id), []).append(record.index)
        return found


def snapshot_log(database: Path, into: Path) -> Path:
    """Copy a SQLite log whose writer is dead (the database and its WAL, the state a
    restart would find) into the new directory ``into``; the copy's path."""
    into.mkdir(parents=True)
    for suffix in ("", "-wal"):
        source = database.with_name(database.name + suffix)
        if source.exists():
            shutil.copyfile(source, into / source.name)
    return into / database.name


def serai_log_verify(config: Path, *, timeout_s: float) -> subprocess.CompletedProcess[str]:
    """``serai log verify --config CONFIG``, run to completion (killed past ``timeout_s``:
    it checks every record's signature, certificate path and OCSP response, which takes
    minutes for a few thousand records on a busy machine)."""
    return subprocess.run(
        [*SERAI, "log", "verify", "--config", str(config)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


async def read_log(location: Path, log_id: str) -> LogContents:
    """Open the log at ``location`` (its open checks the stored frontier) and read every
    record and tree head."""
    log = await MessageLog.open(location, log_id=log_id)
    try:
        size, _ = await log.tree_state()
        records: list[StoredRecord] = []
        while len(records) < size:
            page = await log.records(start=len(records), limit=_PAGE)
            assert page, f"{location}: records end at {len(records)}, the tree has {size}"
            records.extend(page)
        heads: list[StoredTreeHead] = []
        while True:
            after = heads[-1].head_id if heads else 0
            more = await log.tree_heads(after_id=after, limit=_PAGE)
            if not more:
                break
            heads.extend(more)
    finally:
        await log.close()
    decoded = [decode_canonical(r.leaf) for r in records if r.leaf is not None]
    return LogContents(log_id, size, records, decoded, heads)


def check_intact(log: LogContents) -> None:
    """No torn record, no duplicate: indices run 0..size-1; every record's bytes are
    there, hash to its stored leaf hash and decode to a record whose kind and message id
    are the stored columns; no (kind, message id) is stored twice; every stored tree
    head's root is the root of the stored leaves up to its size."""
    assert [r.index for r in log.records] == list(range(log.size)), log.log_id
    assert len(log.decoded) == log.size, f"{log.log_id}: a record has no bytes"
    for stored, record in zip(log.records, log.decoded, strict=True):
        assert stored.leaf is not None
        assert leaf_hash(stored.leaf) == stored.leaf_hash, f"{log.log_id} {stored.index}"
        assert (record.kind, record.message_id) == (stored.kind, stored.message_id)
    twice = {key: at for key, at in log.by_key().items() if len(at) > 1}
    assert not twice, f"{log.log_id}: records stored twice: {list(twice.items())[:5]}"
    hashes = [r.leaf_hash for r in log.records]
    for head in log.heads:
        assert head.root == root_hash(hashes[: head.tree_size]), (log.log_id, head.head_id)


def check_prefix(crashed: LogContents, final: LogContents) -> None:
    """What the crashed process left is exactly the beginning of the final log: every
    record (bytes and hash) and every tree head, unchanged."""
    assert crashed.size <= final.size
    for before, after in zip(crashed.records, final.records, strict=False):
        assert (before.leaf, before.leaf_hash) == (after.leaf, after.leaf_hash), before.index
    assert [(h.head_id, h.signed_head) for h in crashed.heads] == [
        (h.head_id, h.signed_head) for h in final.heads[: len(crashed.heads)]
    ]


def check_recorded(log: LogContents, calls: Sequence[Call], kinds: Sequence[RecordKind]) -> None:
    """Each call's exchange has one record of each of ``kinds`` in ``log``, with the
    call's body."""
    keys = log.by_key()
    missing = [
        (call.message_id, kind.name)
        for call in calls
        for kind in kinds
        if len(at := keys.get((kind, call.message_id), [])) != 1
        or log.decoded[at[0]].body != call.body
    ]
    assert not missing, f"{log.log_id}: {len(missing)} records missing: {missing[:5]}"


def check_only_calls(log: LogContents, calls: Sequence[Call]) -> None:
    """Every exchange record in ``log`` is of a call the load made, with that call's
    body (no record from nowhere, none with another call's body); the rest are
    ``ADMIN_CHANGE`` records."""
    bodies = {call.message_id: call.body for call in calls}
    strangers = [
        (stored.index, stored.kind.name, stored.message_id)
        for stored, record in zip(log.records, log.decoded, strict=True)
        if record.kind is not RecordKind.ADMIN_CHANGE
        and bodies.get(record.message_id) != record.body
    ]
    assert not strangers, f"{log.log_id}: records of no call: {strangers[:5]}"


def check_exchanges(
    consumer: LogContents, provider: LogContents, acknowledged: Sequence[Call]
) -> None:
    """Every acknowledged exchange is in both logs: the consumer's request and response
    records and the provider's, each once, with the call's body, outcome ``ok``, the same
    signed request header on both sides, and the consumer's receipt naming the
    provider's two records of the exchange."""
    c_keys, p_keys = consumer.by_key(), provider.by_key()
    missing = []
    for call in acknowledged:
        found = {
            kind: keys.get((kind, call.message_id), [])
            for keys, kinds in (
                (c_keys, (RecordKind.REQUEST_SENT, RecordKind.RESPONSE_RECEIVED)),
                (p_keys, (RecordKind.REQUEST_RECEIVED, RecordKind.RESPONSE_SENT)),
            )
            for kind in kinds
        }
        if any(len(at) != 1 for at in found.values()):
            missing.append((call.message_id, {k.name: v for k, v in found.items()}))
            continue
        sent = consumer.decoded[found[RecordKind.REQUEST_SENT][0]]
        received = consumer.decoded[found[RecordKind.RESPONSE_RECEIVED][0]]
        accepted = provider.decoded[found[RecordKind.REQUEST_RECEIVED][0]]
        answered = provider.decoded[found[RecordKind.RESPONSE_SENT][0]]
        for record in (sent, received, accepted, answered):
            assert record.body == call.body, (call.message_id, record.kind)
            assert record.outcome == OK, (call.message_id, record.kind, record.outcome)
        assert sent.header_jws == accepted.header_jws, call.message_id
        assert received.header_jws == answered.header_jws, call.message_id
        assert received.peer_receipt is not None, call.message_id
        assert (received.peer_receipt.request_index, received.peer_receipt.response_index) == (
            found[RecordKind.REQUEST_RECEIVED][0],
            found[RecordKind.RESPONSE_SENT][0],
        ), call.message_id
    assert not missing, f"{len(missing)} acknowledged exchanges not in both logs: {missing[:5]}"


def growth_pairs(
    crashed: LogContents, final: LogContents
) -> list[tuple[StoredTreeHead, StoredTreeHead]]:
    """The heads to prove consistent across a crash: the last head the crashed process
    stored and the first one the restarted process signed; then the last and the first
    time-stamped ones."""
    assert crashed.heads, f"{crashed.log_id}: no tree head before the crash"
    boundary = crashed.heads[-1].head_id
    pairs = []
    for stamped in (False, True):
        before = [h for h in crashed.heads if h.timestamp_token is not None or not stamped]
        after = [
            h
            for h in final.heads
            if h.head_id > boundary and (h.timestamp_token is not None or not stamped)
        ]
        what = "time-stamped head" if stamped else "head"
        assert before, f"{crashed.log_id}: no {what} before the crash"
        assert after, f"{final.log_id}: no {what} after the restart"
        pairs.append((before[-1], after[0]))
    return pairs


async def consistency_proofs(
    location: Path, log_id: str, pairs: Iterable[tuple[StoredTreeHead, StoredTreeHead]]
) -> list[list[bytes]]:
    """The log's own consistency proof between the sizes of each pair of heads."""
    log = await MessageLog.open(location, log_id=log_id)
    try:
        return [await log.consistency_proof(old.tree_size, new.tree_size) for old, new in pairs]
    finally:
        await log.close()


def check_growth(
    log_id: str,
    pairs: Sequence[tuple[StoredTreeHead, StoredTreeHead]],
    proofs: Sequence[list[bytes]],
    *,
    roots: Sequence[x509.Certificate],
    untrusted: Sequence[x509.Certificate],
) -> list[tuple[TreeHead, TreeHead]]:
    """The tree grew consistently across the crash: both heads of each pair (see
    :func:`growth_pairs`) verify (signed by the gateway's log-signing certificate,
    chaining to ``roots``; a time-stamp token, where there is one, verifies too), the
    new one is larger, and the log's consistency proof between them verifies against
    their signed roots. Returns the verified heads."""
    checked = []
    for (old_stored, new_stored), proof in zip(pairs, proofs, strict=True):
        old, new = (_verified(h, log_id, roots, untrusted) for h in (old_stored, new_stored))
        assert old.tree_size < new.tree_size, (old, new)
        verify_consistency(old.tree_size, new.tree_size, old.root_hash, new.root_hash, proof)
        checked.append((old, new))
    return checked


def _verified(
    head: StoredTreeHead,
    log_id: str,
    roots: Sequence[x509.Certificate],
    untrusted: Sequence[x509.Certificate],
) -> TreeHead:
    signed = verify_signed_tree_head(
        head.signed_head,
        trusted_roots=roots,
        at=dt.datetime.now(dt.UTC),
        expected_log_id=log_id,
    )
    assert (signed.tree_size, signed.root_hash) == (head.tree_size, head.root)
    if head.timestamp_token is not None:
        verify_tree_head_timestamp(
            head.signed_head, head.timestamp_token, tsa_trusted_roots=roots, untrusted=untrusted
        )
    return signed
