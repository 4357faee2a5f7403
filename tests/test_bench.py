"""``serai bench``: its options, the nginx configurations it writes, and short real runs
(every process it started is gone afterwards, also when it is interrupted). No figure
is asserted: the bench measures, the tests check what it reports and what it leaves."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from serai import cli
from serai._benchfed import BENCH_METHOD, ECHO_PROVIDER, start_nginx_pair
from serai._benchload import percentile
from serai._benchnginx import NginxPaths, find_nginx, render_client_config, render_server_config
from serai._demoprocs import SERAI, Service, must, run_serai, stop_all
from serai.errors import ConfigError

NGINX = find_nginx()
# .ci/run installs nginx and sets SERAI_REQUIRE_NGINX=1: there a missing nginx fails.
needs_nginx = pytest.mark.skipif(
    NGINX is None and os.environ.get("SERAI_REQUIRE_NGINX", "") in ("", "0"),
    reason="nginx is not installed",
)


# -- options ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--concurrency", "0"], "--concurrency: expected a whole number from 1 to 1024, got '0'"),
        (["--concurrency", "abc"], "--concurrency: expected a whole number"),
        (
            ["--concurrency", "1,,64"],
            "--concurrency: expected a whole number from 1 to 1024, got ''",
        ),
        (["--concurrency", "1,1"], "--concurrency: 1 is given twice"),
        (["--concurrency", "5000"], "--concurrency: expected a whole number from 1 to 1024"),
        (["--concurrency", "-1"], "--concurrency: expected a whole number"),
        (["--payload", "-1"], "--payload: expected a whole number from 0 to 4194304, got '-1'"),
        (["--payload", "1e3"], "--payload: expected a whole number"),
        (["--payload", "4194305"], "--payload: expected a whole number from 0 to 4194304"),
        (["--duration", "0"], "--duration: expected seconds from 0.1 to 3600, got '0'"),
        (["--duration", "nan"], "--duration: expected seconds"),
        (["--duration", "inf"], "--duration: expected seconds"),
        (["--duration", "soon"], "--duration: expected seconds"),
        (["--duration", "7200"], "--duration: expected seconds from 0.1 to 3600"),
        (["--warmup", "-1"], "--warmup: expected seconds from 0 to 3600, got '-1'"),
        (["--rounds", "0"], "--rounds: expected a whole number from 1 to 100, got '0'"),
        (["--rounds", "1.5"], "--rounds: expected a whole number"),
    ],
)
def test_nonsensical_options_are_refused(
    options: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["bench", *options]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"serai: error: invalid_config: {message}"), err


def test_the_workdir_must_be_new_or_empty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "file").write_text("x")
    (tmp_path / "a-file").write_text("x")
    for workdir in (tmp_path / "used", tmp_path / "a-file"):
        assert cli.main(["bench", "--workdir", str(workdir)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(
            f"serai: error: invalid_config: --workdir {workdir}: must not exist or be an empty"
        )


def test_nginx_is_required_when_asked_for(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("serai.bench.find_nginx", lambda: None)
    assert cli.main(["bench", "--nginx"]) == 2
    assert capsys.readouterr().err.startswith(
        "serai: error: invalid_config: --nginx: no nginx executable"
    )


def test_the_defaults() -> None:
    from serai.bench import parse_settings  # noqa: PLC0415  (beside the parser it tests)

    args = cli.build_parser().parse_args(["bench"])
    settings = parse_settings(args)
    assert settings.concurrency == (1, 64)
    assert settings.payload_bytes == 1024
    assert (settings.duration_s, settings.warmup_s, settings.rounds) == (10.0, 2.0, 3)
    assert settings.nginx is None
    assert settings.workdir is None


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([], 0.5, None),
        ([1.0], 0.99, 1.0),
        ([1.0, 2.0], 0.5, 1.0),
        ([float(i) for i in range(1, 11)], 0.9, 9.0),  # not 10: 0.9 * 10 is not 9 in floats
        ([float(i) for i in range(1, 101)], 0.99, 99.0),
        ([float(i) for i in range(1, 101)], 0.5, 50.0),
    ],
)
def test_percentile_is_nearest_rank(values: list[float], q: float, expected: float | None) -> None:
    assert percentile(values, q) == expected


# -- nginx configurations ---------------------------------------------------------------


def _nginx_paths(tmp_path: Path, side: str) -> NginxPaths:
    return NginxPaths(
        prefix=tmp_path / f"nginx-{side}",
        certificate=tmp_path / "keys" / f"{side}.pem",
        key=tmp_path / "keys" / f"{side}.key",
        trusted_ca=tmp_path / "pki" / "ca.pem",
    )


def _directives(text: str) -> set[str]:
    return {line.strip() for line in text.splitlines() if line.strip().endswith(";")}


def test_the_server_side_requires_client_certificates_and_passes_plaintext(
    tmp_path: Path,
) -> None:
    paths = _nginx_paths(tmp_path, "server")
    text = render_server_config(
        paths, listen_port=4431, upstream="127.0.0.1:5000", max_in_flight=64
    )
    found = _directives(text)
    prefix = paths.prefix
    assert {
        "daemon off;",
        "listen 127.0.0.1:4431 ssl http2;",
        "ssl_protocols TLSv1.3;",
        f'ssl_certificate "{paths.certificate}";',
        f'ssl_certificate_key "{paths.key}";',
        f'ssl_client_certificate "{paths.trusted_ca}";',
        "ssl_verify_client on;",
        "server 127.0.0.1:5000;",
        "grpc_pass grpc://peer;",
        f'pid "{prefix / "nginx.pid"}";',
        f'error_log "{prefix / "error.log"}" warn;',
        "access_log off;",
    } <= found
    assert not any(d.startswith("grpc_ssl") or d.startswith("user ") for d in found)
    # Every file nginx writes is in its prefix.
    for directive in found:
        if "_temp_path" in directive or directive.startswith(("pid ", "error_log ")):
            assert f'"{prefix}/' in directive, directive


def test_the_client_side_takes_plaintext_and_presents_its_certificate(tmp_path: Path) -> None:
    paths = _nginx_paths(tmp_path, "client")
    text = render_client_config(
        paths, listen_port=8080, upstream="127.0.0.1:4431", max_in_flight=200
    )
    found = _directives(text)
    assert {
        "listen 127.0.0.1:8080 http2;",
        "grpc_pass grpcs://peer;",
        "grpc_ssl_protocols TLSv1.3;",
        f'grpc_ssl_certificate "{paths.certificate}";',
        f'grpc_ssl_certificate_key "{paths.key}";',
        f'grpc_ssl_trusted_certificate "{paths.trusted_ca}";',
        "grpc_ssl_verify on;",
        "server 127.0.0.1:4431;",
        "keepalive 200;",  # an idle upstream connection for every call in flight
        "http2_max_concurrent_streams 200;",
    } <= found
    assert not any(d.startswith("ssl_") for d in found)


def test_paths_nginx_cannot_quote_are_refused(tmp_path: Path) -> None:
    paths = _nginx_paths(tmp_path / 'we"ird', "client")
    with pytest.raises(ConfigError, match="quotes"):
        render_client_config(paths, listen_port=1, upstream="127.0.0.1:2", max_in_flight=1)


# -- real runs --------------------------------------------------------------------------


def _bench(*options: str) -> list[str]:
    return [*SERAI, "bench", *options]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _started_pids(stderr: str) -> dict[str, int]:
    return {m[1]: int(m[2]) for m in re.finditer(r"started (\S+) \(pid (\d+)\)", stderr)}


def _processes_mentioning(text: str) -> list[int]:
    """Pids of live processes whose command line mentions ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if text.encode() in cmdline:
                found.append(int(entry.name))
    return found


def test_a_short_run_reports_every_round_and_stops_everything(tmp_path: Path) -> None:
    workdir = tmp_path / "bench"
    result = subprocess.run(
        _bench("--duration", "1", "--warmup", "0.2", "--rounds", "1", "--concurrency", "2",
               "--payload", "512", "--workdir", str(workdir), "--json"),
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)

    setup = report["setup"]
    assert setup["targets"] == ["direct", "gateways"]
    assert (setup["payload_bytes"], setup["concurrency"], setup["rounds"]) == (512, [2], 1)
    for role in ("consumer", "provider"):
        assert setup["message_logs"][role] == {"kind": "sqlite", "synchronous": "full"}
    assert [(r["target"], r["round"]) for r in report["rounds"]] == [
        ("direct", 1),
        ("gateways", 1),
    ]
    for record in report["rounds"]:
        assert record["calls"] > 0
        assert record["refusals"] == {}
        assert record["errors"] == {}
        assert record["p50_ms"] <= record["p90_ms"] <= record["p99_ms"]
    [row] = report["summary"]
    assert row["in_flight"] == 2
    gateways = row["gateways"]["cpu_ms_per_call"]
    assert set(gateways) == {"gateway-consumer", "gateway-provider", "echo", "client", "others"}
    assert gateways["gateway-consumer"] > 0
    assert gateways["gateway-provider"] > 0
    assert set(row["ratios"]) >= {
        "gateways_over_direct",
        "gateways_over_direct_per_round",
        "gateways_added_p50_ms",
        "gateways_added_p99_ms",
    }
    assert row["ratios"]["gateways_over_direct"] > 0
    assert set(report["processes"]) == {
        "ocsp", "tsa", "registry", "echo", "gateway-consumer", "gateway-provider",
    }  # fmt: skip

    started = _started_pids(result.stderr)
    assert started == report["processes"]
    assert not [pid for pid in started.values() if _alive(pid)]
    assert _processes_mentioning(str(workdir)) == []
    # The kept work directory holds every process's output, e.g. both gateways' logs.
    assert (workdir / "logs" / "gateway-provider.log").is_file()


@pytest.mark.parametrize(
    ("signum", "after", "status"),
    [
        (signal.SIGTERM, "warming up", 128 + signal.SIGTERM),  # measuring
        (signal.SIGINT, "setting up the two gateways", 130),  # still bringing up
    ],
)
# A bring-up and a clean-up of six processes: ~16 s on a quiet machine, but over 120 s
# was seen on a 2-core machine running a second federation beside the suite.
@pytest.mark.timeout(360)
def test_an_interrupted_run_stops_everything_it_started(
    tmp_path: Path, signum: signal.Signals, after: str, status: int
) -> None:
    workdir = tmp_path / "bench"
    bench = subprocess.Popen(
        _bench("--duration", "60", "--concurrency", "2", "--workdir", str(workdir)),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=_signals_default,  # noqa: PLW1509  (no threads that matter here)
    )  # fmt: skip
    assert bench.stderr is not None
    seen = []
    try:
        for line in bench.stderr:
            seen.append(line)
            if after in line:
                break
        bench.send_signal(signum)
        try:
            _, rest = bench.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"serai bench did not stop within 240 s of {signum.name}:\n{_tails(seen, workdir)}"
            )
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
        bench.stderr.close()  # not left for a later test's garbage collection to report
    stderr = "".join(seen) + rest
    assert bench.returncode == status, stderr
    assert "stopping" in stderr
    started = _started_pids(stderr)
    assert "ocsp" in started
    assert not [pid for pid in started.values() if _alive(pid)]
    assert _processes_mentioning(str(workdir)) == []


def _signals_default() -> None:
    """In the child: SIGINT and SIGTERM back to their defaults. A suite started as a
    background job of a shell without job control inherits SIGINT ignored, and a program
    keeps an ignored SIGINT ignored (as ``serai bench`` rightly does), so without this the
    test's Ctrl-C would never arrive."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)


def _tails(seen: list[str], workdir: Path) -> str:
    """What a bench that would not stop had printed, and the end of each process's log."""
    parts = ["".join(seen)[-2000:]]
    for log in sorted((workdir / "logs").glob("*.log")):
        parts.append(f"--- {log.name}:\n{log.read_text(errors='replace')[-1500:]}")
    return "\n".join(parts)


@pytest.mark.slow
@needs_nginx
def test_a_run_with_the_nginx_pair(tmp_path: Path) -> None:
    workdir = tmp_path / "bench"
    result = subprocess.run(
        _bench("--duration", "2", "--warmup", "0.5", "--rounds", "2", "--concurrency", "1,8",
               "--nginx", "--workdir", str(workdir), "--json"),
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["setup"]["targets"] == ["direct", "gateways", "nginx"]
    assert [r["target"] for r in report["rounds"][:6]] == ["direct", "gateways", "nginx"] * 2
    for row in report["summary"]:
        assert row["nginx"]["calls"] > 0
        assert row["nginx"]["errors"] == {}
        assert row["nginx"]["cpu_ms_per_call"]["nginx-client"] is not None
        assert {"gateways_over_nginx", "nginx_over_direct"} <= set(row["ratios"])
    started = _started_pids(result.stderr)
    assert {"nginx-client", "nginx-server"} <= set(started)
    assert not [pid for pid in started.values() if _alive(pid)]
    for side in ("client", "server"):
        assert "[emerg]" not in (workdir / f"nginx-{side}" / "error.log").read_text()


@pytest.mark.slow
@needs_nginx
def test_the_nginx_pair_is_mutual_tls(tmp_path: Path) -> None:
    """Through the pair a call passes; straight to the server side it needs a client
    certificate from the PKI."""
    assert NGINX is not None
    pki = tmp_path / "pki"
    must(run_serai("pki", "init", "--dir", pki, "--instance", "UZ"))
    services: list[Service] = []
    try:
        echo = Service.start(
            "echo",
            [sys.executable, str(ECHO_PROVIDER), "--listen", "127.0.0.1:0"],
            log=tmp_path / "echo.log",
            stopped_event="echo_stopped",
        )
        services.append(echo)
        echo_at = str(echo.wait_for("echo_listening")["listen"])
        client_at = start_nginx_pair(
            tmp_path, services, nginx=NGINX, pki=pki, echo=echo_at, max_in_flight=4,
            say=lambda _: None,
        )  # fmt: skip
        with grpc.insecure_channel(client_at) as channel:
            assert channel.unary_unary(BENCH_METHOD, None, None)(b"hello", timeout=30) == b"hello"

        server_conf = (tmp_path / "nginx-server" / "nginx.conf").read_text()
        server_at = re.search(r"listen (127\.0\.0\.1:\d+) ssl", server_conf)
        assert server_at is not None
        root = (pki / "ca.pem").read_bytes()
        keys = tmp_path / "nginx-keys"
        with_cert = grpc.ssl_channel_credentials(
            root_certificates=root,
            private_key=(keys / "client.key").read_bytes(),
            certificate_chain=(keys / "client.pem").read_bytes(),
        )
        anonymous = grpc.ssl_channel_credentials(root_certificates=root)
        name = (("grpc.ssl_target_name_override", "localhost"),)
        with grpc.secure_channel(server_at[1], with_cert, options=name) as channel:
            assert channel.unary_unary(BENCH_METHOD, None, None)(b"hi", timeout=30) == b"hi"
        with (
            grpc.secure_channel(server_at[1], anonymous, options=name) as channel,
            pytest.raises(grpc.RpcError),
        ):
            channel.unary_unary(BENCH_METHOD, None, None)(b"hi", timeout=30)
    finally:
        stop_all(services)
