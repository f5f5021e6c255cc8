"""Drain ETA: how fast a node drains and when it will be empty.

Pure functions over the polled session counts the runner already has: no I/O and no clock, so
every estimate can be checked against synthetic data with a known answer. Whom a deadline would
cut is :mod:`upgradectl.cut`.
"""

from __future__ import annotations

import math
import statistics
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations, pairwise

Sample = tuple[float, int]
"""One poll of a draining node: (monotonic time in seconds, active session count)."""

# "Reaches zero" means the expected count falls below half a session.
_LOG_HALF_SESSION = math.log(0.5)
# Below this much history two polls say nothing about a rate.
MIN_HISTORY_SECONDS = 3.0
# The fit looks at the last third of the drain, but never at less than this: decay slows as the
# short sessions leave, so old history overstates the rate, and too little history is all noise.
# (A third rather than a half: on simulated drains of mixed short and long calls it doubles how
# often the early ETA range holds the truth, at no cost for plain exponential drains.)
_RECENT_FRACTION = 1 / 3
_MIN_WINDOW_SECONDS = 30.0
# Theil-Sen is quadratic in the samples; thinning a long window keeps each poll cheap.
_MAX_FIT_SAMPLES = 60
# Two-sided 90 % normal quantile for the confidence intervals of the decay rate.
_SLOPE_CONFIDENCE_Z = 1.645
# Real drains are not exactly exponential, so even a perfect-looking fit is uncertain: the
# rate range is never narrower than this, on a log scale, either side of the median.
_MIN_LOG_SPREAD = 0.15


@dataclass(frozen=True)
class DrainEstimate:
    """What the polls so far say about a drain; see :func:`estimate_drain` for the model."""

    active: int
    rate_per_minute: float
    eta_low: float | None
    eta_high: float | None
    stalled: bool
    drained: bool
    since_last_drop: float
    """Seconds since the count last went down (since the first poll if it never did)."""
    time_constant: float | None
    """Fitted e-folding time of the count in seconds; None when no decay is seen."""


@dataclass(frozen=True)
class _DecayFit:
    """A Theil-Sen fit of log(count) against time; slopes are per second and negative."""

    slope: float
    fastest: float
    slowest: float
    level: float
    """Fitted log(count) at the latest sample."""


def estimate_drain(samples: Sequence[Sample], *, stall_after: float) -> DrainEstimate | None:
    """Rate, ETA range and stall state of a drain from its polls, oldest first.

    Model: the count decays exponentially, ``n(t) = n0 * exp(-t / tau)``. The fit is Theil-Sen
    (the median of pairwise slopes) of ``log(count)`` against time over the last third of the
    drain (at least 30 s), so a burst of arrivals or an odd poll moves it little. Zero counts
    cannot be logged and are left out of the fit (a zero followed by more sessions is a
    re-arrival, not a level). The count "reaches zero" when its expected value falls below 0.5.

    Tolerance: the slope's range is the wider of Sen's 90 % confidence interval of the median
    slope and the Poisson uncertainty of the k sessions seen ending in the window (the slope
    times ``exp(+-1.645 / sqrt(k))``, since a rate read off k random events is that uncertain),
    and never narrower than ``exp(+-0.15)``. The ETA range runs from the fastest slope and the
    lower of two starting levels (the fitted one and the latest count) to the slowest slope and
    the higher level. On simulated drains of exponential sessions it holds the true time to 0.5
    80-90 % of the time. A drain of mixed short and long calls slows as the short ones leave,
    which one exponential cannot foresee: early on its ETA is optimistic (simulating 70 % 2-min
    and 30 % 30-min calls, about 0.6 of the truth after 10 min; right after 20 min).

    ``eta_low``/``eta_high`` are seconds after the latest sample. Both are None when no decay is
    seen (a flat or rising count); ``eta_high`` alone is None when the data cannot rule out "no
    decay", so the ETA is "at least ``eta_low``". ``rate_per_minute`` counts the drops of the
    count over the same window. Returns None with fewer than 2 samples or under 3 s of history.
    """
    if any(count < 0 for _, count in samples):
        raise ValueError("a session count cannot be negative")
    if len(samples) < 2 or samples[-1][0] - samples[0][0] < MIN_HISTORY_SECONDS:
        return None
    now, active = samples[-1]
    recent = _recent_window(samples)
    since_last_drop = now - _last_drop_time(samples)
    fit = _fit_log_decay(recent) if active else None
    eta_low, eta_high = _eta_range(fit, active) if active else (0.0, 0.0)
    return DrainEstimate(
        active=active,
        rate_per_minute=_ending_rate_per_minute(recent),
        eta_low=eta_low,
        eta_high=eta_high,
        stalled=active > 0 and since_last_drop >= stall_after,
        drained=active == 0,
        since_last_drop=since_last_drop,
        time_constant=-1.0 / fit.slope if fit else None,
    )


def _recent_window(samples: Sequence[Sample]) -> Sequence[Sample]:
    """The last third of the drain (at least the last 30 s, at least two samples)."""
    now = samples[-1][0]
    start = now - max((now - samples[0][0]) * _RECENT_FRACTION, _MIN_WINDOW_SECONDS)
    first = bisect_left(samples, start, key=lambda sample: sample[0])
    return samples[min(first, len(samples) - 2) :]


def _last_drop_time(samples: Sequence[Sample]) -> float:
    for index in range(len(samples) - 1, 0, -1):
        if samples[index][1] < samples[index - 1][1]:
            return samples[index][0]
    return samples[0][0]


def _ending_rate_per_minute(window: Sequence[Sample]) -> float:
    span = window[-1][0] - window[0][0]
    return _sessions_ended(window) * 60.0 / span if span > 0 else 0.0


def _sessions_ended(window: Sequence[Sample]) -> int:
    """Sessions seen ending: the sum of the count's drops (arrivals do not cancel them)."""
    return sum(max(0, before - after) for (_, before), (_, after) in pairwise(window))


def _fit_log_decay(window: Sequence[Sample]) -> _DecayFit | None:
    """Theil-Sen fit of log(count); None when the median slope shows no decay."""
    stride = math.ceil(len(window) / _MAX_FIT_SAMPLES)
    thinned = window[::-1][::stride][::-1]  # thinned from the latest back, so that one is kept
    points = [(time, math.log(count)) for time, count in thinned if count > 0]
    slopes = sorted(
        (y2 - y1) / (t2 - t1) for (t1, y1), (t2, y2) in combinations(points, 2) if t2 > t1
    )
    if not slopes:
        return None
    slope = statistics.median(slopes)
    if slope >= 0:
        return None
    fastest, slowest = _sen_interval(slopes, len(points))
    # Sen's interval assumes independent errors, but a count carries its past along; the
    # number of sessions seen ending is what really bounds how well the rate is known.
    spread = max(_MIN_LOG_SPREAD, _SLOPE_CONFIDENCE_Z / math.sqrt(max(_sessions_ended(window), 1)))
    now = window[-1][0]
    return _DecayFit(
        slope=slope,
        fastest=min(fastest, slope * math.exp(spread)),
        slowest=max(slowest, slope * math.exp(-spread)),
        level=statistics.median(y + slope * (now - t) for t, y in points),
    )


def _sen_interval(sorted_slopes: Sequence[float], points: int) -> tuple[float, float]:
    """Sen's (1968) distribution-free confidence interval of the median pairwise slope.

    The variance is Kendall's S without the tie correction, which only makes it wider.
    """
    half_width = _SLOPE_CONFIDENCE_Z * math.sqrt(points * (points - 1) * (2 * points + 5) / 18)
    count = len(sorted_slopes)
    low = max(0, math.floor((count - half_width) / 2) - 1)
    high = min(count - 1, math.ceil((count + half_width) / 2))
    return sorted_slopes[low], sorted_slopes[high]


def _eta_range(fit: _DecayFit | None, active: int) -> tuple[float | None, float | None]:
    if fit is None:
        return None, None
    levels = (fit.level, math.log(active))
    low = _seconds_to_half_session(min(levels), fit.fastest)
    if low is None:
        return None, None
    high = _seconds_to_half_session(max(levels), fit.slowest) if fit.slowest < 0 else None
    return low, high


def _seconds_to_half_session(log_count: float, slope: float) -> float | None:
    seconds = max(0.0, (log_count - _LOG_HALF_SESSION) / -slope)
    return seconds if math.isfinite(seconds) else None


def format_eta(estimate: DrainEstimate) -> str:
    """A short phrase for the live view and log lines.

    ``12 active, 3.1/min, ETA 4-7 min`` (the range with an en dash), ``12 active, stalled 5 min``,
    ``drained``.
    """
    if estimate.drained:
        return "drained"
    head = f"{estimate.active} active"
    if estimate.stalled:
        return f"{head}, stalled {format_age(estimate.since_last_drop)}"
    return f"{head}, {estimate.rate_per_minute:.1f}/min, {_eta_phrase(estimate)}"


def expected_active(estimate: DrainEstimate, seconds: float) -> int:
    """The count the fitted decay expects ``seconds`` from the latest reading, rounded (below half
    a session is zero); a stalled drain, or one with no decay seen, stays where it is."""
    if estimate.stalled or estimate.time_constant is None:
        return estimate.active
    return round(estimate.active * math.exp(-max(seconds, 0.0) / estimate.time_constant))


def _eta_phrase(estimate: DrainEstimate) -> str:
    return format_eta_range(estimate.eta_low, estimate.eta_high)


def format_eta_range(low: float | None, high: float | None) -> str:
    """``ETA 4-7 min`` (with an en dash) for an estimated end between ``low`` and ``high`` seconds from now."""
    if low is None:
        return "no ETA yet"
    if high is None:
        return f"ETA over {format_age(low)}"
    unit_seconds, unit = _display_unit(high)
    shortest, longest = math.floor(low / unit_seconds), math.ceil(high / unit_seconds)
    if shortest == longest:
        return f"ETA {shortest} {unit}"
    return f"ETA {shortest}\N{EN DASH}{longest} {unit}"


def format_age(seconds: float) -> str:
    """Whole seconds, minutes or (from 5 h) hours, rounded down: ``3127`` -> ``52 min``."""
    unit_seconds, unit = _display_unit(seconds)
    return f"{math.floor(seconds / unit_seconds)} {unit}"


def _display_unit(seconds: float) -> tuple[int, str]:
    if seconds < 90:
        return 1, "s"
    if seconds < 5 * 3600:
        return 60, "min"
    return 3600, "h"
