"""``check`` and ``playbooks``: what the inventory and the playbooks offer, validated.

Every template of every node is rendered once (``version`` stands in as ``<version>`` so that
every other missing variable is found), and every ``run:`` is read for values that reach the
shell unquoted. Warnings do not fail the check unless ``--strict`` says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from upgradectl.errors import UsageError
from upgradectl.loader import bundled_playbooks, load_playbook, load_playbooks
from upgradectl.model import COMMAND_NEEDS, COUNT_STEPS, Inventory
from upgradectl.plan import (
    NodePlan,
    PlanOptions,
    build_plan,
    node_variables,
)
from upgradectl.quoting import Unquoted, unquoted
from upgradectl.settings import Settings

# The commands `check` reports a playbook as able to do.
ACTING_COMMANDS = ("drain", "upgrade", "patch")
_OPTIONS = PlanOptions(version="<version>")


@dataclass
class CheckReport:
    """What `check` found: a line per node, and the warnings (each once)."""

    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class CheckWarnings(UsageError):
    """``check --strict`` found warnings."""


def check(settings: Settings, *, strict: bool = False) -> CheckReport:
    """Validate the inventory; with ``strict``, warnings raise CheckWarnings (exit 2)."""
    inventory = settings.load()
    report = CheckReport(
        [f"{settings.inventory}: {len(inventory.nodes)} nodes, {len(inventory.groups)} groups"]
    )
    with_playbook = [name for name, node in inventory.nodes.items() if node.playbook]
    plan = build_plan(
        inventory, with_playbook, "check", _OPTIONS, "check", load_playbooks(inventory)
    )
    warnings: dict[str, None] = {}  # an ordered set: a shared playbook warns once
    for name, node in inventory.nodes.items():
        if not node.playbook:
            report.lines.append(
                f"  {name}: no playbook (a balancer or a peer: steps run on it with `on:`)"
            )
            continue
        node_plan = plan.node(name)
        playbook = node_plan.playbook
        supported = [command for command in ACTING_COMMANDS if playbook.supports(command)]
        report.lines.append(
            f"  {name}: playbook {playbook.name} ({playbook.path}): {', '.join(supported) or 'nothing'}"
            + _witnesses(node_plan)
            + _read_back(node_plan)
        )
        if not supported:
            warnings.setdefault(
                f"{playbook.where or playbook.path} no command can use playbook "
                f"{playbook.name!r}: {_needs()}"
            )
        for problem in _unquoted(inventory, node_plan):
            warnings.setdefault(str(problem))
    report.warnings = list(warnings)
    if strict and report.warnings:
        raise CheckWarnings(
            f"{len(report.warnings)} warning(s), and --strict makes warnings errors:\n"
            + "\n".join(f"  {warning}" for warning in report.warnings)
        )
    report.lines.append("ok")
    return report


def _needs() -> str:
    return "; ".join(
        f"`{command}` needs {', '.join(COMMAND_NEEDS[command])}" for command in ACTING_COMMANDS
    )


def _unquoted(inventory: Inventory, node_plan: NodePlan) -> list[Unquoted]:
    variables = node_variables(
        inventory, node_plan.node, node_plan.playbook, _OPTIONS, "check", node_plan.pair
    )
    return [
        problem
        for spec in node_plan.playbook.steps.values()
        for problem in unquoted(spec.run, spec.at("run"), variables)
    ]


def _witnesses(plan: NodePlan) -> str:
    """Where the node's sessions are counted: drained means every count says zero."""
    counts = [f"{step} on {plan.steps[step].target}" for step in COUNT_STEPS if step in plan.steps]
    return f"; counts sessions with {' and '.join(counts)}" if counts else ""


def _read_back(plan: NodePlan) -> str:
    """Whether a block and an unblock are read back (they are reported only as seen)."""
    if "block" not in plan.steps:
        return ""
    if "is_blocked" not in plan.steps:
        return "; no is_blocked step: the block and unblock are not read back"
    return f"; reads the block back with is_blocked on {plan.steps['is_blocked'].target}"


def bundled_descriptions() -> dict[str, str]:
    """Name -> one-line description of every bundled playbook."""
    return {name: load_playbook(path).description for name, path in bundled_playbooks().items()}
