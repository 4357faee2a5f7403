"""Real message logs for the export and verify tests.

:func:`exchange_records` runs the in-process federation of ``tests/gatewayharness.py``
(real PKI, OCSP over HTTP, two gateway runtimes over mutual TLS, the development TSA
approved in the configuration) and returns what the consumer gateway committed: signed
request and response records of three successful calls and one the provider failed,
plus the trust anchor, the configuration envelope and a log-signing key for the consumer
gateway. :func:`build_log` writes them to a SQLite :class:`MessageLog` (with an
``ADMIN_CHANGE`` record and one metadata-mode copy) and signs and time-stamps tree heads
with the real TSA code, then writes the ``gateway.toml``, anchor and configuration
archive the ``serai log`` commands read.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from cryptography import x509
from psycopg.conninfo import conninfo_to_dict

from certs.keys import PrivateKey, generate_private_key
from certs.pkidir import PKIDirectory
from certs.profiles import Profile
from certs.timestamp import build_query, new_nonce, verify_reply
from certs.tsa import TimeStampAuthority
from gateway.commit import LogRecord
from gateway.config import render_config
from gateway.messagelog import MessageLog
from registry.codec import TrustAnchor, encode_anchor
from serai.treehead import TreeHead, TreeHeadSigner
from tests.gatewayharness import CONSUMER_GW, FAIL, federation

LOG_ID = str(CONSUMER_GW)


@dataclass(frozen=True, repr=False)  # a short repr in Hypothesis' failure reports
class Source:
    """Records a real consumer gateway committed, and what signs and vouches for them."""

    records: tuple[LogRecord, ...]
    anchor: TrustAnchor
    envelope: bytes
    log_key: PrivateKey
    log_chain: tuple[x509.Certificate, ...]
    tsa: TimeStampAuthority
    root: x509.Certificate
    pki: PKIDirectory

    def token(self, data: bytes) -> bytes:
        """An RFC 3161 token over ``data`` from the development TSA (checked)."""
        nonce = new_nonce()
        reply = self.tsa.respond(build_query(data, nonce=nonce))
        return verify_reply(reply, data=data, nonce=nonce, trusted_roots=[self.root]).token_der


def exchange_records(tmp_path: Path) -> Source:
    """Run four exchanges through the federation (module docstring)."""

    async def run() -> Source:
        async with federation(tmp_path, approve_tsa=True) as fed:
            for body in (b"parcel 1", b"parcel 2", b"parcel 3"):
                assert (await fed.call(body=body)).body == body
            assert (await fed.call(FAIL)).body is None
            assert fed.anchor is not None
            records = fed.consumer_log.records
            log_key = generate_private_key()
            log_cert = fed.ca.issue(Profile.LOG_SIGNING, LOG_ID, log_key.public_key())
            pki = PKIDirectory(tmp_path / "pki")
            tsa_key, tsa_chain = pki.tsa_signer()
            return Source(
                records=records,
                anchor=fed.anchor,
                envelope=fed.envelope,
                log_key=log_key,
                log_chain=(log_cert, fed.ca.certificate),
                tsa=TimeStampAuthority(key=tsa_key, chain=tsa_chain),
                root=pki.root_certificate(),
                pki=pki,
            )

    return asyncio.run(run())


@dataclass(frozen=True, repr=False)
class Built:
    """A log on disk and the files ``serai log`` needs beside it."""

    dir: Path
    config: Path
    database: str | Path
    anchor: Path
    records: tuple[LogRecord, ...]

    @property
    def size(self) -> int:
        return len(self.records)


def log_records(source: Source) -> tuple[LogRecord, ...]:
    """The records :func:`build_log` appends: the exchanges, then an ADMIN_CHANGE and a
    metadata-mode copy of the first request (body dropped, digest kept)."""
    admin = LogRecord.admin_change(change_id="acl-1", description=b"grant property GetParcel")
    metadata = dataclasses.replace(source.records[0], body=None)
    return (*source.records, admin, metadata)


def build_log(
    source: Source,
    directory: Path,
    *,
    heads_after: Sequence[int] = (3, 7, 10),
    timestamp: Sequence[bool] | None = None,
    archive: bool = True,
    dsn: str | None = None,
) -> Built:
    """Append :func:`log_records` to ``directory/messagelog.db``; after the records
    counted in ``heads_after`` sign a tree head and (where ``timestamp`` says, all by
    default) time-stamp it. Also write ``gateway.toml``, ``anchor.bin`` and (unless
    ``archive`` is false) ``globalconf/archive/<serial>.bin``. With ``dsn`` the log is
    in that PostgreSQL database instead."""
    directory.mkdir(parents=True, exist_ok=True)
    records = log_records(source)
    stamps = list(timestamp) if timestamp is not None else [True] * len(heads_after)
    database: str | Path = dsn if dsn is not None else directory / "messagelog.db"
    asyncio.run(_fill(source, database, records, heads_after, stamps))
    (directory / "gateway.toml").write_text(
        render_config(gateway_id=LOG_ID, peer_address="127.0.0.1:5501", message_log_url=dsn)
    )
    (directory / "anchor.bin").write_bytes(encode_anchor(source.anchor))
    if archive:
        (directory / "globalconf" / "archive").mkdir(parents=True)
        (directory / "globalconf" / "archive" / "1.bin").write_bytes(source.envelope)
    return Built(
        dir=directory,
        config=directory / "gateway.toml",
        database=database,
        anchor=directory / "anchor.bin",
        records=records,
    )


async def _fill(
    source: Source,
    database: str | Path,
    records: Sequence[LogRecord],
    heads_after: Sequence[int],
    stamps: Sequence[bool],
) -> None:
    signer = TreeHeadSigner(key=source.log_key, certificate_chain=source.log_chain)
    log = await MessageLog.open(database, log_id=LOG_ID)
    try:
        done = 0
        for until, stamp in zip(heads_after, stamps, strict=True):
            if until > done:
                await log.append_all(records[done:until])
                done = until
            await sign_head(log, source, signer, stamp=stamp)
        if done < len(records):
            await log.append_all(records[done:])
    finally:
        await log.close()


async def sign_head(
    log: MessageLog, source: Source, signer: TreeHeadSigner, *, stamp: bool = True
) -> int:
    """Sign (and time-stamp) a head of the log as it is now; its size."""
    size, root = await log.tree_state()
    now = dt.datetime.now(dt.UTC)
    head = TreeHead(
        log_id=LOG_ID,
        tree_size=size,
        root_hash=root,
        time=now.replace(microsecond=now.microsecond // 1000 * 1000),
    )
    sth = signer.sign(head)
    stored = await log.add_tree_head(tree_size=size, root=root, signed_head=sth.jws)
    if stamp:
        await log.set_timestamp(stored.head_id, source.token(sth.jws))
    return size


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def pg_url(dsn: str) -> str:
    """The ``postgresql://`` URL (what gateway.toml takes) of a keyword DSN such as the
    ``postgres_dsn`` fixture gives."""
    parts = conninfo_to_dict(dsn)
    user = quote(str(parts.get("user", "postgres")))
    secret = parts.get("password")
    credentials = f"{user}:{quote(str(secret))}" if secret else user
    where = f"{parts.get('host', '127.0.0.1')}:{parts.get('port', 5432)}"
    return f"postgresql://{credentials}@{where}/{quote(str(parts['dbname']))}"
