"""Metadata mode (:mod:`gateway.logmodes`): one test per rule of its docstring."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib

import pytest

import gateway.logmodes
from gateway.commit import (
    InMemoryExchangeLog,
    LogRecord,
    LogRecordFormatError,
    PeerReceipt,
    RecordKind,
)
from gateway.config import LogMode
from gateway.headers import request_header_for, response_header_for
from gateway.logmodes import PENDING_TTL_S, MetadataModeLog, header_payload
from serai.identifiers import ServiceId, SubsystemId

PROPERTY = SubsystemId.parse("UZ/GOV/MINJUST/property")
ARCHIVE = SubsystemId.parse("UZ/GOV/MINJUST/archive")
REGISTRY = SubsystemId.parse("UZ/GOV/CADASTRE/registry")
NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)


def _jws(payload: bytes) -> bytes:
    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    return b64(b'{"alg":"ES256"}') + b"." + b64(payload) + b"." + b64(b"signature")


def _exchange(
    client: SubsystemId, message_id: str = "m-1"
) -> tuple[dict[RecordKind, LogRecord], dict[RecordKind, LogRecord]]:
    """Request and response records of one exchange, as each side logs them."""
    request_body, response_body = b"question", b"answer"
    request = request_header_for(
        message_id=message_id,
        client=client,
        service=ServiceId(
            subsystem=REGISTRY, service_name="cadastre.v1.Cadastre", method_name="GetParcel"
        ),
        body=request_body,
        created_at=NOW,
    )
    request_bytes = request.encode()
    response = response_header_for(
        message_id=message_id,
        request_header_sha256=hashlib.sha256(request_bytes).digest(),
        body=response_body,
        created_at=NOW,
    )

    def record(kind: RecordKind, header: bytes, body: bytes) -> LogRecord:
        return LogRecord(
            kind=kind,
            message_id=message_id,
            header_jws=_jws(header),
            body=body,
            body_sha256=hashlib.sha256(body).digest(),
            peer_receipt=(
                PeerReceipt(request_index=1, response_index=2)
                if kind is RecordKind.RESPONSE_RECEIVED
                else None
            ),
        )

    consumer = {
        RecordKind.REQUEST_SENT: record(RecordKind.REQUEST_SENT, request_bytes, request_body),
        RecordKind.RESPONSE_RECEIVED: record(
            RecordKind.RESPONSE_RECEIVED, response.encode(), response_body
        ),
    }
    provider = {
        RecordKind.REQUEST_RECEIVED: record(
            RecordKind.REQUEST_RECEIVED, request_bytes, request_body
        ),
        RecordKind.RESPONSE_SENT: record(
            RecordKind.RESPONSE_SENT, response.encode(), response_body
        ),
    }
    return consumer, provider


async def test_consumer_side_follows_the_client_subsystem() -> None:
    inner = InMemoryExchangeLog()
    log = MetadataModeLog(log=inner, modes={PROPERTY: LogMode.METADATA, ARCHIVE: LogMode.FULL})
    for client, message_id in ((PROPERTY, "m-1"), (ARCHIVE, "m-2")):
        consumer, _ = _exchange(client, message_id)
        await log.commit_request(consumer[RecordKind.REQUEST_SENT])
        await log.commit_response(consumer[RecordKind.RESPONSE_RECEIVED])
    bodies = [r.body for r in inner.records]
    assert bodies == [None, None, b"question", b"answer"]


async def test_provider_side_follows_the_provider_subsystem() -> None:
    for mode, kept in ((LogMode.METADATA, False), (LogMode.FULL, True)):
        inner = InMemoryExchangeLog()
        log = MetadataModeLog(log=inner, modes={REGISTRY: mode, PROPERTY: LogMode.METADATA})
        _, provider = _exchange(PROPERTY)
        await log.commit_request(provider[RecordKind.REQUEST_RECEIVED])
        await log.commit_response(provider[RecordKind.RESPONSE_SENT])
        assert [r.body is not None for r in inner.records] == [kept, kept]


async def test_digest_is_kept_and_only_the_body_goes() -> None:
    inner = InMemoryExchangeLog()
    log = MetadataModeLog(log=inner, modes={PROPERTY: LogMode.METADATA})
    consumer, _ = _exchange(PROPERTY)
    sent = consumer[RecordKind.REQUEST_SENT]
    await log.commit_request(sent)
    (logged,) = inner.records
    assert logged.body is None
    assert logged.body_sha256 == sent.body_sha256 == hashlib.sha256(b"question").digest()
    assert logged.header_jws == sent.header_jws
    assert logged.certificate_chain == sent.certificate_chain


async def test_a_response_without_its_request_is_logged_in_metadata_mode() -> None:
    clock = [0.0]
    inner = InMemoryExchangeLog()
    log = MetadataModeLog(
        log=inner,
        modes={PROPERTY: LogMode.METADATA, ARCHIVE: LogMode.FULL},
        clock=lambda: clock[0],
    )
    consumer, _ = _exchange(ARCHIVE)
    await log.commit_request(consumer[RecordKind.REQUEST_SENT])
    clock[0] += PENDING_TTL_S + 1
    other, _ = _exchange(ARCHIVE, "m-2")
    await log.commit_request(other[RecordKind.REQUEST_SENT])  # expires the first request
    await log.commit_response(consumer[RecordKind.RESPONSE_RECEIVED])
    await log.commit_response(other[RecordKind.RESPONSE_RECEIVED])
    assert [r.body is not None for r in inner.records] == [True, True, False, True]


async def test_all_full_passes_records_through_without_parsing() -> None:
    inner = InMemoryExchangeLog()
    log = MetadataModeLog(log=inner, modes={PROPERTY: LogMode.FULL})
    consumer, _ = _exchange(PROPERTY)
    broken = LogRecord(  # a header that is not even a JWS: never looked at
        kind=RecordKind.REQUEST_SENT,
        message_id="m-9",
        header_jws=b"not-a-jws",
        body=b"x",
        body_sha256=hashlib.sha256(b"x").digest(),
    )
    await log.commit_request(broken)
    await log.commit_request(consumer[RecordKind.REQUEST_SENT])
    assert inner.records == (broken, consumer[RecordKind.REQUEST_SENT])


async def test_admin_changes_pass_through() -> None:
    inner = InMemoryExchangeLog()
    log = MetadataModeLog(log=inner, modes={PROPERTY: LogMode.METADATA})
    change = LogRecord.admin_change(change_id="acl-1", description=b"grant ...")
    await log.commit_admin_change(change)
    assert inner.records == (change,)


def test_header_payload_refuses_what_is_not_a_compact_jws() -> None:
    assert header_payload(_jws(b"abc")) == b"abc"
    with pytest.raises(LogRecordFormatError, match="not a compact JWS"):
        header_payload(b"a.b")
    with pytest.raises(LogRecordFormatError, match="base64url"):
        header_payload(b"a.b!c.d")


def test_public_surface() -> None:
    assert set(gateway.logmodes.__all__) == {
        "MAX_PENDING",
        "PENDING_TTL_S",
        "MetadataModeLog",
        "header_payload",
    }
