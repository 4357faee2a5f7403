"""Certificate path validation against a set of approved roots, at a given time, with
revocation.

:func:`validate_path` either returns the path from a leaf certificate up to one of the
approved roots of a :class:`TrustStore`, or raises :class:`~certs.errors.CertificateError`
with a precise code. It is pure: no network, no clock (the caller says *when*), no asyncio.

Guarantees. When :func:`validate_path` returns a :class:`ValidatedPath`
``leaf = c[0], c[1], ..., c[n] = root``:

1. **Anchor.** ``root`` is byte-for-byte (DER) one of the trust store's approved roots.
   A certificate that merely has an approved root's name or key identifier is not one.
2. **Signatures.** Every ``c[i]`` (``i < n``) verifies with ``c[i+1]``'s public key
   (``verify_directly_issued_by``, which also requires ``c[i].issuer == c[i+1].subject``),
   and its signature algorithm is one of ECDSA, RSA PKCS#1 v1.5 or RSA-PSS with SHA-256,
   -384 or -512, Ed25519 or Ed448. The root's own self-signature is not checked: the
   anchor is trusted as configured.
3. **Issuers are CAs.** Every ``c[i]`` with ``i >= 1`` (root included) has a *critical*
   BasicConstraints with ``cA`` true and a KeyUsage with ``keyCertSign``; its
   ``pathLenConstraint``, when present, is at least the number of non-self-issued
   intermediate CA certificates below it.
4. **Leaf.** ``leaf`` is not a CA (no ``cA`` true, no ``keyCertSign`` or ``cRLSign``) and
   its key usage and extended key usage satisfy ``purpose`` (see *Purposes* below).
5. **Time.** Every certificate of the path, root included, is valid at ``at``:
   ``notBefore <= at <= notAfter``.
6. **Encoding.** Every certificate whose signature is checked has a positive serial
   number and a DER-encoded signature BIT STRING, so one certificate has one encoding and
   one SHA-256 fingerprint.
7. **Extensions.** No certificate of the path has a critical extension other than
   BasicConstraints, KeyUsage, ExtendedKeyUsage and SubjectAlternativeName (the names
   are for the TLS layer to check). Name constraints and policies are not processed, so a
   certificate that marks them critical is refused.
8. **Revocation.** When a :class:`RevocationChecker` is given, it is called with
   ``(c[i], c[i+1], at)`` for every ``i < n``, from the top of the path down to the leaf,
   and returned without raising, except for a certificate that carries
   id-pkix-ocsp-nocheck *and* the OCSPSigning extended key usage (a delegated OCSP
   responder, RFC 6960 §4.2.2.2.1), which is not checked. The root is never checked.
9. **Malformed input.** A leaf whose names, validity, key or extensions cannot be
   decoded is refused (``certificate_invalid``); such an intermediate is ignored. No
   exception of ``cryptography`` escapes.
10. **Bounds.** The path holds at most ``max_depth`` certificates, and building it costs at
   most :data:`MAX_SIGNATURE_CHECKS` signature verifications, whatever the intermediates
   offered (they usually come from the peer).

Path building. Candidate issuers of a certificate are the approved roots, then the
caller's intermediates, then the trust store's known intermediates, whose subject equals
its issuer and, when both carry key identifiers, whose SubjectKeyIdentifier equals its
AuthorityKeyIdentifier. Candidates are tried depth first, so several intermediates
sharing a name are all tried. A candidate matched by name only whose key does not verify
the signature is simply not the issuer; one whose key identifier also matched is a forged
or corrupted certificate and is reported as such. Intermediates confer no trust: they
only help find a path, every link of which is checked as above.

Refusals (codes of :class:`serai.errors.ErrorCode`):

* ``certificate_untrusted``: no path leads to an approved root.
* ``certificate_expired``: a certificate of the path is not valid at ``at`` (not yet, or
  no longer).
* ``certificate_revoked``: the revocation checker refused a certificate of the path.
* ``certificate_invalid``: everything else: wrong key usage or extended key usage for the
  purpose, a CA leaf, an issuer without CA constraints, a path length or ``max_depth``
  exceeded, a signature that does not verify or an algorithm not accepted, an unknown
  critical extension, a malformed certificate, a loop of certificates, the signature
  check budget spent (this one refuses at once, without weighing other paths).

The leaf's own checks (4 to 7, and the algorithm of 2) are made first and refuse at once.
When every candidate path fails, the failure of the path that got furthest (most
signatures verified; revocation counts as beyond every structural check) is raised.

Purposes (from :mod:`certs.profiles`): the leaf's KeyUsage must be present with every flag
of the profile set, except for ``tsa`` and ``ocsp``, whose certificates often come from
outside CAs: there a KeyUsage is optional and, when present, must allow signing
(digitalSignature or nonRepudiation); when the profile has no extended key usage
(``sign``) the leaf must have none (any EKU would make it a certificate for something
else); ``auth`` needs ``serverAuth`` or ``clientAuth`` as ``tls_role`` says; ``tsa``
needs a critical EKU whose only purpose is ``timeStamping`` (RFC 3161 §2.3); ``ocsp``,
``confsign`` and ``logsign`` need ``OCSPSigning`` and Serai's configuration- and
log-signing EKUs respectively.
``anyExtendedKeyUsage`` is never honoured.

Assumptions. The trust store holds what the federation approved (the global
configuration verified it); ``at`` is the time the caller means (for a signature, the
time it was made as attested by a timestamp or the current time); a revocation checker
answers for the time it is given and raises :class:`~certs.errors.PKIError` subclasses
on refusal. Host names, member ids and registration of certificates are checked by the
callers (:func:`member_of`, :func:`auth_cert_sha256`).
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final, Protocol, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import (
    ExtendedKeyUsageOID,
    ExtensionOID,
    NameOID,
    ObjectIdentifier,
    SignatureAlgorithmOID,
)

from certs.ca import CertificateRecords, issuer_key_sha1
from certs.errors import CertificateError, PKIError
from certs.profiles import Profile, spec_for
from serai.errors import ErrorCode, InvalidIdentifierError, Origin

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "MAX_SIGNATURE_CHECKS",
    "CertificateRecordsChecker",
    "InMemoryRevocationChecker",
    "RevocationChecker",
    "TlsRole",
    "TrustStore",
    "ValidatedPath",
    "auth_cert_sha256",
    "member_of",
    "validate_path",
]

#: Default bound on the number of certificates in a path, leaf and root included.
DEFAULT_MAX_DEPTH: Final = 6
#: Bound on signature verifications spent building one path (a peer offering many
#: same-named intermediates cannot make validation expensive).
MAX_SIGNATURE_CHECKS: Final = 64

#: Critical extensions whose meaning is enforced here (or, for names, by the TLS layer).
_KNOWN_CRITICAL: Final = frozenset(
    {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
    }
)

_E = TypeVar("_E", bound=x509.ExtensionType)

#: Purposes whose certificates may come from CAs outside Serai's profiles.
_THIRD_PARTY_SERVICES: Final = frozenset({Profile.TSA, Profile.OCSP})

#: What ``cryptography`` raises when it decodes a malformed field lazily.
_DECODE_ERRORS: Final = (
    ValueError,
    UnsupportedAlgorithm,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
    # Raised rather than printed only under an "error" warnings filter (as in the tests);
    # otherwise the value is decoded and refused below (non-positive serial numbers).
    CryptographyDeprecationWarning,
)

_SHA2: Final = (hashes.SHA256, hashes.SHA384, hashes.SHA512)
_SHA2_SIGNATURES: Final = frozenset(
    {
        SignatureAlgorithmOID.ECDSA_WITH_SHA256,
        SignatureAlgorithmOID.ECDSA_WITH_SHA384,
        SignatureAlgorithmOID.ECDSA_WITH_SHA512,
        SignatureAlgorithmOID.RSA_WITH_SHA256,
        SignatureAlgorithmOID.RSA_WITH_SHA384,
        SignatureAlgorithmOID.RSA_WITH_SHA512,
        SignatureAlgorithmOID.RSASSA_PSS,
    }
)
_EDDSA_SIGNATURES: Final = frozenset({SignatureAlgorithmOID.ED25519, SignatureAlgorithmOID.ED448})

_LEAF_PURPOSES: Final = frozenset(
    {
        Profile.AUTH,
        Profile.SIGN,
        Profile.OCSP,
        Profile.TSA,
        Profile.CONFIGURATION_SIGNING,
        Profile.LOG_SIGNING,
    }
)


class TlsRole(enum.StrEnum):
    """Which end of a TLS connection an ``auth`` certificate authenticates."""

    SERVER = "server"
    CLIENT = "client"


_TLS_EKU: Final[dict[TlsRole, ObjectIdentifier]] = {
    TlsRole.SERVER: ExtendedKeyUsageOID.SERVER_AUTH,
    TlsRole.CLIENT: ExtendedKeyUsageOID.CLIENT_AUTH,
}


class RevocationChecker(Protocol):
    """Says whether ``cert``, issued by ``issuer``, was revoked at ``at``.

    Returns ``None`` when the certificate was not revoked at ``at``; raises a
    :class:`~certs.errors.PKIError` (``CertificateError`` with ``certificate_revoked`` for
    a revoked one; e.g. ``OCSPError`` when no fresh answer is available) otherwise.
    """

    def check(self, cert: x509.Certificate, issuer: x509.Certificate, at: dt.datetime) -> None:
        """Return if ``cert`` was not revoked at ``at``; raise otherwise."""
        ...


class TrustStore:
    """The approved root certificates of a federation, plus optional known intermediates.

    Immutable. Roots are compared by their DER encoding. Every root must be a CA
    certificate (BasicConstraints ``cA`` and KeyUsage ``keyCertSign``); a store holding
    anything else is refused when built. Known intermediates are not trusted: they only
    help build paths when a peer does not send its intermediates.
    """

    __slots__ = ("_intermediates", "_root_ders", "_roots")

    def __init__(
        self,
        *,
        roots: Iterable[x509.Certificate],
        intermediates: Iterable[x509.Certificate] = (),
    ) -> None:
        unique_roots = _unique(roots)
        for root in unique_roots:
            try:
                _check_decodes(root)
                _check_ca(root, what="approved root")
            except CertificateError as exc:
                raise CertificateError(exc.message, origin=Origin.GATEWAY) from exc
        self._roots: tuple[x509.Certificate, ...] = unique_roots
        self._root_ders: frozenset[bytes] = frozenset(_der(r) for r in unique_roots)
        self._intermediates: tuple[x509.Certificate, ...] = _unique(_decodable(intermediates))

    @property
    def roots(self) -> tuple[x509.Certificate, ...]:
        """The approved roots, in the order given, without duplicates."""
        return self._roots

    @property
    def intermediates(self) -> tuple[x509.Certificate, ...]:
        """Known intermediate certificates (untrusted path-building hints)."""
        return self._intermediates

    def is_approved_root(self, cert: x509.Certificate) -> bool:
        """Whether ``cert`` is, byte for byte, one of the approved roots."""
        return _der(cert) in self._root_ders

    def __setattr__(self, name: str, value: object) -> None:
        if hasattr(self, name):
            raise AttributeError(f"TrustStore is immutable; cannot set {name!r}")
        super().__setattr__(name, value)

    def __repr__(self) -> str:
        return f"TrustStore(roots={len(self._roots)}, intermediates={len(self._intermediates)})"


@dataclass(frozen=True, slots=True, kw_only=True)
class ValidatedPath:
    """A certification path that :func:`validate_path` accepted."""

    #: Leaf first, approved root last.
    certificates: tuple[x509.Certificate, ...]
    purpose: Profile
    #: The time the path was validated for.
    at: dt.datetime

    @property
    def leaf(self) -> x509.Certificate:
        """The end-entity certificate."""
        return self.certificates[0]

    @property
    def root(self) -> x509.Certificate:
        """The approved root the path ends at."""
        return self.certificates[-1]

    @property
    def intermediates(self) -> tuple[x509.Certificate, ...]:
        """The CA certificates between the leaf and the root."""
        return self.certificates[1:-1]


def validate_path(
    leaf: x509.Certificate,
    *,
    intermediates: Sequence[x509.Certificate],
    trust: TrustStore,
    at: dt.datetime,
    purpose: Profile,
    revocation: RevocationChecker | None,
    tls_role: TlsRole | None = None,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> ValidatedPath:
    """Validate ``leaf`` for ``purpose`` at ``at`` up to an approved root of ``trust``.

    ``intermediates`` are candidate issuers (typically those the peer sent, in any order).
    ``tls_role`` is required for :attr:`Profile.AUTH` and refused for other purposes.
    ``revocation=None`` skips revocation checking; callers pass it explicitly.
    Raises :class:`~certs.errors.CertificateError` (or another
    :class:`~certs.errors.PKIError` the revocation checker raised) on refusal; see the
    module docstring for the rules. Raises ``ValueError`` for misuse: a naive ``at``, a CA
    profile as purpose, a missing or superfluous ``tls_role``, ``max_depth < 2``.
    """
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("validate_path: 'at' must be timezone-aware")
    if purpose not in _LEAF_PURPOSES:
        raise ValueError(f"validate_path: {purpose.value!r} is not an end-entity purpose")
    if (purpose is Profile.AUTH) != (tls_role is not None):
        raise ValueError("validate_path: tls_role is required for 'auth' and only for it")
    if max_depth < 2:
        raise ValueError("validate_path: max_depth must be at least 2 (leaf and root)")
    when = at.astimezone(dt.UTC)

    _check_decodes(leaf)
    _check_leaf(leaf, purpose=purpose, tls_role=tls_role, at=when)

    search = _PathSearch(
        trust=trust,
        pool=_unique([*trust.roots, *_decodable(intermediates), *trust.intermediates]),
        at=when,
        max_depth=max_depth,
    )
    for path in search.paths([leaf]):
        try:
            _check_revocation(path, revocation, when)
        except PKIError as exc:
            search.fail(exc, score=len(path))
            continue
        return ValidatedPath(certificates=tuple(path), purpose=purpose, at=when)
    raise search.best_failure(leaf)


def member_of(cert: x509.Certificate) -> str:
    """The member id (``INSTANCE/CLASS/MEMBER``) in ``cert``'s subject serialNumber.

    Refuses (``certificate_invalid``) a certificate without exactly one such attribute, or
    whose value is not a well-formed member id.
    """
    from serai.identifiers import MemberId  # noqa: PLC0415  (certs must not need it to import)

    attributes = cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    if len(attributes) != 1:
        raise CertificateError(
            f"certificate {_describe(cert)} has {len(attributes)} subject serialNumber "
            "attributes; a member-bound certificate has exactly one, the member id"
        )
    value = attributes[0].value
    if not isinstance(value, str):
        raise CertificateError(f"certificate {_describe(cert)} has a non-text serialNumber")
    try:
        return str(MemberId.parse(value))
    except InvalidIdentifierError as exc:
        raise CertificateError(
            f"certificate {_describe(cert)}: subject serialNumber is not a member id: {exc.message}"
        ) from exc


def auth_cert_sha256(cert: x509.Certificate) -> bytes:
    """SHA-256 of the DER encoding of ``cert`` (how the registry names an auth certificate)."""
    return hashlib.sha256(_der(cert)).digest()


# -- revocation checkers ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Revocation:
    at: dt.datetime
    reason: x509.ReasonFlags


class InMemoryRevocationChecker:
    """Revocations held in memory, for tests and demos: ``(issuer key id, serial) -> time``.

    The issuer key id is computed from the issuer's public key (RFC 5280 §4.2.1.2,
    method 1), never read from its SubjectKeyIdentifier, so a copied extension cannot
    alias another CA. A certificate counts as revoked at ``at`` when its revocation time
    is at or before ``at``. Revocation is permanent: revoking again keeps the earlier time.
    """

    __slots__ = ("_lock", "_revoked")

    def __init__(self) -> None:
        self._revoked: dict[tuple[bytes, int], _Revocation] = {}
        self._lock = threading.Lock()

    def revoke(
        self,
        *,
        issuer: x509.Certificate,
        serial: int,
        at: dt.datetime,
        reason: x509.ReasonFlags = x509.ReasonFlags.unspecified,
    ) -> None:
        """Record that ``issuer`` revoked its certificate ``serial`` at ``at``."""
        if at.tzinfo is None:
            raise ValueError("revoke: 'at' must be timezone-aware")
        key = (_key_id(issuer), serial)
        with self._lock:
            earlier = self._revoked.get(key)
            if earlier is None or at < earlier.at:
                self._revoked[key] = _Revocation(at=at.astimezone(dt.UTC), reason=reason)

    def check(self, cert: x509.Certificate, issuer: x509.Certificate, at: dt.datetime) -> None:
        """Raise ``certificate_revoked`` if ``cert`` was revoked at or before ``at``."""
        with self._lock:
            revocation = self._revoked.get((_key_id(issuer), cert.serial_number))
        if revocation is not None and revocation.at <= at:
            raise CertificateError(
                f"certificate {_describe(cert)} was revoked at {revocation.at.isoformat()} "
                f"({revocation.reason.value})",
                code=ErrorCode.CERTIFICATE_REVOKED,
            )


class CertificateRecordsChecker:
    """Revocation status straight from a CA's :class:`~certs.ca.CertificateRecords`.

    For the CA's own tools and tests (production gateways use OCSP). A certificate is
    revoked at ``at`` when its recorded ``revoked_at <= at``. A certificate the records do
    not hold under that issuer's key and serial, or whose recorded DER differs, is
    refused with ``certificate_untrusted``: the CA never issued it.
    """

    __slots__ = ("_records",)

    def __init__(self, records: CertificateRecords) -> None:
        self._records = records

    def check(self, cert: x509.Certificate, issuer: x509.Certificate, at: dt.datetime) -> None:
        """Raise unless the records show ``cert`` issued by ``issuer`` and unrevoked at ``at``."""
        record = self._records.lookup(
            issuer_sha1=issuer_key_sha1(issuer), serial=cert.serial_number
        )
        if record is None or _der(record.certificate) != _der(cert):
            raise CertificateError(
                f"certificate {_describe(cert)} is not in the records of its issuing CA",
                code=ErrorCode.CERTIFICATE_UNTRUSTED,
            )
        if record.revoked_at is not None and record.revoked_at <= at:
            reason = record.revocation_reason or x509.ReasonFlags.unspecified
            raise CertificateError(
                f"certificate {_describe(cert)} was revoked at {record.revoked_at.isoformat()} "
                f"({reason.value})",
                code=ErrorCode.CERTIFICATE_REVOKED,
            )


# -- path search --------------------------------------------------------------------------


class _PathSearch:
    """Depth-first search of paths to an approved root; remembers why paths failed."""

    def __init__(
        self,
        *,
        trust: TrustStore,
        pool: tuple[x509.Certificate, ...],
        at: dt.datetime,
        max_depth: int,
    ) -> None:
        self._trust = trust
        self._pool = pool
        self._at = at
        self._max_depth = max_depth
        self._checks_left = MAX_SIGNATURE_CHECKS
        self._best: tuple[int, PKIError] | None = None

    def fail(self, error: PKIError, *, score: int) -> None:
        """Remember ``error``; ``score`` says how far its path got (higher wins, ties keep
        the first, except that a specific refusal beats ``certificate_untrusted``)."""
        if self._best is None:
            self._best = (score, error)
            return
        best_score, best = self._best
        more_specific = (
            best.code is ErrorCode.CERTIFICATE_UNTRUSTED
            and error.code is not ErrorCode.CERTIFICATE_UNTRUSTED
        )
        if score > best_score or (score == best_score and more_specific):
            self._best = (score, error)

    def best_failure(self, leaf: x509.Certificate) -> PKIError:
        """The error to raise when no path was accepted."""
        if self._best is None:
            return CertificateError(
                f"no path from {_describe(leaf)} to an approved root",
                code=ErrorCode.CERTIFICATE_UNTRUSTED,
            )
        return self._best[1]

    def paths(self, path: list[x509.Certificate]) -> Iterator[list[x509.Certificate]]:
        """Yield every structurally valid path that extends ``path`` to an approved root."""
        child = path[-1]
        verified_links = len(path) - 1
        # Whether some candidate linked, or failed for a reason of its own; otherwise ``child``
        # is a dead end and the path is untrusted.
        progressed = False
        for candidate in self._candidates(child):
            if _der(candidate) == _der(child):
                continue  # a self-signed certificate that is not an anchor: a dead end
            if any(_der(candidate) == _der(c) for c in path):
                progressed = True
                self.fail(
                    CertificateError(
                        f"certificate loop: {_describe(candidate)} is already in the path"
                    ),
                    score=verified_links,
                )
                continue
            if len(path) + 1 > self._max_depth:
                progressed = True
                self.fail(
                    CertificateError(
                        f"path from {_describe(path[0])} would be longer than "
                        f"{self._max_depth} certificates"
                    ),
                    score=verified_links,
                )
                continue
            if self._checks_left <= 0:  # fatal: raised, not weighed against other paths
                raise CertificateError(
                    f"gave up building a path for {_describe(path[0])} after "
                    f"{MAX_SIGNATURE_CHECKS} signature checks"
                )
            self._checks_left -= 1
            try:
                linked = self._verify_link(child, candidate)
            except PKIError as exc:
                progressed = True
                self.fail(exc, score=verified_links)
                continue
            if not linked:
                continue  # same name, other key: not the issuer
            progressed = True
            extended = [*path, candidate]
            try:
                _check_issuer(extended, at=self._at)
                if not self._trust.is_approved_root(candidate):
                    _check_signature_algorithm(candidate)
            except PKIError as exc:
                self.fail(exc, score=verified_links + 1)
                continue
            if self._trust.is_approved_root(candidate):
                yield extended
            else:
                yield from self.paths(extended)
        if not progressed:
            self.fail(
                CertificateError(
                    f"no approved root or known intermediate issued {_describe(child)} "
                    f"(issuer {_name(child.issuer)})",
                    code=ErrorCode.CERTIFICATE_UNTRUSTED,
                ),
                score=verified_links,
            )

    def _candidates(self, child: x509.Certificate) -> Iterator[x509.Certificate]:
        aki = _authority_key_id(child)
        for candidate in self._pool:
            if candidate.subject != child.issuer:
                continue
            ski = _subject_key_id(candidate)
            if aki is not None and ski is not None and aki != ski:
                continue
            yield candidate

    @staticmethod
    def _verify_link(child: x509.Certificate, issuer: x509.Certificate) -> bool:
        """Whether ``issuer`` signed ``child``. ``False`` for a name-only match whose key does
        not verify (not the issuer); raises when key identifiers matched yet it fails."""
        try:
            child.verify_directly_issued_by(issuer)
        except InvalidSignature as exc:
            aki = _authority_key_id(child)
            if aki is None or aki != _subject_key_id(issuer):
                return False
            raise CertificateError(
                f"signature of {_describe(child)} does not verify with the key of "
                f"{_describe(issuer)}, whose name and key identifier it names"
            ) from exc
        except (ValueError, TypeError, UnsupportedAlgorithm, x509.InvalidVersion) as exc:
            raise CertificateError(
                f"signature of {_describe(child)} cannot be checked with the key of "
                f"{_describe(issuer)}: {exc}"
            ) from exc
        return True


def _check_revocation(
    path: Sequence[x509.Certificate], revocation: RevocationChecker | None, at: dt.datetime
) -> None:
    if revocation is None:
        return
    for index in range(len(path) - 2, -1, -1):  # top down, root excluded
        cert = path[index]
        if _is_ocsp_no_check_signer(cert):
            continue
        revocation.check(cert, path[index + 1], at)


# -- per-certificate rules ----------------------------------------------------------------


def _check_leaf(
    leaf: x509.Certificate, *, purpose: Profile, tls_role: TlsRole | None, at: dt.datetime
) -> None:
    extensions = _extensions(leaf)
    _check_critical_extensions(leaf, extensions)
    basic = _find(extensions, x509.BasicConstraints)
    if basic is not None and basic.value.ca:
        raise CertificateError(f"certificate {_describe(leaf)} is a CA, not an end entity")
    key_usage = _find(extensions, x509.KeyUsage)
    if key_usage is not None and (key_usage.value.key_cert_sign or key_usage.value.crl_sign):
        raise CertificateError(
            f"end-entity certificate {_describe(leaf)} has keyCertSign or cRLSign key usage"
        )
    _check_purpose(leaf, extensions, purpose=purpose, tls_role=tls_role)
    _check_signature_algorithm(leaf)
    _check_validity(leaf, at)


def _check_purpose(
    leaf: x509.Certificate,
    extensions: x509.Extensions,
    *,
    purpose: Profile,
    tls_role: TlsRole | None,
) -> None:
    spec = spec_for(purpose)
    key_usage = _find(extensions, x509.KeyUsage)
    if purpose in _THIRD_PARTY_SERVICES:
        # Time-stamping and OCSP certificates often come from outside CAs: RFC 3161 §2.3
        # and RFC 6960 §4.2.2.2 rest on the extended key usage, so a key usage is only
        # required to allow signing when it is present.
        if key_usage is not None and not (
            key_usage.value.digital_signature or key_usage.value.content_commitment
        ):
            raise CertificateError(
                f"certificate {_describe(leaf)} has a key usage that allows no signing; "
                f"{purpose.value!r} needs digital_signature or content_commitment"
            )
    elif key_usage is None:
        raise CertificateError(
            f"certificate {_describe(leaf)} has no key usage; {purpose.value!r} needs "
            f"{', '.join(sorted(spec.key_usage))}"
        )
    missing = (
        []
        if key_usage is None or purpose in _THIRD_PARTY_SERVICES
        else sorted(flag for flag in spec.key_usage if not getattr(key_usage.value, flag))
    )
    if missing:
        raise CertificateError(
            f"certificate {_describe(leaf)} lacks key usage {', '.join(missing)} "
            f"needed for {purpose.value!r}"
        )

    eku = _find(extensions, x509.ExtendedKeyUsage)
    if spec.eku is None:
        if eku is not None:
            raise CertificateError(
                f"certificate {_describe(leaf)} has an extended key usage, so it is not "
                f"a {purpose.value!r} certificate"
            )
        return
    if eku is None:
        raise CertificateError(
            f"certificate {_describe(leaf)} has no extended key usage; {purpose.value!r} needs one"
        )
    present = list(eku.value)
    if spec.eku_critical:
        if not eku.critical or present != list(spec.eku):
            raise CertificateError(
                f"certificate {_describe(leaf)}: {purpose.value!r} needs a critical extended "
                f"key usage with {', '.join(o.dotted_string for o in spec.eku)} only"
            )
        return
    required = [_TLS_EKU[tls_role]] if tls_role is not None else list(spec.eku)
    absent = [o for o in required if o not in present]
    if absent:
        raise CertificateError(
            f"certificate {_describe(leaf)} lacks extended key usage "
            f"{', '.join(_oid_name(o) for o in absent)} needed for {purpose.value!r}"
            + (f" as TLS {tls_role.value}" if tls_role is not None else "")
        )


def _check_issuer(path: Sequence[x509.Certificate], *, at: dt.datetime) -> None:
    """Rules for ``path[-1]`` as the issuer of ``path[-2]``."""
    issuer = path[-1]
    _check_ca(issuer, what="issuer")
    basic = _extensions(issuer).get_extension_for_class(x509.BasicConstraints).value
    if basic.path_length is not None:
        below = [c for c in path[1:-1] if c.subject != c.issuer]
        if len(below) > basic.path_length:
            raise CertificateError(
                f"CA {_describe(issuer)} allows {basic.path_length} intermediate CA "
                f"certificates below it; the path has {len(below)}"
            )
    _check_validity(issuer, at)


def _check_ca(cert: x509.Certificate, *, what: str) -> None:
    extensions = _extensions(cert)
    _check_critical_extensions(cert, extensions)
    basic = _find(extensions, x509.BasicConstraints)
    if basic is None or not basic.value.ca:
        raise CertificateError(f"{what} {_describe(cert)} is not a CA (basicConstraints cA)")
    if not basic.critical:
        raise CertificateError(f"{what} {_describe(cert)} has a non-critical basicConstraints")
    key_usage = _find(extensions, x509.KeyUsage)
    if key_usage is None or not key_usage.value.key_cert_sign:
        raise CertificateError(f"{what} {_describe(cert)} lacks key usage keyCertSign")


def _check_critical_extensions(cert: x509.Certificate, extensions: x509.Extensions) -> None:
    for extension in extensions:
        if extension.critical and extension.oid not in _KNOWN_CRITICAL:
            raise CertificateError(
                f"certificate {_describe(cert)} has an unrecognised critical extension "
                f"{extension.oid.dotted_string}"
            )


def _check_signature_algorithm(cert: x509.Certificate) -> None:
    """Refuse an algorithm not accepted, or a signature BIT STRING that is not in DER form.

    The signature value ends the certificate, preceded by the BIT STRING's unused-bits
    octet, which DER fixes at zero; ``cryptography`` ignores it, so without this check one
    certificate would have several encodings (and several SHA-256 fingerprints).
    """
    encoded = _der(cert)
    if encoded[-len(cert.signature) - 1] != 0:
        raise CertificateError(
            f"certificate {_describe(cert)} has a signature that is not DER-encoded"
        )
    oid = cert.signature_algorithm_oid
    if oid in _EDDSA_SIGNATURES:
        return
    if oid in _SHA2_SIGNATURES:
        try:
            digest = cert.signature_hash_algorithm
        except UnsupportedAlgorithm as exc:
            raise CertificateError(
                f"certificate {_describe(cert)} uses an unsupported signature hash: {exc}"
            ) from exc
        if isinstance(digest, _SHA2):
            return
    raise CertificateError(
        f"certificate {_describe(cert)} is signed with {_oid_name(oid)}, which is not accepted "
        "(ECDSA, RSA PKCS#1 v1.5 or PSS with SHA-256/384/512, Ed25519 or Ed448)"
    )


def _check_validity(cert: x509.Certificate, at: dt.datetime) -> None:
    not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    if at < not_before:
        raise CertificateError(
            f"certificate {_describe(cert)} is not valid before {not_before.isoformat()} "
            f"(checked at {at.isoformat()})",
            code=ErrorCode.CERTIFICATE_EXPIRED,
        )
    if at > not_after:
        raise CertificateError(
            f"certificate {_describe(cert)} expired at {not_after.isoformat()} "
            f"(checked at {at.isoformat()})",
            code=ErrorCode.CERTIFICATE_EXPIRED,
        )


def _check_decodes(cert: x509.Certificate) -> None:
    """Decode every field used here, so malformed input is a refusal, never a crash.

    ``cryptography`` decodes names, extensions and keys lazily, on first access.
    """
    try:
        _ = (cert.subject, cert.issuer, cert.serial_number, cert.signature_algorithm_oid)
        _ = (cert.not_valid_before_utc, cert.not_valid_after_utc, cert.public_key())
        for extension in cert.extensions:
            _ = extension.value
        serial = cert.serial_number
    except _DECODE_ERRORS as exc:
        raise CertificateError(f"certificate cannot be decoded: {exc}") from exc
    if serial <= 0:
        raise CertificateError(f"certificate {_describe(cert)} has a non-positive serial number")


def _decodable(certs: Iterable[x509.Certificate]) -> list[x509.Certificate]:
    """``certs`` without those that cannot be decoded (they cannot be part of a path)."""
    out = []
    for cert in certs:
        try:
            _check_decodes(cert)
        except CertificateError:
            continue
        out.append(cert)
    return out


def _is_ocsp_no_check_signer(cert: x509.Certificate) -> bool:
    extensions = _extensions(cert)
    if _find(extensions, x509.OCSPNoCheck) is None:
        return False
    eku = _find(extensions, x509.ExtendedKeyUsage)
    return eku is not None and ExtendedKeyUsageOID.OCSP_SIGNING in list(eku.value)


# -- small helpers ------------------------------------------------------------------------


def _extensions(cert: x509.Certificate) -> x509.Extensions:
    try:
        return cert.extensions
    except _DECODE_ERRORS as exc:
        raise CertificateError(
            f"certificate {_describe(cert)} has malformed extensions: {exc}"
        ) from exc


def _find(extensions: x509.Extensions, kind: type[_E]) -> x509.Extension[_E] | None:
    try:
        return extensions.get_extension_for_class(kind)
    except x509.ExtensionNotFound:
        return None
    except _DECODE_ERRORS as exc:
        raise CertificateError(f"malformed {kind.__name__} extension: {exc}") from exc


def _authority_key_id(cert: x509.Certificate) -> bytes | None:
    aki = _find(_extensions(cert), x509.AuthorityKeyIdentifier)
    return None if aki is None else aki.value.key_identifier


def _subject_key_id(cert: x509.Certificate) -> bytes | None:
    ski = _find(_extensions(cert), x509.SubjectKeyIdentifier)
    return None if ski is None else ski.value.digest


def _key_id(cert: x509.Certificate) -> bytes:
    return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _unique(certs: Iterable[x509.Certificate]) -> tuple[x509.Certificate, ...]:
    seen: set[bytes] = set()
    out: list[x509.Certificate] = []
    for cert in certs:
        der = _der(cert)
        if der not in seen:
            seen.add(der)
            out.append(cert)
    return tuple(out)


def _oid_name(oid: ObjectIdentifier) -> str:
    name = getattr(oid, "_name", None)
    if isinstance(name, str) and name != "Unknown OID":
        return name
    return oid.dotted_string


def _name(name: x509.Name) -> str:
    try:
        text = name.rfc4514_string()
    except ValueError:
        text = "<unprintable name>"
    return ascii(text[:64])


def _describe(cert: x509.Certificate) -> str:
    """A short, printable identification of ``cert`` for error messages."""
    try:
        subject = _name(cert.subject)
    except ValueError:
        subject = "<undecodable subject>"
    return f"{subject} (serial {cert.serial_number:x})"
