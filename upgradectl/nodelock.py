"""The node-side lock, on the node itself: one run per node, whichever controller it comes from.

The lock is a file on the node (a path the playbook may set; by default under /var/tmp, which
survives a reboot), created with the shell's noclobber, which opens it with O_EXCL: atomic.
It holds the owner, the controller host, the run id and the start time.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from collections.abc import Callable
from typing import Any

from upgradectl.errors import LockHeld
from upgradectl.journal import controller

_TAKEN = "upgradectl-lock-taken"
_HELD = "upgradectl-lock-held"
LOCK_TIMEOUT = 30.0


class NodeLock:
    """Take, inspect and release the lock file at ``path`` on one node."""

    def __init__(
        self, node: str, path: str, shell: Callable[[str, float], str], run_id: str, command: str
    ) -> None:
        self.node = node
        self.path = path
        self.shell = shell
        self.run_id = run_id
        self.held = False
        self.info: dict[str, Any] = {
            "run": run_id,
            "command": command,
            "owner": "{user}@{host}".format(**controller()),
            "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }

    def acquire(self, *, break_lock: bool, on_break: Callable[[dict[str, Any]], None]) -> None:
        """Take the lock; a lock held by another run raises LockHeld unless ``break_lock``.

        A lock left by this same run (a resumed run) is taken back without asking.
        """
        path = shlex.quote(self.path)
        body = shlex.quote(json.dumps(self.info))
        folder = shlex.quote(os.path.dirname(self.path) or ".")
        output = self._run(
            f"mkdir -p {folder} 2>/dev/null; "
            f"if (set -C; printf '%s\\n' {body} > {path}) 2>/dev/null; then echo {_TAKEN}; "
            f"else echo {_HELD}; cat {path}; fi"
        )
        if _TAKEN not in output:
            holder = _holder(output.split(_HELD, 1)[-1])
            if holder.get("run") != self.run_id:
                if not break_lock:
                    raise LockHeld(self.node, describe_holder(holder))
                on_break(holder)
            self._run(f"printf '%s\\n' {body} > {path} && echo {_TAKEN}")
        self.held = True

    def release(self) -> None:
        """Remove the lock, but only if it is still this run's."""
        if not self.held:
            return
        run = shlex.quote(f'"run": "{self.run_id}"')
        path = shlex.quote(self.path)
        self._run(f"if grep -qF {run} {path} 2>/dev/null; then rm -f {path}; fi; echo released")
        self.held = False

    def holder(self) -> dict[str, Any] | None:
        """Who holds the lock now (None when free)."""
        output = self._run(f"cat {shlex.quote(self.path)} 2>/dev/null || true")
        return _holder(output) if output.strip() else None

    def _run(self, command: str) -> str:
        return self.shell(command, LOCK_TIMEOUT)


def _holder(text: str) -> dict[str, Any]:
    try:
        holder = json.loads(text.strip() or "{}")
    except json.JSONDecodeError:
        return {"raw": text.strip()[:200]}
    return holder if isinstance(holder, dict) else {"raw": text.strip()[:200]}


def describe_holder(holder: dict[str, Any]) -> str:
    """``run 20261125T020000-ab12 (upgrade) by deploy@ctl-1, pid 4242, since 2026-11-25T02:00:00``."""
    if "run" not in holder:
        return f"unreadable lock: {holder.get('raw', '')!r}"
    return (
        f"run {holder['run']} ({holder.get('command', '?')}) by {holder.get('owner', '?')}, "
        f"pid {holder.get('pid', '?')}, since {holder.get('started', '?')}"
    )
