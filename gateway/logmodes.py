"""Metadata mode: the message log keeps only the body digest of chosen subsystems.

A subsystem in ``log_mode = "metadata"`` (``[[client]]`` or ``[[provider]]`` of
``gateway.toml``) has its request and response bodies left out of this gateway's log;
each record still holds the signed header, which carries the body's SHA-256, so the
evidence stays verifiable by whoever holds the body (DESIGN §6). The choice is each
gateway's for its own subsystems: the client subsystem for a consumer gateway's
records, the provider subsystem for a provider gateway's.

:class:`MetadataModeLog` wraps any :class:`~gateway.commit.ExchangeLog`, so the
exchange code does not know about modes. Invariants:

1. A request record keeps its body exactly when the subsystem on our side is in full
   mode; the subsystem is read from the signed header in the record (``client`` for
   ``REQUEST_SENT``, the service's subsystem for ``REQUEST_RECEIVED``), never from
   anything unsigned.
2. A response record follows its request: the response header names the SHA-256 of the
   request header it answers, and the mode decided for that request applies. A response
   whose request this gateway did not see in the last :data:`PENDING_TTL_S` seconds (it
   cannot happen in an exchange, whose deadline is shorter) is logged in metadata mode
   if any subsystem is: a body is never kept by mistake.
3. ``body_sha256`` is never changed; only ``body`` becomes ``None``.
4. With every subsystem in full mode the wrapper passes records through untouched and
   parses nothing.
5. Administrative records pass through untouched.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Final

from gateway.commit import ExchangeLog, LogIndex, LogRecord, LogRecordFormatError, RecordKind
from gateway.config import LogMode
from gateway.headers import RequestHeader, ResponseHeader
from serai.identifiers import SubsystemId

__all__ = ["MAX_PENDING", "PENDING_TTL_S", "MetadataModeLog", "header_payload"]

#: Seconds a request's mode is remembered for its response.
PENDING_TTL_S: Final = 3600.0
#: At most this many requests' modes are remembered (the oldest are forgotten first).
MAX_PENDING: Final = 262_144


class MetadataModeLog:
    """An :class:`~gateway.commit.ExchangeLog` that drops the bodies of subsystems in
    metadata mode before they reach ``log`` (see the module docstring)."""

    def __init__(
        self,
        *,
        log: ExchangeLog,
        modes: Mapping[SubsystemId, LogMode],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._metadata = frozenset(s for s, m in modes.items() if m is LogMode.METADATA)
        self._clock = clock
        # SHA-256 of a request header -> (when, whether its exchange is in metadata mode)
        self._pending: OrderedDict[bytes, tuple[float, bool]] = OrderedDict()

    @property
    def inner(self) -> ExchangeLog:
        """The wrapped log."""
        return self._log

    async def commit_request(self, record: LogRecord) -> LogIndex:
        """See :meth:`ExchangeLog.commit_request`."""
        if not self._metadata:
            return await self._log.commit_request(record)
        payload = header_payload(record.header_jws)
        header = RequestHeader.decode(payload)
        ours = header.client if record.kind is RecordKind.REQUEST_SENT else header.service.subsystem
        metadata = ours in self._metadata
        self._remember(hashlib.sha256(payload).digest(), metadata)
        return await self._log.commit_request(_without_body(record) if metadata else record)

    async def commit_response(self, record: LogRecord) -> LogIndex:
        """See :meth:`ExchangeLog.commit_response`."""
        if not self._metadata:
            return await self._log.commit_response(record)
        header = ResponseHeader.decode(header_payload(record.header_jws))
        entry = self._pending.pop(header.request_header_sha256, None)
        metadata = True if entry is None else entry[1]
        return await self._log.commit_response(_without_body(record) if metadata else record)

    async def commit_admin_change(self, record: LogRecord) -> LogIndex:
        """See :meth:`ExchangeLog.commit_admin_change`."""
        return await self._log.commit_admin_change(record)

    def _remember(self, request_sha256: bytes, metadata: bool) -> None:
        now = self._clock()
        pending = self._pending
        pending[request_sha256] = (now, metadata)
        pending.move_to_end(request_sha256)
        while pending:
            oldest, (when, _) = next(iter(pending.items()))
            if len(pending) <= MAX_PENDING and now - when <= PENDING_TTL_S:
                break
            del pending[oldest]


def header_payload(header_jws: bytes) -> bytes:
    """The payload (the encoded header) of a compact JWS as logged; raises
    :class:`~gateway.commit.LogRecordFormatError` for anything else."""
    parts = header_jws.split(b".")
    if len(parts) != 3:
        raise LogRecordFormatError("the logged header is not a compact JWS")
    encoded = parts[1]
    try:
        return base64.urlsafe_b64decode(encoded + b"=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError) as exc:
        raise LogRecordFormatError(f"the logged header's payload is not base64url: {exc}") from None


def _without_body(record: LogRecord) -> LogRecord:
    return dataclasses.replace(record, body=None)
