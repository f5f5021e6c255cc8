"""The live table's board: states in words, elapsed that runs and stops, the fleet's progress, and
what each drain's deadline will find, from the events of real drains on a ManualClock."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from upgradectl.cli.board import COLUMNS, Board
from upgradectl.connections import Connections
from upgradectl.context import RunContext
from upgradectl.events import Event, Events
from upgradectl.journal import Journal
from upgradectl.loader import load_inventory, load_playbooks
from upgradectl.plan import PlanOptions, build_plan
from upgradectl.runner import NodeRun
from upgradectl.testing import ManualClock, Reply, ScriptedTransport


def fed(*events: tuple[str, str | None, float, dict[str, Any]]) -> Board:
    board = Board()
    for kind, node, at, data in events:
        board(Event(kind, node, "", at, data))
    return board


def column(board: Board, name: str, now: float = 0.0) -> dict[str, str]:
    """Each node's value in the column ``name``."""
    index = COLUMNS.index(name)
    return {row[0]: row[index] for row in board.rows(now)}


START = ("run-start", None, 0.0, {"nodes": ["a", "b", "c", "d"]})
POLL = {"active": 12, "deadline": 3600.0, "insight": "12 active"}


def test_states_are_words_and_a_nodes_last_word_comes_from_its_result() -> None:
    board = fed(
        START,
        ("node-start", "a", 1.0, {}), ("blocked", "a", 2.0, {}), ("poll", "a", 3.0, POLL),
        ("node-start", "b", 1.0, {}), ("blocked", "b", 2.0, {}), ("forcing", "b", 3.0, {}),
        ("poll", "b", 4.0, {**POLL, "active": 2}),
        ("node-done", "c", 1.0, {"result": "current", "exit_code": 0}),
        ("node-done", "d", 1.0, {"result": "skipped", "exit_code": 75}),
    )  # fmt: skip
    assert column(board, "state") == {
        "a": "draining",
        "b": "forcing",
        "c": "current",
        "d": "skipped",
    }
    for kind, node, data in (("aborted", "a", {}), ("unblocked", "a", {}),
                             ("node-done", "a", {"result": "aborted", "exit_code": 3}),
                             ("upgraded", "b", {}), ("verified", "b", {}), ("unblocked", "b", {}),
                             ("node-done", "b", {"result": "upgraded", "in_service": True})):  # fmt: skip
        board(Event(kind, node, "", 9.0, data))
    assert column(board, "state") == {
        "a": "gave up", "b": "back in service", "c": "current", "d": "skipped"
    }  # fmt: skip
    assert all("-" not in state for state in column(board, "state").values())  # no event names


def test_elapsed_runs_with_the_clock_and_stops_when_the_node_is_done() -> None:
    board = fed(START, ("node-start", "a", 100.0, {}), ("blocked", "a", 101.0, {}))
    assert column(board, "elapsed", now=107.4)["a"] == "0:07"
    assert column(board, "elapsed", now=108.4)["a"] == "0:08"  # no event in between
    board(Event("node-done", "a", "", 151.0, {"result": "upgraded", "in_service": True}))
    assert column(board, "elapsed", now=400.0)["a"] == "0:51"
    assert column(board, "elapsed", now=400.0)["b"] == ""  # never started


def test_the_header_counts_done_in_flight_waiting_and_sessions_forced() -> None:
    board = fed(
        START,
        ("node-done", "c", 1.0, {"result": "current"}),
        ("node-start", "a", 1.0, {}),
        ("node-start", "b", 1.0, {}),
        ("forced", "b", 2.0, {"count": 2, "sessions": []}),
    )
    assert board.header() == "1/4 done, 2 in flight, 1 waiting; 2 sessions forced"


def test_one_active_column_and_the_drain_rate_without_the_count_again() -> None:
    poll = {**POLL, "rate_per_minute": 3.14, "eta_low": 200.0, "eta_high": 420.0, "stalled": False}
    board = fed(START, ("node-start", "a", 1.0, {}), ("poll", "a", 2.0, poll))
    (row,) = [row for row in board.rows(3.0) if row[0] == "a"]
    assert row.count("12") == 1 and column(board, "drain")["a"] == "3.1/min, ETA 3\u20137 min"


def drain(tmp_path: Path, count: Any, max_stragglers: int) -> list[Event]:
    """A real drain (the runner's loop, policy and estimate) of node-a on a ManualClock, its
    count answered by ``count(seconds since the block)``; the events it emitted."""
    (tmp_path / "p.yaml").write_text(
        "name: p\ndrain: {timeout: 1h, poll: 10s, stragglers: force, settle: 1}\n"
        "steps: {block: block-it, active: count-them, force: cut-them, unblock: unblock-it}\n"
    )
    (tmp_path / "inventory.yaml").write_text("nodes:\n  node-a: {playbook: ./p.yaml}\n")
    inventory = load_inventory(str(tmp_path / "inventory.yaml"))
    options = PlanOptions(max_stragglers=max_stragglers)
    plan = build_plan(
        inventory, ["node-a"], "drain", options, "R1", load_playbooks(inventory)
    ).nodes[0]
    clock = ManualClock()
    node = ScriptedTransport(
        "node-a",
        [("count-them", lambda command: Reply(f"{count(clock.monotonic())}\n")),
         ("block-it|unblock-it|cut-them", Reply())],
    )  # fmt: skip
    seen: list[Event] = []
    ctx = RunContext(
        run_id="R1", command="drain", journal=Journal(str(tmp_path / "state"), "R1"),
        connections=Connections(inventory, make=lambda n: node), events=Events(seen.append,
        clock=clock.wall), stop=clock.stop(), state_dir=str(tmp_path / "state"),
        monotonic=clock.monotonic, wall=clock.wall,
    )  # fmt: skip
    NodeRun(plan, ctx).run()
    return seen


def outlook_of(events: list[Event]) -> list[str]:
    board = Board()
    said = []
    for event in events:
        board(event)
        if event.kind == "poll":
            said.append(column(board, "at the deadline")["node-a"])
    return said


def test_a_stuck_drain_says_early_that_the_deadline_will_give_up(tmp_path: Path) -> None:
    events = drain(tmp_path, lambda t: 12, max_stragglers=5)
    polls = [e.data for e in events if e.kind == "poll" and "left_at_deadline" in e.data]
    assert polls and all((p["left_at_deadline"], p["at_deadline"]) == (12, "abort") for p in polls)
    assert "12 left at the deadline: will give up (max 5)" in outlook_of(events)
    assert [e.data["result"] for e in events if e.kind == "node-done"] == ["aborted"]


def test_a_decaying_drain_is_expected_empty_before_the_deadline(tmp_path: Path) -> None:
    events = drain(tmp_path, lambda t: round(40 * math.exp(-t / 300)), max_stragglers=5)
    said = outlook_of(events)
    assert "empty before it" in said
    assert not any("give up" in words for words in said)


def test_a_few_stragglers_expected_at_the_deadline_will_be_forced(tmp_path: Path) -> None:
    # Fast enders leave 3 who never end: the fit (recent readings) expects a few at the deadline.
    events = drain(tmp_path, lambda t: 3 + round(30 * math.exp(-t / 120)), max_stragglers=5)
    said = [words for words in outlook_of(events) if words]
    assert any(words.endswith("left at the deadline: will force them (max 5)") for words in said)
