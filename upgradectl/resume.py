"""Where an interrupted run carries on: each unfinished node's stage, read from its journal."""

from __future__ import annotations

from upgradectl import runrecords
from upgradectl.runrecords import RunRecord

# Where a resumed upgrade starts, in order.
STAGES = ("block", "upgrade", "verify", "unblock")
# Results that `resume` carries on: the run was stopped, or the node stopped answering.
RESUMABLE = frozenset({"interrupted", "unreachable"})
# The stage that follows each state, for a resumed node; any other state starts from block.
_RESUME_AT = {
    "upgrading": "upgrade",
    "rebooting": "verify",
    "upgraded": "verify",
    "verified": "unblock",
    "unblocking": "unblock",
}


def resume_stage(kinds: list[str]) -> str | None:
    """Where an interrupted node carries on, from its journal record kinds in order (None: done).

    Only state changes count (not notes such as ``interrupted`` or ``result``). Block, verify and
    unblock are safe to repeat; the upgrade is re-run only if it never completed; a node that
    went down for its reboot is verified, which waits for it to answer.
    """
    states = [kind for kind in kinds if kind in runrecords.OUT_OF_SERVICE | runrecords.SETTLED]
    last = states[-1] if states else None
    if "upgraded" in states and last in ("unblocked", "left-blocked"):
        return None
    if last == "unblocking" and "upgraded" not in states:
        return "block"  # lifting the block of a run that failed or gave up: start again
    if last == "unblocking" and "verified" not in states[_last_index(states, "upgraded") :]:
        return "verify"  # recorded before a verify sent in one round trip with the unblock
    return _RESUME_AT.get(last or "", "block")


def _last_index(items: list[str], item: str) -> int:
    return len(items) - 1 - items[::-1].index(item)


def _resumable(result: dict[str, object]) -> bool:
    """Whether a node's result leaves it to ``resume``: stopped, unreachable, or never started
    because the run was stopped (skipped with exit 5, not for a fleet rule)."""
    skipped_by_stop = result.get("result") == "skipped" and result.get("exit_code") == 5
    return result.get("result") in RESUMABLE or skipped_by_stop


def resume_points(run: RunRecord, nodes: list[str]) -> dict[str, str]:
    """Where each node of ``run`` that did not finish starts again (finished ones are left out)."""
    points = {}
    for node in nodes:
        results = [r for r in run.records if r["kind"] == "result" and r.get("node") == node]
        if results and not _resumable(results[-1].get("data", {})):
            continue  # finished in the original run, one way or another
        stage = resume_stage([r["kind"] for r in run.records if r.get("node") == node])
        if stage is not None:
            points[node] = stage
    return points


def latest_resumable(state_dir: str) -> RunRecord | None:
    """The newest run that ``resume`` can carry on: not a dry run, with a node left unfinished
    (an interrupted run has ended, exit 5, yet its nodes wait for `resume`), or never ended
    (its controller died after its last node finished: `resume` closes it)."""
    for run in runrecords.runs(state_dir):
        inputs = run.start.get("data", {}) if run.start else {}
        if not inputs or inputs.get("dry_run") or not isinstance(inputs.get("nodes"), list):
            continue
        if resume_points(run, inputs["nodes"]) or run.unfinished:
            return run
    return None
