"""Poll a condition until it holds or a deadline passes: how the lab and its tests wait."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.05,
    *,
    what: str | None = None,
) -> T:
    """Call `predicate` every `interval` seconds until it returns something truthy, and return that.

    Raises TimeoutError naming `what` (or the predicate) and its last result when `timeout` passes.
    Exceptions from the predicate propagate at once: a server that died is not worth waiting for.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            subject = what or getattr(predicate, "__qualname__", repr(predicate))
            raise TimeoutError(
                f"gave up after {timeout:g}s waiting for {subject}; last result: {result!r}"
            )
        time.sleep(interval)
