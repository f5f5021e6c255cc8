"""Running one node's rendered steps over the run's connections: reconnects and retries.

What the output means is :mod:`upgradectl.parsing`'s to say; a count that is not a number is
never read as zero.

Steps that follow one another can share a round trip (:meth:`Steps.along`, :mod:`upgradectl.batch`):
they run with the node's next command, and each one's result then serves its own turn, unless
another command runs first (the result is then stale and dropped, and the step runs again).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from upgradectl import batch
from upgradectl.errors import (
    CommandTimedOut,
    ConnectionLost,
    StepFailed,
    Unreachable,
    UnreadableCount,
)
from upgradectl.events import Events
from upgradectl.model import READ_ONLY_STEPS, REPEATABLE_STEPS
from upgradectl.parsing import Session, check, extract, parse_sessions
from upgradectl.plan import Command, NodePlan
from upgradectl.sudo import wrap_sudo
from upgradectl.transport.base import CommandResult, Transport
from upgradectl.transport.deadline import stopped_at_deadline

# What the tool runs of its own (the node lock) is safe to repeat, like the repeatable steps.
_REPEATABLE = REPEATABLE_STEPS | {"lock"}


def _acts(command: Command) -> bool:
    """Whether ``command`` changes something (then, sent with others, it keeps its own deadline
    on the host; a reading shares theirs)."""
    return command.step not in READ_ONLY_STEPS | {"lock"}  # the lock: the tool's own, quick


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
        self._along: list[Command] = []  # to send with the next command
        self._gated = False  # whether each of them runs only if the ones before it succeeded
        self._ready: dict[tuple[str, str], CommandResult] = {}  # (target, text): read ahead

    def along(self, *steps: str | Command, gated: bool = False) -> None:
        """Send ``steps`` (names of the playbook's steps it has, or commands) with the node's
        next command to their host, in one round trip; those on another host run on their own.

        ``gated``: each one runs only if the command before it exited 0 (verify, then unblock,
        then the lock's release), so a caller gates only steps whose success is their exit code.
        """
        self._along = [
            step if isinstance(step, Command) else self.plan.steps[step]
            for step in steps
            if isinstance(step, Command) or step in self.plan.steps
        ]
        self._gated = gated

    def ready(self, step: str) -> bool:
        """Whether ``step``'s result was read ahead and still serves (no round trip for it)."""
        command = self.plan.steps.get(step)
        return command is not None and (command.target, self._text(command)) in self._ready

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
        reconnect_for: float | None = None,
    ) -> CommandResult:
        """One attempt of ``command``; a dropped connection is re-opened and a repeatable step re-run.

        Reconnecting goes on for ``reconnect_for`` seconds from now when given (a reboot's wait),
        else for the drain policy's ``reconnect_for`` from the first drop the node has not
        answered since; then the node is Unreachable, and later commands to it in this run fail
        at once.
        """
        text = self._text(command)
        self.events.emit("step", self.plan.name, f"{command.step} on {command.target}: {text}")
        result = self._ready.pop((command.target, text), None)
        if result is None:
            self._ready.clear()  # once another command runs, what was read ahead is stale
            result = self._round_trip(command, text, repeatable, reconnect_for)
        if stopped_at_deadline(result.exit_code, result.duration, command.timeout):
            raise CommandTimedOut(command.target, text, command.timeout, stopped=True)
        self.events.emit(
            "step-output", self.plan.name, f"{command.step}: exit {result.exit_code}: {result.output.strip()}",
            exit_code=result.exit_code,
        )  # fmt: skip
        return result

    def _text(self, command: Command) -> str:
        return wrap_sudo(command.run) if command.sudo else command.run

    def _round_trip(
        self, command: Command, text: str, repeatable: bool | None, reconnect_for: float | None
    ) -> CommandResult:
        """Run ``command`` (with what goes along with it to its host) over the connection."""
        along = [
            other
            for other in self._along
            if other.target == command.target and self._text(other) != text
        ]
        self._along = []
        parts = [batch.Part(text, command.timeout, self._gated and bool(along), _acts(command))]
        for number, other in enumerate(along, 1):
            gate = self._gated and number < len(along)
            parts.append(batch.Part(self._text(other), other.timeout, gate, _acts(other)))
        if repeatable is None:
            repeatable = command.step in _REPEATABLE
        repeatable = repeatable and all(other.step in _REPEATABLE for other in along)
        script = batch.compose(parts) if along else text
        timeout = batch.timeout_of(parts) if along else command.timeout
        transport = self.transport_for(command.target)
        # The transport's deadlines are on its own clock, the real one.
        until = None if reconnect_for is None else time.monotonic() + reconnect_for
        while True:
            if command.target in self._lost_since:
                self._reconnect(transport, command.target, until)
            try:
                result = transport.run(script, timeout)
            except CommandTimedOut as exc:
                if not exc.stopped:  # no answer at all: the link is suspect from now on
                    self._lost_since.setdefault(command.target, time.monotonic())
                if along:  # said of the step, not of the script that carried it
                    sent = f"{text} (and {len(along)} more sent with it)"
                    raise CommandTimedOut(
                        exc.host, sent, timeout, stopped=exc.stopped, started=exc.started
                    ) from None
                raise
            except ConnectionLost as exc:
                self._lost_since.setdefault(command.target, time.monotonic())
                if not repeatable:
                    raise
                self.events.emit("warning", self.plan.name, f"{exc}; reconnecting")
                continue
            self._lost_since.pop(command.target, None)
            if not along:
                return result
            results = batch.split(script, parts, result)
            for part, found in zip(parts[1:], results[1:], strict=False):
                self._ready[(command.target, part.text)] = found
            if not results:  # the script ended before its first part did
                return CommandResult(text, result.exit_code, result.stdout, result.stderr, 0.0)
            return results[0]

    def _reconnect(self, transport: Transport, target: str, until: float | None) -> None:
        """Connect again to a node that stopped answering, within what is left of its budget."""
        until = until or self._lost_since[target] + self.reconnect_for
        if time.monotonic() >= until:
            raise Unreachable(
                f"{target}: unreachable: the run gave up reconnecting to it "
                f"(drain.reconnect_for: {self.reconnect_for:g}s)"
            )
        transport.reconnect(until)

    def count(self, step: str = "active") -> int:
        """The session count a count step (``active``, ``node_active``) prints; UnreadableCount
        when it is not a number."""
        command = self.plan.steps[step]
        result = self.execute(command)
        failure = check(command, result)
        if failure:
            raise UnreadableCount(step, command.target, failure, result.output)
        value = extract(command, result.stdout)
        if value is None or not value.strip().isdigit():
            shown = (result.output.strip() or "no output")[:120]
            raise UnreadableCount(
                step, command.target, f"not a session count: {shown!r}", result.output
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
