"""Shell completion of node, group and playbook names, read from the inventory being used.

Completion runs on every Tab: it must be quick and must never fail loudly, so anything that
cannot be read completes to nothing.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import click
from click.shell_completion import CompletionItem

from upgradectl.errors import UpgradectlError

if TYPE_CHECKING:
    from upgradectl.model import Inventory


def _inventory(ctx: click.Context) -> Inventory | None:
    from upgradectl.loader import load_inventory  # noqa: PLC0415 - only when completing

    path = ctx.find_root().params.get("inventory") or os.environ.get(
        "UPGRADECTL_INVENTORY", "inventory.yaml"
    )
    try:
        return load_inventory(str(path))
    except (UpgradectlError, OSError):
        return None


def nodes(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The inventory's node names starting with ``incomplete``."""
    found = _inventory(ctx)
    names = found.nodes if found else {}
    return [CompletionItem(name) for name in names if name.startswith(incomplete)]


def groups(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The inventory's group names starting with ``incomplete``."""
    found = _inventory(ctx)
    names = found.groups if found else {}
    return [CompletionItem(name) for name in names if name.startswith(incomplete)]


def playbooks(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Bundled playbook names and the inventory's own ``playbooks/*.yaml``."""
    from upgradectl.loader import bundled_playbooks  # noqa: PLC0415

    names = set(bundled_playbooks())
    found = _inventory(ctx)
    if found is not None:
        folder = os.path.join(os.path.dirname(os.path.abspath(found.path)), "playbooks")
        if os.path.isdir(folder):
            names.update(f.removesuffix(".yaml") for f in os.listdir(folder) if f.endswith(".yaml"))
    return [CompletionItem(name) for name in sorted(names) if name.startswith(incomplete)]
