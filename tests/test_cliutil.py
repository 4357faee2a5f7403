"""The command-line edge helpers shared by the service commands."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import pytest

from serai.cliutil import (
    format_address,
    log_event,
    parse_listen,
    read_passphrase,
    termination_event,
)
from serai.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8890", ("127.0.0.1", 8890)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:8890", ("::1", 8890)),
    ],
)
def test_parse_listen_accepts(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected
    assert parse_listen(format_address(*expected)) == expected


@pytest.mark.parametrize("text", ["", "8890", ":8890", "host:", "host:port", "host:70000"])
def test_parse_listen_refuses(text: str) -> None:
    with pytest.raises(ConfigError, match="expected HOST:PORT"):
        parse_listen(text)


def test_passphrase_is_the_first_line(tmp_path: Path) -> None:
    path = tmp_path / "pin"
    path.write_bytes(b"s3cret pass\r\nignored\n")
    assert read_passphrase(path) == b"s3cret pass"
    assert read_passphrase(None) is None


@pytest.mark.parametrize("content", [b"", b"\n", b"\nsecond"])
def test_empty_passphrase_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "pin"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match="is empty"):
        read_passphrase(path)


def test_missing_passphrase_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read passphrase file"):
        read_passphrase(tmp_path / "absent")


def test_log_event_is_one_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    log_event("thing_happened", port=8890, url="http://x/")
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert json.loads(err) == {"event": "thing_happened", "port": 8890, "url": "http://x/"}


async def test_termination_event_is_set_by_sigterm() -> None:
    with termination_event() as stop:
        assert not stop.is_set()
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(stop.wait(), timeout=10)
    # Outside the block the handler is gone again.
    assert signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, signal.default_int_handler)
