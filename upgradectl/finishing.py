"""A node's last round trip: verify, unblock and the node lock's release sent together, each
only if the one before it succeeded, where the playbook lets them go as one."""

from __future__ import annotations

from upgradectl.plan import Command, NodePlan


def finished_together(plan: NodePlan) -> list[Command]:
    """The verify (if any) and unblock that may go in one round trip with the lock's release,
    or none: each one's success must be its exit code alone (no ``parse`` or ``fail_if`` to
    read, no retries) and all must run on the node itself, beside its lock."""
    chain = [plan.steps[name] for name in ("verify", "unblock") if name in plan.steps]
    if not chain or chain[-1].step != "unblock":
        return []
    if any(c.parse or c.fail_if or c.retries > 1 or c.target != plan.name for c in chain):
        return []
    return chain
