"""Running one example agency: what ``serai adapter run`` does after reading the file.

In order: the sample database is generated if the file is absent (event
``sample_data_created``), opened and checked to be this agency's; the service is
registered on a :class:`~adapters.sdk.ProviderServer` (with health and reflection);
the property register also opens its :class:`~adapters.sdk.GatewayClient`. Once the
port is bound the event ``adapter_listening`` gives its address. SIGINT or SIGTERM
stops it: calls in flight get :data:`STOP_GRACE_S` to finish, the gateway client and
the database are closed, and ``adapter_stopped`` is the last line.

Events are JSON lines on stderr (:func:`serai.cliutil.log_event`).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

from adapters.agencies import scenario
from adapters.agencies._db import Database
from adapters.agencies.cadastre import CadastreRegistry, cadastre_service
from adapters.agencies.config import AdapterConfig
from adapters.agencies.property import GatewayAgencies, property_service
from adapters.agencies.sampledata import create_sample_database
from adapters.agencies.tax import TaxRegistry, tax_service
from adapters.agencies.transfers import TransferBook
from adapters.sdk import GatewayClient, ProviderServer, ServiceRegistration
from serai.cliutil import format_address, log_event, parse_listen, termination_event
from serai.errors import ConfigError

__all__ = ["STOP_GRACE_S", "SUBSYSTEMS", "run_adapter"]

#: Seconds calls in flight get to finish when the adapter stops.
STOP_GRACE_S: Final = 5.0
#: The subsystem each agency serves in the reference scenario (for its log lines).
SUBSYSTEMS: Final = {
    "tax": scenario.TAX,
    "cadastre": scenario.CADASTRE,
    "property": scenario.PROPERTY,
}


async def run_adapter(config: AdapterConfig) -> None:
    """Run the agency of ``config`` until SIGINT or SIGTERM (module docstring)."""
    loop = asyncio.get_running_loop()
    with termination_event() as stop, contextlib.ExitStack() as closing:
        created = await loop.run_in_executor(
            None,
            lambda: create_sample_database(config.agency, config.database, seed=config.seed),
        )
        if created:
            log_event(
                "sample_data_created",
                agency=config.agency,
                database=str(config.database),
                seed=config.seed,
            )
        database = await loop.run_in_executor(
            None,
            lambda: Database.open(
                config.database, agency=config.agency, writable=config.agency == "property"
            ),
        )
        closing.callback(database.close)
        client: GatewayClient | None = None
        try:
            registration, client = _registration(config, database)
            server = ProviderServer(
                listen=config.listen,
                services=[registration],
                max_message_bytes=config.max_message_bytes,
            )
            try:
                port = await server.start()
            except OSError as exc:
                raise ConfigError(f"{config.path}: key 'listen': {exc}") from exc
            host, _ = parse_listen(config.listen)
            log_event(
                "adapter_listening",
                agency=config.agency,
                subsystem=str(SUBSYSTEMS[config.agency]),
                address=format_address(host, port),
                database=str(config.database),
            )
            await stop.wait()
            await server.stop(STOP_GRACE_S)
        finally:
            if client is not None:
                await client.close()
    log_event("adapter_stopped", agency=config.agency)


def _registration(
    config: AdapterConfig, database: Database
) -> tuple[ServiceRegistration, GatewayClient | None]:
    if config.agency == "tax":
        return tax_service(TaxRegistry(database)), None
    if config.agency == "cadastre":
        return cadastre_service(CadastreRegistry(database)), None
    bus = config.bus
    if bus is None:  # parse_config sets it for property
        raise ConfigError(f"{config.path}: the property register needs its gateway settings")
    client = GatewayClient(gateway=bus.gateway, client=bus.client, timeout_s=bus.timeout_s)
    agencies = GatewayAgencies(client, tax=bus.tax_service, cadastre=bus.cadastre_service)
    return property_service(TransferBook(database), agencies), client
