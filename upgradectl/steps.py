"""Running one node's rendered steps: reconnects, retries, and reading their output.

Output is parsed, never trusted by exit code alone: a step fails on a non-zero exit, on output
matching ``fail_if``, or (for checks) on output not matching ``parse``. A count that is not a
number is never read as zero.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from upgradectl.errors import (
    CommandTimedOut,
    ConnectionLost,
    StepFailed,
    Unreachable,
    UnreadableCount,
)
from upgradectl.estimate import Session, parse_age
from upgradectl.events import Events
from upgradectl.model import REPEATABLE_STEPS
from upgradectl.plan import Command, NodePlan
from upgradectl.transport.base import CommandResult, Transport, wrap_sudo

# Steps whose `parse` extracts a value rather than deciding success.
_READING_STEPS = frozenset({"active", "sessions", "version", "is_blocked"})
# Linux's id of the current boot: it changes with every boot, and only then.
BOOT_ID_COMMAND = "cat /proc/sys/kernel/random/boot_id"
# The tool's own commands (the node lock, the boot id) are quick.
TOOL_TIMEOUT = 30.0
# How often a rebooting node is asked whether it is back.
REBOOT_POLL = 1.0


class Steps:
    """Runs the steps of one node's plan over the run's shared connections."""

    def __init__(
        self,
        plan: NodePlan,
        transport_for: Callable[[str], Transport],
        events: Events,
        *,
        reconnect_for: float,
        pause: Callable[[float], bool],
    ) -> None:
        self.plan = plan
        self.transport_for = transport_for
        self.events = events
        self.reconnect_for = reconnect_for
        self.pause = pause  # waits between retries; returns True when the run is being stopped
        # Target -> when its connection was found lost, until it answers again: one reconnect
        # budget per node for the whole run, not a fresh one for each step (the lock's release).
        self._lost_since: dict[str, float] = {}

    def has(self, step: str) -> bool:
        """Whether the playbook has ``step``."""
        return step in self.plan.steps

    def target(self, step: str) -> str:
        """The inventory node ``step`` runs on."""
        return self.plan.steps[step].target

    def run(self, step: str) -> CommandResult:
        """Run ``step`` up to its ``retries``; raise StepFailed when every attempt failed."""
        command = self.plan.steps[step]
        failure = ""
        for attempt in range(1, command.retries + 1):
            try:
                result = self.execute(command)
            except CommandTimedOut as exc:
                failure, output = exc.what, ""
            else:
                failure, output = check(command, result), result.output
                if not failure:
                    return result
            if attempt < command.retries:
                self.events.emit(
                    "retry",
                    self.plan.name,
                    f"{step} failed ({failure}); retry {attempt + 1} of {command.retries}",
                )
                if self.pause(command.delay):
                    break
        raise StepFailed(step, command.target, failure, output)

    def shell(self, text: str, timeout: float) -> str:
        """Run a command of the tool's own (the node lock) on the node; safe to repeat."""
        command = Command(step="lock", target=self.plan.name, run=text, timeout=timeout)
        return self.execute(command, repeatable=True).stdout

    def execute(
        self,
        command: Command,
        *,
        repeatable: bool | None = None,
        reconnect_until: float | None = None,
    ) -> CommandResult:
        """One attempt of ``command``; a dropped connection is re-opened and a repeatable step re-run.

        Reconnecting goes on until ``reconnect_until`` (monotonic), by default ``reconnect_for``
        seconds from the first drop the node has not answered since; then the node is
        Unreachable, and later commands to it in this run fail at once.
        """
        if repeatable is None:
            repeatable = command.step in REPEATABLE_STEPS
        transport = self.transport_for(command.target)
        text = wrap_sudo(command.run) if command.sudo else command.run
        self.events.emit(
            "step", self.plan.name, f"{command.step} on {command.target}: {command.run}"
        )
        while True:
            if command.target in self._lost_since:
                self._reconnect(transport, command.target, reconnect_until)
            try:
                result = transport.run(text, command.timeout)
            except CommandTimedOut as exc:
                if not exc.stopped:  # no answer at all: the link is suspect from now on
                    self._lost_since.setdefault(command.target, time.monotonic())
                raise
            except ConnectionLost as exc:
                self._lost_since.setdefault(command.target, time.monotonic())
                if not repeatable:
                    raise
                self.events.emit("warning", self.plan.name, f"{exc}; reconnecting")
                continue
            self._lost_since.pop(command.target, None)
            self.events.emit(
                "step-output", self.plan.name, f"{command.step}: exit {result.exit_code}: {result.output.strip()}",
                exit_code=result.exit_code,
            )  # fmt: skip
            return result

    def _reconnect(self, transport: Transport, target: str, until: float | None) -> None:
        """Connect again to a node that stopped answering, within what is left of its budget."""
        until = until or self._lost_since[target] + self.reconnect_for
        if time.monotonic() >= until:
            raise Unreachable(
                f"{target}: unreachable: the run gave up reconnecting to it "
                f"(drain.reconnect_for: {self.reconnect_for:g}s)"
            )
        transport.reconnect(until)

    def count(self) -> int:
        """The live session count from the ``active`` step; UnreadableCount when it is not a number."""
        command = self.plan.steps["active"]
        result = self.execute(command)
        failure = check(command, result)
        if failure:
            raise UnreadableCount("active", command.target, failure, result.output)
        value = extract(command, result.stdout)
        if value is None or not value.strip().isdigit():
            shown = (result.output.strip() or "no output")[:120]
            raise UnreadableCount(
                "active", command.target, f"not a session count: {shown!r}", result.output
            )
        return int(value)

    def sessions(self, now: float) -> list[Session]:
        """The live sessions from the ``sessions`` step, one per line (empty without the step)."""
        if not self.has("sessions"):
            return []
        command = self.plan.steps["sessions"]
        return parse_sessions(self.run("sessions").stdout, command, now)

    def is_blocked(self) -> bool | None:
        """Whether the node is blocked already (None when the playbook cannot tell)."""
        if not self.has("is_blocked"):
            return None
        command = self.plan.steps["is_blocked"]
        result = self.execute(command)
        if command.parse is not None:
            return command.parse.search(result.output) is not None
        return result.exit_code == 0

    def boot_id(self, target: str, *, reconnect_until: float | None = None) -> str | None:
        """The boot id of node ``target``, or None when it shows none (not Linux)."""
        command = Command(
            step="boot-id",
            target=target,
            run=f"{BOOT_ID_COMMAND} 2>/dev/null",
            timeout=TOOL_TIMEOUT,
        )
        result = self.execute(command, repeatable=True, reconnect_until=reconnect_until)
        text = result.stdout.strip()
        return text if result.exit_code == 0 and text else None

    def await_return(self, boot_id: str | None, deadline: float) -> str:
        """Wait, reconnecting, until the upgrade's node is back from its reboot; why it counts as back.

        Back means a boot id other than ``boot_id``, or the playbook's ``ready`` step passing.
        Raises Unreachable when the node cannot be reached by ``deadline`` (monotonic), and
        StepFailed when it answers but never counts as back.
        """
        target = self.target("upgrade")
        while True:
            try:
                why = self._back(target, boot_id, deadline)
            except CommandTimedOut:
                why = ""  # half up: it answers, but too slowly yet
            if why:
                return why
            if time.monotonic() >= deadline:
                raise StepFailed("upgrade", target, "the node did not come back from its reboot")
            time.sleep(REBOOT_POLL)

    def _back(self, target: str, boot_id: str | None, deadline: float) -> str:
        """Why the node counts as back from its reboot, or "" while it does not."""
        now = self.boot_id(target, reconnect_until=deadline)
        if boot_id is not None and now is not None and now != boot_id:
            return f"its boot id changed to {now}"
        if self.has("ready"):
            ready = self.plan.steps["ready"]
            if not check(ready, self.execute(ready, reconnect_until=deadline)):
                return f"the ready step passed on {ready.target}"
        return ""

    def version(self) -> str | None:
        """The version the node reports (``version`` step), or None."""
        if not self.has("version"):
            return None
        command = self.plan.steps["version"]
        return extract(command, self.run("version").stdout)


def check(command: Command, result: CommandResult) -> str:
    """Why ``result`` counts as a failure of ``command``, or "" when it succeeded."""
    if result.exit_code != 0:
        return f"exit code {result.exit_code}"
    if command.fail_if is not None and command.fail_if.search(result.output):
        return f"output matches fail_if /{command.fail_if.pattern}/"
    if (
        command.step not in _READING_STEPS
        and command.parse
        and not command.parse.search(result.output)
    ):
        return f"output does not match /{command.parse.pattern}/"
    return ""


def extract(command: Command, text: str) -> str | None:
    """The value ``parse`` captures (group ``count``/``version`` or the first group), else the text."""
    if command.parse is None:
        return text.strip()
    match = command.parse.search(text)
    if match is None:
        return None
    names = command.parse.groupindex
    for name in ("count", "version"):
        if name in names:
            return match.group(name)
    return match.group(1) if command.parse.groups else match.group(0)


def parse_sessions(text: str, command: Command, now: float) -> list[Session]:
    """One session per line: ``parse`` with groups ``id`` and ``age`` (or ``start``, epoch seconds),
    else the first field is the id and the second, if it reads as a duration, the age."""
    sessions = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = _session_fields(line, command)
        if fields is None:
            continue  # a header or a line that is not a session
        sessions.append(Session(id=fields["id"], age=_age(fields, now), line=line.strip()))
    return sessions


def _session_fields(line: str, command: Command) -> dict[str, Any] | None:
    if command.parse is None:
        words = line.split()
        return {"id": words[0], "age": words[1] if len(words) > 1 else None}
    match = command.parse.search(line)
    if match is None:
        return None
    found = {key: value for key, value in match.groupdict().items() if value is not None}
    found.setdefault("id", match.group(1) if command.parse.groups else match.group(0))
    return found


def _age(fields: dict[str, Any], now: float) -> float | None:
    try:
        if fields.get("age") is not None:
            return parse_age(str(fields["age"]))
        if fields.get("start") is not None:
            return max(now - float(fields["start"]), 0.0)
    except ValueError:
        return None
    return None
