"""Text and JSON renderings of what the reading commands return (plan, status, history)."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from upgradectl import history
from upgradectl.duration import format_duration
from upgradectl.events import SCHEMA_VERSION
from upgradectl.history import forced_sessions
from upgradectl.policy import describe
from upgradectl.wording import session_in_words

if TYPE_CHECKING:
    from upgradectl.plan import NodePlan, Plan
    from upgradectl.runrecords import RunRecord
    from upgradectl.status import StatusReport


def _when(epoch: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch)) if epoch else "?"


def _dumps(data: Any) -> str:
    return json.dumps(data, default=str)


# --- plan -----------------------------------------------------------------------------------


def _node_plan_data(node: NodePlan) -> dict[str, Any]:
    ordered = list(node.steps)  # already in the order the command runs them
    return {
        "node": node.name,
        "host": node.node.address,
        "playbook": node.playbook.name,
        "playbook_path": node.playbook.path,
        "pair": node.pair,
        "groups": list(node.node.groups),
        "lock": node.lock_path,
        "drain": {
            "timeout": node.drain.timeout,
            "poll": node.drain.poll,
            "stragglers": node.drain.stragglers,
            "max_stragglers": node.drain.max_stragglers,
            "settle": node.drain.settle,
            "force_when": node.drain.force_when,
        },
        "steps": [
            {
                "step": name,
                "on": node.steps[name].target,
                "run": node.steps[name].run,
                "timeout": node.steps[name].timeout,
                "sudo": node.steps[name].sudo,
                "retries": node.steps[name].retries,
                "reboot": node.steps[name].reboot,
            }
            for name in ordered
        ],
    }


def plan_json(plan: Plan) -> str:
    """The plan as one JSON document."""
    return _dumps(
        {"event": "plan", "schema_version": SCHEMA_VERSION, "command": plan.command, "version": plan.version,
         "nodes": [_node_plan_data(node) for node in plan.nodes]}
    )  # fmt: skip


# Said by `plan` of a playbook that cannot tell whether an upgrade already happened.
REPEATED_UPGRADE = (
    "no `version` step: a `resume` after a crash during the upgrade cannot ask the node whether "
    "it finished, and runs the upgrade again; it must be safe to repeat (idempotent)"
)


def plan_text(plan: Plan) -> str:
    """The plan for people: each node, its policy, each step with where it runs and its timeout."""
    lines = []
    for node in plan.nodes:
        data = _node_plan_data(node)
        pair = f", pair {node.pair}" if node.pair else ""
        lines.append(f"{node.name} ({data['host']}): playbook {node.playbook.name}{pair}")
        policy = node.drain
        lines.append(f"  drain: {describe(policy, policy.timeout)}; poll {format_duration(policy.poll)}, "
                     f"settle {policy.settle}")  # fmt: skip
        lines.append(f"  lock:  {node.lock_path} on {node.name}")
        for number, step in enumerate(data["steps"], start=1):
            flags = " (sudo)" if step["sudo"] else ""
            flags += " (reboots)" if step["reboot"] else ""
            lines.append(f"  {number:>2}. {step['step']:<10} on {step['on']:<12} "
                         f"{format_duration(step['timeout']):>6}  {step['run']}{flags}")  # fmt: skip
        if "upgrade" in node.steps and "version" not in node.steps:
            lines.append(f"  note: {REPEATED_UPGRADE}")
        lines.append("")
    return "\n".join(lines).rstrip()


# --- status ---------------------------------------------------------------------------------


def status_json(report: StatusReport) -> str:
    """Status as one JSON document."""
    return _dumps(
        {
            "event": "status",
            "schema_version": SCHEMA_VERSION,
            "nodes": report.nodes,
            "left_out_of_service": report.left_out,
            "unfinished_runs": [
                {
                    "run": run.run_id,
                    "command": run.start.get("data", {}).get("command"),
                    "started": run.start.get("time"),
                    "torn_lines": run.torn_lines,
                }
                for run in report.unfinished
            ],
        }
    )


def status_row_text(row: dict[str, Any]) -> str:
    """One node's line of status, for people (printed as soon as the node has answered)."""
    if "error" in row:
        return f"{row['node']}: UNREACHABLE: {row['error']}"
    if "failed" in row:
        return f"{row['node']}: a status step FAILED: {row['failed']}"
    blocked = {True: "blocked", False: "in service", None: "blocked: unknown"}[row["blocked"]]
    active = "" if row["active"] is None else f", {row['active']} active"
    if row.get("node_active") is not None:
        active += f" ({row['node_active']} on the node itself)"
    version = f", version {row['version']}" if row.get("version") else ""
    lock = row.get("lock")
    held = f", locked by run {lock.get('run')} ({lock.get('owner')})" if lock else ""
    return f"{row['node']}: {blocked}{active}{version}{held}"


def status_journal_text(report: StatusReport) -> str:
    """What status says after the nodes' lines: those left out of service, the unfinished runs."""
    lines = []
    for node, record in report.left_out.items():
        after = record.get("data", {}).get("last_state")
        state = f"{record['kind']} after {after}" if after else record["kind"]
        lines.append(f"left out of service by upgradectl: {node} ({state} in run {record['run']}, "
                     f"{_when(record.get('time'))})")  # fmt: skip
    for run in report.unfinished:
        data = run.start.get("data", {})
        torn = f"; {len(run.torn_lines)} torn journal line(s) skipped" if run.torn_lines else ""
        lines.append(f"unfinished run {run.run_id}: {data.get('command')} {' '.join(data.get('nodes', []))} "
                     f"(started {_when(run.start.get('time'))}{torn}; `upgradectl resume {run.run_id}`)")  # fmt: skip
    return "\n".join(lines)


# --- history --------------------------------------------------------------------------------


def _json_lines(kind: str, rows: list[dict[str, Any]]) -> str:
    """One JSON object per line, like every other --json output."""
    return "\n".join(
        _dumps({"event": kind, "schema_version": SCHEMA_VERSION, **row}) for row in rows
    )


def history_json(runs: list[RunRecord]) -> str:
    """History as JSON lines, one run each."""
    return _json_lines("run", [history.row(run).as_dict() for run in runs])


def history_text(runs: list[RunRecord]) -> str:
    """History for people: one line a run, newest first, dry runs marked."""
    return "\n".join(_row_text(history.row(run)) for run in runs) or "no runs yet"


def _row_text(row: history.Row) -> str:
    version = f" to {row.version}" if row.version else ""
    dry = " [dry run]" if row.dry_run else ""
    took = format_duration(row.duration) if row.duration is not None else "unfinished"
    nodes = f"{len(row.nodes)} node{'s' if len(row.nodes) != 1 else ''}"
    forced = "nothing changed" if row.dry_run else f"{row.forced_count} forced"
    torn = f" (journal: {len(row.torn_lines)} torn line(s) skipped)" if row.torn_lines else ""
    return (f"{row.run}  {_when(row.started)}  {row.who}  {row.command}{version}{dry} "
            f"{','.join(row.nodes)}: {row.result}; {nodes}, {took}, {forced}{torn}")  # fmt: skip


def forced_json(runs: list[RunRecord]) -> str:
    """The helpdesk report as JSON lines, one session cut each."""
    return _json_lines("forced-session", forced_sessions(runs))


def forced_text(runs: list[RunRecord]) -> str:
    """The helpdesk report: node, session, how long it had lasted, when it was cut, by which run."""
    lines = []
    for session in forced_sessions(runs):
        lasted = format_duration(session["age"]) if session.get("age") is not None else "?"
        unnamed = session.get("unnamed")
        who = (
            f"{unnamed} unnamed session{'s' if unnamed != 1 else ''}"
            if unnamed
            else f"{session_in_words(session)}  lasted {lasted}"
        )
        lines.append(f"{_when(session.get('cut_at'))}  {session.get('node')}  {who}  "
                     f"run {session.get('run')}  cut ({session.get('cut', 'confirmed')})")  # fmt: skip
    return "\n".join(lines) or "no sessions were cut"
