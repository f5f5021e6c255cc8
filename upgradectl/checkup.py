"""``check`` and ``playbooks``: what the inventory and the playbooks offer, validated."""

from __future__ import annotations

from upgradectl.errors import UsageError
from upgradectl.loader import bundled_playbooks, load_playbook
from upgradectl.plan import PlanOptions, build_plan
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
        playbook = build_plan(inventory, [name], "status", options, "check").nodes[0].playbook
        lines.append(
            f"  {name}: playbook {playbook.name} ({playbook.path}): {', '.join(supported) or 'nothing'}"
        )
    lines.append("ok")
    return lines


def bundled_descriptions() -> dict[str, str]:
    """Name -> one-line description of every bundled playbook."""
    return {name: load_playbook(path).description for name, path in bundled_playbooks().items()}
