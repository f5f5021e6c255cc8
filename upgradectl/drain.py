"""The drain loop: poll a blocked node's session count until it is empty, under the straggler policy.

The loop ends in one of three typed ways: :class:`Drained` (the count settled at zero, possibly
after forcing the stragglers), :class:`GaveUp` (the policy says stop: more stragglers than may be
forced, or ``stragglers: abort``) or :class:`Stopped` (the operator asked). Putting the node back
in service after the last two is the runner's recovery, not the loop's. Time is the run's clock
and every wait is the run's Stop, so a ManualClock runs an hour's drain in milliseconds.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Literal

from upgradectl.context import RunContext
from upgradectl.duration import format_duration
from upgradectl.errors import StepFailed, UnreadableCount
from upgradectl.estimate import DrainEstimate, estimate_drain, expected_active, format_eta
from upgradectl.model import DrainPolicy
from upgradectl.nodelog import NodeLog
from upgradectl.policy import DrainState, Verdict, judge, next_poll, outlook
from upgradectl.steps import Steps

# A count that cannot be read this many times in a row stops the drain: never read as zero.
MAX_UNREADABLE_COUNTS = 3
# After `force`, how long the sessions get to disappear before the force counts as failed.
FORCE_GRACE = 30.0


@dataclass(frozen=True)
class Drained:
    """The node is empty: ``seconds`` from the first reading to the settled zero."""

    seconds: float


@dataclass(frozen=True)
class GaveUp:
    """The straggler policy gave up with ``active`` sessions left, for the reason ``why``."""

    active: int
    why: str


@dataclass(frozen=True)
class Stopped:
    """The operator asked the run to stop; ``why`` says when."""

    why: str


DrainEnd = Drained | GaveUp | Stopped
# What one reading says, short of giving up: empty, read again after a pause, or at once.
_Next = Literal["drained", "poll", "look-again"]


@dataclass
class _Progress:
    """One drain's readings so far, its deadline, and whether stragglers were forced."""

    policy: DrainPolicy
    started: float
    wall_started: float
    samples: list[tuple[float, int]] = field(default_factory=list)
    zeros: int = 0
    unreadable: int = 0
    forced_at: float | None = None
    near_end_since: int | None = None  # the poll at which the estimated end came within `poll`
    estimate: DrainEstimate | None = None  # of the latest reading: judged, then used to pace polls

    @property
    def deadline(self) -> float:
        """The run-clock time at which the straggler policy applies."""
        return self.started + self.policy.timeout

    @property
    def wall_deadline(self) -> float:
        """The same deadline on the wall clock, for people."""
        return self.wall_started + self.policy.timeout


class DrainLoop:
    """Waits out one node's sessions; what it forced stays on it for the node's result."""

    def __init__(self, steps: Steps, ctx: RunContext, log: NodeLog) -> None:
        self.steps = steps
        self.ctx = ctx
        self.log = log
        self.policy = steps.plan.drain
        self.forced: list[dict[str, Any]] = []
        self.forced_count = 0

    def run(self) -> DrainEnd:
        """Poll until the node is drained, the policy gives up, or a stop is asked for."""
        progress = _Progress(self.policy, self.ctx.monotonic(), self.ctx.wall())
        stop = self.ctx.stop
        while True:
            active = self._read_count(progress)
            if active is not None:
                then = self._judge(progress, active)
                if isinstance(then, GaveUp):
                    return then
                if then == "drained":
                    break
                if then == "look-again":
                    continue  # the force should have emptied the node: no pause
            if stop.wait(self._next_poll(progress)):
                return Stopped(f"stopped ({stop.reason}) while waiting")
        seconds = self.ctx.monotonic() - progress.started
        self.log.record("drained", f"drained in {format_duration(seconds)}", seconds=seconds)
        if stop.requested:
            return Stopped(f"stopped ({stop.reason})")
        return Drained(seconds)

    def _next_poll(self, progress: _Progress) -> float:
        active = progress.samples[-1][1] if progress.samples else None
        eta = progress.estimate.eta_low if progress.estimate and active else None
        polls = len(progress.samples)
        if eta is None or eta >= self.policy.poll:
            progress.near_end_since = None
        elif progress.near_end_since is None:
            progress.near_end_since = polls
        near_end_polls = 0 if progress.near_end_since is None else polls - progress.near_end_since
        return next_poll(
            self.policy,
            polls,
            active,
            eta,
            progress.deadline - self.ctx.monotonic(),
            near_end_polls=near_end_polls,
            phase=zlib.crc32(self.log.name.encode()) / 2**32,
        )

    def _read_count(self, progress: _Progress) -> int | None:
        """The live count, or None for an unreadable one (never zero; too many in a row raise)."""
        try:
            active = self.steps.count()
        except UnreadableCount as exc:
            progress.unreadable += 1
            if progress.unreadable >= MAX_UNREADABLE_COUNTS:
                raise
            self.log.say(
                "warning",
                f"{exc}; polling again ({progress.unreadable} of {MAX_UNREADABLE_COUNTS})",
            )
            return None
        progress.unreadable = 0
        progress.samples.append((self.ctx.monotonic(), active))
        progress.zeros = progress.zeros + 1 if active == 0 else 0
        return active

    def _judge(self, progress: _Progress, active: int) -> _Next | GaveUp:
        """Apply the straggler policy to a new reading: what to do next, or give up."""
        now = self.ctx.monotonic()
        estimate = progress.estimate = estimate_drain(
            progress.samples, stall_after=self.policy.stall_after
        )
        self._poll_event(active, estimate, progress, now)
        if progress.forced_at is not None:
            if progress.zeros >= self.policy.settle:
                return "drained"
            if now > progress.forced_at + FORCE_GRACE:
                target = self.steps.target("force")
                raise StepFailed("force", target, f"{active} sessions still live after force")
            return "poll"
        eta = estimate.eta_low if estimate else None
        verdict = judge(
            self.policy, DrainState(active, progress.zeros, now, progress.deadline, eta)
        )
        if verdict is Verdict.DRAINED:
            return "drained"
        if verdict is Verdict.ABORT:
            return self._give_up(active)
        if verdict is Verdict.FORCE:
            # Before the deadline only the estimate can force: journal that it did.
            self._force(active, "eta_exceeds_deadline" if now < progress.deadline else "deadline")
            progress.forced_at = self.ctx.monotonic()
            return "look-again"
        return "poll"

    def _poll_event(
        self, active: int, estimate: DrainEstimate | None, progress: _Progress, now: float
    ) -> None:
        # At zero the drain is not over until `settle` readings agree: say the count, not "drained".
        insight = format_eta(estimate) if estimate and active else f"{active} active"
        deadline = progress.wall_deadline
        data: dict[str, Any] = {"active": active, "deadline": deadline, "insight": insight}
        if estimate is not None:
            data.update(
                rate_per_minute=round(estimate.rate_per_minute, 3),
                eta_low=estimate.eta_low,
                eta_high=estimate.eta_high,
                stalled=estimate.stalled,
            )
            if progress.forced_at is None and now < progress.deadline:
                # What the deadline will find, and what the policy will then do about it.
                left = expected_active(estimate, progress.deadline - now)
                data.update(
                    left_at_deadline=left,
                    at_deadline=outlook(self.policy, left).value,
                    stragglers=self.policy.stragglers,
                    max_stragglers=self.policy.max_stragglers,
                )
        self.log.say("poll", insight, **data)
        eta = (estimate.eta_low, estimate.eta_high) if estimate is not None else None
        self.ctx.journal.reading(self.log.name, self.ctx.wall(), active, eta, deadline)

    def _force(self, active: int, because: str) -> None:
        sessions = self.steps.sessions(self.ctx.wall())
        listed = [
            {"id": s.id, "age": s.age, "line": s.line, "details": dict(s.details)} for s in sessions
        ]
        self.log.record(
            "forcing",
            f"{active} session{'s' if active != 1 else ''} left"
            f" (at most {self.policy.max_stragglers} may be forced); "
            + (
                "forcing"
                if because == "deadline"
                else "forcing now: the estimate says they will outlast the deadline"
            ),
            active=active,
            sessions=listed,
            because=because,
        )
        self.steps.run("force")
        cut_at = self.ctx.wall()
        self.forced = [
            {**s, "node": self.log.name, "run": self.ctx.run_id, "cut_at": cut_at} for s in listed
        ]
        self.forced_count = max(active, len(listed))
        names = (
            ", ".join(str(s["id"]) for s in listed)
            or f"{active} unnamed (the playbook has no sessions step)"
        )
        self.log.record(
            "forced",
            f"cut {self.forced_count}: {names}",
            sessions=self.forced,
            count=self.forced_count,
        )

    def _give_up(self, active: int) -> GaveUp:
        policy = self.policy
        why = (
            f"{active} sessions left at the deadline, more than max_stragglers={policy.max_stragglers}"
            if policy.stragglers == "force"
            else f"{active} sessions left at the deadline (stragglers: abort)"
        )
        self.log.record("aborted", f"{why}; giving up, not upgraded", active=active)
        return GaveUp(active, why)
