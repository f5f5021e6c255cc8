"""What people read of a run: the closing summary and the text a chat webhook shows."""

from __future__ import annotations

from typing import Any

from upgradectl.errors import ExitCode
from upgradectl.events import Event
from upgradectl.journal import controller
from upgradectl.results import NodeResult, RunSummary
from upgradectl.wording import chat_text


def summary_event(command: str, *results: NodeResult) -> Event:
    """The ``summary`` event a run of ``command`` emits when its nodes end as ``results``."""
    summary = RunSummary("R1", command, 0.0, 1.0, results, {})
    return Event("summary", None, "", 1.0, summary.event_data())


def test_a_nodes_result_in_chat_names_the_sessions_it_cut() -> None:
    forced = [{"id": "call-7", "age": 60.0}, {"id": "call-9", "age": 5.0}]
    event = Event("node-done", "node-a", "upgraded: done; back in service", 1.0,
                  {"result": "upgraded", "exit_code": 0, "forced": forced})  # fmt: skip
    assert chat_text(event) == (
        "upgradectl: node-a: upgraded: done; back in service (sessions cut: call-7, call-9)"
    )


def test_a_dry_run_says_so_in_chat_with_who_started_it() -> None:
    event = Event("run-start", None, "drain node-a (run R1)", 1.0, {"dry_run": True})
    who = controller()
    assert (
        chat_text(event)
        == f"upgradectl: {who['user']}@{who['host']} started a dry run of drain node-a (run R1)"
    )


def test_the_summary_in_chat_is_the_summary_a_cron_mail_shows() -> None:
    aborted = NodeResult("node-a", "aborted", ExitCode.GAVE_UP, "12 sessions left")
    text = chat_text(summary_event("upgrade", aborted))
    assert text.splitlines() == [
        "upgradectl upgrade R1: 1 aborted; 0 sessions forced; exit 3 (gave up)",
        "  node-a  aborted    12 sessions left",
    ]


def test_sessions_cut_are_named_in_peoples_terms_where_the_playbook_knows_them() -> None:
    forced: list[dict[str, Any]] = [
        {"id": "0x55e344339900", "age": 65.0, "details": {"client": "10.0.0.21:40312"}},
        {
            "id": "2-4126@10.0.0.5",
            "age": 6.0,
            "details": {"from": "sip:alice@a", "to": "sip:5551234@b"},
        },
        {"id": "call-9", "age": None},
    ]
    drained = NodeResult("node-a", "drained", ExitCode.OK, "left blocked", forced=forced)
    assert chat_text(summary_event("drain", drained)).splitlines()[2:] == [
        "      cut: client 10.0.0.21:40312 (0x55e344339900) (lasted 1m5s)",
        "      cut: from sip:alice@a to sip:5551234@b (2-4126@10.0.0.5) (lasted 6s)",
        "      cut: call-9",
    ]
