"""How nodes and runs end: every node's result is made final in one place, with one payload."""

from __future__ import annotations

from pathlib import Path

from fakenode import FakeNode

from upgradectl.errors import ExitCode
from upgradectl.events import Events
from upgradectl.results import NodeResult, RunSummary, concluded
from upgradectl.runrecords import read_run

NODE_FIELDS = {
    "result",
    "exit_code",
    "in_service",
    "message",
    "drain_seconds",
    "forced",
    "forced_count",
}


def test_every_node_done_event_and_result_record_carry_the_same_fields(tmp_path: Path) -> None:
    node = FakeNode(tmp_path, [])
    ctx = node.context()
    forced = [{"id": "call-1", "age": 3000.0}]

    concluded(ctx, NodeResult("node-1", "skipped", ExitCode.NOT_NOW, "not started: stopped"))
    concluded(ctx, NodeResult("node-2", "upgraded", ExitCode.OK, "done", 12.34567, forced, 1))
    node.journal.close()

    done = [event for event in node.events if event.kind == "node-done"]
    assert [event.message for event in done] == ["skipped: not started: stopped", "upgraded: done"]
    assert all(set(event.data) == NODE_FIELDS - {"message"} for event in done)
    records = [r for r in read_run(node.journal.path).records if r["kind"] == "result"]
    assert [set(r["data"]) for r in records] == [NODE_FIELDS, NODE_FIELDS]
    assert records[1]["data"]["drain_seconds"] == 12.346 and records[1]["data"]["forced"] == forced


def test_the_summary_takes_the_most_serious_exit_code_and_keeps_its_json_names() -> None:
    results = (
        NodeResult("a", "upgraded", ExitCode.OK, forced=[{"id": "x"}], forced_count=1),
        NodeResult("b", "aborted", ExitCode.GAVE_UP, in_service=True),
        NodeResult("c", "deferred", ExitCode.NOT_NOW),
    )
    summary = RunSummary("run-1", "upgrade", 100.0, 160.0, results, {"a": 1})

    data = summary.as_dict()

    assert (summary.exit_code, summary.result) == (ExitCode.GAVE_UP, "gave up")
    assert set(data) == {
        "event", "schema_version", "time", "run_id", "command", "started", "finished",
        "exit_code", "result", "nodes",
        "forced", "connections",
    }  # fmt: skip
    assert data["exit_code"] == int(ExitCode.GAVE_UP) and data["forced"] == [{"id": "x"}]
    assert list(data["nodes"]) == ["a", "b", "c"] and data["nodes"]["b"]["result"] == "aborted"


def test_a_summary_read_back_from_its_event_is_the_summary_the_run_built() -> None:
    forced = [{"id": "call-1", "age": 30.0, "details": {"client": "10.0.0.21:40312"}}]
    results = (
        NodeResult("a", "upgraded", ExitCode.OK, "done", 12.345, forced, 2, in_service=True),
        NodeResult("b", "attention", ExitCode.ATTENTION, "left blocked", in_service=False),
    )
    summary = RunSummary("run-1", "upgrade", 100.0, 160.0, results, {"a": 1, "b": 2})
    event = Events().emit("summary", None, "", **summary.event_data())

    assert RunSummary.from_event(event) == summary
    assert event.as_dict() | {"time": summary.as_dict()["time"]} == summary.as_dict()
