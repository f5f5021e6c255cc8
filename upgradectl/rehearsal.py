"""A dry run's account of what the real run would do, said as one sentence at the end.

A dry run walks the real run's code (probe, fleet, runner, phases); only the acting steps are
swapped for their description here, state changes are not journalled, and the drain reads the
count once instead of waiting it out: ``37 active; would block at lb-1, wait up to 1h, then force
at most 5 stragglers (...); then upgrade (apt-get ...), verify, unblock at lb-1``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Rehearsal:
    """What one node's dry run would have done, in order, and what it found on the way."""

    acts: list[tuple[str, str]] = field(default_factory=list)  # (joint before it, act)
    notes: list[str] = field(default_factory=list)
    active: int | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def would(self, act: str, joint: str = ", ") -> None:
        """The run would do ``act`` next (``joint`` ties it to the act before: ``"; then "``)."""
        self.acts.append((joint, act))

    def note(self, text: str) -> None:
        """Something the dry run found that the sentence should add (``precheck passes on X``)."""
        self.notes.append(text)

    def counted(self, active: int, **data: Any) -> None:
        """The live count the drain would start from, and what was predicted from it."""
        self.active = active
        self.data.update(active=active, **data)

    def sentence(self) -> str:
        """``N active; would A, B; then C; note``: the acts in order, then the notes."""
        said = "".join(
            ("would " if index == 0 else joint) + act
            for index, (joint, act) in enumerate(self.acts)
        )
        head = f"{self.active} active; " if self.active is not None else ""
        return "; ".join([head + (said or "would change nothing"), *self.notes])
