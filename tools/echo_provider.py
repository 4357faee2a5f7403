"""A provider information system for tests, benchmarks and the demo.

    python tools/echo_provider.py --listen 127.0.0.1:0

Serves every unary method over plaintext gRPC by returning the request bytes, except:

- ``/echo.v1.Echo/Fail`` fails with the status named by the metadata ``echo-status``
  (a name such as ``FAILED_PRECONDITION``, or a number), NOT_FOUND without it, and the
  message ``echo-message`` (default ``echo: failing as asked``);
- ``/echo.v1.Echo/Slow`` sleeps ``echo-sleep-s`` seconds (default 5), then echoes;
- ``/echo.v1.Echo/Reached`` answers, as ASCII digits, how many calls of other methods
  have reached this provider since it started (counted on arrival, whatever their
  outcome): what tests call directly to prove that a refused exchange never got here.

``grpc.health.v1.Health`` answers SERVING. Once listening it prints one JSON line to
stdout, ``{"event": "echo_listening", "listen": "HOST:PORT", "port": N}``; SIGINT or
SIGTERM stops it (``echo_stopped`` on stdout).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from typing import Any, Final

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer as AioHealthServicer

FAIL_METHOD: Final = "/echo.v1.Echo/Fail"
SLOW_METHOD: Final = "/echo.v1.Echo/Slow"
REACHED_METHOD: Final = "/echo.v1.Echo/Reached"
DEFAULT_SLOW_S: Final = 5.0
_HEALTH_PREFIX: Final = "/grpc.health.v1.Health/"
_MAX_MESSAGE_BYTES: Final = 64 * 1024 * 1024


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and serve until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(description="an echo provider IS (see the docstring)")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0: any)")
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.listen))
    return 0


async def _serve(listen: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    options = (
        ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
    )
    server = grpc.aio.server(options=options)
    health = AioHealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    server.add_generic_rpc_handlers((_Echo(),))
    port = server.add_insecure_port(listen)
    await server.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    host = listen.rpartition(":")[0]
    _say("echo_listening", listen=f"{host}:{port}", port=port)
    await stop.wait()
    await server.stop(1.0)
    _say("echo_stopped")


def _say(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


class _Echo(grpc.GenericRpcHandler):  # type: ignore[type-arg]  # not subscriptable at run time
    def __init__(self) -> None:
        self._reached = 0

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[bytes, bytes] | None:
        method = handler_call_details.method
        if method.startswith(_HEALTH_PREFIX):
            return None

        if method == REACHED_METHOD:

            async def reached(_body: bytes, _context: Any) -> bytes:
                return str(self._reached).encode("ascii")

            return grpc.unary_unary_rpc_method_handler(reached)

        async def answer(body: bytes, context: Any) -> bytes:
            self._reached += 1
            metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
            if method == FAIL_METHOD:
                await context.abort(
                    _status(metadata.get("echo-status")),
                    metadata.get("echo-message", "echo: failing as asked"),
                )
            if method == SLOW_METHOD:
                with contextlib.suppress(ValueError):
                    await asyncio.sleep(float(metadata.get("echo-sleep-s", DEFAULT_SLOW_S)))
            return body

        return grpc.unary_unary_rpc_method_handler(answer)


def _status(text: str | None) -> grpc.StatusCode:
    if text is None:
        return grpc.StatusCode.NOT_FOUND
    for code in grpc.StatusCode:
        if text.upper() == code.name or text == str(code.value[0]):
            return code
    return grpc.StatusCode.NOT_FOUND


if __name__ == "__main__":
    sys.exit(main())
