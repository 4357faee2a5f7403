"""The property register asking the cadastre through two real gateways (in process, real
TLS, signatures and message logs: tests/gatewayharness.py).

The harness federation has the Ministry of Justice's gateway (client
``UZ/GOV/MINJUST/property``) and the cadastre's (provider ``UZ/GOV/CADASTRE/registry``)
but no tax agency, so these tests take the tax agency's answer from memory, or let the
real gateway refuse the tax query. The three-gateway path runs as processes in the demo.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from adapters.agencies import scenario
from adapters.agencies._db import Database
from adapters.agencies.cadastre import CadastreRegistry, cadastre_service
from adapters.agencies.decision import (
    Answer,
    Application,
    EncumbranceInForce,
    InMemoryAgencies,
    Inquiry,
    Reason,
    decide,
)
from adapters.agencies.property import GatewayAgencies
from adapters.sdk import GatewayClient, ProviderServer
from gateway.acl import AccessPolicy
from tests.gatewayharness import Harness, federation
from tests.test_adapters_agencies import sample_database


@dataclass
class TaxFromMemoryCadastreFromTheBus:
    """Agencies whose tax answers come from memory and cadastre answers over the bus."""

    memory: InMemoryAgencies
    bus: GatewayAgencies

    async def tax_debt(self, taxpayer_id: str, inquiry: Inquiry) -> Answer[int]:
        return await self.memory.tax_debt(taxpayer_id, inquiry)

    async def parcel_owners(
        self, cadastral_number: str, inquiry: Inquiry
    ) -> Answer[tuple[str, ...] | None]:
        return await self.bus.parcel_owners(cadastral_number, inquiry)

    async def encumbrances(
        self, cadastral_number: str, inquiry: Inquiry
    ) -> Answer[tuple[EncumbranceInForce, ...] | None]:
        return await self.bus.encumbrances(cadastral_number, inquiry)


@dataclass
class Bus:
    fed: Harness
    agencies: GatewayAgencies


@pytest.fixture
async def bus(tmp_path: Path) -> AsyncIterator[Bus]:
    async with federation(tmp_path) as fed:
        # The cadastre's adapter takes the place of the harness's echo provider.
        await fed.echo.stop()
        database = Database.open(
            sample_database(tmp_path, "cadastre"), agency="cadastre", writable=False
        )
        server = ProviderServer(
            listen=f"127.0.0.1:{fed.echo.port}",
            services=[cadastre_service(CadastreRegistry(database))],
        )
        await server.start()
        client = GatewayClient(
            gateway=f"127.0.0.1:{fed.consumer.is_port}", client=scenario.PROPERTY, timeout_s=20
        )
        try:
            yield Bus(fed, GatewayAgencies(client, tax=scenario.TAX, cadastre=scenario.CADASTRE))
        finally:
            await client.close()
            await server.stop(0)
            database.close()


def clean_application(request_id: str) -> Application:
    return Application(
        request_id=request_id,
        cadastral_number=scenario.CLEAN_PARCEL,
        seller_id=scenario.CLEAN_SELLER,
        buyer_id=scenario.BUYER,
        price_minor=85_000_000_000,
        currency="UZS",
    )


async def test_a_transfer_decided_on_the_cadastres_signed_answers(bus: Bus) -> None:
    agencies = TaxFromMemoryCadastreFromTheBus(
        InMemoryAgencies(debts={scenario.CLEAN_SELLER: 0}), bus.agencies
    )
    inquiry = Inquiry(user_id="UZ-notary-17", issue="case-1")
    decision = await decide(clean_application("case-1"), agencies, inquiry)
    assert decision.registered, decision.refusals
    cadastre_ids = set(decision.evidence) - {"mem-1"}
    assert len(cadastre_ids) == 2
    # The evidence names exchanges that both gateways logged, request and response.
    for log in (bus.fed.consumer_log, bus.fed.provider_log):
        logged = [r.message_id for r in log.records]
        assert all(logged.count(mid) == 2 for mid in cadastre_ids)
    encumbered = await decide(
        Application(
            request_id="case-2",
            cadastral_number=scenario.ENCUMBERED_PARCEL,
            seller_id=scenario.ENCUMBERED_SELLER,
            buyer_id=scenario.BUYER,
            price_minor=1,
            currency="UZS",
        ),
        TaxFromMemoryCadastreFromTheBus(
            InMemoryAgencies(debts={scenario.ENCUMBERED_SELLER: 0}), bus.agencies
        ),
        inquiry,
    )
    assert [r.reason for r in encumbered.refusals] == [Reason.PARCEL_ENCUMBERED]


async def test_real_gateway_refusals_become_check_unavailable(bus: Bus) -> None:
    # The harness registers no tax agency: the consumer gateway refuses the query.
    decision = await decide(clean_application("case-3"), bus.agencies, Inquiry())
    assert not decision.final
    assert [r.reason for r in decision.refusals] == [Reason.CHECK_UNAVAILABLE]
    assert decision.refusals[0].detail.startswith("the tax agency could not be asked")
    assert "unknown_service" in decision.refusals[0].detail
    # Revoke the cadastre's access right: its gateway refuses with access_denied.
    bus.fed.provider_policy.replace(AccessPolicy([]))
    denied = await decide(clean_application("case-4"), bus.agencies, Inquiry())
    details = " ".join(r.detail for r in denied.refusals)
    assert "access_denied" in details
    assert "unknown_service" in details
    assert not denied.final
