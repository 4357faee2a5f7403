"""The demo's three agency adapters (``serai adapter run tax|cadastre|property``), each
with its own configuration file and SQLite sample database in the work directory."""

from __future__ import annotations

import os

from serai._demofederation import AGENCIES, Federation
from serai._demoprocs import SERAI, Service, must, run_serai_parallel
from serai._demoreport import Report

__all__ = ["adapter_addresses", "start_adapters"]


def start_adapters(federation: Federation) -> dict[str, Service]:
    """``serai adapter init`` and ``serai adapter run`` for the three agencies (keyed by
    agency); the property adapter calls out through the Ministry of Justice's gateway,
    at the IS port chosen for it. Each builds its sample database when it starts."""
    gateway_is = federation.gateways["minjust"].is_port
    configs = {
        a.key: federation.workdir / "adapters" / a.adapter / "adapter.toml" for a in AGENCIES
    }
    for config in configs.values():
        config.parent.mkdir(parents=True)
    for result in run_serai_parallel(
        [
            ["adapter", "init", a.adapter, "--config", configs[a.key],
             "--listen", "127.0.0.1:0", "--gateway", gateway_is]
            for a in AGENCIES
        ]
    ):  # fmt: skip
        must(result)
    return {
        a.key: federation.start(
            f"adapter-{a.adapter}",
            [*SERAI, "adapter", "run", a.adapter, "--config", str(configs[a.key])],
            stopped_event="adapter_stopped",
        )
        for a in AGENCIES
    }


def adapter_addresses(adapters: dict[str, Service], report: Report) -> dict[str, str]:
    """Wait until each adapter listens; their addresses, keyed by agency."""
    found: dict[str, str] = {}
    for agency in AGENCIES:
        service = adapters[agency.key]
        event = service.wait_for("adapter_listening")
        found[agency.key] = str(event["address"])
        report.note(
            f"{agency.adapter} adapter pid {service.pid} on {found[agency.key]}, serving "
            f"{event['subsystem']}; database {_relative(event['database'], service)}"
        )
    return found


def _relative(path: object, service: Service) -> str:
    """``path`` relative to the work directory (the parent of the service's log folder)."""
    return os.path.relpath(str(path), service.log.parent.parent)
