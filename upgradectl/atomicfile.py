"""Replacing a file so that a reader at any moment sees the old whole file or the new one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def replace_atomically(path: Path | str, text: str, mode: int) -> None:
    """Write ``text`` to a temporary file beside ``path``, flush it to disk, rename it over.

    The temporary name starts with a dot and ends in ``.tmp``, so a collector reading every
    ``*.prom`` file never sees it.
    """
    path = Path(path)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fchmod(file.fileno(), mode)
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """Flush a directory entry to disk, so the rename survives a crash."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
