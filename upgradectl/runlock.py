"""The controller-side run lock: overlapping cron runs must not both act.

The lock is an ``flock`` on a file in the state directory. The kernel drops it when its holder
exits, however it exits (even ``kill -9``), so a lock never goes stale on the controller; the
node-side locks, which can, are another matter. Once held, the file records who holds it, so
that the run turned away can say by whom.

The file is never deleted: a process that opened it just before the unlink would lock an inode
no one else can see, and two runs would both believe they hold the lock.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import pwd
import stat
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from upgradectl.errors import NotNow, UsageError
from upgradectl.statedir import NO_FOLLOW


class RunLockHeld(NotNow):
    """Another run holds the lock; ``holder`` is what it recorded (empty if nothing yet)."""

    def __init__(self, path: Path, holder: dict[str, Any]) -> None:
        self.path = path
        self.holder = holder
        super().__init__(f"another run holds {path}: {_describe_holder(holder)}")


def _describe_holder(holder: dict[str, Any]) -> str:
    """One line naming a lock holder: run id, pid, user@host, start time, command line."""
    if not holder:
        return "a process that has not recorded itself yet"
    started = holder.get("started")
    since = (
        datetime.fromtimestamp(started).astimezone().isoformat(timespec="seconds")
        if isinstance(started, int | float)
        else "?"
    )
    command = " ".join(holder.get("argv") or [])
    return (
        f"run {holder.get('run_id', '?')} (pid {holder.get('pid', '?')}, "
        f"{holder.get('user', '?')}@{holder.get('host', '?')}, since {since}): {command}"
    )


class RunLock:
    """An exclusive, non-blocking lock on ``path``, held by at most one process at a time.

    Use as a context manager to release it on the way out::

        with RunLock(state_dir / "run.lock") as lock:
            lock.acquire(run_id, sys.argv)
            ...
    """

    def __init__(self, path: Path | str, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self._fd: int | None = None

    def acquire(self, run_id: str, argv: Sequence[str]) -> None:
        """Take the lock and record this run in it, or raise RunLockHeld naming the holder."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this run")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # os.open makes the descriptor non-inheritable, so commands this run starts do not
        # keep the lock alive after it exits.
        fd = _open_lock_file(self.path)
        try:
            os.fchmod(fd, 0o600)  # the file may predate us with looser permissions
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._record(fd, run_id, argv)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunLockHeld(self.path, holder) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        """Give the lock up (nothing happens if it is not held)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        os.ftruncate(fd, 0)  # a reader should not mistake us for a live holder
        os.close(fd)  # closing the last descriptor releases the flock

    def __enter__(self) -> RunLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    def _record(self, fd: int, run_id: str, argv: Sequence[str]) -> None:
        """Write who holds the lock into the lock file open on ``fd``."""
        holder = {
            "pid": os.getpid(),
            "user": _user_name(),
            "host": os.uname().nodename,  # gethostname(), without importing socket
            "run_id": run_id,
            "started": self._clock(),
            "argv": list(argv),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode() + b"\n", 0)
        os.fsync(fd)


def _open_lock_file(path: Path) -> int:
    """The lock file, never opened through a symbolic link, and only if it is this user's file:
    a link planted there must not make this run (often root) chmod and empty its target."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | NO_FOLLOW, 0o600)
    except OSError as exc:
        reason = "a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
        raise UsageError(f"{path}: cannot open the run lock: {reason}") from None
    found = os.fstat(fd)
    if not stat.S_ISREG(found.st_mode) or found.st_uid != os.geteuid():
        os.close(fd)
        raise UsageError(f"{path}: the run lock is not a file of this user's; refusing it")
    return fd


def _read_holder(fd: int) -> dict[str, Any]:
    """The holder recorded in the lock file; empty if it has not written itself yet."""
    size = os.fstat(fd).st_size
    try:
        holder = json.loads(os.pread(fd, size, 0))
    except ValueError:  # empty or half-written: the holder took the lock an instant ago
        return {}
    return holder if isinstance(holder, dict) else {}


def _user_name() -> str:
    """The name of the user running this process (its uid when it has no name)."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a uid without a passwd entry, as in some containers
        return str(os.getuid())
