"""Rolling through a fleet: which node starts when.

Nodes run concurrently up to ``max_unavailable`` (per group, or ``--max-unavailable`` for the
whole run); never both nodes of a pair; a node whose pair is out of service is not started;
after ``--max-failures`` failures no new node starts; the nodes with the fewest active sessions
go first. The decisions are pure (:class:`Fleet`); :func:`roll` runs them with threads.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from upgradectl.errors import ExitCode, UsageError
from upgradectl.model import Inventory

# Exit codes that count towards --max-failures.
FAILURES = frozenset({ExitCode.STEP_FAILED, ExitCode.ATTENTION})
_LIMIT = re.compile(r"^(\d+)(%?)$")


def parse_limit(text: str, size: int) -> int:
    """``2`` or ``25%`` of ``size`` nodes, at least 1: a rollout that may take no node is no rollout."""
    match = _LIMIT.match(text.strip())
    if not match:
        raise UsageError(f"--max-unavailable: expected N or N%, got {text!r}")
    number = int(match.group(1))
    if match.group(2):
        return max(1, math.floor(size * number / 100))
    if number < 1:
        raise UsageError("--max-unavailable: must be at least 1")
    return number


class Outcome(Protocol):
    """What the scheduler needs back from a node's run."""

    @property
    def node(self) -> str: ...
    @property
    def exit_code(self) -> ExitCode: ...
    @property
    def in_service(self) -> bool: ...


OutcomeT = TypeVar("OutcomeT", bound=Outcome)


@dataclass
class Fleet:
    """What is running and what is out of service, and whether a node may start now."""

    inventory: Inventory
    selected: Sequence[str]
    pairs: Mapping[str, str | None]
    override: str | None = None  # --max-unavailable, for the whole run
    max_failures: int | None = None
    running: set[str] = field(default_factory=set)
    out_of_service: set[str] = field(default_factory=set)
    failures: int = 0

    def limits(self, node: str) -> list[tuple[str, list[str], int]]:
        """Each (scope, members, limit) that ``node`` counts against."""
        if self.override is not None:
            return [("run", list(self.selected), parse_limit(self.override, len(self.selected)))]
        scopes = []
        for group in self.inventory.nodes[node].groups:
            members = self.inventory.members(group)
            limit = self.inventory.groups[group].max_unavailable or "1"
            scopes.append((f"group {group}", members, parse_limit(limit, len(members))))
        return scopes or [("run", list(self.selected), 1)]

    def why_not(self, node: str) -> tuple[str, bool] | None:
        """None when ``node`` may start now, else (reason, whether waiting can help)."""
        if self.max_failures is not None and self.failures >= self.max_failures:
            return (
                f"not started: {self.failures} failures reached --max-failures {self.max_failures}",
                False,
            )
        pair = self.pairs.get(node)
        if pair is not None:
            if pair in self.running:
                return f"waiting for its pair {pair}", True
            if pair in self.out_of_service:
                return f"not started: its pair {pair} is not in service", False
        for scope, members, limit in self.limits(node):
            busy = [
                m for m in members if m != node and (m in self.running or m in self.out_of_service)
            ]
            if len(busy) >= limit:
                waiting_helps = any(m in self.running for m in busy)
                return (
                    f"{scope} has {len(busy)} of at most {limit} nodes out of service",
                    waiting_helps,
                )
        return None

    def finished(self, outcome: Outcome) -> None:
        """Record how a node ended."""
        self.running.discard(outcome.node)
        if outcome.exit_code in FAILURES:
            self.failures += 1
        if outcome.in_service:
            self.out_of_service.discard(outcome.node)
        else:
            self.out_of_service.add(outcome.node)


def roll(
    fleet: Fleet,
    order: Sequence[str],
    run_node: Callable[[str], OutcomeT],
    skip: Callable[[str, str], OutcomeT],
    stopping: Callable[[], bool],
) -> list[OutcomeT]:
    """Start nodes in ``order`` as the fleet allows, up to its limits, until all are done or skipped."""
    pending = list(order)
    outcomes: list[OutcomeT] = []
    futures: dict[Future[OutcomeT], str] = {}
    with ThreadPoolExecutor(max_workers=max(1, len(order)), thread_name_prefix="node") as pool:
        while pending or futures:
            if stopping():
                outcomes += [skip(node, "not started: the run was stopped") for node in pending]
                pending.clear()
            for node in list(pending):
                verdict = fleet.why_not(node)
                if verdict is None:
                    fleet.running.add(node)
                    futures[pool.submit(run_node, node)] = node
                    pending.remove(node)
                elif not verdict[1]:
                    outcomes.append(skip(node, verdict[0]))
                    pending.remove(node)
            if not futures:
                continue
            done, _ = wait(futures, timeout=1.0, return_when=FIRST_COMPLETED)
            for future in done:
                futures.pop(future)
                outcome = future.result()
                fleet.finished(outcome)
                outcomes.append(outcome)
    return outcomes
