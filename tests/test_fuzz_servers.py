"""Fuzzing the servers that put trust-boundary decoders on the network (issue 9, point 4).

Each server runs for real on loopback (its own asyncio loop in a background thread, the
same code ``serai`` runs); Hypothesis fires fuzzed input at it over a real socket and
checks the answer is the documented one, then a valid request must still succeed (the
server stayed up and unharmed). The decoders themselves are fuzzed in depth by
``tests/test_fuzz_boundaries.py``.

- **OCSP responder over HTTP** (``certs.ocsp_http``): a ``POST`` of
  ``application/ocsp-request`` or a ``GET`` of base64 is answered HTTP 200 with a DER
  ``OCSPResponse`` that is ``malformedRequest``, ``unauthorized`` or signed, never
  ``internalError`` and never HTTP 500; another content type is HTTP 415.
- **TSA over HTTP** (``certs.tsa.create_app``): a ``POST`` of
  ``application/timestamp-query`` is HTTP 200 with a DER ``TimeStampResp``, granted or
  rejected with a documented failure (never ``systemFailure``); another content type is
  HTTP 415 with a ``badDataFormat`` rejection; another method 405.
- **Gateway peer port** (``gateway.provider``, mutual TLS as the registered consumer
  gateway): a fuzzed ``ExchangeRequest`` (envelope bytes, signed header, certificate
  chain, stapled OCSP response, timeout) is refused with a gRPC status and an
  ``x-road-error`` trailer ``client:<code>`` of the documented codes (or
  ``provider:deadline_exceeded`` for a timeout of zero or less), never ``INTERNAL``, and
  the provider IS is never reached by a refused exchange.
- **Gateway IS port** (``gateway.consumer``): fuzzed ``x-road-client``, ``x-road-service``
  and ``x-road-id`` metadata are refused with a status and an ``x-road-error`` trailer,
  never ``INTERNAL``.
- **Registry management API and publication endpoint** (``registry.server`` over
  PostgreSQL): fuzzed bearer tokens are ``UNAUTHENTICATED``; fuzzed identifiers in
  otherwise valid requests are refused with their documented status and
  ``x-road-error`` (or accepted); request bytes that are not the request message are
  ``invalid_request`` (after authentication), never grpc's ``UNKNOWN``; fuzzed paths of
  the HTTP endpoint never get HTTP 500.

The default run fires a modest number of inputs at each server; the ``slow`` variants
thousands.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import datetime as dt
import http.client
import itertools
import threading
import urllib.parse
from collections.abc import Awaitable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from google.protobuf import message_factory
from hypothesis import given
from hypothesis import strategies as st

from certs.keys import generate_private_key, load_certificate_chain
from certs.ocsp import OCSPResponder
from certs.ocsp_client import build_request
from certs.ocsp_http import OCSP_REQUEST_TYPE, OCSP_RESPONSE_TYPE, OCSPServer
from certs.pkidir import PKIDirectory
from certs.profiles import Profile
from certs.timestamp import (
    TIMESTAMP_QUERY,
    TIMESTAMP_REPLY,
    TimeStampRespStructure,
    build_query,
    new_nonce,
    verify_reply,
)
from certs.tsa import DEFAULT_MAX_BODY_BYTES, TimeStampAuthority, create_app
from gateway.headers import request_header_for
from gateway.signing import SignedHeader
from registry.publisher import Publisher
from registry.server import RegistryServer
from registry.sqlstore import SqlRegistryStore
from serai.errors import ERROR_METADATA_KEY, ErrorCode, grpc_status_for
from serai.tokens import TokenIssuer, TokenVerifier
from serai_proto.registry.v1 import registry_pb2 as rpb
from serai_proto.transport.v1 import transport_pb2
from tests import fuzzstrategies as fz
from tests.gatewayharness import GET_PARCEL, PROPERTY, REGISTRY, Harness, federation, trailers_of
from tests.pgutil import fresh_database

_T = TypeVar("_T")


# -- a loop in a thread, so that synchronous Hypothesis tests can drive async servers ----------


class LoopThread:
    """An asyncio loop running in a daemon thread; :meth:`run` waits for a coroutine."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Awaitable[_T], timeout_s: float = 120.0) -> _T:
        async def wrapped() -> _T:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrapped(), self.loop).result(timeout_s)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)
        self.loop.close()


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    try:
        yield thread
    finally:
        thread.close()


def _enter(loop: LoopThread, manager: AbstractAsyncContextManager[_T]) -> _T:
    return loop.run(manager.__aenter__())


def _exit(loop: LoopThread, manager: AbstractAsyncContextManager[Any]) -> None:
    loop.run(manager.__aexit__(None, None, None))


def _http(
    port: int, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 exchange with a loopback server: status, headers, body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


# -- OCSP responder ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    directory: PKIDirectory
    root: x509.Certificate
    issuing: x509.Certificate
    leaf: x509.Certificate

    def __repr__(self) -> str:
        return "Pki(...)"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = PKIDirectory.init(tmp_path_factory.mktemp("fuzz-servers") / "pki", instance="UZ")
    ca = directory.issuing_ca()
    leaf = ca.issue(Profile.SIGN, "UZ/GOV/STC", generate_private_key().public_key())
    return Pki(
        directory=directory,
        root=directory.root_certificate(),
        issuing=load_certificate_chain(directory.issuing_cert)[0],
        leaf=leaf,
    )


@pytest.fixture(scope="module")
def ocsp_port(loop: LoopThread, pki: Pki) -> Iterator[int]:
    ca = pki.directory.issuing_ca()
    key, chain = pki.directory.ocsp_signer()
    responder = OCSPResponder(
        key=key, certificate=chain[0], issuers=[ca.certificate], source=ca.records
    )
    server = OCSPServer(responder=responder, host="127.0.0.1", port=0)
    loop.run(server.start())
    try:
        yield server.port
    finally:
        loop.run(server.stop())


#: aiohttp answers 400 to a request line of more than 8,190 bytes before any handler runs.
_MAX_REQUEST_LINE = 8_170

_OCSP_STATUSES = {
    ocsp.OCSPResponseStatus.MALFORMED_REQUEST,
    ocsp.OCSPResponseStatus.UNAUTHORIZED,
    ocsp.OCSPResponseStatus.SUCCESSFUL,
}


def _ocsp_answer(status: int, headers: dict[str, str], body: bytes) -> ocsp.OCSPResponse:
    assert status == 200, (status, body[:200])
    assert headers["content-type"] == OCSP_RESPONSE_TYPE
    answer = ocsp.load_der_ocsp_response(body)
    assert answer.response_status in _OCSP_STATUSES, answer.response_status
    return answer


def _ocsp_still_answers(port: int, pki: Pki) -> None:
    request = build_request(pki.leaf, pki.issuing)
    status, headers, body = _http(port, "POST", "/", request, {"Content-Type": OCSP_REQUEST_TYPE})
    answer = _ocsp_answer(status, headers, body)
    assert answer.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert answer.certificate_status is ocsp.OCSPCertStatus.GOOD


@pytest.mark.parametrize("examples", fz.SERVER_EXAMPLES)
def test_ocsp_responder_over_http(ocsp_port: int, pki: Pki, examples: int) -> None:
    valid = build_request(pki.leaf, pki.issuing)

    @fz.server_settings(examples)
    @given(
        item=fz.inputs(fz.raw_bytes(), fz.der_values()),
        how=st.sampled_from(["post", "post", "get", "get-raw", "post-type"]),
        content_type=st.sampled_from(["text/plain", "application/ocsp-response", "", "a/b; x=1"]),
    )
    def fire(item: fz.Item, how: str, content_type: str) -> None:
        body = fz.resolve(item, valid)
        if how == "post":
            _ocsp_answer(*_http(ocsp_port, "POST", "/", body, {"Content-Type": OCSP_REQUEST_TYPE}))
        elif how == "post-type":
            status, _, reply = _http(ocsp_port, "POST", "/", body, {"Content-Type": content_type})
            assert status == 415, (status, reply[:200])
        else:
            text = base64.b64encode(body).decode() if how == "get" else body.decode("latin-1")
            path = "/" + urllib.parse.quote(text, safe="" if how == "get" else "/")
            answer = _http(ocsp_port, "GET", path)
            if answer[0] == 400:  # aiohttp's HTTP parser refuses a request line over 8 KiB
                assert len(path) > _MAX_REQUEST_LINE, path
            else:
                _ocsp_answer(*answer)

    fire()
    _ocsp_still_answers(ocsp_port, pki)


# -- TSA -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tsa_port(loop: LoopThread, pki: Pki) -> Iterator[int]:
    key, chain = pki.directory.tsa_signer()
    app = create_app(TimeStampAuthority(key=key, chain=chain))
    runner = web.AppRunner(app)

    async def start() -> int:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server: Any = site._server
        return int(server.sockets[0].getsockname()[1])

    port = loop.run(start())
    try:
        yield port
    finally:
        loop.run(runner.cleanup())


_TSA_FAILURES = {"bad_data_format", "bad_alg", "unaccepted_policy", "unaccepted_extensions"}


def _tsa_reply(body: bytes) -> tuple[str, set[str]]:
    reply = TimeStampRespStructure.load(body)
    status = reply["status"]["status"].native
    failures = set(reply["status"]["fail_info"].native or ())
    return status, failures


@pytest.mark.parametrize("examples", fz.SERVER_EXAMPLES)
def test_tsa_over_http(tsa_port: int, pki: Pki, examples: int) -> None:
    valid = build_query(b"evidence", nonce=new_nonce())

    @fz.server_settings(examples)
    @given(
        item=fz.inputs(fz.raw_bytes(), fz.der_values()),
        how=st.sampled_from(["post", "post", "post", "post-type", "get"]),
        content_type=st.sampled_from(
            ["text/plain", TIMESTAMP_REPLY, "", "application/ocsp-request"]
        ),
    )
    def fire(item: fz.Item, how: str, content_type: str) -> None:
        body = fz.resolve(item, valid)
        if how == "get":
            status, _, _ = _http(tsa_port, "GET", "/")
            assert status == 405
            return
        kind = TIMESTAMP_QUERY if how == "post" else content_type
        status, headers, answer = _http(tsa_port, "POST", "/", body, {"Content-Type": kind})
        assert headers["content-type"] == TIMESTAMP_REPLY
        granted, failures = _tsa_reply(answer)
        if how == "post" and len(body) > DEFAULT_MAX_BODY_BYTES:
            assert status == 413
            assert (granted, failures) == ("rejection", {"bad_data_format"})
        elif how == "post":
            assert status == 200
            assert granted == "granted" or (granted == "rejection" and failures), failures
            assert failures <= _TSA_FAILURES, failures
        else:
            assert status == 415
            assert (granted, failures) == ("rejection", {"bad_data_format"})

    fire()
    nonce = new_nonce()
    query = build_query(b"after the fuzz", nonce=nonce)
    status, _, answer = _http(tsa_port, "POST", "/", query, {"Content-Type": TIMESTAMP_QUERY})
    assert status == 200
    token = verify_reply(answer, data=b"after the fuzz", nonce=nonce, trusted_roots=[pki.root])
    assert token.gen_time is not None


# -- gateway peer port and IS port -----------------------------------------------------------------

EXCHANGE = "/serai.transport.v1.Transport/Exchange"
PEER_CODES = {
    ErrorCode.SIGNATURE_INVALID,
    ErrorCode.CERTIFICATE_INVALID,
    ErrorCode.CERTIFICATE_UNTRUSTED,
    ErrorCode.CERTIFICATE_EXPIRED,
    ErrorCode.CERTIFICATE_REVOKED,
    ErrorCode.OCSP_INVALID,
    ErrorCode.OCSP_STALE,
    ErrorCode.OCSP_UNAVAILABLE,
    ErrorCode.INVALID_REQUEST,
    ErrorCode.INVALID_IDENTIFIER,
    ErrorCode.CLOCK_SKEW,
    ErrorCode.PEER_NOT_REGISTERED,
    ErrorCode.UNKNOWN_SERVICE,
    ErrorCode.REPLAY_DETECTED,
    ErrorCode.ACCESS_DENIED,
    ErrorCode.MESSAGE_TOO_LARGE,
}


@dataclass
class Peer:
    """The in-process federation, and a mutual-TLS channel to the provider's peer port
    as the registered consumer gateway."""

    loop: LoopThread
    fed: Harness
    channel: grpc.aio.Channel
    ids: Iterator[int]

    def __repr__(self) -> str:
        return "Peer(...)"

    def signed(self) -> SignedHeader:
        return self.fed.consumer_signer.sign(
            request_header_for(
                message_id=f"fuzz-{next(self.ids)}",
                client=PROPERTY,
                service=REGISTRY.service(GET_PARCEL),
                body=b"parcel 42",
                created_at=dt.datetime.now(dt.UTC),
            )
        )

    def send(self, raw: bytes) -> tuple[grpc.StatusCode, str | None]:
        """Status and ``x-road-error`` of one raw ExchangeRequest."""

        async def call() -> tuple[grpc.StatusCode, str | None]:
            exchange = self.channel.unary_unary(EXCHANGE, None, None)
            try:
                await exchange(raw, timeout=60)
            except grpc.aio.AioRpcError as exc:
                return exc.code(), trailers_of(exc.trailing_metadata()).get(ERROR_METADATA_KEY)
            return grpc.StatusCode.OK, None

        return self.loop.run(call())


@pytest.fixture(scope="module")
def peer(loop: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    manager = federation(tmp_path_factory.mktemp("fuzz-peer"))
    fed = _enter(loop, manager)
    try:
        key_pem, chain_pem = fed.consumer_tls

        async def channel() -> grpc.aio.Channel:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=fed.root_pem, private_key=key_pem, certificate_chain=chain_pem
            )
            return grpc.aio.secure_channel(
                f"127.0.0.1:{fed.provider.peer_port}",
                credentials,
                options=(("grpc.ssl_target_name_override", "localhost"),),
            )

        chan = loop.run(channel())
        try:
            yield Peer(loop=loop, fed=fed, channel=chan, ids=itertools.count())
        finally:
            loop.run(chan.close(None))
    finally:
        _exit(loop, manager)


def _request(signed: SignedHeader, **changes: Any) -> transport_pb2.ExchangeRequest:
    message = transport_pb2.ExchangeRequest(
        signed_header=signed.jws,
        body=b"parcel 42",
        certificate_chain=list(signed.certificate_chain),
        ocsp_response=signed.ocsp_response,
    )
    message.timeout.FromSeconds(30)
    for name, value in changes.items():
        if name == "certificate_chain":
            del message.certificate_chain[:]
            message.certificate_chain.extend(value)
        else:
            setattr(message, name, value)
    return message


def _expect_refusal_or_success(peer: Peer, raw: bytes) -> None:
    calls = len(peer.fed.echo.calls)
    code, error = peer.send(raw)
    assert code is not grpc.StatusCode.INTERNAL, error
    if code is grpc.StatusCode.OK:
        assert len(peer.fed.echo.calls) == calls + 1
        return
    assert error is not None, code
    origin, name, _ = error.split(":", 2)
    if (origin, name) != ("provider", "deadline_exceeded"):  # a timeout of 0 or less
        assert origin == "client", error
        assert ErrorCode(name) in PEER_CODES, error
    assert code is grpc_status_for(ErrorCode(name)), error
    assert len(peer.fed.echo.calls) == calls, "a refused exchange reached the provider IS"


def _peer_still_serves(peer: Peer) -> None:
    code, error = peer.send(_request(peer.signed()).SerializeToString())
    assert (code, error) == (grpc.StatusCode.OK, None)
    result = peer.loop.run(peer.fed.call())
    assert result.code is grpc.StatusCode.OK, (result.details, result.trailers)


@pytest.mark.parametrize("examples", fz.SERVER_EXAMPLES)
def test_gateway_peer_port(peer: Peer, examples: int) -> None:
    @fz.server_settings(examples)
    @given(
        what=st.sampled_from(["envelope", "jws", "protected", "chain", "ocsp", "timeout"]),
        item=fz.inputs(fz.raw_bytes(), fz.protobuf_wire(), fz.der_values(), append=True),
        mutation=fz.mutations(),
        protected=fz.hostile_json(),
        seconds=st.integers(-(2**40), 2**40),
    )
    def fire(
        what: str, item: fz.Item, mutation: fz.Mutation, protected: bytes, seconds: int
    ) -> None:
        signed = peer.signed()
        if what == "envelope":
            raw = fz.resolve(item, _request(signed).SerializeToString())
        elif what == "jws":
            raw = _request(signed, signed_header=mutation.text(signed.jws)).SerializeToString()
        elif what == "protected":
            _, payload, signature = signed.jws.split(".")
            jws = f"{fz.b64url(protected)}.{payload}.{signature}"
            raw = _request(signed, signed_header=jws).SerializeToString()
        elif what == "chain":
            chain = list(signed.certificate_chain)
            chain[seconds % len(chain)] = fz.resolve(item, chain[seconds % len(chain)])
            raw = _request(signed, certificate_chain=chain).SerializeToString()
        elif what == "ocsp":
            ocsp_response = fz.resolve(item, signed.ocsp_response)
            raw = _request(signed, ocsp_response=ocsp_response).SerializeToString()
        else:
            message = _request(signed)
            message.timeout.seconds = max(-315_576_000_000, min(315_576_000_000, seconds))
            raw = message.SerializeToString()
        _expect_refusal_or_success(peer, raw)

    fire()
    _peer_still_serves(peer)


def test_peer_port_refuses_a_protected_header_nested_past_the_recursion_limit(peer: Peer) -> None:
    """Regression (fixed in gateway/signing): answered INTERNAL before."""
    signed = peer.signed()
    _, payload, signature = signed.jws.split(".")
    jws = f"{fz.b64url(b'[' * 6000 + b']' * 6000)}.{payload}.{signature}"
    code, error = peer.send(_request(signed, signed_header=jws).SerializeToString())
    assert code is grpc.StatusCode.UNAUTHENTICATED
    assert error is not None
    assert error.startswith("client:signature_invalid:JWS protected header is not JSON")
    _peer_still_serves(peer)


IS_CODES_NOT = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
_PRINTABLE = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300)


@pytest.mark.parametrize("examples", fz.SERVER_EXAMPLES)
def test_gateway_is_port_identifiers(peer: Peer, examples: int) -> None:
    valid = [str(PROPERTY), str(REGISTRY), "UZ/GOV/MINJUST", "UZ/GOV/CADASTRE/gw:main"]

    @fz.server_settings(examples)
    @given(
        client=fz.identifier_texts(valid).filter(lambda s: s.isascii() and s.isprintable())
        | _PRINTABLE,
        service=fz.identifier_texts(valid).filter(lambda s: s.isascii() and s.isprintable())
        | _PRINTABLE,
        message_id=st.none() | _PRINTABLE,
        method=st.sampled_from([GET_PARCEL, "/x/y", "/cadastre.v1.Cadastre/", "/a.b/c"]),
    )
    def fire(client: str, service: str, message_id: str | None, method: str) -> None:
        calls = len(peer.fed.echo.calls)
        result = peer.loop.run(
            peer.fed.call(
                method, client=client.strip(), service=service.strip(), message_id=message_id
            )
        )
        assert result.code not in IS_CODES_NOT, (result.details, result.trailers)
        if result.code is grpc.StatusCode.OK:
            assert len(peer.fed.echo.calls) == calls + 1
        else:
            assert result.error is not None, (result.code, result.details)
            assert len(peer.fed.echo.calls) == calls

    fire()
    _peer_still_serves(peer)


# -- registry management API and publication endpoint -------------------------------------------

AUDIENCE = "serai-registry:UZ"
_TOKEN_KEY = ec.generate_private_key(ec.SECP256R1())
_ISSUER = TokenIssuer(key=_TOKEN_KEY, issuer="fuzz")
_SERVICE = rpb.DESCRIPTOR.services_by_name["RegistryManagement"]
#: Codes the management API documents for a bad request (never ``internal``).
REGISTRY_CODES = {
    ErrorCode.INVALID_IDENTIFIER,
    ErrorCode.INVALID_REQUEST,
    ErrorCode.NOT_FOUND,
    ErrorCode.UNKNOWN_MEMBER,
    ErrorCode.ALREADY_EXISTS,
    ErrorCode.FAILED_PRECONDITION,
    ErrorCode.PERMISSION_DENIED,
    ErrorCode.UNAUTHENTICATED,
}


@dataclass
class Registry:
    loop: LoopThread
    server: RegistryServer
    channel: grpc.aio.Channel

    def __repr__(self) -> str:
        return "Registry(...)"

    def call(
        self, method: str, raw: bytes, token: str | None
    ) -> tuple[grpc.StatusCode, str, str | None]:
        """Status, details and ``x-road-error`` of one raw call."""

        async def call() -> tuple[grpc.StatusCode, str, str | None]:
            stub = self.channel.unary_unary(f"/{_SERVICE.full_name}/{method}", None, None)
            metadata = () if token is None else (("authorization", f"Bearer {token}"),)
            try:
                await stub(raw, metadata=metadata, timeout=60)
            except grpc.aio.AioRpcError as exc:
                error = trailers_of(exc.trailing_metadata()).get(ERROR_METADATA_KEY)
                return exc.code(), exc.details() or "", error
            return grpc.StatusCode.OK, "", None

        return self.loop.run(call())


@pytest.fixture(scope="module")
def registry(
    loop: LoopThread, pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Registry]:
    executor = concurrent.futures.ThreadPoolExecutor(1)
    with fresh_database() as dsn:
        store = executor.submit(SqlRegistryStore.open_postgres, dsn, instance="UZ").result(60)
        key = generate_private_key()
        confsign = pki.directory.issuing_ca().issue(
            Profile.CONFIGURATION_SIGNING, "UZ confsign fuzz", key.public_key()
        )
        publisher = Publisher(
            store=store,
            signing_key=key,
            signing_certificate=confsign,
            publish_dir=tmp_path_factory.mktemp("fuzz-registry") / "pub",
        )
        server = RegistryServer(
            store=store,
            publisher=publisher,
            verifier=TokenVerifier(public_keys=[_TOKEN_KEY.public_key()], audience=AUDIENCE),
            executor=executor,
            grpc_listen=("127.0.0.1", 0),
            http_listen=("127.0.0.1", 0),
            regeneration_interval_s=3600,
        )
        try:
            loop.run(server.start())

            async def channel() -> grpc.aio.Channel:
                return grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}")

            chan = loop.run(channel())
            try:
                yield Registry(loop=loop, server=server, channel=chan)
            finally:
                loop.run(chan.close(None))
        finally:
            loop.run(server.stop(1))
            executor.submit(store.close).result(60)
            executor.shutdown()


_ADMIN = _ISSUER.issue(subject="fuzz", roles=["registry-admin"], audience=AUDIENCE, lifetime_s=7200)
_VALID_IDS = ["UZ/GOV/STC", "UZ/GOV/STC/tax", "UZ/GOV/STC/gw:main", "UZ/group:officials"]


_METHODS = sorted(_SERVICE.methods_by_name)
#: The generated request class of each method (looked up once: building classes while
#: Hypothesis traces draws trips a CPython 3.11 tracing bug).
_REQUEST_TYPES: dict[str, Any] = {
    name: message_factory.GetMessageClass(_SERVICE.methods_by_name[name].input_type)
    for name in _METHODS
}


@st.composite
def _request_for(draw: st.DrawFn, method: str) -> bytes:
    """A request of ``method``'s type whose every string field holds identifier-like
    text and every bytes field DER-like or random bytes (one level of nesting)."""
    message = _REQUEST_TYPES[method]()
    _fill(draw, message, depth=0)
    return bytes(message.SerializeToString())


def _fill(draw: st.DrawFn, message: Any, depth: int) -> None:
    texts = fz.identifier_texts(_VALID_IDS)
    for field in message.DESCRIPTOR.fields:
        repeated = bool(field.is_repeated)
        if field.type == field.TYPE_STRING:
            values: list[Any] = draw(
                st.lists(texts, min_size=0 if repeated else 1, max_size=3 if repeated else 1)
            )
        elif field.type == field.TYPE_BYTES:
            values = draw(
                st.lists(
                    fz.der_values() | st.binary(max_size=64),
                    min_size=0 if repeated else 1,
                    max_size=3 if repeated else 1,
                )
            )
        elif field.type == field.TYPE_MESSAGE and depth == 0 and not repeated:
            _fill(draw, getattr(message, field.name), depth + 1)
            continue
        elif field.type in (
            field.TYPE_INT32,
            field.TYPE_INT64,
            field.TYPE_UINT64,
            field.TYPE_UINT32,
        ):
            values = [draw(st.integers(0, 2**31 - 1))]
        else:
            continue
        fz.set_field(message, field, values)


def _check_registry_answer(code: grpc.StatusCode, details: str, error: str | None) -> None:
    assert "Traceback" not in details
    if code is grpc.StatusCode.OK:
        return
    assert code is not grpc.StatusCode.UNKNOWN, details
    assert error is not None, (code, details)
    origin, name, _ = error.split(":", 2)
    assert origin == "client", error
    assert ErrorCode(name) in REGISTRY_CODES, error
    assert code is grpc_status_for(ErrorCode(name)), error


def _registry_still_serves(registry: Registry) -> None:
    name = f"UZ/GOV/FUZZ{next(_SERIALS)}"
    answer = registry.call(
        "AddMember", rpb.AddMemberRequest(member_id=name, name="after").SerializeToString(), _ADMIN
    )
    assert answer == (grpc.StatusCode.OK, "", None)
    code, _, _ = registry.call("ListMembers", rpb.ListMembersRequest().SerializeToString(), _ADMIN)
    assert code is grpc.StatusCode.OK
    status, _, _ = _http(registry.server.http_port, "GET", "/healthz")
    assert status == 200


_SERIALS = itertools.count()


@pytest.mark.parametrize("examples", fz.SERVER_EXAMPLES)
def test_registry_management_api(registry: Registry, examples: int) -> None:
    @fz.server_settings(examples)
    @given(
        method=st.sampled_from(_METHODS),
        data=st.data(),
        how=st.sampled_from(["typed", "typed", "typed", "raw", "token"]),
        mutation=fz.mutations(),
    )
    def fire(method: str, data: st.DataObject, how: str, mutation: fz.Mutation) -> None:
        if how == "typed":
            answer = registry.call(method, data.draw(_request_for(method)), _ADMIN)
        elif how == "raw":
            raw = data.draw(fz.inputs(fz.raw_bytes(), fz.protobuf_wire()))
            answer = registry.call(method, fz.resolve(raw, data.draw(_request_for(method))), _ADMIN)
        else:
            token = mutation.text(_ADMIN)
            # gRPC metadata carries printable ASCII only; anything else is sent as no token.
            sent = (
                token
                if token.isascii() and token.isprintable() and token == token.strip()
                else None
            )
            answer = registry.call(method, b"", sent)
            if sent != _ADMIN:
                code, _, error = answer
                assert code is grpc.StatusCode.UNAUTHENTICATED, answer
                assert error is not None
                assert error.startswith("client:unauthenticated:"), error
        _check_registry_answer(*answer)

    fire()
    _registry_still_serves(registry)


@pytest.mark.parametrize("examples", fz.SERVER_EXAMPLES)
def test_registry_publication_endpoint(registry: Registry, examples: int) -> None:
    @fz.server_settings(examples)
    @given(
        path=st.one_of(
            fz.identifier_texts(["globalconf/v1/current", "globalconf/v1/history/conflog/1"]),
            st.lists(
                st.sampled_from(
                    [
                        "globalconf",
                        "v1",
                        "history",
                        "conflog",
                        "consistency",
                        "..",
                        ".",
                        "",
                        "%00",
                        "1",
                        "-1",
                        "9" * 30,
                        "current",
                    ]
                ),
                max_size=8,
            ).map("/".join),
        ),
        method=st.sampled_from(["GET", "GET", "HEAD", "POST"]),
    )
    def fire(path: str, method: str) -> None:
        quoted = "/" + urllib.parse.quote(path, safe="/%")
        status, _, body = _http(registry.server.http_port, method, quoted[:8000])
        assert status < 500, (status, body[:200])

    fire()
    _registry_still_serves(registry)


def test_registry_refuses_request_bytes_that_do_not_parse(registry: Registry) -> None:
    """Regression (fixed in registry/server): grpc answered UNKNOWN with the name of the
    parser's exception, no ``x-road-error``, and before authentication."""
    code, details, error = registry.call("AddMember", b"\xff", _ADMIN)
    assert code is grpc.StatusCode.INVALID_ARGUMENT, details
    assert error is not None
    assert error.startswith("client:invalid_request:the request is not a serialized"), error
    code, _, error = registry.call("AddMember", b"\xff", None)
    assert code is grpc.StatusCode.UNAUTHENTICATED
    assert error is not None
    assert error.startswith("client:unauthenticated:"), error
    _registry_still_serves(registry)
