"""``--dry-run``: run only the read-only steps, then say what the run would do."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from upgradectl.cut import describe_cut, predict_cut
from upgradectl.policy import describe

if TYPE_CHECKING:
    from upgradectl.runner import NodeRun


def describe_node(run: NodeRun) -> tuple[str, dict[str, Any]]:
    """``37 active; would block at lb-1, wait up to 1h, then force at most 5 stragglers (...)``."""
    steps, plan, command = run.steps, run.plan, run.ctx.command
    if command == "patch":
        return (
            f"would hot-patch on {steps.target('patch')}: {plan.steps['patch'].run}; then verify",
            {},
        )
    if command == "unblock":
        return f"would verify, then unblock at {steps.target('unblock')}", {}
    notes = []
    if steps.is_blocked():
        notes.append("already blocked before this run: would leave it blocked")
    if steps.has("precheck"):
        steps.run("precheck")  # a failing precheck fails the dry run as it would fail the run
        notes.append(f"precheck passes on {steps.target('precheck')}")
    active = steps.count()
    policy = plan.drain
    text = f"{active} active; would block at {steps.target('block')}, {describe(policy, policy.timeout)}"
    data: dict[str, Any] = {"active": active}
    sessions = steps.sessions(run.ctx.wall())
    prediction = predict_cut(sessions, policy.timeout) if sessions else None
    if prediction is not None:
        text += f" ({describe_cut(prediction, 'the deadline')})"
        data["predicted_cut"] = [s.id for s in prediction.likely_cut]
        data["expected_cut"] = round(prediction.expected_cut, 2)
    if command == "upgrade":
        text += f"; then upgrade ({plan.steps['upgrade'].run})"
        text += ", verify" if steps.has("verify") else ""
        text += f", unblock at {steps.target('unblock')}"
    return "; ".join([text, *notes]), data
