"""The demo's federation, brought up as an operator would: every part a process on
loopback, set up and registered with ``serai`` commands only.

The registry's management API takes the members, subsystems and gateways (``serai
registry member|subsystem|gateway add``); each gateway is created with ``serai gateway
init``, registered with the command that printed, and started with ``serai gateway
serve`` once the registry publishes a configuration listing it; access rights are
granted through each gateway's admin API (``serai acl grant``).
"""

from __future__ import annotations

import os
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from google.protobuf import descriptor_pb2

from adapters.agencies.scenario import CADASTRE, PROPERTY, TAX
from serai._demoprocs import (
    SERAI,
    Service,
    interrupts_deferred,
    must,
    run_serai,
    run_serai_parallel,
)
from serai._demoreport import Report
from serai.errors import SeraiError
from serai.localprocs import free_port, wait_until_published
from serai_proto.cadastre.v1 import cadastre_pb2
from serai_proto.property.v1 import property_pb2
from serai_proto.tax.v1 import tax_pb2

__all__ = [
    "AGENCIES",
    "GRANTS",
    "NOTARY",
    "Agency",
    "Federation",
]

#: The notary office's information system: files transfer applications with the
#: property registration (a client subsystem of the Ministry of Justice's gateway).
NOTARY: Final = "UZ/GOV/MINJUST/notary"


@dataclass(frozen=True)
class Agency:
    """One agency of the reference scenario: its member, gateway and adapter."""

    key: str  # short name: folders and log files
    member: str
    name: str
    gateway_id: str
    provides: str  # the subsystem its adapter serves
    adapter: str  # `serai adapter run NAME`
    clients: tuple[str, ...]  # subsystems whose information systems call out

    @property
    def subsystems(self) -> tuple[str, ...]:
        return (self.provides, *(c for c in self.clients if c != self.provides))


AGENCIES: Final = (
    Agency(
        key="stc",
        member="UZ/GOV/STC",
        name="State Tax Committee",
        gateway_id="UZ/GOV/STC/gw:main",
        provides=str(TAX),
        adapter="tax",
        clients=(),
    ),
    Agency(
        key="cadastre",
        member="UZ/GOV/CADASTRE",
        name="Cadastre Agency",
        gateway_id="UZ/GOV/CADASTRE/gw:main",
        provides=str(CADASTRE),
        adapter="cadastre",
        clients=(),
    ),
    Agency(
        key="minjust",
        member="UZ/GOV/MINJUST",
        name="Ministry of Justice",
        gateway_id="UZ/GOV/MINJUST/gw:main",
        provides=str(PROPERTY),
        adapter="property",
        clients=(str(PROPERTY), NOTARY),
    ),
)

#: The access rights each provider grants: (agency key, provider, target, subject).
GRANTS: Final = (
    ("stc", str(TAX), "/tax.v1.Tax/GetTaxDebt", str(PROPERTY)),
    ("cadastre", str(CADASTRE), "/cadastre.v1.Cadastre/GetParcel", str(PROPERTY)),
    ("cadastre", str(CADASTRE), "/cadastre.v1.Cadastre/ListEncumbrances", str(PROPERTY)),
    ("minjust", str(PROPERTY), "/property.v1.PropertyRegistration/RegisterTransfer", NOTARY),
)


@dataclass
class GatewayProcess:
    """A gateway of the federation: its files and, once started, its process."""

    agency: Agency
    folder: Path
    peer: str
    is_port: str
    service: Service | None = None
    admin: str = ""
    metrics: str = ""  # the operations HTTP port (/metrics, /healthz, /readyz)
    admin_token: Path = field(init=False)

    @property
    def config(self) -> Path:
        return self.folder / "gateway.toml"

    def __post_init__(self) -> None:
        self.admin_token = self.folder / "admin.token"


class Federation:
    """The processes and files of the demo's federation (module docstring)."""

    def __init__(self, workdir: Path, report: Report) -> None:
        self.workdir = workdir
        self.report = report
        self.services: list[Service] = []
        self.registry_dir = workdir / "registry"
        self.anchor = workdir / "anchor.bin"
        self.registry_env: dict[str, str] = {}
        self.registry_grpc = ""
        self.registry_http = ""
        self.registry_metrics = ""
        self.gateways: dict[str, GatewayProcess] = {
            a.key: GatewayProcess(
                agency=a,
                folder=workdir / "gateways" / a.key,
                peer=f"127.0.0.1:{free_port()}",
                is_port=f"127.0.0.1:{free_port()}",
            )
            for a in AGENCIES
        }

    def start(self, name: str, argv: list[str], *, stopped_event: str) -> Service:
        """Start a long-running process, logging to ``logs/NAME.log``."""
        logs = self.workdir / "logs"
        logs.mkdir(exist_ok=True)
        with interrupts_deferred():  # recorded before an interruption can strike
            service = Service.start(
                name, argv, log=logs / f"{name}.log", stopped_event=stopped_event
            )
            self.services.append(service)
        return service

    # -- registry ---------------------------------------------------------------------------

    def launch_registry(self, pki: Path) -> Service:
        """``serai registry init`` and ``serai registry serve`` (not waited for)."""
        grpc_port, http_port = free_port(), free_port()
        must(
            run_serai(
                "registry", "init", "--dir", self.registry_dir, "--instance", "UZ",
                "--pki", pki, "--grpc-listen", f"127.0.0.1:{grpc_port}",
                "--http-listen", f"127.0.0.1:{http_port}",
            )
        )  # fmt: skip
        config = self.registry_dir / "registry.toml"
        return self.start(
            "registry",
            [*SERAI, "registry", "serve", "--config", str(config)],
            stopped_event="registry_stopped",
        )

    def registry_ready(self, registry: Service) -> None:
        """An admin token for the registry commands; waits until the registry listens."""
        token = self.registry_dir / "admin.token"
        must(
            run_serai(
                "registry", "token", "issue", "--config", self.registry_dir / "registry.toml",
                "--role", "registry-admin", "--subject", "demo-operator", "--out", token,
            )
        )  # fmt: skip
        listening = registry.wait_for("registry_listening")
        self.registry_grpc, self.registry_http = str(listening["grpc"]), str(listening["http"])
        self.registry_metrics = str(listening.get("metrics") or "")
        self.registry_env = {
            **os.environ,
            "SERAI_REGISTRY": self.registry_grpc,
            "SERAI_REGISTRY_TOKEN": token.read_text().strip(),
        }
        self.report.note(
            f"registry pid {registry.pid}: management API (gRPC) on {self.registry_grpc}, "
            f"configuration published on http://{self.registry_http}/"
        )

    def register_agencies(self) -> None:
        """Members, then their subsystems, through the registry's management API; then
        the trust anchor every gateway starts from."""
        folder = self.workdir / "descriptors"
        folder.mkdir()
        for agency in AGENCIES:
            (folder / f"{agency.adapter}.pb").write_bytes(_descriptor_set(agency.adapter))
        rounds = [
            [["registry", "member", "add", a.member, "--name", a.name] for a in AGENCIES],
            [["registry", "subsystem", "add", s] for a in AGENCIES for s in a.subsystems],
            [
                ["registry", "descriptor", "set", a.provides, "--file",
                 str(folder / f"{a.adapter}.pb")]
                for a in AGENCIES
            ],
        ]  # fmt: skip
        for commands in rounds:
            for argv, result in zip(
                commands, run_serai_parallel(commands, env=self.registry_env), strict=True
            ):
                self.report.check(
                    result.returncode == 0,
                    f"serai {shlex.join(argv[:3])} {argv[3]}"
                    + (
                        " (its service descriptors, for reflection)"
                        if argv[1] == "descriptor"
                        else ""
                    )
                    + ("" if result.returncode == 0 else f": {result.stderr.strip()}"),
                )
        config = self.registry_dir / "registry.toml"
        must(run_serai("registry", "anchor", "--config", config, "--out", self.anchor))
        self.report.note(f"trust anchor exported to {self.anchor}")

    # -- gateways ---------------------------------------------------------------------------

    def init_gateways(self, pki: Path, adapters: dict[str, str]) -> None:
        """``serai gateway init`` for each agency (its adapter at ``adapters[key]``), and
        the ``serai registry gateway add`` each one printed."""
        commands: list[list[str | Path]] = []
        for gw in self.gateways.values():
            a = gw.agency
            roles = [arg for c in a.clients for arg in ("--client", c)]
            roles += ["--provider", f"{a.provides}={adapters[a.key]}"]
            commands.append(
                [
                    "gateway", "init", "--dir", gw.folder, "--gateway-id", a.gateway_id,
                    "--pki", pki, "--anchor", self.anchor, "--peer-listen", gw.peer,
                    "--is-listen", gw.is_port, "--admin-listen", "127.0.0.1:0", *roles,
                ]
            )  # fmt: skip
        registrations: list[list[str]] = []
        for result in run_serai_parallel(commands):
            printed = must(result)
            line = next(
                (x for x in printed.splitlines() if "serai registry gateway add" in x), None
            )
            if line is None:
                raise SeraiError(f"serai gateway init printed no registry command: {printed}")
            registrations.append(shlex.split(line)[1:])
        results = run_serai_parallel(registrations, env=self.registry_env)
        for gw, argv, result in zip(self.gateways.values(), registrations, results, strict=True):
            subsystems = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--subsystem"]
            self.report.check(
                result.returncode == 0,
                f"{gw.agency.gateway_id}: `serai gateway init` in gateways/{gw.agency.key}; "
                f"registered at {gw.peer} serving {', '.join(subsystems)}"
                + ("" if result.returncode == 0 else f": {result.stderr.strip()}"),
            )

    def wait_published(self) -> float:
        """Wait until the registry publishes a configuration listing every gateway;
        the seconds it took."""
        began = time.monotonic()
        wait_until_published(self.anchor, {gw.agency.gateway_id for gw in self.gateways.values()})
        return time.monotonic() - began

    def serve_gateways(self) -> None:
        """``serai gateway serve`` for all three at once; waits until each listens."""
        for gw in self.gateways.values():
            gw.service = self.start(
                f"gateway-{gw.agency.key}",
                [*SERAI, "gateway", "serve", "--config", str(gw.config)],
                stopped_event="gateway_stopped",
            )
        self._issue_admin_tokens()  # while the gateways start
        for gw in self.gateways.values():
            assert gw.service is not None  # started above
            event = gw.service.wait_for("gateway_listening")
            gw.admin = str(event["admin"])
            gw.metrics = str(event.get("metrics") or "")
            self.report.note(
                f"{gw.agency.gateway_id} pid {gw.service.pid}: IS port {event['is']}, "
                f"peer port {event['peer']}, admin API {gw.admin}, "
                f"metrics {gw.metrics or '-'}, configuration serial {event['globalconf_serial']}"
            )

    def _issue_admin_tokens(self) -> None:
        """``serai gateway token issue`` of a gateway-admin token for each gateway."""
        issued = run_serai_parallel(
            [
                [
                    "gateway", "token", "issue", "--config", gw.config, "--role",
                    "gateway-admin", "--subject", f"{gw.agency.key}-admin",
                    "--out", gw.admin_token,
                ]
                for gw in self.gateways.values()
            ]
        )  # fmt: skip
        for result in issued:
            must(result)

    def grant_access(self) -> None:
        """The scenario's access rights, through each gateway's admin API."""
        commands: list[list[str | Path]] = []
        for key, provider, target, subject in GRANTS:
            gw = self.gateways[key]
            commands.append(
                ["acl", "grant", provider, target, subject,
                 "--gateway", gw.admin, "--token-file", gw.admin_token]
            )  # fmt: skip
        for (key, _, target, subject), result in zip(
            GRANTS, run_serai_parallel(commands), strict=True
        ):
            self.report.check(
                result.returncode == 0,
                f"{self.gateways[key].agency.gateway_id} grants {target} to {subject}"
                + ("" if result.returncode == 0 else f": {result.stderr.strip()}"),
            )


def _descriptor_set(adapter: str) -> bytes:
    """The serialized FileDescriptorSet of an adapter's service (with its imports), as
    the registry publishes it for gRPC reflection and the metaservices."""
    module = {"tax": tax_pb2, "cadastre": cadastre_pb2, "property": property_pb2}[adapter]
    found = descriptor_pb2.FileDescriptorSet()
    for file in (*module.DESCRIPTOR.dependencies, module.DESCRIPTOR):
        file.CopyToProto(found.file.add())
    return found.SerializeToString()
