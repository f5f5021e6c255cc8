"""The straggler policy as a pure function of the drain's state."""

from __future__ import annotations

from upgradectl.model import DrainPolicy
from upgradectl.policy import DrainState, Verdict, describe, judge, next_poll

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


def test_zero_sessions_at_the_deadline_is_drained_never_a_straggler_case() -> None:
    # settle=2 but only one zero reading so far: before the deadline that waits for the second.
    assert judge(FORCE_3, state(0, 59.9, zeros=1)) is Verdict.WAIT
    for policy in (FORCE_3, DrainPolicy(stragglers="abort"), DrainPolicy(stragglers="wait")):
        assert judge(policy, DrainState(0, 1, 4000, 3600)) is Verdict.DRAINED


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


TEN_SECONDS = DrainPolicy(timeout=3600, poll=10, stragglers="force", max_stragglers=3)


def test_polls_start_fast_and_slow_down_to_the_playbooks_poll() -> None:
    waits = [next_poll(TEN_SECONDS, polls, 50, None, 3000) for polls in range(1, 7)]
    assert waits == [1, 2, 4, 8, 10, 10]


def test_zero_readings_settle_fast_and_the_expected_end_is_watched_closely() -> None:
    assert next_poll(TEN_SECONDS, 20, 0, None, 3000) == 1
    assert next_poll(TEN_SECONDS, 20, 3, 6.0, 3000) == 3  # half the optimistic ETA
    assert next_poll(TEN_SECONDS, 20, 3, 0.5, 3000) == 1  # but never faster than once a second


def test_the_poll_wakes_at_the_deadline_and_never_exceeds_the_playbooks_poll() -> None:
    assert next_poll(TEN_SECONDS, 20, 3, None, 2.5) == 2.5
    assert (
        next_poll(TEN_SECONDS, 20, 3, None, -5) == 10
    )  # past it (stragglers: wait): the usual pace
    quick = DrainPolicy(poll=0.2)
    assert next_poll(quick, 0, 9, None, 100) == 0.2  # a playbook's poll below a second is kept


def test_a_drain_of_hours_never_overflows_the_ramp() -> None:
    assert next_poll(TEN_SECONDS, 5000, 40, None, 10) == 10


def test_an_end_that_keeps_not_coming_is_polled_less_and_less_often() -> None:
    waits = [next_poll(TEN_SECONDS, 50, 2, 1.0, 3000, near_end_polls=m) for m in range(5)]
    assert waits == [1, 2, 4, 8, 10]


def test_a_fleets_polls_are_spread_by_each_nodes_phase() -> None:
    assert (
        next_poll(TEN_SECONDS, 50, 5, None, 3000, phase=0.5) == 9.5
    )  # up to 10 % sooner, never later
    assert next_poll(TEN_SECONDS, 50, 5, None, 2.0, phase=0.5) == 2.0  # the deadline is met exactly
    fast = DrainPolicy(poll=10, poll_min=0.1)
    assert next_poll(fast, 1, 0, None, 3000) == 0.1  # a playbook may settle faster
