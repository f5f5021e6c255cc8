"""Drain insight on a real node: who a deadline would cut, the helpdesk report (the ETA while
waiting and force_when are decided on a scripted node: tests/test_drain.py)."""

from __future__ import annotations

from clihelp import LabCli, run_cli
from conftest import wait_for

from upgradectl.lab import Call, Fate, place_calls


def calls(cli: LabCli, durations: list[float]) -> list[Call]:
    return place_calls("127.0.0.1", cli.lab.node("node-1").call_port, durations, caller_prefix="c")


def hang_up(live: list[Call]) -> None:
    for call in live:
        call.hang_up()


def test_dry_run_names_who_a_deadline_would_cut_judged_by_the_ages_seen(cli: LabCli) -> None:
    live = calls(cli, [300, 300, 300, 300])
    node = cli.lab.node("node-1")
    # Sessions that have lasted 3 s or more, like the ones seen, are likely to outlast a 1 s
    # deadline, and unlikely to outlast a 10 h one.
    wait_for(
        lambda: all(int(line.split()[1]) >= 3 for line in node.control("list").splitlines()),
        timeout=15,
    )
    short = cli(
        "drain",
        "node-1",
        "--dry-run",
        "--timeout",
        "1s",
        "--stragglers",
        "force",
        "--max-stragglers",
        "5",
    )
    assert short.code == 0, short.stderr
    (would,) = [event for event in short.events if event["event"] == "would"]
    assert sorted(would["predicted_cut"]) == sorted(str(call.call_id) for call in live)
    assert "4 sessions" in would["message"] and "would likely be cut" in would["message"]
    generous = cli("drain", "node-1", "--dry-run", "--timeout", "10h")
    (would,) = [event for event in generous.events if event["event"] == "would"]
    assert would["predicted_cut"] == [] and would["expected_cut"] < 0.5
    assert node.control("state").strip() == "ready"  # a dry run changes nothing
    hang_up(live)


def test_the_helpdesk_report_lists_every_session_cut_with_how_long_it_had_lasted(
    cli: LabCli,
) -> None:
    short, *long_calls = calls(cli, [0.3, 300, 300])
    fast = cli.playbook_variant("fast")
    ran = cli(
        "drain",
        "node-1",
        "--yes",
        "--playbook",
        fast,
        "--timeout",
        "1s",
        "--stragglers",
        "force",
        "--max-stragglers",
        "2",
    )
    assert ran.code == 0, ran.stderr
    assert short.wait(10).fate is Fate.COMPLETED
    cut = {call.wait(10).call_id: call.wait(10) for call in long_calls}
    assert all(record.fate is Fate.DROPPED for record in cut.values())
    report = cli("history", "--forced").events
    assert {row["id"] for row in report} == set(cut)
    for row in report:
        record = cut[row["id"]]
        assert record.ended is not None
        lasted = record.ended - record.started
        assert abs(row["age"] - lasted) <= 2.0  # the call server counts whole seconds
        assert row["node"] == "node-1" and row["run"] == ran.summary["run_id"]
        assert abs(row["cut_at"] - record.ended) <= 2.0
    inventory = str(cli.lab.inventory_path)  # the same report, for people
    people = run_cli(
        "-i", inventory, "--state-dir", str(cli.state_dir), "history", "--forced", env=cli.home.env
    )
    assert all(row["id"] in people.stdout for row in report) and "lasted" in people.stdout
