"""The node-side lock, on the node itself: one run per node, whichever controller it comes from.

The lock is a file on the node (a path the playbook may set; by default under /var/tmp, which
survives a reboot). It holds the owner, the controller host, the run id and the start time.

The lock path is often in a directory anyone may write to, so nothing here follows a symbolic
link planted there: the lock is written to a fresh ``mktemp`` file, then hard-linked to its path
(``ln -n``, i.e. link(2), fails if anything, a link included, is there, never follows one):
atomic, like O_EXCL. ``--break-lock`` removes what is at the path (``rm`` removes a link, not
its target) and links again. A symbolic link at the path is reported as such, never read.
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
from upgradectl.lockholder import alive_elsewhere
from upgradectl.plan import TOOL_TIMEOUT

_TAKEN = "upgradectl-lock-taken"
_HELD = "upgradectl-lock-held"
_LINK = "upgradectl-lock-is-a-symlink"
_ODD = "upgradectl-lock-is-not-a-file"
_RELEASED = "released"  # printed by the release only when it removed the lock


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

    def acquire(
        self,
        *,
        break_lock: bool,
        on_break: Callable[[dict[str, Any]], None],
        dead_run: Callable[[dict[str, Any]], str] = lambda holder: "",
        on_take_over: Callable[[dict[str, Any], str], None] = lambda holder, why: None,
    ) -> None:
        """Take the lock; a lock held by another run raises LockHeld unless ``break_lock``.

        A lock left by this same run (a resumed run) is taken back without asking, unless its
        controller still runs. A lock whose run ``dead_run`` says is dead (and why) is taken
        over, and ``on_take_over`` told so.
        """
        path = shlex.quote(self.path)
        folder = shlex.quote(os.path.dirname(self.path) or ".")
        output = self._run(
            f"mkdir -p {folder} 2>/dev/null; {self._written()} && "
            f"if {_link(path)}; then echo {_TAKEN}; "
            f'else echo {_HELD}; {_read(path)}; fi; rm -f "$tmp"'
        )
        if _TAKEN in output:
            self.held = True
            return
        if _HELD not in output:
            raise LockHeld(self.node, f"cannot write a lock at {self.path} on the node")
        holder = _holder(output.split(_HELD, 1)[-1])
        if alive_elsewhere(holder):  # never two controllers on one node, even of one run
            raise LockHeld(self.node, f"{describe_holder(holder)}, still running")
        if holder.get("run") != self.run_id:
            why = dead_run(holder)
            if why:
                on_take_over(holder, why)
            elif break_lock:
                on_break(holder)
            else:
                raise LockHeld(self.node, describe_holder(holder))
        taken = self._run(
            f'{self._written()} && rm -f {path} && {_link(path)} && echo {_TAKEN}; rm -f "$tmp"'
        )
        if _TAKEN not in taken:
            raise LockHeld(self.node, f"could not take the lock over at {self.path}")
        self.held = True

    def _written(self) -> str:
        """Shell that leaves this run's lock record in a fresh file ``$tmp`` beside the lock."""
        body = shlex.quote(json.dumps(self.info))
        return (
            f"tmp=$(mktemp {shlex.quote(self.path)}.XXXXXX) && "
            f'printf \'%s\\n\' {body} > "$tmp" && chmod 644 "$tmp"'
        )

    def release(self) -> None:
        """Remove the lock, but only if it is still this run's (and a file, not a link)."""
        if not self.held:
            return
        self._run(self.release_command())
        self.held = False

    def release_command(self) -> str:
        """The shell :meth:`release` runs (a caller may send it ahead with other commands)."""
        run = shlex.quote(f'"run": "{self.run_id}"')
        path = shlex.quote(self.path)
        return (
            f"if [ ! -L {path} ] && grep -qF {run} {path} 2>/dev/null; then rm -f {path} && "
            f"echo {_RELEASED}; else echo none of ours; fi"
        )

    def release_left(self) -> bool:
        """Remove the lock this run left when its controller died (only if it is still its own);
        whether there was one to remove (the node's own word)."""
        self.held = False
        return _RELEASED in self._run(self.release_command()).split()

    def holder(self) -> dict[str, Any] | None:
        """Who holds the lock now (None when free)."""
        output = self._run(self.holder_command())
        return _holder(output) if output.strip() else None

    def holder_command(self) -> str:
        """The shell :meth:`holder` runs (a caller may send it ahead with other commands)."""
        return _read(shlex.quote(self.path))

    def _run(self, command: str) -> str:
        return self.shell(command, TOOL_TIMEOUT)


def _link(path: str) -> str:
    """Shell that hard-links ``$tmp`` to ``path`` (quoted), failing if anything is there: ``-n``
    keeps ln from linking *into* a directory a symbolic link at ``path`` points to, and a real
    directory there is refused first."""
    return f'! {{ [ -d {path} ] && [ ! -L {path} ]; }} && ln -n "$tmp" {path} 2>/dev/null'


def _read(path: str) -> str:
    """Shell that prints the lock at ``path`` (quoted): a link or a non-file is named, not read."""
    return (
        f"if [ -L {path} ]; then echo {_LINK}; "
        f"elif [ -f {path} ]; then head -c 4096 {path}; "
        f"elif [ -e {path} ]; then echo {_ODD}; fi"
    )


def _holder(text: str) -> dict[str, Any]:
    if _LINK in text:
        return {"raw": "a symbolic link (never followed: remove it, or use --break-lock)"}
    if _ODD in text:
        return {"raw": "not a regular file (remove it by hand)"}
    try:
        holder = json.loads(text.strip() or "{}")
    except json.JSONDecodeError:
        return {"raw": text.strip()[:200]}
    return holder if isinstance(holder, dict) else {"raw": text.strip()[:200]}


def describe_holder(holder: dict[str, Any]) -> str:
    """``run 20261125T020000-ab12 (upgrade) by deploy@ctl-1, pid 4242, since 2026-11-25T02:00:00``."""
    if "run" not in holder:
        return f"unreadable lock: {holder.get('raw', '')}"
    return (
        f"run {holder['run']} ({holder.get('command', '?')}) by {holder.get('owner', '?')}, "
        f"pid {holder.get('pid', '?')}, since {holder.get('started', '?')}"
    )
