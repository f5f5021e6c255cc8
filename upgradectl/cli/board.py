"""What the live table knows of a run, in people's words: each node's state, sessions, drain,
projection at the deadline and elapsed time, and the fleet's progress. Pure: events in, text out;
the live view (``views.LiveView``) only draws it, as often as it likes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from upgradectl.estimate import format_eta_range
from upgradectl.events import Event

# A node's state after each event of its run, in words (events not named change nothing).
STATES = {
    "probe": "waiting",
    "node-start": "starting",
    "blocking": "blocking",
    "blocked": "blocked",
    "poll": "draining",
    "forcing": "forcing",
    "forced": "forcing",
    "drained": "drained",
    "aborted": "giving up",
    "upgrading": "upgrading",
    "rebooting": "rebooting",
    "back": "verifying",
    "upgraded": "verifying",
    "verified": "unblocking",
    "unblocking": "unblocking",
    "unblocked": "back in service",
    "rolling-back": "rolling back",
    "rolled-back": "verifying",
    "failed": "failed: recovering",
    "left-blocked": "left blocked",
    "attention": "needs attention",
    "interrupted": "interrupted",
    "patching": "patching",
    "patched": "patched",
    "would": "dry run",
}
# A node's last word, from its result.
RESULTS = {
    "upgraded": "back in service",
    "unblocked": "back in service",
    "patched": "patched",
    "drained": "drained: left blocked",
    "aborted": "gave up",
    "failed": "failed",
    "attention": "needs attention",
    "unreachable": "unreachable",
    "interrupted": "interrupted",
    "locked": "locked by another run",
    "current": "current",
    "deferred": "deferred",
    "skipped": "skipped",
    "dry-run": "dry run done",
}
# What the straggler policy will do at the deadline (the poll's `at_deadline`), in words.
OUTLOOK = {"force": "will force them", "abort": "will give up", "wait": "will keep waiting"}
COLUMNS = ("node", "state", "active", "drain", "at the deadline", "elapsed", "deadline")


@dataclass
class _Node:
    state: str = "waiting"
    active: int | None = None
    drain: str = ""
    outlook: str = ""
    started: float | None = None
    ended: float | None = None
    deadline: float | None = None
    forcing: bool = False


@dataclass
class Board:
    """The run as the live table shows it; fed events from any thread, read from another."""

    nodes: dict[str, _Node] = field(default_factory=dict)
    forced: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __call__(self, event: Event) -> None:
        with self._lock:
            if event.kind == "run-start":
                for name in event.data.get("nodes", ()):
                    self.nodes.setdefault(name, _Node())
            if event.kind == "forced":
                self.forced += int(event.data.get("count", 0))
            if event.node is not None:
                _update(self.nodes.setdefault(event.node, _Node()), event)

    def header(self) -> str:
        """``1/4 done, 2 in flight, 1 waiting; 3 sessions forced``."""
        with self._lock:
            done = sum(node.ended is not None for node in self.nodes.values())
            flying = sum(n.started is not None and n.ended is None for n in self.nodes.values())
            waiting = len(self.nodes) - done - flying
            forced = self.forced
        plural = "s" if forced != 1 else ""
        return (f"{done}/{len(self.nodes)} done, {flying} in flight, {waiting} waiting; "
                f"{forced} session{plural} forced")  # fmt: skip

    def rows(self, now: float) -> list[tuple[str, ...]]:
        """One row per node, in COLUMNS' order; elapsed runs until the node is done."""
        with self._lock:
            return [_row(name, node, now) for name, node in self.nodes.items()]


def _update(node: _Node, event: Event) -> None:
    data = event.data
    if event.kind == "node-start" and node.started is None:
        node.started = event.time
    if event.kind == "forcing":
        node.forcing = True
    if event.kind == "poll":
        _polled(node, data)
    elif event.kind in ("drained", "aborted"):
        node.outlook = ""
    if event.kind == "node-done":
        node.ended = event.time
        node.state = _result_words(data)
    elif event.kind in STATES and node.ended is None:
        node.state = "forcing" if event.kind == "poll" and node.forcing else STATES[event.kind]


def _polled(node: _Node, data: Mapping[str, Any]) -> None:
    node.active = int(data["active"])
    node.deadline = float(data["deadline"])
    node.drain = _drain_words(data)
    left, then = data.get("left_at_deadline"), data.get("at_deadline")
    if left is None or then is None:
        node.outlook = ""
    elif then == "drained":
        node.outlook = "empty before it"
    else:
        # The limit matters where it decides: a force, or a give-up for having too many to force.
        limited = then == "force" or (then == "abort" and data.get("stragglers") == "force")
        limit = f" (max {data['max_stragglers']})" if limited else ""
        node.outlook = f"{left} left at the deadline: {OUTLOOK[then]}{limit}"


def _drain_words(data: Mapping[str, Any]) -> str:
    if "rate_per_minute" not in data or not data["active"]:
        return ""
    if data.get("stalled"):
        return "stalled"
    eta = format_eta_range(data.get("eta_low"), data.get("eta_high"))
    return f"{data['rate_per_minute']:.1f}/min, {eta}"


def _result_words(data: Mapping[str, Any]) -> str:
    result = str(data.get("result", ""))
    words = RESULTS.get(result, result)
    if words == "back in service" and data.get("in_service") is False:
        return f"{result}: left blocked, as found"
    return words


def _row(name: str, node: _Node, now: float) -> tuple[str, ...]:
    end = node.ended if node.ended is not None else now
    elapsed = _clock_span(end - node.started) if node.started is not None else ""
    deadline = time.strftime("%H:%M:%S", time.localtime(node.deadline)) if node.deadline else ""
    active = "" if node.active is None else str(node.active)
    return (name, node.state, active, node.drain, node.outlook, elapsed, deadline)


def _clock_span(seconds: float) -> str:
    """Elapsed as a stopwatch shows it, to the second: ``0:07``, ``12:05``, ``1:02:09``."""
    minutes, secs = divmod(int(max(seconds, 0)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
