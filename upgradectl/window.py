"""Maintenance windows: when a run may start, and how long a drain may last.

A window is a daily stretch of wall-clock time, such as ``02:00-05:00`` in ``Europe/Paris``, or
in the machine's local time when no zone is given. It may wrap past midnight (``22:00-04:00``):
it then opens on one day and closes on the next.

Time is always passed in (``now`` must be timezone-aware); nothing here reads the clock.

Daylight-saving transitions follow the wall clock, so a window lasts an hour less or more on
the night the clocks change:

* a time the clock skips (02:30 when clocks jump from 02:00 to 03:00) is read with the offset
  in force before the jump, so it lands that much later (03:30 summer time), as zoneinfo does;
  a window starting at 02:00 that night opens at the jump itself;
* a time the clock shows twice (02:30 when clocks fall back from 03:00 to 02:00) means its
  first occurrence, for the start and for the end alike.

All comparisons and durations are computed on UTC instants: Python compares and subtracts two
datetimes of the same zone by their wall-clock fields, which is wrong across a transition.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING

from upgradectl.duration import format_duration
from upgradectl.errors import NotNow

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from upgradectl.plan import NodePlan

_WINDOW_PATTERN = re.compile(r"(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})")
_ONE_DAY = timedelta(days=1)


@dataclass(frozen=True)
class Window:
    """A daily maintenance window from ``start`` to ``end`` (exclusive) in ``tz``.

    ``tz`` None means the machine's local time zone.
    """

    start: time
    end: time
    tz: ZoneInfo | None = None

    def __post_init__(self) -> None:
        if self.start == self.end:
            raise ValueError(f"start and end are both {self.start:%H:%M}; a window needs a length")

    def span_at(self, now: datetime) -> tuple[datetime, datetime] | None:
        """The (opens, closes) of the window open at ``now``, or None when it is closed."""
        span = self._span_containing(now)
        return None if span is None else (self._local(span[0]), self._local(span[1]))

    def closes_at(self, now: datetime) -> datetime | None:
        """When the window open at ``now`` closes, or None when it is closed."""
        span = self.span_at(now)
        return None if span is None else span[1]

    def remaining(self, now: datetime) -> float | None:
        """Seconds left in the window open at ``now``, or None when it is closed."""
        span = self._span_containing(now)
        return None if span is None else (span[1] - now.astimezone(UTC)).total_seconds()

    def next_open(self, now: datetime) -> datetime:
        """The earliest instant from ``now`` on when the window is open: ``now`` if it is open."""
        if self._span_containing(now) is not None:
            return now
        today = self._local(now).date()
        opens = self._span_opening_on(today)[0]
        if opens <= now:
            opens = self._span_opening_on(today + _ONE_DAY)[0]
        return self._local(opens)

    def _span_containing(self, now: datetime) -> tuple[datetime, datetime] | None:
        """The UTC (opens, closes) of the window open at ``now``, or None."""
        today = self._local(now).date()
        for day in (today - _ONE_DAY, today):
            opens, closes = self._span_opening_on(day)
            if opens <= now < closes:
                return opens, closes
        return None

    def _span_opening_on(self, day: date) -> tuple[datetime, datetime]:
        """The UTC instants at which the window opening on ``day`` opens and closes."""
        close_day = day if self.end > self.start else day + _ONE_DAY
        return self._instant(day, self.start), self._instant(close_day, self.end)

    def _instant(self, day: date, at: time) -> datetime:
        """The UTC instant at which this window's clock reads ``at`` on ``day``.

        Both readings of the wall time (``fold`` 0 and 1) are tried: when the clock shows the
        time twice the first one wins; when it skips the time, neither reading shows it, and
        the later one is the offset-before-the-jump reading described in the module docstring.
        (The C library, used for local time, reads skipped times the other way round; trying
        both folds gives one answer for local time and for named zones.)
        """
        wall = datetime.combine(day, at)
        readings = [wall.replace(tzinfo=self.tz, fold=fold).astimezone(UTC) for fold in (0, 1)]
        shown = [r for r in readings if self._local(r).replace(tzinfo=None) == wall]
        return min(shown) if shown else max(readings)

    def _local(self, instant: datetime) -> datetime:
        """``instant`` on this window's clock (the local zone when ``tz`` is None)."""
        if instant.tzinfo is None:
            raise ValueError(f"a timezone-aware time is needed, got {instant.isoformat()}")
        return instant.astimezone(self.tz)


def parse_window(text: str, tz: str | None) -> Window:
    """Read ``--window HH:MM-HH:MM`` and ``--tz ZONE`` (None: local time) into a Window."""
    bounds = _parse_bounds(text)
    if bounds is None:
        raise ValueError(f"--window: expected HH:MM-HH:MM, got {text!r}")
    zone = None if tz is None else _parse_zone(tz)
    try:
        return Window(*bounds, zone)
    except ValueError as exc:
        raise ValueError(f"--window: {exc}") from exc


def _parse_bounds(text: str) -> tuple[time, time] | None:
    """The start and end of ``HH:MM-HH:MM``, or None when it is not two valid times."""
    match = _WINDOW_PATTERN.fullmatch(text.strip())
    if match is None:
        return None
    start_hour, start_minute, end_hour, end_minute = (int(group) for group in match.groups())
    try:
        return time(start_hour, start_minute), time(end_hour, end_minute)
    except ValueError:
        return None


def _parse_zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``, or a ValueError that names it."""
    # Only --tz reads the time zone database: every acting run imports this module.
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # noqa: PLC0415

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"--tz: unknown time zone {name!r} (expected an IANA name such as Europe/Paris)"
        ) from None


def fits(window: Window, now: datetime, needed_seconds: float) -> bool:
    """Whether the window open at ``now`` still holds ``needed_seconds`` of work.

    A node may be blocked only if the rest of the window holds its drain deadline plus its
    expected upgrade time; pass their sum. A closed window holds nothing.
    """
    remaining = window.remaining(now)
    return remaining is not None and remaining >= needed_seconds


def cut_deadline(
    window: Window, now: datetime, deadline: datetime, upgrade_seconds: float = 0.0
) -> datetime:
    """The drain ``deadline``, cut at the window's end.

    With ``upgrade_seconds`` (the step's ``expected`` time) the cut comes that much earlier, so
    that the upgrade too ends inside the window; the default, 0, cuts at the window's end
    exactly, as the SPEC states. The result is never moved later than ``deadline``, and may lie
    before ``now`` when the window is too short for the upgrade: the caller should have checked
    ``fits`` before blocking. When the window is closed at ``now`` there is no time left: the
    cut deadline is ``now``.
    """
    closes = window.closes_at(now)
    if closes is None:
        return min(deadline, now, key=_utc)
    cut = _utc(closes) - timedelta(seconds=upgrade_seconds)
    return min(deadline, cut.astimezone(window.tz), key=_utc)


def _utc(instant: datetime) -> datetime:
    """``instant`` in UTC, where comparing and subtracting ignore the wall clock."""
    return instant.astimezone(UTC)


def describe(window: Window) -> str:
    """The window as operators write it: ``02:00-05:00 Europe/Paris``."""
    zone = "local time" if window.tz is None else window.tz.key
    return f"{window.start:%H:%M}-{window.end:%H:%M} {zone}"


# --- what a window means for a run and its nodes ------------------------------------------


def require_open(window: Window | None, now: datetime) -> None:
    """Outside the window nothing starts: NotNow (exit 75) naming when it opens."""
    if window is not None and window.span_at(now) is None:
        opens = window.next_open(now).astimezone(window.tz)
        raise NotNow(
            f"the maintenance window {describe(window)} is closed; it opens {opens:%Y-%m-%d %H:%M %Z}"
        )


def _expected_upgrade(plan: NodePlan) -> float:
    """How long the node's upgrade step is expected to take (0 when it does not say)."""
    upgrade = plan.steps.get("upgrade")
    return upgrade.expected or 0.0 if upgrade else 0.0


def _needs(plan: NodePlan) -> float:
    """How long a node may take: its drain deadline plus its expected upgrade time."""
    return plan.drain.timeout + _expected_upgrade(plan)


def deferral(window: Window | None, plan: NodePlan, now: datetime) -> str | None:
    """Why a node must wait for another night (None: it fits in what is left of the window)."""
    if window is None or fits(window, now, _needs(plan)):
        return None
    closes = window.closes_at(now)
    when = f"closes at {closes.astimezone(window.tz):%H:%M}" if closes else "is closed"
    return f"the window {when}; this node needs up to {format_duration(_needs(plan))} (drain + upgrade)"


def within_window(window: Window | None, plan: NodePlan, now: datetime) -> NodePlan:
    """The node's plan with its drain deadline cut at the window's end (leaving room for the
    expected upgrade); there `stragglers: wait` gives up, as waiting past the window cannot be."""
    if window is None:
        return plan
    deadline = datetime.fromtimestamp(now.timestamp() + plan.drain.timeout, UTC)
    cut = cut_deadline(window, now, deadline, _expected_upgrade(plan))
    timeout = max(0.0, min(plan.drain.timeout, (cut - now).total_seconds()))
    stragglers = "abort" if plan.drain.stragglers == "wait" else plan.drain.stragglers
    return replace(plan, drain=replace(plan.drain, timeout=timeout, stragglers=stragglers))
