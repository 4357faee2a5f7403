"""A development PKI for one federation, kept in one directory.

Layout of ``serai pki init --dir D --instance UZ`` (every path relative to ``D``):

=======================  ====================================================
``pki.toml``             instance, key algorithm, OCSP and TSA URLs
``ca.pem``               root CA certificate (the trust anchor)
``issuing-ca.pem``       issuing CA certificate
``ocsp.pem``             delegated OCSP responder certificate, then the issuing CA
``tsa.pem``              time-stamping certificate, then its issuing chain
``ca.db``                SQLite record of every certificate issued (status for OCSP)
``private/root.key``     root CA key (0600; encrypted when a passphrase is given)
``private/issuing-ca.key``  issuing CA key
``private/ocsp.key``     OCSP responder key
``private/tsa.key``      time-stamping key
=======================  ====================================================

The root signs only the issuing CA; the issuing CA signs everything else, including the
delegated OCSP responder (RFC 6960 §4.2.2.2) and the TSA.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from certs.ca import CertificateAuthority, CertificateRecords, self_signed_root
from certs.errors import PKIError
from certs.keys import (
    KeyAlgorithm,
    PrivateKey,
    generate_private_key,
    load_certificate_chain,
    load_private_key,
    write_certificate_chain,
    write_private_key,
)
from certs.profiles import Profile
from serai.errors import ConfigError, ErrorCode

__all__ = ["DEFAULT_OCSP_URL", "DEFAULT_TSA_URL", "PKIDirectory", "PKISettings"]

DEFAULT_OCSP_URL = "http://127.0.0.1:8890/"
DEFAULT_TSA_URL = "http://127.0.0.1:8891/"


@dataclass(frozen=True, slots=True, kw_only=True)
class PKISettings:
    """What ``pki.toml`` records."""

    instance: str
    algorithm: KeyAlgorithm
    ocsp_url: str
    tsa_url: str


class PKIDirectory:
    """Paths of a PKI directory and the operations on it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.settings_path = root / "pki.toml"
        self.root_cert = root / "ca.pem"
        self.issuing_cert = root / "issuing-ca.pem"
        self.ocsp_cert = root / "ocsp.pem"
        self.tsa_cert = root / "tsa.pem"
        self.db = root / "ca.db"
        self.private = root / "private"
        self.root_key = self.private / "root.key"
        self.issuing_key = self.private / "issuing-ca.key"
        self.ocsp_key = self.private / "ocsp.key"
        self.tsa_key = self.private / "tsa.key"

    # -- creation -------------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        root: Path,
        *,
        instance: str,
        algorithm: KeyAlgorithm = KeyAlgorithm.EC_P256,
        ocsp_url: str = DEFAULT_OCSP_URL,
        tsa_url: str = DEFAULT_TSA_URL,
        passphrase: bytes | None = None,
        now: dt.datetime | None = None,
    ) -> PKIDirectory:
        """Create a complete development PKI in ``root`` (which must not hold one yet)."""
        pki = cls(root)
        if pki.settings_path.exists() or pki.root_cert.exists():
            raise PKIError(f"{root} already holds a PKI", code=ErrorCode.INVALID_REQUEST)
        root.mkdir(parents=True, exist_ok=True)
        pki.private.mkdir(mode=0o700, exist_ok=True)
        settings = PKISettings(
            instance=instance, algorithm=algorithm, ocsp_url=ocsp_url, tsa_url=tsa_url
        )

        root_key = generate_private_key(algorithm)
        root_cert = self_signed_root(root_key, name=f"{instance} Serai Root CA", now=now)
        records = CertificateRecords(pki.db)
        root_ca = CertificateAuthority(
            certificate=root_cert, key=root_key, chain=[], records=records, ocsp_url=None
        )
        issuing_key = generate_private_key(algorithm)
        issuing_cert = root_ca.issue(
            Profile.ISSUING_CA,
            f"{instance} Serai Issuing CA",
            issuing_key.public_key(),
            now=now,
        )
        issuing = CertificateAuthority(
            certificate=issuing_cert,
            key=issuing_key,
            chain=[root_cert],
            records=records,
            ocsp_url=ocsp_url,
        )
        ocsp_key = generate_private_key(algorithm)
        ocsp_cert = issuing.issue(
            Profile.OCSP, f"{instance} Serai OCSP Responder", ocsp_key.public_key(), now=now
        )
        # RFC 3161 TSAs are EC here whatever the CA uses: small tokens, fast signing.
        tsa_key = generate_private_key(
            KeyAlgorithm.EC_P256 if algorithm is KeyAlgorithm.RSA_3072 else algorithm
        )
        tsa_cert = issuing.issue(
            Profile.TSA, f"{instance} Serai Time-Stamping Authority", tsa_key.public_key(), now=now
        )

        write_private_key(pki.root_key, root_key, passphrase=passphrase)
        write_private_key(pki.issuing_key, issuing_key, passphrase=passphrase)
        write_private_key(pki.ocsp_key, ocsp_key, passphrase=passphrase)
        write_private_key(pki.tsa_key, tsa_key, passphrase=passphrase)
        write_certificate_chain(pki.root_cert, [root_cert])
        write_certificate_chain(pki.issuing_cert, [issuing_cert])
        write_certificate_chain(pki.ocsp_cert, [ocsp_cert, issuing_cert])
        write_certificate_chain(pki.tsa_cert, [tsa_cert, issuing_cert])
        pki._write_settings(settings)
        return pki

    def _write_settings(self, settings: PKISettings) -> None:
        text = (
            "# Serai development PKI (written by `serai pki init`)\n"
            f"instance = {_toml_str(settings.instance)}\n"
            f"algorithm = {_toml_str(settings.algorithm.value)}\n"
            f"ocsp_url = {_toml_str(settings.ocsp_url)}\n"
            f"tsa_url = {_toml_str(settings.tsa_url)}\n"
        )
        self.settings_path.write_text(text, encoding="utf-8")

    # -- loading --------------------------------------------------------------------------

    def settings(self) -> PKISettings:
        """Read and validate ``pki.toml``."""
        path = self.settings_path
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: no PKI here (run `serai pki init` first)") from exc
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: cannot be read: {exc}") from exc
        values: dict[str, str] = {}
        for key in ("instance", "algorithm", "ocsp_url", "tsa_url"):
            value = data.get(key)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{path}: key {key!r} must be a non-empty string")
            values[key] = value
        try:
            algorithm = KeyAlgorithm(values["algorithm"])
        except ValueError as exc:
            choices = ", ".join(a.value for a in KeyAlgorithm)
            raise ConfigError(f"{path}: key 'algorithm' must be one of {choices}") from exc
        return PKISettings(
            instance=values["instance"],
            algorithm=algorithm,
            ocsp_url=values["ocsp_url"],
            tsa_url=values["tsa_url"],
        )

    def root_certificate(self) -> x509.Certificate:
        """The root CA certificate (trust anchor)."""
        return load_certificate_chain(self.root_cert)[0]

    def records(self) -> CertificateRecords:
        """The record of issued certificates."""
        if not self.db.exists():
            raise ConfigError(f"{self.db}: no certificate records (run `serai pki init` first)")
        return CertificateRecords(self.db)

    def issuing_ca(self, *, passphrase: bytes | None = None) -> CertificateAuthority:
        """The issuing CA, ready to issue and revoke."""
        settings = self.settings()
        return CertificateAuthority(
            certificate=load_certificate_chain(self.issuing_cert)[0],
            key=load_private_key(self.issuing_key, passphrase=passphrase),
            chain=[self.root_certificate()],
            records=self.records(),
            ocsp_url=settings.ocsp_url,
        )

    def ocsp_signer(
        self, *, passphrase: bytes | None = None
    ) -> tuple[PrivateKey, list[x509.Certificate]]:
        """The OCSP responder's key and its chain (responder certificate, issuing CA)."""
        return load_private_key(self.ocsp_key, passphrase=passphrase), load_certificate_chain(
            self.ocsp_cert
        )

    def tsa_signer(
        self, *, passphrase: bytes | None = None
    ) -> tuple[PrivateKey, list[x509.Certificate]]:
        """The TSA's key and its chain (TSA certificate, issuing CA)."""
        return load_private_key(self.tsa_key, passphrase=passphrase), load_certificate_chain(
            self.tsa_cert
        )


def _toml_str(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
