"""Cut prediction: whom a deadline would cut, judged by the ages of the live sessions.

Pure logic: the tests feed session populations with a known answer (a steady state of known
lengths) and state the tolerance each answer is held to.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from upgradectl.cut import CutPrediction, describe_cut, predict_cut
from upgradectl.estimate import DrainEstimate
from upgradectl.parsing import Session


def steady_state_sessions(
    rng: random.Random, draw_length: Callable[[random.Random], float], until: float
) -> list[Session]:
    """The sessions live at ``until`` after Poisson arrivals (one per 2 s) since time 0."""
    sessions: list[Session] = []
    started = 0.0
    while (started := started + rng.expovariate(0.5)) < until:
        if started + draw_length(rng) > until:
            age = until - started
            sessions.append(Session(id=f"call-{len(sessions)}", age=age, line=f"{age:.0f}"))
    return sessions


def require_cut(prediction: CutPrediction | None) -> CutPrediction:
    assert prediction is not None
    return prediction


MEAN_LENGTH = 600.0


def exponential_sessions(seed: int) -> list[Session]:
    rng = random.Random(seed)
    return steady_state_sessions(rng, lambda r: r.expovariate(1 / MEAN_LENGTH), 20 * MEAN_LENGTH)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("horizon", [60.0, 300.0, 1200.0])
def test_expected_cut_of_exponential_lengths_matches_the_analytic_answer(
    seed: int, horizon: float
) -> None:
    sessions = exponential_sessions(seed)
    prediction = require_cut(predict_cut(sessions, horizon))
    analytic = len(sessions) * math.exp(-horizon / MEAN_LENGTH)
    # Tolerance: n ages pin the mean to 1/sqrt(n), which moves log(exp(-T/mean)) by T/mean
    # times that; allow three times as much.
    tolerance = 3 * (horizon / MEAN_LENGTH) / math.sqrt(len(sessions))
    assert abs(math.log(prediction.expected_cut / analytic)) <= tolerance
    assert "exponential" in prediction.model


LOMAX_SHAPE, LOMAX_SCALE = 2.5, 900.0


def lomax_length(rng: random.Random) -> float:
    """A Lomax (Pareto II) session length, by inverting its survival function."""
    return LOMAX_SCALE * (float((1 - rng.random()) ** (-1 / LOMAX_SHAPE)) - 1)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_with_heavy_tailed_lengths_the_oldest_sessions_are_the_likely_cut_ones(seed: int) -> None:
    sessions = steady_state_sessions(random.Random(seed), lomax_length, 200 * LOMAX_SCALE)
    horizon = 3600.0
    prediction = require_cut(predict_cut(sessions, horizon))
    oldest_first = sorted(sessions, key=lambda session: -(session.age or 0))
    assert 0 < len(prediction.likely_cut) < len(sessions) / 10
    assert list(prediction.likely_cut) == oldest_first[: len(prediction.likely_cut)]
    assert "heavy-tailed" in prediction.model
    # Against the answer from the true lengths, S(a+T)/S(a) summed over the live sessions. A tail
    # is hard to pin down from ~300 ages: over 30 seeds the ratio to this ran from 0.70 to 1.14.
    truth = sum(
        ((LOMAX_SCALE + age) / (LOMAX_SCALE + age + horizon)) ** LOMAX_SHAPE
        for age in (session.age or 0 for session in sessions)
    )
    assert prediction.expected_cut == pytest.approx(truth, rel=0.35)


def decay_estimate(active: int, time_constant: float | None) -> DrainEstimate:
    return DrainEstimate(
        active=active,
        rate_per_minute=1.0,
        eta_low=None,
        eta_high=None,
        stalled=False,
        drained=False,
        since_last_drop=0.0,
        time_constant=time_constant,
    )


def unknown_ages(count: int) -> list[Session]:
    return [Session(id=f"call-{i}", age=None, line=f"call-{i}") for i in range(count)]


def test_without_ages_the_drain_decay_predicts_the_cut() -> None:
    decay = decay_estimate(active=10, time_constant=600)
    prediction = require_cut(predict_cut(unknown_ages(10), 300, decay=decay))
    assert prediction.expected_cut == pytest.approx(10 * math.exp(-0.5))
    assert len(prediction.likely_cut) == 10  # every session has the same 61 % odds
    assert "drain rate" in prediction.model
    unlikely = require_cut(predict_cut(unknown_ages(10), 1200, decay=decay))
    assert unlikely.likely_cut == ()


def test_active_sessions_that_are_not_listed_still_count_towards_the_expected_cut() -> None:
    decay = decay_estimate(active=25, time_constant=600)
    prediction = require_cut(predict_cut([], 600, decay=decay))
    assert prediction.expected_cut == pytest.approx(25 * math.exp(-1))
    assert prediction.likely_cut == ()


def test_a_session_of_unknown_age_gets_the_average_odds_of_the_known_ones() -> None:
    known = exponential_sessions(4)
    with_unknown = require_cut(predict_cut([*known, *unknown_ages(1)], 300))
    without = require_cut(predict_cut(known, 300))
    per_session = without.expected_cut / len(known)
    assert with_unknown.expected_cut - without.expected_cut == pytest.approx(per_session)
    assert with_unknown.likely_cut[-1].age is None  # unknown ages sort last


def test_with_nothing_to_go_on_there_is_no_prediction() -> None:
    two_ages = [Session(id="a", age=100, line="a"), Session(id="b", age=200, line="b")]
    assert predict_cut(unknown_ages(5), 300) is None
    assert predict_cut(two_ages, 300) is None
    assert predict_cut(two_ages, 300, decay=decay_estimate(2, None)) is None


def test_a_negative_horizon_is_refused() -> None:
    with pytest.raises(ValueError, match="horizon"):
        predict_cut(exponential_sessions(1), -1)


@given(
    ages=st.lists(st.floats(min_value=0, max_value=1e6), min_size=3, max_size=60),
    horizon=st.floats(min_value=0, max_value=1e5),
)
@example(ages=[5e-324] * 3, horizon=10.0)  # ages all but zero
def test_the_likely_cut_are_always_the_oldest_and_the_expectation_is_bounded(
    ages: list[float], horizon: float
) -> None:
    sessions = [Session(id=str(i), age=age, line="") for i, age in enumerate(ages)]
    prediction = predict_cut(sessions, horizon)
    if prediction is None:  # every age (all but) zero: nothing to fit
        assert statistics.fmean(ages) < 1e-3
        return
    assert -1e-9 <= prediction.expected_cut <= len(sessions) + 1e-9
    likely_ages = [session.age or 0 for session in prediction.likely_cut]
    assert likely_ages == sorted(likely_ages, reverse=True)
    spared = [session.age or 0 for session in sessions if session not in prediction.likely_cut]
    if likely_ages and spared:
        assert min(likely_ages) >= max(spared)


def cut(expected: float, *ages: float | None) -> CutPrediction:
    likely = tuple(Session(id=str(i), age=age, line="") for i, age in enumerate(ages))
    return CutPrediction(expected_cut=expected, likely_cut=likely, model="test")


@pytest.mark.parametrize(
    ("prediction", "sentence"),
    [
        (
            cut(3.2, 4000, 3500, 3010),
            "3 sessions are older than 50 min and would likely be cut at the 1h deadline",
        ),
        (
            cut(1.0, 3010),
            "1 session is older than 50 min and would likely be cut at the 1h deadline",
        ),
        (cut(2.6, 4000, None), "2 sessions would likely be cut at the 1h deadline"),
        (cut(2.6), "about 3 sessions would be cut at the 1h deadline"),
        (cut(0.3), "no session would likely be cut at the 1h deadline"),
    ],
)
def test_describe_cut_is_one_sentence(prediction: CutPrediction, sentence: str) -> None:
    assert describe_cut(prediction, "at the 1h deadline") == sentence


def test_describe_cut_without_a_deadline_text_has_no_trailing_space() -> None:
    assert describe_cut(cut(0.0), "") == "no session would likely be cut"
