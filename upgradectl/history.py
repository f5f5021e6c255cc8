"""Reading past runs back from the journal: the newest runs, every session a run cut, and one
run as a page (each node's story: when it was blocked, drained, upgraded and back, whom it cut,
and its drain's readings)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from upgradectl import runrecords
from upgradectl.errors import UsageError
from upgradectl.runrecords import RunRecord


def newest_runs(state_dir: str, limit: int) -> list[RunRecord]:
    """The newest ``limit`` runs (a run whose start record was torn is left out)."""
    found = []
    for run in runrecords.runs(state_dir):
        if run.start:
            found.append(run)
        if len(found) >= limit:
            break
    return found


# A cut the controller did not live to see: it may have happened.
NOT_CONFIRMED = "not confirmed: controller died"
# A node's records that settle a force without its outcome: the force failed, or `resume` has
# looked at the node and carried on. (A `result` alone does not: a resume that never reached
# the node, its probe failed, has not looked.)
_MOVED_ON = runrecords.OUT_OF_SERVICE | runrecords.SETTLED | {"failed"}


def forced_sessions(runs: list[RunRecord]) -> list[dict[str, Any]]:
    """Every session a run cut, or may have cut, for the helpdesk; ``cut`` says which.

    A ``forcing`` record names the sessions before the force runs: when the controller died
    before its outcome (``forced``, or the failure), those sessions may have been cut, and are
    listed ``not confirmed``, unless a later record of the run says what became of them.
    Sessions the playbook could not name are one line per force, with their count
    (``unnamed``) and no id: never a name made up.
    """
    found = []
    for run in runs:
        pending: dict[str, dict[str, Any]] = {}  # node -> its forcing record with no outcome yet
        for record in run.records:
            node, data = record.get("node"), record.get("data", {})
            if record["kind"] == "forcing":
                pending[str(node)] = record
            elif record["kind"] == "forced":
                pending.pop(str(node), None)
                named = [s for s in data.get("sessions", []) if isinstance(s, dict)]
                found += [{"cut": "confirmed", **session} for session in named]
                found += _unnamed(run, record, data.get("count", 0) - len(named), _how_cut(data))
            elif record["kind"] in _MOVED_ON and node:
                pending.pop(str(node), None)
        for node, forcing in pending.items():
            listed = [s for s in forcing.get("data", {}).get("sessions", []) if isinstance(s, dict)]
            found += [
                {**session, "node": node, "run": run.run_id, "cut_at": forcing["time"],
                 "cut": NOT_CONFIRMED}
                for session in listed
            ]  # fmt: skip
            unnamed = forcing.get("data", {}).get("active", 0) - len(listed)
            found += _unnamed(run, forcing, unnamed, NOT_CONFIRMED)
    return found


def _how_cut(forced: dict[str, Any]) -> str:
    """How sure a ``forced`` record is of its unnamed cuts: seen gone after the force, or found
    gone (or not readable) by ``resume`` after the controller died around it."""
    if forced.get("confirmed", True):
        return "confirmed"
    before, after = forced.get("active_before"), forced.get("active_after")
    if after is None:
        return NOT_CONFIRMED
    return f"{NOT_CONFIRMED}; count went from {before} to {after} when resume looked"


def _unnamed(run: RunRecord, record: dict[str, Any], count: Any, cut: str) -> list[dict[str, Any]]:
    """The helpdesk line of ``count`` sessions cut without names (none when there are none)."""
    if not isinstance(count, int) or count <= 0:
        return []
    return [
        {"unnamed": count, "node": record.get("node"), "run": run.run_id,
         "cut_at": record["time"], "cut": cut}
    ]  # fmt: skip


def find(state_dir: str, run_id: str) -> RunRecord:
    """Run ``run_id``; a UsageError naming the state directory when there is none."""
    path = Path(state_dir) / "runs" / f"{run_id}.jsonl"
    if "/" in run_id or not path.is_file():
        raise UsageError(f"{state_dir}: no run {run_id} (`upgradectl history` lists the runs)")
    run = runrecords.read_run(path)
    if not run.start:
        raise UsageError(f"{path}: the run's start record is torn; nothing to show")
    return run


@dataclass(frozen=True)
class Row:
    """One past run at a glance: who ran what, when, for how long, and how it ended."""

    run: str
    started: float | None
    finished: float | None
    who: str
    command: str | None
    nodes: list[str]
    version: str | None
    dry_run: bool
    result: str
    exit_code: int | None
    forced_count: int
    torn_lines: list[int]

    @property
    def duration(self) -> float | None:
        """Seconds from start to end; None for a run that never finished."""
        if self.started is None or self.finished is None:
            return None
        return self.finished - self.started

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (``history --json``), with the duration."""
        return {**asdict(self), "duration": self.duration}


def row(run: RunRecord) -> Row:
    """The glance at ``run``; a run that started before dry runs were marked counts as one when
    every node's result says so."""
    data = run.start.get("data", {})
    end = run.finished or {}
    results = [r.get("data", {}).get("result") for r in run.records if r["kind"] == "result"]
    return Row(
        run=run.run_id,
        started=run.start.get("time"),
        finished=end.get("time"),
        who=f"{run.start.get('user')}@{run.start.get('host')}",
        command=data.get("command"),
        nodes=list(data.get("nodes", [])),
        version=data.get("version"),
        dry_run=bool(data.get("dry_run")) or (bool(results) and set(results) == {"dry-run"}),
        result=end.get("data", {}).get("result", "unfinished"),
        exit_code=end.get("data", {}).get("exit_code"),
        forced_count=sum(_cut_count(r) for r in run.records if r["kind"] == "forced"),
        torn_lines=list(run.torn_lines),
    )


def _cut_count(record: dict[str, Any]) -> int:
    data = record.get("data", {})
    return int(data.get("count", len(data.get("sessions", []))))


# The moments of a node's run that people ask about, and the state that marks each.
MILESTONES = {
    "blocked": "blocked",
    "drained": "drained",
    "forced": "forced",
    "gave up": "aborted",
    "upgraded": "upgraded",
    "verified": "verified",
    "back": "unblocked",
}


@dataclass(frozen=True)
class NodeStory:
    """One node's part in a run: its result, when each thing happened, whom it cut, its drain."""

    node: str
    result: str
    exit_code: int | None
    message: str
    in_service: bool | None
    times: dict[str, float]
    """Milestone (see MILESTONES) -> when it happened."""
    timeline: list[dict[str, Any]]
    """Every state change: ``{"state", "time", "message"}``."""
    forced: list[dict[str, Any]]
    readings: list[dict[str, Any]]
    """The drain's readings: ``{"time", "active", "eta"?, "deadline"?}``."""
    deadline: float | None
    forcing_at: float | None
    """When the straggler policy decided to force."""

    def as_dict(self) -> dict[str, Any]:
        """The JSON form, readings included."""
        return asdict(self)

    def curve(self) -> list[tuple[float, int]]:
        """The drain as steps of (seconds since its first reading, active): a count holds until
        the reading that saw it change."""
        if not self.readings:
            return []
        start = self.readings[0]["time"]
        points = [(0.0, int(self.readings[0]["active"]))]
        for reading in self.readings[1:]:
            at = reading["time"] - start
            points += [(at, points[-1][1]), (at, int(reading["active"]))]
        return points

    def extent(self) -> tuple[float, int]:
        """What a chart of the drain must hold: seconds (the curve and its marks), sessions."""
        span = max([self.curve()[-1][0], *self.marks().values(), 1.0])
        return span, max([active for _, active in self.curve()] + [1])

    def marks(self) -> dict[str, float]:
        """Where the deadline and the force fall, in seconds since the drain's first reading."""
        if not self.readings:
            return {}
        start = self.readings[0]["time"]
        found = (("deadline", self.deadline), ("force", self.forcing_at))
        return {name: at - start for name, at in found if at is not None}


def story(run: RunRecord, node: str) -> NodeStory:
    """What ``run`` journalled about ``node``."""
    mine = [r for r in run.records if r.get("node") == node]
    states = [
        r for r in mine if r["kind"] in runrecords.OUT_OF_SERVICE | runrecords.SETTLED | _NOTES
    ]
    results = [r.get("data", {}) for r in mine if r["kind"] == "result"]
    final = results[-1] if results else {}
    times: dict[str, float] = {}
    for milestone, kind in MILESTONES.items():
        first = next((r["time"] for r in states if r["kind"] == kind), None)
        if first is not None:
            times[milestone] = first
    readings = run.readings(node)
    deadlines = [r["deadline"] for r in readings if "deadline" in r]
    return NodeStory(
        node=node,
        result=final.get("result", "unfinished"),
        exit_code=final.get("exit_code"),
        message=final.get("message", ""),
        in_service=final.get("in_service"),
        times=times,
        timeline=[
            {"state": r["kind"], "time": r["time"], "message": r.get("data", {}).get("message", "")}
            for r in states
        ],
        forced=[
            s for r in mine if r["kind"] == "forced" for s in r.get("data", {}).get("sessions", [])
        ],
        readings=readings,
        deadline=deadlines[-1] if deadlines else None,
        forcing_at=next((r["time"] for r in mine if r["kind"] == "forcing"), None),
    )


# Records that are not state changes but belong in a node's timeline.
_NOTES = frozenset(
    {"aborted", "failed", "was-blocked", "interrupted", "lock-broken", "lock-taken-over"}
)


@dataclass(frozen=True)
class RunPage:
    """A run as a page: the glance, the command line, and each node's story."""

    row: Row
    argv: list[str]
    """The command line as it was typed (``upgradectl`` however the program was started)."""
    stories: list[NodeStory]

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (``history RUN_ID --json``): the glance, plus each node's story."""
        return {
            **self.row.as_dict(),
            "argv": self.argv,
            "results": {s.node: s.as_dict() for s in self.stories},
        }


def page(run: RunRecord) -> RunPage:
    """The page of ``run``, every node it named in order (and any other the journal mentions)."""
    glance = row(run)
    named = glance.nodes + sorted(
        {str(r["node"]) for r in run.records if r.get("node")} - set(glance.nodes)
    )
    argv = run.start.get("data", {}).get("argv") or []
    return RunPage(glance, ["upgradectl", *argv[1:]], [story(run, node) for node in named])
