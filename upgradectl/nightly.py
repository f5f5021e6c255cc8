"""What makes a run safe to leave to cron: the maintenance window, and the run's report,
metrics and notifications."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from upgradectl.duration import format_duration
from upgradectl.errors import NotNow, UsageError
from upgradectl.events import Event
from upgradectl.metrics import write_metrics
from upgradectl.notify import Notifier, check_url
from upgradectl.plan import NodePlan
from upgradectl.window import Window, cut_deadline, describe, fits, parse_window
from upgradectl.wording import chat_text

# The events a webhook hears about: the run starting, each node finishing, the run ending.
NOTIFIED_KINDS = frozenset({"run-start", "node-done", "summary"})


@dataclass(frozen=True)
class Unattended:
    """The options for runs nobody watches: ``--window``, ``--report``, ``--metrics-file``, ``--notify``."""

    window: Window | None = None
    report: str | None = None
    metrics_file: str | None = None
    notify: str | None = None


def unattended_options(
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
        url = check_url(notify) if notify else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return Unattended(parsed, report, metrics_file, url)


def now_utc() -> datetime:
    """The current time, aware (windows compare aware times)."""
    return datetime.now(UTC)


def require_open(window: Window | None, now: datetime) -> None:
    """Outside the window nothing starts: NotNow (exit 75) naming when it opens."""
    if window is not None and window.span_at(now) is None:
        opens = window.next_open(now).astimezone(window.tz)
        raise NotNow(
            f"the maintenance window {describe(window)} is closed; it opens {opens:%Y-%m-%d %H:%M %Z}"
        )


def _needs(plan: NodePlan) -> float:
    """How long a node may take: its drain deadline plus its expected upgrade time."""
    upgrade = plan.steps.get("upgrade")
    return plan.drain.timeout + (upgrade.expected or 0.0 if upgrade else 0.0)


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
    upgrade = plan.steps.get("upgrade")
    expected = upgrade.expected or 0.0 if upgrade else 0.0
    cut = cut_deadline(
        window, now, datetime.fromtimestamp(now.timestamp() + plan.drain.timeout, UTC), expected
    )
    timeout = max(0.0, min(plan.drain.timeout, (cut - now).total_seconds()))
    stragglers = "abort" if plan.drain.stragglers == "wait" else plan.drain.stragglers
    return replace(plan, drain=replace(plan.drain, timeout=timeout, stragglers=stragglers))


class Notifications:
    """An event sink that POSTs the run's milestones to a webhook, never failing the run."""

    def __init__(self, url: str) -> None:
        self.notifier = Notifier(url)

    def __call__(self, event: Event) -> None:
        if event.kind in NOTIFIED_KINDS:
            # `text` is what Slack- and Mattermost-style incoming webhooks show; the rest is data.
            self.notifier.post({**event.as_dict(), "text": chat_text(event)})

    def close(self) -> str | None:
        """Deliver what is queued (bounded wait); the last error, if any delivery failed."""
        delivered = self.notifier.close(timeout=10.0)
        return None if delivered else (self.notifier.last_error or "not every event was delivered")


def write_outputs(options: Unattended, summary: dict[str, Any], now: float) -> None:
    """The JSON report and the Prometheus metrics, each written atomically."""
    if options.report:
        _write_atomically(options.report, json.dumps(summary, indent=2, default=str) + "\n")
    if options.metrics_file:
        write_metrics(options.metrics_file, summary, now)


def _write_atomically(path: str, text: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    with tempfile.NamedTemporaryFile(
        "w", dir=folder, delete=False, suffix=".tmp", encoding="utf-8"
    ) as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(stream.name, path)
