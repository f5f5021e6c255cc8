"""Durations as operators write them: ``90`` (seconds), ``90s``, ``15m``, ``1.5h``, ``1h30m``."""

from __future__ import annotations

import math
import re

# Each unit may have decimals (`1.5h`), as operators write them.
_AMOUNT = r"\d+(?:\.\d+)?"
_DURATION = re.compile(
    rf"^(?:(?P<d>{_AMOUNT})d)?(?:(?P<h>{_AMOUNT})h)?(?:(?P<m>{_AMOUNT})m)?(?:(?P<s>{_AMOUNT})s)?$"
)
_SECONDS = re.compile(r"^\d+(?:\.\d+)?$")
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
# Longer than any drain or upgrade; beyond it a deadline is a typo (and past ~10^9 years, an
# overflow in the clock arithmetic).
MAX_SECONDS = 366 * 86400


def parse_duration(value: object) -> float:
    """Seconds in ``value``: a duration string, or a plain number of seconds.

    Raises ValueError with the offending text for anything else, including a negative, a
    non-finite (``.nan``, ``.inf``) or an absurdly long one (over ``366d``).
    """
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"not a duration: {value!r} is negative")
        return _bounded(value, repr(value))
    text = str(value).strip()
    if _SECONDS.match(text):  # `--timeout 90`: seconds, as in a YAML number
        return _bounded(float(text), repr(text))
    match = _DURATION.match(text)
    if not text or not match:
        raise ValueError(f"not a duration: {text!r} (write it like 90, 90s, 15m, 1.5h or 1h30m)")
    return _bounded(
        sum(
            float(amount) * _UNIT_SECONDS[unit]
            for unit, amount in match.groupdict().items()
            if amount
        ),
        repr(text),
    )


def _bounded(value: float, written: str) -> float:
    try:
        seconds = float(value)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds):
        raise ValueError(f"not a duration: {written} is not a finite number of seconds")
    if seconds > MAX_SECONDS:
        raise ValueError(f"not a duration: {written} is longer than 366d")
    return seconds


def format_duration(seconds: float) -> str:
    """``5400`` -> ``1h30m``; the inverse of :func:`parse_duration` for display."""
    whole = round(seconds)
    if whole < 60:
        return f"{seconds:.3g}s" if seconds < 10 and seconds != whole else f"{whole}s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
        f"{secs}s" if secs else "",
    ]
    return "".join(parts)
