"""Reading a step's output: whether it succeeded, the value it shows, the sessions it lists.

Output is parsed, never trusted by exit code alone: a step fails on a non-zero exit, on output
matching ``fail_if``, or (for checks) on output not matching ``parse``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from upgradectl.duration import parse_duration
from upgradectl.plan import Command
from upgradectl.transport.base import CommandResult

# Steps whose `parse` extracts a value rather than deciding success.
_READING_STEPS = frozenset({"active", "node_active", "sessions", "version", "is_blocked"})
# The groups of a `sessions` parse that the tool reads itself; any other named group is a detail.
_SESSION_KEYS = frozenset({"id", "age", "start"})


@dataclass(frozen=True)
class Session:
    """One live session as the playbook's ``sessions`` step printed it."""

    id: str
    age: float | None
    line: str
    # What else the `sessions` parse names (its other named groups: `client`, `caller`,
    # `callee`...): who the session is, in the helpdesk's terms.
    details: Mapping[str, str] = field(default_factory=dict)


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
        details = {key: str(value) for key, value in fields.items() if key not in _SESSION_KEYS}
        sessions.append(
            Session(id=fields["id"], age=_age(fields, now), line=line.strip(), details=details)
        )
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


_PLAIN_SECONDS = re.compile(r"\d+(?:\.\d+)?", re.ASCII)
_CLOCK = re.compile(r"(\d+):([0-5]\d):([0-5]\d)", re.ASCII)


def parse_age(text: str) -> float:
    """Seconds in a session's age field: ``3127``, ``52m7s``, ``1h2m`` or ``00:52:07``.

    Raises ValueError on anything else.
    """
    stripped = text.strip()
    if _PLAIN_SECONDS.fullmatch(stripped):
        return float(stripped)
    if clock := _CLOCK.fullmatch(stripped):
        hours, minutes, seconds = map(int, clock.groups())
        return float(hours * 3600 + minutes * 60 + seconds)
    if stripped.isascii():  # the duration parser would take other scripts' digits
        with suppress(ValueError):
            return parse_duration(stripped)
    raise ValueError(f"not a session age: {text!r} (expected 3127, 52m7s or 00:52:07)")
