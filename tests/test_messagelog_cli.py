"""``serai log show|prove|export|verify|prune`` (gateway.messagelog.cli) and the retention
rules (gateway.messagelog.retention), on logs of real records (tests/messagelogharness.py)
in SQLite and PostgreSQL, through ``serai.cli.main`` as a user types them, and once as a
separate process beside a gateway that keeps appending.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import sqlite3
import sys
from pathlib import Path

import pytest

import gateway.messagelog.cli as cli_module
import gateway.messagelog.retention as retention_module
from gateway.commit import canonical_bytes
from gateway.config import render_config
from gateway.messagelog import MessageLog
from serai.cli import main
from serai.merkle import leaf_hash, verify_inclusion
from serai.treehead import TreeHeadSigner
from tests.messagelogharness import (
    LOG_ID,
    Built,
    Source,
    build_log,
    exchange_records,
    log_records,
    pg_url,
    sign_head,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    return exchange_records(tmp_path_factory.mktemp("federation"))


@pytest.fixture
def built(source: Source, tmp_path: Path) -> Built:
    return build_log(source, tmp_path / "gateway")


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def later() -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)).isoformat()


def stored_leaves(built: Built) -> list[bytes | None]:
    assert isinstance(built.database, Path)
    with sqlite3.connect(built.database) as db:
        return [row[0] for row in db.execute("SELECT leaf FROM records ORDER BY leaf_index")]


def tree_state(built: Built) -> tuple[int, bytes]:
    async def read() -> tuple[int, bytes]:
        log = await MessageLog.open(built.database, log_id=LOG_ID)
        try:
            return await log.tree_state()
        finally:
            await log.close()

    return asyncio.run(read())


def grow(built: Built, source: Source, count: int = 4) -> int:
    """Append ``count`` more records and time-stamp a head over them; the new size."""

    async def append() -> int:
        log = await MessageLog.open(built.database, log_id=LOG_ID)
        try:
            await log.append_all(list(source.records[:count]))
            signer = TreeHeadSigner(key=source.log_key, certificate_chain=source.log_chain)
            return await sign_head(log, source, signer)
        finally:
            await log.close()

    return asyncio.run(append())


def test_public_surface() -> None:
    assert cli_module.__all__ == ["register"]
    assert set(retention_module.__all__) == {"PruneRefusedError", "PruneResult", "prune_exported"}


# -- show -----------------------------------------------------------------------------------


def test_show_lists_records(built: Built, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "log", "show", "--config", built.config)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "INDEX",
        "APPENDED",
        "(UTC)",
        "KIND",
        "MESSAGE",
        "ID",
        "CLIENT",
        "SERVICE/METHOD",
        "OUTCOME",
        "BODY",
    ]
    assert len(lines) == 11
    first = lines[1].split()
    assert first[0] == "0"
    assert first[2:] == [
        "request_sent",
        built.records[0].message_id,
        "UZ/GOV/MINJUST/property",
        "UZ/GOV/CADASTRE/registry/cadastre.v1.Cadastre/GetParcel",
        "ok",
        "kept",
    ]
    assert lines[2].split()[2:4] == ["response_received", built.records[0].message_id]
    assert lines[2].split()[-4:] == ["-", "-", "ok", "kept"]
    assert lines[9].split()[2:4] == ["admin_change", "acl-1"]
    assert lines[10].endswith("digest only")


@pytest.mark.parametrize(
    ("options", "indices"),
    [
        ([], list(range(10))),
        (["--client", "UZ/GOV/MINJUST/property"], [0, 2, 4, 6, 9]),
        (["--service", "UZ/GOV/CADASTRE/registry"], [0, 2, 4, 6, 9]),
        (["--service", "UZ/GOV/STC/tax"], []),
        (["--start", "8"], [8, 9]),
        (["--limit", "3"], [0, 1, 2]),
        (["--since", "2000-01-01"], list(range(10))),
        (["--until", "2000-01-01T00:00:00Z"], []),
    ],
)
def test_show_filters(
    built: Built, capsys: pytest.CaptureFixture[str], options: list[str], indices: list[int]
) -> None:
    code, out, _ = run(capsys, "log", "show", "--config", built.config, "--json", *options)
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [row["index"] for row in rows] == indices


def test_show_by_message_id(built: Built, capsys: pytest.CaptureFixture[str]) -> None:
    message_id = built.records[0].message_id
    code, out, _ = run(
        capsys, "log", "show", "--config", built.config, "--json", "--message-id", message_id
    )
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["index"], r["kind"], r["body"]) for r in rows] == [
        (0, "request_sent", "kept"),
        (1, "response_received", "kept"),
        (9, "request_sent", "digest only"),
    ]


def test_show_lists_an_unreadable_record_as_such(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    assert isinstance(built.database, Path)
    with sqlite3.connect(built.database) as db:
        db.execute("UPDATE records SET leaf = ? WHERE leaf_index = 3", (b"garbage",))
    code, out, _ = run(capsys, "log", "show", "--config", built.config, "--json")
    assert code == 0
    assert [json.loads(line)["body"] for line in out.splitlines()][3] == "unreadable"


def test_show_says_where_to_continue(built: Built, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "log", "show", "--config", built.config, "--limit", "4")
    assert code == 0
    assert out.splitlines()[-1] == "(first 4 shown; --start 4 for more)"


def test_show_refuses_a_missing_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "gateway.toml").write_text(
        render_config(gateway_id=LOG_ID, peer_address="127.0.0.1:5501")
    )
    code, _, err = run(capsys, "log", "show", "--config", tmp_path / "gateway.toml")
    assert code == 2
    assert "there is no message log at" in err
    assert not (tmp_path / "messagelog.db").exists()


def test_show_lists_a_bundle(
    built: Built, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "log", "export", "--config", built.config, "--out", tmp_path / "b")
    assert code == 0, out
    argv: list[str | Path] = ["log", "show", "--bundle", tmp_path / "b", "--json"]
    code, out, _ = run(capsys, *argv)
    assert code == 0
    live = run(capsys, "log", "show", "--config", built.config, "--json")[1].splitlines()
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 10
    for row, other in zip(rows, map(json.loads, live), strict=True):
        assert row["created_at"] <= other["appended_at"]
        del row["created_at"], row["appended_at"], other["appended_at"]
        assert row == other
    code, out, _ = run(capsys, *argv, "--client", "UZ/GOV/MINJUST/property", "--start", "3")
    assert [json.loads(line)["index"] for line in out.splitlines()] == [4, 6, 9]
    code, out, _ = run(capsys, "log", "show", "--bundle", tmp_path / "b", "--limit", "2")
    assert out.splitlines()[0].split()[:3] == ["INDEX", "CREATED", "(UTC)"]
    assert out.splitlines()[-1] == "(first 2 shown; --start 2 for more)"


# -- prove ----------------------------------------------------------------------------------


def test_prove_prints_a_checked_proof(built: Built, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "log", "prove", "5", "--config", built.config)
    assert code == 0
    assert "record       5 (response_received" in out
    assert "tree head    size 10, root " in out  # the latest time-stamped head
    assert out.splitlines()[-1].startswith("verified     inclusion, tree-head signature")
    code, out, _ = run(capsys, "log", "prove", "5", "--config", built.config, "--json")
    assert code == 0
    proof = json.loads(out)
    assert proof["verified"] is True
    assert proof["tree_size"] == 10  # the latest time-stamped head
    leaf = leaf_hash(canonical_bytes(built.records[5]))
    assert proof["leaf_hash"] == leaf.hex()
    verify_inclusion(
        leaf, 5, 10, [bytes.fromhex(h) for h in proof["proof"]], bytes.fromhex(proof["root_hash"])
    )
    assert proof["timestamp_time"].endswith("Z")


def test_prove_refuses_a_record_no_time_stamp_covers(
    source: Source, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    built = build_log(source, tmp_path, heads_after=(3, 7), timestamp=(True, False))
    code, _, err = run(capsys, "log", "prove", "5", "--config", built.config)
    assert code == 2
    assert "record 5 is not covered by the latest time-stamped tree head (size 3)" in err


# -- verify ---------------------------------------------------------------------------------


def test_verify_a_live_log(built: Built, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "log", "verify", "--config", built.config)
    assert code == 0
    assert out.splitlines() == [
        f"OK: log {LOG_ID}: 10 records, 3 tree heads (3 time-stamped), 2 consistency proofs, "
        "1 global configurations"
    ]


def test_verify_names_a_tampered_record(built: Built, capsys: pytest.CaptureFixture[str]) -> None:
    leaf = canonical_bytes(built.records[4])
    assert isinstance(built.database, Path)
    with sqlite3.connect(built.database) as db:
        db.execute(
            "UPDATE records SET leaf = ? WHERE leaf_index = 4", (leaf.replace(b"ok", b"no"),)
        )
    code, out, _ = run(capsys, "log", "verify", "--config", built.config)
    assert code == 1
    assert "FAIL record 4: inclusion: inclusion proof of index 4 in size 7" in out
    assert out.splitlines()[-1].startswith("FAILED: ")
    code, out, _ = run(capsys, "log", "verify", "--config", built.config, "--json")
    assert code == 1
    report = json.loads(out)
    assert report["ok"] is False
    assert {f["subject"] for f in report["failures"]} == {"record 4"}


def test_verify_reports_a_log_the_store_refuses(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    assert isinstance(built.database, Path)
    with sqlite3.connect(built.database) as db:
        db.execute("UPDATE records SET leaf = ? WHERE leaf_index = 9", (b"changed",))
    code, out, _ = run(capsys, "log", "verify", "--config", built.config)
    assert code == 1
    assert "FAIL log: store: " in out
    assert "record 9's bytes do not match its hash" in out


def test_verify_without_the_archive_warns_and_fails(
    source: Source, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    built = build_log(source, tmp_path, archive=False)
    code, out, err = run(capsys, "log", "verify", "--config", built.config)
    assert code == 1
    assert "no verified global configuration under" in err
    assert "no global configuration in the evidence was in force" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["log", "verify"], "give either --config (a live log) or --bundle with --anchor"),
        (["log", "verify", "--bundle", "b.zip"], "--bundle needs --anchor"),
        (
            ["log", "verify", "--config", "g.toml", "--bundle", "b.zip"],
            "give either --config (a live log) or --bundle",
        ),
    ],
)
def test_verify_options(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert message in err


# -- export and prune -----------------------------------------------------------------------


def test_export_prune_and_keep_growing(
    built: Built, source: Source, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    size, root = tree_state(built)

    # Nothing was exported: pruning is refused, precisely, and prunes nothing.
    code, _, err = run(capsys, "log", "prune", "--config", built.config, "--before", later())
    assert code == 2
    assert "failed_precondition: 10 records appended before" in err
    assert "are in no export (the first is 0, the last 9)" in err
    assert "serai log export --from 0 --to 10" in err
    assert None not in stored_leaves(built)

    bundle = tmp_path / "evidence-1.zip"
    code, out, _ = run(capsys, "log", "export", "--config", built.config, "--out", bundle)
    assert code == 0, out
    assert f"wrote {bundle}: records 0..9 (10), 2 time-stamped tree heads" in out
    assert "recorded as export 1" in out

    code, out, _ = run(capsys, "log", "prune", "--config", built.config, "--before", later())
    assert code == 0
    assert out.startswith("pruned the bodies of 10 records (0..9, appended up to ")
    assert stored_leaves(built) == [None] * 10
    assert tree_state(built) == (size, root)  # hashes and nodes kept: the same tree

    code, out, _ = run(capsys, "log", "show", "--config", built.config, "--json")
    assert {json.loads(line)["body"] for line in out.splitlines()} == {"pruned"}
    code, out, _ = run(capsys, "log", "verify", "--config", built.config)
    assert code == 0, out
    assert "10 pruned (hash only)" in out
    code, out, _ = run(capsys, "log", "prove", "4", "--config", built.config)
    assert code == 0, out
    assert out.splitlines()[-1] == "verified     inclusion, tree-head signature and time-stamp"

    # The log keeps growing on top of the pruned records; the old bundle still verifies,
    # and the next export starts where the last one ended.
    assert grow(built, source) == 14
    code, out, _ = run(capsys, "log", "verify", "--config", built.config)
    assert code == 0, out
    code, out, _ = run(
        capsys, "log", "verify", "--bundle", bundle, "--anchor", built.anchor, "--json"
    )
    assert code == 0
    assert json.loads(out)["records"] == 10
    argv: list[str | Path] = ["log", "verify", "--bundle", bundle, "--anchor", built.anchor]
    argv.append("--log-id")
    code, out, _ = run(capsys, *argv, LOG_ID)
    assert code == 0
    code, out, _ = run(capsys, *argv, "UZ/GOV/STC/gw:main")
    assert code == 1
    assert f"FAIL bundle: bundle_structure: the bundle is of log {LOG_ID}, not UZ/GOV/STC" in out
    code, out, _ = run(
        capsys, "log", "export", "--config", built.config, "--out", tmp_path / "evidence-2.zip"
    )
    assert code == 0, out
    assert "records 10..13 (4)" in out
    assert "recorded as export 2" in out

    code, _, err = run(
        capsys, "log", "export", "--config", built.config, "--from", "0", "--out", tmp_path / "x"
    )
    assert code == 2
    assert "record 0 was pruned" in err
    assert not (tmp_path / "x").exists()
    code, out, _ = run(capsys, "log", "prune", "--config", built.config, "--before", "2000-01-01")
    assert code == 0
    assert out.startswith("nothing to prune before 2000-01-01T00:00:00Z")


def test_prune_refuses_records_outside_every_export(
    built: Built, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv: list[str | Path] = ["log", "export", "--config", built.config, "--to", "7"]
    argv += ["--out", tmp_path / "a.zip"]
    code, out, _ = run(capsys, *argv)
    assert code == 0, out
    assert "records 0..6 (7)" in out
    code, _, err = run(capsys, "log", "prune", "--config", built.config, "--before", later())
    assert code == 2
    assert "3 records appended before" in err
    assert "(the first is 7, the last 9)" in err
    assert None not in stored_leaves(built)


def test_export_by_time(built: Built, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv: list[str | Path] = ["log", "export", "--config", built.config, "--json"]
    argv += ["--out", tmp_path / "a.zip"]
    code, out, _ = run(capsys, *argv, "--from", "2000-01-01", "--to", later())
    assert code == 0, out
    result = json.loads(out)
    assert (result["first_index"], result["end_index"], result["export_id"]) == (0, 10, 1)
    assert result["verification"]["ok"] is True
    code, _, err = run(capsys, *argv, "--from", later())
    assert code == 2
    assert "no record was appended at or after" in err


def test_export_of_nothing_new_is_refused(
    built: Built, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "log", "export", "--config", built.config, "--out", tmp_path / "a")
    assert code == 0, out
    code, _, err = run(capsys, "log", "export", "--config", built.config, "--out", tmp_path / "b")
    assert code == 2
    assert "nothing to export" in err


def test_an_export_that_does_not_verify_is_not_recorded(
    source: Source, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    built = build_log(source, tmp_path / "gateway", archive=False)
    code, out, err = run(
        capsys, "log", "export", "--config", built.config, "--out", tmp_path / "a.zip"
    )
    assert code == 1
    assert "NOT recorded as an export" in out
    assert (tmp_path / "a.zip").exists()
    code, _, err = run(capsys, "log", "prune", "--config", built.config, "--before", later())
    assert code == 2
    assert "are in no export" in err


# -- beside a running gateway, and in PostgreSQL --------------------------------------------


def test_the_command_reads_beside_a_writer(built: Built, source: Source) -> None:
    """``serai log verify`` as its own process while this one keeps appending to the log."""

    async def scenario() -> tuple[int, bytes]:
        log = await MessageLog.open(built.database, log_id=LOG_ID)
        stop = asyncio.Event()

        async def keep_appending() -> None:
            while not stop.is_set():
                await log.append(source.records[0])
                await asyncio.sleep(0.005)

        writer = asyncio.create_task(keep_appending())
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "serai.cli",
                "log",
                "verify",
                "--config",
                str(built.config),
                cwd=REPO,
                env={**os.environ, "PYTHONPATH": str(REPO)},
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            out, _ = await asyncio.wait_for(process.communicate(), timeout=120)
        finally:
            stop.set()
            await writer
            await log.close()
        assert process.returncode is not None
        return process.returncode, out

    code, out = asyncio.run(scenario())
    assert code == 0, out.decode()
    assert b"OK: " in out
    assert b"not yet time-stamped" in out


@pytest.mark.postgres
def test_the_commands_on_postgresql(
    source: Source, tmp_path: Path, postgres_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    built = build_log(source, tmp_path, dsn=pg_url(postgres_dsn))
    code, out, _ = run(capsys, "log", "show", "--config", built.config, "--json")
    assert code == 0
    assert len(out.splitlines()) == len(log_records(source))
    code, out, _ = run(capsys, "log", "verify", "--config", built.config)
    assert code == 0, out
    code, out, _ = run(capsys, "log", "export", "--config", built.config, "--out", tmp_path / "b")
    assert code == 0, out
    code, out, _ = run(capsys, "log", "prune", "--config", built.config, "--before", later())
    assert code == 0, out
    assert out.startswith("pruned the bodies of 10 records")
    code, out, _ = run(capsys, "log", "verify", "--config", built.config)
    assert code == 0, out
    assert "10 pruned" in out
