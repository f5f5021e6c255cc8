"""The append-only record of what every run did, flushed to disk before the next remote command.
(Reading runs back is `runrecords.py`'s.)

One JSON-lines file per run under ``STATE_DIR/runs/``. The first record of a run holds what
is needed to carry it on (the command, the nodes, the options); every later record is one state
change of one node, or a reading of a drain (``kind: reading``: the live count and the estimate,
kept when the count changes and once a minute, so that the drain can be drawn afterwards).
State changes are fsynced; readings only reach the operating system, and go to disk with the
next state change: a power cut may cost the latest readings, never a state change. A torn line
(a power cut mid-write) is skipped and reported.

Test hook: with ``UPGRADECTL_TEST_KILL_AFTER_RECORD=N`` in its environment, a controller sends
itself SIGKILL right after its Nth record (readings not counted) is on disk: the kill sweep of
the test suite (``tests/test_killsweep.py``) kills a run at every record that way. Nothing else
reads the variable; never set it outside tests.
"""

from __future__ import annotations

import errno
import getpass
import json
import os
import signal
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from upgradectl.errors import JournalFailed, UsageError
from upgradectl.statedir import NO_FOLLOW

# The test hook's record number (0: off).
_KILL_AFTER = int(os.environ.get("UPGRADECTL_TEST_KILL_AFTER_RECORD", "0") or 0)
# A drain whose count does not change still leaves one reading this often (seconds).
READING_EVERY = 60.0


def default_state_dir() -> str:
    """``$XDG_STATE_HOME/upgradectl``, or ``/var/lib/upgradectl`` for root."""
    if os.geteuid() == 0 and "XDG_STATE_HOME" not in os.environ:
        return "/var/lib/upgradectl"
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(base, "upgradectl")


def new_run_id(now: float) -> str:
    """A sortable, unique run id: ``20261125T023000-3fa1``."""
    # os.urandom is what `secrets` reads too; importing secrets (hmac, hashlib) cost 5 ms.
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + "-" + os.urandom(2).hex()


def controller() -> dict[str, str]:
    """Who is acting, for every record: the controller's host and user."""
    # The node name gethostname() returns, without importing socket (3 ms of every start).
    return {"host": os.uname().nodename, "user": getpass.getuser()}


class Journal:
    """Appends the records of one run; each append is on disk before it returns.

    A write that fails (a full disk) raises JournalFailed once, so that the run stops acting;
    later appends are still tried, for the record, but fail quietly: the run is putting its
    nodes back by then, and that must not be cut short.
    """

    def __init__(self, state_dir: str, run_id: str, *, new: bool = False) -> None:
        self.run_id = run_id
        self.dir = Path(state_dir) / "runs"
        self.path = self.dir / f"{run_id}.jsonl"
        self._who = controller()
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()  # taken after _lock, never while holding it
        self._writes = 0  # writes made
        self._synced = 0  # writes known to be on disk
        self._kept: dict[str, _Kept] = {}  # per node: the latest reading written
        self.failure: JournalFailed | None = None
        self._appended = 0
        self._fd = _open_journal(self.dir, self.path, new)
        os.fchmod(self._fd, 0o600)  # it may predate us (a resumed run), with looser permissions
        # A crash cut the last line short: the next write ends it first, so that it stays the
        # only torn line and the records appended now are read back whole.
        self.torn_tail = self._torn = _ends_torn(self._fd)
        if self.torn_tail:
            self._write("")

    def append(self, kind: str, node: str | None = None, **data: Any) -> dict[str, Any]:
        """Write one record and fsync it."""
        record: dict[str, Any] = {
            "run": self.run_id,
            "time": time.time(),
            "kind": kind,
            "node": node,
            **self._who,
        }
        if data:
            record["data"] = data
        self._write(json.dumps(record, default=str, separators=(",", ":")) + "\n")
        self._appended += 1
        if self._appended == _KILL_AFTER:
            os.kill(os.getpid(), signal.SIGKILL)  # the test hook: see the module's docstring
        return record

    def reading(
        self,
        node: str,
        at: float,
        active: int,
        eta: tuple[float | None, float | None] | None = None,
        deadline: float | None = None,
    ) -> bool:
        """Keep a drain reading when the count changed, a minute passed, or the deadline moved.

        Not fsynced: a reading goes to disk with the next state change. The deadline is written
        only when it differs from the last kept one (the first reading of a drain carries it).
        Returns whether the reading was kept.
        """
        kept = self._kept.get(node)
        moved = deadline is not None and (kept is None or kept.deadline != deadline)
        if (
            kept is not None
            and not moved
            and kept.active == active
            and at - kept.at < READING_EVERY
        ):
            return False
        data: dict[str, Any] = {"active": active}
        if eta is not None and eta != (None, None):
            data["eta"] = [None if e is None else round(e, 1) for e in eta]
        if moved:
            data["deadline"] = round(deadline or 0.0, 3)
        record = {"time": round(at, 3), "kind": "reading", "node": node, "data": data}
        self._write(json.dumps(record, separators=(",", ":")) + "\n", sync=False)
        previous = kept.deadline if kept is not None else None
        self._kept[node] = _Kept(at, active, deadline if moved else previous)
        return True

    def _write(self, text: str, sync: bool = True) -> None:
        # Straight to the OS, unbuffered: a kill -9 of this process loses nothing written, and
        # a failed write leaves nothing in a buffer to be written again later.
        data = (b"\n" if self._torn else b"") + text.encode()
        with self._lock:
            written = 0
            try:
                while written < len(data):
                    written += os.write(self._fd, data[written:])
            except OSError as exc:
                self._torn = self._torn or 0 < written < len(data)
                self._failed(exc)
                return
            self._torn = False
            self._writes += 1
            mine = self._writes
        if sync:
            self._sync(mine)

    def _sync(self, mine: int) -> None:
        """On disk once an fsync begun after write number ``mine`` has ended. One fsync covers
        every write before it: the nodes' records that wait together are synced together (an
        fsync each, in turn, was 2 ms a record of every node's wall time, one after another)."""
        with self._sync_lock:
            if self._synced >= mine:
                return
            covered = self._writes
            try:
                os.fsync(self._fd)
            except OSError as exc:
                self._failed(exc)
                return
            self._synced = covered

    def _failed(self, error: OSError) -> None:
        if self.failure is None:
            self.failure = JournalFailed(str(self.path), error)
            raise self.failure from None

    def close(self) -> None:
        """Close the file."""
        with self._sync_lock, self._lock:
            os.close(self._fd)


@dataclass(frozen=True)
class _Kept:
    """The latest reading a journal kept for one node: what the next one is compared with."""

    at: float
    active: int
    deadline: float | None


def _open_journal(folder: Path, path: Path, new: bool) -> int:
    """The journal file, opened for appending: never through a symbolic link, and created afresh
    (O_EXCL) for a new run; anything else there is a usage error, before any host is touched."""
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | NO_FOLLOW | (os.O_EXCL if new else 0)
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        reason = "a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
        raise UsageError(f"journal {path}: cannot open it: {reason}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UsageError(f"journal {path}: not a regular file")
    return fd


def _ends_torn(fd: int) -> bool:
    """Whether the file open on ``fd`` ends in a line without its newline."""
    size = os.fstat(fd).st_size
    return size > 0 and os.pread(fd, 1, size - 1) != b"\n"
