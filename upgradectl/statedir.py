"""The state directory and the run's output files, checked before any node is touched.

A journal that cannot be written mid-run would make the run lose track of what it did: so the
state directory must take a new file and hold a reserve for the run's journal, and every file
the run writes at its end (``--report``, ``--metrics-file``) must be writable, or the run ends
with exit 2 before it starts.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from upgradectl.errors import UsageError

# Room the journal of a run needs: a little for the run, more for each node (a node's state
# changes, a drain's readings, the sessions a force names).
RESERVE_PER_RUN = 64 * 1024
RESERVE_PER_NODE = 64 * 1024


def check_state_dir(state_dir: str, nodes: int) -> None:
    """Raise UsageError unless ``state_dir`` takes a new file and has room for a run of ``nodes``."""
    runs = Path(state_dir) / "runs"
    need = RESERVE_PER_RUN + RESERVE_PER_NODE * nodes
    try:
        runs.mkdir(parents=True, exist_ok=True, mode=0o700)
        _try_writing(runs)
        stats = os.statvfs(runs)
    except OSError as exc:
        raise UsageError(
            f"{state_dir}: the state directory cannot be written "
            f"({exc.strerror or exc}); nothing was touched"
        ) from None
    free = stats.f_bavail * stats.f_frsize
    if free < need:
        raise UsageError(
            f"{state_dir}: {free // 1024} KiB free, but the run's journal needs a reserve of "
            f"{need // 1024} KiB ({nodes} node{'s' if nodes != 1 else ''}); nothing was touched"
        )


def check_output(path: str, option: str) -> None:
    """Raise UsageError unless the file ``path`` (given as ``option``) can be replaced at the run's end."""
    folder = Path(path).parent
    if Path(path).is_dir():
        raise UsageError(f"{option} {path}: a directory, not a file; nothing was touched")
    try:
        _try_writing(folder)
    except OSError as exc:
        raise UsageError(
            f"{option} {path}: cannot be written ({exc.strerror or exc}); nothing was touched"
        ) from None


def _try_writing(folder: Path) -> None:
    """Create, write, flush and remove a file in ``folder``, as the real writes will."""
    fd, name = tempfile.mkstemp(dir=folder, prefix=".upgradectl-check.", suffix=".tmp")
    try:
        os.write(fd, b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
        os.unlink(name)
