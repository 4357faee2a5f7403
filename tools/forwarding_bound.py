"""How fast can ANY pair of Python grpcio gateways be, on this machine? An experiment.

    python tools/forwarding_bound.py [--in-flight 64] [--payload 1024] [--duration 5]
                                     [--rounds 3] [--json]

It measures, side by side in alternating rounds, a client calling the echo provider
(``tools/echo_provider.py``):

- ``direct``: straight to the echo provider;
- ``unary pair``: through two forwarding processes that do nothing but forward, each
  call as one gRPC call per hop (what a per-call gateway is at best);
- ``mux pair``: through two forwarding processes that carry every call between them
  over ONE long-lived bidirectional stream, batching whatever is queued into one stream
  message each way (what the "one multiplexed stream between gateways" design is at
  best).

The forwarders sign nothing, log nothing, check nothing, and talk plaintext between
themselves (no TLS): every figure is an upper bound for a gateway pair built on
grpcio's asyncio API, whatever it adds on top. The client is this process (one
``grpc.aio`` channel per target, ``--in-flight`` coroutines calling back to back, the
body checked); CPU time per call is read from ``/proc/PID/stat`` for every process.

The result is the evidence behind docs/performance.md's section on the throughput
targets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

import grpc

_SELF: Final = str(Path(__file__).resolve())
_ROOT: Final = Path(_SELF).parent.parent
sys.path.insert(0, str(_ROOT))

from serai._benchload import cpu_sample, drive, open_channel, percentile  # noqa: E402

_STREAM_METHOD: Final = "/forward.v1.Forward/Stream"
_REQ: Final = struct.Struct("!IHI")  # call id, method length, body length
_RESP: Final = struct.Struct("!IBI")  # call id, status (0 ok), body length
_OPTIONS: Final = (
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
)


def _say(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def _serve_until_signal(server: grpc.aio.Server, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await server.start()
    _say("forwarder_listening", listen=f"127.0.0.1:{port}")
    await stop.wait()
    await server.stop(0.5)


async def _unary_forwarder(upstream: str) -> None:
    """Every unary call forwarded as one unary call to ``upstream``."""
    channel = grpc.aio.insecure_channel(upstream, options=_OPTIONS)
    calls: dict[str, Any] = {}

    class Handler(grpc.GenericRpcHandler):  # type: ignore[type-arg]
        def service(self, details: grpc.HandlerCallDetails) -> Any:
            method = details.method
            call = calls.get(method)
            if call is None:
                call = calls[method] = channel.unary_unary(method, None, None)

            async def forward(body: bytes, context: Any) -> bytes:
                return await call(body, timeout=30)  # type: ignore[no-any-return]

            return grpc.unary_unary_rpc_method_handler(forward)

    server = grpc.aio.server(options=_OPTIONS)
    server.add_generic_rpc_handlers((Handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await _serve_until_signal(server, port)


def _sync_forwarder(upstream: str) -> None:
    """The unary pair on grpcio's synchronous API (a thread pool instead of asyncio)."""
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    channel = grpc.insecure_channel(upstream, options=_OPTIONS)
    calls: dict[str, Any] = {}

    class Handler(grpc.GenericRpcHandler):  # type: ignore[type-arg]
        def service(self, details: grpc.HandlerCallDetails) -> Any:
            method = details.method
            call = calls.get(method)
            if call is None:
                call = calls[method] = channel.unary_unary(method, None, None)

            def forward(body: bytes, context: Any) -> bytes:
                return call(body, timeout=30)  # type: ignore[no-any-return]

            return grpc.unary_unary_rpc_method_handler(forward)

    server = grpc.server(ThreadPoolExecutor(max_workers=64), options=_OPTIONS)
    server.add_generic_rpc_handlers((Handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    _say("forwarder_listening", listen=f"127.0.0.1:{port}")
    stop = __import__("threading").Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    server.stop(0.5)


async def _mux_front(upstream: str) -> None:
    """Unary calls in; all of them over one bidirectional stream to the mux back."""
    channel = grpc.aio.insecure_channel(upstream, options=_OPTIONS)
    stream = channel.stream_stream(_STREAM_METHOD, None, None)(None, timeout=None)
    pending: dict[int, asyncio.Future[bytes]] = {}
    queue: list[bytes] = []
    wake = asyncio.Event()
    next_id = 0

    async def writer() -> None:
        while True:
            await wake.wait()
            wake.clear()
            batch = b"".join(queue)
            queue.clear()
            await stream.write(batch)

    async def reader() -> None:
        async for message in stream:
            view = memoryview(message)
            at = 0
            while at < len(view):
                call_id, status, size = _RESP.unpack_from(view, at)
                at += _RESP.size
                future = pending.pop(call_id)
                if status == 0:
                    future.set_result(bytes(view[at : at + size]))
                else:
                    future.set_exception(RuntimeError("upstream failed"))
                at += size

    tasks = [asyncio.create_task(writer()), asyncio.create_task(reader())]

    class Handler(grpc.GenericRpcHandler):  # type: ignore[type-arg]
        def service(self, details: grpc.HandlerCallDetails) -> Any:
            method = details.method.encode()

            async def forward(body: bytes, context: Any) -> bytes:
                nonlocal next_id
                call_id = next_id = (next_id + 1) & 0xFFFFFFFF
                future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
                pending[call_id] = future
                queue.append(_REQ.pack(call_id, len(method), len(body)) + method + body)
                wake.set()
                return await future

            return grpc.unary_unary_rpc_method_handler(forward)

    server = grpc.aio.server(options=_OPTIONS)
    server.add_generic_rpc_handlers((Handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    try:
        await _serve_until_signal(server, port)
    finally:
        for task in tasks:
            task.cancel()


async def _mux_back(upstream: str) -> None:
    """One bidirectional stream in; each call on it forwarded as a unary call."""
    channel = grpc.aio.insecure_channel(upstream, options=_OPTIONS)
    calls: dict[bytes, Any] = {}

    async def stream(context: Any) -> None:
        out: list[bytes] = []
        wake = asyncio.Event()

        async def one(call_id: int, method: bytes, body: bytes) -> None:
            call = calls.get(method)
            if call is None:
                call = calls[method] = channel.unary_unary(method.decode(), None, None)
            try:
                answer = await call(body, timeout=30)
                out.append(_RESP.pack(call_id, 0, len(answer)) + answer)
            except grpc.aio.AioRpcError:
                out.append(_RESP.pack(call_id, 1, 0))
            wake.set()

        async def writer() -> None:
            while True:
                await wake.wait()
                wake.clear()
                batch = b"".join(out)
                out.clear()
                await context.write(batch)

        write_task = asyncio.create_task(writer())
        running: set[asyncio.Task[None]] = set()
        try:
            while True:
                message = await context.read()
                if message is grpc.aio.EOF:  # type: ignore[attr-defined]
                    break
                view = memoryview(message)
                at = 0
                while at < len(view):
                    call_id, method_len, size = _REQ.unpack_from(view, at)
                    at += _REQ.size
                    method = bytes(view[at : at + method_len])
                    at += method_len
                    task = asyncio.create_task(one(call_id, method, bytes(view[at : at + size])))
                    running.add(task)
                    task.add_done_callback(running.discard)
                    at += size
        finally:
            write_task.cancel()

    class Handler(grpc.GenericRpcHandler):  # type: ignore[type-arg]
        def service(self, details: grpc.HandlerCallDetails) -> Any:
            if details.method != _STREAM_METHOD:
                return None

            async def handle(_requests: Any, context: Any) -> None:
                await stream(context)

            return grpc.stream_stream_rpc_method_handler(handle)

    server = grpc.aio.server(options=_OPTIONS)
    server.add_generic_rpc_handlers((Handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await _serve_until_signal(server, port)


def _pairs(before: Any, after: Any) -> list[tuple[float, float]]:
    return [
        (end, before.processes[role])
        for role, end in after.processes.items()
        if end is not None and before.processes[role] is not None
    ]


def _start(argv: list[str], started: list[subprocess.Popen[str]]) -> tuple[int, str]:
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    started.append(process)
    assert process.stdout is not None
    event = json.loads(process.stdout.readline())
    return process.pid, str(event["listen"])


async def _measure(args: argparse.Namespace) -> dict[str, Any]:
    started: list[subprocess.Popen[str]] = []
    me = [sys.executable, _SELF]
    try:
        echo_pid, echo = _start(
            [sys.executable, str(_ROOT / "tools" / "echo_provider.py"), "--listen", "127.0.0.1:0"],
            started,
        )
        ub_pid, ub = _start([*me, "--role", "unary", "--upstream", echo], started)
        uf_pid, uf = _start([*me, "--role", "unary", "--upstream", ub], started)
        sb_pid, sb = _start([*me, "--role", "sync", "--upstream", echo], started)
        sf_pid, sf = _start([*me, "--role", "sync", "--upstream", sb], started)
        mb_pid, mb = _start([*me, "--role", "mux-back", "--upstream", echo], started)
        mf_pid, mf = _start([*me, "--role", "mux-front", "--upstream", mb], started)
        targets = {
            "direct": (echo, {"echo": echo_pid}),
            "unary pair": (uf, {"echo": echo_pid, "front": uf_pid, "back": ub_pid}),
            "sync pair": (sf, {"echo": echo_pid, "front": sf_pid, "back": sb_pid}),
            "mux pair": (mf, {"echo": echo_pid, "front": mf_pid, "back": mb_pid}),
        }
        body = os.urandom(args.payload)
        channels = {name: open_channel(address) for name, (address, _) in targets.items()}
        for channel in channels.values():  # warm-up
            await drive(
                channel, method="/bench.v1.Bench/Echo", metadata=(), body=body,
                in_flight=args.in_flight, seconds=1.0,
            )  # fmt: skip
        rounds: list[dict[str, Any]] = []
        for index in range(args.rounds):
            for name, channel in channels.items():
                pids = targets[name][1]
                before = cpu_sample(pids)
                outcomes = await drive(
                    channel, method="/bench.v1.Bench/Echo", metadata=(), body=body,
                    in_flight=args.in_flight, seconds=args.duration,
                )  # fmt: skip
                after = cpu_sample(pids)
                calls = len(outcomes.latencies_s)
                latencies = sorted(outcomes.latencies_s)
                cpu_ms = {
                    role: round(1e3 * (end - start) / calls, 4)
                    for role, end in after.processes.items()
                    if calls and end is not None and (start := before.processes[role]) is not None
                }
                ours = sum(end - start for end, start in _pairs(before, after))
                rounds.append(
                    {
                        "round": index + 1,
                        "target": name,
                        "calls_per_s": round(calls / outcomes.wall_s, 1),
                        "p50_ms": round(1e3 * (percentile(latencies, 0.5) or 0), 3),
                        "failures": sum(outcomes.errors.values()) + sum(outcomes.refusals.values()),
                        "cpu_ms_per_call": cpu_ms,
                        "cpu_ms_per_call_total": round(sum(cpu_ms.values()), 4),
                        "other_programs_s": round(
                            after.machine_busy_s - before.machine_busy_s - ours, 2
                        ),
                    }
                )
                print(json.dumps(rounds[-1]), file=sys.stderr, flush=True)
        for channel in channels.values():
            await channel.close(None)
        return {"in_flight": args.in_flight, "payload": args.payload, "rounds": rounds}
    finally:
        for process in started:
            process.send_signal(signal.SIGTERM)
        for process in started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
            if process.poll() is None:
                process.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--role", choices=("unary", "sync", "mux-front", "mux-back"), help=argparse.SUPPRESS
    )
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    parser.add_argument("--in-flight", type=int, default=64, help="calls in flight (default 64)")
    parser.add_argument("--payload", type=int, default=1024, help="bytes per call (default 1024)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per target")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument(
        "--uvloop", action="store_true", help="forwarders and client on uvloop (if installed)"
    )
    args = parser.parse_args()
    if args.uvloop or os.environ.get("FORWARDING_BOUND_UVLOOP"):
        importlib.import_module("uvloop").install()  # an optional variant, not a dependency
        os.environ["FORWARDING_BOUND_UVLOOP"] = "1"  # the forwarders it starts too
    if args.role == "unary":
        asyncio.run(_unary_forwarder(args.upstream))
        return 0
    if args.role == "sync":
        _sync_forwarder(args.upstream)
        return 0
    if args.role == "mux-front":
        asyncio.run(_mux_front(args.upstream))
        return 0
    if args.role == "mux-back":
        asyncio.run(_mux_back(args.upstream))
        return 0
    report = asyncio.run(_measure(args))
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        for row in report["rounds"]:
            print(
                f"round {row['round']} {row['target']:>10}: {row['calls_per_s']:>8} calls/s"
                f"  p50 {row['p50_ms']} ms  CPU ms/call {row['cpu_ms_per_call_total']}"
                f" {row['cpu_ms_per_call']}  failures {row['failures']}"
                f"  other programs {row['other_programs_s']} s"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
