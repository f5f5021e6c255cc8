"""Lab ports: one lab's choice is not another's, though neither has bound its ports yet."""

from __future__ import annotations

import subprocess
import sys

from upgradectl.lab.ports import free_ports

# Another lab starting at the same moment, in its own process: its random picks are first the
# ports given on its command line, then random ones.
OTHER_LAB = """
import random, sys
from upgradectl.lab.ports import free_ports
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
