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

from upgradectl.blockwatch import BlockWatch
from upgradectl.context import RunContext
from upgradectl.cut import describe_cut, predict_cut
from upgradectl.duration import format_duration
from upgradectl.errors import ForceFailed, StepFailed, UnreadableCount, WitnessesDisagree
from upgradectl.estimate import DrainEstimate, estimate_drain, expected_active, format_eta
from upgradectl.model import DrainPolicy
from upgradectl.nodelog import NodeLog
from upgradectl.policy import DrainState, Verdict, describe, judge, next_poll, outlook
from upgradectl.rehearsal import Rehearsal
from upgradectl.steps import Steps
from upgradectl.witness import Counts, CutProof, prove_cut, read_counts

# A count that cannot be read this many times in a row stops the drain: never read as zero.
MAX_UNREADABLE_COUNTS = 3


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
    disagree_since: float | None = None  # when the two counts began to disagree on "empty"
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
        self.watch = BlockWatch(steps, ctx, log)
        self.forced: list[dict[str, Any]] = []
        self.forced_count = 0
        # The block, read in the round trip of the latest count when that count could end the
        # drain: the upgrade then follows a block seen with the zero, not one read again after.
        self.block_seen: bool | None = None

    def run(self) -> DrainEnd:
        """Poll until the node is drained, the policy gives up, or a stop is asked for."""
        progress = _Progress(self.policy, self.ctx.monotonic(), self.ctx.wall())
        self.watch.started()
        stop = self.ctx.stop
        while True:
            if self.watch.due():
                self.watch.check("during the drain")
            counts = self._read_counts(progress)
            if counts is not None:
                then = self._judge(progress, counts)
                if isinstance(then, GaveUp):
                    return then
                if then == "drained":
                    break  # the block seen with this zero is read before the upgrade
                if self.block_seen is False:  # lost: put back, and count who came meanwhile
                    self.block_seen = None
                    self.watch.check("during the drain", seen=False)
                    continue
                if then == "look-again":
                    continue  # the force should have emptied the node: no pause
            if stop.wait(self._next_poll(progress)):
                return Stopped(f"stopped ({stop.reason}) while waiting")
        seconds = self.ctx.monotonic() - progress.started
        self.log.record("drained", f"drained in {format_duration(seconds)}", seconds=seconds)
        if stop.requested:
            return Stopped(f"stopped ({stop.reason})")
        return Drained(seconds)

    def rehearse(self, rehearsal: Rehearsal) -> None:
        """A dry run's drain: the live count read once, and what the policy would do with it,
        with whom the deadline would likely cut judged by the ages of the sessions seen."""
        active = read_counts(self.steps).live  # every count, as the drain reads them
        policy = self.policy
        text = describe(policy, policy.timeout)
        data: dict[str, Any] = {}
        sessions = self.steps.sessions(self.ctx.wall())
        prediction = predict_cut(sessions, policy.timeout) if sessions else None
        if prediction is not None:
            text += f" ({describe_cut(prediction, 'at the deadline')})"
            data["predicted_cut"] = [s.id for s in prediction.likely_cut]
            data["expected_cut"] = round(prediction.expected_cut, 2)
        rehearsal.counted(active, **data)
        rehearsal.would(text)

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

    def _read_counts(self, progress: _Progress) -> Counts | None:
        """Every count, or None for an unreadable one (never zero; too many in a row raise)."""
        self.block_seen = None
        with_block = self.watch.watching and progress.zeros + 1 >= self.policy.settle
        if with_block:
            self.steps.along("node_active", "is_blocked")
        try:
            counts = read_counts(self.steps)
            if with_block and self.steps.ready("is_blocked"):
                self.block_seen = self.steps.is_blocked()
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
        # Drained means every count says zero: the larger one is what is left.
        progress.samples.append((self.ctx.monotonic(), counts.live))
        progress.zeros = progress.zeros + 1 if counts.live == 0 else 0
        return counts

    def _judge(self, progress: _Progress, counts: Counts) -> _Next | GaveUp:
        """Apply the straggler policy to a new reading: what to do next, or give up."""
        now = self.ctx.monotonic()
        active = counts.live
        estimate = progress.estimate = estimate_drain(
            progress.samples, stall_after=self.policy.stall_after
        )
        self._poll_event(counts, estimate, progress, now)
        self._compare(progress, counts, now)
        if progress.forced_at is not None:
            return self._after_force(progress, active, now)
        eta = estimate.eta_low if estimate else None
        verdict = judge(
            self.policy, DrainState(active, progress.zeros, now, progress.deadline, eta)
        )
        if verdict is Verdict.DRAINED:
            return "drained"
        if verdict is Verdict.ABORT:
            return self._give_up(active)
        if verdict is Verdict.FORCE:
            return self._force_stragglers(progress, counts, now)
        return "poll"

    def _after_force(self, progress: _Progress, active: int, now: float) -> _Next:
        """The force was proven: wait for the zeros to settle (they should at once)."""
        if progress.zeros >= self.policy.settle:
            return "drained"
        if progress.forced_at is not None and now > progress.forced_at + self.policy.force_grace:
            target = self.steps.target("force")
            raise StepFailed("force", target, f"{active} sessions still live after force")
        return "poll"

    def _force_stragglers(self, progress: _Progress, counts: Counts, now: float) -> _Next:
        if self.watch.check("before force"):
            return "poll"  # sessions may have arrived while it was lost: count them first
        # Before the deadline only the estimate can force: journal that it did.
        self._force(counts, "eta_exceeds_deadline" if now < progress.deadline else "deadline")
        progress.forced_at = self.ctx.monotonic()
        return "look-again"

    def _compare(self, progress: _Progress, counts: Counts, now: float) -> None:
        """Two counts that disagree on whether the node is empty for longer than
        ``witness_grace`` stop the drain: a session ended on one side only is not drained."""
        if not counts.disagree:
            progress.disagree_since = None
            return
        if progress.disagree_since is None:
            progress.disagree_since = now
            return
        if now - progress.disagree_since > self.policy.witness_grace:
            lasted = format_duration(now - progress.disagree_since)
            raise WitnessesDisagree(
                "node_active",
                self.steps.target("node_active"),
                f"the counts disagree for {lasted}: {counts.describe(self.steps)}; one says the "
                "node is empty and the other does not, so it is not drained",
            )

    def _poll_event(
        self, counts: Counts, estimate: DrainEstimate | None, progress: _Progress, now: float
    ) -> None:
        # At zero the drain is not over until `settle` readings agree: say the count, not "drained".
        active = counts.live
        insight = format_eta(estimate) if estimate and active else f"{active} active"
        if counts.node is not None and counts.node != counts.active:
            insight += f" ({counts.describe(self.steps)})"
        deadline = progress.wall_deadline
        data: dict[str, Any] = {"active": active, "deadline": deadline, "insight": insight}
        if counts.node is not None:
            data.update(active_at=counts.active, node_active=counts.node)
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

    def _force(self, counts: Counts, because: str) -> None:
        active = counts.live
        sessions = self.steps.sessions(self.ctx.wall())
        listed = [
            {"id": s.id, "age": s.age, "line": s.line, "details": dict(s.details)} for s in sessions
        ]
        arrived = [s["id"] for s in listed if s["id"] in self.watch.arrived]
        self.log.record(
            "forcing",
            f"{active} session{'s' if active != 1 else ''} left"
            f" (at most {self.policy.max_stragglers} may be forced); "
            + (
                "forcing"
                if because == "deadline"
                else "forcing now: the estimate says they will outlast the deadline"
            )
            + (
                f"; {len(arrived)} of them arrived while the block was lost: {', '.join(arrived)}"
                if arrived
                else ""
            ),
            active=active,
            sessions=listed,
            because=because,
            arrived_unblocked=arrived,
        )
        self.steps.run("force")
        cut_at = self.ctx.wall()
        proof = prove_cut(
            self.steps, self.ctx, listed, self.policy.force_grace, self.policy.poll_min
        )
        cut = [
            {**s, "node": self.log.name, "run": self.ctx.run_id, "cut_at": cut_at}
            for s in proof.gone
        ]
        unnamed = proof.unnamed_cut(counts)
        self.forced += cut
        self.forced_count += len(cut) + unnamed
        if cut or unnamed:
            names = ", ".join(str(s["id"]) for s in cut)
            if unnamed:
                names += f"{', ' if names else ''}{unnamed} unnamed" + (
                    "" if self.steps.has("sessions") else " (the playbook has no sessions step)"
                )
            self.log.record(
                "forced",
                f"cut {len(cut) + unnamed}, each seen gone after force: {names}",
                sessions=cut,
                count=len(cut) + unnamed,
            )
        if not proof.complete:
            raise ForceFailed("force", self.steps.target("force"), self._not_ended(proof))

    def _not_ended(self, proof: CutProof) -> str:
        """Why the force counts as failed, in words: what is still seen after the grace."""
        grace = format_duration(self.policy.force_grace)
        if proof.left:
            still = ", ".join(str(s["id"]) for s in proof.left)
            return f"force did not end them: {still} still listed {grace} after it"
        if proof.counts is None:
            return f"force did not end them: no count could be read for {grace} after it"
        return (
            f"force did not end them: {proof.counts.describe(self.steps)} still counted "
            f"{grace} after it"
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
