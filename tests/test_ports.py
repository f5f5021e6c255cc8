"""Lab ports: one lab's choice is not another's, though neither has bound its ports yet."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from upgradectl.lab import ports
from upgradectl.lab.ports import free_ports, free_range

# Another lab starting at the same moment, in its own process: its random picks are first the
# ports given on its command line, then random ones.
OTHER_LAB = """
import random, sys
from upgradectl.lab.ports import free_ports, free_range
first = [int(port) for port in sys.argv[1:]]
pick = random.randint
random.randint = lambda low, high: first.pop() if first else pick(low, high)
print(*free_ports(len(sys.argv) - 1))
"""


def test_ports_one_lab_chose_are_not_chosen_by_another_before_they_are_bound() -> None:
    chosen = free_ports(3)  # found free and claimed, not bound: as a lab starting its servers
    other = subprocess.run(
        [sys.executable, "-c", OTHER_LAB, *map(str, chosen)],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    theirs = {int(port) for port in other.stdout.split()}
    assert len(theirs) == 3
    assert not theirs & set(chosen)


def test_a_claim_planted_as_a_symbolic_link_is_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    claims = tmp_path / "claims"
    claims.mkdir()
    monkeypatch.setattr(ports, "_CLAIMS", claims)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    os.utime(victim, (0, 0))  # old enough to be taken for a stale claim, were it followed
    (planted,) = free_ports(1)  # a port free now; its claim is then replaced by a link
    (claims / str(planted)).unlink()
    (claims / str(planted)).symlink_to(victim)
    picks = [planted]
    pick = random.randint
    monkeypatch.setattr(
        random, "randint", lambda low, high: picks.pop() if picks else pick(low, high)
    )
    (chosen,) = free_ports(1)
    assert chosen != planted
    assert victim.read_text() == "precious\n"


def test_a_range_for_base_port_is_claimed_whole() -> None:
    base = free_range(4)  # every port of it, as `lab up --base-port` is about to bind them
    span = range(base, base + 4)
    other = subprocess.run(
        [sys.executable, "-c", OTHER_LAB, *map(str, span)],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    assert not {int(port) for port in other.stdout.split()} & set(span)
