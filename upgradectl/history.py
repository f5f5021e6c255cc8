"""Reading past runs back from the journal: the newest runs, and every session a run cut."""

from __future__ import annotations

from typing import Any

from upgradectl import journal
from upgradectl.journal import RunRecord


def newest_runs(state_dir: str, limit: int) -> list[RunRecord]:
    """The newest ``limit`` runs (a run whose start record was torn is left out)."""
    found = []
    for run in journal.runs(state_dir):
        if run.start:
            found.append(run)
        if len(found) >= limit:
            break
    return found


def forced_sessions(runs: list[RunRecord]) -> list[dict[str, Any]]:
    """Every session a run cut, for the helpdesk."""
    return [
        session
        for run in runs
        for record in run.records
        if record["kind"] == "forced"
        for session in record.get("data", {}).get("sessions", [])
    ]
