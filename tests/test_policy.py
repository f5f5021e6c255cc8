"""The straggler policy as a pure function of the drain's state."""

from __future__ import annotations

from upgradectl.model import DrainPolicy
from upgradectl.policy import DrainState, Verdict, describe, judge

FORCE_3 = DrainPolicy(timeout=60, stragglers="force", max_stragglers=3, settle=2)


def state(active: int, now: float, zeros: int = 0, eta: float | None = None) -> DrainState:
    return DrainState(active=active, zero_streak=zeros, now=now, deadline=60, eta_low=eta)


def test_settle_consecutive_zero_readings_count_as_drained() -> None:
    assert judge(FORCE_3, state(0, 10, zeros=1)) is Verdict.WAIT
    assert judge(FORCE_3, state(0, 10, zeros=2)) is Verdict.DRAINED


def test_before_the_deadline_the_drain_waits() -> None:
    assert judge(FORCE_3, state(2, 59.9)) is Verdict.WAIT


def test_at_the_deadline_a_handful_is_forced_and_more_aborts() -> None:
    assert judge(FORCE_3, state(3, 60)) is Verdict.FORCE
    assert judge(FORCE_3, state(4, 60)) is Verdict.ABORT


def test_abort_and_wait_policies() -> None:
    assert judge(DrainPolicy(stragglers="abort"), DrainState(1, 0, 4000, 3600)) is Verdict.ABORT
    assert judge(DrainPolicy(stragglers="wait"), DrainState(50, 0, 9000, 3600)) is Verdict.WAIT


def test_force_when_the_estimate_says_the_stragglers_will_outlast_the_deadline() -> None:
    eager = DrainPolicy(
        timeout=60, stragglers="force", max_stragglers=3, force_when="eta_exceeds_deadline"
    )
    assert judge(eager, state(2, 30, eta=45)) is Verdict.FORCE  # 30 + 45 > 60
    assert judge(eager, state(2, 30, eta=20)) is Verdict.WAIT
    assert (
        judge(eager, state(5, 30, eta=45)) is Verdict.WAIT
    )  # too many to force: wait for the deadline
    assert judge(FORCE_3, state(2, 30, eta=45)) is Verdict.WAIT  # off by default


def test_the_policy_in_words() -> None:
    assert (
        describe(FORCE_3, 3600)
        == "wait up to 1h, then force at most 3 stragglers (more: give up and unblock)"
    )
