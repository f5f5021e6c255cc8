"""Several commands to one host in one round trip, each keeping its own exit code, output and
deadline on the host.

Each command of a node costs a round trip and the node's sshd a session (3-3.5 ms of its CPU);
reads taken together (the probe's, the lock with the block check) and acts that follow one
another (verify, unblock, the lock's release) go as one script. Each part runs under its own
deadline (:mod:`upgradectl.transport.deadline`) and ends with a line carrying a random marker
and its exit code, on stdout, and the marker alone on stderr; a *gate* part that fails ends the
script there, so what depended on it never runs. Each part's text is sent once, in a variable
the bounded command evaluates (a comment before it says its deadline and whether it gates), so
a scripted node (``upgradectl.testing``) can answer each part as it would answer it alone.

The controller waits for a batch as long as its parts may take one after another, and the host
stops the whole batch then. A read-only part (a reading: the block, a count, the version) runs
under that deadline only, in a subshell: a process of its own under ``timeout`` for each reading
doubled what a round trip cost the node's CPU.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from upgradectl.transport.base import CommandResult
from upgradectl.transport.deadline import KILL_AFTER, bounded

_HEADER = "# upgradectl batch "
_EXPORT = "; export u_part"
_PART = re.compile(r"^# part (\S+) (gate|next)\n", re.MULTILINE)


@dataclass(frozen=True)
class Part:
    """One command of a batch; after a failed ``gate`` nothing more runs; ``bounded``: stopped
    on the host at its own ``timeout`` (else at the batch's)."""

    text: str
    timeout: float
    gate: bool = False
    bounded: bool = True


def compose(parts: Sequence[Part]) -> str:
    """The one script that runs ``parts`` in order."""
    marker = "upgradectl-" + os.urandom(8).hex()  # as secrets.token_hex, without its imports
    lines = [f"{_HEADER}{marker}"]
    for part in parts:
        lines += [
            f"# part {part.timeout!r} {'gate' if part.gate else 'next'}",
            f"u_part={shlex.quote(part.text)}{_EXPORT}",
            bounded('eval "$u_part"', part.timeout) if part.bounded else '( eval "$u_part" )',
            f"u_rc=$?; printf '\\n%s %s\\n' {marker} \"$u_rc\"; printf '\\n%s\\n' {marker} >&2",
        ]
        if part.gate:
            lines.append('[ "$u_rc" -eq 0 ] || exit 0')
    return "\n".join(lines) + "\n"


def timeout_of(parts: Sequence[Part]) -> float:
    """How long the whole script may take: every part to its own deadline, and its kill."""
    return sum(part.timeout + KILL_AFTER for part in parts)


def parts_of(script: str) -> list[Part] | None:
    """The parts of a script :func:`compose` wrote (None for any other command)."""
    if not script.startswith(_HEADER):
        return None
    parts = []
    for match in _PART.finditer(script):
        assignment = script[match.end() : script.index(_EXPORT + "\n", match.end())]
        text = shlex.split(assignment)[0].removeprefix("u_part=")
        parts.append(Part(text, float(match.group(1)), match.group(2) == "gate"))
    return parts


def marker_of(script: str) -> str:
    """The marker a script's parts end their output with."""
    return script[len(_HEADER) : script.index("\n")]


def answered(script: str, results: Sequence[tuple[int, str, str]]) -> tuple[str, str]:
    """The stdout and stderr the script prints when its parts print ``results`` (exit code,
    stdout, stderr), for a host that answers each part itself."""
    marker = marker_of(script)
    stdout = "".join(f"{out}\n{marker} {code}\n" for code, out, _ in results)
    stderr = "".join(f"{err}\n{marker}\n" for _, _, err in results)
    return stdout, stderr


def split(script: str, parts: Sequence[Part], result: CommandResult) -> list[CommandResult]:
    """Each part's result, for the parts that ran (those after a failed gate did not)."""
    marker = marker_of(script)
    outs = result.stdout.split(f"\n{marker} ")
    errs = result.stderr.split(f"\n{marker}\n")
    results: list[CommandResult] = []
    stdout = outs[0]
    for index, rest in enumerate(outs[1:]):
        code, _, following = rest.partition("\n")
        stderr = errs[index] if index < len(errs) else ""
        results.append(CommandResult(parts[index].text, int(code), stdout, stderr, result.duration))
        stdout = following
    return results[: len(parts)]
