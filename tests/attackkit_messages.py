"""Tools for the message attacks of ``tests/test_attacks_messages.py``: a federation of
real processes, and the test code that plays a misbehaving party in it.

:func:`bring_up` starts, with ``serai`` commands as an operator would
(:func:`serai._benchfed.bring_up`, with its hooks), the development PKI with its OCSP
responder and TSA, the registry, the echo provider IS (``tools/echo_provider.py``), the
consumer gateway ``UZ/GOV/MINJUST/gw:main`` and the provider gateway
``UZ/GOV/CADASTRE/gw:main`` (provider ``UZ/GOV/CADASTRE/registry`` at the echo provider).
Beyond the bench's federation:

- the consumer gateway serves two clients: ``property`` (IS addresses 127.0.0.1, ::1,
  as ``serai gateway init`` writes them) and ``archive`` (only an IS at 127.0.0.2);
- ``UZ/GOV/MINJUST/notary`` is a registered subsystem that no gateway serves;
- both gateways accept bodies of at most :data:`MAX_MESSAGE_BYTES` (so the oversize
  attack sends 64 KiB, not 4 MiB, through a busy machine);
- the access rights let ``property``, ``archive`` and ``notary`` call
  :data:`BENCH_METHOD`, so a refusal of those clients is the check under test, never a
  missing access right;
- a third member, ``UZ/GOV/STC``, has a registered gateway ``UZ/GOV/STC/gw:main``
  serving ``UZ/GOV/STC/tax``, made by ``serai gateway init`` and registered, whose
  process is never started: :class:`RogueProvider` (test code, with that gateway's
  real keys) answers on its registered peer address.

The test code speaks with the project's own wire and signing code: :class:`Forger`
signs request headers with the consumer member's real key (a registered but
compromised consumer gateway), :class:`PeerLink` sends them over mutual TLS with the
consumer gateway's real authentication key to the provider gateway's peer port.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime as dt
import functools
import hashlib
import os
import re
import shlex
import socket
import threading
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from certs.keys import PrivateKey, load_certificate_chain, load_private_key
from certs.ocsp_client import OCSPClient
from gateway._messages import (
    EXCHANGE_METHOD,
    TRANSPORT_SERVICE,
    ExchangeRequestMessage,
    ExchangeResponseMessage,
    Receipt,
)
from gateway.headers import RequestHeader, request_header_for, response_header_for
from gateway.signing import HeaderSigner, SignedHeader
from gateway.tlsconf import pinned_channel_credentials, target_name_of
from serai import _benchfed, jws
from serai._benchfed import BENCH_METHOD
from serai._demoprocs import Service, must, run_serai_parallel, stop_all
from serai.errors import ERROR_METADATA_KEY
from serai.identifiers import ServiceId, SubsystemId
from serai.localprocs import free_port

__all__ = [
    "ARCHIVE",
    "ARCHIVE_IS_ADDRESS",
    "BENCH_METHOD",
    "MAX_MESSAGE_BYTES",
    "NOTARY",
    "PROPERTY",
    "REGISTRY",
    "TAX",
    "AttackFederation",
    "Forger",
    "Outcome",
    "PeerLink",
    "RogueProvider",
    "SourceAddressRelay",
    "bring_up",
    "call_is",
    "metric_total",
    "reached",
    "stop",
]

PROPERTY: Final = SubsystemId.parse(_benchfed.CONSUMER)
ARCHIVE: Final = SubsystemId.parse("UZ/GOV/MINJUST/archive")
NOTARY: Final = SubsystemId.parse("UZ/GOV/MINJUST/notary")
REGISTRY: Final = SubsystemId.parse(_benchfed.PROVIDER)
TAX: Final = SubsystemId.parse("UZ/GOV/STC/tax")
#: The largest body either gateway accepts (``max_message_bytes`` in both gateway.toml).
MAX_MESSAGE_BYTES: Final = 64 * 1024
#: The only address an IS of ``archive`` may call from.
ARCHIVE_IS_ADDRESS: Final = "127.0.0.2"
_REACHED_METHOD: Final = "/echo.v1.Echo/Reached"
_CALL_TIMEOUT_S: Final = 60.0
_T = TypeVar("_T")
_GATEWAYS: Final = {
    "consumer": "UZ/GOV/MINJUST/gw:main",
    "provider": "UZ/GOV/CADASTRE/gw:main",
    "rogue": "UZ/GOV/STC/gw:main",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class AttackFederation:
    """Addresses and key directories of the federation :func:`bring_up` started."""

    workdir: Path
    echo: str  # the echo provider IS (plaintext gRPC)
    consumer_is: str
    consumer_metrics: str
    provider_peer: str
    provider_metrics: str
    rogue_peer: str  # the registered peer address of UZ/GOV/STC/gw:main
    consumer_keys: Path
    provider_keys: Path
    rogue_keys: Path
    root_pem: bytes  # the PKI's root CA (the approved CA of the configuration)


def bring_up(workdir: Path, services: list[Service]) -> AttackFederation:
    """Start the federation of the module docstring under ``workdir``; every process is
    appended to ``services`` the moment it starts (the caller stops them: :func:`stop`)."""
    rogue_peer = f"127.0.0.1:{free_port()}"

    def prepare(setup: _benchfed.Setup) -> None:
        """The third member and its gateway, the subsystems beyond the bench's, and the
        two gateways' files edited, all before either gateway is registered or started."""
        env = setup.registry_env
        inits = _all_succeed(
            ("registry", "member", "add", "UZ/GOV/STC", "--name", "State Tax Committee"),
            ("gateway", "init", "--dir", workdir / "rogue", "--gateway-id", _GATEWAYS["rogue"],
             "--pki", setup.pki, "--anchor", setup.anchor, "--peer-listen", rogue_peer,
             "--is-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
             "--provider", f"{TAX}={setup.echo}"),
            env=env,
        )  # fmt: skip
        _all_succeed(
            *(("registry", "subsystem", "add", str(s)) for s in (ARCHIVE, NOTARY, TAX)), env=env
        )
        # what `serai gateway init` says to run
        add = next(line for line in inits[1].splitlines() if "gateway add" in line)
        _all_succeed(tuple(shlex.split(add)[1:]), env=env)
        _edit(
            setup.gateway_configs["consumer"],
            (
                f'subsystem = "{ARCHIVE}"\nallow = ["127.0.0.1", "::1"]',
                f'subsystem = "{ARCHIVE}"\nallow = ["{ARCHIVE_IS_ADDRESS}"]',
            ),
            ("max_message_bytes = 4194304", f"max_message_bytes = {MAX_MESSAGE_BYTES}"),
        )
        _edit(
            setup.gateway_configs["provider"],
            ("max_message_bytes = 4194304", f"max_message_bytes = {MAX_MESSAGE_BYTES}"),
        )

    up = _benchfed.bring_up(
        workdir,
        services,
        gateway_options={"consumer": ("--client", str(ARCHIVE))},
        prepare=prepare,
    )
    acl = ("--gateway", str(up.listening["provider"]["admin"]), "--token-file", up.admin_token)
    _all_succeed(
        *(("acl", "grant", str(REGISTRY), BENCH_METHOD, str(c), *acl) for c in (ARCHIVE, NOTARY))
    )  # the bench's federation grants PROPERTY
    return AttackFederation(
        workdir=workdir,
        echo=up.direct,
        consumer_is=str(up.listening["consumer"]["is"]),
        consumer_metrics=str(up.listening["consumer"]["metrics"]),
        provider_peer=str(up.listening["provider"]["peer"]),
        provider_metrics=str(up.listening["provider"]["metrics"]),
        rogue_peer=rogue_peer,
        consumer_keys=workdir / "consumer" / "keys",
        provider_keys=workdir / "provider" / "keys",
        rogue_keys=workdir / "rogue" / "keys",
        root_pem=(up.setup.pki / "ca.pem").read_bytes(),
    )


def stop(services: list[Service]) -> list[str]:
    """SIGTERM every service at once, then wait for each (SIGKILL after a while): the
    names of those that did not exit cleanly with their stopped event."""
    return [
        f"{service.name} (exit {status}, stopped event {reported})"
        for service, status, reported in stop_all(services)
        if status != 0 or not reported
    ]


def _all_succeed(*commands: Sequence[str | Path], env: dict[str, str] | None = None) -> list[str]:
    """Run the ``serai`` commands side by side; their outputs, or an error naming the first
    that failed."""
    return [must(result) for result in run_serai_parallel(commands, env=env)]


def _edit(path: Path, *replacements: tuple[str, str]) -> None:
    text = path.read_text(encoding="utf-8")
    for old, new in replacements:
        assert text.count(old) == 1, f"{path}: expected {old!r} once"
        text = text.replace(old, new)
    path.write_text(text, encoding="utf-8")


# --- observing the federation ---------------------------------------------------------------


def reached(echo: str) -> int:
    """How many calls have reached the echo provider IS (its ``Reached`` method)."""
    with grpc.insecure_channel(echo) as channel:
        answer = channel.unary_unary(_REACHED_METHOD, None, None)(b"", timeout=_CALL_TIMEOUT_S)
    text = bytes(answer).decode("ascii")
    assert text.isdigit(), text
    return int(text)


_SAMPLE: Final = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


def metric_total(address: str, name: str, **labels: str) -> float:
    """The sum of the samples ``name`` whose labels include ``labels``, from the
    ``/metrics`` of the HTTP ops port at ``address`` (0 when there is none)."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=30) as answer:
        assert answer.status == 200
        text = answer.read().decode()
    total = 0.0
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(3))
    return total


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a call ended: the gRPC status name, the ``x-road-error`` trailer (``""`` when
    none), the body (``None`` on failure) and the trailing metadata."""

    status: str
    error: str
    body: bytes | None
    trailers: dict[str, str]

    @property
    def refusal(self) -> tuple[str, str, str]:
        """(status, origin, code) of a refusal; the origin and code from the trailer."""
        origin, _, rest = self.error.partition(":")
        return self.status, origin, rest.partition(":")[0]


def _outcome_of_error(exc: grpc.RpcError) -> Outcome:
    failed: Any = exc  # a grpc.RpcError raised by a call is also a grpc.Call
    trailers = _text(failed.trailing_metadata())
    return Outcome(failed.code().name, trailers.get(ERROR_METADATA_KEY, ""), None, trailers)


def _text(metadata: Any) -> dict[str, str]:
    return {k: v for k, v in metadata or () if isinstance(v, str)}


def call_is(
    address: str,
    body: bytes,
    *,
    client: str,
    service: str = str(REGISTRY),
    method: str = BENCH_METHOD,
    extra: tuple[tuple[str, str], ...] = (),
) -> Outcome:
    """Call the consumer gateway's IS port at ``address`` as an information system."""
    metadata = (("x-road-client", client), ("x-road-service", service), *extra)
    options = (("grpc.max_send_message_length", 64 * 1024 * 1024),)
    with grpc.insecure_channel(address, options=options) as channel:
        stub = channel.unary_unary(method, None, None)
        try:
            answer, state = stub.with_call(body, metadata=metadata, timeout=_CALL_TIMEOUT_S)
        except grpc.RpcError as exc:
            return _outcome_of_error(exc)
    return Outcome("OK", "", bytes(answer), _text(state.trailing_metadata()))


# --- a registered consumer gateway, compromised: forged requests on the peer port ---------


def _private_key_pem(path: Path) -> bytes:
    return load_private_key(path).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _fresh_ocsp(chain: list[x509.Certificate]) -> bytes:
    """A fresh, validated OCSP response for ``chain[0]`` from the PKI's responder."""

    async def fetch() -> bytes:
        async with OCSPClient() as client:
            result = await client.fetch(chain[0], chain[1])
        result.require_good()
        return result.der

    return asyncio.run(fetch())


class Forger:
    """Signs headers with a gateway directory's member signing key (``keys/sign.key``),
    attaching its chain and a fresh OCSP response, exactly as that gateway would."""

    def __init__(self, keys: Path) -> None:
        key: PrivateKey = load_private_key(keys / "sign.key")
        chain = load_certificate_chain(keys / "sign.pem")
        ocsp = _fresh_ocsp(chain)
        self.signer = HeaderSigner(key=key, certificate_chain=chain, ocsp_response=lambda: ocsp)
        assert isinstance(key, ec.EllipticCurvePrivateKey)  # serai gateway init: P-256
        self._key = key

    def request(
        self,
        body: bytes,
        *,
        client: SubsystemId = PROPERTY,
        method: str = BENCH_METHOD,
        created_at: dt.datetime | None = None,
        message_id: str | None = None,
    ) -> tuple[RequestHeader, SignedHeader]:
        """A request header for ``body`` to ``REGISTRY`` and its signature."""
        header = request_header_for(
            message_id=message_id or f"attack-{os.urandom(8).hex()}",
            client=client,
            service=ServiceId.for_method(subsystem=REGISTRY, method_path=method),
            body=body,
            created_at=created_at or dt.datetime.now(dt.UTC),
        )
        return header, self.signer.sign(header)

    def sign_payload(self, payload: bytes, *, like: SignedHeader) -> SignedHeader:
        """``payload`` signed as a request header would be (same protected header as
        ``like``): a valid signature over bytes that need not be a valid header."""
        protected = like.jws.split(".")[0]
        signing_input = f"{protected}.{jws.b64url(payload)}"
        r, s = decode_dss_signature(
            self._key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
        )
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return dataclasses.replace(
            like,
            jws=f"{signing_input}.{jws.b64url(signature)}",
            header_bytes=payload,
            header_sha256=hashlib.sha256(payload).digest(),
        )


class PeerLink:
    """A mutual-TLS channel to a gateway's peer port with another gateway's real
    authentication key (``keys/auth.key``), trusting exactly the server's registered
    certificate (``server_keys/auth.pem``), as :class:`gateway.peers.PeerPool` does."""

    def __init__(self, address: str, *, keys: Path, server_keys: Path) -> None:
        server_der = load_certificate_chain(server_keys / "auth.pem")[0].public_bytes(
            serialization.Encoding.DER
        )
        credentials = pinned_channel_credentials(
            peer_certificate_der=server_der,
            key_pem=_private_key_pem(keys / "auth.key"),
            chain_pem=(keys / "auth.pem").read_bytes(),
        )
        limit = 64 * 1024 * 1024
        self._channel = grpc.secure_channel(
            address,
            credentials,
            options=(
                ("grpc.ssl_target_name_override", target_name_of(server_der)),
                ("grpc.max_send_message_length", limit),
                ("grpc.max_receive_message_length", limit),
            ),
        )

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> PeerLink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def send(self, signed: SignedHeader, body: bytes) -> Outcome:
        """An ``ExchangeRequest`` of ``signed`` and ``body``, built by the project's code."""
        return self.send_raw(
            ExchangeRequestMessage(
                signed_header=signed.jws,
                body=body,
                certificate_chain=signed.certificate_chain,
                ocsp_response=signed.ocsp_response,
                timeout_s=_CALL_TIMEOUT_S,
            ).encode()
        )

    def send_raw(self, envelope: bytes) -> Outcome:
        """``envelope`` as the serialized ExchangeRequest, whatever it holds."""
        exchange = self._channel.unary_unary(EXCHANGE_METHOD, None, None)
        try:
            answer, state = exchange.with_call(envelope, timeout=_CALL_TIMEOUT_S)
        except grpc.RpcError as exc:
            return _outcome_of_error(exc)
        return Outcome("OK", "", bytes(answer), _text(state.trailing_metadata()))


# --- a registered provider gateway, compromised: forged responses ------------------------------


class RogueProvider:
    """Test code on the registered peer address of ``UZ/GOV/STC/gw:main``, with that
    gateway's real TLS key and certificate and its member's signing key: it answers
    every Exchange with the request's body, in a response signed exactly as a provider
    gateway signs one, whose ``request_header_sha256`` is :attr:`bind_to` applied to
    the SHA-256 of the request header it received and whose ``message_id`` is
    :attr:`answer_to` applied to the request's (both the identity after :meth:`honest`),
    or with :attr:`raw_answer` as the serialized response when that is set. It never
    calls any provider IS."""

    def __init__(self, federation: AttackFederation) -> None:
        keys = federation.rogue_keys
        self._forger = Forger(keys)
        #: Maps the received request header's SHA-256 to the one the response binds to.
        self.bind_to: Callable[[bytes], bytes] = _same
        #: Maps the request's message id to the one the response answers.
        self.answer_to: Callable[[str], str] = _same
        #: When set, the bytes returned instead of a serialized ExchangeResponse.
        self.raw_answer: bytes | None = None
        #: SHA-256 of every request header received, in order.
        self.requests: list[bytes] = []
        self._lock = threading.Lock()
        self._server = grpc.server(
            ThreadPoolExecutor(max_workers=4),
            options=(("grpc.max_receive_message_length", 8 * 1024 * 1024),),
        )
        self._server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    TRANSPORT_SERVICE,
                    {"Exchange": grpc.unary_unary_rpc_method_handler(self._exchange)},
                ),
            )
        )
        credentials = grpc.ssl_server_credentials(
            [(_private_key_pem(keys / "auth.key"), (keys / "auth.pem").read_bytes())],
            root_certificates=federation.root_pem,
            require_client_auth=True,
        )
        port = self._server.add_secure_port(federation.rogue_peer, credentials)
        assert port == int(federation.rogue_peer.rpartition(":")[2])
        self._server.start()

    def honest(self) -> None:
        """Answer every request as a provider gateway should (bound to it)."""
        with self._lock:
            self.bind_to, self.answer_to, self.raw_answer = _same, _same, None

    def close(self) -> None:
        self._server.stop(grace=None).wait(30)

    def __enter__(self) -> RogueProvider:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _exchange(self, raw: bytes, _context: object) -> bytes:
        request = ExchangeRequestMessage.decode(raw)
        payload = _b64url_decode(request.signed_header.split(".")[1])
        received = RequestHeader.decode(payload)  # the rogue trusts what it got
        request_sha256 = hashlib.sha256(payload).digest()
        with self._lock:
            self.requests.append(request_sha256)
            bind_to, answer_to, raw_answer = self.bind_to, self.answer_to, self.raw_answer
        if raw_answer is not None:
            return raw_answer
        signed = self._forger.signer.sign(
            response_header_for(
                message_id=answer_to(received.message_id),
                request_header_sha256=bind_to(request_sha256),
                body=request.body,
                created_at=dt.datetime.now(dt.UTC),
            )
        )
        return ExchangeResponseMessage(
            signed_header=signed.jws,
            body=request.body,
            certificate_chain=signed.certificate_chain,
            ocsp_response=signed.ocsp_response,
            receipt=Receipt(
                gateway_id=_GATEWAYS["rogue"], request_index=0, response_index=1, tree_size=2
            ),
        ).encode()


def _same(value: _T) -> _T:
    return value


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# --- an information system at another loopback address -------------------------------------


class SourceAddressRelay:
    """A TCP relay on 127.0.0.1 that connects onwards to ``target`` *from*
    ``source_ip`` (another loopback address), so a gRPC client of this relay reaches the
    gateway's IS port as an IS at ``source_ip``. Bytes pass unchanged both ways."""

    def __init__(self, target: str, *, source_ip: str) -> None:
        host, _, port = target.rpartition(":")
        self._target = (host, int(port))
        self._source_ip = source_ip
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)  # so the accepting thread sees close() soon
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def _start(self, work: Callable[[], None]) -> None:
        thread = threading.Thread(target=work, daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                inbound, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            try:
                outbound = socket.create_connection(
                    self._target, timeout=30, source_address=(self._source_ip, 0)
                )
            except OSError:
                inbound.close()
                continue
            inbound.settimeout(None)
            outbound.settimeout(None)
            with self._lock:
                self._sockets += [inbound, outbound]
            self._start(functools.partial(_pipe, inbound, outbound))
            self._start(functools.partial(_pipe, outbound, inbound))

    def close(self) -> None:
        self._closed = True
        self._acceptor.join(timeout=60)  # it sees the flag within its accept timeout
        self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in list(self._threads):
            thread.join(timeout=10)

    def __enter__(self) -> SourceAddressRelay:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)
