"""A SeraiError put on the wire by :func:`serai.rpcerrors.abort_with` and read back by
:func:`serai.rpcerrors.error_from_rpc`: through a real grpc.aio server and client, and
(Hypothesis) through the trailer codec alone."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serai.errors import ERROR_METADATA_KEY, ErrorCode, Origin, SeraiError, grpc_status_for
from serai.rpcerrors import (
    MAX_TRAILER_CHARS,
    abort_with,
    error_from_rpc,
    error_trailer,
    internal_error,
)

_REFUSE = "/serai.test.Refuser/Refuse"
_BARE = "/serai.test.Refuser/Bare"


async def _refuse(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    fields = json.loads(request)
    error = SeraiError(
        fields["message"], code=ErrorCode(fields["code"]), origin=Origin(fields["origin"])
    )
    await abort_with(context, error)


async def _bare(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    """Aborts with the status named by the request and no ``x-road-error`` trailer,
    or with a malformed one when the request says so."""
    fields = json.loads(request)
    if "trailer" in fields:
        context.set_trailing_metadata(((ERROR_METADATA_KEY, fields["trailer"]),))
    await context.abort(grpc.StatusCode[fields["status"]], "plain details")


@dataclass
class Peer:
    channel: grpc.aio.Channel
    address: str

    async def call(self, method: str, **fields: str) -> SeraiError:
        rpc = _method(self.channel, method)
        with pytest.raises(grpc.RpcError) as info:
            await rpc(json.dumps(fields).encode(), timeout=10)
        return error_from_rpc(info.value, what=f"test peer at {self.address}")


def _method(channel: grpc.aio.Channel, method: str) -> Any:
    """A raw-bytes unary method (no generated stub: the test service has none)."""
    return channel.unary_unary(method, request_serializer=None, response_deserializer=None)


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    server = grpc.aio.server()
    handlers = {
        "Refuse": grpc.unary_unary_rpc_method_handler(_refuse),
        "Bare": grpc.unary_unary_rpc_method_handler(_bare),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("serai.test.Refuser", handlers),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    address = f"127.0.0.1:{port}"
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            yield Peer(channel, address)
    finally:
        await server.stop(0)


ROUND_TRIPS = {
    "plain": (ErrorCode.NOT_FOUND, Origin.CLIENT, "member UZ/GOV/X is not registered"),
    "colons in the message": (ErrorCode.INVALID_REQUEST, Origin.CLIENT, "rule: target: a:b:c"),
    "internal": (ErrorCode.INTERNAL, Origin.GATEWAY, "internal error"),
    "provider side": (ErrorCode.PROVIDER_UNAVAILABLE, Origin.PROVIDER, "cannot reach the IS"),
    "empty message": (ErrorCode.PERMISSION_DENIED, Origin.CLIENT, ""),
}


@pytest.mark.parametrize("case", sorted(ROUND_TRIPS))
async def test_round_trip_through_a_real_server(peer: Peer, case: str) -> None:
    code, origin, message = ROUND_TRIPS[case]
    error = await peer.call(_REFUSE, code=code.value, origin=origin.value, message=message)
    assert (error.code, error.origin, error.message) == (code, origin, message)


async def test_status_is_the_codes(peer: Peer) -> None:
    rpc = _method(peer.channel, _REFUSE)
    fields = {"code": "already_exists", "origin": "client", "message": "m"}
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await rpc(json.dumps(fields).encode(), timeout=10)
    assert info.value.code() is grpc_status_for(ErrorCode.ALREADY_EXISTS)
    assert info.value.details() == "m"


async def test_non_ascii_message_is_escaped_not_lost(peer: Peer) -> None:
    message = "subsystem Ünï/çødé — “quoted” ✓"
    error = await peer.call(_REFUSE, code="invalid_request", origin="client", message=message)
    assert error.code is ErrorCode.INVALID_REQUEST
    assert error.message == message.encode("ascii", "backslashreplace").decode("ascii")
    assert error.message.isascii()


async def test_control_characters_are_escaped_not_lost(peer: Peer) -> None:
    message = "line one\nline two\ttabbed\r\x00\x7f end"
    error = await peer.call(_REFUSE, code="invalid_request", origin="client", message=message)
    assert error.code is ErrorCode.INVALID_REQUEST
    assert error.message == "line one\\x0aline two\\x09tabbed\\x0d\\x00\\x7f end"


async def test_over_long_message_is_cut_to_the_bound(peer: Peer) -> None:
    message = "x" * (3 * MAX_TRAILER_CHARS)
    error = await peer.call(_REFUSE, code="invalid_request", origin="client", message=message)
    assert error.code is ErrorCode.INVALID_REQUEST
    assert error.origin is Origin.CLIENT
    assert len(error.wire_value()) == MAX_TRAILER_CHARS
    assert message.startswith(error.message)


BARE_STATUSES = {
    "NOT_FOUND": ErrorCode.NOT_FOUND,
    "UNAUTHENTICATED": ErrorCode.UNAUTHENTICATED,
    "PERMISSION_DENIED": ErrorCode.PERMISSION_DENIED,
    "INVALID_ARGUMENT": ErrorCode.INVALID_REQUEST,
    "FAILED_PRECONDITION": ErrorCode.FAILED_PRECONDITION,
    "RESOURCE_EXHAUSTED": ErrorCode.INTERNAL,
    "UNIMPLEMENTED": ErrorCode.INTERNAL,
}


@pytest.mark.parametrize("status", sorted(BARE_STATUSES))
async def test_status_without_trailer(peer: Peer, status: str) -> None:
    error = await peer.call(_BARE, status=status)
    assert error.code is BARE_STATUSES[status]
    assert error.message == f"test peer at {peer.address} answered {status}: plain details"


@pytest.mark.parametrize(
    "trailer", ["gateway:no_such_code:m", "nobody:not_found:m", "no colons at all"]
)
async def test_malformed_trailer_falls_back_to_the_status(peer: Peer, trailer: str) -> None:
    error = await peer.call(_BARE, status="NOT_FOUND", trailer=trailer)
    assert error.code is ErrorCode.NOT_FOUND
    assert error.message.endswith("answered NOT_FOUND: plain details")


async def test_unreachable_peer() -> None:
    async with grpc.aio.insecure_channel("127.0.0.1:1") as channel:
        with pytest.raises(grpc.RpcError) as info:
            await _method(channel, _REFUSE)(b"{}", timeout=10)
    error = error_from_rpc(info.value, what="test peer at 127.0.0.1:1")
    assert error.message.startswith("cannot reach the test peer at 127.0.0.1:1: ")


def test_unimplemented_method_reads_as_internal() -> None:
    class Call(grpc.RpcError):
        def trailing_metadata(self) -> tuple[Any, ...]:
            return ()

        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.UNIMPLEMENTED

        def details(self) -> str:
            return "Method not found!"

    error = error_from_rpc(Call(), what="peer at h:1")
    assert error.code is ErrorCode.INTERNAL
    assert str(error) == "internal: peer at h:1 answered UNIMPLEMENTED: Method not found!"


def test_internal_error_logs_the_details_and_sends_none(
    capsys: pytest.CaptureFixture[str],
) -> None:
    error = internal_error(KeyError("secret-ish detail"), event="test_internal_error")
    assert (error.code, error.message) == (ErrorCode.INTERNAL, "internal error")
    line = json.loads(capsys.readouterr().err)
    assert line == {"event": "test_internal_error", "error": "KeyError: 'secret-ish detail'"}


class _Trailed(grpc.RpcError):
    """A failed call that carries ``metadata`` as its trailer (the codec without a wire)."""

    def __init__(self, metadata: tuple[tuple[str, str], ...], status: grpc.StatusCode) -> None:
        self._metadata = metadata
        self._status = status

    def trailing_metadata(self) -> tuple[Any, ...]:
        return self._metadata

    def code(self) -> grpc.StatusCode:
        return self._status

    def details(self) -> str:
        return "details"


@settings(max_examples=300)
@given(
    code=st.sampled_from(ErrorCode),
    origin=st.sampled_from(Origin),
    message=st.text(max_size=2 * MAX_TRAILER_CHARS),
)
def test_trailer_codec_round_trip(code: ErrorCode, origin: Origin, message: str) -> None:
    sent = SeraiError(message, code=code, origin=origin)
    ((key, value),) = error_trailer(sent)
    assert key == ERROR_METADATA_KEY
    assert value.isascii()
    assert value.isprintable()
    assert len(value) <= MAX_TRAILER_CHARS
    back = error_from_rpc(_Trailed(((key, value),), sent.status), what="peer at h:1")
    assert (back.code, back.origin) == (code, origin)
    escaped = message.encode("ascii", "backslashreplace").decode("ascii")
    escaped = "".join(f"\\x{ord(c):02x}" if not c.isprintable() else c for c in escaped)
    assert escaped.startswith(back.message)
    if len(sent.wire_value()) <= MAX_TRAILER_CHARS and message.isascii() and message.isprintable():
        assert back.message == message
