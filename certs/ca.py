"""The certificate authority: issuing under profiles, revoking, and the record of every
certificate issued (which the OCSP responder answers from).

Invariants:

* Every certificate the CA signs is recorded (serial, profile, subject, validity, DER)
  in the same transaction that makes it visible; a certificate that is not recorded is
  never returned, so the OCSP responder never answers ``unknown`` for one it issued.
* Serial numbers are 159-bit random positive integers (RFC 5280 §4.1.2.2: at most 20
  octets), unique per CA; a collision is refused by the store's primary key.
* Revocation is permanent: a revoked certificate stays revoked with its first
  revocation time and reason; revoking it again is refused.
* Subjects of member- and gateway-bound profiles are Serai identifiers, and the member
  identifier is also put in the subject's ``serialNumber`` attribute (as X-Road does), so
  a verifier can tell which member a signing certificate belongs to.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import ipaddress
import secrets
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from asn1crypto import keys as asn1_keys
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

from certs.errors import PKIError
from certs.keys import PrivateKey, PublicKey, signature_hash_for
from certs.profiles import Profile, ProfileSpec, key_usage_extension, spec_for
from serai.errors import ErrorCode

__all__ = [
    "CertStatus",
    "CertificateAuthority",
    "CertificateRecord",
    "CertificateRecords",
    "issuer_key_sha1",
    "self_signed_root",
    "subject_name",
]

#: Backdating of notBefore, so a peer whose clock is slightly behind accepts a new certificate.
_BACKDATE = dt.timedelta(minutes=5)


class CertStatus(enum.StrEnum):
    """Revocation status of a certificate as the CA knows it."""

    GOOD = "good"
    REVOKED = "revoked"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateRecord:
    """One issued certificate as recorded by the CA."""

    serial: int
    profile: Profile
    subject: str
    certificate: x509.Certificate
    revoked_at: dt.datetime | None
    revocation_reason: x509.ReasonFlags | None

    @property
    def status(self) -> CertStatus:
        return CertStatus.REVOKED if self.revoked_at is not None else CertStatus.GOOD


def issuer_key_sha1(issuer: x509.Certificate) -> bytes:
    """SHA-1 of the issuer's subjectPublicKey BIT STRING contents (RFC 6960 issuerKeyHash)."""
    spki = issuer.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    parsed = asn1_keys.PublicKeyInfo.load(spki)
    key_bytes: bytes = parsed["public_key"].contents[1:]  # drop the unused-bits octet
    return hashlib.sha1(key_bytes, usedforsecurity=False).digest()


class CertificateRecords:
    """The CA's record of issued certificates, in one SQLite file (WAL, synchronous=FULL).

    Safe to share between threads and processes: the CLI revokes while a responder reads.
    """

    _SCHEMA = """
    CREATE TABLE IF NOT EXISTS certificates (
        serial            TEXT PRIMARY KEY,         -- lowercase hex, no leading zeros
        issuer_key_sha1   TEXT NOT NULL,            -- hex, RFC 6960 issuerKeyHash
        profile           TEXT NOT NULL,
        subject           TEXT NOT NULL,
        not_before        TEXT NOT NULL,            -- ISO 8601 UTC
        not_after         TEXT NOT NULL,
        der               BLOB NOT NULL,
        revoked_at        TEXT,                     -- NULL while good
        revocation_reason TEXT
    );
    CREATE INDEX IF NOT EXISTS certificates_subject ON certificates(subject);
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._local = threading.local()
        with self._connect() as conn:
            conn.executescript(self._SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self._path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            self._local.conn = conn
        yield conn

    def add(
        self, certificate: x509.Certificate, *, profile: Profile, subject: str, issuer_sha1: bytes
    ) -> None:
        """Record a newly issued certificate (refuses a duplicate serial)."""
        with self._connect() as conn:
            try:
                conn.execute(
                    "INSERT INTO certificates (serial, issuer_key_sha1, profile, subject,"
                    " not_before, not_after, der) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        format(certificate.serial_number, "x"),
                        issuer_sha1.hex(),
                        profile.value,
                        subject,
                        certificate.not_valid_before_utc.isoformat(),
                        certificate.not_valid_after_utc.isoformat(),
                        certificate.public_bytes(serialization.Encoding.DER),
                    ),
                )
            except sqlite3.IntegrityError as exc:
                raise PKIError(
                    f"serial {certificate.serial_number:x} is already recorded",
                    code=ErrorCode.INTERNAL,
                ) from exc

    def revoke(
        self,
        serial: int,
        *,
        reason: x509.ReasonFlags = x509.ReasonFlags.unspecified,
        at: dt.datetime | None = None,
    ) -> CertificateRecord:
        """Mark ``serial`` revoked at ``at`` (now by default). Refuses unknown or revoked ones."""
        when = (at or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).replace(microsecond=0)
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                record = self._get(conn, serial)
                if record is None:
                    raise PKIError(
                        f"no certificate with serial {serial:x} was issued by this CA",
                        code=ErrorCode.UNKNOWN_MEMBER,
                    )
                if record.revoked_at is not None:
                    raise PKIError(
                        f"certificate {serial:x} is already revoked since "
                        f"{record.revoked_at.isoformat()}",
                        code=ErrorCode.CERTIFICATE_REVOKED,
                    )
                conn.execute(
                    "UPDATE certificates SET revoked_at = ?, revocation_reason = ?"
                    " WHERE serial = ?",
                    (when.isoformat(), reason.value, format(serial, "x")),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        revoked = self.get(serial)
        assert revoked is not None  # written in the transaction above
        return revoked

    def get(self, serial: int) -> CertificateRecord | None:
        """The record of ``serial``, or ``None`` if this CA never issued it."""
        with self._connect() as conn:
            return self._get(conn, serial)

    def lookup(self, *, issuer_sha1: bytes, serial: int) -> CertificateRecord | None:
        """The record of ``serial`` issued by the CA whose key hashes to ``issuer_sha1``."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT serial, profile, subject, der, revoked_at, revocation_reason"
                " FROM certificates WHERE serial = ? AND issuer_key_sha1 = ?",
                (format(serial, "x"), issuer_sha1.hex()),
            ).fetchone()
        return None if row is None else self._record(row)

    def all(self) -> list[CertificateRecord]:
        """Every record, oldest first."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT serial, profile, subject, der, revoked_at, revocation_reason"
                " FROM certificates ORDER BY rowid"
            ).fetchall()
        return [self._record(r) for r in rows]

    def _get(self, conn: sqlite3.Connection, serial: int) -> CertificateRecord | None:
        row = conn.execute(
            "SELECT serial, profile, subject, der, revoked_at, revocation_reason"
            " FROM certificates WHERE serial = ?",
            (format(serial, "x"),),
        ).fetchone()
        return None if row is None else self._record(row)

    @staticmethod
    def _record(row: tuple[str, str, str, bytes, str | None, str | None]) -> CertificateRecord:
        serial, profile, subject, der, revoked_at, reason = row
        return CertificateRecord(
            serial=int(serial, 16),
            profile=Profile(profile),
            subject=subject,
            certificate=x509.load_der_x509_certificate(der),
            revoked_at=None if revoked_at is None else dt.datetime.fromisoformat(revoked_at),
            revocation_reason=None if reason is None else x509.ReasonFlags(reason),
        )


def subject_name(profile: Profile, subject: str) -> x509.Name:
    """The X.509 subject for ``subject`` under ``profile``.

    Member- and gateway-bound profiles take a Serai identifier: the full identifier is the
    common name and the member identifier is the ``serialNumber`` attribute. Other
    profiles take a free-form name used as the common name.
    """
    spec = spec_for(profile)
    if spec.subject_kind == "name":
        if not subject or len(subject) > 64:
            raise PKIError(
                f"subject name must be 1 to 64 characters, got {len(subject)}",
                code=ErrorCode.INVALID_REQUEST,
            )
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    member = _member_of(spec, subject)
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, member.split("/")[2]),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, member),
            x509.NameAttribute(NameOID.COMMON_NAME, subject),
        ]
    )


def _member_of(spec: ProfileSpec, subject: str) -> str:
    from serai.identifiers import GatewayId, MemberId  # noqa: PLC0415  (avoid an import cycle)

    if spec.subject_kind == "member":
        return str(MemberId.parse(subject))
    return str(GatewayId.parse(subject).member)


def _random_serial() -> int:
    # 159 random bits, top bit clear: positive and at most 20 octets in DER.
    return secrets.randbits(159) | 1 << 64


class CertificateAuthority:
    """An issuing CA: its certificate, key, the chain above it, and its records."""

    def __init__(
        self,
        *,
        certificate: x509.Certificate,
        key: PrivateKey,
        chain: Sequence[x509.Certificate],
        records: CertificateRecords,
        ocsp_url: str | None,
    ) -> None:
        self.certificate = certificate
        self.key = key
        #: Certificates above this CA, up to and including the root.
        self.chain = list(chain)
        self.records = records
        self.ocsp_url = ocsp_url
        self.key_sha1 = issuer_key_sha1(certificate)

    def issue(
        self,
        profile: Profile,
        subject: str,
        public_key: PublicKey,
        *,
        validity: dt.timedelta | None = None,
        dns_names: Sequence[str] = (),
        ip_addresses: Sequence[str] = (),
        now: dt.datetime | None = None,
    ) -> x509.Certificate:
        """Issue and record a certificate for ``public_key`` under ``profile``.

        ``auth`` certificates name their TLS host in ``dns_names`` / ``ip_addresses``
        (``localhost`` and ``127.0.0.1`` when both are empty).
        """
        if profile is Profile.ROOT_CA:
            raise PKIError("a root CA is self-signed; use self_signed_root()")
        spec = spec_for(profile)
        start = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
        not_after = start + (validity or spec.validity)
        ca_not_after = self.certificate.not_valid_after_utc
        not_after = min(not_after, ca_not_after)
        builder = _base_builder(
            spec,
            subject=subject_name(profile, subject),
            issuer=self.certificate,
            public_key=public_key,
            not_before=start - _BACKDATE,
            not_after=not_after,
        )
        if profile is Profile.AUTH:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(_alt_names(dns_names, ip_addresses)), critical=False
            )
        if spec.needs_ocsp_url and self.ocsp_url:
            builder = builder.add_extension(
                x509.AuthorityInformationAccess(
                    [
                        x509.AccessDescription(
                            AuthorityInformationAccessOID.OCSP,
                            x509.UniformResourceIdentifier(self.ocsp_url),
                        )
                    ]
                ),
                critical=False,
            )
        certificate = builder.sign(self.key, signature_hash_for(self.key))
        self.records.add(certificate, profile=profile, subject=subject, issuer_sha1=self.key_sha1)
        return certificate

    def revoke(
        self,
        serial: int,
        *,
        reason: x509.ReasonFlags = x509.ReasonFlags.unspecified,
        at: dt.datetime | None = None,
    ) -> CertificateRecord:
        """Revoke a certificate this CA issued."""
        return self.records.revoke(serial, reason=reason, at=at)

    def chain_for(self, certificate: x509.Certificate) -> list[x509.Certificate]:
        """``certificate`` followed by this CA's certificate (the root is the trust anchor)."""
        return [certificate, self.certificate]


def self_signed_root(
    key: PrivateKey,
    *,
    name: str,
    validity: dt.timedelta | None = None,
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """A self-signed root CA certificate named ``name``."""
    spec = spec_for(Profile.ROOT_CA)
    start = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(_random_serial())
        .not_valid_before(start - _BACKDATE)
        .not_valid_after(start + (validity or spec.validity))
        .add_extension(x509.BasicConstraints(ca=True, path_length=spec.path_length), critical=True)
        .add_extension(key_usage_extension(spec, rsa_key=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    return builder.sign(key, signature_hash_for(key))


def _base_builder(
    spec: ProfileSpec,
    *,
    subject: x509.Name,
    issuer: x509.Certificate,
    public_key: PublicKey,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> x509.CertificateBuilder:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject)
        .public_key(public_key)
        .serial_number(_random_serial())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.BasicConstraints(ca=spec.is_ca, path_length=spec.path_length), critical=True
        )
        .add_extension(
            key_usage_extension(spec, rsa_key=isinstance(public_key, rsa.RSAPublicKey)),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    if spec.eku is not None:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage(list(spec.eku)), critical=spec.eku_critical
        )
    if spec.ocsp_no_check:
        builder = builder.add_extension(x509.OCSPNoCheck(), critical=False)
    return builder


def _alt_names(dns_names: Sequence[str], ip_addresses: Sequence[str]) -> list[x509.GeneralName]:
    if not dns_names and not ip_addresses:
        dns_names, ip_addresses = ("localhost",), ("127.0.0.1",)
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    for ip in ip_addresses:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(ip)))
        except ValueError as exc:
            raise PKIError(f"not an IP address: {ip!r}", code=ErrorCode.INVALID_REQUEST) from exc
    return names
