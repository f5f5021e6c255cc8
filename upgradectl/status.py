"""``status``: ask every node how it is, and read what the journal says this tool left undone.

A node is asked in one round trip (one per host, where a playbook reads the block on a
balancer): every reading, the lock's holder included, goes with the first (:mod:`upgradectl.batch`).
The journals are read once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from upgradectl import runrecords
from upgradectl.closing import close_finished_run
from upgradectl.connections import Connections
from upgradectl.errors import StepFailed, UpgradectlError
from upgradectl.events import Events
from upgradectl.loader import load_playbooks
from upgradectl.nodelock import NodeLock
from upgradectl.plan import TOOL_TIMEOUT, Command, NodePlan, PlanOptions, build_plan, select_nodes
from upgradectl.probe import MAX_PROBE_THREADS
from upgradectl.runrecords import RunRecord
from upgradectl.settings import Settings
from upgradectl.steps import Steps


@dataclass
class StatusReport:
    """Live state of each node, and what the journal says this tool left undone."""

    nodes: list[dict[str, Any]]
    left_out: dict[str, dict[str, Any]]
    unfinished: list[RunRecord]

    @property
    def unreachable(self) -> bool:
        """Whether any node could not be asked."""
        return any("error" in node for node in self.nodes)


def status_report(
    settings: Settings,
    names: Sequence[str],
    options: PlanOptions,
    on_row: Callable[[dict[str, Any]], None] = lambda row: None,
) -> StatusReport:
    """Ask every node (or those named) how it is, in parallel; read the journal for unfinished
    business. ``on_row`` is given each node's row in the inventory's order as soon as it and
    those before it have answered (a person reads the first rows while the last connect)."""
    inventory = settings.load()
    chosen = select_nodes(inventory, names, everything=not names)
    playbooks = load_playbooks(inventory, options.playbook)
    plan = build_plan(inventory, chosen, "status", options, "status", playbooks)
    connections = Connections(inventory, accept_new_host_keys=settings.accept_new_host_keys)
    rows = []
    try:
        with ThreadPoolExecutor(max_workers=min(MAX_PROBE_THREADS, len(plan.nodes))) as pool:
            for row in pool.map(lambda node_plan: _node_status(node_plan, connections), plan.nodes):
                on_row(row)
                rows.append(row)
    finally:
        connections.close()
    found = list(runrecords.runs(settings.state_dir))
    # Closing a run writes its end, no node's state: what the runs left out stays as read.
    unfinished = [run for run in found if run.unfinished and not _closed(settings, run)]
    return StatusReport(rows, runrecords.left_out_by(found), unfinished)


def _closed(settings: Settings, run: RunRecord) -> bool:
    """Close ``run`` if every node of it had finished (see ``closing``); whether it was."""
    from upgradectl.app import resume_plan  # noqa: PLC0415 - a run to close is rare

    try:
        plan, points, found = resume_plan(settings, run.run_id)
    except UpgradectlError:
        return False  # its inventory is gone or unreadable: leave it listed
    return not points and close_finished_run(settings, found, plan, "status") is not None


def _node_status(node_plan: NodePlan, connections: Connections) -> dict[str, Any]:
    steps = Steps(node_plan, connections.get, Events(), reconnect_for=5.0, pause=lambda s: False)
    lock = NodeLock(node_plan.name, node_plan.lock_path, steps.shell, "status", "status")
    # (command, the row's key, what reads it), in the row's order; node_active is the second
    # witness (the node's own count), shown only where the playbook has it.
    reads: list[tuple[Command | None, str, Callable[[], Any]]] = [
        (node_plan.steps.get("is_blocked"), "blocked", steps.is_blocked),
        (node_plan.steps.get("active"), "active", steps.count),
        (node_plan.steps.get("node_active"), "node_active", lambda: steps.count("node_active")),
        (node_plan.steps.get("version"), "version", steps.version),
        (Command("lock", node_plan.name, lock.holder_command(), TOOL_TIMEOUT), "lock", lock.holder),
    ]
    asked = [(command, key, read) for command, key, read in reads if command is not None]
    found: dict[str, Any] = {}
    failure: dict[str, str] = {}
    try:
        for host in dict.fromkeys(command.target for command, _, _ in asked):
            on_host = [
                (command, key, read) for command, key, read in asked if command.target == host
            ]
            steps.along(*(command for command, _, _ in on_host))  # sent with the first of them
            for _, key, read in on_host:
                found[key] = read()
    except StepFailed as exc:
        failure["failed"] = str(exc)  # reached, but a step's output says no
    except UpgradectlError as exc:
        failure["error"] = str(exc)
    else:  # what the playbook cannot tell is said as unknown
        found = {"blocked": None, "active": None, "version": None, **found}
    row = {"node": node_plan.name}
    row.update((key, found[key]) for _, key, _ in reads if key in found)
    return {**row, **failure}
