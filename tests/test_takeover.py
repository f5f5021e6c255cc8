""" "Not now" means nothing is out of service: what a dead run of ours left (its node lock, its
block) is carried on by the next run; a run lock keeps every acting command apart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from clihelp import LabCli, Ran, run_cli
from conftest import start_sessions, wait_for

from upgradectl.lab import place_calls
from upgradectl.lockholder import alive_elsewhere, dead_run_of_ours, this_controller
from upgradectl.runrecords import read_run

DEADLINE = 30.0


class Background:
    """An upgradectl command running in the background on a local site, killed after the test."""

    def __init__(self, site: Path, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "upgradectl", "-i", str(site / "inventory.yaml"),
             "--state-dir", str(site / "state"), *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(DEADLINE)


@pytest.fixture
def background(local_site: Path) -> Iterator[list[Background]]:
    started: list[Background] = []
    yield started
    for command in started:
        command.kill()


def run(site: Path, *args: str) -> Ran:
    return run_cli(
        "-i", str(site / "inventory.yaml"), "--state-dir", str(site / "state"), "--json", *args
    )


UPGRADE = ("upgrade", "node-a", "--version", "2.0", "--yes")


def test_a_lock_left_by_a_killed_run_of_ours_is_taken_over_and_its_block_carried_on(
    local_site: Path, background: list[Background]
) -> None:
    work = local_site / "work"
    start_sessions(local_site, {"call-1": 600})
    background.append(Background(local_site, *UPGRADE))
    wait_for((work / "blocked").exists, DEADLINE, what="the block")
    killed = json.loads((work / "lock").read_text())
    background[0].kill()  # kill -9: its lock and its block stay on the node
    (work / "sessions" / "call-1").unlink()

    ran = run(local_site, *UPGRADE)  # no --break-lock
    assert ran.code == 0, ran.stdout + ran.stderr
    assert (work / "version").read_text().strip() == "2.0"
    assert not (work / "blocked").exists() and not (work / "lock").exists()
    journal = read_run(local_site / "state" / "runs" / f"{ran.summary['run_id']}.jsonl")
    (taken,) = [r for r in journal.records if r["kind"] == "lock-taken-over"]
    assert taken["data"]["holder"]["run"] == killed["run"]
    assert "never ended (the controller died)" in taken["data"]["why"]
    assert "carrying on from run" in ran.stdout  # the block is the dead run's, so ours to lift


def test_a_lock_of_a_run_this_state_dir_does_not_know_needs_break_lock(
    local_site: Path,
) -> None:
    work = local_site / "work"
    stranger = {"run": "20200101T000000-dead", "owner": this_controller(), "pid": 2**22 + 7}
    (work / "lock").write_text(json.dumps(stranger) + "\n")
    ran = run(local_site, *UPGRADE)
    assert ran.code == 75, ran.stdout + ran.stderr
    assert not (work / "blocked").exists() and not (work / "version").exists()


def test_every_acting_command_takes_the_run_lock(
    local_site: Path, background: list[Background]
) -> None:
    work = local_site / "work"
    start_sessions(local_site, {"call-1": 600})
    background.append(Background(local_site, "drain", "node-a", "--yes"))
    wait_for((work / "blocked").exists, DEADLINE, what="the drain's block")
    running = ("resume", "--yes")  # the drain's own run, while its controller runs
    for command in (("unblock", "node-a", "--yes"), ("drain", "node-a", "--yes"), UPGRADE, running):
        ran = run(local_site, *command)
        assert ran.code == 75, ran.stdout + ran.stderr
        assert "another run holds" in ran.stderr and "drain node-a" in ran.stderr
    assert (work / "blocked").exists()  # the drain's, untouched


def test_a_live_controller_is_never_taken_for_a_dead_one(tmp_path: Path) -> None:
    # A process whose command line says upgradectl, as a running controller's does.
    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "upgradectl"],
    )
    try:
        runs = tmp_path / "runs"
        runs.mkdir()
        (runs / "r1.jsonl").write_text('{"run":"r1","kind":"run-start","time":0}\n')
        holder = {"run": "r1", "owner": this_controller(), "pid": sleeper.pid}
        # Its command line shows once its exec is done, a moment after Popen returns.
        wait_for(lambda: alive_elsewhere(holder), DEADLINE, what="the sleeper's command line")
        assert dead_run_of_ours(holder, str(tmp_path)) == ""
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not alive_elsewhere(holder)
    assert "never ended" in dead_run_of_ours(holder, str(tmp_path))
    assert dead_run_of_ours({**holder, "owner": "someone@elsewhere"}, str(tmp_path)) == ""
    assert not alive_elsewhere({**holder, "pid": os.getpid()})  # this very process: a resume


def test_after_an_unreachable_node_the_same_upgrade_carries_it_on(cli: LabCli) -> None:
    (call,) = place_calls("127.0.0.1", cli.lab.node("node-1").call_port, [60], "rerun")
    fast = cli.playbook_variant("fast", drain={"reconnect_for": "1s"})
    upgrade = ("upgrade", "node-1", "--version", "2.0", "--yes", "--playbook", fast)
    node = cli.lab.node("node-1")
    with subprocess.Popen(
        [sys.executable, "-m", "upgradectl", "-i", str(cli.lab.inventory_path),
         "--state-dir", str(cli.state_dir), *upgrade],
        env=cli.home.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as first:  # fmt: skip
        wait_for(lambda: cli.ask("state") == "blocked", DEADLINE, what="the block")
        node.ssh.kill()
        assert first.wait(DEADLINE) == 4  # unreachable: left blocked, its lock on the node
    node.ssh.start()
    call.hang_up()
    assert cli.ask("state") == "blocked"

    again = cli(*upgrade)
    assert again.code == 0, again.stdout + again.stderr  # not 75: the dead run's lock is ours
    assert cli.ask("version") == "version 2.0" and cli.ask("state") == "ready"
    assert not (node.node_dir / "upgradectl.lock").exists()
    assert "lock-taken-over" in [
        r["kind"]
        for r in read_run(cli.state_dir / "runs" / f"{again.summary['run_id']}.jsonl").records
    ]
