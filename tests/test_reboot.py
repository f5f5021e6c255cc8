"""The reboot wait: a rebooting upgrade is back when its boot id changes or `ready` passes.

On a ManualClock: the wait's pauses move the clock, so a 10-minute timeout costs no real time.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from fakenode import STEPS, FakeNode

from upgradectl.errors import ConnectionLost, StepFailed
from upgradectl.reboot import BOOT_ID_COMMAND, REBOOT_POLL, RebootWait
from upgradectl.testing import Reply, Rule

REBOOTING = {**STEPS, "upgrade": {"run": "upgrade", "reboot": True, "timeout": "10m"}}


def rebooting(
    tmp_path: Path, script: list[Rule], **steps: dict[str, Any]
) -> tuple[FakeNode, RebootWait]:
    """A node whose upgrade reboots it, answering ``script``."""
    node = FakeNode(tmp_path, script, steps={**REBOOTING, **steps})
    return node, RebootWait(*node.parts())


def boot_ids(*ids: str) -> Rule:
    """The boot id the node shows, in turn."""
    return (BOOT_ID_COMMAND, [Reply(f"{boot_id}\n") for boot_id in ids])


def dropped(command: str) -> Reply:
    raise ConnectionLost(f"connection to node-1 lost while running {command}")


def test_a_node_is_back_once_its_boot_id_changes(tmp_path: Path) -> None:
    node, wait = rebooting(
        tmp_path, [boot_ids("boot-1", "boot-1", "boot-1", "boot-2"), ("upgrade", dropped)]
    )

    before = wait.boot_id_before()
    back = wait.run(node.plan().steps["upgrade"], before)

    assert before == "boot-1" and back
    assert node.clock.monotonic() == 2 * REBOOT_POLL  # asked three times after the upgrade
    (event,) = [e for e in node.events if e.kind == "back"]
    assert event.message == "back from the reboot: its boot id changed to boot-2"
    assert node.recorded() == ["rebooting"]


def test_the_ready_step_tells_that_a_node_without_a_boot_id_is_back(tmp_path: Path) -> None:
    node, wait = rebooting(
        tmp_path,
        [(BOOT_ID_COMMAND, Reply(exit_code=1)), ("upgrade", Reply("ok\n")),
         ("ready", [Reply(exit_code=1), Reply("up\n")])],
        ready={"run": "ready"},
    )  # fmt: skip

    assert wait.boot_id_before() is None
    assert wait.run(node.plan().steps["upgrade"], None)
    assert [e.message for e in node.events if e.kind == "back"] == [
        "back from the reboot: the ready step passed on node-1"
    ]


def test_a_node_that_never_comes_back_fails_the_upgrade_at_its_timeout_on_the_runs_clock(
    tmp_path: Path,
) -> None:
    node, wait = rebooting(tmp_path, [boot_ids("boot-1"), ("upgrade", dropped)])
    started = time.monotonic()

    with pytest.raises(StepFailed, match="did not come back from its reboot"):
        wait.run(node.plan().steps["upgrade"], wait.boot_id_before())

    assert 600 <= node.clock.monotonic() <= 600 + REBOOT_POLL  # at the timeout, not later
    assert time.monotonic() - started < 5  # ten minutes of waiting took no real time


def test_a_stop_asked_for_during_the_reboot_ends_the_wait(tmp_path: Path) -> None:
    def boot_id(_: str) -> Reply:
        node.stop.request("SIGINT")
        return Reply("boot-1\n")

    node, wait = rebooting(tmp_path, [(BOOT_ID_COMMAND, boot_id), ("upgrade", dropped)])

    assert not wait.run(node.plan().steps["upgrade"], "boot-1")
    assert node.clock.monotonic() == 0


def test_a_node_with_neither_a_boot_id_nor_a_ready_step_is_never_upgraded(tmp_path: Path) -> None:
    node, wait = rebooting(tmp_path, [(BOOT_ID_COMMAND, Reply(exit_code=1))])

    with pytest.raises(StepFailed, match="no boot id and the playbook has no `ready` step"):
        wait.boot_id_before()

    assert node.transport.ran("^upgrade") == []
