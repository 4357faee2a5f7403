"""Outages of the time-stamping authority and of the PostgreSQL message log store, with
every part a real process on loopback (DESIGN §6 and §9, Reliability).

The federation is the one of ``serai bench`` (:mod:`serai._benchfed`), set up with the
same ``serai`` commands (PKI with OCSP responder and TSA, registry, the echo provider
IS, a consumer gateway UZ/GOV/MINJUST/gw:main and a provider gateway
UZ/GOV/CADASTRE/gw:main over mutual TLS), except that each ``gateway.toml`` is edited
before the gateway starts (the ``prepare`` hook of :func:`serai._benchfed.bring_up`):
short time-stamping bounds for the TSA cases, and the message logs of both gateways in a
private PostgreSQL cluster (``tests/pgcluster.py``) for the store cases, so the
machine's shared server is never restarted. A plain gRPC client plays the consumer IS;
every call carries its own message id and deadline.

Every case checks: the consumer gets either the answer or the one documented code
(``timestamping_overdue``, ``log_unavailable``) in ``x-road-error`` (with the server
frozen rather than restarted, the calls already waiting on the store end at their
deadline, and new ones are refused with ``log_unavailable`` once the store has been
stuck for ``message_log_stuck_after_s``), every call returns by its deadline (plus a margin for a
busy machine: a bound against hangs, not a speed claim), and the gateways recover by
themselves: no gateway is restarted (same pids, still running), and ``serai log
verify`` passes on both logs afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import re
import shutil
import sqlite3
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

import grpc
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from serai import _benchfed
from serai._benchfed import BENCH_METHOD, CONSUMER, PROVIDER, Setup
from serai._demoprocs import SERAI, Service, run_serai, stop_all
from tests.pgcluster import PrivateCluster, private_cluster

pytestmark = pytest.mark.timeout(900)

CONSUMER_GW: Final = "UZ/GOV/MINJUST/gw:main"
PROVIDER_GW: Final = "UZ/GOV/CADASTRE/gw:main"
REACHED: Final = "/echo.v1.Echo/Reached"
#: Each call's gRPC deadline.
DEADLINE_S: Final = 15.0
#: How much later than its deadline a call may return before it counts as a hang
#: (a busy 2-core machine shared with other test runs).
HANG_MARGIN_S: Final = 10.0
#: Bound on waiting for a recovery or an event (never a speed claim).
RECOVER_S: Final = 240.0
#: The time-stamping bounds of the TSA cases: the provider's falls first.
PROVIDER_OVERDUE_S: Final = 4
CONSUMER_OVERDUE_S: Final = 10

# -- the federation ---------------------------------------------------------------------


@dataclass
class Federation:
    workdir: Path
    services: list[Service]
    pki: Path
    tsa_port: int
    echo: str
    consumer_is: str
    configs: dict[str, Path]
    gateways: dict[str, Service]
    metrics: dict[str, str]
    tsa: Service | None = None
    pids: dict[str, int] = field(default_factory=dict)

    def spawn(self, name: str, argv: list[str], stopped_event: str) -> Service:
        logs = self.workdir / "logs"
        logs.mkdir(exist_ok=True)
        count = sum(1 for s in self.services if s.name == name)
        log = logs / (f"{name}.log" if count == 0 else f"{name}.{count}.log")
        service = Service.start(name, argv, log=log, stopped_event=stopped_event)
        self.services.append(service)
        return service

    def start_tsa(self) -> Service:
        """``serai pki tsa serve`` on the TSA port the PKI names (the same one each time)."""
        self.tsa = self.spawn(
            "tsa",
            [*SERAI, "pki", "tsa", "serve", "--dir", str(self.pki),
             "--listen", f"127.0.0.1:{self.tsa_port}"],
            "tsa_stopped",
        )  # fmt: skip
        self.tsa.wait_for("tsa_listening")
        return self.tsa

    def stop_tsa(self) -> None:
        assert self.tsa is not None
        self.tsa.terminate()
        self.tsa.wait_stopped()
        assert not self.tsa.running()

    def assert_gateways_never_restarted(self) -> None:
        for role, gateway in self.gateways.items():
            assert gateway.running(), f"the {role} gateway exited: {gateway.log}"
            assert gateway.pid == self.pids[role]


def _edit_toml(path: Path, settings: dict[str, str]) -> None:
    """Set top-level keys of a ``gateway.toml`` written by ``serai gateway init``."""
    text = path.read_text()
    for key, value in settings.items():
        line = f"{key} = {value}"
        text, found = re.subn(rf"(?m)^{re.escape(key)} = .*$", line, text, count=1)
        assert found == 1, f"{key} is not in {path}"
    path.write_text(text)


def bring_up(
    workdir: Path,
    services: list[Service],
    *,
    settings: dict[str, dict[str, str]],
    log_urls: dict[str, str] | None = None,
) -> Federation:
    """The federation of :func:`serai._benchfed.bring_up`, with ``settings`` written into
    each gateway's ``gateway.toml`` before it starts (role -> key -> TOML value) and the
    message log of a role in PostgreSQL where ``log_urls`` names a database."""

    def prepare(setup: Setup) -> None:
        for role, config in setup.gateway_configs.items():
            _edit_toml(config, settings.get(role, {}))

    up = _benchfed.bring_up(
        workdir,
        services,
        gateway_options={
            role: ("--message-log-url", url) for role, url in (log_urls or {}).items()
        },
        prepare=prepare,
    )
    started = {service.name: service for service in services}
    gateways = {role: started[f"gateway-{role}"] for role in ("consumer", "provider")}
    return Federation(
        workdir=workdir,
        services=services,
        pki=up.setup.pki,
        tsa_port=int(up.setup.tsa_listen.rpartition(":")[2]),
        echo=up.direct,
        consumer_is=up.gateways,
        configs=up.setup.gateway_configs,
        gateways=gateways,
        metrics={role: str(listening["metrics"]) for role, listening in up.listening.items()},
        tsa=started["tsa"],
        pids={role: gateway.pid for role, gateway in gateways.items()},
    )


@contextlib.contextmanager
def federation(
    workdir: Path,
    *,
    settings: dict[str, dict[str, str]],
    log_urls: dict[str, str] | None = None,
) -> Iterator[Federation]:
    """:func:`bring_up`, and every process it started stopped on exit (SIGTERM, then
    SIGKILL for any that lingers), even when bringing up failed half-way."""
    services: list[Service] = []
    try:
        yield bring_up(workdir, services, settings=settings, log_urls=log_urls)
    finally:
        stop_all(list(reversed(services)))


# -- calls --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    message_id: str
    started: float  # time.monotonic()
    elapsed_s: float
    status: str  # gRPC status name
    error: str | None  # x-road-error: origin:code:message
    echoed: bool

    @property
    def ok(self) -> bool:
        return self.status == "OK" and self.error is None and self.echoed

    @property
    def code(self) -> str | None:
        if self.error is None:
            return None
        parts = self.error.split(":", 2)
        return parts[1] if len(parts) > 1 else self.error

    def __str__(self) -> str:
        return f"{self.message_id} {self.status} {self.error!r} after {self.elapsed_s:.1f} s"


def _error_of(metadata: object) -> str | None:
    for key, value in metadata or ():  # type: ignore[attr-defined]
        if key == "x-road-error":
            return value if isinstance(value, str) else bytes(value).decode("ascii", "replace")
    return None


def call(channel: grpc.Channel, deadline_s: float = DEADLINE_S) -> Outcome:
    """One exchange through the gateways, as the consumer IS, with its own message id,
    under a deadline of ``deadline_s``."""
    message_id = str(uuid.uuid4())
    body = message_id.encode() * 4
    stub = channel.unary_unary(BENCH_METHOD, None, None)
    started = time.monotonic()
    try:
        answer = stub(body, metadata=_metadata(message_id), timeout=deadline_s)
    except grpc.RpcError as exc:
        failed: grpc.Call = exc  # type: ignore[assignment]  # a RpcError is also a Call
        return Outcome(
            message_id,
            started,
            time.monotonic() - started,
            failed.code().name,
            _error_of(failed.trailing_metadata()),
            echoed=False,
        )
    return Outcome(message_id, started, time.monotonic() - started, "OK", None, answer == body)


async def call_async(channel: grpc.aio.Channel) -> Outcome:
    message_id = str(uuid.uuid4())
    body = message_id.encode() * 4
    stub = channel.unary_unary(BENCH_METHOD, None, None)
    started = time.monotonic()
    try:
        answer = await stub(body, metadata=_metadata(message_id), timeout=DEADLINE_S)
    except grpc.aio.AioRpcError as exc:
        return Outcome(
            message_id,
            started,
            time.monotonic() - started,
            exc.code().name,
            _error_of(exc.trailing_metadata()),
            echoed=False,
        )
    return Outcome(message_id, started, time.monotonic() - started, "OK", None, answer == body)


def _metadata(message_id: str) -> tuple[tuple[str, str], ...]:
    return (("x-road-client", CONSUMER), ("x-road-service", PROVIDER), ("x-road-id", message_id))


def reached(echo: str) -> int:
    """How many calls have reached the echo provider so far (its own count)."""
    with grpc.insecure_channel(echo) as channel:
        answer = channel.unary_unary(REACHED, None, None)(b"", timeout=30)
    return int(answer)


def assert_no_hang(outcomes: list[Outcome]) -> None:
    late = [o for o in outcomes if o.elapsed_s > DEADLINE_S + HANG_MARGIN_S]
    assert not late, f"calls returned long after their deadline: {late[:5]}"


# -- what the gateways expose ---------------------------------------------------------------


def metric(address: str, name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` (with these labels) on a gateway's /metrics."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=30) as response:
        text = response.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def readyz(address: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{address}/readyz", timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def log_verify(config: Path, *extra: str) -> dict[str, object]:
    """``serai log verify --config CONFIG --json``: its report (must exit 0)."""
    result = run_serai("log", "verify", "--config", config, "--json", *extra)
    assert result.returncode == 0, f"serai log verify failed: {result.stdout}{result.stderr}"
    report: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["ok"] is True, report
    assert report["failures"] == [], report
    return report


def wait_for_timestamped(fed: Federation, role: str, size: int) -> None:
    """Until the gateway of ``role`` reports a time-stamped head of at least ``size``."""
    fed.gateways[role].wait_for(
        "log_tree_head_timestamped",
        where=lambda event: int(event["tree_size"]) >= size,
        timeout_s=RECOVER_S,
    )


# -- TSA down ---------------------------------------------------------------------------------


@dataclass
class TsaRun:
    """What one TSA outage gave."""

    down: list[tuple[bool, Outcome]]  # (both gateways had seen a TSA failure, outcome)
    recovery: list[Outcome]
    waiting_sizes: dict[str, int]  # role -> log size when the TSA came back
    ready_while_down: dict[str, tuple[int, str]]  # role -> /readyz status and text
    tsa_back_at: dt.datetime  # when the TSA was started again
    stopped_mono: float  # time.monotonic() when the TSA had stopped
    back_mono: float  # ... and when it listened again


def _overdue_side(outcome: Outcome) -> str | None:
    """Which gateway refused with ``timestamping_overdue`` (by the log its message names)."""
    if outcome.code != "timestamping_overdue":
        return None
    assert outcome.status == "UNAVAILABLE", outcome
    assert outcome.error is not None, outcome
    assert outcome.error.startswith("gateway:"), outcome
    if f"log {PROVIDER_GW}" in outcome.error:
        return "provider"
    if f"log {CONSUMER_GW}" in outcome.error:
        return "consumer"
    raise AssertionError(f"a time-stamping refusal that names neither log: {outcome}")


def _tsa_outage(fed: Federation, channel: grpc.Channel, *, extra_down_s: float) -> TsaRun:
    """Stop the TSA; call one exchange after another until the consumer gateway refuses
    with ``timestamping_overdue``, then ``extra_down_s`` more; restart the TSA on its
    port; call until exchanges are answered again."""
    fed.stop_tsa()
    stopped = time.monotonic()
    down: list[tuple[bool, Outcome]] = []
    deadline = time.monotonic() + RECOVER_S
    consumer_refused_at: float | None = None
    while True:
        failing = all(
            metric(fed.metrics[role], "serai_gateway_timestamp_failures_total") > 0
            for role in ("consumer", "provider")
        )
        outcome = call(channel)
        down.append((failing, outcome))
        if consumer_refused_at is None and _overdue_side(outcome) == "consumer":
            consumer_refused_at = time.monotonic()
        if (
            consumer_refused_at is not None
            and time.monotonic() >= consumer_refused_at + extra_down_s
        ):
            break
        assert time.monotonic() < deadline, f"the consumer never refused: {down[-3:]}"
        time.sleep(0.1)

    waiting = {
        role: int(metric(fed.metrics[role], "serai_gateway_log_records")) for role in fed.gateways
    }
    ready = {role: readyz(fed.metrics[role]) for role in fed.gateways}
    back_at = dt.datetime.now(dt.UTC)
    fed.start_tsa()
    back = time.monotonic()
    recovery: list[Outcome] = []
    deadline = time.monotonic() + RECOVER_S
    while True:
        outcome = call(channel)
        recovery.append(outcome)
        if outcome.ok:
            break
        assert time.monotonic() < deadline, f"no recovery: {recovery[-3:]}"
        time.sleep(0.5)
    return TsaRun(
        down=down,
        recovery=recovery,
        waiting_sizes=waiting,
        ready_while_down=ready,
        tsa_back_at=back_at,
        stopped_mono=stopped,
        back_mono=back,
    )


def _openssl_gen_time(fed: Federation, work: Path, signed_head: bytes, token: bytes) -> str:
    """``openssl ts -verify`` of the head's token against the PKI root; its genTime."""
    openssl = shutil.which("openssl")
    assert openssl is not None, "openssl is needed to check the RFC 3161 token"
    data, token_file = work / "head.jws", work / "head.tst"
    data.write_bytes(signed_head)
    token_file.write_bytes(token)
    verified = subprocess.run(
        [openssl, "ts", "-verify", "-data", str(data), "-in", str(token_file), "-token_in",
         "-CAfile", str(fed.pki / "ca.pem"), "-untrusted", str(fed.pki / "tsa.pem")],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "Verification: OK" in verified.stdout, verified.stdout
    shown = subprocess.run(
        [openssl, "ts", "-reply", "-in", str(token_file), "-token_in", "-text"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    found = re.search(r"Time stamp: (.+)", shown.stdout)
    assert found is not None, shown.stdout
    return found.group(1).strip()


def _parse_openssl_time(text: str) -> dt.datetime:
    """``Nov 27 14:40:01.123 2026 GMT`` (fraction optional)."""
    text = re.sub(r"\.\d+", "", text.replace(" GMT", ""))
    return dt.datetime.strptime(text, "%b %d %H:%M:%S %Y").replace(tzinfo=dt.UTC)


def _covering_head(fed: Federation, role: str, size: int) -> tuple[int, bytes, bytes]:
    """The first time-stamped head that covers the first ``size`` records of the role's
    SQLite log (read-only, beside the running gateway): size, signed head, token."""
    db = fed.workdir / role / "messagelog.db"
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=60)) as conn:
        row = conn.execute(
            "SELECT tree_size, signed_head, timestamp_token FROM tree_heads"
            " WHERE timestamp_token IS NOT NULL AND tree_size >= ? ORDER BY tree_size LIMIT 1",
            (size,),
        ).fetchone()
    assert row is not None, f"no time-stamped head of the {role} log covers {size} records"
    return int(row[0]), bytes(row[1]), bytes(row[2])


def _check_tsa_run(fed: Federation, run: TsaRun, reached_delta: int, work: Path) -> None:
    outcomes = [o for _, o in run.down] + run.recovery
    assert_no_hang(outcomes)
    # Only answers and the documented refusal: never another code, never a hang.
    wrong = [o for o in outcomes if not o.ok and o.code != "timestamping_overdue"]
    assert not wrong, f"calls that got neither the answer nor timestamping_overdue: {wrong[:5]}"

    # Exchanges continue while the TSA is down: answered after both gateways had seen
    # a time-stamping attempt fail.
    assert any(failing and o.ok for failing, o in run.down), [str(o) for _, o in run.down[:10]]
    # Past its (shorter) bound the provider gateway refuses, relayed to the consumer IS;
    # past its own the consumer gateway refuses; it stays so until the TSA is back.
    phases = ["ok" if o.ok else _overdue_side(o) for _, o in run.down]
    first_provider = phases.index("provider")
    first_consumer = phases.index("consumer")
    assert 0 < first_provider < first_consumer, phases
    assert set(phases[first_provider:first_consumer]) == {"provider"}, phases
    assert set(phases[first_consumer:]) == {"consumer"}, phases
    # A refused exchange never reached the provider IS: only the answered ones did.
    answered = sum(1 for o in outcomes if o.ok)
    assert reached_delta == answered, (reached_delta, answered)
    for role, side in (("consumer", "consumer"), ("provider", "provider")):
        assert metric(
            fed.metrics[role], "serai_gateway_refusals_total", code="timestamping_overdue"
        ) >= phases.count(side)
    # Recovery: the last call was answered, and every refusal before it was the same code.
    assert run.recovery[-1].ok
    figures = {
        "calls_while_down": len(run.down),
        "answered_while_down": phases.count("ok"),
        "provider_refused": phases.count("provider"),
        "consumer_refused": phases.count("consumer"),
        "first_provider_refusal_after_s": run.down[first_provider][1].started - run.stopped_mono,
        "first_consumer_refusal_after_s": run.down[first_consumer][1].started - run.stopped_mono,
        "refused_after_tsa_back": len(run.recovery) - 1,
        "answered_after_tsa_back_s": run.recovery[-1].started - run.back_mono,
    }
    print("figures:", json.dumps(figures))  # for the report (pytest -s)
    fed.assert_gateways_never_restarted()

    for role, (status, text) in run.ready_while_down.items():
        assert status == 503, (role, status, text)
        assert "time-stamp" in text, (role, text)
    for role, size in run.waiting_sizes.items():
        # The records that waited are covered by a head with a token of the TSA's return.
        wait_for_timestamped(fed, role, size)
        head_size, signed_head, token = _covering_head(fed, role, size)
        assert head_size >= size
        (work / role).mkdir(exist_ok=True)
        gen_time = _parse_openssl_time(_openssl_gen_time(fed, work / role, signed_head, token))
        # The token was issued after the TSA came back (one second of genTime rounding).
        assert gen_time >= run.tsa_back_at - dt.timedelta(seconds=1), (gen_time, run.tsa_back_at)
        report = log_verify(fed.configs[role], "--to", str(size))
        assert report["records"] == size, report
        assert report["untimestamped"] == 0, report
        assert int(str(report["timestamped_heads"])) >= 1
        status, text = readyz(fed.metrics[role])
        assert status == 200, text


@pytest.fixture(scope="module")
def tsa_fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    settings = {
        "consumer": {"timestamping_overdue_s": str(CONSUMER_OVERDUE_S)},
        "provider": {"timestamping_overdue_s": str(PROVIDER_OVERDUE_S)},
    }
    with federation(tmp_path_factory.mktemp("tsa"), settings=settings) as fed:
        yield fed


def _warm(fed: Federation, channel: grpc.Channel) -> None:
    """Exchanges answered, and both logs time-stamped up to now (the TSA works)."""
    deadline = time.monotonic() + RECOVER_S
    while not call(channel).ok:
        assert time.monotonic() < deadline, "the federation never answered"
        time.sleep(0.5)
    for role in fed.gateways:
        wait_for_timestamped(fed, role, int(metric(fed.metrics[role], "serai_gateway_log_records")))


def test_tsa_down_overdue_then_catch_up(tsa_fed: Federation, tmp_path: Path) -> None:
    """TSA stopped: exchanges continue, then the provider gateway (bound 4 s) and the
    consumer gateway (10 s) refuse with ``timestamping_overdue`` and /readyz says why;
    TSA restarted on its port: exchanges are answered again by themselves and the
    records that waited get a time-stamped head whose token openssl verifies."""
    with grpc.insecure_channel(tsa_fed.consumer_is) as channel:
        _warm(tsa_fed, channel)
        before = reached(tsa_fed.echo)
        run = _tsa_outage(tsa_fed, channel, extra_down_s=1.0)
        _check_tsa_run(tsa_fed, run, reached(tsa_fed.echo) - before, tmp_path)


@pytest.mark.slow
def test_tsa_long_outage_under_concurrent_load(tsa_fed: Federation, tmp_path: Path) -> None:
    """As the short case, with the TSA down a minute past the consumer's bound (the
    back-off of the time-stamp retries grows) and 8 more callers throughout."""
    stop = threading.Event()
    background: list[Outcome] = []

    def load() -> None:
        with grpc.insecure_channel(tsa_fed.consumer_is) as channel:
            while not stop.is_set():
                background.append(call(channel))

    with grpc.insecure_channel(tsa_fed.consumer_is) as channel:
        _warm(tsa_fed, channel)
        before = reached(tsa_fed.echo)
        threads = [threading.Thread(target=load, daemon=True) for _ in range(8)]
        for thread in threads:
            thread.start()
        try:
            run = _tsa_outage(tsa_fed, channel, extra_down_s=60.0)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=DEADLINE_S + HANG_MARGIN_S)
        assert not any(t.is_alive() for t in threads)
        delta = reached(tsa_fed.echo) - before
    wrong = [o for o in background if not o.ok and o.code != "timestamping_overdue"]
    assert not wrong, wrong[:5]
    assert_no_hang(background)
    _check_tsa_run(tsa_fed, run, delta - sum(1 for o in background if o.ok), tmp_path)


# -- PostgreSQL restarted under load -------------------------------------------------------------


@dataclass
class PgFederation:
    fed: Federation
    cluster: PrivateCluster
    dsns: dict[str, str]


@pytest.fixture(scope="module")
def pg_fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgFederation]:
    with private_cluster() as cluster:
        dsns = {
            role: cluster.create_database(f"messagelog_{role}") for role in ("consumer", "provider")
        }
        with federation(tmp_path_factory.mktemp("pg"), settings={}, log_urls=dsns) as fed:
            for role, gateway in fed.gateways.items():
                assert gateway.wait_for("gateway_message_log")["kind"] == "postgresql", role
            yield PgFederation(fed=fed, cluster=cluster, dsns=dsns)


#: ``pg_ctl restart -m fast`` or ``-m immediate``, or ``stopped``: ``pg_ctl stop -m fast``,
#: :data:`STOPPED_S` without a server, then ``pg_ctl start``.
#: ``frozen``: every server process SIGSTOPped for :data:`FROZEN_S`, then SIGCONTinued.
Outage = Literal["fast", "immediate", "stopped", "frozen"]
#: How long the ``stopped`` outage keeps the server down (longer than the log's 5 s
#: connect timeout, so the writer fails to reconnect several times).
STOPPED_S: Final = 12.0
#: How long the ``frozen`` outage lasts: past a call's deadline.
FROZEN_S: Final = DEADLINE_S + 10.0


#: A call ended by its deadline: the gateway's code, or none (the client's own timer).
_DEADLINE_CODES: Final = (None, "deadline_exceeded")


@dataclass
class LoadRun:
    outcomes: list[Outcome]
    restarts: list[tuple[str, float, float]]  # mode, began, done (monotonic)
    reached: int  # calls that reached the provider IS during the run


async def _load_with_restarts(
    pg: PgFederation,
    modes: list[Outage],
    *,
    in_flight: int,
    settle_s: float,
) -> LoadRun:
    """``in_flight`` callers back to back; after ``settle_s`` of answered calls, each
    outage of ``modes`` in turn, each once calls are answered again after the last."""
    outcomes: list[Outcome] = []
    restarts: list[tuple[str, float, float]] = []
    stop = asyncio.Event()
    async with grpc.aio.insecure_channel(pg.fed.consumer_is) as channel:

        async def caller() -> None:
            while not stop.is_set():
                outcome = await call_async(channel)
                outcomes.append(outcome)
                if not outcome.ok:
                    await asyncio.sleep(0.05)  # as a client would, not hammering a refusal

        async def answered_since(since: float, count: int) -> None:
            deadline = time.monotonic() + RECOVER_S
            while sum(1 for o in outcomes if o.ok and o.started >= since) < count:
                assert time.monotonic() < deadline, (
                    f"no recovery: {[str(o) for o in outcomes[-5:]]}"
                )
                await asyncio.sleep(0.2)

        reached_before = await asyncio.to_thread(reached, pg.fed.echo)
        callers = [asyncio.create_task(caller()) for _ in range(in_flight)]
        try:
            await answered_since(time.monotonic(), 1)
            await asyncio.sleep(settle_s)
            for mode in modes:
                began = time.monotonic()
                if mode == "frozen":
                    with pg.cluster.frozen():
                        await asyncio.sleep(FROZEN_S)
                elif mode == "stopped":
                    await asyncio.to_thread(pg.cluster.stop, "fast")
                    await asyncio.sleep(STOPPED_S)
                    await asyncio.to_thread(pg.cluster.start)
                else:
                    await asyncio.to_thread(pg.cluster.restart, mode)
                done = time.monotonic()
                restarts.append((mode, began, done))
                await answered_since(done, in_flight * 4)
                await asyncio.sleep(settle_s)
        finally:
            stop.set()
            await asyncio.gather(*callers, return_exceptions=True)
        reached_during = await asyncio.to_thread(reached, pg.fed.echo) - reached_before
    return LoadRun(outcomes=outcomes, restarts=restarts, reached=reached_during)


def _stored(dsn: str) -> dict[str, set[int]]:
    """message id -> record kinds stored in the log at ``dsn``."""
    found: dict[str, set[int]] = {}
    with psycopg.connect(dsn, connect_timeout=30) as conn:
        for message_id, kind in conn.execute("SELECT message_id, kind FROM records"):
            found.setdefault(str(message_id), set()).add(int(kind))
    return found


def _check_load_run(pg: PgFederation, run: LoadRun, *, deadlines: bool = False) -> dict[str, float]:
    """Every call answered or refused with ``log_unavailable`` (with ``deadlines``, also
    DEADLINE_EXCEEDED: by the gateway's ``deadline_exceeded`` or the client's own
    deadline), none later than its deadline allows; recovery; nothing answered lost."""
    fed = pg.fed
    outcomes = run.outcomes
    assert_no_hang(outcomes)
    refused = [o for o in outcomes if not o.ok]
    assert refused, "no call met the outage: the restart was not under load"
    unavailable = [o for o in refused if o.code == "log_unavailable"]
    assert all(o.status == "UNAVAILABLE" for o in unavailable)
    assert all(o.error and o.error.startswith("gateway:") for o in unavailable)
    wrong = [
        o
        for o in refused
        if o.code != "log_unavailable"
        and not (deadlines and o.status == "DEADLINE_EXCEEDED" and o.code in _DEADLINE_CODES)
    ]
    assert not wrong, f"calls that got neither the answer nor log_unavailable: {wrong[:5]}"
    for mode, _began, done in run.restarts:
        assert any(o.ok and o.started >= done for o in outcomes), f"no answer after {mode}"
    fed.assert_gateways_never_restarted()
    if unavailable:
        # A failed store is reported as unavailable, then recovered; a frozen one as
        # stuck (past message_log_stuck_after_s), then resumed.
        for role, gateway in fed.gateways.items():
            failed = gateway.find("message_log_unavailable") is not None
            stuck = gateway.find("message_log_stuck") is not None
            assert failed or stuck, role
            if failed:
                assert gateway.find("message_log_recovered") is not None, role
            if stuck:
                assert gateway.find("message_log_resumed") is not None, role

    # Nothing acknowledged is lost: every answered exchange is in both logs, request and
    # response, after the restarts (-m immediate included: no shutdown checkpoint).
    acknowledged = {o.message_id for o in outcomes if o.ok}
    consumer, provider = _stored(pg.dsns["consumer"]), _stored(pg.dsns["provider"])
    lost_consumer = [m for m in acknowledged if consumer.get(m) != {1, 4}]
    lost_provider = [m for m in acknowledged if provider.get(m) != {2, 3}]
    assert not lost_consumer, f"answered but not in the consumer's log: {lost_consumer[:5]}"
    assert not lost_provider, f"answered but not in the provider's log: {lost_provider[:5]}"
    # No provider IS acted on a request its gateway had not logged: at most as many calls
    # reached it as the provider's log holds requests of this run (a refused commit
    # never reaches it).
    logged = sum(1 for o in outcomes if 2 in provider.get(o.message_id, ()))
    assert len(acknowledged) <= run.reached <= logged, (len(acknowledged), run.reached, logged)

    # Tree heads and time-stamps resume too; both logs verify.
    for role in fed.gateways:
        size = int(metric(fed.metrics[role], "serai_gateway_log_records"))
        wait_for_timestamped(fed, role, size)
        report = log_verify(fed.configs[role], "--to", str(size))
        assert report["records"] == size, report
        assert report["untimestamped"] == 0, report
        assert readyz(fed.metrics[role])[0] == 200

    first, last = min(o.started for o in outcomes), max(o.started + o.elapsed_s for o in outcomes)
    answered = [o for o in outcomes if o.ok]
    before_first = [o for o in answered if o.started + o.elapsed_s < run.restarts[0][1]]
    span = run.restarts[0][1] - min(o.started for o in before_first) if before_first else 0.0
    figures = {
        "calls": float(len(outcomes)),
        "answered": float(len(answered)),
        "log_unavailable": float(len(unavailable)),
        "deadline_exceeded": float(len(refused) - len(unavailable)),
        "calls_per_s_before_restart": len(before_first) / span if span > 0 else 0.0,
        "wall_s": last - first,
        "max_refusal_s": max((o.elapsed_s for o in refused), default=0.0),
    }
    for number, (mode, began, done) in enumerate(run.restarts, 1):
        figures[f"outage_{number}_{mode}_s"] = done - began
    print("figures:", json.dumps(figures))  # for the report (pytest -s)
    return figures


def test_postgres_restarted_fast_and_immediate_under_load(pg_fed: PgFederation) -> None:
    """Both message logs in a private PostgreSQL cluster, 16 calls in flight; ``pg_ctl
    restart -m fast``, then ``-m immediate``: the calls meanwhile get ``log_unavailable``
    within their deadline, every answered exchange is in both logs afterwards, the
    gateways recover by themselves and ``serai log verify`` passes."""
    run = asyncio.run(
        _load_with_restarts(pg_fed, ["fast", "immediate"], in_flight=16, settle_s=2.0)
    )
    _check_load_run(pg_fed, run)


@pytest.mark.slow
def test_postgres_restarted_repeatedly_under_load(pg_fed: PgFederation) -> None:
    """Restarts in alternating modes and a 12-second stop, with 32 calls in flight."""
    modes: list[Outage] = ["immediate", "fast", "stopped", "immediate", "fast", "immediate"]
    run = asyncio.run(_load_with_restarts(pg_fed, modes, in_flight=32, settle_s=8.0))
    _check_load_run(pg_fed, run)


@pytest.mark.slow
def test_postgres_frozen_under_load(pg_fed: PgFederation) -> None:
    """The server's processes stopped (SIGSTOP) for 25 s, longer than a call's deadline,
    then resumed: connections stay open and nothing answers, as across a network
    partition. The calls meanwhile end at their deadline (DEADLINE_EXCEEDED, from the
    gateway or the client's own deadline) or with ``log_unavailable``, none hangs past
    it; once resumed the gateways answer again by themselves and lose nothing."""
    run = asyncio.run(_load_with_restarts(pg_fed, ["frozen"], in_flight=16, settle_s=2.0))
    _check_load_run(pg_fed, run, deadlines=True)
