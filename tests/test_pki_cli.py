"""``serai pki`` as a user runs it: the real console script in a subprocess."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from certs.keys import load_certificate_chain, load_private_key
from certs.pkidir import PKIDirectory

SERAI = [sys.executable, "-m", "serai.cli"]


def serai(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*SERAI, *map(str, args)], capture_output=True, text=True, check=False, timeout=120
    )
    if check and result.returncode != 0:
        raise AssertionError(f"serai {args} failed: {result.stderr}")
    return result


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cli") / "pki"
    out = serai("pki", "init", "--dir", d, "--instance", "UZ")
    assert "created PKI for instance UZ" in out.stdout
    return d


def test_init_writes_documented_layout(pki_dir: Path) -> None:
    assert (pki_dir / "ca.pem").is_file()
    tsa = load_certificate_chain(pki_dir / "tsa.pem")
    assert len(tsa) == 2
    assert tsa[1] == load_certificate_chain(pki_dir / "issuing-ca.pem")[0]


def test_issue_writes_chain_and_0600_key(pki_dir: Path, tmp_path: Path) -> None:
    prefix = tmp_path / "stc-sign"
    out = serai(
        "pki",
        "issue",
        "--dir",
        pki_dir,
        "--profile",
        "sign",
        "--subject",
        "UZ/GOV/STC",
        "--out",
        prefix,
    )
    assert "issued sign certificate" in out.stdout
    chain = load_certificate_chain(Path(f"{prefix}.pem"))
    assert len(chain) == 2
    key_path = Path(f"{prefix}.key")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    key = load_private_key(key_path)
    assert key.public_key() == chain[0].public_key()


def test_issue_encrypted_key(pki_dir: Path, tmp_path: Path) -> None:
    pin = tmp_path / "pin"
    pin.write_text("1234\n")
    prefix = tmp_path / "gw"
    serai(
        "pki",
        "issue",
        "--dir",
        pki_dir,
        "--profile",
        "auth",
        "--subject",
        "UZ/GOV/STC/gw:main",
        "--out",
        prefix,
        "--passphrase-file",
        pin,
        "--dns",
        "gw.example",
        "--ip",
        "127.0.0.1",
    )
    key_path = Path(f"{prefix}.key")
    loaded = load_private_key(key_path, passphrase=b"1234")
    assert loaded.public_key() == load_certificate_chain(Path(f"{prefix}.pem"))[0].public_key()
    wrong = tmp_path / "wrong"
    wrong.write_text("4321")
    # A user loading the key with the wrong PIN gets one clear line, no traceback.
    code = (
        "import sys, pathlib; from certs.keys import load_private_key; "
        "from serai.errors import SeraiError\n"
        "try:\n    load_private_key(pathlib.Path(sys.argv[1]), passphrase=b'4321')\n"
        "except SeraiError as e:\n    print(e)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(key_path)], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip().startswith("key_passphrase_invalid: wrong passphrase")


def test_revoke_then_list(pki_dir: Path, tmp_path: Path) -> None:
    prefix = tmp_path / "cad"
    serai(
        "pki",
        "issue",
        "--dir",
        pki_dir,
        "--profile",
        "sign",
        "--subject",
        "UZ/GOV/CADASTRE",
        "--out",
        prefix,
    )
    cert = x509.load_pem_x509_certificates(Path(f"{prefix}.pem").read_bytes())[0]
    out = serai("pki", "revoke", "--dir", pki_dir, f"{prefix}.pem", "--reason", "keyCompromise")
    assert f"revoked certificate {cert.serial_number:x}" in out.stdout
    rows = [
        json.loads(line)
        for line in serai("pki", "list", "--dir", pki_dir, "--json").stdout.splitlines()
    ]
    mine = next(r for r in rows if r["serial"] == format(cert.serial_number, "x"))
    assert mine["status"] == "revoked"
    assert mine["subject"] == "UZ/GOV/CADASTRE"
    again = serai("pki", "revoke", "--dir", pki_dir, f"{prefix}.pem", check=False)
    assert again.returncode == 2
    assert "already revoked" in again.stderr
    assert "Traceback" not in again.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["--profile", "sign", "--subject", "UZ/GOV/ST C"], "invalid_identifier", id="bad-id"
        ),
        pytest.param(
            ["--profile", "sign", "--subject", "UZ/GOV/STC", "--dns", "x"],
            "--dns and --ip apply only to --profile auth",
            id="dns-on-sign",
        ),
        pytest.param(
            ["--profile", "tsa", "--subject", "T", "--days", "0"], "positive", id="zero-days"
        ),
    ],
)
def test_issue_errors_are_one_clear_line(
    pki_dir: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    result = serai("pki", "issue", "--dir", pki_dir, "--out", tmp_path / "x", *args, check=False)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_issue_refuses_to_overwrite(pki_dir: Path, tmp_path: Path) -> None:
    prefix = tmp_path / "same"
    base: list[str | Path] = [
        "pki",
        "issue",
        "--dir",
        pki_dir,
        "--profile",
        "tsa",
        "--subject",
        "T",
        "--out",
        prefix,
    ]
    serai(*base)
    result = serai(*base, check=False)
    assert result.returncode == 2
    assert "refusing to overwrite" in result.stderr


def test_world_readable_ca_key_is_refused(tmp_path: Path) -> None:
    pki = PKIDirectory.init(tmp_path / "pki", instance="UZ")
    os.chmod(pki.issuing_key, 0o644)
    result = serai(
        "pki",
        "issue",
        "--dir",
        pki.root,
        "--profile",
        "tsa",
        "--subject",
        "T",
        "--out",
        tmp_path / "t",
        check=False,
    )
    assert result.returncode == 2
    assert "key_file_insecure" in result.stderr
    assert "chmod 600" in result.stderr


def test_revoke_refuses_foreign_certificate(pki_dir: Path, tmp_path: Path) -> None:
    other = PKIDirectory.init(tmp_path / "other", instance="UZ")
    result = serai("pki", "revoke", "--dir", pki_dir, other.tsa_cert, check=False)
    assert result.returncode == 2
    assert "was not issued by the PKI" in result.stderr


def test_help_lists_every_pki_command() -> None:
    out = serai("pki", "--help").stdout
    for command in ("init", "issue", "revoke", "list", "ocsp", "tsa"):
        assert command in out
