"""``serai gateway serve --config F --workers N``: one gateway on several cores.

A **supervisor** process starts ``N`` worker processes of the same gateway (each is
``serai gateway serve`` with an internal ``--worker-spec``). Every worker serves the IS
port and the peer port on the *same* addresses: gRPC binds its listening sockets with
``SO_REUSEPORT`` (the ``grpc.so_reuseport`` option is on by default on Linux, and the
gateway never turns it off), so the kernel spreads new TCP **connections** over the
workers. It balances connections, not calls: an HTTP/2 connection, and every call on
it, stays with the worker that accepted it. A port of 0 in ``gateway.toml`` is chosen
once by the supervisor, which keeps a bound (never listening) ``SO_REUSEPORT`` socket
on each served port for its whole life, so a restarted worker always gets the same
port and no other program can take it meanwhile.

**One log, one tree.** Every worker opens the same message log (the SQLite file or the
PostgreSQL database of ``gateway.toml``) and appends through the store's own
cross-process lock (:mod:`gateway.messagelog.writer`: each batch transaction first
locks the ``meta`` row, PostgreSQL ``SELECT ... FOR UPDATE`` or SQLite ``BEGIN
IMMEDIATE``, and reloads its frontier when another process grew the tree), so leaf
indices are assigned by the database, contiguous, and each batch is durable before
its exchanges are acknowledged, whichever worker served them.

**One signer.** Worker 0 is the **leader**: it runs the
:class:`~gateway.messagelog.heads.TreeHeadScheduler` (signs tree heads of the whole
tree, read from the database, and has them time-stamped) and the admin API (on
``admin_listen``). The followers run a :class:`FollowingScheduler`: it signs nothing
and refuses new exchanges with ``timestamping_overdue`` when the oldest record no
persisted time-stamp covers is older than ``timestamping_overdue_s`` (measured from the
record's commit time, so a follower fails closed no later than the leader).

**Stopping.** SIGTERM or SIGINT to the supervisor stops the followers first, then the
leader (so its last tree head covers every record of every worker), then the
supervisor. Workers run in their own process group (a terminal's Ctrl-C reaches only
the supervisor, which orders the stop) and receive SIGTERM if the supervisor dies
(``PR_SET_PDEATHSIG``). A worker that exits while the gateway runs is restarted (after
1 s, doubling up to 30 s while it keeps dying within a minute of its start); a worker
that fails before it ever listened with status 2 (a refused configuration) stops the
whole gateway.

**Events.** The supervisor writes JSON lines on stderr like every Serai process:
``gateway_workers_starting``, ``gateway_worker_started`` / ``gateway_worker_exited``
(``worker``, ``pid``, ``status``, ``restart_in_s``), then ``gateway_listening`` once
every worker listens (with ``workers``) and ``gateway_stopping`` /
``gateway_stopped``. Each worker's own lines are passed on with ``worker`` and
``worker_pid`` added; a
worker's ``gateway_listening`` and ``gateway_stopped`` become
``gateway_worker_listening`` and ``gateway_worker_stopped``, so the supervisor's are the
only ones with those names.

**Operations port.** ``metrics_listen`` is served by the supervisor: ``/metrics`` is
every worker's registry with a ``worker`` label added to each sample (scraped from
the worker's own loopback operations port at each scrape; ``sum without (worker)``
gives the gateway's totals), plus ``serai_gateway_workers``,
``serai_gateway_worker_up{worker}`` and ``serai_gateway_worker_restarts_total``;
``/readyz`` is ready only when every worker runs and is ready; ``/healthz`` is the
supervisor's. Workers' own ports are loopback, chosen at start, and named in their
``gateway_worker_listening`` events.

Replay protection: each worker's guard (:mod:`gateway.replay`) knows what that worker
accepted, and the shared log is asked before and after each request's commit, so a
replay accepted by another worker is refused too (``SharedReplayCheck``, guarantee 7).

Known limits: followers learn of time-stamps by polling the log every ``tree_head_interval_s``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import dataclasses
import datetime as dt
import json
import signal
import socket
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import aiohttp
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from gateway.commit import LogUnavailableError
from gateway.messagelog import MessageLog
from gateway.messagelog.heads import TimestampingOverdueError, overdue_reason
from gateway.messagelog.store import StoredTreeHead
from serai.cliutil import format_address, log_event, parse_listen, termination_event
from serai.errors import ConfigError, SeraiError
from serai.httpops import OpsServer
from serai.treehead import SignedTreeHead

__all__ = ["FollowingScheduler", "WorkerSpec", "add_workers_option", "run_supervisor"]

#: Most workers one gateway may ask for.
MAX_WORKERS: Final = 64
_RESTART_FIRST_S: Final = 1.0
_RESTART_MAX_S: Final = 30.0
#: A worker that ran this long before dying is restarted after the first delay again.
_STABLE_S: Final = 60.0
#: How long a worker may take to stop after SIGTERM before it is killed.
_STOP_S: Final = 30.0
_SCRAPE_TIMEOUT_S: Final = 5.0
_READY_POLL_S: Final = 1.0
_SERAI: Final = (sys.executable, "-m", "serai.cli")
_PR_SET_PDEATHSIG: Final = 1
#: Worker events renamed when passed on (the supervisor's own carry these names).
_RENAMED: Final = {
    "gateway_listening": "gateway_worker_listening",
    "gateway_stopped": "gateway_worker_stopped",
    "gateway_stopping": "gateway_worker_stopping",
}


# -- the command line ----------------------------------------------------------------------


def add_workers_option(serve: argparse.ArgumentParser) -> None:
    """Add ``--workers N`` (and the internal ``--worker-spec``) to ``serai gateway
    serve``, whose handler runs one process when ``N`` is 1."""
    serve.add_argument(
        "--workers",
        type=_worker_count,
        default=1,
        metavar="N",
        help="worker processes serving the same ports (SO_REUSEPORT) and the same "
        "message log; 1 (the default) runs the gateway in this process",
    )
    serve.add_argument("--worker-spec", help=argparse.SUPPRESS)
    single: Callable[[argparse.Namespace], int] = serve.get_default("handler")

    def handler(args: argparse.Namespace) -> int:
        if args.worker_spec is not None:
            return _run_worker(args.config, WorkerSpec.from_json(args.worker_spec))
        if args.workers == 1:
            return single(args)
        return run_supervisor(args.config, args.workers)

    serve.set_defaults(handler=handler)


def _worker_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"expected a whole number 1 to {MAX_WORKERS}")
    return count


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WorkerSpec:
    """What the supervisor tells one worker: who it is and the resolved addresses."""

    index: int
    count: int
    is_listen: tuple[str, int]
    peer_listen: tuple[str, int]
    admin_listen: tuple[str, int]

    @property
    def leader(self) -> bool:
        return self.index == 0

    def to_json(self) -> str:
        return json.dumps(
            {
                "index": self.index,
                "count": self.count,
                "is": format_address(*self.is_listen),
                "peer": format_address(*self.peer_listen),
                "admin": format_address(*self.admin_listen),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> WorkerSpec:
        try:
            data = json.loads(text)
            return cls(
                index=int(data["index"]),
                count=int(data["count"]),
                is_listen=parse_listen(str(data["is"])),
                peer_listen=parse_listen(str(data["peer"])),
                admin_listen=parse_listen(str(data["admin"])),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"--worker-spec: not a worker specification: {exc}") from exc


def _run_worker(config_path: Path, spec: WorkerSpec) -> int:
    # gateway.serve imports this module (through gateway._logsetup): import it late.
    from gateway.config import load_config  # noqa: PLC0415
    from gateway.serve import run_gateway  # noqa: PLC0415

    config = dataclasses.replace(
        load_config(config_path),
        is_listen=spec.is_listen,
        peer_listen=spec.peer_listen,
        admin_listen=spec.admin_listen,
        # Each worker's own operations port: loopback, any port (the supervisor serves
        # metrics_listen and reads the worker's from its gateway_listening event).
        metrics_listen=("127.0.0.1", 0),
    )
    from gateway import _grpclog  # noqa: PLC0415

    _grpclog.install()  # count the TLS handshakes grpc refuses, per worker
    asyncio.run(run_gateway(config, leader=spec.leader, shares_log=spec.count > 1))
    return 0


# -- the follower's view of the tree heads --------------------------------------------------


class FollowingScheduler:
    """The tree-head scheduler of a follower worker: signs nothing, reads the leader's
    time-stamped heads from the shared log, and refuses new exchanges while a record
    has waited more than ``overdue_after_s`` for a time-stamp (module docstring).

    It offers what :class:`~gateway._logsetup.GatewayLog`, the readiness watch and the
    metrics read of a :class:`~gateway.messagelog.heads.TreeHeadScheduler`.
    """

    def __init__(
        self,
        *,
        log_id: str,
        store: MessageLog,
        interval_s: float,
        overdue_after_s: float,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._log_id = log_id
        self._store = store
        self._interval_s = max(0.2, float(interval_s))
        self._overdue_after_s = overdue_after_s
        self._clock = clock
        self._stamped_size = -1
        self._after_id = 0
        self._newest: SignedTreeHead | None = None
        self._last_timestamped_at: dt.datetime | None = None
        self._untimestamped_since: dt.datetime | None = None
        self._task: asyncio.Task[None] | None = None
        #: The leader signs and time-stamps: a follower never fails an attempt itself.
        self.consecutive_failures = 0
        self.failures_total = 0
        self.last_error: SeraiError | None = None

    async def start(self) -> None:
        """Read the log once, then every ``interval_s``."""
        with contextlib.suppress(LogUnavailableError):
            await self.refresh()
        self._task = asyncio.create_task(self._loop(), name=f"follow tree heads {self._log_id}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def notify_appended(self, size: int) -> None:
        """A commit of this worker: its record waits from now at the latest."""
        if size > max(self._stamped_size, 0) and self._untimestamped_since is None:
            self._untimestamped_since = self._clock()

    async def refresh(self) -> None:
        """Read the newest time-stamped head and the oldest record it does not cover."""
        if self._after_id == 0:
            await self._skip_to_newest()
        while True:
            heads = await self._store.tree_heads(
                timestamped=True, after_id=self._after_id, limit=1000
            )
            for head in heads:
                self._take(head)
            if len(heads) < 1000:
                break
        oldest = await self._store.records(start=max(self._stamped_size, 0), limit=1)
        self._untimestamped_since = oldest[0].appended_at if oldest else None

    async def _skip_to_newest(self) -> None:
        """Find the newest time-stamped head without reading every head of a long-lived
        log: a binary search on the tree size (heads grow with their ids)."""
        latest = await self._store.latest_tree_head()
        if latest is None:
            return

        async def first_from(size: int) -> StoredTreeHead | None:
            heads = await self._store.tree_heads(timestamped=True, min_size=size, limit=1)
            return heads[0] if heads else None

        found = await first_from(0)
        if found is None:
            return
        low, high = found.tree_size, latest.tree_size  # a stamped head reaches low
        while low < high:
            middle = (low + high + 1) // 2
            if await first_from(middle) is None:
                high = middle - 1
            else:
                low = middle
        newest = await first_from(low)
        if newest is not None:
            self._take(newest)

    def _take(self, head: StoredTreeHead) -> None:
        self._after_id = max(self._after_id, head.head_id)
        if head.tree_size > self._stamped_size:
            self._stamped_size = head.tree_size
            self._last_timestamped_at = head.timestamped_at
            with contextlib.suppress(SeraiError):  # the leader's; checked there
                self._newest = SignedTreeHead(
                    jws=head.signed_head, timestamp_token=head.timestamp_token
                )

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            with contextlib.suppress(LogUnavailableError):  # commits report it themselves
                await self.refresh()

    def overdue(self) -> bool:
        return self.overdue_reason() is not None

    def overdue_reason(self) -> str | None:
        return overdue_reason(
            log_id=self._log_id,
            since=self._untimestamped_since,
            now=self._clock(),
            overdue_after_s=self._overdue_after_s,
            detail="the leader worker signs and time-stamps the tree heads",
        )

    def check(self) -> None:
        reason = self.overdue_reason()
        if reason is not None:
            raise TimestampingOverdueError(reason)

    @property
    def untimestamped_since(self) -> dt.datetime | None:
        return self._untimestamped_since

    @property
    def last_timestamped_at(self) -> dt.datetime | None:
        return self._last_timestamped_at

    @property
    def newest_head(self) -> SignedTreeHead | None:
        return self._newest

    @property
    def timestamped_size(self) -> int:
        return self._stamped_size


# -- the supervisor ------------------------------------------------------------------------


def run_supervisor(config_path: Path, workers: int) -> int:
    """Run ``workers`` worker processes of the gateway of ``config_path`` until SIGINT
    or SIGTERM (module docstring); the exit status."""
    from gateway.config import load_config  # noqa: PLC0415

    config = load_config(config_path)
    return asyncio.run(_Supervisor(config_path, config, workers).run())


@dataclasses.dataclass
class _Worker:
    index: int
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    listening: bool = False
    ever_listened: bool = False
    ops_port: int | None = None
    admin: str | None = None
    restarts: int = 0
    quick_deaths: int = 0
    ready_reasons: tuple[str, ...] = ("not started",)
    pump: asyncio.Task[None] | None = None


class _Supervisor:
    def __init__(self, config_path: Path, config: Any, count: int) -> None:
        self._path = config_path
        self._config = config
        self._count = count
        self._workers = [_Worker(i) for i in range(count)]
        self._reserved: list[socket.socket] = []
        self._stopping = False
        self._failed = False
        self._changed = asyncio.Event()

    async def run(self) -> int:
        config = self._config
        gateway_id = str(config.gateway_id)
        try:
            is_listen = self._reserve(config.is_listen, "is_listen")
            peer_listen = self._reserve(config.peer_listen, "peer_listen")
        except ConfigError:
            self._release()
            raise
        spec = WorkerSpec(
            index=0,
            count=self._count,
            is_listen=is_listen,
            peer_listen=peer_listen,
            admin_listen=config.admin_listen,
        )
        registry = CollectorRegistry()
        registry.register(_WorkersCollector(self))
        ops = OpsServer(registry=registry, readiness=self.reasons, listen=config.metrics_listen)
        with termination_event() as stop:
            try:
                await ops.start()
            except ConfigError:
                self._release()
                raise
            log_event(
                "gateway_workers_starting",
                gateway_id=gateway_id,
                workers=self._count,
                **{"is": format_address(*is_listen), "peer": format_address(*peer_listen)},
                admin=format_address(*config.admin_listen),
                metrics=format_address(config.metrics_listen[0], ops.port),
            )
            keepers = [
                asyncio.create_task(self._keep(worker, dataclasses.replace(spec, index=i)))
                for i, worker in enumerate(self._workers)
            ]
            poller = asyncio.create_task(self._poll_readiness())
            announced = False
            while not stop.is_set() and not self._failed:
                if not announced and all(w.listening for w in self._workers):
                    announced = True
                    log_event(
                        "gateway_listening",
                        gateway_id=gateway_id,
                        workers=self._count,
                        **{"is": format_address(*is_listen), "peer": format_address(*peer_listen)},
                        admin=self._workers[0].admin,
                        metrics=format_address(config.metrics_listen[0], ops.port),
                        pids=[w.process.pid if w.process else None for w in self._workers],
                    )
                self._changed.clear()
                waiter = asyncio.create_task(self._changed.wait())
                stopper = asyncio.create_task(stop.wait())
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stopper.cancel()
            log_event("gateway_stopping", gateway_id=gateway_id, workers=self._count)
            self._stopping = True
            for task in keepers:
                task.cancel()
            poller.cancel()
            await asyncio.gather(*keepers, poller, return_exceptions=True)
            # Followers first, so the leader's last tree head covers all their records.
            await asyncio.gather(*(self._stop_worker(w) for w in self._workers[1:]))
            await self._stop_worker(self._workers[0])
            await ops.stop()
            self._release()
        log_event("gateway_stopped", gateway_id=gateway_id, started=announced)
        return 1 if self._failed else 0

    def _reserve(self, listen: tuple[str, int], what: str) -> tuple[str, int]:
        """Bind (never listen) an SO_REUSEPORT socket on ``listen``, keep it, and return
        the address with the port chosen when it asked for 0."""
        host, port = listen
        try:
            infos = socket.getaddrinfo(
                host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
            family, kind, proto, _, address = infos[0]
            sock = socket.socket(family, kind, proto)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
        except OSError as exc:
            raise ConfigError(f"{what}: cannot bind {format_address(host, port)}: {exc}") from exc
        self._reserved.append(sock)
        return host, int(sock.getsockname()[1])

    def _release(self) -> None:
        for sock in self._reserved:
            sock.close()
        self._reserved.clear()

    async def _keep(self, worker: _Worker, spec: WorkerSpec) -> None:
        """Run ``worker``, restarting it whenever it exits, until cancelled."""
        delay = _RESTART_FIRST_S
        while True:
            await self._start_worker(worker, spec)
            process = worker.process
            assert process is not None
            status = await process.wait()
            if worker.pump is not None:
                await asyncio.gather(worker.pump, return_exceptions=True)
            ran_s = time.monotonic() - worker.started_at
            worker.listening = False
            worker.ops_port = None
            worker.ready_reasons = ("not running",)
            if not worker.ever_listened and status == 2:
                log_event(
                    "gateway_worker_exited",
                    worker=worker.index,
                    pid=process.pid,
                    status=status,
                    restart_in_s=None,
                    reason="refused at start: the gateway stops",
                )
                self._failed = True
                self._changed.set()
                return
            delay = _RESTART_FIRST_S if ran_s >= _STABLE_S else delay
            log_event(
                "gateway_worker_exited",
                worker=worker.index,
                pid=process.pid,
                status=status,
                restart_in_s=delay,
            )
            self._changed.set()
            await asyncio.sleep(delay)
            delay = min(_RESTART_MAX_S, delay * 2) if ran_s < _STABLE_S else _RESTART_FIRST_S
            worker.restarts += 1

    async def _start_worker(self, worker: _Worker, spec: WorkerSpec) -> None:
        argv = [
            *_SERAI,
            "gateway",
            "serve",
            "--config",
            str(self._path),
            "--worker-spec",
            spec.to_json(),
        ]
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            process_group=0,
            preexec_fn=_die_with_parent,
            limit=1024 * 1024,
        )
        worker.process = process
        worker.started_at = time.monotonic()
        log_event(
            "gateway_worker_started",
            worker=worker.index,
            pid=process.pid,
            leader=spec.leader,
            restarts=worker.restarts,
        )
        worker.pump = asyncio.create_task(self._pump(worker, process))

    async def _pump(self, worker: _Worker, process: asyncio.subprocess.Process) -> None:
        """Pass the worker's lines on, learning its operations port and readiness."""
        assert process.stdout is not None
        while True:
            try:
                raw = await process.stdout.readline()
            except ValueError:  # a line beyond the limit: pass on what we have
                raw = await process.stdout.read(1024 * 1024)
            if not raw:
                return
            text = raw.decode("utf-8", "replace").rstrip("\n")
            try:
                event = json.loads(text)
            except ValueError:
                event = None
            if not isinstance(event, dict) or not isinstance(event.get("event"), str):
                log_event("gateway_worker_output", worker=worker.index, line=text)
                continue
            name = event["event"]
            if name == "gateway_listening":
                worker.ops_port = parse_listen(str(event["metrics"]))[1]
                worker.admin = event.get("admin")
                worker.listening = worker.ever_listened = True
                self._changed.set()
            event["event"] = _RENAMED.get(name, name)
            event["worker"] = worker.index
            event["worker_pid"] = process.pid
            print(json.dumps(event), file=sys.stderr, flush=True)

    async def _stop_worker(self, worker: _Worker) -> None:
        process = worker.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout=_STOP_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        if worker.pump is not None:
            await asyncio.gather(worker.pump, return_exceptions=True)

    async def _poll_readiness(self) -> None:
        timeout = aiohttp.ClientTimeout(total=_SCRAPE_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                for worker in self._workers:
                    port = worker.ops_port
                    if port is None:
                        continue
                    try:
                        async with session.get(f"http://127.0.0.1:{port}/readyz") as reply:
                            body = await reply.text()
                        reasons = () if reply.status == 200 else tuple(body.splitlines()[1:])
                        worker.ready_reasons = reasons or (
                            () if reply.status == 200 else ("not ready",)
                        )
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        worker.ready_reasons = (f"its operations port does not answer: {exc}",)
                await asyncio.sleep(_READY_POLL_S)

    def reasons(self) -> Sequence[str]:
        """Why the gateway is not ready: every worker's reasons, prefixed."""
        found: list[str] = []
        for worker in self._workers:
            if worker.listening:
                reasons = worker.ready_reasons
            elif worker.process is not None and worker.process.returncode is None:
                reasons = ("starting: not listening yet",)
            else:
                reasons = ("not running",)
            found.extend(f"worker {worker.index}: {r}" for r in reasons)
        return found

    def scrape_targets(self) -> list[tuple[int, int | None]]:
        return [(w.index, w.ops_port if w.listening else None) for w in self._workers]

    def restarts(self) -> list[int]:
        return [w.restarts for w in self._workers]


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the supervisor dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class _WorkersCollector(Collector):
    """Every worker's metrics with a ``worker`` label, and the supervisor's own."""

    def __init__(self, supervisor: _Supervisor) -> None:
        self._supervisor = supervisor

    def collect(self) -> Iterator[Metric]:
        # Runs in OpsServer's worker thread: blocking scrapes are fine here.
        merged: dict[str, Metric] = {}
        up = GaugeMetricFamily(
            "serai_gateway_worker_up",
            "1 when the worker's metrics could be read at this scrape, else 0.",
            labels=["worker"],
        )
        restarts = _counter_family(
            "serai_gateway_worker_restarts",
            "Times the supervisor restarted the worker.",
        )
        targets = self._supervisor.scrape_targets()
        for (index, port), count in zip(targets, self._supervisor.restarts(), strict=True):
            restarts.add_sample(
                "serai_gateway_worker_restarts_total", {"worker": str(index)}, float(count)
            )
            text = None if port is None else _scrape(port)
            up.add_metric([str(index)], 0.0 if text is None else 1.0)
            if text is None:
                continue
            for family in text_string_to_metric_families(text):
                into = merged.get(family.name)
                if into is None:
                    into = Metric(family.name, family.documentation, family.type, family.unit)
                    merged[family.name] = into
                into.samples.extend(
                    Sample(s.name, {**s.labels, "worker": str(index)}, s.value, s.timestamp)
                    for s in family.samples
                )
        workers = GaugeMetricFamily(
            "serai_gateway_workers", "Worker processes the supervisor runs.", value=len(targets)
        )
        yield workers
        yield up
        yield restarts
        yield from merged.values()


def _counter_family(name: str, documentation: str) -> Metric:
    return Metric(name, documentation, "counter")


def _scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/metrics", timeout=_SCRAPE_TIMEOUT_S
        ) as reply:
            return bytes(reply.read()).decode("utf-8")
    except (OSError, ValueError):
        return None
