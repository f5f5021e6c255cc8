"""Closing a run whose every node had finished when its controller died.

A controller killed after its last node's last state change leaves the run without its end,
and its node locks on the nodes: `status` would list it as unfinished for ever, and `resume`
would find nothing to do. `resume` and `status` close such a run without asking: they release
the node locks it left (only its own) and write its end. They do it under the run lock, so
never while a controller of this state directory still runs.
"""

from __future__ import annotations

import os

from upgradectl.connections import Connections
from upgradectl.errors import ExitCode, UpgradectlError, most_serious
from upgradectl.events import Events
from upgradectl.journal import Journal
from upgradectl.nodelock import NodeLock
from upgradectl.plan import Plan
from upgradectl.results import RESULT_WORDS
from upgradectl.runlock import RunLock, RunLockHeld
from upgradectl.runrecords import RunRecord
from upgradectl.settings import Settings
from upgradectl.steps import Steps

# A node that does not answer at once is left for later: closing never waits long.
_RECONNECT_FOR = 5.0


def close_finished_run(
    settings: Settings, found: RunRecord, plan: Plan, by: str
) -> list[str] | None:
    """Release ``found``'s node locks and write its end; the nodes whose lock it removed, or
    None when it could not (a live run holds the run lock, or a node did not answer), and then
    nothing is written."""
    with RunLock(os.path.join(settings.state_dir, "run.lock")) as lock:
        try:
            lock.acquire(found.run_id, [f"upgradectl {by}: closing run {found.run_id}"])
        except RunLockHeld:
            return None
        released = release_left_locks(settings, plan, [node.name for node in plan.nodes])
        if released is None:
            return None
        codes = [
            ExitCode(record["data"]["exit_code"])
            for record in found.records
            if record["kind"] == "result" and isinstance(record.get("data"), dict)
            and record["data"].get("exit_code") in set(ExitCode)
        ]  # fmt: skip
        code = most_serious(codes)
        journal = Journal(settings.state_dir, found.run_id)
        journal.append(
            "run-end", None, exit_code=int(code), result=RESULT_WORDS[code], closed_by=by
        )
        journal.close()
    return released


def release_left_locks(settings: Settings, plan: Plan, names: list[str]) -> list[str] | None:
    """Remove the locks the run left on nodes ``names`` (only where they are still its own);
    the nodes that said they had one and it was removed, or None when a node did not answer."""
    connections = Connections(plan.inventory, accept_new_host_keys=settings.accept_new_host_keys)
    released = []
    try:
        for node_plan in (plan.node(name) for name in names):
            steps = Steps(
                node_plan, connections.get, Events(), reconnect_for=_RECONNECT_FOR,
                pause=lambda seconds: False,
            )  # fmt: skip
            lock = NodeLock(node_plan.name, node_plan.lock_path, steps.shell, plan.run_id, "")
            if lock.release_left():
                released.append(node_plan.name)
    except UpgradectlError:
        return None
    finally:
        connections.close()
    return released
