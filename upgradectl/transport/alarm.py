"""Actions due at deadlines, all run by one thread of the process: a deadline on a wait that has
none of its own (paramiko's ``exec_command`` waits for the server's reply for ever).

A ``threading.Timer`` per wait was a thread started, woken to be cancelled and ended per command:
six a node, the largest share of what the controller spent on a command after paramiko itself.
Here an alarm is an entry in a heap: setting one wakes the thread only when it is due before
every other, and cancelling one wakes nothing (its entry is dropped when it comes up, or when
cancelled entries are most of the heap: a step may wait hours).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable

_SWEEP_EVERY = 256


class Alarm:
    """One action due at a deadline; ``cancel`` before it is due and it never runs."""

    __slots__ = ("action", "deadline")

    def __init__(self, deadline: float, action: Callable[[], object]) -> None:
        self.deadline = deadline
        self.action: Callable[[], object] | None = action

    def cancel(self) -> None:
        """Never run the action (what it holds is let go now, not at the deadline)."""
        self.action = None


class Alarms:
    """The process's alarms, run in deadline order by one daemon thread, started on first use."""

    def __init__(self) -> None:
        self._due = threading.Condition()
        self._heap: list[tuple[float, int, Alarm]] = []
        self._order = itertools.count()  # equal deadlines: first set, first run
        self._thread: threading.Thread | None = None
        self._set = 0  # alarms set so far

    def at(self, deadline: float, action: Callable[[], object]) -> Alarm:
        """Run ``action`` at ``deadline`` (``time.monotonic()``) unless cancelled first."""
        alarm = Alarm(deadline, action)
        with self._due:
            self._set += 1
            if self._set % _SWEEP_EVERY == 0:
                self._sweep()
            heapq.heappush(self._heap, (deadline, next(self._order), alarm))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="upgradectl-alarms")
                self._thread.daemon = True  # it only ever waits: never a reason to stay up
                self._thread.start()
            elif self._heap[0][2] is alarm:  # due before the one the thread sleeps until
                self._due.notify()
        return alarm

    def _sweep(self) -> None:
        """Drop the cancelled entries when they are most of the heap (looked at once every
        ``_SWEEP_EVERY`` alarms: a look is a pass over the heap)."""
        live = [entry for entry in self._heap if entry[2].action is not None]
        if 2 * len(live) < len(self._heap):
            self._heap = live
            heapq.heapify(self._heap)

    def _run(self) -> None:
        with self._due:
            while True:
                if not self._heap:
                    self._due.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self._due.wait(wait)
                    continue
                action = heapq.heappop(self._heap)[2].action
                if action is not None:
                    self._due.release()  # an action may take its time, or set an alarm
                    try:
                        action()
                    except Exception:  # noqa: S110
                        # Not this thread's to report, and it must live on: every later alarm of
                        # the process depends on it. The action's owner sees what it left (the
                        # channel closed or not) when its own wait ends.
                        pass
                    finally:
                        self._due.acquire()


# One for the process: every transport's waits share its thread.
ALARMS = Alarms()
