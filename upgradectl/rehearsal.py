"""A dry run's account of what the real run would do, said as one sentence at the end.

A dry run walks the real run's code (probe, fleet, runner, phases); only the acting steps are
swapped for their description here, state changes are not journalled, and the drain reads the
count once instead of waiting it out: ``37 active; would block at lb-1, wait up to 1h, then force
at most 5 stragglers (...); then upgrade (apt-get ...), verify, unblock at lb-1``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from upgradectl.errors import ExitCode

if TYPE_CHECKING:
    from upgradectl.nodelog import NodeLog
    from upgradectl.results import NodeResult
    from upgradectl.steps import Steps


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

    def told(self, outcome: NodeResult, log: NodeLog) -> NodeResult:
        """A dry run that got through says what the run would have done; one that failed (a
        precheck, an unreachable node) fails as the run would have."""
        if outcome.exit_code != ExitCode.OK:
            return outcome
        log.say("would", self.sentence(), **self.data)
        # `in_service` stays what the run would leave: the fleet's limits decide as they would.
        return replace(outcome, result="dry-run", message="nothing was changed")


class Acting:
    """One node's acting steps: run on the node, or in a dry run described in its rehearsal.

    The one place a dry run's path parts from the real one: everything around an act runs alike.
    """

    def __init__(self, steps: Steps, rehearsal: Rehearsal | None) -> None:
        self.steps = steps
        self.rehearsal = rehearsal

    def act(self, step: str, description: str, joint: str = ", ") -> None:
        """Run the acting ``step``; a dry run says ``description`` instead."""
        if self.rehearsal is not None:
            self.rehearsal.would(description, joint)
        else:
            self.steps.run(step)

    def note(self, text: str) -> None:
        """What a dry run found on the way (a real run has its events for that)."""
        if self.rehearsal is not None:
            self.rehearsal.note(text)
