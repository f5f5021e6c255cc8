"""A fleet of scripted nodes run through the real run use case (probe, fleet rules, node runs).

For the fleet's decisions: each node is a ScriptedTransport answering the one-word steps of
``fakenode.STEPS``; waits take no real time (a ManualClock's Stop).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from fakenode import RUN_ID, STEPS

from upgradectl.app import RunOptions, run_nodes
from upgradectl.connections import Connections
from upgradectl.context import RunContext
from upgradectl.events import Event, Events
from upgradectl.journal import Journal
from upgradectl.loader import load_inventory, load_playbooks
from upgradectl.plan import PlanOptions, build_plan
from upgradectl.results import NodeResult
from upgradectl.testing import ManualClock, Reply, Rule, ScriptedTransport


def healthy() -> list[Rule]:
    """An empty node that stays blocked once blocked, reports version 1.0, upgrades cleanly."""
    blocked = [False]

    def block(value: bool) -> Callable[[str], Reply]:
        def answer(command: str) -> Reply:
            blocked[0] = value
            return Reply()

        return answer

    return [
        ("^is_blocked$", lambda command: Reply("blocked\n" if blocked[0] else "")),
        ("^block$", block(True)),
        ("^unblock$", block(False)),
        ("^count$", Reply("0 active\n")),
        ("^sessions$", Reply("")),
        ("^version$", Reply("1.0\n")),
        ("^(upgrade|verify)$", Reply()),
    ]


@dataclass
class FakeFleet:
    """``size`` nodes in one group (``max_unavailable`` of them at once); ``scripts`` replaces
    the script of the nodes it names (rules tried before the healthy ones)."""

    tmp_path: Path
    size: int = 4
    max_unavailable: str = "100%"
    scripts: dict[str, list[Rule]] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.names = [f"node-{n}" for n in range(1, self.size + 1)]
        self.transports = {
            name: ScriptedTransport(name, [*self.scripts.get(name, []), *healthy()])
            for name in self.names
        }
        playbook = self.tmp_path / "fake.yaml"
        steps: dict[str, Any] = {**STEPS, "version": {"run": "version", "parse": "^(?P<v>\\S+)$"}}
        drain = {"timeout": "10m", "poll": "1s", "settle": 1}
        playbook.write_text(yaml.safe_dump({"name": "fake", "drain": drain, "steps": steps}))
        inventory = self.tmp_path / "inventory.yaml"
        spec = {"playbook": str(playbook), "transport": "local", "groups": ["all"]}
        inventory.write_text(
            yaml.safe_dump(
                {
                    "groups": {"all": {"max_unavailable": self.max_unavailable}},
                    "nodes": {name: spec for name in self.names},
                }
            )
        )
        self.inventory = load_inventory(str(inventory))
        self.clock = ManualClock()

    def run(self, on_event: Callable[[Event], None] | None = None) -> dict[str, NodeResult]:
        """Upgrade every node to 2.0; each node's result by name."""
        playbooks = load_playbooks(self.inventory)
        plan = build_plan(
            self.inventory, self.names, "upgrade", PlanOptions(version="2.0"), RUN_ID, playbooks
        )

        def seen(event: Event) -> None:
            self.events.append(event)
            if on_event is not None:
                on_event(event)

        ctx = RunContext(
            run_id=RUN_ID,
            command="upgrade",
            connections=Connections(self.inventory, make=lambda node: self.transports[node.name]),
            journal=Journal(str(self.tmp_path / "state"), RUN_ID),
            events=Events(seen),
            stop=self.clock.stop(),
            state_dir=str(self.tmp_path / "state"),
            monotonic=self.clock.monotonic,
            wall=self.clock.wall,
        )
        results = run_nodes(plan, ctx, RunOptions(), None)
        ctx.journal.close()
        return {result.node: result for result in results}
