"""The journal on disk: whole lines, private, torn lines survived; and reading it back to resume."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from itertools import pairwise
from pathlib import Path

import pytest

from upgradectl.journal import Journal
from upgradectl.lab import wait_for
from upgradectl.runrecords import find_run, left_out_of_service, read_run


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


def kept_counts(journal: Journal, readings: list[tuple[float, int]]) -> list[tuple[float, int]]:
    """Offer ``readings`` of node-a to ``journal``; the (time, count) pairs it kept."""
    return [(at, active) for at, active in readings if journal.reading("node-a", at, active)]


def test_a_reading_is_kept_when_the_count_changes_and_once_a_minute(tmp_path: Path) -> None:
    journal = Journal(str(tmp_path), "run-1")
    # A poll every 10 s: 5 for two and a half minutes, then 4, 4, then 0.
    polls = [(1000.0 + 10 * i, 5) for i in range(16)] + [(1160.0, 4), (1170.0, 4), (1180.0, 0)]

    kept = kept_counts(journal, polls)

    assert kept == [(1000.0, 5), (1060.0, 5), (1120.0, 5), (1160.0, 4), (1180.0, 0)]
    journal.close()
    readings = read_run(journal.path).readings("node-a")
    assert [(r["time"], r["active"]) for r in readings] == kept


def test_the_first_reading_carries_the_deadline_and_the_estimate_is_kept(tmp_path: Path) -> None:
    journal = Journal(str(tmp_path), "run-1")
    journal.reading("node-a", 1000.0, 9, None, deadline=4600.0)
    journal.reading("node-a", 1010.0, 8, (31.04, 95.0), deadline=4600.0)
    journal.reading("node-b", 1010.0, 3, (None, None), deadline=4700.0)
    journal.close()
    run = read_run(journal.path)
    assert run.readings("node-a") == [
        {"time": 1000.0, "active": 9, "deadline": 4600.0},
        {"time": 1010.0, "active": 8, "eta": [31.0, 95.0]},
    ]
    assert run.readings("node-b") == [{"time": 1010.0, "active": 3, "deadline": 4700.0}]


def test_readings_reach_the_disk_with_the_next_state_change_not_one_fsync_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(str(tmp_path), "run-1")
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    for second in range(10):
        journal.reading("node-a", 1000.0 + second, 10 - second)
    # Written (a kill -9 of the controller loses none of them) but not one fsync yet.
    assert len(read_run(journal.path).readings("node-a")) == 10 and synced == []
    journal.append("drained", "node-a")
    assert len(synced) == 1
    journal.close()


def test_a_torn_reading_loses_no_other_reading_nor_state_change(tmp_path: Path) -> None:
    journal = Journal(str(tmp_path), "run-1")
    journal.append("run-start", None, command="drain")
    journal.append("blocked", "node-a")
    journal.reading("node-a", 1000.0, 3, deadline=2000.0)
    journal.reading("node-a", 1010.0, 2)
    journal.close()
    with journal.path.open("a") as stream:  # the power went mid-reading
        stream.write('{"time":1020.0,"kind":"reading","node":"node-a","da')
    resumed = Journal(str(tmp_path), "run-1")
    resumed.append("resumed", None)
    resumed.reading("node-a", 1100.0, 1, deadline=2100.0)
    resumed.close()
    run = read_run(journal.path)
    assert run.torn_lines == [5]
    assert [r["kind"] for r in run.records if r["kind"] != "reading"] == [
        "run-start",
        "blocked",
        "resumed",
    ]
    assert [r["active"] for r in run.readings("node-a")] == [3, 2, 1]


def test_a_real_drain_leaves_its_readings_in_the_journal(local_site: Path) -> None:
    now = time.time()
    for number, lasts in enumerate((1.0, 2.5)):
        (local_site / "work" / "sessions" / f"call-{number}").write_text(str(int(now + lasts)))
    state = local_site / "state"
    done = subprocess.run(
        [sys.executable, "-m", "upgradectl", "-i", str(local_site / "inventory.yaml"),
         "--state-dir", str(state), "-q", "drain", "node-a", "--yes"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (path,) = (state / "runs").glob("*.jsonl")
    run = read_run(path)
    readings = run.readings("node-a")
    counts = [r["active"] for r in readings]
    assert counts[0] >= 1 and counts[-1] == 0 and counts == sorted(counts, reverse=True)
    assert all(a != b for a, b in pairwise(counts))  # a change each
    assert readings[0]["deadline"] == pytest.approx(readings[0]["time"] + 30, abs=2)
    (drained,) = [r for r in run.records if r["kind"] == "drained"]
    assert readings[-1]["time"] <= drained["time"] + 0.001  # readings keep milliseconds


def test_an_unfinished_dry_run_is_never_the_run_resume_picks(tmp_path: Path) -> None:
    real = Journal(str(tmp_path), "20261125T010000-real")
    real.append("run-start", None, command="upgrade", dry_run=False)
    real.close()
    dry = Journal(str(tmp_path), "20261125T020000-dry")
    dry.append("run-start", None, command="upgrade", dry_run=True)
    dry.close()

    found = find_run(str(tmp_path), None)

    assert found is not None and found.run_id == "20261125T010000-real"


def test_records_appended_together_share_one_fsync_and_each_is_on_disk_when_it_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(str(tmp_path), "20261130T090000-sync")
    syncs: list[int] = []  # how many writes each fsync covered
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        # A disk slower than the writers: the first fsync waits until every writer has written.
        if not syncs:
            wait_for(lambda: journal._writes == 8, 10, interval=0.001, what="every write")
        syncs.append(journal._writes)
        real_fsync(fd)

    monkeypatch.setattr("upgradectl.journal.os.fsync", slow_fsync)
    returned: list[int] = []

    def append(number: int) -> None:
        journal.append("blocked", f"node-{number}")
        returned.append(syncs[-1])  # what was on disk when this append returned

    threads = [threading.Thread(target=append, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    journal.close()
    assert len(syncs) <= 2 and syncs[-1] == 8  # not one fsync per record
    assert all(covered == 8 for covered in returned)
    assert len(read_run(journal.path).records) == 8
