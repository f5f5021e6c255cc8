"""What one node's run writes down: state changes journalled then announced, notes announced."""

from __future__ import annotations

from typing import Any

from upgradectl.context import RunContext
from upgradectl.custody import BlockCustody
from upgradectl.runrecords import OUT_OF_SERVICE, SETTLED


class NodeLog:
    """The journal and event stream of one node, with its block's custody on every record."""

    def __init__(self, name: str, ctx: RunContext, custody: BlockCustody) -> None:
        self.name = name
        self.ctx = ctx
        self.custody = custody
        self.last_state: str | None = None  # the latest state change: what a person must know

    def record(self, kind: str, message: str, **data: Any) -> None:
        """A state change: on disk first, then announced (a dry run changes no state: nothing)."""
        if self.ctx.dry_run:
            return
        self.ctx.journal.append(kind, self.name, message=message, **self.custody.as_data(), **data)
        if kind in OUT_OF_SERVICE | SETTLED:
            self.last_state = kind
        self.ctx.events.emit(kind, self.name, message, **data)

    def say(self, kind: str, message: str, **data: Any) -> None:
        """An event that changes nothing."""
        self.ctx.events.emit(kind, self.name, message, **data)
