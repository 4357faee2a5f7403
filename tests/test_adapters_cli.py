"""``serai adapter``: the example agencies as real processes, and their configuration
files refused precisely."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import grpc
import pytest

from adapters.agencies import scenario
from adapters.agencies.config import parse_config, render_config
from serai.errors import ConfigError
from serai.localprocs import SERAI, Process, free_port, serai_command
from serai_proto.property.v1 import property_pb2, property_pb2_grpc
from serai_proto.tax.v1 import tax_pb2, tax_pb2_grpc


def metadata(service: str) -> tuple[tuple[str, str], ...]:
    return (
        ("x-road-client", str(scenario.PROPERTY)),
        ("x-road-service", service),
        ("x-road-id", "0b7e2f0c-5c0a-4d8e-9f1e-3a2b1c0d9e8f"),
    )


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        process.stop()


def run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SERAI, *args], capture_output=True, text=True, check=False, timeout=120)


def test_tax_runs_answers_and_stops_on_sigterm(tmp_path: Path, processes: list[Process]) -> None:
    config = tmp_path / "tax.toml"
    serai_command("adapter", "init", "tax", "--config", config, "--listen", "127.0.0.1:0")
    process = Process([*SERAI, "adapter", "run", "tax", "--config", str(config)])
    processes.append(process)
    created = process.wait_for("sample_data_created")
    assert created["database"] == str(tmp_path / "tax.db")
    listening = process.wait_for("adapter_listening")
    assert listening["subsystem"] == str(scenario.TAX)
    with grpc.insecure_channel(listening["address"]) as channel:
        answer = tax_pb2_grpc.TaxStub(channel).GetTaxDebt(
            tax_pb2.GetTaxDebtRequest(taxpayer_id=scenario.DEBTOR_SELLER),
            metadata=metadata(str(scenario.TAX)),
            timeout=30,
        )
    assert answer.total_debt.amount_minor > 0
    assert process.terminate() == 0
    assert process.wait_for("adapter_stopped")["agency"] == "tax"
    process.stop()
    assert "Traceback" not in "".join(process.lines)


def test_property_answers_clearly_when_its_gateway_is_down(
    tmp_path: Path, processes: list[Process]
) -> None:
    config = tmp_path / "property.toml"
    dead_gateway = f"127.0.0.1:{free_port()}"
    serai_command(
        "adapter", "init", "property", "--config", config, "--listen", "127.0.0.1:0",
        "--gateway", dead_gateway,
    )  # fmt: skip
    process = Process([*SERAI, "adapter", "run", "property", "--config", str(config)])
    processes.append(process)
    listening = process.wait_for("adapter_listening")
    with grpc.insecure_channel(listening["address"]) as channel:
        answer = property_pb2_grpc.PropertyRegistrationStub(channel).RegisterTransfer(
            property_pb2.RegisterTransferRequest(
                request_id="demo-1",
                cadastral_number=scenario.CLEAN_PARCEL,
                seller_id=scenario.CLEAN_SELLER,
                buyer_id=scenario.BUYER,
                price=property_pb2.Money(amount_minor=100, currency="UZS"),
            ),
            metadata=metadata(str(scenario.PROPERTY)),
            timeout=60,
        )
    reasons = [r.reason for r in answer.transfer.refusals]
    assert reasons == [property_pb2.REFUSAL_REASON_CHECK_UNAVAILABLE] * 2
    assert answer.transfer.transfer_id == ""
    process.process.send_signal(signal.SIGINT)
    assert process.process.wait(timeout=60) == 0
    process.wait_for("adapter_stopped")
    with closing(sqlite3.connect(tmp_path / "property.db")) as c:
        assert (
            c.execute("SELECT count(*) FROM transfers WHERE request_id = 'demo-1'").fetchone()[0]
            == 0
        )
    assert "Traceback" not in "".join(process.lines)


@pytest.mark.parametrize(
    ("agency", "text", "message"),
    [
        ("tax", 'database = "t.db"\n', "key 'listen': expected a non-empty string"),
        ("tax", 'listen = "7001"\ndatabase = "t.db"\n', "key 'listen': expected HOST:PORT"),
        ("tax", 'listen = "127.0.0.1:99999"\ndatabase = "t.db"\n', "key 'listen'"),
        ("tax", 'listen = "127.0.0.1:0"\n', "key 'database': expected a non-empty string"),
        (
            "tax",
            'listen = "127.0.0.1:0"\ndatabase = "t.db"\ngateway = "127.0.0.1:5500"\n',
            "key 'gateway': unknown key",
        ),
        ("cadastre", 'listen = "127.0.0.1:0"\ndatabase = "c.db"\nseed = -1\n', "key 'seed'"),
        ("tax", "listen = [", "not valid TOML"),
    ],
)
def test_bad_configurations_are_refused_precisely(
    tmp_path: Path, agency: str, text: str, message: str
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text, encoding="utf-8")
    result = run(["adapter", "run", agency, "--config", str(config)])
    assert result.returncode == 2
    assert result.stderr.startswith(f"serai: error: invalid_config: {config}")
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "t.db").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("gateway", "127.0.0.1:0"), "key 'gateway': expected HOST:PORT, port 1-65535"),
        (("client", "UZ/GOV/MINJUST"), "key 'client': "),
        (("tax_service", "UZ/GOV/STC/t ax"), "key 'tax_service': "),
        (("cadastre_service", ""), "key 'cadastre_service': expected a non-empty string"),
        (("timeout_s", "0"), "key 'timeout_s': expected a positive number of seconds"),
    ],
)
def test_property_settings_are_checked(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    key, value = change
    lines = [
        line for line in render_config("property").splitlines() if not line.startswith(f"{key} =")
    ]
    lines.append(f"{key} = {value}" if key == "timeout_s" else f'{key} = "{value}"')
    with pytest.raises(ConfigError) as caught:
        parse_config("property", tmp_path / "p.toml", "\n".join(lines))
    assert message in str(caught.value)


def test_a_missing_file_says_how_to_create_one(tmp_path: Path) -> None:
    result = run(["adapter", "run", "cadastre", "--config", str(tmp_path / "none.toml")])
    assert result.returncode == 2
    assert "serai adapter init cadastre" in result.stderr


def test_a_port_in_use_is_refused_cleanly(tmp_path: Path, processes: list[Process]) -> None:
    config = tmp_path / "tax.toml"
    serai_command("adapter", "init", "tax", "--config", config, "--listen", "127.0.0.1:0")
    first = Process([*SERAI, "adapter", "run", "tax", "--config", str(config)])
    processes.append(first)
    address = first.wait_for("adapter_listening")["address"]
    second_config = tmp_path / "tax2.toml"
    serai_command(
        "adapter", "init", "tax", "--config", second_config, "--listen", address,
        "--database", "tax.db",
    )  # fmt: skip
    result = run(["adapter", "run", "tax", "--config", str(second_config)])
    assert result.returncode == 2
    assert f"{second_config}: key 'listen': cannot listen on {address}" in result.stderr
    assert "Traceback" not in result.stderr


def test_init_and_sample_data_never_overwrite(tmp_path: Path) -> None:
    config = tmp_path / "cadastre.toml"
    serai_command("adapter", "init", "cadastre", "--config", config)
    assert 'listen = "127.0.0.1:7002"' in config.read_text(encoding="utf-8")
    again = run(["adapter", "init", "cadastre", "--config", str(config)])
    assert again.returncode == 2
    assert "already exists" in again.stderr
    out = tmp_path / "cadastre.db"
    printed = serai_command("adapter", "sample-data", "cadastre", "--out", out)
    assert "rows of cadastre sample data" in printed
    before = out.read_bytes()
    refused = run(["adapter", "sample-data", "cadastre", "--out", str(out)])
    assert refused.returncode == 2
    assert out.read_bytes() == before
