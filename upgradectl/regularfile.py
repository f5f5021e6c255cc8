"""A file's text read only if it is a regular file: a FIFO is never waited on, a device or a
directory never read, and a symlink followed only where the caller allows it."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def regular_text(path: str | Path, *, follow_links: bool = True) -> str | None:
    """The text of the regular file ``path`` (undecodable bytes replaced), or None when it is
    missing, unreadable, not a regular file, or a symlink not to be followed."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC  # NONBLOCK: a FIFO must not hang the run
    try:
        fd = os.open(path, flags if follow_links else flags | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        # Asked before a file object is made of it: Python refuses a directory with an error.
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(fd, "rb", closefd=False) as stream:
            return stream.read().decode("utf-8", errors="replace")
    finally:
        os.close(fd)
