"""The journal on disk: whole lines, private, torn lines survived; and reading it back to resume."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from upgradectl.journal import Journal, find_run, left_out_of_service, read_run
from upgradectl.resume import resume_stage


def mode(path: Path) -> int:
    """The permission bits of ``path``."""
    return stat.S_IMODE(path.stat().st_mode)


def test_every_record_is_a_whole_line_on_disk_with_who_and_when(tmp_path: Path) -> None:
    journal = Journal(str(tmp_path), "20261125T020000-ab12")
    journal.append("run-start", None, command="upgrade")
    journal.append("blocked", "node-a", message="blocked at lb-1")
    # Read back before close: each append is on disk when it returns.
    lines = (tmp_path / "runs" / "20261125T020000-ab12.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["kind"] for r in records] == ["run-start", "blocked"]
    assert records[1]["node"] == "node-a" and records[1]["data"] == {"message": "blocked at lb-1"}
    assert all(r["run"] == "20261125T020000-ab12" and r["host"] and r["user"] for r in records)
    assert all(r["time"] > 0 for r in records)
    journal.close()


def test_the_journal_is_readable_only_by_its_owner(tmp_path: Path) -> None:
    Journal(str(tmp_path), "run-1").close()
    assert mode(tmp_path / "runs" / "run-1.jsonl") == 0o600
    assert mode(tmp_path / "runs") == 0o700


def test_a_journal_left_readable_by_others_is_made_private_when_reopened(tmp_path: Path) -> None:
    Journal(str(tmp_path), "run-1").close()
    path = tmp_path / "runs" / "run-1.jsonl"
    path.chmod(0o644)
    Journal(str(tmp_path), "run-1").close()
    assert mode(path) == 0o600


def test_a_torn_last_line_is_skipped_and_reported(tmp_path: Path) -> None:
    journal = Journal(str(tmp_path), "run-1")
    journal.append("run-start", None, command="drain")
    journal.append("blocked", "node-a")
    journal.close()
    path = tmp_path / "runs" / "run-1.jsonl"
    with path.open("a") as stream:
        stream.write('{"run":"run-1","kind":"drai')
    run = read_run(path)
    assert [r["kind"] for r in run.records] == ["run-start", "blocked"]
    assert run.torn_lines == [3] and run.finished is None


def test_records_appended_after_a_torn_line_are_read_back_whole(tmp_path: Path) -> None:
    Journal(str(tmp_path), "run-1").append("run-start", None, command="drain")
    path = tmp_path / "runs" / "run-1.jsonl"
    with path.open("a") as stream:
        stream.write('{"run":"run-1","kind":"drai')
    resumed = Journal(str(tmp_path), "run-1")
    assert resumed.torn_tail
    resumed.append("resumed", None)
    resumed.append("drained", "node-a")
    resumed.close()
    run = read_run(path)
    assert [r["kind"] for r in run.records] == ["run-start", "resumed", "drained"]
    assert run.torn_lines == [2]
    again = Journal(str(tmp_path), "run-1")
    assert not again.torn_tail
    again.close()


def test_a_journal_that_is_nothing_but_a_torn_line_has_no_run_to_resume(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "run-1.jsonl").write_text('{"run":"run-1","ki')
    assert read_run(tmp_path / "runs" / "run-1.jsonl").start == {}
    assert find_run(str(tmp_path), None) is None
    assert find_run(str(tmp_path), "run-1") is None


def test_the_latest_run_decides_whether_a_node_was_left_out_of_service(tmp_path: Path) -> None:
    first = Journal(str(tmp_path), "20261125T010000-aaaa")
    first.append("blocked", "node-a")
    first.append("blocked", "node-b")
    first.close()
    later = Journal(str(tmp_path), "20261125T020000-bbbb")
    later.append("unblocked", "node-a")
    later.close()
    left = left_out_of_service(str(tmp_path))
    assert list(left) == ["node-b"] and left["node-b"]["run"] == "20261125T010000-aaaa"


@pytest.mark.parametrize(
    ("kinds", "stage"),
    [
        ([], "block"),
        (["blocking", "blocked"], "block"),
        (["blocking", "blocked", "drained"], "block"),
        (["blocked", "drained", "upgrading"], "upgrade"),
        (["blocked", "drained", "upgrading", "rebooting"], "verify"),
        (["blocked", "upgrading", "upgraded"], "verify"),
        (["blocked", "upgrading", "upgraded", "interrupted", "result"], "verify"),
        (["blocked", "upgrading", "upgraded", "verified"], "unblock"),
        (["blocked", "upgraded", "verified", "unblocked", "result"], None),
        (["blocked", "unblocked", "result"], "block"),  # interrupted while waiting: drain again
    ],
)
def test_a_resumed_node_carries_on_after_its_last_state_change(
    kinds: list[str], stage: str | None
) -> None:
    assert resume_stage(kinds) == stage
