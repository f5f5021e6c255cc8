"""The drain loop: each way a drain ends (Drained, GaveUp, Stopped) decided on a scripted node.

Every wait moves a ManualClock: an hour's drain takes milliseconds and a deadline falls exactly.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fakenode import FakeNode

from upgradectl.drain import MAX_UNREADABLE_COUNTS, Drained, DrainLoop, GaveUp, Stopped
from upgradectl.errors import ForceFailed, UnreadableCount
from upgradectl.model import DrainPolicy
from upgradectl.testing import Reply


def counts(*values: int) -> list[Reply]:
    """The ``active`` step's replies in turn (the last repeats)."""
    return [Reply(f"{value} active\n") for value in values]


def drain(node: FakeNode) -> tuple[DrainLoop, Drained | GaveUp | Stopped]:
    """Run one drain loop on ``node``."""
    loop = DrainLoop(*node.parts())
    return loop, loop.run()


def test_a_count_that_reaches_zero_and_stays_there_ends_drained(tmp_path: Path) -> None:
    node = FakeNode(tmp_path, [("count", counts(3, 2, 0))])

    loop, end = drain(node)

    assert isinstance(end, Drained)
    assert end.seconds == node.clock.monotonic() > 0  # the drain took the clock's time, no more
    assert len(node.transport.ran("count")) == 4  # 3, 2, 0, and the 0 that settles it
    assert node.recorded() == ["drained"]
    assert loop.forced == [] and node.transport.ran("force") == []


def test_more_stragglers_than_may_be_forced_at_the_deadline_gives_up_without_forcing(
    tmp_path: Path,
) -> None:
    node = FakeNode(
        tmp_path,
        [("count", counts(3))],
        drain={"timeout": "1m", "stragglers": "force", "max_stragglers": 2},
    )

    _, end = drain(node)

    assert end == GaveUp(3, "3 sessions left at the deadline, more than max_stragglers=2")
    assert node.clock.monotonic() >= 60  # not before the deadline
    assert node.transport.ran("force") == []
    assert node.recorded() == ["aborted"]


def test_stragglers_within_the_limit_are_forced_named_counted_and_looked_at_again_at_once(
    tmp_path: Path,
) -> None:
    read_at: list[float] = []

    def count(_: str) -> Reply:
        read_at.append(node.clock.monotonic())
        return Reply("0 active\n" if node.transport.ran("force") else "2 active\n")

    def sessions(_: str) -> Reply:  # listed until forced: then seen gone
        return Reply("" if node.transport.ran("force") else "call-a 3000\ncall-b 3100\n")

    node = FakeNode(
        tmp_path,
        [("count", count), ("sessions", sessions), ("force", Reply())],
        drain={"timeout": "1m", "stragglers": "force", "max_stragglers": 2},
    )

    loop, end = drain(node)

    assert isinstance(end, Drained) and end.seconds >= 60
    assert [session["id"] for session in loop.forced] == ["call-a", "call-b"]
    assert [session["age"] for session in loop.forced] == [3000, 3100]
    assert loop.forced_count == 2
    assert node.recorded() == ["forcing", "forced", "drained"]
    # The reading after the force is taken at once: the force should have emptied the node.
    assert read_at[-3] == read_at[-2] >= 60


def test_stragglers_wait_keeps_waiting_past_the_deadline_until_the_last_session_ends(
    tmp_path: Path,
) -> None:
    # The last call ends 40 s after a 1 s deadline.
    node = FakeNode(
        tmp_path,
        [("count", lambda _: Reply("1 active\n" if node.clock.monotonic() < 41 else "0 active\n"))],
        drain={"timeout": "1s", "stragglers": "wait"},
    )

    loop, end = drain(node)

    assert isinstance(end, Drained) and end.seconds > 41
    assert node.transport.ran("force") == [] and loop.forced == []


def test_a_stop_asked_for_while_waiting_ends_the_drain_stopped(tmp_path: Path) -> None:
    def count(_: str) -> Reply:
        if len(node.transport.ran("count")) == 3:
            node.stop.request("SIGTERM")
        return Reply("5 active\n")

    node = FakeNode(tmp_path, [("count", count)])

    _, end = drain(node)

    assert end == Stopped("stopped (SIGTERM) while waiting")
    assert len(node.transport.ran("count")) == 3  # no reading after the stop
    assert node.recorded() == []


def test_an_unreadable_count_is_read_again_but_never_as_zero(tmp_path: Path) -> None:
    garbage = Reply("command not found\n")
    node = FakeNode(tmp_path, [("count", [*counts(4), garbage, garbage, *counts(0)])])

    _, end = drain(node)

    assert isinstance(end, Drained)
    assert node.kinds().count("warning") == 2


def test_a_count_unreadable_too_many_times_in_a_row_stops_the_drain(tmp_path: Path) -> None:
    node = FakeNode(tmp_path, [("count", [*counts(4), Reply("command not found\n")])])

    with pytest.raises(UnreadableCount):
        drain(node)

    assert len(node.transport.ran("count")) == 1 + MAX_UNREADABLE_COUNTS


def test_sessions_still_counted_after_the_force_fail_the_force_step(tmp_path: Path) -> None:
    node = FakeNode(
        tmp_path,
        [("count", counts(1)), ("sessions", Reply("")), ("force", Reply("ok\n"))],
        drain={"timeout": "1m", "stragglers": "force", "max_stragglers": 1},
    )

    with pytest.raises(ForceFailed, match=r"force did not end them: 1 at .* still counted 30s"):
        drain(node)

    assert len(node.transport.ran("force")) == 1
    assert node.clock.monotonic() >= 60 + DrainPolicy().force_grace
    assert "forced" not in node.recorded()  # nothing was seen gone: nobody is reported cut


def test_force_when_the_estimate_says_the_stragglers_outlast_the_deadline_forces_before_it(
    tmp_path: Path,
) -> None:
    # Eight calls, one ending every 20 s: the last would end at 160 s, well past the 80 s
    # deadline, so with force_when the ones left are cut before the deadline, and it says why.
    forced_at: list[float] = []

    def live() -> int:
        return 0 if forced_at else max(0, 8 - int(node.clock.monotonic() // 20))

    def force(_: str) -> Reply:
        forced_at.append(node.clock.monotonic())
        return Reply()

    node = FakeNode(
        tmp_path,
        [
            ("count", lambda _: Reply(f"{live()} active\n")),
            ("sessions", lambda _: Reply("".join(f"call-{n} 30\n" for n in range(live())))),
            ("force", force),
        ],
        drain={
            "timeout": "80s",
            "stragglers": "force",
            "max_stragglers": 5,
            "force_when": "eta_exceeds_deadline",
        },
    )

    _, end = drain(node)

    assert isinstance(end, Drained)
    (forcing,) = [event for event in node.events if event.kind == "forcing"]
    assert forcing.data["because"] == "eta_exceeds_deadline"
    assert forced_at and forced_at[0] < 80  # before the deadline, not at it
    assert node.recorded() == ["forcing", "forced", "drained"]


def test_while_waiting_the_poll_events_carry_the_drain_rate_and_an_eta_range(
    tmp_path: Path,
) -> None:
    # Six calls, one ending every 10 s (polled every 10 s).
    node = FakeNode(
        tmp_path,
        [("count", lambda _: Reply(f"{max(0, 6 - int(node.clock.monotonic() // 10))} active\n"))],
    )

    _, end = drain(node)

    assert isinstance(end, Drained)
    polls = [event.data for event in node.events if event.kind == "poll"]
    estimated = [poll for poll in polls if poll.get("eta_low") is not None and poll["active"] > 0]
    assert estimated, "no poll carried an ETA"
    for poll in estimated:
        assert poll["rate_per_minute"] > 0
        high = poll["eta_high"] if poll["eta_high"] is not None else float("inf")
        assert 0 <= poll["eta_low"] <= high
        assert "ETA" in poll["insight"]
