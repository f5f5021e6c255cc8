"""The append-only record of what every run did, flushed to disk before the next remote command.

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
import secrets
import signal
import socket
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from upgradectl.errors import JournalFailed, UsageError
from upgradectl.journal_records import parse_record
from upgradectl.statedir import NO_FOLLOW, ensure_private

# Node states that mean "this tool left the node out of service".
OUT_OF_SERVICE = frozenset(
    {"blocking", "blocked", "drained", "forcing", "forced", "upgrading", "upgraded", "rebooting", "verified",
     "rolling-back", "rolled-back", "left-blocked", "attention", "unblocking"}
)  # fmt: skip
# States after which the node is back to how the run found it, or better.
SETTLED = frozenset({"unblocked", "in-service", "patched"})
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
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + "-" + secrets.token_hex(2)


def controller() -> dict[str, str]:
    """Who is acting, for every record: the controller's host and user."""
    return {"host": socket.gethostname(), "user": getpass.getuser()}


@dataclass
class RunRecord:
    """A run read back from its journal."""

    run_id: str
    path: str
    start: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)
    torn_lines: list[int] = field(default_factory=list)

    @property
    def finished(self) -> dict[str, Any] | None:
        """The run-end record, or None when the run never finished (crash, kill -9)."""
        return next((r for r in reversed(self.records) if r["kind"] == "run-end"), None)

    @property
    def dry_run(self) -> bool:
        """Whether the run was a dry run: it changed nothing, so there is nothing to carry on."""
        return bool(self.start.get("data", {}).get("dry_run"))

    @property
    def unfinished(self) -> bool:
        """Whether the run never ended (its controller died) and was not a dry run."""
        return bool(self.start) and self.finished is None and not self.dry_run

    @property
    def carries_on(self) -> bool:
        """Whether ``resume`` may carry the run on: unfinished, or ended interrupted (exit 5)."""
        end = self.finished
        interrupted = end is not None and end.get("data", {}).get("exit_code") == 5
        return self.unfinished or (interrupted and not self.dry_run)

    def readings(self, node: str) -> list[dict[str, Any]]:
        """The drain readings kept for ``node``, oldest first: ``{"time", "active", "eta"?, ...}``."""
        return [
            {"time": r["time"], **r.get("data", {})}
            for r in self.records
            if r["kind"] == "reading" and r.get("node") == node
        ]

    def node_states(self) -> dict[str, dict[str, Any]]:
        """The last state record of each node."""
        states: dict[str, dict[str, Any]] = {}
        for record in self.records:
            if record.get("node") and record["kind"] in OUT_OF_SERVICE | SETTLED:
                states[record["node"]] = record
        return states


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
                if sync:
                    os.fsync(self._fd)
            except OSError as exc:
                self._torn = self._torn or 0 < written < len(data)
                if self.failure is None:
                    self.failure = JournalFailed(str(self.path), exc)
                    raise self.failure from None
                return
            self._torn = False

    def close(self) -> None:
        """Close the file."""
        with self._lock:
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


def read_run(path: str | Path) -> RunRecord:
    """Read one run's journal, skipping (and noting) lines a crash left torn."""
    records: list[dict[str, Any]] = []
    torn: list[int] = []
    for number, line in enumerate(_journal_lines(path), start=1):
        if not line.strip():
            continue
        record = parse_record(line)
        if record is None:
            torn.append(number)
        else:
            records.append(record)
    start = records[0] if records and records[0]["kind"] == "run-start" else {}
    return RunRecord(Path(path).stem, str(path), start, records, torn)


def _journal_lines(path: str | Path) -> list[str]:
    """The lines of a journal file; a symlink, a FIFO or anything but a file reads as one torn
    line (never followed, never waited on)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | NO_FOLLOW)
    except OSError:
        return ["\0"]
    with os.fdopen(fd, "rb") as stream:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ["\0"]
        return stream.read().decode("utf-8", errors="replace").splitlines()


def runs(state_dir: str) -> Iterator[RunRecord]:
    """Every run in the state directory, newest first (a state directory others may write to
    is refused: its journals could be anyone's)."""
    ensure_private(state_dir, create=False)
    folder = Path(state_dir) / "runs"
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.jsonl"), reverse=True):
        yield read_run(path)


def find_run(state_dir: str, run_id: str | None) -> RunRecord | None:
    """Run ``run_id``, or, when no id is given, the newest run left to carry on: unfinished
    (its controller died) or interrupted (it ended with exit 5). Never a dry run.

    A run whose start record was torn is never found: nothing could rebuild its plan.
    """
    for run in runs(state_dir):
        if not run.start:
            continue
        if run.run_id == run_id or (run_id is None and run.carries_on):
            return run
    return None


def left_out_of_service(state_dir: str) -> dict[str, dict[str, Any]]:
    """Nodes whose latest record, across all runs, says this tool left them out of service."""
    latest: dict[str, dict[str, Any]] = {}
    for run in sorted(runs(state_dir), key=lambda r: r.run_id):
        for node, record in run.node_states().items():
            latest[node] = record
    return {node: record for node, record in latest.items() if _out_of_service(record)}


def _out_of_service(record: dict[str, Any]) -> bool:
    """Whether a node's latest state record leaves it out of service: blocked by this tool, or
    changed by it and then left in a state that needs a person. (A hot patch's `verified` is not:
    nothing was blocked; nor is a node this tool could not reach before changing anything.)"""
    data = record.get("data", {})
    if record["kind"] == "left-blocked":  # unless left blocked as it was found, by hand
        return bool(data.get("ours")) or not data.get("hand_blocked")
    if record["kind"] == "attention":
        return bool(data.get("blocked") or data.get("last_state"))
    return bool(data.get("blocked", record["kind"] in OUT_OF_SERVICE))


def left_blocked(state_dir: str) -> dict[str, dict[str, Any]]:
    """Nodes that earlier runs left blocked by this tool (e.g. by ``drain``), with that record."""
    return {
        node: record
        for node, record in left_out_of_service(state_dir).items()
        if record.get("data", {}).get("blocked", record["kind"] in OUT_OF_SERVICE)
    }
