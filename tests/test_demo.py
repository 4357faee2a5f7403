"""``serai demo`` end to end, as ``make demo`` runs it: real OCSP and TSA processes."""

from __future__ import annotations

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
