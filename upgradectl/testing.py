"""Fakes for your own tests of playbooks and runs: a node that answers from a script, and a clock.

``ScriptedTransport`` stands in for one node. It answers each command from a script, a list of
rules ``(regular expression, answer)`` tried in order with ``re.search``, or one function, and
records every command it was given. An answer is a :class:`Reply`, a list of replies (one per
call, the last one repeated: a session count that goes 3, 2, 0), or a function of the command.
A command no rule answers raises :class:`UnscriptedCommand`, so a test never passes on a
command it did not expect. The tool's own node-lock commands are answered before the script, as
on a node nobody else has locked; the preflight's ``sudo -n -l`` questions are answered "allowed"
after it (script a rule for ``sudo -n -l`` to refuse one).

``ManualClock`` is time that moves only when asked. Give ``clock.monotonic`` and ``clock.wall``
to ``RunContext`` and ``clock.stop()`` as its ``stop``: every wait of a run (drain polls, retry
delays) then returns at once and moves the clock on instead, so an hour-long drain takes
milliseconds and a deadline is reached exactly.

Example::

    transport = ScriptedTransport("fs-1", [
        (r"fsctl pause inbound", Reply("+OK\\n")),
        (r"show calls count", [Reply("\\n3 total.\\n"), Reply("\\n0 total.\\n")]),
    ])
    connections = Connections(inventory, make=lambda node: transport)
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import jinja2

from upgradectl import batch
from upgradectl.context import Stop
from upgradectl.model import Playbook
from upgradectl.nodelock import _TAKEN  # the lock's own marker, shared rather than copied
from upgradectl.sudo import SUDO_CHECK
from upgradectl.transport.base import CommandResult

__all__ = ["Answer", "ManualClock", "Reply", "Rule", "ScriptedTransport", "UnscriptedCommand"]


@dataclass(frozen=True)
class Reply:
    """What a scripted command prints and how it exits."""

    stdout: str = ""
    stderr: str = ""
    exit_code: int = 0


Answer = Reply | Sequence[Reply] | Callable[[str], Reply]
"""A reply, replies in turn (the last one repeats), or a function of the command text."""

Rule = tuple[str | re.Pattern[str], Answer]
"""``(regular expression searched in the command, answer)``."""


class UnscriptedCommand(AssertionError):
    """A scripted node was sent a command that no rule of its script answers."""

    def __init__(self, node: str, command: str) -> None:
        self.node = node
        self.command = command
        super().__init__(f"{node}: no scripted answer for: {command}")


class ScriptedTransport:
    """A node that answers commands from a script and records what it ran (the Transport interface).

    ``lock_path`` is the node's lock file (the playbook's ``lock:``); by default the default
    lock path of a node called ``name``.
    """

    def __init__(
        self,
        name: str,
        script: Sequence[Rule] | Callable[[str], Reply],
        *,
        lock_path: str | None = None,
    ) -> None:
        self.name = name
        self.connections_opened = 0
        self.commands: list[str] = []
        self.round_trips = 0  # commands sent together count once
        self.closed = False
        self._rules = _compile(script)
        default_lock = jinja2.Template(Playbook.lock).render(node={"name": name})
        self._lock_file = shlex.quote(lock_path or default_lock)
        self._calls: dict[int, int] = {}  # rule index -> times it answered

    def connect(self) -> None:
        """Open the scripted node's one connection (the preflight's question)."""
        self.connections_opened = self.connections_opened or 1

    def run(self, command: str, timeout: float) -> CommandResult:
        """Answer ``command`` from the script; UnscriptedCommand when no rule matches.

        Commands sent together in one round trip (:mod:`upgradectl.batch`) are answered and
        recorded one by one, as a node's shell runs them.
        """
        self.connections_opened = self.connections_opened or 1
        self.round_trips += 1
        parts = batch.parts_of(command)
        if parts is None:
            self.commands.append(command)
            reply = self._answer(command)
            return CommandResult(command, reply.exit_code, reply.stdout, reply.stderr, 0.0)
        replies = []
        for part in parts:
            self.commands.append(part.text)
            reply = self._answer(part.text)
            replies.append((reply.exit_code, reply.stdout, reply.stderr))
            if part.gate and reply.exit_code != 0:
                break
        stdout, stderr = batch.answered(command, replies)
        return CommandResult(command, 0, stdout, stderr, 0.0)

    def reconnect(self, deadline: float) -> None:
        """Count a new connection, as a real transport would open one."""
        self.connections_opened += 1

    def close(self) -> None:
        """Remember that the run released the node."""
        self.closed = True

    def ran(self, pattern: str | re.Pattern[str]) -> list[str]:
        """The commands run so far that ``pattern`` is found in, in order."""
        return [command for command in self.commands if re.search(pattern, command)]

    def _answer(self, command: str) -> Reply:
        if self._lock_file in command:
            # Taking the lock prints the "taken" marker; releasing and reading it print nothing.
            return Reply(f"{_TAKEN}\n" if _TAKEN in command else "")
        for index, (pattern, answer) in enumerate(self._rules):
            if pattern.search(command):
                turn = self._calls.get(index, 0)
                self._calls[index] = turn + 1
                return _reply(answer, command, turn)
        if command.startswith(SUDO_CHECK):
            return Reply(command.removeprefix(SUDO_CHECK) + "\n")  # sudo prints what it allows
        raise UnscriptedCommand(self.name, command)


def _compile(
    script: Sequence[Rule] | Callable[[str], Reply],
) -> list[tuple[re.Pattern[str], Answer]]:
    if callable(script):
        return [(re.compile(""), script)]
    for pattern, answer in script:
        if not isinstance(answer, Reply) and not callable(answer) and not answer:
            raise ValueError(f"the rule for {pattern!r} has an empty list of replies")
    return [(re.compile(pattern), answer) for pattern, answer in script]


def _reply(answer: Answer, command: str, turn: int) -> Reply:
    if isinstance(answer, Reply):
        return answer
    if callable(answer):
        return answer(command)
    return answer[min(turn, len(answer) - 1)]


class ManualClock:
    """Monotonic and wall time that move only when the clock is advanced (or waited on)."""

    def __init__(self, wall: float = 1_800_000_000.0) -> None:
        self.elapsed = 0.0
        self._wall_at_start = wall

    def monotonic(self) -> float:
        """Seconds since the clock was made."""
        return self.elapsed

    def wall(self) -> float:
        """Epoch seconds: the start time given, plus the time elapsed."""
        return self._wall_at_start + self.elapsed

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass."""
        self.elapsed += max(seconds, 0.0)

    def stop(self) -> Stop:
        """A run's Stop whose waits advance this clock at once instead of sleeping."""
        return _ClockedStop(self)


class _ClockedStop(Stop):
    """Waits take no real time: they move the clock on, unless a stop was asked for."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__()
        self.clock = clock

    def wait(self, seconds: float) -> bool:
        """Advance the clock by ``seconds``; True at once when a stop was asked for."""
        if self.requested:
            return True
        self.clock.advance(seconds)
        return False
