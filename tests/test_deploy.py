"""``deploy/``: the Prometheus configuration and alert rules pass promtool, and the
Grafana dashboard and the alerts use only metrics the gateway and registry expose.

The metric names come from the real metric code (``gateway.metrics``,
``registry.metrics``) registered in process; the process test
(``tests/test_gateway_processes.py``) checks the same code's live output with promtool.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from gateway._settings import GatewaySettings
from gateway.acl import AccessPolicy
from gateway.metrics import GatewayMetrics, GatewayState, add_state_gauges
from registry.metrics import ApiCallCounter, registry_metrics
from registry.snapshot import ConfigurationSnapshot
from serai.errors import ErrorCode, SeraiError
from serai.metrics import StateGauges
from tests.opscheck import promtool

DEPLOY = Path(__file__).parent.parent / "deploy"
_NAME = re.compile(r"\bserai_[a-z0-9_]+\b")
_SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_created")


class _NoConfiguration:
    def current(self) -> ConfigurationSnapshot:
        raise SeraiError("none", code=ErrorCode.GLOBALCONF_EXPIRED)


class _Policies:
    def policy(self) -> AccessPolicy:
        return AccessPolicy()


class _Publication:
    class publisher:
        current = None

    publications = 0
    failures = 0


def _exposed_names() -> set[str]:
    """Every metric family name the gateway and registry code registers."""
    registry = CollectorRegistry()
    GatewayMetrics(
        registry=registry,
        settings=GatewaySettings(),
        configuration=_NoConfiguration(),
        policies=_Policies(),
    )
    add_state_gauges(
        StateGauges(registry),
        GatewayState(
            globalconf_status=lambda: SimpleNamespace(
                serial=None, generated_at=None, expires_at=None
            ),
            log_records=lambda: 0,
            scheduler=None,
            overdue_after_s=14400.0,
            certificates=(),
            ocsp_this_update=dict,
            acl_generation=lambda: 0,
            ready=lambda: True,
            clock=lambda: None,  # type: ignore[arg-type, return-value]  # never read here
        ),
    )
    other = CollectorRegistry()
    registry_metrics(other, _Publication())  # type: ignore[arg-type]  # duck-typed
    ApiCallCounter(other, methods=())
    text = (generate_latest(registry) + generate_latest(other)).decode()
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def _known(name: str, exposed: set[str]) -> bool:
    if name in exposed:
        return True
    return any(name.endswith(s) and name.removesuffix(s) in exposed for s in _SUFFIXES)


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DEPLOY / "grafana" / "serai.json").read_text())
    return data


def test_dashboard_uses_only_exposed_metrics() -> None:
    exposed = _exposed_names()
    dashboard = _dashboard()
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert exprs
    used = {name for expr in exprs for name in _NAME.findall(expr)}
    assert {n for n in used if not _known(n, exposed)} == set()
    # The panels the operations guide promises.
    titles = " | ".join(p["title"] for p in dashboard["panels"])
    for word in ("outcome", "latency", "In flight", "Time-stamp", "Global configuration", "expiry"):
        assert word in titles


def test_dashboard_is_well_formed() -> None:
    dashboard = _dashboard()
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["type"] == "prometheus"
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
        assert all(t["refId"] and t["expr"] for t in panel["targets"])


def test_alerts_use_only_exposed_metrics() -> None:
    exposed = _exposed_names()
    text = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    exprs = re.findall(r"expr: (?:\|\n((?:\s{10}.*\n)+)|(.*))", text)
    used = {n for block, line in exprs for n in _NAME.findall(block or line)}
    assert used
    assert {n for n in used if not _known(n, exposed)} == set()


@pytest.mark.parametrize(
    ("args", "path"),
    [
        (("check", "config"), DEPLOY / "prometheus" / "prometheus.yml"),
        (("check", "rules"), DEPLOY / "prometheus" / "alerts.yml"),
        (("test", "rules"), DEPLOY / "prometheus" / "alerts_test.yml"),
    ],
    ids=["config", "rules", "rule-tests"],
)
def test_promtool_accepts(args: tuple[str, str], path: Path) -> None:
    result = subprocess.run(
        [promtool(), *args, str(path)], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_shipped_targets_are_the_default_ports() -> None:
    targets = json.loads((DEPLOY / "prometheus" / "targets" / "serai.json").read_text())
    addresses = {t for group in targets for t in group["targets"]}
    assert addresses == {"127.0.0.1:9400", "127.0.0.1:9500"}
