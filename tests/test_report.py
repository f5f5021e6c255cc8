"""One event stream, three views: JSON lines, plain timestamped lines, a live table on a terminal."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyte
import pytest
from conftest import start_sessions

from upgradectl.cli.board import COLUMNS, RESULTS, STATES
from upgradectl.cli.views import JsonView, PlainView
from upgradectl.errors import ExitCode
from upgradectl.events import Events
from upgradectl.results import NodeResult, RunSummary

SUMMARY = RunSummary(
    "R1",
    "upgrade",
    0.0,
    1.0,
    (
        NodeResult(
            "node-a", "upgraded", ExitCode.OK, "done", forced=[{"id": "call-7", "age": 3725.0}]
        ),
        NodeResult("node-b", "current", ExitCode.OK, "already at version 2.0"),
    ),
    {},
).event_data()


def stream(*sinks: object) -> Events:
    events = Events(*sinks)  # type: ignore[arg-type]
    events.emit("blocked", "node-a", "blocked at lb")
    events.emit("step", "node-a", "active on lb: count")  # only -v shows commands
    for active in (5, 5, 5, 3):
        events.emit("poll", "node-a", f"{active} active", active=active)
    events.emit("warning", "node-a", "reconnecting")
    events.emit("summary", None, "", **SUMMARY)
    return events


def test_json_lines_one_object_per_event_without_the_commands_unless_verbose() -> None:
    out = io.StringIO()
    stream(JsonView(out))
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["event"] for line in lines] == [
        "blocked",
        "poll",
        "poll",
        "poll",
        "poll",
        "warning",
        "summary",
    ]
    assert lines[-1]["nodes"]["node-a"]["forced"][0]["id"] == "call-7"
    verbose = io.StringIO()
    stream(JsonView(verbose, verbosity=1))
    assert '"event": "step"' in verbose.getvalue()


def test_plain_lines_show_a_poll_only_when_the_count_changes_and_end_with_a_summary() -> None:
    out = io.StringIO()
    stream(PlainView(out))
    lines = out.getvalue().splitlines()
    assert sum(" active" in line for line in lines) == 2  # 5 (once), then 3
    assert any("node-a WARNING: reconnecting" in line for line in lines)
    assert "upgradectl upgrade R1: 1 upgraded, 1 current; 1 session forced; exit 0 (ok)" in lines
    assert "      cut: call-7 (lasted 1h2m5s)" in lines
    assert "\x1b[" not in out.getvalue()


def test_quiet_plain_lines_keep_only_warnings_and_the_summary() -> None:
    out = io.StringIO()
    stream(PlainView(out, verbosity=-1))
    text = out.getvalue()
    assert "blocked at lb" not in text and "active" not in text.split("upgradectl upgrade")[0]
    assert "WARNING: reconnecting" in text and "1 upgraded" in text


def without_escapes(screen: str) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)


def run_on_a_terminal(
    args: list[str], answer: bytes | None = None, timeout: float = 60
) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal as its stdin and stdout; answer its prompt if asked."""
    code, raw = run_on_a_terminal_raw(args, answer=answer, timeout=timeout)
    return code, without_escapes(raw)


def run_on_a_terminal_raw(
    args: list[str],
    answer: bytes | None = None,
    timeout: float = 60,
    interrupt_after: tuple[bytes, ...] = (),
    watch: Callable[[bytes], None] = lambda chunk: None,
) -> tuple[int, str]:
    """Run the CLI on a pseudo-terminal; its exit code and every byte it wrote, escapes included.

    One SIGINT is sent once the CLI has written each text of ``interrupt_after``, in turn;
    ``watch`` sees every chunk of output as it arrives.
    """
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "upgradectl", *args],
        stdin=terminal, stdout=terminal, stderr=terminal, close_fds=True,
        env={**os.environ, "COLUMNS": "120", "TERM": "xterm"},
    )  # fmt: skip
    os.close(terminal)
    output = b""
    interrupts = list(interrupt_after)
    unread = 0  # where the text that triggers the next SIGINT is looked for
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # the terminal closed: the process is done writing
                    break
                # What is already there too: a frame is seen whole, not cut where a read ended.
                with contextlib.suppress(OSError):
                    while select.select([controller], [], [], 0)[0]:
                        more = os.read(controller, 65536)
                        if not more:
                            break
                        chunk += more
                output += chunk
                watch(chunk)
                if answer is not None and b"[y/N]" in output:
                    os.write(controller, answer)
                    answer = None
                if interrupts and interrupts[0] in output[unread:]:
                    process.send_signal(signal.SIGINT)
                    unread = len(output)
                    interrupts.pop(0)
            elif process.poll() is not None:
                break
        return process.wait(timeout=10), output.decode(errors="replace")
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()


def test_on_a_terminal_the_live_table_shows_each_node_and_the_summary(local_site: Path) -> None:
    (local_site / "work" / "sessions" / "call-1").write_text(str(int(time.time()) + 2))
    inventory, state = str(local_site / "inventory.yaml"), str(local_site / "state")
    code, screen = run_on_a_terminal(
        ["-i", inventory, "--state-dir", state, "upgrade", "node-a", "--version", "2", "--yes"]
    )
    assert code == 0, screen
    for column in ("node", "state", "active", "drain", "elapsed", "deadline"):
        assert column in screen
    assert "node-a" in screen and "upgradectl upgrade" in screen and "1 upgraded" in screen


def test_on_a_terminal_it_asks_first_and_no_means_nothing_is_touched(local_site: Path) -> None:
    inventory, state = str(local_site / "inventory.yaml"), str(local_site / "state")
    code, screen = run_on_a_terminal(
        ["-i", inventory, "--state-dir", state, "upgrade", "node-a", "--version", "2"],
        answer=b"n\n",
    )
    assert code == 1, screen
    assert "upgrade to version 2, 1 node(s), in this order:" in screen, screen
    assert "Proceed? [y/N]" in screen and "the operator answered no" in screen
    assert not (local_site / "work" / "blocked").exists()


HIDE_CURSOR, SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"


def assert_the_cursor_came_back(raw: str) -> None:
    """The live table hid the cursor, and the last word on it was to show it again."""
    assert HIDE_CURSOR in raw, f"the live table never started: {raw!r}"
    assert raw.rfind(SHOW_CURSOR) > raw.rfind(HIDE_CURSOR), f"the cursor stayed hidden: {raw!r}"


def closed_window() -> list[str]:
    """A --window that opens in two hours (far from any minute boundary), in UTC."""
    now = datetime.now(UTC)
    opens, closes = now + timedelta(hours=2), now + timedelta(hours=3)
    return ["--window", f"{opens:%H:%M}-{closes:%H:%M}", "--tz", "UTC"]


def test_on_a_terminal_a_closed_window_exits_75_and_the_cursor_comes_back(local_site: Path) -> None:
    inventory, state = str(local_site / "inventory.yaml"), str(local_site / "state")
    code, raw = run_on_a_terminal_raw(
        ["-i", inventory, "--state-dir", state, "upgrade", "node-a", "--version", "2", "--yes",
         *closed_window()]
    )  # fmt: skip
    assert code == ExitCode.NOT_NOW, raw
    assert "maintenance window" in raw and "is closed" in raw
    assert_the_cursor_came_back(raw)
    assert not (local_site / "work" / "blocked").exists()


def test_on_a_terminal_an_error_in_the_run_exits_2_and_the_cursor_comes_back(
    local_site: Path,
) -> None:
    inventory, state = str(local_site / "inventory.yaml"), str(local_site / "state")
    code, raw = run_on_a_terminal_raw(
        ["-i", inventory, "--state-dir", state, "upgrade", "node-a", "--version", "2", "--yes",
         "--max-unavailable", "half"]
    )  # fmt: skip
    assert code == ExitCode.USAGE, raw
    assert "--max-unavailable: expected N or N%" in raw
    assert_the_cursor_came_back(raw)
    assert not (local_site / "work" / "blocked").exists()


def test_on_a_terminal_ctrl_c_stops_the_drain_and_the_cursor_comes_back(local_site: Path) -> None:
    (local_site / "work" / "sessions" / "call-1").write_text(str(int(time.time()) + 600))
    inventory, state = str(local_site / "inventory.yaml"), str(local_site / "state")
    code, raw = run_on_a_terminal_raw(
        ["-i", inventory, "--state-dir", state, "upgrade", "node-a", "--version", "2", "--yes"],
        interrupt_after=(b"no new sessions",),
    )
    assert code == ExitCode.INTERRUPTED, raw
    assert "interrupted" in without_escapes(raw)
    assert_the_cursor_came_back(raw)


def test_on_a_terminal_a_second_ctrl_c_exits_at_once_and_the_cursor_comes_back(
    local_site: Path,
) -> None:
    # An upgrade step that waits for a go file (a minute at most): the first Ctrl-C lets it
    # finish, so the second finds the run going; the go file then ends the step left behind.
    playbook, go = local_site / "files.yaml", local_site / "work" / "go"
    waits = f"i=0; while [ ! -e {go} ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; "
    playbook.write_text(
        playbook.read_text().replace('upgrade: {run: "', f'upgrade: {{run: "{waits}')
    )
    inventory, state = str(local_site / "inventory.yaml"), str(local_site / "state")
    try:
        code, raw = run_on_a_terminal_raw(
            ["-i", inventory, "--state-dir", state, "upgrade", "node-a", "--version", "2", "--yes"],
            interrupt_after=(b"upgrading: i=0", b"Ctrl-C again to exit now"),
        )
    finally:
        go.touch()
    assert code == ExitCode.INTERRUPTED, raw
    assert "second interrupt: exiting now" in raw
    assert_the_cursor_came_back(raw)


@dataclass
class Screens:
    """What a person sees on a 120x40 terminal, kept after every chunk of output: (when, lines)."""

    screen: pyte.Screen = field(default_factory=lambda: pyte.Screen(120, 40))
    seen: list[tuple[float, list[str]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.stream = pyte.ByteStream(self.screen)

    def __call__(self, chunk: bytes) -> None:
        self.stream.feed(chunk)
        self.seen.append((time.monotonic(), list(self.screen.display)))

    def tables(self) -> list[tuple[float, str, dict[str, dict[str, str]]]]:
        """Every live table seen: (when, the header line above it, each node's row by column)."""
        found = []
        for at, lines in self.seen:
            heads = [
                n for n, line in enumerate(lines) if line.startswith("node ") and "elapsed" in line
            ]
            if not heads:
                continue
            head = heads[-1]
            starts: list[int] = []
            for name in COLUMNS:  # in order: "deadline" is also the end of "at the deadline"
                after = starts[-1] + 1 if starts else 0
                starts.append(lines[head].find(name, after))
            if -1 in starts:  # a frame caught while the terminal was still drawing it
                continue
            rows = {}
            for line in lines[head + 1 :]:
                if not line.startswith("node-"):
                    break
                cells = [
                    line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)
                ]
                rows[cells[0]] = dict(zip(COLUMNS, cells, strict=True))
            found.append((at, lines[head - 1].strip(), rows))
        return found


WORDS = set(STATES.values()) | set(RESULTS.values())


def live(site: Path, *args: str) -> tuple[int, Screens]:
    screens = Screens()
    inventory, state = str(site / "inventory.yaml"), str(site / "state")
    code, raw = run_on_a_terminal_raw(
        ["-i", inventory, "--state-dir", state, *args, "--yes"], watch=screens
    )
    assert_the_cursor_came_back(raw)
    return code, screens


@pytest.mark.slow
def test_on_a_terminal_a_hopeless_drain_says_so_early_and_ends_gave_up(local_site: Path) -> None:
    start_sessions(local_site, {"long": 600.0})
    code, screens = live(local_site, "drain", "node-a", "--timeout", "6s")
    assert code == ExitCode.GAVE_UP
    tables = screens.tables()
    states = [rows["node-a"]["state"] for _, _, rows in tables if "node-a" in rows]
    assert set(states) <= WORDS and {"draining", "gave up"} <= set(states)
    draining = [
        (head, rows["node-a"])
        for _, head, rows in tables
        if rows.get("node-a", {}).get("state") == "draining"
    ]
    assert tuple({head for head, _ in draining}) == (
        "0/1 done, 1 in flight, 0 waiting; 0 sessions forced",
    )
    assert {row["active"] for _, row in draining} == {"1"}  # one active column, saying 1
    said = {row["at the deadline"] for _, row in draining}
    assert "1 left at the deadline: will give up" in said  # long before the deadline came
    _, head, rows = tables[-1]
    assert head == "1/1 done, 0 in flight, 0 waiting; 0 sessions forced"
    minutes, seconds = rows["node-a"]["elapsed"].split(":")
    assert minutes == "0" and 6 <= int(seconds) <= 20


def test_on_a_terminal_elapsed_moves_every_second_while_nothing_happens_and_stops_at_the_end(
    local_site: Path,
) -> None:
    playbook = local_site / "files.yaml"
    playbook.write_text(
        playbook.read_text().replace('upgrade: {run: "', 'upgrade: {run: "sleep 4; ')
    )
    code, screens = live(local_site, "upgrade", "node-a", "--version", "2")
    assert code == ExitCode.OK
    tables = screens.tables()
    upgrading = [(at, rows["node-a"]["elapsed"]) for at, _, rows in tables
                 if rows.get("node-a", {}).get("state") == "upgrading"]  # fmt: skip
    # The upgrade step says nothing for 4 s: the clock moves anyway, a second at a time.
    shown = sorted({elapsed for _, elapsed in upgrading})
    assert len(shown) >= 3, shown
    assert upgrading[-1][0] - upgrading[0][0] >= 2.5
    last = tables[-1][2]["node-a"]
    assert last["state"] == "back in service"
    done_at = next(
        at for at, _, rows in tables if rows.get("node-a", {}).get("state") == "back in service"
    )
    later = [rows["node-a"]["elapsed"] for at, _, rows in tables if at > done_at]
    assert set(later) <= {last["elapsed"]}  # stopped when the node was done
