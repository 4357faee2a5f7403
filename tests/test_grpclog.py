"""gateway._grpclog: one test per invariant of its docstring. The pipe rewires the
process's descriptor 2, so each case runs in a child process of its own."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from gateway import _grpclog

_GRPC_LINE = (
    "I0000 00:00:1795793984.048997   30992 ssl_transport_security.cc:1884] Handshake failed "
    "with error SSL_ERROR_SSL: error:100000b8:SSL routines:OPENSSL_internal:{reason}"
)


def _child(body: str) -> subprocess.CompletedProcess[bytes]:
    code = "import os, sys, json\nfrom gateway import _grpclog\n" + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, timeout=60, check=False
    )


def test_every_byte_reaches_the_original_stderr_in_order() -> None:
    result = _child(
        """
        assert _grpclog.install()
        chunks = [os.urandom(n) for n in (1, 100, 70000, 5)]
        for chunk in chunks:
            os.write(2, chunk)
            sys.stderr.buffer.write(b"|python|")
            sys.stderr.flush()
        sys.stdout.buffer.write(b"".join(c + b"|python|" for c in chunks))
        """
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr == result.stdout  # what was written, in order, nothing more


def test_what_is_written_at_exit_is_not_lost() -> None:
    result = _child(
        """
        import atexit
        _grpclog.install()
        atexit.register(lambda: os.write(2, b"late words\\n"))  # runs after restore
        os.write(2, b"early words\\n")
        raise SystemExit("a last message")
        """
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [b"early words", b"a last message", b"late words"]


def test_installed_once() -> None:
    result = _child(
        """
        print(json.dumps([_grpclog.install(), _grpclog.install()]))
        """
    )
    assert json.loads(result.stdout) == [True, False]


def test_handshake_lines_are_counted_by_reason() -> None:
    lines = [
        _GRPC_LINE.format(reason="NO_SHARED_CIPHER: Invalid certificate verification context"),
        _GRPC_LINE.format(reason="CERTIFICATE_VERIFY_FAILED: certificate has expired"),
        _GRPC_LINE.format(
            reason="CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate"
        ),
        _GRPC_LINE.format(reason="WRONG_VERSION_NUMBER"),
        _GRPC_LINE.format(reason="SOMETHING_NEW"),
        "I0000 some other grpc line without the marker",
    ]
    text = "\n".join(lines) + "\n"
    result = _child(
        f"""
        import time
        _grpclog.install()
        data = {text.encode()!r}
        for i in range(0, len(data), 7):  # lines split across writes are still whole
            os.write(2, data[i : i + 7])
        deadline = time.monotonic() + 10
        while sum(_grpclog.counts().values()) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        print(json.dumps(_grpclog.counts()))
        """
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout) == {
        "no_shared_cipher": 1,
        "certificate_expired": 1,
        "certificate_untrusted": 1,
        "not_tls": 1,
        "other": 1,
    }
    assert result.stderr == text.encode()  # copied unchanged


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"x Handshake failed ... NO_SHARED_CIPHER", "no_shared_cipher"),
        (b"x Handshake failed ... certificate revoked", "certificate_revoked"),
        (b"x Handshake failed ...", "other"),
        (b"NO_SHARED_CIPHER without the marker", None),
    ],
)
def test_reason_of(line: bytes, reason: str | None) -> None:
    assert _grpclog.reason_of(line) == reason


def test_the_collector_exposes_the_counts_even_when_none() -> None:
    registry = CollectorRegistry()
    registry.register(_grpclog.HandshakeFailureCollector())
    text = generate_latest(registry).decode()
    assert "# TYPE serai_gateway_tls_handshake_failures_total counter" in text
