"""What every node run of one invocation shares: connections, journal, events, clocks, Stop."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from upgradectl import runrecords
from upgradectl.connections import Connections
from upgradectl.events import Events
from upgradectl.journal import Journal


class Stop:
    """The operator's request to stop (Ctrl-C, SIGTERM), shared by every node of the run."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def request(self, reason: str) -> None:
        """Ask the run to stop at its next safe point."""
        self.reason = reason
        self._event.set()

    @property
    def requested(self) -> bool:
        """Whether a stop was asked for."""
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True (at once) when a stop is asked for."""
        return self._event.wait(max(seconds, 0.0))


@dataclass
class RunContext:
    """What every node run of one invocation shares."""

    run_id: str
    command: str
    connections: Connections
    journal: Journal
    events: Events
    stop: Stop
    state_dir: str
    dry_run: bool = False
    break_lock: bool = False
    # Of a resumed run: the nodes it had found blocked by hand. They stay blocked, whatever the
    # stage it carries on from (the earlier runs' records say nothing of a hand's block).
    hand_blocked: frozenset[str] = frozenset()
    # Of a resumed run: per node, its last record when that is an intention (`blocking`,
    # `forcing`, `unblocking`) with no outcome after it: `resume` asks the node what became of it.
    intentions: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    _earlier: Mapping[str, Mapping[str, Any]] | None = field(default=None, init=False, repr=False)
    _earlier_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def left_blocked_by_earlier_runs(self, node: str) -> Mapping[str, Any] | None:
        """The record of an earlier run that left ``node`` blocked by this tool, if any.

        The state dir holds every past run: it is read once per invocation, not once per node.
        """
        with self._earlier_lock:
            if self._earlier is None:
                self._earlier = runrecords.left_blocked(self.state_dir)
            return self._earlier.get(node)
