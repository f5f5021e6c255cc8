"""Waiting out a rebooting upgrade: read the boot id, run the upgrade, wait for the node to return.

A node is back when its boot id changed or the playbook's ``ready`` step passes. Time is the
run's clock and the pauses are the run's Stop, so the wait is tested with a ManualClock and a
stop asked for mid-reboot ends it (``resume`` then verifies the node).
"""

from __future__ import annotations

from upgradectl.context import RunContext
from upgradectl.duration import format_duration
from upgradectl.errors import CommandTimedOut, ConnectionLost, StepFailed
from upgradectl.nodelog import NodeLog
from upgradectl.parsing import check
from upgradectl.plan import TOOL_TIMEOUT, Command
from upgradectl.steps import Steps

# Linux's id of the current boot: it changes with every boot, and only then.
BOOT_ID_COMMAND = "cat /proc/sys/kernel/random/boot_id"
# How often a rebooting node is asked whether it is back.
REBOOT_POLL = 1.0


class RebootWait:
    """One node's rebooting upgrade step, from the boot id before it to the node's return."""

    def __init__(self, steps: Steps, ctx: RunContext, log: NodeLog) -> None:
        self.steps = steps
        self.ctx = ctx
        self.log = log
        self.target = steps.target("upgrade")

    def boot_id_before(self) -> str | None:
        """The boot id before the reboot; without it or a ``ready`` step, nothing could tell
        that the node is back, so the upgrade must not start (StepFailed)."""
        boot_id = self.boot_id()
        if boot_id is None and not self.steps.has("ready"):
            raise StepFailed(
                "upgrade",
                self.target,
                "cannot tell when the node is back from its reboot: it shows no boot id and "
                "the playbook has no `ready` step",
            )
        return boot_id

    def boot_id(self, *, reconnect_for: float | None = None) -> str | None:
        """The boot id of the upgrade's node, or None when it shows none (not Linux)."""
        command = Command(
            step="boot-id",
            target=self.target,
            run=f"{BOOT_ID_COMMAND} 2>/dev/null",
            timeout=TOOL_TIMEOUT,
        )
        result = self.steps.execute(command, repeatable=True, reconnect_for=reconnect_for)
        text = result.stdout.strip()
        return text if result.exit_code == 0 and text else None

    def run(self, command: Command, boot_id: str | None) -> bool:
        """Run the upgrade, expecting the connection to drop, and wait for the node to return.

        True once it is back; False when a stop was asked for while waiting. Raises StepFailed
        when the node is not back within the step's timeout.
        """
        deadline = self.ctx.monotonic() + command.timeout
        try:
            self.steps.run("upgrade")
            how = "the upgrade command returned"
        except ConnectionLost:
            how = "the connection dropped"
        self.log.record(
            "rebooting",
            f"{how}; waiting up to {format_duration(command.timeout)} for the node to come back",
            boot_id=boot_id,
        )
        while True:
            try:
                why = self._back(boot_id, deadline)
            except CommandTimedOut:
                why = ""  # half up: it answers, but too slowly yet
            if why:
                self.log.say("back", f"back from the reboot: {why}")
                return True
            if self.ctx.monotonic() >= deadline:
                raise StepFailed(
                    "upgrade", self.target, "the node did not come back from its reboot"
                )
            if self.ctx.stop.wait(REBOOT_POLL):
                return False

    def _back(self, boot_id: str | None, deadline: float) -> str:
        """Why the node counts as back from its reboot, or "" while it does not."""
        left = max(deadline - self.ctx.monotonic(), 0.0)
        now = self.boot_id(reconnect_for=left)
        if boot_id is not None and now is not None and now != boot_id:
            return f"its boot id changed to {now}"
        if self.steps.has("ready"):
            ready = self.steps.plan.steps["ready"]
            if not check(ready, self.steps.execute(ready, reconnect_for=left)):
                return f"the ready step passed on {ready.target}"
        return ""
