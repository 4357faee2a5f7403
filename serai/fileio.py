"""Writing files so that a crash leaves either the old file or the new one.

:func:`atomic_write` writes to a temporary file in the target's directory, flushes and
``fsync``\\ s it, sets its mode before any byte is written, renames it over the target
(atomic on POSIX within one file system), and ``fsync``\\ s the directory so the rename
itself survives a power failure. On any failure the temporary file is removed and the
target is untouched.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write"]


def atomic_write(path: Path, data: bytes, *, mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` (module docstring); ``mode`` (e.g. ``0o600``) is set
    on the new file before it holds anything. Creates missing parent directories."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
