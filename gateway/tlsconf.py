"""TLS for the peer port: credentials, the peer's certificate, and pinning (DESIGN §4 hop 2);
and the credentials of a TLS IS port (:func:`is_server_credentials`).

What it guarantees, with what grpcio 1.75 lets a Python program do:

- **Provider side.** The peer port requires a client certificate chaining to an
  approved root of the global configuration in force *at the handshake*
  (:class:`PeerServerCredentials`: ``grpc.dynamic_ssl_server_credentials`` with
  client authentication required); :func:`peer_certificate_sha256` reads the
  certificate the handshake verified from the call's auth context, and the provider
  then looks its SHA-256 up among the registered gateways.
- **Consumer side.** grpcio exposes neither the server certificate of a client channel
  nor a custom verification callback, and the registry publishes only the SHA-256 of
  each gateway's authentication certificate. So the consumer gateway first makes one
  TLS 1.3 handshake of its own to the peer address with :mod:`ssl`
  (:func:`fetch_peer_certificate`, presenting our client certificate, checking the
  chain against the approved roots), compares the SHA-256 of the certificate it got
  with the registered hash, and only then opens the gRPC channel with **that exact
  certificate as its only root** (:func:`pinned_channel_credentials`). gRPC's TLS stack
  (BoringSSL, which accepts a trusted leaf as the end of a partial chain) then completes
  every handshake on that channel, including reconnects, only with a server holding
  the key of the registered certificate: the probe merely learns which certificate to
  pin, and a substitute seen by the probe fails the hash check while a substitute
  seen by gRPC fails the pin. The host name gRPC checks is taken from the pinned
  certificate itself (``grpc.ssl_target_name_override``); it adds nothing, the pin is
  the check.

Residual risks: the probe costs one extra handshake per channel (not per call); a peer
that rotates its certificate needs a new channel, which the pool opens when the
registered hash changes; an expired pinned certificate fails like any other.

**Approved roots on the peer port.** grpc calls the fetcher of
:class:`PeerServerCredentials` before each new incoming TLS handshake (in a grpc core
thread, not on the event loop); it compares a digest of the sorted root DERs of the
snapshot in force with the roots in force and hands grpc a new certificate
configuration when they differ. So a CA the registry approves is accepted, and a CA it
withdraws refused, from the first handshake after the gateway refreshed its
configuration. **Connections already established are not re-checked**: a peer whose CA
was withdrawn keeps its open HTTP/2 connection (and may keep calling on it) until that
connection closes; every reconnect is a new handshake and fails. The provider's own
checks still run per call (the certificate's SHA-256 must be a registered gateway's,
and the signed header's chain and OCSP are validated against the configuration in
force), which is what bounds that window. When the configuration has expired or none is
at hand, the roots in force are kept (calls are refused by the provider with
``globalconf_expired`` anyway); an approved set that becomes empty is replaced by a
throw-away root whose key was never kept, so nobody can complete a handshake (grpc
would otherwise keep the old roots when given none). The consumer's probe
(:class:`ProbeContext`) still checks server chains against the roots at start.

**TLS 1.3.** grpcio 1.75 has no option for the minimum TLS version
(grpc/grpc#37305), so :mod:`serai.tlspolicy` leaves gRPC core no TLS 1.2 cipher it can
agree on: every gRPC port and channel of a Serai process speaks TLS 1.3 only, and
:func:`gateway.serve.run_gateway` checks its TLS ports with a TLS 1.2 ClientHello after
they open and refuses to run if one answers. The probe sets ``minimum_version`` itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import os
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Final

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certs.ca import self_signed_root
from certs.keys import generate_private_key
from gateway.errors import GatewayError
from serai.errors import ErrorCode, Origin

__all__ = [
    "PeerServerCredentials",
    "ProbeContext",
    "certificates_pem",
    "fetch_peer_certificate",
    "is_server_credentials",
    "peer_certificate_sha256",
    "pinned_channel_credentials",
    "roots_digest",
    "split_host_port",
    "target_name_of",
]

_AUTH_CERT_KEY: Final = "x509_pem_cert"


def certificates_pem(certificates: Sequence[x509.Certificate | bytes]) -> bytes:
    """PEM of certificates given as objects or DER."""
    out = bytearray()
    for cert in certificates:
        obj = cert if isinstance(cert, x509.Certificate) else x509.load_der_x509_certificate(cert)
        out += obj.public_bytes(serialization.Encoding.PEM)
    return bytes(out)


def roots_digest(roots: Iterable[x509.Certificate]) -> bytes:
    """SHA-256 over the sorted DERs of ``roots`` (each length-prefixed): equal for equal
    sets, whatever their order or duplicates."""
    ders = sorted({root.public_bytes(serialization.Encoding.DER) for root in roots})
    digest = hashlib.sha256()
    for der in ders:
        digest.update(len(der).to_bytes(4, "big"))
        digest.update(der)
    return digest.digest()


class PeerServerCredentials:
    """Peer-port credentials whose client roots follow the approved roots of the
    configuration in force (module docstring, "Approved roots on the peer port").

    ``roots`` returns the approved roots in force (the same object while the snapshot
    is the same); it is called at construction, where it may raise (no configuration at
    start), and then from :meth:`fetch` in grpc threads, where a failure keeps the roots
    in force. :attr:`credentials` goes to ``add_secure_port``.

    Thread safety: :meth:`fetch` may run in several grpc threads at once; the roots in
    force (their digest, and the last source object seen) change only under a lock, and
    the common case (same snapshot as last time) is one call and one identity check.
    """

    def __init__(
        self,
        *,
        key_pem: bytes,
        chain_pem: bytes,
        roots: Callable[[], Sequence[x509.Certificate]],
    ) -> None:
        self._key_pem = key_pem
        self._chain_pem = chain_pem
        self._roots = roots
        self._lock = threading.Lock()
        initial = roots()
        self._seen: Sequence[x509.Certificate] = initial
        self._digest = roots_digest(initial)
        self.credentials = grpc.dynamic_ssl_server_credentials(
            self._configuration(initial),
            self.fetch,  # type: ignore[arg-type]  # the stubs omit None ("unchanged")
            require_client_authentication=True,
        )

    @property
    def digest(self) -> bytes:
        """:func:`roots_digest` of the roots in force."""
        return self._digest

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """grpc's certificate configuration fetcher: a new configuration when the
        approved roots differ from those in force, else ``None`` (keep them)."""
        try:
            current = self._roots()
        except Exception:  # noqa: BLE001  (no configuration in force: keep the roots)
            return None
        if current is self._seen:
            return None
        with self._lock:
            if current is self._seen:
                return None
            digest = roots_digest(current)
            self._seen = current
            if digest == self._digest:
                return None
            configuration = self._configuration(current)
            self._digest = digest
        return configuration

    def _configuration(
        self, roots: Sequence[x509.Certificate]
    ) -> grpc.ServerCertificateConfiguration:
        roots_pem = certificates_pem(roots) if roots else _nobody_root_pem()
        return grpc.ssl_server_certificate_configuration(
            [(self._key_pem, self._chain_pem)], root_certificates=roots_pem
        )


_NOBODY_ROOT: list[bytes] = []
_NOBODY_LOCK = threading.Lock()


def _nobody_root_pem() -> bytes:
    """A self-signed root whose key is discarded: trusting only it refuses everybody."""
    with _NOBODY_LOCK:
        if not _NOBODY_ROOT:
            cert = self_signed_root(generate_private_key(), name="Serai: no approved CA")
            _NOBODY_ROOT.append(certificates_pem([cert]))
        return _NOBODY_ROOT[0]


def is_server_credentials(
    *, key_pem: bytes, chain_pem: bytes, client_ca_pem: bytes
) -> grpc.ServerCredentials:
    """IS-port credentials (TLS IS port): our auth chain; an IS client certificate is
    required and must chain to ``client_ca_pem`` (the member's own IS CA)."""
    return grpc.ssl_server_credentials(
        [(key_pem, chain_pem)], root_certificates=client_ca_pem, require_client_auth=True
    )


def pinned_channel_credentials(
    *, peer_certificate_der: bytes, key_pem: bytes, chain_pem: bytes
) -> grpc.ChannelCredentials:
    """Client credentials that trust exactly the peer's certificate (module docstring)."""
    return grpc.ssl_channel_credentials(
        root_certificates=certificates_pem([peer_certificate_der]),
        private_key=key_pem,
        certificate_chain=chain_pem,
    )


def target_name_of(certificate_der: bytes) -> str:
    """A host name the certificate is valid for (first DNS name, else first IP address)."""
    cert = x509.load_der_x509_certificate(certificate_der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    if san is not None:
        names = san.get_values_for_type(x509.DNSName)
        if names:
            return names[0]
        ips = san.get_values_for_type(x509.IPAddress)
        if ips:
            return str(ips[0])
    raise GatewayError(
        "the peer's authentication certificate names no host (subjectAltName)",
        code=ErrorCode.PEER_NOT_REGISTERED,
        origin=Origin.PROVIDER,
    )


def peer_certificate_sha256(auth_context: Mapping[str, Iterable[bytes]]) -> bytes | None:
    """SHA-256 of the DER client certificate of a TLS call, or None (no TLS, no cert)."""
    pems = list(auth_context.get(_AUTH_CERT_KEY) or ())
    if not pems:
        return None
    der = x509.load_pem_x509_certificate(pems[0]).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).digest()


class ProbeContext:
    """The :mod:`ssl` context of the consumer's probe handshakes: TLS 1.3 only, our
    client certificate, server chain checked against the approved roots (no host name:
    the registered hash is the check)."""

    def __init__(self, *, key_pem: bytes, chain_pem: bytes, roots_pem: bytes) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.check_hostname = False
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=roots_pem.decode("ascii"))
        context.set_alpn_protocols(["h2"])
        _load_chain(context, key_pem, chain_pem)
        self.context = context


async def fetch_peer_certificate(address: str, *, probe: ProbeContext, timeout_s: float) -> bytes:
    """The DER certificate the server at ``address`` (``host:port``) presents.

    Raises :class:`OSError` or :class:`TimeoutError` when it cannot be reached (the
    caller fails over), :class:`ssl.SSLError` when the handshake fails.
    """
    host, port = split_host_port(address)
    async with asyncio.timeout(timeout_s):
        _, writer = await asyncio.open_connection(
            host, port, ssl=probe.context, server_hostname=None
        )
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    if not der:
        raise ssl.SSLError("the peer presented no certificate")
    return bytes(der)


def split_host_port(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` into its parts."""
    host, _, port = address.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not port.isdigit():
        raise ValueError(f"not a host:port address: {address!r}")
    with contextlib.suppress(ValueError):
        host = str(ipaddress.ip_address(host))
    return host, int(port)


def _load_chain(context: ssl.SSLContext, key_pem: bytes, chain_pem: bytes) -> None:
    """:mod:`ssl` loads keys only from files: write them to a private directory
    (mode 0700, files 0600) and remove them as soon as they are loaded."""
    with tempfile.TemporaryDirectory(prefix="serai-tls-") as name:
        directory = Path(name)
        key_path, chain_path = directory / "key.pem", directory / "chain.pem"
        for path, data in ((key_path, key_pem), (chain_path, chain_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        context.load_cert_chain(chain_path, key_path)
