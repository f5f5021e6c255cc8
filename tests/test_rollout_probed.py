"""No wait for the whole fleet's probe: each node starts once its own probe (and its pair's) is
in and the fleet's rules allow; the fewest active sessions still go first among those probed."""

from __future__ import annotations

import threading
from pathlib import Path

from fakefleet import FakeFleet

from upgradectl.errors import ExitCode
from upgradectl.testing import Reply, Rule


def test_the_first_nodes_upgrade_while_the_last_is_still_being_probed(tmp_path: Path) -> None:
    first_done = threading.Event()
    seen: list[bool] = []

    blocked = [False]  # node-1's block, as its is_blocked reads it back

    def block(command: str) -> Reply:
        blocked[0] = True
        return Reply()

    def unblock(command: str) -> Reply:
        blocked[0] = False
        first_done.set()
        return Reply()

    def is_blocked(command: str) -> Reply:
        return Reply("blocked\n" if blocked[0] else "")

    def slow_version(command: str) -> Reply:
        # Answers once a node is back in service upgraded; behind a barrier that never happens.
        seen.append(first_done.wait(10))
        return Reply("1.0\n")

    fleet = FakeFleet(
        tmp_path,
        size=4,
        scripts={
            "node-1": [("^block$", block), ("^unblock$", unblock), ("^is_blocked$", is_blocked)],
            "node-4": [("^version$", slow_version)],
        },
    )
    results = fleet.run()
    assert seen == [True]
    assert {r.result for r in results.values()} == {"upgraded"}
    assert fleet.transports["node-1"].ran("^unblock$") == ["unblock"]


def test_the_fewest_active_go_first_among_the_nodes_probed(tmp_path: Path) -> None:
    def counts(at_probe: int) -> list[Rule]:
        return [("^count$", [Reply(f"{at_probe} active\n"), Reply("0 active\n")])]

    fleet = FakeFleet(
        tmp_path,
        size=3,
        max_unavailable="1",  # one at a time: every probe is in before the first start
        scripts={"node-1": counts(5), "node-2": counts(2), "node-3": counts(0)},
    )
    results = fleet.run()
    assert {r.result for r in results.values()} == {"upgraded"}
    started = [e.node for e in fleet.events if e.kind == "node-start"]
    assert started == ["node-3", "node-2", "node-1"]
    (order,) = [e for e in fleet.events if e.kind == "order"]
    assert order.data["order"] == started


def test_a_downgrade_nobody_allowed_leaves_its_node_alone_and_halts_the_rollout(
    tmp_path: Path,
) -> None:
    fleet = FakeFleet(
        tmp_path,
        size=3,
        max_unavailable="1",
        scripts={"node-2": [("^version$", Reply("3.0\n"))]},
    )
    results = fleet.run()
    assert (results["node-2"].result, results["node-2"].exit_code) == ("skipped", ExitCode.USAGE)
    assert "node-2 runs 3.0, newer than 2.0: a downgrade needs --allow-downgrade" in (
        results["node-2"].message
    )
    for name in ("node-1", "node-3"):
        assert results[name].result == "skipped"
        assert results[name].message == "not started: node-2 runs 3.0, newer than 2.0"
    for transport in fleet.transports.values():
        assert transport.ran("^block$") == []
