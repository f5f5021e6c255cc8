"""The controller-side run lock, held and contested by real processes."""

from __future__ import annotations

import json
import os
import pwd
import select
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from upgradectl.errors import ExitCode, exit_code_for
from upgradectl.runlock import RunLock, RunLockHeld

# A run in another process: takes the lock, says so, and holds it until its stdin closes.
HOLDER_SCRIPT = """
import sys
from upgradectl.runlock import RunLock
lock = RunLock(sys.argv[1])
lock.acquire(sys.argv[2], sys.argv)
print("held", flush=True)
sys.stdin.read()
"""
STARTUP_DEADLINE = 15.0


@contextmanager
def holder_process(path: Path, run_id: str) -> Iterator[subprocess.Popen[str]]:
    """A child process holding the lock at ``path`` for the duration of the block."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER_SCRIPT, str(path), run_id],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    try:
        ready, _, _ = select.select([child.stdout], [], [], STARTUP_DEADLINE)
        assert ready, "the holder process did not take the lock in time"
        assert child.stdout.readline() == "held\n"
        yield child
    finally:
        child.kill()
        child.wait()
        child.stdin.close()
        child.stdout.close()


def end_normally(child: subprocess.Popen[str]) -> None:
    """Let a holder process finish its run and exit by itself."""
    assert child.stdin is not None
    child.stdin.close()
    assert child.wait(timeout=STARTUP_DEADLINE) == 0


def test_a_second_run_is_turned_away_naming_the_first(tmp_path: Path) -> None:
    path = tmp_path / "run.lock"
    with holder_process(path, "run-first") as first, pytest.raises(RunLockHeld) as caught:
        RunLock(path).acquire("run-second", ["upgradectl", "upgrade"])
    holder = caught.value.holder
    assert holder["pid"] == first.pid
    assert holder["run_id"] == "run-first"
    assert holder["argv"] == ["-c", str(path), "run-first"]
    assert holder["host"] == socket.gethostname()
    assert f"pid {first.pid}" in str(caught.value)
    assert "run run-first" in str(caught.value)
    assert exit_code_for(caught.value) == ExitCode.NOT_NOW


def test_the_lock_is_free_again_once_its_holder_ends(tmp_path: Path) -> None:
    path = tmp_path / "run.lock"
    with holder_process(path, "run-first") as first:
        end_normally(first)
        with RunLock(path) as lock:
            lock.acquire("run-second", ["upgradectl"])
            assert json.loads(path.read_text())["run_id"] == "run-second"


def test_a_killed_holder_frees_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "run.lock"
    with holder_process(path, "run-killed") as first:
        first.kill()
        first.wait()
        with RunLock(path) as lock:
            lock.acquire("run-after", ["upgradectl"])
            assert json.loads(path.read_text())["pid"] == os.getpid()


def test_the_lock_file_is_private_and_records_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "state" / "run.lock"
    path.parent.mkdir()
    path.write_text("")
    path.chmod(0o644)
    with RunLock(path, clock=lambda: 1_700_000_000.5) as lock:
        lock.acquire("run-1", ["upgradectl", "upgrade", "--group", "voice"])
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert json.loads(path.read_text()) == {
            "pid": os.getpid(),
            "user": pwd.getpwuid(os.getuid()).pw_name,
            "host": socket.gethostname(),
            "run_id": "run-1",
            "started": 1_700_000_000.5,
            "argv": ["upgradectl", "upgrade", "--group", "voice"],
        }


def test_leaving_the_block_releases_the_lock_and_clears_the_record(tmp_path: Path) -> None:
    path = tmp_path / "run.lock"
    with RunLock(path) as first:
        first.acquire("run-1", ["upgradectl"])
        with pytest.raises(RunLockHeld):
            RunLock(path).acquire("run-2", ["upgradectl"])
    assert path.read_text() == ""
    with RunLock(path) as second:
        second.acquire("run-2", ["upgradectl"])


def test_a_holder_that_has_not_recorded_itself_is_reported_as_such(tmp_path: Path) -> None:
    path = tmp_path / "run.lock"
    with RunLock(path) as first:
        first.acquire("run-1", ["upgradectl"])
        path.write_text("")  # as in the instant between taking the lock and writing to it
        with pytest.raises(RunLockHeld) as caught:
            RunLock(path).acquire("run-2", ["upgradectl"])
    assert caught.value.holder == {}
    assert "has not recorded itself yet" in str(caught.value)


def test_acquiring_twice_in_one_run_is_a_programming_error(tmp_path: Path) -> None:
    with RunLock(tmp_path / "run.lock") as lock:
        lock.acquire("run-1", ["upgradectl"])
        with pytest.raises(RuntimeError, match="already held"):
            lock.acquire("run-1", ["upgradectl"])
