"""A plain upgrade in six round trips a node: readings taken together, the lock with the block
check, verify with unblock and the lock's release; each command keeps its own exit code, output
and deadline, and nothing that depends on a failed command runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from clihelp import LabCli
from fakefleet import FakeFleet

from upgradectl import batch
from upgradectl.errors import ExitCode
from upgradectl.lab import lab_account
from upgradectl.testing import Reply
from upgradectl.transport.local import LocalTransport

BENCH_PLAYBOOK = Path(__file__).resolve().parent.parent / "bench" / "playbook.yaml"
_EXEC = re.compile(r"server_input_channel_req: channel \d+ request exec ")


def run_batch(parts: list[batch.Part]) -> list[tuple[int, str, str]]:
    script = batch.compose(parts)
    result = LocalTransport("here").run(script, batch.timeout_of(parts))
    return [(r.exit_code, r.stdout, r.stderr) for r in batch.split(script, parts, result)]


def test_each_command_of_a_batch_keeps_its_exit_code_and_its_own_output() -> None:
    said = run_batch(
        [
            batch.Part("printf 'no newline'; echo oops >&2; exit 3", 5),
            batch.Part("printf 'two\\n\\nlines\\n'; exit 0", 5, bounded=False),  # a reading
            batch.Part("exit 4", 5, bounded=False),  # ends its own subshell, not the batch
            batch.Part("true", 5),
        ]
    )
    assert said == [
        (3, "no newline", "oops\n"),
        (0, "two\n\nlines\n", ""),
        (4, "", ""),
        (0, "", ""),
    ]


def test_after_a_failed_gate_nothing_more_runs() -> None:
    said = run_batch(
        [batch.Part("echo verify; exit 1", 5, gate=True), batch.Part("echo unblock", 5)]
    )
    assert said == [(1, "verify\n", "")]


def test_a_command_of_a_batch_is_stopped_at_its_own_deadline_and_the_next_runs() -> None:
    said = run_batch([batch.Part("sleep 5", 0.3), batch.Part("echo next", 5)])
    assert [code for code, _, _ in said] == [124, 0]


def test_a_plain_upgrade_takes_six_round_trips_a_node(tmp_path: Path) -> None:
    fleet = FakeFleet(tmp_path, size=3)
    results = fleet.run()
    assert {r.result for r in results.values()} == {"upgraded"}
    for transport in fleet.transports.values():
        assert transport.round_trips == 6
        steps = [c for c in transport.commands if "upgradectl" not in c]  # the lock's own
        assert steps == [
            "is_blocked", "count", "version",  # the probe
            "is_blocked",  # with the lock
            "block", "is_blocked",  # the block read back with it
            "count", "is_blocked",  # the drain's zero, and the block seen with it
            "upgrade",
            "verify", "unblock", "is_blocked",  # with the lock's release; the unblock read back
        ]  # fmt: skip


def test_a_failed_verify_sends_no_unblock_and_the_node_stays_blocked(tmp_path: Path) -> None:
    fleet = FakeFleet(tmp_path, size=1, scripts={"node-1": [("^verify$", Reply(exit_code=1))]})
    result = fleet.run()["node-1"]
    assert (result.result, result.exit_code, result.in_service) == (
        "attention",
        ExitCode.ATTENTION,
        False,
    )
    transport = fleet.transports["node-1"]
    assert transport.ran("^unblock$") == []
    assert len(transport.ran("echo released")) == 1  # the lock, released on its own after all


def test_a_block_seen_lost_with_the_last_count_is_put_back_and_the_node_counted_again(
    tmp_path: Path,
) -> None:
    # The probe and the lock's round trip: not blocked; read back after the block: blocked;
    # with the zero: lost; then back (put back, then with the zero again); the unblock's: not.
    blocked, free = Reply("blocked\n"), Reply("")
    replies = [free, free, blocked, free, blocked, blocked, free]
    fleet = FakeFleet(tmp_path, size=1, scripts={"node-1": [("^is_blocked$", replies)]})
    result = fleet.run()["node-1"]
    assert result.result == "upgraded"
    kinds = [e.kind for e in fleet.events if e.node == "node-1"]
    lost = kinds.index("block-lost")
    assert kinds[lost:].count("blocked") == 1 and "upgrading" in kinds[lost:]
    assert len(fleet.transports["node-1"].ran("^count$")) == 3  # probe, zero with lost, again


@pytest.mark.lab
def test_sshd_runs_six_commands_for_a_plain_upgrade_of_a_node(cli: LabCli) -> None:
    sshd = cli.lab.node("node-1").ssh
    sshd.log_level = "DEBUG"  # sshd then logs each command it is asked to run
    sshd.restart()
    node_dir = cli.lab.node("node-1").node_dir
    for name, text in {"version": "1\n", "sessions": ""}.items():
        (node_dir / name).write_text(text)
        lab_account().give(node_dir / name)
    before = len(_EXEC.findall(sshd.process.log_path.read_text(errors="replace")))
    ran = cli("upgrade", "node-1", "--version", "2", "--yes", "--playbook", str(BENCH_PLAYBOOK))
    assert ran.code == 0, ran.stdout + ran.stderr
    assert (node_dir / "version").read_text() == "2\n"
    assert not (node_dir / "blocked").exists() and not (node_dir / "upgradectl.lock").exists()
    log = sshd.process.log_path.read_text(errors="replace")
    assert len(_EXEC.findall(log)) - before == 6


@pytest.mark.lab
def test_status_reads_a_node_in_one_command(cli: LabCli) -> None:
    sshd = cli.lab.node("node-1").ssh
    sshd.log_level = "DEBUG"
    sshd.restart()
    before = len(_EXEC.findall(sshd.process.log_path.read_text(errors="replace")))
    ran = cli("status", "node-1")
    assert ran.code == 0, ran.stdout + ran.stderr
    (row,) = ran.events[0]["nodes"]
    assert (row["blocked"], row["active"], row["version"], row["lock"]) == (False, 0, "1.0", None)
    log = sshd.process.log_path.read_text(errors="replace")
    assert len(_EXEC.findall(log)) - before == 1  # every reading, the lock's holder with them
