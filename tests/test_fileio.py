"""serai.fileio.atomic_write: one test per promise of its docstring."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

import serai.fileio
from serai.fileio import atomic_write


def test_writes_and_creates_parent_directories(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "file.bin"
    atomic_write(target, b"hello")
    assert target.read_bytes() == b"hello"


def test_replaces_the_old_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "file.bin"
    target.write_bytes(b"old contents, longer than the new")
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new"


@pytest.mark.parametrize("mode", [0o600, 0o644])
def test_sets_the_mode(tmp_path: Path, mode: int) -> None:
    target = tmp_path / "key.pem"
    atomic_write(target, b"secret", mode=mode)
    assert stat.S_IMODE(target.stat().st_mode) == mode


def test_a_failed_write_leaves_the_target_and_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "file.bin"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        atomic_write(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.bin"]


def test_public_surface() -> None:
    assert serai.fileio.__all__ == ["atomic_write"]
