"""Signed tree heads of an append-only Merkle log, and their RFC 3161 time-stamps.

A tree head says "the log ``log_id`` held ``tree_size`` records, whose RFC 9162 root hash
is ``root_hash``, at ``time``". The gateways' message logs (DESIGN §6) and the registry's
configuration log both publish them in this one format, readable without Serai:

* The **payload** is the canonical JSON of a :class:`TreeHead`: one object with exactly
  the members ``log_id`` (string), ``root_hash`` (32 bytes, base64url without padding),
  ``time`` (RFC 3339 UTC with milliseconds and ``Z``, e.g. ``2026-03-01T12:00:00.123Z``),
  ``tree_size`` (integer, 0 to 2**63 - 1) and ``v`` (the format version, 1); names
  sorted, no whitespace, non-ASCII characters escaped as ``\\uXXXX``.
* The **signature** is a compact JWS (RFC 7515 §7.1) over those payload bytes whose
  protected header is exactly ``{"alg", "typ", "x5c"}``: ``alg`` is ``ES256`` (EC P-256)
  or ``EdDSA`` (Ed25519) as the key dictates, ``typ`` is :data:`TREE_HEAD_JWS_TYPE`,
  ``x5c`` the signing certificate chain (standard base64 DER, leaf first, root excluded).
* The **time-stamp** (optional, attached later) is an RFC 3161 token whose message
  imprint is the SHA-256 of the compact JWS's ASCII bytes, so
  ``openssl ts -verify -data sth.jws -in token.tsr -token_in -CAfile root.pem`` checks it.

Invariants.

1. **Sign bytes, never re-serialised structures.** :class:`SignedTreeHead` holds the JWS
   bytes exactly as signed or received; its decoded :attr:`SignedTreeHead.head` is derived
   from them and never re-encoded for a check. The time-stamp covers those same bytes.
2. **One head, one encoding.** A payload is accepted only if it is byte for byte the
   canonical encoding of the head it decodes to, and every JWS part only if it is
   canonical base64url; so no byte of a signed tree head can change and still verify
   (Hypothesis checks this in ``tests/test_treehead.py``).
3. **Strict decoding.** :func:`parse_signed_tree_head` refuses, each with its own
   message (code ``signature_invalid``): anything but three ASCII base64url parts
   (whitespace and trailing data included); a header or payload that is not a JSON
   object, or holds a duplicate name, a missing or unknown member, a value of the wrong
   type, NaN or Infinity, or trailing data; a root hash that is not canonical base64url
   of 32 bytes; a time not in the form above; a version other than 1; an algorithm other
   than ES256 and EdDSA; an ``x5c`` that is not 1 to :data:`MAX_CHAIN_CERTIFICATES`
   canonical base64 DER certificates.

What :func:`verify_signed_tree_head` guarantees when it returns a head: the rules above;
``alg`` is the one the leaf's key makes and the signature verifies with that key over
the exact signing input (``signature_invalid``); the leaf chains through the sent
intermediates to one of ``trusted_roots``, every certificate valid at ``at``, with the
key usage and extended key usage of ``purpose`` (by default ``logsign``; codes of
:func:`certs.validation.validate_path`); for ``logsign`` the leaf's subject common name
is the head's ``log_id`` (a gateway signs only its own log; ``certificate_invalid``); and
``log_id`` is ``expected_log_id`` when one is given (``signature_invalid``).

What :func:`verify_tree_head_timestamp` guarantees when it returns a time: the token
verifies by every rule of :func:`certs.timestamp.verify_token` with a SHA-256 imprint of
the JWS bytes and a TSA certificate chaining to ``tsa_trusted_roots`` at the token's
genTime, and, when ``approved_tsa_certificates`` is given, the TSA's certificate is one
of them (``timestamp_invalid``). The returned genTime is the TSA's word that the signed
head existed then.

Assumptions. Revocation of the log-signing and TSA certificates is not checked here (an
auditor replays the OCSP responses kept with the log); the caller chooses ``at`` (the
time-stamp's genTime for old heads, the clock for fresh ones); that the head's
``root_hash`` matches the records is the Merkle verifier's business; the head's own
``time`` is the signer's claim, only the token's genTime is independent. Both checks are
separate: a caller that needs a time-stamped head calls both.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import hashlib
import json
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Final, NoReturn

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
)
from cryptography.x509.oid import NameOID

from certs.errors import PKIError, TimestampError
from certs.keys import PrivateKey, parse_der_certificate
from certs.profiles import Profile
from certs.timestamp import verify_token
from certs.validation import TrustStore, ValidatedPath, validate_path
from serai import jws
from serai.errors import ErrorCode, Origin, SeraiError

__all__ = [
    "MAX_CHAIN_CERTIFICATES",
    "MAX_JWS_BYTES",
    "TREE_HEAD_JWS_TYPE",
    "TREE_HEAD_VERSION",
    "SignedTreeHead",
    "TreeHead",
    "TreeHeadError",
    "TreeHeadSigner",
    "parse_signed_tree_head",
    "sign_tree_head",
    "verify_signed_tree_head",
    "verify_tree_head_timestamp",
]

#: ``typ`` of a signed tree head's protected header.
TREE_HEAD_JWS_TYPE: Final = "serai-sth+jws"
#: The payload format version (member ``v``).
TREE_HEAD_VERSION: Final = 1
#: Most certificates ``x5c`` may carry (leaf and intermediates; the root is not sent).
MAX_CHAIN_CERTIFICATES: Final = 5
#: Longest compact JWS read (the chain dominates: a few KiB per certificate).
MAX_JWS_BYTES: Final = 64 * 1024
#: Longest ``log_id``, in characters.
MAX_LOG_ID_CHARS: Final = 255

_ROOT_HASH_BYTES: Final = 32
_MAX_TREE_SIZE: Final = 2**63 - 1
_P256_COORDINATE_BYTES: Final = 32
_HEADER_MEMBERS: Final = frozenset({"alg", "typ", "x5c"})
_PAYLOAD_MEMBERS: Final = frozenset({"log_id", "root_hash", "time", "tree_size", "v"})
_B64URL: Final = re.compile(r"[A-Za-z0-9_-]*")
_TIME: Final = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
_LOG_PURPOSES: Final = frozenset({Profile.LOG_SIGNING, Profile.CONFIGURATION_SIGNING})


class TreeHeadError(SeraiError):
    """A tree head cannot be signed, decoded or verified; ``code`` says which rule failed
    (``signature_invalid`` by default, certificate and time-stamp codes where those fail)."""

    default_code = ErrorCode.SIGNATURE_INVALID
    default_origin = Origin.GATEWAY


@dataclass(frozen=True, slots=True, kw_only=True)
class TreeHead:
    """What a log commits to: its size and root hash at a time.

    ``time`` is timezone-aware, UTC, with millisecond precision (microseconds a multiple
    of 1000); anything else is refused when built, so every head has one encoding.
    """

    log_id: str
    tree_size: int
    root_hash: bytes
    time: dt.datetime

    def __post_init__(self) -> None:
        if type(self.log_id) is not str or not 1 <= len(self.log_id) <= MAX_LOG_ID_CHARS:
            raise TreeHeadError(f"log_id must be a string of 1 to {MAX_LOG_ID_CHARS} characters")
        if not self.log_id.isprintable():
            raise TreeHeadError(
                "log_id must be printable (no control, format or separator but space)"
            )
        if type(self.tree_size) is not int or not 0 <= self.tree_size <= _MAX_TREE_SIZE:
            raise TreeHeadError(f"tree_size must be an integer from 0 to {_MAX_TREE_SIZE}")
        if type(self.root_hash) is not bytes or len(self.root_hash) != _ROOT_HASH_BYTES:
            raise TreeHeadError(f"root_hash must be {_ROOT_HASH_BYTES} bytes")
        when: object = self.time  # typed callers aside, check what was actually passed
        if not isinstance(when, dt.datetime) or when.utcoffset() != dt.timedelta(0):
            raise TreeHeadError("time must be a timezone-aware UTC datetime")
        if self.time.microsecond % 1000:
            raise TreeHeadError("time must have millisecond precision")
        object.__setattr__(self, "time", self.time.astimezone(dt.UTC))

    def encode(self) -> bytes:
        """The canonical payload (see the module docstring)."""
        return _canonical_json(
            {
                "log_id": self.log_id,
                "root_hash": jws.b64url(self.root_hash),
                "time": _format_time(self.time),
                "tree_size": self.tree_size,
                "v": TREE_HEAD_VERSION,
            }
        )


@dataclass(frozen=True, slots=True)
class SignedTreeHead:
    """A signed tree head as stored and exported: the compact JWS bytes, and the DER
    RFC 3161 token over them once one was obtained.

    Building one decodes ``jws`` strictly (:func:`parse_signed_tree_head`) but verifies
    nothing: :attr:`head` of a received one is only a claim until
    :func:`verify_signed_tree_head` returned it.
    """

    jws: bytes
    timestamp_token: bytes | None = None
    head: TreeHead = field(init=False, repr=False, compare=False)
    chain: tuple[x509.Certificate, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        head, chain = parse_signed_tree_head(self.jws)
        object.__setattr__(self, "head", head)
        object.__setattr__(self, "chain", chain)

    def with_timestamp(self, token_der: bytes) -> SignedTreeHead:
        """The same head with ``token_der`` attached (not verified here)."""
        return dataclasses.replace(self, timestamp_token=bytes(token_der))

    @property
    def sha256(self) -> bytes:
        """SHA-256 of the JWS bytes: the message imprint of its time-stamp."""
        return hashlib.sha256(self.jws).digest()


class TreeHeadSigner:
    """Signs tree heads with one log-signing key and its certificate chain (leaf first,
    root excluded). Immutable; does no I/O."""

    __slots__ = ("_alg", "_key", "_protected")

    def __init__(self, *, key: PrivateKey, certificate_chain: Sequence[x509.Certificate]) -> None:
        if not 1 <= len(certificate_chain) <= MAX_CHAIN_CERTIFICATES:
            raise TreeHeadError(
                f"a log-signing chain holds 1 to {MAX_CHAIN_CERTIFICATES} certificates",
                code=ErrorCode.INVALID_CONFIG,
            )
        alg = jws.algorithm_for(key.public_key())
        if alg is None:
            raise TreeHeadError(
                f"a {type(key).__name__} cannot sign tree heads (EC P-256 or Ed25519)",
                code=ErrorCode.INVALID_CONFIG,
            )
        if _spki(certificate_chain[0].public_key()) != _spki(key.public_key()):
            raise TreeHeadError(
                "the log-signing key does not match the log-signing certificate",
                code=ErrorCode.INVALID_CONFIG,
            )
        x5c = [
            base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode("ascii")
            for c in certificate_chain
        ]
        header = {"alg": alg, "typ": TREE_HEAD_JWS_TYPE, "x5c": x5c}
        self._key = key
        self._alg = alg
        self._protected = jws.b64url(_canonical_json(header))

    @property
    def algorithm(self) -> str:
        """The JWS ``alg`` this signer uses."""
        return self._alg

    def sign(self, head: TreeHead) -> SignedTreeHead:
        """Sign ``head``'s canonical payload."""
        signing_input = f"{self._protected}.{jws.b64url(head.encode())}".encode("ascii")
        key = self._key
        if isinstance(key, ec.EllipticCurvePrivateKey):
            r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
            signature = r.to_bytes(_P256_COORDINATE_BYTES, "big") + s.to_bytes(
                _P256_COORDINATE_BYTES, "big"
            )
        else:
            assert isinstance(key, ed25519.Ed25519PrivateKey)  # checked in __init__
            signature = key.sign(signing_input)
        return SignedTreeHead(signing_input + b"." + jws.b64url(signature).encode("ascii"))


def sign_tree_head(
    head: TreeHead, key: PrivateKey, chain: Sequence[x509.Certificate]
) -> SignedTreeHead:
    """Sign ``head`` with ``key``, whose certificate is ``chain[0]`` (a one-off signer)."""
    return TreeHeadSigner(key=key, certificate_chain=chain).sign(head)


def parse_signed_tree_head(jws: bytes) -> tuple[TreeHead, tuple[x509.Certificate, ...]]:
    """Decode a compact JWS strictly (rules 2 and 3 of the module docstring) without
    verifying anything: the claimed head and the ``x5c`` chain, leaf first."""
    parts = _split(jws)
    header = _protected_header(parts[0])
    chain = _chain(header["x5c"])
    payload = _b64url_decode(parts[1], "payload")
    _b64url_decode(parts[2], "signature")
    return _decode_payload(payload), chain


def verify_signed_tree_head(
    sth: SignedTreeHead | bytes,
    *,
    trusted_roots: TrustStore | Sequence[x509.Certificate],
    at: dt.datetime,
    expected_log_id: str | None = None,
    purpose: Profile = Profile.LOG_SIGNING,
    validate: Callable[..., ValidatedPath] = validate_path,
) -> TreeHead:
    """Verify a signed tree head and return the head it signs (see the module docstring).

    ``at`` (timezone-aware) is when the certificates must be valid. ``purpose`` is the
    certificate profile the signer needs: ``logsign`` (gateways) or ``confsign`` (the
    registry's configuration log). ``validate`` is called as
    :func:`~certs.validation.validate_path` is, and must answer as it does (a caller's
    cache of it). Raises :class:`TreeHeadError`.
    """
    if at.utcoffset() is None:
        raise ValueError("verify_signed_tree_head: 'at' must be timezone-aware")
    if purpose not in _LOG_PURPOSES:
        raise ValueError(f"verify_signed_tree_head: {purpose.value!r} does not sign logs")
    if isinstance(sth, SignedTreeHead):  # decoded from its bytes when it was built
        token, head, chain = sth.jws, sth.head, sth.chain
    else:
        token = sth
        head, chain = parse_signed_tree_head(token)
    leaf = chain[0]
    protected, payload_part, signature_part = token.split(b".")
    alg = _protected_header(protected)["alg"]
    expected_alg = jws.algorithm_for(_public_key(leaf))
    if alg != expected_alg:
        _fail(
            f"JWS algorithm {alg} does not match the signing certificate's key "
            f"(which signs with {expected_alg or 'no accepted algorithm'})"
        )
    signature = _b64url_decode(signature_part, "signature")
    if not jws.signature_verifies(_public_key(leaf), signature, protected + b"." + payload_part):
        _fail("JWS signature does not verify with the signing certificate's key")
    trust = (
        trusted_roots if isinstance(trusted_roots, TrustStore) else TrustStore(roots=trusted_roots)
    )
    try:
        validate(
            leaf,
            intermediates=chain[1:],
            trust=trust,
            at=at,
            purpose=purpose,
            revocation=None,
        )
    except PKIError as exc:
        raise TreeHeadError(
            f"log-signing certificate refused: {exc.message}", code=exc.code
        ) from exc
    if purpose is Profile.LOG_SIGNING:
        names = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if [n.value for n in names] != [head.log_id]:
            _fail(
                f"the log-signing certificate speaks for {_show([n.value for n in names])}, "
                f"not for log {_show(head.log_id)}",
                ErrorCode.CERTIFICATE_INVALID,
            )
    if expected_log_id is not None and head.log_id != expected_log_id:
        _fail(f"tree head is of log {_show(head.log_id)}, not {_show(expected_log_id)}")
    return head


def verify_tree_head_timestamp(
    sth: SignedTreeHead | bytes,
    token_der: bytes | None = None,
    *,
    tsa_trusted_roots: Sequence[x509.Certificate],
    untrusted: Sequence[x509.Certificate] = (),
    approved_tsa_certificates: Collection[bytes] | None = None,
) -> dt.datetime:
    """Verify the RFC 3161 token over a signed tree head and return its genTime (UTC).

    ``token_der`` defaults to the token attached to ``sth``. ``untrusted`` helps build the
    TSA's path; ``approved_tsa_certificates`` (DER), when given, lists the TSA
    certificates accepted. Raises :class:`TreeHeadError` (``timestamp_invalid``).
    """
    if isinstance(sth, SignedTreeHead):
        jws = sth.jws
        token = token_der if token_der is not None else sth.timestamp_token
    else:
        jws, token = sth, token_der
    if token is None:
        _fail("the tree head has no time-stamp token", ErrorCode.TIMESTAMP_INVALID)
    try:
        verified = verify_token(
            token,
            digest=hashlib.sha256(jws).digest(),
            hash_name="sha256",
            trusted_roots=tsa_trusted_roots,
            untrusted=untrusted,
        )
    except TimestampError as exc:
        raise TreeHeadError(f"tree head time-stamp: {exc.message}", code=exc.code) from exc
    if approved_tsa_certificates is not None:
        der = verified.tsa_certificate.public_bytes(serialization.Encoding.DER)
        if der not in approved_tsa_certificates:
            _fail(
                "tree head time-stamp is signed by a TSA that is not approved "
                f"({verified.tsa_certificate.subject.rfc4514_string()})",
                ErrorCode.TIMESTAMP_INVALID,
            )
    return verified.gen_time.astimezone(dt.UTC)


# -- decoding ---------------------------------------------------------------------------


def _split(jws: object) -> list[bytes]:
    if type(jws) is not bytes:
        _fail("a signed tree head is bytes")
    if len(jws) > MAX_JWS_BYTES:
        _fail(f"signed tree head exceeds {MAX_JWS_BYTES} bytes")
    if not jws.isascii():
        _fail("signed tree head is not ASCII")
    if jws != jws.strip():
        _fail("signed tree head has leading or trailing whitespace")
    parts = jws.split(b".")
    if len(parts) != 3:
        _fail(f"signed tree head is not a compact JWS ({len(parts)} parts, not 3)")
    return parts


def _protected_header(part: bytes) -> dict[str, object]:
    header = _json_object(_b64url_decode(part, "protected header"), "protected header")
    if header.keys() != _HEADER_MEMBERS:
        _fail(
            "JWS protected header must have exactly alg, typ and x5c; "
            f"it has {_show(sorted(header))}"
        )
    alg, typ = header["alg"], header["typ"]
    if alg not in ("ES256", "EdDSA"):
        _fail(f"JWS algorithm {_show(alg)} is not allowed (ES256 or EdDSA)")
    if typ != TREE_HEAD_JWS_TYPE:
        _fail(f"JWS typ is {_show(typ)}, not {TREE_HEAD_JWS_TYPE!r}")
    return header


def _chain(x5c: object) -> tuple[x509.Certificate, ...]:
    if not isinstance(x5c, list) or not 1 <= len(x5c) <= MAX_CHAIN_CERTIFICATES:
        _fail(f"JWS x5c is not a list of 1 to {MAX_CHAIN_CERTIFICATES} certificates")
    chain = []
    for index, text in enumerate(x5c):
        der = jws.b64_decode(text) if isinstance(text, str) else None
        if der is None:
            _fail(f"JWS x5c[{index}] is not canonical base64")
        try:
            chain.append(parse_der_certificate(der))
        except ValueError as exc:
            _fail(f"JWS x5c[{index}] is not a certificate: {exc}", ErrorCode.CERTIFICATE_INVALID)
    return tuple(chain)


def _decode_payload(payload: bytes) -> TreeHead:
    obj = _json_object(payload, "payload")
    missing = _PAYLOAD_MEMBERS - obj.keys()
    if missing:
        _fail(f"tree head lacks {', '.join(sorted(missing))}")
    unknown = obj.keys() - _PAYLOAD_MEMBERS
    if unknown:
        _fail(f"tree head has unknown members {_show(sorted(unknown))}")
    version = obj["v"]
    if type(version) is not int:
        _fail("tree head v is not an integer")
    if version != TREE_HEAD_VERSION:
        _fail(f"tree head version {version} is not supported (only {TREE_HEAD_VERSION})")
    log_id, size, root, time = obj["log_id"], obj["tree_size"], obj["root_hash"], obj["time"]
    if type(log_id) is not str:
        _fail("tree head log_id is not a string")
    if type(size) is not int:
        _fail("tree head tree_size is not an integer")
    if type(root) is not str:
        _fail("tree head root_hash is not a string")
    if type(time) is not str:
        _fail("tree head time is not a string")
    root_hash = _b64url_decode(root.encode("ascii", "replace"), "root_hash")
    if len(root_hash) != _ROOT_HASH_BYTES:
        _fail(f"tree head root_hash is {len(root_hash)} bytes, not {_ROOT_HASH_BYTES}")
    head = TreeHead(log_id=log_id, tree_size=size, root_hash=root_hash, time=_parse_time(time))
    if head.encode() != payload:
        _fail("tree head payload is not in canonical form (sorted names, no whitespace)")
    return head


def _json_object(raw: bytes, what: str) -> dict[str, object]:
    try:
        value = json.loads(
            raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant
        )
    except UnicodeDecodeError as exc:
        _fail(f"JWS {what} is not UTF-8: {exc}")
    except json.JSONDecodeError as exc:
        detail = "trailing data" if exc.msg == "Extra data" else exc.msg
        _fail(f"JWS {what} is not JSON: {detail} at offset {exc.pos}")
    except (ValueError, RecursionError) as exc:
        _fail(f"JWS {what} is not acceptable JSON: {exc}")
    if not isinstance(value, dict):
        _fail(f"JWS {what} is not a JSON object")
    return value


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result = dict(pairs)
    if len(result) != len(pairs):
        names = [name for name, _ in pairs]
        dup = next(name for name in names if names.count(name) > 1)
        raise ValueError(f"duplicate member {_show(dup)}")
    return result


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def _parse_time(text: str) -> dt.datetime:
    if not _TIME.fullmatch(text):
        _fail(
            f"tree head time {_show(text)} is not RFC 3339 UTC with milliseconds "
            "(YYYY-MM-DDThh:mm:ss.mmmZ)"
        )
    try:
        parsed = dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError as exc:
        _fail(f"tree head time {_show(text)} is not a valid date and time: {exc}")
    return parsed.replace(tzinfo=dt.UTC)


def _b64url_decode(part: bytes, what: str) -> bytes:
    text = part.decode("ascii", "replace")
    if not _B64URL.fullmatch(text):
        _fail(f"JWS {what} is not base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as exc:
        _fail(f"JWS {what} is not base64url: {exc}")
    if jws.b64url(data) != text:
        _fail(f"JWS {what} is not canonical base64url")
    return data


# -- keys and signatures --------------------------------------------------------------------


def _public_key(cert: x509.Certificate) -> object:
    try:
        return cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        _fail(f"signing certificate has an unusable key: {exc}", ErrorCode.CERTIFICATE_INVALID)


def _spki(key: object) -> bytes:
    return jws.spki(key) or b""


# -- helpers --------------------------------------------------------------------------------


def _canonical_json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode(
        "ascii"
    )


def _format_time(when: dt.datetime) -> str:
    t = when.astimezone(dt.UTC)
    return (
        f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
        f".{t.microsecond // 1000:03d}Z"
    )


def _fail(message: str, code: ErrorCode = ErrorCode.SIGNATURE_INVALID) -> NoReturn:
    raise TreeHeadError(message, code=code)


def _show(value: object) -> str:
    text = ascii(value)
    return text if len(text) <= 64 else f"{text[:64]}..."
