"""Three views of one event stream: a rich live table, plain timestamped lines, JSON lines.

A view is opened and closed by one owner, :func:`opened`, on every way out of a run (an
exception, a window found closed, Ctrl-C), so the terminal's cursor always comes back.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any

from upgradectl.cli.board import COLUMNS, Board
from upgradectl.events import Event
from upgradectl.results import RunSummary
from upgradectl.wording import render_summary

if TYPE_CHECKING:
    from rich.live import Live

# Events that only -v shows: every command and its output.
VERBOSE_KINDS = frozenset({"step", "step-output"})
# Events that -q still shows.
QUIET_KINDS = frozenset(
    {"warning", "error", "summary", "failed", "attention", "interrupted", "block-lost"}
)


def _wants(event: Event, verbosity: int) -> bool:
    if event.kind in VERBOSE_KINDS:
        return verbosity > 0
    return verbosity >= 0 or event.kind in QUIET_KINDS


# What a terminal reads as "show the cursor" (the live table hides it while it redraws).
SHOW_CURSOR = b"\x1b[?25h"


class View:
    """A sink for a run's events that may hold the terminal between ``start`` and ``close``."""

    def __call__(self, event: Event) -> None:
        raise NotImplementedError

    def start(self) -> None:
        """Take the output over (nothing to do for line-by-line views)."""

    def close(self) -> None:
        """Give the output back; safe to call twice (nothing to do for line-by-line views)."""

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Give the terminal to a question for a while (nothing to do for line-by-line views)."""
        yield


@contextmanager
def opened(as_json: bool, verbosity: int) -> Iterator[View]:
    """The view for where the output goes, started, and closed however the block is left.

    JSON lines with --json, a live table on a terminal, else plain timestamped lines.
    """
    view: View
    if as_json:
        view = JsonView(verbosity=verbosity)
    elif sys.stdout.isatty() and verbosity >= 0:
        view = LiveView(verbosity)
    else:
        view = PlainView(verbosity=verbosity)
    view.start()
    try:
        yield view
    finally:
        view.close()


def show_cursor_now() -> None:
    """Bring the cursor back on a process about to end without unwinding (a second Ctrl-C)."""
    if os.isatty(1):
        os.write(1, SHOW_CURSOR)


class JsonView(View):
    """One JSON object per event, one per line: for scripts and log shippers."""

    def __init__(self, stream: IO[str] | None = None, verbosity: int = 0) -> None:
        self.stream = stream or sys.stdout
        self.verbosity = verbosity

    def __call__(self, event: Event) -> None:
        if event.kind in VERBOSE_KINDS and self.verbosity <= 0:
            return
        self.stream.write(json.dumps(event.as_dict(), default=str) + "\n")
        self.stream.flush()


class PlainView(View):
    """One timestamped line per event, no colour: for cron mail and log files.

    A drain polled every few seconds for hours would bury the mail in identical lines, so a
    poll is shown only when the count changed, or once every ``quiet_polls`` seconds.
    """

    def __init__(
        self, stream: IO[str] | None = None, verbosity: int = 0, quiet_polls: float = 60.0
    ) -> None:
        self.stream = stream or sys.stdout
        self.verbosity = verbosity
        self.quiet_polls = quiet_polls
        self._last_poll: dict[str | None, tuple[Any, float]] = {}

    def _worth_showing(self, event: Event) -> bool:
        if event.kind != "poll":
            return _wants(event, self.verbosity)
        active, shown_at = self._last_poll.get(event.node, (None, 0.0))
        if (
            active == event.data.get("active")
            and event.time - shown_at < self.quiet_polls
            and self.verbosity <= 0
        ):
            return False
        self._last_poll[event.node] = (event.data.get("active"), event.time)
        return self.verbosity >= 0

    def __call__(self, event: Event) -> None:
        if not self._worth_showing(event):
            return
        if event.kind == "summary":
            self.stream.write(render_summary(RunSummary.from_event(event)) + "\n")
        else:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event.time))
            node = f" {event.node}" if event.node else ""
            label = f" {event.kind.upper()}:" if event.kind in ("warning", "error") else ""
            self.stream.write(f"{stamp}{node}{label} {event.message}\n")
        self.stream.flush()


_STYLES = {"warning": "yellow", "error": "red", "failed": "red", "attention": "bold red"}


class LiveView(View):
    """A live table on a terminal: a header line with the fleet's progress and the sessions
    forced, then per node its state in words, active sessions, drain rate and ETA, what the
    deadline will find, elapsed time and the deadline; notable events print above it. It is
    redrawn four times a second from the board, so elapsed time moves between events. It hides
    the cursor from ``start`` to ``close``."""

    def __init__(self, verbosity: int = 0) -> None:
        from rich.console import Console  # noqa: PLC0415 - rich is imported only for a terminal
        from rich.live import Live  # noqa: PLC0415

        self.verbosity = verbosity
        self.board = Board()
        self.console = Console(stderr=False)
        self.live: Live = Live(
            console=self.console,
            refresh_per_second=4,
            transient=False,
            get_renderable=self._render,
        )

    def start(self) -> None:
        """Start redrawing the table."""
        self.live.start()

    def __call__(self, event: Event) -> None:
        self.board(event)
        if event.kind == "summary":
            self.live.stop()
            self.console.print(
                render_summary(RunSummary.from_event(event)), markup=False, highlight=False
            )
            return
        if event.kind != "poll" and _wants(event, self.verbosity):
            self.console.print(self._line(event), highlight=False)
        self.live.refresh()

    @staticmethod
    def _line(event: Event) -> Any:
        """One event as a styled line; messages are text, never markup (they quote commands)."""
        from rich.text import Text  # noqa: PLC0415

        line = Text(time.strftime("%H:%M:%S "), style="dim")
        if event.node:
            line.append(f"{event.node} ", style="bold")
        line.append(event.message, style=_STYLES.get(event.kind, ""))
        return line

    def _render(self) -> Any:
        from rich.console import Group  # noqa: PLC0415
        from rich.table import Table  # noqa: PLC0415
        from rich.text import Text  # noqa: PLC0415

        table = Table(box=None, pad_edge=False)
        for column in COLUMNS:
            table.add_column(column)
        for row in self.board.rows(time.time()):
            table.add_row(*row)
        return Group(Text(self.board.header(), style="bold"), table)

    def close(self) -> None:
        """Stop redrawing and show the cursor again (the summary may have stopped it already)."""
        self.live.stop()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Stop redrawing while the operator answers a question, then carry on."""
        self.live.stop()
        try:
            yield
        finally:
            self.live.start()
