"""Custody of a node's block: who blocked it, and so what undoing a run may lift.

A node blocked by hand before any run of ours stays blocked whatever happens; a block this run
(or an earlier run of ours) put on is ours to lift when the run fails or ends. The journal
carries these flags with every state change, so a later run or ``resume`` knows them too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class BlockCustody:
    """Who has one node blocked; change it only through its verbs."""

    hand_blocked: bool = False  # blocked before any run of ours: it stays blocked
    ours: bool = False  # this run (or an earlier one of ours) blocked the node
    blocked: bool = False  # this tool has the node blocked now (its own block, not a hand's)

    def inherited(self, hand_blocked: bool) -> None:
        """An earlier run of ours left the node blocked (by hand before it, if ``hand_blocked``)."""
        self.hand_blocked = hand_blocked
        self.ours = not hand_blocked
        self.blocked = self.ours

    def found_blocked(self) -> None:
        """The node was blocked before this run, by someone else: leave it so."""
        self.hand_blocked = True

    def took(self) -> None:
        """This run is blocking the node: ours unless a hand got there first.

        Called before the block step, so that a half-done block is ours to undo.
        """
        self.ours = self.ours or not self.hand_blocked
        self.blocked = self.ours

    def released(self) -> None:
        """The node was unblocked: it takes sessions again."""
        self.blocked = False

    def handed_over(self) -> None:
        """The operator asked for this node to be unblocked: a hand's block may be lifted too."""
        self.hand_blocked = False

    @property
    def undo_is_ours(self) -> bool:
        """Whether recovery must lift the block: only one this tool put on, never a hand's."""
        return self.ours and not self.hand_blocked

    @property
    def in_service(self) -> bool:
        """Whether, as far as the block goes, the node takes sessions."""
        return not self.hand_blocked and not self.blocked

    def as_data(self) -> dict[str, Any]:
        """The flags for the journal, from which a later run inherits the block."""
        return {"hand_blocked": self.hand_blocked, "ours": self.ours, "blocked": self.blocked}
