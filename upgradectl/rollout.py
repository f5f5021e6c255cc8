"""Rolling through a fleet: which node starts when.

Nodes run concurrently up to ``max_unavailable`` (per group, or ``--max-unavailable`` for the
whole run); never both nodes of a pair; a node whose pair is out of service is not started;
after ``--max-failures`` failures no new node starts; the nodes with the fewest active sessions
go first. The decisions are pure (:class:`Fleet`); :func:`roll` runs them with threads.

A node whose state is not known yet (its probe has not answered) counts as out of service for
the limits, and a node waits for its pair's probe: :func:`roll` can then start each node as
soon as its own probe is in (:class:`Arrivals`), with no wait for the whole fleet's, and no
limit is exceeded by a node found out of service late.
"""

from __future__ import annotations

import bisect
import functools
import math
import queue
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

from upgradectl.errors import ExitCode, UsageError
from upgradectl.model import Inventory

# Exit codes that count towards --max-failures.
FAILURES = frozenset({ExitCode.STEP_FAILED, ExitCode.ATTENTION})
# How often a rollout waiting on running nodes looks whether the operator asked it to stop.
STOP_CHECK_SECONDS = 1.0
_LIMIT = re.compile(r"^(\d+)(%?)$")


def parse_limit(text: str, size: int, what: str = "--max-unavailable") -> int:
    """``2``, or ``25%`` of ``size`` nodes but at least 1: a rollout that may take no node is no rollout."""
    match = _LIMIT.match(text.strip())
    if not match:
        raise UsageError(f"{what}: expected N or N%, got {text!r}")
    number = int(match.group(1))
    if match.group(2):
        if not 1 <= number <= 100:
            raise UsageError(f"{what}: a percentage must be from 1% to 100%, got {text!r}")
        return max(1, math.floor(size * number / 100))
    if number < 1:
        raise UsageError(f"{what}: must be at least 1, got {text!r}")
    return number


def fewest_active_first(active: Mapping[str, int | None]) -> list[str]:
    """Node names by live session count, fewest first; unknown counts last; ties keep their order."""
    return sorted(active, key=lambda name: (active[name] is None, active[name] or 0))


class Outcome(Protocol):
    """What the scheduler needs back from a node's run."""

    @property
    def node(self) -> str: ...
    @property
    def exit_code(self) -> ExitCode: ...
    @property
    def in_service(self) -> bool: ...


OutcomeT = TypeVar("OutcomeT", bound=Outcome)


class Hold(NamedTuple):
    """Why a node may not start now; ``final`` when nothing left in this run can change that."""

    reason: str
    final: bool


STOPPED = Hold("not started: the run was stopped", final=True)


@dataclass(frozen=True)
class Scope:
    """Nodes of which at most ``limit`` may be out of service at once: a group, or the whole run."""

    name: str
    members: tuple[str, ...]
    limit: int

    @functools.cached_property
    def member_set(self) -> frozenset[str]:
        """The members, for set arithmetic."""
        return frozenset(self.members)


@dataclass
class Fleet:
    """What is waiting, running and out of service, and whether a node may start now.

    ``out_of_service`` starts as the probe found the fleet (pairs and group members outside the
    selection included) and follows each node's outcome. A node waits only on nodes of this run
    that are running or still waiting to start; that is what makes every rollout end.
    """

    inventory: Inventory
    selected: Sequence[str]
    pairs: Mapping[str, str | None]
    override: str | None = None  # --max-unavailable, for the whole run
    max_failures: int | None = None
    out_of_service: set[str] = field(default_factory=set)
    unknown: set[str] = field(default_factory=set)  # not probed yet: may be out of service
    halted: str | None = None  # why no node may start any more (a refused downgrade)
    pending: set[str] = field(default_factory=set)
    running: set[str] = field(default_factory=set)
    failures: int = 0
    scopes: dict[str, list[Scope]] = field(init=False)

    def __post_init__(self) -> None:
        # Every limit is read now: a bad one is a usage error before any node starts. Each scope
        # is made once and shared by its members: a scope per node made a group of a thousand
        # nodes a thousand times, each with its own set of members (O(nodes^2): 41 MB and
        # 0.17 s for one group of 1,000).
        made: dict[str, Scope] = {}
        self.scopes = {node: self._scopes_of(node, made) for node in self.selected}

    def _scopes_of(self, node: str, made: dict[str, Scope]) -> list[Scope]:
        """``node``'s scopes, taken from ``made`` (by name) or made there."""
        if self.override is not None:
            names = ["the run"]
        else:
            names = [f"group {group}" for group in self.inventory.nodes[node].groups] or [""]
        for name in names:
            if name not in made:
                made[name] = self._scope_named(name)
        return [made[name] for name in names]

    def _scope_named(self, name: str) -> Scope:
        if self.override is not None:
            return self._scope("the run", self.selected, self.override, "--max-unavailable")
        if not name:  # a node in no group: one at a time
            return Scope("the run", tuple(self.selected), 1)
        group = name.removeprefix("group ")
        return self._scope(
            name,
            self.inventory.members(group),
            self.inventory.groups[group].max_unavailable or "1",
            f"{self.inventory.path}: groups.{group}.max_unavailable",
        )

    @staticmethod
    def _scope(name: str, members: Sequence[str], limit: str, what: str) -> Scope:
        return Scope(name, tuple(members), parse_limit(limit, len(members), what))

    def why_not(self, node: str) -> Hold | None:
        """None when ``node`` may start now, else why not."""
        halted = self._halted()
        if halted is not None:
            return Hold(f"not started: {halted}", final=True)
        held = self._pair_hold(node)
        if held is not None or node in self.out_of_service:
            return held  # a node already out takes nothing more out of service by starting
        return self._scope_hold(node)

    def _pair_hold(self, node: str) -> Hold | None:
        pair = self.pairs.get(node)
        if pair in self.unknown:
            return Hold(f"waiting for the probe of its pair {pair}", final=False)
        if pair in self.running:
            return Hold(f"waiting for its pair {pair}", final=False)
        if pair in self.out_of_service:
            # A pair still to run here may come back; a node already out waits for nobody.
            may_return = pair in self.pending and node not in self.out_of_service
            return Hold(f"not started: its pair {pair} is not in service", final=not may_return)
        return None

    def _scope_hold(self, node: str) -> Hold | None:
        # The busy nodes are few (at most the limits, plus what the probe found out), a scope's
        # members may be the whole fleet: intersect from the small side, or a rollout one node
        # at a time costs O(nodes) per node per pass, O(nodes^3) in all.
        busy_now = (self.running | self.out_of_service | self.unknown) - {node}
        for scope in self.scopes[node]:
            found = busy_now & scope.member_set
            if len(found) >= scope.limit:
                busy = sorted(found)
                unknown = " or not probed yet" if found & self.unknown else ""
                reason = (
                    f"{scope.name} has {len(busy)} of at most {scope.limit} nodes out of service"
                    f"{unknown} ({', '.join(busy)})"
                )
                may_change = any(
                    m in self.running or m in self.pending or m in self.unknown for m in busy
                )
                return Hold(f"not started: {reason}", final=not may_change)
        return None

    def _halted(self) -> str | None:
        """Why no node may start any more, or None."""
        if self.halted is not None:
            return self.halted
        if self.max_failures is not None and self.failures >= self.max_failures:
            return f"{self.failures} failures reached --max-failures {self.max_failures}"
        return None

    def known(self, node: str, in_service: bool) -> None:
        """``node``'s probe is in: it is in service or not."""
        self.unknown.discard(node)
        if not in_service:
            self.out_of_service.add(node)

    def start(self, node: str) -> None:
        """``node`` has started."""
        self.pending.discard(node)
        self.running.add(node)

    def finished(self, outcome: Outcome) -> None:
        """Record how a node ended."""
        self.running.discard(outcome.node)
        if outcome.exit_code in FAILURES:
            self.failures += 1
        if outcome.in_service:
            self.out_of_service.discard(outcome.node)
        else:
            self.out_of_service.add(outcome.node)


@dataclass
class Arrivals(Generic[OutcomeT]):
    """Nodes whose state comes in while the rollout runs: ``expected`` answers, put on ``inbox``
    (by the probe's threads). ``arrived`` takes one and says which nodes may now be started
    and the outcomes of those that end there (failed, current); ``rank`` orders the nodes
    waiting to start (fewest active sessions first)."""

    expected: int
    arrived: Callable[[Any], tuple[list[str], list[OutcomeT]]]
    rank: Callable[[str], Any]
    inbox: queue.SimpleQueue[Any] = field(default_factory=queue.SimpleQueue)


def roll(
    fleet: Fleet,
    order: Sequence[str],
    run_node: Callable[[str], OutcomeT],
    skip: Callable[[str, str], OutcomeT],
    stopping: Callable[[], bool],
    arrivals: Arrivals[OutcomeT] | None = None,
) -> list[OutcomeT]:
    """Start nodes in ``order`` (and as ``arrivals`` come) as the fleet allows, until every one
    has run or been skipped.

    Outcomes come back in the order the nodes ended. The loop sleeps until something happens:
    a node ends or an answer arrives (or, to look at a stop, ``STOP_CHECK_SECONDS``).
    """
    inbox: queue.SimpleQueue[Any] = arrivals.inbox if arrivals else queue.SimpleQueue()
    expected = arrivals.expected if arrivals else 0
    fleet.pending.update(order)
    waiting = list(order)
    outcomes: list[OutcomeT] = []
    running = 0
    with ThreadPoolExecutor(
        max_workers=max(1, len(fleet.selected)), thread_name_prefix="node"
    ) as pool:
        while True:
            for node in waiting:
                hold = STOPPED if stopping() else fleet.why_not(node)
                if hold is None:
                    fleet.start(node)
                    pool.submit(run_node, node).add_done_callback(inbox.put)
                    running += 1
                elif hold.final:
                    fleet.pending.discard(node)
                    outcomes.append(skip(node, hold.reason))
            waiting = [node for node in waiting if node in fleet.pending]
            if not running and not expected:
                if not waiting:
                    return outcomes
                continue  # what waited on a node that was just skipped is decided next pass
            try:
                item = inbox.get(timeout=STOP_CHECK_SECONDS)
            except queue.Empty:
                continue
            if isinstance(item, Future):
                running -= 1
                ended = [item.result()]
            else:
                assert arrivals is not None  # only the probe's threads put anything else
                expected -= 1
                ready, ended = arrivals.arrived(item)
                fleet.pending.update(ready)
                for node in ready:
                    bisect.insort(waiting, node, key=arrivals.rank)
            for outcome in ended:
                fleet.finished(outcome)
                outcomes.append(outcome)
