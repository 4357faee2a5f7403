"""The message-log seam: what the exchange commits, and when (DESIGN §6, Durability).

The exchange code awaits an :class:`ExchangeLog` at exactly the points DESIGN §6 names,
and nothing else about the log; the durable Merkle log plugs in behind the same
:class:`typing.Protocol` without touching the exchange code.

Commit points:

* **Provider gateway** — :meth:`ExchangeLog.commit_request` with a ``REQUEST_RECEIVED``
  record *before* the provider IS sees the request, and
  :meth:`ExchangeLog.commit_response` with a ``RESPONSE_SENT`` record *before* the
  response leaves. Its two indices are the receipt it returns to the consumer gateway.
* **Consumer gateway** — :meth:`ExchangeLog.commit_request` with a ``REQUEST_SENT``
  record (it may run while the request travels), and
  :meth:`ExchangeLog.commit_response` with a ``RESPONSE_RECEIVED`` record carrying the
  peer's receipt; the response is returned to the IS only once *both* have completed.
* **Administration** — :meth:`ExchangeLog.commit_admin_change` with an ``ADMIN_CHANGE``
  record, for every access-rights change (DESIGN §5).

Contract of every implementation:

1. A commit returns only once the record is durable at the implementation's promise
   (the in-memory log: appended to the list), and returns the record's leaf index:
   indices run from 0 without gaps in commit order.
2. A commit that cannot be made raises a :class:`LogUnavailableError` (code
   ``log_unavailable``, origin ``gateway``) and leaves no partial record; the exchange
   then fails with that code.
3. The bytes logged for a record are exactly :func:`canonical_bytes` of it, so the
   Merkle leaf hash is ``SHA-256(0x00 || canonical_bytes(record))``.

Canonical encoding (version 1), big-endian, every field always present, in this order::

    magic      16 bytes  b"serai-log-record"
    version     1 byte   0x01
    kind        1 byte   RecordKind code (1..5, see RecordKind)
    message_id  str
    header_jws  bytes
    chain       u32 count, then count x bytes (certificate DER, leaf first)
    ocsp        bytes    (empty: none)
    body        u8 0 (metadata mode: digest only) | u8 1 followed by bytes
    body_sha256 32 bytes
    peer        u8 0 | u8 1 followed by str (the peer gateway id)
    outcome     str
    receipt     u8 0 | u8 1 followed by u64 request index, u64 response index

    bytes = u32 length, then the bytes;  str = bytes of its UTF-8 encoding

There is exactly one encoding of each record, and :func:`decode_canonical` accepts
exactly the encodings :func:`canonical_bytes` produces (anything else, including
trailing bytes, is refused with :class:`LogRecordFormatError`), so
``decode_canonical(canonical_bytes(r)) == r`` and
``canonical_bytes(decode_canonical(b)) == b``.
"""

from __future__ import annotations

import enum
import hashlib
import re
import struct
from dataclasses import dataclass
from typing import Final, NewType, Protocol

from gateway.errors import GatewayError
from serai.errors import ErrorCode, InvalidIdentifierError, Origin
from serai.identifiers import GatewayId

__all__ = [
    "CANONICAL_MAGIC",
    "CANONICAL_VERSION",
    "ExchangeLog",
    "InMemoryExchangeLog",
    "LogIndex",
    "LogRecord",
    "LogRecordFormatError",
    "LogUnavailableError",
    "PeerReceipt",
    "RecordKind",
    "canonical_bytes",
    "decode_canonical",
]

#: A record's leaf index in the log's Merkle tree (from 0).
LogIndex = NewType("LogIndex", int)

#: First bytes of every canonical record (domain separation from other hashed bytes).
CANONICAL_MAGIC: Final = b"serai-log-record"
#: Version of the canonical encoding this module writes and reads.
CANONICAL_VERSION: Final = 1

_SHA256_BYTES: Final = 32
_MAX_FIELD_BYTES: Final = 0xFFFF_FFFF
_MAX_INDEX: Final = 0xFFFF_FFFF_FFFF_FFFF
_MAX_MESSAGE_ID_CHARS: Final = 255
_OUTCOME: Final = re.compile(r"[a-z0-9_]{1,64}")
_U8: Final = struct.Struct(">B")
_U32: Final = struct.Struct(">I")
_U64: Final = struct.Struct(">Q")


class LogUnavailableError(GatewayError):
    """The log cannot commit a record; the exchange fails (code ``log_unavailable``)."""

    default_code = ErrorCode.LOG_UNAVAILABLE
    default_origin = Origin.GATEWAY


class LogRecordFormatError(GatewayError):
    """Bytes are not a canonical log record, or a record's fields are inconsistent."""

    default_code = ErrorCode.INTERNAL
    default_origin = Origin.GATEWAY


class RecordKind(enum.Enum):
    """What a record is; the value is its stable one-byte code in the encoding."""

    REQUEST_SENT = 1  # consumer gateway: the request it sent
    REQUEST_RECEIVED = 2  # provider gateway: the request it accepted
    RESPONSE_SENT = 3  # provider gateway: the response it returns
    RESPONSE_RECEIVED = 4  # consumer gateway: the response it verified
    ADMIN_CHANGE = 5  # an administrative change (access rights)

    @property
    def is_request(self) -> bool:
        return self in (RecordKind.REQUEST_SENT, RecordKind.REQUEST_RECEIVED)

    @property
    def is_response(self) -> bool:
        return self in (RecordKind.RESPONSE_SENT, RecordKind.RESPONSE_RECEIVED)


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerReceipt:
    """The other gateway's leaf indices of its request and response records."""

    request_index: int
    response_index: int

    def __post_init__(self) -> None:
        for name in ("request_index", "response_index"):
            value = getattr(self, name)
            if type(value) is not int or not 0 <= value <= _MAX_INDEX:
                raise LogRecordFormatError(f"receipt {name} must be an int in 0..2**64-1")


@dataclass(frozen=True, slots=True, kw_only=True)
class LogRecord:
    """One entry of the message log (see the module docstring for when each is made).

    ``header_jws`` is the signed header exactly as signed and sent (compact JWS, ASCII
    bytes); ``certificate_chain`` the signing certificate chain (DER, leaf first) and
    ``ocsp_response`` the OCSP response (DER) it was verified or sent with. ``body`` is
    the message body, or ``None`` in metadata mode; ``body_sha256`` is always the body's
    digest (the signed header carries it too). ``outcome`` is ``ok`` or the snake_case
    error code the exchange ended with. ``peer_receipt`` is only on a consumer's
    ``RESPONSE_RECEIVED`` record.

    An ``ADMIN_CHANGE`` record has no header, chain, OCSP response, peer or receipt; its
    ``body`` is the change's canonical description (see :mod:`gateway.aclstore`) and its
    ``message_id`` names the change.
    """

    kind: RecordKind
    message_id: str
    header_jws: bytes = b""
    certificate_chain: tuple[bytes, ...] = ()
    ocsp_response: bytes = b""
    body: bytes | None = None
    body_sha256: bytes
    peer_gateway: GatewayId | None = None
    outcome: str = "ok"
    peer_receipt: PeerReceipt | None = None

    def __post_init__(self) -> None:
        _check_record(self)

    @classmethod
    def admin_change(cls, *, change_id: str, description: bytes) -> LogRecord:
        """An ``ADMIN_CHANGE`` record whose body is ``description``."""
        return cls(
            kind=RecordKind.ADMIN_CHANGE,
            message_id=change_id,
            body=description,
            body_sha256=hashlib.sha256(description).digest(),
        )


class ExchangeLog(Protocol):
    """Where the exchange commits its records (see the module docstring)."""

    async def commit_request(self, record: LogRecord) -> LogIndex:
        """Commit a ``REQUEST_SENT`` or ``REQUEST_RECEIVED`` record."""
        ...

    async def commit_response(self, record: LogRecord) -> LogIndex:
        """Commit a ``RESPONSE_SENT`` or ``RESPONSE_RECEIVED`` record."""
        ...

    async def commit_admin_change(self, record: LogRecord) -> LogIndex:
        """Commit an ``ADMIN_CHANGE`` record."""
        ...


class InMemoryExchangeLog:
    """An :class:`ExchangeLog` in a list, for tests and demos: durable until the process
    ends. ``set_unavailable(reason)`` makes every later commit fail with
    ``log_unavailable`` (and append nothing) until ``set_unavailable(None)``.
    """

    def __init__(self) -> None:
        self._records: list[LogRecord] = []
        self._leaves: list[bytes] = []
        self._unavailable: str | None = None

    def set_unavailable(self, reason: str | None) -> None:
        """Simulate a failing log (``reason`` is put in the error), or end the failure."""
        self._unavailable = reason

    async def commit_request(self, record: LogRecord) -> LogIndex:
        """Append a request record; see :meth:`ExchangeLog.commit_request`."""
        _require_kind(
            record, "commit_request", RecordKind.REQUEST_SENT, RecordKind.REQUEST_RECEIVED
        )
        return self._append(record)

    async def commit_response(self, record: LogRecord) -> LogIndex:
        """Append a response record; see :meth:`ExchangeLog.commit_response`."""
        _require_kind(
            record, "commit_response", RecordKind.RESPONSE_SENT, RecordKind.RESPONSE_RECEIVED
        )
        return self._append(record)

    async def commit_admin_change(self, record: LogRecord) -> LogIndex:
        """Append an administrative record; see :meth:`ExchangeLog.commit_admin_change`."""
        _require_kind(record, "commit_admin_change", RecordKind.ADMIN_CHANGE)
        return self._append(record)

    def __len__(self) -> int:
        return len(self._records)

    @property
    def records(self) -> tuple[LogRecord, ...]:
        """Every committed record, by index."""
        return tuple(self._records)

    def leaf_bytes(self, index: int) -> bytes:
        """The canonical bytes committed at ``index``."""
        return self._leaves[index]

    def _append(self, record: LogRecord) -> LogIndex:
        if self._unavailable is not None:
            raise LogUnavailableError(
                f"the message log cannot commit record {record.message_id!r}: {self._unavailable}"
            )
        leaf = canonical_bytes(record)  # encode first: a failure appends nothing
        self._records.append(record)
        self._leaves.append(leaf)
        return LogIndex(len(self._records) - 1)


def canonical_bytes(record: LogRecord) -> bytes:
    """The record's one canonical encoding (see the module docstring)."""
    out = bytearray(CANONICAL_MAGIC)
    out += _U8.pack(CANONICAL_VERSION)
    out += _U8.pack(record.kind.value)
    _put_str(out, record.message_id)
    _put_bytes(out, record.header_jws)
    out += _U32.pack(len(record.certificate_chain))
    for der in record.certificate_chain:
        _put_bytes(out, der)
    _put_bytes(out, record.ocsp_response)
    if record.body is None:
        out += _U8.pack(0)
    else:
        out += _U8.pack(1)
        _put_bytes(out, record.body)
    out += record.body_sha256
    if record.peer_gateway is None:
        out += _U8.pack(0)
    else:
        out += _U8.pack(1)
        _put_str(out, str(record.peer_gateway))
    _put_str(out, record.outcome)
    if record.peer_receipt is None:
        out += _U8.pack(0)
    else:
        out += _U8.pack(1)
        out += _U64.pack(record.peer_receipt.request_index)
        out += _U64.pack(record.peer_receipt.response_index)
    return bytes(out)


def decode_canonical(data: bytes) -> LogRecord:
    """Decode :func:`canonical_bytes` output; raises :class:`LogRecordFormatError` for
    anything else (the bytes may come from a damaged log or an evidence bundle)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise LogRecordFormatError(f"a log record is bytes, not {type(data).__name__}")
    reader = _Reader(bytes(data))
    if reader.take(len(CANONICAL_MAGIC), "magic") != CANONICAL_MAGIC:
        raise LogRecordFormatError("not a Serai log record (wrong magic)")
    version = reader.u8("version")
    if version != CANONICAL_VERSION:
        raise LogRecordFormatError(
            f"log record version {version} is not supported (this Serai reads {CANONICAL_VERSION})"
        )
    code = reader.u8("kind")
    try:
        kind = RecordKind(code)
    except ValueError:
        raise LogRecordFormatError(f"unknown record kind {code}") from None
    message_id = reader.text("message_id")
    header_jws = reader.blob("header_jws")
    chain = tuple(reader.blob("certificate_chain entry") for _ in range(reader.u32("chain count")))
    ocsp = reader.blob("ocsp_response")
    body = reader.blob("body") if reader.flag("body") else None
    body_sha256 = reader.take(_SHA256_BYTES, "body_sha256")
    peer: GatewayId | None = None
    if reader.flag("peer_gateway"):
        text = reader.text("peer_gateway")
        try:
            peer = GatewayId.parse(text)
        except InvalidIdentifierError as exc:
            raise LogRecordFormatError(f"peer_gateway: {exc.message}") from exc
    outcome = reader.text("outcome")
    receipt: PeerReceipt | None = None
    if reader.flag("peer_receipt"):
        receipt = PeerReceipt(
            request_index=reader.u64("receipt request index"),
            response_index=reader.u64("receipt response index"),
        )
    if reader.remaining:
        raise LogRecordFormatError(f"{reader.remaining} trailing bytes after the record")
    return LogRecord(
        kind=kind,
        message_id=message_id,
        header_jws=header_jws,
        certificate_chain=chain,
        ocsp_response=ocsp,
        body=body,
        body_sha256=body_sha256,
        peer_gateway=peer,
        outcome=outcome,
        peer_receipt=receipt,
    )


# -- helpers -------------------------------------------------------------------------------


def _check_record(record: LogRecord) -> None:
    """The invariants of a record; raises :class:`LogRecordFormatError` naming the field."""
    if not isinstance(record.kind, RecordKind):
        raise LogRecordFormatError("kind must be a RecordKind")
    _check_text("message_id", record.message_id, _MAX_MESSAGE_ID_CHARS)
    for name in ("header_jws", "ocsp_response"):
        _check_blob(name, getattr(record, name))
    if not isinstance(record.certificate_chain, tuple):
        raise LogRecordFormatError("certificate_chain must be a tuple of DER bytes")
    for der in record.certificate_chain:
        _check_blob("certificate_chain entry", der)
    if record.body is not None:
        _check_blob("body", record.body)
    if type(record.body_sha256) is not bytes or len(record.body_sha256) != _SHA256_BYTES:
        raise LogRecordFormatError("body_sha256 must be 32 bytes")
    if record.body is not None and hashlib.sha256(record.body).digest() != record.body_sha256:
        raise LogRecordFormatError("body_sha256 is not the SHA-256 of body")
    if record.peer_gateway is not None and not isinstance(record.peer_gateway, GatewayId):
        raise LogRecordFormatError("peer_gateway must be a GatewayId or None")
    outcome: object = record.outcome
    if not isinstance(outcome, str) or _OUTCOME.fullmatch(outcome) is None:
        raise LogRecordFormatError("outcome must be 'ok' or a snake_case error code")
    receipt: object = record.peer_receipt
    if receipt is not None:
        if not isinstance(receipt, PeerReceipt):
            raise LogRecordFormatError("peer_receipt must be a PeerReceipt or None")
        if record.kind is not RecordKind.RESPONSE_RECEIVED:
            raise LogRecordFormatError("only a RESPONSE_RECEIVED record carries a peer_receipt")
    if record.kind is RecordKind.ADMIN_CHANGE:
        if record.header_jws or record.certificate_chain or record.ocsp_response:
            raise LogRecordFormatError(
                "an ADMIN_CHANGE record has no header, certificate chain or OCSP response"
            )
        if record.body is None or record.peer_gateway is not None:
            raise LogRecordFormatError("an ADMIN_CHANGE record has a body and no peer gateway")
    elif not record.header_jws:
        raise LogRecordFormatError(f"a {record.kind.name} record needs its signed header")


def _check_text(name: str, value: object, max_chars: int) -> None:
    if not isinstance(value, str) or not value or len(value) > max_chars:
        raise LogRecordFormatError(f"{name} must be a str of 1 to {max_chars} characters")
    if not value.isprintable() or not value.isascii():
        raise LogRecordFormatError(f"{name} must be printable ASCII")


def _check_blob(name: str, value: object) -> None:
    if type(value) is not bytes:
        raise LogRecordFormatError(f"{name} must be bytes, not {type(value).__name__}")
    if len(value) > _MAX_FIELD_BYTES:
        raise LogRecordFormatError(f"{name} is longer than {_MAX_FIELD_BYTES} bytes")


def _require_kind(record: object, method: str, *kinds: RecordKind) -> None:
    if not isinstance(record, LogRecord) or record.kind not in kinds:
        got = record.kind.name if isinstance(record, LogRecord) else type(record).__name__
        raise GatewayError(
            f"{method} takes a {' or '.join(k.name for k in kinds)} record, not {got}",
            code=ErrorCode.INTERNAL,
            origin=Origin.GATEWAY,
        )


def _put_bytes(out: bytearray, value: bytes) -> None:
    out += _U32.pack(len(value))
    out += value


def _put_str(out: bytearray, value: str) -> None:
    _put_bytes(out, value.encode("utf-8"))


class _Reader:
    """Reads the fields of one canonical record; every shortfall is a format error."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self._at

    def take(self, count: int, what: str) -> bytes:
        if count > self.remaining:
            raise LogRecordFormatError(
                f"truncated record: {what} needs {count} bytes at offset {self._at}, "
                f"{self.remaining} left"
            )
        chunk = self._data[self._at : self._at + count]
        self._at += count
        return chunk

    def u8(self, what: str) -> int:
        return int(_U8.unpack(self.take(1, what))[0])

    def u32(self, what: str) -> int:
        return int(_U32.unpack(self.take(4, what))[0])

    def u64(self, what: str) -> int:
        return int(_U64.unpack(self.take(8, what))[0])

    def flag(self, what: str) -> bool:
        value = self.u8(f"{what} presence")
        if value not in (0, 1):
            raise LogRecordFormatError(f"{what} presence byte is {value}, not 0 or 1")
        return value == 1

    def blob(self, what: str) -> bytes:
        return self.take(self.u32(f"{what} length"), what)

    def text(self, what: str) -> str:
        raw = self.blob(what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LogRecordFormatError(f"{what} is not UTF-8: {exc}") from None
