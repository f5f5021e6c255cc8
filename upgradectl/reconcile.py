"""A resumed node whose run died between an intention and its outcome: ask the node what
became of it (a block, a force, an upgrade, an unblock), and write that down before carrying on.

The journal says what the dead run meant to do (``blocking``, ``forcing``, ``upgrading``,
``unblocking``) but not whether it happened; only the node can say.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from upgradectl.context import RunContext
from upgradectl.history import NOT_CONFIRMED
from upgradectl.nodelog import NodeLog
from upgradectl.steps import Steps
from upgradectl.witness import Counts, look


class Reconciler:
    """Asks one resumed node what became of the intention its dead run left on record."""

    def __init__(self, name: str, steps: Steps, ctx: RunContext, log: NodeLog) -> None:
        self.name = name
        self.steps = steps
        self.ctx = ctx
        self.log = log
        self.intention: Mapping[str, Any] = ctx.intentions.get(name, {})
        self._asked_block = False

    def force(self) -> None:
        """The force may have run before the controller died: ask the node. The sessions it
        named that are gone now, and the unnamed ones the counts show gone, are written down as
        cut, not confirmed (they may have ended by themselves); unnamed ones the counts cannot
        tell about now are written down as perhaps cut."""
        if self.intention.get("kind") != "forcing":
            return
        forcing = self.intention.get("data", {})
        listed = [s for s in forcing.get("sessions") or [] if isinstance(s, dict) and "id" in s]
        active = forcing.get("active")
        before = Counts(active if isinstance(active, int) else 0)  # the count the force was for
        unlisted = max(before.live - len(listed), 0)
        if not unlisted and not (listed and self.steps.has("sessions")):
            return
        proof = look(self.steps, self.ctx, listed)
        gone = [
            {**session, "node": self.name, "run": self.ctx.run_id, "cut_at": self.ctx.wall(),
             "cut": f"{NOT_CONFIRMED}; gone when resume looked"}
            for session in proof.gone
        ]  # fmt: skip
        said = [str(s["id"]) for s in gone]
        unnamed, seen = 0, {}
        if unlisted:
            after = proof.counts.live if proof.counts is not None else None
            unnamed = unlisted if after is None else proof.unnamed_cut(before)
            seen = {"active_before": before.live, "active_after": after}
        if unnamed:
            said.append(
                f"{unnamed} unnamed: the count could not be read when resume looked"
                if seen["active_after"] is None
                else f"{unnamed} unnamed: count went from {before.live} to {seen['active_after']}"
                " when resume looked"
            )
        if gone or unnamed:
            self.log.record(
                "forced",
                f"{NOT_CONFIRMED} around the force; cut then, or ended by themselves: "
                + "; ".join(said),
                sessions=gone,
                count=len(gone) + unnamed,
                confirmed=False,
                **seen,
            )

    def blocked(self) -> bool:
        """Whether the dead run's block worked before the record of it: the node says the block
        is on (asked once; without `is_blocked`, the block is put on again)."""
        if self.intention.get("kind") != "blocking" or self._asked_block:
            return False
        self._asked_block = True
        return self.steps.is_blocked() is True

    def unblocked(self, start_at: str) -> bool:
        """Whether the dead run's unblock worked (recorded before a verify sent with the unblock,
        so an unblock that worked passed the verify too); recorded when it did."""
        unblocked = (
            self.intention.get("kind") == "unblocking"
            and start_at in ("verify", "unblock")
            and self.name not in self.ctx.hand_blocked
            and self.steps.is_blocked() is False
        )
        if unblocked:
            self.log.record("unblocked", "found in service: the unblock before the crash worked")
        return unblocked

    def upgraded(self, version: str | None) -> bool:
        """Before the upgrade runs again: did the interrupted one finish after all (the node
        runs ``version``)?

        The node's own word (the ``version`` step) decides; without it the upgrade runs again,
        which the playbook must then allow (README: upgrades must be safe to repeat).
        """
        if not self.steps.has("version") or version is None:
            self.log.say(
                "note",
                "re-running the upgrade: the journal shows it started but not that it finished, "
                "and the playbook has no `version` step to ask the node (it must be safe to repeat)",
            )
            return False
        found = self.steps.version()
        if found != version:
            self.log.say("note", f"re-running the upgrade: the node reports version {found}")
            return False
        return True
