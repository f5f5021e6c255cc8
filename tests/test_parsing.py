"""Reading step output: success or failure, the value a reading shows, the sessions listed."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from upgradectl.parsing import check, extract, parse_age, parse_sessions
from upgradectl.plan import Command
from upgradectl.transport.base import CommandResult


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("3127", 3127),
        ("3127.5", 3127.5),
        (" 42\n", 42),
        ("52m7s", 3127),
        ("1h2m", 3720),
        ("90s", 90),
        ("1d", 86400),
        ("00:52:07", 3127),
        ("0:00:09", 9),
        ("123:00:00", 123 * 3600),
    ],
)
def test_parse_age_reads_seconds_durations_and_clock_times(text: str, seconds: float) -> None:
    assert parse_age(text) == seconds


@pytest.mark.parametrize(
    "text",
    [
        "",
        "  ",
        "abc",
        "-5",
        "5x",
        "1e3",
        "inf",
        "nan",
        "3127 s",
        "1:2:3",
        "00:60:00",
        "00:00:60",
        "52:07",
        "1h2m3",
        "2m1h",
        "\N{ARABIC-INDIC DIGIT THREE}",
        "1\N{ARABIC-INDIC DIGIT THREE}s",
    ],
)
def test_parse_age_rejects_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="not a session age"):
        parse_age(text)


@given(
    hours=st.integers(0, 999),
    minutes=st.integers(0, 59),
    seconds=st.integers(0, 59),
)
def test_parse_age_reads_every_clock_time_and_duration_alike(
    hours: int, minutes: int, seconds: int
) -> None:
    total = hours * 3600 + minutes * 60 + seconds
    assert parse_age(f"{hours:02d}:{minutes:02d}:{seconds:02d}") == total
    assert parse_age(f"{hours}h{minutes}m{seconds}s") == total
    assert parse_age(str(total)) == total


@given(text=st.text(max_size=12))
def test_parse_age_of_any_text_is_a_non_negative_number_or_a_value_error(text: str) -> None:
    try:
        seconds = parse_age(text)
    except ValueError:
        return
    assert math.isfinite(seconds)
    assert seconds >= 0


def result(stdout: str, exit_code: int = 0) -> CommandResult:
    """A command's result with ``stdout``."""
    return CommandResult("cmd", exit_code, stdout, "", 0.0)


def command(step: str, parse: str | None = None, fail_if: str | None = None) -> Command:
    """A rendered ``step`` reading its output with ``parse`` and ``fail_if``."""
    return Command(
        step, "n", "cmd", 5.0,
        parse=re.compile(parse) if parse else None, fail_if=re.compile(fail_if) if fail_if else None,
    )  # fmt: skip


def test_a_step_fails_on_its_exit_code_on_fail_if_and_for_a_check_on_output_parse_misses() -> None:
    verify = command("verify", parse="^version 2", fail_if="(?m)^error")

    assert check(verify, result("version 2\n")) == ""
    assert check(verify, result("version 2\n", exit_code=3)) == "exit code 3"
    assert check(verify, result("version 2\nerror: x\n")) == "output matches fail_if /(?m)^error/"
    assert check(verify, result("version 1\n")) == "output does not match /^version 2/"
    # A reading step's parse extracts a value; it does not decide success.
    assert check(command("active", parse="(\\d+) active"), result("none\n")) == ""


def test_the_value_a_reading_shows_is_its_named_group_else_its_first_group() -> None:
    assert extract(command("version", parse="(v|r)(?P<version>\\S+)"), "at v2.1\n") == "2.1"
    assert extract(command("active", parse="(\\d+) calls"), "7 calls\n") == "7"
    assert extract(command("active", parse="(\\d+) calls"), "no calls\n") is None
    assert extract(command("active"), " 3\n") == "3"


def test_sessions_are_read_by_named_groups_and_a_start_time_becomes_an_age() -> None:
    sessions = command("sessions", parse="^(?P<id>\\S+) (?P<start>\\d+) (?P<caller>\\S+)$")
    text = "ID START CALLER\ncall-1 1000 alice\n\ncall-2 1600 bob\n"

    listed = parse_sessions(text, sessions, now=1900.0)

    assert [(s.id, s.age, dict(s.details)) for s in listed] == [
        ("call-1", 900.0, {"caller": "alice"}),
        ("call-2", 300.0, {"caller": "bob"}),
    ]  # the header matches no session: it is left out
