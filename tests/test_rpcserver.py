"""serai.rpcserver: the management-port server binds where it is told, warns when that
is beyond loopback (one test per case of the module docstring's rule), and serves
health on the bound port."""

from __future__ import annotations

import logging

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from serai.rpcserver import bind_management_port, is_loopback, management_server, mark_serving

SERVICE = "serai.test.v1.Nothing"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LocalHost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.1.2.3", False),
        ("gateway.example.org", False),
        ("", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


async def _serve_and_check(host: str, caplog: pytest.LogCaptureFixture) -> list[str]:
    server, health = management_server(
        service_name=SERVICE, add_servicer=lambda _srv: None, max_receive_bytes=1024
    )
    with caplog.at_level(logging.WARNING, logger="serai.rpcserver"):
        port = bind_management_port(server, host, 0, what="the test API")
    assert port > 0
    await server.start()
    try:
        await mark_serving(health, SERVICE)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            answer = await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await server.stop(None)
    return [r.getMessage() for r in caplog.records if r.name == "serai.rpcserver"]


async def test_a_loopback_port_serves_without_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    assert await _serve_and_check("127.0.0.1", caplog) == []


async def test_a_port_beyond_loopback_warns_that_tokens_travel_in_clear(
    caplog: pytest.LogCaptureFixture,
) -> None:
    messages = await _serve_and_check("0.0.0.0", caplog)
    assert len(messages) == 1
    assert messages[0].startswith("the test API listens on 0.0.0.0:")
    assert "without TLS" in messages[0]
    assert "in clear" in messages[0]


async def test_an_address_that_cannot_be_bound_raises() -> None:
    server, _ = management_server(
        service_name=SERVICE, add_servicer=lambda _srv: None, max_receive_bytes=1024
    )
    with pytest.raises(RuntimeError):
        bind_management_port(server, "192.0.2.1", 0, what="the test API")  # TEST-NET-1
