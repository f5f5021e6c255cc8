"""Option decorators shared by the commands, so each option reads the same everywhere."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from upgradectl.cli import completion

F = TypeVar("F", bound=Callable[..., Any])


def _stack(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    def apply(function: F) -> F:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return apply


nodes_argument = click.argument(
    "nodes", nargs=-1, metavar="NODE...", shell_complete=completion.nodes
)

selection_options = _stack(
    nodes_argument,
    click.option(
        "--group",
        "-g",
        metavar="G",
        help="Every node of group G.",
        shell_complete=completion.groups,
    ),
    click.option("--all", "everything", is_flag=True, help="Every node of the inventory."),
)

plan_options = _stack(
    click.option(
        "--version",
        "version",
        metavar="V",
        help="The version to roll out (the `version` variable).",
    ),
    click.option(
        "--var",
        "extra_vars",
        metavar="K=V",
        multiple=True,
        help="Set a variable; wins over the files.",
    ),
    click.option(
        "--playbook",
        metavar="P",
        help="Use playbook P (a bundled name or a path) for every node.",
        shell_complete=completion.playbooks,
    ),
)

drain_options = _stack(
    click.option(
        "--timeout", metavar="D", help="How long to wait for sessions to end (90s, 15m, 1h30m)."
    ),
    click.option(
        "--stragglers",
        type=click.Choice(["force", "abort", "wait"]),
        help="What to do with the sessions left at the deadline.",
    ),
    click.option(
        "--max-stragglers",
        type=click.IntRange(min=0),
        metavar="N",
        help="Force only when at most N remain.",
    ),
)

yes_option = click.option(
    "--yes", "-y", is_flag=True, help="Act without asking (needed without a terminal)."
)

acting_options = _stack(
    click.option(
        "--dry-run", is_flag=True, help="Run only read-only steps and say what would happen."
    ),
    yes_option,
    click.option(
        "--break-lock", is_flag=True, help="Take over a node lock left by a dead run (journalled)."
    ),
)

fleet_options = _stack(
    click.option(
        "--max-unavailable",
        metavar="N|P%",
        help="At most this many nodes out of service at once (overrides groups).",
    ),
    click.option(
        "--max-failures",
        type=click.IntRange(min=1),
        metavar="N",
        help="Start no new node after N failures.",
    ),
)

unattended_options = _stack(
    click.option(
        "--window",
        metavar="HH:MM-HH:MM",
        help="Start nothing outside this window; cut drains at its end.",
    ),
    click.option("--tz", metavar="ZONE", help="The window's time zone (default: local time)."),
    click.option("--report", metavar="FILE", help="Write the JSON summary to FILE."),
    click.option(
        "--metrics-file",
        metavar="FILE",
        help="Write Prometheus metrics (textfile collector) to FILE.",
    ),
    click.option(
        "--notify", metavar="URL", help="POST run start, node done and run end as JSON to URL."
    ),
)
