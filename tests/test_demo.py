"""``serai demo`` end to end, as ``make demo`` runs it: every part a real process.

No timing is asserted: the demo waits for each process to say it is ready.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from adapters.agencies.scenario import CLEAN_PARCEL, DEBTOR_SELLER
from serai._demofederation import Federation
from serai._demoreport import Report
from serai._demousage import print_usage

GATEWAYS = {
    "stc": "UZ/GOV/STC/gw:main",
    "cadastre": "UZ/GOV/CADASTRE/gw:main",
    "minjust": "UZ/GOV/MINJUST/gw:main",
}


@pytest.mark.timeout(240)
def test_demo_runs_the_scenario_and_passes_every_check(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "serai.cli", "demo", "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=220,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "[FAILED]" not in out
    assert re.search(
        r"\n  \[ok\] .*, revoked for key compromise: refused with certificate_revoked", out
    )
    assert "[ok] openssl ts -verify: Verification: OK\n" in out
    assert "[ok] openssl ts -verify on a changed document: Verification: FAILED\n" in out
    for member in ("STC", "CADASTRE", "MINJUST"):
        assert f"[ok] serai registry member add UZ/GOV/{member}\n" in out
    assert "[ok] serai registry subsystem add UZ/GOV/MINJUST/notary\n" in out
    for name in ("tax", "cadastre", "property"):
        assert re.search(rf"- {name} adapter pid \d+ on 127\.0\.0\.1:\d+, serving ", out)
    for key, gateway in GATEWAYS.items():
        assert f"[ok] {gateway}: `serai gateway init` in gateways/{key}; registered at " in out
        assert re.search(rf"- {re.escape(gateway)} pid \d+: IS port 127\.0\.0\.1:\d+", out)
        assert (workdir / "gateways" / key / "gateway.toml").is_file()
        assert (workdir / "gateways" / key / "messagelog.db").is_file()
        assert re.search(
            rf"\[ok\] serai log verify --config gateways/{key}/gateway\.toml: OK: .*\b\d+ records",
            out,
        )
    assert "a copy with one bit flipped is refused (globalconf_signature_invalid)" in out
    for grant in (
        "UZ/GOV/STC/gw:main grants /tax.v1.Tax/GetTaxDebt to UZ/GOV/MINJUST/property",
        "UZ/GOV/CADASTRE/gw:main grants /cadastre.v1.Cadastre/GetParcel to UZ/GOV/MINJUST/property",
        "UZ/GOV/CADASTRE/gw:main grants /cadastre.v1.Cadastre/ListEncumbrances to "
        "UZ/GOV/MINJUST/property",
        "UZ/GOV/MINJUST/gw:main grants /property.v1.PropertyRegistration/RegisterTransfer to "
        "UZ/GOV/MINJUST/notary",
    ):
        assert f"[ok] {grant}\n" in out

    steps = re.split(r"\n\d+\. ", out)
    transfers = [s for s in steps if s.startswith("Transfer ")]
    assert len(transfers) == 3
    registered, debtor, encumbered = transfers
    assert re.search(
        r"\[ok\] decision \S+: OUTCOME_REGISTERED, registration number \S+\n", registered
    )
    assert "[ok] decision " in debtor
    assert ": OUTCOME_REFUSED: SELLER_HAS_TAX_DEBT" in debtor
    assert ": OUTCOME_REFUSED: PARCEL_ENCUMBERED" in encumbered
    for step in transfers:
        # The application, through the Ministry of Justice's gateway to the property adapter.
        assert re.search(
            r"notary IS -> MINJUST gw #\d+ request_sent -> MINJUST gw #\d+ request_received "
            r"-> property adapter\n",
            step,
        )
        # The property adapter's queries, through the two agencies' gateways.
        assert re.search(
            r"property adapter -> MINJUST gw #\d+ request_sent -> STC gw #\d+ request_received "
            r"-> tax adapter\n",
            step,
        )
        assert re.search(
            r"cadastre adapter -> CADASTRE gw #\d+ response_sent -> MINJUST gw #\d+ "
            r"response_received -> property adapter\n",
            step,
        )
        assert re.search(r"x-road-id demo-transfer-\d-[0-9a-f]{8}  UZ/GOV/MINJUST/notary", step)
        assert re.search(r"\[ok\] the application and the \d+ queries its decision cites", step)
    denied = next(s for s in steps if s.startswith("Refused by the gateways"))
    assert "[ok] PERMISSION_DENIED, x-road-error client:access_denied\n" in denied
    assert re.search(r"property IS \(this demo\) -> MINJUST gw #\d+ request_sent\n", denied)
    assert "[ok] UZ/GOV/STC/gw:main refused it before logging it" in denied
    first = re.search(r"x-road-id (demo-transfer-1-[0-9a-f]{8})", registered)
    assert first is not None
    assert f"request with x-road-id {first.group(1)} again\n" in denied
    assert "[ok] ALREADY_EXISTS, x-road-error client:replay_detected: " in denied
    assert re.search(r"\[ok\] serai log prove \d+ \(UZ/GOV/MINJUST/gw:main, .*; verified\n", out)

    for gateway in GATEWAYS.values():
        assert re.search(
            rf"\[ok\] {re.escape(gateway)}: /readyz 200; http://127\.0\.0\.1:\d+/metrics counts",
            out,
        )
    assert re.search(r"UZ/GOV/STC/gw:main: .* counts its refusals: .*access_denied [1-9]", out)
    assert "[ok] adapter-tax adapter_stopped, adapter-cadastre adapter_stopped" in out
    assert "gateway-minjust gateway_stopped" in out
    assert "registry registry_stopped" in out
    assert re.search(r"\ndemo: all \d+ checks passed in \d+ s\n$", out)
    assert (workdir / "anchor.bin").is_file()
    assert (workdir / "contract.tst").is_file()
    assert {p.name for p in (workdir / "logs").iterdir()} >= {
        "ocsp.log", "tsa.log", "registry.log", "gateway-minjust.log", "adapter-property.log",
    }  # fmt: skip


def test_demo_refuses_a_non_empty_workdir(tmp_path: Path) -> None:
    (tmp_path / "something").write_text("x")
    result = subprocess.run(
        [sys.executable, "-m", "serai.cli", "demo", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "is not empty" in result.stderr
    assert "Traceback" not in result.stderr


def test_keep_running_says_how_to_call_the_federation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    federation = Federation(tmp_path, Report())
    for key, gw in federation.gateways.items():
        gw.admin = f"127.0.0.1:{7000 + len(key)}"
        gw.metrics = f"127.0.0.1:{9000 + len(key)}"
    print_usage(federation, {"stc": "127.0.0.1:1", "cadastre": "127.0.0.1:2", "minjust": "x:3"})
    out = capsys.readouterr().out
    is_port = federation.gateways["minjust"].is_port
    assert f"{is_port} tax.v1.Tax/GetTaxDebt" in out
    assert f"{is_port} property.v1.PropertyRegistration/RegisterTransfer" in out
    assert (
        "-H 'x-road-client: UZ/GOV/MINJUST/notary' -H 'x-road-service: UZ/GOV/MINJUST/property'"
        in out
    )
    assert "-H 'x-road-client: UZ/GOV/MINJUST/property' -H 'x-road-service: UZ/GOV/STC/tax'" in out
    assert DEBTOR_SELLER in out
    assert CLEAN_PARCEL in out
    assert "  UZ/GOV/STC/gw:main       http://127.0.0.1:9003/metrics\n" in out
    assert '[{"targets": ["127.0.0.1:9003", "127.0.0.1:9008", "127.0.0.1:9007"]}]' in out
    for gateway in GATEWAYS.values():
        assert gateway in out
