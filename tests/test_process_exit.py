"""A process of its own (``python -m upgradectl``, the console script) ends at once after the
command, with its exit code and everything it said."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "inventory.yaml"


def upgradectl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "upgradectl", "-i", str(EXAMPLE), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_each_exit_code_and_what_was_said_are_kept() -> None:
    done = upgradectl("--json", "plan", "--all", "--version", "2")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["nodes"]  # the whole document, to its last brace
    refused = upgradectl("plan", "no-such-node", "--version", "2")
    assert refused.returncode == 2
    assert "no-such-node" in refused.stderr
