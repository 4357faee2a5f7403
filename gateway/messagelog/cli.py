"""``serai log``: read, prove, export, verify and prune a gateway's message log.

Commands (``--config`` is the gateway's ``gateway.toml``; the log is opened beside a
running gateway: SQLite in WAL mode lets readers and the gateway's writer work at once,
PostgreSQL through ``message_log_url``)::

    serai log show (--config F | --bundle B.zip) [--message-id ID] [--client SUBSYSTEM]
                   [--service SUBSYSTEM] [--since TIME] [--until TIME] [--start INDEX]
                   [--limit N] [--json]
    serai log prove INDEX --config F [--json]
    serai log export --config F [--from X] [--to Y] --out BUNDLE.zip [--head-interval-s S]
                     [--json]
    serai log verify --config F [--from INDEX] [--to INDEX] [--json]
    serai log verify --bundle BUNDLE.zip --anchor anchor.bin [--log-id GATEWAY_ID] [--json]
    serai log prune --config F --before TIME

TIME is ISO 8601 (``2026-11-27``, ``2026-11-27T12:00:00Z``; without an offset it is
UTC). For ``export``, X and Y are record indices (``--from`` inclusive, ``--to``
exclusive) or times (records appended at or after ``--from`` and before ``--to``).

Exit status: 0 on success, 1 when ``verify`` (or the check ``export`` and ``prove`` run)
finds a failure, 2 when the command is refused (``serai: error: ...``).
docs/messagelog.md is the auditor's guide.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import datetime as dt
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from gateway.commit import LogRecord, RecordKind, decode_canonical
from gateway.config import GatewayConfig, load_config
from gateway.errors import GatewayError
from gateway.headers import RequestHeader, ResponseHeader
from gateway.messagelog.audit import verify_bundle, verify_log
from gateway.messagelog.bundle import (
    DEFAULT_HEAD_INTERVAL_S,
    BundleError,
    BundleReader,
    ExportResult,
    export_bundle,
    record_path,
)
from gateway.messagelog.errors import LogCorruptError, MessageLogError
from gateway.messagelog.log import MAX_PAGE, MessageLog, MessageLogOptions
from gateway.messagelog.retention import prune_exported
from gateway.messagelog.store import StoredRecord, Synchronous
from gateway.messagelog.timeline import ConfigurationTimeline, add_all, read_archive
from gateway.messagelog.verify import EvidenceVerifier, Failure, VerificationReport
from registry.codec import TrustAnchor, decode_anchor
from registry.errors import ConfigurationError
from serai.errors import ConfigError, ErrorCode, InvalidIdentifierError
from serai.identifiers import SubsystemId
from serai.merkle import leaf_hash

__all__ = ["register"]

_T = TypeVar("_T")
#: Records ``show`` lists without ``--limit``.
DEFAULT_SHOW_LIMIT = 100


def register(subparsers: Any) -> None:
    """Add ``serai log`` and its subcommands."""
    log = subparsers.add_parser(
        "log",
        help="the message log: show, prove, export, verify, prune",
        description="Read, prove, export, verify and prune a gateway's message log.",
    )
    sub = log.add_subparsers(dest="log_command", metavar="SUBCOMMAND", required=True)
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument(
        "--config", type=Path, required=True, metavar="FILE", help="the gateway's gateway.toml"
    )
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="machine-readable output")

    show = sub.add_parser("show", parents=[as_json], help="list records")
    source = show.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--config", type=Path, metavar="FILE", help="the gateway's gateway.toml (live log)"
    )
    source.add_argument(
        "--bundle", type=Path, metavar="ZIP", help="an evidence bundle (listed, not verified)"
    )
    show.add_argument("--message-id", metavar="ID", help="only this message id")
    show.add_argument(
        "--client", type=_subsystem, metavar="SUBSYSTEM", help="only requests of this client"
    )
    show.add_argument(
        "--service", type=_subsystem, metavar="SUBSYSTEM", help="only requests to this provider"
    )
    show.add_argument(
        "--since",
        type=_time,
        metavar="TIME",
        help="appended (bundle: created) at or after TIME (ISO 8601)",
    )
    show.add_argument(
        "--until", type=_time, metavar="TIME", help="appended (bundle: created) before TIME"
    )
    show.add_argument(
        "--start", type=_index, default=0, metavar="INDEX", help="from this index on (default 0)"
    )
    show.add_argument(
        "--limit",
        type=_positive,
        default=DEFAULT_SHOW_LIMIT,
        metavar="N",
        help=f"at most N records (default {DEFAULT_SHOW_LIMIT})",
    )
    show.set_defaults(handler=_cmd_show)

    prove = sub.add_parser(
        "prove", parents=[config, as_json], help="inclusion proof of a record, checked"
    )
    prove.add_argument("index", type=_index, metavar="INDEX")
    prove.set_defaults(handler=_cmd_prove)

    export = sub.add_parser(
        "export", parents=[config, as_json], help="write an evidence bundle of a range"
    )
    export.add_argument(
        "--from",
        dest="range_from",
        metavar="INDEX|TIME",
        help="first record: an index or a time (default: where the last export ended)",
    )
    export.add_argument(
        "--to",
        dest="range_to",
        metavar="INDEX|TIME",
        help="end (exclusive): an index or a time (default: the latest time-stamped size)",
    )
    export.add_argument(
        "--out", type=Path, required=True, metavar="ZIP", help="the bundle to write"
    )
    export.add_argument(
        "--head-interval-s",
        type=float,
        default=DEFAULT_HEAD_INTERVAL_S,
        metavar="S",
        help="keep one time-stamped tree head per this many seconds (0: all; default 60)",
    )
    export.set_defaults(handler=_cmd_export)

    verify = sub.add_parser(
        "verify", parents=[as_json], help="check a live log (--config) or a bundle (--bundle)"
    )
    verify.add_argument(
        "--config", type=Path, metavar="FILE", help="the gateway's gateway.toml (live log)"
    )
    verify.add_argument("--bundle", type=Path, metavar="ZIP", help="an evidence bundle (offline)")
    verify.add_argument(
        "--anchor", type=Path, metavar="FILE", help="the trust anchor (with --bundle)"
    )
    verify.add_argument(
        "--log-id",
        metavar="GATEWAY_ID",
        help="with --bundle: the gateway whose log it must be (e.g. UZ/GOV/X/gw:main)",
    )
    verify.add_argument(
        "--from",
        dest="range_from",
        type=_index,
        default=0,
        metavar="INDEX",
        help="with --config: first record checked (default 0)",
    )
    verify.add_argument(
        "--to",
        dest="range_to",
        type=_index,
        default=None,
        metavar="INDEX",
        help="with --config: end of the records checked, exclusive (default: all)",
    )
    verify.set_defaults(handler=_cmd_verify)

    prune = sub.add_parser(
        "prune", parents=[config], help="drop the bodies of exported records appended before"
    )
    prune.add_argument(
        "--before",
        type=_time,
        required=True,
        metavar="TIME",
        help="records appended before TIME (ISO 8601), if exported",
    )
    prune.set_defaults(handler=_cmd_prune)


# -- show -----------------------------------------------------------------------------------


def _cmd_show(args: argparse.Namespace) -> int:
    async def run(log: MessageLog) -> list[StoredRecord]:
        found: list[StoredRecord] = []
        start = args.start
        while len(found) < args.limit:
            page = await log.records(
                message_id=args.message_id,
                client=args.client,
                service=args.service,
                since=args.since,
                until=args.until,
                start=start,
                limit=min(MAX_PAGE, args.limit - len(found)),
            )
            found += page
            if not page:
                break
            start = page[-1].index + 1
        return found

    if args.bundle is not None:
        rows = _bundle_rows(args.bundle, args)
    else:
        rows = [_show_row(r) for r in _with_log(load_config(args.config), run)]
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    when = "CREATED (UTC)" if args.bundle is not None else "APPENDED (UTC)"
    header = ["INDEX", when, "KIND", "MESSAGE ID", "CLIENT", "SERVICE/METHOD"]
    header += ["OUTCOME", "BODY"]
    table = [header] + [
        [
            str(row["index"]),
            str(row["created_at"] if args.bundle is not None else row["appended_at"]),
            str(row["kind"]),
            str(row["message_id"]),
            str(row["client"] or "-"),
            f"{row['service']}{row['method']}" if row["service"] else "-",
            str(row["outcome"]),
            str(row["body"]),
        ]
        for row in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    if len(rows) == args.limit:
        print(f"(first {args.limit} shown; --start {int(str(rows[-1]['index'])) + 1} for more)")
    return 0


def _bundle_rows(path: Path, args: argparse.Namespace) -> list[dict[str, object]]:
    """The rows of ``show`` for the records of a bundle, filtered as for a live log, by
    what the records claim (their signed headers are not verified here)."""
    rows: list[dict[str, object]] = []
    with BundleReader.open(path) as bundle:
        manifest = bundle.manifest
        for index in range(max(args.start, manifest.first_index), manifest.end_index):
            try:
                record = decode_canonical(bundle.read(record_path(index)))
            except GatewayError as exc:  # BundleError, LogRecordFormatError
                print(f"serai: warning: record {index}: {exc.message}", file=sys.stderr)
                continue
            row = _record_row(index, record)
            created = row["created_at_value"]
            del row["created_at_value"]
            if (
                (args.message_id is not None and record.message_id != args.message_id)
                or (args.client is not None and row["client"] != args.client)
                or (args.service is not None and row["service"] != args.service)
                or (args.since is not None and (created is None or created < args.since))
                or (args.until is not None and (created is None or created >= args.until))
            ):
                continue
            rows.append(row)
            if len(rows) == args.limit:
                break
    return rows


def _record_row(index: int, record: LogRecord) -> dict[str, object]:
    """A bundle record's row; ``created_at_value`` is the header's time as a datetime."""
    client = service = method = None
    created: dt.datetime | None = None
    if record.kind is not RecordKind.ADMIN_CHANGE:
        parts = record.header_jws.split(b".")
        try:
            payload = base64.urlsafe_b64decode(parts[1] + b"=" * (-len(parts[1]) % 4))
            if record.kind.is_request:
                request = RequestHeader.decode(payload)
                client, created = str(request.client), request.created_at
                service = str(request.service.subsystem)
                method = request.service.method_path
            else:
                created = ResponseHeader.decode(payload).created_at
        except (IndexError, ValueError, binascii.Error, GatewayError):
            pass  # shown without them; verify says what is wrong
    return {
        "index": index,
        "appended_at": None,
        "created_at": _iso(created),
        "created_at_value": created,
        "kind": record.kind.name.lower(),
        "message_id": record.message_id,
        "client": client,
        "service": service,
        "method": method,
        "outcome": record.outcome,
        "body": "digest only" if record.body is None else "kept",
    }


def _show_row(stored: StoredRecord) -> dict[str, object]:
    if stored.leaf is None:
        body = "pruned"
    else:
        try:
            body = "digest only" if decode_canonical(stored.leaf).body is None else "kept"
        except GatewayError:
            body = "unreadable"  # `serai log verify` says what is wrong with it
    return {
        "index": stored.index,
        "appended_at": _iso(stored.appended_at),
        "kind": stored.kind.name.lower(),
        "message_id": stored.message_id,
        "client": stored.client,
        "service": stored.service,
        "method": stored.method,
        "outcome": stored.outcome,
        "body": body,
    }


# -- prove ----------------------------------------------------------------------------------


def _cmd_prove(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    timeline = _timeline(config)

    async def run(log: MessageLog) -> tuple[dict[str, Any], VerificationReport]:
        head = await log.latest_tree_head(timestamped=True)
        if head is None:
            raise MessageLogError(
                "the log has no time-stamped tree head yet", code=ErrorCode.FAILED_PRECONDITION
            )
        if args.index >= head.tree_size:
            raise MessageLogError(
                f"record {args.index} is not covered by the latest time-stamped tree head "
                f"(size {head.tree_size}); try again after the next time-stamp",
                code=ErrorCode.FAILED_PRECONDITION,
            )
        stored = await log.record(args.index)
        proof = await log.inclusion_proof(args.index, head.tree_size)
        verifier = EvidenceVerifier(log_id=log.log_id, timeline=timeline)
        checked = verifier.check_head(head.signed_head, head.timestamp_token)
        root = checked.root if checked is not None else head.root
        stamped_at = checked.timestamped_at if checked is not None else None
        if stored.leaf is None:
            verifier.check_pruned(
                args.index, stored.leaf_hash, proof=proof, tree_size=head.tree_size, root=root
            )
            hashed = stored.leaf_hash
        else:
            verifier.check_record(
                args.index,
                stored.leaf,
                proof=proof,
                tree_size=head.tree_size,
                root=root,
                covered_at=stamped_at,
            )
            hashed = leaf_hash(stored.leaf)
        assert head.timestamp_token is not None  # asked for a time-stamped head
        return {
            "log_id": log.log_id,
            "index": args.index,
            "kind": stored.kind.name.lower(),
            "message_id": stored.message_id,
            "leaf_hash": hashed.hex(),
            "tree_size": head.tree_size,
            "root_hash": root.hex(),
            "head_time": _iso(checked.head.time) if checked is not None else None,
            "timestamp_time": _iso(stamped_at) if stamped_at is not None else None,
            "proof": [h.hex() for h in proof],
            "signed_tree_head": head.signed_head.decode("ascii", "replace"),
            "timestamp_token": base64.b64encode(head.timestamp_token).decode("ascii"),
            "pruned": stored.leaf is None,
        }, verifier.report

    proof, report = _with_log(config, run)
    proof["verified"] = report.ok
    if args.json:
        proof["failures"] = [str(f) for f in report.failures]
        print(json.dumps(proof))
        return 0 if report.ok else 1
    print(f"log          {proof['log_id']}")
    print(f"record       {proof['index']} ({proof['kind']}, message {proof['message_id']})")
    print(f"leaf hash    {proof['leaf_hash']}")
    print(f"tree head    size {proof['tree_size']}, root {proof['root_hash']}")
    print(f"head time    {proof['head_time'] or '-'} (the gateway's claim)")
    print(f"time-stamp   {proof['timestamp_time'] or '-'} (the TSA's genTime)")
    print(f"proof        {len(proof['proof'])} hashes, leaf to root:")
    for position, digest in enumerate(proof["proof"]):
        print(f"  {position:2d} {digest}")
    _print_failures(report)
    if report.ok:
        checked_what = "inclusion, tree-head signature and time-stamp"
        if not proof["pruned"]:
            checked_what += ", record signature, certificate and OCSP response"
        print(f"verified     {checked_what}")
    return 0 if report.ok else 1


# -- export ---------------------------------------------------------------------------------


def _cmd_export(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    timeline = _timeline(config)

    async def run(log: MessageLog) -> tuple[ExportResult, VerificationReport, int | None]:
        first = await _range_start(log, args.range_from)
        end = await _range_end(log, args.range_to)
        if end <= first:
            raise BundleError(
                f"nothing to export: the range {first}..{end} is empty (records before "
                f"{first} were exported already; time-stamps cover {end} records)"
            )
        result = await export_bundle(
            log,
            timeline=timeline,
            out=args.out,
            first_index=first,
            end_index=end,
            head_interval_s=args.head_interval_s,
        )
        report = await asyncio.to_thread(verify_bundle, result.path, anchor=timeline.anchor)
        export_id = None
        if report.ok:
            export_id = await log.add_export(
                first_index=first, end_index=end, destination=str(result.path)
            )
        return result, report, export_id

    result, report, export_id = _with_log(config, run)
    if args.json:
        print(
            json.dumps(
                {
                    "path": str(result.path),
                    "sha256": result.sha256,
                    "first_index": result.first_index,
                    "end_index": result.end_index,
                    "tree_heads": list(result.tree_heads),
                    "configurations": list(result.configurations),
                    "export_id": export_id,
                    "verification": report.as_json(),
                }
            )
        )
    else:
        print(
            f"wrote {result.path}: records {result.first_index}..{result.end_index - 1} "
            f"({result.records}), {len(result.tree_heads)} time-stamped tree heads, "
            f"{len(result.configurations)} global configurations"
        )
        print(f"SHA-256 {result.sha256}")
        _print_failures(report)
        print(f"verified: {report.summary()}")
        if export_id is not None:
            print(f"recorded as export {export_id}: `serai log prune` may now drop these bodies")
        else:
            print("NOT recorded as an export (the bundle does not verify): nothing will be pruned")
    return 0 if report.ok else 1


async def _range_start(log: MessageLog, value: str | None) -> int:
    if value is None:
        exports = await log.exports()
        return max((e.end_index for e in exports), default=0)
    if value.isdigit():
        return int(value)
    first = await log.records(since=_time(value), limit=1)
    if not first:
        raise BundleError(f"no record was appended at or after {value}")
    return first[0].index


async def _range_end(log: MessageLog, value: str | None) -> int:
    if value is None:
        head = await log.latest_tree_head(timestamped=True)
        if head is None:
            raise BundleError(
                "the log has no time-stamped tree head yet", code=ErrorCode.FAILED_PRECONDITION
            )
        return head.tree_size
    if value.isdigit():
        return int(value)
    after = await log.records(since=_time(value), limit=1)
    if after:
        return after[0].index
    size, _ = await log.tree_state()
    return size


# -- verify ---------------------------------------------------------------------------------


def _cmd_verify(args: argparse.Namespace) -> int:
    if (args.config is None) == (args.bundle is None):
        raise ConfigError("give either --config (a live log) or --bundle with --anchor")
    if args.bundle is not None:
        if args.anchor is None:
            raise ConfigError("--bundle needs --anchor, the trust anchor you trust")
        report = verify_bundle(args.bundle, anchor=_anchor(args.anchor), log_id=args.log_id)
    else:
        if args.anchor is not None:
            raise ConfigError("--anchor goes with --bundle; a live log uses its gateway's")
        config = load_config(args.config)
        timeline = _timeline(config)
        try:
            report = _with_log(
                config,
                lambda log: verify_log(
                    log, timeline=timeline, start=args.range_from, end=args.range_to
                ),
            )
        except LogCorruptError as exc:
            # The store refuses to open a log that breaks its invariants: that is a
            # finding of the verification, not a usage error.
            report = VerificationReport()
            report.failures.append(Failure("log", "store", exc.message))
    if args.json:
        print(json.dumps(report.as_json()))
    else:
        _print_failures(report)
        print(report.summary())
    return 0 if report.ok else 1


# -- prune ----------------------------------------------------------------------------------


def _cmd_prune(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    result = _with_log(config, lambda log: prune_exported(log, before=args.before))
    if not result.count:
        print(f"nothing to prune before {_iso(args.before)}")
    else:
        print(
            f"pruned the bodies of {result.count} records ({result.first_index}.."
            f"{result.last_index}, appended up to {_iso(result.newest_pruned_at)}); their "
            "leaf hashes, the tree and the tree heads are kept"
        )
    return 0


# -- helpers --------------------------------------------------------------------------------


def _with_log(config: GatewayConfig, work: Callable[[MessageLog], Awaitable[_T]]) -> _T:
    """Open the gateway's log, run ``work`` on it, and close it."""
    location: str | Path
    if config.message_log_url is not None:
        location = config.message_log_url
    else:
        location = config.message_log
        if not location.is_file():
            raise ConfigError(f"{config.path}: message_log: there is no message log at {location}")
    options = MessageLogOptions(synchronous=Synchronous(config.message_log_synchronous.upper()))

    async def run() -> _T:
        log = await MessageLog.open(location, log_id=config.gateway_id, options=options)
        try:
            return await work(log)
        finally:
            await log.close()

    return asyncio.run(run())


def _anchor(path: Path) -> TrustAnchor:
    try:
        return decode_anchor(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read the trust anchor {path}: {exc.strerror}") from exc
    except ConfigurationError as exc:
        raise ConfigError(f"{path}: {exc.message}") from exc


def _timeline(config: GatewayConfig) -> ConfigurationTimeline:
    """The gateway's archived configurations, checked against its anchor; those that do
    not verify are reported on stderr and left out."""
    timeline = ConfigurationTimeline(_anchor(config.anchor))
    archived = read_archive(config.globalconf_cache_dir)
    for name, exc in add_all(timeline, [(str(p), data) for p, data in archived]):
        print(f"serai: warning: {name}: {exc.code.value}: {exc.message}", file=sys.stderr)
    if not len(timeline):
        print(
            f"serai: warning: no verified global configuration under "
            f"{config.globalconf_cache_dir}; signatures cannot be checked",
            file=sys.stderr,
        )
    return timeline


def _print_failures(report: VerificationReport) -> None:
    for failure in report.failures:
        print(f"FAIL {failure}")


def _time(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO 8601 time, got {text!r}") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _index(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a record index (0, 1, ...), got {text!r}")
    return int(text)


def _positive(text: str) -> int:
    value = _index(text)
    if not 1 <= value <= 1_000_000:
        raise argparse.ArgumentTypeError("expected 1 to 1000000")
    return value


def _subsystem(text: str) -> str:
    try:
        return str(SubsystemId.parse(text))
    except InvalidIdentifierError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def _iso(at: dt.datetime | None) -> str:
    if at is None:
        return "-"
    return at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
