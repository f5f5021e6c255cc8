"""Running one node's rendered steps: reconnects, retries, and reading their output.

Output is parsed, never trusted by exit code alone: a step fails on a non-zero exit, on output
matching ``fail_if``, or (for checks) on output not matching ``parse``. A count that is not a
number is never read as zero.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from upgradectl.errors import CommandTimedOut, ConnectionLost, StepFailed, UnreadableCount
from upgradectl.estimate import Session, parse_age
from upgradectl.events import Events
from upgradectl.model import REPEATABLE_STEPS
from upgradectl.plan import Command, NodePlan
from upgradectl.transport.base import CommandResult, Transport, wrap_sudo

# Steps whose `parse` extracts a value rather than deciding success.
_READING_STEPS = frozenset({"active", "sessions", "version", "is_blocked"})


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
                failure, output = f"timed out after {exc.timeout:g}s", ""
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

    def execute(self, command: Command, *, repeatable: bool | None = None) -> CommandResult:
        """One attempt of ``command``; a dropped connection is re-opened and a repeatable step re-run."""
        if repeatable is None:
            repeatable = command.step in REPEATABLE_STEPS
        transport = self.transport_for(command.target)
        text = wrap_sudo(command.run) if command.sudo else command.run
        self.events.emit(
            "step", self.plan.name, f"{command.step} on {command.target}: {command.run}"
        )
        while True:
            try:
                result = transport.run(text, command.timeout)
            except ConnectionLost as exc:
                if not repeatable:
                    raise
                self.events.emit("warning", self.plan.name, f"{exc}; reconnecting")
                transport.reconnect(time.monotonic() + self.reconnect_for)
                continue
            self.events.emit(
                "step-output", self.plan.name, f"{command.step}: exit {result.exit_code}: {result.output.strip()}",
                exit_code=result.exit_code,
            )  # fmt: skip
            return result

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
