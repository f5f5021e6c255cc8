"""``check`` and ``playbooks``: what the inventory and the playbooks offer, validated."""

from __future__ import annotations

from upgradectl.errors import UsageError
from upgradectl.loader import bundled_playbooks, load_playbook
from upgradectl.model import COUNT_STEPS
from upgradectl.plan import NodePlan, PlanOptions, build_plan
from upgradectl.settings import Settings


def check(settings: Settings) -> list[str]:
    """Validate the inventory and every playbook it uses, rendering every template for every node.

    ``version`` stands in as ``<version>`` so that every other missing variable is found.
    """
    inventory = settings.load()
    lines = [f"{settings.inventory}: {len(inventory.nodes)} nodes, {len(inventory.groups)} groups"]
    options = PlanOptions(version="<version>")
    for name in inventory.nodes:
        if inventory.nodes[name].playbook is None:
            lines.append(
                f"  {name}: no playbook (a balancer or a peer: steps run on it with `on:`)"
            )
            continue
        supported = []
        for command in ("drain", "upgrade", "patch"):
            try:
                build_plan(inventory, [name], command, options, "check")
            except UsageError as exc:
                if "step, which" not in str(exc):
                    raise  # a real error, not merely a command this playbook does not do
                continue
            supported.append(command)
        status = build_plan(inventory, [name], "status", options, "check").nodes[0]
        playbook = status.playbook
        lines.append(
            f"  {name}: playbook {playbook.name} ({playbook.path}): {', '.join(supported) or 'nothing'}"
            + _witnesses(status)
        )
    lines.append("ok")
    return lines


def _witnesses(plan: NodePlan) -> str:
    """Where the node's sessions are counted: drained means every count says zero."""
    counts = [f"{step} on {plan.steps[step].target}" for step in COUNT_STEPS if step in plan.steps]
    return f"; counts sessions with {' and '.join(counts)}" if counts else ""


def bundled_descriptions() -> dict[str, str]:
    """Name -> one-line description of every bundled playbook."""
    return {name: load_playbook(path).description for name, path in bundled_playbooks().items()}
