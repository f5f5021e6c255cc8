"""Dry runs: the real run's path with the acting steps described instead of run.

On a scripted node (an acting command would be unscripted and fail the test) and, for the
fleet's part (probe, `current`, order), on local nodes whose state is files.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from clihelp import run_cli
from fakenode import STEPS, FakeNode

from upgradectl.errors import ExitCode
from upgradectl.rehearsal import Rehearsal
from upgradectl.runner import NodeRun
from upgradectl.testing import Reply, Rule

# Only what a dry run may run is answered: the read-only steps.
READ_ONLY: list[Rule] = [
    ("is_blocked", Reply("ready\n")),
    ("count", Reply("3 active\n")),
    ("sessions", Reply("call-a 3000\ncall-b 3100\ncall-c 3200\n")),
    ("precheck", Reply("ok\n")),
]


def dry_run(node: FakeNode, command: str) -> tuple[str, int, str, dict[str, object] | None]:
    """A dry run of ``command``: its result, exit code, and the "would" event's message and data."""
    ctx = node.context(command)
    ctx.dry_run = True
    result = NodeRun(node.plan(command), ctx).run()
    would = [e for e in node.events if e.kind == "would"]
    said = (would[0].message, dict(would[0].data)) if would else ("", None)
    return result.result, result.exit_code, *said


def test_the_acts_are_said_in_order_with_the_count_first_and_the_notes_last() -> None:
    rehearsal = Rehearsal()
    rehearsal.would("block at lb-1")
    rehearsal.counted(37)
    rehearsal.would("wait up to 1h")
    rehearsal.would("upgrade (apt-get install x)", "; then ")
    rehearsal.would("unblock at lb-1")
    rehearsal.note("precheck passes on fs-1")

    assert rehearsal.sentence() == (
        "37 active; would block at lb-1, wait up to 1h; then upgrade (apt-get install x), "
        "unblock at lb-1; precheck passes on fs-1"
    )


def test_a_dry_upgrade_runs_only_read_only_steps_and_says_what_the_run_would_do(
    tmp_path: Path,
) -> None:
    steps = {**STEPS, "precheck": {"run": "precheck"}}
    node = FakeNode(tmp_path, READ_ONLY, steps=steps, drain={"timeout": "1m"})

    result, code, message, data = dry_run(node, "upgrade")

    assert (result, code) == ("dry-run", ExitCode.OK)
    assert message == (
        "3 active; would block at node-1, wait up to 1m, then give up and unblock if any session "
        "is left (3 sessions are older than 50 min and would likely be cut at the deadline); "
        "then upgrade (upgrade), verify, unblock at node-1; precheck passes on node-1"
    )
    assert data is not None and data["active"] == 3
    assert data["predicted_cut"] == ["call-c", "call-b", "call-a"]
    ran = {command.split()[0] for command in node.transport.commands}
    assert ran == {"is_blocked", "precheck", "count", "sessions"}  # no lock taken either
    assert node.clock.monotonic() == 0  # the drain was not waited out
    assert node.recorded() == ["result"]  # no state change journalled


def test_a_dry_run_of_a_node_blocked_by_hand_says_it_would_leave_it_blocked(
    tmp_path: Path,
) -> None:
    node = FakeNode(tmp_path, [("is_blocked", Reply("blocked\n")), *READ_ONLY[1:]])

    result, _, message, _ = dry_run(node, "upgrade")

    assert result == "dry-run"
    assert message.endswith(
        "then upgrade (upgrade), verify; already blocked before this run: would leave it blocked"
    )


def test_a_dry_patch_and_a_dry_unblock_say_their_steps(tmp_path: Path) -> None:
    steps = {**STEPS, "patch": {"run": "hotfix 7"}}
    patch = FakeNode(tmp_path / "patch", [], steps=steps)
    unblock = FakeNode(tmp_path / "unblock", [], steps=steps)

    assert dry_run(patch, "patch")[2] == "would hot-patch on node-1: hotfix 7; then verify"
    assert dry_run(unblock, "unblock")[2] == "would verify, then unblock at node-1"
    assert patch.transport.commands == unblock.transport.commands == []


def test_a_dry_run_whose_precheck_fails_fails_as_the_run_would(tmp_path: Path) -> None:
    steps = {**STEPS, "precheck": {"run": "precheck"}}
    node = FakeNode(tmp_path, [("precheck", Reply(exit_code=3)), *READ_ONLY], steps=steps)

    result, code, message, _ = dry_run(node, "drain")

    assert (result, code, message) == ("failed", ExitCode.STEP_FAILED, "")
    assert node.transport.ran("^block") == []


PLAYBOOK = {
    "name": "files",
    "steps": {
        "is_blocked": {"run": "cat {{ dir }}/state", "parse": "^blocked"},
        "block": {"run": "echo blocked > {{ dir }}/state"},
        "active": {"run": "cat {{ dir }}/count", "parse": "^(\\d+)$"},
        "upgrade": {"run": "echo {{ version }} > {{ dir }}/version"},
        "unblock": {"run": "echo ready > {{ dir }}/state"},
        "version": {"run": "cat {{ dir }}/version", "parse": "^(?P<version>\\S+)"},
    },
    "lock": "{{ dir }}/lock",
}


def node_files(root: Path) -> dict[Path, str]:
    """Every file of the local nodes a, b and c, with its text."""
    return {path: path.read_text() for name in "abc" for path in (root / name).iterdir()}


def test_a_dry_run_takes_the_fleets_path_current_order_and_all_and_is_marked_in_the_journal(
    tmp_path: Path,
) -> None:
    nodes = {}
    for name, count, version in [("a", 5, "1.0"), ("b", 1, "1.0"), ("c", 0, "2.0")]:
        (home := tmp_path / name).mkdir()
        (home / "state").write_text("ready\n")
        (home / "count").write_text(f"{count}\n")
        (home / "version").write_text(f"{version}\n")
        nodes[name] = {"transport": "local", "groups": ["g"], "vars": {"dir": str(home)}}
    (tmp_path / "files.yaml").write_text(yaml.safe_dump(PLAYBOOK))
    inventory = {"defaults": {"playbook": "./files.yaml"}, "groups": {"g": {}}, "nodes": nodes}
    (tmp_path / "inventory.yaml").write_text(yaml.safe_dump(inventory))
    before = node_files(tmp_path)
    base = ("-i", str(tmp_path / "inventory.yaml"), "--state-dir", str(tmp_path / "state"))

    ran = run_cli(*base, "--json", "upgrade", "--group", "g", "--version", "2.0", "--dry-run")

    assert ran.code == 0, ran.stderr
    results = {name: node["result"] for name, node in ran.summary["nodes"].items()}
    assert results == {"a": "dry-run", "b": "dry-run", "c": "current"}
    (order,) = [e for e in ran.events if e["event"] == "order"]
    assert order["order"] == ["b", "a"]  # fewest active first, as the run would go
    assert node_files(tmp_path) == before  # nothing changed, and no lock file
    journal = next((tmp_path / "state" / "runs").glob("*.jsonl")).read_text().splitlines()
    assert json.loads(journal[0])["data"]["dry_run"] is True
    resumed = run_cli(*base, "resume", ran.summary["run_id"])
    assert resumed.code == 2 and "was a dry run" in resumed.stderr
