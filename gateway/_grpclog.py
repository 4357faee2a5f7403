"""Counting the TLS handshakes grpc refuses, which no gateway code sees.

A client certificate from an unknown CA, an expired one, or a TLS 1.2 offer (which
:mod:`serai.tlspolicy` leaves without a cipher) is refused inside grpc core during the
handshake, before any call exists: grpcio gives Python no hook for it, and the only
trace is grpc core's own log line on the process's standard error
(``... Handshake failed with error SSL_ERROR_SSL: ...``). So that operators can see and
alert on such refusals, :func:`install` puts a pipe in front of file descriptor 2 and a
thread copies everything written there to the original standard error, counting the
handshake lines by reason; :class:`HandshakeFailureCollector` exposes the counts as
``serai_gateway_tls_handshake_failures_total{reason}``.

Invariants (each has a test in ``tests/test_grpclog.py``):

1. **Nothing is lost or reordered.** Every byte written to descriptor 2, by grpc core
   or by Python, reaches the original standard error, in order: the thread writes each
   chunk whole before reading the next. If the original cannot be written (a closed
   pipe), the bytes are dropped, as a direct write would have failed.
2. **Shutdown.** At interpreter exit the original descriptor 2 is put back first, so
   what is written during shutdown goes straight out, and the thread drains what the
   pipe still holds.
3. **Once per process, only where asked.** ``serai gateway serve`` (and each of its
   workers) installs it; a second call does nothing. Without it the counts stay empty.
4. **Counting only.** A line is counted when it holds ``Handshake failed``, by the
   first reason it names: ``no_shared_cipher`` (e.g. a TLS 1.2 offer),
   ``certificate_expired``, ``certificate_untrusted`` (no path to an approved root),
   ``certificate_revoked``, ``not_tls`` (plaintext or another protocol on a TLS port),
   else ``other``. Lines are matched as bytes: nothing is decoded, parsed or altered.
"""

from __future__ import annotations

import atexit
import collections
import os
import threading
from collections.abc import Iterator
from typing import Final

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

__all__ = ["HandshakeFailureCollector", "counts", "install", "reason_of"]

_MARKER: Final = b"Handshake failed"
_REASONS: Final = (
    (b"NO_SHARED_CIPHER", "no_shared_cipher"),
    (b"certificate has expired", "certificate_expired"),
    (b"CERTIFICATE_EXPIRED", "certificate_expired"),
    (b"unable to get local issuer certificate", "certificate_untrusted"),
    (b"CERTIFICATE_VERIFY_FAILED", "certificate_untrusted"),
    (b"certificate revoked", "certificate_revoked"),
    (b"WRONG_VERSION_NUMBER", "not_tls"),
    (b"HTTP_REQUEST", "not_tls"),
)
_MAX_LINE: Final = 64 * 1024

_lock = threading.Lock()
_counts: collections.Counter[str] = collections.Counter()
_installed = False


def reason_of(line: bytes) -> str | None:
    """The reason a log line gives for a refused handshake, or ``None`` if it is no
    such line (invariant 4)."""
    if _MARKER not in line:
        return None
    for needle, reason in _REASONS:
        if needle in line:
            return reason
    return "other"


def counts() -> dict[str, int]:
    """Refused handshakes counted so far, by reason."""
    with _lock:
        return dict(_counts)


def install() -> bool:
    """Start counting (module docstring); ``False`` if it was already installed."""
    global _installed  # noqa: PLW0603  (one pipe per process)
    with _lock:
        if _installed:
            return False
        _installed = True
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    thread = threading.Thread(
        target=_pump, args=(read_end, original), name="grpc-log-counter", daemon=True
    )
    thread.start()

    def restore() -> None:
        os.dup2(original, 2)  # the pipe's last writer goes: the thread reads to its end
        thread.join(timeout=2.0)

    atexit.register(restore)
    return True


def _pump(read_end: int, original: int) -> None:
    pending = b""
    while True:
        try:
            chunk = os.read(read_end, 65536)
        except OSError:
            return
        if not chunk:
            return
        _write_all(original, chunk)
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()[-_MAX_LINE:]
        for line in lines:
            reason = reason_of(line)
            if reason is not None:
                with _lock:
                    _counts[reason] += 1


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except OSError:
            return  # invariant 1: dropped, as the direct write would have failed
        view = view[written:]


class HandshakeFailureCollector(Collector):
    """``serai_gateway_tls_handshake_failures_total{reason}`` from :func:`counts`."""

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "serai_gateway_tls_handshake_failures",
            "TLS handshakes refused on this gateway's ports (or failed on its channels), "
            "by reason, as grpc core logs them.",
            labels=["reason"],
        )
        for reason, count in sorted(counts().items()):
            family.add_metric([reason], count)
        yield family
