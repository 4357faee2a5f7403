"""Interoperability of Serai's TSA and verifier with OpenSSL's ``openssl ts``.

* Tokens from ``serai pki tsa serve`` (run as a real process on a free loopback port),
  fetched by our client and by a plain HTTP POST of an ``openssl ts -query`` request,
  verify with ``openssl ts -verify``; changed data does not.
* Replies made by ``openssl ts -reply`` (OpenSSL's own TSA, with a TSA certificate
  issued by our CA) pass our verifier; changed data does not.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from asn1crypto import tsp

from certs.errors import TimestampError
from certs.keys import generate_private_key, write_certificate_chain, write_private_key
from certs.pkidir import PKIDirectory
from certs.profiles import Profile
from certs.timestamp import TIMESTAMP_QUERY, TimestampClient, verify_reply
from certs.tsa import DEFAULT_POLICY

pytestmark = pytest.mark.interop

REPO = Path(__file__).resolve().parent.parent
DATA = b"interoperable evidence\n"


def _openssl(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("openssl")
    assert exe is not None, "the openssl command is needed for the interop tests"
    return subprocess.run(
        [exe, *map(str, args)], check=False, capture_output=True, text=True, timeout=60, cwd=cwd
    )


@dataclass
class Server:
    pki: PKIDirectory
    url: str
    work: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("tsa-interop")
    pki = PKIDirectory.init(work / "pki", instance="UZ")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "serai.cli",
            "pki",
            "tsa",
            "serve",
            "--dir",
            str(pki.root),
            "--listen",
            "127.0.0.1:0",
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    try:
        start = json.loads(proc.stderr.readline())
        assert start["event"] == "tsa_listening"
        assert start["policy"] == DEFAULT_POLICY
        yield Server(pki=pki, url=start["url"], work=work)
    finally:
        proc.terminate()
        _, rest = proc.communicate(timeout=30)
    assert proc.returncode == 0, rest
    assert json.loads(rest.splitlines()[-1])["event"] == "tsa_stopped"


def _post(url: str, body: bytes) -> bytes:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": TIMESTAMP_QUERY}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/timestamp-reply"
        body_out: bytes = response.read()
        return body_out


def _openssl_verify(server: Server, data_file: Path, *source: str | Path) -> str:
    result = _openssl(
        "ts",
        "-verify",
        "-data",
        data_file,
        *source,
        "-CAfile",
        server.pki.root_cert,
        "-untrusted",
        server.pki.tsa_cert,
    )
    return result.stdout + result.stderr


@pytest.mark.parametrize("digest", ["sha256", "sha384", "sha512"])
@pytest.mark.parametrize("cert", [True, False], ids=["cert", "no-cert"])
def test_openssl_verifies_reply_to_openssl_query(
    server: Server, tmp_path: Path, digest: str, cert: bool
) -> None:
    data_file = tmp_path / "data.bin"
    data_file.write_bytes(DATA)
    query = tmp_path / "query.tsq"
    args: list[str | Path] = ["ts", "-query", "-data", data_file, f"-{digest}", "-out", query]
    result = _openssl(*args, *(["-cert"] if cert else []))
    assert result.returncode == 0, result.stderr
    reply = tmp_path / "reply.tsr"
    reply.write_bytes(_post(server.url, query.read_bytes()))

    assert "Verification: OK" in _openssl_verify(server, data_file, "-in", reply)
    # Against the query instead of the data: openssl also checks the nonce.
    result = _openssl(
        "ts",
        "-verify",
        "-queryfile",
        query,
        "-in",
        reply,
        "-CAfile",
        server.pki.root_cert,
        "-untrusted",
        server.pki.tsa_cert,
    )
    assert "Verification: OK" in result.stdout, result.stderr
    other = tmp_path / "other.bin"
    other.write_bytes(DATA + b"changed")
    assert "Verification: OK" not in _openssl_verify(server, other, "-in", reply)


async def test_openssl_verifies_token_from_our_client(server: Server, tmp_path: Path) -> None:
    root = server.pki.root_certificate()
    async with TimestampClient(server.url, trusted_roots=[root], timeout_s=30) as client:
        token = await client.timestamp(DATA)
    data_file = tmp_path / "data.bin"
    data_file.write_bytes(DATA)
    token_file = tmp_path / "token.der"
    token_file.write_bytes(token.token_der)
    out = _openssl_verify(server, data_file, "-token_in", "-in", token_file)
    assert "Verification: OK" in out, out
    data_file.write_bytes(DATA + b"!")
    assert "Verification: OK" not in _openssl_verify(
        server, data_file, "-token_in", "-in", token_file
    )


_OPENSSL_TSA_CONFIG = """\
[ tsa ]
default_tsa = tsa_config1

[ tsa_config1 ]
dir = {dir}
serial = $dir/serial
crypto_device = builtin
signer_cert = $dir/tsa.pem
certs = $dir/chain.pem
signer_key = $dir/tsa.key
signer_digest = sha256
default_policy = 1.3.6.1.4.1.99999.1
other_policies = 1.3.6.1.4.1.99999.2
digests = sha256, sha384, sha512
accuracy = secs:1, millisecs:500, microsecs:100
clock_precision_digits = 0
ordering = yes
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""


@pytest.fixture(scope="module")
def openssl_tsa(tmp_path_factory: pytest.TempPathFactory) -> tuple[PKIDirectory, Path]:
    """OpenSSL's TSA, configured with a TSA certificate our CA issued."""
    work = tmp_path_factory.mktemp("openssl-tsa")
    pki = PKIDirectory.init(work / "pki", instance="KG")
    ca = pki.issuing_ca()
    key = generate_private_key()
    cert = ca.issue(Profile.TSA, "OpenSSL TSA", key.public_key())
    tsa_dir = work / "openssl"
    tsa_dir.mkdir()
    write_private_key(tsa_dir / "tsa.key", key)
    write_certificate_chain(tsa_dir / "tsa.pem", [cert])
    write_certificate_chain(tsa_dir / "chain.pem", [ca.certificate])
    (tsa_dir / "serial").write_text("01\n")
    config = tsa_dir / "tsa.cnf"
    config.write_text(_OPENSSL_TSA_CONFIG.format(dir=tsa_dir))
    return pki, config


@pytest.mark.parametrize("digest", ["sha256", "sha512"])
def test_our_verifier_accepts_openssl_reply(
    openssl_tsa: tuple[PKIDirectory, Path], tmp_path: Path, digest: str
) -> None:
    pki, config = openssl_tsa
    data_file = tmp_path / "data.bin"
    data_file.write_bytes(DATA)
    query = tmp_path / "query.tsq"
    result = _openssl("ts", "-query", "-data", data_file, f"-{digest}", "-cert", "-out", query)
    assert result.returncode == 0, result.stderr
    reply = tmp_path / "reply.tsr"
    result = _openssl(
        "ts", "-reply", "-config", config, "-queryfile", query, "-out", reply, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    nonce = tsp.TimeStampReq.load(query.read_bytes())["nonce"].native
    assert isinstance(nonce, int)
    root = pki.root_certificate()

    token = verify_reply(reply.read_bytes(), data=DATA, nonce=nonce, trusted_roots=[root])
    assert token.policy == "1.3.6.1.4.1.99999.1"
    assert token.hash_name == digest
    assert token.accuracy == dt.timedelta(seconds=1, milliseconds=500, microseconds=100)
    assert token.tsa_certificate.subject.rfc4514_string() == "CN=OpenSSL TSA"

    with pytest.raises(TimestampError, match="imprint does not match"):
        verify_reply(reply.read_bytes(), data=DATA + b"x", nonce=nonce, trusted_roots=[root])
    with pytest.raises(TimestampError, match="nonce"):
        verify_reply(reply.read_bytes(), data=DATA, nonce=nonce + 1, trusted_roots=[root])
