"""What the auditor's verifier (:mod:`gateway.messagelog.verify`) remembers between
records and tree heads, so that work whose answer is fixed by the bytes is done once per
distinct input instead of once per record or head. Unlike the gateway's online cache
(:mod:`gateway._verifycache`), every hit here stands for exactly the verdict the check
would give if it were run again: the verifier's verdicts are the same with or without it.

Rules:

1. **Successes only.** Only an accepted check is remembered. A refusal is always
   computed afresh, so every failure, with its message, is what the check itself says.
2. **Exact bytes.** A key holds every input that the remembered check reads, byte for
   byte: for a signing certificate's path (:class:`CertificateVerdicts`), the DER of
   every certificate of the record's chain in order, the exact OCSP response DER (or its
   absence), a SHA-256 over the exact DER of the trust store's roots and known
   intermediates, in order and length-prefixed (:func:`trust_digest`), the maximum OCSP
   age, the OCSP clock skew and the purpose. A chain, response or trust store that
   differs in one byte is another key: a miss, checked in full.
3. **Time by cell.** :func:`certs.validation.validate_path` with the verifier's
   :class:`~certs.revocation.OCSPResponsesChecker` compares the time of the check ``at``
   only with constants fixed by the key's bytes: the ``notBefore`` and ``notAfter`` of
   the leaf, of every certificate the path search may use (the chain's, the trust
   store's roots and intermediates) and of every certificate the OCSP response carries;
   and, for each answer in the response, ``thisUpdate`` less the validator's clock skew,
   ``thisUpdate`` plus the maximum age, and ``nextUpdate``; and the latest instant to
   which the validator can add its clock skew without overflow. Two instants that compare
   the same way (before, equal, after) with each of these constants make every one of
   those comparisons, hence the whole check, come out the same. A success at ``t0`` is
   remembered for the *cell* of ``t0``: the sorted constants' position of ``t0`` and
   whether ``t0`` is one of them. A later check of the same key is a hit only if its
   ``at`` is in a cell remembered as accepted; any other ``at`` (outside a
   certificate's validity, past ``nextUpdate``, too late for the maximum age, or merely
   in a cell not seen yet) is checked in full. Where a constant cannot be read (an
   undecodable certificate or response, a time that overflows) nothing is remembered.
4. **Protected headers** (:class:`ProtectedHeaders`, used by
   :mod:`gateway.messagelog._headerjws`): key, the exact protected-header part of the
   JWS, the expected ``typ`` and the DER of every certificate of the record's chain;
   value, the leaf's public key. Everything
   :func:`~gateway.messagelog._headerjws.verify_header_jws` checks before the payload
   (encoding, members, ``typ``, ``x5c`` against the chain, the leaf parsing, its key and
   ``alg``) is a function of that key; the payload, the signature and its verification
   over the exact signing input are checked on every record, and the leaf is parsed
   afresh for each.
5. **Members** (:class:`Members`): key, the leaf's DER; value, what
   :func:`certs.validation.member_of` read from it (a refusal is not remembered).
6. **Configurations in force** (:class:`InForce`): the answer of
   :meth:`~gateway.messagelog.timeline.ConfigurationTimeline.in_force` depends on ``at``
   only through its comparisons with each held configuration's ``generated_at`` and
   ``expires_at``; it is remembered per cell of those instants (as in rule 3) and
   forgotten whenever the timeline holds another number of configurations. It is
   computed as ``in_force`` defines it (``generated_at <= at < expires_at``, highest
   serial first), looking only at configurations generated after ``at`` less the
   longest validity held: any other has expired by ``at``.
7. **Bounds.** Each table keeps at most ``max_entries`` keys, least recently used
   dropped first; a key's cells are bounded by its constants. One verifier owns its
   caches (one thread); nothing is shared between verifications.
8. **Certification paths without revocation** (:class:`PathVerdicts`: the log-signing
   certificate of every tree head, the TSA certificate of every time-stamp token). Only
   a call with exactly a leaf, ``intermediates``, ``trust``, ``at`` (aware),
   ``purpose`` and ``revocation=None`` is answered from memory; any other (a revocation
   checker, a TLS role, a maximum depth, a naive time) goes to
   :func:`certs.validation.validate_path` every time. Key: the purpose, the exact DER
   of the leaf and of every intermediate offered, in order, and the trust store's
   :func:`trust_digest`. Such a call compares its time only with the ``notBefore`` and
   ``notAfter`` of the leaf and of the certificates the search may use (those offered,
   the store's roots and intermediates); everything else it does (decoding, signatures,
   CA constraints, purposes, the search order and its budget) is a function of the
   key's bytes. So, as in rule 3, an ``at`` in a cell where the same key was accepted
   is accepted again, with the path found then (the same certificates, byte for byte)
   and this ``at``; any other ``at`` (another cell, outside a validity) is validated in
   full. A refusal is raised by ``validate_path`` itself and never remembered (rule 1).
   ``cryptography``'s deprecation warnings, which the verifier turns into refusals, are
   a function of the bytes too: a key accepted once raised none.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp

from certs.ocsp_client import DEFAULT_CLOCK_SKEW_S
from certs.profiles import Profile
from certs.validation import TrustStore, ValidatedPath, validate_path
from gateway._verifycache import LRU
from gateway.messagelog.timeline import ArchivedConfiguration, ConfigurationTimeline

__all__ = [
    "DEFAULT_MAX_ENTRIES",
    "CertificateVerdicts",
    "InForce",
    "Members",
    "PathVerdicts",
    "ProtectedHeaders",
    "time_cell",
    "trust_digest",
]

#: Keys kept per table.
DEFAULT_MAX_ENTRIES: Final = 10_000
#: What a certificate verdict is about (part of every key: rule 2).
_PURPOSE: Final = b"serai-logverify-sign-v1"


#: A cell of time (rule 3): the position among the sorted constants, and whether equal.
Cell = tuple[int, bool]


def time_cell(bounds: Sequence[dt.datetime], at: dt.datetime) -> Cell:
    """The cell of ``at`` among the sorted, distinct ``bounds`` (rule 3)."""
    position = bisect.bisect_left(bounds, at)
    return position, position < len(bounds) and bounds[position] == at


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def trust_digest(trust: TrustStore) -> bytes:
    """SHA-256 over the exact DER of ``trust``'s roots, then its known intermediates,
    each group counted and each certificate length-prefixed (rule 2)."""
    digest = hashlib.sha256(b"serai-truststore-v1")
    for label, certs in ((b"R", trust.roots), (b"I", trust.intermediates)):
        digest.update(label + len(certs).to_bytes(4, "big"))
        for cert in certs:
            der = cert.public_bytes(serialization.Encoding.DER)
            digest.update(len(der).to_bytes(4, "big") + der)
    return digest.digest()


_VerdictKey = tuple[bytes, tuple[bytes, ...], bytes, bytes, float, float]
#: What :class:`CertificateVerdicts` is asked about: the record's chain (DER, leaf first),
#: its OCSP response (or ``None``), the trust store, the maximum OCSP age and the time.
CertificateCheck = tuple[Sequence[bytes], bytes | None, TrustStore, float, dt.datetime]


@dataclass(slots=True)
class _Verdict:
    bounds: tuple[dt.datetime, ...]
    cells: set[Cell] = field(default_factory=set)


class _Counted:
    """A table keyed by trust stores among other bytes, counting its hits and misses."""

    __slots__ = ("_digests", "hits", "misses")

    def __init__(self) -> None:
        self._digests = _TrustDigests()
        self.hits = 0
        self.misses = 0


class CertificateVerdicts(_Counted):
    """Accepted signing-certificate paths with their OCSP responses, by exact bytes and
    cell of time (rules 1 to 3)."""

    __slots__ = ("_verdicts",)

    def __init__(self, *, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        super().__init__()
        self._verdicts: LRU[_VerdictKey, _Verdict] = LRU(max_entries)

    def _key(
        self,
        chain: Sequence[bytes],
        ocsp_response: bytes | None,
        trust: TrustStore,
        max_age_s: float,
    ) -> _VerdictKey:
        return (
            _PURPOSE,
            tuple(bytes(der) for der in chain),
            b"" if ocsp_response is None else b"R" + bytes(ocsp_response),
            self._digests.of(trust),
            float(max_age_s),
            float(DEFAULT_CLOCK_SKEW_S),
        )

    def accepted(self, *check: *CertificateCheck) -> bool:
        """Whether this exact check (chain, OCSP response, trust store, maximum OCSP age,
        time) was accepted before in the cell of its time."""
        chain, ocsp_response, trust, max_age_s, at = check
        if at.utcoffset() is None:
            return False  # the check itself refuses a naive time; never answer for it
        verdict = self._verdicts.get(self._key(chain, ocsp_response, trust, max_age_s))
        if verdict is not None and time_cell(verdict.bounds, at) in verdict.cells:
            self.hits += 1
            return True
        self.misses += 1
        return False

    def remember(
        self,
        *check: *CertificateCheck,
        leaf: x509.Certificate,
        intermediates: Sequence[x509.Certificate],
    ) -> None:
        """Record that this check (as for :meth:`accepted`) accepted at its time (call
        only then); ``leaf`` and ``intermediates`` are the chain's certificates, parsed."""
        chain, ocsp_response, trust, max_age_s, at = check
        if at.utcoffset() is None:
            return
        key = self._key(chain, ocsp_response, trust, max_age_s)
        verdict = self._verdicts.get(key)
        if verdict is None:
            bounds = _time_bounds(
                [leaf, *intermediates, *trust.roots, *trust.intermediates],
                ocsp_response,
                max_age_s,
            )
            if bounds is None:
                return
            verdict = _Verdict(bounds)
            self._verdicts.put(key, verdict)
        verdict.cells.add(time_cell(verdict.bounds, at))


class _TrustDigests:
    """:func:`trust_digest` of the trust stores met, by identity (a store is immutable);
    each store is held so that its id cannot be reused by another."""

    __slots__ = ("_known",)

    def __init__(self) -> None:
        self._known: dict[int, tuple[TrustStore, bytes]] = {}

    def of(self, trust: TrustStore) -> bytes:
        known = self._known.get(id(trust))
        if known is None or known[0] is not trust:
            if len(self._known) >= DEFAULT_MAX_ENTRIES:
                self._known.clear()
            known = (trust, trust_digest(trust))
            self._known[id(trust)] = known
        return known[1]


_PathKey = tuple[bytes, bytes, tuple[bytes, ...], bytes]
#: The arguments of ``validate_path`` with which a path is remembered (rule 8): those the
#: tree-head and time-stamp checks pass; any other (a TLS role, a maximum depth) goes
#: to ``validate_path`` every time.
_REMEMBERED_OPTIONS: Final = frozenset({"intermediates", "trust", "at", "purpose", "revocation"})


@dataclass(slots=True)
class _Paths:
    bounds: tuple[dt.datetime, ...]
    by_cell: dict[Cell, ValidatedPath] = field(default_factory=dict)


class PathVerdicts(_Counted):
    """:func:`certs.validation.validate_path` without revocation, by exact bytes and cell
    of time (rule 8): the certification paths of log-signing and TSA certificates, the
    same on every tree head. :meth:`validate` takes and does what ``validate_path`` does,
    so it is passed where that is called (``validate=`` of
    :func:`serai.treehead.verify_signed_tree_head` and
    :func:`certs.timestamp.verify_token`)."""

    __slots__ = ("_paths",)

    def __init__(self, *, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        super().__init__()
        self._paths: LRU[_PathKey, _Paths] = LRU(max_entries)

    def validate(self, leaf: x509.Certificate, **options: Any) -> ValidatedPath:
        """What ``validate_path(leaf, **options)`` returns or raises (rule 8)."""
        at, trust, purpose = options.get("at"), options.get("trust"), options.get("purpose")
        if (
            options.keys() != _REMEMBERED_OPTIONS
            or options["revocation"] is not None
            or not isinstance(at, dt.datetime)
            or at.utcoffset() is None
            or not isinstance(trust, TrustStore)
            or not isinstance(purpose, Profile)
        ):
            return validate_path(leaf, **options)  # checked in full, every time
        intermediates: Sequence[x509.Certificate] = options["intermediates"]
        key = (
            purpose.value.encode(),
            _der(leaf),
            tuple(_der(c) for c in intermediates),
            self._digests.of(trust),
        )
        known = self._paths.get(key)
        if known is not None:
            path = known.by_cell.get(time_cell(known.bounds, at))
            if path is not None:
                self.hits += 1
                return dataclasses.replace(path, at=at.astimezone(dt.UTC))
        self.misses += 1
        path = validate_path(leaf, **options)  # a refusal is raised and never remembered
        if known is None:
            bounds = _time_bounds([leaf, *intermediates, *trust.roots, *trust.intermediates])
            if bounds is None:
                return path
            known = _Paths(bounds)
            self._paths.put(key, known)
        known.by_cell[time_cell(known.bounds, at)] = path
        return path


def _time_bounds(
    certificates: Sequence[x509.Certificate],
    ocsp_response: bytes | None = None,
    max_age_s: float = 0.0,
) -> tuple[dt.datetime, ...] | None:
    """Every constant the check compares its time with (rules 3 and 8), sorted and
    distinct; ``None`` when one cannot be read."""
    found: set[dt.datetime] = set()
    try:
        for cert in certificates:
            found.update((cert.not_valid_before_utc, cert.not_valid_after_utc))
        if ocsp_response is not None:
            response = ocsp.load_der_ocsp_response(ocsp_response)
            for cert in response.certificates:
                found.update((cert.not_valid_before_utc, cert.not_valid_after_utc))
            skew = dt.timedelta(seconds=DEFAULT_CLOCK_SKEW_S)
            found.add(dt.datetime.max.replace(tzinfo=dt.UTC) - skew)  # ``now + skew`` overflows
            age = dt.timedelta(seconds=max_age_s)
            for single in response.responses:
                this_update = single.this_update_utc
                found.update((this_update - skew, this_update + age))
                if single.next_update_utc is not None:
                    found.add(single.next_update_utc)
    except (ValueError, TypeError, OverflowError, Warning):
        return None
    return tuple(sorted(found))


class ProtectedHeaders:
    """Accepted protected headers of logged JWS: their leaf's public key (rule 4)."""

    __slots__ = ("_keys",)

    def __init__(self, *, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self._keys: LRU[tuple[str, str, tuple[bytes, ...]], object] = LRU(max_entries)

    def key_for(self, protected: str, typ: str, chain: Sequence[bytes]) -> object | None:
        return self._keys.get((protected, typ, tuple(bytes(der) for der in chain)))

    def remember(self, protected: str, typ: str, chain: Sequence[bytes], key: object) -> None:
        self._keys.put((protected, typ, tuple(bytes(der) for der in chain)), key)


class Members:
    """:func:`certs.validation.member_of` by the leaf's exact DER (rule 5)."""

    __slots__ = ("_members",)

    def __init__(self, *, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self._members: LRU[bytes, str] = LRU(max_entries)

    def member(self, der: bytes, read: Callable[[], str]) -> str:
        """The member of the certificate ``der``: remembered, or ``read()`` (whatever it
        raises is raised, and nothing is remembered)."""
        key = bytes(der)
        found = self._members.get(key)
        if found is None:
            found = read()
            self._members.put(key, found)
        return found


class InForce:
    """:meth:`ConfigurationTimeline.in_force` by cell of time (rule 6), found among the
    configurations generated less than the longest validity before ``at`` (a year of
    configurations, one a minute, is half a million)."""

    __slots__ = ("_bounds", "_by_cell", "_by_start", "_held", "_longest", "_starts", "_timeline")

    def __init__(self, timeline: ConfigurationTimeline) -> None:
        self._timeline = timeline
        self._held = -1
        self._bounds: tuple[dt.datetime, ...] = ()
        self._by_cell: dict[Cell, list[ArchivedConfiguration]] = {}
        self._by_start: list[ArchivedConfiguration] = []
        self._starts: list[dt.datetime] = []
        self._longest = dt.timedelta(0)

    def at(self, at: dt.datetime) -> list[ArchivedConfiguration]:
        """The configurations in force at ``at``, newest first (a list not to change)."""
        if at.utcoffset() is None:
            return self._timeline.in_force(at)
        if len(self._timeline) != self._held:
            self._index()
        cell = time_cell(self._bounds, at)
        found = self._by_cell.get(cell)
        if found is None:
            found = self._in_force(at)
            if len(self._by_cell) >= DEFAULT_MAX_ENTRIES:
                self._by_cell.clear()
            self._by_cell[cell] = found
        return found

    def _index(self) -> None:
        held = self._timeline.configurations
        self._held = len(held)
        self._by_start = sorted(held, key=lambda e: e.snapshot.generated_at)
        self._starts = [e.snapshot.generated_at for e in self._by_start]
        self._longest = max(
            [dt.timedelta(0), *(e.snapshot.expires_at - e.snapshot.generated_at for e in held)]
        )
        self._bounds = tuple(
            sorted({t for e in held for t in (e.snapshot.generated_at, e.snapshot.expires_at)})
        )
        self._by_cell = {}

    def _in_force(self, at: dt.datetime) -> list[ArchivedConfiguration]:
        """What ``in_force(at)`` answers: those with ``generated_at <= at < expires_at``
        by serial, newest first. One generated at or before ``at - longest`` expired by
        ``at``, so the search stops there."""
        try:
            oldest = at - self._longest
        except OverflowError:
            return self._timeline.in_force(at)
        found = []
        position = bisect.bisect_right(self._starts, at)  # generated_at <= at before it
        while position > 0 and self._starts[position - 1] > oldest:
            position -= 1
            entry = self._by_start[position]
            if at < entry.snapshot.expires_at:
                found.append(entry)
        return sorted(found, key=lambda e: e.serial, reverse=True)
