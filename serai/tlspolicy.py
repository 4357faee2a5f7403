"""TLS 1.3 only, for every TLS connection gRPC makes or accepts in a Serai process.

grpcio 1.75 has no option for the minimum TLS version (grpc/grpc#37305; the PRs that
would add one are open), so Serai gets there another way. gRPC core reads the
environment variable ``GRPC_SSL_CIPHER_SUITES`` once, when it initialises, and hands it
to BoringSSL as the cipher list. In BoringSSL that list governs TLS 1.2 and below only:
the TLS 1.3 suites are always on and cannot be configured. :func:`apply` sets the list
to a single pre-shared-key suite (:data:`TLS12_CIPHER_SUITES`), and gRPC never
configures a pre-shared key, so no TLS 1.2 handshake can agree on a cipher:

* a server port refuses a TLS 1.2 client with a ``handshake_failure`` alert right
  after its ClientHello (``NO_SHARED_CIPHER``); a TLS 1.3 client is served as before;
* a client channel offers TLS 1.3 plus that one suite, so a server that only speaks
  TLS 1.2 fails the handshake (``no shared cipher``).

Invariants:

1. :func:`apply` runs when the ``serai`` package is imported (its ``__init__``), and the
   ``gateway``, ``registry``, ``certs`` and ``adapters`` packages import ``serai`` first,
   so every ``serai`` command sets the variable before gRPC core reads it. It
   overrides any value already in the environment: TLS 1.3 is not an option.
2. A process that initialised gRPC before importing Serai (an embedding program) keeps
   gRPC's defaults, and nothing in gRPC says so. That is why a gateway does not trust
   this module alone: after its ports open it sends a TLS 1.2 ClientHello to each TLS
   port (:func:`tls12_accepted`) and refuses to run if any answers with a ServerHello.
3. :func:`tls12_accepted` completes no handshake and sends nothing after the
   ClientHello; it only reads the first record of the answer.

What this does not do: it does not pick TLS 1.3 suites (BoringSSL's set is fixed:
AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305), and it does not touch Python's
:mod:`ssl` contexts, which set ``minimum_version`` themselves where Serai uses them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from typing import Final

__all__ = [
    "CIPHER_SUITES_VARIABLE",
    "TLS12_CIPHER_SUITES",
    "apply",
    "tls12_accepted",
]

#: The environment variable gRPC core reads its TLS 1.2 cipher list from.
CIPHER_SUITES_VARIABLE: Final = "GRPC_SSL_CIPHER_SUITES"
#: A TLS 1.2 suite that needs a pre-shared key, which gRPC never has: none can be agreed.
TLS12_CIPHER_SUITES: Final = "PSK-AES128-CBC-SHA"

_RECORD_HANDSHAKE: Final = 0x16
_RECORD_ALERT: Final = 0x15
_SERVER_HELLO: Final = 0x02
_READ_TIMEOUT_S: Final = 5.0


def apply() -> None:
    """Make gRPC core refuse TLS 1.2 and below in this process (see the docstring).

    Effective only before gRPC core initialises, i.e. before ``grpc`` is imported.
    """
    os.environ[CIPHER_SUITES_VARIABLE] = TLS12_CIPHER_SUITES


async def tls12_accepted(host: str, port: int, *, timeout_s: float = _READ_TIMEOUT_S) -> bool:
    """Whether the TLS server at ``host:port`` answers a TLS 1.2-only ClientHello with a
    ServerHello (True: it would speak TLS 1.2) rather than an alert or a closed
    connection (False).

    Raises :class:`OSError` when nothing listens there and :class:`TimeoutError` when
    the server does not answer within ``timeout_s``.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["h2"])
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_side=False)
    with contextlib.suppress(ssl.SSLWantReadError):  # it wants the server's answer
        tls.do_handshake()
    client_hello = outgoing.read()
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    try:
        writer.write(client_hello)
        await writer.drain()
        try:
            # A record header (5 bytes), then the first handshake message's type.
            first = await asyncio.wait_for(reader.readexactly(6), timeout_s)
        except asyncio.IncompleteReadError:
            return False  # closed without a ServerHello
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
    if first[0] == _RECORD_ALERT:
        return False
    return first[0] == _RECORD_HANDSHAKE and first[5] == _SERVER_HELLO
