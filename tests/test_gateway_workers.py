"""``serai gateway serve --workers N`` (gateway.workers): several worker processes of one
gateway on the same ports (SO_REUSEPORT) and one message log.

Real processes on loopback (the federation of ``serai bench``: PKI with OCSP and TSA,
registry, echo provider, two gateways made by ``serai gateway init``, each started with
``--workers 2``), real TLS, the real SQLite log. No timing is asserted.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway._messages import ExchangeRequestMessage
from gateway.commit import LogRecord, RecordKind
from gateway.config import load_config
from gateway.messagelog import MessageLog
from gateway.messagelog.heads import TimestampingOverdueError
from gateway.workers import FollowingScheduler
from serai._benchfed import (
    BENCH_METHOD,
    CONSUMER,
    PROVIDER,
    Federation,
    bring_up,
    init_pki,
    init_registry,
)
from serai._demoprocs import SERAI, Service, must, run_serai, stop_all
from serai.localprocs import free_port
from tests.attackkit_messages import PeerLink
from tests.test_messagelog_store import pg_url

_HEADERS = (("x-road-client", CONSUMER), ("x-road-service", PROVIDER))
#: Fresh connections tried before both workers must have taken one (each lands on a
#: worker the kernel picks by hash: all 200 on one of two has probability 2**-199).
_MAX_CONNECTIONS = 200


@pytest.fixture
def services() -> Iterator[list[Service]]:
    started: list[Service] = []
    try:
        yield started
    finally:
        stop_all(started)


def _fresh_channel(address: str) -> grpc.aio.Channel:
    """A channel on its own TCP connection (grpc shares subchannels across channels
    of a process unless told not to)."""
    return grpc.aio.insecure_channel(address, options=(("grpc.use_local_subchannel_pool", 1),))


async def _call(channel: grpc.aio.Channel, acked: list[str]) -> bool:
    """One exchange with its own message id; the id is kept if it was acknowledged."""
    message_id = str(uuid.uuid4())
    body = message_id.encode()
    try:
        answer = await channel.unary_unary(BENCH_METHOD, None, None)(
            body, metadata=(*_HEADERS, ("x-road-id", message_id)), timeout=60
        )
    except grpc.aio.AioRpcError:
        return False
    assert answer == body
    acked.append(message_id)
    return True


def _scrape(metrics: str) -> dict[str, float]:
    """Exchanges per worker label from the supervisor's aggregated /metrics."""
    import urllib.request  # noqa: PLC0415

    with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=30) as reply:
        text = reply.read().decode()
    per_worker: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "serai_gateway_exchanges":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels.get("code") in ("", "ok", None):
                worker = sample.labels["worker"]
                per_worker[worker] = per_worker.get(worker, 0.0) + sample.value
    return per_worker


def _all_samples(metrics: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    import urllib.request  # noqa: PLC0415

    with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=30) as reply:
        text = reply.read().decode()
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return found


def _by_worker(samples: list[tuple[dict[str, str], float]]) -> list[tuple[dict[str, str], float]]:
    return sorted(samples, key=lambda sample: sample[0]["worker"])


async def _until_granted_everywhere(address: str) -> None:
    """The access right was granted on the leader's admin API; followers read the
    rights every few seconds. Wait until ten fresh connections in a row are served."""
    in_a_row = 0
    for _ in range(600):
        channel = _fresh_channel(address)
        try:
            in_a_row = in_a_row + 1 if await _call(channel, []) else 0
        finally:
            await channel.close(None)
        if in_a_row == 10:
            return
        await asyncio.sleep(0.1)
    pytest.fail("the followers never served the granted method")


async def _until_both_served(address: str, metrics: str, acked: list[str]) -> dict[str, float]:
    """Calls on fresh connections until both workers' counters grew; the growth per
    worker (a restarted worker's counters start again at 0)."""
    before = await asyncio.to_thread(_scrape, metrics)
    grown: dict[str, float] = {}
    for attempt in range(_MAX_CONNECTIONS):
        channel = _fresh_channel(address)
        try:
            assert await _call(channel, acked)
        finally:
            await channel.close(None)
        if attempt % 4 == 3:
            now = await asyncio.to_thread(_scrape, metrics)
            grown = {w: n - before.get(w, 0.0) for w, n in now.items()}
            if len(grown) == 2 and min(grown.values()) > 0:
                return grown
    pytest.fail(f"after {_MAX_CONNECTIONS} connections, exchanges per worker: {grown}")


async def _load(address: str, acked: list[str], stop: asyncio.Event, failed: list[int]) -> None:
    """Eight connections calling back to back until ``stop``; reconnects after a failure."""

    async def caller() -> None:
        channel = _fresh_channel(address)
        try:
            while not stop.is_set():
                if not await _call(channel, acked):
                    failed.append(1)
                    await channel.close(None)
                    channel = _fresh_channel(address)
                    await asyncio.sleep(0.2)
        finally:
            await channel.close(None)

    await asyncio.gather(*(caller() for _ in range(8)))


async def _acknowledged(acked: list[str], count: int, failed: list[int]) -> None:
    """Wait (at most ten minutes) until ``count`` exchanges were acknowledged."""
    for _ in range(6000):
        if len(acked) >= count:
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"{len(acked)} exchanges acknowledged, not {count} ({len(failed)} failed)")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _worker_event(service: Service, event: str, worker: int, restarts: int = 0) -> dict[str, Any]:
    """The event of ``worker``'s ``restarts``-th run (the supervisor counts them)."""

    def of_run(e: dict[str, Any]) -> bool:
        return bool(e["worker"] == worker and _run_of(service, e) == restarts)

    return service.wait_for(event, where=of_run)


def _run_of(service: Service, event: dict[str, Any]) -> int:
    """Which run of its worker an event belongs to: by the pid of that run."""
    pid = event.get("worker_pid", event.get("pid"))
    runs = [
        e
        for e in service._events
        if e["event"] == "gateway_worker_started" and e["worker"] == event["worker"]
    ]
    return next((int(e["restarts"]) for e in runs if e["pid"] == pid), -1)


def _worker_pids(service: Service) -> set[int]:
    service.find("gateway_stopped")  # read the log so far
    return {int(e["pid"]) for e in service._events if e["event"] == "gateway_worker_started"}


def _log_kinds(config: Path, message_ids: list[str]) -> dict[str, set[RecordKind]]:
    async def read() -> dict[str, set[RecordKind]]:
        gateway = load_config(config)
        log = await MessageLog.open(gateway.message_log, log_id=gateway.gateway_id)
        try:
            return {m: {r.kind for r in await log.records(message_id=m)} for m in message_ids}
        finally:
            await log.close()

    return asyncio.run(read())


def _verify(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SERAI, "log", "verify", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _up(services: list[Service], tmp_path: Path) -> tuple[Federation, Service, Service, str]:
    """The bench federation with two workers per gateway; both listen on the same
    addresses and only the leader has the admin API."""
    federation = bring_up(
        tmp_path, services, nginx=None, max_in_flight=8, say=lambda _: None, gateway_workers=2
    )
    consumer = next(s for s in services if s.name == "gateway-consumer")
    provider = next(s for s in services if s.name == "gateway-provider")
    listening = consumer.wait_for("gateway_listening")
    assert listening["workers"] == 2
    assert listening["is"] == federation.gateways
    workers = {i: _worker_event(consumer, "gateway_worker_listening", i) for i in (0, 1)}
    assert workers[0]["is"] == workers[1]["is"] == listening["is"]
    assert workers[0]["peer"] == workers[1]["peer"] == listening["peer"]
    assert workers[0]["admin"] == listening["admin"] is not None
    assert workers[1]["admin"] is None
    assert len(_worker_pids(consumer)) == len(_worker_pids(provider)) == 2
    asyncio.run(_until_granted_everywhere(federation.gateways))
    return federation, consumer, provider, str(listening["metrics"])


def _stop_and_check(consumer: Service, provider: Service, acked: list[str], root: Path) -> None:
    """SIGTERM stops every worker, then the supervisor; only the leader signed heads;
    every acknowledged exchange is in both logs, and both logs verify."""
    all_pids = _worker_pids(consumer) | _worker_pids(provider)
    results = stop_all([consumer, provider])
    for service, status, reported in results:
        assert status == 0, service.name
        assert reported, service.name
    assert not [pid for pid in all_pids if _alive(pid)]
    for service in (consumer, provider):
        assert service.find("gateway_worker_stopped", where=lambda e: e["worker"] == 0)
        assert service.find("gateway_worker_stopped", where=lambda e: e["worker"] == 1)
        heads = [e for e in service._events if e["event"] == "log_tree_head"]
        assert heads, service.name
        assert {e["worker"] for e in heads} == {0}, service.name
        stamped = [e for e in service._events if e["event"] == "log_tree_head_timestamped"]
        assert stamped, service.name
        assert {e["worker"] for e in stamped} == {0}, service.name
    for role, kinds in (
        ("consumer", {RecordKind.REQUEST_SENT, RecordKind.RESPONSE_RECEIVED}),
        ("provider", {RecordKind.REQUEST_RECEIVED, RecordKind.RESPONSE_SENT}),
    ):
        found = _log_kinds(root / role / "gateway.toml", acked)
        missing = [m for m in acked if not kinds <= found[m]]
        assert not missing, (role, len(missing), missing[:5])
        result = _verify(root / role / "gateway.toml")
        assert result.returncode == 0, (role, result.stdout[-2000:], result.stderr[-2000:])


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_workers_serve_one_port_and_append_to_one_log(
    services: list[Service], tmp_path: Path
) -> None:
    federation, consumer, provider, metrics = _up(services, tmp_path)
    acked: list[str] = []
    per_worker = asyncio.run(_until_both_served(federation.gateways, metrics, acked))
    assert set(per_worker) == {"0", "1"}
    assert sum(per_worker.values()) == len(acked)
    samples = _all_samples(metrics)
    assert samples["serai_gateway_workers"] == [({}, 2.0)]
    assert _by_worker(samples["serai_gateway_worker_up"]) == [
        ({"worker": "0"}, 1.0),
        ({"worker": "1"}, 1.0),
    ]
    _stop_and_check(consumer, provider, acked, tmp_path)


def _sent_request(config: Path, message_id: str) -> ExchangeRequestMessage:
    """The exchange message the consumer gateway sent for ``message_id``, from its log:
    the exact signed header, chain, OCSP response and body a replay would carry."""

    async def read() -> ExchangeRequestMessage:
        gateway = load_config(config)
        log = await MessageLog.open(gateway.message_log, log_id=gateway.gateway_id)
        try:
            (stored,) = await log.records(message_id=message_id, kinds=(RecordKind.REQUEST_SENT,))
        finally:
            await log.close()
        record = stored.record()
        return ExchangeRequestMessage(
            signed_header=record.header_jws.decode("ascii"),
            body=record.body or b"",
            certificate_chain=tuple(record.certificate_chain),
            ocsp_response=record.ocsp_response or b"",
            timeout_s=30.0,
        )

    return asyncio.run(read())


def _refusals_by_worker(metrics: str, code: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for labels, value in _all_samples(metrics).get("serai_gateway_refusals_total", []):
        if labels.get("code") == code:
            found[labels["worker"]] = found.get(labels["worker"], 0.0) + value
    return found


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_replay_is_refused_by_every_worker_not_only_the_one_that_served_it(
    services: list[Service], tmp_path: Path
) -> None:
    """A registered consumer gateway's own signed request, sent again over fresh
    connections (each lands on a worker the kernel picks): every copy is refused with
    replay_detected, by both workers, although only one of them served the original
    (gateway.replay, guarantee 7); the provider's IS saw it once."""
    federation, consumer, provider, _ = _up(services, tmp_path)
    provider_metrics = provider.wait_for("gateway_listening")["metrics"]
    peer_address = provider.wait_for("gateway_listening")["peer"]
    acked: list[str] = []
    channel_served = asyncio.run(_call_once(federation.gateways, acked))
    assert channel_served
    (message_id,) = acked
    envelope = _sent_request(tmp_path / "consumer" / "gateway.toml", message_id).encode()
    before = _refusals_by_worker(provider_metrics, "replay_detected")
    outcomes: list[tuple[str, str]] = []
    for _ in range(_MAX_CONNECTIONS):
        with PeerLink(
            peer_address,
            keys=tmp_path / "consumer" / "keys",
            server_keys=tmp_path / "provider" / "keys",
        ) as link:
            outcome = link.send_raw(envelope)
        outcomes.append((outcome.status, outcome.refusal[2]))
        grown = {
            worker: count - before.get(worker, 0.0)
            for worker, count in _refusals_by_worker(provider_metrics, "replay_detected").items()
        }
        if len(grown) == 2 and min(grown.values()) > 0:
            break
    assert set(outcomes) == {("ALREADY_EXISTS", "replay_detected")}, outcomes
    assert set(grown) == {"0", "1"}, (grown, len(outcomes))
    assert min(grown.values()) > 0, (grown, len(outcomes))
    found = _log_kinds(tmp_path / "provider" / "gateway.toml", [message_id])
    assert found[message_id] == {RecordKind.REQUEST_RECEIVED, RecordKind.RESPONSE_SENT}
    stop_all([consumer, provider])


async def _call_once(address: str, acked: list[str]) -> bool:
    channel = _fresh_channel(address)
    try:
        return await _call(channel, acked)
    finally:
        await channel.close(None)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_sigkilled_workers_are_restarted_and_lose_nothing_acknowledged(
    services: list[Service], tmp_path: Path
) -> None:
    federation, consumer, provider, metrics = _up(services, tmp_path)
    acked: list[str] = []
    asyncio.run(_until_both_served(federation.gateways, metrics, acked))

    # SIGKILL the follower, then the leader, while eight connections call: each is
    # restarted on the same port, serves again, and every acknowledged exchange is in
    # the log (calls on the killed worker's connections fail: they were never
    # acknowledged).
    for worker in (1, 0):
        killed = _worker_event(consumer, "gateway_worker_started", worker)["pid"]
        asyncio.run(_kill_under_load(consumer, worker, killed, federation.gateways, acked))
        exited = _worker_event(consumer, "gateway_worker_exited", worker)
        assert exited["pid"] == killed
        assert exited["status"] == -signal.SIGKILL
        restarted = _worker_event(consumer, "gateway_worker_started", worker, restarts=1)
        assert restarted["pid"] != killed
        assert restarted["leader"] is (worker == 0)
        # The restarted worker takes connections on the same port (counters from 0).
        asyncio.run(_until_both_served(federation.gateways, metrics, acked))
    samples = _all_samples(metrics)
    assert _by_worker(samples["serai_gateway_worker_restarts_total"]) == [
        ({"worker": "0"}, 1.0),
        ({"worker": "1"}, 1.0),
    ]
    assert len(_worker_pids(consumer)) == 4
    _stop_and_check(consumer, provider, acked, tmp_path)


async def _kill_under_load(
    service: Service, worker: int, pid: int, address: str, acked: list[str]
) -> None:
    stop = asyncio.Event()
    failed: list[int] = []
    load = asyncio.create_task(_load(address, acked, stop, failed))
    try:
        await _acknowledged(acked, len(acked) + 40, failed)
        os.kill(pid, signal.SIGKILL)
        await asyncio.to_thread(
            service.wait_for,
            "gateway_worker_listening",
            where=lambda e: e["worker"] == worker and e["worker_pid"] != pid,
            timeout_s=300,
        )
        await _acknowledged(acked, len(acked) + 40, failed)
    finally:
        stop.set()
        await load


# -- the supervisor alone (default run: no federation) ----------------------------------------


@pytest.fixture
def waiting_gateway(tmp_path: Path) -> Path:
    """A gateway made by ``serai gateway init`` whose registry never runs: its workers
    start and wait for a global configuration, which is all the supervisor needs."""
    pki = tmp_path / "pki"
    init_pki(pki, ocsp_listen=f"127.0.0.1:{free_port()}", tsa_listen=f"127.0.0.1:{free_port()}")
    registry_toml = init_registry(tmp_path / "registry", pki=pki)
    anchor = tmp_path / "anchor.bin"
    must(run_serai("registry", "anchor", "--config", registry_toml, "--out", anchor))
    must(
        run_serai(
            "gateway", "init", "--dir", tmp_path / "gw", "--gateway-id", "UZ/GOV/MINJUST/gw:main",
            "--pki", pki, "--anchor", anchor, "--peer-listen", f"127.0.0.1:{free_port()}",
            "--is-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
            "--metrics-listen", "127.0.0.1:0", "--client", CONSUMER,
        )
    )  # fmt: skip
    return tmp_path / "gw" / "gateway.toml"


def _start(services: list[Service], config: Path, name: str) -> Service:
    service = Service.start(
        name,
        [*SERAI, "gateway", "serve", "--config", str(config), "--workers", "2"],
        log=config.parent / f"{name}.log",
        stopped_event="gateway_stopped",
    )
    services.append(service)
    return service


def _port_taken(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    with socket.socket() as probe:
        try:
            probe.bind((host, int(port)))
        except OSError:
            return True
    return False


def _readyz(metrics: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{metrics}/readyz", timeout=30) as reply:
            return int(reply.status), reply.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


def test_the_supervisor_holds_the_ports_restarts_workers_and_stops_them_all(
    services: list[Service], waiting_gateway: Path
) -> None:
    supervisor = _start(services, waiting_gateway, "supervisor")
    starting = supervisor.wait_for("gateway_workers_starting")
    assert starting["workers"] == 2
    # Port 0 was resolved once, and the supervisor holds both served ports for its life.
    assert not str(starting["is"]).endswith(":0")
    assert _port_taken(str(starting["is"]))
    assert _port_taken(str(starting["peer"]))
    pids = {i: int(_worker_event(supervisor, "gateway_worker_started", i)["pid"]) for i in (0, 1)}
    assert _worker_event(supervisor, "gateway_worker_started", 0)["leader"] is True
    assert _worker_event(supervisor, "gateway_worker_started", 1)["leader"] is False
    for i in (0, 1):  # both workers run, waiting for a configuration nobody publishes
        _worker_event(supervisor, "gateway_waiting_for_globalconf", i)
    status, text = _readyz(str(starting["metrics"]))
    assert status == 503
    assert "worker 0: starting: not listening yet" in text
    assert "worker 1: starting: not listening yet" in text
    samples = _all_samples(str(starting["metrics"]))
    assert samples["serai_gateway_workers"] == [({}, 2.0)]
    assert _by_worker(samples["serai_gateway_worker_up"]) == [
        ({"worker": "0"}, 0.0),
        ({"worker": "1"}, 0.0),
    ]

    os.kill(pids[1], signal.SIGKILL)
    exited = _worker_event(supervisor, "gateway_worker_exited", 1)
    assert exited["pid"] == pids[1]
    assert exited["status"] == -signal.SIGKILL
    assert exited["restart_in_s"] == 1.0
    restarted = _worker_event(supervisor, "gateway_worker_started", 1, restarts=1)
    assert restarted["pid"] != pids[1]
    _worker_event(supervisor, "gateway_waiting_for_globalconf", 1, restarts=1)
    assert supervisor.running()

    all_pids = {*pids.values(), int(restarted["pid"])}
    ((_, status, reported),) = stop_all([supervisor])
    assert status == 0
    assert reported
    assert not [pid for pid in all_pids if _alive(pid)]
    assert not _port_taken(str(starting["is"]))
    # Followers were stopped before the leader.
    order = [
        e["worker"]
        for e in supervisor._events
        if e["event"] == "gateway_worker_stopped" and e.get("worker_pid") in all_pids
    ]
    assert order == [1, 0]


def test_workers_die_with_a_sigkilled_supervisor(
    services: list[Service], waiting_gateway: Path
) -> None:
    supervisor = _start(services, waiting_gateway, "supervisor")
    pids = [int(_worker_event(supervisor, "gateway_worker_started", i)["pid"]) for i in (0, 1)]
    for i in (0, 1):
        _worker_event(supervisor, "gateway_waiting_for_globalconf", i)
    supervisor.process.kill()
    supervisor.process.wait()
    for _ in range(600):  # PR_SET_PDEATHSIG sends each worker SIGTERM
        if not [pid for pid in pids if _alive(pid)]:
            break
        time.sleep(0.1)
    assert not [pid for pid in pids if _alive(pid)]


# -- the follower's scheduler, against a real log -------------------------------------------


def _record(message_id: str) -> LogRecord:
    return LogRecord.admin_change(change_id=message_id, description=b'{"change":"test"}')


@pytest.fixture(params=["sqlite", "postgresql"])
def log_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "log.db")
    return pg_url(str(request.getfixturevalue("postgres_dsn")))


def test_a_follower_is_overdue_until_the_leader_timestamps(log_location: str) -> None:
    now = [dt.datetime(2026, 1, 1, tzinfo=dt.UTC)]

    async def scenario() -> None:
        log = await MessageLog.open(log_location, log_id="UZ/GOV/X/gw:main")
        try:
            follower = FollowingScheduler(
                log_id="UZ/GOV/X/gw:main",
                store=log,
                interval_s=1,
                overdue_after_s=60,
                clock=lambda: now[0],
            )
            await follower.refresh()
            follower.check()  # an empty log is never overdue
            first = await log.append(_record("m-1"))
            second = await log.append(_record("m-2"))
            await follower.refresh()
            since = follower.untimestamped_since
            assert since is not None
            now[0] = since + dt.timedelta(seconds=61)
            with pytest.raises(TimestampingOverdueError) as refused:
                follower.check()
            assert refused.value.code.value == "timestamping_overdue"
            # The leader signs a head over both records and time-stamps it.
            size, root = await log.tree_state()
            assert size == second + 1 == first + 2
            head = await log.add_tree_head(tree_size=size, root=root, signed_head=b"head")
            await follower.refresh()
            with pytest.raises(TimestampingOverdueError):
                follower.check()  # a head without a time-stamp covers nothing
            await log.set_timestamp(head.head_id, b"token")
            await follower.refresh()
            follower.check()
            assert follower.timestamped_size == 2
            assert [follower.untimestamped_since] == [None]  # (no narrowing: it changes)
            # A record after the time-stamped head waits from its own commit time.
            await log.append(_record("m-3"))
            await follower.refresh()
            waiting = follower.untimestamped_since
            assert waiting is not None
            assert waiting > since
            now[0] = waiting + dt.timedelta(seconds=30)
            follower.check()
            now[0] = waiting + dt.timedelta(seconds=61)
            with pytest.raises(TimestampingOverdueError):
                follower.check()
            # A follower started later finds the newest time-stamped head among many
            # (a binary search on the size) and the same oldest waiting record.
            for _ in range(5):
                size, root = await log.tree_state()
                stamped = await log.add_tree_head(tree_size=size, root=root, signed_head=b"h")
                await log.set_timestamp(stamped.head_id, b"t")
                await log.append(_record(f"m-{size}"))
            size, root = await log.tree_state()
            await log.add_tree_head(tree_size=size, root=root, signed_head=b"unstamped")
            late = FollowingScheduler(
                log_id="UZ/GOV/X/gw:main",
                store=log,
                interval_s=1,
                overdue_after_s=60,
                clock=lambda: now[0],
            )
            await late.refresh()
            assert late.timestamped_size == size - 1
            newest = await log.record(size - 1)
            assert late.untimestamped_since == newest.appended_at
        finally:
            await log.close()

    asyncio.run(scenario())


def test_workers_option_is_refused_out_of_range(tmp_path: Path) -> None:
    for value in ("0", "65", "two"):
        result = subprocess.run(
            [*SERAI, "gateway", "serve", "--config", str(tmp_path / "g.toml"), "--workers", value],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 2
        assert "--workers: expected a whole number 1 to 64" in result.stderr


def test_bench_gateway_workers_is_refused_out_of_range(capsys: pytest.CaptureFixture[str]) -> None:
    from serai import cli  # noqa: PLC0415

    for value in ("0", "17", "x"):
        assert cli.main(["bench", "--gateway-workers", value]) == 2
        assert "--gateway-workers: expected a whole number from 1 to 16" in capsys.readouterr().err
