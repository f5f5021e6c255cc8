"""Cut prediction: which live sessions a deadline would cut, judged by the ages seen.

Pure functions over the session ages the ``sessions`` step lists (and the drain's fitted decay
when it lists none): no I/O and no clock.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from upgradectl.estimate import DrainEstimate, format_age
from upgradectl.parsing import Session


@dataclass(frozen=True)
class CutPrediction:
    """Who would still be live at a deadline, and what that guess assumed."""

    expected_cut: float
    likely_cut: tuple[Session, ...]
    """Sessions at least even odds to be cut, oldest first (unknown ages last)."""
    model: str


# A session counts as likely cut at even odds or worse.
_LIKELY = 0.5
# Fewer ages than this say too little about the shape of the lengths.
MIN_AGES_FOR_FIT = 3
# Ages that average under a millisecond are all but zero: they say nothing about lengths (and
# the scale search below them would underflow).
_MIN_MEAN_AGE = 1e-3
# The heavy-tailed fit searches its scale over this many decades either side of the mean age.
_SCALE_DECADES = 3
_SCALE_STEPS_PER_DECADE = 40
# The exponential is the heavy-tailed family's limit, so twice the log-likelihood gain of the
# heavy-tailed fit is half chi-square(1) distributed when lengths are exponential: believe a heavy
# tail only when the gain passes that likelihood-ratio test at 1 % (2 * gain > 5.41).
_HEAVY_TAIL_MIN_GAIN = 5.41 / 2


@dataclass(frozen=True)
class _Exponential:
    """Memoryless session lengths: every session, whatever its age, has the same odds."""

    mean: float

    def still_live(self, age: float, horizon: float) -> float:
        del age  # memoryless
        return math.exp(-horizon / self.mean)

    def describe(self) -> str:
        return f"exponential lengths, mean {format_age(self.mean)}"


@dataclass(frozen=True)
class _Lomax:
    """Heavy-tailed (Pareto II) lengths, ``S(x) = (1 + x/scale) ** -shape``: old calls last."""

    shape: float
    scale: float

    def still_live(self, age: float, horizon: float) -> float:
        return float(((self.scale + age) / (self.scale + age + horizon)) ** self.shape)

    def describe(self) -> str:
        return f"heavy-tailed lengths (Lomax shape {self.shape:.2g})"


def predict_cut(
    sessions: Sequence[Session], horizon: float, *, decay: DrainEstimate | None = None
) -> CutPrediction | None:
    """Which live sessions would still be live ``horizon`` seconds from now.

    Model: in steady state the ages of the live sessions have a density proportional to the
    survival function S of session length, so the snapshot of ages estimates S, and a session of
    age a outlives the horizon T with probability S(a+T)/S(a). Two families are fitted to the
    ages by maximum likelihood: exponential lengths (ages are then exponential with the same
    mean; every session has the same odds) and heavy-tailed Lomax lengths (ages are then Lomax
    with shape one less; the oldest sessions are the likeliest to last). The Lomax fit is taken
    only when it beats the exponential in a likelihood-ratio test at 1 %. On simulated steady
    states of about 300 exponential sessions the expected cut lands within three standard errors
    of the analytic answer. Take the snapshot before or at the block: once arrivals stop, the
    live ages drift older and overstate the lengths.

    Sessions of unknown age get the average odds of the known ones. With fewer than
    ``MIN_AGES_FOR_FIT`` known ages, the count's decay stands in as exponential lengths with the
    fitted time constant. Active sessions that ``decay`` counts but ``sessions`` does not list
    add to ``expected_cut`` at the same average odds. Returns None when neither is known.
    """
    if horizon < 0:
        raise ValueError(f"horizon must not be negative: {horizon}")
    ages = [session.age for session in sessions if session.age is not None]
    fitted = _fit_lengths(ages)
    if fitted is not None:
        model: _Exponential | _Lomax = fitted
        source = f"fitted to {len(ages)} session ages"
    elif decay is not None and decay.time_constant is not None:
        model, source = _Exponential(decay.time_constant), "taken from the drain rate"
    else:
        return None
    # The decay fallback is memoryless, so with no ages any age gives its odds.
    unknown_age_odds = statistics.fmean(model.still_live(age, horizon) for age in ages or [0.0])

    def odds(session: Session) -> float:
        if session.age is None:
            return unknown_age_odds
        return model.still_live(session.age, horizon)

    unlisted = max(0, decay.active - len(sessions)) if decay else 0
    likely = [session for session in sessions if odds(session) >= _LIKELY]
    return CutPrediction(
        expected_cut=sum(map(odds, sessions)) + unlisted * unknown_age_odds,
        likely_cut=tuple(sorted(likely, key=_oldest_first)),
        model=f"{model.describe()}, {source}",
    )


def _oldest_first(session: Session) -> tuple[bool, float]:
    return session.age is None, -(session.age or 0.0)


def _fit_lengths(ages: Sequence[float]) -> _Exponential | _Lomax | None:
    """The better-supported length family for a snapshot of ages; None if too few ages."""
    if len(ages) < MIN_AGES_FOR_FIT:
        return None
    mean_age = statistics.fmean(ages)
    if mean_age < _MIN_MEAN_AGE:
        return None
    exponential_loglik = -len(ages) * (math.log(mean_age) + 1)
    heavy, heavy_loglik = _fit_lomax(ages, mean_age)
    if heavy_loglik - exponential_loglik > _HEAVY_TAIL_MIN_GAIN:
        return heavy
    return _Exponential(mean_age)


def _fit_lomax(ages: Sequence[float], mean_age: float) -> tuple[_Lomax, float]:
    """Lomax lengths maximising the likelihood of the ages, and that log-likelihood.

    Ages of Lomax(shape a, scale s) lengths are Lomax(a - 1, s). For a given scale the best age
    shape is n / sum(log1p(age/s)), so only the scale is searched, on a logarithmic grid.
    """
    steps = _SCALE_DECADES * _SCALE_STEPS_PER_DECADE
    scales = (
        mean_age * 10 ** (step / _SCALE_STEPS_PER_DECADE) for step in range(-steps, steps + 1)
    )
    return max((_lomax_at_scale(ages, scale) for scale in scales), key=lambda fit: fit[1])


def _lomax_at_scale(ages: Sequence[float], scale: float) -> tuple[_Lomax, float]:
    n = len(ages)
    log_sum = math.fsum(math.log1p(age / scale) for age in ages)
    age_shape = n / log_sum
    loglik = n * math.log(age_shape / scale) - n - log_sum
    return _Lomax(shape=age_shape + 1, scale=scale), loglik


def describe_cut(prediction: CutPrediction, deadline_text: str) -> str:
    """One sentence for the dry-run and the report.

    ``deadline_text`` names the deadline, e.g. ``"at the 1h deadline"``; the result reads
    ``"3 sessions are older than 50 min and would likely be cut at the 1h deadline"``.
    """
    likely = prediction.likely_cut
    ages = [session.age for session in likely if session.age is not None]
    if likely and len(ages) == len(likely):
        verb = "is" if len(likely) == 1 else "are"
        sentence = (
            f"{_sessions(len(likely))} {verb} older than {format_age(min(ages))}"
            " and would likely be cut"
        )
    elif likely:
        sentence = f"{_sessions(len(likely))} would likely be cut"
    elif expected := round(prediction.expected_cut):
        sentence = f"about {_sessions(expected)} would be cut"
    else:
        sentence = "no session would likely be cut"
    return f"{sentence} {deadline_text}".rstrip()


def _sessions(count: int) -> str:
    return f"{count} session" if count == 1 else f"{count} sessions"
