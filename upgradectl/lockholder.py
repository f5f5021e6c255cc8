"""Who holds a node lock: a controller still running, or a dead run of ours.

A node lock outlives the run that took it when that run dies (kill -9, a crash, a power cut) or
cannot reach the node to release it (exit 4). Such a lock is ours to take over without
``--break-lock`` when everything says its run is dead: it was written by this user on this
controller, its process is gone, and our journal knows the run (it ended, or it crashed).
Anything less certain is left to a person (``--break-lock``), since two controllers acting on
one node is what the lock exists to prevent.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from upgradectl.journal import controller
from upgradectl.runrecords import read_run


def this_controller() -> str:
    """``user@host`` of this controller, as a node lock records its owner."""
    return "{user}@{host}".format(**controller())


def alive_elsewhere(holder: dict[str, Any]) -> bool:
    """Whether ``holder`` is another upgradectl process of this controller, still running."""
    pid = holder.get("pid")
    if holder.get("owner") != this_controller() or not isinstance(pid, int):
        return False
    return pid != os.getpid() and _runs_upgradectl(pid)


def dead_run_of_ours(holder: dict[str, Any], state_dir: str) -> str:
    """Why the run holding a node lock is known to be a dead run of ours, or "" if it is not."""
    run, pid = holder.get("run"), holder.get("pid")
    if holder.get("owner") != this_controller() or not isinstance(run, str):
        return ""
    if not isinstance(pid, int) or _runs_upgradectl(pid):
        return ""
    path = Path(state_dir) / "runs" / f"{Path(run).name}.jsonl"
    if not path.is_file():
        return ""  # not a run of this state directory: nothing says how it ended
    how = "it ended" if read_run(path).finished else "it never ended (the controller died)"
    return f"its controller process {pid} is gone and, per the journal, {how}"


def _runs_upgradectl(pid: int) -> bool:
    """Whether process ``pid`` exists and is an upgradectl (a reused pid is not)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # someone's: assume the worst
        return True  # no /proc to tell what it is: alive is all we know
    return b"upgradectl" in command
