"""What a run is about to do, known after the probe and before the first block: the nodes in
their order, their live sessions, how many sessions the straggler policy could cut, and the
nodes a new version would take backwards (a downgrade).

The command line shows it and asks on a terminal; a downgrade needs ``--allow-downgrade`` or a
yes to that question.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from upgradectl.plan import Plan
from upgradectl.probe import Probe


@dataclass(frozen=True)
class Intent:
    """The run's plan in the operator's terms."""

    command: str
    version: str | None
    order: list[str]
    active: Mapping[str, int | None]
    most_cut: Mapping[str, int]  # per node: the most sessions its straggler policy may cut
    downgrades: Mapping[str, str] = field(default_factory=dict)  # node -> the version it runs
    resuming: str | None = None  # the run id being carried on

    @property
    def live(self) -> int | None:
        """Live sessions on the nodes to act on now (None when none could be counted)."""
        counts = [count for count in self.active.values() if count is not None]
        return sum(counts) if counts else None

    @property
    def could_cut(self) -> int:
        """The most sessions the run could cut, over every node."""
        return sum(self.most_cut.values())


def intent_of(
    plan: Plan, order: list[str], probes: Mapping[str, Probe], resuming: str | None = None
) -> Intent:
    """The intent of running ``plan`` on ``order`` (``probes`` may be empty: nothing was asked)."""
    cuts = plan.command in ("drain", "upgrade")
    most_cut = {}
    for name in order:
        drain = plan.node(name).drain
        most_cut[name] = drain.max_stragglers if cuts and drain.stragglers == "force" else 0
    active = {name: probes[name].active if name in probes else None for name in order}
    downgrades = {}
    if plan.command == "upgrade" and plan.version is not None:
        for name in order:
            running = probes[name].version if name in probes else None
            if running is not None and older(plan.version, running):
                downgrades[name] = running
    return Intent(plan.command, plan.version, order, active, most_cut, downgrades, resuming)


def older(version: str, than: str) -> bool:
    """Whether ``version`` comes before ``than``, reading digit runs as numbers (6.10 > 6.9)."""
    return _key(version) < _key(than)


def _key(version: str) -> list[tuple[int, int | str]]:
    # Numbers sort after words at the same place: 2.0 > 2.0~rc1 is not promised, 2.0.1 > 2.0 is.
    return [
        (1, int(part)) if part.isdigit() else (0, part)
        for part in re.split(r"(\d+)", version)
        if part and part not in ".-_+:~"
    ]
