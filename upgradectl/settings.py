"""What every command is given: the global options, and which nodes it acts on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from upgradectl.loader import load_inventory
from upgradectl.model import Inventory


@dataclass
class Settings:
    """The global options."""

    inventory: str
    state_dir: str
    accept_new_host_keys: bool = False

    def load(self) -> Inventory:
        """The inventory, validated."""
        return load_inventory(self.inventory)


@dataclass
class Selection:
    """Which nodes a command acts on."""

    names: Sequence[str] = ()
    group: str | None = None
    everything: bool = False
