"""The four-step plan on one node over real SSH: drains, stragglers, failures, dry runs."""

from __future__ import annotations

import pytest
from clihelp import LabCli, Ran

from upgradectl.lab import Call, Fate, place_calls

CTL = "socat - UNIX-CONNECT:{{ ctl_socket }}"


def calls_to(cli: LabCli, node: str, durations: list[float]) -> list[Call]:
    """Open calls of the given lengths straight to a node's call server."""
    return place_calls("127.0.0.1", cli.lab.node(node).call_port, durations, caller_prefix=node)


def drained_after_every_call_ended(ran: Ran, calls: list[Call]) -> bool:
    """The drain saw the calls live when it began, and ended only after the last of them."""
    polls = [event for event in ran.events if event["event"] == "poll"]
    (drained,) = [event for event in ran.events if event["event"] == "drained"]
    ended = [call.wait(10).ended for call in calls]
    return polls[0]["active"] >= 1 and all(
        end is not None and end <= drained["time"] for end in ended
    )


def test_a_drain_waits_for_live_calls_to_end_then_upgrades_and_unblocks(cli: LabCli) -> None:
    calls = calls_to(cli, "node-1", [2.0, 3.0])
    fast = cli.playbook_variant("fast")
    ran = cli("upgrade", "node-1", "--version", "2.0", "--yes", "--playbook", fast)
    assert ran.code == 0, ran.stderr
    assert [call.wait(10).fate for call in calls] == [Fate.COMPLETED, Fate.COMPLETED]
    node = ran.summary["nodes"]["node-1"]
    assert node["result"] == "upgraded" and node["forced"] == []
    assert drained_after_every_call_ended(ran, calls)
    kinds = ran.kinds("node-1")
    assert (
        kinds.index("blocked")
        < kinds.index("drained")
        < kinds.index("upgraded")
        < kinds.index("unblocked")
    )
    assert cli.ask("version") == "version 2.0"
    assert cli.ask("state") == "ready"


def test_stragglers_under_max_stragglers_are_forced_and_reported_by_id(cli: LabCli) -> None:
    short, *long_calls = calls_to(cli, "node-1", [0.5, 60, 60])
    fast = cli.playbook_variant("fast")
    ran = cli(
        "upgrade", "node-1", "--version", "2.0", "--yes", "--playbook", fast,
        "--timeout", "2s", "--stragglers", "force", "--max-stragglers", "2",
    )  # fmt: skip
    assert ran.code == 0, ran.stderr
    assert short.wait(10).fate is Fate.COMPLETED
    cut = {call.wait(10).call_id for call in long_calls if call.wait(10).fate is Fate.DROPPED}
    assert len(cut) == 2
    assert {session["id"] for session in ran.summary["forced"]} == cut
    assert all(session["age"] >= 1 for session in ran.summary["forced"])
    report = cli("history", "--forced").events  # the helpdesk report, one line per session cut
    assert {session["id"] for session in report} == cut
    assert {session["node"] for session in report} == {"node-1"}
    assert all(
        session["run"] == ran.summary["run_id"] and session["cut_at"] > 0 for session in report
    )


def test_more_stragglers_than_the_limit_abort_unblock_and_leave_the_version(
    cli: LabCli,
) -> None:
    calls = calls_to(cli, "node-1", [60, 60, 60])
    fast = cli.playbook_variant("fast")
    ran = cli(
        "upgrade", "node-1", "--version", "2.0", "--yes", "--playbook", fast,
        "--timeout", "1s", "--stragglers", "force", "--max-stragglers", "2",
    )  # fmt: skip
    assert ran.code == 3, ran.stdout
    assert ran.summary["nodes"]["node-1"]["result"] == "aborted"
    assert cli.ask("state") == "ready"
    assert cli.ask("version") == "version 1.0"
    assert all(call.live for call in calls)  # nobody was cut
    for call in calls:
        call.hang_up()


def test_a_failed_upgrade_with_rollback_is_rolled_back_and_back_in_service(
    cli: LabCli,
) -> None:
    # The upgrade "succeeds" by exit code but prints an error: output is parsed, not trusted.
    broken = cli.playbook_variant(
        "broken-upgrade",
        upgrade={"run": "echo 'error: disk full'", "fail_if": "^error"},
        rollback={"run": f"echo upgrade 1.0 | {CTL}", "parse": "^upgraded to 1.0"},
    )
    ran = cli("upgrade", "node-1", "--version", "2.0", "--yes", "--playbook", broken)
    assert ran.code == 1, ran.stdout
    kinds = ran.kinds("node-1")
    assert "rolled-back" in kinds and kinds[-2] == "unblocked"
    assert cli.ask("state") == "ready"


def test_a_failed_upgrade_without_rollback_that_still_verifies_is_put_back(
    cli: LabCli,
) -> None:
    broken = cli.playbook_variant("no-rollback", upgrade={"run": "exit 7"})
    ran = cli("upgrade", "node-1", "--version", "2.0", "--yes", "--playbook", broken)
    assert ran.code == 1, ran.stdout
    assert "exit code 7" in ran.summary["nodes"]["node-1"]["message"]
    assert cli.ask("state") == "ready"


def test_a_failed_verify_without_rollback_leaves_the_node_blocked_for_a_person(
    cli: LabCli,
) -> None:
    failing = cli.playbook_variant("bad-verify", verify={"run": "echo unhealthy; exit 1"})
    ran = cli("upgrade", "node-1", "--version", "2.0", "--yes", "--playbook", failing)
    assert ran.code == 4, ran.stdout
    assert ran.summary["nodes"]["node-1"]["in_service"] is False
    assert cli.ask("state") == "blocked"
    # status names it among the nodes left out of service (not merely prints the key).
    assert "node-1" in cli("status").events[0]["left_out_of_service"]


def test_a_failed_verify_is_rolled_back_and_verified_again(cli: LabCli) -> None:
    # The new version fails its check; the rollback brings back one that passes.
    verify = {"run": f"echo version | {CTL}", "parse": "^version 1\\.0$"}
    rollback = {"run": f"echo upgrade 1.0 | {CTL}", "parse": "^upgraded to 1.0"}
    failing = cli.playbook_variant("verify-rollback", verify=verify, rollback=rollback)
    ran = cli("upgrade", "node-1", "--version", "2.0", "--yes", "--playbook", failing)
    assert ran.code == 1, ran.stdout
    assert cli.ask("version") == "version 1.0"
    assert cli.ask("state") == "ready"


def test_a_count_that_is_not_a_number_is_never_zero_and_stops_the_drain(cli: LabCli) -> None:
    # A login whose PATH lacks the tool prints nothing useful: that must not read as "drained".
    # Here the counter goes blind once the node is blocked, mid-drain.
    counter = f"echo state | {CTL} | grep -q blocked && exec no-such-counter; echo count | {CTL}"
    blind = cli.playbook_variant("blind", active={"run": counter, "parse": "(\\d+) active"})
    ran = cli("upgrade", "node-1", "--version", "2.0", "--yes", "--playbook", blind)
    assert ran.code == 1, ran.stdout
    kinds = ran.kinds("node-1")
    assert "blocked" in kinds and "drained" not in kinds and "upgraded" not in kinds
    assert cli.ask("state") == "ready" and cli.ask("version") == "version 1.0"


def test_dry_run_runs_only_read_only_steps_and_changes_nothing(cli: LabCli) -> None:
    calls = calls_to(cli, "node-1", [60, 60])
    node = cli.lab.node("node-1")
    before = sorted(p.name for p in node.node_dir.iterdir())
    ran = cli("upgrade", "node-1", "--version", "2.0", "--dry-run")
    assert ran.code == 0, ran.stderr
    (would,) = [e for e in ran.events if e["event"] == "would"]
    assert would["message"].startswith("2 active; would block at node-1, wait up to 2m")
    assert cli.ask("state") == "ready"
    assert cli.ask("version") == "version 1.0"
    assert cli.ask("count") == "2 active"
    assert sorted(p.name for p in node.node_dir.iterdir()) == before  # no lock file either
    assert all(call.live for call in calls)
    for call in calls:
        call.hang_up()


def test_drain_leaves_the_node_blocked_and_upgrade_carries_it_on(cli: LabCli) -> None:
    fast = cli.playbook_variant("fast")
    drained = cli("drain", "node-1", "--yes", "--playbook", fast)
    assert drained.code == 0, drained.stderr
    assert cli.ask("state") == "blocked"
    upgraded = cli("upgrade", "node-1", "--version", "2.0", "--yes", "--playbook", fast)
    assert upgraded.code == 0, upgraded.stdout
    assert cli.ask("state") == "ready" and cli.ask("version") == "version 2.0"


def test_an_unknown_host_key_is_refused_and_nothing_is_touched(cli: LabCli) -> None:
    cli.home.known_hosts.write_text("")
    ran = cli("upgrade", "node-1", "--version", "2.0", "--yes")
    assert ran.code == 2  # the operator's setup: refused at the preflight, never "attention"
    assert "unknown host key" in ran.stdout
    assert cli.ask("state") == "ready"


def test_accept_new_host_keys_adds_the_key_loudly(cli: LabCli) -> None:
    cli.home.known_hosts.write_text("")
    fast = cli.playbook_variant("fast")
    ran = cli(
        "--accept-new-host-keys",
        "upgrade",
        "node-1",
        "--version",
        "2.0",
        "--yes",
        "--playbook",
        fast,
    )
    assert ran.code == 0, ran.stdout
    assert any(e["event"] == "warning" and "added" in e["message"] for e in ran.events)
    assert str(cli.lab.node("node-1").ssh.port) in cli.home.known_hosts.read_text()


def test_one_connection_per_node_serves_every_step_and_poll(cli: LabCli) -> None:
    calls_to(cli, "node-1", [1.0])
    # Three zero readings in a row end the drain: at least three polls, however soon the call
    # ends (a busy machine may find it over at the first one).
    fast = cli.playbook_variant("fast", drain={"settle": 3})
    ran = cli("upgrade", "node-1", "--version", "2.0", "--yes", "--playbook", fast)
    assert ran.code == 0, ran.stderr
    assert ran.summary["connections"]["node-1"] == 1
    polls = [e for e in ran.events if e["event"] == "poll"]
    assert len(polls) >= 3


def test_status_reports_blocked_active_version_and_lock(cli: LabCli) -> None:
    cli.ask("block")
    calls_to(cli, "node-2", [30])
    ran = cli("status")
    assert ran.code == 0, ran.stderr
    (report,) = ran.events
    rows = {row["node"]: row for row in report["nodes"]}
    assert rows["node-1"]["blocked"] is True and rows["node-2"]["active"] == 1
    assert rows["node-2"]["version"] == "1.0" and rows["node-1"]["lock"] is None


def test_a_node_already_on_the_version_is_left_alone(cli: LabCli) -> None:
    (call,) = calls_to(cli, "node-1", [60])
    ran = cli("upgrade", "node-1", "node-2", "--version", "1.0", "--yes")
    assert ran.code == 0, ran.stdout
    assert {name: node["result"] for name, node in ran.summary["nodes"].items()} == {
        "node-1": "current",
        "node-2": "current",
    }
    assert "blocking" not in ran.kinds() and call.live  # nobody drained, nobody cut
    call.hang_up()


@pytest.mark.slow
def test_unblock_verifies_then_puts_a_drained_node_back(cli: LabCli) -> None:
    fast = cli.playbook_variant("fast")
    assert cli("drain", "node-1", "--yes", "--playbook", fast).code == 0
    assert "node-1" in cli("status").events[0]["left_out_of_service"]
    ran = cli("unblock", "node-1", "--yes", "--playbook", fast)
    assert ran.code == 0, ran.stdout
    kinds = ran.kinds("node-1")
    assert kinds.index("verified") < kinds.index("unblocked")
    assert cli.ask("state") == "ready"
    assert cli("status").events[0]["left_out_of_service"] == {}


def test_unblock_leaves_a_node_that_fails_its_check_blocked(cli: LabCli) -> None:
    cli.lab.node("node-1").control("block")
    failing = cli.playbook_variant("sick", verify={"run": "echo unhealthy; exit 1"})
    ran = cli("unblock", "node-1", "--yes", "--playbook", failing)
    assert ran.code == 4, ran.stdout
    assert "unblocked" not in ran.kinds("node-1") and cli.ask("state") == "blocked"
