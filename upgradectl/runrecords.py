"""Runs read back from their journals: one run's records, every run of a state directory, the
run to carry on, and the nodes earlier runs left out of service. (Writing them is `journal.py`'s.)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from upgradectl.journal_records import parse_record
from upgradectl.regularfile import regular_text
from upgradectl.statedir import ensure_private

# Node states that mean "this tool left the node out of service".
OUT_OF_SERVICE = frozenset(
    {"blocking", "blocked", "drained", "forcing", "forced", "upgrading", "upgraded", "rebooting", "verified",
     "rolling-back", "rolled-back", "left-blocked", "attention", "unblocking"}
)  # fmt: skip
# States after which the node is back to how the run found it, or better.
SETTLED = frozenset({"unblocked", "in-service", "patched"})


@dataclass
class RunRecord:
    """A run read back from its journal."""

    run_id: str
    path: str
    start: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)
    torn_lines: list[int] = field(default_factory=list)

    @property
    def finished(self) -> dict[str, Any] | None:
        """The run-end record, or None when the run never finished (crash, kill -9)."""
        return next((r for r in reversed(self.records) if r["kind"] == "run-end"), None)

    @property
    def dry_run(self) -> bool:
        """Whether the run was a dry run: it changed nothing, so there is nothing to carry on."""
        return bool(self.start.get("data", {}).get("dry_run"))

    @property
    def unfinished(self) -> bool:
        """Whether the run never ended (its controller died) and was not a dry run."""
        return bool(self.start) and self.finished is None and not self.dry_run

    @property
    def carries_on(self) -> bool:
        """Whether ``resume`` may carry the run on: unfinished, or ended interrupted (exit 5)."""
        end = self.finished
        interrupted = end is not None and end.get("data", {}).get("exit_code") == 5
        return self.unfinished or (interrupted and not self.dry_run)

    def readings(self, node: str) -> list[dict[str, Any]]:
        """The drain readings kept for ``node``, oldest first: ``{"time", "active", "eta"?, ...}``."""
        return [
            {"time": r["time"], **r.get("data", {})}
            for r in self.records
            if r["kind"] == "reading" and r.get("node") == node
        ]

    def node_states(self) -> dict[str, dict[str, Any]]:
        """The last state record of each node."""
        states: dict[str, dict[str, Any]] = {}
        for record in self.records:
            if record.get("node") and record["kind"] in OUT_OF_SERVICE | SETTLED:
                states[record["node"]] = record
        return states


def read_run(path: str | Path) -> RunRecord:
    """Read one run's journal, skipping (and noting) lines a crash left torn."""
    records: list[dict[str, Any]] = []
    torn: list[int] = []
    for number, line in enumerate(_journal_lines(path), start=1):
        if not line.strip():
            continue
        record = parse_record(line)
        if record is None:
            torn.append(number)
        else:
            records.append(record)
    start = records[0] if records and records[0]["kind"] == "run-start" else {}
    return RunRecord(Path(path).stem, str(path), start, records, torn)


def _journal_lines(path: str | Path) -> list[str]:
    """The lines of a journal file; a symlink, a FIFO or anything but a file reads as one torn
    line (never followed, never waited on)."""
    text = regular_text(path, follow_links=False)
    return ["\0"] if text is None else text.splitlines()


def runs(state_dir: str) -> Iterator[RunRecord]:
    """Every run in the state directory, newest first (a state directory others may write to
    is refused: its journals could be anyone's)."""
    ensure_private(state_dir, create=False)
    folder = Path(state_dir) / "runs"
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.jsonl"), reverse=True):
        yield read_run(path)


def find_run(state_dir: str, run_id: str | None) -> RunRecord | None:
    """Run ``run_id``, or, when no id is given, the newest run left to carry on: unfinished
    (its controller died) or interrupted (it ended with exit 5). Never a dry run.

    A run whose start record was torn is never found: nothing could rebuild its plan.
    """
    for run in runs(state_dir):
        if not run.start:
            continue
        if run.run_id == run_id or (run_id is None and run.carries_on):
            return run
    return None


def left_out_of_service(state_dir: str) -> dict[str, dict[str, Any]]:
    """Nodes whose latest record, across all runs, says this tool left them out of service."""
    return left_out_by(runs(state_dir))


def left_out_by(found: Iterable[RunRecord]) -> dict[str, dict[str, Any]]:
    """:func:`left_out_of_service`, of runs read already."""
    latest: dict[str, dict[str, Any]] = {}
    for run in sorted(found, key=lambda r: r.run_id):
        for node, record in run.node_states().items():
            latest[node] = record
    return {node: record for node, record in latest.items() if _out_of_service(record)}


def _out_of_service(record: dict[str, Any]) -> bool:
    """Whether a node's latest state record leaves it out of service: blocked by this tool, or
    changed by it and then left in a state that needs a person. (A hot patch's `verified` is not:
    nothing was blocked; nor is a node this tool could not reach before changing anything.)"""
    data = record.get("data", {})
    if record["kind"] == "left-blocked":  # unless left blocked as it was found, by hand
        return bool(data.get("ours")) or not data.get("hand_blocked")
    if record["kind"] == "attention":
        return bool(data.get("blocked") or data.get("last_state"))
    return bool(data.get("blocked", record["kind"] in OUT_OF_SERVICE))


def left_blocked(state_dir: str) -> dict[str, dict[str, Any]]:
    """Nodes that earlier runs left blocked by this tool (e.g. by ``drain``), with that record."""
    return {
        node: record
        for node, record in left_out_of_service(state_dir).items()
        if record.get("data", {}).get("blocked", record["kind"] in OUT_OF_SERVICE)
    }
