"""The state directory: the journal that `resume` acts on and the run lock live there, so it must
be the user's own and writable by no one else, and it must hold the run's journal to the end.

In a directory others may write to, another user could plant a journal that `resume` would carry
out, or a symbolic link named ``run.lock`` that the next run (often root, from cron) would open,
chmod and empty. So a state directory owned by someone else, or writable by its group or by
everyone, is refused (exit 2), and the files in it are opened without following links.

A journal that cannot be written mid-run would make the run lose track of what it did: so before
a run touches any node, the state directory must take a new file and hold a reserve for the
run's journal, and every file the run writes at its end (``--report``, ``--metrics-file``) must
be writable, or the run ends with exit 2 before it starts.
"""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

from upgradectl.errors import UsageError

# Opening a file in the state directory never follows a symbolic link, and never hands the
# descriptor to the commands a run starts.
NO_FOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


def ensure_private(path: str, *, create: bool) -> None:
    """Refuse ``path`` unless it is a directory of this user's that no one else may write to;
    with ``create``, make it (mode 0700) when missing and require that this user can write it.
    A missing directory is fine for a reader: there is nothing in it to read."""
    if create:
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"state directory {path}: cannot create it: {exc.strerror}") from None
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise UsageError(f"state directory {path}: {exc.strerror}") from None
    _check(path, found)
    runs = os.path.join(path, "runs")
    try:
        inner = os.lstat(runs)
    except FileNotFoundError:
        inner = None
    if inner is not None:
        _check(runs, inner)
    if create and not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"state directory {path}: not writable by {_name(os.geteuid())}")


def _check(path: str, found: os.stat_result) -> None:
    if not stat.S_ISDIR(found.st_mode):
        what = "a symbolic link" if stat.S_ISLNK(found.st_mode) else "not a directory"
        raise UsageError(f"state directory {path}: {what}; refusing to use it")
    me = os.geteuid()
    if found.st_uid != me:
        raise UsageError(
            f"state directory {path}: owned by {_name(found.st_uid)}, not by {_name(me)}; "
            "refusing to use it (another user's journal could make `resume` act)"
        )
    if found.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UsageError(
            f"state directory {path}: writable by others (mode {stat.S_IMODE(found.st_mode):o}); "
            f"refusing to use it: run `chmod go-w {path}`"
        )


def _name(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


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
    import tempfile  # noqa: PLC0415 - only acting runs write; the reading commands skip its 4 ms

    fd, name = tempfile.mkstemp(dir=folder, prefix=".upgradectl-check.", suffix=".tmp")
    try:
        os.write(fd, b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
        os.unlink(name)
