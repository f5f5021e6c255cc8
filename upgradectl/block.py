"""One node's block: taken over from an earlier run of ours, or put on and lifted by this one,
each read back with ``is_blocked`` where the playbook has that step, so that "back in service"
is said only when the node says so."""

from __future__ import annotations

from upgradectl.context import RunContext
from upgradectl.custody import BlockCustody
from upgradectl.errors import StepFailed
from upgradectl.nodelog import NodeLog
from upgradectl.rehearsal import Acting
from upgradectl.steps import Steps

# Said of a block or unblock whose effect the playbook cannot read back.
_NO_WITNESS = "no is_blocked step to read it back"


class Block:
    """Puts the block on and lifts it, recording the intention first and the effect seen after."""

    def __init__(
        self, steps: Steps, ctx: RunContext, log: NodeLog, custody: BlockCustody, acting: Acting
    ) -> None:
        self.name = log.name
        self.steps = steps
        self.ctx = ctx
        self.log = log
        self.custody = custody
        self.acting = acting
        self._unblocking = False  # the intention to unblock is on record

    def inherit(self) -> None:
        """Learn from the journal whether an earlier run of ours left this node blocked."""
        if self.name in self.ctx.hand_blocked:  # a resumed run had found it blocked by hand
            self.custody.inherited(hand_blocked=True)
            return
        earlier = self.ctx.left_blocked_by_earlier_runs(self.name)
        if earlier is not None:
            self.custody.inherited(bool(earlier.get("data", {}).get("hand_blocked")))
            self.log.last_state = earlier["kind"]
            self.log.say(
                "note",
                f"carrying on from run {earlier['run']}, which left the node {earlier['kind']}",
            )

    def put_on(self, *, on_before_the_crash: bool = False) -> None:
        """Block the node (a resumed run whose block worked before it died only records it)."""
        target = self.steps.target("block")
        self.custody.took()
        if on_before_the_crash:
            self.log.record(
                "blocked", f"found blocked at {target}: the block before the crash worked"
            )
            return
        self.log.record("blocking", f"blocking at {target}")
        if not self.steps.has("is_blocked"):
            self.acting.note("no is_blocked step: the block and unblock would not be read back")
        self._read_back_along()
        self.acting.act("block", f"block at {target}")
        if self._read_back("block", blocked=True):
            self.log.record("blocked", f"blocked at {target}; no new sessions (is_blocked says so)")
        else:
            self.log.record("blocked", f"block step done at {target} ({_NO_WITNESS})")

    def lift(self, joint: str = ", ") -> str:
        """Unblock; what is known of the node after it ("back in service" only when read back)."""
        target = self.steps.target("unblock")
        # Written ahead: a run that dies now leaves `resume` the question to ask the node.
        self.record_unblocking()
        self._read_back_along()
        self.acting.act("unblock", f"unblock at {target}", joint)
        witnessed = self._read_back("unblock", blocked=False)
        self.custody.released()
        if not witnessed:
            self.log.record("unblocked", f"unblock step done at {target} ({_NO_WITNESS})")
            return f"unblock step done ({_NO_WITNESS})"
        self.log.record("unblocked", f"unblocked at {target}; back in service (is_blocked says so)")
        return "back in service"

    def record_unblocking(self) -> None:
        """The intention to unblock, on record once (before a verify sent with the unblock, too)."""
        if not self._unblocking:
            self._unblocking = True
            self.log.record("unblocking", f"unblocking at {self.steps.target('unblock')}")

    def _read_back_along(self) -> None:
        """Send ``is_blocked`` with the acting step that comes next, to read its effect back in
        the same round trip where they share a host (unless the verify's round trip brought it)."""
        if not self.ctx.dry_run and not self.steps.ready("is_blocked"):
            self.steps.along("is_blocked")

    def _read_back(self, step: str, *, blocked: bool) -> bool:
        """Read ``is_blocked`` after ``step`` acted: True when it says what the step meant to do,
        False when nothing can be read (no step, or a dry run, which did not act). A node that
        says otherwise fails the step: its effect was not seen."""
        if self.ctx.dry_run or not self.steps.has("is_blocked"):
            return False
        if self.steps.is_blocked() is blocked:
            return True
        says = "the node still takes sessions" if blocked else "the node is still blocked"
        raise StepFailed(
            step, self.steps.target(step), f"the {step} did not take: is_blocked says {says}"
        )
