"""The straggler policy: given what the drain looks like now, what to do. Pure, no clock."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from upgradectl.duration import format_duration
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
    """Drained after ``settle`` zero readings; at the deadline, force a handful, abort more, or wait."""
    if state.zero_streak >= policy.settle:
        return Verdict.DRAINED
    if state.now < state.deadline:
        return Verdict.FORCE if _hopeless(policy, state) else Verdict.WAIT
    if policy.stragglers == "wait":
        return Verdict.WAIT
    if policy.stragglers == "force" and state.active <= policy.max_stragglers:
        return Verdict.FORCE
    return Verdict.ABORT


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


# The quickest poll: one cheap command a second at most, per node.
FAST_POLL = 1.0
# Never sleep less than this, even right before the deadline.
MIN_SLEEP = 0.05


def next_poll(
    policy: DrainPolicy, polls: int, active: int | None, eta_low: float | None, to_deadline: float
) -> float:
    """Seconds until the next poll: never more than the playbook's ``poll`` (so the end of a
    drain is noticed within one interval), and less where it pays: right after the block
    (doubling from one second), while zero readings settle, near the expected end, and at the
    deadline. In between, a large fleet's nodes are polled only every ``poll``.
    """
    fast = min(FAST_POLL, policy.poll)
    if active == 0:
        return fast
    wait = min(policy.poll, fast * 2.0 ** max(polls - 1, 0))
    if eta_low is not None:
        wait = min(wait, max(fast, eta_low / 2))
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
