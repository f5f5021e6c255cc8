"""Durations as operators write them, on the command line and in files."""

from __future__ import annotations

from pathlib import Path

import pytest
from clihelp import run_cli

from upgradectl.duration import parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("1.5", 1.5), ("90s", 90), ("15m", 900), ("1.5h", 5400), ("1h30m", 5400),
     ("0.5m", 30), ("2d", 172800), ("1d2h3m4s", 93784)],
)  # fmt: skip
def test_a_duration_reads_plain_seconds_decimals_and_units(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "1h30", "-5m", "1.h", "90 s", "1hour"])
def test_anything_else_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(("written", "said"), [("90", "1m30s"), ("1.5h", "1h30m")])
def test_the_command_line_takes_seconds_and_decimal_hours(
    local_site: Path, written: str, said: str
) -> None:
    ran = run_cli(
        "-i", str(local_site / "inventory.yaml"), "--state-dir", str(local_site / "state"),
        "drain", "node-a", "--dry-run", "--yes", "--timeout", written,
    )  # fmt: skip
    assert ran.code == 0, ran.stdout + ran.stderr
    assert f"wait up to {said}" in ran.stdout
