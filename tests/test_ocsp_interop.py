"""OCSP interoperability with an implementation no one here wrote: the ``openssl ocsp``
command, as a client against ``serai pki ocsp serve`` and as a responder for
:class:`certs.ocsp_client.OCSPClient`. Real processes on loopback; every subprocess is
killed when its test ends, whatever happens."""

from __future__ import annotations

import datetime as dt
import json
import re
import selectors
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certs.ca import CertificateAuthority, CertStatus
from certs.keys import generate_private_key
from certs.ocsp_client import OCSPClient
from certs.pkidir import PKIDirectory
from certs.profiles import Profile

pytestmark = pytest.mark.interop

OPENSSL = shutil.which("openssl")


@dataclass
class Env:
    pki: PKIDirectory
    ca: CertificateAuthority
    good: Path
    revoked: Path
    unrecorded: Path
    revoked_at: dt.datetime


def _write_cert(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    if OPENSSL is None:
        pytest.fail("the interop tests need the openssl command on PATH")
    root = tmp_path_factory.mktemp("pki")
    pki = PKIDirectory.init(root / "pki", instance="UZ")
    ca = pki.issuing_ca()
    good = ca.issue(Profile.TSA, "interop-good", generate_private_key().public_key())
    revoked = ca.issue(Profile.TSA, "interop-revoked", generate_private_key().public_key())
    revoked_at = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)
    ca.revoke(revoked.serial_number, reason=x509.ReasonFlags.key_compromise, at=revoked_at)
    # Signed by the issuing CA, but never recorded: the responder must say "unknown".
    unrecorded = (
        x509.CertificateBuilder()
        .subject_name(good.subject)
        .issuer_name(ca.certificate.subject)
        .public_key(generate_private_key().public_key())
        .serial_number(0x1234567)
        .not_valid_before(good.not_valid_before_utc)
        .not_valid_after(good.not_valid_after_utc)
        .sign(ca.key, good.signature_hash_algorithm)  # type: ignore[arg-type]
    )
    return Env(
        pki=pki,
        ca=ca,
        good=_write_cert(root / "good.pem", good),
        revoked=_write_cert(root / "revoked.pem", revoked),
        unrecorded=_write_cert(root / "unrecorded.pem", unrecorded),
        revoked_at=revoked_at,
    )


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _read_line(stream: IO[bytes], deadline_s: float) -> str:
    """One line from a subprocess pipe, or fail after ``deadline_s``."""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(timeout=deadline_s):
            pytest.fail(f"no output from the subprocess within {deadline_s} s")
    return stream.readline().decode("utf-8", "replace")


def _stop(proc: subprocess.Popen[bytes]) -> int:
    """Terminate (then kill) ``proc`` if it still runs, and close its pipes."""
    try:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)
    finally:
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    return proc.returncode


# -- openssl as the client, Serai as the responder -----------------------------------------


@dataclass
class Served:
    url: str
    proc: subprocess.Popen[bytes]


@pytest.fixture(scope="module")
def serai_responder(env: Env) -> Iterator[Served]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "serai.cli",
            "pki",
            "ocsp",
            "serve",
            "--dir",
            str(env.pki.root),
            "--listen",
            "127.0.0.1:0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        line = _read_line(proc.stderr, 60)
        event = json.loads(line)
        assert event["event"] == "ocsp_listening", line
        assert event["listen"] == f"127.0.0.1:{event['port']}"
        yield Served(url=event["url"], proc=proc)
    finally:
        _stop(proc)


def _openssl_client(
    env: Env, served: Served, cert: Path, *extra: str, digest: str = "-sha1"
) -> str:
    assert OPENSSL is not None
    result = subprocess.run(
        [
            OPENSSL,
            "ocsp",
            "-issuer",
            str(env.pki.issuing_cert),
            digest,  # must come before -cert
            "-cert",
            str(cert),
            "-url",
            served.url,
            *extra,
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    output = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 0, output
    return output


def _chain_args(env: Env) -> list[str]:
    return ["-CAfile", str(env.pki.root_cert), "-verify_other", str(env.pki.issuing_cert)]


def test_openssl_client_gets_good(env: Env, serai_responder: Served) -> None:
    output = _openssl_client(env, serai_responder, env.good, *_chain_args(env))
    assert "Response verify OK" in output
    assert f"{env.good}: good" in output


def test_openssl_client_gets_revoked_with_reason_and_time(
    env: Env, serai_responder: Served
) -> None:
    output = _openssl_client(env, serai_responder, env.revoked, *_chain_args(env))
    assert "Response verify OK" in output
    assert f"{env.revoked}: revoked" in output
    assert "Reason: keyCompromise" in output
    assert env.revoked_at.strftime("%b %e %H:%M:%S %Y GMT").replace("  ", " ") in output.replace(
        "  ", " "
    )


def test_openssl_client_gets_unknown(env: Env, serai_responder: Served) -> None:
    output = _openssl_client(env, serai_responder, env.unrecorded, *_chain_args(env))
    assert "Response verify OK" in output
    assert f"{env.unrecorded}: unknown" in output


def test_openssl_client_verifies_with_vafile(env: Env, serai_responder: Served) -> None:
    output = _openssl_client(env, serai_responder, env.good, "-VAfile", str(env.pki.ocsp_cert))
    assert "Response verify OK" in output
    assert f"{env.good}: good" in output


def test_openssl_client_with_sha256_cert_id(env: Env, serai_responder: Served) -> None:
    output = _openssl_client(env, serai_responder, env.revoked, *_chain_args(env), digest="-sha256")
    assert "Response verify OK" in output
    assert f"{env.revoked}: revoked" in output


def test_openssl_client_for_two_certificates_gets_malformed_request(
    env: Env, serai_responder: Served
) -> None:
    assert OPENSSL is not None
    result = subprocess.run(
        [
            OPENSSL,
            "ocsp",
            "-issuer",
            str(env.pki.issuing_cert),
            "-cert",
            str(env.good),
            "-cert",
            str(env.revoked),
            "-url",
            serai_responder.url,
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert b"malformedrequest" in (result.stdout + result.stderr).lower()


def test_serai_responder_stops_gracefully_on_sigterm(env: Env) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "serai.cli",
            "pki",
            "ocsp",
            "serve",
            "--dir",
            str(env.pki.root),
            "--listen",
            "127.0.0.1:0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        assert json.loads(_read_line(proc.stderr, 60))["event"] == "ocsp_listening"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        rest = proc.stderr.read().decode()
        assert "Traceback" not in rest
        assert "ocsp_stopped" in rest
    finally:
        _stop(proc)


# -- openssl as the responder, Serai as the client -----------------------------------------


def _index_line(cert: x509.Certificate, revoked: tuple[dt.datetime, str] | None) -> str:
    """One line of OpenSSL's CA database (``index.txt``): V or R, tab-separated."""
    expiry = cert.not_valid_after_utc.strftime("%y%m%d%H%M%SZ")
    serial = format(cert.serial_number, "X")
    serial = serial if len(serial) % 2 == 0 else "0" + serial
    # The subject column is informational: openssl looks certificates up by serial.
    subject = "/" + "/".join(f"{a.rfc4514_attribute_name}={a.value!s}" for a in cert.subject)
    if revoked is None:
        return f"V\t{expiry}\t\t{serial}\tunknown\t{subject}\n"
    when, reason = revoked
    return f"R\t{expiry}\t{when.strftime('%y%m%d%H%M%SZ')},{reason}\t{serial}\tunknown\t{subject}\n"


@dataclass
class OpenSSLResponder:
    url: str


def _start_openssl_responder(env: Env, tmp: Path, *extra: str) -> subprocess.Popen[bytes]:
    assert OPENSSL is not None
    index = tmp / "index.txt"
    index.write_text(
        _index_line(_load(env.good), None)
        + _index_line(_load(env.revoked), (env.revoked_at, "keyCompromise")),
        encoding="ascii",
    )
    return subprocess.Popen(
        [
            OPENSSL,
            "ocsp",
            "-index",
            str(index),
            "-port",
            "0",
            "-rsigner",
            str(env.pki.ocsp_cert),
            "-rkey",
            str(env.pki.ocsp_key),
            "-CA",
            str(env.pki.issuing_cert),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=tmp,
    )


@pytest.fixture(params=[(), ("-resp_key_id", "-nmin", "10")], ids=["by-name", "by-key-nmin"])
def openssl_responder(
    request: pytest.FixtureRequest, env: Env, tmp_path: Path
) -> Iterator[OpenSSLResponder]:
    proc = _start_openssl_responder(env, tmp_path, *request.param)
    try:
        assert proc.stdout is not None
        line = _read_line(proc.stdout, 60)
        match = re.search(r"ACCEPT .*:(\d+)", line)
        assert match is not None, line
        yield OpenSSLResponder(url=f"http://127.0.0.1:{match.group(1)}/")
    finally:
        _stop(proc)


async def test_serai_client_gets_good_from_openssl(
    env: Env, openssl_responder: OpenSSLResponder
) -> None:
    async with OCSPClient(timeout_s=30) as client:
        result = await client.fetch(_load(env.good), env.ca.certificate, url=openssl_responder.url)
    assert result.status is CertStatus.GOOD
    result.require_good()


async def test_serai_client_gets_revoked_from_openssl(
    env: Env, openssl_responder: OpenSSLResponder
) -> None:
    async with OCSPClient(timeout_s=30) as client:
        result = await client.fetch(
            _load(env.revoked), env.ca.certificate, url=openssl_responder.url
        )
    assert result.status is CertStatus.REVOKED
    assert result.revocation_time == env.revoked_at
    assert result.revocation_reason is x509.ReasonFlags.key_compromise


async def test_serai_client_gets_unknown_from_openssl(
    env: Env, openssl_responder: OpenSSLResponder
) -> None:
    async with OCSPClient(timeout_s=30) as client:
        result = await client.fetch(
            _load(env.unrecorded), env.ca.certificate, url=openssl_responder.url
        )
    assert result.status is CertStatus.UNKNOWN
