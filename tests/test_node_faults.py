"""A fault of ours in one node's run (an error no step was meant to raise) goes through that
node's recovery and never takes the run, or the other nodes, down."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakefleet import FakeFleet

from upgradectl.errors import ExitCode
from upgradectl.testing import Reply


def broken(command: str) -> Reply:
    raise RuntimeError(f"a bug, on {command!r}")


def test_a_fault_during_the_upgrade_puts_that_node_back_and_the_others_finish(
    tmp_path: Path,
) -> None:
    fleet = FakeFleet(tmp_path, size=4, scripts={"node-2": [("^upgrade$", broken)]})
    results = fleet.run()
    faulty = results.pop("node-2")
    assert (faulty.result, faulty.exit_code, faulty.in_service) == (
        "failed",
        ExitCode.STEP_FAILED,
        True,
    )
    assert "unexpected error (RuntimeError: a bug, on 'upgrade')" in faulty.message
    assert fleet.transports["node-2"].ran("^unblock$") == ["unblock"]  # verified, then put back
    assert {name: r.result for name, r in results.items()} == dict.fromkeys(results, "upgraded")


def second_time_broken(command: str, calls: list[str] = []) -> Reply:  # noqa: B006
    calls.append(command)
    return Reply("0 active\n") if len(calls) == 1 else broken(command)


def test_a_fault_while_draining_unblocks_the_node_without_upgrading_it(tmp_path: Path) -> None:
    fleet = FakeFleet(tmp_path, size=3, scripts={"node-1": [("^count$", second_time_broken)]})
    results = fleet.run()
    assert (results["node-1"].result, results["node-1"].in_service) == ("failed", True)
    assert fleet.transports["node-1"].ran("^(upgrade|unblock)$") == ["unblock"]
    assert [results[n].result for n in ("node-2", "node-3")] == ["upgraded", "upgraded"]


def test_a_node_whose_recovery_faults_too_is_reported_out_of_service_and_the_run_ends(
    tmp_path: Path,
) -> None:
    fleet = FakeFleet(
        tmp_path, size=3, scripts={"node-3": [("^(upgrade|verify|unblock)$", broken)]}
    )
    results = fleet.run()
    faulty = results["node-3"]
    assert (faulty.result, faulty.exit_code, faulty.in_service) == (
        "attention",
        ExitCode.ATTENTION,
        False,
    )
    assert "unknown state" in " ".join(e.message for e in fleet.events if e.node == "node-3")
    assert [results[n].result for n in ("node-1", "node-2")] == ["upgraded", "upgraded"]


@pytest.mark.parametrize("reading", ["is_blocked", "count", "version"])
def test_a_fault_while_probing_leaves_that_node_untouched_and_the_others_run(
    tmp_path: Path, reading: str
) -> None:
    fleet = FakeFleet(tmp_path, size=3, scripts={"node-2": [(f"^{reading}$", broken)]})
    results = fleet.run()
    assert [results[n].result for n in ("node-1", "node-3")] == ["upgraded", "upgraded"]
    faulty = results["node-2"]
    assert (faulty.result, faulty.exit_code) == ("failed", ExitCode.STEP_FAILED)
    assert faulty.message.startswith("not started: unexpected error (RuntimeError: a bug")
    assert fleet.transports["node-2"].ran("^(block|upgrade|unblock)$") == []
