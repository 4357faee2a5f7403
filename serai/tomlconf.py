"""Reading a service's TOML configuration file: the file's text, its parsed tables, and
typed values whose every refusal is a :class:`~serai.errors.ConfigError` naming the
file, the key and what was expected (``<file>: key '<key>': <expected>``).

Only the command-line edge reads configuration files; the typed configuration objects
built from a :class:`TomlReader` are what the rest of a service is given.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from serai.errors import ConfigError, SeraiError

__all__ = ["TomlReader", "parse_toml", "read_config_text", "toml_string"]

_T = TypeVar("_T")


def read_config_text(path: Path, *, created_by: str) -> str:
    """The text of the configuration file ``path``; a missing file's refusal says that
    the command ``created_by`` (e.g. ``serai gateway init``) creates one."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such file (create one with `{created_by}`)") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read: {exc}") from exc


def parse_toml(path: Path, text: str) -> dict[str, Any]:
    """``text`` (the content of ``path``) parsed as TOML."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc


def toml_string(value: str) -> str:
    """``value`` as a TOML basic string literal."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


class TomlReader:
    """Reads typed values out of the parsed TOML of ``path``, each refusal naming the
    file and the key. Relative paths are resolved against the file's directory.

    Readers that take ``data`` and ``where`` read a key of a nested table ``data`` and
    name it ``where`` (e.g. ``provider[0].address``) in a refusal.
    """

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.base = path.parent.resolve()
        self.data = data

    def fail(self, key: str, expected: str) -> ConfigError:
        """The refusal of ``key``: ``<file>: key '<key>': <expected>``."""
        return ConfigError(f"{self.path}: key {key!r}: {expected}")

    def refuse_unknown(self, known: frozenset[str], *, docs: str) -> None:
        """Refuse the first (sorted) top-level key not in ``known``, pointing at ``docs``."""
        unknown = sorted(set(self.data) - known)
        if unknown:
            raise self.fail(unknown[0], f"unknown key (see {docs} for the keys)")

    def checked(self, key: str, parse: Callable[[str], _T], value: str) -> _T:
        """``parse(value)``, its refusal as one of ``key``."""
        try:
            return parse(value)
        except SeraiError as exc:
            raise self.fail(key, exc.message) from exc

    def string(self, key: str, data: dict[str, Any] | None = None, where: str = "") -> str:
        """A required non-empty string."""
        value = (self.data if data is None else data).get(key)
        if not isinstance(value, str) or not value:
            raise self.fail(where or key, "expected a non-empty string")
        return value

    def optional_string(self, key: str) -> str | None:
        """A non-empty string, or None when the key is absent."""
        return None if key not in self.data else self.string(key)

    def string_list(self, key: str) -> list[str]:
        """A required non-empty list of non-empty strings."""
        value = self.data.get(key)
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(v, str) and v for v in value)
        ):
            raise self.fail(key, "expected a non-empty list of non-empty strings")
        return list(value)

    def boolean(self, key: str, *, default: bool) -> bool:
        """``true`` or ``false``; ``default`` when the key is absent."""
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, "expected true or false")
        return value

    def integer(self, key: str, default: int) -> int:
        """A positive integer (not a boolean); ``default`` when the key is absent."""
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise self.fail(key, "expected a positive integer")
        return value

    def number(self, key: str, default: float) -> float:
        """A positive number of seconds, integer or float (never NaN); ``default`` when
        the key is absent."""
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise self.fail(key, "expected a positive number of seconds")
        return float(value)

    def file(self, value: str) -> Path:
        """``value`` as a path: ``~`` expanded, relative to the file's directory."""
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.base / path
