"""An opt-in cache of the certificate work of :func:`gateway.signing.verify_request` and
:func:`gateway.signing.verify_response` (rules 5 and 6 of :mod:`gateway.signing`).

A gateway sees the same peer chain on every message, and for up to an hour the same
stapled OCSP response; validating them again costs most of a verification. A
:class:`VerificationCache` passed as ``cache=`` remembers what was *accepted*, keyed by the
exact bytes it was accepted for, and skips only the work whose result cannot change with
those bytes fixed. Without it (``cache=None``, the default) verification is unchanged.

Rules:

1. **Path cache.** Key: the exact DER bytes of every certificate of the sent chain, in
   order; a SHA-256 digest of the trust store's exact root and known-intermediate DERs
   (in order, length-prefixed); and the purpose (``sign``). Value: the
   :class:`~certs.validation.ValidatedPath` and the window ``[max notBefore, min notAfter]``
   over the whole path, root included. A hit is used only if ``now`` lies in that window,
   and only if the leaf's OCSP check (rule 2) then accepts; otherwise the path is
   validated again by :func:`~certs.validation.validate_path`, exactly as without a
   cache, and whatever it raises is the answer. Failures are never cached. A trust store
   that changed in any certificate (a CA withdrawn, one added) gives another key: a miss.
2. **OCSP cache.** Key: the exact OCSP response DER, the leaf's DER and the issuer's DER.
   Value: the :class:`~certs.ocsp_client.OCSPResult` that
   :func:`~certs.ocsp_client.validate_response` returned, with the validity window of the
   certificates the response carries (the delegated signer's among them; narrower than
   the signer's alone can only send more calls to the validator). Everything the
   validator checks that does not depend on the time (DER, status, CertID, signer
   identity and delegation, signature) is a function of the key, so a hit skips only that;
   its time checks are redone at ``now`` with the same rules and parameters (signer valid
   at ``now``, ``thisUpdate`` not beyond ``now`` + the validator's clock skew, age within
   ``max_ocsp_age_s``, ``nextUpdate`` not passed). A hit failing any of them goes to the
   validator, which refuses it with its own code (``ocsp_stale``, ``ocsp_invalid``).
   ``revoked`` and ``unknown`` answers are cached as what they are, and refused exactly as
   :class:`~certs.revocation.OCSPResponsesChecker` refuses them (it is asked to). Only
   validated answers are cached.
3. **Message binding is never cached.** The JWS form, algorithm, ``x5c`` equal to the
   chain field, the signature over the exact signing input, the payload, the member, the
   body digest and length, the clock skew and a response's binding are checked on every
   call by :mod:`gateway.signing`; the cache holds nothing about a message.
4. **Parsed certificates.** Key: a certificate's exact DER. Value: what parsing it gave
   (:func:`certs.keys.parse_der_certificate`), its public key, and, once asked, the
   member id :func:`certs.validation.member_of` read from it. These are functions of the
   bytes alone; a DER that fails to parse, a key that fails to load or a subject without
   a member id is never cached, so a refusal is always computed afresh.
5. **Bounds and threads.** Each table is an LRU of at most ``max_entries`` entries (10,000
   by default). One lock guards both tables; validation itself runs outside it, so two
   threads missing at once both validate (the later store wins; both stored values are
   valid). Cached values are immutable. Safe to share between threads.

Consequence: every call returns or raises what it would without the cache, except that
a hit returns the path found when the entry was stored, where a fresh search at ``now``
might find another valid path through the same certificates (only possible when several
candidate issuers exist and some of them were not valid then); both paths satisfy every
rule of :func:`~certs.validation.validate_path`.

Memory: an entry holds the chain (or OCSP response, leaf and issuer) DER, a few KiB;
10,000 entries per table is some tens of MiB at most.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp

from certs.ca import CertStatus
from certs.errors import OCSPError, PKIError
from certs.ocsp_client import DEFAULT_CLOCK_SKEW_S, OCSPResult, validate_response
from certs.profiles import Profile
from certs.revocation import OCSPResponsesChecker
from certs.validation import TrustStore, ValidatedPath, member_of, validate_path

__all__ = ["DEFAULT_MAX_ENTRIES", "VerificationCache"]

#: Default bound on each table (paths, OCSP answers).
DEFAULT_MAX_ENTRIES: Final = 10_000
#: Trust stores whose digest is remembered (by identity; a store is immutable).
_TRUST_DIGESTS: Final = 16

_K = TypeVar("_K")
_V = TypeVar("_V")

_PathKey = tuple[tuple[bytes, ...], bytes, Profile]
_OCSPKey = tuple[bytes, bytes, bytes]


@dataclass(frozen=True, slots=True)
class _Window:
    not_before: dt.datetime
    not_after: dt.datetime

    def holds(self, at: dt.datetime) -> bool:
        return self.not_before <= at <= self.not_after


@dataclass(frozen=True, slots=True)
class _PathEntry:
    path: ValidatedPath
    window: _Window


@dataclass(frozen=True, slots=True)
class _OCSPEntry:
    result: OCSPResult
    #: Validity of the certificates the response carries; ``None`` when it carries none.
    signers: _Window | None
    #: Common name of the certificate the answer is about (a member id for signing
    #: certificates), for the operators' view of cached answers.
    subject: str = ""


class LRU(Generic[_K, _V]):
    """A bounded mapping; the caller holds the lock."""

    __slots__ = ("_data", "_max")

    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("a cache needs room for at least one entry")
        self._data: OrderedDict[_K, _V] = OrderedDict()
        self._max = max_entries

    def get(self, key: _K) -> _V | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: _K, value: _V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self._max:
            self._data.popitem(last=False)

    def values(self) -> list[_V]:
        return list(self._data.values())

    def __len__(self) -> int:
        return len(self._data)


@dataclass(frozen=True, slots=True)
class ParsedCertificate:
    """A certificate, its public key and (once read) its member id (rule 4)."""

    certificate: x509.Certificate
    public_key: object
    member: str | None = None


class VerificationCache:
    """Accepted certificate paths and validated OCSP answers; see the module docstring."""

    __slots__ = (
        "_certificates",
        "_hits",
        "_lock",
        "_misses",
        "_ocsp",
        "_paths",
        "_trust_digests",
    )

    def __init__(self, *, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError("a verification cache needs room for at least one entry")
        self._lock = threading.Lock()
        self._paths: LRU[_PathKey, _PathEntry] = LRU(max_entries)
        self._ocsp: LRU[_OCSPKey, _OCSPEntry] = LRU(max_entries)
        self._certificates: LRU[bytes, ParsedCertificate] = LRU(max_entries)
        # id(store) -> (store, digest); the store is kept so its id cannot be reused.
        self._trust_digests: LRU[int, tuple[TrustStore, bytes]] = LRU(_TRUST_DIGESTS)
        self._hits = {"path": 0, "ocsp": 0}
        self._misses = {"path": 0, "ocsp": 0}

    @property
    def sizes(self) -> tuple[int, int]:
        """Entries held: (paths, OCSP answers)."""
        with self._lock:
            return len(self._paths), len(self._ocsp)

    @property
    def certificates_held(self) -> int:
        """Parsed certificates held (rule 4)."""
        with self._lock:
            return len(self._certificates)

    @property
    def stats(self) -> dict[str, int]:
        """Hit and miss counters (for tests and metrics)."""
        with self._lock:
            return {
                "path_hits": self._hits["path"],
                "path_misses": self._misses["path"],
                "ocsp_hits": self._hits["ocsp"],
                "ocsp_misses": self._misses["ocsp"],
            }

    def certificate(
        self, der: bytes, parse: Callable[[bytes], ParsedCertificate]
    ) -> ParsedCertificate:
        """The parsed certificate of ``der``: cached, or ``parse(der)`` (rule 4; what
        ``parse`` raises is raised and nothing is stored)."""
        key = bytes(der)
        with self._lock:
            found = self._certificates.get(key)
        if found is not None:
            return found
        parsed = parse(key)
        with self._lock:
            self._certificates.put(key, parsed)
        return parsed

    def member(self, parsed: ParsedCertificate, der: bytes) -> str:
        """:func:`certs.validation.member_of` of ``parsed`` (the certificate of ``der``),
        remembered with it (rule 4; a refusal is raised and not remembered)."""
        if parsed.member is not None:
            return parsed.member
        member = member_of(parsed.certificate)
        with self._lock:
            self._certificates.put(bytes(der), dataclasses.replace(parsed, member=member))
        return member

    def validate_sign_path(
        self,
        leaf: x509.Certificate,
        *,
        chain: Sequence[bytes],
        intermediates: Sequence[x509.Certificate],
        ocsp_responses: Sequence[bytes],
        trust: TrustStore,
        at: dt.datetime,
        max_ocsp_age_s: float,
    ) -> ValidatedPath:
        """What ``validate_path(leaf, intermediates=..., trust=trust, at=at,
        purpose=Profile.SIGN, revocation=OCSPResponsesChecker(ocsp_responses, leaf=leaf,
        max_age_s=max_ocsp_age_s))`` returns or raises, using the cache (rules 1 and 2).
        ``chain`` is the DER of ``leaf`` followed by that of ``intermediates``."""
        ders = tuple(bytes(der) for der in chain)
        key: _PathKey = (ders, self._trust_digest(trust), Profile.SIGN)
        revocation = _CachingOCSPChecker(self, ocsp_responses, leaf=leaf, max_age_s=max_ocsp_age_s)
        with self._lock:
            entry = self._paths.get(key)
        if entry is not None and entry.window.holds(at) and len(entry.path.certificates) >= 2:
            try:
                revocation.check(leaf, entry.path.certificates[1], at)
            except PKIError:
                pass  # validate again below: its refusal is the answer
            else:
                self._count("path", hit=True)
                return entry.path
        self._count("path", hit=False)
        path = validate_path(
            leaf,
            intermediates=intermediates,
            trust=trust,
            at=at,
            purpose=Profile.SIGN,
            revocation=revocation,
        )
        window = _window(path.certificates)
        if window is not None:
            with self._lock:
                self._paths.put(key, _PathEntry(path, window))
        return path

    def ocsp_result(
        self,
        der: bytes,
        *,
        cert: x509.Certificate,
        issuer: x509.Certificate,
        at: dt.datetime,
        max_age_s: float,
    ) -> OCSPResult | None:
        """The answer ``validate_response(der, cert=cert, issuer=issuer, now=at,
        max_age_s=max_age_s, require_nonce=False)`` gives, or ``None`` where it raises."""
        key: _OCSPKey = (bytes(der), _der(cert), _der(issuer))
        with self._lock:
            entry = self._ocsp.get(key)
        if entry is not None and _still_fresh(entry, at, max_age_s):
            self._count("ocsp", hit=True)
            return entry.result
        self._count("ocsp", hit=False)
        try:
            result = validate_response(
                der, cert=cert, issuer=issuer, now=at, max_age_s=max_age_s, require_nonce=False
            )
        except OCSPError:
            return None
        try:
            signers = _window(ocsp.load_der_ocsp_response(der).certificates)
        except ValueError:  # it was just read by the validator; never store what is not
            return result
        with self._lock:
            self._ocsp.put(key, _OCSPEntry(result, signers, _common_name(cert)))
        return result

    def newest_ocsp_this_update(self) -> dict[str, dt.datetime]:
        """For each certificate subject (common name) with a cached OCSP answer, the
        ``thisUpdate`` of its newest one: how fresh the peers' stapled answers are."""
        newest: dict[str, dt.datetime] = {}
        with self._lock:
            entries = list(self._ocsp.values())
        for entry in entries:
            known = newest.get(entry.subject)
            if known is None or entry.result.this_update > known:
                newest[entry.subject] = entry.result.this_update
        return newest

    def _trust_digest(self, trust: TrustStore) -> bytes:
        with self._lock:
            known = self._trust_digests.get(id(trust))
        if known is not None and known[0] is trust:
            return known[1]
        digest = hashlib.sha256(b"serai-truststore-v1")
        for label, certs in ((b"R", trust.roots), (b"I", trust.intermediates)):
            digest.update(label + len(certs).to_bytes(4, "big"))
            for cert in certs:
                der = _der(cert)
                digest.update(len(der).to_bytes(4, "big") + der)
        value = digest.digest()
        with self._lock:
            self._trust_digests.put(id(trust), (trust, value))
        return value

    def _count(self, table: str, *, hit: bool) -> None:
        with self._lock:
            (self._hits if hit else self._misses)[table] += 1


class _CachingOCSPChecker:
    """:class:`~certs.revocation.OCSPResponsesChecker` for one leaf, accepting a good
    answer from the cache; every refusal is made by ``OCSPResponsesChecker`` itself."""

    __slots__ = ("_cache", "_leaf", "_max_age_s", "_responses")

    def __init__(
        self,
        cache: VerificationCache,
        responses: Sequence[bytes],
        *,
        leaf: x509.Certificate,
        max_age_s: float,
    ) -> None:
        self._cache = cache
        self._responses = tuple(responses)
        self._leaf = leaf
        self._max_age_s = max_age_s

    def check(self, cert: x509.Certificate, issuer: x509.Certificate, at: dt.datetime) -> None:
        if cert != self._leaf:
            return  # OCSPResponsesChecker(leaf=...) passes every other certificate
        for der in self._responses:
            result = self._cache.ocsp_result(
                der, cert=cert, issuer=issuer, at=at, max_age_s=self._max_age_s
            )
            if result is None:
                continue  # the checker tries the next response too
            if result.status is CertStatus.GOOD:
                return
            break  # the checker refuses at the first valid non-good answer
        OCSPResponsesChecker(self._responses, leaf=self._leaf, max_age_s=self._max_age_s).check(
            cert, issuer, at
        )


def _still_fresh(entry: _OCSPEntry, at: dt.datetime, max_age_s: float) -> bool:
    """The time checks of ``validate_response`` (and of the signer's validity)."""
    result = entry.result
    if entry.signers is not None and not entry.signers.holds(at):
        return False
    if result.this_update > at + dt.timedelta(seconds=DEFAULT_CLOCK_SKEW_S):
        return False
    if at - result.this_update > dt.timedelta(seconds=max_age_s):
        return False
    return result.next_update is None or result.next_update >= at


def _window(certs: Sequence[x509.Certificate]) -> _Window | None:
    if not certs:
        return None
    return _Window(
        max(c.not_valid_before_utc for c in certs), min(c.not_valid_after_utc for c in certs)
    )


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    value = names[0].value if names else ""
    return value if isinstance(value, str) else ""
