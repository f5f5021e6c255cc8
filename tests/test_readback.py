"""A block or an unblock is reported only as the node's ``is_blocked`` reads it back.

Runner decisions on scripted nodes (FakeFleet, FakeNode) and a ManualClock.
"""

from __future__ import annotations

from pathlib import Path

from fakefleet import FakeFleet
from fakenode import STEPS, FakeNode

from upgradectl.errors import ExitCode
from upgradectl.runner import NodeRun
from upgradectl.testing import Reply, Rule


def _messages(fleet: FakeFleet, kind: str) -> list[str]:
    return [e.message for e in fleet.events if e.node == "node-1" and e.kind == kind]


def test_a_block_that_does_not_take_is_a_failed_block_and_the_node_is_put_back(
    tmp_path: Path,
) -> None:
    # The block step exits 0, but the node still takes sessions.
    fleet = FakeFleet(tmp_path, size=1, scripts={"node-1": [("^block$", Reply())]})
    result = fleet.run()["node-1"]
    assert (result.result, result.exit_code) == ("failed", ExitCode.STEP_FAILED)
    assert "the block did not take: is_blocked says the node still takes sessions" in (
        result.message
    )
    assert not _messages(fleet, "blocked")  # never said to be blocked
    commands = fleet.transports["node-1"].commands
    after = commands[commands.index("block") :]
    assert "count" not in after and "upgrade" not in after  # no drain, no upgrade
    assert "unblock" in after  # put back: the block is this run's to undo
    assert result.in_service


def test_an_unblock_that_does_not_take_leaves_the_node_for_a_person(tmp_path: Path) -> None:
    # The unblock step exits 0, but the node still says it is blocked.
    fleet = FakeFleet(tmp_path, size=1, scripts={"node-1": [("^unblock$", Reply())]})
    result = fleet.run()["node-1"]
    assert (result.result, result.exit_code) == ("attention", ExitCode.ATTENTION)
    assert "the unblock did not take: is_blocked says the node is still blocked" in (result.message)
    assert not result.in_service
    assert not _messages(fleet, "unblocked")  # "back in service" is never said
    assert any("did not take" in m for m in _messages(fleet, "left-blocked"))  # journalled


def test_a_block_and_unblock_read_back_are_said_to_be_seen(tmp_path: Path) -> None:
    fleet = FakeFleet(tmp_path, size=1)
    result = fleet.run()["node-1"]
    assert (result.exit_code, result.message) == (ExitCode.OK, "done; back in service")
    assert _messages(fleet, "blocked") == [
        "blocked at node-1; no new sessions (is_blocked says so)"
    ]
    assert _messages(fleet, "unblocked") == [
        "unblocked at node-1; back in service (is_blocked says so)"
    ]


def test_without_is_blocked_a_block_and_unblock_claim_only_that_their_step_ran(
    tmp_path: Path,
) -> None:
    steps = {name: step for name, step in STEPS.items() if name != "is_blocked"}
    script: list[Rule] = [
        (r"^(block|unblock|upgrade|verify)$", Reply()),
        ("^count$", Reply("0 active\n")),
        ("^sessions$", Reply("")),
    ]
    node = FakeNode(tmp_path, script, steps=steps)
    result = NodeRun(node.plan(), node.context()).run()
    assert result.exit_code == ExitCode.OK
    assert result.message == "done; unblock step done (no is_blocked step to read it back)"
    said = {e.kind: e.message for e in node.events if e.kind in ("blocked", "unblocked")}
    assert said == {
        "blocked": "block step done at node-1 (no is_blocked step to read it back)",
        "unblocked": "unblock step done at node-1 (no is_blocked step to read it back)",
    }


def test_a_dry_run_without_is_blocked_says_it_would_not_read_back_and_acts_on_nothing(
    tmp_path: Path,
) -> None:
    steps = {name: step for name, step in STEPS.items() if name != "is_blocked"}
    node = FakeNode(
        tmp_path, [("^count$", Reply("0 active\n")), ("^sessions$", Reply(""))], steps=steps
    )
    ctx = node.context()
    ctx.dry_run = True
    result = NodeRun(node.plan(), ctx).run()
    assert (result.result, result.exit_code) == ("dry-run", ExitCode.OK)
    [would] = [e.message for e in node.events if e.kind == "would"]
    assert "no is_blocked step: the block and unblock would not be read back" in would
    assert node.transport.commands and not node.transport.ran("^(block|unblock|upgrade)$")
