"""Drain ETA: ranges for decaying session counts, and the phrases people read.

Everything here is pure logic, so the tests feed synthetic drains with a known answer (an
exponential with a known time constant) and state the tolerance each answer is held to.
"""

from __future__ import annotations

import math
import random
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from upgradectl.estimate import DrainEstimate, Sample, estimate_drain, format_eta

START = 5000.0  # monotonic clocks do not start at zero
NO_STALL = 1e9


def exponential_drain(initial: int, tau: float, poll: int, duration: int) -> list[Sample]:
    """The rounded expected count of an exponential drain, polled every ``poll`` seconds."""
    return [(START + t, round(initial * math.exp(-t / tau))) for t in range(0, duration + 1, poll)]


def simulated_drain(
    rng: random.Random, initial: int, tau: float, poll: int, duration: int
) -> list[Sample]:
    """A random drain: ``initial`` sessions with exponential remaining lengths of mean tau."""
    ends = [rng.expovariate(1 / tau) for _ in range(initial)]
    return [(START + t, sum(end > t for end in ends)) for t in range(0, duration + 1, poll)]


def seconds_to_half_session(count: float, tau: float) -> float:
    """When an exponential with time constant tau takes ``count`` below 0.5."""
    return tau * math.log(2 * count)


def require(estimate: DrainEstimate | None) -> DrainEstimate:
    assert estimate is not None
    return estimate


def eta_bounds(estimate: DrainEstimate | None) -> tuple[float, float]:
    estimate = require(estimate)
    assert estimate.eta_low is not None
    assert estimate.eta_high is not None
    return estimate.eta_low, estimate.eta_high


@pytest.mark.parametrize(
    ("initial", "tau", "poll", "duration"),
    [
        (200, 120, 5, 240),
        (500, 60, 2, 120),
        (50, 600, 10, 600),
        (30, 300, 5, 300),
        (1000, 3600, 10, 600),
        (20, 60, 2, 30),
    ],
)
def test_eta_range_of_an_exponential_drain_holds_the_true_time_to_half_a_session(
    initial: int, tau: float, poll: int, duration: int
) -> None:
    estimate = estimate_drain(exponential_drain(initial, tau, poll, duration), stall_after=300)
    low, high = eta_bounds(estimate)
    truth = seconds_to_half_session(initial, tau) - duration
    assert low <= truth <= high
    # Tolerance: the range is useful, within a factor of three of the truth either side.
    assert truth / 3 <= low
    assert high <= 3 * truth


def test_time_constant_of_an_exponential_drain_is_recovered_within_five_percent() -> None:
    estimate = require(estimate_drain(exponential_drain(300, 240, 5, 480), stall_after=300))
    assert estimate.time_constant == pytest.approx(240, rel=0.05)


def test_rate_counts_sessions_ending_per_minute_in_the_recent_window() -> None:
    # One session ends a second; the window is the last third (60 s) of a 180 s drain.
    samples = [(START + t, 300 - t) for t in range(181)]
    assert require(estimate_drain(samples, stall_after=300)).rate_per_minute == pytest.approx(60)


def test_eta_range_covers_random_drains_about_as_often_as_it_claims() -> None:
    # Nominal 90 %; held to at least 75 % over 100 seeded random drains of 100 sessions.
    covered, ratios = 0, []
    for seed in range(100):
        samples = simulated_drain(random.Random(seed), 100, 300, 5, 450)
        estimate = require(estimate_drain(samples, stall_after=NO_STALL))
        assert estimate.eta_low is not None
        high = math.inf if estimate.eta_high is None else estimate.eta_high
        covered += estimate.eta_low <= seconds_to_half_session(samples[-1][1], 300) <= high
        ratios.append(high / estimate.eta_low)
    assert covered >= 75
    assert statistics.median(ratios) < 3, "ranges so wide they say nothing"


def test_noise_does_not_collapse_the_range_to_a_point() -> None:
    rng = random.Random(7)
    samples = [
        (START + t, max(1, round(400 * math.exp(-t / 200)) + rng.randint(-5, 5)))
        for t in range(0, 301, 3)
    ]
    low, high = eta_bounds(estimate_drain(samples, stall_after=NO_STALL))
    truth = seconds_to_half_session(400, 200) - 300
    assert high / low >= math.exp(0.3)  # at least the +-15 % floor on the rate, both ways
    assert low <= truth <= high


def test_a_long_drain_is_thinned_without_losing_the_fit() -> None:
    samples = exponential_drain(2000, 1800, 1, 3600)
    low, high = eta_bounds(estimate_drain(samples, stall_after=NO_STALL))
    assert low <= seconds_to_half_session(2000, 1800) - 3600 <= high


def test_the_eta_follows_the_recent_rate_when_the_drain_slows_down() -> None:
    # The short calls go first (time constant 2 min for 10 min), then the long ones (20 min).
    fast = exponential_drain(5000, 120, 5, 600)
    middle_time, middle_count = fast[-1]
    slow = [(middle_time + t, round(middle_count * math.exp(-t / 1200))) for t in range(5, 901, 5)]
    low, high = eta_bounds(estimate_drain(fast + slow, stall_after=NO_STALL))
    assert low <= seconds_to_half_session(slow[-1][1], 1200) <= high


def test_the_eta_range_allows_for_a_sudden_drop_in_the_latest_poll() -> None:
    samples = exponential_drain(200, 120, 5, 240)
    last_time, last_count = samples[-1]
    samples.append((last_time + 5, last_count // 3))  # a third of the calls end at once
    low, _ = eta_bounds(estimate_drain(samples, stall_after=NO_STALL))
    assert low <= seconds_to_half_session(last_count // 3, 120)


def test_a_flat_count_is_stalled_and_has_no_eta() -> None:
    samples = [(START + t, 12) for t in range(0, 301, 10)]
    estimate = require(estimate_drain(samples, stall_after=300))
    assert estimate.stalled
    assert (estimate.eta_low, estimate.eta_high, estimate.time_constant) == (None, None, None)
    assert estimate.rate_per_minute == 0
    assert format_eta(estimate) == "12 active, stalled 5 min"


def test_a_flat_count_is_not_stalled_before_stall_after() -> None:
    samples = [(START + t, 12) for t in range(0, 121, 10)]
    estimate = require(estimate_drain(samples, stall_after=300))
    assert not estimate.stalled
    assert format_eta(estimate) == "12 active, 0.0/min, no ETA yet"


def test_a_drain_that_stops_going_down_is_stalled_counting_from_its_last_drop() -> None:
    decaying = [(START, 10), (START + 5, 8), (START + 10, 6), (START + 15, 5)]
    flat = [(START + 15 + t, 5) for t in range(5, 121, 5)]
    estimate = require(estimate_drain(decaying + flat, stall_after=120))
    assert estimate.since_last_drop == 120
    assert estimate.stalled
    assert not require(estimate_drain(decaying + flat[:-1], stall_after=120)).stalled


def test_a_burst_of_arrivals_then_decay_gives_a_sane_eta() -> None:
    rising = [(START + t, 40 + t // 3) for t in range(0, 61, 5)]  # 40 -> 60 in a minute
    decay = [(START + 60 + t, round(60 * math.exp(-t / 90))) for t in range(5, 241, 5)]
    low, high = eta_bounds(estimate_drain(rising + decay, stall_after=NO_STALL))
    truth = seconds_to_half_session(60, 90) - 240
    assert 0 < low <= truth <= high < 3 * truth


def test_a_burst_at_the_end_of_a_drain_keeps_the_eta_finite_and_positive() -> None:
    samples = [*exponential_drain(100, 120, 5, 200), (START + 205, 40), (START + 210, 45)]
    low, high = eta_bounds(estimate_drain(samples, stall_after=NO_STALL))
    assert 0 < low <= high < math.inf


def test_a_rising_count_has_no_eta() -> None:
    samples = [(START + t, 10 + t) for t in range(0, 61, 5)]
    estimate = require(estimate_drain(samples, stall_after=NO_STALL))
    assert (estimate.eta_low, estimate.eta_high) == (None, None)
    assert not estimate.drained


def test_zeros_followed_by_re_arrivals_are_left_out_of_the_fit() -> None:
    samples = [(START + t, count) for t, count in enumerate([9, 6, 4, 2, 0, 0, 3, 2, 1, 1, 1])]
    estimate = require(estimate_drain(samples, stall_after=NO_STALL))
    assert estimate.eta_low is not None
    assert estimate.eta_low >= 0
    assert not estimate.drained


def test_all_zero_is_drained() -> None:
    estimate = require(estimate_drain([(START + t, 0) for t in range(0, 31, 5)], stall_after=10))
    assert estimate.drained
    assert not estimate.stalled
    assert (estimate.eta_low, estimate.eta_high) == (0.0, 0.0)
    assert format_eta(estimate) == "drained"


def test_a_count_that_reaches_zero_is_drained() -> None:
    samples = [*exponential_drain(20, 10, 2, 30), (START + 32, 0)]
    assert require(estimate_drain(samples, stall_after=NO_STALL)).drained


@pytest.mark.parametrize(
    "samples",
    [[], [(START, 10)], [(START, 10), (START + 1, 9)], [(START, 10), (START + 2.9, 5)]],
    ids=["none", "one sample", "one second", "under three seconds"],
)
def test_too_little_history_says_nothing(samples: list[Sample]) -> None:
    assert estimate_drain(samples, stall_after=NO_STALL) is None


def test_a_negative_count_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        estimate_drain([(START, 3), (START + 10, -1)], stall_after=NO_STALL)


def assert_sane(estimate: DrainEstimate | None) -> None:
    if estimate is None:
        return
    assert math.isfinite(estimate.rate_per_minute)
    assert estimate.rate_per_minute >= 0
    if estimate.eta_low is None:
        assert estimate.eta_high is None
        return
    assert math.isfinite(estimate.eta_low)
    assert estimate.eta_low >= 0
    if estimate.eta_high is not None:
        assert math.isfinite(estimate.eta_high)
        assert estimate.eta_low <= estimate.eta_high


poll_gaps = st.floats(min_value=0.5, max_value=120, allow_nan=False)


@given(
    start=st.integers(min_value=0, max_value=100_000),
    steps=st.lists(st.tuples(poll_gaps, st.integers(0, 50)), min_size=1, max_size=80),
)
def test_eta_bounds_are_ordered_and_non_negative_for_any_non_increasing_count(
    start: int, steps: list[tuple[float, int]]
) -> None:
    samples: list[Sample] = [(START, start)]
    for gap, drop in steps:
        samples.append((samples[-1][0] + gap, max(0, samples[-1][1] - drop)))
    assert_sane(estimate_drain(samples, stall_after=60))


@given(
    counts=st.lists(st.integers(0, 10_000), min_size=2, max_size=80),
    gap=poll_gaps,
)
def test_any_count_however_bursty_gives_no_negative_or_infinite_figures(
    counts: list[int], gap: float
) -> None:
    samples = [(START + i * gap, count) for i, count in enumerate(counts)]
    estimate = estimate_drain(samples, stall_after=60)
    assert_sane(estimate)
    if estimate is not None:
        assert format_eta(estimate)


def estimate_of(
    *,
    active: int = 12,
    rate: float = 3.14,
    eta: tuple[float | None, float | None] = (None, None),
    stalled_for: float = 0.0,
    stalled: bool = False,
) -> DrainEstimate:
    return DrainEstimate(
        active=active,
        rate_per_minute=rate,
        eta_low=eta[0],
        eta_high=eta[1],
        stalled=stalled,
        drained=active == 0,
        since_last_drop=stalled_for,
        time_constant=None,
    )


@pytest.mark.parametrize(
    ("estimate", "phrase"),
    [
        (estimate_of(eta=(250, 400)), "12 active, 3.1/min, ETA 4\N{EN DASH}7 min"),
        (estimate_of(eta=(20, 45)), "12 active, 3.1/min, ETA 20\N{EN DASH}45 s"),
        (estimate_of(eta=(6 * 3600, 9.5 * 3600)), "12 active, 3.1/min, ETA 6\N{EN DASH}10 h"),
        (estimate_of(eta=(240, 240)), "12 active, 3.1/min, ETA 4 min"),
        (estimate_of(eta=(250, None)), "12 active, 3.1/min, ETA over 4 min"),
        (estimate_of(), "12 active, 3.1/min, no ETA yet"),
        (estimate_of(stalled=True, stalled_for=330), "12 active, stalled 5 min"),
        (estimate_of(active=0, eta=(0, 0)), "drained"),
    ],
)
def test_format_eta_is_a_short_phrase(estimate: DrainEstimate, phrase: str) -> None:
    assert format_eta(estimate) == phrase
