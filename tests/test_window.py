"""Maintenance windows, with the time passed in: no clock is read and nothing sleeps."""

from __future__ import annotations

import os
import time as clock
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from upgradectl.window import Window, cut_deadline, describe, fits, parse_window

PARIS = ZoneInfo("Europe/Paris")
NIGHT = Window(time(2, 0), time(5, 0), PARIS)
WRAPPING = Window(time(22, 0), time(4, 0), PARIS)


def paris(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    """A wall-clock time in Paris in 2024."""
    return datetime(2024, month, day, hour, minute, tzinfo=PARIS)


def utc(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    """An instant in UTC in 2024."""
    return datetime(2024, month, day, hour, minute, tzinfo=UTC)


@pytest.fixture
def local_zone() -> Iterator[Callable[[str], None]]:
    """Switch the process's local time zone (TZ) for one test, then restore it."""
    saved = os.environ.get("TZ")

    def use(name: str) -> None:
        os.environ["TZ"] = name
        clock.tzset()

    yield use
    if saved is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = saved
    clock.tzset()


def test_a_window_is_open_from_its_start_until_just_before_its_end() -> None:
    assert NIGHT.span_at(paris(6, 10, 3)) == (paris(6, 10, 2), paris(6, 10, 5))
    assert NIGHT.span_at(paris(6, 10, 2)) is not None
    assert NIGHT.span_at(paris(6, 10, 1, 59)) is None
    assert NIGHT.span_at(paris(6, 10, 5)) is None
    assert NIGHT.closes_at(paris(6, 10, 12)) is None
    assert NIGHT.remaining(paris(6, 10, 12)) is None


def test_the_time_left_counts_down_to_the_windows_end() -> None:
    assert NIGHT.closes_at(paris(6, 10, 4, 30)) == paris(6, 10, 5)
    assert NIGHT.remaining(paris(6, 10, 4, 30)) == 30 * 60


def test_now_may_be_given_in_any_zone() -> None:
    assert NIGHT.remaining(utc(6, 10, 1)) == 2 * 3600  # 03:00 in Paris (summer time)
    assert NIGHT.span_at(utc(6, 10, 4)) is None  # 06:00 in Paris


def test_a_window_opened_yesterday_evening_is_still_open_after_midnight() -> None:
    assert WRAPPING.span_at(paris(6, 11, 1)) == (paris(6, 10, 22), paris(6, 11, 4))
    assert WRAPPING.remaining(paris(6, 11, 1)) == 3 * 3600


def test_a_window_wrapping_midnight_opened_this_evening_closes_tomorrow() -> None:
    assert WRAPPING.closes_at(paris(6, 10, 23)) == paris(6, 11, 4)
    assert WRAPPING.span_at(paris(6, 10, 12)) is None
    assert WRAPPING.span_at(paris(6, 11, 4)) is None


def test_next_open_is_later_today_tomorrow_or_now() -> None:
    assert NIGHT.next_open(paris(6, 10, 1)) == paris(6, 10, 2)
    assert NIGHT.next_open(paris(6, 10, 6)) == paris(6, 11, 2)
    assert WRAPPING.next_open(paris(6, 10, 12)) == paris(6, 10, 22)
    assert WRAPPING.next_open(paris(6, 11, 1)) == paris(6, 11, 1)


def test_a_node_fits_only_if_the_rest_of_the_window_holds_its_drain_and_upgrade() -> None:
    now = paris(6, 10, 3)  # two hours left
    assert fits(NIGHT, now, needed_seconds=3600 + 3 * 60)
    assert fits(NIGHT, now, needed_seconds=2 * 3600)
    assert not fits(NIGHT, now, needed_seconds=2 * 3600 + 1)
    assert not fits(NIGHT, paris(6, 10, 6), needed_seconds=1)


def test_a_drain_deadline_past_the_windows_end_is_cut_at_the_end() -> None:
    now = paris(6, 10, 4)
    assert cut_deadline(NIGHT, now, now + timedelta(hours=1)) == paris(6, 10, 5)


def test_the_cut_leaves_room_for_the_expected_upgrade_when_asked() -> None:
    now = paris(6, 10, 4)
    cut = cut_deadline(NIGHT, now, now + timedelta(hours=1), upgrade_seconds=10 * 60)
    assert cut == paris(6, 10, 4, 50)


def test_a_deadline_inside_the_window_is_kept() -> None:
    now = paris(6, 10, 3)
    deadline = now + timedelta(minutes=15)
    assert cut_deadline(NIGHT, now, deadline, upgrade_seconds=10 * 60) == deadline


def test_outside_the_window_the_deadline_is_now() -> None:
    now = paris(6, 10, 6)
    assert cut_deadline(NIGHT, now, now + timedelta(hours=1)) == now


def test_spring_forward_night_opens_at_the_jump_and_is_an_hour_shorter() -> None:
    # 2024-03-31: Paris clocks jump from 02:00 (UTC+1) to 03:00 (UTC+2).
    opens, closes = NIGHT.span_at(utc(3, 31, 1, 30)) or pytest.fail("window should be open")
    assert (opens, closes) == (utc(3, 31, 1), utc(3, 31, 3))
    assert opens.utcoffset() == timedelta(hours=2)  # shown as 03:00 summer time
    assert NIGHT.remaining(utc(3, 31, 1)) == 2 * 3600
    assert NIGHT.span_at(utc(3, 31, 0, 59)) is None  # 01:59 winter time


def test_fall_back_night_is_an_hour_longer_and_a_repeated_end_means_its_first() -> None:
    # 2024-10-27: Paris clocks fall back from 03:00 (UTC+2) to 02:00 (UTC+1).
    assert NIGHT.remaining(utc(10, 27, 0)) == 4 * 3600  # from 02:00 summer to 05:00 winter
    ends_in_repeated_hour = Window(time(22, 0), time(2, 30), PARIS)
    closes = ends_in_repeated_hour.closes_at(utc(10, 26, 23)) or pytest.fail("should be open")
    # Compared in UTC: Python never finds a time in a repeated hour equal to another zone's.
    assert closes.astimezone(UTC) == utc(10, 27, 0, 30)


def test_local_time_follows_the_machines_zone(local_zone: Callable[[str], None]) -> None:
    local = Window(time(2, 0), time(5, 0), tz=None)
    local_zone("Asia/Tokyo")
    assert local.remaining(utc(6, 10, 18)) == 2 * 3600  # 03:00 in Tokyo
    assert NIGHT.span_at(utc(6, 10, 18)) is None  # 20:00 in Paris
    local_zone("Europe/Paris")
    assert local.span_at(utc(6, 10, 1)) == NIGHT.span_at(utc(6, 10, 1))


def test_local_time_reads_a_skipped_hour_as_a_named_zone_does(
    local_zone: Callable[[str], None],
) -> None:
    local_zone("Europe/Paris")
    local = Window(time(2, 30), time(5, 0), tz=None)
    named = Window(time(2, 30), time(5, 0), PARIS)
    assert local.next_open(utc(3, 31, 0)) == named.next_open(utc(3, 31, 0)) == utc(3, 31, 1, 30)


def test_a_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        NIGHT.span_at(datetime(2024, 6, 10, 3))


def test_parse_window_reads_the_command_line() -> None:
    assert parse_window("02:00-05:00", "Europe/Paris") == NIGHT
    assert parse_window(" 22:00-4:00 ", None) == Window(time(22), time(4), None)


def test_describe_names_the_zone_or_local_time() -> None:
    assert describe(NIGHT) == "02:00-05:00 Europe/Paris"
    assert describe(parse_window("22:00-04:30", None)) == "22:00-04:30 local time"


@pytest.mark.parametrize("text", ["25:00-03:00", "02:60-03:00", "0200-0300", "02:00", "tonight"])
def test_a_malformed_window_is_refused_with_what_was_expected(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_window(text, None)
    assert str(caught.value) == f"--window: expected HH:MM-HH:MM, got '{text}'"


def test_a_window_without_length_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^--window: start and end are both 03:00"):
        parse_window("03:00-03:00", "Europe/Paris")


@pytest.mark.parametrize("zone", ["Europe/Pariss", "Europe", "", "../etc/passwd"])
def test_an_unknown_zone_is_named(zone: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_window("02:00-05:00", zone)
    assert str(caught.value).startswith(f"--tz: unknown time zone {zone!r}")
