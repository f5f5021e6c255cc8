"""bench/check_plan.py runs the real check and plan on generated inventories (not a timing test)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parent.parent / "bench" / "check_plan.py"


def test_the_check_and_plan_bench_measures_both_commands_on_each_size() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--nodes", "20", "--nodes", "40"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()[1:]]
    assert [(row[0], row[1]) for row in rows] == [
        ("20", "check"), ("20", "plan"), ("40", "check"), ("40", "plan"),
    ]  # fmt: skip
    assert all(float(row[2]) > 0 for row in rows)
