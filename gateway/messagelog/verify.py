"""Checks a message log's evidence, piece by piece, the way an auditor does (DESIGN §6).

:class:`EvidenceVerifier` checks evidence one piece at a time and collects every failure
in a :class:`VerificationReport` instead of stopping at the first: an auditor wants the
whole list, each failure naming the record index or the tree-head size and the check
that failed. :mod:`gateway.messagelog.audit` drives it over an evidence bundle (offline,
the trust anchor the only thing trusted) and over a live log.

What each check establishes (``check`` names, as reported):

``configuration``
    Each global configuration envelope verifies against the anchor (see
    :mod:`gateway.messagelog.timeline`); only those are used below.
``head_format``, ``head_signature``, ``head_timestamp``, ``head_time``
    A tree head is a well-formed signed tree head (:mod:`serai.treehead`) of this log,
    whose JWS verifies with a log-signing certificate for this log id that chains to a CA
    approved by a configuration in force at the head's time (the time-stamp's genTime,
    or, for a head without one, the head's own claim); its RFC 3161 token verifies over
    the SHA-256 of the JWS bytes and is signed by a TSA approved, together with the root
    it chains to, by a configuration in force at genTime; what the TSA's signature does
    not cover is DER and every certificate it embeds is one the configurations list,
    so no byte of it can change unnoticed; the head does not claim a time later than its
    time-stamp (beyond ``max_skew_s``).
``consistency``
    Consecutive tree heads: the older tree is a prefix of the newer (RFC 9162 consistency
    proof); two heads of one size have one root.
``inclusion``
    The record's leaf hash ``SHA-256(0x00 || bytes)`` is at its index in the tree of the
    covering head (the first time-stamped head larger than the index), with that head's
    signed size and root, never sizes from the proof's supplier.
``record_format``
    The bytes are a canonical log record (:func:`gateway.commit.decode_canonical`), whose
    body, when kept, hashes to its ``body_sha256``.
``header_signature``
    The signed header is a compact JWS with exactly ``alg``, ``typ`` and ``x5c``; ``typ``
    is a request's for a request record and a response's for a response record; ``x5c``
    is the record's certificate chain; ``alg`` is the one the leaf's key makes; the
    signature verifies over the exact signing input; the payload decodes strictly as a
    header of that kind, for the record's message id.
``header_certificate``
    At the header's ``created_at``, the signing certificate chains (through the sent
    intermediates) to a root approved by a configuration in force then, fit for signing,
    and the record's OCSP response is a valid, fresh (``max_ocsp_age_s``) "good" answer
    about it from its issuer or the issuer's responder.
``header_member``
    The certificate belongs to the member that signs: a request's client member; for a
    response, the member of the provider subsystem of the request it answers, found in
    the evidence by the SHA-256 of the request header bytes (a response whose request is
    outside the evidence is counted as unpaired, not failed).
``body_digest``
    The header's ``body_sha256`` is the record's, and a kept body has the signed length.
``malformed_certificate``
    No certificate of the evidence is one ``cryptography`` only tolerates with a
    deprecation warning (such as a serial number that is not positive).
``record_time``
    The header was not created later than the time-stamp that covers the record (beyond
    ``max_skew_s``): a record cannot be signed after the log committed to it.

Remembered work. A verifier checks thousands of records signed with one certificate
chain and one OCSP response under one trust store, and a tree head a second signed by
one log-signing certificate and time-stamped by one TSA;
:mod:`gateway.messagelog._verifycache` lets it do the work whose answer those bytes fix
once, and the verdicts, every failure and its message are the same as without it
(``remember=False`` turns it off):

* a ``header_certificate`` check accepted before for the same chain, OCSP response and
  trust store, byte for byte, and the same maximum OCSP age, is accepted again only at
  an ``at`` that compares the same way with every validity bound, ``thisUpdate``
  (less the clock skew, plus the maximum age) and ``nextUpdate`` the check reads; any
  other time, and every refusal, is checked in full;
* the protected header of a ``header_signature`` check, its ``typ``, ``x5c`` and
  ``alg`` are checked once per exact (protected header, ``typ``, chain); the signature
  over each record's own signing input is verified for every record;
* the member a leaf names, and the configurations in force in each interval between
  their ``generated_at`` and ``expires_at`` instants, are read once;
* the certification path of a head's log-signing certificate, and of its token's TSA
  certificate, is validated once per exact (leaf, offered certificates, trust store,
  purpose) and cell of time: an ``at`` that compares the same way with the ``notBefore``
  and ``notAfter`` of every certificate the search may use; any other time, and every
  refusal, is validated in full. Each head's JWS signature and its token (encoding,
  imprint, CMS signature, signer, genTime, approval of the TSA) are checked for every
  head.

Failures are never remembered; see that module for the invariants.

Not checked: revocation of log-signing and TSA certificates (no OCSP response is kept
for them), the freshness of a configuration beyond its own validity, and whether an
``ADMIN_CHANGE`` record's description is one the gateway would have written (it carries
no signature of its own; the tree head vouches for it).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final, NoReturn, TypeVar

from asn1crypto import cms, core
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.utils import CryptographyDeprecationWarning

from certs.der import check_der
from certs.errors import PKIError, TimestampError
from certs.keys import parse_der_certificate
from certs.ocsp_client import DEFAULT_MAX_AGE_S
from certs.profiles import Profile
from certs.revocation import OCSPResponsesChecker
from certs.timestamp import verify_token
from certs.validation import TrustStore, ValidatedPath, member_of, validate_path
from gateway.commit import LogRecord, RecordKind, decode_canonical
from gateway.errors import GatewayError
from gateway.headers import RequestHeader, ResponseHeader
from gateway.messagelog._headerjws import HeaderJwsError, verify_header_jws
from gateway.messagelog._verifycache import (
    CertificateVerdicts,
    InForce,
    Members,
    PathVerdicts,
    ProtectedHeaders,
)
from gateway.messagelog.timeline import ArchivedConfiguration, ConfigurationTimeline
from serai.merkle import ProofError, leaf_hash, verify_consistency, verify_inclusion
from serai.treehead import (
    SignedTreeHead,
    TreeHead,
    TreeHeadError,
    verify_signed_tree_head,
)

__all__ = [
    "DEFAULT_MAX_SKEW_S",
    "EvidenceVerifier",
    "Failure",
    "VerificationReport",
    "VerifiedHead",
]

#: Requests remembered for pairing with their responses: a response further than this
#: many requests from its own counts as unpaired (a response follows within seconds).
MAX_PENDING_REQUESTS: Final = 200_000
#: Tolerance between two clocks (signer and TSA, two gateways), as the gateways allow.
DEFAULT_MAX_SKEW_S: Final = 60.0

_REQUEST_TYP: Final = "serai-request+jws"
_RESPONSE_TYP: Final = "serai-response+jws"
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed check: what it is about (``record 42``, ``tree head 128``, a file of
    the bundle), which check (module docstring), and why."""

    subject: str
    check: str
    message: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.check}: {self.message}"


@dataclass(slots=True)
class VerificationReport:
    """What was checked and every failure, in the order found."""

    failures: list[Failure] = field(default_factory=list)
    #: The log the evidence is of (the gateway id), once known.
    log_id: str = ""
    records: int = 0
    pruned: int = 0
    heads: int = 0
    timestamped_heads: int = 0
    consistency_proofs: int = 0
    configurations: int = 0
    unpaired_responses: int = 0
    #: Records no time-stamped head covers yet (live log only).
    untimestamped: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        """One line: counts, and the verdict."""
        parts = [
            f"{self.records} records",
            f"{self.heads} tree heads ({self.timestamped_heads} time-stamped)",
            f"{self.consistency_proofs} consistency proofs",
            f"{self.configurations} global configurations",
        ]
        if self.pruned:
            parts.append(f"{self.pruned} pruned (hash only)")
        if self.unpaired_responses:
            parts.append(f"{self.unpaired_responses} responses without their request")
        if self.untimestamped:
            parts.append(f"{self.untimestamped} not yet time-stamped")
        verdict = "OK" if self.ok else f"FAILED: {len(self.failures)} failures"
        of = f" log {self.log_id}:" if self.log_id else ""
        return f"{verdict}:{of} " + ", ".join(parts)

    def as_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "log_id": self.log_id,
            "records": self.records,
            "pruned": self.pruned,
            "tree_heads": self.heads,
            "timestamped_heads": self.timestamped_heads,
            "consistency_proofs": self.consistency_proofs,
            "configurations": self.configurations,
            "unpaired_responses": self.unpaired_responses,
            "untimestamped": self.untimestamped,
            "failures": [
                {"subject": f.subject, "check": f.check, "message": f.message}
                for f in self.failures
            ],
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedHead:
    """A tree head as checked: its signed values, whether it came with a time-stamp
    token, the token's genTime (``None`` without a valid one), and whether every check
    of it passed. Small on purpose: a live log has one per second of activity."""

    head: TreeHead
    timestamped: bool
    timestamped_at: dt.datetime | None
    ok: bool

    @property
    def tree_size(self) -> int:
        return self.head.tree_size

    @property
    def root(self) -> bytes:
        return self.head.root_hash


class _CheckFailedError(Exception):
    def __init__(self, check: str, message: str) -> None:
        super().__init__(message)
        self.check = check
        self.message = message


def _fail(check: str, message: str) -> NoReturn:
    raise _CheckFailedError(check, message)


@dataclass(frozen=True, slots=True, kw_only=True)
class _TsaCertificates:
    roots: TrustStore
    untrusted: list[x509.Certificate]
    listed: frozenset[bytes]


@dataclass(frozen=True, slots=True)
class _Request:
    message_id: str
    provider_member: str


class EvidenceVerifier:
    """Checks the pieces of one log's evidence (see the module docstring); every
    ``check_*`` method records failures in :attr:`report` and never raises for bad
    evidence. Records must be checked in index order (responses find their request)."""

    def __init__(
        self,
        *,
        log_id: str,
        timeline: ConfigurationTimeline,
        max_ocsp_age_s: float = DEFAULT_MAX_AGE_S,
        max_skew_s: float = DEFAULT_MAX_SKEW_S,
        remember: bool = True,
    ) -> None:
        self._log_id = log_id
        self._timeline = timeline
        self._max_ocsp_age_s = max_ocsp_age_s
        self._skew = dt.timedelta(seconds=max_skew_s)
        self._requests: dict[bytes, _Request] = {}
        self._tsa_cache: tuple[int, _TsaCertificates] | None = None
        # What is remembered between records (module docstring, "Remembered work");
        # ``remember=False`` checks everything afresh (the tests compare the two).
        self._verdicts = CertificateVerdicts() if remember else None
        self._protected = ProtectedHeaders() if remember else None
        self._members = Members() if remember else None
        self._validate: Callable[..., ValidatedPath] = (
            PathVerdicts().validate if remember else validate_path
        )
        self._in_force_at = InForce(timeline).at if remember else timeline.in_force
        self.report = VerificationReport(log_id=log_id, configurations=len(timeline))

    @property
    def log_id(self) -> str:
        return self._log_id

    def fail(self, subject: str, check: str, message: str) -> None:
        """Record a failure found by the caller (bundle structure, stored columns)."""
        self.report.failures.append(Failure(subject, check, message))

    # -- tree heads ---------------------------------------------------------------------------

    def check_head(
        self, jws: bytes, token: bytes | None, *, subject: str | None = None
    ) -> VerifiedHead | None:
        """Check one signed tree head and its token (``None``: not time-stamped); the
        head's claimed values, or ``None`` when the JWS does not even decode."""
        self.report.heads += 1
        try:
            with _malformed_certificates_refused():
                sth = SignedTreeHead(jws)
        except TreeHeadError as exc:
            self.fail(subject or "tree head", "head_format", exc.message)
            return None
        except CryptographyDeprecationWarning as exc:
            self.fail(
                subject or "tree head", "head_format", f"x5c holds a malformed certificate: {exc}"
            )
            return None
        head = sth.head
        subject = subject or f"tree head {head.tree_size}"
        failures_before = len(self.report.failures)
        stamped_at = None
        if token is not None:
            self.report.timestamped_heads += 1
            stamped_at = self._run(subject, lambda: self._check_timestamp(jws, token))
        at = stamped_at or head.time
        self._run(subject, lambda: self._check_head_signature(sth, at))
        if stamped_at is not None and head.time > stamped_at + self._skew:
            self.fail(
                subject,
                "head_time",
                f"the head claims {_iso(head.time)}, after its time-stamp {_iso(stamped_at)}",
            )
        return VerifiedHead(
            head=head,
            timestamped=token is not None,
            timestamped_at=stamped_at,
            ok=len(self.report.failures) == failures_before,
        )

    def check_consistency(
        self, old: VerifiedHead, new: VerifiedHead, proof: Sequence[bytes]
    ) -> None:
        """Check that ``old``'s tree is a prefix of ``new``'s."""
        self.report.consistency_proofs += 1
        try:
            verify_consistency(old.tree_size, new.tree_size, old.root, new.root, proof)
        except ProofError as exc:
            self.fail(f"tree heads {old.tree_size} -> {new.tree_size}", "consistency", exc.message)

    def _check_head_signature(self, sth: SignedTreeHead, at: dt.datetime) -> None:
        configurations = self._in_force(at, "head_signature")
        first: TreeHeadError | None = None
        for entry in configurations:
            try:
                verify_signed_tree_head(
                    sth,
                    trusted_roots=entry.snapshot.trust_store,
                    at=at,
                    expected_log_id=self._log_id,
                    validate=self._validate,
                )
            except TreeHeadError as exc:
                first = first or exc
                continue
            return
        assert first is not None  # configurations is never empty here
        _fail("head_signature", first.message)

    def _tsa_certificates(self) -> _TsaCertificates:
        """Every approved root (as one trust store), the other certificates the
        configurations list (CA intermediates, TSA chains), and the DER of all of them;
        kept until the timeline grows (a live log has a head per second)."""
        if self._tsa_cache is not None and self._tsa_cache[0] == len(self._timeline):
            return self._tsa_cache[1]  # (``configurations`` sorts them all: not per head)
        configurations = self._timeline.configurations
        roots = _unique_certs(r for e in configurations for r in e.snapshot.trust_store.roots)
        untrusted = _unique_certs(
            [
                *(c for e in configurations for c in e.snapshot.trust_store.intermediates),
                *(
                    _load_cert(der, "head_timestamp")
                    for e in configurations
                    for tsa in e.snapshot.approved_tsas
                    for der in tsa.certificates
                ),
            ]
        )
        # Approved roots all passed TrustStore's checks in their configuration's store.
        found = _TsaCertificates(
            roots=TrustStore(roots=roots),
            untrusted=untrusted,
            listed=frozenset(_der(c) for c in [*roots, *untrusted]),
        )
        self._tsa_cache = (len(configurations), found)
        return found

    def _check_timestamp(self, jws: bytes, token: bytes) -> dt.datetime:
        known = self._tsa_certificates()
        _check_token_encoding(token, known.listed)
        try:
            verified = verify_token(
                token,
                digest=hashlib.sha256(jws).digest(),
                hash_name="sha256",
                trusted_roots=known.roots,
                untrusted=known.untrusted,
                validate=self._validate,
            )
        except TimestampError as exc:
            _fail("head_timestamp", exc.message)
        gen_time = verified.gen_time.astimezone(dt.UTC)
        tsa_der = _der(verified.tsa_certificate)
        root_der = _der(verified.chain[-1])
        for entry in self._in_force(gen_time, "head_timestamp"):
            snapshot = entry.snapshot
            approved_roots = {_der(r) for r in snapshot.trust_store.roots}
            if snapshot.tsa_for(tsa_der) is not None and root_der in approved_roots:
                return gen_time
        _fail(
            "head_timestamp",
            f"the token's TSA ({verified.tsa_certificate.subject.rfc4514_string()}) is not "
            f"approved by a global configuration in force at its time {_iso(gen_time)}",
        )

    # -- records ------------------------------------------------------------------------------

    def check_record(
        self,
        index: int,
        leaf: bytes,
        *,
        proof: Sequence[bytes] | None,
        tree_size: int,
        root: bytes,
        covered_at: dt.datetime | None,
        hashed: bytes | None = None,
    ) -> LogRecord | None:
        """Check record ``index`` (its canonical bytes ``leaf``) and its inclusion in the
        tree of ``tree_size`` with ``root`` (``proof=None``: no usable proof, already
        reported); ``covered_at`` is the genTime of the head that covers it, if any;
        ``hashed``, when the caller computed it, is ``leaf_hash(leaf)``.
        Returns the decoded record (or ``None``)."""
        self.report.records += 1
        subject = f"record {index}"
        if proof is not None:
            self.check_inclusion(
                index,
                leaf_hash(leaf) if hashed is None else hashed,
                proof=proof,
                tree_size=tree_size,
                root=root,
            )
        record = self._run(subject, lambda: _decode(leaf))
        if record is None:
            return None
        if record.kind is not RecordKind.ADMIN_CHANGE:
            self._run(subject, lambda: self._check_exchange(record, covered_at))
        return record

    def check_pruned(
        self,
        index: int,
        stored_leaf_hash: bytes,
        *,
        proof: Sequence[bytes],
        tree_size: int,
        root: bytes,
    ) -> None:
        """A pruned record: only its leaf hash's inclusion can be checked."""
        self.report.records += 1
        self.report.pruned += 1
        self.check_inclusion(index, stored_leaf_hash, proof=proof, tree_size=tree_size, root=root)

    def check_inclusion(
        self, index: int, hashed: bytes, *, proof: Sequence[bytes], tree_size: int, root: bytes
    ) -> None:
        try:
            verify_inclusion(hashed, index, tree_size, proof, root)
        except ProofError as exc:
            self.fail(f"record {index}", "inclusion", exc.message)

    def _check_exchange(self, record: LogRecord, covered_at: dt.datetime | None) -> None:
        is_request = record.kind.is_request
        try:
            payload, leaf = verify_header_jws(
                record.header_jws,
                typ=_REQUEST_TYP if is_request else _RESPONSE_TYP,
                chain=record.certificate_chain,
                cache=self._protected,
            )
        except HeaderJwsError as exc:
            _fail("header_signature", exc.message)
        header: RequestHeader | ResponseHeader
        try:
            header = RequestHeader.decode(payload) if is_request else ResponseHeader.decode(payload)
        except GatewayError as exc:
            _fail("header_signature", f"signed payload is not a valid header: {exc.message}")
        if header.message_id != record.message_id:
            _fail(
                "header_signature",
                f"the signed header is of message {header.message_id[:64]!a}, the record of "
                f"{record.message_id[:64]!a}",
            )
        if not hmac.compare_digest(header.body_sha256, record.body_sha256):
            _fail("body_digest", "the record's body_sha256 differs from the signed header's")
        if record.body is not None and len(record.body) != header.body_size:
            _fail(
                "body_digest",
                f"the kept body is {len(record.body)} bytes, the header signs {header.body_size}",
            )
        at = header.created_at
        if covered_at is not None and at > covered_at + self._skew:
            _fail(
                "record_time",
                f"the header was created at {_iso(at)}, after the time-stamp {_iso(covered_at)} "
                "of the tree head that covers it",
            )
        self._check_certificate(leaf, record, at)
        signer = (
            _member(leaf)
            if self._members is None
            else self._members.member(record.certificate_chain[0], lambda: _member(leaf))
        )
        if isinstance(header, RequestHeader):
            self._requests[hashlib.sha256(payload).digest()] = _Request(
                message_id=header.message_id,
                provider_member=str(header.service.subsystem.member),
            )
            if len(self._requests) > MAX_PENDING_REQUESTS:
                del self._requests[next(iter(self._requests))]  # the oldest
            expected = str(header.client.member)
            whose = f"the client {header.client}"
        else:
            request = self._requests.get(header.request_header_sha256)
            if request is None:
                self.report.unpaired_responses += 1
                return
            if request.message_id != header.message_id:
                _fail(
                    "header_member",
                    f"the response answers message {header.message_id[:64]!a}, but the request "
                    f"it is bound to is {request.message_id[:64]!a}",
                )
            expected = request.provider_member
            whose = "the provider of the request it answers"
        if signer != expected:
            _fail(
                "header_member",
                f"the signing certificate belongs to member {signer}, not to {expected}, the "
                f"member of {whose}",
            )

    def _check_certificate(
        self, leaf: x509.Certificate, record: LogRecord, at: dt.datetime
    ) -> None:
        chain = record.certificate_chain
        ocsp_response = record.ocsp_response or None
        # A check accepted before for these exact bytes, in this cell of time, under a
        # configuration in force now is accepted again (_verifycache rules 1 to 3);
        # anything else is checked in full below, exactly as without the cache.
        verdicts = self._verdicts
        if verdicts is not None and at.utcoffset() is not None:
            for entry in self._in_force_at(at):
                trust = entry.snapshot.trust_store
                if verdicts.accepted(chain, ocsp_response, trust, self._max_ocsp_age_s, at):
                    return
        intermediates = [_load_cert(der) for der in chain[1:]]
        responses = [ocsp_response] if ocsp_response else []
        first: PKIError | None = None
        for entry in self._in_force(at, "header_certificate"):
            trust = entry.snapshot.trust_store
            try:
                validate_path(
                    leaf,
                    intermediates=intermediates,
                    trust=trust,
                    at=at,
                    purpose=Profile.SIGN,
                    revocation=OCSPResponsesChecker(
                        responses, leaf=leaf, max_age_s=self._max_ocsp_age_s
                    ),
                )
            except PKIError as exc:
                first = first or exc
                continue
            if verdicts is not None:
                verdicts.remember(
                    chain,
                    ocsp_response,
                    trust,
                    self._max_ocsp_age_s,
                    at,
                    leaf=leaf,
                    intermediates=intermediates,
                )
            return
        assert first is not None
        _fail("header_certificate", f"{first.code.value}: {first.message}")

    # -- helpers ------------------------------------------------------------------------------

    def _in_force(self, at: dt.datetime, check: str) -> list[ArchivedConfiguration]:
        found = self._in_force_at(at)
        if not found:
            _fail(
                check,
                f"no global configuration in the evidence was in force at {_iso(at)} "
                f"({len(self._timeline)} available)",
            )
        return found

    def _run(self, subject: str, check: Callable[[], _T]) -> _T | None:
        try:
            with _malformed_certificates_refused():
                return check()
        except _CheckFailedError as exc:
            self.fail(subject, exc.check, exc.message)
        except CryptographyDeprecationWarning as exc:
            self.fail(subject, "malformed_certificate", str(exc))
        return None


@contextlib.contextmanager
def _malformed_certificates_refused() -> Iterator[None]:
    """``cryptography`` only warns about some malformed certificates (a serial number
    that is not positive, for one) that it will refuse in a later release: evidence
    holding one fails now, the same way whatever the warning filters are."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", CryptographyDeprecationWarning)
        yield


def _check_token_encoding(token: bytes, listed: frozenset[bytes]) -> None:
    """What :func:`certs.timestamp.verify_token` leaves unbound, bound: the parts of the
    token outside the TSA's signature are DER (one encoding), it carries no CRLs, and
    every certificate it embeds is one the configurations list, byte for byte. Without
    this a changed byte in an embedded certificate would go unnoticed."""
    try:
        info = cms.ContentInfo.load(token, strict=True)
        signed = info["content"]
        if not isinstance(signed, cms.SignedData):
            _fail("head_timestamp", "the token is not a CMS SignedData")
        for name in ("version", "digest_algorithms", "encap_content_info", "signer_infos"):
            part = signed[name]
            try:
                check_der(part.dump(), set_of_tags=(0xA0, 0xA1))  # SignerInfo's attributes
            except ValueError as exc:
                _fail("head_timestamp", f"the token's {name} is not DER-encoded: {exc}")
        if not isinstance(signed["crls"], core.Void):
            _fail("head_timestamp", "the token carries CRLs")
        embedded = (
            []
            if isinstance(signed["certificates"], core.Void)
            else [choice.chosen.dump() for choice in signed["certificates"]]
        )
    except _CheckFailedError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        _fail("head_timestamp", f"the token is not a CMS SignedData: {exc}")
    for position, der in enumerate(embedded):
        if der not in listed:
            _fail(
                "head_timestamp",
                f"certificate {position} embedded in the token is not one the configurations "
                "list (a TSA they do not approve, or a changed byte)",
            )


# -- small helpers --------------------------------------------------------------------------


def _decode(leaf: bytes) -> LogRecord:
    try:
        return decode_canonical(leaf)
    except GatewayError as exc:
        _fail("record_format", exc.message)


def _member(leaf: x509.Certificate) -> str:
    try:
        return member_of(leaf)
    except PKIError as exc:
        _fail("header_member", exc.message)


def _load_cert(der: bytes, check: str = "header_certificate") -> x509.Certificate:
    try:
        return parse_der_certificate(der)
    except ValueError as exc:
        _fail(check, f"a certificate does not parse: {exc}")


def _unique_certs(certs: Iterable[x509.Certificate]) -> list[x509.Certificate]:
    seen: dict[bytes, x509.Certificate] = {}
    for cert in certs:
        seen.setdefault(_der(cert), cert)
    return list(seen.values())


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _iso(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
