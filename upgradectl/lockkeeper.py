"""One node's lock for the length of its run: taken before anything acts, let go whatever
happens; a lock taken over from a dead run of ours, or broken with ``--break-lock``, is
journalled and said."""

from __future__ import annotations

from typing import Any

from upgradectl.context import RunContext
from upgradectl.lockholder import dead_run_of_ours
from upgradectl.nodelock import NodeLock, describe_holder
from upgradectl.nodelog import NodeLog
from upgradectl.plan import TOOL_TIMEOUT, Command, NodePlan
from upgradectl.steps import Steps


class LockKeeper:
    """Takes and lets go of one node's lock (:class:`NodeLock`) for its run."""

    def __init__(self, plan: NodePlan, steps: Steps, ctx: RunContext, log: NodeLog) -> None:
        self.name = plan.name
        self.path = plan.lock_path
        self.ctx = ctx
        self.log = log
        self.lock = NodeLock(plan.name, plan.lock_path, steps.shell, ctx.run_id, ctx.command)

    def take(self) -> None:
        """Take the lock; raises :class:`LockHeld` while a live run elsewhere holds it."""
        self.lock.acquire(
            break_lock=self.ctx.break_lock,
            on_break=self._broken,
            dead_run=lambda holder: dead_run_of_ours(holder, self.ctx.state_dir),
            on_take_over=self._taken_over,
        )

    def let_go(self) -> None:
        """Release the lock; one left behind is said, never fatal: the node's result stands."""
        try:
            self.lock.release()
        except Exception as exc:
            self.log.say("warning", f"could not release the lock {self.path}: {exc}")

    def release_step(self) -> Command:
        """The release as a step, to send along with the run's last round trip."""
        return Command(
            step="lock", target=self.name, run=self.lock.release_command(), timeout=TOOL_TIMEOUT
        )

    def _taken_over(self, holder: dict[str, Any], why: str) -> None:
        self.ctx.journal.append("lock-taken-over", self.name, holder=holder, why=why)
        self.log.say("warning", f"took over the lock of {describe_holder(holder)}: {why}")

    def _broken(self, holder: dict[str, Any]) -> None:
        self.ctx.journal.append("lock-broken", self.name, holder=holder)
        self.log.say("warning", f"--break-lock: took over the lock of {describe_holder(holder)}")
