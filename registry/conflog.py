"""The registry's configuration log: formats, and the gateway's checks of its heads.

Every configuration the registry publishes (the exact ``SignedGlobalConfiguration``
bytes it serves) is a leaf of an RFC 9162 Merkle log (:mod:`serai.merkle`), the
*configuration log* ``<instance>/registry-conf``. Each publication appends one leaf and
signs a tree head (:mod:`serai.treehead`) of the new size with the configuration signing
key, so a gateway checks it with the trust anchor it already holds. A registry that
showed different gateways different configurations would have to keep two logs, and a
gateway that saw one of them refuses any head of the other: a split view is caught.

Resources, beside the configuration (paths relative to the directory of the anchor's
download URL, ``globalconf/v1/``; all immutable, so any web server or CDN can cache them):

``conflog/<serial>``
    The *proof bundle* of configuration ``serial``, written with it (:class:`ProofBundle`,
    canonical JSON): the leaf index, the signed tree head of size ``leaf_index + 1``, the
    inclusion proof of the configuration in that head, and consistency proofs to it from
    the :data:`RECENT_PROOFS` sizes before it (what a gateway that refreshes as often as
    the registry publishes needs). Optionally, the newest head that had an RFC 3161
    time-stamp when the bundle was written (member ``timestamped``: its JWS and the DER
    token, whose imprint is the SHA-256 of the JWS bytes, as :mod:`serai.treehead`
    defines), with the consistency proof from its size among ``consistency``. The
    registry never waits for a TSA, so a bundle's own head is never the time-stamped
    one: the token arrives afterwards and travels in later bundles; one token covers
    every leaf up to its head's size.
``conflog/consistency/<old>/<new>``
    The consistency proof between any two sizes (:func:`encode_consistency`), served by
    the registry from its store for gateways whose last head is older than that.

Hashes are base64url without padding; the JSON is canonical (sorted names, no
whitespace). The leaf hash is ``SHA-256(0x00 || envelope)``.

What a gateway checks (:func:`verify_entry`, :class:`SeenHeads`), each refusal being
``globalconf_equivocation`` with a message that says which check failed:

1. the bundle decodes strictly and names the configuration's serial;
2. the head decodes strictly, is of the expected log, its ``x5c`` leaf is one of the
   anchor's signing certificates, and its JWS signature verifies with that
   certificate's key (verified here against the anchor, not with
   :func:`serai.treehead.verify_signed_tree_head`, which needs a chain to trusted roots:
   the anchor holds the registry's certificates themselves, and, as for configurations,
   their validity period is not checked);
3. the configuration's leaf hash is at ``leaf_index`` in the head (inclusion proof);
4. the head is consistent with the largest head the gateway has seen: a larger head
   extends it, a smaller one is a prefix of it, one of the same size has the same root;
5. when the bundle carries a time-stamped head (:func:`verify_timestamped`): that head
   passes rule 2, is no larger than the bundle's head and consistent with it (the
   bundle's proof from its size), all ``globalconf_equivocation`` as above; and its
   token verifies (:func:`verify_head_timestamp`: the imprint is the SHA-256 of the JWS,
   the TSA's certificate is the one an approved TSA of the configuration being installed
   lists, and it chains to that configuration's approved roots at the token's genTime),
   else ``timestamp_invalid``. A bad token is tampering with evidence (a mirror or the
   registry altered it, or a TSA the federation does not approve made it), not a split
   view and not an outage: the head itself already verified. A bundle without a token
   is accepted (the TSA was down, or the federation approves none).

Since every accepted head is consistent with the largest one, and "is a prefix of" is
transitive, all heads a gateway holds are prefixes of its largest: one log, one history.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, NoReturn

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from certs.keys import parse_der_certificate
from registry.errors import ConfigurationError
from registry.snapshot import ConfigurationSnapshot
from serai.errors import ErrorCode
from serai.merkle import ProofError, leaf_hash, verify_consistency, verify_inclusion
from serai.treehead import SignedTreeHead, TreeHead, TreeHeadError, verify_tree_head_timestamp

__all__ = [
    "BUNDLE_DIR",
    "LOG_ID_SUFFIX",
    "MAX_BUNDLE_BYTES",
    "MAX_SEEN_HEADS",
    "RECENT_PROOFS",
    "HeadSigner",
    "ProofBundle",
    "SeenHeads",
    "bundle_path",
    "consistency_path",
    "decode_consistency",
    "encode_consistency",
    "log_id_for",
    "verify_entry",
    "verify_head",
    "verify_head_timestamp",
    "verify_timestamped",
]

#: The configuration log of instance ``UZ`` is ``UZ/registry-conf``.
LOG_ID_SUFFIX: Final = "registry-conf"
#: The log's resources, relative to the directory of the configuration (``current``).
BUNDLE_DIR: Final = "conflog"
#: How many earlier sizes a bundle carries consistency proofs from.
RECENT_PROOFS: Final = 8
#: Largest bundle or consistency proof read (a head with its certificate is a few KiB).
MAX_BUNDLE_BYTES: Final = 256 * 1024
#: Most heads a gateway keeps; the largest is always among them, and the newest
#: time-stamped one is kept besides.
MAX_SEEN_HEADS: Final = 64
_VERSION: Final = 1
_HASH_BYTES: Final = 32
_MAX_PROOF_HASHES: Final = 130
_BUNDLE_MEMBERS: Final = frozenset({"consistency", "inclusion", "leaf_index", "serial", "sth", "v"})
_TIMESTAMPED: Final = "timestamped"
_JWS = jwt.PyJWS()

#: Signs the head of ``(tree_size, root_hash)``: the registry's configuration key.
HeadSigner = Callable[[int, bytes], SignedTreeHead]


def log_id_for(instance: str) -> str:
    """The configuration log id of ``instance``."""
    return f"{instance}/{LOG_ID_SUFFIX}"


def bundle_path(serial: int) -> str:
    """Path of the proof bundle of ``serial``, relative to the configuration's directory."""
    return f"{BUNDLE_DIR}/{serial}"


def consistency_path(old_size: int, new_size: int) -> str:
    """Path of the consistency proof between two sizes, relative as :func:`bundle_path`."""
    return f"{BUNDLE_DIR}/consistency/{old_size}/{new_size}"


# -- formats ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ProofBundle:
    """What proves that configuration ``serial`` is in the registry's log.

    ``sth`` is the compact JWS of the head of size ``leaf_index + 1``; ``consistency``
    maps an earlier size to the proof from it to that head. ``timestamped``, when
    present, is an earlier (or the same) head of the log with its RFC 3161 token
    attached (``timestamp_token`` is never ``None`` there), and ``consistency`` holds
    the proof from its size.
    """

    serial: int
    leaf_index: int
    sth: bytes
    inclusion: tuple[bytes, ...]
    consistency: Mapping[int, tuple[bytes, ...]] = field(default_factory=dict)
    timestamped: SignedTreeHead | None = None

    def __post_init__(self) -> None:
        if self.timestamped is not None and self.timestamped.timestamp_token is None:
            raise ValueError("ProofBundle.timestamped must carry its time-stamp token")

    def encode(self) -> bytes:
        """The canonical JSON bytes written to ``conflog/<serial>``."""
        obj: dict[str, object] = {
            "consistency": {
                str(size): [_b64url(h) for h in proof]
                for size, proof in sorted(self.consistency.items())
            },
            "inclusion": [_b64url(h) for h in self.inclusion],
            "leaf_index": self.leaf_index,
            "serial": self.serial,
            "sth": self.sth.decode("ascii"),
            "v": _VERSION,
        }
        stamped = self.timestamped
        if stamped is not None and stamped.timestamp_token is not None:
            obj[_TIMESTAMPED] = {
                "sth": stamped.jws.decode("ascii"),
                "token": _b64url(stamped.timestamp_token),
            }
        return _canonical(obj)

    def without_timestamp(self) -> ProofBundle:
        """This bundle with no time-stamped head (its proofs unchanged)."""
        return dataclasses.replace(self, timestamped=None)

    @classmethod
    def decode(cls, data: bytes) -> ProofBundle:
        """Parse a bundle strictly; raises ``globalconf_equivocation`` naming the flaw."""
        obj = _object(data, "proof bundle")
        expected = _BUNDLE_MEMBERS | ({_TIMESTAMPED} if _TIMESTAMPED in obj else set())
        _members(obj, set(expected), "bundle")
        _version(obj)
        sth = obj["sth"]
        if not isinstance(sth, str) or not sth.isascii():
            _refuse("proof bundle: sth is not an ASCII string")
        raw = obj["consistency"]
        if not isinstance(raw, dict):
            _refuse("proof bundle: consistency is not an object")
        consistency: dict[int, tuple[bytes, ...]] = {}
        for key, proof in raw.items():
            if not key.isdecimal() or len(key) > _MAX_SIZE_DIGITS or str(int(key)) != key:
                _refuse(f"proof bundle: consistency size {key[:20]!r} is not a decimal size")
            consistency[int(key)] = _hashes(proof, f"consistency[{key}]")
        return cls(
            serial=_size(obj["serial"], "serial"),
            leaf_index=_size(obj["leaf_index"], "leaf_index"),
            sth=sth.encode("ascii"),
            inclusion=_hashes(obj["inclusion"], "inclusion"),
            consistency=consistency,
            timestamped=_decode_timestamped(obj[_TIMESTAMPED]) if _TIMESTAMPED in obj else None,
        )


def _decode_timestamped(value: object) -> SignedTreeHead:
    if not isinstance(value, dict):
        _refuse("proof bundle: timestamped is not an object")
    _members(value, {"sth", "token"}, "proof bundle: timestamped")
    jws, token = value["sth"], value["token"]
    if not isinstance(jws, str) or not jws.isascii():
        _refuse("proof bundle: timestamped.sth is not an ASCII string")
    der = _b64url_decode(token) if isinstance(token, str) else None
    if not der:
        _refuse("proof bundle: timestamped.token is not a base64url time-stamp token")
    try:
        return SignedTreeHead(jws.encode("ascii"), timestamp_token=der)
    except TreeHeadError as exc:
        _refuse(f"proof bundle: time-stamped head: {exc.message}", exc)


def encode_consistency(old_size: int, new_size: int, proof: Sequence[bytes]) -> bytes:
    """The canonical JSON of ``conflog/consistency/<old>/<new>``."""
    return _canonical(
        {
            "new_size": new_size,
            "old_size": old_size,
            "proof": [_b64url(h) for h in proof],
            "v": _VERSION,
        }
    )


def decode_consistency(data: bytes, old_size: int, new_size: int) -> tuple[bytes, ...]:
    """The proof hashes of a consistency resource, which must be for these sizes."""
    obj = _object(data, "consistency proof")
    _members(obj, {"new_size", "old_size", "proof", "v"}, "consistency proof")
    _version(obj)
    sizes = (_size(obj["old_size"], "old_size"), _size(obj["new_size"], "new_size"))
    if sizes != (old_size, new_size):
        _refuse(
            f"consistency proof is from {sizes[0]} to {sizes[1]}, "
            f"not from {old_size} to {new_size} as asked"
        )
    return _hashes(obj["proof"], "proof")


# -- verification -------------------------------------------------------------------------


def verify_head(jws: bytes, *, signing_certificates: Sequence[bytes], log_id: str) -> TreeHead:
    """The head ``jws`` signs, if it is of ``log_id`` and signed by one of the anchor's
    certificates (DER); rule 2 of the module docstring."""
    try:
        sth = SignedTreeHead(jws)
    except TreeHeadError as exc:
        _refuse(f"tree head: {exc.message}", exc)
    leaf_der = sth.chain[0].public_bytes(serialization.Encoding.DER)
    if leaf_der not in signing_certificates:
        _refuse(
            "tree head is signed by a certificate the trust anchor does not hold "
            f"({sth.chain[0].subject.rfc4514_string()[:80]})"
        )
    key = x509.load_der_x509_certificate(leaf_der).public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        _refuse("tree head signing certificate has no EC or Ed25519 key")
    header = jwt.get_unverified_header(jws)
    expected = "EdDSA" if isinstance(key, ed25519.Ed25519PublicKey) else "ES256"
    if header.get("alg") != expected:
        _refuse(f"tree head algorithm {header.get('alg')!s:.20} is not {expected}")
    try:
        _JWS.decode_complete(jws, key=key, algorithms=[expected])
    except jwt.PyJWTError as exc:
        _refuse(f"tree head signature does not verify: {exc}", exc)
    if sth.head.log_id != log_id:
        _refuse(f"tree head is of log {sth.head.log_id[:80]!r}, not {log_id!r}")
    return sth.head


def verify_entry(
    envelope: bytes,
    bundle: ProofBundle,
    *,
    serial: int,
    signing_certificates: Sequence[bytes],
    log_id: str,
) -> TreeHead:
    """The head of ``bundle`` if it is valid and includes ``envelope`` (rules 1 to 3)."""
    if bundle.serial != serial:
        _refuse(f"proof bundle is of serial {bundle.serial}, not {serial}")
    head = verify_head(bundle.sth, signing_certificates=signing_certificates, log_id=log_id)
    if bundle.leaf_index >= head.tree_size:
        _refuse(
            f"proof bundle puts serial {serial} at index {bundle.leaf_index}, outside its "
            f"head of size {head.tree_size}"
        )
    try:
        verify_inclusion(
            leaf_hash(envelope), bundle.leaf_index, head.tree_size, bundle.inclusion, head.root_hash
        )
    except ProofError as exc:
        _refuse(f"configuration serial {serial} is not in its tree head: {exc.message}", exc)
    return head


def verify_head_timestamp(sth: SignedTreeHead, snapshot: ConfigurationSnapshot) -> dt.datetime:
    """The genTime of ``sth``'s token if it verifies against the approved TSAs of
    ``snapshot`` (rule 5); raises ``timestamp_invalid``.

    The token's imprint must be the SHA-256 of the JWS bytes, its signer the first
    certificate an approved TSA lists, chaining to an approved root at genTime (the
    TSA's other listed certificates and the approved intermediates help build the path).
    The registry runs the same check on a token before it ships it, so a bundle it
    writes never carries a token the configuration beside it does not accept.
    """
    if sth.timestamp_token is None:
        raise ConfigurationError(
            "the tree head has no time-stamp token", code=ErrorCode.TIMESTAMP_INVALID
        )
    trust = snapshot.trust_store
    listed = [der for tsa in snapshot.approved_tsas for der in tsa.certificates]
    try:
        return verify_tree_head_timestamp(
            sth,
            tsa_trusted_roots=trust.roots,
            untrusted=[*_certificates(listed), *trust.intermediates],
            approved_tsa_certificates={tsa.certificates[0] for tsa in snapshot.approved_tsas},
        )
    except TreeHeadError as exc:
        raise ConfigurationError(
            f"configuration log head of size {sth.head.tree_size}: {exc.message}",
            code=ErrorCode.TIMESTAMP_INVALID,
        ) from exc


def verify_timestamped(
    bundle: ProofBundle,
    head: TreeHead,
    *,
    snapshot: ConfigurationSnapshot,
    signing_certificates: Sequence[bytes],
    log_id: str,
) -> SignedTreeHead | None:
    """The bundle's time-stamped head, checked by rule 5 against ``head`` (the bundle's
    own, already verified) and the configuration ``snapshot`` being installed; ``None``
    when the bundle carries none."""
    stamped = bundle.timestamped
    if stamped is None:
        return None
    inner = verify_head(stamped.jws, signing_certificates=signing_certificates, log_id=log_id)
    if inner.tree_size > head.tree_size:
        _refuse(
            f"the time-stamped head of size {inner.tree_size} is larger than the bundle's "
            f"head of size {head.tree_size}"
        )
    proof = () if inner.tree_size == head.tree_size else bundle.consistency.get(inner.tree_size)
    if proof is None:
        _refuse(
            f"proof bundle lacks the consistency proof from its time-stamped head of size "
            f"{inner.tree_size}"
        )
    try:
        verify_consistency(inner.tree_size, head.tree_size, inner.root_hash, head.root_hash, proof)
    except ProofError as exc:
        _refuse(
            f"the time-stamped head of size {inner.tree_size} is not consistent with the "
            f"bundle's head of size {head.tree_size}: {exc.message}",
            exc,
        )
    verify_head_timestamp(stamped, snapshot)
    return stamped


class SeenHeads:
    """The heads of the configuration log a gateway has accepted (rules 4 and 5).

    Immutable: :meth:`with_head` returns a new set. The largest head is always kept, and
    so is the newest time-stamped one (evidence an auditor can take to a court: its
    token dates every configuration up to its size); the others are evidence too, the
    oldest dropped beyond :data:`MAX_SEEN_HEADS`. Of two heads of one size, one with a
    token is kept over one without.
    """

    __slots__ = ("_heads",)

    def __init__(self, heads: Sequence[SignedTreeHead] = ()) -> None:
        by_size: dict[int, SignedTreeHead] = {}
        for sth in heads:
            kept = by_size.get(sth.head.tree_size)
            if kept is None or sth.timestamp_token is not None or kept.timestamp_token is None:
                by_size[sth.head.tree_size] = sth
        ordered = [by_size[size] for size in sorted(by_size)]
        newest = ordered[-MAX_SEEN_HEADS:]
        stamped = [sth for sth in ordered if sth.timestamp_token is not None]
        if stamped and stamped[-1].head.tree_size < newest[0].head.tree_size:
            newest.insert(0, stamped[-1])
        self._heads = tuple(newest)

    @property
    def heads(self) -> tuple[SignedTreeHead, ...]:
        """The heads held, smallest first."""
        return self._heads

    @property
    def timestamped(self) -> SignedTreeHead | None:
        """The largest head held with a time-stamp token, or ``None``."""
        return next((h for h in reversed(self._heads) if h.timestamp_token is not None), None)

    @property
    def largest(self) -> TreeHead | None:
        """The largest head held, ``None`` before the first (trust on first use)."""
        return self._heads[-1].head if self._heads else None

    def proof_needed(self, head: TreeHead) -> tuple[int, int] | None:
        """The sizes ``(old, new)`` of the consistency proof :meth:`check` needs for
        ``head``, or ``None`` when it needs none."""
        largest = self.largest
        if largest is None or largest.tree_size == head.tree_size:
            return None
        return (
            (largest.tree_size, head.tree_size)
            if head.tree_size > largest.tree_size
            else (head.tree_size, largest.tree_size)
        )

    def check(self, head: TreeHead, proof: Sequence[bytes] = ()) -> None:
        """Refuse ``head`` unless it is consistent with the largest head held (``proof``
        is the consistency proof between the sizes :meth:`proof_needed` names)."""
        largest = self.largest
        if largest is None:
            return
        if head.tree_size >= largest.tree_size:
            old, new = largest, head
        else:
            old, new = head, largest
        try:
            verify_consistency(old.tree_size, new.tree_size, old.root_hash, new.root_hash, proof)
        except ProofError as exc:
            _refuse(
                f"tree head of size {head.tree_size} is not consistent with the head of size "
                f"{largest.tree_size} seen before (split view?): {exc.message}",
                exc,
            )

    def with_head(self, sth: SignedTreeHead) -> SeenHeads:
        """These heads and ``sth`` (already checked), keeping the newest and the largest."""
        return SeenHeads((*self._heads, sth))

    def encode(self) -> bytes:
        """One compact JWS per line, smallest head first; a head with a time-stamp token
        has it after one space (base64url DER)."""
        return b"".join(
            h.jws
            + (b"" if h.timestamp_token is None else b" " + _b64url(h.timestamp_token).encode())
            + b"\n"
            for h in self._heads
        )

    @classmethod
    def decode(cls, data: bytes, *, log_id: str) -> SeenHeads:
        """Heads written by :meth:`encode`; refuses one that does not parse or is of
        another log. Signatures and tokens are not checked again: they were checked when
        the head was accepted, and the anchor may since have dropped the key that made
        them, or the federation the TSA."""
        heads = []
        for number, line in enumerate(data.splitlines(), start=1):
            jws, _, token_text = line.partition(b" ")
            token = _b64url_decode(token_text.decode("ascii", "replace")) if token_text else None
            if token_text and not token:
                _refuse(f"seen head {number}: its time-stamp token is not base64url")
            try:
                sth = SignedTreeHead(jws, timestamp_token=token)
            except TreeHeadError as exc:
                _refuse(f"seen head {number}: {exc.message}", exc)
            if sth.head.log_id != log_id:
                _refuse(f"seen head {number} is of log {sth.head.log_id[:80]!r}, not {log_id!r}")
            heads.append(sth)
        return cls(heads)


# -- helpers ------------------------------------------------------------------------------


#: Digits of the largest size (2**63 - 1); a longer decimal is no size, and int() of one
#: beyond 4,300 digits raises ValueError.
_MAX_SIZE_DIGITS: Final = 19


def _refuse(message: str, cause: BaseException | None = None) -> NoReturn:
    raise ConfigurationError(message, code=ErrorCode.GLOBALCONF_EQUIVOCATION) from cause


def _canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _object(data: bytes, what: str) -> dict[str, object]:
    if len(data) > MAX_BUNDLE_BYTES:
        _refuse(f"{what} exceeds {MAX_BUNDLE_BYTES} bytes")
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        _refuse(f"{what} is not JSON: {exc}", exc)
    if not isinstance(value, dict):
        _refuse(f"{what} is not a JSON object")
    if _canonical(value) != data:
        _refuse(f"{what} is not canonical JSON")
    return value


def _members(obj: Mapping[str, object], expected: set[str], what: str) -> None:
    if obj.keys() != expected:
        _refuse(f"{what} has members {sorted(obj)!r:.120}, expected {sorted(expected)!r}")


def _version(obj: Mapping[str, object]) -> None:
    if obj["v"] != _VERSION or type(obj["v"]) is not int:
        _refuse(f"format version {obj['v']!r:.20} is not {_VERSION}")


def _size(value: object, name: str) -> int:
    if type(value) is not int or not 0 <= value < 2**63:
        _refuse(f"{name} is not an integer from 0 to 2**63 - 1")
    return value


def _hashes(value: object, name: str) -> tuple[bytes, ...]:
    if not isinstance(value, list) or len(value) > _MAX_PROOF_HASHES:
        _refuse(f"{name} is not a list of at most {_MAX_PROOF_HASHES} hashes")
    hashes = []
    for position, text in enumerate(value):
        digest = _b64url_decode(text) if isinstance(text, str) else None
        if digest is None or len(digest) != _HASH_BYTES:
            _refuse(f"{name}[{position}] is not a base64url SHA-256 hash")
        hashes.append(digest)
    return tuple(hashes)


def _certificates(ders: Sequence[bytes]) -> list[x509.Certificate]:
    """The certificates among ``ders`` that parse (hints for path building only)."""
    parsed = []
    for der in ders:
        try:
            parsed.append(parse_der_certificate(der))
        except ValueError:
            continue
    return parsed


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes | None:
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    return data if _b64url(data) == text else None
