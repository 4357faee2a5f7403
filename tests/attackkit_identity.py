"""The attacker's kit for tests/test_attacks_identity.py: a real-process federation whose
global configuration travels through a test-controlled HTTP relay, and a fake gateway
that speaks to the provider gateway's peer port with the project's own wire and signing
code.

:func:`start_federation` is :func:`serai._benchfed.bring_up` with three changes an
operator could make in the same files (made by its ``edit_registry`` and ``prepare``
hooks before the processes start): the registry publishes short-lived
configurations (``configuration_validity_s``) more often, its ``public_url`` (and so the
trust anchor's download URL) is a :class:`ConfigurationRelay` in front of the
registry's HTTP port, and both gateways refresh their configuration every second. The
relay forwards everything, and remembers every configuration it forwarded, until a test
makes it answer the configuration path with bytes of its choice (a captured older or
expired configuration): the attacker on the distribution channel.

Every process started is appended to the caller's list as it starts, so the caller
stops them all whatever happens; the relay is stopped by :meth:`AttackFederation.close`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import http.server
import json
import re
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import tomllib
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, cast

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certs.keys import PrivateKey, load_certificate_chain, load_private_key
from certs.ocsp_client import OCSPClient
from gateway.headers import request_header_for
from gateway.signing import HeaderSigner, SignedHeader
from gateway.tlsconf import certificates_pem, target_name_of
from registry.codec import decode_anchor, decode_configuration
from registry.model import GlobalConfiguration
from registry.signing import verify_signed_configuration
from serai._benchfed import BENCH_METHOD, Setup, bring_up
from serai._demoprocs import Service, must, run_serai
from serai.identifiers import SubsystemId
from serai_proto.transport.v1 import transport_pb2
from tests.opscheck import scrape

__all__ = [
    "CONSUMER",
    "CONSUMER_GW",
    "EXCHANGE_METHOD",
    "METHOD",
    "PROVIDER",
    "PROVIDER_GW",
    "AttackFederation",
    "ConfigurationRelay",
    "Outcome",
    "Tls",
    "configuration_of",
    "counter",
    "ocsp_der",
    "openssl_tls12",
    "openssl_tls13",
    "start_federation",
    "tls_session",
]

CONSUMER: Final = "UZ/GOV/MINJUST/property"
PROVIDER: Final = "UZ/GOV/CADASTRE/registry"
CONSUMER_GW: Final = "UZ/GOV/MINJUST/gw:main"
PROVIDER_GW: Final = "UZ/GOV/CADASTRE/gw:main"
#: The method every attack calls (granted to the consumer by an access right).
METHOD: Final = BENCH_METHOD
EXCHANGE_METHOD: Final = "/serai.transport.v1.Transport/Exchange"
REACHED_METHOD: Final = "/echo.v1.Echo/Reached"
_CURRENT_PATH: Final = "/globalconf/v1/current"
_RPC_TIMEOUT_S: Final = 60.0
_WAIT_S: Final = 120.0


# -- the configuration relay ------------------------------------------------------------------


class ConfigurationRelay:
    """An HTTP relay in front of the registry's publication port (module docstring)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self._lock = threading.Lock()
        self._override: bytes | None = None
        self._forwarded: list[bytes] = []
        relay = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with relay._lock:
                    override = relay._override
                if self.path == _CURRENT_PATH and override is not None:
                    self._answer(200, override)
                    return
                try:
                    with urllib.request.urlopen(
                        f"http://{relay.upstream}{self.path}", timeout=30
                    ) as answer:
                        status, body = int(answer.status), answer.read()
                except urllib.error.HTTPError as exc:
                    status, body = exc.code, exc.read()
                except OSError:
                    self._answer(502, b"registry unreachable")
                    return
                if self.path == _CURRENT_PATH and status == 200:
                    with relay._lock:
                        if body not in relay._forwarded:
                            relay._forwarded.append(body)
                self._answer(status, body)

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.address = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """The download URL the trust anchor names."""
        return f"http://{self.address}{_CURRENT_PATH}"

    def forwarded(self) -> list[bytes]:
        """Every configuration envelope forwarded so far, first seen first."""
        with self._lock:
            return list(self._forwarded)

    def serve(self, envelope: bytes | None) -> None:
        """Answer the configuration path with ``envelope`` (``None``: forward again)."""
        with self._lock:
            self._override = envelope

    def upstream_current(self) -> bytes:
        """The registry's current configuration, fetched past the relay."""
        with urllib.request.urlopen(f"http://{self.upstream}{_CURRENT_PATH}", timeout=30) as answer:
            return bytes(answer.read())

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=30)


def configuration_of(envelope: bytes, anchor: Path) -> GlobalConfiguration:
    """The configuration in a signed envelope, verified against the trust anchor."""
    certificates = decode_anchor(anchor.read_bytes()).signing_certificates
    return decode_configuration(
        verify_signed_configuration(envelope, signing_certificates=certificates)
    )


# -- the federation -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tls:
    """A TLS client identity: a PKCS#8 key and a certificate chain (PEM)."""

    key_pem: bytes
    chain_pem: bytes

    @classmethod
    def from_files(cls, prefix: Path) -> Tls:
        """``PREFIX.key`` and ``PREFIX.pem`` as ``serai pki issue`` / ``gateway init`` write."""
        return cls(prefix.with_suffix(".key").read_bytes(), prefix.with_suffix(".pem").read_bytes())

    @classmethod
    def of(cls, key: PrivateKey, chain: list[x509.Certificate]) -> Tls:
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return cls(key_pem, certificates_pem(chain))


@dataclass(frozen=True, slots=True)
class Outcome:
    """How the provider gateway answered an exchange: the gRPC status name, the
    ``origin:code`` of ``x-road-error`` (empty if none) and the status details."""

    status: str
    error: str
    details: str


@dataclass
class AttackFederation:
    """The running federation, and what an attacker test needs to know about it."""

    workdir: Path
    pki: Path
    anchor: Path
    echo: str
    peer: str  # the provider gateway's peer port
    metrics: str  # the provider gateway's operations port
    consumer_keys: Path  # the registered consumer gateway's key directory
    provider_keys: Path
    registry_env: dict[str, str]
    relay: ConfigurationRelay
    provider: Service
    ocsp_url: str
    validity_s: int
    #: Every process started, the fixture stops them all (a restarted one is added).
    services: list[Service]

    # -- what the attacker reads --

    def reached(self) -> int:
        """How many calls reached the provider IS (its ``Reached`` method, plaintext)."""
        with grpc.insecure_channel(self.echo) as channel:
            answer = channel.unary_unary(REACHED_METHOD, None, None)(b"", timeout=_RPC_TIMEOUT_S)
        text = bytes(answer).decode("ascii")
        assert text.isdigit(), text
        return int(text)

    def scrape(self) -> str:
        """The provider gateway's ``/metrics``."""
        return scrape(self.metrics)

    def refusals(self, code: str, *, origin: str = "client") -> float:
        """``serai_gateway_refusals_total`` of the provider side for ``code``."""
        return counter(
            self.scrape(),
            "serai_gateway_refusals_total",
            {"side": "provider", "code": code, "origin": origin},
        )

    # -- the attacker's tools --

    def serai(self, *args: str | Path) -> str:
        """Run a ``serai`` command as the operator would; its output."""
        return must(run_serai(*args, env=self.registry_env))

    def issue(self, profile: str, subject: str, name: str) -> Path:
        """A key and certificate from the federation's (approved) CA; the path prefix."""
        prefix = self.workdir / "attacker" / name
        prefix.parent.mkdir(exist_ok=True)
        self.serai(
            "pki", "issue", "--dir", self.pki, "--profile", profile,
            "--subject", subject, "--out", prefix,
        )  # fmt: skip
        return prefix

    def signer(self, prefix: Path) -> HeaderSigner:
        """A header signer for the key and chain at ``prefix``, stapling a real OCSP answer
        from the federation's responder."""
        chain = load_certificate_chain(prefix.with_suffix(".pem"))
        answer = ocsp_der(chain[0], chain[1], self.ocsp_url)
        return HeaderSigner(
            key=load_private_key(prefix.with_suffix(".key")),
            certificate_chain=chain,
            ocsp_response=lambda: answer,
        )

    def consumer_signer(self) -> HeaderSigner:
        """The registered consumer member's own signing key (the legitimate signer)."""
        return self.signer(self.consumer_keys / "sign")

    def consumer_tls(self) -> Tls:
        """The registered consumer gateway's own TLS identity."""
        return Tls.from_files(self.consumer_keys / "auth")

    def exchange(
        self,
        tls: Tls,
        signer: HeaderSigner,
        *,
        client: str = CONSUMER,
        body: bytes | None = None,
    ) -> Outcome:
        """Send one signed ExchangeRequest to the provider gateway's peer port."""
        body = body if body is not None else f"attack {uuid.uuid4()}".encode()
        header = request_header_for(
            message_id=f"attack-{uuid.uuid4()}",
            client=SubsystemId.parse(client),
            service=SubsystemId.parse(PROVIDER).service(METHOD),
            body=body,
            created_at=dt.datetime.now(dt.UTC),
        )
        return self.send(tls, signer.sign(header), body)

    def send(self, tls: Tls, signed: SignedHeader, body: bytes) -> Outcome:
        request = transport_pb2.ExchangeRequest(
            signed_header=signed.jws,
            body=body,
            certificate_chain=list(signed.certificate_chain),
            ocsp_response=signed.ocsp_response,
        )
        return call_peer(
            self.peer,
            tls,
            request.SerializeToString(),
            roots=self.root_pem(),
            name=self.peer_name(),
        )

    def peer_name(self) -> str:
        """The host name the provider gateway's certificate is issued for."""
        leaf = load_certificate_chain(self.provider_keys / "auth.pem")[0]
        return target_name_of(leaf.public_bytes(serialization.Encoding.DER))

    def root_pem(self) -> bytes:
        """The approved root (the provider gateway's server certificate chains to it)."""
        return (self.pki / "ca.pem").read_bytes()

    def handshake_failures(self, reason: str) -> int:
        """How many lines of the provider gateway's output say that grpc refused a TLS
        handshake for ``reason`` (grpc core's own log line; no metric counts them)."""
        text = self.provider.log.read_text(errors="replace")
        return sum(1 for line in text.splitlines() if "Handshake failed" in line and reason in line)

    def provider_events(self, event: str, code: str) -> int:
        """How many ``event`` lines with ``code`` the provider gateway wrote so far."""
        count = 0
        for line in self.provider.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                fields = json.loads(line)
                if isinstance(fields, dict) and (fields.get("event"), fields.get("code")) == (
                    event,
                    code,
                ):
                    count += 1
        return count

    def wait_provider_event(self, event: str, code: str, *, more_than: int) -> None:
        deadline = time.monotonic() + _WAIT_S
        while self.provider_events(event, code) <= more_than:
            assert self.provider.running(), self.provider.log.read_text()[-2000:]
            assert time.monotonic() < deadline, f"no {event} with code {code}"
            time.sleep(0.2)

    @contextlib.contextmanager
    def ocsp_down(self) -> Iterator[None]:
        """The OCSP responder stopped for the body, then started again (same port)."""
        (ocsp,) = [s for s in self.services if s.name == "ocsp" and s.running()]
        ocsp.terminate()
        ocsp.wait_stopped()
        try:
            yield
        finally:
            log = ocsp.log.with_suffix(".again.log")
            again = Service.start("ocsp", ocsp.argv, log=log, stopped_event="ocsp_stopped")
            self.services.append(again)
            again.wait_for("ocsp_listening")

    def log_records(self) -> float:
        """Records the provider gateway's message log committed."""
        return counter(self.scrape(), "serai_gateway_log_records", {})

    def globalconf_serial(self) -> int:
        """The serial of the configuration the provider gateway holds."""
        return int(counter(self.scrape(), "serai_gateway_globalconf_serial", {}))

    def globalconf_refusals(self, code: str) -> float:
        """Configurations the provider gateway's configuration client refused with ``code``."""
        return counter(
            self.scrape(), "serai_gateway_globalconf_refresh_failures_total", {"code": code}
        )

    def wait_globalconf_serial(self, serial: int) -> None:
        """Wait until the provider gateway holds configuration ``serial`` or a later one."""
        self.wait_until(lambda: self.globalconf_serial() >= serial)

    def published_serial_listing(self, gateway: str) -> int:
        """The serial of the first configuration the registry publishes listing ``gateway``."""
        found: list[int] = []

        def listed() -> bool:
            conf = configuration_of(self.relay.upstream_current(), self.anchor)
            if gateway in {str(g.id) for g in conf.federation.gateways}:
                found.append(conf.serial)
            return bool(found)

        self.wait_until(listed)
        return found[0]

    def withheld_configuration(self) -> bytes:
        """A configuration the registry published after every one the relay forwarded:
        while the relay answers with a fixed envelope, no gateway can have it."""
        found: list[bytes] = []

        def newer() -> bool:
            envelope = self.relay.upstream_current()
            seen = max(configuration_of(e, self.anchor).serial for e in self.relay.forwarded())
            if configuration_of(envelope, self.anchor).serial > seen:
                found.append(envelope)
            return bool(found)

        self.wait_until(newer)
        return found[0]

    def wait_until(self, condition: Callable[[], bool]) -> None:
        """Poll ``condition`` (bounded by a generous deadline; the gateway must live)."""
        deadline = time.monotonic() + _WAIT_S
        while not condition():
            assert self.provider.running(), self.provider.log.read_text()[-2000:]
            assert time.monotonic() < deadline, f"{condition} never held"
            time.sleep(0.25)

    def close(self) -> None:
        self.relay.close()


def call_peer(peer: str, tls: Tls, request: bytes, *, roots: bytes, name: str) -> Outcome:
    """One Exchange call on a channel of its own (a new TLS handshake, no pooled
    connection), presenting ``tls`` and trusting ``roots`` for the server."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=roots, private_key=tls.key_pem, certificate_chain=tls.chain_pem
    )
    options = (
        ("grpc.ssl_target_name_override", name),
        ("grpc.use_local_subchannel_pool", 1),
    )
    with grpc.secure_channel(peer, credentials, options=options) as channel:
        exchange = channel.unary_unary(EXCHANGE_METHOD, None, None)
        try:
            exchange(request, timeout=_RPC_TIMEOUT_S)
        except grpc.RpcError as exc:
            call = cast("grpc.Call", exc)  # what a unary call raises is also its Call
            error = ""
            for key, value in cast(
                "Sequence[tuple[str, str | bytes]]", call.trailing_metadata() or ()
            ):
                if key == "x-road-error":
                    text = value if isinstance(value, str) else value.decode("ascii", "replace")
                    error = ":".join(text.split(":", 2)[:2])
            return Outcome(call.code().name, error, call.details() or "")
    return Outcome("OK", "", "")


def ocsp_der(cert: x509.Certificate, issuer: x509.Certificate, url: str) -> bytes:
    """A fresh OCSP response about ``cert`` from the responder at ``url`` (whatever it
    says: good or revoked)."""

    async def fetch() -> bytes:
        async with OCSPClient() as client:
            return (await client.fetch(cert, issuer, url=url)).der

    return asyncio.run(fetch())


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def counter(text: str, name: str, labels: dict[str, str]) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels`` (0 if none)."""
    total = 0.0
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None or match.group(1) != name:
            continue
        found = dict(_LABEL.findall(match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(3))
    return total


# -- bringing it up -------------------------------------------------------------------------


def start_federation(
    workdir: Path, services: list[Service], *, validity_s: int = 30
) -> AttackFederation:
    """Start the federation under ``workdir`` (module docstring); every process goes to
    ``services`` as it starts."""
    relays: list[ConfigurationRelay] = []

    def edit_registry(toml: Path) -> None:
        text = toml.read_text()
        relay = ConfigurationRelay(str(tomllib.loads(text)["http_listen"]))
        relays.append(relay)
        text = _set(text, "configuration_validity_s", str(validity_s))
        text = _set(text, "regeneration_interval_s", "3")
        text = re.sub(r"(?m)^# public_url = .*$", f'public_url = "{relay.url}"', text)
        assert f'public_url = "{relay.url}"' in text, text
        toml.write_text(text)

    def prepare(setup: Setup) -> None:
        for config in setup.gateway_configs.values():
            config.write_text(_set(config.read_text(), "globalconf_refresh_interval_s", "1"))

    try:
        up = bring_up(
            workdir,
            services,
            edit_registry=edit_registry,
            prepare=prepare,
        )
    except BaseException:
        for relay in relays:
            relay.close()
        raise
    (relay,) = relays
    setup = up.setup
    return AttackFederation(
        workdir=workdir,
        pki=setup.pki,
        anchor=setup.anchor,
        echo=setup.echo,
        peer=str(up.listening["provider"]["peer"]),
        metrics=str(up.listening["provider"]["metrics"]),
        consumer_keys=workdir / "consumer" / "keys",
        provider_keys=workdir / "provider" / "keys",
        registry_env=setup.registry_env,
        relay=relay,
        provider=next(s for s in services if s.name == "gateway-provider"),
        ocsp_url=f"http://{setup.ocsp_listen}/",
        validity_s=validity_s,
        services=services,
    )


def _set(text: str, key: str, value: str) -> str:
    """``key = value`` in a TOML file's text, replacing the line that sets ``key``."""
    new, count = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", text)
    assert count == 1, (key, text)
    return new


def openssl_tls12(peer: str, tls_dir: Path, tls: Tls) -> subprocess.CompletedProcess[str]:
    """``openssl s_client -tls1_2`` to ``peer`` with a valid client identity."""
    return _openssl(peer, tls_dir, tls, "-tls1_2")


def openssl_tls13(peer: str, tls_dir: Path, tls: Tls) -> subprocess.CompletedProcess[str]:
    """``openssl s_client -tls1_3`` (the control of :func:`openssl_tls12`)."""
    return _openssl(peer, tls_dir, tls, "-tls1_3")


def _openssl(peer: str, tls_dir: Path, tls: Tls, version: str) -> subprocess.CompletedProcess[str]:
    tls_dir.mkdir(parents=True, exist_ok=True)
    key, chain = tls_dir / "client.key", tls_dir / "client.pem"
    key.write_bytes(tls.key_pem)
    key.chmod(0o600)
    chain.write_bytes(tls.chain_pem)
    command = ["openssl", "s_client", version, "-connect", peer, "-brief"]
    command += ["-cert", str(chain), "-key", str(key)]
    return subprocess.run(
        command,
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def tls_session(peer: str, tls: Tls, *, roots: bytes) -> str:
    """What the server at ``peer`` does with a TLS 1.3 client presenting ``tls`` (ALPN h2,
    as gRPC) once it sends the HTTP/2 preface: ``"accepted"`` (the server answered),
    ``"closed"`` (it closed the connection without a word: what grpc's TLS stack does
    when it refuses a client certificate after the TLS 1.3 handshake), or the reason of
    the TLS alert it sent."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.load_verify_locations(cadata=roots.decode("ascii"))
    context.set_alpn_protocols(["h2"])
    with tempfile.TemporaryDirectory() as name:
        key, chain = Path(name) / "key.pem", Path(name) / "chain.pem"
        key.write_bytes(tls.key_pem)
        chain.write_bytes(tls.chain_pem)
        context.load_cert_chain(chain, key)
    host, port = peer.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=_RPC_TIMEOUT_S) as raw:
        try:
            with context.wrap_socket(raw) as conn:
                conn.sendall(_H2_PREFACE)
                return "accepted" if conn.recv(1) else "closed"
        except (ssl.SSLEOFError, ConnectionResetError, BrokenPipeError):
            return "closed"
        except ssl.SSLError as exc:
            return str(exc.reason)


#: The HTTP/2 client preface and an empty SETTINGS frame.
_H2_PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000")
