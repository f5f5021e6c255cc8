"""bench/startup.py measures every start-up path it names, of this install and of a checkout
beside it (not a timing test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
BENCH = ROOT / "bench" / "startup.py"


@pytest.mark.slow  # some forty fresh interpreters: 6 s of CPU
def test_the_startup_bench_measures_each_path_against_a_bare_interpreter(tmp_path: Path) -> None:
    out = tmp_path / "startup.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--runs", "1", "--against", str(ROOT), "--json", str(out)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    found = json.loads(out.read_text())
    figures = found["ms"]
    assert list(figures) == [
        "python -c pass", "imports: upgrade over SSH", "imports: upgrade, local nodes",
        "imports: its libraries alone",
        "upgradectl --help", "upgradectl check", "upgradectl plan", "upgradectl history",
        "upgradectl status", "upgradectl upgrade --dry-run",
    ]  # fmt: skip
    assert all(ms > 0 for ms in figures.values())  # each does more than a bare interpreter
    assert all(name in done.stdout for name in figures)
    # The checkout measured against, side by side: the same paths.
    assert found["against"]["checkout"] == str(ROOT) and list(found["against"]["ms"]) == list(
        figures
    )
