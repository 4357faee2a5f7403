"""TLS 1.3 only (:mod:`serai.tlspolicy`), checked with real processes and real ``openssl``.

Each gRPC end runs in a child process of its own, because gRPC core reads the policy
once per process when it initialises; ``openssl s_client`` and ``s_server`` are the
independent peers. One test per rule of the module docstring.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from gateway.serve import _require_tls13
from serai import tlspolicy
from serai.errors import SeraiError
from serai.localprocs import free_port

OPENSSL = shutil.which("openssl")

# A gRPC TLS server in a child process; argv: order ("serai-first" or "grpc-first"),
# key, certificate, port. "grpc-first" initialises gRPC before Serai can set its policy.
_SERVER = textwrap.dedent(
    """
    import asyncio, sys
    order, key, cert, port = sys.argv[1:5]
    if order == "serai-first":
        import serai
        import grpc
    else:
        import grpc
        import serai
    async def main():
        server = grpc.aio.server()
        creds = grpc.ssl_server_credentials([(open(key, "rb").read(), open(cert, "rb").read())])
        server.add_secure_port(f"127.0.0.1:{port}", creds)
        await server.start()
        print("listening", flush=True)
        await asyncio.sleep(60)
    asyncio.run(main())
    """
)

# A gRPC client channel in a child process that tries to connect once; argv: root, port.
_CLIENT = textwrap.dedent(
    """
    import sys
    import serai
    import grpc
    root, port = sys.argv[1:3]
    channel = grpc.secure_channel(
        f"127.0.0.1:{port}",
        grpc.ssl_channel_credentials(open(root, "rb").read()),
        options=[("grpc.ssl_target_name_override", "localhost")],
    )
    try:
        grpc.channel_ready_future(channel).result(timeout=3)
    except grpc.FutureTimeoutError:
        pass
    """
)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throw-away self-signed P-256 certificate for ``localhost`` and its key."""
    where = tmp_path_factory.mktemp("tls")
    key, cert = where / "key.pem", where / "cert.pem"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost",
    )  # fmt: skip
    return key, cert


@pytest.fixture
def server(certificate: tuple[Path, Path], request: pytest.FixtureRequest) -> Iterator[int]:
    """A gRPC TLS server child process (import order from the test's parameter)."""
    port = free_port()
    key, cert = certificate
    # This process imported serai, so its environment carries the policy: leave it out.
    env = {k: v for k, v in os.environ.items() if k != tlspolicy.CIPHER_SUITES_VARIABLE}
    child = subprocess.Popen(
        [sys.executable, "-c", _SERVER, request.param, str(key), str(cert), str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=Path(__file__).parent.parent,
        env=env,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "listening"
        yield port
    finally:
        child.kill()
        child.communicate()


def _openssl(*args: str | Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    assert OPENSSL is not None, "the openssl command is needed"
    return subprocess.run(
        [OPENSSL, *map(str, args)],
        check=False,
        input=stdin,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=20,
    )


def _s_client(port: int, version: str) -> str:
    """What ``openssl s_client`` negotiated with 127.0.0.1:``port`` (e.g. ``TLSv1.3``),
    or ``""`` when the handshake failed."""
    result = _openssl("s_client", "-connect", f"127.0.0.1:{port}", version, "-alpn", "h2")
    for line in result.stdout.splitlines():
        if line.startswith("New, ") and "Cipher is (NONE)" not in line:
            return line.split(",")[1].strip()
    return ""


def test_the_policy_is_in_the_environment_once_serai_is_imported() -> None:
    # This module imported serai (through serai.tlspolicy), which set it.
    assert os.environ[tlspolicy.CIPHER_SUITES_VARIABLE] == tlspolicy.TLS12_CIPHER_SUITES


@pytest.mark.parametrize("server", ["serai-first"], indirect=True)
def test_a_grpc_server_refuses_tls_1_2_and_serves_tls_1_3(server: int) -> None:
    assert _s_client(server, "-tls1_2") == ""
    assert _s_client(server, "-tls1_3") == "TLSv1.3"


@pytest.mark.parametrize("server", ["serai-first"], indirect=True)
def test_no_pre_shared_key_makes_the_tls_1_2_suite_usable(server: int) -> None:
    result = _openssl(
        "s_client", "-connect", f"127.0.0.1:{server}", "-tls1_2",
        "-cipher", tlspolicy.TLS12_CIPHER_SUITES, "-psk", "00112233445566778899",
    )  # fmt: skip
    assert "Cipher is (NONE)" in result.stdout


@pytest.mark.parametrize("server", ["grpc-first"], indirect=True)
async def test_grpc_initialised_before_serai_speaks_tls_1_2_and_the_probe_sees_it(
    server: int,
) -> None:
    assert _s_client(server, "-tls1_2") == "TLSv1.2"  # why gateways check their ports
    assert await tlspolicy.tls12_accepted("127.0.0.1", server) is True


@pytest.mark.parametrize("server", ["serai-first"], indirect=True)
async def test_the_probe_reports_a_refused_tls_1_2(server: int) -> None:
    assert await tlspolicy.tls12_accepted("127.0.0.1", server) is False


async def test_the_probe_needs_a_listener() -> None:
    with pytest.raises(OSError, match=r"[Cc]onnect"):
        await tlspolicy.tls12_accepted("127.0.0.1", free_port())


@pytest.mark.parametrize(("version", "agreed"), [("-tls1_2", False), ("-tls1_3", True)])
def test_a_grpc_client_refuses_a_tls_1_2_server(
    certificate: tuple[Path, Path], version: str, agreed: bool
) -> None:
    key, cert = certificate
    port = free_port()
    # s_server stops at the end of its standard input: keep it open while the client runs.
    server = subprocess.Popen(
        [OPENSSL or "openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(cert),
         "-key", str(key), version, "-alpn", "h2"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        errors="replace",
    )  # fmt: skip
    try:
        _wait_for_port(port)
        subprocess.run(
            [sys.executable, "-c", _CLIENT, str(cert), str(port)],
            cwd=Path(__file__).parent.parent,
            capture_output=True,
            timeout=30,
            check=True,
        )
    finally:
        server.kill()
        output, _ = server.communicate()
    assert ("CIPHER is TLS_" in output) is agreed, output
    assert ("no shared cipher" in output) is not agreed, output


def _wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


@pytest.mark.parametrize("server", ["grpc-first", "serai-first"], indirect=True)
async def test_a_gateway_refuses_to_run_when_its_peer_port_speaks_tls_1_2(
    server: int, request: pytest.FixtureRequest
) -> None:
    config = SimpleNamespace(peer_listen=("127.0.0.1", server), is_tls=False)
    runtime = SimpleNamespace(peer_port=server, is_port=0)
    if request.node.callspec.params["server"] == "grpc-first":
        with pytest.raises(SeraiError, match=r"accepts TLS 1\.2"):
            await _require_tls13(config, runtime)  # type: ignore[arg-type]
    else:
        await _require_tls13(config, runtime)  # type: ignore[arg-type]
