"""Asking before acting, as terraform does: on a terminal, after the probe, showing what will
happen; without a terminal and without --yes, refusing (exit 2) with nothing touched.

Whether there is someone to ask is read from standard input alone: piped through `tee` at a
terminal, the operator can still answer; from cron (stdin not a TTY) nobody can.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from upgradectl.cli.views import View
from upgradectl.errors import UsageError

if TYPE_CHECKING:
    from upgradectl.intent import Intent


def must_ask(command: str, *, yes: bool, dry_run: bool) -> bool:
    """Whether to ask; refuses the run (UsageError, exit 2) when it should ask but cannot."""
    if yes or dry_run:
        return False
    if sys.stdin.isatty():
        return True
    raise UsageError(
        f"{command}: no terminal to ask on (standard input is not a TTY): pass --yes to "
        "act without asking; nothing was touched"
    )


def asker(view: View) -> Callable[[Intent], bool]:
    """The question, put to the operator on standard error with the live view paused."""

    def ask(intent: Intent) -> bool:
        with view.paused():
            click.echo(describe(intent), err=True)
            return click.confirm("Proceed?", default=False, err=True)

    return ask


def describe(intent: Intent) -> str:
    """What the run will do, in the operator's words."""
    what = f"{intent.command}" + (f" to version {intent.version}" if intent.version else "")
    if intent.resuming:
        what = f"resume run {intent.resuming} ({what})"
    lines = [f"{what}, {len(intent.order)} node(s), in this order:"]
    for name in intent.order:
        active = intent.active.get(name)
        live = "? active" if active is None else f"{active} active"
        most = intent.most_cut[name]
        cut = f"at most {most} cut" if most else "no session cut"
        lines.append(f"  {name:<16} {live:<10} {cut}")
    live = "unknown" if intent.live is None else str(intent.live)
    lines.append(
        f"live sessions now: {live}; sessions that could be cut at most: {intent.could_cut}"
    )
    for name, running in intent.downgrades.items():
        lines.append(f"DOWNGRADE: {name} runs {running}; this installs {intent.version}")
    return "\n".join(lines)
