"""``status``: ask every node how it is, and read what the journal says this tool left undone."""

from __future__ import annotations

from collections.abc import Sequence
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
from upgradectl.plan import NodePlan, PlanOptions, build_plan, select_nodes
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


def status_report(settings: Settings, names: Sequence[str], options: PlanOptions) -> StatusReport:
    """Ask every node (or those named) how it is, in parallel; read the journal for unfinished business."""
    inventory = settings.load()
    chosen = select_nodes(inventory, names, everything=not names)
    playbooks = load_playbooks(inventory, options.playbook)
    plan = build_plan(inventory, chosen, "status", options, "status", playbooks)
    connections = Connections(inventory, accept_new_host_keys=settings.accept_new_host_keys)
    try:
        with ThreadPoolExecutor(max_workers=min(MAX_PROBE_THREADS, len(plan.nodes))) as pool:
            rows = list(
                pool.map(lambda node_plan: _node_status(node_plan, connections), plan.nodes)
            )
    finally:
        connections.close()
    unfinished = [
        run
        for run in runrecords.runs(settings.state_dir)
        if run.unfinished and not _closed(settings, run)
    ]
    return StatusReport(rows, runrecords.left_out_of_service(settings.state_dir), unfinished)


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
    row: dict[str, Any] = {"node": node_plan.name}
    steps.along("active", "node_active", "version")  # every reading in one round trip, as the probe
    try:
        row["blocked"] = steps.is_blocked()
        row["active"] = steps.count() if steps.has("active") else None
        if steps.has("node_active"):  # the second witness: the node's own count
            row["node_active"] = steps.count("node_active")
        row["version"] = steps.version()
        row["lock"] = NodeLock(
            node_plan.name, node_plan.lock_path, steps.shell, "status", "status"
        ).holder()
    except StepFailed as exc:
        row["failed"] = str(exc)  # reached, but a step's output says no
    except UpgradectlError as exc:
        row["error"] = str(exc)
    return row
