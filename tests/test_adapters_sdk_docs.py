"""docs/adapters.md's example runs: its Python blocks (the cadastre provider and the
property registration consumer) are executed as written, the provider behind the
provider gateway of tests/gatewayharness.py and the consumer calling the consumer
gateway."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import grpc
import pytest

from adapters.sdk import ExchangeRefused
from serai.localprocs import free_port
from tests.gatewayharness import federation

DOC = Path(__file__).resolve().parent.parent / "docs" / "adapters.md"


def example() -> dict[str, Any]:
    """The doc's ```python blocks, executed in order in one namespace (not as __main__)."""
    blocks = re.findall(r"^```python\n(.*?)^```$", DOC.read_text(encoding="utf-8"), re.M | re.S)
    assert len(blocks) == 2, "docs/adapters.md: one provider and one consumer block"
    namespace: dict[str, Any] = {"__name__": "adapters_doc_example"}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)
    return namespace


async def test_the_documented_example_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = example()
    server = doc["cadastre_server"](f"127.0.0.1:{free_port()}")
    port = await server.start()
    try:
        async with federation(tmp_path, provider_address=f"127.0.0.1:{port}") as harness:
            gateway = f"127.0.0.1:{harness.consumer.is_port}"
            owners = await doc["owners_of"]("10:01:01:01:01:0001", gateway=gateway)
            assert owners == ["Dilnoza Karimova"]
            printed = capsys.readouterr().out
            assert "UZ/GOV/MINJUST/property asks for 10:01:01:01:01:0001" in printed
            assert "(user '31507761230012', issue 'sale-2024-117')" in printed
            assert re.search(r"exchange [0-9a-f-]{36}, request hash [0-9a-f]{64}", printed)

            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await doc["owners_of"]("99", gateway=gateway)
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
            assert caught.value.details() == "parcel 99 is not in the cadastre"
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await doc["owners_of"]("", gateway=gateway)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT

            await server.stop(0)
            with pytest.raises(ExchangeRefused) as refused:
                await doc["owners_of"]("10:01:01:01:01:0001", gateway=gateway)
            assert refused.value.code == "provider_unavailable"
            assert "the bus refused: provider:provider_unavailable" in capsys.readouterr().out
    finally:
        await server.stop(0)
