"""upgradectl.testing: the scripted node and the manual clock that users' own tests build on."""

from __future__ import annotations

import re

import pytest

from upgradectl.nodelock import NodeLock
from upgradectl.testing import ManualClock, Reply, ScriptedTransport, UnscriptedCommand


def test_a_rule_answers_the_commands_it_is_found_in_with_its_reply() -> None:
    node = ScriptedTransport(
        "n1", [(r"fsctl pause", Reply("+OK\n", "", 0)), (r"^false$", Reply(exit_code=1))]
    )

    paused = node.run("fs_cli -x 'fsctl pause inbound'", timeout=5)
    failed = node.run("false", timeout=5)

    assert (paused.stdout, paused.exit_code, paused.command) == (
        "+OK\n",
        0,
        "fs_cli -x 'fsctl pause inbound'",
    )
    assert (failed.stdout, failed.exit_code) == ("", 1)


def test_the_first_matching_rule_wins() -> None:
    node = ScriptedTransport(
        "n1", [(r"count", Reply("first")), (r"show calls count", Reply("second"))]
    )

    assert node.run("show calls count", timeout=5).stdout == "first"


def test_a_list_of_replies_is_given_in_turn_and_the_last_one_repeats() -> None:
    node = ScriptedTransport("n1", [("count", [Reply("3"), Reply("2"), Reply("0")])])

    assert [node.run("count", timeout=5).stdout for _ in range(5)] == ["3", "2", "0", "0", "0"]


def test_a_function_answers_from_the_command_text() -> None:
    def echo(command: str) -> Reply:
        return Reply(command.removeprefix("echo "))

    node = ScriptedTransport("n1", [("^echo ", echo)])
    whole = ScriptedTransport("n2", lambda command: Reply(stderr=f"saw {command}", exit_code=2))

    assert node.run("echo hello", timeout=5).stdout == "hello"
    assert (whole.run("anything", timeout=5).stderr, whole.run("x", timeout=5).exit_code) == (
        "saw anything",
        2,
    )


def test_a_command_no_rule_answers_fails_the_test_and_names_the_command() -> None:
    node = ScriptedTransport("n1", [("^status$", Reply("ok"))])

    with pytest.raises(
        UnscriptedCommand, match=re.escape("n1: no scripted answer for: rm -rf /srv")
    ):
        node.run("rm -rf /srv", timeout=5)


def test_every_command_is_recorded_in_order() -> None:
    node = ScriptedTransport("n1", lambda command: Reply())
    for command in ("block", "count", "count", "unblock"):
        node.run(command, timeout=5)

    assert node.commands == ["block", "count", "count", "unblock"]
    assert node.ran("^count$") == ["count", "count"]
    assert node.connections_opened == 1


def test_reconnects_and_close_are_counted_like_a_real_connection() -> None:
    node = ScriptedTransport("n1", [])
    node.reconnect(deadline=0.0)
    node.close()

    assert node.connections_opened == 1 and node.closed


def lock_on(node: ScriptedTransport, path: str) -> NodeLock:
    """The real node lock at ``path``, its commands run on ``node``."""
    return NodeLock(
        node.name, path, lambda cmd, timeout: node.run(cmd, timeout).stdout, "run-1", "drain"
    )


def never_broken(holder: object) -> None:
    pytest.fail(f"the lock of {holder} was broken")


def test_the_node_lock_is_taken_and_released_without_scripting_it() -> None:
    node = ScriptedTransport("n1", [])  # nothing scripted: only the lock's own commands can run
    lock = lock_on(node, "/var/tmp/upgradectl-n1.lock")

    lock.acquire(break_lock=False, on_break=never_broken)
    lock.release()

    assert lock.holder() is None
    assert len(node.commands) == 3
    assert all("/var/tmp/upgradectl-n1.lock" in command for command in node.commands)


def test_a_node_lock_elsewhere_is_answered_when_its_path_is_given() -> None:
    node = ScriptedTransport("n1", [], lock_path="/srv/locks/n1.lock")

    lock_on(node, "/srv/locks/n1.lock").acquire(break_lock=False, on_break=never_broken)

    with pytest.raises(UnscriptedCommand):  # the default path is no lock of this node's
        lock_on(node, "/var/tmp/upgradectl-n1.lock").holder()


def test_an_empty_list_of_replies_is_a_mistake_in_the_script() -> None:
    with pytest.raises(ValueError, match="the rule for 'count' has an empty list of replies"):
        ScriptedTransport("n1", [("count", [])])


def test_the_manual_clock_moves_only_when_advanced_or_waited_on() -> None:
    clock = ManualClock(wall=1000.0)
    stop = clock.stop()

    assert (clock.monotonic(), clock.wall()) == (0.0, 1000.0)
    assert stop.wait(15.0) is False
    clock.advance(5.0)
    clock.advance(-3.0)  # time does not go back
    assert (clock.monotonic(), clock.wall()) == (20.0, 1020.0)


def test_a_wait_after_a_stop_request_returns_at_once_without_moving_the_clock() -> None:
    clock = ManualClock()
    stop = clock.stop()
    stop.request("SIGTERM")

    assert stop.wait(3600.0) is True
    assert clock.monotonic() == 0.0 and stop.reason == "SIGTERM"
