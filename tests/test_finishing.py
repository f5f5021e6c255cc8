"""A node's last round trip: verify, unblock and the lock's release go together only where each
one's success is its exit code alone and all run on the node itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fakenode import STEPS, FakeNode

from upgradectl.finishing import finished_together


def chain(tmp_path: Path, **changed: dict[str, Any]) -> list[str]:
    """The steps that go in the last round trip of an upgrade with these steps changed."""
    steps = {**STEPS, **changed}
    return [
        command.step for command in finished_together(FakeNode(tmp_path, [], steps=steps).plan())
    ]


def test_verify_and_unblock_that_answer_by_exit_code_go_together(tmp_path: Path) -> None:
    assert chain(tmp_path) == ["verify", "unblock"]


@pytest.mark.parametrize(
    "verify",
    [
        {"run": "verify", "parse": "^ok$"},
        {"run": "verify", "fail_if": "degraded"},
        {"run": "verify", "retries": 3, "delay": "1s"},
    ],
    ids=["parse", "fail_if", "retries"],
)
def test_a_verify_judged_by_more_than_its_exit_code_goes_alone(
    tmp_path: Path, verify: dict[str, Any]
) -> None:
    assert chain(tmp_path, verify=verify) == []
