"""Which node starts when: the fleet's rules, run by `roll` with fake nodes that end at once."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import pytest

from upgradectl.errors import ExitCode, UsageError
from upgradectl.model import Group, Inventory, Node
from upgradectl.rollout import Fleet, Hold, fewest_active_first, parse_limit, roll

PAIRS = {"a": "b", "b": "a", "c": "d", "d": "c"}


def inventory(limit: str = "1", nodes: str = "abcd", pairs: Mapping[str, str] = PAIRS) -> Inventory:
    """Nodes in group `voice` (max_unavailable `limit`), paired a-b and c-d; `z` is outside it."""
    members = {name: Node(name, groups=("voice",), pair=pairs.get(name)) for name in nodes}
    return Inventory(
        path="inventory.yaml",
        nodes={**members, "z": Node("z", groups=("voice",))},
        groups={"voice": Group("voice", max_unavailable=limit)},
    )


@dataclass
class WatchedFleet(Fleet):
    """A fleet that notes, at every start, which nodes are out of service or running."""

    starts: list[str] = field(default_factory=list)
    out_at_start: list[frozenset[str]] = field(default_factory=list)

    def start(self, node: str) -> None:
        super().start(node)
        self.starts.append(node)
        self.out_at_start.append(frozenset(self.running | self.out_of_service))


def fleet(
    limit: str = "1",
    *,
    selected: Sequence[str] = "abcd",
    out: Sequence[str] = (),
    override: str | None = None,
    max_failures: int | None = None,
) -> WatchedFleet:
    """A fleet of `selected` in group voice, `out` already out of service."""
    nodes = inventory(limit)
    return WatchedFleet(
        nodes,
        list(selected),
        pairs={name: nodes.nodes[name].pair for name in selected},
        override=override,
        max_failures=max_failures,
        out_of_service=set(out),
    )


@dataclass(frozen=True)
class Ended:
    """A fake node's outcome."""

    node: str
    exit_code: ExitCode = ExitCode.OK
    in_service: bool = True
    reason: str = ""


def run(
    rolling: Fleet,
    order: Sequence[str] = "abcd",
    ends: Mapping[str, Ended] | None = None,
    stopping: Callable[[], bool] = lambda: False,
) -> dict[str, Ended]:
    """Roll with nodes that end at once (as `ends` says, else fine); outcomes by node.

    Runs in a thread with a deadline, so that a rollout that never ends fails instead of hanging.
    """
    outcomes: list[Ended] = []

    def run_node(node: str) -> Ended:
        return (ends or {}).get(node, Ended(node))

    def skip(node: str, reason: str) -> Ended:
        return Ended(node, ExitCode.NOT_NOW, reason=reason)

    rolling_thread = threading.Thread(
        target=lambda: outcomes.extend(roll(rolling, order, run_node, skip, stopping)),
        daemon=True,
    )
    rolling_thread.start()
    rolling_thread.join(timeout=10)
    assert not rolling_thread.is_alive(), "the rollout never ended"
    assert sorted(outcome.node for outcome in outcomes) == sorted(order)  # each exactly once
    return {outcome.node: outcome for outcome in outcomes}


def skipped(outcomes: Mapping[str, Ended]) -> dict[str, str]:
    """The nodes that never started, and why."""
    return {node: end.reason for node, end in outcomes.items() if end.reason}


# --- limits ----------------------------------------------------------------------------------


def test_a_limit_is_a_number_or_a_percentage_of_the_nodes_and_at_least_one() -> None:
    assert parse_limit("2", 10) == 2
    assert parse_limit("25%", 8) == 2
    assert parse_limit("10%", 4) == 1  # 0.4 of a node: still one at a time
    assert parse_limit(" 50% ", 5) == 2


@pytest.mark.parametrize("text", ["0", "-1", "1.5", "two", "%", "5 %"])
def test_a_limit_that_allows_no_node_or_is_not_a_number_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="--max-unavailable"):
        parse_limit(text, 4)


def test_a_bad_group_limit_is_a_usage_error_before_any_node_starts() -> None:
    with pytest.raises(UsageError, match=r"groups\.voice\.max_unavailable: must be at least 1"):
        fleet("0")


def test_each_limit_is_one_scope_shared_by_its_nodes_not_a_copy_for_each_node() -> None:
    # A copy per node, each with its own set of members, was O(nodes^2): 41 MB for 1,000 nodes.
    ungrouped = Inventory(path="inventory.yaml", nodes={n: Node(n) for n in "ab"}, groups={})
    for rolling in (
        fleet("2"),
        fleet(override="2"),
        Fleet(ungrouped, ["a", "b"], pairs={"a": None, "b": None}),
    ):
        assert len({id(scope) for scopes in rolling.scopes.values() for scope in scopes}) == 1


def test_with_a_group_limit_of_one_nodes_go_one_at_a_time_in_order() -> None:
    rolling = fleet("1")
    outcomes = run(rolling, order="cadb")
    assert rolling.starts == list("cadb")
    assert all(len(out) == 1 for out in rolling.out_at_start)
    assert skipped(outcomes) == {}


def test_a_percentage_limit_runs_that_share_of_the_group_at_once_never_both_of_a_pair() -> None:
    rolling = fleet("50%")  # 5 members with z: 2 at once
    run(rolling)
    assert rolling.out_at_start[:2] == [{"a"}, {"a", "c"}]  # b waits for its pair
    assert max(len(out) for out in rolling.out_at_start) == 2
    for pair in ({"a", "b"}, {"c", "d"}):
        assert not any(pair <= out for out in rolling.out_at_start)


def test_max_unavailable_on_the_command_line_overrides_the_group() -> None:
    rolling = fleet("1", override="2")
    run(rolling)
    assert max(len(out) for out in rolling.out_at_start) == 2


def test_nodes_out_of_service_outside_the_run_count_against_the_limit() -> None:
    rolling = fleet("2", out="z")  # z is in the group, blocked by someone else
    run(rolling)
    assert all(len(out) <= 2 for out in rolling.out_at_start)
    assert rolling.out_at_start[0] == {"a", "z"}


def test_when_nothing_can_ever_start_everything_is_skipped_at_once() -> None:
    # The limit is used up by z, outside the run: waiting would wait forever.
    outcomes = run(fleet("1", out="z"))
    assert set(skipped(outcomes)) == set("abcd")
    assert "group voice has 1 of at most 1 nodes out of service (z)" in outcomes["a"].reason


# --- pairs -----------------------------------------------------------------------------------


def test_a_node_waits_while_its_pair_runs() -> None:
    rolling = fleet("1", override="4")
    rolling.start("a")
    assert rolling.why_not("b") == Hold("waiting for its pair a", final=False)
    assert rolling.why_not("c") is None


def test_a_node_whose_pair_is_out_of_service_is_skipped_and_the_others_go_on() -> None:
    rolling = fleet("2", selected="abc", out="d")  # d: blocked, not in this run
    outcomes = run(rolling, order="abc")
    assert skipped(outcomes) == {"c": "not started: its pair d is not in service"}
    assert set(rolling.starts) == {"a", "b"}


def test_a_node_left_out_of_service_by_the_run_keeps_its_pair_from_starting() -> None:
    broken = Ended("a", ExitCode.ATTENTION, in_service=False)
    outcomes = run(fleet("2"), ends={"a": broken})
    assert skipped(outcomes) == {"b": "not started: its pair a is not in service"}
    assert outcomes["d"].exit_code is ExitCode.OK  # the other pair carries on: no --max-failures


def test_a_node_waits_for_its_pair_of_this_run_to_come_back_into_service() -> None:
    # b was drained by an earlier run (out of service) and is upgraded in this one: a goes after it.
    rolling = fleet("1", out="b")
    outcomes = run(rolling, order="abcd")
    assert rolling.starts[:2] == ["b", "a"]
    assert skipped(outcomes) == {}


def test_both_nodes_of_a_pair_out_of_service_are_both_skipped() -> None:
    outcomes = run(fleet("2", selected="ab", out="ab"), order="ab")
    assert skipped(outcomes) == {
        "a": "not started: its pair b is not in service",
        "b": "not started: its pair a is not in service",
    }


# --- nodes already out of service, and rollouts that must end ---------------------------------------------------


def test_nodes_already_out_of_service_start_despite_the_limit_and_the_rest_wait_for_them() -> None:
    # a and c were drained earlier (two at once is already past the limit of 1): upgrading them
    # takes nothing more out of service; b and d wait for their pairs to come back.
    rolling = fleet("1", out="ac")
    outcomes = run(rolling, order="bdac")
    assert rolling.starts[:2] == ["a", "c"]
    assert set(rolling.starts[2:]) == {"b", "d"}
    assert skipped(outcomes) == {}


def test_a_node_waits_while_the_limit_is_held_by_a_node_this_run_will_bring_back() -> None:
    rolling = fleet("1", selected="ac", out="c")  # c: drained earlier, upgraded now
    outcomes = run(rolling, order="ac")
    assert rolling.starts == ["c", "a"]
    assert skipped(outcomes) == {}


def test_a_node_waiting_on_a_node_skipped_later_in_the_same_pass_is_decided_next_pass() -> None:
    # a (in service) waits for c, out of service and still to run; c is skipped (its pair d is
    # out and outside the run): a must then be skipped too, not wait forever.
    outcomes = run(fleet("1", selected="ac", out="cd"), order="ac")
    assert outcomes["c"].reason == "not started: its pair d is not in service"
    assert outcomes["a"].reason.startswith("not started: group voice has 2 of at most 1")


# --- failures, stops, order -------------------------------------------------------------------


def test_after_max_failures_no_new_node_starts_and_running_ones_finish() -> None:
    rolling = fleet("2", max_failures=1)
    outcomes = run(rolling, ends={"a": Ended("a", ExitCode.STEP_FAILED)})
    assert rolling.starts == ["a", "c"]  # started together, before a failed
    assert outcomes["c"].exit_code is ExitCode.OK
    assert skipped(outcomes) == {
        "b": "not started: 1 failures reached --max-failures 1",
        "d": "not started: 1 failures reached --max-failures 1",
    }


def test_a_gave_up_drain_is_not_a_failure() -> None:
    rolling = fleet("1", max_failures=1)
    outcomes = run(rolling, ends={"a": Ended("a", ExitCode.GAVE_UP)})
    assert skipped(outcomes) == {}


def test_a_stop_skips_every_node_not_started_yet() -> None:
    rolling = fleet("1")
    outcomes = run(rolling, stopping=lambda: len(rolling.starts) >= 1)
    assert rolling.starts == ["a"]
    assert set(skipped(outcomes)) == set("bcd")
    assert outcomes["b"].reason == "not started: the run was stopped"


def test_fewest_active_first_puts_unknown_counts_last_and_keeps_ties_in_order() -> None:
    active = {"a": 3, "b": None, "c": 0, "d": 3, "e": 1}
    assert fewest_active_first(active) == ["c", "e", "a", "d", "b"]


# --- nodes not probed yet ------------------------------------------------------------------------


def test_a_node_waits_for_the_probe_of_its_pair_and_starts_once_it_is_in() -> None:
    rollout = fleet("100%", selected="ab")
    rollout.unknown = {"b"}
    assert rollout.why_not("a") == Hold("waiting for the probe of its pair b", final=False)
    rollout.known("b", in_service=True)
    assert rollout.why_not("a") is None


def test_a_pair_probed_out_of_service_keeps_its_node_from_starting() -> None:
    rollout = fleet("100%", selected="ab")
    rollout.unknown = {"b"}
    rollout.known("b", in_service=False)
    assert rollout.why_not("a") == Hold("not started: its pair b is not in service", final=True)


def test_members_not_probed_yet_count_as_out_of_service_for_the_limit() -> None:
    rollout = fleet("2", selected="ac")  # a and c are not paired together; z is a group mate
    rollout.unknown = {"c", "z"}
    hold = rollout.why_not("a")
    assert hold == Hold(
        "not started: group voice has 2 of at most 2 nodes out of service or not probed yet (c, z)",
        final=False,
    )
    rollout.known("z", in_service=True)
    assert rollout.why_not("a") is None


def test_a_halted_rollout_starts_no_node_more() -> None:
    rollout = fleet("100%")
    rollout.halted = "d runs 3.0, newer than 2.0"
    assert rollout.why_not("a") == Hold("not started: d runs 3.0, newer than 2.0", final=True)
