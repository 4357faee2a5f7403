"""The typed TOML readers every service configuration is built with: each value read or
refused, and every refusal naming the file and the key."""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from serai.errors import ConfigError, ErrorCode
from serai.identifiers import parse_instance
from serai.tomlconf import TomlReader, parse_toml, read_config_text, toml_string

CONFIG = Path("/etc/serai/service.toml")


def _reader(**data: Any) -> TomlReader:
    return TomlReader(CONFIG, data)


# (data, read, expected value)
READS: dict[str, tuple[dict[str, Any], Callable[[TomlReader], object], object]] = {
    "string": ({"k": "v"}, lambda r: r.string("k"), "v"),
    "string of a nested table": ({}, lambda r: r.string("k", {"k": "v"}, "t[0].k"), "v"),
    "optional string absent": ({}, lambda r: r.optional_string("k"), None),
    "optional string present": ({"k": "v"}, lambda r: r.optional_string("k"), "v"),
    "string list": ({"k": ["a", "b"]}, lambda r: r.string_list("k"), ["a", "b"]),
    "boolean": ({"k": True}, lambda r: r.boolean("k", default=False), True),
    "boolean default": ({}, lambda r: r.boolean("k", default=True), True),
    "integer": ({"k": 7}, lambda r: r.integer("k", 1), 7),
    "integer default": ({}, lambda r: r.integer("k", 3), 3),
    "number from an integer": ({"k": 2}, lambda r: r.number("k", 1.0), 2.0),
    "number": ({"k": 0.5}, lambda r: r.number("k", 1.0), 0.5),
    "number default": ({}, lambda r: r.number("k", 60.0), 60.0),
    "checked": ({"k": "UZ"}, lambda r: r.checked("k", parse_instance, r.string("k")), "UZ"),
    "relative file": ({}, lambda r: r.file("keys/a.key"), Path("/etc/serai/keys/a.key")),
    "absolute file": ({}, lambda r: r.file("/var/a.key"), Path("/var/a.key")),
}


@pytest.mark.parametrize("case", sorted(READS))
def test_reads(case: str) -> None:
    data, read, expected = READS[case]
    assert read(_reader(**data)) == expected


# (data, read, key named in the refusal, words of the refusal)
REFUSALS: dict[str, tuple[dict[str, Any], Callable[[TomlReader], object], str, str]] = {
    "string missing": ({}, lambda r: r.string("k"), "k", "expected a non-empty string"),
    "string empty": ({"k": ""}, lambda r: r.string("k"), "k", "expected a non-empty string"),
    "string not a string": ({"k": 1}, lambda r: r.string("k"), "k", "non-empty string"),
    "nested string named by where": (
        {},
        lambda r: r.string("k", {"k": 3}, "t[2].k"),
        "t[2].k",
        "expected a non-empty string",
    ),
    "optional string empty": ({"k": ""}, lambda r: r.optional_string("k"), "k", "non-empty"),
    "string list missing": ({}, lambda r: r.string_list("k"), "k", "non-empty list"),
    "string list empty": ({"k": []}, lambda r: r.string_list("k"), "k", "non-empty list"),
    "string list with a number": ({"k": ["a", 1]}, lambda r: r.string_list("k"), "k", "strings"),
    "string list with an empty string": (
        {"k": ["a", ""]},
        lambda r: r.string_list("k"),
        "k",
        "non-empty strings",
    ),
    "boolean a string": ({"k": "yes"}, lambda r: r.boolean("k", default=False), "k", "true or"),
    "integer zero": ({"k": 0}, lambda r: r.integer("k", 1), "k", "expected a positive integer"),
    "integer negative": ({"k": -1}, lambda r: r.integer("k", 1), "k", "positive integer"),
    "integer a float": ({"k": 1.5}, lambda r: r.integer("k", 1), "k", "positive integer"),
    "integer a boolean": ({"k": True}, lambda r: r.integer("k", 1), "k", "positive integer"),
    "number zero": ({"k": 0}, lambda r: r.number("k", 1.0), "k", "positive number of seconds"),
    "number negative": ({"k": -0.5}, lambda r: r.number("k", 1.0), "k", "positive number"),
    "number NaN": ({"k": math.nan}, lambda r: r.number("k", 1.0), "k", "positive number"),
    "number a boolean": ({"k": True}, lambda r: r.number("k", 1.0), "k", "positive number"),
    "number a string": ({"k": "60"}, lambda r: r.number("k", 1.0), "k", "positive number"),
    "checked names the key": (
        {"k": "not an instance!"},
        lambda r: r.checked("k", parse_instance, r.string("k")),
        "k",
        "instance",
    ),
    "unknown key, the first sorted": (
        {"zeta": 1, "alpha": 1, "known": 1},
        lambda r: r.refuse_unknown(frozenset({"known"}), docs="docs/x.md"),
        "alpha",
        "unknown key (see docs/x.md for the keys)",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusals_name_file_and_key(case: str) -> None:
    data, read, key, words = REFUSALS[case]
    with pytest.raises(ConfigError) as info:
        read(_reader(**data))
    assert info.value.code is ErrorCode.INVALID_CONFIG
    assert info.value.message.startswith(f"{CONFIG}: key {key!r}: ")
    assert words in info.value.message


def test_known_keys_pass() -> None:
    _reader(known=1).refuse_unknown(frozenset({"known", "other"}), docs="docs/x.md")


def test_read_config_text(tmp_path: Path) -> None:
    path = tmp_path / "service.toml"
    path.write_text('k = "ü"\n', encoding="utf-8")
    assert read_config_text(path, created_by="serai x init") == 'k = "ü"\n'


@pytest.mark.parametrize(
    ("setup", "words"),
    [
        ("missing", "no such file (create one with `serai x init`)"),
        ("directory", "cannot be read"),
        ("not utf-8", "cannot be read"),
    ],
)
def test_read_config_text_refusals(tmp_path: Path, setup: str, words: str) -> None:
    path = tmp_path / "service.toml"
    if setup == "directory":
        path.mkdir()
    elif setup == "not utf-8":
        path.write_bytes(b'k = "\xff"\n')
    with pytest.raises(ConfigError) as info:
        read_config_text(path, created_by="serai x init")
    assert info.value.message.startswith(f"{path}: ")
    assert words in info.value.message


def test_parse_toml() -> None:
    assert parse_toml(CONFIG, 'a = 1\n[[t]]\nb = "c"\n') == {"a": 1, "t": [{"b": "c"}]}
    with pytest.raises(ConfigError) as info:
        parse_toml(CONFIG, "a = = 1")
    assert info.value.message.startswith(f"{CONFIG}: not valid TOML: ")


@given(st.text(alphabet=st.characters(exclude_categories=("Cc", "Cs"))))
def test_toml_string_round_trip(value: str) -> None:
    assert tomllib.loads(f"k = {toml_string(value)}")["k"] == value
