"""Private keys and certificate files.

Invariants:

* A private key file is written with mode 0600, atomically (temporary file in the same
  directory, ``fsync``, ``rename``), as PKCS#8 PEM; encrypted with the best available
  scheme when a passphrase is given.
* A private key file is loaded only if no group or other permission bit is set; a
  looser file is refused with ``key_file_insecure`` before its content is read.
* A wrong or missing passphrase is refused with ``key_passphrase_invalid``; any other
  unreadable content with ``key_unavailable``. Messages name the file, never key bytes
  or the passphrase.
"""

from __future__ import annotations

import enum
import stat
import warnings
from pathlib import Path
from typing import TypeAlias

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.utils import CryptographyDeprecationWarning

from certs.errors import KeyFileError
from serai.errors import ErrorCode
from serai.fileio import atomic_write

__all__ = [
    "KeyAlgorithm",
    "PrivateKey",
    "PublicKey",
    "generate_private_key",
    "load_certificate_chain",
    "load_private_key",
    "parse_der_certificate",
    "signature_hash_for",
    "write_certificate_chain",
    "write_private_key",
]

PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
PublicKey: TypeAlias = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey

#: Mode bits that must be clear on a private key file.
_INSECURE_BITS = stat.S_IRWXG | stat.S_IRWXO


class KeyAlgorithm(enum.StrEnum):
    """Key algorithms the toolkit issues. EC P-256 is the default everywhere."""

    EC_P256 = "ec-p256"
    RSA_3072 = "rsa-3072"
    ED25519 = "ed25519"


def generate_private_key(algorithm: KeyAlgorithm = KeyAlgorithm.EC_P256) -> PrivateKey:
    """Generate a fresh private key of ``algorithm``."""
    if algorithm is KeyAlgorithm.EC_P256:
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm is KeyAlgorithm.RSA_3072:
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    return ed25519.Ed25519PrivateKey.generate()


def signature_hash_for(key: PrivateKey | PublicKey) -> hashes.SHA256 | None:
    """The hash used with ``key`` in X.509 and CMS signatures (``None`` for Ed25519)."""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return None
    return hashes.SHA256()


def write_private_key(path: Path, key: PrivateKey, *, passphrase: bytes | None = None) -> None:
    """Write ``key`` to ``path`` as PKCS#8 PEM with mode 0600, atomically.

    With ``passphrase`` the key is encrypted at rest.
    """
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    data = key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=encryption,
    )
    atomic_write(path, data, mode=0o600)


def load_private_key(path: Path, *, passphrase: bytes | None = None) -> PrivateKey:
    """Load a private key file, refusing insecure permissions and wrong passphrases."""
    try:
        st = path.stat()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from exc
    if st.st_mode & _INSECURE_BITS:
        raise KeyFileError(
            f"key file {path} has mode {stat.S_IMODE(st.st_mode):04o}; "
            "it must not be readable by group or others (chmod 600)",
            code=ErrorCode.KEY_FILE_INSECURE,
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from exc
    encrypted = b"ENCRYPTED" in data.split(b"\n", 1)[0]
    if encrypted and not passphrase:
        raise KeyFileError(
            f"key file {path} is encrypted; a passphrase is needed",
            code=ErrorCode.KEY_PASSPHRASE_INVALID,
        )
    try:
        key = serialization.load_pem_private_key(data, password=passphrase if encrypted else None)
    except ValueError as exc:
        if encrypted:
            raise KeyFileError(
                f"wrong passphrase for key file {path}", code=ErrorCode.KEY_PASSPHRASE_INVALID
            ) from exc
        raise KeyFileError(f"key file {path} does not hold a PEM private key") from exc
    except (TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"key file {path} cannot be loaded: {exc}") from exc
    if not isinstance(
        key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    ):
        raise KeyFileError(f"key file {path} holds an unsupported key type {type(key).__name__}")
    return key


def write_certificate_chain(path: Path, chain: list[x509.Certificate]) -> None:
    """Write certificates as concatenated PEM, leaf first, atomically (mode 0644)."""
    data = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
    atomic_write(path, data, mode=0o644)


def parse_der_certificate(der: bytes) -> x509.Certificate:
    """The certificate in ``der``; every way the bytes fail to be one raises
    :class:`ValueError` (cryptography also raises ``TypeError``, ``UnsupportedAlgorithm``
    and ``InvalidVersion``, the last not a ``ValueError``: callers at a trust boundary
    catch one type and refuse, instead of letting the others escape). A serial number
    that is not positive, which cryptography only warns about, is refused too, whatever
    the warning filters (RFC 5280 forbids it; a later cryptography release refuses it)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", CryptographyDeprecationWarning)
            return x509.load_der_x509_certificate(der)
    except (
        ValueError,
        TypeError,
        UnsupportedAlgorithm,
        x509.InvalidVersion,
        CryptographyDeprecationWarning,
    ) as exc:
        raise ValueError(f"not a certificate: {exc}") from exc


def load_certificate_chain(path: Path) -> list[x509.Certificate]:
    """Load one or more PEM certificates from ``path``, in file order."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read certificate file {path}: {exc.strerror}") from exc
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise KeyFileError(f"{path} does not hold PEM certificates: {exc}") from exc
    return certs
