"""``serai demo`` end to end, as ``make demo`` runs it: every service a real process.

No timing is asserted: the demo waits for each process to say it is ready.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path


def test_demo_passes_every_check(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "serai.cli", "demo", "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "FAILED\n" not in out.replace("Verification: FAILED\n", "")
    assert "refused with certificate_revoked" in out
    assert "openssl ts -verify: Verification: OK" in out
    assert "openssl ts -verify on a changed document: Verification: FAILED" in out
    assert "an observer's attempt to add a member: serai: error: permission_denied" in out
    assert "who serves UZ/GOV/CADASTRE/registry? UZ/GOV/CADASTRE/gw:main" in out
    assert "a tampered copy is refused (globalconf_signature_invalid)" in out
    assert "\n9. A signed exchange through two gateways\n" in out
    for name, gateway in (
        ("minjust", "UZ/GOV/MINJUST/gw:edge"),
        ("cadastre", "UZ/GOV/CADASTRE/gw:edge"),
    ):
        assert f"[ok] {gateway}: set up in gateways/{name}, registered with the certificate" in out
        assert f"- {gateway} pid " in out
        assert (workdir / "gateways" / name / "gateway.toml").is_file()
    assert re.search(r"\[ok\] configuration serial \d+ lists both gw:edge gateways\n", out)
    assert (
        "[ok] the Cadastre grants /cadastre.v1.Cadastre/GetParcel to UZ/GOV/MINJUST/property" in out
    )
    assert re.search(
        r"\[ok\] the property-registration IS calls /cadastre\.v1\.Cadastre/GetParcel on "
        r'127\.0\.0\.1:\d+: OK, answer \{"parcel": "10:01:02:03:0004"\}\n',
        out,
    )
    sent = re.search(r"\[ok\] x-road-id (minjust-[0-9a-f]{16})\n", out)
    assert sent is not None
    assert re.search(r"\[ok\] x-road-request-hash [0-9a-f]{16}\.\.\. \(SHA-256", out)
    assert (
        "[ok] /cadastre.v1.Cadastre/DeleteParcel, not granted: PERMISSION_DENIED, "
        "x-road-error client:access_denied\n"
    ) in out
    assert (
        f"[ok] x-road-id {sent.group(1)} sent again: ALREADY_EXISTS, "
        "x-road-error client:replay_detected\n"
    ) in out
    assert out.rstrip().endswith("checks passed")
    assert (workdir / "anchor").is_file()
    assert (workdir / "registry" / "registry.toml").is_file()
    for name in ("stc", "cadastre", "minjust"):
        for profile in ("sign", "auth"):
            assert (workdir / "agencies" / name / f"{profile}.pem").is_file()
    assert (workdir / "transfer.tst").is_file()


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
