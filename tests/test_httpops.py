"""The operations HTTP port (:mod:`serai.httpops`): one test per promise of its docstring.

The scrape test is the issue's "a scrape during heavy load does not stall exchanges",
made deterministic instead of timed: a collector that blocks until the event loop
releases it would deadlock the loop if the text were generated on it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

import serai.httpops
from serai.errors import ConfigError
from serai.httpops import OpsServer, metrics_listen_for


class _Blocking(Collector):
    """Blocks its collection until ``release`` is set, and says on which thread it ran."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.thread: int | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        self.thread = threading.get_ident()
        self.started.set()
        released = self.release.wait(timeout=10)
        yield GaugeMetricFamily("serai_test_released", "1 when released in time", value=released)


@pytest.fixture
async def ops() -> AsyncIterator[tuple[OpsServer, CollectorRegistry, list[str]]]:
    registry = CollectorRegistry()
    reasons: list[str] = []
    server = OpsServer(registry=registry, readiness=lambda: reasons, listen=("127.0.0.1", 0))
    await server.start()
    try:
        yield server, registry, reasons
    finally:
        await server.stop()


async def _get(port: int, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as response,
    ):
        return response.status, await response.text()


async def test_metrics_serve_the_process_registry_only(
    ops: tuple[OpsServer, CollectorRegistry, list[str]],
) -> None:
    server, registry, _ = ops
    Counter("serai_test_things", "things counted", registry=registry).inc(3)
    status, text = await _get(server.port, "/metrics")
    assert status == 200
    assert "serai_test_things_total 3.0" in text
    assert "python_gc_objects_collected_total" not in text  # the library's default registry


async def test_a_scrape_never_holds_the_event_loop(
    ops: tuple[OpsServer, CollectorRegistry, list[str]],
) -> None:
    server, registry, _ = ops
    blocking = _Blocking()
    registry.register(blocking)
    scrape = asyncio.ensure_future(_get(server.port, "/metrics"))
    assert await asyncio.to_thread(blocking.started.wait, 10)  # collecting, off the loop
    ticks = 0
    for _ in range(5):
        await asyncio.sleep(0)
        ticks += 1
    blocking.release.set()
    status, text = await scrape
    assert ticks == 5
    assert status == 200
    assert "serai_test_released 1.0" in text
    assert blocking.thread != threading.get_ident()


async def test_healthz_and_readyz(ops: tuple[OpsServer, CollectorRegistry, list[str]]) -> None:
    server, _, reasons = ops
    assert await _get(server.port, "/healthz") == (200, "ok\n")
    assert await _get(server.port, "/readyz") == (200, "ready\n")
    reasons += ["no valid global configuration", "time-stamps\noverdue"]
    status, text = await _get(server.port, "/readyz")
    assert status == 503
    assert text == "not ready\n- no valid global configuration\n- time-stamps overdue\n"


async def test_a_port_in_use_is_a_config_error(
    ops: tuple[OpsServer, CollectorRegistry, list[str]],
) -> None:
    server, registry, _ = ops
    clash = OpsServer(registry=registry, readiness=list, listen=("127.0.0.1", server.port))
    with pytest.raises(ConfigError, match="cannot listen"):
        await clash.start()


def test_metrics_listen_defaults_to_loopback() -> None:
    assert metrics_listen_for(None, default="127.0.0.1:9500", others_default=True) == (
        "127.0.0.1:9500"
    )
    assert metrics_listen_for(None, default="127.0.0.1:9500", others_default=False) == (
        "127.0.0.1:0"
    )
    assert metrics_listen_for("0.0.0.0:9600", default="x", others_default=True) == ("0.0.0.0:9600")


def test_public_surface() -> None:
    assert set(serai.httpops.__all__) == {"OpsServer", "metrics_listen_for"}
