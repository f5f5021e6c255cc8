"""What the node's witnesses say: the session counts, and whether a force really ended sessions.

Two counts may watch one node: ``active`` where the playbook blocks (a balancer, a proxy) and the
optional ``node_active`` on the node itself (a call server's own calls). The node is empty only
when both say zero. After ``force`` the sessions listed before it are read again: only those
seen gone count as cut, and only once every count says zero has the force done its work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from upgradectl.context import RunContext
from upgradectl.errors import CommandTimedOut, StepFailed, UnreadableCount
from upgradectl.steps import Steps


@dataclass(frozen=True)
class Counts:
    """One reading of every count the playbook has."""

    active: int
    node: int | None = None  # node_active, when the playbook has it

    @property
    def live(self) -> int:
        """The sessions to reckon with: the larger count (each may see sessions the other misses)."""
        return max(self.active, self.node or 0)

    @property
    def disagree(self) -> bool:
        """Whether one count says the node is empty and the other does not."""
        return self.node is not None and (self.active == 0) != (self.node == 0)

    def describe(self, steps: Steps) -> str:
        """Both counts in words, each with where it was read."""
        said = f"{self.active} at {steps.target('active')} (active)"
        if self.node is None:
            return said
        return f"{said}, {self.node} on {steps.target('node_active')} (node_active)"


def read_counts(steps: Steps) -> Counts:
    """Every count; UnreadableCount when one of them is not a number (never read as zero)."""
    active = steps.count("active")
    node = steps.count("node_active") if steps.has("node_active") else None
    return Counts(active, node)


@dataclass(frozen=True)
class CutProof:
    """What was seen after ``force``: the listed sessions gone, those still listed, the counts."""

    gone: list[dict[str, Any]]
    left: list[dict[str, Any]]
    counts: Counts | None  # the last readable counts; None when none could be read

    @property
    def complete(self) -> bool:
        """Every listed session is gone and every count says zero."""
        return not self.left and self.counts is not None and self.counts.live == 0

    def unnamed_cut(self, before: Counts) -> int:
        """Sessions the listing did not name that the counts show gone (all of them once empty)."""
        unlisted = max(before.live - len(self.gone) - len(self.left), 0)
        if self.counts is None:
            return 0
        if self.counts.live == 0:
            return unlisted
        return min(unlisted, max(before.live - self.counts.live - len(self.gone), 0))


def prove_cut(
    steps: Steps, ctx: RunContext, listed: list[dict[str, Any]], grace: float, pause: float
) -> CutProof:
    """Read the sessions (when the playbook lists them) and the counts again, every ``pause``
    seconds, until every listed session is gone and every count says zero, or ``grace`` is over."""
    until = ctx.monotonic() + grace
    while True:
        proof = look(steps, ctx, listed)
        if proof.complete or ctx.monotonic() >= until:
            return proof
        ctx.stop.wait(pause)  # a stop asked for now waits for the proof: it is short


def look(steps: Steps, ctx: RunContext, listed: list[dict[str, Any]]) -> CutProof:
    """One look at the sessions ``listed`` before a force and at the counts (None: unreadable)."""
    try:
        counts: Counts | None = read_counts(steps)
    except UnreadableCount:
        counts = None
    # Without a `sessions` step nothing was listed: the counts alone tell (unnamed_cut).
    try:
        still = {session.id for session in steps.sessions(ctx.wall())}
    except (StepFailed, CommandTimedOut):
        still = {str(session["id"]) for session in listed}  # unread: none is proven gone
    gone = [session for session in listed if str(session["id"]) not in still]
    left = [session for session in listed if str(session["id"]) in still]
    return CutProof(gone, left, counts)
