"""Resume stages: where each unfinished node of an interrupted run carries on, from its journal."""

from __future__ import annotations

from pathlib import Path

import pytest

from upgradectl.journal import Journal
from upgradectl.resume import resume_points, resume_stage
from upgradectl.runrecords import read_run


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
        (["blocked", "upgrading", "upgraded", "verified", "unblocking"], "unblock"),
        # `unblocking` written before a verify sent with the unblock: verify again first
        (["blocked", "upgrading", "upgraded", "unblocking"], "verify"),
        (["blocked", "upgraded", "verified", "unblocked", "result"], None),
        (["blocked", "unblocked", "result"], "block"),  # interrupted while waiting: drain again
    ],
)
def test_a_resumed_node_carries_on_after_its_last_state_change(
    kinds: list[str], stage: str | None
) -> None:
    assert resume_stage(kinds) == stage


def test_only_nodes_that_were_stopped_or_lost_carry_on_and_each_from_its_own_stage(
    tmp_path: Path,
) -> None:
    journal = Journal(str(tmp_path), "run-1")
    for node, kinds, result in [
        ("stopped", ["blocked", "upgrading", "upgraded"], "interrupted"),
        ("lost", ["blocked", "drained", "upgrading"], "unreachable"),
        ("failed", ["blocked", "unblocked"], "failed"),
        ("done", ["blocked", "upgraded", "verified", "unblocked"], "interrupted"),
        ("killed", ["blocking"], None),  # the controller died: no result at all
    ]:
        for kind in kinds:
            journal.append(kind, node)
        if result is not None:
            journal.append("result", node, result=result)
    journal.close()

    points = resume_points(read_run(journal.path), ["stopped", "lost", "failed", "done", "killed"])

    assert points == {"stopped": "verify", "lost": "upgrade", "killed": "block"}
