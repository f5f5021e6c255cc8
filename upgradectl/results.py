"""How nodes and runs end: a node's result, the one place it is made final, the run's summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from upgradectl.context import RunContext
from upgradectl.errors import ExitCode, most_serious
from upgradectl.events import SCHEMA_VERSION

# The summary's word for each exit code.
RESULT_WORDS = {
    ExitCode.OK: "ok",
    ExitCode.STEP_FAILED: "failed",
    ExitCode.USAGE: "usage",
    ExitCode.GAVE_UP: "gave up",
    ExitCode.ATTENTION: "attention",
    ExitCode.INTERRUPTED: "interrupted",
    ExitCode.NOT_NOW: "not now",
}


@dataclass
class NodeResult:
    """How one node ended."""

    node: str
    result: str
    exit_code: ExitCode
    message: str = ""
    drain_seconds: float | None = None
    forced: list[dict[str, Any]] = field(default_factory=list)
    forced_count: int = 0
    in_service: bool = True

    def as_dict(self) -> dict[str, Any]:
        """The node's entry in the JSON summary."""
        return {
            "result": self.result,
            "exit_code": int(self.exit_code),
            "in_service": self.in_service,
            "message": self.message,
            "drain_seconds": None if self.drain_seconds is None else round(self.drain_seconds, 3),
            "forced": self.forced,
            "forced_count": self.forced_count,
        }


def concluded(ctx: RunContext, outcome: NodeResult) -> NodeResult:
    """Journal and announce how a node ended; every node's result passes here exactly once."""
    data = outcome.as_dict()
    ctx.journal.append("result", outcome.node, **data)
    message = data.pop("message")
    ctx.events.emit("node-done", outcome.node, f"{outcome.result}: {message}", **data)
    return outcome


@dataclass(frozen=True)
class RunSummary:
    """A run's end: each node's result, the sessions forced, the exit code."""

    run_id: str
    command: str
    started: float
    finished: float
    results: tuple[NodeResult, ...]
    connections: dict[str, int]

    @property
    def exit_code(self) -> ExitCode:
        """The most serious of the nodes' exit codes."""
        return most_serious([result.exit_code for result in self.results])

    @property
    def result(self) -> str:
        """The exit code in a word."""
        return RESULT_WORDS[self.exit_code]

    @property
    def forced(self) -> list[dict[str, Any]]:
        """Every session the run cut, node by node."""
        return [session for result in self.results for session in result.forced]

    def as_dict(self) -> dict[str, Any]:
        """The JSON summary (``--json``, ``--report``, the webhook, the metrics file)."""
        return {
            "event": "summary",
            "schema_version": SCHEMA_VERSION,
            "time": round(self.finished, 3),
            "run_id": self.run_id,
            "command": self.command,
            "started": self.started,
            "finished": self.finished,
            "exit_code": int(self.exit_code),
            "result": self.result,
            "nodes": {result.node: result.as_dict() for result in self.results},
            "forced": self.forced,
            "connections": self.connections,
        }
