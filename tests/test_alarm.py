"""The process's alarms: actions at their deadlines, in order, from one thread."""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable

from conftest import wait_for

from upgradectl.transport.alarm import Alarms


def test_alarms_run_at_their_deadlines_in_deadline_order_whatever_order_they_were_set() -> None:
    alarms = Alarms()
    ran: list[tuple[str, float]] = []
    start = time.monotonic()

    def say(name: str) -> Callable[[], None]:
        return lambda: ran.append((name, time.monotonic()))

    for name, after in (("third", 0.3), ("first", 0.1), ("second", 0.2)):
        alarms.at(start + after, say(name))
    wait_for(lambda: len(ran) == 3, timeout=5)
    assert [name for name, _ in ran] == ["first", "second", "third"]
    assert all(at - start >= after for (_, at), after in zip(ran, (0.1, 0.2, 0.3), strict=True))


def test_a_cancelled_alarm_never_runs_and_lets_go_of_its_action_at_once() -> None:
    alarms = Alarms()
    ran: list[str] = []

    class Action:
        def __call__(self) -> None:
            ran.append("cancelled")

    action = Action()
    gone = weakref.ref(action)
    alarms.at(time.monotonic() + 0.1, action).cancel()
    del action
    assert gone() is None  # not held until its deadline, which may be hours away
    alarms.at(time.monotonic() + 0.2, lambda: ran.append("kept"))
    wait_for(lambda: ran, timeout=5)
    assert ran == ["kept"]


def test_every_alarm_is_run_by_one_thread_and_a_failing_action_stops_none_of_the_others() -> None:
    alarms = Alarms()
    threads_before = threading.active_count()
    ran: list[threading.Thread] = []

    def fail() -> None:
        raise RuntimeError("an action's own fault")

    soon = time.monotonic() + 0.05
    alarms.at(soon, fail)
    for number in range(100):
        alarms.at(soon + number / 1000, lambda: ran.append(threading.current_thread()))
    assert threading.active_count() == threads_before + 1
    wait_for(lambda: len(ran) == 100, timeout=5)
    assert len(set(ran)) == 1


def test_an_alarm_due_first_wakes_the_thread_sleeping_until_a_later_one() -> None:
    alarms = Alarms()
    awake, ran = threading.Event(), threading.Event()
    alarms.at(time.monotonic() + 3600, lambda: None)
    alarms.at(time.monotonic(), awake.set)  # once run, the thread sleeps until the hour is up
    assert awake.wait(5)
    alarms.at(time.monotonic() + 0.05, ran.set)
    assert ran.wait(5)


def test_cancelled_alarms_do_not_pile_up_while_their_deadlines_are_far_away() -> None:
    alarms = Alarms()
    for _ in range(2000):
        alarms.at(time.monotonic() + 3600, lambda: None).cancel()
    assert len(alarms._heap) < 300  # what the heap holds is the point
