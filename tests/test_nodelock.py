"""The node lock, taken and contested over real SSH connections to a lab node."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from threading import Barrier
from typing import Any

import pytest
from conftest import LabFactory

from upgradectl.errors import ExitCode, LockHeld
from upgradectl.lab import Lab
from upgradectl.nodelock import NodeLock
from upgradectl.transport.ssh import SshTransport
from upgradectl.transport.sshconfig import Endpoint

Shell = Callable[[str, float], str]


@pytest.fixture
def lab(lab_factory: LabFactory) -> Lab:
    """One lab node."""
    return lab_factory(1)


@pytest.fixture
def connect(lab: Lab) -> Iterator[Callable[[], Shell]]:
    """``connect()``: a shell on node-1 over a connection of its own, as a controller has."""
    opened: list[SshTransport] = []
    node = lab.node("node-1")
    endpoint = Endpoint(
        alias="node-1", hostname=node.ssh.host, port=node.ssh.port, user=lab.user,
        identity_files=(str(lab.identity_file),), known_hosts=(str(lab.known_hosts_path),),
        proxy_jump=(),
    )  # fmt: skip

    def shell() -> Shell:
        opened.append(SshTransport(endpoint))
        transport = opened[-1]
        return lambda command, timeout: transport.run(command, timeout).stdout

    yield shell
    for transport in opened:
        transport.close()


@pytest.fixture
def path(lab: Lab) -> Path:
    """Where the lock lives on the node (a directory the lock creates)."""
    return lab.node("node-1").node_dir / "locks" / "upgradectl.lock"


def lock(shell: Shell, path: Path, run: str) -> NodeLock:
    """Run ``run``'s lock on node-1."""
    return NodeLock("node-1", str(path), shell, run, "upgrade")


def never_broken(holder: dict[str, Any]) -> None:
    raise AssertionError(f"the lock of {holder} was broken without --break-lock")


def test_a_lock_records_who_holds_it_and_is_removed_on_release(
    connect: Callable[[], Shell], path: Path
) -> None:
    mine = lock(connect(), path, "run-a")
    mine.acquire(break_lock=False, on_break=never_broken)
    holder = json.loads(path.read_text())
    assert holder["run"] == "run-a" and holder["command"] == "upgrade"
    assert "@" in holder["owner"] and holder["pid"] and holder["started"]
    assert mine.holder() == holder
    mine.release()
    assert not path.exists() and mine.holder() is None


def test_a_second_run_is_turned_away_naming_the_holder(
    connect: Callable[[], Shell], path: Path
) -> None:
    lock(connect(), path, "run-a").acquire(break_lock=False, on_break=never_broken)
    with pytest.raises(LockHeld) as refused:
        lock(connect(), path, "run-b").acquire(break_lock=False, on_break=never_broken)
    assert refused.value.exit_code == ExitCode.NOT_NOW
    assert "run run-a (upgrade) by " in str(refused.value) and "--break-lock" in str(refused.value)
    assert json.loads(path.read_text())["run"] == "run-a"


def test_the_same_run_takes_its_own_lock_back_when_it_resumes(
    connect: Callable[[], Shell], path: Path
) -> None:
    lock(connect(), path, "run-a").acquire(break_lock=False, on_break=never_broken)
    resumed = lock(connect(), path, "run-a")
    resumed.acquire(break_lock=False, on_break=never_broken)
    resumed.release()
    assert not path.exists()


def test_a_lock_left_by_a_dead_controller_is_released_only_if_the_node_says_it_was_there(
    connect: Callable[[], Shell], path: Path
) -> None:
    lock(connect(), path, "run-a").acquire(break_lock=False, on_break=never_broken)
    assert not lock(connect(), path, "run-b").release_left()  # not its lock: kept
    assert path.exists()
    assert lock(connect(), path, "run-a").release_left()
    assert not path.exists()
    assert not lock(connect(), path, "run-a").release_left()  # none left to release


def test_break_lock_takes_over_reports_the_old_holder_and_the_old_run_cannot_release_it(
    connect: Callable[[], Shell], path: Path
) -> None:
    stale = lock(connect(), path, "run-a")
    stale.acquire(break_lock=False, on_break=never_broken)
    broken: list[dict[str, Any]] = []
    taker = lock(connect(), path, "run-b")
    taker.acquire(break_lock=True, on_break=broken.append)
    assert [holder["run"] for holder in broken] == ["run-a"]
    stale.release()  # the old run, come back to life, must not remove the new run's lock
    assert json.loads(path.read_text())["run"] == "run-b"
    taker.release()
    assert not path.exists()


def test_of_many_runs_racing_for_a_free_lock_exactly_one_wins(
    connect: Callable[[], Shell], path: Path
) -> None:
    racers = 6
    shells = [connect() for _ in range(racers)]
    for shell in shells:
        shell("true", 10)  # connected before the race, so that they start together
    start = Barrier(racers)

    def race(number: int) -> str:
        start.wait()
        try:
            lock(shells[number], path, f"run-{number}").acquire(
                break_lock=False, on_break=never_broken
            )
        except LockHeld:
            return "refused"
        return f"run-{number}"

    with ThreadPoolExecutor(racers) as pool:
        outcomes = list(pool.map(race, range(racers)))
    winners = [outcome for outcome in outcomes if outcome != "refused"]
    assert len(winners) == 1
    assert json.loads(path.read_text())["run"] == winners[0]


@pytest.fixture
def planted(path: Path) -> Path:
    """A symbolic link at the lock path, planted by another user in a directory anyone may write
    to, pointing at a file the SSH user can read and write; returns that target."""
    path.parent.mkdir(parents=True)
    path.parent.chmod(0o777)
    target = path.parent.parent / "secret.txt"
    target.write_text("root:$6$secret-hash:19000:0:99999:7:::\n")
    target.chmod(0o666)
    path.symlink_to(target)
    return target


def test_a_symlink_at_the_lock_path_is_reported_and_never_read_or_written(
    connect: Callable[[], Shell], path: Path, planted: Path
) -> None:
    before = planted.read_text()
    with pytest.raises(LockHeld) as refused:
        lock(connect(), path, "run-a").acquire(break_lock=False, on_break=never_broken)
    assert "a symbolic link (never followed" in str(refused.value)
    assert "secret" not in str(refused.value)
    assert lock(connect(), path, "run-b").holder() == {
        "raw": "a symbolic link (never followed: remove it, or use --break-lock)"
    }
    assert planted.read_text() == before and path.is_symlink()


def test_break_lock_replaces_a_symlink_at_the_lock_path_without_writing_through_it(
    connect: Callable[[], Shell], path: Path, planted: Path
) -> None:
    before = planted.read_text()
    broken: list[dict[str, Any]] = []
    taker = lock(connect(), path, "run-b")
    taker.acquire(break_lock=True, on_break=broken.append)
    assert planted.read_text() == before
    assert not path.is_symlink() and json.loads(path.read_text())["run"] == "run-b"
    assert "secret" not in str(broken)
    taker.release()
    assert not path.exists() and planted.read_text() == before


def test_break_lock_never_writes_into_a_directory_a_symlink_at_the_lock_path_points_to(
    connect: Callable[[], Shell], path: Path, planted: Path
) -> None:
    folder = planted.parent / "elsewhere"
    folder.mkdir()
    folder.chmod(0o777)
    path.unlink()
    path.symlink_to(folder)
    lock(connect(), path, "run-b").acquire(break_lock=True, on_break=lambda holder: None)
    assert list(folder.iterdir()) == []
    assert json.loads(path.read_text())["run"] == "run-b"
