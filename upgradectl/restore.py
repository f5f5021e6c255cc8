"""After a failed upgrade, patch or verify: roll back where the playbook can, then verify; the
node goes back in service only once it is known good again."""

from __future__ import annotations

from upgradectl.errors import CommandTimedOut, StepFailed
from upgradectl.nodelog import NodeLog
from upgradectl.rehearsal import Acting
from upgradectl.steps import Steps


def restored(steps: Steps, log: NodeLog, acting: Acting, phase: str) -> str:
    """Roll back (if the playbook can) and verify; how the node is known good again, or ""."""
    rolled_back = steps.has("rollback")
    if rolled_back:
        target = steps.target("rollback")
        log.record("rolling-back", f"rolling back on {target}")
        try:
            acting.act("rollback", f"roll back on {target}")
        except (StepFailed, CommandTimedOut) as exc:
            log.say("failed", f"rollback failed: {exc}")
            return ""
        log.record("rolled-back", "rolled back")
    elif phase == "verify":
        return ""  # the new version fails its check and nothing can undo it
    if not steps.has("verify"):
        return "rolled back (no verify step)" if rolled_back else ""
    try:
        acting.act("verify", "verify")
    except (StepFailed, CommandTimedOut) as exc:
        log.say("failed", f"verify after the failure failed too: {exc}")
        return ""
    log.record("verified", "verified after the failure")
    # Without a rollback nothing was restored: the node may run the new version or the old.
    return (
        "rolled back and verified"
        if rolled_back
        else "not rolled back (the playbook has no rollback step), but it verifies"
    )
