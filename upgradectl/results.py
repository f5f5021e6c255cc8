"""How nodes and runs end: a node's result, the one place it is made final, the run's summary."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from upgradectl.errors import ExitCode, most_serious
from upgradectl.events import SCHEMA_VERSION, Event

if TYPE_CHECKING:  # the views read summaries without importing what a run needs
    from upgradectl.context import RunContext

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

    @classmethod
    def from_dict(cls, node: str, data: Mapping[str, Any]) -> NodeResult:
        """The node's result read back from :meth:`as_dict`'s form (a ``node-done`` event's data
        has no ``message``: the event's own message says it)."""
        return cls(
            node,
            data["result"],
            ExitCode(data["exit_code"]),
            data.get("message", ""),
            data.get("drain_seconds"),
            list(data.get("forced", [])),
            data.get("forced_count", 0),
            data.get("in_service", True),
        )


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
        """The JSON summary (``--report``, the metrics file): the ``summary`` event's data in the
        envelope ``--json`` and the webhook show it in."""
        return {
            "event": "summary",
            "schema_version": SCHEMA_VERSION,
            "time": round(self.finished, 3),
            **self.event_data(),
        }

    def event_data(self) -> dict[str, Any]:
        """The ``summary`` event's data (the event stream adds its own envelope)."""
        return {
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

    @classmethod
    def from_event(cls, event: Event) -> RunSummary:
        """The summary a ``summary`` event carries: the one place its data is read back."""
        data = event.data
        return cls(
            data["run_id"],
            data["command"],
            data["started"],
            data["finished"],
            tuple(NodeResult.from_dict(name, node) for name, node in data["nodes"].items()),
            dict(data.get("connections", {})),
        )
