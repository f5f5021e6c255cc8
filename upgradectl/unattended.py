"""The options of a run nobody watches: ``--window``, ``--report``, ``--metrics-file``, ``--notify``."""

from __future__ import annotations

from dataclasses import dataclass

from upgradectl.errors import UsageError
from upgradectl.window import Window, parse_window


@dataclass(frozen=True)
class Unattended:
    """The options of an unattended run, validated."""

    window: Window | None = None
    report: str | None = None
    metrics_file: str | None = None
    notify: str | None = None


def parse_unattended(
    window: str | None,
    tz: str | None,
    report: str | None,
    metrics_file: str | None,
    notify: str | None,
) -> Unattended:
    """Validate the options of an unattended run: a bad one is a usage error before anything runs."""
    if tz is not None and window is None:
        raise UsageError("--tz goes with --window")
    try:
        parsed = parse_window(window, tz) if window else None
        url = None
        if notify:
            # http.client and urllib (20 ms of start-up) only for a run that posts to a webhook.
            from upgradectl.notify import check_url  # noqa: PLC0415

            url = check_url(notify)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return Unattended(parsed, report, metrics_file, url)
