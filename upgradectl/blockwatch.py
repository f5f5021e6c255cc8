"""The block is watched: read during the drain, and put back when it is found gone.

A block can vanish while a node drains (a dispatcher reload, a balancer restart, a colleague):
new sessions then land on the node the drain is emptying, and a force would cut them too. Where
the playbook has ``is_blocked``, it is read on the poll's rhythm (every few polls, at most
:data:`CHECK_EVERY` apart) and right before ``force`` and ``upgrade``. A lost block is
journalled (``block-lost``, with the sessions that arrived meanwhile), then ``block`` runs again
and ``is_blocked`` must confirm it; if it cannot be put back, :class:`BlockLost` ends the drain
as a failed block.
"""

from __future__ import annotations

from upgradectl.context import RunContext
from upgradectl.errors import BlockLost, CommandTimedOut, StepFailed
from upgradectl.nodelog import NodeLog
from upgradectl.steps import Steps

# The longest the block goes unread while a node drains: well within a minute.
CHECK_EVERY = 30.0
# Short of that, the block is read every few of the playbook's polls, not at every one.
CHECK_EVERY_POLLS = 3
# Session ages are listed in whole seconds.
AGE_RESOLUTION = 1.0


class BlockWatch:
    """Reads one node's block while it drains; puts it back when it is lost."""

    def __init__(self, steps: Steps, ctx: RunContext, log: NodeLog) -> None:
        self.steps = steps
        self.ctx = ctx
        self.log = log
        policy = steps.plan.drain
        self.every = min(CHECK_EVERY, CHECK_EVERY_POLLS * policy.poll)
        self.checked_at: float | None = None  # run clock, last time the block was seen in place
        self.arrived: set[str] = set()  # sessions that arrived while the block was lost

    @property
    def watching(self) -> bool:
        """Whether the playbook can tell that the node is blocked."""
        return self.steps.has("is_blocked")

    def started(self) -> None:
        """The drain begins on a node just blocked (read back by the runner where it can be)."""
        if self.checked_at is None:
            self.checked_at = self.ctx.monotonic()

    def due(self) -> bool:
        """Whether the block should be read at this poll."""
        if not self.watching:
            return False
        return self.checked_at is None or self.ctx.monotonic() - self.checked_at >= self.every

    def check(self, before: str, seen: bool | None = None) -> bool:
        """Read the block (``before`` says what is about to happen); put it back if it is gone.

        ``seen``: what a reading just taken with the counts said (then it is not read again).
        True when it had been lost and is back: sessions may have arrived meanwhile. Raises
        BlockLost when it cannot be put back.
        """
        if not self.watching or (self.steps.is_blocked() if seen is None else seen):
            self.checked_at = self.ctx.monotonic()
            return False
        target = self.steps.target("block")
        arrived = self._arrived()
        self.arrived |= set(arrived)
        self.log.record(
            "block-lost",
            f"the block at {target} is gone (is_blocked says so, read {before}); new sessions "
            "may have reached the node"
            + (
                f": {len(arrived)} arrived since it was last seen ({', '.join(arrived)})"
                if arrived
                else ""
            )
            + "; putting it back",
            before=before,
            arrived=arrived,
        )
        try:
            self.steps.run("block")
        except (StepFailed, CommandTimedOut) as exc:
            raise BlockLost(target, str(exc)) from exc
        if not self.steps.is_blocked():
            raise BlockLost(target, "the block step ran, but is_blocked still says not blocked")
        self.log.record("blocked", f"blocked again at {target}; no new sessions")
        self.checked_at = self.ctx.monotonic()
        return True

    def _arrived(self) -> list[str]:
        """The sessions younger than the last sight of the block: they came while it was lost
        (by their age, as the `sessions` step lists them; none without the step)."""
        if not self.steps.has("sessions") or self.checked_at is None:
            return []
        since = self.ctx.monotonic() - self.checked_at
        try:
            listed = self.steps.sessions(self.ctx.wall())
        except (StepFailed, CommandTimedOut) as exc:
            self.log.say("warning", f"could not list who arrived while the block was lost: {exc}")
            return []
        # Ages are whole seconds: a session as old as the last sight (give or take one) was there.
        return [s.id for s in listed if s.age is not None and s.age < since - AGE_RESOLUTION]
