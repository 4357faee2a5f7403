"""An example agency's configuration file, typed and validated.

Tax agency and cadastre (``serai adapter init tax|cadastre`` writes this; relative paths
are relative to the directory holding the file)::

    listen = "127.0.0.1:7001"         # the IS port its gateway calls (port 0: any free)
    database = "tax.db"               # SQLite; sample data is generated if it is absent
    # seed = 20240915                 # seed of that sample data
    # max_message_bytes = 4194304     # largest request or response accepted

Property registration adds its own gateway and the subsystems it asks::

    listen = "127.0.0.1:7003"
    database = "property.db"
    gateway = "127.0.0.1:5500"                  # the local gateway's IS port
    client = "UZ/GOV/MINJUST/property"          # the subsystem it calls as
    tax_service = "UZ/GOV/STC/tax"              # the provider subsystems it asks
    cadastre_service = "UZ/GOV/CADASTRE/registry"
    # timeout_s = 10                            # deadline of each query, in seconds

Every refusal is a :class:`~serai.errors.ConfigError` naming the file, the key and what
was expected; an unknown key is refused (a property key in a tax file, say).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from adapters.agencies import scenario
from adapters.agencies.sampledata import SEED
from adapters.sdk.provider import DEFAULT_MAX_MESSAGE_BYTES
from serai.cliutil import format_address, parse_listen
from serai.errors import ConfigError
from serai.identifiers import SubsystemId
from serai.tomlconf import TomlReader, parse_toml, read_config_text, toml_string

__all__ = [
    "AGENCY_NAMES",
    "DEFAULT_LISTEN",
    "DEFAULT_TIMEOUT_S",
    "AdapterConfig",
    "BusConfig",
    "load_config",
    "parse_config",
    "render_config",
]

#: The example agencies, as ``serai adapter`` names them.
AGENCY_NAMES: Final = ("tax", "cadastre", "property")
#: Default IS port of each agency.
DEFAULT_LISTEN: Final = {
    "tax": "127.0.0.1:7001",
    "cadastre": "127.0.0.1:7002",
    "property": "127.0.0.1:7003",
}
#: Default deadline of each query the property register makes, in seconds.
DEFAULT_TIMEOUT_S: Final = 10.0
_DOCS: Final = "docs/adapters.md"
_COMMON_KEYS: Final = frozenset({"listen", "database", "seed", "max_message_bytes"})
_BUS_KEYS: Final = frozenset({"gateway", "client", "tax_service", "cadastre_service", "timeout_s"})


@dataclass(frozen=True, slots=True, kw_only=True)
class BusConfig:
    """How the property register reaches the other agencies: its own gateway."""

    #: The local gateway's IS port, ``HOST:PORT``.
    gateway: str
    #: The subsystem it calls as, and the provider subsystems it asks.
    client: SubsystemId
    tax_service: SubsystemId
    cadastre_service: SubsystemId
    #: Deadline of each query, in seconds.
    timeout_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class AdapterConfig:
    """A validated configuration of one example agency (paths absolute)."""

    path: Path
    agency: str
    #: The IS port, ``HOST:PORT`` (port 0: any free port).
    listen: str
    database: Path
    #: Seed of the sample data generated when ``database`` is absent.
    seed: int
    max_message_bytes: int
    #: Set for ``property`` only.
    bus: BusConfig | None


def load_config(agency: str, path: Path) -> AdapterConfig:
    """Read and validate the configuration of ``agency`` at ``path``."""
    _check_agency(agency)
    text = read_config_text(path, created_by=f"serai adapter init {agency}")
    return parse_config(agency, path, text)


def parse_config(agency: str, path: Path, text: str) -> AdapterConfig:
    """Validate ``text`` as the configuration of ``agency`` in the file ``path``."""
    _check_agency(agency)
    reader = TomlReader(path, parse_toml(path, text))
    known = _COMMON_KEYS | (_BUS_KEYS if agency == "property" else frozenset())
    reader.refuse_unknown(known, docs=_DOCS)
    return AdapterConfig(
        path=path,
        agency=agency,
        listen=_address(reader, "listen", reader.string("listen"), any_port=True),
        database=reader.file(reader.string("database")),
        seed=reader.integer("seed", SEED),
        max_message_bytes=reader.integer("max_message_bytes", DEFAULT_MAX_MESSAGE_BYTES),
        bus=_bus(reader) if agency == "property" else None,
    )


def render_config(
    agency: str,
    *,
    listen: str | None = None,
    database: str | None = None,
    gateway: str = "127.0.0.1:5500",
) -> str:
    """The text of a new configuration of ``agency`` (module docstring)."""
    _check_agency(agency)
    lines = [
        f"# Serai example agency: {agency} (written by `serai adapter init`; see {_DOCS})",
        f"listen = {toml_string(listen or DEFAULT_LISTEN[agency])}",
        f"database = {toml_string(database or f'{agency}.db')}",
        f"seed = {SEED}",
    ]
    if agency == "property":
        lines += [
            f"gateway = {toml_string(gateway)}",
            f"client = {toml_string(str(scenario.PROPERTY))}",
            f"tax_service = {toml_string(str(scenario.TAX))}",
            f"cadastre_service = {toml_string(str(scenario.CADASTRE))}",
            f"timeout_s = {int(DEFAULT_TIMEOUT_S)}",
        ]
    return "\n".join(lines) + "\n"


def _check_agency(agency: str) -> None:
    if agency not in AGENCY_NAMES:
        raise ConfigError(f"unknown agency {agency!r}: expected one of {', '.join(AGENCY_NAMES)}")


def _bus(reader: TomlReader) -> BusConfig:
    return BusConfig(
        gateway=_address(reader, "gateway", reader.string("gateway"), any_port=False),
        client=reader.checked("client", SubsystemId.parse, reader.string("client")),
        tax_service=reader.checked("tax_service", SubsystemId.parse, reader.string("tax_service")),
        cadastre_service=reader.checked(
            "cadastre_service", SubsystemId.parse, reader.string("cadastre_service")
        ),
        timeout_s=reader.number("timeout_s", DEFAULT_TIMEOUT_S),
    )


def _address(reader: TomlReader, key: str, value: str, *, any_port: bool) -> str:
    try:
        host, port = parse_listen(value)
    except ConfigError:
        host, port = "", -1
    if not host or port < 0 or (port == 0 and not any_port):
        expected = "HOST:PORT (port 0: any free port)" if any_port else "HOST:PORT, port 1-65535"
        raise reader.fail(key, f"expected {expected}, got {value!r}")
    return format_address(host, port)
