"""The straggler policy: given what the drain looks like now, what to do. Pure, no clock."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from upgradectl.duration import format_duration

if TYPE_CHECKING:
    from upgradectl.model import DrainPolicy


class Verdict(enum.Enum):
    """What the drain does next."""

    WAIT = "wait"
    DRAINED = "drained"
    FORCE = "force"
    ABORT = "abort"


@dataclass(frozen=True)
class DrainState:
    """One moment of a drain, as the policy sees it (times in monotonic seconds)."""

    active: int
    zero_streak: int
    now: float
    deadline: float
    eta_low: float | None = None


def judge(policy: DrainPolicy, state: DrainState) -> Verdict:
    """Drained after ``settle`` zero readings; at the deadline, force a handful, abort more, or wait.

    A zero reading at the deadline is drained at once: there is no straggler to force or to give
    up on, and waiting for ``settle`` there would turn an empty node into a straggler case.
    """
    if state.zero_streak >= policy.settle:
        return Verdict.DRAINED
    if state.now < state.deadline:
        return Verdict.FORCE if _hopeless(policy, state) else Verdict.WAIT
    if state.active == 0:
        return Verdict.DRAINED
    if policy.stragglers == "wait":
        return Verdict.WAIT
    if policy.stragglers == "force" and state.active <= policy.max_stragglers:
        return Verdict.FORCE
    return Verdict.ABORT


def outlook(policy: DrainPolicy, left_at_deadline: int) -> Verdict:
    """What the policy will do at the deadline if ``left_at_deadline`` sessions are live then."""
    settled = policy.settle if left_at_deadline == 0 else 0
    return judge(policy, DrainState(left_at_deadline, settled, now=0.0, deadline=0.0))


def _hopeless(policy: DrainPolicy, state: DrainState) -> bool:
    """``force_when: eta_exceeds_deadline``: even the optimistic estimate ends after the deadline,
    so waiting longer would cut the same few sessions later."""
    return (
        policy.force_when == "eta_exceeds_deadline"
        and policy.stragglers == "force"
        and 0 < state.active <= policy.max_stragglers
        and state.eta_low is not None
        and state.now + state.eta_low > state.deadline
    )


# Never sleep less than this, even right before the deadline.
MIN_SLEEP = 0.05
# 2**this is as slow as a ramp gets: beyond it the wait is `poll` anyway, and 2.0**1024 overflows.
_MAX_DOUBLINGS = 30


def next_poll(
    policy: DrainPolicy,
    polls: int,
    active: int | None,
    eta_low: float | None,
    to_deadline: float,
    *,
    near_end_polls: int = 0,
    phase: float = 0.0,
) -> float:
    """Seconds until the next poll: never more than the playbook's ``poll`` (so the end of a
    drain is noticed within one interval), and less where it pays.

    With f = ``poll_min``, k = polls so far and m = polls since the estimated end came near::

        wait = min(poll, f * 2**(k-1), max(eta_low / 2, f * 2**m), time to the deadline)

    and f while zero readings settle. Right after the block the wait doubles from f, so an empty
    node drains in f rather than ``settle * poll``; halving the gap to the estimated end notices
    it soon after it comes, and ``2**m`` backs off when the estimate keeps promising an end that
    does not come (at most log2(poll / f) polls near each end). ``phase`` (a node's fixed place
    in [0, 1)) shortens the wait by up to 10 %, so a fleet's polls do not come in bursts and
    none comes later than ``poll``; the deadline itself is met exactly.
    """
    fast = min(policy.poll_min, policy.poll)
    if active == 0:
        return fast
    wait = min(policy.poll, fast * 2.0 ** min(max(polls - 1, 0), _MAX_DOUBLINGS))
    if eta_low is not None:
        wait = min(wait, max(eta_low / 2, fast * 2.0 ** min(near_end_polls, _MAX_DOUBLINGS)))
    wait *= 1 - 0.1 * phase
    if to_deadline > 0:
        wait = min(wait, max(MIN_SLEEP, to_deadline))
    return wait


def describe(policy: DrainPolicy, timeout: float) -> str:
    """What happens at the deadline, in words: ``wait up to 1h, then force at most 5 stragglers``."""
    wait = f"wait up to {format_duration(timeout)}"
    if policy.stragglers == "wait":
        return f"{wait}, then keep waiting (stragglers: wait)"
    if policy.stragglers == "abort":
        return f"{wait}, then give up and unblock if any session is left"
    early = (
        " (sooner if the estimate says they will not end in time)"
        if policy.force_when != "deadline"
        else ""
    )
    return (
        f"{wait}, then force at most {policy.max_stragglers} straggler"
        f"{'s' if policy.max_stragglers != 1 else ''}{early} (more: give up and unblock)"
    )
