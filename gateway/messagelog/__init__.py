"""The gateway's durable message log (DESIGN §6): a Merkle tree of every record the
gateway committed, in SQLite or PostgreSQL, written by one group-commit writer.

:class:`MessageLog` is the entry point (:mod:`gateway.messagelog.log` states its
guarantees); the other names are what its methods take and return.
"""

from __future__ import annotations

from gateway.messagelog.errors import LogCorruptError, MessageLogError
from gateway.messagelog.log import MessageLog, MessageLogOptions
from gateway.messagelog.store import StoredExport, StoredRecord, StoredTreeHead, Synchronous
from gateway.messagelog.writer import WriterLimits

__all__ = [
    "LogCorruptError",
    "MessageLog",
    "MessageLogError",
    "MessageLogOptions",
    "StoredExport",
    "StoredRecord",
    "StoredTreeHead",
    "Synchronous",
    "WriterLimits",
]
