"""Trying again, with exponential backoff, until a deadline.

What ``ssh.py`` needs of a retry library, in a few lines: tenacity did it, and its import cost
10 ms of every SSH run's start-up (it imports concurrent.futures, logging and its asyncio glue),
and its retrying object was built anew for every command.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def retry(
    call: Callable[[], T],
    *,
    again: Callable[[Exception], bool],
    first: float,
    most: float,
    until: float,
) -> T:
    """What ``call()`` returns. After an exception ``again`` accepts, wait ``first`` seconds,
    then twice as long each time (``most`` at most), and call again; unless the next call would
    start at or after ``until`` (monotonic): then that exception is raised."""
    delay = first
    while True:
        try:
            return call()
        except Exception as exc:
            if not again(exc) or time.monotonic() + delay >= until:
                raise
        time.sleep(delay)
        delay = min(delay * 2, most)
