"""SECURITY.md stays true: every test it names exists, and so does every module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "SECURITY.md").read_text(encoding="utf-8")


def _functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def _references() -> list[tuple[str, str | None]]:
    """(test file, test name or None) for every ``tests/x.py`` and ``::name`` in the doc;
    a bare ``::name`` belongs to the last file named before it in the same cell."""
    found: list[tuple[str, str | None]] = []
    for cell in re.split(r"\||\n", DOC):
        current: str | None = None
        for match in re.finditer(r"(tests/[\w/]+\.py)|::(\w+)", cell):
            if match.group(1):
                current = match.group(1)
                found.append((current, None))
            elif current is not None:
                found.append((current, match.group(2)))
    return found


def test_every_test_named_exists() -> None:
    references = _references()
    assert len(references) > 60
    missing = []
    for file, name in references:
        path = ROOT / file
        if not path.is_file():
            missing.append(file)
        elif name is not None and name not in _functions(path):
            missing.append(f"{file}::{name}")
    assert not missing, missing


def test_every_module_named_exists() -> None:
    modules = set(re.findall(r"`((?:gateway|registry|certs|serai)/[\w/]+\.py)", DOC))
    assert len(modules) > 20
    assert not [m for m in sorted(modules) if not (ROOT / m).is_file()]
