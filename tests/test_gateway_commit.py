"""gateway.commit: the in-memory log (order, indices, injected failure, kind checks),
record invariants, and the canonical encoding (deterministic, round-trip, strict decoder)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import commit as commit_module
from gateway.commit import (
    CANONICAL_MAGIC,
    ExchangeLog,
    InMemoryExchangeLog,
    LogRecord,
    LogRecordFormatError,
    LogUnavailableError,
    PeerReceipt,
    RecordKind,
    canonical_bytes,
    decode_canonical,
)
from gateway.errors import GatewayError
from serai.errors import ErrorCode, Origin
from serai.identifiers import GatewayId

PEER = GatewayId.parse("UZ/GOV/CADASTRE/gw:main")
BODY = b"\x0a\x05parcel"
JWS = b"eyJhbGciOiJFUzI1NiJ9.eyJpZCI6IjEifQ.c2ln"


def _record(kind: RecordKind, message_id: object = "m-1", **changes: object) -> LogRecord:
    fields: dict[str, object] = {
        "kind": kind,
        "message_id": message_id,
        "header_jws": JWS,
        "certificate_chain": (b"leaf-der", b"ca-der"),
        "ocsp_response": b"ocsp-der",
        "body": BODY,
        "body_sha256": hashlib.sha256(BODY).digest(),
        "peer_gateway": PEER,
    }
    fields.update(changes)
    return LogRecord(**fields)  # type: ignore[arg-type]


def test_public_surface() -> None:
    assert set(commit_module.__all__) == {
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
    }


# -- the in-memory log ------------------------------------------------------------------------


async def test_in_memory_log_orders_and_indexes_from_zero() -> None:
    log: ExchangeLog = InMemoryExchangeLog()
    request = _record(RecordKind.REQUEST_RECEIVED)
    response = _record(RecordKind.RESPONSE_SENT, outcome="ok")
    change = LogRecord.admin_change(change_id="acl-change-1", description=b"{}")
    assert await log.commit_request(request) == 0
    assert await log.commit_response(response) == 1
    assert await log.commit_admin_change(change) == 2
    assert isinstance(log, InMemoryExchangeLog)
    assert len(log) == 3
    assert log.records == (request, response, change)
    assert [log.leaf_bytes(i) for i in range(3)] == [
        canonical_bytes(r) for r in (request, response, change)
    ]


async def test_consumer_side_records_with_receipt() -> None:
    log = InMemoryExchangeLog()
    sent = _record(RecordKind.REQUEST_SENT, peer_gateway=None)
    received = _record(
        RecordKind.RESPONSE_RECEIVED,
        peer_receipt=PeerReceipt(request_index=41, response_index=42),
    )
    assert (await log.commit_request(sent), await log.commit_response(received)) == (0, 1)
    assert decode_canonical(log.leaf_bytes(1)).peer_receipt == PeerReceipt(
        request_index=41, response_index=42
    )


async def test_injected_failure_is_log_unavailable_and_appends_nothing() -> None:
    log = InMemoryExchangeLog()
    await log.commit_request(_record(RecordKind.REQUEST_RECEIVED, "m-1"))
    log.set_unavailable("disk full")
    for commit, record in [
        (log.commit_request, _record(RecordKind.REQUEST_RECEIVED, "m-2")),
        (log.commit_response, _record(RecordKind.RESPONSE_SENT, "m-2")),
        (log.commit_admin_change, LogRecord.admin_change(change_id="c", description=b"x")),
    ]:
        with pytest.raises(LogUnavailableError) as info:
            await commit(record)
        err = info.value
        assert isinstance(err, GatewayError)
        assert (err.code, err.origin) == (ErrorCode.LOG_UNAVAILABLE, Origin.GATEWAY)
        assert "disk full" in err.message
    assert len(log) == 1
    log.set_unavailable(None)
    assert await log.commit_request(_record(RecordKind.REQUEST_RECEIVED, "m-2")) == 1


@pytest.mark.parametrize(
    ("method", "kind"),
    [
        pytest.param("commit_request", RecordKind.RESPONSE_SENT, id="request-given-response"),
        pytest.param("commit_request", RecordKind.ADMIN_CHANGE, id="request-given-admin"),
        pytest.param("commit_response", RecordKind.REQUEST_SENT, id="response-given-request"),
        pytest.param("commit_admin_change", RecordKind.REQUEST_RECEIVED, id="admin-given-req"),
    ],
)
async def test_commit_refuses_a_record_of_another_kind(method: str, kind: RecordKind) -> None:
    log = InMemoryExchangeLog()
    if kind is RecordKind.ADMIN_CHANGE:
        record = LogRecord.admin_change(change_id="c", description=b"x")
    else:
        record = _record(kind)
    with pytest.raises(GatewayError) as info:
        await getattr(log, method)(record)
    assert info.value.code is ErrorCode.INTERNAL
    assert len(log) == 0


# -- record invariants ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "changes", "fragment"),
    [
        pytest.param(RecordKind.REQUEST_SENT, {"header_jws": b""}, "signed header", id="no-header"),
        pytest.param(RecordKind.REQUEST_SENT, {"message_id": ""}, "message_id", id="empty-id"),
        pytest.param(
            RecordKind.REQUEST_SENT, {"message_id": "x" * 256}, "message_id", id="long-id"
        ),
        pytest.param(RecordKind.REQUEST_SENT, {"message_id": "a\nb"}, "printable", id="ctrl-id"),
        pytest.param(RecordKind.REQUEST_SENT, {"body_sha256": b"\0" * 32}, "SHA-256", id="digest"),
        pytest.param(RecordKind.REQUEST_SENT, {"body_sha256": b"\0"}, "32 bytes", id="digest-len"),
        pytest.param(RecordKind.REQUEST_SENT, {"outcome": "Not OK"}, "outcome", id="outcome"),
        pytest.param(RecordKind.REQUEST_SENT, {"header_jws": "text"}, "bytes", id="str-header"),
        pytest.param(
            RecordKind.REQUEST_SENT, {"certificate_chain": [b"x"]}, "tuple", id="chain-list"
        ),
        pytest.param(
            RecordKind.RESPONSE_SENT,
            {"peer_receipt": PeerReceipt(request_index=1, response_index=2)},
            "peer_receipt",
            id="receipt-on-provider-record",
        ),
        pytest.param(
            RecordKind.ADMIN_CHANGE, {"peer_gateway": None}, "ADMIN_CHANGE", id="admin-header"
        ),
    ],
)
def test_record_refuses(kind: RecordKind, changes: dict[str, object], fragment: str) -> None:
    with pytest.raises(LogRecordFormatError, match=fragment):
        _record(kind, **changes)


def test_metadata_mode_record_has_digest_only() -> None:
    record = _record(RecordKind.REQUEST_RECEIVED, body=None)
    assert record.body is None
    assert decode_canonical(canonical_bytes(record)) == record
    assert BODY not in canonical_bytes(record)


def test_receipt_refuses_bad_indices() -> None:
    with pytest.raises(LogRecordFormatError):
        PeerReceipt(request_index=-1, response_index=0)
    with pytest.raises(LogRecordFormatError):
        PeerReceipt(request_index=0, response_index=2**64)


# -- canonical bytes --------------------------------------------------------------------------


def test_canonical_bytes_golden() -> None:
    """The exact layout of a version 1 record; a change here breaks every existing log."""
    record = LogRecord.admin_change(change_id="c1", description=b"{}")
    digest = hashlib.sha256(b"{}").digest()
    expected = (
        b"serai-log-record"
        + b"\x01"  # version
        + b"\x05"  # ADMIN_CHANGE
        + b"\x00\x00\x00\x02c1"
        + b"\x00\x00\x00\x00"  # header_jws
        + b"\x00\x00\x00\x00"  # chain count
        + b"\x00\x00\x00\x00"  # ocsp
        + b"\x01\x00\x00\x00\x02{}"  # body present
        + digest
        + b"\x00"  # no peer
        + b"\x00\x00\x00\x02ok"
        + b"\x00"  # no receipt
    )
    assert canonical_bytes(record) == expected


def test_canonical_bytes_deterministic_and_distinct() -> None:
    a = _record(RecordKind.REQUEST_SENT)
    b = _record(RecordKind.REQUEST_SENT)
    assert canonical_bytes(a) == canonical_bytes(b)
    assert canonical_bytes(a).startswith(CANONICAL_MAGIC + b"\x01")
    # Moving bytes between adjacent fields changes the encoding (length prefixes).
    c = _record(RecordKind.REQUEST_SENT, certificate_chain=(b"leaf-derca-der",))
    d = _record(RecordKind.REQUEST_SENT, certificate_chain=(b"leaf-der", b"ca-der", b""))
    assert len({canonical_bytes(x) for x in (a, c, d)}) == 3


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        pytest.param(lambda b: b"x" + b[1:], "magic", id="magic"),
        pytest.param(lambda b: b[:16] + b"\x02" + b[17:], "version 2", id="version"),
        pytest.param(lambda b: b[:17] + b"\x09" + b[18:], "kind 9", id="kind"),
        pytest.param(lambda b: b + b"\x00", "trailing", id="trailing"),
        pytest.param(lambda b: b[:-1], "truncated", id="truncated"),
        pytest.param(lambda b: b[:10], "truncated", id="short"),
        pytest.param(lambda b: b"", "truncated", id="empty"),
    ],
)
def test_decode_refuses(mutate: object, fragment: str) -> None:
    good = canonical_bytes(_record(RecordKind.RESPONSE_RECEIVED))
    assert callable(mutate)
    with pytest.raises(LogRecordFormatError, match=fragment):
        decode_canonical(mutate(good))


def test_decode_refuses_bad_presence_byte_and_non_bytes() -> None:
    record = LogRecord.admin_change(change_id="c1", description=b"{}")
    data = bytearray(canonical_bytes(record))
    data[-1] = 2  # receipt presence
    with pytest.raises(LogRecordFormatError, match="presence"):
        decode_canonical(bytes(data))
    with pytest.raises(LogRecordFormatError):
        decode_canonical("text")  # type: ignore[arg-type]


_blobs = st.binary(max_size=64)
_ids = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=40
)
_peers = st.none() | st.sampled_from(
    [PEER, GatewayId.parse("UZ/GOV/STC/gw:a"), GatewayId.parse("EE/COM/X-1/gw:b.2")]
)


@st.composite
def records(draw: st.DrawFn) -> LogRecord:
    kind = draw(st.sampled_from(RecordKind))
    body = draw(_blobs)
    if kind is RecordKind.ADMIN_CHANGE:
        return LogRecord.admin_change(change_id=draw(_ids), description=body)
    metadata_mode = draw(st.booleans())
    receipt = None
    if kind is RecordKind.RESPONSE_RECEIVED and draw(st.booleans()):
        receipt = PeerReceipt(
            request_index=draw(st.integers(0, 2**64 - 1)),
            response_index=draw(st.integers(0, 2**64 - 1)),
        )
    return LogRecord(
        kind=kind,
        message_id=draw(_ids),
        header_jws=draw(st.binary(min_size=1, max_size=64)),
        certificate_chain=tuple(draw(st.lists(_blobs, max_size=3))),
        ocsp_response=draw(_blobs),
        body=None if metadata_mode else body,
        body_sha256=hashlib.sha256(body).digest(),
        peer_gateway=draw(_peers),
        outcome=draw(st.sampled_from(["ok", "access_denied", "provider_unavailable"])),
        peer_receipt=receipt,
    )


@given(records())
def test_round_trip(record: LogRecord) -> None:
    data = canonical_bytes(record)
    assert decode_canonical(data) == record
    assert canonical_bytes(decode_canonical(data)) == data


@given(records(), st.data())
def test_decoder_never_crashes_on_damaged_records(record: LogRecord, data: st.DataObject) -> None:
    """A flipped byte or a cut either decodes to a record that re-encodes to the same
    bytes, or is refused with LogRecordFormatError; nothing else escapes."""
    encoded = bytearray(canonical_bytes(record))
    if data.draw(st.booleans()):
        position = data.draw(st.integers(0, len(encoded) - 1))
        encoded[position] ^= data.draw(st.integers(1, 255))
    else:
        del encoded[data.draw(st.integers(0, len(encoded) - 1)) :]
    try:
        decoded = decode_canonical(bytes(encoded))
    except LogRecordFormatError:
        return
    assert canonical_bytes(decoded) == bytes(encoded)


@given(st.binary(max_size=300))
def test_decoder_on_arbitrary_bytes(data: bytes) -> None:
    try:
        decoded = decode_canonical(CANONICAL_MAGIC + b"\x01" + data)
    except LogRecordFormatError:
        return
    assert canonical_bytes(decoded) == CANONICAL_MAGIC + b"\x01" + data
