"""One node of a made-up playbook, answered by a ScriptedTransport on a ManualClock.

For the runner's decisions (custody, the drain loop, the reboot wait): every step is a one-word
command (``block``, ``count``, ``force`` ...) the test scripts, and no wait takes real time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from upgradectl.connections import Connections
from upgradectl.context import RunContext
from upgradectl.custody import BlockCustody
from upgradectl.events import Event, Events
from upgradectl.journal import Journal
from upgradectl.loader import load_inventory, load_playbooks
from upgradectl.nodelog import NodeLog
from upgradectl.plan import NodePlan, PlanOptions, build_plan
from upgradectl.runrecords import read_run
from upgradectl.steps import Steps
from upgradectl.testing import ManualClock, Reply, Rule, ScriptedTransport

RUN_ID = "20261130T020000-fake"
NODE = "node-1"
# Each step runs its own name; `active` prints "N active".
STEPS: dict[str, dict[str, Any]] = {
    "is_blocked": {"run": "is_blocked", "parse": "^blocked"},
    "block": {"run": "block"},
    "active": {"run": "count", "parse": "^(\\d+) active$"},
    "sessions": {"run": "sessions", "parse": "^(?P<id>\\S+) (?P<age>\\d+)"},
    "force": {"run": "force"},
    "upgrade": {"run": "upgrade"},
    "verify": {"run": "verify"},
    "unblock": {"run": "unblock"},
}


STAYS_BLOCKED: Rule = ("^is_blocked$", Reply("blocked\n"))


@dataclass
class FakeNode:
    """A node, its script, the run's clock, and what the run wrote down."""

    tmp_path: Path
    script: list[Rule]
    drain: dict[str, Any] = field(default_factory=dict)
    steps: dict[str, dict[str, Any]] = field(default_factory=lambda: dict(STEPS))
    clock: ManualClock = field(default_factory=ManualClock)
    events: list[Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        # A node stays blocked unless the test scripts `is_blocked` itself (the drain reads it).
        self.transport = ScriptedTransport(NODE, [*self.script, STAYS_BLOCKED])
        self.tmp_path.mkdir(parents=True, exist_ok=True)
        playbook = self.tmp_path / "fake.yaml"
        drain = {"timeout": "10m", "poll": "10s", **self.drain}
        playbook.write_text(yaml.safe_dump({"name": "fake", "drain": drain, "steps": self.steps}))
        inventory = self.tmp_path / "inventory.yaml"
        spec = {"playbook": str(playbook), "transport": "local"}
        inventory.write_text(yaml.safe_dump({"nodes": {NODE: spec}}))
        self.inventory = load_inventory(str(inventory))
        self.state_dir = self.tmp_path / "state"
        self.journal = Journal(str(self.state_dir), RUN_ID)
        self.stop = self.clock.stop()

    def plan(self, command: str = "upgrade") -> NodePlan:
        """The rendered plan of ``command`` on the node."""
        options = PlanOptions(version="2.0")
        playbooks = load_playbooks(self.inventory)
        return build_plan(self.inventory, [NODE], command, options, RUN_ID, playbooks).nodes[0]

    def context(self, command: str = "upgrade") -> RunContext:
        """The run's shared parts: the scripted node, the journal, events kept here, the clock."""
        return RunContext(
            run_id=RUN_ID,
            command=command,
            connections=Connections(self.inventory, make=lambda node: self.transport),
            journal=self.journal,
            events=Events(self.events.append),
            stop=self.stop,
            state_dir=str(self.state_dir),
            monotonic=self.clock.monotonic,
            wall=self.clock.wall,
        )

    def parts(self, command: str = "upgrade") -> tuple[Steps, RunContext, NodeLog]:
        """What a phase of the run is built from: the node's steps, the context, its log."""
        ctx = self.context(command)
        steps = Steps(self.plan(command), ctx.connections.get, ctx.events, reconnect_for=1.0,
                      pause=ctx.stop.wait)  # fmt: skip
        return steps, ctx, NodeLog(NODE, ctx, BlockCustody())

    def kinds(self) -> list[str]:
        """The kinds of the events so far, in order."""
        return [event.kind for event in self.events]

    def recorded(self) -> list[str]:
        """The kinds of the journal's records of the node, in order."""
        self.journal.close()
        records = read_run(self.journal.path).records
        return [r["kind"] for r in records if r.get("node") == NODE and r["kind"] != "reading"]
